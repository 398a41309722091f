//! nfnetlink_log: configuring a log group and reading the packets nftables'
//! `log group N` copies to it.
//!
//! The wire format is netlink (`nlmsghdr`, then `nfgenmsg`, then TLV
//! attributes, all 4-byte aligned; multi-byte attribute values big-endian).
//! Everything coming from the socket is parsed here, bounds-checked, into
//! [`Logged`] views; malformed messages become errors, never panics.
//!
//! Shared by the stateless engine (which answers the logged packets) and the
//! socket engine's syn_delay (which reads when a delayed client's first SYN
//! came, [`tcp_source`] only).

use crate::sys::netlink::{Netlink, NETLINK_NETFILTER};
use std::io;
use std::time::Duration;

const NLMSG_HDR: usize = 16;
const NFGEN_HDR: usize = 4;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;

const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;

const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULA_CFG_NLBUFSIZ: u16 = 3;
const NFULA_CFG_TIMEOUT: u16 = 4;
const NFULA_CFG_QTHRESH: u16 = 5;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_CFG_CMD_UNBIND: u8 = 2;
const NFULNL_COPY_PACKET: u8 = 2;

const NFULA_PACKET_HDR: u16 = 1;
const NFULA_IFINDEX_INDEV: u16 = 4;
const NFULA_HWADDR: u16 = 8;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_HWTYPE: u16 = 15;
const NFULA_HWHEADER: u16 = 16;

/// How the kernel should batch packets to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Send as soon as this many packets are queued.
    pub qthresh: u32,
    /// ... or after this long (kernel resolution 10 ms; zero = only by count
    /// or buffer size).
    pub timeout: Duration,
    /// Kernel-side buffer per batch, bytes.
    pub nlbufsiz: u32,
}

impl Default for Batching {
    /// Batches of up to 256 packets (or 128 KiB, the kernel's largest),
    /// flushed within 10 ms: a reply is never held back long, and under
    /// load one `recv` (one wake-up) carries hundreds of packets.
    fn default() -> Self {
        Batching {
            qthresh: 256,
            timeout: Duration::from_millis(10),
            nlbufsiz: 128 * 1024,
        }
    }
}

/// Receive buffer: one full batch plus slack.
pub const RECV_BUF: usize = 256 * 1024;

/// Builds one nfnetlink_log config request for `group`.
fn config_msg(group: u16, seq: u32, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut m = vec![0u8; NLMSG_HDR + NFGEN_HDR];
    for (ty, val) in attrs {
        let len = 4 + val.len();
        m.extend_from_slice(&(len as u16).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(val);
        m.resize(align4(m.len()), 0);
    }
    let total = m.len() as u32;
    m[0..4].copy_from_slice(&total.to_ne_bytes());
    let ty = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG;
    m[4..6].copy_from_slice(&ty.to_ne_bytes());
    m[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    // nfgenmsg: family AF_UNSPEC, version 0, res_id = group (big-endian).
    m[NLMSG_HDR + 2..NLMSG_HDR + 4].copy_from_slice(&group.to_be_bytes());
    m
}

/// The requests that bind `group` in packet-copy mode with `b` batching.
pub fn bind_requests(group: u16, b: Batching) -> Vec<Vec<u8>> {
    let timeout_cs = (b.timeout.as_millis() / 10).min(u128::from(u32::MAX)) as u32;
    let mut mode = Vec::with_capacity(6);
    mode.extend_from_slice(&0xffffu32.to_be_bytes()); // copy_range: the rule's snaplen decides
    mode.push(NFULNL_COPY_PACKET);
    mode.push(0);
    vec![
        config_msg(group, 1, &[(NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND])]),
        config_msg(group, 2, &[(NFULA_CFG_MODE, &mode)]),
        config_msg(
            group,
            3,
            &[(NFULA_CFG_QTHRESH, &b.qthresh.max(1).to_be_bytes())],
        ),
        config_msg(group, 4, &[(NFULA_CFG_TIMEOUT, &timeout_cs.to_be_bytes())]),
        config_msg(group, 5, &[(NFULA_CFG_NLBUFSIZ, &b.nlbufsiz.to_be_bytes())]),
    ]
}

/// The request that releases `group`.
pub fn unbind_request(group: u16) -> Vec<u8> {
    config_msg(group, 6, &[(NFULA_CFG_CMD, &[NFULNL_CFG_CMD_UNBIND])])
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn ne16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn ne32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// One packet as nfnetlink_log delivered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Logged<'a> {
    /// EtherType of the packet (`0x0800`, `0x86dd`).
    pub hw_protocol: u16,
    /// Interface it arrived on.
    pub indev: Option<u32>,
    /// The sender's link-layer address (the next hop back).
    pub hwaddr: &'a [u8],
    /// ARPHRD type of the interface it arrived on (1: Ethernet), 0 if not
    /// told.
    pub hwtype: u16,
    /// The link-layer header it arrived with (Ethernet: our address, the
    /// sender's, the EtherType), empty if not told.
    pub hwheader: &'a [u8],
    /// The packet from its network header on, cut at the rule's snaplen.
    pub payload: &'a [u8],
}

/// One netlink message from the log socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    Packet(Logged<'a>),
    /// An acknowledgement (errno 0) or error reply to a config request.
    Ack {
        seq: u32,
        errno: i32,
    },
    /// Anything else (NOOP, DONE, other subsystems): ignored.
    Other,
}

