//! The bounded flow table: statistics only, never needed to answer.
//!
//! The engine answers every packet from the SYN cookie alone; this table only
//! remembers, per trapped connection, when it was first and last seen, how
//! many segments we answered, how much the peer tried to send and when it
//! tried to close — so `tarpit stats`, metrics and history work for this
//! engine too. It holds at most `cap` flows with an exact
//! least-recently-seen list: when full, the flow not heard from longest is
//! evicted (and reported, so its record is not lost, and counted).
//!
//! Memory follows the load. Each flow costs [`FLOW_BYTES`] (48) bytes plus
//! 4 bytes of index: the flows live in one array filled from the front
//! (freed slots are reused first), and the index is a linear-hashing table
//! of chain heads that grows by one bucket per flow added — splitting one
//! chain, never rehashing the whole table — so growth never stalls
//! answering. Both arrays reserve their address space for `cap` flows up
//! front (when the system grants it), so they are never copied either; pages
//! become resident only as flows arrive. An idle table costs a few hundred
//! bytes.
//!
//! A flow whose first segment we see is not the handshake ACK (a probe, or
//! data) started before we were watching — after an eviction, an idle expiry
//! or a restart. Its first-seen time is then only a lower bound: the flow is
//! marked `estimated`.

use super::packet::Tuple;
use siphasher::sip::SipHasher13;
use std::collections::HashMap;
use std::hash::Hasher;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

const NONE: u32 = u32::MAX;
/// Local address index meaning "more local addresses than we track" (255
/// are: a tarpit host has a handful).
const LOCAL_UNKNOWN: u8 = u8::MAX;
/// Buckets of a fresh index (a power of two).
const INITIAL_BUCKETS: usize = 64;

const F_FIN: u8 = 1;
const F_ESTIMATED: u8 = 2;
/// Parity of the key generation that last verified this flow.
const F_GEN_ODD: u8 = 4;
const F_IPV4: u8 = 8;

/// One flow. Times are engine ticks (see [`FlowTable::new`]).
#[derive(Clone, Copy)]
#[repr(C)]
struct Flow {
    peer: [u8; 16],
    peer_port: u16,
    local_port: u16,
    local: u8,
    flags: u8,
    /// Largest payload the peer offered in one segment.
    bytes: u16,
    /// Seconds from `first` to the first FIN (saturating).
    fin_after: u16,
    /// Segments answered (saturating: a peer probing every 2 minutes takes
    /// 91 days to get there).
    answered: u16,
    first: u32,
    last: u32,
    /// Least-recently-seen list: `prev` is more recent, `next` older. The
    /// free list reuses `next`.
    prev: u32,
    next: u32,
    /// Next flow in the same index bucket.
    chain: u32,
}

/// Bytes one flow occupies in the table, index excluded.
pub const FLOW_BYTES: usize = std::mem::size_of::<Flow>();
/// Bytes of index per flow (one bucket head per flow at most).
pub const INDEX_BYTES_PER_FLOW: usize = std::mem::size_of::<u32>();

const _: () = assert!(FLOW_BYTES == 48);

/// What a flow looked like, in plain types (for records and snapshots).
#[derive(Debug, Clone, PartialEq)]
pub struct FlowInfo {
    pub peer: SocketAddr,
    /// Our address and port; the unspecified address when more local
    /// addresses were seen than the table tracks.
    pub local: SocketAddr,
    pub first: u32,
    pub last: u32,
    pub answered: u32,
    pub bytes: u16,
    pub fin_after_secs: Option<u16>,
    pub estimated: bool,
    pub generation_odd: bool,
}

/// One segment's contribution to its flow.
#[derive(Debug, Clone, Copy, Default)]
pub struct Seen {
    /// We answered it.
    pub answered: bool,
    /// Payload length the peer offered.
    pub payload_len: usize,
    pub fin: bool,
    /// The segment was not a handshake ACK: if it creates the flow, the flow
    /// started earlier than we know.
    pub midstream: bool,
    /// Generation of the key that verified it.
    pub generation: u64,
}

/// Result of [`FlowTable::observe`].
#[derive(Debug, Default)]
pub struct Observed {
    /// The flow is new to the table.
    pub new: bool,
    /// The first FIN of this flow.
    pub first_fin: bool,
    /// The flow pushed out to make room.
    pub evicted: Option<FlowInfo>,
}

