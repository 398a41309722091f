//! The compact table of held connections.
//!
//! A tarpit is worth as many attackers as it can hold, so each held
//! connection costs one fixed-size [`Held`] slot (52 bytes) in a slab and
//! nothing else in userspace: no task, no timer, no tokio registration, no
//! heap allocation. Two intrusive lists thread through the slots so the
//! eviction policies are O(1):
//!
//! * the *age* list (doubly linked), oldest first, for the global
//!   `--max-conns` cap;
//! * one singly linked list per peer (IPv4 address or IPv6 prefix), oldest
//!   first, for the `--per-ip` cap. Unlinking walks the peer's own list,
//!   which the cap keeps short (32 by default); with no per-peer cap the
//!   lists are not kept at all.
//!
//! IPv6 peers are also counted per /48 (a site: 65,536 /64s) for the
//! `--per-ipv6-48` cap, in a map of counts only — no links in the slot.
//!
//! The slab's capacity is reserved once for the global cap: the kernel only
//! backs the pages actually written, so memory grows with the connections
//! held and the slab never moves.
//!
//! Lifetimes are checked by a coarse periodic scan (see `engine`): at 15,000
//! slots one scan reads under 1 MiB, far cheaper than a timer per connection.
//!
//! Connections under a bait policy are also on the *drip wheel*: a ring of
//! [`WHEEL`] buckets, one per 100 ms tick, each the head of a doubly linked
//! list threaded through the slots. A tick takes its bucket whole; writing
//! and rescheduling are O(1) per connection, and no timer or task exists per
//! connection. Links and bait progress cost 11 bytes of the 64-byte slot.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::os::fd::RawFd;

/// "No slot" in the intrusive links.
pub const NIL: u32 = u32::MAX;

/// Flag: the peer sent FIN (tried to close).
pub const F_FIN: u8 = 1;
/// Flag: bait has begun (the peer opened the bait's protocol, or the
/// policy starts it at accept): the connection is on the drip wheel.
pub const F_BAIT_ON: u8 = 2;
/// Flag: the peer opened something else than the bait's protocol: this
/// bait connection stays silent for good.
pub const F_BAIT_OFF: u8 = 4;
/// Flag: the bait's user timeout is off while the peer's window is closed
/// (see `engine`).
pub const F_UT_OFF: u8 = 8;
/// Flag: an exit probe was sent (its tick is in `fin_after`, unused before a
/// FIN; see `engine::exit_probe`).
pub const F_PROBED: u8 = 16;
/// Flag: a bait connection's exit probe left a byte one past our next
/// sequence number in the peer's out-of-order queue; the next drip sends at
/// least two bytes, so it fills the hole and covers that byte (otherwise the
/// peer would acknowledge a byte our kernel has not sent yet).
pub const F_HOLE: u8 = 32;

/// Buckets of the drip wheel (ticks of 100 ms: 409.6 s, more than the
/// longest drip interval, [`crate::engine::policy::DRIP_MAX`]).
pub const WHEEL: u32 = 4096;
/// In `drip_prev`: this slot heads bucket `drip_prev & !HEAD`.
const HEAD: u32 = 1 << 31;

/// One held connection. Times are in ticks of 100 ms since the engine's epoch
/// (u32 ticks last 13 years of uptime).
#[derive(Debug, Clone, Copy)]
pub struct Held {
    /// The socket; -1 when the slot is free.
    pub fd: RawFd,
    /// Peer address; IPv4 stored as IPv4-mapped IPv6.
    pub peer_ip: [u8; 16],
    pub peer_port: u16,
    /// Interned local IP (see [`Interner`]).
    pub local_ip: u16,
    /// Interned original-destination IP.
    pub orig_ip: u16,
    pub orig_port: u16,
    /// Index of the listener that accepted it.
    pub listener: u8,
    pub flags: u8,
    pub start: u32,
    pub deadline: u32,
    /// Ticks after `start` at which the peer sent FIN (valid when
    /// `flags & F_FIN`; saturates after 109 minutes). Before a FIN: the low
    /// 16 bits of the tick of the last exit probe ([`Held::mark_probe`]).
    pub fin_after: u16,
    /// Index of its policy (`crate::engine::policy::Policies::get`).
    pub policy: u8,
    /// Bait progress: line number and bytes of it sent (see `bait::Pos`).
    pub drip_line: u8,
    pub drip_off: u8,
    /// Whole seconds the client spent in SYN retransmissions before the
    /// accept (syn_delay; saturates at 255 s, beyond any client's SYN
    /// retries), 0 when not delayed.
    pub syn_wait: u8,
    ip_next: u32,
    age_prev: u32,
    age_next: u32,
    /// Drip wheel links: `NIL` when not on the wheel, `HEAD | bucket` for
    /// the first of a bucket.
    drip_prev: u32,
    drip_next: u32,
}

