//! The nftables rules the stateless engine needs.
//!
//! A `prerouting` chain at priority `raw` (-300) runs before conntrack
//! (-200): packets it drops never create a conntrack entry and never reach
//! the kernel's TCP stack, so nothing answers them but us. Each trapped
//! packet is first copied to nfnetlink_log group `group`, truncated to
//! [`SNAPLEN`] bytes — enough for IPv6 + a TCP header with every option —
//! where `tarpit serve --engine stateless` reads it.
//!
//! Two kinds of packets are trapped: TCP from addresses in the watcher's
//! sets `@trap4`/`@trap6`, and TCP to the decoy ports from anyone. The text
//! is an `nft -f` script of `add` commands, so it can be applied on its own
//! (with [`StatelessRules::standalone_script`]) or after the firewall module
//! has created the table and its sets.

use std::fmt::Write;

/// Bytes of each packet copied to userspace.
pub const SNAPLEN: u32 = 128;
/// Name of the chain in `table inet <table>`.
pub const CHAIN: &str = "stateless_raw";

/// The statement every trapping rule ends with: copy to `group`, drop.
pub fn log_drop(group: u16) -> String {
    format!("log group {group} snaplen {SNAPLEN} drop")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatelessRules {
    /// The nftables table (family `inet`), normally `tarpit`.
    pub table: String,
    /// nfnetlink_log group the engine listens on.
    pub group: u16,
    /// Trap everything from `@trap4`/`@trap6` (the sets must exist).
    pub trap_sets: bool,
    /// The watcher traps IPv6 hosts per network of this length; the rule
    /// masks the source the same way (see `crate::firewall::source_matches`).
    pub v6_prefix: u8,
    /// TCP ports trapped for every source.
    pub decoy_ports: Vec<u16>,
}

impl StatelessRules {
    /// The chain and its rules, as `add` commands for an existing table
    /// (and, with `trap_sets`, existing `trap4`/`trap6` sets). The chain is
    /// flushed first so applying twice leaves one copy.
    pub fn script(&self) -> String {
        let t = &self.table;
        let g = self.group;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "add chain inet {t} {CHAIN} {{ type filter hook prerouting priority raw; policy accept; }}"
        );
        let _ = writeln!(s, "flush chain inet {t} {CHAIN}");
        let action = log_drop(g);
        if self.trap_sets {
            let cfg = crate::firewall::NftConfig {
                family_table: t.clone(),
                v6_prefix: self.v6_prefix,
                ..crate::firewall::NftConfig::default()
            };
            // Only an invalid table name or prefix can fail; then no rule
            // can be written either.
            for m in crate::firewall::source_matches(&cfg).unwrap_or_default() {
                let _ = writeln!(s, "add rule inet {t} {CHAIN} {m} meta l4proto tcp {action}");
            }
        }
        if !self.decoy_ports.is_empty() {
            let ports = self
                .decoy_ports
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(
                s,
                "add rule inet {t} {CHAIN} tcp dport {{ {ports} }} {action}"
            );
        }
        s
    }

    /// [`script`](Self::script) preceded by the table and (with
    /// `trap_sets`) the two sets, for use without the firewall module.
    pub fn standalone_script(&self) -> String {
        let t = &self.table;
        let mut s = format!("add table inet {t}\n");
        if self.trap_sets {
            let _ = writeln!(
                s,
                "add set inet {t} trap4 {{ type ipv4_addr; flags timeout; }}"
            );
            let _ = writeln!(
                s,
                "add set inet {t} trap6 {{ type ipv6_addr; flags timeout; }}"
            );
        }
        s + &self.script()
    }

    /// Removes the chain (leaves the table and sets to their owner).
    pub fn delete_script(&self) -> String {
        format!("delete chain inet {} {CHAIN}\n", self.table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_has_raw_prerouting_log_and_drop() {
        let r = StatelessRules {
            table: "tarpit".into(),
            group: 7,
            trap_sets: true,
            v6_prefix: 64,
            decoy_ports: vec![22, 2323],
        };
        let s = r.script();
        assert!(s.contains("hook prerouting priority raw"), "{s}");
        assert!(s.contains("ip saddr @trap4 meta l4proto tcp log group 7 snaplen 128 drop"));
        assert!(s.contains(
            "ip6 saddr & ffff:ffff:ffff:ffff:: @trap6 meta l4proto tcp log group 7 snaplen 128 drop"
        ));
        assert!(s.contains("tcp dport { 22, 2323 } log group 7 snaplen 128 drop"));
        let only_ports = StatelessRules {
            trap_sets: false,
            ..r.clone()
        };
        assert!(!only_ports.script().contains("@trap"));
        assert!(r.standalone_script().starts_with("add table inet tarpit\n"));
        assert!(r
            .delete_script()
            .contains("delete chain inet tarpit stateless_raw"));
    }
}
