//! One host key: what an address says about *who* is on the other end.
//!
//! An IPv4 address is one host; so is an IPv4-mapped IPv6 address
//! (`::ffff:192.0.2.1`: a dual-stack socket reports IPv4 peers that way and
//! the packet on the wire is IPv4). An IPv6 host is a whole prefix (a /64
//! by default), because one host owns a /64 and can hop addresses inside it
//! at will. Everything that counts, caps, bans or ignores hosts — the
//! firewall's trap sets, the socket engine's per-IP cap, the watcher's
//! counting and `ignoreip` ranges — keys them the same way through this
//! module.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// `ip` with an IPv4-mapped IPv6 address turned into the IPv4 one it names.
pub fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// [`unmap`] for a socket address: the port is kept, and anything else
/// (an IPv6 scope id, flow info) is left alone.
pub fn unmap_socket(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => a,
        },
        v4 => v4,
    }
}

/// The 128-bit mask with `prefix` leading one bits (`prefix` capped at 128).
fn prefix_mask(prefix: u8) -> u128 {
    let p = u32::from(prefix.min(128));
    if p == 0 {
        0
    } else {
        u128::MAX << (128 - p)
    }
}

/// The IPv6 netmask with `prefix` leading one bits (`prefix` capped at 128).
pub fn v6_mask(prefix: u8) -> Ipv6Addr {
    Ipv6Addr::from(prefix_mask(prefix))
}

/// `addr` with the bits after `prefix` cleared.
pub fn mask_v6(addr: Ipv6Addr, prefix: u8) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(addr) & prefix_mask(prefix))
}

/// A host: an IPv4 address or an IPv6 network (address masked to its
/// prefix). The firewall calls it a (ban) `Target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Host {
    V4(Ipv4Addr),
    /// Network address (host bits zero) and prefix length (1..=128).
    V6Net(Ipv6Addr, u8),
}

impl Host {
    /// The host `ip` belongs to: IPv4 (also IPv4-mapped IPv6) as itself,
    /// IPv6 as its `v6_prefix` network. A prefix of 0 or above 128 is
    /// clamped into 1..=128: a /0 would be the whole Internet.
    pub fn from_ip(ip: IpAddr, v6_prefix: u8) -> Host {
        match unmap(ip) {
            IpAddr::V4(a) => Host::V4(a),
            IpAddr::V6(a) => {
                let p = v6_prefix.clamp(1, 128);
                Host::V6Net(mask_v6(a, p), p)
            }
        }
    }

    /// True when `ip` falls inside this host (IPv4-mapped IPv6 matches the
    /// IPv4 host).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self, unmap(ip)) {
            (Host::V4(t), IpAddr::V4(a)) => *t == a,
            (Host::V6Net(net, p), IpAddr::V6(a)) => mask_v6(a, *p) == *net,
            _ => false,
        }
    }

    /// The same host with the IPv6 part re-masked to `prefix` (IPv4 is
    /// unchanged).
    pub fn with_v6_prefix(self, prefix: u8) -> Host {
        match self {
            Host::V4(_) => self,
            Host::V6Net(a, _) => {
                let p = prefix.clamp(1, 128);
                Host::V6Net(mask_v6(a, p), p)
            }
        }
    }

    /// The host as a network in the 128-bit space (IPv4 mapped: a /128
    /// inside `::ffff:0:0/96`).
    fn as_net(&self) -> (u128, u8) {
        match self {
            Host::V4(a) => (u128::from(a.to_ipv6_mapped()), 128),
            Host::V6Net(net, p) => (u128::from(*net), (*p).min(128)),
        }
    }
}

impl fmt::Display for Host {
    /// `192.0.2.1`, `2001:db8::/64`; a /128 prints as the bare address.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::V4(a) => write!(f, "{a}"),
            Host::V6Net(a, 128) => write!(f, "{a}"),
            Host::V6Net(a, p) => write!(f, "{a}/{p}"),
        }
    }
}

/// Error from parsing a [`Host`] string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid ban target {input:?}: {reason}")]
pub struct HostParseError {
    pub input: String,
    pub reason: &'static str,
}

impl FromStr for Host {
    type Err = HostParseError;