impl Held {
    /// A new entry, not yet linked into any list.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        fd: RawFd,
        peer: IpAddr,
        peer_port: u16,
        local_ip: u16,
        orig_ip: u16,
        orig_port: u16,
        listener: u8,
        start: u32,
        deadline: u32,
    ) -> Self {
        let peer_ip = match peer {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        Held {
            fd,
            peer_ip,
            peer_port,
            local_ip,
            orig_ip,
            orig_port,
            listener,
            flags: 0,
            start,
            deadline,
            fin_after: 0,
            policy: 0,
            drip_line: 0,
            drip_off: 0,
            syn_wait: 0,
            ip_next: NIL,
            age_prev: NIL,
            age_next: NIL,
            drip_prev: NIL,
            drip_next: NIL,
        }
    }

    pub fn peer(&self) -> IpAddr {
        crate::host::unmap(IpAddr::V6(Ipv6Addr::from(self.peer_ip)))
    }

    pub fn is_free(&self) -> bool {
        self.fd < 0
    }

    pub fn fin_seen(&self) -> bool {
        self.flags & F_FIN != 0
    }

    /// Records that an exit probe went out at tick `now`. The tick lives in
    /// `fin_after`, unused until a FIN comes (and no probe goes out after
    /// it): the slot stays 64 bytes.
    pub fn mark_probe(&mut self, now: u32) {
        if !self.fin_seen() {
            self.flags |= F_PROBED | F_HOLE;
            self.fin_after = now as u16;
        }
    }

    /// Ticks since the last exit probe, if one was sent (exact while under
    /// 109 minutes; probes are never that far apart).
    pub fn ticks_since_probe(&self, now: u32) -> Option<u32> {
        (self.flags & F_PROBED != 0).then(|| u32::from((now as u16).wrapping_sub(self.fin_after)))
    }

    /// Whether this connection drips bait now (not: no bait, bait waiting
    /// for its peer, or bait that met another protocol — all silent).
    pub fn bait_on(&self) -> bool {
        self.flags & F_BAIT_ON != 0
    }

    /// Records that the peer sent FIN at tick `now`.
    pub fn mark_fin(&mut self, now: u32) {
        // `fin_after` held the last probe's tick.
        self.flags = (self.flags | F_FIN) & !F_PROBED;
        self.fin_after = now.saturating_sub(self.start).min(u32::from(u16::MAX)) as u16;
    }
}

/// The key peers are grouped by for `--per-ip`: the IPv4 address, or the
/// IPv6 address masked to `prefix` bits (at most 64). IPv4 keys live in the
/// `ff00::/8` space, which no TCP peer can have, so the two never collide.
/// The grouping is [`crate::host::Host`]'s; this packs it into 64 bits.
pub fn peer_key(ip: IpAddr, v6_prefix: u8) -> u64 {
    use crate::host::Host;
    match Host::from_ip(ip, v6_prefix.clamp(1, 64)) {
        Host::V4(v4) => 0xff00_0000_0000_0000 | u64::from(u32::from(v4)),
        // The prefix is at most 64 bits: the network's upper half is all of it.
        Host::V6Net(net, _) => (u128::from(net) >> 64) as u64,
    }
}

