//! The decision: given one trapped packet, what (if anything) to answer,
//! and what to remember for statistics.
//!
//! A protocol core in the manner of quinn-proto: no I/O and no clock. Time
//! comes in as engine ticks ([`crate::engine::Clock`], read by the caller)
//! with every call, answers go into the caller's buffer, and what must be
//! persisted is handed back ([`Rotated`]: the caller saves the new keys).
//! Its only side effects are the ones it is given: the [`Observer`]s and
//! the record event. So it can be tested and benchmarked on its own;
//! [`super::engine`] feeds it from nfnetlink_log, sends its answers and
//! keeps the key file.

use super::cookie::{AckKind, Cookies};
use super::flows::{FlowInfo, FlowTable, Seen};
use super::packet::Segment;
use super::wire::tcp::{ACK, FIN, RST, SYN};
use super::wire::Reject;
use super::StatelessOptions;
use crate::classify::Identity;
use crate::engine::record::{engaged, ConnRecord, EndFacts, EndReason, LiveConn};
use crate::engine::{
    emit_record, secs, ticks, wall_at, FlowFacts, Observer, Snapshot, Totals, TICKS_PER_SEC,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

/// Most flows expired per tick, so one sweep never stalls answering.
const EXPIRE_BATCH: usize = 4096;
/// MSS we announce: what fits a 1500-byte link. Nothing is ever sent to us
/// beyond a probe byte, so it only has to look ordinary.
const MSS_V4: u16 = 1460;
const MSS_V6: u16 = 1440;

/// What became of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered: the reply is the first `len` bytes of the output buffer.
    Reply { len: usize },
    /// Refused at the edge (malformed, fragment, options, checksum).
    Rejected(Reject),
    /// Valid but deliberately unanswered.
    Ignored(Ignore),
}

/// Why a valid packet got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ignore {
    /// Its ACK number is not one of our cookies (spoofed, stale, or from a
    /// connection whose key was retired).
    NotOurs,
    Fin,
    Rst,
    /// No ACK and no SYN, or SYN+ACK: not part of a handshake we take part in.
    OddFlags,
    /// A SYN before its port's syn_delay has passed (see `syndelay`).
    SynDelayed,
}

impl Ignore {
    pub fn as_str(self) -> &'static str {
        match self {
            Ignore::NotOurs => "not_ours",
            Ignore::Fin => "fin",
            Ignore::Rst => "rst",
            Ignore::OddFlags => "odd_flags",
            Ignore::SynDelayed => "syn_delayed",
        }
    }
}

/// Counters since start (exposed for tests, benchmarks and logs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    pub packets: u64,
    pub syn_acks: u64,
    pub acks: u64,
    pub ignored: BTreeMap<String, u64>,
    pub rejected: BTreeMap<String, u64>,
    /// Replies the device queue refused.
    pub send_errors: u64,
    /// Times the kernel dropped log messages because we fell behind.
    pub overruns: u64,
    /// Malformed netlink messages.
    pub bad_messages: u64,
    /// Segments whose TCP checksum was the pseudo-header sum alone (a local
    /// sender's CHECKSUM_PARTIAL), taken as they are.
    #[serde(default)]
    pub partial_checksums: u64,
    /// Clients that gave up on a delayed handshake and retried from a new
    /// port, answered at once and exempt since (see `syndelay`).
    #[serde(default)]
    pub syn_delay_exempted: u64,
    pub key_generation: u64,
    pub flows: u64,
    pub flow_capacity: u64,
    pub flows_evicted: u64,
}

/// Decides answers and keeps the statistics.
pub struct Core {
    cookies: Cookies,
    flows: FlowTable,
    label: String,
    /// Wall-clock time of tick 0 (for the records' start times).
    epoch_wall: SystemTime,
    observers: Vec<Arc<dyn Observer>>,
    idle_ticks: u32,
    rotation_ticks: u32,
    next_rotation: u32,
    totals: Totals,
    counters: Counters,
    ended: Vec<FlowInfo>,
    /// `None` unless a policy has a syn_delay.
    syn_delay: Option<super::syndelay::SynDelay>,
    /// The policy's name in records ("silent", or "syn_delay=..." for the
    /// default; per-port ones are resolved per flow).
    policy_names: Vec<String>,
    policies: crate::engine::policy::Policies,
}

