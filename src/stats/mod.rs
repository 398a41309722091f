//! Per-connection stall statistics: who is trapped right now ([`live`]),
//! what it cost them over time, and how an operator sees it.
//!
//! Everything here consumes the listener's public surface only: the
//! [`crate::listener::Observer`] callbacks, [`crate::listener::Handle::snapshot`]
//! and the [`crate::record`] types.

pub mod history;
pub mod live;
pub mod metrics;
pub mod report;
