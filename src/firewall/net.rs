//! Networks wider than one host (CrowdSec `Range` decisions): they live in
//! two interval sets next to the host sets, `<set4>_net` and `<set6>_net`,
//! with their own element timeouts.
//!
//! An interval set refuses overlapping elements, so what goes in is first
//! reduced to the outermost networks ([`outermost`]: CIDR networks either
//! nest or are disjoint). The sets are always rewritten whole (`flush set` +
//! `add element`, one transaction): the watcher's database, not the kernel,
//! knows which decision covers what.

use super::target::mask_v6;
use super::{FwError, NftConfig};
use std::fmt;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

/// A network: address with host bits cleared and its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Net {
    V4(Ipv4Addr, u8),
    V6(Ipv6Addr, u8),
}

impl Net {
    /// `ip/len`, host bits cleared; `None` when `len` is too long.
    pub fn new(ip: IpAddr, len: u8) -> Option<Net> {
        match ip {
            IpAddr::V4(a) if len <= 32 => {
                let m = if len == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(len))
                };
                Some(Net::V4(Ipv4Addr::from(u32::from(a) & m), len))
            }
            IpAddr::V6(a) if len <= 128 => Some(Net::V6(mask_v6(a, len), len)),
            _ => None,
        }
    }

    /// The single address `ip` (/32 or /128).
    pub fn host(ip: IpAddr) -> Net {
        match ip {
            IpAddr::V4(a) => Net::V4(a, 32),
            IpAddr::V6(a) => Net::V6(a, 128),
        }
    }

    pub fn parts(&self) -> (IpAddr, u8) {
        match *self {
            Net::V4(a, l) => (IpAddr::V4(a), l),
            Net::V6(a, l) => (IpAddr::V6(a), l),
        }
    }

    /// More than one address.
    pub fn is_range(&self) -> bool {
        match self {
            Net::V4(_, l) => *l < 32,
            Net::V6(_, l) => *l < 128,
        }
    }

    /// True when `other` lies inside `self` (or is `self`).
    pub fn contains(&self, other: &Net) -> bool {
        match (self, other) {
            (Net::V4(a, l), Net::V4(b, m)) => {
                m >= l && Net::new(IpAddr::V4(*b), *l) == Some(Net::V4(*a, *l))
            }
            (Net::V6(a, l), Net::V6(b, m)) => m >= l && mask_v6(*b, *l) == *a,
            _ => false,
        }
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (ip, l) = self.parts();
        write!(f, "{ip}/{l}")
    }
}

impl FromStr for Net {
    type Err = String;
    /// `10.0.0.0/8`, `2001:db8::/32` (host bits are cleared).
    fn from_str(s: &str) -> Result<Net, String> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a network"))?;
        let ip: IpAddr = a.parse().map_err(|_| format!("{s:?} is not a network"))?;
        let l: u8 = l.parse().map_err(|_| format!("{s:?}: bad prefix length"))?;
        Net::new(ip, l).ok_or_else(|| format!("{s:?}: bad prefix length"))
    }
}

impl Net {
    /// When the sets must be rewritten because a nested network outlives
    /// its cover (see [`outermost`]).
    pub fn outermost_refresh(nets: &[(Net, Duration)]) -> (usize, Option<Duration>) {
        let (top, r) = outermost(nets);
        (top.len(), r)
    }
}

/// The interval set names for `cfg`: `<set4>_net`, `<set6>_net`.
pub fn set_names(cfg: &NftConfig) -> (String, String) {
    (format!("{}_net", cfg.set4), format!("{}_net", cfg.set6))
}

/// The outermost networks of `nets`, each with the longest timeout of the
/// entries equal to it (a nested network is covered by its parent while the
/// parent lasts), plus the nested ones that outlive their cover: the caller
/// rewrites the sets when the earliest of those covers expires.
pub fn outermost(nets: &[(Net, Duration)]) -> (Vec<(Net, Duration)>, Option<Duration>) {
    let mut v: Vec<(Net, Duration)> = nets.to_vec();
    // Family, then address, then shorter prefix first: a parent precedes
    // everything inside it.
    v.sort_by(|a, b| {
        let (ia, la) = a.0.parts();
        let (ib, lb) = b.0.parts();
        (ia.is_ipv6(), ia, la).cmp(&(ib.is_ipv6(), ib, lb))
    });
    let mut out: Vec<(Net, Duration)> = Vec::new();
    let mut refresh: Option<Duration> = None;
    for (n, t) in v {
        match out.last_mut() {
            Some((p, pt)) if p.contains(&n) => {
                if *p == n {
                    *pt = (*pt).max(t);
                } else if t > *pt {
                    // Covered now, uncovered when the parent expires.
                    refresh = Some(refresh.map_or(*pt, |r| r.min(*pt)));
                }
            }
            _ => out.push((n, t)),
        }
    }
    (out, refresh)
}

