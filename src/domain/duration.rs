//! Durations as the contract writes them (`ttl`, `expires_in`, `wait`): whole
//! seconds, or a whole number with a unit `s`, `m`, `h` or `d`. The error
//! texts never repeat what they were given, which may be a secret pasted in
//! the wrong place.

/// The longest `ttl` or `expires_in` accepted: 3650 days.
pub const MAX_DURATION_SECS: u64 = 3650 * 86_400;

/// Parses `90`, `90s`, `10m`, `1h`, `30d` into seconds. Zero, negative,
/// malformed or over [`MAX_DURATION_SECS`]: an error text for a 400.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    match parse_seconds(text)? {
        Some(seconds) => check_range(seconds),
        None => Err("the duration is too long".to_owned()),
    }
}

/// A duration that is clamped, not refused, when long (`wait`: the
/// contract clamps it to 5 minutes): as [`parse_duration`], but any length
/// above `most`, however large, is `most`.
pub fn parse_duration_at_most(text: &str, most: u64) -> Result<u64, String> {
    match parse_seconds(text)? {
        Some(0) => Err("a duration must be positive".to_owned()),
        Some(seconds) => Ok(seconds.min(most)),
        None => Ok(most),
    }
}

/// The seconds `text` says; `None` when more than a `u64` holds.
fn parse_seconds(text: &str) -> Result<Option<u64>, String> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c),
        _ => (text, 's'),
    };
    let multiplier = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => {
            return Err("unknown duration unit (use s, m, h or d)".to_owned());
        }
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a duration (whole seconds, or a number with s, m, h or d)".to_owned());
    }
    // Only digits are left: the parse fails only when the number is too
    // large for a u64.
    Ok(digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier)))
}

/// The same for a JSON value: a number of seconds or a string as above.
pub fn parse_duration_json(value: &serde_json::Value) -> Result<u64, String> {
    match value {
        serde_json::Value::Number(n) => match n.as_u64() {
            Some(seconds) => check_range(seconds),
            None => Err("a duration must be a positive whole number of seconds".to_owned()),
        },
        serde_json::Value::String(s) => parse_duration(s),
        // What it is instead is not repeated: it may be any text.
        _ => Err("a duration must be a number or a string".to_owned()),
    }
}

fn check_range(seconds: u64) -> Result<u64, String> {
    if seconds == 0 {
        Err("a duration must be positive".to_owned())
    } else if seconds > MAX_DURATION_SECS {
        Err("a duration may be at most 3650 days".to_owned())
    } else {
        Ok(seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `wait` is clamped however long, and refused only when malformed
    /// or zero.
    #[test]
    fn a_duration_at_most_is_clamped_not_refused() {
        assert_eq!(parse_duration_at_most("90", 300), Ok(90));
        assert_eq!(parse_duration_at_most("3651d", 300), Ok(300));
        assert_eq!(
            parse_duration_at_most("99999999999999999999999d", 300),
            Ok(300)
        );
        assert!(parse_duration_at_most("0", 300).is_err());
        assert!(parse_duration_at_most("-5", 300).is_err());
        assert!(parse_duration_at_most("5x", 300).is_err());
        assert!(parse_duration("3651d").is_err());
        assert!(parse_duration("99999999999999999999999d").is_err());
    }

    #[test]
    fn accepts_seconds_and_units() {
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("10m"), Ok(600));
        assert_eq!(parse_duration("1h"), Ok(3600));
        assert_eq!(parse_duration("30d"), Ok(30 * 86_400));
        assert_eq!(parse_duration("3650d"), Ok(MAX_DURATION_SECS));
        assert_eq!(parse_duration_json(&serde_json::json!(3600)), Ok(3600));
    }

    #[test]
    fn refuses_zero_negative_malformed_and_too_long() {
        for bad in [
            "0",
            "0s",
            "-1d",
            "-60",
            "3651d",
            "87625h",
            "1 fortnight",
            "",
            "h",
            "1.5h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
        for bad in [
            serde_json::json!(0),
            serde_json::json!(-60),
            serde_json::json!(1.5),
        ] {
            assert!(parse_duration_json(&bad).is_err(), "{bad} was accepted");
        }
        assert!(parse_duration_json(&serde_json::json!(3651 * 86_400)).is_err());
    }
}
