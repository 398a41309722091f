//! The segments the engine reads and writes: TCP over IPv4 or IPv6, as one
//! [`Segment`] that [`Segment::parse`] yields and [`Segment::emit`] writes,
//! on top of the checked views in [`super::wire`].
//!
//! Everything the engine reads comes from the network, so it is checked
//! exactly once, here, at the edge: [`Segment::parse`] turns bytes into a
//! [`Segment`] or a [`Reject`] reason, and after that the engine only reads
//! plain values. [`Segment::emit`] writes the replies (SYN/ACK with MSS
//! only, bare ACKs) with both checksums filled in.
//!
//! What is refused, and why:
//! * IPv4 options and IPv6 extension headers — real clients do not send them
//!   on TCP, and parsing them is where bugs live;
//! * fragments — a SYN or ACK never needs fragmenting; reassembly would be
//!   per-flow state;
//! * bad IPv4 header or TCP checksums — corrupt. One wrong TCP checksum is
//!   let through: the pseudo-header sum alone, which is what a local
//!   container's kernel leaves for the "hardware" of its veth to complete
//!   (CHECKSUM_PARTIAL; nfnetlink_log does not say whether the kernel
//!   verified a packet). A forger can compute a right checksum as easily, so
//!   this gives nothing away: ACKs are answered only with a valid cookie
//!   either way. [`Segment::parse_noting_partial`] tells which it was.
//!
//! nfnetlink_log copies at most the rule's `snaplen` bytes. When the copy is
//! shorter than the packet, the TCP checksum cannot be recomputed; such
//! segments are not [`Segment::is_complete`] and still pass (the SYN-cookie
//! check on the ACK number is what protects against forged segments, not
//! the checksum).

pub use super::wire::Reject;
use super::wire::{ipv4, ipv6, tcp, v6_of, HOP_LIMIT, PROTO_TCP};
use std::net::IpAddr;

/// The addresses and ports of a segment, as seen from the peer:
/// `src` is the attacker, `dst` is us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
}

impl Tuple {
    /// The bytes a keyed hash of this tuple covers: addresses then ports.
    /// Returns the buffer and how much of it is used (12 or 36 bytes).
    pub fn key_bytes(&self) -> ([u8; 36], usize) {
        let mut b = [0u8; 36];
        let n = match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                b[..4].copy_from_slice(&s.octets());
                b[4..8].copy_from_slice(&d.octets());
                8
            }
            (s, d) => {
                b[..16].copy_from_slice(&v6_of(s).octets());
                b[16..32].copy_from_slice(&v6_of(d).octets());
                32
            }
        };
        b[n..n + 2].copy_from_slice(&self.src_port.to_be_bytes());
        b[n + 2..n + 4].copy_from_slice(&self.dst_port.to_be_bytes());
        (b, n + 4)
    }
}

/// One TCP segment with its IP addresses: what [`Segment::parse`] reads
/// and what [`Segment::emit`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    /// The sender.
    pub src: IpAddr,
    pub dst: IpAddr,
    pub tcp: tcp::Repr<'a>,
    /// Payload length from the IP length fields. Parsed from a capture cut
    /// short, it exceeds `tcp.payload.len()` (what was captured); to emit,
    /// it must equal it.
    pub payload_len: usize,
}

/// Largest reply [`Segment::emit`] writes without payload: IPv6 + TCP + MSS.
pub const MAX_REPLY: usize = ipv6::HEADER_LEN + tcp::HEADER_LEN + 4;

