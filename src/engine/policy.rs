//! Per-port policies: what a trapped connection meets, chosen by the port
//! the peer aimed at — its original destination (`SO_ORIGINAL_DST` after an
//! nftables redirect), which for a direct listener is the listener's own
//! port. The default is the silent trap: a tiny window, never a byte sent.
//!
//! A policy combines three independent treatments (issue 10 §3):
//!
//! * **bait** — the socket engine drips protocol-correct bytes that never
//!   complete (SSH pre-banner lines, or an HTTP status line and then header
//!   lines) so clients whose timeout is per read keep waiting;
//! * **window zero** — our SYN/ACK and every later segment advertise a zero
//!   window (an nftables output rule, written by `crate::firewall`), so the
//!   peer cannot send a byte and its data never occupies our memory;
//! * **syn_delay** — the handshake completes only on the client's SYN
//!   retransmission at least that long after its first SYN, so a client with
//!   separate connect and read timeouts loses both.
//!
//! This module only says *what*; the engines and the firewall module do it.

use std::fmt;
use std::time::Duration;

/// Protocol-correct bytes dripped to the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bait {
    /// RFC 4253 §4.2 lines before an identification string that never comes.
    Ssh,
    /// `HTTP/1.1 200 OK`, then header lines, never the blank line.
    Http,
}

impl Bait {
    pub fn as_str(self) -> &'static str {
        match self {
            Bait::Ssh => "ssh",
            Bait::Http => "http",
        }
    }

    pub fn parse(s: &str) -> Option<Bait> {
        match s {
            "ssh" => Some(Bait::Ssh),
            "http" => Some(Bait::Http),
            _ => None,
        }
    }

    /// The protocol whose opening (`crate::classify::opens`) starts it.
    pub fn protocol(self) -> crate::classify::Protocol {
        match self {
            Bait::Ssh => crate::classify::Protocol::Ssh,
            Bait::Http => crate::classify::Protocol::Http,
        }
    }

    /// The interval chosen from measurement (README, "Policies"): SSH 10 s
    /// is under paramiko's 15 s per read before the first line ends (it
    /// restarts its clock on every `recv` that returns bytes); HTTP 4 s is
    /// under the common 5 s and 10 s per-read timeouts of scanners and
    /// `requests`.
    pub fn default_drip(self) -> Duration {
        match self {
            Bait::Ssh => Duration::from_secs(10),
            Bait::Http => Duration::from_secs(4),
        }
    }
}

/// When bait begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BaitStart {
    /// Once the bytes the peer queued open the bait's protocol (SSH `SSH-`,
    /// HTTP a request line): silent until then, and for good if they open
    /// anything else. A banner grabber (writes anything, quits on the first
    /// byte it reads) is then held as by silence instead of freed by our
    /// first segment.
    #[default]
    Peer,
    /// At accept, without waiting: for clients that wait for the server to
    /// speak first (libssh), and the only start window zero allows (the
    /// peer's bytes never arrive).
    Accept,
}

impl BaitStart {
    pub fn as_str(self) -> &'static str {
        match self {
            BaitStart::Peer => "peer",
            BaitStart::Accept => "accept",
        }
    }

    pub fn parse(s: &str) -> Option<BaitStart> {
        match s {
            "peer" => Some(BaitStart::Peer),
            "accept" => Some(BaitStart::Accept),
            _ => None,
        }
    }
}

/// Shortest and longest drip interval (the drip wheel spans 409.6 s).
pub const DRIP_MIN: Duration = Duration::from_millis(100);
pub const DRIP_MAX: Duration = Duration::from_secs(300);
/// Longest syn_delay: a Linux client gives up after ~127 s of SYN
/// retransmissions (tcp_syn_retries = 6); longer would only act as DROP.
pub const SYN_DELAY_MAX: Duration = Duration::from_secs(600);

