//! Advisory file locks (single-instance guards).

use std::io;
use std::os::fd::AsRawFd;

/// Takes an exclusive flock(2) on `f` without waiting: `Ok(false)` when
/// another process holds it. Released when the file is closed.
pub fn try_lock_exclusive(f: &std::fs::File) -> io::Result<bool> {
    // SAFETY: flock only operates on the open descriptor `f` owns.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::WouldBlock {
        Ok(false)
    } else {
        Err(e)
    }
}