/// The key changed ([`Core::rotate`], or [`Core::tick`] when the period was
/// over): the caller persists [`Core::cookies`] if it keeps a key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotated {
    /// The new key's generation.
    pub generation: u64,
    /// Flows whose key was retired (their records ended).
    pub retired: usize,
}

impl Core {
    /// `epoch_wall` is the wall-clock time of tick 0.
    pub fn new(
        opts: &StatelessOptions,
        cookies: Cookies,
        observers: Vec<Arc<dyn Observer>>,
        epoch_wall: SystemTime,
    ) -> Self {
        let rotation_ticks = ticks(opts.key_rotation).max(1);
        Core {
            cookies,
            flows: FlowTable::new(opts.flow_cap, TICKS_PER_SEC),
            label: super::listener_label(opts.nflog_group),
            epoch_wall,
            observers,
            idle_ticks: ticks(opts.flow_idle).max(1),
            rotation_ticks,
            next_rotation: rotation_ticks,
            totals: Totals::default(),
            counters: Counters {
                flow_capacity: opts.flow_cap as u64,
                ..Counters::default()
            },
            ended: Vec::new(),
            syn_delay: super::syndelay::SynDelay::new(&opts.policies),
            policy_names: opts.policies.all().map(|p| p.to_string()).collect(),
            policies: opts.policies.clone(),
        }
    }

    /// The label records carry in their `listener` field (`nflog:GROUP`).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The SYN-cookie keys, for the caller to persist after [`Rotated`].
    pub fn cookies(&self) -> &Cookies {
        &self.cookies
    }

    pub fn counters(&self) -> Counters {
        let mut c = self.counters.clone();
        c.key_generation = self.cookies.generation();
        c.flows = self.flows.len() as u64;
        c.flows_evicted = self.flows.evictions();
        c.syn_delay_exempted = self.syn_delay.as_ref().map_or(0, |d| d.exempted());
        c
    }

    /// Buckets of the flow index (it grows with the flows).
    pub fn flow_buckets(&self) -> usize {
        self.flows.buckets()
    }

    pub fn count_send_error(&mut self) {
        self.count_send_errors(1);
    }

    /// Replies the device refused (counted here and in the metrics).
    pub fn count_send_errors(&mut self, n: u64) {
        self.counters.send_errors += n;
        for o in &self.observers {
            o.dropped("send_error", n);
        }
    }

    /// The kernel dropped log messages because we fell behind (counted here
    /// and in the metrics).
    pub fn count_overrun(&mut self) {
        self.counters.overruns += 1;
        for o in &self.observers {
            o.dropped("nflog_overrun", 1);
        }
    }

    pub fn count_bad_message(&mut self) {
        self.counters.bad_messages += 1;
    }

    /// Handles one IP packet captured at `now`, writing any answer to `out`
    /// (at least [`super::packet::MAX_REPLY`] bytes).
    pub fn handle(&mut self, pkt: &[u8], now: u32, out: &mut [u8]) -> Outcome {
        self.counters.packets += 1;
        let outcome = match Segment::parse_noting_partial(pkt) {
            Ok((seg, partial)) => {
                self.counters.partial_checksums += u64::from(partial);
                self.decide(&seg, now, out)
            }
            Err(r) => Outcome::Rejected(r),
        };
        match outcome {
            Outcome::Rejected(r) => {
                *self.counters.rejected.entry(r.as_str().into()).or_default() += 1
            }
            Outcome::Ignored(i) => {
                *self.counters.ignored.entry(i.as_str().into()).or_default() += 1
            }
            Outcome::Reply { .. } => {}
        }
        outcome
    }

