//! The stateless engine's I/O loop: nfnetlink_log in, AF_PACKET out.
//!
//! One task on the current-thread runtime waits on three things: the log
//! socket (drained in bounded batches), a 100 ms tick (key rotation, flow
//! expiry) and commands from [`Handle`]s. Each logged packet is answered at
//! once out of the interface it arrived on, to the link-layer address it
//! came from, so replies bypass routing, netfilter and conntrack.
//!
//! This layer owns everything [`Core`] does not: the clock, the sockets and
//! the key file (loaded at start, saved after every rotation).

use super::core::{Core, Counters, Outcome, Rotated};
use super::packet::MAX_REPLY;
use super::StatelessOptions;
use crate::engine::nflog::{self, Message, NflogSocket, ParseError};
use crate::engine::{Clock, Extras, Inbox, Observer, Page, Snapshot, Totals};
use crate::ratelimit::RateLimit;
use crate::sys::netlink::Netlink;
use crate::sys::packet::{
    BatchResult, Outgoing, PacketSender, RingSender, ETH_P_IP, ETH_P_IPV6, SEND_BATCH,
};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;

/// Datagrams (of up to 256 packets each) read per turn before the other
/// tasks on the runtime (control socket, signals) and the tick get theirs.
const DRAIN_BATCH: usize = 16;
/// Receive buffer asked of the kernel for the log socket: a few thousand
/// packets of backlog before it starts dropping.
const SOCKET_RCVBUF: usize = 8 << 20;

/// What a [`Handle`] asks of the engine loop.
pub enum Command {
    /// The flows of the page, longest-held first, and the totals.
    Snapshot(Page, oneshot::Sender<Snapshot>),
    Totals(oneshot::Sender<Totals>),
    Counters(oneshot::Sender<Counters>),
    Rotate,
}

impl crate::engine::Commands for Command {
    fn snapshot(page: Page, reply: oneshot::Sender<Snapshot>) -> Self {
        Command::Snapshot(page, reply)
    }
    fn totals(reply: oneshot::Sender<Totals>) -> Self {
        Command::Totals(reply)
    }
}

/// Talks to a running engine (see [`crate::engine::Handle`]); its snapshot
/// lists the flows in the table. Cheap to clone.
pub type Handle = crate::engine::Handle<Command>;

impl Handle {
    /// Packet counters, or `None` once stopped.
    pub async fn counters(&self) -> Option<Counters> {
        self.ask(Command::Counters).await
    }

    /// Rotates the SYN-cookie key now (as if the period had ended).
    pub async fn rotate_key(&self) {
        self.tell(Command::Rotate).await;
    }
}

/// The bound log socket and sender, ready to run.
pub struct StatelessServer {
    core: Core,
    clock: Clock,
    /// Where the keys are saved after each rotation.
    key_file: Option<PathBuf>,
    sock: AsyncFd<Netlink>,
    sender: PacketSender,
    /// The fast path for replies out of Ethernet interfaces (`None` when
    /// the kernel has no TX rings: everything goes through `sender`).
    ring: Option<RingSender>,
    inbox: Inbox<Command>,
    handle: Handle,
}

