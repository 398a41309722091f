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

/// Frames in a [`RingSender`]'s ring: room for a few kicks' worth of
/// replies still in flight (a real NIC frees them at TX completion).
const RING_FRAMES: u32 = 1024;
/// Bytes per ring frame: the 32-byte frame header, then the link-layer
/// header and the packet (at most 14 + 64 bytes here).
const RING_FRAME_SIZE: u32 = 128;
const RING_BLOCK_SIZE: u32 = 4096;
/// Where a TPACKET_V2 transmit frame's data starts.
const RING_DATA_OFFSET: usize = libc::TPACKET2_HDRLEN - size_of::<libc::sockaddr_ll>();
/// `struct virtio_net_hdr`: flags, gso_type, hdr_len, gso_size,
/// csum_start, csum_offset.
const VNET_HDR_LEN: usize = 10;
/// Largest frame (link-layer header included) [`RingSender::push`] takes.
pub const RING_MAX_FRAME: usize = RING_FRAME_SIZE as usize - RING_DATA_OFFSET - VNET_HDR_LEN;
/// Frames queued before [`RingSender::push`] kicks the kernel by itself.
pub const RING_KICK: u32 = 64;

/// A send-only `SOCK_RAW` packet socket with a `PACKET_TX_RING`: replies
/// are written, link-layer header included, into a ring shared with the
/// kernel, and one `sendto` per batch ("kick") sends all of them — no
/// message header, address or iovec is copied and no device looked up per
/// packet, which is most of what `sendmmsg` costs per packet.
///
/// The kernel sends ring frames in order, all out of the interface named in
/// the kick, so a batch holds replies for one interface only (a reply for
/// another kicks first). After each kick the frames the kernel refused
/// (queue full, interface gone) are taken back and counted as failed, so
/// the ring never stalls and never sends a frame out of the wrong
/// interface later.
pub struct RingSender {
    fd: OwnedFd,
    ring: std::ptr::NonNull<u8>,
    /// Index (mod [`RING_FRAMES`]) of the first frame not yet handed to the
    /// kernel: the kernel's own position, after every kick.
    next: u32,
    /// Frames filled since the last kick (from `next` on).
    pending: u32,
    /// Interface of the pending frames.
    ifindex: u32,
}

// SAFETY: the ring is plain memory owned by this value (and the kernel);
// nothing in it is tied to the thread that mapped it.
unsafe impl Send for RingSender {}

fn ring_bytes() -> usize {
    (RING_FRAMES * RING_FRAME_SIZE) as usize
}

