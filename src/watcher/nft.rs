//! The real [`Enforcer`]: `crate::firewall::Firewall`, configured from
//! `[watch]`.

use super::engine::Enforcer;
use super::host::Target;
use super::settings::WatchSettings;
use crate::firewall::{Ban, Firewall, FwError, NftConfig};
use std::time::Duration;

/// The firewall settings `[watch]` describes.
pub fn nft_config(s: &WatchSettings) -> NftConfig {
    NftConfig {
        family_table: s.table.clone(),
        set4: s.set4.clone(),
        set6: s.set6.clone(),
        port: s.port,
        nft: s.nft.clone(),
        v6_prefix: s.ipv6_prefix,
        mode: s.mode,
        decoy_ports: s.decoy_ports.clone(),
        guard_port: s.guard_port,
        flush_conntrack: s.flush_conntrack,
        range_sets: s.crowdsec.is_some(),
        ..NftConfig::default()
    }
}

fn bans(items: &[(Target, Duration)]) -> Vec<Ban> {
    items
        .iter()
        .map(|&(target, timeout)| Ban { target, timeout })
        .collect()
}

impl Enforcer for Firewall {
    fn ensure(&self) -> Result<(), FwError> {
        Firewall::ensure(self)
    }
    fn ban(&self, items: &[(Target, Duration)]) -> Result<(), FwError> {
        Firewall::ban(self, &bans(items))
    }
    fn restore(&self, items: &[(Target, Duration)]) -> Result<(), FwError> {
        Firewall::restore(self, &bans(items))
    }
    fn unban(&self, hosts: &[Target]) -> Result<(), FwError> {
        Firewall::unban(self, hosts)
    }
    fn intact(&self) -> Result<bool, FwError> {
        Firewall::intact(self)
    }
    fn set_ranges(&self, nets: &[(crate::firewall::Net, Duration)]) -> Result<(), FwError> {
        Firewall::set_ranges(self, nets)
    }
}
