//! Owning descriptors: closing a raw one, taking the ones a service
//! manager passed, handing one to the tokio reactor.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Closes a raw descriptor that the caller owns and will not use again.
pub fn close(fd: RawFd) {
    // SAFETY: the caller transfers ownership of `fd`; wrapping it in an
    // `OwnedFd` and dropping it closes it exactly once.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
}

/// Registers an owned descriptor with the tokio reactor.
pub fn register_async<T: std::os::fd::AsFd + AsRawFd>(
    inner: T,
) -> io::Result<tokio::io::unix::AsyncFd<T>> {
    // SAFETY: `T: AsFd` means `inner` owns (or borrows for its whole life) an
    // open descriptor, and the types used here (`socket2::Socket`, `Epoll`,
    // `netlink::Netlink`) own exactly one `OwnedFd` that they never swap, so
    // the descriptor stays valid and unchanged for as long as the `AsyncFd` holds `inner`.
    unsafe { tokio::io::unix::AsyncFd::register(inner) }.map_err(|e| e.into())
}

/// Set once the descriptors a service manager passed have been taken, so
/// they are wrapped in an owner exactly once.
static INHERITED_TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Takes ownership of descriptors `fds` that the parent (systemd, or a
/// launcher acting like it) left open for this process, e.g. the socket
/// activation range 3..3+LISTEN_FDS. Each must be open (`F_GETFD`), and the
/// whole call succeeds at most once per process: a second call returns an
/// error instead of creating a second owner for the same descriptor.
pub fn take_inherited_fds(fds: impl IntoIterator<Item = RawFd>) -> io::Result<Vec<OwnedFd>> {
    use std::sync::atomic::Ordering;
    let fds: Vec<RawFd> = fds.into_iter().collect();
    for &fd in &fds {
        // SAFETY: F_GETFD only reads the descriptor's flags; any integer is
        // an acceptable argument (EBADF for one that is not open).
        if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(io::Error::other(format!(
                "inherited descriptor {fd} is not open"
            )));
        }
    }
    if INHERITED_TAKEN.swap(true, Ordering::SeqCst) {
        return Err(io::Error::other("inherited descriptors were already taken"));
    }
    Ok(fds
        .into_iter()
        // SAFETY: each `fd` is open (checked above), was left to this
        // process by its parent, and nothing in this process owns it yet:
        // the flag above makes this the only place that ever wraps them.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect())
}
