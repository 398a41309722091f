//! LAPI decisions and what they mean for our trap sets. Pure: no I/O, so
//! every rule here is unit-tested.
//!
//! A decision of a configured type (`tarpit` by default) and scope `Ip` or
//! `Range` becomes a [`Trap`]:
//! * `Ip` IPv4 and `Range` /32 → that address (the host set);
//! * `Ip` IPv6 → its /64 (our IPv6 policy: one host owns a /64), as does an
//!   IPv6 `Range` of /64 or longer;
//! * any other `Range` → a network in the interval sets.
//!
//! Refused, and counted by reason: loopback, this machine's own addresses
//! and `ignoreip` (a range that merely overlaps them too), ranges wider than
//! /8 (IPv4) or /16 (IPv6) — a `/0` would trap the whole Internet —, values
//! that are no address, and decisions already over.

use super::duration;
use crate::firewall::{Net, Target};
use crate::watcher::IgnoreList;
use serde::Deserialize;
use std::net::IpAddr;
use std::time::Duration;

/// Largest stream body we read (100,000 decisions are ~20 MB).
pub const MAX_BODY: usize = 64 << 20;
/// Most decisions one stream answer may carry (new + deleted).
pub const MAX_DECISIONS: usize = 500_000;
/// Widest ranges we trap.
pub const MIN_PREFIX_V4: u8 = 8;
pub const MIN_PREFIX_V6: u8 = 16;

/// One decision as the stream sends it. Unknown fields are ignored (newer
/// LAPIs add some); every string is length-checked after parsing.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Decision {
    pub id: i64,
    #[serde(default)]
    pub origin: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub scope: String,
    #[serde(default)]
    pub value: String,
    #[serde(default)]
    pub duration: String,
    #[serde(default)]
    pub scenario: String,
}

/// `GET /v1/decisions/stream` answer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stream {
    pub new: Vec<Decision>,
    pub deleted: Vec<Decision>,
}

#[derive(Deserialize)]
struct RawStream {
    #[serde(default)]
    new: Option<Vec<Decision>>,
    #[serde(default)]
    deleted: Option<Vec<Decision>>,
}

/// Parses a stream body. Too big, not JSON, the wrong shape, too many
/// decisions: an error (the caller logs it and pulls again later).
pub fn parse_stream(body: &[u8]) -> Result<Stream, String> {
    if body.len() > MAX_BODY {
        return Err(format!(
            "stream answer of {} bytes is larger than {MAX_BODY}",
            body.len()
        ));
    }
    // An object, not a positional array (which serde would also take).
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err("stream answer is not a JSON object".into());
    }
    let raw: RawStream = serde_json::from_slice(body)
        .map_err(|e| format!("stream answer is not the expected JSON: {e}"))?;
    let s = Stream {
        new: raw.new.unwrap_or_default(),
        deleted: raw.deleted.unwrap_or_default(),
    };
    if s.new.len() + s.deleted.len() > MAX_DECISIONS {
        return Err(format!(
            "stream answer has {} decisions, more than {MAX_DECISIONS}",
            s.new.len() + s.deleted.len()
        ));
    }
    Ok(s)
}

/// What a decision traps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Trap {
    /// An IPv4 address or IPv6 /64: the host sets, like our own bans.
    Host(Target),
    /// A wider network: the interval sets.
    Net(Net),
}

impl std::fmt::Display for Trap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trap::Host(t) => t.fmt(f),
            Trap::Net(n) => n.fmt(f),
        }
    }
}

