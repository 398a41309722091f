//! When a delayed client's first SYN came, for its record's `syn_wait_secs`
//! (syn_delay, issue 10 §3).
//!
//! The socket engine only sees a connection at accept, a delay after the
//! client's first SYN, which nftables dropped (`crate::firewall::policy`).
//! The rule that starts a delay also copies that SYN to nflog group
//! [`SYN_LOG_GROUP`](crate::firewall::policy::SYN_LOG_GROUP); a thread reads
//! the group and notes (address, port) → arrival, and the accept takes the
//! note: the seconds between are attacker time lost in SYN retransmissions.
//!
//! Bounded: two generations of at most [`CAP`] notes each, the older
//! dropped whenever the newer is one span old (the longest delay's
//! 2·D + 10 s: by then the client was accepted or gave up), so a note lives
//! one to two spans. Notes dropped unclaimed are delayed handshakes the
//! client abandoned (counted, [`SynLog::abandoned`]). When a generation is
//! full, new SYNs are not noted and their connections record a wait of 0
//! (an undercount, never more than the truth).

use crate::engine::nflog::{self, Message, NflogSocket};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Most notes per generation.
pub const CAP: usize = 65_536;

struct Notes {
    cur: HashMap<SocketAddr, Instant>,
    prev: HashMap<SocketAddr, Instant>,
    since: Instant,
}

/// The notes, shared by the reader thread and the engine.
#[derive(Clone)]
pub struct SynLog {
    notes: Arc<Mutex<Notes>>,
    span: Duration,
    abandoned: Arc<AtomicU64>,
}

impl SynLog {
    /// For delays up to `longest`.
    pub fn new(longest: Duration) -> Self {
        SynLog {
            notes: Arc::new(Mutex::new(Notes {
                cur: HashMap::new(),
                prev: HashMap::new(),
                since: Instant::now(),
            })),
            span: longest * 2 + Duration::from_secs(10),
            abandoned: Arc::new(AtomicU64::new(0)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Notes> {
        // A panic elsewhere while holding it leaves plain maps: still usable.
        self.notes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn rotate(&self, n: &mut Notes, now: Instant) {
        if now.duration_since(n.since) >= self.span {
            let old = std::mem::replace(&mut n.prev, std::mem::take(&mut n.cur));
            self.abandoned
                .fetch_add(old.len() as u64, Ordering::Relaxed);
            n.since = now;
        }
    }

    /// `peer`'s first SYN arrived at `at`.
    pub fn note(&self, peer: SocketAddr, at: Instant) {
        let mut n = self.lock();
        self.rotate(&mut n, at);
        if n.cur.len() < CAP && !n.prev.contains_key(&peer) {
            n.cur.entry(peer).or_insert(at);
        }
    }

    /// When `peer`'s first SYN came, if it was noted; forgets it.
    pub fn take(&self, peer: SocketAddr) -> Option<Instant> {
        let mut n = self.lock();
        n.cur.remove(&peer).or_else(|| n.prev.remove(&peer))
    }

    /// Noted first SYNs never accepted: delayed handshakes abandoned.
    pub fn abandoned(&self) -> u64 {
        self.abandoned.load(Ordering::Relaxed)
    }

    /// Reads `sock` for ever on a thread of its own, noting every logged
    /// SYN's source as it arrives.
    pub fn spawn_reader(&self, sock: NflogSocket) -> io::Result<()> {
        let log = self.clone();
        sock.netlink().set_nonblocking(false)?;
        std::thread::Builder::new()
            .name("synlog".into())
            .spawn(move || {
                let mut buf = vec![0u8; nflog::RECV_BUF];
                loop {
                    match sock.recv(&mut buf) {
                        Ok(len) => log.read(&buf[..len], Instant::now()),
                        Err(e) if is_transient(&e) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "syn_delay log: cannot read; waits go uncounted for a while");
                            std::thread::sleep(Duration::from_secs(1));
                        }
                    }
                }
            })?;
        Ok(())
    }

    /// Notes the source of every logged packet in one datagram.
    fn read(&self, data: &[u8], now: Instant) {
        for m in nflog::messages(data) {
            if let Ok(Message::Packet(p)) = m {
                if let Some(src) = nflog::tcp_source(p.payload) {
                    self.note(src, now);
                }
            }
        }
    }
}

/// Timeouts, interruptions and overruns (the kernel dropped messages: those
/// waits go uncounted) are not worth a warning.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    ) || e.raw_os_error() == Some(libc::ENOBUFS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_note_is_taken_once_and_the_first_syn_wins() {
        let log = SynLog::new(Duration::from_secs(60));
        let t0 = Instant::now();
        log.note(a("10.77.0.2:40000"), t0);
        log.note(a("10.77.0.2:40000"), t0 + Duration::from_secs(1));
        assert_eq!(log.take(a("10.77.0.2:40000")), Some(t0));
        assert_eq!(log.take(a("10.77.0.2:40000")), None);
        assert_eq!(log.take(a("10.77.0.2:40001")), None);
    }

    #[test]
    fn notes_live_one_to_two_spans_and_unclaimed_ones_count_as_abandoned() {
        let log = SynLog::new(Duration::from_secs(10)); // span 30 s
        let t0 = Instant::now();
        log.note(a("10.77.0.2:1"), t0);
        log.note(a("10.77.0.3:1"), t0);
        // One span later: still there (now the older generation).
        log.note(a("10.77.0.4:1"), t0 + Duration::from_secs(30));
        assert_eq!(log.take(a("10.77.0.2:1")), Some(t0));
        // Two spans: dropped, counted.
        log.note(a("10.77.0.5:1"), t0 + Duration::from_secs(60));
        assert_eq!(log.take(a("10.77.0.3:1")), None);
        assert_eq!(log.abandoned(), 1);
        assert!(log.take(a("10.77.0.4:1")).is_some());
    }

    #[test]
    fn a_full_generation_notes_nothing_more() {
        let log = SynLog::new(Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..CAP as u32 {
            let ip = std::net::Ipv4Addr::from(0x0a4d_0000 + i);
            log.note(SocketAddr::new(ip.into(), 1), t0);
        }
        log.note(a("10.78.0.1:1"), t0);
        assert_eq!(log.take(a("10.78.0.1:1")), None);
        assert_eq!(log.take(a("10.77.0.7:1")), Some(t0));
    }
}
