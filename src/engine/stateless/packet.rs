//! IPv4/IPv6 + TCP as typed views over byte buffers.
//!
//! Everything the engine reads comes from the network, so it is checked
//! exactly once, here, at the edge: [`parse`] turns bytes into a [`Segment`]
//! or a [`Reject`] reason, and after that the engine only calls accessors
//! that cannot fail (each view's constructor proved the bytes are there).
//! The builders write the replies (SYN/ACK with MSS only, bare ACKs) with
//! both checksums filled in.
//!
//! What is refused, and why:
//! * IPv4 options and IPv6 extension headers — real clients do not send them
//!   on TCP, and parsing them is where bugs live;
//! * fragments — a SYN or ACK never needs fragmenting; reassembly would be
//!   per-flow state;
//! * bad IPv4 header or TCP checksums — corrupt or forged.
//!
//! nfnetlink_log copies at most the rule's `snaplen` bytes. When the copy is
//! shorter than the packet, the TCP checksum cannot be recomputed; such
//! segments are marked [`Segment::checksum_verified`] `false` and still pass
//! (the SYN-cookie check on the ACK number is what protects against forged
//! segments, not the checksum).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

const IPV4_HDR: usize = 20;
const IPV6_HDR: usize = 40;
const TCP_HDR: usize = 20;
const PROTO_TCP: u8 = 6;
/// Hop limit / TTL of our replies: the common Linux default, so replies do
/// not stand out.
const TTL: u8 = 64;

/// Why a packet was dropped without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    /// Shorter than the headers it claims.
    Truncated,
    /// Neither IPv4 nor IPv6, or a length field that contradicts itself.
    Malformed,
    /// IPv4 options or IPv6 extension headers.
    IpOptions,
    Fragment,
    /// Not TCP.
    NotTcp,
    BadChecksum,
}

impl Reject {
    pub const ALL: [Reject; 6] = [
        Reject::Truncated,
        Reject::Malformed,
        Reject::IpOptions,
        Reject::Fragment,
        Reject::NotTcp,
        Reject::BadChecksum,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Truncated => "truncated",
            Reject::Malformed => "malformed",
            Reject::IpOptions => "ip_options",
            Reject::Fragment => "fragment",
            Reject::NotTcp => "not_tcp",
            Reject::BadChecksum => "bad_checksum",
        }
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// A checked IPv4 header without options. Invariant: at least 20 bytes,
/// version 4, IHL 5, header checksum valid.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Packet<'a> {
    buf: &'a [u8],
}

impl<'a> Ipv4Packet<'a> {
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, Reject> {
        if buf.len() < IPV4_HDR {
            return Err(Reject::Truncated);
        }
        if buf[0] >> 4 != 4 {
            return Err(Reject::Malformed);
        }
        let ihl = usize::from(buf[0] & 0x0f) * 4;
        if ihl < IPV4_HDR {
            return Err(Reject::Malformed);
        }
        if ihl > IPV4_HDR {
            return Err(Reject::IpOptions);
        }
        let total = usize::from(be16(buf, 2));
        if total < IPV4_HDR {
            return Err(Reject::Malformed);
        }
        let frag = be16(buf, 6);
        // MF set or a non-zero offset: a fragment. (DF is fine.)
        if frag & 0x2000 != 0 || frag & 0x1fff != 0 {
            return Err(Reject::Fragment);
        }
        if checksum(0, &buf[..IPV4_HDR]) != 0 {
            return Err(Reject::BadChecksum);
        }
        if buf[9] != PROTO_TCP {
            return Err(Reject::NotTcp);
        }
        Ok(Ipv4Packet { buf })
    }

    pub fn src(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.buf[12], self.buf[13], self.buf[14], self.buf[15])
    }

    pub fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.buf[16], self.buf[17], self.buf[18], self.buf[19])
    }

    /// Length of the whole packet as the header claims (may exceed what was
    /// captured).
    pub fn total_len(&self) -> usize {
        usize::from(be16(self.buf, 2))
    }

    /// The captured bytes after the header, cut at `total_len`.
    pub fn payload(&self) -> &'a [u8] {
        let end = self.total_len().min(self.buf.len());
        &self.buf[IPV4_HDR..end.max(IPV4_HDR)]
    }
}

/// A checked IPv6 header whose next header is TCP. Invariant: at least 40
/// bytes, version 6, next header 6.
#[derive(Debug, Clone, Copy)]
pub struct Ipv6Packet<'a> {
    buf: &'a [u8],
}