/// The /48 an IPv6 peer belongs to, packed in 64 bits; `None` for IPv4
/// (and IPv4-mapped) peers, which the /48 cap does not concern.
pub fn net48_key(ip: IpAddr) -> Option<u64> {
    match crate::host::unmap(ip) {
        IpAddr::V4(_) => None,
        IpAddr::V6(v6) => Some((u128::from(v6) >> 80) as u64),
    }
}

#[derive(Debug, Clone, Copy)]
struct Group {
    /// Oldest slot of this peer.
    head: u32,
    /// Newest slot of this peer.
    tail: u32,
    count: u32,
}

/// Small table of the few local/original-destination IPs a server has, so a
/// slot stores a u16 instead of 16 bytes twice.
#[derive(Debug, Default)]
pub struct Interner {
    map: HashMap<IpAddr, u16>,
    list: Vec<IpAddr>,
}

impl Interner {
    /// Index of `ip`; when the table is full (65,535 distinct addresses, never
    /// on a real host) returns `u16::MAX`, which resolves to "unspecified".
    pub fn intern(&mut self, ip: IpAddr) -> u16 {
        if let Some(&i) = self.map.get(&ip) {
            return i;
        }
        if self.list.len() >= usize::from(u16::MAX) {
            return u16::MAX;
        }
        let i = self.list.len() as u16;
        self.list.push(ip);
        self.map.insert(ip, i);
        i
    }

    pub fn get(&self, i: u16) -> IpAddr {
        self.list
            .get(usize::from(i))
            .copied()
            .unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED))
    }
}

/// The slab of held connections with its age and per-peer lists.
#[derive(Debug)]
pub struct Table {
    slots: Vec<Held>,
    /// Free slots, threaded through `age_next`.
    free: u32,
    len: usize,
    age_head: u32,
    age_tail: u32,
    groups: HashMap<u64, Group>,
    /// Whether per-peer lists are kept (only needed for a per-peer cap).
    track_peers: bool,
    /// Held connections per IPv6 /48 ([`net48_key`]), when counted.
    nets: HashMap<u64, u32>,
    track_nets: bool,
    v6_prefix: u8,
    pub addrs: Interner,
    /// Drip wheel heads; empty until the first [`Table::drip_at`].
    wheel: Vec<u32>,
    /// The last tick whose bucket [`Table::drip_due`] took.
    wheel_done: u32,
}

impl Table {
    /// `capacity`: the most slots ever needed (reserved, not touched);
    /// `track_peers`: keep per-peer lists for a per-peer cap.
    pub fn new(v6_prefix: u8, capacity: usize, track_peers: bool) -> Self {
        Table {
            slots: Vec::with_capacity(capacity.min(1 << 24)),
            free: NIL,
            len: 0,
            age_head: NIL,
            age_tail: NIL,
            groups: HashMap::new(),
            track_peers,
            nets: HashMap::new(),
            track_nets: false,
            v6_prefix,
            addrs: Interner::default(),
            wheel: Vec::new(),
            wheel_done: 0,
        }
    }

    /// Starts the drip wheel at tick `now` (no-op once started). Without it
    /// the first [`Table::drip_at`] starts the wheel at its own due tick,
    /// and nothing could be put on it earlier than that: an exit probe's
    /// first check a second out would delay every bait that begins sooner.
    pub fn drip_start(&mut self, now: u32) {
        if self.wheel.is_empty() {
            self.wheel = vec![NIL; WHEEL as usize];
            self.wheel_done = now;
        }
    }

    /// Puts `slot` on the drip wheel, due at tick `due` (clamped to the
    /// wheel's span after the last tick taken). A slot already on it moves.
    pub fn drip_at(&mut self, slot: u32, due: u32) {
        if self.get(slot).is_none() {
            return;
        }
        if self.wheel.is_empty() {
            self.wheel = vec![NIL; WHEEL as usize];
            self.wheel_done = due.saturating_sub(1);
        }
        self.drip_unlink(slot);
        let due = due.clamp(
            self.wheel_done.saturating_add(1),
            self.wheel_done.saturating_add(WHEEL - 1),
        );
        let b = (due % WHEEL) as usize;
        let old = self.wheel[b];
        if old != NIL {
            self.slots[old as usize].drip_prev = slot;
        }
        let s = &mut self.slots[slot as usize];
        s.drip_prev = HEAD | b as u32;
        s.drip_next = old;
        self.wheel[b] = slot;
    }