pub struct FlowTable {
    flows: Vec<Flow>,
    /// Linear hashing: bucket heads (flow index or `NONE`). There are
    /// `base + split` buckets; buckets below `split` have been split this
    /// round and are addressed with one more hash bit.
    heads: Vec<u32>,
    base: usize,
    split: usize,
    cap: usize,
    len: usize,
    /// Most recently seen.
    head: u32,
    /// Least recently seen.
    tail: u32,
    free: u32,
    keys: (u64, u64),
    locals: Vec<IpAddr>,
    local_ids: HashMap<IpAddr, u8>,
    tick_per_sec: u32,
    evictions: u64,
}

/// A vector with room for `n` elements reserved if the system grants it
/// (address space only: nothing is touched), else empty; it then grows as
/// usual.
fn reserved<T>(n: usize) -> Vec<T> {
    let mut v = Vec::new();
    if v.try_reserve_exact(n).is_err() {
        v = Vec::new();
    }
    v
}

impl FlowTable {
    /// A table holding at most `cap` flows (at least 1). `ticks_per_sec`
    /// tells it the unit of the `now` values it is given.
    pub fn new(cap: usize, ticks_per_sec: u32) -> Self {
        let cap = cap.clamp(1, (u32::MAX - 1) as usize);
        let mut r = rand::rng();
        let mut heads = reserved(cap.max(INITIAL_BUCKETS));
        heads.resize(INITIAL_BUCKETS, NONE);
        FlowTable {
            flows: reserved(cap),
            heads,
            base: INITIAL_BUCKETS,
            split: 0,
            cap,
            len: 0,
            head: NONE,
            tail: NONE,
            free: NONE,
            keys: (rand::Rng::random(&mut r), rand::Rng::random(&mut r)),
            locals: Vec::new(),
            local_ids: HashMap::new(),
            tick_per_sec: ticks_per_sec.max(1),
            evictions: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Index buckets in use (grows with the number of flows).
    pub fn buckets(&self) -> usize {
        self.heads.len()
    }

    /// Flows evicted because the table was full, since start. Non-zero means
    /// later flows' first-seen times may be estimates.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Bytes the table touches at most: for the flow slots and buckets
    /// ever used (the high-water mark; freed slots are reused).
    pub fn bytes_used(&self) -> usize {
        self.flows.len() * FLOW_BYTES + self.heads.len() * INDEX_BYTES_PER_FLOW
    }

    /// Bytes the table uses at full capacity (flows plus index).
    pub fn bytes_at_capacity(&self) -> usize {
        self.cap * (FLOW_BYTES + INDEX_BYTES_PER_FLOW) + INITIAL_BUCKETS * INDEX_BYTES_PER_FLOW
    }

    /// Records one verified segment of `t` at time `now`.
    pub fn observe(&mut self, t: &Tuple, now: u32, s: Seen) -> Observed {
        let key = self.key_of(t);
        let hash = self.hash(&key);
        let mut out = Observed::default();
        let i = match self.find(&key, hash) {
            Some(i) => {
                self.unlink(i);
                i
            }
            None => {
                if self.len >= self.cap {
                    out.evicted = self.evict_oldest();
                }
                let mut flags = if s.midstream { F_ESTIMATED } else { 0 };
                if t.src.is_ipv4() {
                    flags |= F_IPV4;
                }
                let f = Flow {
                    peer: key.peer,
                    peer_port: key.peer_port,
                    local_port: key.local_port,
                    local: key.local,
                    flags,
                    bytes: 0,
                    fin_after: 0,
                    first: now,
                    last: now,
                    answered: 0,
                    prev: NONE,
                    next: NONE,
                    chain: NONE,
                };
                let i = self.alloc(f);
                self.index_insert(hash, i);
                self.len += 1;
                self.grow();
                out.new = true;
                i
            }
        };
        self.push_front(i);
        let tps = self.tick_per_sec;
        let f = &mut self.flows[i as usize];
        f.last = now;
        if s.answered {
            f.answered = f.answered.saturating_add(1);
        }
        f.bytes = f.bytes.max(s.payload_len.min(usize::from(u16::MAX)) as u16);
        if s.fin && f.flags & F_FIN == 0 {
            f.flags |= F_FIN;
            f.fin_after = (now.saturating_sub(f.first) / tps).min(u32::from(u16::MAX)) as u16;
            out.first_fin = true;
        }
        if s.generation & 1 == 1 {
            f.flags |= F_GEN_ODD;
        } else {
            f.flags &= !F_GEN_ODD;
        }
        out
    }

    /// Removes `t`'s flow (the peer reset it).
    pub fn remove(&mut self, t: &Tuple) -> Option<FlowInfo> {
        let key = self.key_of(t);
        let i = self.find(&key, self.hash(&key))?;
        Some(self.remove_at(i))
    }

    /// Removes and returns flows not seen since `before`, oldest first, at
    /// most `max` of them (so one sweep never stalls the engine).
    pub fn expire(&mut self, before: u32, max: usize, out: &mut Vec<FlowInfo>) {
        while out.len() < max && self.tail != NONE {
            let i = self.tail;
            if self.flows[i as usize].last >= before {
                break;
            }
            out.push(self.remove_at(i));
        }
    }

    /// Removes and returns every flow last verified by a key generation of
    /// parity `odd` (used when that key is retired: those peers are no
    /// longer answered).
    pub fn retire(&mut self, odd: bool, out: &mut Vec<FlowInfo>) {
        let mut i = self.tail;
        while i != NONE {
            let f = self.flows[i as usize];
            let prev = f.prev;
            if (f.flags & F_GEN_ODD != 0) == odd {
                out.push(self.remove_at(i));
            }
            i = prev;
        }
    }

    /// Every flow, least recently seen first.
    pub fn iter(&self) -> impl Iterator<Item = FlowInfo> + '_ {
        let mut i = self.tail;
        std::iter::from_fn(move || {
            if i == NONE {
                return None;
            }
            let info = self.info(i);
            i = self.flows[i as usize].prev;
            Some(info)
        })
    }

    /// Empties the table, returning every flow.
    pub fn drain(&mut self) -> Vec<FlowInfo> {
        let all: Vec<FlowInfo> = self.iter().collect();
        self.flows.clear();
        self.heads.clear();
        self.heads.resize(INITIAL_BUCKETS, NONE);
        self.base = INITIAL_BUCKETS;
        self.split = 0;
        self.len = 0;
        self.head = NONE;
        self.tail = NONE;
        self.free = NONE;
        all
    }

    fn info(&self, i: u32) -> FlowInfo {
        let f = &self.flows[i as usize];
        let ip6 = Ipv6Addr::from(f.peer);
        let peer_ip = if f.flags & F_IPV4 != 0 {
            ip6.to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(ip6))
        } else {
            IpAddr::V6(ip6)
        };
        let local_ip =
            self.locals
                .get(usize::from(f.local))
                .copied()
                .unwrap_or(if peer_ip.is_ipv4() {
                    IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
                } else {
                    IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                });
        FlowInfo {
            peer: SocketAddr::new(peer_ip, f.peer_port),
            local: SocketAddr::new(local_ip, f.local_port),
            first: f.first,
            last: f.last,
            answered: u32::from(f.answered),
            bytes: f.bytes,
            fin_after_secs: (f.flags & F_FIN != 0).then_some(f.fin_after),
            estimated: f.flags & F_ESTIMATED != 0,
            generation_odd: f.flags & F_GEN_ODD != 0,
        }
    }