impl<'a> Segment<'a> {
    /// Checks an IP packet (starting at the IP header) once and returns the
    /// TCP segment in it.
    pub fn parse(buf: &'a [u8]) -> Result<Segment<'a>, Reject> {
        Self::parse_noting_partial(buf).map(|(s, _)| s)
    }

    /// [`parse`](Self::parse), also saying whether the TCP checksum was a
    /// partial one (see the module documentation).
    pub fn parse_noting_partial(buf: &'a [u8]) -> Result<(Segment<'a>, bool), Reject> {
        let Some(&first) = buf.first() else {
            return Err(Reject::Truncated);
        };
        let (src, dst, l4, claimed_l4_len) = match first >> 4 {
            4 => {
                let p = ipv4::Packet::new_checked(buf)?;
                let ip = ipv4::Repr::parse(&p)?;
                if ip.next_header != PROTO_TCP {
                    return Err(Reject::NotTcp);
                }
                (
                    IpAddr::V4(ip.src_addr),
                    IpAddr::V4(ip.dst_addr),
                    p.payload(),
                    ip.payload_len,
                )
            }
            6 => {
                let p = ipv6::Packet::new_checked(buf)?;
                let ip = ipv6::Repr::parse(&p)?;
                if ip.next_header != PROTO_TCP {
                    return Err(Reject::NotTcp);
                }
                (
                    IpAddr::V6(ip.src_addr),
                    IpAddr::V6(ip.dst_addr),
                    p.payload(),
                    ip.payload_len,
                )
            }
            _ => return Err(Reject::Malformed),
        };
        let t = tcp::Packet::new_checked(l4)?;
        if t.header_len() > claimed_l4_len {
            return Err(Reject::Malformed);
        }
        let complete = l4.len() == claimed_l4_len;
        let mut partial = false;
        if complete && !t.verify_checksum(src, dst) {
            if !t.has_partial_checksum(src, dst) {
                return Err(Reject::BadChecksum);
            }
            partial = true;
        }
        Ok((
            Segment {
                src,
                dst,
                tcp: tcp::Repr::parse(&t),
                payload_len: claimed_l4_len - t.header_len(),
            },
            partial,
        ))
    }

    /// Addresses and ports as sent.
    pub fn tuple(&self) -> Tuple {
        Tuple {
            src: self.src,
            dst: self.dst,
            src_port: self.tcp.src_port,
            dst_port: self.tcp.dst_port,
        }
    }

    /// The whole segment was captured, so its TCP checksum was verified.
    pub fn is_complete(&self) -> bool {
        self.tcp.payload.len() == self.payload_len
    }

    /// Bytes [`Segment::emit`] writes. Two IPv4 addresses make an IPv4
    /// packet; anything else an IPv6 one (IPv4 addresses mapped).
    pub fn buffer_len(&self) -> usize {
        let ip = match (self.src, self.dst) {
            (IpAddr::V4(_), IpAddr::V4(_)) => ipv4::HEADER_LEN,
            _ => ipv6::HEADER_LEN,
        };
        ip + self.tcp.buffer_len()
    }

    /// Writes the IP packet into `out` and returns its length, or `None` if
    /// `out` is too small, the packet would exceed 65,535 bytes or
    /// `payload_len` is not the payload's length.
    pub fn emit(&self, out: &mut [u8]) -> Option<usize> {
        let tcp_len = self.tcp.buffer_len();
        let total = self.buffer_len();
        if self.payload_len != self.tcp.payload.len()
            || out.len() < total
            || total > usize::from(u16::MAX)
        {
            return None;
        }
        let (ip, l4) = out[..total].split_at_mut(total - tcp_len);
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => ipv4::Repr {
                src_addr: s,
                dst_addr: d,
                next_header: PROTO_TCP,
                payload_len: tcp_len,
                hop_limit: HOP_LIMIT,
            }
            .emit(&mut ipv4::Packet::new_unchecked(ip)),
            (s, d) => ipv6::Repr {
                src_addr: v6_of(s),
                dst_addr: v6_of(d),
                next_header: PROTO_TCP,
                payload_len: tcp_len,
                hop_limit: HOP_LIMIT,
            }
            .emit(&mut ipv6::Packet::new_unchecked(ip)),
        }
        self.tcp
            .emit(&mut tcp::Packet::new_unchecked(l4), self.src, self.dst);
        Some(total)
    }
}

