//! Wall-clock instants with millisecond precision, formatted the two ways the
//! contract needs: RFC 3339 UTC in JSON and `Kvs-*` headers, HTTP-date in
//! `Last-Modified`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::macros::format_description;

/// Milliseconds since the Unix epoch. Stored as a plain integer; formatted
/// only at the HTTP edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn now() -> Timestamp {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Timestamp(millis)
    }

    pub fn from_millis(millis: i64) -> Timestamp {
        Timestamp(millis)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    pub fn unix_seconds(self) -> i64 {
        self.0.div_euclid(1000)
    }

    pub fn plus_seconds(self, seconds: u64) -> Timestamp {
        Timestamp(self.0.saturating_add((seconds as i64).saturating_mul(1000)))
    }

    /// Parses RFC 3339 (any offset; kept to the millisecond).
    pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
        let t = OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
        i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
            .ok()
            .map(Timestamp)
    }

    /// `2026-11-21T10:00:00.123Z`. Written digit by digit: this runs for
    /// every answer about a key, and the `time` crate's general formatter
    /// showed in profiles.
    pub fn rfc3339(self) -> String {
        let mut text = [0; RFC3339_LEN];
        match self.write_rfc3339(&mut text) {
            Some(text) => text.to_owned(),
            None => self.rfc3339_general(),
        }
    }

    /// [`Timestamp::rfc3339`] written into `text`, without allocating (the
    /// JSON answers serialize it from there); `None` for a year outside
    /// 0..=9999, which [`Timestamp::rfc3339`] formats the general way.
    pub fn write_rfc3339(self, text: &mut [u8; RFC3339_LEN]) -> Option<&str> {
        let t = self.civil()?;
        *text = *b"0000-00-00T00:00:00.000Z";
        put_digits(&mut text[0..4], t.year);
        put_digits(&mut text[5..7], t.month);
        put_digits(&mut text[8..10], t.day);
        put_time(&mut text[11..19], t.of_day / 1000);
        put_digits(&mut text[20..23], t.of_day % 1000);
        std::str::from_utf8(text).ok()
    }

    /// [`Timestamp::rfc3339`] for a year outside 0..=9999.
    fn rfc3339_general(self) -> String {
        let Ok(t) = OffsetDateTime::from_unix_timestamp_nanos(self.0 as i128 * 1_000_000) else {
            return "1970-01-01T00:00:00.000Z".to_owned();
        };
        let format = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        t.format(&format).unwrap_or_default()
    }

    /// `Sat, 21 Nov 2026 10:00:00 GMT`, written digit by digit too (for
    /// `Last-Modified` on every raw value). Before 1970 reads as 1970, and
    /// after 9999 as its last second (an HTTP-date has four digits).
    pub fn http_date(self) -> String {
        const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        const LAST: i64 = 253_402_300_799;
        let Some(t) = Timestamp(self.unix_seconds().clamp(0, LAST) * 1000).civil() else {
            return "Fri, 31 Dec 9999 23:59:59 GMT".to_owned();
        };
        let mut text = *b"Thu, 01 Jan 1970 00:00:00 GMT";
        text[0..3].copy_from_slice(DAYS[t.weekday].as_bytes());
        put_digits(&mut text[5..7], t.day);
        text[8..11].copy_from_slice(MONTHS[t.month as usize - 1].as_bytes());
        put_digits(&mut text[12..16], t.year);
        put_time(&mut text[17..25], t.of_day / 1000);
        String::from_utf8_lossy(&text).into_owned()
    }

    /// The calendar date and the time of day, for a year of four digits.
    fn civil(self) -> Option<Civil> {
        const DAY: i64 = 86_400_000;
        /// The Julian day of 1970-01-01.
        const EPOCH: i64 = 2_440_588;
        let julian = i32::try_from(self.0.div_euclid(DAY) + EPOCH).ok()?;
        let date = time::Date::from_julian_day(julian).ok()?;
        let year = u32::try_from(date.year())
            .ok()
            .filter(|year| *year <= 9999)?;
        Some(Civil {
            year,
            month: u8::from(date.month()) as u32,
            day: date.day() as u32,
            weekday: date.weekday().number_days_from_monday() as usize,
            of_day: self.0.rem_euclid(DAY) as u32,
        })
    }
}