/// Why a decision is not applied. Fixed words: they are metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Not one of the configured types (not an error: just not ours).
    OtherType,
    /// Not from one of the configured origins.
    OtherOrigin,
    /// A scope other than Ip/Range (country, AS, username...).
    OtherScope,
    /// Not an address or network.
    Invalid,
    /// Loopback, our own address, `ignoreip`.
    Ignored,
    /// Wider than /8 (IPv4) or /16 (IPv6), including /0.
    TooWide,
    /// Its remaining time is zero or negative.
    Expired,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::OtherType => "other_type",
            Refusal::OtherOrigin => "other_origin",
            Refusal::OtherScope => "other_scope",
            Refusal::Invalid => "invalid",
            Refusal::Ignored => "ignored",
            Refusal::TooWide => "too_wide",
            Refusal::Expired => "expired",
        }
    }

    /// Refusals worth counting as refused (the others are simply not ours).
    pub fn is_refused(self) -> bool {
        !matches!(
            self,
            Refusal::OtherType | Refusal::OtherOrigin | Refusal::OtherScope
        )
    }
}

/// What we accept, from `[watch.crowdsec]`.
#[derive(Debug, Clone)]
pub struct Policy {
    pub types: Vec<String>,
    /// Empty: every origin.
    pub origins: Vec<String>,
    pub v6_prefix: u8,
}

/// A decision we apply: what it traps and for how long from now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub trap: Trap,
    pub remaining: Duration,
}

/// The network a value names: `1.2.3.4` (a /32), `10.0.0.0/8`, IPv6 alike.
fn net_of(value: &str, scope_is_range: bool) -> Result<Net, Refusal> {
    if value.len() > 64 {
        return Err(Refusal::Invalid);
    }
    match value.split_once('/') {
        None => value
            .parse::<IpAddr>()
            .map(Net::host)
            .map_err(|_| Refusal::Invalid),
        Some(_) if !scope_is_range => Err(Refusal::Invalid),
        Some((a, p)) => {
            let ip: IpAddr = a.parse().map_err(|_| Refusal::Invalid)?;
            let p: u8 = p.parse().map_err(|_| Refusal::Invalid)?;
            Net::new(ip, p).ok_or(Refusal::Invalid)
        }
    }
}

/// Maps a decision (type, origin, scope, value, duration) onto a trap, or
/// says why not. `ignore` holds loopback, own addresses and `ignoreip`.
pub fn accept(d: &Decision, p: &Policy, ignore: &IgnoreList) -> Result<Accepted, Refusal> {
    if !p.types.iter().any(|t| t == &d.kind) {
        return Err(Refusal::OtherType);
    }
    if !p.origins.is_empty() && !p.origins.iter().any(|o| o == &d.origin) {
        return Err(Refusal::OtherOrigin);
    }
    let range = match d.scope.as_str() {
        "Ip" | "ip" => false,
        "Range" | "range" => true,
        _ => return Err(Refusal::OtherScope),
    };
    let net = net_of(d.value.trim(), range)?;
    let dur = duration::parse(&d.duration).map_err(|_| Refusal::Invalid)?;
    if dur.negative || dur.abs.is_zero() {
        return Err(Refusal::Expired);
    }
    let trap = trap_of(net, p.v6_prefix)?;
    let blocked = match trap {
        Trap::Host(t) => ignore.covers_key(&t),
        Trap::Net(n) => {
            let (ip, len) = n.parts();
            ignore.overlaps(ip, len)
        }
    };
    if blocked {
        return Err(Refusal::Ignored);
    }
    Ok(Accepted {
        trap,
        remaining: dur.abs,
    })
}

/// The trap for a network: hosts (IPv4 /32, IPv6 at our prefix or longer)
/// go to the host sets, wider networks to the interval sets.
pub fn trap_of(net: Net, v6_prefix: u8) -> Result<Trap, Refusal> {
    let (ip, len) = net.parts();
    match ip {
        IpAddr::V4(a) if len == 32 => Ok(Trap::Host(Target::V4(a))),
        IpAddr::V4(_) if len < MIN_PREFIX_V4 => Err(Refusal::TooWide),
        IpAddr::V4(_) => Ok(Trap::Net(net)),
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return if len == 128 {
                    Ok(Trap::Host(Target::V4(v4)))
                } else {
                    Err(Refusal::Invalid)
                };
            }
            if len >= v6_prefix {
                Ok(Trap::Host(Target::from_ip(ip, v6_prefix)))
            } else if len < MIN_PREFIX_V6 {
                Err(Refusal::TooWide)
            } else {
                Ok(Trap::Net(net))
            }
        }
    }
}

