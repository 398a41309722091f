//! The nftables rules of per-port policies (see `crate::engine::policy`)
//! that the socket engine cannot do itself, in our `inet` table next to the
//! trap chains, written by `tarpit serve` at start (it knows its listeners'
//! ports) before it drops privileges:
//!
//! * **window zero** — chain [`OUT_CHAIN`] (output hook, priority filter)
//!   rewrites the window of every segment we send from a listener port to
//!   0, as xt_TARPIT does. At that hook a redirected reply still carries the
//!   listener's port (un-NAT happens later, at postrouting), and conntrack
//!   knows the port the peer aimed at (`ct original proto-dst`), so one rule
//!   per policy port covers redirected and direct connections alike.
//! * **syn_delay** — chain [`IN_CHAIN`] (input hook, after the redirect, so
//!   only SYNs that would reach our listeners are delayed and a real service
//!   on the same port never is). One connect attempt is `address . port .
//!   sequence`: its retransmissions repeat the initial sequence number, a
//!   new attempt (even from the same port: medusa and ncrack retry that way)
//!   has another. An attempt's first SYN goes into `syn_try_wait` (timeout
//!   D) and `syn_try_seen` (timeout 2·D + 5 s), its address into `syn_addr`,
//!   and is dropped; while in `syn_try_wait`, its retransmissions are
//!   dropped too; once `syn_try_wait` has forgotten it but `syn_try_seen`
//!   has not — D after its first SYN — the next retransmission passes, the
//!   handshake completes and the address leaves `syn_addr`. Retransmissions
//!   back off exponentially, so the first one at or after D comes before
//!   2·D + 1 s.
//!
//!   Adaptive: a *new* attempt from an address in `syn_addr` — an attempt
//!   of it is still pending, or was abandoned within
//!   [`SYN_EXEMPT_SECS`](crate::engine::policy::SYN_EXEMPT_SECS) — is a
//!   client that gave up on the delayed handshake and retries or comes back
//!   (nmap's SYN scan retransmitting from a new port, then its `-sV`
//!   connects; a brute-force tool with a short connect timeout run again).
//!   Delaying it again would free it as DROP does; instead it passes at once
//!   and its address goes into `syn_fast` for as long, whose SYNs all pass:
//!   such a client meets the silent trap, never less.
//!
//!   A full set (more than [`SET_SIZE`] entries) lets SYNs through
//!   undelayed rather than dropping them for ever: an `add` to a full set
//!   ends the rule before its `drop`, so the first SYN's adds come last to
//!   `syn_try_wait` (the set that makes the retransmissions drop), and the
//!   exemption is added by a rule of its own before the one that passes.
//!
//! The first SYN of a delayed handshake is also copied to nflog group
//! [`SYN_LOG_GROUP`] (`log group`), so that `tarpit serve` can count the
//! seconds the client spent waiting (see `crate::engine::socket::synlog`).

use std::fmt::Write as _;

use super::{batch, FwError, NftConfig};
use crate::engine::policy::{Policies, SynMode, SYN_EXEMPT_SECS as FAST_SECS, SYN_LEARNED_SECS};

/// Output-hook chain (window zero).
pub const OUT_CHAIN: &str = "policy_out";
/// Input-hook chain (syn_delay).
pub const IN_CHAIN: &str = "policy_in";
/// Most clients in each syn_delay set.
pub const SET_SIZE: u32 = 262_144;
/// The nflog group the first SYN of a delayed handshake is logged to.
pub const SYN_LOG_GROUP: u16 = 7710;
/// The syn_delay sets and their keys (IPv4 and IPv6: attempts waiting,
/// attempts seen, addresses with an attempt pending or abandoned, exempt
/// addresses; learn mode: young connections, learned addresses).
pub const SETS: [(&str, &str); 12] = [
    (
        "syn_try_wait4",
        "typeof ip saddr . tcp sport . tcp sequence",
    ),
    (
        "syn_try_seen4",
        "typeof ip saddr . tcp sport . tcp sequence",
    ),
    ("syn_addr4", "type ipv4_addr"),
    ("syn_fast4", "type ipv4_addr"),
    (
        "syn_try_wait6",
        "typeof ip6 saddr . tcp sport . tcp sequence",
    ),
    (
        "syn_try_seen6",
        "typeof ip6 saddr . tcp sport . tcp sequence",
    ),
    ("syn_addr6", "type ipv6_addr"),
    ("syn_fast6", "type ipv6_addr"),
    ("syn_young4", "typeof ip saddr . tcp sport"),
    ("syn_learn4", "type ipv4_addr"),
    ("syn_young6", "typeof ip6 saddr . tcp sport"),
    ("syn_learn6", "type ipv6_addr"),
];
/// Sets of earlier versions (keyed by address and port only), no longer
/// written; removed with the others.
pub const OLD_SETS: [&str; 4] = ["syn_wait4", "syn_seen4", "syn_wait6", "syn_seen6"];

