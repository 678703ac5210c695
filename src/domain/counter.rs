//! The integers of counters: `incr` reads a stored value and its `?by=`
//! only in the one decimal spelling of a 64-bit integer.

/// Parses `text` as a 64-bit integer written the one canonical way: an
/// optional `-`, then `0` or digits that do not start with `0`; no `+`, no
/// `-0`, no spaces. Redis's INCR reads a stored value the same way, and a
/// transaction's JSON `by` can be written no other way (JSON has neither a
/// `+` nor leading zeros, and reads `-0` as a float). Anything else, or a
/// number outside 64 bits, is `None`.
pub fn parse_counter(text: &[u8]) -> Option<i64> {
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    let canonical = match digits {
        // `0`, but not `-0`.
        [b'0'] => digits.len() == text.len(),
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    if !canonical {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_canonical_decimal_spelling_is_a_counter() {
        let read = [
            ("0", 0),
            ("7", 7),
            ("-7", -7),
            ("10", 10),
            ("9223372036854775807", i64::MAX),
            ("-9223372036854775808", i64::MIN),
        ];
        for (text, value) in read {
            assert_eq!(parse_counter(text.as_bytes()), Some(value), "{text}");
        }
        let refused = [
            "",
            "-",
            "+5",
            "+0",
            "-0",
            "00",
            "007",
            "-07",
            "00000000000000000001",
            " 5",
            "5 ",
            "5\n",
            "1e3",
            "1.0",
            "0x1",
            "--1",
            "9223372036854775808",
            "-9223372036854775809",
            "٣",
        ];
        for text in refused {
            assert_eq!(parse_counter(text.as_bytes()), None, "{text:?}");
        }
    }
}
