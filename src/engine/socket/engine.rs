//! The socket engine: one task that accepts, holds and releases.
//!
//! Everything happens on one thread with three event sources, none of them
//! per connection:
//!
//! * the listening sockets (accept until `EAGAIN`);
//! * one epoll set in which every held socket is registered for
//!   EPOLLRDHUP/EPOLLERR/EPOLLHUP, edge-triggered — the kernel wakes us only
//!   when a peer tries to close, resets, or its keepalives fail;
//! * a coarse tick that releases connections whose lifetime is over.
//!
//! We never read a held socket, and under the default (silent) policy never
//! write one either: the kernel answers window probes and keepalives on its
//! own, so holding costs next to no CPU. A bait policy adds a fourth source,
//! a 100 ms tick that takes the due connections off the drip wheel (see
//! `table`) and writes each one small segment — only when everything it was
//! sent before has been acknowledged (`SIOCOUTQ` is 0), so a peer whose
//! window is closed is sent nothing more.
//!
//! Bait waits for the peer (the default `bait_start`): the connection is
//! registered for EPOLLIN too, each arriving segment wakes us once and we
//! peek (never read) its first [`OPENING_BYTES`]; once they open the bait's
//! protocol the reading interest is dropped and the drip begins, once they
//! open anything else it is dropped and the connection stays silent. A peer
//! that sends nothing costs nothing, where looking on the drip wheel would
//! cost one peek per connection per look.
//!
//! The same wheel carries the *exit probes* ([`Engine::exit_probe`]; for
//! bait that has begun, between its drips, [`Engine::wheel_due`]): a peer
//! whose data is stuck behind our closed
//! window (window zero, or a full receive queue) can never get its FIN to
//! us, so one out-of-order byte (`sys::probe`) is sent every
//! max(1 s, age/20); its program never sees it, but once the program has
//! quit its kernel answers with an RST, which ends the connection within
//! one probe interval of the program's exit. Whether a silent
//! connection's queue is full is looked at (SIOCINQ) at 1, 2, 4, ... s of
//! age, then every 64 s: holding is no longer entirely free of CPU, but
//! nearly (`cargo bench --bench hold`).

use super::bait;
use super::table::{Held, Table, F_BAIT_OFF, F_BAIT_ON, F_HOLE, F_UT_OFF};
use super::{handover, Command, ServeOptions};
use crate::classify::{classify, opens, Identity, Opening, OPENING_BYTES, PEEK_BYTES};
use crate::engine::policy::BaitStart;
use crate::engine::record::{
    engaged, escape_bytes, tcp_state_name, ConnRecord, EndFacts, EndReason, LiveConn,
};
use crate::engine::{emit_record, secs, ticks, Clock, Observer, Snapshot, Totals, TICK};
use crate::ratelimit::RateLimit;
use crate::sys;
use rand::Rng;
use socket2::{SockAddr, Socket, TcpKeepalive};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, SystemTime};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, watch};

/// How many bytes of what the peer sent are shown in the record's `head`
/// (the classifier sees all of them, up to [`PEEK_BYTES`]).
const HEAD_BYTES: usize = 48;

pub(super) struct Listener {
    pub sock: AsyncFd<Socket>,
    pub label: String,
    /// The port it listens on (local port of every connection it accepts).
    pub port: u16,
}

pub(super) struct Engine {
    opts: ServeOptions,
    listeners: Vec<Listener>,
    table: Table,
    epoll: AsyncFd<sys::Epoll>,
    clock: Clock,
    observers: Vec<Arc<dyn Observer>>,
    max_conns: usize,
    totals: Totals,
    accept_errors: RateLimit,
    /// Connections refused because their /48 was full (log line rate).
    net_refusals: RateLimit,
    accept_paused_until: Option<tokio::time::Instant>,
    next_listener: usize,
    /// Earliest lifetime deadline of any held connection (ticks).
    next_due: u32,
    /// Set once a takeover has been confirmed.
    handed_over: bool,
    /// Each policy's `Display`, by index, for records.
    policy_names: Vec<String>,
    /// First-SYN times of delayed handshakes (syn_delay), when read.
    syn_log: Option<super::synlog::SynLog>,
    /// Raw sockets for exit probes; `None` without CAP_NET_RAW (no probes).
    prober: Option<sys::probe::RawTcp>,
    /// An exit probe failed once (logged once: no CAP_NET_ADMIN, ...).
    probe_failed: bool,
}

/// A receive queue this full means the peer's window is closed: a silent
/// trap's is 1,152 bytes, and a peer that wrote more has its FIN stuck.
const STUCK_QUEUE: u32 = 1024;
/// An RST that came at least this long after the peer's last other packet
/// answered the exit probe before it (a live peer acknowledges each probe
/// within a round trip; probes are at least 1 s apart).
const PROBE_ANSWER_MS: u32 = 500;

/// Ticks until the next exit probe of a connection held for `age` ticks:
/// max(1 s, age/20), so an exit is seen within 5 % of the time held (and
/// within the wheel's span).
pub(super) fn probe_interval(age: u32) -> u32 {
    (age / 20).clamp(10, super::table::WHEEL - 1)
}

/// Ticks until the next look at whether a connection needs exit probes
/// (its receive queue filled): at 1, 2, 4, ... s of age, then every 64 s.
/// A peer that writes more than the window does so at once, nearly always;
/// looking every second at each silent connection would cost 10 times what
/// holding it does (`cargo bench --bench hold`).
fn probe_check_interval(age: u32) -> u32 {
    age.clamp(10, 640)
}

