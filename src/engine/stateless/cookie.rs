//! SYN cookies: our initial sequence number is a keyed hash of the peer's
//! 4-tuple and its initial sequence number, so every later segment of the
//! connection can be recognised without remembering anything.
//!
//! For a connection whose SYN carried sequence number `isn`, our SYN/ACK
//! carries `iss = H(tuple, isn)`. Afterwards the peer acknowledges `iss + 1`
//! in every segment, and its sequence number is either
//! * `isn + 1` — the handshake ACK, data, and BSD-style window probes (which
//!   carry one byte at the window's left edge); or
//! * `isn` — Linux zero-window probes and keepalives (`snd_una - 1`).
//!
//! So an ACK is ours exactly when `ack - 1` equals `H(tuple, seq - 1)` or
//! `H(tuple, seq)`; anything else is not answered, which keeps the tarpit from
//! reflecting spoofed packets. Keys rotate; the previous key stays valid for
//! one more period, so a connection is answered for between one and two
//! rotation periods — the stateless engine's equivalent of a lifetime.

use super::packet::Tuple;
use rand::Rng;
use siphasher::sip::SipHasher24;
use std::hash::Hasher;

/// Which kind of segment an ACK number proved the segment to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckKind {
    /// `seq = isn + 1`: the handshake ACK, data, or a probe with one byte.
    /// The right answer acknowledges `seq`.
    LeftEdge,
    /// `seq = isn`: a Linux zero-window probe or keepalive. The right answer
    /// acknowledges `seq + 1`.
    Probe,
}

/// A verified segment: its kind, the peer's next sequence number (what we
/// acknowledge), our sequence number, and the generation of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub kind: AckKind,
    /// `isn + 1`: the ACK number of our answer.
    pub peer_next: u32,
    /// `iss + 1`: the sequence number of our answer.
    pub our_next: u32,
    pub generation: u64,
}

/// The current and the previous key.
#[derive(Clone)]
pub struct Cookies {
    current: (u64, u64),
    previous: Option<(u64, u64)>,
    generation: u64,
}

impl std::fmt::Debug for Cookies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print keys.
        f.debug_struct("Cookies")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl Cookies {
    /// Fresh random key, generation 0, no previous key.
    pub fn new() -> Self {
        Cookies {
            current: random_key(),
            previous: None,
            generation: 0,
        }
    }

    /// Deterministic keys, for tests and benchmarks.
    pub fn with_key(k0: u64, k1: u64) -> Self {
        Cookies {
            current: (k0, k1),
            previous: None,
            generation: 0,
        }
    }

    /// Restores keys saved with [`keys`](Self::keys) (generation 0).
    pub fn from_keys(current: (u64, u64), previous: Option<(u64, u64)>) -> Self {
        Cookies {
            current,
            previous,
            generation: 0,
        }
    }

    /// The current and previous key, for saving across restarts.
    pub fn keys(&self) -> ((u64, u64), Option<(u64, u64)>) {
        (self.current, self.previous)
    }

    /// Generation of the current key (0 at start, +1 per rotation).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Replaces the key with a fresh random one; the old one stays valid
    /// until the next rotation. Returns the new generation.
    pub fn rotate(&mut self) -> u64 {
        self.rotate_to(random_key())
    }

    /// [`rotate`](Self::rotate) with a chosen key.
    pub fn rotate_to(&mut self, key: (u64, u64)) -> u64 {
        self.previous = Some(self.current);
        self.current = key;
        self.generation += 1;
        self.generation
    }

    /// Our initial sequence number for a SYN with sequence `isn`.
    pub fn syn_ack_seq(&self, t: &Tuple, isn: u32) -> u32 {
        hash(self.current, t, isn)
    }

    /// Checks an ACK-bearing segment against the current then the previous
    /// key. `None`: not a connection we made (or made too long ago).
    pub fn verify(&self, t: &Tuple, seq: u32, ack: u32) -> Option<Verified> {
        let iss = ack.wrapping_sub(1);
        let keys = [
            Some((self.current, self.generation)),
            self.previous.map(|k| (k, self.generation.wrapping_sub(1))),
        ];
        for (key, generation) in keys.into_iter().flatten() {
            if hash(key, t, seq.wrapping_sub(1)) == iss {
                return Some(Verified {
                    kind: AckKind::LeftEdge,
                    peer_next: seq,
                    our_next: ack,
                    generation,
                });
            }
            if hash(key, t, seq) == iss {
                return Some(Verified {
                    kind: AckKind::Probe,
                    peer_next: seq.wrapping_add(1),
                    our_next: ack,
                    generation,
                });
            }
        }
        None
    }
}

