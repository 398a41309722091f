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
//! sets `@trap4`/`@trap6`, and TCP to the decoy ports from anyone
//! ([`NftConfig::decoy_ports`](super::NftConfig::decoy_ports)). The rules
//! themselves are written with the redirect ones, by
//! [`ruleset_text`](super::ruleset_text) and [`Firewall::ensure`](super::Firewall::ensure).

/// Bytes of each packet copied to userspace.
pub const SNAPLEN: u32 = 128;
/// Name of the chain in `table inet <table>`.
pub const CHAIN: &str = "stateless_raw";

/// The statement every trapping rule ends with: copy to `group`, drop.
pub fn log_drop(group: u16) -> String {
    format!("log group {group} snaplen {SNAPLEN} drop")
}
