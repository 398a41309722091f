//! The facts the tarpit keeps about one trapped connection.
//!
//! `ConnRecord` is the contract between the listener (which produces one per
//! ended connection) and everything that consumes them: the log line, the
//! history database and the metrics. `LiveConn` is the same for connections
//! still held, as answered to the control socket.

use crate::classify::Identity;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

/// Why a held connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Its random lifetime ran out; we released it with an RST.
    Lifetime,
    /// The peer sent an RST.
    PeerReset,
    /// Keepalive probes went unanswered: the peer vanished.
    PeerTimeout,
    /// The global `--max-conns` cap was hit and this was the oldest.
    EvictedGlobal,
    /// The `--per-ip` cap was hit for this peer and this was its oldest.
    EvictedPerIp,
    /// The `--per-ipv6-48` cap was hit for this peer's /48 and this was
    /// the oldest of the peer's own prefix.
    EvictedPerNet,
    /// The tarpit shut down.
    Shutdown,
}

impl EndReason {
    pub const ALL: [EndReason; 7] = [
        EndReason::Lifetime,
        EndReason::PeerReset,
        EndReason::PeerTimeout,
        EndReason::EvictedGlobal,
        EndReason::EvictedPerIp,
        EndReason::EvictedPerNet,
        EndReason::Shutdown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Lifetime => "lifetime",
            EndReason::PeerReset => "peer_reset",
            EndReason::PeerTimeout => "peer_timeout",
            EndReason::EvictedGlobal => "evicted_global",
            EndReason::EvictedPerIp => "evicted_per_ip",
            EndReason::EvictedPerNet => "evicted_per_net",
            EndReason::Shutdown => "shutdown",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One ended connection: who, what it aimed at, how long it was held, what it
/// tried to send, how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnRecord {
    /// The listener that accepted it, labelled by its address (`0.0.0.0:2222`).
    pub listener: String,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// Where the peer aimed (before an nftables redirect); equals `local` for
    /// direct connections.
    pub original_dst: SocketAddr,
    /// Wall-clock time the connection was accepted.
    #[serde(with = "unix_secs")]
    pub start: SystemTime,
    /// Seconds we held it: what it cost us.
    pub held_secs: f64,
    /// Seconds the attacker's program was stuck in it: what it cost them
    /// (see [`engaged`]). This, not `held_secs`, is "attacker time wasted".
    #[serde(default)]
    pub engaged_secs: f64,
    /// `engaged_secs` is an upper bound: no FIN or RST told us when the
    /// program gave up, so it ends at the last packet seen from the peer.
    #[serde(default)]
    pub engaged_upper_bound: bool,
    /// Seconds the client spent in SYN retransmissions before we accepted
    /// it, because of a syn_delay policy (its first SYN to the accept); 0
    /// when not delayed. Part of `engaged_secs` — the attacker lost them —
    /// but not of `held_secs`: they cost us nothing, so engaged may exceed
    /// held.
    #[serde(default)]
    pub syn_wait_secs: f64,
    /// Bytes the peer sent that we never read (TCP_INFO `bytes_received`).
    pub bytes_received: u64,
    /// Seconds after `start` at which the peer tried to close (sent FIN), if it did.
    pub fin_after_secs: Option<f64>,
    pub end: EndReason,
    /// The first bytes the peer sent, escaped (peeked at release, never read).
    pub head: String,
    /// What the peer tried, named from everything it had queued at release
    /// ([`crate::classify`]): protocol, and for SSH/HTTP the client
    /// software (`client.software`: `OpenSSH_9.2p1`, `curl/7.88.1`), for
    /// HTTP method/path/Host, for TLS SNI/ALPN/JA4. Every text escaped.
    /// The stateless engine never sees payload: `silent`, or `other` when
    /// the peer sent bytes.
    #[serde(default)]
    pub client: Identity,
    /// The stateless engine lost track of this flow once (evicted from its
    /// bounded table, expired, or from before a restart) and rebuilt it from
    /// a later packet: `start`, `held_secs` and `bytes_received` are lower
    /// bounds. Always false for the socket engine.
    #[serde(default)]
    pub estimated: bool,
    /// The policy that held it (`silent`, `bait=ssh,drip=10s`, ... see
    /// `crate::engine::policy::Policy`'s `Display`); empty in records from
    /// before policies.
    #[serde(default)]
    pub policy: String,
}

impl ConnRecord {
    pub fn peer_tried_close(&self) -> bool {
        self.fin_after_secs.is_some()
    }
}

/// How a connection's end was observed, for [`engaged`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EndFacts {
    pub held_secs: f64,
    pub fin_after_secs: Option<f64>,
    pub end: EndReason,
    /// Seconds between the last packet seen from the peer and the release
    /// (TCP_INFO `last_data_recv`/`last_ack_recv`), when known.
    pub silent_secs: Option<f64>,
    /// The RST answered one of our keepalive probes (the peer was found
    /// gone), rather than arriving on its own.
    pub reset_by_probe: bool,
    /// The RST answered data we sent after the peer's last packet — bait,
    /// or an exit probe (`sys::probe`) to a peer whose FIN is stuck behind
    /// our closed window: a socket whose program has closed resets on new
    /// data, so the program quit before the RST, but possibly up to one
    /// drip or probe interval earlier.
    pub reset_by_bait: bool,
}