/// How long an address that gave up on a delayed handshake and retried is
/// exempt from syn_delay: an hour covers a brute-force tool's or a
/// scanner's whole run (nmap's SYN scan, then its `-sV` connects, minutes
/// apart), so it keeps meeting the silent trap instead of a delay it has
/// shown it will not sit out; after that a new run is delayed once again.
pub const SYN_EXEMPT_SECS: u32 = 3600;

/// The default learn window of syn_delay's learn mode: a connection the
/// peer ends (FIN or RST) within this long of the accept has escaped the
/// silent trap early, and its address's later handshakes are delayed.
/// 180 s is above the longest early exit measured against silence
/// (asyncssh's absolute 120 s login timeout; paramiko 15 s, requests 10 s,
/// hydra ~33 s), so tools the silent trap holds longer never learn.
pub const SYN_LEARN_DEFAULT: Duration = Duration::from_secs(180);
/// Longest learn window (the nftables set timeout of a young connection).
pub const SYN_LEARN_MAX: Duration = Duration::from_secs(3600);
/// How long a learned address stays learned (its handshakes delayed):
/// a day covers a brute-force tool's or scanner's repeated runs against a
/// host, and bounds what a mistaken lesson costs a later client of that
/// address.
pub const SYN_LEARNED_SECS: u32 = 86_400;

/// What one port's connections meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policy {
    pub bait: Option<Bait>,
    /// Interval between two bait segments of one connection.
    pub drip: Duration,
    /// When bait begins (ignored without bait).
    pub bait_start: BaitStart,
    /// Advertise a zero window from the SYN/ACK on.
    pub window_zero: bool,
    /// Complete the handshake only on a SYN at least this long after the
    /// client's first.
    pub syn_delay: Option<Duration>,
    /// Which addresses syn_delay applies to (ignored without syn_delay).
    pub syn_mode: SynMode,
}

/// Which addresses a syn_delay delays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynMode {
    /// Only addresses that escaped the silent trap early: one of their
    /// connections on a learning port was ended by the peer within `window`
    /// of its accept (then for [`SYN_LEARNED_SECS`]). A tool the silent
    /// trap holds long is never delayed, so never shortened (medusa and
    /// ncrack make one connect with a 21 s / 6 s timeout: a delay frees
    /// them where silence holds them); one that escaped by a read timeout
    /// loses its connect timeout too on its next visit. The default.
    Learn { window: Duration },
    /// Every address's first handshake (the adaptive exemption still
    /// applies).
    Always,
}

impl SynMode {
    pub const DEFAULT: SynMode = SynMode::Learn {
        window: SYN_LEARN_DEFAULT,
    };

    /// The learn window, `None` for `Always`.
    pub fn learn_window(self) -> Option<Duration> {
        match self {
            SynMode::Learn { window } => Some(window),
            SynMode::Always => None,
        }
    }
}

impl Default for SynMode {
    fn default() -> SynMode {
        SynMode::DEFAULT
    }
}

impl Policy {
    /// The silent trap (the default).
    pub const SILENT: Policy = Policy {
        bait: None,
        drip: Duration::ZERO,
        bait_start: BaitStart::Peer,
        window_zero: false,
        syn_delay: None,
        syn_mode: SynMode::DEFAULT,
    };

    pub fn is_silent(&self) -> bool {
        self.bait.is_none() && !self.window_zero && self.syn_delay.is_none()
    }
}

impl fmt::Display for Policy {
    /// `silent`, or e.g. `bait=ssh,drip=10s,start=accept,window=zero,syn_delay=60s`:
    /// the `policy` field of records (`start` only when it is `accept`;
    /// `syn_mode=always` or `syn_learn=...` only when not the default).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_silent() {
            return f.write_str("silent");
        }
        let mut parts = Vec::new();
        if let Some(b) = self.bait {
            parts.push(format!("bait={}", b.as_str()));
            parts.push(format!("drip={}", human(self.drip)));
            if self.bait_start == BaitStart::Accept {
                parts.push("start=accept".to_string());
            }
        }
        if self.window_zero {
            parts.push("window=zero".to_string());
        }
        if let Some(d) = self.syn_delay {
            parts.push(format!("syn_delay={}", human(d)));
            match self.syn_mode {
                SynMode::Always => parts.push("syn_mode=always".to_string()),
                SynMode::Learn { window } if window != SYN_LEARN_DEFAULT => {
                    parts.push(format!("syn_learn={}", human(window)))
                }
                SynMode::Learn { .. } => {}
            }
        }
        f.write_str(&parts.join(","))
    }
}

fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Every policy of a server: the default and the per-port ones.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policies {
    pub default: Policy,
    /// By original destination port; sorted, one entry per port, at most
    /// 254 (a slot stores the index in a byte).
    pub ports: Vec<(u16, Policy)>,
}

impl Policies {
    /// Most per-port entries.
    pub const MAX_PORTS: usize = 254;

    /// The index stored per connection: 0 = default, i + 1 = `ports[i]`.
    pub fn index_of(&self, port: u16) -> u8 {
        match self.ports.binary_search_by_key(&port, |(p, _)| *p) {
            Ok(i) => (i + 1).min(255) as u8,
            Err(_) => 0,
        }
    }

    pub fn get(&self, index: u8) -> &Policy {
        match usize::from(index).checked_sub(1) {
            Some(i) => self.ports.get(i).map_or(&self.default, |(_, p)| p),
            None => &self.default,
        }
    }

    /// All policies in index order.
    pub fn all(&self) -> impl Iterator<Item = &Policy> {
        std::iter::once(&self.default).chain(self.ports.iter().map(|(_, p)| p))
    }

    pub fn any_bait(&self) -> bool {
        self.all().any(|p| p.bait.is_some())
    }

    /// Whether any policy needs nftables rules (window zero, syn_delay).
    pub fn needs_firewall(&self) -> bool {
        self.all().any(|p| p.window_zero || p.syn_delay.is_some())
    }

    /// Inserts or replaces the policy of `port`, keeping the list sorted.
    pub fn set_port(&mut self, port: u16, p: Policy) {
        match self.ports.binary_search_by_key(&port, |(q, _)| *q) {
            Ok(i) => self.ports[i].1 = p,
            Err(i) => self.ports.insert(i, (port, p)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_falls_back_to_default() {
        let mut ps = Policies::default();
        let ssh = Policy {
            bait: Some(Bait::Ssh),
            drip: Duration::from_secs(10),
            ..Policy::SILENT
        };
        ps.set_port(80, Policy::SILENT);
        ps.set_port(22, ssh);
        assert_eq!(ps.ports.iter().map(|x| x.0).collect::<Vec<_>>(), [22, 80]);
        assert_eq!(ps.index_of(22), 1);
        assert_eq!(ps.index_of(23), 0);
        assert_eq!(*ps.get(ps.index_of(22)), ssh);
        assert_eq!(*ps.get(200), Policy::SILENT);
        assert!(ps.any_bait() && !ps.needs_firewall());
    }

    #[test]
    fn describes_itself() {
        assert_eq!(Policy::SILENT.to_string(), "silent");
        let p = Policy {
            bait: Some(Bait::Http),
            drip: Duration::from_millis(1500),
            bait_start: BaitStart::Accept,
            window_zero: true,
            syn_delay: Some(Duration::from_secs(60)),
            syn_mode: SynMode::DEFAULT,
        };
        assert_eq!(
            p.to_string(),
            "bait=http,drip=1500ms,start=accept,window=zero,syn_delay=60s"
        );
        let peer = Policy {
            bait_start: BaitStart::Peer,
            ..p
        };
        assert_eq!(
            peer.to_string(),
            "bait=http,drip=1500ms,window=zero,syn_delay=60s"
        );
        let always = Policy {
            syn_mode: SynMode::Always,
            ..peer
        };
        assert!(always
            .to_string()
            .ends_with("syn_delay=60s,syn_mode=always"));
        let learn = Policy {
            syn_mode: SynMode::Learn {
                window: Duration::from_secs(5),
            },
            ..peer
        };
        assert!(learn.to_string().ends_with("syn_delay=60s,syn_learn=5s"));
    }
}
