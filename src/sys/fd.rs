//! Owning descriptors: closing a raw one, taking the ones a service
//! manager passed, handing one to the tokio reactor.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Closes a raw descriptor that the caller owns and will not use again.
///
/// For the socket engine, whose slab keeps held connections as `RawFd`s
/// (a `-1` marks a free slot) and which closes each one exactly once, when
/// its slot is released. Passing a descriptor someone else owns would close
/// it under them; nothing here can check that, so the only callers are
/// those slot releases.
pub fn close(fd: RawFd) {
    // SAFETY: `OwnedFd::from_raw_fd` needs `fd` open and owned by nobody
    // else. The engine's slot was its only owner (it took the number with
    // `into_raw_fd`) and is cleared with this call, so the descriptor is
    // closed exactly once and never used again.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for socket2::Socket {}
    impl Sealed for super::super::Epoll {}
    impl Sealed for super::super::netlink::Netlink {}
}

/// Types that own exactly one descriptor for their whole life and always
/// return that one from `as_raw_fd` (what tokio's `AsyncFd::register`
/// requires). Sealed: only the types listed in this file, checked by hand.
pub trait StableFd: std::os::fd::AsFd + AsRawFd + sealed::Sealed {}
impl StableFd for socket2::Socket {}
impl StableFd for super::Epoll {}
impl StableFd for super::netlink::Netlink {}

/// Registers an owned descriptor with the tokio reactor.
pub fn register_async<T: StableFd>(inner: T) -> io::Result<tokio::io::unix::AsyncFd<T>> {
    // SAFETY: `T: StableFd` is sealed to `socket2::Socket`, `Epoll` and
    // `netlink::Netlink`, each of which holds exactly one `OwnedFd`, opened
    // when it was built, never replaced and closed only on drop; so the
    // descriptor is open, and `as_raw_fd` returns the same one, for as long
    // as the `AsyncFd` holds `inner`.
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