    fn decide(&mut self, seg: &Segment<'_>, now: u32, out: &mut [u8]) -> Outcome {
        let t = seg.tuple();
        let flags = seg.tcp.flags;
        let seq = seg.tcp.seq_number;
        let ack = seg.tcp.ack_number;
        if flags & RST != 0 {
            // A reset of a connection we verified ends its record; without
            // an ACK number it cannot be verified and changes nothing.
            if flags & ACK != 0 && self.cookies.verify(&t, seq, ack).is_some() {
                if let Some(d) = self.syn_delay.as_mut() {
                    d.peer_ended(&t, now);
                }
                if let Some(f) = self.flows.remove(&t) {
                    self.end(f, now, EndReason::PeerReset);
                }
            }
            return Outcome::Ignored(Ignore::Rst);
        }
        if flags & SYN != 0 {
            if flags & (ACK | FIN) != 0 {
                return Outcome::Ignored(Ignore::OddFlags);
            }
            if let Some(d) = self.syn_delay.as_mut() {
                if !d.pass(&t, seq, now) {
                    return Outcome::Ignored(Ignore::SynDelayed);
                }
            }
            let ours = if t.src.is_ipv4() { MSS_V4 } else { MSS_V6 };
            let mss = seg.tcp.max_seg_size.map_or(ours, |m| m.clamp(536, ours));
            let iss = self.cookies.syn_ack_seq(&t, seq);
            let r = Segment::reply(&t, iss, seq.wrapping_add(1), SYN | ACK, Some(mss));
            return match r.emit(out) {
                Some(len) => {
                    self.counters.syn_acks += 1;
                    Outcome::Reply { len }
                }
                None => Outcome::Ignored(Ignore::OddFlags),
            };
        }
        if flags & ACK == 0 {
            return Outcome::Ignored(Ignore::OddFlags);
        }
        let Some(v) = self.cookies.verify(&t, seq, ack) else {
            return Outcome::Ignored(Ignore::NotOurs);
        };
        let fin = flags & FIN != 0;
        let seen = Seen {
            answered: !fin,
            payload_len: seg.payload_len,
            fin,
            midstream: v.kind == AckKind::Probe || seg.payload_len > 0 || fin,
            generation: v.generation,
        };
        let o = self.flows.observe(&t, now, seen);
        if let Some(old) = o.evicted {
            self.end(old, now, EndReason::EvictedGlobal);
        }
        // A flow first seen mid-stream was trapped before (then evicted or
        // expired from the table): not a new trap.
        if o.new && !seen.midstream {
            if let Some(d) = self.syn_delay.as_mut() {
                // The handshake ACK's sequence number is the SYN's plus one.
                d.accepted(&t, seq.wrapping_sub(1), now);
            }
            self.totals.trapped += 1;
            for ob in &self.observers {
                ob.trapped(&self.label);
            }
        } else if o.new {
            // Held again (after a restart, an eviction or an expiry): it
            // will end like the others, so the held gauge counts it.
            for ob in &self.observers {
                ob.resumed(&self.label);
            }
        }
        if o.first_fin {
            if let Some(d) = self.syn_delay.as_mut() {
                d.peer_ended(&t, now);
            }
            self.totals.close_attempts += 1;
            for ob in &self.observers {
                ob.peer_close_attempt(&self.label);
            }
        }
        if fin {
            return Outcome::Ignored(Ignore::Fin);
        }
        match Segment::reply(&t, v.our_next, v.peer_next, ACK, None).emit(out) {
            Some(len) => {
                self.counters.acks += 1;
                Outcome::Reply { len }
            }
            None => Outcome::Ignored(Ignore::OddFlags),
        }
    }

    /// Periodic work: key rotation when due, expiry of silent flows.
    pub fn tick(&mut self, now: u32) -> Option<Rotated> {
        let rotated = (now >= self.next_rotation).then(|| self.rotate(now));
        let before = now.saturating_sub(self.idle_ticks);
        let mut gone = std::mem::take(&mut self.ended);
        self.flows.expire(before, EXPIRE_BATCH, &mut gone);
        for f in gone.drain(..) {
            // The peer went quiet: it gave up (or keeps no data queued and
            // sends no keepalives). Either way it was held until last seen.
            let end = f.last;
            self.end(f, end, EndReason::PeerTimeout);
        }
        self.ended = gone;
        rotated
    }