/// `flush set` for both interval sets and `add element` with every network
/// and its timeout: one transaction that makes the sets exactly `nets`.
pub fn rewrite_commands(
    cfg: &NftConfig,
    nets: &[(Net, Duration)],
    out: &mut String,
) -> Result<(), FwError> {
    super::batch::validate(cfg)?;
    let (s4, s6) = set_names(cfg);
    let t = &cfg.family_table;
    let (top, _) = outermost(nets);
    for (set, v6) in [(&s4, false), (&s6, true)] {
        let _ = writeln!(out, "flush set inet {t} {set}");
        let elems: Vec<String> = top
            .iter()
            .filter(|(n, _)| matches!(n, Net::V6(..)) == v6)
            .map(|(n, d)| format!("{n} timeout {}s", super::timeout_secs(*d)))
            .collect();
        // nft takes long element lists fine, but keep lines readable.
        for chunk in elems.chunks(1000) {
            let _ = writeln!(out, "add element inet {t} {set} {{ {} }}", chunk.join(", "));
        }
    }
    Ok(())
}

impl super::Firewall {
    /// Makes the interval sets hold exactly `nets` (each with its own
    /// timeout), in one transaction. Needs `NftConfig::range_sets`.
    pub fn set_ranges(&self, nets: &[(Net, Duration)]) -> Result<(), FwError> {
        if !self.cfg.range_sets {
            return Err(FwError::Config(
                "range sets are not enabled for this firewall".into(),
            ));
        }
        let mut b = String::new();
        rewrite_commands(&self.cfg, nets, &mut b)?;
        self.apply(&b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Net {
        s.parse().unwrap()
    }

    #[test]
    fn parse_contains_and_display() {
        assert_eq!(n("10.78.3.4/16").to_string(), "10.78.0.0/16");
        assert_eq!(n("fd77:9::1/48").to_string(), "fd77:9::/48");
        assert!(n("10.0.0.0/8").contains(&n("10.78.0.0/16")));
        assert!(!n("10.78.0.0/16").contains(&n("10.0.0.0/8")));
        assert!(!n("10.0.0.0/8").contains(&n("fd77::/16")));
        assert!(n("0.0.0.0/0").contains(&n("1.2.3.4/32")));
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "x/8",
            "fd77::/129",
            "10.0.0.0/-1",
        ] {
            assert!(bad.parse::<Net>().is_err(), "{bad}");
        }
        assert!(!Net::host("10.0.0.1".parse().unwrap()).is_range());
    }

    #[test]
    fn overlaps_are_reduced_to_the_outermost() {
        let h = Duration::from_secs(3600);
        let (top, refresh) = outermost(&[
            (n("10.78.1.0/24"), h),
            (n("10.78.0.0/16"), h),
            (n("10.78.0.0/16"), 2 * h),
            (n("10.79.0.0/16"), h),
            (n("fd77:9::/48"), h),
            (n("fd77:9:0:100::/56"), 3 * h),
        ]);
        assert_eq!(
            top,
            vec![
                (n("10.78.0.0/16"), 2 * h),
                (n("10.79.0.0/16"), h),
                (n("fd77:9::/48"), h)
            ]
        );
        // The /56 outlives its /48: rewrite when the /48 is over.
        assert_eq!(refresh, Some(h));
    }

    #[test]
    fn rewrite_flushes_and_fills_both_sets() {
        let cfg = NftConfig {
            range_sets: true,
            ..NftConfig::default()
        };
        let mut s = String::new();
        rewrite_commands(
            &cfg,
            &[
                (n("10.78.0.0/16"), Duration::from_secs(60)),
                (n("10.78.5.0/24"), Duration::from_secs(30)),
            ],
            &mut s,
        )
        .unwrap();
        assert_eq!(
            s,
            "flush set inet tarpit trap4_net\n\
             add element inet tarpit trap4_net { 10.78.0.0/16 timeout 60s }\n\
             flush set inet tarpit trap6_net\n"
        );
    }
}