/// Why a message could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// A length field points outside the datagram; the rest of the datagram
    /// is skipped.
    BadLength,
    /// The kernel reports it dropped messages.
    Overrun,
}

/// Walks the messages of one datagram.
pub fn messages(buf: &[u8]) -> impl Iterator<Item = Result<Message<'_>, ParseError>> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        if at + NLMSG_HDR > buf.len() {
            return None;
        }
        let len = ne32(buf, at)? as usize;
        if len < NLMSG_HDR || at + len > buf.len() {
            at = buf.len();
            return Some(Err(ParseError::BadLength));
        }
        let ty = ne16(buf, at + 4)?;
        let seq = ne32(buf, at + 8)?;
        let body = &buf[at + NLMSG_HDR..at + len];
        at += align4(len);
        Some(match ty {
            NLMSG_ERROR => match body.get(0..4) {
                Some(e) => Ok(Message::Ack {
                    seq,
                    // The kernel sends -errno; i32::MIN (from anything else
                    // writing there) must not overflow the negation.
                    errno: i32::from_ne_bytes([e[0], e[1], e[2], e[3]]).saturating_neg(),
                }),
                None => Err(ParseError::BadLength),
            },
            NLMSG_OVERRUN => Err(ParseError::Overrun),
            NLMSG_NOOP | NLMSG_DONE => Ok(Message::Other),
            t if t == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET => {
                parse_packet(body).map(Message::Packet)
            }
            _ => Ok(Message::Other),
        })
    })
}

fn parse_packet(body: &[u8]) -> Result<Logged<'_>, ParseError> {
    let mut p = Logged {
        hw_protocol: 0,
        indev: None,
        hwaddr: &[],
        hwtype: 0,
        hwheader: &[],
        payload: &[],
    };
    let mut at = NFGEN_HDR;
    if body.len() < at {
        return Err(ParseError::BadLength);
    }
    while at + 4 <= body.len() {
        let len = usize::from(ne16(body, at).ok_or(ParseError::BadLength)?);
        let ty = ne16(body, at + 2).ok_or(ParseError::BadLength)? & 0x3fff;
        if len < 4 || at + len > body.len() {
            return Err(ParseError::BadLength);
        }
        let v = &body[at + 4..at + len];
        match ty {
            NFULA_PACKET_HDR if v.len() >= 2 => p.hw_protocol = u16::from_be_bytes([v[0], v[1]]),
            NFULA_IFINDEX_INDEV if v.len() >= 4 => {
                p.indev = Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
            }
            // struct nfulnl_msg_packet_hw { __be16 hw_addrlen; u16 pad; u8 hw_addr[8]; }
            NFULA_HWADDR if v.len() >= 4 => {
                let n = usize::from(u16::from_be_bytes([v[0], v[1]])).min(8);
                p.hwaddr = v.get(4..4 + n).unwrap_or(&[]);
            }
            NFULA_HWTYPE if v.len() >= 2 => p.hwtype = u16::from_be_bytes([v[0], v[1]]),
            NFULA_HWHEADER => p.hwheader = v,
            NFULA_PAYLOAD => p.payload = v,
            _ => {}
        }
        at += align4(len);
    }
    Ok(p)
}

