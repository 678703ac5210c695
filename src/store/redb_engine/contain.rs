//! Containing redb's panics on a damaged file.
//!
//! redb checks no page as it reads, and a malformed one makes it panic
//! (`unreachable!`, an `unwrap`), at open (the allocator state), at the
//! first read of a table, or at close (when it writes the allocator state
//! back). Such a panic is damage to report, not a crash: [`contain`] runs a
//! step under `catch_unwind` and answers the panic's message instead, and
//! keeps the default hook from printing it (a "panicked at" line on stderr
//! reads as a bug in kvs; the caller says what it means).
//!
//! A `Database` that panicked may hold poisoned locks, and its close would
//! write into the damaged file: the callers forget it rather than drop it.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, PanicHookInfo, catch_unwind};
use std::sync::Once;

thread_local! {
    /// Set while this thread runs a contained step: its panic is reported
    /// by the caller, not by the hook.
    static CONTAINED: Cell<bool> = const { Cell::new(false) };
    /// The message of the last contained panic on this thread.
    static MESSAGE: Cell<Option<String>> = const { Cell::new(None) };
}

static HOOK: Once = Once::new();

/// A panic that [`contain`] caught: redb's message and where it was raised.
#[derive(Debug)]
pub struct Panicked(pub String);

impl std::fmt::Display for Panicked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Runs `step`, answering a panic in it as [`Panicked`].
pub fn contain<T>(step: impl FnOnce() -> T) -> Result<T, Panicked> {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CONTAINED.with(Cell::get) {
                MESSAGE.with(|m| m.set(Some(describe(info))));
            } else {
                previous(info);
            }
        }));
    });
    let outer = CONTAINED.with(|c| c.replace(true));
    let result = catch_unwind(AssertUnwindSafe(step));
    CONTAINED.with(|c| c.set(outer));
    result.map_err(|_| {
        let message = MESSAGE.with(Cell::take);
        Panicked(message.unwrap_or_else(|| "a panic".to_owned()))
    })
}

fn describe(info: &PanicHookInfo<'_>) -> String {
    let payload = info
        .payload()
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| info.payload().downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned());
    match info.location() {
        Some(at) => format!("{payload} (at {}:{})", at.file(), at.line()),
        None => payload,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contained_panic_is_answered_with_its_message() {
        let caught = contain(|| -> u32 { unreachable!("a damaged page") });
        let message = caught.unwrap_err().0;
        assert!(message.contains("a damaged page"), "{message}");
        assert_eq!(contain(|| 7).unwrap(), 7);
    }
}