    fn key_of(&mut self, t: &Tuple) -> Key {
        let peer = match t.src {
            IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            IpAddr::V6(a) => a.octets(),
        };
        let local = match self.local_ids.get(&t.dst) {
            Some(&id) => id,
            None if self.locals.len() < usize::from(LOCAL_UNKNOWN) => {
                let id = self.locals.len() as u8;
                self.locals.push(t.dst);
                self.local_ids.insert(t.dst, id);
                id
            }
            None => LOCAL_UNKNOWN,
        };
        Key {
            peer,
            peer_port: t.src_port,
            local_port: t.dst_port,
            local,
        }
    }

    fn key_at(&self, i: u32) -> Key {
        let f = &self.flows[i as usize];
        Key {
            peer: f.peer,
            peer_port: f.peer_port,
            local_port: f.local_port,
            local: f.local,
        }
    }

    fn hash(&self, k: &Key) -> u64 {
        let mut h = SipHasher13::new_with_keys(self.keys.0, self.keys.1);
        h.write(&k.peer);
        h.write_u16(k.peer_port);
        h.write_u16(k.local_port);
        h.write_u8(k.local);
        h.finish()
    }

    /// The bucket of `hash` (linear hashing: one more bit below the split
    /// pointer).
    fn bucket(&self, hash: u64) -> usize {
        let h = hash as usize;
        let b = h & (self.base - 1);
        if b < self.split {
            h & (2 * self.base - 1)
        } else {
            b
        }
    }