impl StatelessServer {
    /// Binds the log group and opens the packet socket (needs
    /// CAP_NET_ADMIN and CAP_NET_RAW). Call inside a tokio runtime.
    pub fn bind(opts: &StatelessOptions, observers: Vec<Arc<dyn Observer>>) -> io::Result<Self> {
        let sock =
            NflogSocket::bind(opts.nflog_group, opts.batching, SOCKET_RCVBUF).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot bind nfnetlink_log group {}: {e}", opts.nflog_group),
                )
            })?;
        let sender = PacketSender::open()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot open AF_PACKET socket: {e}")))?;
        let ring = match RingSender::open() {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::info!(error = %e, "no AF_PACKET TX ring; replies go out with sendmmsg");
                None
            }
        };
        let sock = crate::sys::register_async(sock.into_netlink())?;
        let (handle, inbox) = crate::engine::channel();
        let cookies = match &opts.key_file {
            Some(p) => super::keyfile::load_or_create(p).map_err(io::Error::other)?,
            None => super::cookie::Cookies::new(),
        };
        let clock = Clock::start();
        Ok(StatelessServer {
            core: Core::new(opts, cookies, observers, clock.epoch_wall()),
            clock,
            key_file: opts.key_file.clone(),
            sock,
            sender,
            ring,
            inbox,
            handle,
        })
    }

    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Serves until [`Handle::shutdown`]; returns the totals and counters.
    pub async fn run(self) -> (Totals, Counters) {
        let StatelessServer {
            mut core,
            clock,
            key_file,
            sock,
            sender,
            ring,
            inbox,
            handle,
        } = self;
        let Inbox {
            commands: mut rx,
            shutdown: mut shutdown_rx,
        } = inbox;
        drop(handle);
        let mut tick = tokio::time::interval(crate::engine::TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut buf = vec![0u8; nflog::RECV_BUF];
        let mut outbox = Outbox::new(ring);
        let mut errors = RateLimit::default();
        loop {
            // Still packets queued after a full batch: let the other tasks
            // run before the next one (under a flood the log socket is
            // always ready, and `stats` must still be answered).
            let mut more = false;
            tokio::select! {
                biased;
                _ = shutdown_rx.changed() => break,
                // Before the log socket: a flood must not starve key
                // rotation and expiry.
                _ = tick.tick() => {
                    if let Some(r) = core.tick(clock.now()) {
                        rotated(&core, r, key_file.as_deref());
                    }
                }
                cmd = rx.recv() => match cmd {
                    Some(Command::Snapshot(page, tx)) => { let _ = tx.send(snapshot_page(&core, clock.now(), page)); }
                    Some(Command::Totals(tx)) => { let _ = tx.send(core.snapshot(clock.now(), 0).totals); }
                    Some(Command::Counters(tx)) => { let _ = tx.send(core.counters()); }
                    Some(Command::Rotate) => {
                        let r = core.rotate(clock.now());
                        rotated(&core, r, key_file.as_deref());
                    }
                    None => {}
                },
                guard = sock.readable() => {
                    let mut g = match guard {
                        Ok(g) => g,
                        Err(e) => {
                            tracing::error!(error = %e, "log socket failed");
                            break;
                        }
                    };
                    more = true;
                    for _ in 0..DRAIN_BATCH {
                        match g.get_inner().recv(&mut buf) {
                            Ok(n) => serve_datagram(&mut core, clock.now(), &sender, &buf[..n], &mut outbox, &mut errors),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                g.clear_ready();
                                more = false;
                                break;
                            }
                            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                                core.count_overrun();
                                if let Some(n) = errors.hit() {
                                    tracing::warn!(count = n, "log socket overrun: the kernel dropped trapped packets (their peers retransmit)");
                                }
                            }
                            Err(e) => {
                                core.count_bad_message();
                                if let Some(n) = errors.hit() {
                                    tracing::warn!(error = %e, count = n, "reading the log socket failed");
                                }
                            }
                        }
                    }
                    outbox.flush(&mut core, &sender, &mut errors);
                }
            }
            if more {
                tokio::task::yield_now().await;
            }
        }
        core.shutdown(clock.now());
        (core.totals(), core.counters())
    }
}

/// Replies waiting to be sent. Those out of an Ethernet interface go into
/// the TX ring (one kick per batch); the others (no link-layer header
/// known, other link types) wait here, [`SEND_BATCH`] at most, for one
/// `sendmmsg`. Allocated once; nothing per packet.
struct Outbox {
    bufs: Box<[[u8; MAX_REPLY]; SEND_BATCH]>,
    meta: [Meta; SEND_BATCH],
    n: usize,
    ring: Option<RingSender>,
    /// What the ring's kicks did since the last report.
    ring_result: BatchResult,
}

#[derive(Clone, Copy, Default)]
struct Meta {
    ifindex: u32,
    ethertype: u16,
    hwaddr: [u8; 8],
    hwlen: u8,
    len: u8,
}

impl Outbox {
    fn new(ring: Option<RingSender>) -> Self {
        Outbox {
            bufs: Box::new([[0u8; MAX_REPLY]; SEND_BATCH]),
            meta: [Meta::default(); SEND_BATCH],
            n: 0,
            ring,
            ring_result: BatchResult::default(),
        }
    }

    /// Sends the reply built in [`slot`](Self::slot) (`len` bytes) through
    /// the ring, with the Ethernet header `eth`. `false` when there is no
    /// ring (the caller commits it to the `sendmmsg` batch instead).
    fn ring_push(&mut self, ifindex: u32, eth: &[u8; 14], len: usize) -> bool {
        let Some(ring) = self.ring.as_mut() else {
            return false;
        };
        let pkt = &self.bufs[self.n][..len];
        if !ring.push(ifindex, eth, pkt, &mut self.ring_result) {
            self.ring_result.failed += 1;
            self.ring_result.first_error.get_or_insert(libc::ENOBUFS);
        }
        true
    }

    /// The buffer the next reply is built in.
    fn slot(&mut self) -> &mut [u8; MAX_REPLY] {
        &mut self.bufs[self.n]
    }

    /// Queues the reply built in [`slot`](Self::slot); sends the batch when
    /// full.
    fn commit(&mut self, m: Meta, core: &mut Core, sender: &PacketSender, errors: &mut RateLimit) {
        self.meta[self.n] = m;
        self.n += 1;
        if self.n == SEND_BATCH {
            self.flush(core, sender, errors);
        }
    }

    fn flush(&mut self, core: &mut Core, sender: &PacketSender, errors: &mut RateLimit) {
        if let Some(ring) = self.ring.as_mut() {
            ring.kick(&mut self.ring_result);
            let r = std::mem::take(&mut self.ring_result);
            report(core, r, errors);
        }
        self.send_batch(core, sender, errors);
    }