    /// Takes every slot due at or before tick `now` off the wheel, appending
    /// them to `out` (the caller writes and reschedules them).
    pub fn drip_due(&mut self, now: u32, out: &mut Vec<u32>) {
        if self.wheel.is_empty() || now <= self.wheel_done {
            return;
        }
        // After a stall longer than the wheel, one lap takes everything.
        let from = self.wheel_done.max(now.saturating_sub(WHEEL)) + 1;
        for t in from..=now {
            let b = (t % WHEEL) as usize;
            let mut cur = std::mem::replace(&mut self.wheel[b], NIL);
            while cur != NIL {
                let s = &mut self.slots[cur as usize];
                let next = s.drip_next;
                s.drip_prev = NIL;
                s.drip_next = NIL;
                out.push(cur);
                cur = next;
            }
        }
        self.wheel_done = now;
    }

    /// Slots on the drip wheel (for tests and the benchmark).
    pub fn drip_len(&self) -> usize {
        self.slots
            .iter()
            .filter(|h| !h.is_free() && h.drip_prev != NIL)
            .count()
    }

    fn drip_unlink(&mut self, slot: u32) {
        let (prev, next) = {
            let s = &self.slots[slot as usize];
            (s.drip_prev, s.drip_next)
        };
        if prev == NIL {
            return;
        }
        if prev & HEAD != 0 {
            self.wheel[(prev & !HEAD) as usize] = next;
        } else {
            self.slots[prev as usize].drip_next = next;
        }
        if next != NIL {
            self.slots[next as usize].drip_prev = prev;
        }
        let s = &mut self.slots[slot as usize];
        s.drip_prev = NIL;
        s.drip_next = NIL;
    }

    /// Also count IPv6 peers per /48 (for a per-/48 cap).
    pub fn count_nets(mut self) -> Self {
        self.track_nets = true;
        self
    }

    /// How many connections the /48 of `ip` holds (0 for IPv4 or when not
    /// counted).
    pub fn net_count_of(&self, ip: IpAddr) -> u32 {
        net48_key(ip)
            .and_then(|k| self.nets.get(&k).copied())
            .unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, slot: u32) -> Option<&Held> {
        self.slots.get(slot as usize).filter(|h| !h.is_free())
    }

    pub fn get_mut(&mut self, slot: u32) -> Option<&mut Held> {
        self.slots.get_mut(slot as usize).filter(|h| !h.is_free())
    }

    pub fn key_of(&self, ip: IpAddr) -> u64 {
        peer_key(ip, self.v6_prefix)
    }

    /// How many connections the peer group of `ip` holds.
    pub fn count_of(&self, ip: IpAddr) -> u32 {
        self.groups.get(&self.key_of(ip)).map_or(0, |g| g.count)
    }

    /// Oldest held connection of the peer group of `ip`.
    pub fn oldest_of(&self, ip: IpAddr) -> Option<u32> {
        self.groups.get(&self.key_of(ip)).map(|g| g.head)
    }

    /// Oldest held connection overall.
    pub fn oldest(&self) -> Option<u32> {
        (self.age_head != NIL).then_some(self.age_head)
    }