    /// Switches to a fresh key now. Connections made under the key before
    /// the previous one are no longer answered; their records end with
    /// [`EndReason::Lifetime`].
    pub fn rotate(&mut self, now: u32) -> Rotated {
        let generation = self.cookies.rotate();
        self.next_rotation = now.saturating_add(self.rotation_ticks);
        let mut gone = std::mem::take(&mut self.ended);
        // The generation retired now has the new one's parity.
        self.flows.retire(generation & 1 == 1, &mut gone);
        let retired = gone.len();
        for f in gone.drain(..) {
            let end = f.last;
            self.end(f, end, EndReason::Lifetime);
        }
        self.ended = gone;
        Rotated {
            generation,
            retired,
        }
    }

    /// Ends every flow (the engine is stopping).
    pub fn shutdown(&mut self, now: u32) {
        for o in &self.observers {
            o.ending_all();
        }
        // In batches, oldest first: a million flows never become one
        // million-element list at once.
        let mut gone = std::mem::take(&mut self.ended);
        loop {
            self.flows.expire(u32::MAX, EXPIRE_BATCH, &mut gone);
            if gone.is_empty() {
                break;
            }
            for f in gone.drain(..) {
                self.end(f, now, EndReason::Shutdown);
            }
        }
        self.ended = gone;
    }

    fn end(&mut self, f: FlowInfo, end: u32, reason: EndReason) {
        let wait = self
            .syn_delay
            .as_mut()
            .map_or(0, |d| d.take_wait(f.peer, f.local.port()));
        let rec = self.record(&f, end, reason, wait);
        self.totals.add_ended(&rec);
        emit_record(
            &rec,
            Some(FlowFacts {
                answered: f.answered,
                estimated: f.estimated,
            }),
        );
        for o in &self.observers {
            o.ended(&rec);
        }
    }

    fn wall(&self, t: u32) -> SystemTime {
        wall_at(self.epoch_wall, t)
    }

    /// `wait`: ticks the handshake was delayed (syn_delay), counted in
    /// engaged.
    fn record(&self, f: &FlowInfo, end: u32, reason: EndReason, wait: u32) -> ConnRecord {
        let held_secs = secs(end.max(f.last).saturating_sub(f.first));
        let fin_after_secs = f.fin_after_secs.map(f64::from);
        // The flow table sees every packet: a flow gone silent ends at its
        // last packet (flagged), a RST or FIN exactly.
        let (engaged_secs, engaged_upper_bound) = engaged(&EndFacts {
            held_secs,
            fin_after_secs,
            end: reason,
            silent_secs: Some(secs(end.saturating_sub(f.last))),
            reset_by_probe: false,
            reset_by_bait: false,
        });
        let syn_wait_secs = secs(wait);
        ConnRecord {
            listener: self.label.clone(),
            peer: f.peer,
            local: f.local,
            original_dst: f.local,
            start: self.wall(f.first),
            held_secs,
            engaged_secs: engaged_secs + syn_wait_secs,
            engaged_upper_bound,
            syn_wait_secs,
            bytes_received: u64::from(f.bytes),
            fin_after_secs,
            end: reason,
            head: String::new(),
            // No payload is kept per flow (52 bytes each): only whether
            // the peer sent any.
            client: Identity::unseen(u64::from(f.bytes)),
            estimated: f.estimated,
            policy: self.policy_name(f.local.port()),
        }
    }

    /// The name of the policy for connections to `port`, for records and
    /// live rows.
    fn policy_name(&self, port: u16) -> String {
        self.policy_names
            .get(usize::from(self.policies.index_of(port)))
            .cloned()
            .unwrap_or_default()
    }

