//! Which connection records reach the log under a flood.
//!
//! Every ended connection is a record (one log line) and a history row. A
//! flood of short connections — one host cycling through its ports, or a
//! site through its /64s — would otherwise write thousands of lines a second
//! into the journal and bury the records of every other host. The history
//! and the metrics still count every connection; only the log lines are
//! limited, and what was held back is said in a summary line
//! (`records suppressed`, with how many and from how many hosts).
//!
//! Two token buckets: one per host (IPv4 address or IPv6 /64), so a
//! flooding host cannot use up what the others need, and one for all, so
//! many hosts together cannot either. The per-host buckets live in a fixed
//! table indexed by a hash of the host (hosts that collide share a bucket):
//! memory is bounded whatever the number of hosts.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many records may be logged. 0 turns a limit off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecordLimits {
    /// Records per second for all hosts together (the burst is 5 s worth).
    pub per_sec: u32,
    /// Burst per host; it refills at one record a second.
    pub per_host: u32,
}

impl Default for RecordLimits {
    /// 200 a second overall (bursts of 1,000), 100 per host then one a second.
    fn default() -> Self {
        RecordLimits {
            per_sec: 200,
            per_host: 100,
        }
    }
}

impl RecordLimits {
    pub const OFF: RecordLimits = RecordLimits {
        per_sec: 0,
        per_host: 0,
    };
}

/// Per-host buckets kept (a power of two).
const HOSTS: usize = 4096;
/// How often a summary of what was held back is written, at most.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    used: bool,
    key: u64,
    tokens: f64,
    /// Seconds since the gate's epoch at the last refill.
    at: f64,
    /// The summary period in which this host last had a record held back.
    held_in: u64,
}

/// What was held back since the last summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Suppressed {
    pub records: u64,
    /// Distinct hosts among them (approximate: hosts sharing a bucket count once).
    pub hosts: u64,
}

/// The two buckets and the count of what they held back.
#[derive(Debug)]
pub struct RecordGate {
    limits: RecordLimits,
    epoch: Instant,
    all_tokens: f64,
    all_at: f64,
    hosts: Vec<Bucket>,
    period: u64,
    period_start: f64,
    held: Suppressed,
}

impl RecordGate {
    pub fn new(limits: RecordLimits) -> Self {
        RecordGate {
            limits,
            epoch: Instant::now(),
            all_tokens: f64::from(limits.per_sec) * 5.0,
            all_at: 0.0,
            hosts: Vec::new(),
            period: 1,
            period_start: 0.0,
            held: Suppressed::default(),
        }
    }

    /// May the record of a connection from `peer` be logged at `now`?
    pub fn allow(&mut self, peer: IpAddr, now: Instant) -> bool {
        let t = now.saturating_duration_since(self.epoch).as_secs_f64();
        let mut ok = true;
        let mut bucket = None;
        if self.limits.per_host > 0 {
            if self.hosts.is_empty() {
                self.hosts = vec![Bucket::default(); HOSTS];
            }
            let key = crate::engine::socket::table::peer_key(peer, 64);
            let i = (mix(key) as usize) & (HOSTS - 1);
            let cap = f64::from(self.limits.per_host);
            let b = &mut self.hosts[i];
            if !b.used || b.key != key {
                *b = Bucket {
                    used: true,
                    key,
                    tokens: cap,
                    at: t,
                    held_in: 0,
                };
            }
            b.tokens = (b.tokens + (t - b.at)).min(cap);
            b.at = t;
            ok = b.tokens >= 1.0;
            bucket = Some(i);
        }
        if ok && self.limits.per_sec > 0 {
            let rate = f64::from(self.limits.per_sec);
            self.all_tokens = (self.all_tokens + (t - self.all_at) * rate).min(rate * 5.0);
            self.all_at = t;
            ok = self.all_tokens >= 1.0;
            if ok {
                self.all_tokens -= 1.0;
            }
        }
        if let Some(i) = bucket {
            let b = &mut self.hosts[i];
            if ok {
                b.tokens -= 1.0;
            } else if b.held_in != self.period {
                b.held_in = self.period;
                self.held.hosts += 1;
            }
        } else if !ok {
            self.held.hosts = self.held.hosts.max(1);
        }
        if !ok {
            if self.held.records == 0 {
                self.period_start = t;
            }
            self.held.records += 1;
        }
        ok
    }

