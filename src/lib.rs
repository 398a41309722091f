//! tarpit — a userspace TCP tarpit for Linux.
//!
//! The binary is a thin shell over this library. One module per concern:
//!
//! * [`engine`] — what holds trapped connections: the shared contract
//!   (observer, snapshot, totals, records) and the two engines side by
//!   side, [`engine::socket`] (zero-window sockets) and
//!   [`engine::stateless`] (nfnetlink_log in, AF_PACKET out, SYN cookies,
//!   no per-connection state);
//! * [`classify`] — what a trapped peer tried (SSH, HTTP, TLS), named from
//!   the bytes it sent and we never read;
//! * [`config`] — the TOML file and its located errors, and the one typed
//!   configuration per component built from it and the flags;
//! * [`daemon`] — the processes around the engines and the watcher: limits,
//!   activation, takeover/re-exec, privileges, signals, systemd, statistics;
//! * [`control`] — the unix control socket `tarpit stats` talks to;
//! * [`stats`] — live view, Prometheus metrics, history database and report;
//! * [`firewall`] — the only writer of nftables rules: the table, the trap
//!   sets, the redirect and the stateless log-and-drop rules;
//! * [`host`] — the one host key (IPv4, IPv4-mapped, IPv6 prefix) and CIDR ranges;
//! * [`cli`] — the command line: clap definitions, one error → exit code;
//! * [`systemd`] — readiness/status notifications and socket activation;
//! * [`watcher`] — `tarpit watch`: logs to bans in nftables sets;
//! * [`calendar`] — civil dates to epoch seconds and back (jiff);
//! * [`sys`] — the only `unsafe`: socket options libc/socket2 lack.

#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod abuse;
pub mod calendar;
pub mod classify;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod engine;
pub mod firewall;
pub mod geoip;
pub mod host;
pub mod logging;
pub mod ratelimit;
pub mod stats;
#[allow(unsafe_code)]
pub mod sys;
pub mod systemd;
pub mod watcher;
