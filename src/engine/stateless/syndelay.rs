//! syn_delay for the stateless engine (issue 10 §3): a SYN is answered only
//! when it comes at least the policy's delay after the first SYN of the same
//! connect attempt (4-tuple and initial sequence number: retransmissions
//! repeat it, a new attempt from the same port has another) — a client's
//! retransmission — so a client with separate connect and read timeouts
//! loses both.
//!
//! Adaptive, as the socket engine's nftables rules (`crate::firewall::policy`):
//! a SYN of a *new* attempt from an address with an attempt pending, or
//! abandoned within [`FAST_SECS`] (a delayed attempt that completes clears
//! its address), is a client that gave up on the delayed handshake and
//! retries or comes back (nmap's SYN scan retransmitting from a new port; a
//! brute-force tool with a short connect timeout run again). Delaying it
//! again would free it as DROP does, so it is answered at once and the
//! address is exempt for as long: such a client meets the silent trap,
//! never less.
//!
//! Learn mode (the default, [`SynMode::Learn`]): only addresses that
//! escaped the silent trap early are delayed — a flow of a learning port
//! whose peer ended it (FIN or RST) within the learn window of its accept
//! puts its address in a learned table for [`LEARNED_SECS`]; other
//! addresses' SYNs are answered at once. Two more tables: [`SLOTS`] young
//! flows (accept tick) and [`ADDR_SLOTS`] learned addresses.
//!
//! Bounded state, whatever the SYN rate: fixed tables indexed by a keyed
//! hash, 8 bytes an entry (a tag of the hash and a tick) — [`SLOTS`]
//! handshakes being delayed, [`ADDR_SLOTS`] addresses with an attempt
//! pending or abandoned and as many exempt ones, and [`SLOTS`] waits of accepted handshakes kept
//! for their records (written only by completed handshakes, so a SYN flood
//! never overwrites them). A flood overwrites the others: a client whose
//! entry was overwritten starts waiting again or loses its exemption (its
//! connect is delayed more), which only costs the flood's own clients; a
//! wait overwritten before its record is written is recorded as 0.

use super::packet::Tuple;
use crate::engine::policy::{Policies, SynMode};
use crate::engine::{ticks, TICKS_PER_SEC};
use siphasher::sip::SipHasher13;
use std::hash::Hasher;
use std::net::{IpAddr, SocketAddr};

pub use crate::engine::policy::SYN_EXEMPT_SECS as FAST_SECS;
pub use crate::engine::policy::SYN_LEARNED_SECS as LEARNED_SECS;

/// Entries in the handshake table and in the waits table (512 KiB each).
pub const SLOTS: usize = 1 << 16;
/// Entries in each address table (128 KiB each).
pub const ADDR_SLOTS: usize = 1 << 14;
const FAST_TICKS: u32 = FAST_SECS * TICKS_PER_SEC;
const LEARNED_TICKS: u32 = LEARNED_SECS * TICKS_PER_SEC;

pub struct SynDelay {
    /// Delay in ticks per policy index (0 = none).
    delays: Vec<u32>,
    /// Learn window in ticks per policy index (0 = mode always).
    learn: Vec<u32>,
    policies: Policies,
    /// Handshakes being delayed: (tag, first SYN tick); tag 0 = empty.
    table: Vec<(u32, u32)>,
    /// Addresses with an attempt pending or abandoned: (tag, latest first
    /// SYN tick); cleared when a delayed attempt completes.
    addrs: Vec<(u32, u32)>,
    /// Exempt addresses: (tag, tick they were exempted).
    fast: Vec<(u32, u32)>,
    /// Accepted delayed handshakes: (tag, ticks from first SYN to accept).
    waits: Vec<(u32, u32)>,
    /// Accepted flows of learning ports: (tag, accept tick).
    young: Vec<(u32, u32)>,
    /// Learned addresses: (tag, tick they were learned).
    learned: Vec<(u32, u32)>,
    keys: (u64, u64),
    exempted: u64,
}

/// (index, tag) of `hash` in a table of `slots` entries.
fn slot(hash: u64, slots: usize) -> (usize, u32) {
    ((hash as usize) & (slots - 1), ((hash >> 32) as u32) | 1)
}

