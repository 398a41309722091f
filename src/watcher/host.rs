//! Who gets counted and banned: an IPv4 address or an IPv6 prefix.
//!
//! An attacker with an IPv6 /64 can walk through 2^64 addresses, so counting
//! and banning per address would be useless; hits are counted per prefix
//! (`/64` by default) and the whole prefix is trapped. IPv4-mapped IPv6
//! (`::ffff:192.0.2.1`) is the IPv4 host it names.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The unit of counting, storage and banning is the firewall's [`Target`]:
/// an IPv4 address or an IPv6 network.
pub use crate::firewall::Target;

/// `ignoreip` ranges are the shared [`crate::host::Cidr`].
pub use crate::host::Cidr;

/// Addresses that are never banned: loopback, the machine's own, and the
/// configured `ignoreip` ranges.
#[derive(Debug, Clone, Default)]
pub struct IgnoreList {
    ranges: Vec<Cidr>,
}

impl IgnoreList {
    /// Loopback plus `own` (the machine's addresses) plus `extra`.
    pub fn new(own: &[IpAddr], extra: &[Cidr]) -> IgnoreList {
        let mut ranges = vec![
            Cidr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8),
            Cidr::single(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            Cidr::single(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
            Cidr::single(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        ];
        ranges.extend(own.iter().map(|ip| Cidr::single(*ip)));
        ranges.extend_from_slice(extra);
        IgnoreList { ranges }
    }

    /// With the machine's own addresses read from the system.
    pub fn with_own_addresses(extra: &[Cidr]) -> IgnoreList {
        let own = crate::sys::local_addresses().unwrap_or_default();
        Self::new(&own, extra)
    }

    pub fn add(&mut self, more: &[Cidr]) {
        self.ranges.extend_from_slice(more);
    }

    pub fn is_ignored(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|c| c.contains(ip))
    }

    /// True when the network `ip/len` shares any address with an ignored
    /// range (CIDR ranges overlap exactly when one contains the other).
    pub fn overlaps(&self, ip: IpAddr, len: u8) -> bool {
        let range = Cidr::new(ip, len);
        self.ranges.iter().any(|c| c.overlaps(&range))
    }

    /// True when banning `key` would trap an ignored address: for an IPv6
    /// prefix, any ignored range that overlaps it (one inside it, longer
    /// than the prefix, as well as one containing it).
    pub fn covers_key(&self, key: &Target) -> bool {
        self.ranges.iter().any(|c| c.overlaps_host(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_is_aggregated_per_64() {
        let a = Target::from_ip(ip("2001:db8:1:2:aaaa::1"), 64);
        let b = Target::from_ip(ip("2001:db8:1:2:ffff:1:2:3"), 64);
        let c = Target::from_ip(ip("2001:db8:1:3::1"), 64);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_eq!("2001:db8:1:2::/64".parse::<Target>().unwrap(), a);
        assert!(a.contains(ip("2001:db8:1:2::77")));
        assert!(!a.contains(ip("2001:db8:1:3::77")));
    }

    #[test]
    fn prefix_is_configurable_and_128_is_per_address() {
        let a = Target::from_ip(ip("2001:db8:1:2::1"), 48);
        assert_eq!(a.to_string(), "2001:db8:1::/48");
        let b = Target::from_ip(ip("2001:db8::1"), 128);
        assert_eq!(b.to_string(), "2001:db8::1");
        assert_eq!("2001:db8::1".parse::<Target>().unwrap(), b);
    }

    #[test]
    fn ipv4_mapped_counts_as_ipv4() {
        let k = Target::from_ip(ip("::ffff:192.0.2.7"), 64);
        assert_eq!(k, Target::V4("192.0.2.7".parse().unwrap()));
        assert_eq!(k.to_string(), "192.0.2.7");
    }

    #[test]
    fn ignore_list_always_has_loopback_and_own() {
        let own = [ip("10.77.0.1"), ip("fd77::1")];
        let l = IgnoreList::new(&own, &["192.0.2.0/24".parse().unwrap()]);
        assert!(l.is_ignored(ip("127.0.0.1")));
        assert!(l.is_ignored(ip("127.3.4.5")));
        assert!(l.is_ignored(ip("::1")));
        assert!(l.is_ignored(ip("::ffff:127.0.0.1")));
        assert!(l.is_ignored(ip("10.77.0.1")));
        assert!(!l.is_ignored(ip("10.77.0.2")));
        assert!(l.is_ignored(ip("192.0.2.200")));
        assert!(!l.is_ignored(ip("192.0.3.1")));
        assert!(l.overlaps(ip("10.77.0.0"), 16));
        assert!(l.overlaps(ip("192.0.2.128"), 25));
        assert!(l.overlaps(ip("192.0.0.0"), 8));
        assert!(!l.overlaps(ip("192.0.3.0"), 24));
        assert!(!l.overlaps(ip("10.78.0.0"), 16));
        assert!(l.overlaps(ip("fd77::"), 16));
        assert!(!l.overlaps(ip("fd78::"), 16));
        // Our own address inside a /64 protects the whole prefix.
        assert!(l.covers_key(&Target::from_ip(ip("fd77::99"), 64)));
        assert!(!l.covers_key(&Target::from_ip(ip("fd78::99"), 64)));
    }

    #[test]
    fn cidr_parse_errors() {
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("host.example".parse::<Cidr>().is_err());
        assert!("2001:db8::/129".parse::<Cidr>().is_err());
        let c: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(c.contains(ip("2001:db8:ffff::1")));
        assert!(!c.contains(ip("2001:db9::1")));
    }

    #[test]
    fn ignoreip_of_every_length_protects_the_prefix_it_overlaps() {
        let key = Target::from_ip(ip("2001:db8:1:2::5"), 64);
        for p in 0..=128u8 {
            // A range around an address inside the /64: always overlaps.
            let inside: Cidr = format!("2001:db8:1:2::100/{p}").parse().unwrap();
            let l = IgnoreList::new(&[], &[inside]);
            assert!(l.covers_key(&key), "/{p} inside the /64");
            // One around the neighbouring /64 (differs in bit 63): only
            // ranges of /63 and shorter reach ours.
            let next: Cidr = format!("2001:db8:1:3::100/{p}").parse().unwrap();
            let l = IgnoreList::new(&[], &[next]);
            assert_eq!(l.covers_key(&key), p <= 63, "/{p} next door");
        }
        // Other aggregation levels too.
        let key48 = Target::from_ip(ip("2001:db8:1:2::5"), 48);
        let l = IgnoreList::new(&[], &["2001:db8:1:ffff::/120".parse().unwrap()]);
        assert!(l.covers_key(&key48));
        assert!(!l.covers_key(&Target::from_ip(ip("2001:db8:2::5"), 48)));
        // IPv4 ranges never protect an IPv6 prefix outside ::ffff:0:0/96.
        let l = IgnoreList::new(&[], &["0.0.0.0/0".parse().unwrap()]);
        assert!(!l.covers_key(&key));
    }
}