impl<'a> Ipv6Packet<'a> {
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, Reject> {
        if buf.len() < IPV6_HDR {
            return Err(Reject::Truncated);
        }
        if buf[0] >> 4 != 6 {
            return Err(Reject::Malformed);
        }
        match buf[6] {
            PROTO_TCP => {}
            44 => return Err(Reject::Fragment),
            // Hop-by-hop, routing, destination options, AH, ESP, mobility,
            // HIP, shim6: extension headers.
            0 | 43 | 60 | 51 | 50 | 135 | 139 | 140 => return Err(Reject::IpOptions),
            _ => return Err(Reject::NotTcp),
        }
        Ok(Ipv6Packet { buf })
    }

    pub fn src(&self) -> Ipv6Addr {
        Ipv6Addr::from(<[u8; 16]>::try_from(&self.buf[8..24]).unwrap_or([0; 16]))
    }

    pub fn dst(&self) -> Ipv6Addr {
        Ipv6Addr::from(<[u8; 16]>::try_from(&self.buf[24..40]).unwrap_or([0; 16]))
    }

    /// Payload length as the header claims.
    pub fn payload_len(&self) -> usize {
        usize::from(be16(self.buf, 4))
    }

    pub fn payload(&self) -> &'a [u8] {
        let end = (IPV6_HDR + self.payload_len()).min(self.buf.len());
        &self.buf[IPV6_HDR..end]
    }
}

/// A checked TCP header. Invariant: the whole header including options is
/// in `buf` and the data offset is sane.
#[derive(Debug, Clone, Copy)]
pub struct TcpHeader<'a> {
    buf: &'a [u8],
}

impl<'a> TcpHeader<'a> {
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, Reject> {
        if buf.len() < TCP_HDR {
            return Err(Reject::Truncated);
        }
        let off = usize::from(buf[12] >> 4) * 4;
        if off < TCP_HDR {
            return Err(Reject::Malformed);
        }
        if off > buf.len() {
            return Err(Reject::Truncated);
        }
        Ok(TcpHeader { buf })
    }

    pub fn src_port(&self) -> u16 {
        be16(self.buf, 0)
    }
    pub fn dst_port(&self) -> u16 {
        be16(self.buf, 2)
    }
    pub fn seq(&self) -> u32 {
        be32(self.buf, 4)
    }
    pub fn ack(&self) -> u32 {
        be32(self.buf, 8)
    }
    pub fn header_len(&self) -> usize {
        usize::from(self.buf[12] >> 4) * 4
    }
    pub fn flags(&self) -> u8 {
        self.buf[13]
    }
    pub fn window(&self) -> u16 {
        be16(self.buf, 14)
    }

    /// The MSS option, if the peer sent one.
    pub fn mss(&self) -> Option<u16> {
        let opts = &self.buf[TCP_HDR..self.header_len()];
        let mut i = 0;
        while i < opts.len() {
            match opts[i] {
                0 => return None,
                1 => i += 1,
                kind => {
                    let len = usize::from(*opts.get(i + 1)?);
                    if len < 2 || i + len > opts.len() {
                        return None;
                    }
                    if kind == 2 && len == 4 {
                        return Some(be16(opts, i + 2));
                    }
                    i += len;
                }
            }
        }
        None
    }
}

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

fn v6_of(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// One received TCP segment, fully checked.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    pub tuple: Tuple,
    pub tcp: TcpHeader<'a>,
    /// Payload length from the IP length fields (not what was captured).
    pub payload_len: usize,
    /// The captured payload bytes (a prefix of the real payload).
    pub payload: &'a [u8],
    /// False when the capture was cut short and the checksum could not be
    /// recomputed.
    pub checksum_verified: bool,
}

/// Checks an IP packet (starting at the IP header) once and returns the
/// TCP segment in it.
pub fn parse(buf: &[u8]) -> Result<Segment<'_>, Reject> {
    let Some(&first) = buf.first() else {
        return Err(Reject::Truncated);
    };
    let (src, dst, l4, claimed_l4_len) = match first >> 4 {
        4 => {
            let ip = Ipv4Packet::new_checked(buf)?;
            let claimed = ip.total_len() - IPV4_HDR;
            (
                IpAddr::V4(ip.src()),
                IpAddr::V4(ip.dst()),
                ip.payload(),
                claimed,
            )
        }
        6 => {
            let ip = Ipv6Packet::new_checked(buf)?;
            (
                IpAddr::V6(ip.src()),
                IpAddr::V6(ip.dst()),
                ip.payload(),
                ip.payload_len(),
            )
        }
        _ => return Err(Reject::Malformed),
    };
    let tcp = TcpHeader::new_checked(l4)?;
    if tcp.header_len() > claimed_l4_len {
        return Err(Reject::Malformed);
    }
    let complete = l4.len() == claimed_l4_len;
    if complete && checksum(pseudo_header_sum(src, dst, l4.len()), l4) != 0 {
        return Err(Reject::BadChecksum);
    }
    Ok(Segment {
        tuple: Tuple {
            src,
            dst,
            src_port: tcp.src_port(),
            dst_port: tcp.dst_port(),
        },
        tcp,
        payload_len: claimed_l4_len - tcp.header_len(),
        payload: &l4[tcp.header_len()..],
        checksum_verified: complete,
    })
}

