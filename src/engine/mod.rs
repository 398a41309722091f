//! The engines that hold trapped connections, and the contract they share.
//!
//! Two engines hold connections: [`socket`] (accepted sockets with a zero
//! window, one slab slot each) and [`stateless`] (nfnetlink_log in,
//! AF_PACKET out, no per-connection kernel state). Everything downstream —
//! history, metrics, the live view, the control socket — sees only what is
//! defined here: an [`Observer`] told about each connection, a
//! [`Snapshot`] of what is held now with its [`Totals`], and the
//! [`record`] types each ended connection produces, written to the log by
//! the one [`emit_record`]. Both engines count time on the same 100 ms
//! [`Clock`] and are driven through the same [`Handle`], whose snapshots
//! the one [`snapshot_handler`] (and [`totals_handler`]) serve on the
//! control socket.

pub mod gate;
pub mod nflog;
pub mod policy;
pub mod record;
pub mod socket;
pub mod stateless;

use record::{ConnRecord, LiveConn};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, oneshot, watch};

/// Told about every connection; implementations must be cheap and must not
/// block (they run on the engine's thread).
pub trait Observer: Send + Sync {
    fn trapped(&self, _listener: &str) {}
    /// A connection trapped earlier (before a restart, a takeover, or an
    /// eviction from the stateless flow table) is held again: it will end
    /// like any other, but it is not a new trap. Keeps the `held` gauge equal
    /// to what is held.
    fn resumed(&self, _listener: &str) {}
    /// The engine is about to end every connection it holds (shutdown):
    /// what follows is a burst of [`ended`](Self::ended) calls that may wait
    /// (bounded) for room instead of being dropped.
    fn ending_all(&self) {}
    /// `n` trapped packets (or, for `nflog_overrun`, kernel overruns: each
    /// lost one batch or more) went unanswered because the engine or the
    /// device could not keep up (stateless engine: `nflog_overrun`,
    /// `send_error`).
    fn dropped(&self, _kind: &str, _n: u64) {}
    fn peer_close_attempt(&self, _listener: &str) {}
    fn ended(&self, _record: &ConnRecord) {}
    fn accept_error(&self, _kind: &str) {}
}

/// Running totals since start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub held_now: u64,
    pub trapped: u64,
    pub ended: u64,
    /// Seconds we held connections that have ended (what they cost us).
    pub held_secs: f64,
    /// Seconds we have held the connections still held.
    pub live_held_secs: f64,
    /// Seconds attackers were stuck in connections that have ended
    /// ([`record::engaged`]): "attacker time wasted".
    #[serde(default)]
    pub engaged_secs: f64,
    /// The part of `engaged_secs` that is an upper bound (no FIN or RST
    /// told us when the program gave up).
    #[serde(default)]
    pub engaged_bound_secs: f64,
    /// Seconds attackers have been stuck so far in connections still held.
    #[serde(default)]
    pub live_engaged_secs: f64,
    pub close_attempts: u64,
    /// Connections handed to a new process by a takeover (not released).
    #[serde(default)]
    pub handed_over: u64,
    /// The listeners went to a new process by a takeover (with
    /// `handed_over` connections, perhaps none): what this process set up
    /// for them (policy rules) is the new one's now.
    #[serde(default)]
    pub handed_off: bool,
    /// Figures are estimates: the stateless engine evicted flows from its
    /// bounded table (see `LiveConn::estimated`).
    #[serde(default)]
    pub estimated: bool,
    pub by_reason: BTreeMap<String, u64>,
    pub accept_errors: BTreeMap<String, u64>,
    /// New connections refused because their IPv6 /48 held its cap and
    /// their own prefix nothing to evict (never trapped, no record).
    #[serde(default)]
    pub refused_per_net: u64,
}

impl Totals {
    /// Counts one ended connection.
    pub fn add_ended(&mut self, r: &ConnRecord) {
        self.ended += 1;
        self.held_secs += r.held_secs;
        self.engaged_secs += r.engaged_secs;
        if r.engaged_upper_bound {
            self.engaged_bound_secs += r.engaged_secs;
        }
        *self
            .by_reason
            .entry(r.end.as_str().to_string())
            .or_default() += 1;
    }

    /// Attacker-hours wasted: ended plus still-held connections.
    pub fn engaged_hours(&self) -> f64 {
        (self.engaged_secs + self.live_engaged_secs) / 3600.0
    }

