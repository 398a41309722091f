//! The engine's private epoll set for "peer gone" events, over rustix's
//! epoll (no hand-written `epoll_event` layout or return-value checks).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use rustix::event::epoll::{self, CreateFlags, Event, EventData, EventFlags};
use rustix::event::Timespec;

/// A level of indirection over an epoll instance used only for "peer gone"
/// events on held connections (EPOLLRDHUP / EPOLLERR / EPOLLHUP, edge
/// triggered). One kernel epitem per connection, nothing in userspace.
pub struct Epoll {
    fd: OwnedFd,
}

/// Readiness bits reported by [`Epoll::wait`].
pub mod ev {
    use rustix::event::epoll::EventFlags;
    pub const RDHUP: u32 = EventFlags::RDHUP.bits();
    pub const HUP: u32 = EventFlags::HUP.bits();
    pub const ERR: u32 = EventFlags::ERR.bits();
    pub const IN: u32 = EventFlags::IN.bits();
}

/// EPOLLERR and EPOLLHUP are always reported; these are the bits we ask for.
const INTEREST: EventFlags = EventFlags::RDHUP.union(EventFlags::ET);

/// The engine keeps held connections as raw descriptors in its slab (a
/// `-1` sentinel marks a free slot, which `OwnedFd` cannot hold), so the
/// epoll calls take a `RawFd` and borrow it for the call.
fn borrow(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: the borrow is used only for the one epoll_ctl call it is
    // passed to and never stored. Callers pass a descriptor their slot owns
    // and closes only later through `sys::close`. epoll_ctl touches no user
    // memory through it: a stale number would make the kernel answer EBADF
    // (or watch whichever file has that number), not corrupt memory.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

impl Epoll {
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            fd: epoll::create(CreateFlags::CLOEXEC)?,
        })
    }

    /// Watches `fd` for the peer closing or failing; `token` comes back with
    /// its events.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        epoll::add(&self.fd, borrow(fd), EventData::new_u64(token), INTEREST)?;
        Ok(())
    }

    /// Watches `fd` as [`Epoll::add`] does, and for bytes arriving too
    /// (EPOLLIN, edge-triggered: one event per arriving segment; bytes
    /// queued already are reported at once). For a bait connection waiting
    /// for its peer to speak; [`Epoll::modify`] ends the reading interest.
    pub fn add_reading(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let flags = INTEREST.union(EventFlags::IN);
        epoll::add(&self.fd, borrow(fd), EventData::new_u64(token), flags)?;
        Ok(())
    }

    /// Changes the token of an already watched `fd` (and watches it for the
    /// peer closing or failing only, no longer for bytes arriving).
    pub fn modify(&self, fd: RawFd, token: u64) -> io::Result<()> {
        epoll::modify(&self.fd, borrow(fd), EventData::new_u64(token), INTEREST)?;
        Ok(())
    }

    /// Non-blocking wait: fills `out` with `(token, events)` and returns how
    /// many were written.
    pub fn wait(&self, out: &mut [(u64, u32)]) -> io::Result<usize> {
        const MAX: usize = 256;
        let mut evs = [Event {
            flags: EventFlags::empty(),
            data: EventData::new_u64(0),
        }; MAX];
        let n = out.len().min(MAX);
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let got = match epoll::wait(&self.fd, &mut evs[..n], Some(&zero)) {
            Ok(got) => got,
            Err(rustix::io::Errno::INTR) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        for (slot, e) in out.iter_mut().zip(evs.iter()).take(got) {
            // `Event` is packed on x86_64 (the kernel's layout): copy the
            // fields out instead of borrowing them.
            let (data, flags) = (e.data, e.flags);
            *slot = (data.u64(), flags.bits());
        }
        Ok(got)
    }
}

impl AsRawFd for Epoll {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for Epoll {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