/// The source address and port of a logged TCP packet (`payload` from its
/// IP header on), without checking more than that: the socket engine only
/// needs to know whose SYN it was. `None` for anything else (not IPv4/IPv6,
/// not TCP, IPv6 extension headers, cut short).
pub fn tcp_source(payload: &[u8]) -> Option<std::net::SocketAddr> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    let (ip, l4) = match payload.first()? >> 4 {
        4 => {
            let ihl = usize::from(payload[0] & 0x0f) * 4;
            if ihl < 20 || *payload.get(9)? != 6 {
                return None;
            }
            let a: [u8; 4] = payload.get(12..16)?.try_into().ok()?;
            (IpAddr::V4(Ipv4Addr::from(a)), ihl)
        }
        6 => {
            if *payload.get(6)? != 6 {
                return None;
            }
            let a: [u8; 16] = payload.get(8..24)?.try_into().ok()?;
            (IpAddr::V6(Ipv6Addr::from(a)), 40)
        }
        _ => return None,
    };
    let port = u16::from_be_bytes(payload.get(l4..l4 + 2)?.try_into().ok()?);
    Some(SocketAddr::new(ip, port))
}

/// An nfnetlink_log socket bound to one group.
pub struct NflogSocket {
    sock: Netlink,
    group: u16,
}

impl NflogSocket {
    /// Binds `group` (in this network namespace) and configures packet copy
    /// and batching. Fails with the kernel's reason, e.g. when another
    /// process already holds the group.
    pub fn bind(group: u16, batching: Batching, rcvbuf: usize) -> io::Result<Self> {
        let sock = Netlink::open(NETLINK_NETFILTER)?;
        sock.set_recv_timeout(Duration::from_secs(2))?;
        let _ = sock.set_recv_buffer(rcvbuf);
        let mut buf = vec![0u8; RECV_BUF];
        for req in bind_requests(group, batching) {
            let want = ne32(&req, 8).unwrap_or(0);
            sock.send(&req)?;
            wait_ack(&sock, &mut buf, want)?;
        }
        sock.set_nonblocking(true)?;
        Ok(NflogSocket { sock, group })
    }

    pub fn group(&self) -> u16 {
        self.group
    }

    /// See [`Netlink::recv`].
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.sock.recv(buf)
    }

    pub fn netlink(&self) -> &Netlink {
        &self.sock
    }

    pub fn into_netlink(self) -> Netlink {
        self.sock
    }
}