    /// Parses what [`Display`](fmt::Display) prints: `192.0.2.1`,
    /// `2001:db8::/64`, `2001:db8::1` (a /128), and IPv4-mapped IPv6 as IPv4.
    /// IPv6 host bits below the prefix are cleared.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| HostParseError {
            input: s.to_string(),
            reason,
        };
        let t = s.trim();
        let (addr, prefix) = match t.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (t, None),
        };
        let ip: IpAddr = addr.parse().map_err(|_| err("not an IP address"))?;
        match (ip, prefix) {
            (IpAddr::V4(a), None) => Ok(Host::V4(a)),
            (IpAddr::V4(a), Some("32")) => Ok(Host::V4(a)),
            (IpAddr::V4(_), Some(_)) => Err(err("IPv4 targets are single addresses (/32)")),
            (IpAddr::V6(a), p) => {
                let p: u8 = match p {
                    None => 128,
                    Some(p) => p.parse().map_err(|_| err("bad prefix length"))?,
                };
                if !(1..=128).contains(&p) {
                    return Err(err("IPv6 prefix must be 1..=128"));
                }
                match a.to_ipv4_mapped() {
                    Some(v4) if p == 128 => Ok(Host::V4(v4)),
                    _ => Ok(Host::V6Net(mask_v6(a, p), p)),
                }
            }
        }
    }
}

/// An address range (`192.0.2.0/24`, `2001:db8::/32`, or one address),
/// held in the 128-bit space with IPv4 mapped, so an IPv4 range also
/// contains the IPv4-mapped forms of its addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: u128,
    /// Prefix length in the 128-bit space (IPv4 ranges are stored mapped).
    len: u8,
}

impl Cidr {
    fn to_128(ip: IpAddr) -> u128 {
        match unmap(ip) {
            IpAddr::V4(a) => u128::from(a.to_ipv6_mapped()),
            IpAddr::V6(a) => u128::from(a),
        }
    }

    /// The range of `prefix` leading bits around `ip` (`prefix` counts in
    /// the address's own family: up to 32 for an IPv4 address, 128 for an
    /// IPv6 one, IPv4-mapped included; longer is capped).
    pub fn new(ip: IpAddr, prefix: u8) -> Cidr {
        let len = if ip.is_ipv4() {
            prefix.min(32) + 96
        } else {
            prefix.min(128)
        };
        Cidr {
            net: Self::to_128(ip) & prefix_mask(len),
            len,
        }
    }

    /// The one address `ip`.
    pub fn single(ip: IpAddr) -> Cidr {
        Cidr {
            net: Self::to_128(ip),
            len: 128,
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        Self::to_128(ip) & prefix_mask(self.len) == self.net
    }

    /// Whether the two ranges share an address: two prefixes overlap iff
    /// they agree on the shorter one.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        let m = prefix_mask(self.len.min(other.len));
        self.net & m == other.net & m
    }

    /// Whether this range and `host` share an address (a range inside an
    /// IPv6 host's prefix overlaps it as well as one containing it).
    pub fn overlaps_host(&self, host: &Host) -> bool {
        let (net, len) = host.as_net();
        self.overlaps(&Cidr { net, len })
    }
}

impl FromStr for Cidr {
    type Err = String;
    /// `192.0.2.1`, `192.0.2.0/24`, `2001:db8::/32`.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let ip: IpAddr = a
            .parse()
            .map_err(|_| format!("{s:?} is not an address or CIDR range"))?;
        let max: u8 = if ip.is_ipv4() { 32 } else { 128 };
        let plen = match p {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("bad prefix length in {s:?} (0..={max})"))?,
        };
        let len = if ip.is_ipv4() { plen + 96 } else { plen };
        Ok(Cidr {
            net: Self::to_128(ip) & prefix_mask(len),
            len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn unmap_turns_mapped_v6_into_v4_only() {
        assert_eq!(unmap(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(unmap(ip("2001:db8::1")), ip("2001:db8::1"));
        assert_eq!(unmap(ip("192.0.2.1")), ip("192.0.2.1"));
        let s: SocketAddr = "[::ffff:10.0.0.1]:22".parse().unwrap();
        assert_eq!(unmap_socket(s), "10.0.0.1:22".parse().unwrap());
        let s: SocketAddr = "[fe80::1%2]:22".parse().unwrap();
        assert_eq!(unmap_socket(s), s);
    }

    #[test]
    fn cidr_new_matches_parse() {
        assert_eq!(
            Cidr::new(ip("127.1.2.3"), 8),
            "127.0.0.0/8".parse().unwrap()
        );
        assert_eq!(
            Cidr::new(ip("2001:db8::1"), 32),
            "2001:db8::/32".parse().unwrap()
        );
        assert!(Cidr::new(ip("127.0.0.0"), 8).contains(ip("::ffff:127.0.0.1")));
    }

    #[test]
    fn v4_host_overlaps_only_its_ranges() {
        let h = Host::V4("192.0.2.7".parse().unwrap());
        assert!("192.0.2.0/24".parse::<Cidr>().unwrap().overlaps_host(&h));
        assert!(!"192.0.3.0/24".parse::<Cidr>().unwrap().overlaps_host(&h));
        assert!(!"2001:db8::/32".parse::<Cidr>().unwrap().overlaps_host(&h));
    }
}