/// True when `d` is one of our own pushes coming back: scenario
/// `tarpit/<jail>` for a host we hold a ban of that jail for.
pub fn is_own(d: &Decision, own_jail: Option<&str>) -> bool {
    match (d.scenario.strip_prefix("tarpit/"), own_jail) {
        (Some(j), Some(o)) => j == o,
        _ => false,
    }
}

/// The origin as a metric label: a fixed word, never free text from LAPI.
pub fn origin_label(origin: &str) -> &'static str {
    match origin {
        "crowdsec" => "crowdsec",
        "cscli" => "cscli",
        "CAPI" => "capi",
        "lists" => "lists",
        "console" => "console",
        "cscli-import" => "cscli",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(kind: &str, scope: &str, value: &str, duration: &str) -> Decision {
        Decision {
            id: 1,
            origin: "cscli".into(),
            kind: kind.into(),
            scope: scope.into(),
            value: value.into(),
            duration: duration.into(),
            scenario: "manual".into(),
        }
    }

    fn policy() -> Policy {
        Policy {
            types: vec!["tarpit".into()],
            origins: vec![],
            v6_prefix: 64,
        }
    }

    fn ignore() -> IgnoreList {
        IgnoreList::new(
            &["10.77.0.1".parse().unwrap(), "fd77::1".parse().unwrap()],
            &["192.0.2.0/24".parse().unwrap()],
        )
    }

    fn ok(d: &Decision) -> Accepted {
        accept(d, &policy(), &ignore()).unwrap()
    }

    fn no(d: &Decision) -> Refusal {
        accept(d, &policy(), &ignore()).unwrap_err()
    }

    #[test]
    fn hosts_ranges_and_the_v6_policy() {
        let a = ok(&dec("tarpit", "Ip", "10.77.1.2", "1h59m58.8s"));
        assert_eq!(a.trap, Trap::Host("10.77.1.2".parse().unwrap()));
        assert_eq!(a.remaining, Duration::from_millis(7_198_800));
        let a = ok(&dec("tarpit", "Ip", "fd77:5::99", "1h"));
        assert_eq!(a.trap, Trap::Host("fd77:5::/64".parse().unwrap()));
        let a = ok(&dec("tarpit", "Range", "10.78.0.0/16", "4h"));
        assert_eq!(a.trap.to_string(), "10.78.0.0/16");
        assert!(matches!(a.trap, Trap::Net(_)));
        let a = ok(&dec("tarpit", "Range", "10.78.0.9/32", "4h"));
        assert_eq!(a.trap, Trap::Host("10.78.0.9".parse().unwrap()));
        // An IPv6 range inside one /64 traps the /64; a wider one is a range.
        let a = ok(&dec("tarpit", "Range", "fd77:9:0:1:8000::/65", "4h"));
        assert_eq!(a.trap, Trap::Host("fd77:9:0:1::/64".parse().unwrap()));
        let a = ok(&dec("tarpit", "Range", "fd77:9::/48", "4h"));
        assert_eq!(a.trap.to_string(), "fd77:9::/48");
        // Host bits in a range are cleared.
        let a = ok(&dec("tarpit", "Range", "10.78.3.4/16", "4h"));
        assert_eq!(a.trap.to_string(), "10.78.0.0/16");
    }

    #[test]
    fn types_origins_and_scopes() {
        assert_eq!(no(&dec("ban", "Ip", "10.77.1.2", "1h")), Refusal::OtherType);
        let mut p = policy();
        p.types.push("ban".into());
        assert!(accept(&dec("ban", "Ip", "10.77.1.2", "1h"), &p, &ignore()).is_ok());
        p.origins = vec!["crowdsec".into()];
        assert_eq!(
            accept(&dec("ban", "Ip", "10.77.1.2", "1h"), &p, &ignore()).unwrap_err(),
            Refusal::OtherOrigin
        );
        assert_eq!(
            no(&dec("tarpit", "Country", "FR", "1h")),
            Refusal::OtherScope
        );
        assert!(!Refusal::OtherScope.is_refused());
        assert!(Refusal::Ignored.is_refused());
    }

    #[test]
    fn addresses_we_never_trap() {
        for v in ["127.0.0.1", "10.77.0.1", "192.0.2.9", "::1", "fd77::5"] {
            assert_eq!(no(&dec("tarpit", "Ip", v, "1h")), Refusal::Ignored, "{v}");
        }
        // A range that merely contains one of them.
        for v in ["10.77.0.0/24", "192.0.0.0/16", "127.0.0.0/8", "fd77::/48"] {
            assert_eq!(
                no(&dec("tarpit", "Range", v, "1h")),
                Refusal::Ignored,
                "{v}"
            );
        }
        for v in ["0.0.0.0/0", "10.0.0.0/7", "::/0", "fd00::/8"] {
            assert_eq!(
                no(&dec("tarpit", "Range", v, "1h")),
                Refusal::TooWide,
                "{v}"
            );
        }
    }

    #[test]
    fn bad_values_and_durations() {
        for v in [
            "",
            "x",
            "10.0.0.1/33",
            "10.0.0.1/x",
            "fd77::/129",
            "1.2.3.4.5",
        ] {
            assert_eq!(
                no(&dec("tarpit", "Range", v, "1h")),
                Refusal::Invalid,
                "{v}"
            );
        }
        assert_eq!(
            no(&dec("tarpit", "Ip", "10.1.0.0/16", "1h")),
            Refusal::Invalid,
            "an Ip with a prefix"
        );
        assert_eq!(
            no(&dec("tarpit", "Ip", &"1".repeat(5000), "1h")),
            Refusal::Invalid
        );
        assert_eq!(no(&dec("tarpit", "Ip", "10.1.2.3", "7d")), Refusal::Invalid);
        assert_eq!(
            no(&dec("tarpit", "Ip", "10.1.2.3", "-3ms")),
            Refusal::Expired
        );
        assert_eq!(no(&dec("tarpit", "Ip", "10.1.2.3", "0s")), Refusal::Expired);
    }

    #[test]
    fn stream_bodies() {
        let s = parse_stream(br#"{"deleted":null,"new":null}"#).unwrap();
        assert_eq!(s, Stream::default());
        let s = parse_stream(
            br#"{"deleted":[{"duration":"-9.5ms","id":1,"origin":"cscli","scenario":"m","scope":"Ip","type":"tarpit","value":"10.77.1.2"}],
                "new":[{"duration":"3h","id":2,"origin":"crowdsec","scenario":"tarpit/x","scope":"Range","type":"tarpit","value":"10.78.0.0/16","until":"later"}]}"#,
        )
        .unwrap();
        assert_eq!((s.new.len(), s.deleted.len()), (1, 1));
        assert_eq!(s.new[0].id, 2);
        for bad in [
            &b""[..],
            b"{",
            b"[]",
            b"null",
            br#"{"new":[{"id":"x"}]}"#,
            br#"{"new":{}}"#,
            b"\xff\xfe",
        ] {
            assert!(
                parse_stream(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let huge = vec![b' '; MAX_BODY + 1];
        assert!(parse_stream(&huge).unwrap_err().contains("larger"));
    }

    #[test]
    fn own_decisions_and_origin_labels() {
        let mut d = dec("tarpit", "Ip", "10.77.1.2", "1h");
        d.scenario = "tarpit/multi-ban".into();
        assert!(is_own(&d, Some("multi-ban")));
        assert!(!is_own(&d, Some("sshd")));
        assert!(!is_own(&d, None));
        assert_eq!(origin_label("CAPI"), "capi");
        assert_eq!(origin_label("evil\n{label}"), "other");
    }
}
