//! The text of nft batches. Pure functions, so what we send to the kernel is
//! unit-tested without root.
//!
//! Names from the config are validated as plain identifiers before they are
//! pasted into a batch: nft has no quoting for table/set names, so this check
//! is what keeps a config value from injecting nft syntax.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::target::{mask_v6, v6_mask, Ban, Target};
use super::{FwError, NftConfig, TrapMode};

/// The chain we own inside our table.
pub const CHAIN: &str = "prerouting";
/// The chain we own in stateless mode.
pub use crate::firewall::stateless::CHAIN as STATELESS_CHAIN;

/// With [`NftConfig::guard_port`]: the filter chain that drops direct
/// connections to the tarpit's port from hosts not in the sets. It runs
/// before the redirect (whose packets still carry their original port here).
pub const GUARD_CHAIN: &str = "guard";

/// Whether `cfg` wants the guard chain (redirect mode only: the stateless
/// engine listens on no port).
pub fn guards(cfg: &NftConfig) -> bool {
    cfg.guard_port && matches!(cfg.mode, TrapMode::Redirect)
}

/// The chain [`ensure_commands`] maintains for `cfg`'s mode.
pub fn chain_of(cfg: &NftConfig) -> &'static str {
    match cfg.mode {
        TrapMode::Redirect => CHAIN,
        TrapMode::Stateless { .. } => STATELESS_CHAIN,
    }
}

/// Longest element timeout we ask for. nft 1.0.x rejects values somewhere
/// above ~50 M seconds ("value too large"); a year is far beyond any sane ban
/// and the watcher re-adds bans on restore anyway.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// Longest accepted table/set name (the kernel allows 255 bytes; nobody needs
/// that, and short names keep error messages readable).
const MAX_NAME: usize = 64;

/// Checks that `name` is `[A-Za-z_][A-Za-z0-9_]*` and not too long. `what`
/// names the config key in the error.
pub fn validate_name(what: &str, name: &str) -> Result<(), FwError> {
    let bad = |why: &str| {
        Err(FwError::Config(format!(
            "{what} {name:?} {why}: use letters, digits and '_' only, starting with a letter or '_', at most {MAX_NAME} characters"
        )))
    };
    let mut chars = name.chars();
    match chars.next() {
        None => return bad("is empty"),
        Some(c) if !(c.is_ascii_alphabetic() || c == '_') => {
            return bad("does not start with a letter or '_'")
        }
        Some(_) => {}
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return bad("contains a character other than a letter, digit or '_'");
    }
    if name.len() > MAX_NAME {
        return bad("is too long");
    }
    Ok(())
}

/// Validates everything in `cfg` that ends up in a batch.
pub fn validate(cfg: &NftConfig) -> Result<(), FwError> {
    validate_name("table name", &cfg.family_table)?;
    validate_name("IPv4 set name", &cfg.set4)?;
    validate_name("IPv6 set name", &cfg.set6)?;
    if cfg.set4 == cfg.set6 {
        return Err(FwError::Config(format!(
            "the IPv4 and IPv6 sets must have different names (both are {:?})",
            cfg.set4
        )));
    }
    if cfg.range_sets {
        let (n4, n6) = super::net::set_names(cfg);
        validate_name("IPv4 range set name", &n4)?;
        validate_name("IPv6 range set name", &n6)?;
    }
    if cfg.port == 0 {
        return Err(FwError::Config("redirect port must not be 0".into()));
    }
    if !(1..=128).contains(&cfg.v6_prefix) {
        return Err(FwError::Config(format!(
            "IPv6 prefix length {} is outside 1..=128",
            cfg.v6_prefix
        )));
    }
    Ok(())
}

/// Element timeout in whole seconds: rounded up (a 1.2 s ban lasts 2 s, never
/// 1 s), at least 1 s, at most [`MAX_TIMEOUT`].
pub fn timeout_secs(d: Duration) -> u64 {
    let secs = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
    secs.clamp(1, MAX_TIMEOUT.as_secs())
}