/// A time's calendar parts, as [`Timestamp::civil`] gives them.
struct Civil {
    year: u32,
    /// 1 to 12.
    month: u32,
    day: u32,
    /// 0 for Monday.
    weekday: usize,
    /// Milliseconds since midnight.
    of_day: u32,
}

/// The length of an RFC 3339 time as [`Timestamp::rfc3339`] writes it.
pub const RFC3339_LEN: usize = 24;

/// `value`'s last `digits.len()` decimal digits into `digits`.
fn put_digits(digits: &mut [u8], mut value: u32) {
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// `hh:mm:ss` of `seconds` since midnight into `text` (8 bytes).
fn put_time(text: &mut [u8], seconds: u32) {
    put_digits(&mut text[0..2], seconds / 3600);
    text[2] = b':';
    put_digits(&mut text[3..5], seconds / 60 % 60);
    text[5] = b':';
    put_digits(&mut text[6..8], seconds % 60);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_rfc3339_with_milliseconds_and_http_dates() {
        let t = Timestamp::from_millis(1_795_255_200_123);
        assert_eq!(t.rfc3339(), "2026-11-21T10:00:00.123Z");
        assert_eq!(
            Timestamp::from_millis(0).rfc3339(),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            Timestamp::from_millis(951_782_399_007).rfc3339(),
            "2000-02-28T23:59:59.007Z"
        );
        assert_eq!(t.http_date(), "Sat, 21 Nov 2026 10:00:00 GMT");
    }

    /// The digit-by-digit RFC 3339 text agrees with the `time` crate's
    /// general formatter over 20,000 times from the year -90 to 10,400 and
    /// at the edges (leap days, the ends of the four-digit years, the ends
    /// of i64), and its text for a year it cannot write is the general one.
    #[test]
    fn rfc3339_agrees_with_the_general_formatter() {
        let mut millis = vec![
            0,
            -1,
            1,
            999,
            86_399_999,
            86_400_000,
            951_782_400_000,     // 2000-02-29
            -2_203_891_200_000,  // 1900-03-01
            4_107_542_400_000,   // 2100-03-01
            -62_167_219_200_000, // 0000-01-01
            -62_167_219_200_001, // the millisecond before: year -1
            253_402_300_799_999, // 9999-12-31T23:59:59.999
            253_402_300_800_000, // 10000-01-01
            i64::MIN,
            i64::MAX,
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            millis.push((x % 330_000_000_000_000) as i64 - 65_000_000_000_000);
        }
        for millis in millis {
            let t = Timestamp::from_millis(millis);
            let mut text = [0; RFC3339_LEN];
            match t.write_rfc3339(&mut text) {
                Some(text) => assert_eq!(text, t.rfc3339_general(), "{millis}"),
                None => assert!(
                    OffsetDateTime::from_unix_timestamp_nanos(millis as i128 * 1_000_000)
                        .map_or(true, |t| !(0..=9999).contains(&t.year())),
                    "{millis}"
                ),
            }
        }
    }

    /// The digit-by-digit HTTP-date agrees with `httpdate`'s at instants 37
    /// days and an hour apart from 1970 to 9999 (every weekday, month and
    /// leap rule), and at the ends of its range.
    #[test]
    fn http_dates_agree_with_httpdate() {
        let reference = |t: Timestamp| {
            let secs = t.unix_seconds().max(0) as u64;
            httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
        };
        let step = 86_400_000 * 37 + 3_661_007;
        let mut millis = 0i64;
        while millis < 253_402_300_799_999 {
            let t = Timestamp::from_millis(millis);
            assert_eq!(t.http_date(), reference(t), "at {millis} ms");
            millis += step;
        }
        for millis in [-5_000, 0, 999, 253_402_300_799_999] {
            let t = Timestamp::from_millis(millis);
            assert_eq!(t.http_date(), reference(t), "at {millis} ms");
        }
        for millis in [253_402_300_800_000, i64::MAX] {
            let t = Timestamp::from_millis(millis);
            assert_eq!(t.http_date(), "Fri, 31 Dec 9999 23:59:59 GMT");
        }
    }
}