    /// Hours we spent holding: ended plus still-held connections.
    pub fn held_hours(&self) -> f64 {
        (self.held_secs + self.live_held_secs) / 3600.0
    }
}

/// What a running server answers to "what are you holding?".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub conns: Vec<LiveConn>,
    pub totals: Totals,
}

// ---------------------------------------------------------------------------
// The engine clock: 100 ms ticks.

/// One tick of the engine clock. Both engines count time in ticks since
/// their start (a `u32` lasts 13 years), so a held connection or a flow
/// stores 4-byte times, not 16-byte `Instant`s.
pub const TICK: Duration = Duration::from_millis(100);

/// Ticks in one second.
pub const TICKS_PER_SEC: u32 = 10;

/// Where tick 0 is, in monotonic and in wall-clock time. Only the I/O layer
/// reads it ([`Clock::now`]); the decision code is handed ticks.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Instant,
    epoch_wall: SystemTime,
}

impl Clock {
    /// Tick 0 is now.
    pub fn start() -> Self {
        Clock {
            epoch: Instant::now(),
            epoch_wall: SystemTime::now(),
        }
    }

    /// Ticks since tick 0 (saturating below `u32::MAX`).
    pub fn now(&self) -> u32 {
        (self.epoch.elapsed().as_millis() / TICK.as_millis()).min(u128::from(u32::MAX - 1)) as u32
    }

    /// Wall-clock time of tick 0.
    pub fn epoch_wall(&self) -> SystemTime {
        self.epoch_wall
    }

    /// Wall-clock time of tick `t`.
    pub fn wall(&self, t: u32) -> SystemTime {
        wall_at(self.epoch_wall, t)
    }

    /// The tick of wall-clock time `t` (0 if before tick 0), at most `max`.
    pub fn tick_of(&self, t: SystemTime, max: u32) -> u32 {
        (t.duration_since(self.epoch_wall)
            .unwrap_or_default()
            .as_millis()
            / TICK.as_millis())
        .min(u128::from(max)) as u32
    }

    /// Moves tick 0 back by `by` (so older start times fit); false, and no
    /// change, if the monotonic clock cannot go back that far.
    pub fn rewind(&mut self, by: Duration) -> bool {
        match self.epoch.checked_sub(by) {
            Some(e) => {
                self.epoch = e;
                self.epoch_wall -= by;
                true
            }
            None => false,
        }
    }
}

/// Wall-clock time of tick `t` when tick 0 was at `epoch_wall`.
pub fn wall_at(epoch_wall: SystemTime, t: u32) -> SystemTime {
    epoch_wall + TICK * t
}

/// A duration in whole ticks (rounded down, at most `u32::MAX / 2`).
pub fn ticks(d: Duration) -> u32 {
    (d.as_millis() / TICK.as_millis()).min(u128::from(u32::MAX / 2)) as u32
}

/// Ticks as seconds.
pub fn secs(t: u32) -> f64 {
    f64::from(t) / f64::from(TICKS_PER_SEC)
}

// ---------------------------------------------------------------------------
// The record event.

/// The tracing target of the record event. Users filter on it; it is not
/// the module path (it predates `engine/`).
pub const RECORD_TARGET: &str = "tarpit::record";

/// What only the stateless engine knows about an ended flow; it adds these
/// fields to the record event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowFacts {
    /// Packets of the flow we answered.
    pub answered: u32,
    /// The flow was rebuilt after an eviction (see `LiveConn::estimated`).
    pub estimated: bool,
}