/// The set element text for `target` (and whether it goes to the IPv4 set).
///
/// IPv6 networks are stored as their network address: the rule masks the
/// packet's source to `v6_prefix` bits before the lookup, so a plain hash set
/// does the /64 matching. (An interval set could hold real prefixes, but
/// nft 1.0.x needs ~10 s to refresh 5,000 interval elements in one batch, and
/// an interval set refuses overlapping elements, so one host banned both per
/// address and per /64 would fail a whole batch.) A network of another length
/// is re-masked to `v6_prefix`, the set's granularity: failing instead would
/// fail every other ban in the same batch (one odd stored row must not stop a
/// restore of 10,000).
fn element(target: &Target, v6_prefix: u8) -> (bool, String) {
    match target {
        Target::V4(a) => (true, a.to_string()),
        Target::V6Net(a, p) => {
            if *p < v6_prefix {
                tracing::warn!(
                    target_net = %target,
                    "IPv6 set holds /{v6_prefix} networks; trapping the /{v6_prefix} at the start of this /{p} only"
                );
            }
            (false, mask_v6(*a, v6_prefix).to_string())
        }
    }
}

/// The match expressions (without action) that select packets from trapped
/// sources: `ip saddr @trap4` and `ip6 saddr & <mask> @trap6` (no mask at
/// /128). Other users of the sets (the stateless engine's chain, a shipped
/// ruleset) must match the same way, or IPv6 networks banned by the watcher
/// escape them: a plain `ip6 saddr @trap6` never matches a network element.
pub fn source_matches(cfg: &NftConfig) -> Result<Vec<String>, FwError> {
    validate(cfg)?;
    let v6 = if cfg.v6_prefix < 128 {
        format!("ip6 saddr & {} @{}", v6_mask(cfg.v6_prefix), cfg.set6)
    } else {
        format!("ip6 saddr @{}", cfg.set6)
    };
    let mut m = vec![format!("ip saddr @{}", cfg.set4), v6];
    if cfg.range_sets {
        let (n4, n6) = super::net::set_names(cfg);
        m.push(format!("ip saddr @{n4}"));
        m.push(format!("ip6 saddr @{n6}"));
    }
    Ok(m)
}

/// `{ 22, 2323 }` for the decoy rule, `None` when there are none.
fn decoy_set(ports: &[u16]) -> Option<String> {
    if ports.is_empty() {
        return None;
    }
    let mut ports = ports.to_vec();
    ports.sort_unstable();
    ports.dedup();
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    Some(format!("{{ {} }}", list.join(", ")))
}

/// `add table` and the two `add set` commands: the canonical definitions of
/// the sets, for anyone who needs them to exist (`flags timeout`, no
/// `interval`; nft refuses `add set` when a set of that name exists with
/// other flags).
pub fn set_commands(cfg: &NftConfig, out: &mut String) -> Result<(), FwError> {
    validate(cfg)?;
    let t = &cfg.family_table;
    let _ = writeln!(out, "add table inet {t}");
    let _ = writeln!(
        out,
        "add set inet {t} {} {{ type ipv4_addr; flags timeout; }}",
        cfg.set4
    );
    let _ = writeln!(
        out,
        "add set inet {t} {} {{ type ipv6_addr; flags timeout; }}",
        cfg.set6
    );
    if cfg.range_sets {
        // Networks (CrowdSec ranges): interval sets, see `super::net`.
        let (n4, n6) = super::net::set_names(cfg);
        let _ = writeln!(
            out,
            "add set inet {t} {n4} {{ type ipv4_addr; flags interval, timeout; }}"
        );
        let _ = writeln!(
            out,
            "add set inet {t} {n6} {{ type ipv6_addr; flags interval, timeout; }}"
        );
    }
    Ok(())
}

