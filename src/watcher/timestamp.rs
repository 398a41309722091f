//! The time a log line says it was written.
//!
//! A hit counts at the time of the event, not of our reading it: after a
//! restart or when catching up on a backlog, arrival time would squeeze a
//! day of offences into one second. Recognised at the start of a line:
//!
//! * fail2ban's `2024-01-15 10:23:45,123` (local time);
//! * ISO 8601 / RFC 3339 `2024-01-15T10:23:45.123456+01:00` (`Z`, an offset,
//!   or none = local; `/` as date separator is accepted too);
//! * classic syslog `Jan 15 10:23:45` (local; the year is the one that puts
//!   the time nearest before now).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Which of the recognised formats a timestamp was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StampKind {
    /// Exactly what fail2ban's own log writes: `2024-01-15 10:23:45,123`
    /// (space, comma, three digits, no zone).
    Fail2ban,
    /// Any other ISO 8601 / RFC 3339 form.
    Iso,
    /// `Jan 15 10:23:45`.
    Syslog,
}

/// A timestamp found at the start of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub time: SystemTime,
    /// Bytes of the line the timestamp took.
    pub len: usize,
    pub kind: StampKind,
}

/// What the filters see of a line: the line after its leading timestamp
/// *and the blanks that separate the stamp from the text*, so `^` anchors at
/// the first character the program wrote (`web1 sshd[1]: ...` after a syslog
/// stamp), and the stamp itself.
pub fn split(line: &str, now: SystemTime) -> (Option<Stamp>, &str) {
    match parse_prefix(line, now) {
        Some(st) => (Some(st), line[st.len..].trim_start_matches([' ', '\t'])),
        None => (None, line),
    }
}

/// Parses the timestamp at the start of `line`, if any. `now` resolves the
/// missing year of syslog stamps.
pub fn parse_prefix(line: &str, now: SystemTime) -> Option<Stamp> {
    let b = line.as_bytes();
    iso(b).or_else(|| syslog(b, now))
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn digits(&mut self, n: usize) -> Option<u32> {
        let s = self.b.get(self.i..self.i + n)?;
        if !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.i += n;
        Some(s.iter().fold(0u32, |a, d| a * 10 + u32::from(d - b'0')))
    }
    fn byte(&mut self, set: &[u8]) -> Option<u8> {
        let c = *self.b.get(self.i)?;
        if set.contains(&c) {
            self.i += 1;
            Some(c)
        } else {
            None
        }
    }
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
}

fn iso(b: &[u8]) -> Option<Stamp> {
    let mut c = Cursor { b, i: 0 };
    let year = c.digits(4)? as i32;
    let sep = c.byte(b"-/")?;
    let month = c.digits(2)?;
    c.byte(&[sep])?;
    let day = c.digits(2)?;
    c.byte(b"T ")?;
    let (hour, min, sec) = hms(&mut c)?;
    let mut nanos = 0u32;
    let mut frac_digits = 0;
    let mut comma = false;
    if let Some(fc) = c.byte(b".,") {
        comma = fc == b',';
        let start = c.i;
        while c.peek().is_some_and(|d| d.is_ascii_digit()) {
            c.i += 1;
        }
        let frac = &b[start..c.i];
        if frac.is_empty() {
            return None;
        }
        frac_digits = frac.len();
        for (k, d) in frac.iter().take(9).enumerate() {
            nanos += u32::from(d - b'0') * 10u32.pow(8 - k as u32);
        }
    }
    if !valid_date(year, month, day) {
        return None;
    }
    let zone_at = c.i;
    let secs = match c.peek() {
        Some(b'Z') => {
            c.i += 1;
            crate::calendar::utc_to_unix(year, month, day, hour, min, sec)
        }
        Some(s @ (b'+' | b'-')) => {
            let save = c.i;
            c.i += 1;
            match (c.digits(2), {
                c.byte(b":");
                c.digits(2)
            }) {
                (Some(oh), Some(om)) if oh < 24 && om < 60 => {
                    let off = i64::from(oh * 3600 + om * 60);
                    let utc = crate::calendar::utc_to_unix(year, month, day, hour, min, sec);
                    utc.map(|utc| if s == b'+' { utc - off } else { utc + off })
                }
                _ => {
                    c.i = save;
                    local_secs(year, month, day, hour, min, sec)
                }
            }
        }
        _ => local_secs(year, month, day, hour, min, sec),
    }?;
    // A stamp must end at a word boundary, or it is something else.
    if c.peek().is_some_and(|x| x.is_ascii_alphanumeric()) {
        return None;
    }
    let fail2ban = sep == b'-' && b[10] == b' ' && comma && frac_digits == 3 && c.i == zone_at;
    Some(Stamp {
        time: to_time(secs, nanos)?,
        len: c.i,
        kind: if fail2ban {
            StampKind::Fail2ban
        } else {
            StampKind::Iso
        },
    })
}

fn hms(c: &mut Cursor) -> Option<(u32, u32, u32)> {
    let h = c.digits(2)?;
    c.byte(b":")?;
    let m = c.digits(2)?;
    c.byte(b":")?;
    let s = c.digits(2)?;
    (h < 24 && m < 60 && s <= 60).then_some((h, m, s.min(59)))
}

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

