//! What gets trapped: one IPv4 address, or one IPv6 network (a /64 by
//! default, because a single IPv6 host owns a whole /64 and can hop
//! addresses inside it at will). The key itself is [`crate::host::Host`];
//! here it is called a `Target`, and a [`Ban`] adds how long it is kept.

use std::time::Duration;

/// A trapped host: an IPv4 address or an IPv6 network (address masked to
/// its prefix). The one host key of [`crate::host`].
pub use crate::host::Host as Target;
pub use crate::host::HostParseError as TargetParseError;
pub use crate::host::{mask_v6, v6_mask};

/// One element to put into a trap set, with the time the kernel keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ban {
    pub target: Target,
    pub timeout: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv6Addr};

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
