//! An `AF_PACKET` socket used only to send IP packets out of a chosen
//! interface to a chosen link-layer address.
//!
//! Packet sockets hand frames straight to the device queue: replies sent
//! this way skip netfilter's OUTPUT and POSTROUTING hooks, so they create no
//! conntrack entry, and the kernel's TCP stack never learns of them. The
//! socket is `SOCK_DGRAM` (the kernel writes the link-layer header from the
//! destination address we give) with protocol 0, so it receives nothing.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;

/// A send-only packet socket.
pub struct PacketSender {
    fd: OwnedFd,
}

impl PacketSender {
    /// Needs `CAP_NET_RAW`. Non-blocking: a full device queue drops the
    /// reply (the peer retransmits) instead of stalling the engine.
    pub fn open() -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked and then owned.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        Ok(PacketSender {
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
        })
    }

    /// Sends the IP packet `pkt` (EtherType `ethertype`) out of interface
    /// `ifindex` to link-layer address `dst` (at most 8 bytes; empty for
    /// interfaces without addresses).
    pub fn send(&self, ifindex: u32, ethertype: u16, dst: &[u8], pkt: &[u8]) -> io::Result<()> {
        if dst.len() > 8 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "link-layer address longer than 8 bytes",
            ));
        }
        let ifindex = i32::try_from(ifindex)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad interface index"))?;
        // SAFETY: all-zero is a valid `sockaddr_ll`.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_protocol = ethertype.to_be();
        sa.sll_ifindex = ifindex;
        sa.sll_halen = dst.len() as u8;
        sa.sll_addr[..dst.len()].copy_from_slice(dst);
        // SAFETY: `pkt` is readable for its length; `sa` is a valid
        // `sockaddr_ll` of the length passed.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&sa as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl AsRawFd for PacketSender {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