fn syslog(b: &[u8], now: SystemTime) -> Option<Stamp> {
    let mon = MONTHS.iter().position(|m| b.get(..3) == Some(&m[..]))? as u32 + 1;
    let mut c = Cursor { b, i: 3 };
    c.byte(b" ")?;
    let day = if c.byte(b" ").is_some() {
        c.digits(1)?
    } else {
        c.digits(2).or_else(|| c.digits(1))?
    };
    c.byte(b" ")?;
    let (hour, min, sec) = hms(&mut c)?;
    if c.peek().is_some_and(|x| x.is_ascii_alphanumeric()) {
        return None;
    }
    let now_secs = now.duration_since(UNIX_EPOCH).ok()?.as_secs() as i64;
    let this_year = crate::calendar::utc_date(now_secs).0;
    // The year that puts the stamp at or before now (allowing a day of
    // clock skew): a December line read in January is last year's.
    for year in [this_year, this_year - 1] {
        if !valid_date(year, mon, day) {
            continue;
        }
        let t = local_secs(year, mon, day, hour, min, sec)?;
        if t <= now_secs + 86400 {
            return Some(Stamp {
                time: to_time(t, 0)?,
                len: c.i,
                kind: StampKind::Syslog,
            });
        }
    }
    None
}

/// Local broken-down time to epoch seconds. Zone offsets change only at
/// hour boundaries, so the start of the hour is cached per thread (the zone
/// lookup once cost half of the watcher's time per line).
fn local_secs(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Option<i64> {
    use std::cell::Cell;
    type Hour = (i32, u32, u32, u32);
    thread_local! {
        static HOUR: Cell<Option<(Hour, i64)>> = const { Cell::new(None) };
    }
    let key = (y, mo, d, h);
    let base = match HOUR.with(Cell::get) {
        Some((k, b)) if k == key => b,
        _ => {
            let b = crate::calendar::local_to_unix(y, mo, d, h, 0, 0)?;
            HOUR.with(|c| c.set(Some((key, b))));
            b
        }
    };
    Some(base + i64::from(mi * 60 + s))
}

fn to_time(secs: i64, nanos: u32) -> Option<SystemTime> {
    let s = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(s, nanos))
}

fn valid_date(y: i32, m: u32, d: u32) -> bool {
    (1970..=9999).contains(&y) && crate::calendar::is_valid_date(y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(t: SystemTime) -> f64 {
        t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
    }

    fn local(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> f64 {
        crate::calendar::local_to_unix(y, mo, d, h, mi, s).unwrap() as f64
    }

    #[test]
    fn fail2ban_format_is_local_with_millis() {
        let line =
            "2024-01-15 10:23:45,123 fail2ban.actions        [811]: NOTICE  [sshd] Ban 192.0.2.1";
        let st = parse_prefix(line, SystemTime::now()).unwrap();
        assert_eq!(&line[st.len..st.len + 1], " ");
        assert!((secs(st.time) - (local(2024, 1, 15, 10, 23, 45) + 0.123)).abs() < 1e-6);
    }

    #[test]
    fn iso8601_with_zone_and_fraction() {
        let st = parse_prefix("2024-01-15T10:23:45.5Z sshd[1]: x", SystemTime::now()).unwrap();
        assert_eq!(secs(st.time), 1705314225.5);
        assert_eq!(st.len, "2024-01-15T10:23:45.5Z".len());
        let st = parse_prefix("2024-01-15T11:23:45+01:00 host x", SystemTime::now()).unwrap();
        assert_eq!(secs(st.time), 1705314225.0);
        let st = parse_prefix("2024-01-15T05:23:45-0500 host x", SystemTime::now()).unwrap();
        assert_eq!(secs(st.time), 1705314225.0);
        let st = parse_prefix("2024-02-29T00:00:00Z", SystemTime::now()).unwrap();
        assert_eq!(secs(st.time), 1709164800.0);
    }

    #[test]
    fn syslog_year_is_inferred_from_now() {
        // "now" = 2024-01-10: a Dec 31 line is from 2023, a Jan 9 line 2024.
        let now = UNIX_EPOCH + Duration::from_secs(1704844800);
        let st = parse_prefix("Dec 31 23:59:59 host sshd[1]: Failed", now).unwrap();
        assert_eq!(secs(st.time), local(2023, 12, 31, 23, 59, 59));
        assert_eq!(st.len, "Dec 31 23:59:59".len());
        let st = parse_prefix("Jan  9 01:02:03 host sshd[1]: Failed", now).unwrap();
        assert_eq!(secs(st.time), local(2024, 1, 9, 1, 2, 3));
    }

    #[test]
    fn garbage_is_not_a_timestamp() {
        let now = SystemTime::now();
        for l in [
            "",
            "hello",
            "2024-13-01 00:00:00 x",
            "2023-02-29 00:00:00 x",
            "2024-01-15 25:00:00 x",
            "2024-01-15 10:23 x",
            "2024-01-15 10:23:45,x",
            "Foo 12 10:00:00 x",
            "Jan 12 10:00 x",
            "12345-01-15 10:23:45",
            "2024-01-15 10:23:45abc",
        ] {
            assert_eq!(parse_prefix(l, now), None, "{l:?}");
        }
    }
}