/// Emits one ended connection as the [`RECORD_TARGET`] tracing event
/// (one JSON object in json mode), the one format both engines write and
/// the tests, the history import and operators parse.
///
/// Fields in order: `listener`, `peer`, `local`, `original_dst`, `start`
/// (RFC 3339, ms), `held_secs`, `engaged_secs`, `engaged_upper_bound`, `syn_wait_secs`, `bytes_received`, `peer_tried_close`,
/// `fin_after_secs` (only when the peer tried to close), `answered` and
/// `estimated` (stateless engine only), `policy`, `end`, `head` (socket engine only:
/// the stateless engine never sees payload it could show), `protocol`, and
/// what the classifier found, each only when known: `software`,
/// `ssh_version`, `ssh_comments`, `http_method`, `http_path`, `http_host`,
/// `tls_sni`, `tls_alpn`, `ja4` (already escaped; see [`crate::classify`]).
pub fn emit_record(r: &ConnRecord, flow: Option<FlowFacts>) {
    // Under a flood some lines are held back and summarised (see `gate`).
    if !gate::admit(r.peer.ip()) {
        return;
    }
    // A `None` field is left out of the event altogether.
    let head = flow.is_none().then(|| tracing::field::display(&r.head));
    let c = &r.client;
    fn show(v: &Option<String>) -> Option<tracing::field::DisplayValue<&str>> {
        v.as_deref().map(tracing::field::display)
    }
    tracing::info!(
        target: RECORD_TARGET,
        listener = %r.listener,
        peer = %r.peer,
        local = %r.local,
        original_dst = %r.original_dst,
        start = %humantime::format_rfc3339_millis(r.start),
        held_secs = r.held_secs,
        engaged_secs = r.engaged_secs,
        engaged_upper_bound = r.engaged_upper_bound,
        syn_wait_secs = r.syn_wait_secs,
        bytes_received = r.bytes_received,
        peer_tried_close = r.fin_after_secs.is_some(),
        fin_after_secs = r.fin_after_secs,
        answered = flow.map(|f| f.answered),
        estimated = flow.map(|f| f.estimated),
        policy = %r.policy,
        end = %r.end,
        head = head,
        protocol = %c.protocol,
        software = show(&c.software),
        ssh_version = show(&c.ssh_version),
        ssh_comments = show(&c.ssh_comments),
        http_method = show(&c.http_method),
        http_path = show(&c.http_path),
        http_host = show(&c.http_host),
        tls_sni = show(&c.tls_sni),
        tls_alpn = show(&c.tls_alpn),
        ja4 = show(&c.ja4),
        "connection released"
    );
}

// ---------------------------------------------------------------------------
// The handle.

/// Connections a snapshot lists unless the request asks for another number
/// (longest-held first; the totals always count every connection).
pub const SNAPSHOT_LIMIT: usize = 1000;
/// Most connections one answer lists, whatever is asked: what one
/// `snapshot` call may cost in memory is bounded by this, not by how many
/// are held (`tarpit stats --all` pages through the rest).
pub const SNAPSHOT_MAX: usize = 10_000;

/// Which held connections a snapshot lists: `limit` of them, longest-held
/// first, after skipping the `offset` longest-held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub offset: usize,
    pub limit: usize,
}

impl Page {
    /// Every connection (in-process callers: tests, benchmarks).
    pub const ALL: Page = Page {
        offset: 0,
        limit: usize::MAX,
    };

    /// The page a control request asks for (`limit`, `offset`), the limit
    /// at most [`SNAPSHOT_MAX`].
    pub fn from_request(args: &serde_json::Map<String, serde_json::Value>) -> Result<Page, String> {
        let num = |k: &str, default: u64| match args.get(k) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .ok_or_else(|| format!("{k:?} must be a non-negative integer")),
        };
        let limit = num("limit", SNAPSHOT_LIMIT as u64)?.min(SNAPSHOT_MAX as u64) as usize;
        let offset = usize::try_from(num("offset", 0)?).unwrap_or(usize::MAX);
        Ok(Page { offset, limit })
    }
}

/// The command set of one engine's run loop. Every engine answers
/// snapshots and totals; each adds its own commands (takeover, key
/// rotation, ...).
pub trait Commands: Send + 'static {
    /// The command asking for a [`Snapshot`] listing `page`.
    fn snapshot(page: Page, reply: oneshot::Sender<Snapshot>) -> Self;
    /// The command asking for the [`Totals`] alone: no connection listed,
    /// nothing allocated per connection.
    fn totals(reply: oneshot::Sender<Totals>) -> Self;
}

/// Talks to a running engine: asks its loop for a [`Snapshot`] (or, through
/// the engine's own `impl Handle<ItsCommand>`, anything else it answers) and
/// tells it to stop. Cheap to clone.
pub struct Handle<C> {
    tx: mpsc::Sender<C>,
    shutdown: Arc<watch::Sender<bool>>,
}

impl<C> Clone for Handle<C> {
    fn clone(&self) -> Self {
        Handle {
            tx: self.tx.clone(),
            shutdown: Arc::clone(&self.shutdown),
        }
    }
}

/// The loop's end of a [`Handle`]: commands, and the stop flag (changes to
/// `true` once on [`Handle::shutdown`]).
pub struct Inbox<C> {
    pub commands: mpsc::Receiver<C>,
    pub shutdown: watch::Receiver<bool>,
}

