//! The engines that hold trapped connections, and the contract they share.
//!
//! Two engines hold connections: [`socket`] (accepted sockets with a zero
//! window, one slab slot each) and [`stateless`] (nfnetlink_log in,
//! AF_PACKET out, no per-connection kernel state). Everything downstream —
//! history, metrics, the live view, the control socket — sees only what is
//! defined here: an [`Observer`] told about each connection, a
//! [`Snapshot`] of what is held now with its [`Totals`], and the
//! [`record`] types each ended connection produces.

pub mod record;
pub mod socket;
pub mod stateless;

use record::{ConnRecord, LiveConn};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Told about every connection; implementations must be cheap and must not
/// block (they run on the engine's thread).
pub trait Observer: Send + Sync {
    fn trapped(&self, _listener: &str) {}
    fn peer_close_attempt(&self, _listener: &str) {}
    fn ended(&self, _record: &ConnRecord) {}
    fn accept_error(&self, _kind: &str) {}
}

/// Running totals since start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub held_now: u64,
    pub trapped: u64,
    pub ended: u64,
    /// Seconds attackers spent in connections that have ended.
    pub held_secs: f64,
    /// Seconds attackers have spent so far in connections still held.
    pub live_held_secs: f64,
    pub close_attempts: u64,
    /// Connections handed to a new process by a takeover (not released).
    #[serde(default)]
    pub handed_over: u64,
    /// Figures are estimates: the stateless engine evicted flows from its
    /// bounded table (see `LiveConn::estimated`).
    #[serde(default)]
    pub estimated: bool,
    pub by_reason: BTreeMap<String, u64>,
    pub accept_errors: BTreeMap<String, u64>,
}

/// What a running server answers to "what are you holding?".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub conns: Vec<LiveConn>,
    pub totals: Totals,
}
