//! syn_delay for the stateless engine (issue 10 §3): a SYN is answered only
//! when it comes at least the policy's delay after the first SYN of the same
//! 4-tuple — a client's retransmission — so a client with separate connect
//! and read timeouts loses both.
//!
//! Bounded state: a fixed table of [`SLOTS`] entries (8 bytes each: a tag
//! of the tuple's keyed hash and the tick of its first SYN), indexed by that
//! hash, whatever the SYN rate. A flood overwrites entries; a client whose
//! entry was overwritten starts waiting again (its connect is delayed more,
//! never less), which only costs the flood's own clients.

use super::packet::Tuple;
use crate::engine::policy::Policies;
use crate::engine::ticks;
use siphasher::sip::SipHasher13;
use std::hash::Hasher;

/// Entries in the table (512 KiB).
pub const SLOTS: usize = 1 << 16;

pub struct SynDelay {
    /// Delay in ticks per policy index (0 = none).
    delays: Vec<u32>,
    policies: Policies,
    /// (tag, first SYN tick); tag 0 = empty.
    table: Vec<(u32, u32)>,
    keys: (u64, u64),
}

impl SynDelay {
    /// `None` when no policy delays SYNs.
    pub fn new(policies: &Policies) -> Option<SynDelay> {
        let delays: Vec<u32> = policies
            .all()
            .map(|p| p.syn_delay.map_or(0, |d| ticks(d).max(1)))
            .collect();
        if delays.iter().all(|&d| d == 0) {
            return None;
        }
        let mut r = rand::rng();
        Some(SynDelay {
            delays,
            policies: policies.clone(),
            table: vec![(0, 0); SLOTS],
            keys: (rand::Rng::random(&mut r), rand::Rng::random(&mut r)),
        })
    }

    /// Whether a SYN of `t` arriving at tick `now` is answered.
    pub fn pass(&mut self, t: &Tuple, now: u32) -> bool {
        let idx = self.policies.index_of(t.dst_port);
        let delay = self.delays.get(usize::from(idx)).copied().unwrap_or(0);
        if delay == 0 {
            return true;
        }
        let mut h = SipHasher13::new_with_keys(self.keys.0, self.keys.1);
        let (b, n) = t.key_bytes();
        h.write(&b[..n]);
        let hash = h.finish();
        let slot = &mut self.table[(hash as usize) & (SLOTS - 1)];
        let tag = ((hash >> 32) as u32) | 1;
        let age = now.wrapping_sub(slot.1);
        // Forgotten after 2·delay + 5 s: the retransmission at or after the
        // delay comes well before (backoff at most doubles).
        if slot.0 == tag && age <= 2 * delay + 50 {
            return age >= delay;
        }
        *slot = (tag, now);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::policy::Policy;
    use std::time::Duration;

    fn tuple(sport: u16, dport: u16) -> Tuple {
        Tuple {
            src: "10.77.0.2".parse().unwrap(),
            dst: "10.77.0.1".parse().unwrap(),
            src_port: sport,
            dst_port: dport,
        }
    }

    #[test]
    fn answers_the_retransmission_after_the_delay_only() {
        let mut ps = Policies::default();
        ps.set_port(
            22,
            Policy {
                syn_delay: Some(Duration::from_secs(3)),
                ..Policy::SILENT
            },
        );
        let mut d = SynDelay::new(&ps).unwrap();
        let a = tuple(40000, 22);
        assert!(!d.pass(&a, 100)); // first SYN
        assert!(!d.pass(&a, 110)); // retransmission at 1 s
        assert!(!d.pass(&a, 129));
        assert!(d.pass(&a, 130)); // 3 s after the first
        assert!(d.pass(&a, 131)); // and its own retransmissions
                                  // Another port: no delay; another client: its own wait.
        assert!(d.pass(&tuple(40000, 80), 100));
        assert!(!d.pass(&tuple(40001, 22), 131));
        // Long after: a new first SYN.
        assert!(!d.pass(&a, 100 + 30 + 30 + 51 + 1000));
        assert!(SynDelay::new(&Policies::default()).is_none());
    }
}