/// Ones'-complement sum of `data` added to `initial`, folded and inverted:
/// 0 when a buffer that contains its own checksum is intact.
pub fn checksum(initial: u32, data: &[u8]) -> u16 {
    let mut sum = u64::from(initial);
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u64::from(u16::from_be_bytes([*last, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Unfolded sum of the TCP pseudo-header for either family.
pub fn pseudo_header_sum(src: IpAddr, dst: IpAddr, l4_len: usize) -> u32 {
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks_exact(2) {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
    };
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            add(&s.octets());
            add(&d.octets());
        }
        (s, d) => {
            add(&v6_of(s).octets());
            add(&v6_of(d).octets());
        }
    }
    let len = l4_len as u32;
    sum + u32::from(PROTO_TCP) + (len >> 16) + (len & 0xffff)
}

/// What to put in a reply's TCP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// Addresses and ports as seen from the peer; the reply goes from
    /// `dst` to `src`.
    pub to: Tuple,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// Adds an MSS option (SYN/ACK only).
    pub mss: Option<u16>,
    /// Payload bytes (only test tools send any).
    pub payload_len: usize,
}

/// Largest reply [`build`] writes without payload: IPv6 + TCP + MSS.
pub const MAX_REPLY: usize = IPV6_HDR + TCP_HDR + 4;

/// Writes the IP packet for `r` into `out` and returns its length, or `None`
/// if `out` is too small. The reply's IP family follows `r.to`'s addresses.
pub fn build(r: &Reply, payload: &[u8], out: &mut [u8]) -> Option<usize> {
    let opt_len = if r.mss.is_some() { 4 } else { 0 };
    let tcp_len = TCP_HDR + opt_len + payload.len();
    let (src, dst) = (r.to.dst, r.to.src);
    let ip_len = match (src, dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => IPV4_HDR,
        _ => IPV6_HDR,
    };
    let total = ip_len + tcp_len;
    if out.len() < total || total > usize::from(u16::MAX) {
        return None;
    }
    let out = &mut out[..total];
    out.fill(0);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out[0] = 0x45;
            out[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            out[6] = 0x40; // DF
            out[8] = TTL;
            out[9] = PROTO_TCP;
            out[12..16].copy_from_slice(&s.octets());
            out[16..20].copy_from_slice(&d.octets());
            let c = checksum(0, &out[..IPV4_HDR]);
            out[10..12].copy_from_slice(&c.to_be_bytes());
        }
        (s, d) => {
            out[0] = 0x60;
            out[4..6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
            out[6] = PROTO_TCP;
            out[7] = TTL;
            out[8..24].copy_from_slice(&v6_of(s).octets());
            out[24..40].copy_from_slice(&v6_of(d).octets());
        }
    }
    let t = &mut out[ip_len..];
    t[0..2].copy_from_slice(&r.to.dst_port.to_be_bytes());
    t[2..4].copy_from_slice(&r.to.src_port.to_be_bytes());
    t[4..8].copy_from_slice(&r.seq.to_be_bytes());
    t[8..12].copy_from_slice(&r.ack.to_be_bytes());
    t[12] = (((TCP_HDR + opt_len) / 4) as u8) << 4;
    t[13] = r.flags;
    t[14..16].copy_from_slice(&r.window.to_be_bytes());
    if let Some(mss) = r.mss {
        t[20] = 2;
        t[21] = 4;
        t[22..24].copy_from_slice(&mss.to_be_bytes());
    }
    t[TCP_HDR + opt_len..].copy_from_slice(payload);
    let c = checksum(pseudo_header_sum(src, dst, tcp_len), t);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// A packet as the peer would send it: the reply builder with the tuple
    /// turned around.
    fn from_peer(t: Tuple, flags: u8, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; 2000];
        let back = Tuple {
            src: t.dst,
            dst: t.src,
            src_port: t.dst_port,
            dst_port: t.src_port,
        };
        let n = build(
            &Reply {
                to: back,
                seq,
                ack,
                flags,
                window: 64240,
                mss: (flags & TCP_SYN != 0).then_some(1460),
                payload_len: payload.len(),
            },
            payload,
            &mut out,
        )
        .unwrap();
        out.truncate(n);
        out
    }

    #[test]
    fn known_ipv4_header_checksum() {
        // The classic example header (Wikipedia, "IPv4 header checksum").
        let h: [u8; 20] = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(0, &h), 0xb861);
    }

    #[test]
    fn round_trip_v4_and_v6_with_valid_checksums() {
        for t in [tuple4(), tuple6()] {
            let p = from_peer(t, TCP_SYN, 1000, 0, b"");
            let s = parse(&p).unwrap();
            assert_eq!(s.tuple, t);
            assert_eq!(s.tcp.seq(), 1000);
            assert_eq!(s.tcp.flags(), TCP_SYN);
            assert_eq!(s.tcp.mss(), Some(1460));
            assert_eq!(s.payload_len, 0);
            assert!(s.checksum_verified);

            let p = from_peer(t, TCP_ACK | TCP_PSH, 1001, 77, b"hello");
            let s = parse(&p).unwrap();
            assert_eq!(s.payload_len, 5);
            assert_eq!(s.payload, b"hello");
            assert_eq!(s.tcp.ack(), 77);
            assert_eq!(s.tcp.mss(), None);
        }
    }

    #[test]
    fn reply_has_mss_only_and_window_zero() {
        let mut out = [0u8; MAX_REPLY];
        let n = build(
            &Reply {
                to: tuple6(),
                seq: 5,
                ack: 1001,
                flags: TCP_SYN | TCP_ACK,
                window: 0,
                mss: Some(1440),
                payload_len: 0,
            },
            &[],
            &mut out,
        )
        .unwrap();
        assert_eq!(n, MAX_REPLY);
        let s = parse(&out[..n]).unwrap();
        assert_eq!(s.tuple.src, tuple6().dst);
        assert_eq!(s.tuple.src_port, 22);
        assert_eq!(s.tcp.header_len(), 24);
        assert_eq!(s.tcp.window(), 0);
        assert_eq!(s.tcp.mss(), Some(1440));
    }

    #[test]
    fn corrupted_checksums_are_rejected() {
        for t in [tuple4(), tuple6()] {
            let good = from_peer(t, TCP_ACK, 1, 2, b"data");
            let ip_len = if t.src.is_ipv4() { 20 } else { 40 };
            let mut bad = good.clone();
            bad[ip_len + 4] ^= 0x01; // flip a bit of the sequence number
            assert_eq!(parse(&bad).unwrap_err(), Reject::BadChecksum);
            let mut bad = good.clone();
            *bad.last_mut().unwrap() ^= 0x80; // and of the payload
            assert_eq!(parse(&bad).unwrap_err(), Reject::BadChecksum);
        }
        let mut bad = from_peer(tuple4(), TCP_ACK, 1, 2, b"");
        bad[8] = 3; // TTL without fixing the header checksum
        assert_eq!(parse(&bad).unwrap_err(), Reject::BadChecksum);
    }

    #[test]
    fn truncated_capture_passes_unverified() {
        let p = from_peer(tuple4(), TCP_ACK, 1, 2, &[b'x'; 300]);
        let s = parse(&p[..128]).unwrap();
        assert!(!s.checksum_verified);
        assert_eq!(s.payload_len, 300);
        assert_eq!(s.payload.len(), 128 - 40);
    }

    #[test]
    fn fragments_options_and_junk_are_rejected() {
        let p = from_peer(tuple4(), TCP_SYN, 1, 0, b"");
        // More-fragments flag (checksum fixed so that is not the reason).
        let mut f = p.clone();
        f[6] |= 0x20;
        f[10] = 0;
        f[11] = 0;
        let c = checksum(0, &f[..20]);
        f[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(parse(&f).unwrap_err(), Reject::Fragment);
        // IHL 6: an option word.
        let mut o = p.clone();
        o[0] = 0x46;
        assert_eq!(parse(&o).unwrap_err(), Reject::IpOptions);
        // IPv6 fragment header and hop-by-hop options.
        let mut v6 = from_peer(tuple6(), TCP_SYN, 1, 0, b"");
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
        let c = checksum(0, &l[..20]);
        l[10..12].copy_from_slice(&c.to_be_bytes());
        assert!(parse(&l).is_err());
    }

    #[test]
    fn mss_parser_survives_garbage_options() {
        let mut p = from_peer(tuple4(), TCP_SYN, 1, 0, b"");
        // Option kind 3 with length 0 would loop forever if not caught.
        p[20 + 20] = 3;
        p[20 + 21] = 0;
        let tcp = TcpHeader::new_checked(&p[20..]).unwrap();
        assert_eq!(tcp.mss(), None);
    }
}