    /// Live view: the `limit` longest-held flows (longest first) and the
    /// totals over all of them. A million flows would make a reply of
    /// hundreds of megabytes; the totals stay exact at any count.
    pub fn snapshot(&self, now: u32, limit: usize) -> Snapshot {
        let mut live = 0.0;
        // Max-heap on `first`: holds the `limit` oldest flows seen so far.
        let mut oldest: std::collections::BinaryHeap<ByFirst> =
            std::collections::BinaryHeap::with_capacity(limit.min(self.flows.len()) + 1);
        let mut live_engaged = 0.0;
        for f in self.flows.iter() {
            let held = secs(now.saturating_sub(f.first));
            live += held;
            live_engaged += f.fin_after_secs.map_or(held, f64::from).min(held);
            if oldest.len() < limit {
                oldest.push(ByFirst(f));
            } else if oldest.peek().is_some_and(|top| f.first < top.0.first) {
                oldest.pop();
                oldest.push(ByFirst(f));
            }
        }
        let mut picked: Vec<FlowInfo> = oldest.into_iter().map(|b| b.0).collect();
        picked.sort_by_key(|f| f.first);
        let conns: Vec<LiveConn> = picked.iter().map(|f| self.live_conn(f, now)).collect();
        let mut totals = self.totals.clone();
        totals.held_now = self.flows.len() as u64;
        totals.live_held_secs = live;
        totals.live_engaged_secs = live_engaged;
        totals.estimated = self.flows.evictions() > 0;
        Snapshot { conns, totals }
    }

    fn live_conn(&self, f: &FlowInfo, now: u32) -> LiveConn {
        let current_odd = self.cookies.generation() & 1 == 1;
        let to_rotation = secs(self.next_rotation.saturating_sub(now));
        let period = secs(self.rotation_ticks);
        LiveConn {
            listener: self.label.clone(),
            peer: f.peer,
            local: f.local,
            original_dst: f.local,
            start: self.wall(f.first),
            held_secs: secs(now.saturating_sub(f.first)),
            engaged_secs: f
                .fin_after_secs
                .map_or(secs(now.saturating_sub(f.first)), f64::from)
                .min(secs(now.saturating_sub(f.first))),
            // Answered until the key that made it is retired.
            lifetime_left_secs: if f.generation_odd == current_odd {
                to_rotation + period
            } else {
                to_rotation
            },
            bytes_queued: 0,
            bytes_received: u64::from(f.bytes),
            fin_after_secs: f.fin_after_secs.map(f64::from),
            rtt_us: 0,
            state: if f.fin_after_secs.is_some() {
                "CLOSE_WAIT"
            } else {
                "ESTABLISHED"
            }
            .to_string(),
            keepalive_idle_secs: 0,
            keepalive_intvl_secs: 0,
            client: Identity::unseen(u64::from(f.bytes)),
            estimated: f.estimated,
            policy: self.policy_name(f.local.port()),
        }
    }

    pub fn totals(&self) -> Totals {
        self.totals.clone()
    }
}

/// Orders flows by first-seen time (for the snapshot's selection).
struct ByFirst(FlowInfo);

impl PartialEq for ByFirst {
    fn eq(&self, o: &Self) -> bool {
        self.0.first == o.0.first
    }
}
impl Eq for ByFirst {}
impl PartialOrd for ByFirst {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for ByFirst {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.first.cmp(&o.0.first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::stateless::packet::{self, Tuple};
    use crate::engine::stateless::wire::tcp;
    use std::sync::Mutex;

    const EPOCH: SystemTime = SystemTime::UNIX_EPOCH;

    #[derive(Default)]
    /// Ended records, traps, resumptions, shutdown notices.
    struct Rec(Mutex<Vec<ConnRecord>>, Mutex<u32>, Mutex<u32>, Mutex<u32>);
    impl Observer for Rec {
        fn trapped(&self, _l: &str) {
            *self.1.lock().unwrap() += 1;
        }
        fn resumed(&self, _l: &str) {
            *self.2.lock().unwrap() += 1;
        }
        fn ending_all(&self) {
            *self.3.lock().unwrap() += 1;
        }
        fn ended(&self, r: &ConnRecord) {
            self.0.lock().unwrap().push(r.clone());
        }
    }

    fn opts(cap: usize) -> StatelessOptions {
        StatelessOptions {
            flow_cap: cap,
            ..StatelessOptions::default()
        }
    }

    fn peer(port: u16) -> Tuple {
        Tuple {
            src: "10.77.0.2".parse().unwrap(),
            dst: "10.77.0.1".parse().unwrap(),
            src_port: port,
            dst_port: 22,
        }
    }

    /// Builds a packet from the peer.
    fn pkt(t: Tuple, flags: u8, seq: u32, ack: u32, data: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 1600];
        let n = Segment {
            src: t.src,
            dst: t.dst,
            tcp: tcp::Repr {
                src_port: t.src_port,
                dst_port: t.dst_port,
                seq_number: seq,
                ack_number: ack,
                flags,
                window_len: 65535,
                max_seg_size: (flags & SYN != 0).then_some(1460),
                payload: data,
            },
            payload_len: data.len(),
        }
        .emit(&mut b)
        .unwrap();
        b.truncate(n);
        b
    }