/// `{ 2222, 2223 }`
fn port_set(ports: &[u16]) -> String {
    let mut p = ports.to_vec();
    p.sort_unstable();
    p.dedup();
    let list: Vec<String> = p.iter().map(u16::to_string).collect();
    format!("{{ {} }}", list.join(", "))
}

/// Commands that create (if missing) and rewrite both policy chains for
/// listeners on `listen_ports`, atomically: one transaction replaces the
/// previous rules. Policies that need nothing here give empty chains.
pub fn policy_commands(
    cfg: &NftConfig,
    listen_ports: &[u16],
    ps: &Policies,
    out: &mut String,
) -> Result<(), FwError> {
    batch::validate(cfg)?;
    if listen_ports.is_empty() || listen_ports.contains(&0) {
        return Err(FwError::Config(
            "policy rules need the listeners' ports".into(),
        ));
    }
    let t = &cfg.family_table;
    let l = port_set(listen_ports);
    let _ = writeln!(out, "add table inet {t}");
    for (name, ty) in SETS {
        let _ = writeln!(
            out,
            "add set inet {t} {name} {{ {ty}; size {SET_SIZE}; flags dynamic, timeout; }}"
        );
    }
    let _ = writeln!(
        out,
        "add chain inet {t} {OUT_CHAIN} {{ type filter hook output priority filter; policy accept; }}"
    );
    let _ = writeln!(
        out,
        "add chain inet {t} {IN_CHAIN} {{ type filter hook input priority filter; policy accept; }}"
    );
    let _ = writeln!(out, "flush chain inet {t} {OUT_CHAIN}");
    let _ = writeln!(out, "flush chain inet {t} {IN_CHAIN}");

    // Window zero: exceptions first, then the default.
    let out_rule = |m: &str, out: &mut String| {
        let _ = writeln!(out, "add rule inet {t} {OUT_CHAIN} tcp sport {l} {m}");
    };
    for (p, pol) in &ps.ports {
        if pol.window_zero != ps.default.window_zero {
            let act = if pol.window_zero {
                "tcp window set 0"
            } else {
                "return"
            };
            out_rule(&format!("ct original proto-dst {p} {act}"), out);
        }
    }
    if ps.default.window_zero {
        out_rule("tcp window set 0", out);
    }

    // syn_delay: per port, then the default.
    let syn = "tcp flags & (syn | ack) == syn";
    let delay_rules = |prefix: &str, d: std::time::Duration, mode: SynMode, out: &mut String| {
        let wait = d.as_secs().max(1);
        let seen = 2 * wait + 5;
        for (v, saddr) in [("4", "ip saddr"), ("6", "ip6 saddr")] {
            let key = format!("{saddr} . tcp sport . tcp sequence");
            let nf = if v == "4" { "ipv4" } else { "ipv6" };
            let r = |rest: String, out: &mut String| {
                let _ = writeln!(
                    out,
                    "add rule inet {t} {IN_CHAIN} tcp dport {l} {prefix}{syn} {rest}"
                );
            };
            if let Some(learn) = mode.learn_window() {
                // Learn: the peer's FIN or RST on a young connection (its
                // last SYN within the learn window) teaches its address;
                // every SYN makes its connection young (`update` restarts
                // the timeout, so a delayed one counts from its passing
                // retransmission, ~the accept); an address not learned
                // passes. Full sets: nothing learned, SYNs pass.
                let young = format!("{saddr} . tcp sport");
                let _ = writeln!(
                    out,
                    "add rule inet {t} {IN_CHAIN} tcp dport {l} {prefix}tcp flags & (fin | rst) != 0 {young} @syn_young{v} add @syn_learn{v} {{ {saddr} timeout {SYN_LEARNED_SECS}s }}"
                );
                r(
                    format!(
                        "meta nfproto {nf} update @syn_young{v} {{ {young} timeout {}s }}",
                        learn.as_secs().max(1)
                    ),
                    out,
                );
                r(
                    format!("meta nfproto {nf} {saddr} != @syn_learn{v} return"),
                    out,
                );
            }
            // Exempt addresses pass; a retransmission waits or passes, and
            // a delayed attempt that completes clears its address (it sat
            // the delay out: its next attempt may be delayed again).
            r(format!("{saddr} @syn_fast{v} return"), out);
            r(format!("{key} @syn_try_wait{v} drop"), out);
            r(
                format!("{key} @syn_try_seen{v} delete @syn_addr{v} {{ {saddr} }}"),
                out,
            );
            r(format!("{key} @syn_try_seen{v} return"), out);
            // A new attempt while one is pending or was abandoned: the
            // client gave up and retried, or came back.
            r(
                format!("{saddr} @syn_addr{v} add @syn_fast{v} {{ {saddr} timeout {FAST_SECS}s }}"),
                out,
            );
            r(format!("{saddr} @syn_addr{v} return"), out);
            // A first SYN: logged (for the wait's start), remembered, dropped.
            r(
                format!(
                    "meta nfproto {nf} add @syn_try_seen{v} {{ {key} timeout {seen}s }} add @syn_addr{v} {{ {saddr} timeout {FAST_SECS}s }} add @syn_try_wait{v} {{ {key} timeout {wait}s }} log group {SYN_LOG_GROUP} drop"
                ),
                out,
            );
        }
    };
    for (p, pol) in &ps.ports {
        let prefix = format!("ct original proto-dst {p} ");
        match pol.syn_delay {
            Some(d) => delay_rules(&prefix, d, pol.syn_mode, out),
            // This port is exempt from the default's delay.
            None if ps.default.syn_delay.is_some() => {
                let _ = writeln!(
                    out,
                    "add rule inet {t} {IN_CHAIN} tcp dport {l} {prefix}return"
                );
            }
            None => {}
        }
    }
    if let Some(d) = ps.default.syn_delay {
        delay_rules("", d, ps.default.syn_mode, out);
    }
    Ok(())
}

