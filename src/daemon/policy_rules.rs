//! The nftables side of per-port policies over a serve's life: written at
//! start when a policy needs it (window zero, syn_delay), removed at start
//! when none does (an earlier configuration's rules would otherwise go on
//! acting on ports this one no longer means), and removed again on a clean
//! shutdown — but not after a takeover, when they are the new process's.
//!
//! One `tarpit serve` per network namespace owns the chains (`policy_in`,
//! `policy_out`) and their sets in table `inet tarpit`; the trap chains and
//! sets (`tarpit watch`'s) are never touched here.

use super::Error;
use crate::engine::policy::Policies;
use crate::firewall::{policy, Firewall, NftConfig};

/// What to do by hand when serve cannot (no `nft`, no privileges).
fn by_hand() -> String {
    let t = NftConfig::default().family_table;
    format!(
        "nft delete chain inet {t} {}; nft delete chain inet {t} {}",
        policy::OUT_CHAIN,
        policy::IN_CHAIN
    )
}

/// The rules this process wrote, to remove on a clean shutdown.
#[must_use]
pub struct Installed(Option<Firewall>);

/// At start, while still privileged: writes the policy rules for the
/// listeners' ports when a policy needs them (an error stops serve: the
/// operator asked for them), else removes any an earlier run left. The
/// latter never stops serve: without `nft` or the privileges to use it, one
/// message says what to check and how to remove them by hand.
pub fn at_start(policies: &Policies, labels: &[String]) -> Result<Installed, Error> {
    let fw = Firewall::new(NftConfig::default());
    if policies.needs_firewall() {
        let ports: Vec<u16> = labels
            .iter()
            .filter_map(|l| l.parse::<std::net::SocketAddr>().ok())
            .map(|a| a.port())
            .collect();
        fw.set_policies(&ports, policies)
            .map_err(Error::PolicyRules)?;
        tracing::info!(ports = ?ports, "policy rules installed (nftables)");
        return Ok(Installed(Some(fw)));
    }
    clean_stale(&fw);
    Ok(Installed(None))
}

/// Removes policy rules no policy of this run needs (see [`at_start`]).
pub fn clean_stale(fw: &Firewall) {
    let present = match fw.policy_objects() {
        Ok(p) => p,
        // No `nft`, no privileges, no netlink: nothing is known to be wrong.
        Err(e) => {
            tracing::info!(
                error = %e,
                "cannot check nftables for policy rules an earlier run may have left (window zero, syn_delay); if `nft list table inet tarpit` shows chains policy_in or policy_out, remove them: {}",
                by_hand()
            );
            return;
        }
    };
    if present.is_empty() {
        tracing::debug!("no stale policy rules in nftables");
        return;
    }
    match fw.remove_policies(&present) {
        Ok(()) => tracing::info!(
            removed = %present.names(),
            "removed policy rules an earlier configuration left in nftables (no policy needs them now)"
        ),
        Err(e) => tracing::warn!(
            error = %e,
            stale = %present.names(),
            "cannot remove policy rules an earlier run left in nftables; remove them by hand: {}",
            by_hand()
        ),
    }
}

impl Installed {
    /// On the way out: removes the rules this process wrote, unless the
    /// listeners were handed to a successor (which rewrote them for itself
    /// and goes on relying on them, syn_delay's sets with their clients).
    pub fn at_exit(self, handed_off: bool) {
        let Some(fw) = self.0 else {
            return;
        };
        if handed_off {
            tracing::debug!("policy rules left to the process that took over");
            return;
        }
        let removed = fw
            .policy_objects()
            .and_then(|p| fw.remove_policies(&p).map(|()| p));
        match removed {
            Ok(p) => tracing::info!(removed = %p.names(), "policy rules removed (nftables)"),
            Err(e) => tracing::warn!(
                error = %e,
                "policy rules stay in nftables (after dropping privileges serve may not change them); the next start without such policies removes them, or by hand: {}",
                by_hand()
            ),
        }
    }
}
