//! Wall-clock instants with millisecond precision, formatted the two ways the
//! contract needs: RFC 3339 UTC in JSON and `Kvs-*` headers, HTTP-date in
//! `Last-Modified`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
        let Ok(t) = OffsetDateTime::from_unix_timestamp_nanos(self.0 as i128 * 1_000_000) else {
            return "1970-01-01T00:00:00.000Z".to_owned();
        };
        let year = t.year();
        if !(0..=9999).contains(&year) {
            let format = format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            );
            return t.format(&format).unwrap_or_default();
        }
        let mut text = String::with_capacity(24);
        let parts = [
            (year as u32, 4, '-'),
            (u8::from(t.month()) as u32, 2, '-'),
            (t.day() as u32, 2, 'T'),
            (t.hour() as u32, 2, ':'),
            (t.minute() as u32, 2, ':'),
            (t.second() as u32, 2, '.'),
            (t.millisecond() as u32, 3, 'Z'),
        ];
        for (value, width, separator) in parts {
            for place in (0..width).rev() {
                text.push(char::from(b'0' + (value / 10u32.pow(place) % 10) as u8));
            }
            text.push(separator);
        }
        text
    }

    /// `Sat, 21 Nov 2026 10:00:00 GMT`.
    pub fn http_date(self) -> String {
        let secs = self.unix_seconds().max(0) as u64;
        httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