/// A new handle and the inbox its engine loop reads.
pub fn channel<C>() -> (Handle<C>, Inbox<C>) {
    let (tx, commands) = mpsc::channel(16);
    let (stx, shutdown) = watch::channel(false);
    (
        Handle {
            tx,
            shutdown: Arc::new(stx),
        },
        Inbox { commands, shutdown },
    )
}

impl<C: Commands> Handle<C> {
    /// Every live connection and the totals, or `None` once the engine has
    /// stopped.
    pub async fn snapshot(&self) -> Option<Snapshot> {
        self.snapshot_page(Page::ALL).await
    }

    /// The connections of `page` and the totals over all of them.
    pub async fn snapshot_page(&self, page: Page) -> Option<Snapshot> {
        self.ask(|reply| C::snapshot(page, reply)).await
    }

    /// The totals alone (cheap at any number held: what the systemd status
    /// line and `tarpit stats --totals` use).
    pub async fn totals(&self) -> Option<Totals> {
        self.ask(C::totals).await
    }

    /// Sends the command `make` builds around a reply channel and waits for
    /// the answer; `None` once the engine has stopped.
    pub async fn ask<R>(&self, make: impl FnOnce(oneshot::Sender<R>) -> C) -> Option<R> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Sends a command that needs no answer; false once the engine has stopped.
    pub async fn tell(&self, command: C) -> bool {
        self.tx.send(command).await.is_ok()
    }

    /// Makes the engine release everything (emitting records) and return.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }
}

/// What an engine adds to its `snapshot` and `totals` answers beyond the
/// shared [`Snapshot`] fields (the stateless engine: its packet counters).
pub type Extras<C> = Arc<
    dyn Fn(
            Handle<C>,
        ) -> std::pin::Pin<
            Box<
                dyn std::future::Future<
                        Output = Result<serde_json::Map<String, serde_json::Value>, String>,
                    > + Send,
            >,
        > + Send
        + Sync,
>;

/// Answers the control socket's `snapshot` command from either engine: the
/// [`Page`] the request asks for (by default the [`SNAPSHOT_LIMIT`]
/// longest-held, never more than [`SNAPSHOT_MAX`]), the totals over every
/// connection, the page asked (`offset`, `limit`) and the engine's
/// `extras`, as JSON (what `tarpit stats` reads).
pub fn snapshot_handler<C: Commands>(
    handle: Handle<C>,
    extras: Option<Extras<C>>,
) -> Arc<dyn crate::control::Handler> {
    Arc::new(
        move |req: crate::control::Request| -> crate::control::Reply {
            let h = handle.clone();
            let extras = extras.clone();
            Box::pin(async move {
                let page = Page::from_request(&req.args)?;
                let snap = h
                    .snapshot_page(page)
                    .await
                    .ok_or_else(|| "server is shutting down".to_string())?;
                // Serialized straight from the structs: no `Value` tree of
                // the page (see `control::Answer`).
                #[derive(Serialize)]
                struct Answer<'a> {
                    #[serde(flatten)]
                    snap: &'a Snapshot,
                    offset: usize,
                    limit: usize,
                    #[serde(flatten)]
                    extras: serde_json::Map<String, serde_json::Value>,
                }
                let extras = match extras {
                    Some(x) => x(h).await?,
                    None => serde_json::Map::new(),
                };
                crate::control::Answer::serialized(&Answer {
                    snap: &snap,
                    offset: page.offset,
                    limit: page.limit,
                    extras,
                })
            })
        },
    )
}

