//! Keys and key prefixes. A key is 1–1024 bytes of UTF-8 without control
//! characters and without a `.` or `..` segment between slashes; everything
//! else (slashes, spaces, `%`, `+`, a leading or trailing `/`) is kept as it is.

use std::fmt;

/// The longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// Why a key was refused; shown to the client in a 400 `invalid_key`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("a key may not be empty")]
    Empty,
    #[error("a key may be at most 1024 bytes (this one has {0})")]
    TooLong(usize),
    #[error("a key must be UTF-8")]
    NotUtf8,
    #[error("a key may not contain control characters")]
    ControlCharacter,
    #[error("a key may not have a `.` or `..` segment between slashes")]
    DotSegment,
}

/// A valid key.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(String);

impl Key {
    /// A key from the decoded bytes of a request.
    pub fn parse_bytes(bytes: Vec<u8>) -> Result<Key, KeyError> {
        let text = String::from_utf8(bytes).map_err(|_| KeyError::NotUtf8)?;
        Key::parse(text)
    }

    pub fn parse(text: impl Into<String>) -> Result<Key, KeyError> {
        let text = text.into();
        if text.is_empty() {
            return Err(KeyError::Empty);
        }
        if text.len() > MAX_KEY_BYTES {
            return Err(KeyError::TooLong(text.len()));
        }
        if has_control(&text) {
            return Err(KeyError::ControlCharacter);
        }
        if text.contains('.')
            && text
                .split('/')
                .any(|segment| segment == "." || segment == "..")
        {
            return Err(KeyError::DotSegment);
        }
        Ok(Key(text))
    }

    /// A key read back from storage, which only ever holds parsed keys.
    pub fn from_stored(text: &str) -> Key {
        Key(text.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A byte prefix of keys: `app` covers `app/x` and `apple`. Empty means all.
#[derive(Clone, Default, PartialEq, Eq, Hash, Debug)]
pub struct Prefix(String);

impl Prefix {
    pub fn parse(text: impl Into<String>) -> Result<Prefix, KeyError> {
        let text = text.into();
        if text.len() > MAX_KEY_BYTES {
            return Err(KeyError::TooLong(text.len()));
        }
        if has_control(&text) {
            return Err(KeyError::ControlCharacter);
        }
        Ok(Prefix(text))
    }

    /// A prefix read back from storage, which only ever holds parsed ones.
    pub fn from_stored(text: &str) -> Prefix {
        Prefix(text.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn covers(&self, key: &str) -> bool {
        key.as_bytes().starts_with(self.0.as_bytes())
    }

    /// The smallest text above every key the prefix covers (keys sort by
    /// their bytes, as UTF-8 sorts by code point): the prefix with its last
    /// character that can grow grown by one. `None` for a prefix that
    /// covers every key from some point on (empty, or all `U+10FFFF`).
    pub fn upper_bound(&self) -> Option<String> {
        let mut text = self.0.clone();
        while let Some(last) = text.pop() {
            let next = (last as u32 + 1..=char::MAX as u32).find_map(char::from_u32);
            if let Some(next) = next {
                text.push(next);
                return Some(text);
            }
        }
        None
    }
}

fn has_control(text: &str) -> bool {
    // The control characters refused are ASCII, and no byte of a UTF-8
    // sequence of more than one byte is: the bytes tell as the characters do.
    text.bytes().any(|b| b <= 0x1f || b == 0x7f)
}

/// The longest content type a write may give. A media type's name is at
/// most 127 + 1 + 127 characters (RFC 6838); the rest is room for its
/// parameters. The bound also keeps a backup's key line within
/// `backup::Reader::longest_line`.
pub const MAX_CONTENT_TYPE_BYTES: usize = 1024;

/// The content type a key has when none is given.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Whether `text` is a content type a key may take, however a write gives
/// it (a header, `?content_type=`, a transaction's or an import's field):
/// some text in visible ASCII (tabs too), which a read sends back as its
/// `Content-Type` header, of at most [`MAX_CONTENT_TYPE_BYTES`]. A backup's
/// are restored as they were: releases before this rule took any text from
/// a transaction or an import, and a read leaves out a `Content-Type` it
/// cannot send. Only one longer than the bound is backed up as
/// [`DEFAULT_CONTENT_TYPE`] (`backup::key_line`).
pub fn is_content_type(text: &str) -> bool {
    let allowed = |b: u8| b == b'\t' || (b' '..=b'~').contains(&b);
    text.len() <= MAX_CONTENT_TYPE_BYTES && !text.trim().is_empty() && text.bytes().all(allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Looking at bytes finds the same control characters as looking
        /// at characters, whatever the text.
        #[test]
        fn control_characters_are_found_by_their_bytes(text in "(?s).{0,40}") {
            let by_chars = text.chars().any(|c| c <= '\u{1f}' || c == '\u{7f}');
            proptest::prop_assert_eq!(has_control(&text), by_chars);
        }
    }

    #[test]
    fn a_prefix_upper_bound_is_above_every_key_it_covers_and_below_every_other() {
        let bound = |p: &str| Prefix::parse(p).unwrap().upper_bound();
        assert_eq!(bound("m/").as_deref(), Some("m0"));
        assert_eq!(bound("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(bound("\u{D7FF}").as_deref(), Some("\u{E000}"));
        assert_eq!(bound(""), None);
        assert_eq!(bound("\u{10FFFF}"), None);
        let prefix = Prefix::parse("ab").unwrap();
        let upper = prefix.upper_bound().unwrap();
        for key in ["ab", "ab\u{10FFFF}\u{10FFFF}", "abz", "ab/"] {
            assert!(prefix.covers(key) && key < upper.as_str(), "{key}");
        }
        for key in ["ac", "b", "ac/x"] {
            assert!(!prefix.covers(key) && key >= upper.as_str(), "{key}");
        }
    }

    #[test]
    fn keeps_slashes_spaces_and_reserved_characters() {
        for good in [
            "a/b",
            "/leading",
            "dir/",
            "a//b",
            "  spaces  ",
            "100% sure?",
            "...",
            "a/.b",
            "..a",
        ] {
            assert_eq!(Key::parse(good).unwrap().as_str(), good);
        }
        assert!(Key::parse("k".repeat(1024)).is_ok());
        assert!(Key::parse("é".repeat(512)).is_ok());
    }

    #[test]
    fn refuses_empty_long_control_and_dot_segments() {
        assert_eq!(Key::parse(""), Err(KeyError::Empty));
        assert_eq!(Key::parse("k".repeat(1025)), Err(KeyError::TooLong(1025)));
        for bad in ["a\0b", "tab\t", "del\u{7f}", "line\nfeed"] {
            assert_eq!(Key::parse(bad), Err(KeyError::ControlCharacter), "{bad:?}");
        }
        for bad in [".", "..", "a/./b", "a/../b", "./a", "a/..", "/..", "a//./b"] {
            assert_eq!(Key::parse(bad), Err(KeyError::DotSegment), "{bad:?}");
        }
        assert_eq!(Key::parse_bytes(vec![0xff]), Err(KeyError::NotUtf8));
    }

    #[test]
    fn a_prefix_is_a_byte_prefix() {
        let prefix = Prefix::parse("app").unwrap();
        assert!(prefix.covers("apple") && prefix.covers("app/x") && !prefix.covers("ap"));
    }
}