impl Engine {
    pub fn new(
        opts: ServeOptions,
        listeners: Vec<Listener>,
        observers: Vec<Arc<dyn Observer>>,
        max_conns: usize,
    ) -> io::Result<Self> {
        let epoll = sys::register_async(sys::Epoll::new()?)?;
        let mut table = Table::new(opts.ipv6_prefix, max_conns, opts.per_ip > 0);
        if opts.per_ipv6_48 > 0 {
            table = table.count_nets();
        }
        let policy_names = opts.policies.all().map(|p| p.to_string()).collect();
        let prober = match sys::probe::RawTcp::open() {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::info!(error = %e, "no raw socket: no exit probes (engaged of a peer whose data is stuck stays an upper bound)");
                None
            }
        };
        Ok(Engine {
            prober,
            probe_failed: false,
            policy_names,
            opts,
            listeners,
            table,
            epoll,
            clock: Clock::start(),
            observers,
            max_conns,
            totals: Totals::default(),
            accept_errors: RateLimit::default(),
            net_refusals: RateLimit::new(Duration::from_secs(10)),
            accept_paused_until: None,
            next_listener: 0,
            next_due: u32::MAX,
            handed_over: false,
            syn_log: None,
        })
    }

    /// Where accepts find when a delayed client's first SYN came.
    pub fn set_syn_log(&mut self, log: super::synlog::SynLog) {
        self.syn_log = Some(log);
    }

    fn now_ticks(&self) -> u32 {
        self.clock.now()
    }

    /// Runs until `shutdown` fires, then releases everything.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Totals {
        let scan_every = (self.opts.lifetime.0 / 10).clamp(TICK, Duration::from_secs(1));
        let mut scan = tokio::time::interval(scan_every);
        scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut expired = Vec::new();
        let mut events = vec![(0u64, 0u32); 256];
        // The drip tick runs only when some policy baits or exit probes
        // can be sent.
        let baiting = self.opts.policies.any_bait() || self.prober.is_some();
        if baiting {
            self.table.drip_start(self.now_ticks());
        }
        let mut drip = tokio::time::interval(TICK);
        drip.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut due = Vec::new();
        loop {
            let paused = self.accept_paused_until;
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                cmd = commands.recv() => match cmd {
                    Some(Command::Handover(to, reply)) => {
                        let r = self.handover(to).await;
                        let done = r.is_ok();
                        let _ = reply.send(r);
                        if done {
                            break;
                        }
                    }
                    Some(c) => self.command(c),
                    None => {}
                },
                guard = self.epoll.readable() => {
                    match guard {
                        Ok(mut g) => {
                            let n = g.get_inner().wait(&mut events).unwrap_or(0);
                            if n < events.len() {
                                g.clear_ready();
                            }
                            for &(token, bits) in &events[..n] {
                                self.peer_event(token as u32, bits);
                            }
                        }
                        Err(e) => tracing::error!(error = %e, "epoll failed"),
                    }
                }
                _ = scan.tick() => {
                    // Scan only once the earliest deadline has passed: while
                    // nothing is due, holding costs one wake-up per tick.
                    let now = self.now_ticks();
                    if now >= self.next_due {
                        expired.clear();
                        self.next_due = self.table.expired(now, &mut expired);
                        for &slot in &expired {
                            self.release(slot, EndReason::Lifetime);
                        }
                    }
                }
                _ = drip.tick(), if baiting => {
                    let now = self.now_ticks();
                    due.clear();
                    self.table.drip_due(now, &mut due);
                    for &slot in &due {
                        self.wheel_due(slot, now);
                    }
                }
                _ = async { tokio::time::sleep_until(paused.unwrap_or_else(tokio::time::Instant::now)).await }, if paused.is_some() => {
                    self.accept_paused_until = None;
                }
                (li, res) = accept_any(&self.listeners, self.next_listener), if paused.is_none() => {
                    self.next_listener = (li + 1) % self.listeners.len().max(1);
                    match res {
                        Ok((sock, peer)) => self.trap(li, sock, peer),
                        Err(e) => self.accept_error(e),
                    }
                }
            }
        }
        if self.totals.handed_over > 0 || self.handed_over {
            // The new process owns them now: close our copies quietly (the
            // sockets live on there, so no RST goes out).
            let all: Vec<u32> = self.table.iter_oldest_first().map(|(s, _)| s).collect();
            for slot in all {
                if let Some(h) = self.table.remove(slot) {
                    sys::close(h.fd);
                }
            }
            return self.totals.clone();
        }
        // Release everything, oldest first.
        let all: Vec<u32> = self.table.iter_oldest_first().map(|(s, _)| s).collect();
        for o in &self.observers {
            o.ending_all();
        }
        for slot in all {
            self.release(slot, EndReason::Shutdown);
        }
        self.totals.clone()
    }

    /// Sends listeners and held connections to the new process at `to` and
    /// waits for its confirmation. The engine does nothing else meanwhile,
    /// so no descriptor changes under the transfer.
    async fn handover(&mut self, to: std::path::PathBuf) -> Result<usize, String> {
        let labels: Vec<String> = self.listeners.iter().map(|l| l.label.clone()).collect();
        let lfds: Vec<i32> = self.listeners.iter().map(|l| l.sock.as_raw_fd()).collect();
        let now = self.now_ticks();
        let conns: Vec<(i32, handover::Facts)> = self
            .table
            .iter_oldest_first()
            .map(|(_, h)| {
                let (peer, local, original_dst, _) = self.addrs(h);
                let ka = sys::keepalive_times(h.fd).unwrap_or((0, 0));
                let start = self.clock.wall(h.start);
                (
                    h.fd,
                    handover::Facts {
                        listener: h.listener,
                        peer,
                        local,
                        original_dst,
                        start: crate::engine::record::to_unix(start),
                        lifetime_left: secs(h.deadline.saturating_sub(now)),
                        fin_after: h.fin_seen().then(|| secs(u32::from(h.fin_after))),
                        keepalive_idle: ka.0,
                        keepalive_intvl: ka.1,
                        bait_pos: (h.drip_line, h.drip_off),
                        bait_on: Some(h.bait_on()),
                    },
                )
            })
            .collect();
        let n = conns.len();
        let res = tokio::task::spawn_blocking(move || {
            handover::send(&to, labels, &lfds, &conns, Duration::from_secs(10))
        })
        .await;
        match res {
            Ok(Ok(())) => {
                tracing::info!(conns = n, "handed over to the new process");
                self.handed_over = true;
                self.totals.handed_over = n as u64;
                self.totals.handed_off = true;
                Ok(n)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "takeover failed; keeping everything");
                Err(e.to_string())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Continues connections handed over by a previous process.
    pub fn import(&mut self, conns: Vec<handover::InheritedConn>) {
        if conns.is_empty() {
            return;
        }
        // Move the epoch back far enough that every start time fits.
        let now_wall = SystemTime::now();
        let oldest = conns
            .iter()
            .map(|c| crate::engine::record::from_unix(c.facts.start))
            .min()
            .unwrap_or(now_wall);
        let age = now_wall.duration_since(oldest).unwrap_or_default() + Duration::from_secs(1);
        self.clock.rewind(age);
        let now = self.now_ticks();
        self.table.drip_start(now);
        for c in conns {
            let f = c.facts;
            let fd = c.fd.into_raw_fd();
            let start_wall = crate::engine::record::from_unix(f.start);
            let start = self.clock.tick_of(start_wall, now);
            let left = (f.lifetime_left * 10.0).max(1.0) as u32;
            let li = usize::from(f.listener).min(self.listeners.len().saturating_sub(1));
            let local_i = self.table.addrs.intern(f.local.ip());
            let orig_i = self.table.addrs.intern(f.original_dst.ip());
            let mut h = Held::new(
                fd,
                f.peer.ip(),
                f.peer.port(),
                local_i,
                orig_i,
                f.original_dst.port(),
                li as u8,
                start,
                now.saturating_add(left),
            );
            if let Some(fin) = f.fin_after {
                h.mark_fin(start.saturating_add((fin * 10.0) as u32));
            }
            // The policy follows this process's configuration; bait goes on
            // where the old process stopped. One that had not begun is
            // decided again from the same unread queue (so is one that met
            // another protocol: it stays silent).
            h.policy = self.opts.policies.index_of(f.original_dst.port());
            (h.drip_line, h.drip_off) = f.bait_pos;
            let p = *self.opts.policies.get(h.policy);
            let begun = f.bait_on.unwrap_or(f.bait_pos != (0, 0));
            let waits = p.bait.is_some() && p.bait_start == BaitStart::Peer && !begun;
            if p.bait.is_some() && !waits {
                // The old process may have left an exit probe's byte one
                // past our next: the first drip covers it (`F_HOLE`).
                h.flags |= F_BAIT_ON | F_HOLE;
            }
            while self.table.len() >= self.max_conns {
                match self.table.oldest() {
                    Some(old) => self.release(old, EndReason::EvictedGlobal),
                    None => break,
                }
            }
            let slot = self.table.insert(h);
            self.next_due = self.next_due.min(h.deadline);
            if let Err(e) = self.watch(fd, slot, waits) {
                tracing::warn!(error = %e, peer = %f.peer, "cannot watch inherited connection");
            }
            if h.bait_on() {
                self.bait_begins(fd, p.drip);
                self.table.drip_at(slot, now.saturating_add(1));
            } else if self.prober.is_some() && !h.fin_seen() {
                self.table
                    .drip_at(slot, now.saturating_add(probe_interval(0)));
            }
            // Held here from now on; it ends here too (the gauge counts it).
            let label = &self.listeners[li].label;
            for o in &self.observers {
                o.resumed(label);
            }
        }
        tracing::info!(conns = self.table.len(), "continuing inherited connections");
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Snapshot(page, tx) => {
                let _ = tx.send(self.snapshot(page));
            }
            Command::Totals(tx) => {
                let _ = tx.send(self.totals());
            }
            Command::Handover(_, tx) => {
                let _ = tx.send(Err("handover is handled by the run loop".into()));
            }
        }
    }

    fn accept_error(&mut self, e: io::Error) {
        let kind = accept_error_kind(&e);
        for o in &self.observers {
            o.accept_error(kind);
        }
        *self
            .totals
            .accept_errors
            .entry(kind.to_string())
            .or_default() += 1;
        // Out of descriptors or memory: back off briefly so we neither spin
        // nor exit; held connections keep being served meanwhile and their
        // release frees descriptors for the next accept.
        let backoff = match kind {
            "emfile" | "enfile" | "enobufs" | "enomem" => Some(Duration::from_millis(100)),
            "econnaborted" => None,
            _ => Some(Duration::from_millis(20)),
        };
        if let Some(b) = backoff {
            self.accept_paused_until = Some(tokio::time::Instant::now() + b);
        }
        if let Some(n) = self.accept_errors.hit() {
            tracing::warn!(error = %e, kind, count = n, held = self.table.len(), "accept failed; backing off");
        }
    }

    /// Sets up and stores a freshly accepted connection.
    fn trap(&mut self, li: usize, sock: Socket, peer: SockAddr) {
        let Some(peer) = peer.as_socket() else {
            return;
        };
        let peer = normalize(peer);
        let mut rng = rand::rng();
        let idle = rand_between(&mut rng, self.opts.keepalive);
        let intvl = rand_between(&mut rng, self.opts.keepalive);
        let ka = TcpKeepalive::new()
            .with_time(idle)
            .with_interval(intvl)
            .with_retries(self.opts.keepalive_count);
        // set_tcp_keepalive also turns SO_KEEPALIVE on.
        if let Err(e) = sock.set_tcp_keepalive(&ka) {
            tracing::debug!(error = %e, %peer, "keepalive setup failed");
        }
        // Abortive close on release: RST, no TIME_WAIT on our side.
        let _ = sock.set_linger(Some(Duration::ZERO));
        let local = sock
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map(normalize)
            .unwrap_or(peer);
        let orig = sys::original_dst(sock.as_raw_fd(), local.is_ipv6())
            .map(normalize)
            .unwrap_or(local);

        // Caps: the freshest attacker is the one worth holding.
        if self.opts.per_ip > 0 && self.table.count_of(peer.ip()) as usize >= self.opts.per_ip {
            if let Some(old) = self.table.oldest_of(peer.ip()) {
                self.release(old, EndReason::EvictedPerIp);
            }
        }
        // A full IPv6 /48 makes room only within the peer's own prefix:
        // however many /64s it cycles through, a site never holds more
        // than its share, so it cannot push the other hosts out.
        if self.opts.per_ipv6_48 > 0
            && self.table.net_count_of(peer.ip()) as usize >= self.opts.per_ipv6_48
        {
            match self.table.oldest_of(peer.ip()) {
                Some(old) => self.release(old, EndReason::EvictedPerNet),
                None => {
                    self.totals.refused_per_net += 1;
                    if let Some(n) = self.net_refusals.hit() {
                        tracing::info!(%peer, count = n, cap = self.opts.per_ipv6_48, "IPv6 /48 at its cap; new connections from its other prefixes refused");
                    }
                    return; // dropped: RST via linger 0
                }
            }
        }
        while self.table.len() >= self.max_conns {
            match self.table.oldest() {
                Some(old) => self.release(old, EndReason::EvictedGlobal),
                None => break,
            }
        }
        if self.max_conns == 0 {
            return; // holding nothing: drop (RST via linger 0)
        }

        let now = self.now_ticks();
        let life = rand_between(&mut rng, self.opts.lifetime);
        let life_ticks = ticks(life).max(1);
        let local_i = self.table.addrs.intern(local.ip());
        let orig_i = self.table.addrs.intern(orig.ip());
        let fd = sock.into_raw_fd();
        let mut h = Held::new(
            fd,
            peer.ip(),
            peer.port(),
            local_i,
            orig_i,
            orig.port(),
            li.min(255) as u8,
            now,
            now.saturating_add(life_ticks),
        );
        h.policy = self.opts.policies.index_of(orig.port());
        let p = *self.opts.policies.get(h.policy);
        let waits = p.bait.is_some() && p.bait_start == BaitStart::Peer;
        if p.bait.is_some() && !waits {
            h.flags |= F_BAIT_ON;
        }
        if p.syn_delay.is_some() {
            if let Some(first) = self.syn_log.as_ref().and_then(|l| l.take(peer)) {
                h.syn_wait = first.elapsed().as_secs_f64().round().min(255.0) as u8;
            }
        }
        let slot = self.table.insert(h);
        self.next_due = self.next_due.min(h.deadline);
        if let Err(e) = self.watch(fd, slot, waits) {
            tracing::warn!(error = %e, %peer, "cannot watch connection; dropping it");
            if let Some(h) = self.table.remove(slot) {
                sys::close(h.fd);
            }
            return;
        }
        if h.bait_on() {
            // Bait from the accept on: the first segment goes out on the
            // next tick.
            self.bait_begins(fd, p.drip);
            self.table.drip_at(slot, now.saturating_add(1));
        } else if self.prober.is_some() {
            self.table
                .drip_at(slot, now.saturating_add(probe_interval(0)));
        }
        self.totals.trapped += 1;
        let label = &self.listeners[li].label;
        for o in &self.observers {
            o.trapped(label);
        }
        tracing::debug!(%peer, %orig, listener = %label, lifetime_secs = life.as_secs(), "trapped");
    }

    /// Registers a held socket with the epoll set; `reading` also for the
    /// bytes arriving (a bait waiting for its peer, see [`Engine::gate`]).
    fn watch(&self, fd: i32, slot: u32, reading: bool) -> io::Result<()> {
        let ep = self.epoll.get_ref();
        if reading {
            ep.add_reading(fd, u64::from(slot))
        } else {
            ep.add(fd, u64::from(slot))
        }
    }

    /// Bytes arrived on a bait connection waiting for its peer: peek (never
    /// read) their start. If they open the bait's protocol the bait begins,
    /// its first segment at once; if they open anything else it never does.
    /// Either way the connection is no longer watched for bytes; too few to
    /// tell (a part of `SSH-`), it waits for the next segment.
    fn gate(&mut self, slot: u32, now: u32) {
        let Some(h) = self.table.get_mut(slot) else {
            return;
        };
        let Some(b) = self.opts.policies.get(h.policy).bait else {
            return;
        };
        if h.flags & (F_BAIT_ON | F_BAIT_OFF) != 0 {
            return;
        }
        let mut head = [0u8; OPENING_BYTES];
        let n = sys::peek(h.fd, &mut head).unwrap_or(0);
        let on = match opens(b.protocol(), head.get(..n).unwrap_or_default()) {
            Opening::NotYet => return,
            Opening::Yes => true,
            Opening::No => false,
        };
        h.flags |= if on { F_BAIT_ON } else { F_BAIT_OFF };
        let (fd, policy) = (h.fd, h.policy);
        if let Err(e) = self.epoll.get_ref().modify(fd, u64::from(slot)) {
            tracing::debug!(error = %e, "cannot stop watching a bait connection's bytes");
        }
        if on {
            let drip = self.opts.policies.get(policy).drip;
            self.bait_begins(fd, drip);
            self.drip(slot, now, ticks(drip).max(1));
        }
    }

    /// A bait connection is about to send its first byte: see
    /// [`user_timeout`].
    fn bait_begins(&self, fd: i32, drip: Duration) {
        let ms = user_timeout(fd, drip, self.opts.keepalive_count);
        if let Err(e) = sys::set_user_timeout(fd, ms) {
            tracing::debug!(error = %e, "cannot set the bait's user timeout");
        }
    }

    /// A connection came due on the wheel: bait that has begun drips, the
    /// rest (no bait, bait still waiting for its peer or off) are probed.
    /// Bait whose peer's FIN cannot reach us (window zero, a full queue) is
    /// probed between its drips too: its drips draw the exited program's RST
    /// only once a drip interval, the probes once a [`probe_interval`].
    fn wheel_due(&mut self, slot: u32, now: u32) {
        let Some(h) = self.table.get(slot).copied() else {
            return;
        };
        if !h.bait_on() {
            self.exit_probe(slot, now);
            return;
        }
        let p = *self.opts.policies.get(h.policy);
        let Some(b) = p.bait else {
            return;
        };
        let drip = ticks(p.drip).max(1);
        if self.prober.is_none() || h.fin_seen() || !self.stuck(&h) {
            self.drip(slot, now, drip);
            return;
        }
        let step = probe_interval(now.saturating_sub(h.start));
        let pos = bait::Pos {
            line: h.drip_line,
            off: h.drip_off,
        };
        // Ticks since our last bait segment (none yet: the drip is due).
        let since = if pos == bait::Pos::default() {
            u32::MAX
        } else {
            sys::tcp_info(h.fd).map_or(u32::MAX, |i| i.last_data_sent_ms.saturating_add(50) / 100)
        };
        if since >= drip {
            self.drip(slot, now, step.min(drip));
            return;
        }
        // The probe's byte is the one our stream has at its position (our
        // next bait byte but one): the next drip covers it (see `F_HOLE`),
        // and whichever copy the peer keeps, its program reads the stream.
        let seed = bait::seed(&h.peer_ip, h.peer_port);
        let mut buf = [0u8; bait::MAX_SEGMENT];
        bait::segment(b, seed, bait::advance(b, seed, pos, 1), &mut buf);
        self.send_probe(slot, now, buf[0]);
        self.table
            .drip_at(slot, now.saturating_add(step.min(drip - since)));
    }

    /// Whether a connection's FIN cannot reach us: our window is closed to
    /// it (window zero, or a full receive queue).
    fn stuck(&self, h: &Held) -> bool {
        self.opts.policies.get(h.policy).window_zero || sys::inq(h.fd).unwrap_or(0) >= STUCK_QUEUE
    }

    /// Sends a connection without bait (or whose bait has not begun) one exit probe (`sys::probe`) if its
    /// FIN cannot reach us — no FIN yet, and our window is closed to it
    /// (window zero, or a full receive queue) — then puts it back on the
    /// wheel one [`probe_interval`] later. (Bait that has begun is probed by
    /// [`Engine::wheel_due`], between its drips.) One whose FIN came is off
    /// the wheel for good.
    /// A probe costs one 41-byte packet (61 over IPv6) and the peer's
    /// duplicate ACK; we read nothing.
    fn exit_probe(&mut self, slot: u32, now: u32) {
        let Some(h) = self.table.get(slot).copied() else {
            return;
        };
        if h.fin_seen() || self.prober.is_none() {
            return;
        }
        let stuck = self.stuck(&h);
        if stuck {
            self.send_probe(slot, now, b'!');
        }
        let age = now.saturating_sub(h.start);
        let wait = if stuck {
            probe_interval(age)
        } else {
            probe_check_interval(age)
        };
        self.table.drip_at(slot, now.saturating_add(wait));
    }

    /// One out-of-order byte `byte` at our `snd_nxt + 1` (`sys::probe`).
    fn send_probe(&mut self, slot: u32, now: u32, byte: u8) {
        let Some(h) = self.table.get(slot).copied() else {
            return;
        };
        let Some(raw) = &self.prober else {
            return;
        };
        let (peer, local, _, _) = self.addrs(&h);
        // Our next byte is snd_nxt; the probe's is the one after it.
        let sent = sys::probe::tcp_seqs(h.fd)
            .and_then(|(snd, rcv)| raw.send(local, peer, snd.wrapping_add(1), rcv, byte));
        match sent {
            Ok(()) => {
                if let Some(h) = self.table.get_mut(slot) {
                    h.mark_probe(now);
                }
            }
            Err(e) if !self.probe_failed => {
                self.probe_failed = true;
                tracing::info!(error = %e, %peer, "exit probe failed (needs CAP_NET_ADMIN and CAP_NET_RAW); engaged of peers whose data is stuck stays an upper bound");
            }
            Err(_) => {}
        }
    }

    /// Writes a bait connection's next segment, unless what it was sent
    /// before is still unacknowledged (its window is closed, or it is gone):
    /// then nothing, and it is tried again later. Either way it goes back
    /// on the wheel, `wait` ticks later. A failed send (the peer reset)
    /// leaves it off: the epoll event releases it.
    fn drip(&mut self, slot: u32, now: u32, wait: u32) {
        let Some(h) = self.table.get_mut(slot) else {
            return;
        };
        let p = *self.opts.policies.get(h.policy);
        let Some(b) = p.bait else {
            return;
        };
        if !h.bait_on() {
            return;
        }
        let next = now.saturating_add(wait.max(1));
        if sys::outq(h.fd).unwrap_or(1) == 0 {
            if h.flags & F_UT_OFF != 0 {
                // The window opened and our segment was acknowledged.
                let ms = user_timeout(h.fd, p.drip, self.opts.keepalive_count);
                if sys::set_user_timeout(h.fd, ms).is_ok() {
                    h.flags &= !F_UT_OFF;
                }
            }
            let seed = bait::seed(&h.peer_ip, h.peer_port);
            let pos = bait::Pos {
                line: h.drip_line,
                off: h.drip_off,
            };
            let mut buf = [0u8; bait::MAX_SEGMENT];
            let mut n = bait::segment(b, seed, pos, &mut buf);
            if n == 1 && h.flags & F_HOLE != 0 {
                // A probe's byte waits one past this one: cover it.
                let mut more = [0u8; bait::MAX_SEGMENT];
                bait::segment(b, seed, bait::advance(b, seed, pos, 1), &mut more);
                buf[1] = more[0];
                n = 2;
            }
            match sys::send_nonblocking(h.fd, &buf[..n]) {
                Ok(sent) => {
                    let pos = bait::advance(b, seed, pos, sent);
                    (h.drip_line, h.drip_off) = (pos.line, pos.off);
                    if sent >= 2 {
                        h.flags &= !F_HOLE;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        } else if h.flags & F_UT_OFF == 0 && sys::tcp_info(h.fd).is_ok_and(|i| i.snd_wnd == Some(0))
        {
            // Unacknowledged because the peer's window is closed: it is
            // alive (it advertised the zero window and answers our
            // zero-window probes), yet Linux (since 5.11) would give it up
            // at the user timeout, as it aborts zero-window probing that
            // long without an open window. The timeout is off until the
            // segment is acknowledged; the kernel holds the connection as
            // long as its probes are answered (RFC 1122 §4.2.2.17), as it
            // holds a silent one.
            if sys::set_user_timeout(h.fd, 0).is_ok() {
                h.flags |= F_UT_OFF;
            }
        }
        self.table.drip_at(slot, next);
    }

    /// A peer tried to close (FIN), reset, or stopped answering keepalives;
    /// or, on a bait connection waiting for its peer, bytes arrived.
    fn peer_event(&mut self, slot: u32, bits: u32) {
        let now = self.now_ticks();
        if bits & sys::ev::IN != 0 {
            self.gate(slot, now);
        }
        let Some(h) = self.table.get_mut(slot) else {
            return;
        };
        let mut first_fin = false;
        // An RST also raises RDHUP (the kernel shuts both directions), so
        // only an RDHUP without ERR/HUP is the peer's FIN.
        let gone = bits & (sys::ev::ERR | sys::ev::HUP) != 0;
        if bits & sys::ev::RDHUP != 0 && !gone && !h.fin_seen() {
            h.mark_fin(now);
            first_fin = true;
        }
        let fd = h.fd;
        let li = usize::from(h.listener);
        if first_fin {
            // We never close first; but once the attacker's kernel has
            // dropped its FIN-WAIT-2 socket (60 s after the FIN on Linux) the
            // next probe is answered with an RST and frees ours. Probe just
            // after that instead of after a random 60–240 s idle.
            let wait = self.opts.fin_wait.as_secs().clamp(1, 32767) as u32;
            if let Err(e) = sys::set_keepalive_idle(fd, wait) {
                tracing::debug!(error = %e, "cannot reschedule keepalive after FIN");
            }
            self.totals.close_attempts += 1;
            if let Some(l) = self.listeners.get(li) {
                for o in &self.observers {
                    o.peer_close_attempt(&l.label);
                }
            }
        }
        if bits & (sys::ev::ERR | sys::ev::HUP) != 0 {
            let reason = match sys::take_error(fd) {
                Ok(e) if e == libc::ETIMEDOUT => EndReason::PeerTimeout,
                _ => EndReason::PeerReset,
            };
            self.release(slot, reason);
        }
    }

    /// Ends a held connection: reads its final facts, closes it (RST), emits
    /// its record.
    fn release(&mut self, slot: u32, reason: EndReason) {
        let Some(h) = self.table.remove(slot) else {
            return;
        };
        let now = self.now_ticks();
        let info = sys::tcp_info(h.fd).unwrap_or_default();
        // The whole receive queue, peeked (never read): its start is the
        // record's head, all of it is classified.
        let mut queued = [0u8; PEEK_BYTES];
        let n = sys::peek(h.fd, &mut queued).unwrap_or(0);
        sys::close(h.fd);
        let queued = queued.get(..n).unwrap_or_default();
        // The peer's FIN takes one sequence number; it is not a byte sent.
        let bytes = info.bytes_received.saturating_sub(u64::from(h.fin_seen()));
        let mut rec = self.record(&h, now, reason, bytes, queued);
        // The last packet from the peer: its last data or its last ACK
        // (an answer to a keepalive), whichever is more recent.
        let silent_ms = info.last_data_recv_ms.min(info.last_ack_recv_ms);
        // An RST well after the peer's last other packet, with an exit probe
        // in between: the probe drew it (a live peer acknowledges each).
        let answered_probe = reason == EndReason::PeerReset
            && h.ticks_since_probe(now)
                .is_some_and(|t| silent_ms >= (t * 100).saturating_add(PROBE_ANSWER_MS));
        (rec.engaged_secs, rec.engaged_upper_bound) = engaged(&EndFacts {
            held_secs: rec.held_secs,
            fin_after_secs: rec.fin_after_secs,
            end: reason,
            silent_secs: Some(f64::from(silent_ms) / 1000.0),
            reset_by_probe: info.probes > 0,
            // We wrote bait after the peer's last packet and got an RST for
            // it: its program had closed (a FIN stuck behind a zero window).
            reset_by_bait: (h.bait_on() && info.last_data_sent_ms < silent_ms) || answered_probe,
        });
        // Under window zero the peer's FIN can never be sent (it needs one
        // byte of window), so without a FIN or a spontaneous RST we cannot
        // tell when its program gave up: the figure is an upper bound.
        let spontaneous_rst = reason == EndReason::PeerReset && info.probes == 0;
        if self.opts.policies.get(h.policy).window_zero && !h.fin_seen() && !spontaneous_rst {
            rec.engaged_upper_bound = true;
        }
        // The handshake's wait cost us nothing and the attacker that much.
        rec.engaged_secs += rec.syn_wait_secs;
        self.totals.add_ended(&rec);
        emit_record(&rec, None);
        for o in &self.observers {
            o.ended(&rec);
        }
    }

    fn addrs(&self, h: &Held) -> (SocketAddr, SocketAddr, SocketAddr, String) {
        let (label, lport) = self
            .listeners
            .get(usize::from(h.listener))
            .map(|l| (l.label.clone(), l.port))
            .unwrap_or_default();
        let peer = SocketAddr::new(h.peer(), h.peer_port);
        let local = SocketAddr::new(self.table.addrs.get(h.local_ip), lport);
        let orig = SocketAddr::new(self.table.addrs.get(h.orig_ip), h.orig_port);
        (peer, local, orig, label)
    }

    fn record(&self, h: &Held, now: u32, end: EndReason, bytes: u64, queued: &[u8]) -> ConnRecord {
        let (peer, local, original_dst, listener) = self.addrs(h);
        ConnRecord {
            listener,
            peer,
            local,
            original_dst,
            start: self.clock.wall(h.start),
            held_secs: secs(now.saturating_sub(h.start)),
            engaged_secs: 0.0,
            engaged_upper_bound: false,
            syn_wait_secs: f64::from(h.syn_wait),
            bytes_received: bytes,
            fin_after_secs: h.fin_seen().then(|| secs(u32::from(h.fin_after))),
            end,
            head: escape_bytes(queued.get(..HEAD_BYTES).unwrap_or(queued)),
            client: classify(queued),
            estimated: false,
            policy: self.policy_name(h),
        }
    }

    /// The name of the policy holding `h`, for records and live rows.
    fn policy_name(&self, h: &Held) -> String {
        self.policy_names
            .get(usize::from(h.policy))
            .cloned()
            .unwrap_or_default()
    }

    /// The totals with the still-held connections' time: one pass over
    /// the table, no system call, nothing allocated per connection.
    fn totals(&self) -> Totals {
        let now = self.now_ticks();
        let mut live_secs = 0.0;
        let mut live_engaged = 0.0;
        for (_, h) in self.table.iter_oldest_first() {
            let held = secs(now.saturating_sub(h.start));
            live_secs += held;
            let fin_after = h.fin_seen().then(|| secs(u32::from(h.fin_after)));
            live_engaged += fin_after.unwrap_or(held).min(held) + f64::from(h.syn_wait);
        }
        let mut totals = self.totals.clone();
        totals.held_now = self.table.len() as u64;
        totals.live_held_secs = live_secs;
        totals.live_engaged_secs = live_engaged;
        totals
    }

    /// The connections of `page` (the age list is oldest first, so the
    /// longest-held come first) with their TCP_INFO, and the totals.
    fn snapshot(&self, page: crate::engine::Page) -> Snapshot {
        let now = self.now_ticks();
        let shown = page.limit.min(self.table.len().saturating_sub(page.offset));
        let mut conns = Vec::with_capacity(shown);
        for (_, h) in self.table.iter_oldest_first().skip(page.offset).take(shown) {
            let (peer, local, original_dst, listener) = self.addrs(h);
            let info = sys::tcp_info(h.fd).unwrap_or_default();
            let ka = sys::keepalive_times(h.fd).unwrap_or((0, 0));
            let held = secs(now.saturating_sub(h.start));
            let fin_after = h.fin_seen().then(|| secs(u32::from(h.fin_after)));
            let engaged = fin_after.unwrap_or(held).min(held) + f64::from(h.syn_wait);
            conns.push(LiveConn {
                listener,
                peer,
                local,
                original_dst,
                start: self.clock.wall(h.start),
                held_secs: held,
                engaged_secs: engaged,
                lifetime_left_secs: secs(h.deadline.saturating_sub(now)),
                bytes_queued: sys::inq(h.fd).unwrap_or(0),
                bytes_received: info.bytes_received,
                fin_after_secs: fin_after,
                rtt_us: info.rtt_us,
                state: tcp_state_name(info.state).to_string(),
                client: live_client(h.fd, info.bytes_received),
                keepalive_idle_secs: ka.0,
                keepalive_intvl_secs: ka.1,
                estimated: false,
                policy: self.policy_name(h),
            });
        }
        Snapshot {
            conns,
            totals: self.totals(),
        }
    }
}

/// What a held peer has sent so far, named: a peek (never a read) when its
/// TCP_INFO says it sent anything, so a silent connection costs no copy.
fn live_client(fd: i32, bytes_received: u64) -> Identity {
    if bytes_received == 0 {
        return Identity::default();
    }
    let mut queued = [0u8; PEEK_BYTES];
    let n = sys::peek(fd, &mut queued).unwrap_or(0);
    classify(queued.get(..n).unwrap_or_default())
}

/// TCP_USER_TIMEOUT of a bait connection, ms. Bait bytes waiting for an
/// acknowledgement stop the keepalives (the kernel sends none while it
/// retransmits), so without it a peer that vanished would be given up only
/// by `tcp_retries2` (~15 minutes). This is what the keepalives would have
/// allowed — idle + interval × count — and at least three drip intervals,
/// so the drip sees a closed window before it runs out: a vanished peer
/// ends `peer_timeout` then.
fn user_timeout(fd: i32, drip: Duration, count: u32) -> u32 {
    let (idle, intvl) = sys::keepalive_times(fd).unwrap_or((0, 0));
    let ka = u64::from(idle)
        .saturating_add(u64::from(intvl).saturating_mul(u64::from(count)))
        .saturating_mul(1000);
    let drips = u64::try_from(drip.as_millis()).unwrap_or(u64::MAX);
    ka.max(drips.saturating_mul(3)).min(u64::from(u32::MAX)) as u32
}

/// IPv4-mapped IPv6 addresses are IPv4 peers.
fn normalize(a: SocketAddr) -> SocketAddr {
    crate::host::unmap_socket(a)
}

fn rand_between(rng: &mut impl Rng, (lo, hi): (Duration, Duration)) -> Duration {
    if hi <= lo {
        return lo;
    }
    Duration::from_millis(rng.random_range(lo.as_millis() as u64..=hi.as_millis() as u64))
}

fn accept_error_kind(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EMFILE) => "emfile",
        Some(libc::ENFILE) => "enfile",
        Some(libc::ENOBUFS) => "enobufs",
        Some(libc::ENOMEM) => "enomem",
        Some(libc::ECONNABORTED) => "econnaborted",
        Some(libc::EPERM) => "eperm",
        _ => "other",
    }
}

/// Accepts one connection from whichever listener is ready, starting the
/// search at `start` so no listener starves.
async fn accept_any(
    listeners: &[Listener],
    start: usize,
) -> (usize, io::Result<(Socket, SockAddr)>) {
    if listeners.is_empty() {
        return std::future::pending().await;
    }
    std::future::poll_fn(|cx| {
        let n = listeners.len();
        for k in 0..n {
            let i = (start + k) % n;
            let l = &listeners[i];
            loop {
                match l.sock.poll_read_ready(cx) {
                    Poll::Ready(Ok(mut guard)) => match guard.try_io(|s| s.get_ref().accept()) {
                        Ok(res) => return Poll::Ready((i, res)),
                        Err(_would_block) => continue,
                    },
                    Poll::Ready(Err(e)) => return Poll::Ready((i, Err(e))),
                    Poll::Pending => break,
                }
            }
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bait_user_timeout_is_what_the_keepalives_allow_and_at_least_three_drips() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let ka = TcpKeepalive::new()
            .with_time(Duration::from_secs(60))
            .with_interval(Duration::from_secs(20));
        socket2::SockRef::from(&c).set_tcp_keepalive(&ka).unwrap();
        let fd = c.as_raw_fd();
        // 60 + 20 × 3 s.
        assert_eq!(user_timeout(fd, Duration::from_secs(10), 3), 120_000);
        assert_eq!(user_timeout(fd, Duration::from_secs(10), 0), 60_000);
        // Never under three drips.
        assert_eq!(user_timeout(fd, Duration::from_secs(100), 3), 300_000);
        // No socket to read keepalives from: the drips alone.
        assert_eq!(user_timeout(-1, Duration::from_millis(500), 3), 1_500);
        sys::set_user_timeout(fd, 120_000).unwrap();
    }
}
