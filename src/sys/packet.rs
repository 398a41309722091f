//! An `AF_PACKET` socket used only to send IP packets out of a chosen
//! interface to a chosen link-layer address.
//!
//! Packet sockets hand frames straight to the device queue: replies sent
//! this way skip netfilter's OUTPUT and POSTROUTING hooks, so they create no
//! conntrack entry, and the kernel's TCP stack never learns of them. The
//! socket is `SOCK_DGRAM` (the kernel writes the link-layer header from the
//! destination address we give) with protocol 0, so it receives nothing.
//! The socket comes from rustix; the sends stay on libc (see `send`).

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

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
        use rustix::net::{AddressFamily, SocketFlags, SocketType};
        let fd = rustix::net::socket_with(
            AddressFamily::PACKET,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )?;
        Ok(PacketSender { fd })
    }

    /// Sends the IP packet `pkt` (EtherType `ethertype`) out of interface
    /// `ifindex` to link-layer address `dst` (at most 8 bytes; empty for
    /// interfaces without addresses).
    pub fn send(&self, ifindex: u32, ethertype: u16, dst: &[u8], pkt: &[u8]) -> io::Result<()> {
        let sa = link_addr(ifindex, ethertype, dst)?;
        // Neither rustix nor socket2 sends to a `sockaddr_ll` (rustix's
        // `sendto` takes only address types it knows; a new one needs an
        // `unsafe impl`), so the sends stay on libc.
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

/// One packet of a batch for [`PacketSender::send_batch`].
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub ifindex: u32,
    pub ethertype: u16,
    /// Link-layer destination, at most 8 bytes.
    pub dst: &'a [u8],
    pub pkt: &'a [u8],
}

/// Most packets one [`PacketSender::send_batch`] call hands the kernel.
pub const SEND_BATCH: usize = 64;

/// What became of a batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchResult {
    pub sent: usize,
    pub failed: usize,
    /// The first error, if any packet failed.
    pub first_error: Option<i32>,
}

fn link_addr(ifindex: u32, ethertype: u16, dst: &[u8]) -> io::Result<libc::sockaddr_ll> {
    if dst.len() > 8 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "link-layer address longer than 8 bytes",
        ));
    }
    let ifindex = i32::try_from(ifindex)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad interface index"))?;
    let mut sa = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: ethertype.to_be(),
        sll_ifindex: ifindex,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: dst.len() as u8,
        sll_addr: [0; 8],
    };
    sa.sll_addr[..dst.len()].copy_from_slice(dst);
    Ok(sa)
}

impl PacketSender {
    /// Sends up to [`SEND_BATCH`] packets with as few `sendmmsg` calls as
    /// the kernel allows (one when all go through). A packet the kernel
    /// refuses (full device queue, vanished interface) is counted as failed
    /// and skipped; the rest are still sent. Packets past [`SEND_BATCH`]
    /// are counted as failed. Allocates nothing.
    pub fn send_batch(&self, batch: &[Outgoing<'_>]) -> BatchResult {
        let mut r = BatchResult::default();
        let n = batch.len().min(SEND_BATCH);
        r.failed += batch.len() - n;
        // SAFETY: all-zero is a valid `sockaddr_ll`, `iovec` (null, 0) and
        // `mmsghdr` (no name, no iovecs, no control data).
        let mut addrs: [libc::sockaddr_ll; SEND_BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut iovs: [libc::iovec; SEND_BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; SEND_BATCH] = unsafe { std::mem::zeroed() };
        // Packets with a bad address are failed here; the others are packed
        // to the front.
        let mut k = 0;
        for o in &batch[..n] {
            match link_addr(o.ifindex, o.ethertype, o.dst) {
                Ok(sa) => {
                    addrs[k] = sa;
                    iovs[k] = libc::iovec {
                        iov_base: o.pkt.as_ptr() as *mut libc::c_void,
                        iov_len: o.pkt.len(),
                    };
                    k += 1;
                }
                Err(_) => {
                    r.failed += 1;
                    r.first_error.get_or_insert(libc::EINVAL);
                }
            }
        }
        for j in 0..k {
            let h = &mut msgs[j].msg_hdr;
            h.msg_name = (&mut addrs[j] as *mut libc::sockaddr_ll).cast();
            h.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            h.msg_iov = &mut iovs[j];
            h.msg_iovlen = 1;
        }
        let mut at = 0;
        while at < k {
            // SAFETY: `msgs[at..k]` are initialised headers whose name and
            // iovec pointers point into `addrs` and `iovs` (alive for this
            // call) and whose iovecs point to the caller's packets, readable
            // for their lengths; the kernel only reads them (and writes
            // `msg_len`, inside `msgs`).
            let rc = unsafe {
                libc::sendmmsg(
                    self.fd.as_raw_fd(),
                    msgs[at..k].as_mut_ptr(),
                    (k - at) as libc::c_uint,
                    0,
                )
            };
            if rc > 0 {
                r.sent += rc as usize;
                at += rc as usize;
            } else {
                // The packet at `at` was refused: skip it.
                let e = io::Error::last_os_error().raw_os_error().unwrap_or(0);
                if e == libc::EINTR {
                    continue;
                }
                r.failed += 1;
                r.first_error.get_or_insert(e);
                at += 1;
            }
        }
        r
    }
}

impl AsRawFd for PacketSender {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