/// How long the attacker's program was stuck, and whether that figure is an
/// upper bound.
///
/// * A FIN ends it: the program closed (or exited) right then.
/// * A spontaneous RST ends it (`peer_reset` without an outstanding probe).
///   One that answers our bait or an exit probe, with no FIN before, ends it
///   too, flagged as an upper bound: the program had quit by then, but not
///   necessarily just then (at most one drip or probe interval earlier).
/// * Found gone (keepalives unanswered, or an RST answering a keepalive,
///   with no FIN before): the program's data was stuck behind our window, so
///   its FIN could never reach us. It ends at the last packet seen from the
///   peer, flagged as an upper bound: the program may have quit earlier while
///   its kernel kept the socket.
/// * We ended it (lifetime, eviction, shutdown) with no FIN: all of it.
///
/// Never more than `held_secs`.
pub fn engaged(f: &EndFacts) -> (f64, bool) {
    let held = f.held_secs.max(0.0);
    if let Some(fin) = f.fin_after_secs {
        return (fin.clamp(0.0, held), false);
    }
    let found_gone =
        f.end == EndReason::PeerTimeout || (f.end == EndReason::PeerReset && f.reset_by_probe);
    if f.end == EndReason::PeerReset && f.reset_by_bait && !found_gone {
        return (held, true);
    }
    if found_gone {
        let silent = f.silent_secs.unwrap_or(0.0).max(0.0);
        return ((held - silent).max(0.0), true);
    }
    (held, false)
}

/// A connection held right now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveConn {
    pub listener: String,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub original_dst: SocketAddr,
    #[serde(with = "unix_secs")]
    pub start: SystemTime,
    pub held_secs: f64,
    /// Seconds the attacker has been stuck so far: until its FIN if it sent
    /// one, else all of `held_secs`.
    #[serde(default)]
    pub engaged_secs: f64,
    pub lifetime_left_secs: f64,
    /// Bytes sitting unread in our receive queue (SIOCINQ).
    pub bytes_queued: u32,
    /// Bytes the peer has sent in all (TCP_INFO).
    pub bytes_received: u64,
    pub fin_after_secs: Option<f64>,
    /// Smoothed RTT from TCP_INFO, microseconds.
    pub rtt_us: u32,
    /// TCP state name (`ESTABLISHED`, `CLOSE_WAIT`, ...).
    pub state: String,
    /// What the peer has sent so far, named (see `ConnRecord::client`).
    #[serde(default)]
    pub client: Identity,
    /// TCP_KEEPIDLE / TCP_KEEPINTVL drawn for this connection, seconds.
    pub keepalive_idle_secs: u32,
    pub keepalive_intvl_secs: u32,
    /// The stateless engine lost track of this flow once (evicted from its
    /// bounded table) and rebuilt it from a later packet: its start time and
    /// byte count are estimates. Always false for the socket engine.
    #[serde(default)]
    pub estimated: bool,
    /// The policy holding it, as its record will name it (see
    /// `ConnRecord::policy`); empty from a server older than policies.
    #[serde(default)]
    pub policy: String,
}

