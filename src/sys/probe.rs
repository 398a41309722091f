//! Exit probes: one out-of-order byte sent to a held peer, to learn whether
//! its program is still there without it ever noticing.
//!
//! The byte's sequence number is one past our next one, so it leaves a
//! one-byte hole: the peer's kernel keeps it in its out-of-order queue
//! (never readable, no POLLIN, no POLLPRI — an urgent byte would raise
//! POLLPRI, and libcurl answers that with "select/poll returned error") and
//! answers with a duplicate ACK. Once the program has closed, its socket has
//! shut reception (FIN-WAIT-1, its FIN stuck behind our closed window), and
//! Linux answers any new data there with an RST (RFC 1122 4.2.2.13). The
//! kernel's own send path can only send at the next sequence number, so the
//! segment is built here and sent from a raw socket; the sequence numbers
//! are read with `TCP_REPAIR` (entered and left at once, without the window
//! probe leaving repair mode normally sends).

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::mem::size_of;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;

/// Length of the probe segment without the IP header: TCP header, one byte.
const TCP_LEN: usize = 21;
/// Buffer for the longest probe (IPv6 header + segment).
pub const MAX_PROBE: usize = 40 + TCP_LEN;

/// `TCP_REPAIR` value that leaves repair mode without a window probe.
const TCP_REPAIR_OFF_NO_WP: libc::c_int = -1;
const TCP_RECV_QUEUE: libc::c_int = 1;
const TCP_SEND_QUEUE: libc::c_int = 2;

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `v` is a readable int of the length passed; none of the
    // options set here touch memory beyond it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&v as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn queue_seq(fd: RawFd, queue: libc::c_int) -> io::Result<u32> {
    setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_REPAIR_QUEUE, queue)?;
    let mut v: u32 = 0;
    let mut len = size_of::<u32>() as libc::socklen_t;
    // SAFETY: `v` is a writable u32 of `len` bytes; TCP_QUEUE_SEQ writes one.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_QUEUE_SEQ,
            (&mut v as *mut u32).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

/// Our next sequence number to send (`write_seq`: we never queue data on a
/// probed socket, so it is `snd_nxt`) and the next one we expect from the
/// peer (`rcv_nxt`). Needs CAP_NET_ADMIN and an ESTABLISHED socket. Repair
/// mode also clears the socket's address reuse, which is restored (the
/// accepted socket inherited `SO_REUSEADDR` from its listener), so a
/// restarted listener can still bind while it is held.
pub fn tcp_seqs(fd: RawFd) -> io::Result<(u32, u32)> {
    setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_REPAIR, 1)?;
    let seqs = queue_seq(fd, TCP_SEND_QUEUE).and_then(|s| Ok((s, queue_seq(fd, TCP_RECV_QUEUE)?)));
    let off = setsockopt_int(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_REPAIR,
        TCP_REPAIR_OFF_NO_WP,
    );
    let _ = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1);
    off?;
    seqs
}

/// Raw IPv4 and IPv6 sockets (`IPPROTO_RAW`: send only, we build the IP
/// header, nothing is ever received on them). Needs CAP_NET_RAW.
pub struct RawTcp {
    v4: Option<Socket>,
    v6: Option<Socket>,
}

impl RawTcp {
    /// Either family may be missing (no IPv6 in this kernel); `Err` when
    /// neither opens (no CAP_NET_RAW).
    pub fn open() -> io::Result<Self> {
        let raw = Some(Protocol::from(libc::IPPROTO_RAW));
        let v4 = Socket::new(Domain::IPV4, Type::RAW, raw);
        let v6 = Socket::new(Domain::IPV6, Type::RAW, raw);
        match (v4, v6) {
            (Err(e), Err(_)) => Err(e),
            (v4, v6) => Ok(RawTcp {
                v4: v4.ok(),
                v6: v6.ok(),
            }),
        }
    }

    /// Sends the probe from `local` to `peer` (see [`probe_packet`]).
    pub fn send(
        &self,
        local: SocketAddr,
        peer: SocketAddr,
        seq: u32,
        ack: u32,
        byte: u8,
    ) -> io::Result<()> {
        let mut buf = [0u8; MAX_PROBE];
        let n = probe_packet(local, peer, seq, ack, byte, &mut buf)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "mixed address families"))?;
        let sock = if peer.is_ipv4() { &self.v4 } else { &self.v6 };
        let sock = sock.as_ref().ok_or_else(|| {
            io::Error::new(io::ErrorKind::Unsupported, "no raw socket for this family")
        })?;
        // The port of a raw socket's destination must be 0.
        let to = SockAddr::from(SocketAddr::new(peer.ip(), 0));
        sock.send_to(&buf[..n], &to)?;
        Ok(())
    }
}

