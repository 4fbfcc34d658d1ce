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

pub fn format_rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.unix_timestamp().to_string())
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
    fn dates_and_timestamps_parse() {
        assert_eq!(days_between("2026-01-01T10:00:00Z", "2026-01-05"), Some(3));
        assert_eq!(days_between("2026-01-01", "2026-01-05T00:00:00-04:00"), Some(4));
        assert_eq!(days_between("x", "2026-01-05"), None);
    }
}
