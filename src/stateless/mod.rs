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
//! Packets are checked once at the edge ([`packet`]); the sockets themselves
//! live in `crate::sys`.

pub mod cookie;
pub mod flows;
pub mod packet;
pub mod rules;
