//! Per-connection stall statistics: who is trapped right now ([`live`]),
//! what it cost them over time, and how an operator sees it.
//!
//! Everything here consumes the listener's public surface only: the
//! [`crate::engine::Observer`] callbacks, [`crate::engine::socket::Handle::snapshot`]
//! and the [`crate::engine::record`] types.

pub mod history;
pub mod live;
pub mod metrics;
pub mod report;
