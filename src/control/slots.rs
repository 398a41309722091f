//! Who gets one of the control socket's client slots.
//!
//! The server serves a bounded number of clients at once, so a client must
//! not be able to keep a slot by merely staying connected: 32 clients that
//! each send a `ping` every few seconds used to hold every slot, and
//! `tarpit stats` (and the takeover behind `systemctl reload`) found the
//! door shut. Two rules keep it open:
//!
//! * a client *waiting* for its next request line holds its slot only until
//!   someone needs it: a newcomer who finds the pool full takes the slot of
//!   the client that has been waiting longest (which is closed). Only
//!   clients running a command or being answered cannot be displaced, and
//!   each of those is bounded in time (`CMD_TIMEOUT`, `IO_TIMEOUT`);
//! * privileged peers (root or the server's own user, see
//!   [`super::Peer::is_privileged`]) have [`RESERVED`] slots of their own
//!   besides the [`SHARED`] pool, so no unprivileged client can crowd out
//!   the commands that run the server.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Slots any client may use.
pub const SHARED: usize = 32;
/// Further slots only privileged peers may use.
pub const RESERVED: usize = 8;

const POOLS: usize = 2;
const SHARED_POOL: usize = 0;
const RESERVED_POOL: usize = 1;
const CAP: [usize; POOLS] = [SHARED, RESERVED];

/// The slot table, shared by the accept loop and the client tasks.
#[derive(Default)]
pub struct Slots {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    used: [usize; POOLS],
    /// Clients waiting for a request line, per pool, by when they started
    /// waiting (a sequence number: the first entry waited longest).
    waiting: [BTreeMap<u64, Arc<Client>>; POOLS],
    seq: u64,
}

#[derive(Default)]
struct Client {
    /// Set once its slot was given to someone else.
    displaced: AtomicBool,
    /// Woken when displaced.
    notify: Notify,
}

/// What [`Slots::admit`] did.
pub enum Admit {
    /// A free slot.
    Free(Slot),
    /// The slot of a client that was waiting for its next request; that
    /// client is being closed.
    Displaced(Slot),
    /// Every slot this peer may use is busy running a command.
    Full,
}

/// One client's slot; dropping it frees the slot.
pub struct Slot {
    slots: Arc<Slots>,
    pool: usize,
    client: Arc<Client>,
    waiting: Option<u64>,
}

impl Slots {
    pub fn new() -> Arc<Self> {
        Arc::new(Slots::default())
    }

    /// A slot for a new client: a free one of the pools it may use (its
    /// own first, for a privileged peer), else the slot of the client
    /// there that has waited longest for its next request.
    pub fn admit(self: &Arc<Self>, privileged: bool) -> Admit {
        let pools: &[usize] = if privileged {
            &[RESERVED_POOL, SHARED_POOL]
        } else {
            &[SHARED_POOL]
        };
        let Ok(mut st) = self.state.lock() else {
            return Admit::Full;
        };
        let slot = |pool| Slot {
            slots: self.clone(),
            pool,
            client: Arc::new(Client::default()),
            waiting: None,
        };
        for &p in pools {
            if st.used[p] < CAP[p] {
                st.used[p] += 1;
                return Admit::Free(slot(p));
            }
        }
        for &p in pools {
            if let Some((_, victim)) = st.waiting[p].pop_first() {
                // The victim's slot passes to the newcomer: `used` stays.
                victim.displaced.store(true, Ordering::SeqCst);
                victim.notify.notify_one();
                return Admit::Displaced(slot(p));
            }
        }
        Admit::Full
    }

    #[cfg(test)]
    fn used(&self) -> [usize; POOLS] {
        self.state.lock().map(|s| s.used).unwrap_or_default()
    }
}

impl Slot {
    /// The client starts waiting for a request line: from now on a
    /// newcomer may take its slot. Resolves when that happens.
    pub fn waiting(&mut self) -> impl std::future::Future<Output = ()> + use<> {
        let client = self.client.clone();
        if let Ok(mut st) = self.slots.state.lock() {
            if !client.displaced.load(Ordering::SeqCst) {
                st.seq += 1;
                let k = st.seq;
                st.waiting[self.pool].insert(k, client.clone());
                self.waiting = Some(k);
            }
        }
        async move {
            while !client.displaced.load(Ordering::SeqCst) {
                client.notify.notified().await;
            }
        }
    }

    /// A request line has arrived: the client is busy, its slot is its own
    /// until it waits again. False if it was displaced meanwhile.
    pub fn busy(&mut self) -> bool {
        if let (Some(k), Ok(mut st)) = (self.waiting.take(), self.slots.state.lock()) {
            st.waiting[self.pool].remove(&k);
        }
        !self.client.displaced.load(Ordering::SeqCst)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut st) = self.slots.state.lock() {
            if let Some(k) = self.waiting.take() {
                st.waiting[self.pool].remove(&k);
            }
            // A displaced client's slot already belongs to its successor.
            if !self.client.displaced.load(Ordering::SeqCst) {
                st.used[self.pool] -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(a: Admit) -> Option<Slot> {
        match a {
            Admit::Free(s) | Admit::Displaced(s) => Some(s),
            Admit::Full => None,
        }
    }

    #[tokio::test]
    async fn waiting_clients_give_way_and_privileged_peers_have_a_reserve() {
        let slots = Slots::new();
        // The shared pool full of clients busy with a command.
        let mut busy: Vec<Slot> = (0..SHARED)
            .map(|_| take(slots.admit(false)).unwrap())
            .collect();
        assert!(matches!(slots.admit(false), Admit::Full));
        // A privileged peer still gets in, up to its reserve.
        let reserved: Vec<Slot> = (0..RESERVED)
            .map(|_| take(slots.admit(true)).unwrap())
            .collect();
        assert!(matches!(slots.admit(true), Admit::Full));
        assert_eq!(slots.used(), [SHARED, RESERVED]);
        drop(reserved);
        // Shared clients that wait for their next line give way, the one
        // that waited longest first.
        let first = busy[3].waiting();
        let _second = busy[7].waiting();
        let newcomer = match slots.admit(false) {
            Admit::Displaced(s) => s,
            _ => panic!("a waiting client should have been displaced"),
        };
        tokio::time::timeout(std::time::Duration::from_secs(1), first)
            .await
            .expect("the longest-waiting client is told");
        assert!(!busy[3].busy(), "displaced");
        assert!(busy[7].busy(), "the other one keeps its slot");
        // Slot counts stay right through displacement and drops.
        assert_eq!(slots.used(), [SHARED, 0]);
        drop(busy.remove(3));
        assert_eq!(slots.used(), [SHARED, 0], "its slot is the newcomer's");
        drop(newcomer);
        assert_eq!(slots.used(), [SHARED - 1, 0]);
        drop(busy);
        assert_eq!(slots.used(), [0, 0]);
    }
}
