//! What gets trapped: one IPv4 address, or one IPv6 network (a /64 by
//! default, because a single IPv6 host owns a whole /64 and can hop
//! addresses inside it at will).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

/// A trapped host: an IPv4 address or an IPv6 network (address masked to
/// its prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    V4(Ipv4Addr),
    /// Network address (host bits zero) and prefix length (1..=128).
    V6Net(Ipv6Addr, u8),
}

/// One element to put into a trap set, with the time the kernel keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ban {
    pub target: Target,
    pub timeout: Duration,
}

/// The IPv6 netmask with `prefix` leading one bits (`prefix` capped at 128).
pub fn v6_mask(prefix: u8) -> Ipv6Addr {
    let p = u32::from(prefix.min(128));
    if p == 0 {
        return Ipv6Addr::UNSPECIFIED;
    }
    Ipv6Addr::from(u128::MAX << (128 - p))
}

/// `addr` with the bits after `prefix` cleared.
pub fn mask_v6(addr: Ipv6Addr, prefix: u8) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(addr) & u128::from(v6_mask(prefix)))
}

impl Target {
    /// The target that traps `ip`: IPv4 (also IPv4-mapped IPv6, since a dual
    /// stack socket reports IPv4 peers that way and the packet on the wire is
    /// IPv4) as itself, IPv6 as its `v6_prefix` network. A prefix of 0 or
    /// above 128 is clamped into 1..=128: a /0 would trap the whole Internet.
    pub fn from_ip(ip: IpAddr, v6_prefix: u8) -> Target {
        match ip {
            IpAddr::V4(a) => Target::V4(a),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => Target::V4(v4),
                None => {
                    let p = v6_prefix.clamp(1, 128);
                    Target::V6Net(mask_v6(a, p), p)
                }
            },
        }
    }

    /// True when `ip` falls inside this target (IPv4-mapped IPv6 matches the
    /// IPv4 target).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self, ip) {
            (Target::V4(t), IpAddr::V4(a)) => *t == a,
            (Target::V4(t), IpAddr::V6(a)) => a.to_ipv4_mapped() == Some(*t),
            (Target::V6Net(net, p), IpAddr::V6(a)) => mask_v6(a, *p) == *net,
            (Target::V6Net(..), IpAddr::V4(_)) => false,
        }
    }

    /// The same target with the IPv6 part re-masked to `prefix` (IPv4 is
    /// unchanged). Used to bring a target to the set's granularity.
    pub fn with_v6_prefix(self, prefix: u8) -> Target {
        match self {
            Target::V4(_) => self,
            Target::V6Net(a, _) => {
                let p = prefix.clamp(1, 128);
                Target::V6Net(mask_v6(a, p), p)
            }
        }
    }
}

impl fmt::Display for Target {
    /// `192.0.2.1`, `2001:db8::/64`; a /128 prints as the bare address.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::V4(a) => write!(f, "{a}"),
            Target::V6Net(a, 128) => write!(f, "{a}"),
            Target::V6Net(a, p) => write!(f, "{a}/{p}"),
        }
    }
}

/// Error from parsing a [`Target`] string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid ban target {input:?}: {reason}")]
pub struct TargetParseError {
    pub input: String,
    pub reason: &'static str,
}

impl FromStr for Target {
    type Err = TargetParseError;

    /// Parses what [`Display`](fmt::Display) prints: `192.0.2.1`,
    /// `2001:db8::/64`, `2001:db8::1` (a /128), and IPv4-mapped IPv6 as IPv4.
    /// IPv6 host bits below the prefix are cleared.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| TargetParseError {
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
            (IpAddr::V4(a), None) => Ok(Target::V4(a)),
            (IpAddr::V4(a), Some("32")) => Ok(Target::V4(a)),
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
                    Some(v4) if p == 128 => Ok(Target::V4(v4)),
                    _ => Ok(Target::V6Net(mask_v6(a, p), p)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v6_is_aggregated_to_its_prefix() {
        let a = Target::from_ip(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), 64);
        let b = Target::from_ip(ip("2001:db8:1:2::1"), 64);
        assert_eq!(a, b);
        assert_eq!(a, Target::V6Net("2001:db8:1:2::".parse().unwrap(), 64));
        assert_ne!(a, Target::from_ip(ip("2001:db8:1:3::1"), 64));
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert!(a.contains(ip("2001:db8:1:2:ffff::9")));
        assert!(!a.contains(ip("2001:db8:1:3::9")));
        assert!(!a.contains(ip("10.0.0.1")));
    }

    #[test]
    fn odd_prefixes_mask_correctly_and_are_clamped() {
        let t = Target::from_ip(ip("2001:db8:ffff::1"), 36);
        assert_eq!(t, Target::V6Net("2001:db8:f000::".parse().unwrap(), 36));
        let t = Target::from_ip(ip("2001:db8::1"), 128);
        assert_eq!(t.to_string(), "2001:db8::1");
        // /0 would trap everything: clamp to /1.
        assert_eq!(
            Target::from_ip(ip("8000::1"), 0),
            Target::V6Net("8000::".parse().unwrap(), 1)
        );
        assert_eq!(
            Target::from_ip(ip("2001:db8::1"), 200),
            Target::V6Net("2001:db8::1".parse().unwrap(), 128)
        );
        assert_eq!(
            v6_mask(64),
            "ffff:ffff:ffff:ffff::".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(v6_mask(0), Ipv6Addr::UNSPECIFIED);
    }

    #[test]
    fn v4_mapped_counts_as_v4() {
        let t = Target::from_ip(ip("::ffff:10.77.1.2"), 64);
        assert_eq!(t, Target::V4("10.77.1.2".parse().unwrap()));
        assert!(t.contains(ip("::ffff:10.77.1.2")));
        assert!(t.contains(ip("10.77.1.2")));
        assert_eq!("::ffff:10.77.1.2".parse::<Target>().unwrap(), t);
    }

    #[test]
    fn parse_round_trips_display() {
        for s in [
            "192.0.2.7",
            "2001:db8::/64",
            "2001:db8::5",
            "2001:db8:f000::/36",
        ] {
            let t: Target = s.parse().unwrap();
            assert_eq!(t.to_string(), s);
        }
        assert_eq!(
            "2001:db8::77/64".parse::<Target>().unwrap().to_string(),
            "2001:db8::/64"
        );
        assert_eq!(
            "192.0.2.7/32".parse::<Target>().unwrap(),
            Target::V4("192.0.2.7".parse().unwrap())
        );
        for bad in [
            "",
            "x",
            "192.0.2.7/24",
            "2001:db8::/0",
            "2001:db8::/129",
            "2001:db8::/x",
            "1.2.3.4.5",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
    }
}