    /// Stores `h` (newest in both lists) and returns its slot.
    pub fn insert(&mut self, mut h: Held) -> u32 {
        debug_assert!(h.fd >= 0);
        let slot = if self.free != NIL {
            let s = self.free;
            self.free = self.slots[s as usize].age_next;
            s
        } else {
            self.slots.push(h);
            (self.slots.len() - 1) as u32
        };
        h.drip_prev = NIL;
        h.drip_next = NIL;
        // Age list: append at the tail.
        h.age_prev = self.age_tail;
        h.age_next = NIL;
        if self.age_tail != NIL {
            self.slots[self.age_tail as usize].age_next = slot;
        } else {
            self.age_head = slot;
        }
        self.age_tail = slot;
        // Peer group: append at its tail.
        h.ip_next = NIL;
        if self.track_peers {
            let key = peer_key(h.peer(), self.v6_prefix);
            match self.groups.get_mut(&key) {
                Some(g) => {
                    self.slots[g.tail as usize].ip_next = slot;
                    g.tail = slot;
                    g.count += 1;
                }
                None => {
                    self.groups.insert(
                        key,
                        Group {
                            head: slot,
                            tail: slot,
                            count: 1,
                        },
                    );
                }
            }
        }
        if self.track_nets {
            if let Some(k) = net48_key(h.peer()) {
                *self.nets.entry(k).or_insert(0) += 1;
            }
        }
        self.slots[slot as usize] = h;
        self.len += 1;
        slot
    }

    /// Unlinks and frees `slot`, returning what it held.
    pub fn remove(&mut self, slot: u32) -> Option<Held> {
        self.get(slot)?;
        self.drip_unlink(slot);
        let h = self.slots[slot as usize];
        // Age list.
        if h.age_prev != NIL {
            self.slots[h.age_prev as usize].age_next = h.age_next;
        } else {
            self.age_head = h.age_next;
        }
        if h.age_next != NIL {
            self.slots[h.age_next as usize].age_prev = h.age_prev;
        } else {
            self.age_tail = h.age_prev;
        }
        // Peer group: find the predecessor along the (short) list.
        if self.track_peers {
            let key = peer_key(h.peer(), self.v6_prefix);
            if let Some(g) = self.groups.get_mut(&key) {
                if g.count <= 1 {
                    self.groups.remove(&key);
                } else {
                    if g.head == slot {
                        g.head = h.ip_next;
                    } else {
                        let mut prev = g.head;
                        while prev != NIL && self.slots[prev as usize].ip_next != slot {
                            prev = self.slots[prev as usize].ip_next;
                        }
                        if prev != NIL {
                            self.slots[prev as usize].ip_next = h.ip_next;
                            if g.tail == slot {
                                g.tail = prev;
                            }
                        }
                    }
                    g.count -= 1;
                }
            }
        }
        if self.track_nets {
            if let Some(k) = net48_key(h.peer()) {
                if let Some(n) = self.nets.get_mut(&k) {
                    *n -= 1;
                    if *n == 0 {
                        self.nets.remove(&k);
                    }
                }
            }
        }
        let s = &mut self.slots[slot as usize];
        s.fd = -1;
        s.age_next = self.free;
        self.free = slot;
        self.len -= 1;
        if self.len == 0 {
            // Start over: the free list is dropped with the slots (the
            // reserved capacity stays; its pages are reused, not re-faulted).
            self.slots.clear();
            self.free = NIL;
            self.groups.shrink_to_fit();
            self.nets.shrink_to_fit();
        }
        Some(h)
    }

    /// Slots whose deadline is at or before `now`, appended to `out`.
    /// Returns the earliest deadline among the others (`u32::MAX` if none),
    /// so the caller can skip scanning until then.
    pub fn expired(&self, now: u32, out: &mut Vec<u32>) -> u32 {
        let mut next = u32::MAX;
        for (i, h) in self.slots.iter().enumerate() {
            if h.is_free() {
                continue;
            }
            if h.deadline <= now {
                out.push(i as u32);
            } else {
                next = next.min(h.deadline);
            }
        }
        next
    }