    fn answer(core: &mut Core, p: &[u8], now: u32) -> Option<(u8, u32, u32, u16)> {
        let mut out = [0u8; packet::MAX_REPLY];
        match core.handle(p, now, &mut out) {
            Outcome::Reply { len } => {
                let s = Segment::parse(&out[..len]).unwrap();
                Some((
                    s.tcp.flags,
                    s.tcp.seq_number,
                    s.tcp.ack_number,
                    s.tcp.window_len,
                ))
            }
            _ => None,
        }
    }

    #[test]
    fn syn_delay_answers_only_a_late_retransmission_and_records_the_policy() {
        use crate::engine::policy::Policy;
        let mut o = opts(10);
        o.policies.set_port(
            22,
            Policy {
                syn_delay: Some(std::time::Duration::from_secs(2)),
                syn_mode: crate::engine::policy::SynMode::Always,
                ..Policy::SILENT
            },
        );
        let obs = Arc::new(Rec::default());
        let mut c = Core::new(&o, Cookies::with_key(1, 2), vec![obs.clone()], EPOCH);
        let t = peer(40000);
        let syn = pkt(t, SYN, 5, 0, b"");
        assert_eq!(answer(&mut c, &syn, 1), None);
        assert_eq!(answer(&mut c, &syn, 11), None);
        assert_eq!(c.counters().ignored["syn_delayed"], 2);
        let (fl, iss, _, _) = answer(&mut c, &syn, 21).unwrap();
        assert_eq!(fl, SYN | ACK);
        // Another port has no delay.
        let mut other = t;
        other.dst_port = 80;
        assert!(answer(&mut c, &pkt(other, SYN, 5, 0, b""), 21).is_some());
        answer(&mut c, &pkt(t, ACK, 6, iss.wrapping_add(1), b""), 22).unwrap();
        c.shutdown(30);
        let r = obs.0.lock().unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].policy, "syn_delay=2s,syn_mode=always");
    }

    #[test]
    fn full_conversation() {
        let obs = Arc::new(Rec::default());
        let mut c = Core::new(&opts(10), Cookies::with_key(1, 2), vec![obs.clone()], EPOCH);
        let t = peer(40000);
        let isn = 1_000_000;
        let (fl, iss, ack, win) = answer(&mut c, &pkt(t, SYN, isn, 0, b""), 1).unwrap();
        assert_eq!((fl, ack, win), (SYN | ACK, isn + 1, 0));
        let our = iss.wrapping_add(1);
        // Handshake ACK, data, zero-window probe: all acknowledged at isn+1.
        for (seq, data) in [(isn + 1, &b""[..]), (isn + 1, b"x"), (isn, b"")] {
            let a = answer(&mut c, &pkt(t, ACK, seq, our, data), 2).unwrap();
            assert_eq!(a, (ACK, our, isn + 1, 0));
        }
        // Spoofed: wrong ack, wrong seq, other port.
        assert_eq!(answer(&mut c, &pkt(t, ACK, isn + 1, our + 1, b""), 3), None);
        assert_eq!(answer(&mut c, &pkt(t, ACK, isn + 9, our, b""), 3), None);
        assert_eq!(
            answer(&mut c, &pkt(peer(1), ACK, isn + 1, our, b""), 3),
            None
        );
        assert_eq!(c.counters().ignored["not_ours"], 3);
        // FIN: no answer, recorded as a close attempt.
        assert_eq!(
            answer(&mut c, &pkt(t, FIN | ACK, isn + 1, our, b""), 50),
            None
        );
        assert_eq!(c.snapshot(60, 100).conns[0].fin_after_secs, Some(4.0));
        // RST ends the record.
        assert_eq!(
            answer(&mut c, &pkt(t, RST | ACK, isn + 1, our, b""), 70),
            None
        );
        let recs = obs.0.lock().unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].end, EndReason::PeerReset);
        assert_eq!(recs[0].held_secs, 6.8); // from the handshake ACK at tick 2
        assert_eq!(recs[0].bytes_received, 1);
        assert_eq!(*obs.1.lock().unwrap(), 1);
        assert_eq!(c.totals().close_attempts, 1);
    }

    #[test]
    fn idle_flows_expire_and_full_table_evicts() {
        let obs = Arc::new(Rec::default());
        let mut c = Core::new(&opts(2), Cookies::with_key(1, 2), vec![obs.clone()], EPOCH);
        for port in 1..=3u16 {
            let t = peer(port);
            let (_, iss, _, _) = answer(&mut c, &pkt(t, SYN, 5, 0, b""), 1).unwrap();
            answer(
                &mut c,
                &pkt(t, ACK, 6, iss.wrapping_add(1), b""),
                u32::from(port),
            )
            .unwrap();
        }
        assert_eq!(obs.0.lock().unwrap()[0].end, EndReason::EvictedGlobal);
        assert_eq!(c.counters().flows_evicted, 1);
        let idle = ticks(StatelessOptions::default().flow_idle);
        c.tick(3 + idle + 1);
        let recs = obs.0.lock().unwrap();
        assert_eq!(recs.len(), 3);
        assert!(recs[1..].iter().all(|r| r.end == EndReason::PeerTimeout));
    }

    #[test]
    fn evicted_flows_that_return_are_marked_estimated() {
        let obs = Arc::new(Rec::default());
        let mut c = Core::new(&opts(2), Cookies::with_key(1, 2), vec![obs.clone()], EPOCH);
        let mut isses = Vec::new();
        for port in 1..=3u16 {
            let t = peer(port);
            let (_, iss, _, _) = answer(&mut c, &pkt(t, SYN, 5, 0, b""), 1).unwrap();
            isses.push(iss);
            answer(
                &mut c,
                &pkt(t, ACK, 6, iss.wrapping_add(1), b""),
                u32::from(port),
            )
            .unwrap();
        }
        assert!(
            !Core::new(&opts(2), Cookies::with_key(1, 2), vec![], EPOCH)
                .snapshot(1, 100)
                .totals
                .estimated
        );
        let snap = c.snapshot(4, 100);
        assert!(
            snap.totals.estimated,
            "evictions make the figures estimates"
        );
        assert!(
            snap.conns.iter().all(|f| !f.estimated),
            "no flow came back yet"
        );
        // The evicted peer sends a window probe (mid-stream): its flow
        // returns, marked estimated.
        let t1 = peer(1);
        assert!(answer(&mut c, &pkt(t1, ACK, 5, isses[0].wrapping_add(1), b""), 4).is_some());
        let snap = c.snapshot(5, 100);
        assert!(
            snap.conns.iter().any(|f| f.peer.port() == 1 && f.estimated),
            "{:?}",
            snap.conns
        );
        // Held again, not trapped again: the held gauge goes up, the trap
        // count does not. Evicting port 2 for it ended one more record.
        assert_eq!(*obs.1.lock().unwrap(), 3);
        assert_eq!(*obs.2.lock().unwrap(), 1);
        let ended = obs.0.lock().unwrap().len() as u32;
        assert_eq!(ended, 2);
        assert_eq!(
            *obs.1.lock().unwrap() + *obs.2.lock().unwrap() - ended,
            snap.totals.held_now as u32,
            "trapped + resumed - ended = held"
        );
        // Shutdown says so first, then ends all (in batches).
        c.shutdown(6);
        assert_eq!(*obs.3.lock().unwrap(), 1);
        assert_eq!(obs.0.lock().unwrap().len(), 4);
        assert_eq!(c.snapshot(6, 10).totals.held_now, 0);
    }

    #[test]
    fn snapshot_lists_the_longest_held_and_counts_all() {
        let mut c = Core::new(&opts(100), Cookies::with_key(1, 2), vec![], EPOCH);
        // Flows first seen at ticks 50, 49, ..., 1 (port p at tick 51 - p).
        for port in 1..=50u16 {
            let t = peer(port);
            let (_, iss, _, _) = answer(&mut c, &pkt(t, SYN, 5, 0, b""), 1).unwrap();
            let now = 51 - u32::from(port);
            answer(&mut c, &pkt(t, ACK, 6, iss.wrapping_add(1), b""), now).unwrap();
        }
        let snap = c.snapshot(100, 3);
        assert_eq!(snap.totals.held_now, 50);
        let ports: Vec<u16> = snap.conns.iter().map(|l| l.peer.port()).collect();
        assert_eq!(ports, vec![50, 49, 48], "longest-held first");
        // live_held_secs sums every flow: (100 - t) / 10 for t = 1..=50.
        let want: f64 = (1..=50).map(|t| f64::from(100 - t) / 10.0).sum();
        assert!((snap.totals.live_held_secs - want).abs() < 1e-6);
        assert_eq!(c.snapshot(100, 1000).conns.len(), 50);
        assert!(c.snapshot(100, 0).conns.is_empty());
    }

    #[test]
    fn rotation_keeps_one_generation_then_retires() {
        let obs = Arc::new(Rec::default());
        let mut c = Core::new(&opts(10), Cookies::with_key(1, 2), vec![obs.clone()], EPOCH);
        let t = peer(7);
        let (_, iss, _, _) = answer(&mut c, &pkt(t, SYN, 5, 0, b""), 1).unwrap();
        let our = iss.wrapping_add(1);
        assert!(answer(&mut c, &pkt(t, ACK, 6, our, b""), 2).is_some());
        c.rotate(3);
        assert!(answer(&mut c, &pkt(t, ACK, 5, our, b""), 4).is_some());
        assert!(obs.0.lock().unwrap().is_empty());
        c.rotate(5);
        assert!(answer(&mut c, &pkt(t, ACK, 5, our, b""), 6).is_none());
        assert_eq!(obs.0.lock().unwrap()[0].end, EndReason::Lifetime);
    }

    #[test]
    fn tick_hands_back_the_rotation_for_the_caller_to_persist() {
        let mut c = Core::new(&opts(10), Cookies::with_key(1, 2), Vec::new(), EPOCH);
        let period = ticks(StatelessOptions::default().key_rotation);
        let g = c.cookies().generation();
        assert_eq!(c.tick(period - 1), None);
        let r = c.tick(period).expect("the period is over");
        assert_eq!(r.generation, g + 1);
        assert_eq!(c.cookies().generation(), g + 1);
        assert_eq!(c.tick(period + 1), None, "next one a period later");
        assert_eq!(c.rotate(period + 2).generation, g + 2);
    }

    #[test]
    fn rejected_packets_are_counted() {
        let mut c = Core::new(&opts(10), Cookies::with_key(1, 2), Vec::new(), EPOCH);
        let mut p = pkt(peer(1), SYN, 5, 0, b"");
        p[20 + 16] ^= 0xff; // TCP checksum
        assert_eq!(
            c.handle(&p, 1, &mut [0u8; packet::MAX_REPLY]),
            Outcome::Rejected(Reject::BadChecksum)
        );
        assert_eq!(c.counters().rejected["bad_checksum"], 1);
    }
}