impl Default for Cookies {
    fn default() -> Self {
        Self::new()
    }
}

fn random_key() -> (u64, u64) {
    let mut r = rand::rng();
    (r.random(), r.random())
}

fn hash(key: (u64, u64), t: &Tuple, isn: u32) -> u32 {
    let mut h = SipHasher24::new_with_keys(key.0, key.1);
    let (b, n) = t.key_bytes();
    h.write(&b[..n]);
    h.write(&isn.to_be_bytes());
    let v = h.finish();
    // Fold both halves so every key bit matters for the 32 we keep.
    (v ^ (v >> 32)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Tuple {
        Tuple {
            src: "10.77.0.2".parse().unwrap(),
            dst: "10.77.0.1".parse().unwrap(),
            src_port: 41000,
            dst_port: 22,
        }
    }

    #[test]
    fn handshake_ack_and_probe_are_told_apart() {
        let c = Cookies::with_key(1, 2);
        let isn = u32::MAX; // wraps: isn + 1 == 0
        let iss = c.syn_ack_seq(&t(), isn);
        let ack = iss.wrapping_add(1);
        let v = c.verify(&t(), isn.wrapping_add(1), ack).unwrap();
        assert_eq!(v.kind, AckKind::LeftEdge);
        assert_eq!(v.peer_next, 0);
        assert_eq!(v.our_next, ack);
        let v = c.verify(&t(), isn, ack).unwrap();
        assert_eq!(v.kind, AckKind::Probe);
        assert_eq!(v.peer_next, 0);
    }

    #[test]
    fn wrong_seq_ack_or_tuple_is_not_ours() {
        let c = Cookies::with_key(1, 2);
        let isn = 12345;
        let ack = c.syn_ack_seq(&t(), isn).wrapping_add(1);
        assert!(c.verify(&t(), isn + 5, ack).is_none());
        assert!(c.verify(&t(), isn - 1, ack).is_none());
        assert!(c.verify(&t(), isn + 1, ack + 1).is_none());
        let mut other = t();
        other.src_port += 1;
        assert!(c.verify(&other, isn + 1, ack).is_none());
        let mut other = t();
        other.dst = "10.77.0.3".parse().unwrap();
        assert!(c.verify(&other, isn + 1, ack).is_none());
        // A different key gives different cookies.
        let d = Cookies::with_key(1, 3);
        assert_ne!(d.syn_ack_seq(&t(), isn), c.syn_ack_seq(&t(), isn));
    }

    #[test]
    fn previous_key_is_accepted_for_one_rotation_only() {
        let mut c = Cookies::with_key(7, 8);
        let isn = 99;
        let ack = c.syn_ack_seq(&t(), isn).wrapping_add(1);
        assert_eq!(c.rotate_to((9, 10)), 1);
        let v = c.verify(&t(), isn + 1, ack).unwrap();
        assert_eq!(v.generation, 0);
        // New connections use the new key.
        let ack1 = c.syn_ack_seq(&t(), isn).wrapping_add(1);
        assert_ne!(ack1, ack);
        assert_eq!(c.verify(&t(), isn + 1, ack1).unwrap().generation, 1);
        c.rotate_to((11, 12));
        assert!(c.verify(&t(), isn + 1, ack).is_none());
        assert!(c.verify(&t(), isn, ack).is_none());
        assert!(c.verify(&t(), isn + 1, ack1).is_some());
    }

    #[test]
    fn random_keys_differ() {
        let a = Cookies::new();
        let b = Cookies::new();
        assert_ne!(a.syn_ack_seq(&t(), 1), b.syn_ack_seq(&t(), 1));
        assert!(format!("{a:?}").contains("generation"));
    }

    #[test]
    fn ipv6_tuples_hash_all_address_bytes() {
        let c = Cookies::with_key(1, 2);
        let a = Tuple {
            src: "fd77::2".parse().unwrap(),
            dst: "fd77::1".parse().unwrap(),
            src_port: 1,
            dst_port: 2,
        };
        let mut b = a;
        b.src = "fd77:0:0:0:0:0:1:2".parse().unwrap();
        assert_ne!(c.syn_ack_seq(&a, 5), c.syn_ack_seq(&b, 5));
    }
}
