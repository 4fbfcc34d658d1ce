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
    if !t.offset().is_utc() || !(0..=9999).contains(&t.year()) {
        return t.format(&Rfc3339).unwrap_or_else(|_| t.unix_timestamp().to_string());
    }
    // `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` at most, written digit by digit.
    let mut out = [0u8; 30];
    let (h, m, sec, nanos) = t.to_hms_nano();
    let fields = [(t.year() as u32, 4), (t.month() as u32, 2), (t.day() as u32, 2), (h as u32, 2), (m as u32, 2), (sec as u32, 2)];
    let mut len = 0;
    for (i, (value, width)) in fields.into_iter().enumerate() {
        if i > 0 {
            out[len] = b"--T::"[i - 1];
            len += 1;
        }
        put_digits(&mut out[len..len + width], value);
        len += width;
    }
    if nanos != 0 {
        out[len] = b'.';
        put_digits(&mut out[len + 1..len + 10], nanos);
        len += 10;
        while out[len - 1] == b'0' {
            len -= 1;
        }
    }
    out[len] = b'Z';
    out[..=len].iter().map(|&b| b as char).collect()
}

/// `value` as decimal digits filling `into`, zero-padded on the left.
fn put_digits(into: &mut [u8], mut value: u32) {
    for d in into.iter_mut().rev() {
        *d = b'0' + (value % 10) as u8;
        value /= 10;
    }
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