    fn send_batch(&mut self, core: &mut Core, sender: &PacketSender, errors: &mut RateLimit) {
        if self.n == 0 {
            return;
        }
        let mut batch = [Outgoing {
            ifindex: 0,
            ethertype: 0,
            dst: &[],
            pkt: &[],
        }; SEND_BATCH];
        for (k, (m, b)) in self.meta[..self.n].iter().zip(self.bufs.iter()).enumerate() {
            batch[k] = Outgoing {
                ifindex: m.ifindex,
                ethertype: m.ethertype,
                dst: &m.hwaddr[..usize::from(m.hwlen)],
                pkt: &b[..usize::from(m.len)],
            };
        }
        let r = sender.send_batch(&batch[..self.n]);
        self.n = 0;
        report(core, r, errors);
    }
}

/// Counts a batch's failed replies and says so (rate-limited).
fn report(core: &mut Core, r: BatchResult, errors: &mut RateLimit) {
    if r.failed > 0 {
        core.count_send_errors(r.failed as u64);
        if let Some(n) = errors.hit() {
            let e = io::Error::from_raw_os_error(r.first_error.unwrap_or(0));
            tracing::warn!(error = %e, failed = r.failed, count = n, "sending replies failed (their peers retransmit)");
        }
    }
}

/// After a key rotation: saves the new keys (if kept in a file) and says so.
fn rotated(core: &Core, r: Rotated, key_file: Option<&std::path::Path>) {
    if let Some(p) = key_file {
        if let Err(e) = super::keyfile::save(p, core.cookies()) {
            tracing::warn!(path = %p.display(), error = %e, "cannot save the rotated key; a restart will not keep connections");
        }
    }
    tracing::info!(
        generation = r.generation,
        retired = r.retired,
        "SYN-cookie key rotated"
    );
}

/// Answers every packet in one datagram from the log socket, all captured
/// at tick `now`.
fn serve_datagram(
    core: &mut Core,
    now: u32,
    sender: &PacketSender,
    data: &[u8],
    outbox: &mut Outbox,
    errors: &mut RateLimit,
) {
    for m in nflog::messages(data) {
        let p = match m {
            Ok(Message::Packet(p)) => p,
            Ok(_) => continue,
            Err(ParseError::Overrun) => {
                core.count_overrun();
                continue;
            }
            Err(ParseError::BadLength) => {
                core.count_bad_message();
                continue;
            }
        };
        let out = outbox.slot();
        let Outcome::Reply { len } = core.handle(p.payload, now, out) else {
            continue;
        };
        let Some(ifindex) = p.indev else {
            core.count_send_error();
            continue;
        };
        let ethertype = if out[0] >> 4 == 4 {
            ETH_P_IP
        } else {
            ETH_P_IPV6
        };
        if let Some(eth) = ethernet_reply_header(&p, ethertype) {
            if outbox.ring_push(ifindex, &eth, len.min(MAX_REPLY)) {
                continue;
            }
        }
        let mut hwaddr = [0u8; 8];
        let hwlen = p.hwaddr.len().min(8);
        hwaddr[..hwlen].copy_from_slice(&p.hwaddr[..hwlen]);
        let m = Meta {
            ifindex,
            ethertype,
            hwaddr,
            hwlen: hwlen as u8,
            len: len.min(MAX_REPLY) as u8,
        };
        outbox.commit(m, core, sender, errors);
    }
}

/// The Ethernet header of a reply to `p`: back to the address it came
/// from, from the one it was sent to. `None` unless it arrived on an
/// Ethernet interface with a plain 14-byte header between unicast
/// addresses (anything else goes out with `sendmmsg`, the kernel writing
/// the header).
fn ethernet_reply_header(p: &nflog::Logged<'_>, ethertype: u16) -> Option<[u8; 14]> {
    const ARPHRD_ETHER: u16 = 1;
    let h: &[u8; 14] = p.hwheader.try_into().ok()?;
    if p.hwtype != ARPHRD_ETHER || h[0] & 1 != 0 || h[6] & 1 != 0 {
        return None;
    }
    let mut eth = [0u8; 14];
    eth[..6].copy_from_slice(&h[6..12]);
    eth[6..12].copy_from_slice(&h[..6]);
    eth[12..].copy_from_slice(&ethertype.to_be_bytes());
    Some(eth)
}

/// The flows of `page`: the `offset + limit` longest-held are picked (the
/// table is not ordered), the first `offset` dropped.
fn snapshot_page(core: &Core, now: u32, page: Page) -> Snapshot {
    let mut snap = core.snapshot(now, page.offset.saturating_add(page.limit));
    snap.conns.drain(..page.offset.min(snap.conns.len()));
    snap
}

/// The shared `snapshot` and `totals` handlers ([`crate::engine`]) with what
/// only this engine knows: its packet [`Counters`] (`counters`: packets,
/// answers, drops), for scripts and benchmarks; `tarpit stats` ignores it.
pub fn control_extras() -> Extras<Command> {
    Arc::new(|h: Handle| {
        Box::pin(async move {
            let counters = h
                .counters()
                .await
                .ok_or_else(|| "server is shutting down".to_string())?;
            let mut m = serde_json::Map::new();
            m.insert(
                "counters".into(),
                serde_json::to_value(counters).map_err(|e| e.to_string())?,
            );
            Ok(m)
        })
    })
}
