//! The writer thread's slice of the CPU.
//!
//! Every write waits for one thread, the writer: a request's batch is
//! committed only when the writer runs, and it sleeps in each batch's
//! `fdatasync`. On a machine whose cores are busy (HTTP workers, and
//! clients on the same machine), a woken writer waits for the running
//! thread's slice to end before it runs, with every write queued behind
//! it. Linux's EEVDF scheduler (6.12 and later) lets a
//! thread ask for a shorter slice than the default (1.4 ms on the
//! two-core machines here), and a thread with a shorter slice runs sooner
//! when it wakes. The writer asks for the shortest (100 µs): it runs in
//! short bursts between syncs anyway. Measured in `bench/README.md` ("The
//! writer's short slice").
//!
//! Nothing else changes: not the policy, not the nice value, and nothing
//! needs a privilege (a server run as `nobody` gets the slice too). Before
//! 6.12, `sched_setattr(2)` reads `sched_runtime` for the deadline policy
//! only, so an older kernel should take the request and ignore it (not
//! tried on one); another system has no such call.

/// The slice the writer asks for, in nanoseconds: the shortest Linux takes.
#[cfg(target_os = "linux")]
const WRITER_SLICE_NS: u64 = 100_000;

/// Asks for [`WRITER_SLICE_NS`] for the calling thread, if it runs under
/// the normal policy. A failure is logged and otherwise harmless.
pub fn ask_short_slice() {
    #[cfg(target_os = "linux")]
    if let Err(error) = linux::set_slice(WRITER_SLICE_NS) {
        tracing::debug!(%error, "the writer's short slice was refused");
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;

    /// The calling thread's scheduling attributes.
    pub fn attributes() -> io::Result<libc::sched_attr> {
        attributes_of(0)
    }

    /// Thread `tid`'s scheduling attributes (0: the calling thread).
    pub fn attributes_of(tid: libc::pid_t) -> io::Result<libc::sched_attr> {
        // SAFETY: sched_attr is plain integers, for which zero is valid.
        let mut attr: libc::sched_attr = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::sched_attr>() as libc::c_uint;
        // SAFETY: the kernel writes at most `size` bytes into `attr`.
        let done = unsafe { libc::syscall(libc::SYS_sched_getattr, tid, &mut attr, size, 0) };
        if done != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(attr)
    }

    /// Sets the calling thread's slice to `nanos`, keeping its policy and
    /// nice value (only under the normal policy: a real-time or batch
    /// policy someone chose is left as it is).
    pub fn set_slice(nanos: u64) -> io::Result<()> {
        let mut attr = attributes()?;
        if attr.sched_policy != libc::SCHED_OTHER as u32 {
            return Ok(());
        }
        attr.sched_runtime = nanos;
        set_attributes(attr)
    }

    /// Sets the calling thread's scheduling attributes to `attr` (its
    /// flags cleared).
    pub fn set_attributes(mut attr: libc::sched_attr) -> io::Result<()> {
        attr.size = std::mem::size_of::<libc::sched_attr>() as u32;
        attr.sched_flags = 0;
        // SAFETY: `attr` is a whole sched_attr of the size it gives.
        let done = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr, 0) };
        if done != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn the_short_slice_keeps_the_threads_nice_value() {
        std::thread::spawn(|| {
            let before = linux::attributes().expect("sched_getattr");
            // A higher nice value needs no privilege.
            // SAFETY: setpriority on the calling thread (who 0).
            let set = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, before.sched_nice + 3) };
            assert_eq!(set, 0, "setpriority");
            ask_short_slice();
            let after = linux::attributes().expect("sched_getattr");
            assert_eq!(after.sched_nice, before.sched_nice + 3);
            assert_eq!(after.sched_policy, libc::SCHED_OTHER as u32);
            // A kernel with custom slices reports the default one (not 0)
            // before; it then reports the one asked for.
            if before.sched_runtime != 0 {
                assert_eq!(after.sched_runtime, WRITER_SLICE_NS);
            }
        })
        .join()
        .expect("the thread");
    }

    /// The slices of this process's threads named `name`.
    fn slices_of(name: &str) -> Vec<u64> {
        let mut slices = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
            let task = task.expect("a task").path();
            let Ok(comm) = std::fs::read_to_string(task.join("comm")) else {
                continue; // The thread ended meanwhile.
            };
            let tid = task
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse().ok());
            if comm.trim_end() == name
                && let Some(Ok(attr)) = tid.map(linux::attributes_of)
            {
                slices.push(attr.sched_runtime);
            }
        }
        slices
    }

    #[tokio::test]
    async fn a_stores_writer_asks_for_the_short_slice() {
        let default = linux::attributes().expect("sched_getattr").sched_runtime;
        let dir = tempfile::tempdir().unwrap();
        let _store = crate::store::redb_engine::RedbStore::open(dir.path()).unwrap();
        // A kernel without custom slices reports none (0).
        let asked = |slices: &[u64]| {
            !slices.is_empty() && (default == 0 || slices.iter().all(|&s| s == WRITER_SLICE_NS))
        };
        // The thread names itself, then asks, once it runs.
        let mut slices = slices_of("kvs-writer");
        for _ in 0..500 {
            if asked(&slices) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            slices = slices_of("kvs-writer");
        }
        assert!(asked(&slices), "the writers' slices: {slices:?}");
        // The other threads keep the default.
        assert!(
            slices_of("kvs-disk-sync")
                .iter()
                .all(|&slice| slice == default)
        );
    }

    #[test]
    fn a_batch_policy_is_left_as_it_is() {
        std::thread::spawn(|| {
            let mut attr = linux::attributes().expect("sched_getattr");
            attr.sched_policy = libc::SCHED_BATCH as u32;
            linux::set_attributes(attr).expect("sched_setattr");
            let before = linux::attributes().expect("sched_getattr");
            ask_short_slice();
            let after = linux::attributes().expect("sched_getattr");
            assert_eq!(after.sched_policy, libc::SCHED_BATCH as u32);
            assert_eq!(after.sched_runtime, before.sched_runtime);
        })
        .join()
        .expect("the thread");
    }
}
