//! The engine's private epoll set for "peer gone" events.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A level of indirection over an epoll instance used only for "peer gone"
/// events on held connections (EPOLLRDHUP / EPOLLERR / EPOLLHUP, edge
/// triggered). One kernel epitem per connection, nothing in userspace.
pub struct Epoll {
    fd: OwnedFd,
}

/// Readiness bits reported by [`Epoll::wait`].
pub mod ev {
    pub const RDHUP: u32 = libc::EPOLLRDHUP as u32;
    pub const HUP: u32 = libc::EPOLLHUP as u32;
    pub const ERR: u32 = libc::EPOLLERR as u32;
}

impl Epoll {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the returned fd is checked and then owned.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nobody else owns.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Watches `fd` for the peer closing or failing; `token` comes back with
    /// its events.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut e = libc::epoll_event {
            events: (libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: token,
        };
        // SAFETY: `e` is a valid epoll_event; the kernel copies it.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut e) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Changes the token of an already watched `fd`.
    pub fn modify(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut e = libc::epoll_event {
            events: (libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: token,
        };
        // SAFETY: `e` is a valid epoll_event; the kernel copies it.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_MOD, fd, &mut e) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Non-blocking wait: fills `out` with `(token, events)` and returns how
    /// many were written.
    pub fn wait(&self, out: &mut [(u64, u32)]) -> io::Result<usize> {
        const MAX: usize = 256;
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; MAX];
        let n = out.len().min(MAX);
        // SAFETY: `evs` holds `n` writable epoll_event slots.
        let rc = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), evs.as_mut_ptr(), n as i32, 0) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(e);
        }
        for (slot, e) in out.iter_mut().zip(evs.iter()).take(rc as usize) {
            *slot = (e.u64, e.events);
        }
        Ok(rc as usize)
    }
}

impl AsRawFd for Epoll {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl std::os::fd::AsFd for Epoll {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
