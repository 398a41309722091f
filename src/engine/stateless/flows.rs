//! The bounded flow table: statistics only, never needed to answer.
//!
//! The engine answers every packet from the SYN cookie alone; this table only
//! remembers, per trapped connection, when it was first and last seen, how
//! many segments we answered, how much the peer tried to send and when it
//! tried to close — so `tarpit stats`, metrics and history work for this
//! engine too. It is a fixed-capacity hash table with an exact
//! least-recently-seen list: when full, the flow not heard from longest is
//! evicted (and reported, so its record is not lost). Each flow costs 48
//! bytes plus 4–8 bytes of index; the capacity bounds memory whatever the
//! number of connections held.
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
/// An empty index bucket. Buckets hold flow index + 1, so a fresh index is
/// all zeros: the allocator hands out untouched zero pages, and an idle
/// table costs no resident memory.
const EMPTY: u32 = 0;
/// Local address index meaning "more local addresses than we track".
const LOCAL_UNKNOWN: u16 = u16::MAX;

const F_FIN: u8 = 1;
const F_ESTIMATED: u8 = 2;
/// Parity of the key generation that last verified this flow.
const F_GEN_ODD: u8 = 4;
const F_IPV4: u8 = 8;

/// One flow, 48 bytes. Times are engine ticks (see [`FlowTable::new`]).
#[derive(Clone, Copy)]
#[repr(C)]
struct Flow {
    peer: [u8; 16],
    peer_port: u16,
    local_port: u16,
    local: u16,
    flags: u8,
    _spare: u8,
    /// Largest payload the peer offered in one segment.
    bytes: u16,
    /// Seconds from `first` to the first FIN (saturating).
    fin_after: u16,
    first: u32,
    last: u32,
    answered: u32,
    /// Least-recently-seen list: `prev` is more recent, `next` older. The
    /// free list reuses `next`.
    prev: u32,
    next: u32,
}

const _: () = assert!(std::mem::size_of::<Flow>() == 48);

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
    index: Vec<u32>,
    mask: usize,
    cap: usize,
    len: usize,
    /// Most recently seen.
    head: u32,
    /// Least recently seen.
    tail: u32,
    free: u32,
    keys: (u64, u64),
    locals: Vec<IpAddr>,
    local_ids: HashMap<IpAddr, u16>,
    tick_per_sec: u32,
    evictions: u64,
}

impl FlowTable {
    /// A table holding at most `cap` flows (at least 1). `ticks_per_sec`
    /// tells it the unit of the `now` values it is given. Memory for the
    /// flows is reserved up front but only touched as flows arrive.
    pub fn new(cap: usize, ticks_per_sec: u32) -> Self {
        let cap = cap.clamp(1, (u32::MAX - 1) as usize);
        // Load factor at most 0.8 keeps linear probing short.
        let buckets = (cap + cap / 4 + 1).next_power_of_two().max(16);
        let mut r = rand::rng();
        FlowTable {
            flows: Vec::with_capacity(cap.min(1 << 16)),
            index: vec![EMPTY; buckets],
            mask: buckets - 1,
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

    /// Flows evicted because the table was full, since start. Non-zero means
    /// later flows' first-seen times may be estimates.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Bytes the table uses at full capacity (flows plus index).
    pub fn bytes_at_capacity(&self) -> usize {
        self.cap * std::mem::size_of::<Flow>() + self.index.len() * 4
    }

    /// Records one verified segment of `t` at time `now`.
    pub fn observe(&mut self, t: &Tuple, now: u32, s: Seen) -> Observed {
        let key = self.key_of(t);
        let mut out = Observed::default();
        let i = match self.find(&key) {
            Some((_, i)) => {
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
                    _spare: 0,
                    bytes: 0,
                    fin_after: 0,
                    first: now,
                    last: now,
                    answered: 0,
                    prev: NONE,
                    next: NONE,
                };
                let i = self.alloc(f);
                self.index_insert(&key, i);
                self.len += 1;
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
        let (b, i) = self.find(&key)?;
        Some(self.remove_at(b, i))
    }

    /// Removes and returns flows not seen since `before`, oldest first, at
    /// most `max` of them (so one sweep never stalls the engine).
    pub fn expire(&mut self, before: u32, max: usize, out: &mut Vec<FlowInfo>) {
        while out.len() < max && self.tail != NONE {
            let i = self.tail;
            if self.flows[i as usize].last >= before {
                break;
            }
            let key = self.key_at(i);
            if let Some((b, _)) = self.find(&key) {
                out.push(self.remove_at(b, i));
            } else {
                break; // cannot happen: every listed flow is indexed
            }
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
                let key = self.key_at(i);
                if let Some((b, _)) = self.find(&key) {
                    out.push(self.remove_at(b, i));
                }
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
        self.index.fill(EMPTY);
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
            answered: f.answered,
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
                let id = self.locals.len() as u16;
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

    fn home(&self, k: &Key) -> usize {
        let mut h = SipHasher13::new_with_keys(self.keys.0, self.keys.1);
        h.write(&k.peer);
        h.write_u16(k.peer_port);
        h.write_u16(k.local_port);
        h.write_u16(k.local);
        h.finish() as usize & self.mask
    }

    /// `(bucket, flow index)` of `k`.
    fn find(&self, k: &Key) -> Option<(usize, u32)> {
        let mut b = self.home(k);
        loop {
            let e = self.index[b];
            if e == EMPTY {
                return None;
            }
            let i = e - 1;
            if self.key_at(i) == *k {
                return Some((b, i));
            }
            b = (b + 1) & self.mask;
        }
    }

    fn index_insert(&mut self, k: &Key, i: u32) {
        let mut b = self.home(k);
        while self.index[b] != EMPTY {
            b = (b + 1) & self.mask;
        }
        self.index[b] = i + 1;
    }

    /// Empties bucket `b` and shifts later members of its cluster back so
    /// lookups never stop early (linear probing without tombstones).
    fn index_delete(&mut self, mut b: usize) {
        let mut j = b;
        loop {
            j = (j + 1) & self.mask;
            let e = self.index[j];
            if e == EMPTY {
                break;
            }
            let h = self.home(&self.key_at(e - 1));
            // Move the entry at j into the hole at b unless its home lies
            // cyclically in (b, j].
            let between = if b <= j {
                b < h && h <= j
            } else {
                b < h || h <= j
            };
            if !between {
                self.index[b] = e;
                b = j;
            }
        }
        self.index[b] = EMPTY;
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

    fn remove_at(&mut self, b: usize, i: u32) -> FlowInfo {
        let info = self.info(i);
        self.index_delete(b);
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
        let key = self.key_at(i);
        let (b, _) = self.find(&key)?;
        self.evictions += 1;
        Some(self.remove_at(b, i))
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
    local: u16,
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
        // 48 B per flow plus at most 2 x 4 B of index per slot.
        assert!(ft.bytes_at_capacity() <= 1000 * 48 + 2048 * 4);
    }
}
