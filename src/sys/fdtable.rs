//! Giving a helper thread its own file-descriptor table.
//!
//! While every thread of a process shares one fd table, Linux takes the
//! slow path on each fd syscall of every thread (reference-counting the
//! file in `fdget`, which it skips for a table nobody else uses). For the
//! engine, which makes a dozen fd syscalls per trapped connection, merely
//! having an idle second thread measured +13 % CPU. A helper thread that
//! calls [`private_fd_table`] first gets a private copy of the table, the
//! engine's table is unshared again, and its fast path comes back.

use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Moves the calling thread onto a private copy of the fd table
/// (`unshare(CLONE_FILES)`) and closes every descriptor above stderr in
/// that copy except `keep`, so the thread holds no reference to the sockets
/// the rest of the process owns (closing one there must really close it).
/// The kept descriptors stay valid in both tables under the same numbers,
/// which matters for SQLite: it shares one `-shm` descriptor per database
/// file among all connections of the process.
pub fn private_fd_table(keep: &[RawFd]) -> io::Result<()> {
    // SAFETY: unshare(2) with CLONE_FILES only affects the calling thread's
    // fd table; it takes no pointers.
    if unsafe { libc::unshare(libc::CLONE_FILES) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let fds: Vec<RawFd> = std::fs::read_dir("/proc/thread-self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2 && !keep.contains(fd))
        .collect();
    for fd in fds {
        // SAFETY: closes only our private copy of `fd`; the other threads'
        // table is untouched, and nothing in this thread owns it. The
        // directory listing's own (already closed) fd gives a harmless EBADF.
        unsafe { libc::close(fd) };
    }
    Ok(())
}

/// Descriptors in the calling thread's table open on `path` or on a file
/// whose name is `path` plus a suffix (SQLite's `-wal`, `-shm`).
pub fn fds_opened_on(path: &Path) -> io::Result<Vec<RawFd>> {
    let base = std::fs::canonicalize(path)?;
    let base = base.as_os_str().as_bytes();
    Ok(std::fs::read_dir("/proc/thread-self/fd")?
        .filter_map(|e| {
            let e = e.ok()?;
            let fd: RawFd = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            target
                .as_os_str()
                .as_bytes()
                .starts_with(base)
                .then_some(fd)
        })
        .collect())
}
