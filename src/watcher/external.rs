//! Traps decided elsewhere (CrowdSec), applied through the watcher's own
//! firewall handle so that one place writes nft and one retry/rebuild path
//! covers everything. The watcher calls these hooks; the implementation
//! (`crate::watcher::crowdsec::Bridge`) keeps its decisions in the state database.

use super::engine::Enforcer;
use super::host::Target;
use std::time::Duration;

/// Why applying external traps failed: the firewall (the watcher then
/// rebuilds everything with back-off) or the store they are kept in.
#[derive(Debug, thiserror::Error)]
pub enum ExternalError {
    #[error(transparent)]
    Firewall(#[from] crate::firewall::FwError),
    #[error("state database: {0}")]
    State(#[from] rusqlite::Error),
}

pub trait External: Send {
    /// Every tick: applies what changed. `Err` is a firewall failure (the
    /// watcher then rebuilds everything with back-off).
    fn tick(&mut self, fw: &dyn Enforcer, fw_ok: bool) -> Result<(), ExternalError>;
    /// The hosts it traps, for a restore (merged with ours, longest wins).
    fn hosts(&mut self) -> Vec<(Target, Duration)>;
    /// After a restore: puts its networks back.
    fn restore_nets(&mut self, fw: &dyn Enforcer) -> Result<(), ExternalError>;
    /// How long it still traps `host` (so a shorter ban of ours never cuts
    /// a longer decision).
    fn until(&mut self, host: &Target) -> Option<Duration>;
}