    fn find(&self, k: &Key, hash: u64) -> Option<u32> {
        let mut i = self.heads[self.bucket(hash)];
        while i != NONE {
            if self.key_at(i) == *k {
                return Some(i);
            }
            i = self.flows[i as usize].chain;
        }
        None
    }

    fn index_insert(&mut self, hash: u64, i: u32) {
        let b = self.bucket(hash);
        self.flows[i as usize].chain = self.heads[b];
        self.heads[b] = i;
    }

    fn index_delete(&mut self, i: u32) {
        let b = self.bucket(self.hash(&self.key_at(i)));
        let after = self.flows[i as usize].chain;
        let mut j = self.heads[b];
        if j == i {
            self.heads[b] = after;
            return;
        }
        while j != NONE {
            let next = self.flows[j as usize].chain;
            if next == i {
                self.flows[j as usize].chain = after;
                return;
            }
            j = next;
        }
    }

    /// Keeps at most one flow per bucket on average: each new flow past
    /// that splits one bucket (the one at the split pointer) into itself
    /// and a new last bucket. Work per call: one chain, about one flow.
    fn grow(&mut self) {
        if self.len <= self.heads.len() {
            return;
        }
        let from = self.split;
        let mut i = std::mem::replace(&mut self.heads[from], NONE);
        self.heads.push(NONE);
        self.split += 1;
        if self.split == self.base {
            self.base *= 2;
            self.split = 0;
        }
        // Every flow of the old bucket goes to `from` or to the new one.
        while i != NONE {
            let next = self.flows[i as usize].chain;
            let b = self.bucket(self.hash(&self.key_at(i)));
            self.flows[i as usize].chain = self.heads[b];
            self.heads[b] = i;
            i = next;
        }
    }

    fn alloc(&mut self, f: Flow) -> u32 {
        if self.free != NONE {
            let i = self.free;
            self.free = self.flows[i as usize].next;
            self.flows[i as usize] = f;
            i
        } else {
            self.flows.push(f);
            (self.flows.len() - 1) as u32
        }
    }

    fn remove_at(&mut self, i: u32) -> FlowInfo {
        let info = self.info(i);
        self.index_delete(i);
        self.unlink(i);
        self.flows[i as usize].next = self.free;
        self.free = i;
        self.len -= 1;
        info
    }

    fn evict_oldest(&mut self) -> Option<FlowInfo> {
        let i = self.tail;
        if i == NONE {
            return None;
        }
        self.evictions += 1;
        Some(self.remove_at(i))
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = {
            let f = &self.flows[i as usize];
            (f.prev, f.next)
        };
        if prev != NONE {
            self.flows[prev as usize].next = next;
        } else if self.head == i {
            self.head = next;
        }
        if next != NONE {
            self.flows[next as usize].prev = prev;
        } else if self.tail == i {
            self.tail = prev;
        }
        let f = &mut self.flows[i as usize];
        f.prev = NONE;
        f.next = NONE;
    }