fn setsockopt_int(fd: &OwnedFd, level: i32, name: i32, v: i32) -> io::Result<()> {
    // SAFETY: `v` is a valid `int` for the length passed; the kernel only
    // reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&v as *const i32).cast(),
            size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl RingSender {
    /// Needs `CAP_NET_RAW` (and `CAP_NET_ADMIN` for a larger send buffer,
    /// else the default is kept). Fails on kernels without TX rings; the
    /// caller then sends with [`PacketSender`].
    pub fn open() -> io::Result<Self> {
        use rustix::net::{AddressFamily, SocketFlags, SocketType};
        let fd = rustix::net::socket_with(
            AddressFamily::PACKET,
            SocketType::RAW,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )?;
        setsockopt_int(
            &fd,
            libc::SOL_PACKET,
            libc::PACKET_VERSION,
            libc::tpacket_versions::TPACKET_V2 as i32,
        )?;
        // A malformed frame is skipped instead of stopping the ring.
        setsockopt_int(&fd, libc::SOL_PACKET, libc::PACKET_LOSS, 1)?;
        // Each frame starts with a virtio-net header whose `hdr_len` covers
        // the whole frame: the kernel then copies it into the socket
        // buffer instead of pinning ring pages as fragments (which devices
        // like veth copy again, page by page).
        setsockopt_int(&fd, libc::SOL_PACKET, libc::PACKET_VNET_HDR, 1)?;
        // Frames in flight count against the send buffer.
        let _ = setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 4 << 20);
        let req = libc::tpacket_req {
            tp_block_size: RING_BLOCK_SIZE,
            tp_block_nr: RING_FRAMES * RING_FRAME_SIZE / RING_BLOCK_SIZE,
            tp_frame_size: RING_FRAME_SIZE,
            tp_frame_nr: RING_FRAMES,
        };
        // SAFETY: `req` is a valid `tpacket_req` for the length passed; the
        // kernel only reads it.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_TX_RING,
                (&req as *const libc::tpacket_req).cast(),
                size_of::<libc::tpacket_req>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: maps the ring just configured on our own socket; no
        // existing memory is touched (the address is the kernel's choice).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_bytes(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ring = std::ptr::NonNull::new(p.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(RingSender {
            fd,
            ring,
            next: 0,
            pending: 0,
            ifindex: 0,
        })
    }

    /// The frame at ring index `i` (mod [`RING_FRAMES`]).
    fn frame(&self, i: u32) -> *mut u8 {
        let off = ((i % RING_FRAMES) * RING_FRAME_SIZE) as usize;
        // SAFETY: `off` is below `ring_bytes()`, inside the mapping.
        unsafe { self.ring.as_ptr().add(off) }
    }

    /// The status word of frame `i`, shared with the kernel.
    fn status(&self, i: u32) -> &std::sync::atomic::AtomicU32 {
        // SAFETY: every frame starts with a `tpacket2_hdr` whose first field
        // is the `u32` status; frames are 128-byte aligned inside a
        // page-aligned mapping that lives as long as `self`, and the kernel
        // accesses that word atomically too.
        unsafe { std::sync::atomic::AtomicU32::from_ptr(self.frame(i).cast::<u32>()) }
    }

    /// Queues one frame (`head`, the link-layer header, then `pkt`) for
    /// interface `ifindex`. Kicks first if the queued frames are for another
    /// interface, and by itself every [`RING_KICK`] frames; what those kicks
    /// did is added to `r`. `false` when the frame does not fit or the ring
    /// is full of frames still in flight (the caller counts the reply lost).
    pub fn push(&mut self, ifindex: u32, head: &[u8], pkt: &[u8], r: &mut BatchResult) -> bool {
        let len = head.len() + pkt.len();
        if len > RING_MAX_FRAME {
            return false;
        }
        if self.pending > 0 && ifindex != self.ifindex {
            self.kick(r);
        }
        let i = self.next.wrapping_add(self.pending);
        if self.status(i).load(std::sync::atomic::Ordering::Acquire) != libc::TP_STATUS_AVAILABLE {
            if self.pending > 0 {
                self.kick(r);
            }
            let i = self.next.wrapping_add(self.pending);
            if self.status(i).load(std::sync::atomic::Ordering::Acquire)
                != libc::TP_STATUS_AVAILABLE
            {
                return false;
            }
        }
        let i = self.next.wrapping_add(self.pending);
        let f = self.frame(i);
        // No offloads, no GSO; `hdr_len` (native byte order, as the
        // kernel reads it) is the whole frame.
        let mut vnet = [0u8; VNET_HDR_LEN];
        vnet[2..4].copy_from_slice(&(len as u16).to_ne_bytes());
        // SAFETY: frame `i` is ours (status AVAILABLE: the kernel neither
        // reads nor writes it until we set SEND_REQUEST); the data area,
        // `VNET_HDR_LEN + len` bytes from `RING_DATA_OFFSET`, lies inside the
        // frame (len <= RING_MAX_FRAME), and the sources are our own arrays
        // and slices.
        unsafe {
            let d = f.add(RING_DATA_OFFSET);
            std::ptr::copy_nonoverlapping(vnet.as_ptr(), d, VNET_HDR_LEN);
            std::ptr::copy_nonoverlapping(head.as_ptr(), d.add(VNET_HDR_LEN), head.len());
            std::ptr::copy_nonoverlapping(
                pkt.as_ptr(),
                d.add(VNET_HDR_LEN + head.len()),
                pkt.len(),
            );
            let h = f.cast::<libc::tpacket2_hdr>();
            std::ptr::addr_of_mut!((*h).tp_len).write((VNET_HDR_LEN + len) as u32);
        }
        // Publishes the data written above to the kernel.
        self.status(i).store(
            libc::TP_STATUS_SEND_REQUEST,
            std::sync::atomic::Ordering::Release,
        );
        self.ifindex = ifindex;
        self.pending += 1;
        if self.pending >= RING_KICK {
            self.kick(r);
        }
        true
    }

    /// Sends every queued frame with one `sendto`; frames the kernel did not
    /// take are reclaimed and counted as failed in `r`.
    pub fn kick(&mut self, r: &mut BatchResult) {
        if self.pending == 0 {
            return;
        }
        let sa = match link_addr(self.ifindex, 0, &[]) {
            Ok(sa) => sa,
            Err(_) => libc::sockaddr_ll {
                sll_family: libc::AF_PACKET as u16,
                sll_protocol: 0,
                sll_ifindex: 0,
                sll_hatype: 0,
                sll_pkttype: 0,
                sll_halen: 0,
                sll_addr: [0; 8],
            },
        };
        // Protocol 0: the kernel reads each frame's EtherType from its
        // link-layer header.
        // SAFETY: no data buffer (length 0); `sa` is a valid `sockaddr_ll`
        // of the length passed. The kernel reads the frames marked
        // SEND_REQUEST, which we do not touch during the call.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                (&sa as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        let err = (rc < 0).then(|| io::Error::last_os_error().raw_os_error().unwrap_or(0));
        // The kernel takes frames in order and stops at the first it
        // refuses; those left are still SEND_REQUEST.
        let mut taken = 0;
        while taken < self.pending
            && self
                .status(self.next.wrapping_add(taken))
                .load(std::sync::atomic::Ordering::Acquire)
                != libc::TP_STATUS_SEND_REQUEST
        {
            taken += 1;
        }
        for k in taken..self.pending {
            // Back to us: the kernel restarts at the first of these, which
            // is where the next frame will be written.
            self.status(self.next.wrapping_add(k)).store(
                libc::TP_STATUS_AVAILABLE,
                std::sync::atomic::Ordering::Release,
            );
        }
        let failed = (self.pending - taken) as usize;
        r.sent += taken as usize;
        r.failed += failed;
        if failed > 0 {
            r.first_error.get_or_insert(err.unwrap_or(libc::ENOBUFS));
        }
        self.next = (self.next.wrapping_add(taken)) % RING_FRAMES;
        self.pending = 0;
    }
}

