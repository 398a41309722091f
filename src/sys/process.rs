//! Process-wide settings: the open-file limit, the privilege drop, the
//! resident size.

use std::io;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the new soft
/// limit (`u64::MAX` for unlimited, as `RLIM_INFINITY` reads).
pub fn raise_nofile_limit() -> io::Result<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    // rustix says "unlimited" as `None`.
    let lim = |v: Option<u64>| v.unwrap_or(u64::MAX);
    let rl = getrlimit(Resource::Nofile);
    let (cur, max) = (lim(rl.current), lim(rl.maximum));
    if cur < max {
        let want = Rlimit {
            current: rl.maximum,
            maximum: rl.maximum,
        };
        if setrlimit(Resource::Nofile, want).is_ok() {
            return Ok(max);
        }
    }
    Ok(cur)
}

/// Looks up a user and (optionally) a group by name and switches the process
/// to them: supplementary groups cleared, gid first, then uid.
///
/// Only while the process has a single thread: a thread started earlier
/// would have run with root's rights until now (and one of ours must never
/// have), so more than one thread is an error here, not a warning — the
/// callers drop before starting any (`daemon::socket`, `daemon::stateless`).
/// A thread just joined may linger in `/proc` for a moment, so the count
/// gets a short grace. No `unsafe` here: nix looks the names up with the
/// reentrant getpwnam_r/getgrnam_r, and its setgroups/setgid/setuid are
/// glibc's. What a drop cannot take back is what was opened before it:
/// descriptors opened as root (listeners, the history database) stay usable
/// afterwards, which is the point of opening them first.
pub fn drop_privileges(user: Option<&str>, group: Option<&str>) -> io::Result<()> {
    let mut threads = thread_count();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while threads.is_some_and(|n| n > 1) && std::time::Instant::now() < end {
        std::thread::sleep(std::time::Duration::from_millis(10));
        threads = thread_count();
    }
    if let Some(n) = threads.filter(|&n| n > 1) {
        return Err(io::Error::other(format!(
            "{n} threads are already running; the privilege drop must come before any thread starts"
        )));
    }
    use nix::unistd::{setgid, setgroups, setuid, Group, User};
    let mut uid = None;
    let mut gid = None;
    if let Some(u) = user {
        if u.contains('\0') {
            return Err(io::Error::other("user name contains NUL"));
        }
        let pw = User::from_name(u)
            .map_err(|e| io::Error::other(format!("cannot look up user {u}: {e}")))?
            .ok_or_else(|| io::Error::other(format!("no such user: {u}")))?;
        uid = Some(pw.uid);
        gid = Some(pw.gid);
    }
    if let Some(g) = group {
        if g.contains('\0') {
            return Err(io::Error::other("group name contains NUL"));
        }
        let gr = Group::from_name(g)
            .map_err(|e| io::Error::other(format!("cannot look up group {g}: {e}")))?
            .ok_or_else(|| io::Error::other(format!("no such group: {g}")))?;
        gid = Some(gr.gid);
    }
    if let Some(g) = gid {
        setgroups(&[])?;
        setgid(g)?;
    }
    if let Some(u) = uid {
        setuid(u)?;
    }
    Ok(())
}

/// The machine's memory (`MemTotal` of /proc/meminfo), in bytes: what the
/// default connection budget is a share of.
pub fn mem_total_bytes() -> io::Result<u64> {
    parse_mem_total(&std::fs::read_to_string("/proc/meminfo")?)
        .ok_or_else(|| io::Error::other("no MemTotal line in /proc/meminfo"))
}

fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => n.checked_mul(1024),
        None => Some(n),
        Some(_) => None,
    }
}

/// Runs `f` with the file-creation mask `mask`, then restores the old one:
/// a socket bound inside gets its final mode at creation, with no moment at
/// a wider one (a chmod after the bind leaves one). The mask is
/// process-wide: call it only while the process has a single thread.
pub fn with_umask<T>(mask: u32, f: impl FnOnce() -> T) -> T {
    use rustix::fs::Mode;
    let old = rustix::process::umask(Mode::from_bits_truncate(mask));
    let out = f();
    rustix::process::umask(old);
    out
}

/// Threads of this process (`None` without /proc).
pub fn thread_count() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/task").ok()?.count())
}

/// Resident set size of this process in bytes, from /proc/self/statm.
pub fn rss_bytes() -> io::Result<u64> {
    let s = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::other("unexpected /proc/self/statm"))?;
    let page = rustix::param::page_size();
    Ok(pages * page.max(4096) as u64)
}

#[cfg(test)]
mod meminfo_tests {
    use super::parse_mem_total;

    #[test]
    fn mem_total_is_read_in_bytes() {
        let m = "MemTotal:       24576000 kB\nMemFree:        1 kB\n";
        assert_eq!(parse_mem_total(m), Some(24_576_000 * 1024));
        assert_eq!(parse_mem_total("MemFree: 3 kB\n"), None);
        assert_eq!(parse_mem_total("MemTotal: many kB\n"), None);
        assert!(super::mem_total_bytes().unwrap() > 0);
    }
}
