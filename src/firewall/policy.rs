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
//!   on the same port never is). A client's first SYN puts its
//!   `address . port` into `syn_wait` (timeout D) and `syn_seen` (timeout
//!   2·D + 5 s) and is dropped; while in `syn_wait`, its retransmissions are
//!   dropped too; once `syn_wait` has forgotten it but `syn_seen` has not —
//!   D after its first SYN — the next retransmission passes and the
//!   handshake completes. Retransmissions back off exponentially, so the
//!   first one at or after D comes before 2·D + 1 s. A full set (more than
//!   [`SET_SIZE`] clients waiting) lets SYNs through undelayed rather than
//!   dropping them for ever.

use std::fmt::Write as _;

use super::{batch, FwError, NftConfig};
use crate::engine::policy::Policies;

/// Output-hook chain (window zero).
pub const OUT_CHAIN: &str = "policy_out";
/// Input-hook chain (syn_delay).
pub const IN_CHAIN: &str = "policy_in";
/// Most clients in each syn_delay set.
pub const SET_SIZE: u32 = 262_144;

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
    for (name, ty) in [
        ("syn_wait4", "ipv4_addr"),
        ("syn_seen4", "ipv4_addr"),
        ("syn_wait6", "ipv6_addr"),
        ("syn_seen6", "ipv6_addr"),
    ] {
        let _ = writeln!(
            out,
            "add set inet {t} {name} {{ type {ty} . inet_service; size {SET_SIZE}; flags dynamic, timeout; }}"
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
    let delay_rules = |prefix: &str, d: std::time::Duration, out: &mut String| {
        let wait = d.as_secs().max(1);
        let seen = 2 * wait + 5;
        for (v, saddr) in [("4", "ip saddr"), ("6", "ip6 saddr")] {
            let key = format!("{saddr} . tcp sport");
            let nf = if v == "4" { "ipv4" } else { "ipv6" };
            let r = |rest: String, out: &mut String| {
                let _ = writeln!(
                    out,
                    "add rule inet {t} {IN_CHAIN} tcp dport {l} {prefix}{syn} {rest}"
                );
            };
            r(format!("{key} @syn_wait{v} drop"), out);
            r(format!("{key} @syn_seen{v} return"), out);
            r(
                format!(
                    "meta nfproto {nf} add @syn_wait{v} {{ {key} timeout {wait}s }} add @syn_seen{v} {{ {key} timeout {seen}s }} drop"
                ),
                out,
            );
        }
    };
    for (p, pol) in &ps.ports {
        let prefix = format!("ct original proto-dst {p} ");
        match pol.syn_delay {
            Some(d) => delay_rules(&prefix, d, out),
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
        delay_rules("", d, out);
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
        assert!(s.contains("add rule inet tarpit policy_in tcp dport { 22, 2222 } ct original proto-dst 22 tcp flags & (syn | ack) == syn ip saddr . tcp sport @syn_wait4 drop\n"), "{s}");
        assert!(s.contains("add @syn_wait6 { ip6 saddr . tcp sport timeout 60s } add @syn_seen6 { ip6 saddr . tcp sport timeout 125s } drop\n"), "{s}");
        // Nothing for the silent default.
        assert!(!s.contains("tcp sport { 22, 2222 } tcp window set 0"));
        // add chain, flush chain, six rules for port 22.
        assert_eq!(s.matches(IN_CHAIN).count(), 8, "{s}");
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
        assert!(s.contains("timeout 3s } add @syn_seen4 { ip saddr . tcp sport timeout 11s }"));
    }

    #[test]
    fn listeners_are_required() {
        let mut s = String::new();
        assert!(policy_commands(&NftConfig::default(), &[], &policies(), &mut s).is_err());
    }
}
