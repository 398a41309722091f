//! The stateless engine: trapped connections cost the tarpit nothing.
//!
//! nftables copies every trapped packet to userspace (nfnetlink_log) and
//! drops it before conntrack sees it ([`rules`]). The engine answers each
//! copy on its own merits: a SYN gets a zero-window SYN/ACK whose sequence
//! number is a SYN cookie ([`cookie`]); an ACK, data, a window probe or a
//! keepalive that carries a valid cookie gets a zero-window ACK that
//! acknowledges none of the data; everything else gets nothing. The
//! attacker's kernel holds the connection; we keep no per-connection state
//! except optional statistics in a bounded table ([`flows`]).
//!
//! Packets are checked once at the edge ([`packet`], on the views in
//! [`wire`]); the sockets themselves
//! live in `crate::sys`.

pub mod cookie;
pub mod core;
pub mod engine;
pub mod flows;
pub mod keyfile;
pub mod packet;
pub mod syndelay;
pub mod wire;

pub use self::core::{Counters, Outcome};
use crate::engine::nflog;
pub use engine::{control_extras, Handle, StatelessServer};

use std::time::Duration;

/// The label records and metrics carry for this engine (in the
/// `listener` field): `nflog:GROUP`.
pub fn listener_label(group: u16) -> String {
    format!("nflog:{group}")
}

/// Everything the stateless engine needs to know, already validated.
#[derive(Debug, Clone, PartialEq)]
pub struct StatelessOptions {
    /// nfnetlink_log group the nftables rules log to.
    pub nflog_group: u16,
    /// Most flows kept for statistics (48 B each plus index).
    pub flow_cap: usize,
    /// A flow not heard from for this long is reported ended. Linux peers
    /// probe a zero window at least every 2 minutes.
    pub flow_idle: Duration,
    /// How often the SYN-cookie key changes. A connection is answered for
    /// one to two periods: the engine's equivalent of a lifetime.
    pub key_rotation: Duration,
    pub batching: nflog::Batching,
    /// Where the SYN-cookie keys are kept across restarts; `None`: a new
    /// key at every start.
    pub key_file: Option<std::path::PathBuf>,
    /// Per-port policies; this engine does `syn_delay` only ([`syndelay`]).
    pub policies: crate::engine::policy::Policies,
}

impl Default for StatelessOptions {
    fn default() -> Self {
        StatelessOptions {
            nflog_group: 7,
            flow_cap: 1_000_000,
            flow_idle: Duration::from_secs(10 * 60),
            key_rotation: Duration::from_secs(3600),
            batching: nflog::Batching::default(),
            key_file: None,
            policies: Default::default(),
        }
    }
}