/// Answers the control socket's `totals` command: `{"totals": ...}` plus the
/// engine's `extras`, built without listing a single connection.
pub fn totals_handler<C: Commands>(
    handle: Handle<C>,
    extras: Option<Extras<C>>,
) -> Arc<dyn crate::control::Handler> {
    Arc::new(
        move |_req: crate::control::Request| -> crate::control::Reply {
            let h = handle.clone();
            let extras = extras.clone();
            Box::pin(async move {
                let totals = h
                    .totals()
                    .await
                    .ok_or_else(|| "server is shutting down".to_string())?;
                let mut m = serde_json::Map::new();
                m.insert(
                    "totals".into(),
                    serde_json::to_value(totals).map_err(|e| e.to_string())?,
                );
                if let Some(x) = extras {
                    m.extend(x(h).await?);
                }
                Ok(serde_json::Value::Object(m).into())
            })
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use record::EndReason;
    use std::io::Write;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The JSON object `emit_record` writes, with its fields in order.
    fn emitted(r: &ConnRecord, flow: Option<FlowFacts>) -> (serde_json::Value, Vec<String>) {
        let buf = Buf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::fmt()
            .json()
            .with_writer(move || w.clone())
            .finish();
        tracing::subscriber::with_default(sub, || emit_record(r, flow));
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        let fields = text
            .split("\"fields\":{")
            .nth(1)
            .and_then(|f| f.split('}').next())
            .unwrap()
            .split(',')
            .filter_map(|kv| kv.split(':').next())
            .map(|k| k.trim_matches('"').to_string())
            .collect();
        (v, fields)
    }

    fn rec(fin: Option<f64>) -> ConnRecord {
        ConnRecord {
            listener: "0.0.0.0:2222".into(),
            peer: "10.77.0.2:40000".parse().unwrap(),
            local: "10.77.0.1:2222".parse().unwrap(),
            original_dst: "10.77.0.1:22".parse().unwrap(),
            start: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_250),
            held_secs: 12.5,
            engaged_secs: 3.5,
            engaged_upper_bound: false,
            syn_wait_secs: 0.0,
            bytes_received: 7,
            fin_after_secs: fin,
            end: EndReason::PeerReset,
            head: "SSH-2.0\\r\\n".into(),
            client: crate::classify::classify(b"SSH-2.0-Go\r\n"),
            estimated: false,
            policy: String::new(),
        }
    }

    #[test]
    fn socket_record_fields() {
        let (v, fields) = emitted(&rec(None), None);
        assert_eq!(v["target"], "tarpit::record");
        assert_eq!(
            fields,
            [
                "message",
                "listener",
                "peer",
                "local",
                "original_dst",
                "start",
                "held_secs",
                "engaged_secs",
                "engaged_upper_bound",
                "syn_wait_secs",
                "bytes_received",
                "peer_tried_close",
                "policy",
                "end",
                "head",
                "protocol",
                "software",
                "ssh_version"
            ]
        );
        let f = &v["fields"];
        assert_eq!(f["message"], "connection released");
        assert_eq!(f["start"], "2023-11-14T22:13:20.250Z");
        assert_eq!(f["held_secs"], 12.5);
        assert_eq!(f["bytes_received"], 7);
        assert_eq!(f["peer_tried_close"], false);
        assert_eq!(f["end"], "peer_reset");
        assert_eq!(f["head"], "SSH-2.0\\r\\n");
        assert_eq!(f["protocol"], "ssh");
        assert_eq!(f["software"], "Go");
        let (v, fields) = emitted(&rec(Some(3.5)), None);
        assert_eq!(v["fields"]["fin_after_secs"], 3.5);
        assert_eq!(v["fields"]["peer_tried_close"], true);
        assert_eq!(fields[12], "fin_after_secs");
    }

    #[test]
    fn stateless_record_fields() {
        let flow = FlowFacts {
            answered: 4,
            estimated: true,
        };
        let (v, fields) = emitted(&rec(Some(1.0)), Some(flow));
        assert_eq!(
            fields,
            [
                "message",
                "listener",
                "peer",
                "local",
                "original_dst",
                "start",
                "held_secs",
                "engaged_secs",
                "engaged_upper_bound",
                "syn_wait_secs",
                "bytes_received",
                "peer_tried_close",
                "fin_after_secs",
                "answered",
                "estimated",
                "policy",
                "end",
                "protocol",
                "software",
                "ssh_version"
            ]
        );
        assert_eq!(v["fields"]["answered"], 4);
        assert_eq!(v["fields"]["estimated"], true);
    }

    #[test]
    fn clock_ticks_and_wall_time() {
        let mut c = Clock::start();
        assert!(c.now() <= 1);
        assert_eq!(ticks(Duration::from_millis(250)), 2);
        assert_eq!(secs(25), 2.5);
        let w = c.wall(10);
        assert_eq!(
            w.duration_since(c.epoch_wall()).unwrap(),
            Duration::from_secs(1)
        );
        assert_eq!(c.tick_of(w, u32::MAX), 10);
        assert_eq!(c.tick_of(w, 3), 3);
        if c.rewind(Duration::from_secs(1)) {
            assert_eq!(c.tick_of(w, u32::MAX), 20);
            assert!(c.now() >= 10);
        }
    }
}