    /// All held slots, oldest first.
    pub fn iter_oldest_first(&self) -> impl Iterator<Item = (u32, &Held)> + '_ {
        let mut cur = self.age_head;
        std::iter::from_fn(move || {
            if cur == NIL {
                return None;
            }
            let s = cur;
            let h = &self.slots[s as usize];
            cur = h.age_next;
            Some((s, h))
        })
    }

    /// Bytes of userspace memory the table itself occupies (slots + groups),
    /// for the benchmark's sanity check.
    pub fn footprint(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Held>()
            + self.groups.capacity() * (std::mem::size_of::<(u64, Group)>() + 1)
            + self.wheel.capacity() * std::mem::size_of::<u32>()
            + self.nets.capacity() * (std::mem::size_of::<(u64, u32)>() + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn held(fd: i32, ip: &str, start: u32) -> Held {
        Held::new(
            fd,
            ip.parse().unwrap(),
            1000,
            0,
            0,
            22,
            0,
            start,
            start + 100,
        )
    }

    #[test]
    fn slot_is_compact() {
        assert!(
            std::mem::size_of::<Held>() <= 64,
            "{}",
            std::mem::size_of::<Held>()
        );
    }

    #[test]
    fn ages_and_groups_track_insert_and_remove() {
        let mut t = Table::new(64, 16, true);
        let a = t.insert(held(10, "10.0.0.1", 1));
        let b = t.insert(held(11, "10.0.0.2", 2));
        let c = t.insert(held(12, "10.0.0.1", 3));
        let d = t.insert(held(13, "10.0.0.1", 4));
        assert_eq!(t.len(), 4);
        assert_eq!(t.oldest(), Some(a));
        let ip1: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(t.count_of(ip1), 3);
        assert_eq!(t.oldest_of(ip1), Some(a));
        t.remove(a).unwrap();
        assert_eq!(t.oldest(), Some(b));
        assert_eq!(t.oldest_of(ip1), Some(c));
        assert_eq!(t.count_of(ip1), 2);
        t.remove(d).unwrap();
        assert_eq!(t.oldest_of(ip1), Some(c));
        assert_eq!(t.count_of(ip1), 1);
        // A freed slot is reused and becomes the newest.
        let e = t.insert(held(14, "10.0.0.1", 5));
        assert!(e == a || e == d);
        let order: Vec<i32> = t.iter_oldest_first().map(|(_, h)| h.fd).collect();
        assert_eq!(order, vec![11, 12, 14]);
        assert_eq!(t.oldest_of(ip1), Some(c));
        assert!(t.remove(a.max(d) + 100).is_none());
    }

    #[test]
    fn group_tail_survives_removals_in_the_middle_and_end() {
        let mut t = Table::new(64, 16, true);
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        let s: Vec<u32> = (0..4)
            .map(|i| t.insert(held(i, "10.0.0.7", i as u32)))
            .collect();
        t.remove(s[2]).unwrap(); // middle
        t.remove(s[3]).unwrap(); // tail
        let n = t.insert(held(9, "10.0.0.7", 9)); // appended after the new tail
        assert_eq!(t.count_of(ip), 3);
        t.remove(s[0]).unwrap();
        assert_eq!(t.oldest_of(ip), Some(s[1]));
        t.remove(s[1]).unwrap();
        assert_eq!(t.oldest_of(ip), Some(n));
        assert_eq!(t.count_of(ip), 1);
    }

    #[test]
    fn without_a_per_peer_cap_no_groups_are_kept() {
        let mut t = Table::new(64, 16, false);
        let a = t.insert(held(1, "10.0.0.1", 0));
        t.insert(held(2, "10.0.0.1", 1));
        assert_eq!(t.count_of("10.0.0.1".parse().unwrap()), 0);
        assert_eq!(t.oldest(), Some(a));
        t.remove(a).unwrap();
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn removing_everything_resets() {
        let mut t = Table::new(64, 16, true);
        let s: Vec<u32> = (0..50)
            .map(|i| t.insert(held(i, "10.0.0.9", i as u32)))
            .collect();
        for x in s.iter().rev() {
            t.remove(*x).unwrap();
        }
        assert!(t.is_empty());
        assert_eq!(t.oldest(), None);
        assert_eq!(t.count_of("10.0.0.9".parse().unwrap()), 0);
        let n = t.insert(held(99, "10.0.0.9", 1));
        assert_eq!(t.oldest(), Some(n));
    }

    #[test]
    fn ipv6_grouped_by_prefix_and_mapped_v4_is_v4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(peer_key(a, 64), peer_key(b, 64));
        assert_ne!(peer_key(a, 64), peer_key(c, 64));
        assert_eq!(peer_key(a, 48), peer_key(c, 48));
        let m: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        assert_eq!(peer_key(m, 64), peer_key(v4, 64));
        let h = Held::new(3, m, 1, 0, 0, 0, 0, 0, 0);
        assert_eq!(h.peer(), v4);
    }

    #[test]
    fn ipv6_peers_are_counted_per_48_as_well() {
        let mut t = Table::new(64, 16, true).count_nets();
        let a = t.insert(held(1, "2001:db8:1:2::1", 0));
        t.insert(held(2, "2001:db8:1:3::1", 0));
        t.insert(held(3, "2001:db8:1:ffff::9", 0));
        t.insert(held(4, "2001:db8:2::1", 0));
        t.insert(held(5, "10.0.0.1", 0));
        let site: IpAddr = "2001:db8:1:77::1".parse().unwrap();
        assert_eq!(t.net_count_of(site), 3);
        assert_eq!(t.count_of(site), 0, "its own /64 holds nothing");
        assert_eq!(t.net_count_of("2001:db8:2:5::1".parse().unwrap()), 1);
        assert_eq!(t.net_count_of("10.0.0.1".parse().unwrap()), 0);
        assert_eq!(t.net_count_of("::ffff:10.0.0.1".parse().unwrap()), 0);
        t.remove(a).unwrap();
        assert_eq!(t.net_count_of(site), 2);
        assert_eq!(net48_key("2001:db8:1::".parse().unwrap()), net48_key(site));
        assert_ne!(
            net48_key("2001:db8:0:1::".parse().unwrap()),
            net48_key(site)
        );
    }

    #[test]
    fn expired_finds_due_slots() {
        let mut t = Table::new(64, 16, true);
        let a = t.insert(held(1, "10.0.0.1", 0)); // deadline 100
        let _b = t.insert(held(2, "10.0.0.2", 50)); // deadline 150
        let mut out = vec![];
        assert_eq!(t.expired(120, &mut out), 150);
        assert_eq!(out, vec![a]);
    }

    #[test]
    fn drip_wheel_hands_out_due_slots_once_and_forgets_removed_ones() {
        let mut t = Table::new(64, 16, false);
        let a = t.insert(held(1, "10.0.0.1", 0));
        let b = t.insert(held(2, "10.0.0.2", 0));
        let c = t.insert(held(3, "10.0.0.3", 0));
        t.drip_at(a, 5);
        t.drip_at(b, 5);
        t.drip_at(c, 7);
        assert_eq!(t.drip_len(), 3);
        let mut out = vec![];
        t.drip_due(4, &mut out);
        assert!(out.is_empty());
        t.remove(b).unwrap(); // a released slot leaves the wheel
        t.drip_due(6, &mut out);
        assert_eq!(out, vec![a]);
        out.clear();
        // Rescheduled past the wheel's span: clamped, never lost.
        t.drip_at(a, 6 + WHEEL * 3);
        let d = t.insert(held(4, "10.0.0.4", 0)); // reuses b's slot
        assert_eq!(d, b);
        t.drip_due(8, &mut out);
        assert_eq!(out, vec![c]);
        out.clear();
        // Moving a slot already on the wheel.
        t.drip_at(c, 20);
        t.drip_at(c, 10);
        t.drip_due(15, &mut out);
        assert_eq!(out, vec![c]);
        out.clear();
        // A long stall: one lap takes all, each once.
        t.drip_due(15 + WHEEL * 5, &mut out);
        assert_eq!(out, vec![a]);
        assert_eq!(t.drip_len(), 0);
    }

    #[test]
    fn interner_reuses_indexes() {
        let mut i = Interner::default();
        let x = i.intern("10.1.1.1".parse().unwrap());
        let y = i.intern("10.1.1.2".parse().unwrap());
        assert_ne!(x, y);
        assert_eq!(i.intern("10.1.1.1".parse().unwrap()), x);
        assert_eq!(i.get(y), "10.1.1.2".parse::<IpAddr>().unwrap());
    }
}