    fn push_front(&mut self, i: u32) {
        let old = self.head;
        {
            let f = &mut self.flows[i as usize];
            f.prev = NONE;
            f.next = old;
        }
        if old != NONE {
            self.flows[old as usize].prev = i;
        }
        self.head = i;
        if self.tail == NONE {
            self.tail = i;
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Key {
    peer: [u8; 16],
    peer_port: u16,
    local_port: u16,
    local: u8,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: u32) -> Tuple {
        Tuple {
            src: IpAddr::V4(std::net::Ipv4Addr::from(0x0a4d_0000 + (n >> 16))),
            dst: "10.77.255.1".parse().unwrap(),
            src_port: (n & 0xffff) as u16,
            dst_port: 22,
        }
    }

    fn answered() -> Seen {
        Seen {
            answered: true,
            ..Default::default()
        }
    }

    #[test]
    fn counts_and_times_per_flow() {
        let mut ft = FlowTable::new(10, 10);
        assert!(ft.observe(&t(1), 100, answered()).new);
        assert!(!ft.observe(&t(1), 150, answered()).new);
        let o = ft.observe(
            &t(1),
            400,
            Seen {
                fin: true,
                payload_len: 7,
                ..Default::default()
            },
        );
        assert!(o.first_fin);
        assert!(
            !ft.observe(
                &t(1),
                500,
                Seen {
                    fin: true,
                    ..Default::default()
                }
            )
            .first_fin
        );
        let f = ft.iter().next().unwrap();
        assert_eq!(f.peer, "10.77.0.0:1".parse::<SocketAddr>().unwrap());
        assert_eq!(f.local, "10.77.255.1:22".parse::<SocketAddr>().unwrap());
        assert_eq!((f.first, f.last, f.answered, f.bytes), (100, 500, 2, 7));
        assert_eq!(f.fin_after_secs, Some(30));
        assert!(!f.estimated);
    }

    #[test]
    fn full_table_evicts_least_recently_seen() {
        let mut ft = FlowTable::new(3, 1);
        for n in 0..3 {
            ft.observe(&t(n), n, answered());
        }
        // Touch flow 0: flow 1 is now the least recently seen.
        ft.observe(&t(0), 10, answered());
        let o = ft.observe(&t(3), 11, answered());
        assert_eq!(o.evicted.unwrap().peer.port(), 1);
        assert_eq!(ft.len(), 3);
        assert_eq!(ft.evictions(), 1);
        let ports: Vec<u16> = ft.iter().map(|f| f.peer.port()).collect();
        assert_eq!(ports, vec![2, 0, 3]);
        // The evicted flow comes back as a new, estimated flow when it
        // shows up mid-stream.
        let o = ft.observe(
            &t(1),
            12,
            Seen {
                midstream: true,
                ..answered()
            },
        );
        assert!(o.new);
        assert_eq!(o.evicted.unwrap().peer.port(), 2);
        assert!(ft.iter().last().unwrap().estimated);
    }

    #[test]
    fn many_flows_stay_findable_through_churn() {
        // Exercise backward-shift deletion: a small index, many collisions.
        let cap = 1000;
        let mut ft = FlowTable::new(cap, 1);
        for round in 0..5u32 {
            for n in 0..3000u32 {
                ft.observe(&t(n * 7 + round), round * 3000 + n, answered());
            }
            assert_eq!(ft.len(), cap);
            // The last `cap` flows of the round are exactly those present.
            for n in 2000..3000u32 {
                assert!(
                    !ft.observe(&t(n * 7 + round), round * 3000 + 2999, Seen::default())
                        .new
                );
            }
        }
        let mut gone = Vec::new();
        ft.expire(u32::MAX, usize::MAX, &mut gone);
        assert_eq!(gone.len(), cap);
        assert!(ft.is_empty());
    }

    #[test]
    fn index_grows_with_the_flows_and_keeps_finding_them() {
        let n = 200_000u32;
        let mut ft = FlowTable::new(1_000_000, 1);
        assert_eq!(ft.buckets(), INITIAL_BUCKETS);
        for k in 0..n {
            assert!(ft.observe(&t(k), k, answered()).new);
            // One bucket per flow at most, never fewer flows than buckets
            // beyond the initial ones: memory follows the load.
            assert!(ft.len() <= ft.buckets().max(INITIAL_BUCKETS));
            assert!(ft.buckets() <= ft.len().max(INITIAL_BUCKETS));
        }
        assert_eq!(ft.bytes_used(), n as usize * (FLOW_BYTES + 4));
        for k in (0..n).step_by(7) {
            assert!(!ft.observe(&t(k), n, answered()).new, "flow {k} lost");
        }
        // Removing half and adding as many reuses slots: no growth.
        for k in (0..n).step_by(2) {
            assert!(ft.remove(&t(k)).is_some());
        }
        let used = ft.bytes_used();
        for k in n..n + n / 2 {
            assert!(ft.observe(&t(k), n, answered()).new);
        }
        assert_eq!(ft.bytes_used(), used);
        assert_eq!(ft.len(), n as usize);
        for k in (1..n).step_by(2).chain(n..n + n / 2) {
            assert!(ft.remove(&t(k)).is_some(), "flow {k} lost");
        }
        assert!(ft.is_empty());
        assert_eq!(ft.evictions(), 0);
    }

    #[test]
    fn evictions_are_counted() {
        let mut ft = FlowTable::new(100, 1);
        for k in 0..1000 {
            let o = ft.observe(&t(k), k, answered());
            assert_eq!(o.evicted.is_some(), k >= 100);
        }
        assert_eq!(ft.evictions(), 900);
        assert_eq!(ft.len(), 100);
        // The index stopped growing at the cap.
        assert!(ft.buckets() <= 100.max(INITIAL_BUCKETS));
    }

    #[test]
    fn expire_takes_oldest_first_and_stops_at_recent() {
        let mut ft = FlowTable::new(100, 1);
        for n in 0..10 {
            ft.observe(&t(n), n * 10, answered());
        }
        let mut out = Vec::new();
        ft.expire(35, 2, &mut out);
        assert_eq!(out.iter().map(|f| f.first).collect::<Vec<_>>(), vec![0, 10]);
        out.clear();
        ft.expire(35, 100, &mut out);
        assert_eq!(
            out.iter().map(|f| f.first).collect::<Vec<_>>(),
            vec![20, 30]
        );
        assert_eq!(ft.len(), 6);
    }

    #[test]
    fn remove_and_retire() {
        let mut ft = FlowTable::new(100, 1);
        for n in 0..10u32 {
            ft.observe(
                &t(n),
                n,
                Seen {
                    generation: u64::from(n % 2),
                    ..answered()
                },
            );
        }
        assert_eq!(ft.remove(&t(4)).unwrap().peer.port(), 4);
        assert!(ft.remove(&t(4)).is_none());
        let mut out = Vec::new();
        ft.retire(true, &mut out);
        assert_eq!(out.len(), 5);
        assert!(out.iter().all(|f| f.generation_odd));
        assert_eq!(ft.len(), 4);
        assert!(ft.iter().all(|f| f.peer.port() % 2 == 0));
        assert_eq!(ft.drain().len(), 4);
        assert!(ft.is_empty());
        // Usable after draining.
        assert!(ft.observe(&t(1), 1, answered()).new);
    }

    #[test]
    fn ipv6_peers_keep_their_family_and_memory_is_bounded() {
        let mut ft = FlowTable::new(1000, 1);
        let v6 = Tuple {
            src: "fd77::2".parse().unwrap(),
            dst: "fd77::1".parse().unwrap(),
            src_port: 5,
            dst_port: 22,
        };
        ft.observe(&v6, 1, answered());
        let f = ft.iter().next().unwrap();
        assert_eq!(f.peer, "[fd77::2]:5".parse::<SocketAddr>().unwrap());
        assert_eq!(f.local, "[fd77::1]:22".parse::<SocketAddr>().unwrap());
        // 48 B per flow plus 4 B of index.
        assert!(ft.bytes_at_capacity() <= 1000 * 52 + 64 * 4);
        assert!(ft.bytes_used() <= 52 + 64 * 4);
    }

    #[test]
    fn answers_saturate_and_many_local_addresses_fall_back_to_unknown() {
        let mut ft = FlowTable::new(1000, 10);
        for n in 0..70_000u32 {
            ft.observe(&t(1), n, answered());
        }
        assert_eq!(ft.iter().next().unwrap().answered, u32::from(u16::MAX));
        // 255 local addresses are told apart; past that, unspecified.
        let mut ft = FlowTable::new(1000, 10);
        for k in 0..300u32 {
            let x = Tuple {
                src: "10.77.0.2".parse().unwrap(),
                dst: IpAddr::V4(std::net::Ipv4Addr::from(0x0a4e_0000 + k)),
                src_port: 5,
                dst_port: 22,
            };
            ft.observe(&x, k, answered());
        }
        let unknown = ft.iter().filter(|f| f.local.ip().is_unspecified()).count();
        // The 45 past the limit share one key: one flow.
        assert_eq!((ft.len(), unknown), (256, 1));
    }
}
