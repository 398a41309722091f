//! A raw netlink socket (here: `NETLINK_NETFILTER`, for nfnetlink_log).
//!
//! Only the syscalls live here; building and parsing the messages is safe
//! code in `crate::engine::stateless::nflog`.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// `NETLINK_NETFILTER`: nfnetlink (log, queue, conntrack, ...).
pub const NETLINK_NETFILTER: libc::c_int = 12;

/// A bound netlink socket talking to the kernel.
pub struct Netlink {
    fd: OwnedFd,
}

fn kernel_addr() -> libc::sockaddr_nl {
    // SAFETY: all-zero is a valid `sockaddr_nl` (pid 0 = the kernel).
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    sa
}

impl Netlink {
    /// Opens and binds (port id chosen by the kernel) a netlink socket of
    /// `protocol`, blocking, close-on-exec.
    pub fn open(protocol: libc::c_int) -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked and then owned.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let sa = kernel_addr();
        // SAFETY: `sa` is a valid `sockaddr_nl` of the length passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Netlink { fd })
    }

    /// Sends one datagram (one or more netlink messages) to the kernel.
    pub fn send(&self, msg: &[u8]) -> io::Result<()> {
        let sa = kernel_addr();
        // SAFETY: `msg` is readable for its length; `sa` is a valid address.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&sa as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receives one datagram into `buf`. A datagram longer than `buf` is
    /// reported as `InvalidData` (it was cut; its messages are unusable).
    /// `WouldBlock` when non-blocking and nothing is queued; the kernel's
    /// `ENOBUFS` (messages were lost because we fell behind) is passed on.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is writable for its length.
        let rc = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_TRUNC,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = rc as usize;
        if n > buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("netlink datagram of {n} bytes cut to {}", buf.len()),
            ));
        }
        Ok(n)
    }

    /// Switches `O_NONBLOCK`.
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        set_nonblocking(self.fd.as_raw_fd(), on)
    }

    /// A receive timeout for blocking use (configuration handshakes).
    pub fn set_recv_timeout(&self, t: std::time::Duration) -> io::Result<()> {
        let tv = libc::timeval {
            tv_sec: t.as_secs() as libc::time_t,
            tv_usec: t.subsec_micros() as libc::suseconds_t,
        };
        setsockopt(
            self.fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv,
        )
    }

    /// Asks for a receive buffer of `bytes`: `SO_RCVBUFFORCE` (root may
    /// exceed `rmem_max`), falling back to `SO_RCVBUF`. Returns the size the
    /// kernel granted.
    pub fn set_recv_buffer(&self, bytes: usize) -> io::Result<usize> {
        let v = bytes.min(i32::MAX as usize) as libc::c_int;
        let fd = self.fd.as_raw_fd();
        if setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &v).is_err() {
            setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &v)?;
        }
        let mut got: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `got` is a writable int of `len` bytes.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&mut got as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(got.max(0) as usize)
    }
}

pub(crate) fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: F_GETFL on a descriptor we own has no memory effects.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let new = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    // SAFETY: F_SETFL with an int argument has no memory effects.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, new) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub(crate) fn setsockopt<T>(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    v: &T,
) -> io::Result<()> {
    // SAFETY: `v` points to a readable `T` of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (v as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl AsRawFd for Netlink {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for Netlink {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