    /// What was held back, once [`SUMMARY_EVERY`] has passed since the
    /// first of it (or at once with `force`); the count starts again.
    pub fn take_summary(&mut self, now: Instant, force: bool) -> Option<Suppressed> {
        if self.held.records == 0 {
            return None;
        }
        let t = now.saturating_duration_since(self.epoch).as_secs_f64();
        if !force && t - self.period_start < SUMMARY_EVERY.as_secs_f64() {
            return None;
        }
        self.period += 1;
        Some(std::mem::take(&mut self.held))
    }
}

/// A cheap 64-bit mix (splitmix64's finaliser), so neighbouring addresses
/// land in different buckets.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The daemon's gate; `None` (the default, and in-process use): every
/// record is logged.
static GATE: Mutex<Option<RecordGate>> = Mutex::new(None);

/// Sets the limits of the records this process logs (at start).
pub fn set_limits(limits: RecordLimits) {
    let gate = (limits != RecordLimits::OFF).then(|| RecordGate::new(limits));
    *GATE.lock().unwrap_or_else(|p| p.into_inner()) = gate;
}

/// Whether the record of a connection from `peer` is logged; writes the
/// summary of what was held back when it is due.
pub fn admit(peer: IpAddr) -> bool {
    let mut g = GATE.lock().unwrap_or_else(|p| p.into_inner());
    let Some(gate) = g.as_mut() else {
        return true;
    };
    let now = Instant::now();
    let ok = gate.allow(peer, now);
    if let Some(s) = gate.take_summary(now, false) {
        summary(s);
    }
    ok
}

/// Writes the summary of what is still held back (at shutdown).
pub fn flush() {
    let mut g = GATE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = g
        .as_mut()
        .and_then(|g| g.take_summary(Instant::now(), true))
    {
        summary(s);
    }
}

fn summary(s: Suppressed) {
    tracing::warn!(
        suppressed = s.records,
        hosts = s.hosts,
        "records suppressed (flood); history and metrics count every connection"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_flooding_host_is_held_back_and_the_others_are_not() {
        let mut g = RecordGate::new(RecordLimits {
            per_sec: 0,
            per_host: 3,
        });
        let t0 = g.epoch;
        let flood: Vec<bool> = (0..10).map(|_| g.allow(ip("192.0.2.1"), t0)).collect();
        assert_eq!(flood.iter().filter(|&&x| x).count(), 3);
        assert!(g.allow(ip("192.0.2.2"), t0), "another host still logs");
        for _ in 0..3 {
            assert!(g.allow(ip("2001:db8::1"), t0));
        }
        assert!(
            !g.allow(ip("2001:db8::2"), t0),
            "the same /64 is the same host"
        );
        assert_eq!(g.take_summary(t0, false), None, "not yet due");
        let s = g.take_summary(t0 + SUMMARY_EVERY, false).unwrap();
        assert_eq!(s.records, 8);
        assert_eq!(s.hosts, 2);
        assert_eq!(g.take_summary(t0 + SUMMARY_EVERY * 2, true), None);
        // One record a second comes back.
        assert!(g.allow(ip("192.0.2.1"), t0 + Duration::from_millis(1100)));
        assert!(!g.allow(ip("192.0.2.1"), t0 + Duration::from_millis(1200)));
    }

    #[test]
    fn many_hosts_together_are_held_to_the_overall_rate() {
        let mut g = RecordGate::new(RecordLimits {
            per_sec: 10,
            per_host: 100,
        });
        let t0 = g.epoch;
        let n = (0..200u32)
            .filter(|i| g.allow(IpAddr::from([10, 77, (i / 250) as u8, (i % 250) as u8]), t0))
            .count();
        assert_eq!(n, 50, "a burst of 5 s worth");
        let later = t0 + Duration::from_secs(1);
        let m = (0..200u32)
            .filter(|i| g.allow(IpAddr::from([10, 78, 0, (i % 250) as u8]), later))
            .count();
        assert_eq!(m, 10);
        let s = g.take_summary(later, true).unwrap();
        assert_eq!(s.records, 340);
        assert!(s.hosts > 100, "{s:?}");
    }
}
