//! Go's `time.Duration` text, as LAPI writes it (`"167h59m59.3s"`,
//! `"-9.585219ms"`, `"4h"`) and reads it (`"168h"`; LAPI 1.4.6 rejects
//! days). Parsing is bounded: at most 64 bytes, and sums that overflow are
//! errors, never panics.

use std::time::Duration;

/// A parsed Go duration: its sign and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoDuration {
    pub negative: bool,
    pub abs: Duration,
}

/// Parses Go duration text: an optional sign, then one or more
/// `<decimal><unit>` with units `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`; `"0"`
/// alone is zero.
pub fn parse(s: &str) -> Result<GoDuration, String> {
    if s.len() > 64 {
        return Err(format!("duration of {} bytes is too long", s.len()));
    }
    let bad = || format!("{s:?} is not a Go duration");
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(GoDuration {
            negative,
            abs: Duration::ZERO,
        });
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: u128 = 0; // nanoseconds
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, tail) = rest.split_at(num_end);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(bad());
        }
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        let int: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| bad())?
        };
        let mut part = int.checked_mul(scale).ok_or_else(bad)?;
        // Fraction digits beyond nanosecond precision are dropped.
        let mut f_scale = scale;
        for d in frac.bytes().take(20) {
            f_scale /= 10;
            part = part
                .checked_add(u128::from(d - b'0') * f_scale)
                .ok_or_else(bad)?;
        }
        total = total.checked_add(part).ok_or_else(bad)?;
        rest = tail;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| bad())?;
    Ok(GoDuration {
        negative,
        abs: Duration::new(secs, (total % 1_000_000_000) as u32),
    })
}

/// `d` as LAPI accepts it for a new decision: whole hours, minutes and
/// seconds (`"168h"`, `"1h0m30s"`), rounded up to a second, at least `1s`.
pub fn format(d: Duration) -> String {
    let mut secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs = secs.max(1);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m, s) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> (bool, Duration) {
        let d = parse(s).unwrap();
        (d.negative, d.abs)
    }

    #[test]
    fn lapi_texts_parse() {
        assert_eq!(
            ok("167h59m59.3s"),
            (false, Duration::from_millis((168 * 3600 - 1) * 1000 + 300))
        );
        assert_eq!(ok("1h59m58.834526327s").1, Duration::new(7198, 834_526_327));
        assert_eq!(ok("-9.585219ms"), (true, Duration::from_nanos(9_585_219)));
        assert_eq!(ok("4h"), (false, Duration::from_secs(4 * 3600)));
        assert_eq!(ok("0"), (false, Duration::ZERO));
        assert_eq!(ok("1.5h"), (false, Duration::from_secs(5400)));
        assert_eq!(ok("300µs"), (false, Duration::from_micros(300)));
        assert_eq!(ok(".5s"), (false, Duration::from_millis(500)));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            "",
            "-",
            "7d",
            "h",
            "1",
            "1.2.3s",
            "1hh",
            "s1",
            "abc",
            "1e3s",
            "99999999999999999999999999999h",
            &"9".repeat(65),
            "1h 2m",
            "٣s",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        // Overflow in the sum.
        let huge = format!("{}h{}h", u64::MAX / 4, u64::MAX / 4);
        assert!(parse(&huge).is_err());
    }

    #[test]
    fn format_is_what_lapi_accepts_and_round_trips() {
        assert_eq!(format(Duration::from_secs(7 * 86400)), "168h");
        assert_eq!(format(Duration::from_secs(3630)), "1h0m30s");
        assert_eq!(format(Duration::from_secs(90)), "1m30s");
        assert_eq!(format(Duration::from_secs(120)), "2m");
        assert_eq!(format(Duration::from_millis(1)), "1s");
        assert_eq!(format(Duration::ZERO), "1s");
        assert_eq!(format(Duration::from_millis(59_001)), "1m");
        for secs in [1, 59, 61, 3599, 3601, 86400, 604_799] {
            let d = Duration::from_secs(secs);
            assert_eq!(parse(&format(d)).unwrap().abs, d);
        }
    }
}