/// Commands that create our table, sets and chain if missing and (re)write
/// the chain's rules. Re-running them changes nothing but the rules, which are
/// replaced atomically (`flush chain` + `add rule` in the same transaction),
/// and existing set elements survive.
pub fn ensure_commands(cfg: &NftConfig, out: &mut String) -> Result<(), FwError> {
    set_commands(cfg, out)?;
    let t = &cfg.family_table;
    let p = cfg.port;
    let nat = format!(
        "add chain inet {t} {CHAIN} {{ type nat hook prerouting priority dstnat - 10; policy accept; }}"
    );
    let raw = format!(
        "add chain inet {t} {STATELESS_CHAIN} {{ type filter hook prerouting priority raw; policy accept; }}"
    );
    let (mine, other, name, stale, action) = match cfg.mode {
        TrapMode::Redirect => (
            nat,
            raw,
            CHAIN,
            STATELESS_CHAIN,
            format!("redirect to :{p}"),
        ),
        TrapMode::Stateless { group } => (
            raw,
            nat,
            STATELESS_CHAIN,
            CHAIN,
            crate::firewall::stateless::log_drop(group),
        ),
    };
    let _ = writeln!(out, "{mine}");
    let _ = writeln!(out, "flush chain inet {t} {name}");
    for m in source_matches(cfg)? {
        let _ = writeln!(
            out,
            "add rule inet {t} {name} {m} meta l4proto tcp {action}"
        );
    }
    if let Some(ports) = decoy_set(&cfg.decoy_ports) {
        let _ = writeln!(
            out,
            "add rule inet {t} {name} fib daddr type local tcp dport {ports} {action}"
        );
    }
    let guard = format!(
        "add chain inet {t} {GUARD_CHAIN} {{ type filter hook prerouting priority dstnat - 20; policy accept; }}"
    );
    let _ = writeln!(out, "{guard}");
    let _ = writeln!(out, "flush chain inet {t} {GUARD_CHAIN}");
    if guards(cfg) {
        // Trapped hosts and local clients go on; anyone else knocking on
        // the tarpit's own port directly is dropped.
        let _ = writeln!(out, "add rule inet {t} {GUARD_CHAIN} iif lo return");
        for m in source_matches(cfg)? {
            let _ = writeln!(out, "add rule inet {t} {GUARD_CHAIN} {m} return");
        }
        let _ = writeln!(
            out,
            "add rule inet {t} {GUARD_CHAIN} fib daddr type local tcp dport {p} drop"
        );
    } else {
        let _ = writeln!(out, "delete chain inet {t} {GUARD_CHAIN}");
    }
    // The other mode's chain, left from before an engine switch, goes: a
    // trapped packet must meet exactly one treatment. (Added first so the
    // delete cannot fail on a chain that is not there.)
    let _ = writeln!(out, "{other}");
    let _ = writeln!(out, "flush chain inet {t} {stale}");
    let _ = writeln!(out, "delete chain inet {t} {stale}");
    Ok(())
}

/// Splits bans by set, merging duplicates (the longest timeout wins) and
/// sorting so batches are deterministic.
type BySet = (BTreeMap<String, u64>, BTreeMap<String, u64>);

fn group(cfg: &NftConfig, bans: &[Ban]) -> BySet {
    let mut v4 = BTreeMap::new();
    let mut v6 = BTreeMap::new();
    for b in bans {
        let (is4, e) = element(&b.target, cfg.v6_prefix);
        let secs = timeout_secs(b.timeout);
        let slot = if is4 { &mut v4 } else { &mut v6 };
        let cur = slot.entry(e).or_insert(secs);
        *cur = (*cur).max(secs);
    }
    (v4, v6)
}

/// Commands that put every ban into its set with its own timeout, replacing
/// the timeout of an element that is already there.
///
/// `add element` alone leaves an existing element's timeout untouched on
/// kernels before 6.x, so each set gets add (makes sure the element exists),
/// delete, add (with the new timeout) — one transaction, so the packet path
/// never sees the element missing.
pub fn ban_commands(cfg: &NftConfig, bans: &[Ban], out: &mut String) -> Result<(), FwError> {
    validate(cfg)?;
    let (v4, v6) = group(cfg, bans);
    for (set, elems) in [(&cfg.set4, &v4), (&cfg.set6, &v6)] {
        if elems.is_empty() {
            continue;
        }
        let with_timeout = elems
            .iter()
            .map(|(e, s)| format!("{e} timeout {s}s"))
            .collect::<Vec<_>>()
            .join(", ");
        let bare = elems
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let t = &cfg.family_table;
        let _ = writeln!(out, "add element inet {t} {set} {{ {with_timeout} }}");
        let _ = writeln!(out, "delete element inet {t} {set} {{ {bare} }}");
        let _ = writeln!(out, "add element inet {t} {set} {{ {with_timeout} }}");
    }
    Ok(())
}

