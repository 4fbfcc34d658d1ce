//! Time as a seam: the daemon uses the system clock, workflow tests and
//! replays use a fixed one, so a rule that looks at ETAs decides the same way
//! every run.

use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime};

pub trait Clock: Send + Sync {
    fn now(&self) -> OffsetDateTime;

    fn now_rfc3339(&self) -> String {
        format_rfc3339(self.now())
    }
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock stopped at one instant.
pub struct FixedClock(pub OffsetDateTime);

impl Clock for FixedClock {
    fn now(&self) -> OffsetDateTime {
        self.0
    }
}

/// RFC 3339 as the `time` crate writes it (fraction without trailing zeros,
/// `Z` for UTC). UTC instants of years 0–9999 are written here directly, as
/// every audit entry and event carries one; anything else goes through `time`.
pub fn format_rfc3339(t: OffsetDateTime) -> String {
    use std::fmt::Write;
    if !t.offset().is_utc() || !(0..=9999).contains(&t.year()) {
        return t.format(&Rfc3339).unwrap_or_else(|_| t.unix_timestamp().to_string());
    }
    let mut out = String::with_capacity(30);
    let (h, m, sec, nanos) = t.to_hms_nano();
    let _ = write!(out, "{:04}-{:02}-{:02}T{h:02}:{m:02}:{sec:02}", t.year(), t.month() as u8, t.day());
    if nanos != 0 {
        let digits = format!("{nanos:09}");
        let _ = write!(out, ".{}", digits.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Parse an RFC 3339 timestamp or a plain `YYYY-MM-DD` date (midnight UTC).
pub fn parse_instant(s: &str) -> Option<OffsetDateTime> {
    let s = s.trim();
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t);
    }
    let date = s.get(..10)?;
    Date::parse(date, time::macros::format_description!("[year]-[month]-[day]")).ok().map(|d| d.midnight().assume_utc())
}

/// Whole days from `from` to `to` (negative when `to` is past), if both parse.
pub fn days_between(from: &str, to: &str) -> Option<i64> {
    let (a, b) = (parse_instant(from)?, parse_instant(to)?);
    Some((b - a).whole_days())
}

pub fn unix_ms(t: OffsetDateTime) -> u64 {
    (t.unix_timestamp_nanos() / 1_000_000).max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_written_as_the_time_crate_writes_them() {
        let mut t = OffsetDateTime::from_unix_timestamp(1_795_000_000).unwrap();
        for step_nanos in [0i64, 1, 10, 120, 1_000, 500_000, 123_456_789, 999_999_999, 86_400_000_000_123] {
            t += time::Duration::nanoseconds(step_nanos);
            assert_eq!(format_rfc3339(t), t.format(&Rfc3339).unwrap(), "{t:?}");
        }
        let early = Date::from_calendar_date(7, time::Month::March, 4).unwrap().midnight().assume_utc();
        assert_eq!(format_rfc3339(early), "0007-03-04T00:00:00Z");
        let offset = t.to_offset(time::UtcOffset::from_hms(-4, 0, 0).unwrap());
        assert_eq!(format_rfc3339(offset), offset.format(&Rfc3339).unwrap());
    }

    #[test]
    fn dates_and_timestamps_parse() {
        assert_eq!(days_between("2026-01-01T10:00:00Z", "2026-01-05"), Some(3));
        assert_eq!(days_between("2026-01-01", "2026-01-05T00:00:00-04:00"), Some(4));
        assert_eq!(days_between("x", "2026-01-05"), None);
    }
}
