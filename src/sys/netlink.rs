//! A raw netlink socket (here: `NETLINK_NETFILTER`, for nfnetlink_log).
//!
//! Only the syscalls live here; building and parsing the messages is safe
//! code in `crate::engine::nflog`.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::{
    sockopt, AddressFamily, Protocol, RawProtocol, RecvFlags, SendFlags, SocketFlags, SocketType,
};

/// `NETLINK_NETFILTER`: nfnetlink (log, queue, conntrack, ...).
pub const NETLINK_NETFILTER: libc::c_int = 12;

/// A bound netlink socket talking to the kernel.
pub struct Netlink {
    fd: OwnedFd,
}

/// Port id 0 is the kernel.
const KERNEL: SocketAddrNetlink = SocketAddrNetlink::new(0, 0);

impl Netlink {
    /// Opens and binds (port id chosen by the kernel) a netlink socket of
    /// `protocol`, blocking, close-on-exec.
    pub fn open(protocol: libc::c_int) -> io::Result<Self> {
        let protocol = u32::try_from(protocol)
            .ok()
            .and_then(RawProtocol::new)
            .map(Protocol::from_raw);
        let fd = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            SocketFlags::CLOEXEC,
            protocol,
        )?;
        rustix::net::bind(&fd, &KERNEL)?;
        Ok(Netlink { fd })
    }

    /// Sends one datagram (one or more netlink messages) to the kernel.
    pub fn send(&self, msg: &[u8]) -> io::Result<()> {
        rustix::net::sendto(&self.fd, msg, SendFlags::empty(), &KERNEL)?;
        Ok(())
    }

    /// Receives one datagram into `buf`. A datagram longer than `buf` is
    /// reported as `InvalidData` (it was cut; its messages are unusable).
    /// `WouldBlock` when non-blocking and nothing is queued; the kernel's
    /// `ENOBUFS` (messages were lost because we fell behind) is passed on.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        let (_, n) = rustix::net::recv(&self.fd, &mut *buf, RecvFlags::TRUNC)?;
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
        rustix::io::ioctl_fionbio(&self.fd, on)?;
        Ok(())
    }

    /// A receive timeout for blocking use (configuration handshakes); zero
    /// means none.
    pub fn set_recv_timeout(&self, t: std::time::Duration) -> io::Result<()> {
        let t = (!t.is_zero()).then_some(t);
        sockopt::set_socket_timeout(&self.fd, sockopt::Timeout::Recv, t)?;
        Ok(())
    }

    /// Asks for a receive buffer of `bytes`: `SO_RCVBUFFORCE` (root may
    /// exceed `rmem_max`), falling back to `SO_RCVBUF`. Returns the size the
    /// kernel granted.
    pub fn set_recv_buffer(&self, bytes: usize) -> io::Result<usize> {
        let v = bytes.min(i32::MAX as usize);
        if sockopt::set_socket_recv_buffer_size_force(&self.fd, v).is_err() {
            sockopt::set_socket_recv_buffer_size(&self.fd, v)?;
        }
        Ok(sockopt::socket_recv_buffer_size(&self.fd)?)
    }
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
