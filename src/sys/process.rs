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
pub fn drop_privileges(user: Option<&str>, group: Option<&str>) -> io::Result<()> {
    use std::ffi::CString;
    let mut uid: Option<libc::uid_t> = None;
    let mut gid: Option<libc::gid_t> = None;
    if let Some(u) = user {
        let c = CString::new(u).map_err(|_| io::Error::other("user name contains NUL"))?;
        // SAFETY: `c` is a valid C string; getpwnam returns NULL or a pointer
        // to static storage that we read immediately, single-threaded at start.
        let pw = unsafe { libc::getpwnam(c.as_ptr()) };
        if pw.is_null() {
            return Err(io::Error::other(format!("no such user: {u}")));
        }
        // SAFETY: `pw` is non-null and points to a valid passwd record.
        unsafe {
            uid = Some((*pw).pw_uid);
            gid = Some((*pw).pw_gid);
        }
    }
    if let Some(g) = group {
        let c = CString::new(g).map_err(|_| io::Error::other("group name contains NUL"))?;
        // SAFETY: as for getpwnam above.
        let gr = unsafe { libc::getgrnam(c.as_ptr()) };
        if gr.is_null() {
            return Err(io::Error::other(format!("no such group: {g}")));
        }
        // SAFETY: `gr` is non-null and points to a valid group record.
        gid = Some(unsafe { (*gr).gr_gid });
    }
    if let Some(g) = gid {
        // SAFETY: plain syscalls with integer arguments.
        unsafe {
            if libc::setgroups(0, std::ptr::null()) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::setgid(g) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    if let Some(u) = uid {
        // SAFETY: plain syscall with an integer argument.
        if unsafe { libc::setuid(u) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Resident set size of this process in bytes, from /proc/self/statm.
pub fn rss_bytes() -> io::Result<u64> {
    let s = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::other("unexpected /proc/self/statm"))?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Ok(pages * page.max(4096) as u64)
}
