//! Local broken-down time to epoch seconds.

/// Seconds since the epoch of a broken-down *local* time (log timestamps
/// such as fail2ban's carry no zone), via mktime(3) so the system's zone
/// rules and DST apply. `None` when the time does not exist.
pub fn local_time_to_unix(
    year: i32,
    month: u32,
    day: u32,
    hour: u32,
    min: u32,
    sec: u32,
) -> Option<i64> {
    // SAFETY: tm is a plain C struct for which all-zero is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = year - 1900;
    tm.tm_mon = month as i32 - 1;
    tm.tm_mday = day as i32;
    tm.tm_hour = hour as i32;
    tm.tm_min = min as i32;
    tm.tm_sec = sec as i32;
    tm.tm_isdst = -1;
    // SAFETY: mktime reads and normalises the struct we own; glibc's mktime
    // takes its own lock around the zone data.
    let t = unsafe { libc::mktime(&mut tm) };
    if t == -1 {
        None
    } else {
        Some(t as i64)
    }
}