fn ip_bytes(ip: IpAddr, b: &mut [u8; 16]) -> usize {
    match ip {
        IpAddr::V4(a) => {
            b[..4].copy_from_slice(&a.octets());
            4
        }
        IpAddr::V6(a) => {
            b.copy_from_slice(&a.octets());
            16
        }
    }
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
        let learn = policies
            .all()
            .map(|p| match p.syn_mode {
                SynMode::Learn { window } => ticks(window).max(1),
                SynMode::Always => 0,
            })
            .collect();
        let mut r = rand::rng();
        Some(SynDelay {
            delays,
            learn,
            policies: policies.clone(),
            table: vec![(0, 0); SLOTS],
            addrs: vec![(0, 0); ADDR_SLOTS],
            fast: vec![(0, 0); ADDR_SLOTS],
            waits: vec![(0, 0); SLOTS],
            young: vec![(0, 0); SLOTS],
            learned: vec![(0, 0); ADDR_SLOTS],
            keys: (rand::Rng::random(&mut r), rand::Rng::random(&mut r)),
            exempted: 0,
        })
    }

    fn hasher(&self, domain: u8) -> SipHasher13 {
        let mut h = SipHasher13::new_with_keys(self.keys.0, self.keys.1);
        h.write_u8(domain);
        h
    }

    /// One connect attempt: the tuple and its initial sequence number.
    fn attempt_hash(&self, t: &Tuple, isn: u32) -> u64 {
        let mut h = self.hasher(0);
        let (b, n) = t.key_bytes();
        h.write(&b[..n]);
        h.write_u32(isn);
        h.finish()
    }

    fn addr_hash(&self, ip: IpAddr) -> u64 {
        let mut h = self.hasher(1);
        let mut b = [0u8; 16];
        let n = ip_bytes(ip, &mut b);
        h.write(&b[..n]);
        h.finish()
    }

    /// A flow's key for its wait: the peer and our port (a record knows
    /// those even when it lost our address).
    fn flow_hash(&self, peer: SocketAddr, local_port: u16) -> u64 {
        let mut h = self.hasher(2);
        let mut b = [0u8; 16];
        let n = ip_bytes(peer.ip(), &mut b);
        h.write(&b[..n]);
        h.write_u16(peer.port());
        h.write_u16(local_port);
        h.finish()
    }

    fn delay(&self, port: u16) -> u32 {
        let idx = self.policies.index_of(port);
        self.delays.get(usize::from(idx)).copied().unwrap_or(0)
    }

    /// The learn window of `port`'s delay, 0 for mode always.
    fn learn_window(&self, port: u16) -> u32 {
        let idx = self.policies.index_of(port);
        self.learn.get(usize::from(idx)).copied().unwrap_or(0)
    }

    fn is_learned(&self, ip: IpAddr, now: u32) -> bool {
        let (a, atag) = slot(self.addr_hash(ip), ADDR_SLOTS);
        let l = self.learned[a];
        l.0 == atag && now.wrapping_sub(l.1) <= LEARNED_TICKS
    }

    /// Whether a SYN of `t` with sequence number `isn` arriving at tick
    /// `now` is answered.
    pub fn pass(&mut self, t: &Tuple, isn: u32, now: u32) -> bool {
        let delay = self.delay(t.dst_port);
        if delay == 0 {
            return true;
        }
        if self.learn_window(t.dst_port) > 0 && !self.is_learned(t.src, now) {
            return true;
        }
        let (i, tag) = slot(self.attempt_hash(t, isn), SLOTS);
        let s = self.table[i];
        let (a, atag) = slot(self.addr_hash(t.src), ADDR_SLOTS);
        // Forgotten after 2·delay + 5 s: the retransmission at or after the
        // delay comes well before (backoff at most doubles).
        if s.0 == tag && now.wrapping_sub(s.1) <= 2 * delay + 50 {
            let done = now.wrapping_sub(s.1) >= delay;
            if done && self.addrs[a].0 == atag {
                // Sat the delay out: its next attempt may be delayed again.
                self.addrs[a] = (0, 0);
            }
            return done;
        }
        let f = self.fast[a];
        if f.0 == atag && now.wrapping_sub(f.1) <= FAST_TICKS {
            return true;
        }
        let p = self.addrs[a];
        if p.0 == atag && now.wrapping_sub(p.1) <= FAST_TICKS {
            // A new attempt while one is pending or was abandoned: gave up
            // and retried, or came back.
            self.fast[a] = (atag, now);
            self.exempted += 1;
            return true;
        }
        self.table[i] = (tag, now);
        self.addrs[a] = (atag, now);
        false
    }

    /// A handshake of `t` whose SYN had sequence number `isn` completed at
    /// `now` (its ACK made a new flow): if its SYN was delayed, keeps the
    /// ticks from its first SYN to now for the record
    /// ([`SynDelay::take_wait`]).
    pub fn accepted(&mut self, t: &Tuple, isn: u32, now: u32) {
        let delay = self.delay(t.dst_port);
        if delay == 0 {
            return;
        }
        if self.learn_window(t.dst_port) > 0 {
            let (y, ytag) = slot(
                self.flow_hash(SocketAddr::new(t.src, t.src_port), t.dst_port),
                SLOTS,
            );
            self.young[y] = (ytag, now);
        }
        let (i, tag) = slot(self.attempt_hash(t, isn), SLOTS);
        let s = self.table[i];
        let age = now.wrapping_sub(s.1);
        // Delayed (not exempt: exempt tuples are never in the table), and
        // the ACK no later than a lost SYN/ACK's retransmissions allow.
        if s.0 == tag && age >= delay && age <= 4 * delay + 300 {
            let (w, wtag) = slot(
                self.flow_hash(SocketAddr::new(t.src, t.src_port), t.dst_port),
                SLOTS,
            );
            self.waits[w] = (wtag, age);
        }
    }

    /// The peer ended its flow `t` (FIN or RST) at `now`: within the learn
    /// window of its accept, its address escaped the silent trap early and
    /// is learned (its later handshakes are delayed).
    pub fn peer_ended(&mut self, t: &Tuple, now: u32) {
        let window = self.learn_window(t.dst_port);
        if window == 0 || self.delay(t.dst_port) == 0 {
            return;
        }
        let (y, ytag) = slot(
            self.flow_hash(SocketAddr::new(t.src, t.src_port), t.dst_port),
            SLOTS,
        );
        let v = self.young[y];
        if v.0 != ytag {
            return;
        }
        self.young[y] = (0, 0);
        if now.wrapping_sub(v.1) <= window {
            let (a, atag) = slot(self.addr_hash(t.src), ADDR_SLOTS);
            self.learned[a] = (atag, now);
        }
    }

    /// Ticks the flow of `peer` to our `local_port` waited for its
    /// handshake (0 when it was not delayed or its entry was overwritten);
    /// forgets them.
    pub fn take_wait(&mut self, peer: SocketAddr, local_port: u16) -> u32 {
        let (w, wtag) = slot(self.flow_hash(peer, local_port), SLOTS);
        if self.waits[w].0 != wtag {
            return 0;
        }
        std::mem::take(&mut self.waits[w]).1
    }

    /// Addresses exempted so far: clients that gave up on a delayed
    /// handshake and retried.
    pub fn exempted(&self) -> u64 {
        self.exempted
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

    fn delay3() -> SynDelay {
        delay3_mode(SynMode::Always)
    }

    fn delay3_mode(syn_mode: SynMode) -> SynDelay {
        let mut ps = Policies::default();
        ps.set_port(
            22,
            Policy {
                syn_delay: Some(Duration::from_secs(3)),
                syn_mode,
                ..Policy::SILENT
            },
        );
        SynDelay::new(&ps).unwrap()
    }

    #[test]
    fn learn_mode_delays_only_an_address_whose_flow_ended_early() {
        let mut d = delay3_mode(SynMode::Learn {
            window: Duration::from_secs(5),
        });
        let a = tuple(40000, 22);
        // Not learned: answered at once.
        assert!(d.pass(&a, 7, 100));
        d.accepted(&a, 7, 101);
        // It stays past the window, then closes: nothing learned.
        d.peer_ended(&a, 101 + 51);
        let b = tuple(40001, 22);
        assert!(d.pass(&b, 9, 200));
        d.accepted(&b, 9, 201);
        // This one closes after 1 s: the address is learned ...
        d.peer_ended(&b, 211);
        // ... and its next handshake is delayed.
        let c = tuple(40002, 22);
        assert!(!d.pass(&c, 5, 300));
        assert!(d.pass(&c, 5, 330));
        // Other addresses are not.
        let mut other = tuple(40000, 22);
        other.src = "10.77.0.3".parse().unwrap();
        assert!(d.pass(&other, 7, 300));
        // A flow ended twice teaches once; a flow never accepted not at all.
        d.peer_ended(&other, 301);
        assert!(d.pass(&tuple_from("10.77.0.3", 40009), 3, 302));
        // Learned for LEARNED_SECS, then forgotten.
        assert!(d.pass(&tuple(40003, 22), 5, 211 + LEARNED_TICKS + 1));
    }

    fn tuple_from(src: &str, sport: u16) -> Tuple {
        let mut t = tuple(sport, 22);
        t.src = src.parse().unwrap();
        t
    }

    #[test]
    fn answers_the_retransmission_after_the_delay_only() {
        let mut d = delay3();
        let a = tuple(40000, 22);
        assert!(!d.pass(&a, 7, 100)); // first SYN
        assert!(!d.pass(&a, 7, 110)); // retransmission at 1 s
        assert!(!d.pass(&a, 7, 129));
        assert!(d.pass(&a, 7, 130)); // 3 s after the first
        assert!(d.pass(&a, 7, 131)); // and its own retransmissions
                                     // Another port: no delay.
        assert!(d.pass(&tuple(40000, 80), 7, 100));
        // Long after: a new first SYN.
        assert!(!d.pass(&a, 7, 100 + 30 + 30 + 51 + 1000));
        assert_eq!(d.exempted(), 0);
        assert!(SynDelay::new(&Policies::default()).is_none());
    }

    #[test]
    fn a_client_that_retries_from_a_new_port_is_exempt_for_an_hour() {
        let mut d = delay3();
        assert!(!d.pass(&tuple(40000, 22), 7, 100));
        // Gave up after 2 s, retries from a new port: answered at once.
        assert!(d.pass(&tuple(40001, 22), 9, 120));
        assert_eq!(d.exempted(), 1);
        // Every later connect of that address too, for an hour ...
        assert!(d.pass(&tuple(40002, 22), 5, 120 + FAST_TICKS));
        // ... then it is delayed once again.
        assert!(!d.pass(&tuple(40003, 22), 5, 121 + FAST_TICKS));
        // A retry from the same port (another sequence number) is a new
        // attempt too.
        let mut e = delay3();
        assert!(!e.pass(&tuple(40000, 22), 7, 100));
        assert!(!e.pass(&tuple(40000, 22), 7, 110));
        assert!(e.pass(&tuple(40000, 22), 8, 120));
        assert_eq!(e.exempted(), 1);
        // Another address has its own wait. One that abandoned its attempt
        // (a 2 s connect timeout) and comes back within the hour is exempt.
        let mut other = tuple(40000, 22);
        other.src = "10.77.0.3".parse().unwrap();
        assert!(!d.pass(&other, 7, 200));
        other.src_port = 40001;
        assert!(d.pass(&other, 7, 200 + 20_000));
        assert_eq!(d.exempted(), 2);
        // One that sat its delay out is delayed again next time.
        let mut patient = tuple(40000, 22);
        patient.src = "10.77.0.4".parse().unwrap();
        assert!(!d.pass(&patient, 7, 300));
        assert!(d.pass(&patient, 7, 330));
        patient.src_port = 40001;
        assert!(!d.pass(&patient, 7, 400));
        assert_eq!(d.exempted(), 2);
    }

    #[test]
    fn the_wait_of_an_accepted_delayed_handshake_goes_to_its_record_once() {
        let mut d = delay3();
        let a = tuple(40000, 22);
        let peer = SocketAddr::new(a.src, a.src_port);
        assert!(!d.pass(&a, 7, 100));
        assert!(d.pass(&a, 7, 140));
        // Another attempt's ACK is not this one's.
        d.accepted(&a, 8, 141);
        assert_eq!(d.take_wait(peer, 22), 0);
        d.accepted(&a, 7, 141);
        assert_eq!(d.take_wait(peer, 22), 41);
        assert_eq!(d.take_wait(peer, 22), 0);
        // It sat the delay out: its next attempt is delayed again; one more
        // meanwhile is exempt and, as undelayed ones, waited nothing.
        let b = tuple(40001, 22);
        assert!(!d.pass(&b, 7, 150));
        let c = tuple(40002, 22);
        assert!(d.pass(&c, 7, 151));
        d.accepted(&c, 7, 152);
        assert_eq!(d.take_wait(SocketAddr::new(c.src, c.src_port), 22), 0);
        d.accepted(&tuple(40000, 80), 7, 151);
        assert_eq!(d.take_wait(SocketAddr::new(a.src, 40000), 80), 0);
    }
}