/// The whole probe packet (IP header, TCP header, one byte `byte`) in `buf`:
/// sequence `seq` (the caller passes our `snd_nxt + 1`, and as `byte` what
/// our stream will have there: a bait connection's next bait byte but one,
/// since our own next segment may fill the hole and make it readable),
/// acknowledging
/// `ack`, flags ACK|PSH, window 0 (a probe goes only to a peer our window is
/// closed to, so it says what our kernel says). `None` when the addresses
/// are of different families.
pub fn probe_packet(
    local: SocketAddr,
    peer: SocketAddr,
    seq: u32,
    ack: u32,
    byte: u8,
    buf: &mut [u8; MAX_PROBE],
) -> Option<usize> {
    let mut tcp = [0u8; TCP_LEN];
    tcp[0..2].copy_from_slice(&local.port().to_be_bytes());
    tcp[2..4].copy_from_slice(&peer.port().to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&ack.to_be_bytes());
    tcp[12] = 5 << 4; // data offset: 20 bytes, no options
    tcp[13] = 0x18; // PSH | ACK
                    // window (14..16), checksum (16..18), urgent pointer (18..20): 0
    tcp[20] = byte;
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            let hi = u32::from(c[0]) << 8;
            sum += hi | c.get(1).copied().map(u32::from).unwrap_or(0);
        }
    };
    let n = match (local.ip(), peer.ip()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            add(&src.octets());
            add(&dst.octets());
            add(&[0, libc::IPPROTO_TCP as u8]);
            add(&(TCP_LEN as u16).to_be_bytes());
            add(&tcp);
            let ip = &mut buf[..20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&((20 + TCP_LEN) as u16).to_be_bytes());
            ip[6] = 0x40; // don't fragment
            ip[8] = 64; // TTL
            ip[9] = libc::IPPROTO_TCP as u8;
            // Identification and header checksum: filled in by the kernel.
            ip[12..16].copy_from_slice(&src.octets());
            ip[16..20].copy_from_slice(&dst.octets());
            20
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            add(&src.octets());
            add(&dst.octets());
            add(&(TCP_LEN as u32).to_be_bytes());
            add(&[0, 0, 0, libc::IPPROTO_TCP as u8]);
            add(&tcp);
            let ip = &mut buf[..40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&(TCP_LEN as u16).to_be_bytes());
            ip[6] = libc::IPPROTO_TCP as u8;
            ip[7] = 64; // hop limit
            ip[8..24].copy_from_slice(&src.octets());
            ip[24..40].copy_from_slice(&dst.octets());
            40
        }
        _ => return None,
    };
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let csum = !(sum as u16);
    tcp[16..18].copy_from_slice(&csum.to_be_bytes());
    buf[n..n + TCP_LEN].copy_from_slice(&tcp);
    Some(n + TCP_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one's-complement sum over the pseudo-header and segment of a
    /// correct checksum is 0xffff.
    fn verify(pseudo: &[u8], seg: &[u8]) -> bool {
        let mut sum: u32 = 0;
        for b in [pseudo, seg] {
            for c in b.chunks(2) {
                sum += (u32::from(c[0]) << 8) | c.get(1).copied().map(u32::from).unwrap_or(0);
            }
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum == 0xffff
    }

    #[test]
    fn v4_probe_is_one_byte_with_a_valid_checksum() {
        let mut buf = [0u8; MAX_PROBE];
        let l: SocketAddr = "10.77.0.1:22".parse().unwrap();
        let p: SocketAddr = "10.77.0.2:40000".parse().unwrap();
        let n = probe_packet(l, p, 0xffff_ffff, 7, b'!', &mut buf).unwrap();
        assert_eq!(n, 41);
        assert_eq!(&buf[12..16], &[10, 77, 0, 1]);
        let seg = &buf[20..n];
        assert_eq!(&seg[0..4], &[0, 22, 0x9c, 0x40]);
        assert_eq!(&seg[4..8], &[0xff; 4]);
        assert_eq!(&seg[14..16], &[0, 0], "window 0");
        assert_eq!(seg[20], b'!');
        let mut pseudo = vec![10, 77, 0, 1, 10, 77, 0, 2, 0, 6];
        pseudo.extend_from_slice(&21u16.to_be_bytes());
        assert!(verify(&pseudo, seg));
    }

    #[test]
    fn v6_probe_has_a_valid_checksum_and_no_mixed_families() {
        let mut buf = [0u8; MAX_PROBE];
        let l: SocketAddr = "[fd77::1]:80".parse().unwrap();
        let p: SocketAddr = "[fd77::2]:50000".parse().unwrap();
        let n = probe_packet(l, p, 1, 2, b'!', &mut buf).unwrap();
        assert_eq!(n, 61);
        assert_eq!(&buf[4..6], &[0, 21]);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&buf[8..40]);
        pseudo.extend_from_slice(&[0, 0, 0, 21, 0, 0, 0, 6]);
        assert!(verify(&pseudo, &buf[40..n]));
        let v4: SocketAddr = "10.77.0.2:1".parse().unwrap();
        assert_eq!(probe_packet(l, v4, 1, 2, b'!', &mut buf), None);
    }
}