/// Which of the policy chains and sets a listing of our table shows (the
/// trap chains and sets are never among them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Present {
    pub chains: Vec<&'static str>,
    pub sets: Vec<&'static str>,
}

impl Present {
    /// From the names of the chains and sets in our table.
    pub fn of(chains: &[String], sets: &[String]) -> Present {
        Present {
            chains: [OUT_CHAIN, IN_CHAIN]
                .into_iter()
                .filter(|c| chains.iter().any(|x| x == c))
                .collect(),
            sets: SETS
                .into_iter()
                .map(|(name, _)| name)
                .chain(OLD_SETS)
                .filter(|s| sets.iter().any(|x| x == s))
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.sets.is_empty()
    }

    /// `chain policy_out, set syn_wait4, ...`, for logs.
    pub fn names(&self) -> String {
        let c = self.chains.iter().map(|c| format!("chain {c}"));
        let s = self.sets.iter().map(|s| format!("set {s}"));
        c.chain(s).collect::<Vec<_>>().join(", ")
    }
}

/// Commands that delete what `present` names, in one transaction: each
/// chain flushed, then deleted, then the sets its rules referred to.
pub fn remove_commands(
    cfg: &NftConfig,
    present: &Present,
    out: &mut String,
) -> Result<(), FwError> {
    batch::validate(cfg)?;
    let t = &cfg.family_table;
    for c in &present.chains {
        let _ = writeln!(out, "flush chain inet {t} {c}");
        let _ = writeln!(out, "delete chain inet {t} {c}");
    }
    for set in &present.sets {
        let _ = writeln!(out, "delete set inet {t} {set}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::policy::{Bait, Policy};
    use std::time::Duration;

    fn policies() -> Policies {
        let mut ps = Policies::default();
        ps.set_port(
            22,
            Policy {
                bait: Some(Bait::Ssh),
                drip: Duration::from_secs(10),
                syn_delay: Some(Duration::from_secs(60)),
                syn_mode: SynMode::Always,
                ..Policy::SILENT
            },
        );
        ps.set_port(
            80,
            Policy {
                window_zero: true,
                ..Policy::SILENT
            },
        );
        ps
    }

    #[test]
    fn rules_name_the_listeners_and_the_original_port() {
        let mut s = String::new();
        policy_commands(
            &NftConfig::default(),
            &[2222, 22, 2222],
            &policies(),
            &mut s,
        )
        .unwrap();
        assert!(s.contains(
            "add rule inet tarpit policy_out tcp sport { 22, 2222 } ct original proto-dst 80 tcp window set 0\n"
        ), "{s}");
        assert!(s.contains("add rule inet tarpit policy_in tcp dport { 22, 2222 } ct original proto-dst 22 tcp flags & (syn | ack) == syn ip saddr . tcp sport . tcp sequence @syn_try_wait4 drop\n"), "{s}");
        // Port 22's IPv4 rules, in order: exempt addresses pass, a
        // retransmission waits or passes (and a completed attempt clears its
        // address), a new attempt of an address with an attempt pending or
        // abandoned passes and exempts the address, a first SYN is
        // remembered (syn_try_wait last: a full set lets it through), logged
        // and dropped.
        let pre = "add rule inet tarpit policy_in tcp dport { 22, 2222 } ct original proto-dst 22 tcp flags & (syn | ack) == syn ";
        let v4: Vec<&str> = s
            .lines()
            .filter_map(|l| l.strip_prefix(pre))
            .filter(|l| !l.contains("ip6") && !l.contains("ipv6"))
            .collect();
        assert_eq!(v4, [
            "ip saddr @syn_fast4 return",
            "ip saddr . tcp sport . tcp sequence @syn_try_wait4 drop",
            "ip saddr . tcp sport . tcp sequence @syn_try_seen4 delete @syn_addr4 { ip saddr }",
            "ip saddr . tcp sport . tcp sequence @syn_try_seen4 return",
            "ip saddr @syn_addr4 add @syn_fast4 { ip saddr timeout 3600s }",
            "ip saddr @syn_addr4 return",
            "meta nfproto ipv4 add @syn_try_seen4 { ip saddr . tcp sport . tcp sequence timeout 125s } add @syn_addr4 { ip saddr timeout 3600s } add @syn_try_wait4 { ip saddr . tcp sport . tcp sequence timeout 60s } log group 7710 drop",
        ], "{s}");
        assert!(
            s.contains(
                "add @syn_try_wait6 { ip6 saddr . tcp sport . tcp sequence timeout 60s } log group 7710 drop\n"
            ),
            "{s}"
        );
        for set in [
            "syn_addr6 { type ipv6_addr;",
            "syn_fast4 { type ipv4_addr;",
            "syn_try_seen4 { typeof ip saddr . tcp sport . tcp sequence;",
        ] {
            assert!(
                s.contains(&format!(
                    "add set inet tarpit {set} size 262144; flags dynamic, timeout; }}"
                )),
                "{set}: {s}"
            );
        }
        // Nothing for the silent default.
        assert!(!s.contains("tcp sport { 22, 2222 } tcp window set 0"));
        // add chain, flush chain, seven rules per family for port 22.
        assert_eq!(s.matches(IN_CHAIN).count(), 16, "{s}");
    }

    #[test]
    fn learn_mode_delays_only_learned_addresses() {
        let mut ps = Policies::default();
        ps.set_port(
            22,
            Policy {
                syn_delay: Some(Duration::from_secs(60)),
                syn_mode: SynMode::Learn {
                    window: Duration::from_secs(180),
                },
                ..Policy::SILENT
            },
        );
        let mut s = String::new();
        policy_commands(&NftConfig::default(), &[2222], &ps, &mut s).unwrap();
        let pre = "add rule inet tarpit policy_in tcp dport { 2222 } ct original proto-dst 22 ";
        let v4: Vec<&str> = s
            .lines()
            .filter_map(|l| l.strip_prefix(pre))
            .filter(|l| !l.contains("ip6") && !l.contains("ipv6"))
            .collect();
        // The peer's FIN/RST on a young connection teaches its address,
        // every SYN makes its connection young, an address not learned
        // passes; then the rules of mode always.
        assert_eq!(v4[..4], [
            "tcp flags & (fin | rst) != 0 ip saddr . tcp sport @syn_young4 add @syn_learn4 { ip saddr timeout 86400s }",
            "tcp flags & (syn | ack) == syn meta nfproto ipv4 update @syn_young4 { ip saddr . tcp sport timeout 180s }",
            "tcp flags & (syn | ack) == syn meta nfproto ipv4 ip saddr != @syn_learn4 return",
            "tcp flags & (syn | ack) == syn ip saddr @syn_fast4 return",
        ], "{s}");
        assert_eq!(v4.len(), 10, "{s}");
        assert!(s.contains("ip6 saddr != @syn_learn6 return"), "{s}");
        for set in [
            "syn_young4 { typeof ip saddr . tcp sport;",
            "syn_learn6 { type ipv6_addr;",
        ] {
            assert!(
                s.contains(&format!("add set inet tarpit {set} size 262144;")),
                "{set}: {s}"
            );
        }
    }

    #[test]
    fn a_zero_default_exempts_ports_that_say_otherwise() {
        let mut ps = policies();
        ps.default = Policy {
            window_zero: true,
            syn_delay: Some(Duration::from_secs(3)),
            ..Policy::SILENT
        };
        let mut s = String::new();
        policy_commands(&NftConfig::default(), &[2222], &ps, &mut s).unwrap();
        let out: Vec<&str> = s
            .lines()
            .filter(|l| l.starts_with("add rule inet tarpit policy_out"))
            .collect();
        assert_eq!(out, [
            "add rule inet tarpit policy_out tcp sport { 2222 } ct original proto-dst 22 return",
            "add rule inet tarpit policy_out tcp sport { 2222 } tcp window set 0",
        ]);
        // Port 80 has no delay of its own: exempt, before the default's rules.
        let i80 = s.find("ct original proto-dst 80 return").unwrap();
        let idef = s.find("tcp dport { 2222 } tcp flags").unwrap();
        assert!(i80 < idef, "{s}");
        assert!(s.contains("add @syn_try_seen4 { ip saddr . tcp sport . tcp sequence timeout 11s } add @syn_addr4 { ip saddr timeout 3600s } add @syn_try_wait4 { ip saddr . tcp sport . tcp sequence timeout 3s }"), "{s}");
    }

    #[test]
    fn removal_names_only_the_policy_objects_present() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let present = Present::of(
            &names(&["prerouting", "policy_in", "guard"]),
            &names(&["trap4", "trap6", "syn_wait4", "syn_try_seen6", "syn_fast4"]),
        );
        // Today's sets, then an earlier version's.
        assert_eq!(
            present.names(),
            "chain policy_in, set syn_fast4, set syn_try_seen6, set syn_wait4"
        );
        let mut s = String::new();
        remove_commands(&NftConfig::default(), &present, &mut s).unwrap();
        assert_eq!(
            s,
            "flush chain inet tarpit policy_in\ndelete chain inet tarpit policy_in\n\
             delete set inet tarpit syn_fast4\ndelete set inet tarpit syn_try_seen6\n\
             delete set inet tarpit syn_wait4\n"
        );
        assert!(Present::of(&names(&["prerouting"]), &names(&["trap4"])).is_empty());
    }

    #[test]
    fn listeners_are_required() {
        let mut s = String::new();
        assert!(policy_commands(&NftConfig::default(), &[], &policies(), &mut s).is_err());
    }
}