impl Drop for RingSender {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `open`; nothing
        // borrows it past `self`.
        unsafe {
            libc::munmap(self.ring.as_ptr().cast(), ring_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Index of `lo` (frames sent there come straight back to this host's
    /// stack, which drops an unknown EtherType).
    fn lo() -> u32 {
        std::fs::read_to_string("/sys/class/net/lo/ifindex")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1)
    }

    #[test]
    fn the_ring_sends_in_batches_and_takes_back_what_the_kernel_refuses() {
        let mut ring = match RingSender::open() {
            Ok(r) => r,
            // Not root (CI runs the tests as root).
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => return,
            Err(e) => panic!("TX ring: {e}"),
        };
        // Broadcast to an experimental EtherType: nobody takes it.
        let mut head = [0xffu8; 14];
        head[12..].copy_from_slice(&0x88b5u16.to_be_bytes());
        let pkt = [0x5au8; 64];
        let mut r = BatchResult::default();
        // Four laps of the ring, kicked every RING_KICK frames and at the end.
        for _ in 0..4 * RING_FRAMES {
            assert!(ring.push(lo(), &head, &pkt, &mut r), "a free frame");
        }
        ring.kick(&mut r);
        assert_eq!((r.sent, r.failed), (4 * RING_FRAMES as usize, 0), "{r:?}");
        // No such interface: the kick fails, the frames come back, counted.
        let mut r = BatchResult::default();
        for _ in 0..10 {
            assert!(ring.push(0x7fff_fff0, &head, &pkt, &mut r));
        }
        // Switching interface kicks the pending ones first.
        assert!(ring.push(lo(), &head, &pkt, &mut r));
        assert_eq!((r.sent, r.failed), (0, 10), "{r:?}");
        assert_eq!(r.first_error, Some(libc::ENXIO));
        ring.kick(&mut r);
        assert_eq!((r.sent, r.failed), (1, 10), "the ring goes on: {r:?}");
        // Too big for a frame.
        assert!(!ring.push(lo(), &head, &[0u8; RING_MAX_FRAME], &mut r));
    }
}