/// Linux TCP state number to its `ss` name.
pub fn tcp_state_name(state: u8) -> &'static str {
    match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        _ => "UNKNOWN",
    }
}

/// Escapes peer bytes for logs: printable ASCII as is, the rest as `\xNN`.
pub fn escape_bytes(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for &c in b {
        match c {
            b'\\' => s.push_str("\\\\"),
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            0x20..=0x7e => s.push(c as char),
            _ => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    s
}

/// Seconds since the Unix epoch as a float, for storage and JSON.
pub fn to_unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub fn from_unix(secs: f64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs.max(0.0))
}

mod unix_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64((super::to_unix(*t) * 1000.0).round() / 1000.0)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let v = f64::deserialize(d)?;
        Ok(super::from_unix(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_keeps_printables_and_hexes_the_rest() {
        assert_eq!(
            escape_bytes(b"SSH-2.0\r\n\x00\xff\\"),
            "SSH-2.0\\r\\n\\x00\\xff\\\\"
        );
    }

    fn facts(end: EndReason, fin: Option<f64>, silent: Option<f64>, probe: bool) -> EndFacts {
        EndFacts {
            held_secs: 200.0,
            fin_after_secs: fin,
            end,
            silent_secs: silent,
            reset_by_probe: probe,
            reset_by_bait: false,
        }
    }

    #[test]
    fn engaged_ends_at_fin_rst_or_last_packet() {
        use EndReason::*;
        // FIN: exact, whatever ended the connection later.
        assert_eq!(
            engaged(&facts(PeerReset, Some(3.0), Some(190.0), true)),
            (3.0, false)
        );
        assert_eq!(
            engaged(&facts(Lifetime, Some(7.5), None, false)),
            (7.5, false)
        );
        // A FIN can never count more than we held.
        assert_eq!(
            engaged(&facts(Lifetime, Some(900.0), None, false)),
            (200.0, false)
        );
        // Spontaneous RST: exact at the reset.
        assert_eq!(
            engaged(&facts(PeerReset, None, Some(30.0), false)),
            (200.0, false)
        );
        // An RST answering our bait: at the reset, as an upper bound.
        let bait = EndFacts {
            reset_by_bait: true,
            ..facts(PeerReset, None, Some(8.0), false)
        };
        assert_eq!(engaged(&bait), (200.0, true));
        // ... but a FIN before it still says when the program closed.
        let bait_fin = EndFacts {
            reset_by_bait: true,
            ..facts(PeerReset, Some(42.0), Some(8.0), false)
        };
        assert_eq!(engaged(&bait_fin), (42.0, false));
        // Found gone: the last packet, as an upper bound.
        assert_eq!(
            engaged(&facts(PeerReset, None, Some(80.0), true)),
            (120.0, true)
        );
        assert_eq!(
            engaged(&facts(PeerTimeout, None, Some(150.0), false)),
            (50.0, true)
        );
        assert_eq!(
            engaged(&facts(PeerTimeout, None, Some(500.0), false)),
            (0.0, true)
        );
        // We ended it: all of it.
        for r in [
            Lifetime,
            EvictedGlobal,
            EvictedPerIp,
            EvictedPerNet,
            Shutdown,
        ] {
            assert_eq!(engaged(&facts(r, None, Some(100.0), true)), (200.0, false));
        }
    }

    #[test]
    fn end_reason_round_trips() {
        for r in EndReason::ALL {
            assert_eq!(EndReason::parse(r.as_str()), Some(r));
        }
        assert_eq!(EndReason::parse("nope"), None);
    }
}