/// Waits for the acknowledgement of request `seq`, skipping log packets that
/// may already arrive in between.
fn wait_ack(sock: &Netlink, buf: &mut [u8], seq: u32) -> io::Result<()> {
    for _ in 0..64 {
        let n = sock.recv(buf)?;
        for m in messages(&buf[..n]) {
            if let Ok(Message::Ack { seq: s, errno }) = m {
                if s == seq {
                    return if errno == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::from_raw_os_error(errno))
                    };
                }
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        "no acknowledgement from nfnetlink_log",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_source_reads_the_sender_of_ipv4_and_ipv6_tcp_only() {
        let mut v4 = vec![0u8; 40];
        v4[0] = 0x45;
        v4[9] = 6;
        v4[12..16].copy_from_slice(&[10, 77, 0, 2]);
        v4[20..22].copy_from_slice(&40000u16.to_be_bytes());
        assert_eq!(tcp_source(&v4), Some("10.77.0.2:40000".parse().unwrap()));
        // IPv4 options move the TCP header.
        let mut opt = v4.clone();
        opt[0] = 0x46;
        opt.splice(20..20, [1, 1, 1, 1]);
        assert_eq!(tcp_source(&opt), Some("10.77.0.2:40000".parse().unwrap()));
        let mut v6 = vec![0u8; 60];
        v6[0] = 0x60;
        v6[6] = 6;
        v6[8..24].copy_from_slice(&"fd77::2".parse::<std::net::Ipv6Addr>().unwrap().octets());
        v6[40..42].copy_from_slice(&443u16.to_be_bytes());
        assert_eq!(tcp_source(&v6), Some("[fd77::2]:443".parse().unwrap()));
        // Not TCP, a bad header length, cut short, not IP.
        let mut udp = v4.clone();
        udp[9] = 17;
        assert_eq!(tcp_source(&udp), None);
        let mut short_ihl = v4.clone();
        short_ihl[0] = 0x44;
        assert_eq!(tcp_source(&short_ihl), None);
        assert_eq!(tcp_source(&v4[..21]), None);
        assert_eq!(tcp_source(&v6[..41]), None);
        assert_eq!(tcp_source(&[0x50; 40]), None);
        assert_eq!(tcp_source(&[]), None);
    }

    fn attr(ty: u16, v: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&ty.to_ne_bytes());
        a.extend_from_slice(v);
        a.resize(align4(a.len()), 0);
        a
    }

    fn packet_msg(attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut m = vec![0u8; NLMSG_HDR + NFGEN_HDR];
        for a in attrs {
            m.extend_from_slice(a);
        }
        let len = m.len() as u32;
        m[0..4].copy_from_slice(&len.to_ne_bytes());
        m[4..6].copy_from_slice(&((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET).to_ne_bytes());
        m
    }

    #[test]
    fn config_requests_are_well_formed() {
        let reqs = bind_requests(7, Batching::default());
        assert_eq!(reqs.len(), 5);
        for r in &reqs {
            assert_eq!(ne32(r, 0).unwrap() as usize, r.len());
            assert_eq!(r.len() % 4, 0);
            assert_eq!(ne16(r, 4).unwrap(), 0x0401);
            assert_eq!(&r[NLMSG_HDR + 2..NLMSG_HDR + 4], &[0, 7]);
        }
        // The bind command: attribute type 1, one byte, value BIND.
        assert_eq!(ne16(&reqs[0], 20).unwrap(), 5);
        assert_eq!(ne16(&reqs[0], 22).unwrap(), NFULA_CFG_CMD);
        assert_eq!(reqs[0][24], NFULNL_CFG_CMD_BIND);
    }

    #[test]
    fn packet_attributes_are_read() {
        let mut hw = vec![0, 6, 0, 0];
        hw.extend_from_slice(&[1, 2, 3, 4, 5, 6, 0, 0]);
        let m = packet_msg(&[
            attr(NFULA_PACKET_HDR, &[0x08, 0x00, 0, 0]),
            attr(NFULA_IFINDEX_INDEV, &5u32.to_be_bytes()),
            attr(NFULA_HWADDR, &hw),
            attr(NFULA_PAYLOAD, b"\x45abc"),
            attr(NFULA_HWTYPE, &[0, 1]),
            attr(NFULA_HWHEADER, &[9; 14]),
            attr(0x8000 | 99, b"nested-unknown"),
        ]);
        let mut two = m.clone();
        two.extend_from_slice(&m);
        let got: Vec<_> = messages(&two).collect();
        assert_eq!(got.len(), 2);
        let Ok(Message::Packet(p)) = got[0] else {
            panic!("{got:?}")
        };
        assert_eq!(p.hw_protocol, 0x0800);
        assert_eq!(p.indev, Some(5));
        assert_eq!(p.hwaddr, &[1, 2, 3, 4, 5, 6]);
        assert_eq!(p.payload, b"\x45abc");
        assert_eq!((p.hwtype, p.hwheader), (1, &[9u8; 14][..]));
    }

    #[test]
    fn acks_and_errors() {
        let mut m = vec![0u8; NLMSG_HDR + 4];
        m[0..4].copy_from_slice(&20u32.to_ne_bytes());
        m[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        m[8..12].copy_from_slice(&3u32.to_ne_bytes());
        m[16..20].copy_from_slice(&(-16i32).to_ne_bytes());
        assert_eq!(
            messages(&m).next(),
            Some(Ok(Message::Ack { seq: 3, errno: 16 }))
        );
    }

    #[test]
    fn garbage_never_panics() {
        let good = packet_msg(&[attr(NFULA_PAYLOAD, b"xyz")]);
        // Every truncation and every single-byte corruption of a valid
        // message parses to something or an error.
        for cut in 0..good.len() {
            let _ = messages(&good[..cut]).count();
        }
        for i in 0..good.len() {
            for v in [0u8, 1, 3, 0x7f, 0xff] {
                let mut b = good.clone();
                b[i] = v;
                let _ = messages(&b).count();
            }
        }
        let mut bad = good.clone();
        bad[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert_eq!(messages(&bad).next(), Some(Err(ParseError::BadLength)));
        let mut bad = good.clone();
        bad[NLMSG_HDR + NFGEN_HDR..NLMSG_HDR + NFGEN_HDR + 2]
            .copy_from_slice(&200u16.to_ne_bytes());
        assert_eq!(messages(&bad).next(), Some(Err(ParseError::BadLength)));
    }

    #[test]
    fn an_error_code_of_i32_min_does_not_overflow() {
        // Found by the nflog fuzz target: `-i32::MIN` panicked.
        let mut m = Vec::new();
        m.extend_from_slice(&20u32.to_ne_bytes());
        m.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&9u32.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&i32::MIN.to_ne_bytes());
        let got: Vec<_> = messages(&m).collect();
        assert_eq!(
            got,
            vec![Ok(Message::Ack {
                seq: 9,
                errno: i32::MAX
            })]
        );
    }
}
