//! Calendar arithmetic, in one place and over jiff: civil dates to epoch
//! seconds (UTC or the system's local zone) and back. The watcher's log
//! timestamps and the report's day labels both use it; before, each had its
//! own copy of the days-from-civil algorithm and the local case went
//! through `mktime(3)`.

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::Timestamp;

fn datetime(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Option<DateTime> {
    let n = |v: u32| i8::try_from(v).ok();
    DateTime::new(
        i16::try_from(y).ok()?,
        n(mo)?,
        n(d)?,
        n(h)?,
        n(mi)?,
        n(s)?,
        0,
    )
    .ok()
}

/// Whether `y-m-d` is a real date (month 1–12, day within the month,
/// leap years counted).
pub fn is_valid_date(y: i32, m: u32, d: u32) -> bool {
    datetime(y, m, d, 0, 0, 0).is_some()
}

/// Epoch seconds of a UTC civil time; `None` for a time that is not one.
pub fn utc_to_unix(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Option<i64> {
    let dt = datetime(y, mo, d, h, mi, s)?;
    Some(TimeZone::UTC.to_timestamp(dt).ok()?.as_second())
}

/// Epoch seconds of a broken-down *local* time (log timestamps such as
/// fail2ban's carry no zone), in the system's zone (`TZ`, else
/// `/etc/localtime`, else UTC) with its DST rules. `None` for a time that
/// is not one.
pub fn local_to_unix(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Option<i64> {
    let tz = TimeZone::try_system().unwrap_or(TimeZone::UTC);
    zoned_to_unix(&tz, datetime(y, mo, d, h, mi, s)?)
}

/// A time in a DST gap counts as if the clock had not yet jumped (02:30
/// on a spring-forward night is 03:30 new time) and one in a fold as the
/// second, standard-time one: jiff's `later`, which is what glibc's
/// `mktime(3)` with `tm_isdst = -1` answered before.
fn zoned_to_unix(tz: &TimeZone, dt: DateTime) -> Option<i64> {
    Some(tz.to_ambiguous_timestamp(dt).later().ok()?.as_second())
}

/// The UTC civil date `(year, month, day)` of an epoch second, clamped to
/// the years -9999..=9999 jiff represents.
pub fn utc_date(unix: i64) -> (i32, u32, u32) {
    let ts = Timestamp::from_second(unix).unwrap_or(if unix < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    });
    let d: Date = TimeZone::UTC.to_datetime(ts).date();
    (i32::from(d.year()), d.month() as u32, d.day() as u32)
}

/// `YYYY-MM-DD` (UTC) of a unix time.
pub fn utc_day(unix: f64) -> String {
    let (y, m, d) = utc_date((unix / 86400.0).floor() as i64 * 86400);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        for d in [-1000i64, 0, 59, 60, 365, 10957, 19737, 100000] {
            let (y, m, dd) = utc_date(d * 86400);
            assert_eq!(utc_to_unix(y, m, dd, 0, 0, 0), Some(d * 86400));
        }
    }

    #[test]
    fn dates_are_checked() {
        assert!(is_valid_date(2024, 2, 29));
        assert!(!is_valid_date(2023, 2, 29));
        assert!(!is_valid_date(2024, 13, 1));
        assert!(!is_valid_date(2024, 4, 31));
    }

    #[test]
    fn dst_gap_and_fold_as_mktime_answered() {
        // US Eastern, 2024: spring forward Mar 10 02:00, fall back Nov 3 02:00.
        // The figures are glibc mktime's with tm_isdst = -1.
        let tz = TimeZone::posix("EST5EDT,M3.2.0,M11.1.0").unwrap();
        let at = |y, mo, d, h, mi| zoned_to_unix(&tz, datetime(y, mo, d, h, mi, 0).unwrap());
        assert_eq!(at(2024, 3, 10, 2, 30), Some(1_710_055_800));
        assert_eq!(at(2024, 11, 3, 1, 30), Some(1_730_615_400));
        assert_eq!(at(2024, 1, 15, 10, 23), Some(1_705_332_180));
    }

    #[test]
    fn utc_times() {
        assert_eq!(utc_to_unix(2024, 1, 15, 10, 23, 45), Some(1705314225));
        assert_eq!(utc_to_unix(2024, 1, 15, 24, 0, 0), None);
        assert_eq!(utc_date(1_767_225_599), (2025, 12, 31));
    }
}