impl Segment<'static> {
    /// Our answer to a segment whose tuple is `to`: from its `dst` to its
    /// `src`, no payload, window zero (the whole point).
    pub fn reply(
        to: &Tuple,
        seq_number: u32,
        ack_number: u32,
        flags: u8,
        mss: Option<u16>,
    ) -> Self {
        Segment {
            src: to.dst,
            dst: to.src,
            tcp: tcp::Repr {
                src_port: to.dst_port,
                dst_port: to.src_port,
                seq_number,
                ack_number,
                flags,
                window_len: 0,
                max_seg_size: mss,
                payload: &[],
            },
            payload_len: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::stateless::wire::checksum;
    use crate::engine::stateless::wire::tcp::{ACK, PSH, SYN};

    fn tuple4() -> Tuple {
        Tuple {
            src: "10.77.0.2".parse().unwrap(),
            dst: "10.77.0.1".parse().unwrap(),
            src_port: 40000,
            dst_port: 22,
        }
    }

    fn tuple6() -> Tuple {
        Tuple {
            src: "fd77::2".parse().unwrap(),
            dst: "fd77::1".parse().unwrap(),
            src_port: 40000,
            dst_port: 22,
        }
    }

    /// A packet as the peer would send it.
    fn from_peer(t: Tuple, flags: u8, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; 2000];
        let n = Segment {
            src: t.src,
            dst: t.dst,
            tcp: tcp::Repr {
                src_port: t.src_port,
                dst_port: t.dst_port,
                seq_number: seq,
                ack_number: ack,
                flags,
                window_len: 64240,
                max_seg_size: (flags & SYN != 0).then_some(1460),
                payload,
            },
            payload_len: payload.len(),
        }
        .emit(&mut out)
        .unwrap();
        out.truncate(n);
        out
    }

    #[test]
    fn round_trip_v4_and_v6_with_valid_checksums() {
        for t in [tuple4(), tuple6()] {
            let p = from_peer(t, SYN, 1000, 0, b"");
            let s = Segment::parse(&p).unwrap();
            assert_eq!(s.tuple(), t);
            assert_eq!(s.tcp.seq_number, 1000);
            assert_eq!(s.tcp.flags, SYN);
            assert_eq!(s.tcp.max_seg_size, Some(1460));
            assert_eq!(s.payload_len, 0);
            assert!(s.is_complete());
            // What was parsed emits the same bytes.
            let mut again = vec![0u8; p.len()];
            assert_eq!(s.emit(&mut again), Some(p.len()));
            assert_eq!(again, p);

            let p = from_peer(t, ACK | PSH, 1001, 77, b"hello");
            let s = Segment::parse(&p).unwrap();
            assert_eq!(s.payload_len, 5);
            assert_eq!(s.tcp.payload, b"hello");
            assert_eq!(s.tcp.ack_number, 77);
            assert_eq!(s.tcp.max_seg_size, None);
        }
    }

    #[test]
    fn reply_has_mss_only_and_window_zero() {
        let mut out = [0u8; MAX_REPLY];
        let n = Segment::reply(&tuple6(), 5, 1001, SYN | ACK, Some(1440))
            .emit(&mut out)
            .unwrap();
        assert_eq!(n, MAX_REPLY);
        let s = Segment::parse(&out[..n]).unwrap();
        assert_eq!(s.tuple().src, tuple6().dst);
        assert_eq!(s.tcp.src_port, 22);
        assert_eq!(s.tcp.header_len(), 24);
        assert_eq!(s.tcp.window_len, 0);
        assert_eq!(s.tcp.max_seg_size, Some(1440));
        // Too small a buffer, or a payload length that is not the payload's.
        assert_eq!(
            Segment::reply(&tuple4(), 1, 2, ACK, None).emit(&mut out[..39]),
            None
        );
        let mut odd = Segment::reply(&tuple4(), 1, 2, ACK, None);
        odd.payload_len = 1;
        assert_eq!(odd.emit(&mut out), None);
    }

    #[test]
    fn partial_checksums_from_local_senders_pass_and_are_noted() {
        for (src, dst) in [("10.77.0.2", "10.77.0.1"), ("fd77::2", "fd77::1")] {
            let (src, dst): (IpAddr, IpAddr) = (src.parse().unwrap(), dst.parse().unwrap());
            let t = Tuple {
                src,
                dst,
                src_port: 40000,
                dst_port: 22,
            };
            let mut out = [0u8; MAX_REPLY];
            let n = Segment::reply(&t, 7, 9, tcp::SYN, Some(1460))
                .emit(&mut out)
                .unwrap();
            let ip = if src.is_ipv4() { 20 } else { 40 };
            let l4 = n - ip;
            // What a CHECKSUM_PARTIAL sender leaves: the pseudo-header sum.
            let partial = !checksum::compute(checksum::pseudo_header(src, dst, 6, l4), &[]);
            out[ip + 16..ip + 18].copy_from_slice(&partial.to_be_bytes());
            let (s, was_partial) = Segment::parse_noting_partial(&out[..n]).expect("accepted");
            assert!(was_partial);
            assert_eq!(s.tcp.seq_number, 7);
            // Anything else wrong is still refused.
            out[ip + 17] ^= 1;
            assert_eq!(
                Segment::parse_noting_partial(&out[..n]).err(),
                Some(Reject::BadChecksum)
            );
        }
    }

    #[test]
    fn corrupted_checksums_are_rejected() {
        for t in [tuple4(), tuple6()] {
            let good = from_peer(t, ACK, 1, 2, b"data");
            let ip_len = if t.src.is_ipv4() { 20 } else { 40 };
            let mut bad = good.clone();
            bad[ip_len + 4] ^= 0x01; // flip a bit of the sequence number
            assert_eq!(Segment::parse(&bad).unwrap_err(), Reject::BadChecksum);
            let mut bad = good.clone();
            *bad.last_mut().unwrap() ^= 0x80; // and of the payload
            assert_eq!(Segment::parse(&bad).unwrap_err(), Reject::BadChecksum);
        }
        let mut bad = from_peer(tuple4(), ACK, 1, 2, b"");
        bad[8] = 3; // TTL without fixing the header checksum
        assert_eq!(Segment::parse(&bad).unwrap_err(), Reject::BadChecksum);
    }

    #[test]
    fn truncated_capture_passes_unverified() {
        let p = from_peer(tuple4(), ACK, 1, 2, &[b'x'; 300]);
        let s = Segment::parse(&p[..128]).unwrap();
        assert!(!s.is_complete());
        assert_eq!(s.payload_len, 300);
        assert_eq!(s.tcp.payload.len(), 128 - 40);
    }

    #[test]
    fn fragments_options_and_junk_are_rejected() {
        fn parse(b: &[u8]) -> Result<(), Reject> {
            Segment::parse(b).map(|_| ())
        }
        let p = from_peer(tuple4(), SYN, 1, 0, b"");
        // More-fragments flag (checksum fixed so that is not the reason).
        let mut f = p.clone();
        f[6] |= 0x20;
        f[10] = 0;
        f[11] = 0;
        let c = checksum::compute(0, &f[..20]);
        f[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(parse(&f).unwrap_err(), Reject::Fragment);
        // IHL 6: an option word.
        let mut o = p.clone();
        o[0] = 0x46;
        assert_eq!(parse(&o).unwrap_err(), Reject::IpOptions);
        // IPv6 fragment header and hop-by-hop options.
        let mut v6 = from_peer(tuple6(), SYN, 1, 0, b"");
        v6[6] = 44;
        assert_eq!(parse(&v6).unwrap_err(), Reject::Fragment);
        v6[6] = 0;
        assert_eq!(parse(&v6).unwrap_err(), Reject::IpOptions);
        v6[6] = 17;
        assert_eq!(parse(&v6).unwrap_err(), Reject::NotTcp);
        // Short, empty, wrong version, TCP data offset beyond the buffer.
        assert_eq!(parse(&p[..30]).unwrap_err(), Reject::Truncated);
        assert_eq!(parse(&[]).unwrap_err(), Reject::Truncated);
        assert_eq!(parse(&[0x55; 40]).unwrap_err(), Reject::Malformed);
        let mut d = p.clone();
        d[20 + 12] = 0xf0;
        assert!(parse(&d).is_err());
        // Total length shorter than the headers.
        let mut l = p.clone();
        l[2] = 0;
        l[3] = 30;
        l[10] = 0;
        l[11] = 0;
        let c = checksum::compute(0, &l[..20]);
        l[10..12].copy_from_slice(&c.to_be_bytes());
        assert!(parse(&l).is_err());
    }

    #[test]
    fn mss_parser_survives_garbage_options() {
        let mut p = from_peer(tuple4(), SYN, 1, 0, b"");
        // Option kind 3 with length 0 would loop forever if not caught.
        p[20 + 20] = 3;
        p[20 + 21] = 0;
        let t = tcp::Packet::new_checked(&p[20..]).unwrap();
        assert_eq!(t.mss(), None);
    }
}
