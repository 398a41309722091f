//! tarpit — a userspace TCP tarpit for Linux.
//!
//! The binary is a thin shell over this library. One module per concern:
//!
//! * [`listener`] — `tarpit serve`, the zero-window socket engine;
//! * [`record`] — the facts kept per trapped connection, shared by all;
//! * [`config`] — the TOML file and its located errors;
//! * [`control`] — the unix control socket `tarpit stats` talks to;
//! * [`stats`] — live view, Prometheus metrics, history database and report;
//! * [`firewall`] — the nftables table and sets that trap hosts;
//! * [`cli`] — the command line, gluing the rest together;
//! * [`systemd`] — readiness/status notifications and socket activation;
//! * [`stateless`] — the stateless engine: answers trapped packets from
//!   nfnetlink_log with SYN cookies, no per-connection state;
//! * [`watcher`] — `tarpit watch`: logs to bans in nftables sets;
//! * [`sys`] — the only `unsafe`: socket options libc/socket2 lack.

pub mod cli;
pub mod config;
pub mod control;
pub mod firewall;
pub mod listener;
pub mod logging;
pub mod ratelimit;
pub mod record;
pub mod stateless;
pub mod stats;
pub mod sys;
pub mod systemd;
pub mod watcher;