/// Commands that remove the targets. nft 1.0.x has no "delete if present"
/// (`destroy` came in 1.0.8), so each element is first added, then deleted, in
/// one transaction: an absent element is not an error.
pub fn unban_commands(
    cfg: &NftConfig,
    targets: &[Target],
    out: &mut String,
) -> Result<(), FwError> {
    validate(cfg)?;
    let bans: Vec<Ban> = targets
        .iter()
        .map(|t| Ban {
            target: *t,
            timeout: Duration::from_secs(1),
        })
        .collect();
    let (v4, v6) = group(cfg, &bans);
    for (set, elems) in [(&cfg.set4, &v4), (&cfg.set6, &v6)] {
        if elems.is_empty() {
            continue;
        }
        let bare = elems
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let t = &cfg.family_table;
        // The temporary element gets a short timeout so that, whatever
        // happens, it can never become a permanent ban.
        let tmp = elems
            .keys()
            .map(|e| format!("{e} timeout 1s"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(out, "add element inet {t} {set} {{ {tmp} }}");
        let _ = writeln!(out, "delete element inet {t} {set} {{ {bare} }}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn cfg() -> NftConfig {
        NftConfig::default()
    }

    fn ban(ip: &str, secs: u64) -> Ban {
        Ban {
            target: Target::from_ip(ip.parse::<IpAddr>().unwrap(), 64),
            timeout: Duration::from_secs(secs),
        }
    }

    #[test]
    fn ensure_batch_is_exactly_the_documented_ruleset() {
        let mut s = String::new();
        ensure_commands(&cfg(), &mut s).unwrap();
        assert_eq!(
            s,
            "add table inet tarpit\n\
             add set inet tarpit trap4 { type ipv4_addr; flags timeout; }\n\
             add set inet tarpit trap6 { type ipv6_addr; flags timeout; }\n\
             add chain inet tarpit prerouting { type nat hook prerouting priority dstnat - 10; policy accept; }\n\
             flush chain inet tarpit prerouting\n\
             add rule inet tarpit prerouting ip saddr @trap4 meta l4proto tcp redirect to :2222\n\
             add rule inet tarpit prerouting ip6 saddr & ffff:ffff:ffff:ffff:: @trap6 meta l4proto tcp redirect to :2222\n\
             add chain inet tarpit guard { type filter hook prerouting priority dstnat - 20; policy accept; }\n\
             flush chain inet tarpit guard\n\
             delete chain inet tarpit guard\n\
             add chain inet tarpit stateless_raw { type filter hook prerouting priority raw; policy accept; }\n\
             flush chain inet tarpit stateless_raw\n\
             delete chain inet tarpit stateless_raw\n"
        );
    }

    #[test]
    fn guard_port_drops_direct_connections_from_hosts_not_in_the_sets() {
        let c = NftConfig {
            guard_port: true,
            ..cfg()
        };
        let mut s = String::new();
        ensure_commands(&c, &mut s).unwrap();
        assert!(s.contains(
            "add chain inet tarpit guard { type filter hook prerouting priority dstnat - 20; policy accept; }\n\
             flush chain inet tarpit guard\n\
             add rule inet tarpit guard iif lo return\n\
             add rule inet tarpit guard ip saddr @trap4 return\n\
             add rule inet tarpit guard ip6 saddr & ffff:ffff:ffff:ffff:: @trap6 return\n\
             add rule inet tarpit guard fib daddr type local tcp dport 2222 drop\n\
             add chain inet tarpit stateless_raw"
        ), "{s}");
        assert!(!s.contains("delete chain inet tarpit guard"), "{s}");
        // The stateless engine listens on no port: nothing to guard.
        let st = NftConfig {
            mode: TrapMode::Stateless { group: 7 },
            ..c
        };
        let mut s = String::new();
        ensure_commands(&st, &mut s).unwrap();
        assert!(s.contains("delete chain inet tarpit guard\n"), "{s}");
        assert!(!s.contains("dport 2222 drop"), "{s}");
    }

    #[test]
    fn stateless_mode_logs_and_drops_at_raw_priority_and_removes_the_redirect() {
        let c = NftConfig {
            mode: TrapMode::Stateless { group: 9 },
            ..cfg()
        };
        let mut s = String::new();
        ensure_commands(&c, &mut s).unwrap();
        assert_eq!(chain_of(&c), "stateless_raw");
        assert!(s.contains(
            "add chain inet tarpit stateless_raw { type filter hook prerouting priority raw; policy accept; }\n\
             flush chain inet tarpit stateless_raw\n\
             add rule inet tarpit stateless_raw ip saddr @trap4 meta l4proto tcp log group 9 snaplen 128 drop\n\
             add rule inet tarpit stateless_raw ip6 saddr & ffff:ffff:ffff:ffff:: @trap6 meta l4proto tcp log group 9 snaplen 128 drop\n"
        ), "{s}");
        assert!(
            s.ends_with(
                "flush chain inet tarpit prerouting\ndelete chain inet tarpit prerouting\n"
            ),
            "{s}"
        );
        assert!(!s.contains("redirect"), "{s}");
    }

    #[test]
    fn decoy_ports_are_trapped_for_local_destinations_in_either_mode() {
        let c = NftConfig {
            decoy_ports: vec![2323, 23, 23],
            ..cfg()
        };
        let mut s = String::new();
        ensure_commands(&c, &mut s).unwrap();
        assert!(s.contains(
            "add rule inet tarpit prerouting fib daddr type local tcp dport { 23, 2323 } redirect to :2222\n"
        ), "{s}");
        let c = NftConfig {
            mode: TrapMode::Stateless { group: 9 },
            ..c
        };
        let mut s = String::new();
        ensure_commands(&c, &mut s).unwrap();
        assert!(s.contains(
            "add rule inet tarpit stateless_raw fib daddr type local tcp dport { 23, 2323 } log group 9 snaplen 128 drop\n"
        ), "{s}");
        let mut s = String::new();
        ensure_commands(&cfg(), &mut s).unwrap();
        assert!(!s.contains("dport"), "no decoys, no decoy rule: {s}");
    }

    #[test]
    fn ensure_uses_configured_names_port_and_prefix() {
        let c = NftConfig {
            family_table: "tp_x".into(),
            set4: "a4".into(),
            set6: "_b6".into(),
            port: 65000,
            v6_prefix: 128,
            ..NftConfig::default()
        };
        let mut s = String::new();
        ensure_commands(&c, &mut s).unwrap();
        assert!(s.contains("add set inet tp_x a4 {"));
        assert!(s.contains("ip6 saddr @_b6 meta l4proto tcp redirect to :65000\n"));
        assert_eq!(s.matches("add rule").count(), 2, "one IPv6 rule at /128");
        assert!(s.contains("ip saddr @a4 meta l4proto tcp redirect to :65000\n"));
        let c = NftConfig {
            v6_prefix: 48,
            ..NftConfig::default()
        };
        let mut s = String::new();
        ensure_commands(&c, &mut s).unwrap();
        assert!(s.contains("ip6 saddr & ffff:ffff:ffff:: @trap6"));
    }

    #[test]
    fn names_that_could_inject_nft_syntax_are_rejected() {
        for bad in [
            "",
            "tarpit; flush ruleset",
            "a b",
            "a{",
            "a\"",
            "a\nflush ruleset",
            "4trap",
            "-x",
            "ä",
            "a-b",
            "a.b",
            "a/b",
            "a$b",
            &"x".repeat(65),
        ] {
            for which in 0..3 {
                let mut c = cfg();
                match which {
                    0 => c.family_table = bad.to_string(),
                    1 => c.set4 = bad.to_string(),
                    _ => c.set6 = bad.to_string(),
                }
                let mut s = String::new();
                let e = ensure_commands(&c, &mut s).unwrap_err();
                assert!(matches!(e, FwError::Config(_)), "{bad:?}: {e}");
                assert!(s.is_empty());
                assert!(ban_commands(&c, &[ban("10.0.0.1", 5)], &mut s).is_err());
                assert!(unban_commands(&c, &[], &mut s).is_err());
            }
        }
        for good in ["tarpit", "T_1", "_x", &"x".repeat(64)] {
            assert!(validate_name("t", good).is_ok(), "{good}");
        }
        let msg = validate_name("table name", "a b").unwrap_err().to_string();
        assert!(msg.contains("table name \"a b\""), "{msg}");
    }

    #[test]
    fn other_bad_config_is_rejected() {
        let mut c = cfg();
        c.port = 0;
        assert!(validate(&c).is_err());
        let mut c = cfg();
        c.v6_prefix = 0;
        assert!(validate(&c).is_err());
        c.v6_prefix = 129;
        assert!(validate(&c).is_err());
        let mut c = cfg();
        c.set6 = c.set4.clone();
        assert!(validate(&c).is_err());
    }

    #[test]
    fn ban_refreshes_with_add_delete_add_per_set() {
        let mut s = String::new();
        ban_commands(
            &cfg(),
            &[
                ban("10.77.0.2", 60),
                ban("2001:db8:1:2::99", 3600),
                ban("10.77.0.1", 3600),
            ],
            &mut s,
        )
        .unwrap();
        assert_eq!(
            s,
            "add element inet tarpit trap4 { 10.77.0.1 timeout 3600s, 10.77.0.2 timeout 60s }\n\
             delete element inet tarpit trap4 { 10.77.0.1, 10.77.0.2 }\n\
             add element inet tarpit trap4 { 10.77.0.1 timeout 3600s, 10.77.0.2 timeout 60s }\n\
             add element inet tarpit trap6 { 2001:db8:1:2:: timeout 3600s }\n\
             delete element inet tarpit trap6 { 2001:db8:1:2:: }\n\
             add element inet tarpit trap6 { 2001:db8:1:2:: timeout 3600s }\n"
        );
    }

    #[test]
    fn duplicates_merge_keeping_the_longest_timeout() {
        let mut s = String::new();
        ban_commands(
            &cfg(),
            &[
                ban("2001:db8::1", 10),
                ban("2001:db8::2", 30),
                ban("::ffff:10.0.0.9", 5),
                ban("10.0.0.9", 7),
            ],
            &mut s,
        )
        .unwrap();
        assert!(s.contains("trap6 { 2001:db8:: timeout 30s }"), "{s}");
        assert!(s.contains("trap4 { 10.0.0.9 timeout 7s }"), "{s}");
        assert_eq!(s.lines().count(), 6);
    }

    #[test]
    fn empty_ban_list_writes_nothing() {
        let mut s = String::new();
        ban_commands(&cfg(), &[], &mut s).unwrap();
        unban_commands(&cfg(), &[], &mut s).unwrap();
        assert!(s.is_empty());
    }

    #[test]
    fn timeouts_round_up_with_floor_and_cap() {
        assert_eq!(timeout_secs(Duration::ZERO), 1);
        assert_eq!(timeout_secs(Duration::from_millis(1)), 1);
        assert_eq!(timeout_secs(Duration::from_millis(1200)), 2);
        assert_eq!(timeout_secs(Duration::from_secs(604800)), 604800);
        assert_eq!(timeout_secs(Duration::MAX), MAX_TIMEOUT.as_secs());
    }

    #[test]
    fn v6_targets_go_to_the_set_granularity() {
        let b = |t: &str, p: u8| Ban {
            target: Target::V6Net(t.parse().unwrap(), p),
            timeout: Duration::from_secs(9),
        };
        let mut s = String::new();
        ban_commands(
            &cfg(),
            &[
                b("2001:db8:1:2:3::", 80),
                b("2001:db8:9::", 48),
                b("2001:db8::5", 128),
            ],
            &mut s,
        )
        .unwrap();
        assert!(
            s.contains("trap6 { 2001:db8:1:2:: timeout 9s, 2001:db8:9:: timeout 9s, 2001:db8:: timeout 9s }"),
            "{s}"
        );
    }

    #[test]
    fn source_matches_mask_ipv6_to_the_prefix() {
        assert_eq!(
            source_matches(&cfg()).unwrap(),
            vec![
                "ip saddr @trap4".to_string(),
                "ip6 saddr & ffff:ffff:ffff:ffff:: @trap6".to_string(),
            ]
        );
        let c = NftConfig {
            v6_prefix: 128,
            ..cfg()
        };
        assert_eq!(source_matches(&c).unwrap()[1], "ip6 saddr @trap6");
        let c = NftConfig {
            set4: "x y".into(),
            ..cfg()
        };
        assert!(source_matches(&c).is_err());
    }

    #[test]
    fn unban_adds_a_short_lived_element_then_deletes_it() {
        let mut s = String::new();
        let t = Target::V4("10.77.0.5".parse().unwrap());
        unban_commands(&cfg(), &[t], &mut s).unwrap();
        assert_eq!(
            s,
            "add element inet tarpit trap4 { 10.77.0.5 timeout 1s }\n\
             delete element inet tarpit trap4 { 10.77.0.5 }\n"
        );
    }
}
