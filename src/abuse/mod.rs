//! Reporting abusers where people look: AbuseIPDB (`[report.abuseipdb]`)
//! and generic webhooks (`[[webhook]]`), opt-in.
//!
//! Both daemons report what they alone know: `tarpit watch` every ban its
//! jails make (triggers on its `bans` table queue them in the ban's own
//! transaction), `tarpit serve` every host one of whose connections stayed
//! engaged at least `[report] engaged_threshold` (from the records the
//! engine hands its observers). Each keeps an outbox in SQLite — the
//! watcher in its state database, serve in `[report] outbox` (default
//! `report.db` beside the history) — so a restart or an outage of the
//! other side loses nothing.
//!
//! * [`policy`] — pure: admission, gating (pause, quota, repeats), what an
//!   answer means, what is sent;
//! * [`outbox`] — the SQLite tables;
//! * [`http`] — one POST, plain or TLS (rustls);
//! * [`worker`] — the thread that sorts and delivers;
//! * [`settings`] — the config sections validated;
//! * [`metrics`] — sent / failed / queued.

pub mod http;
pub mod metrics;
pub mod outbox;
pub mod policy;
pub mod settings;
pub mod worker;

pub use metrics::ReportMetrics;
pub use settings::Settings;

use crate::engine::record::ConnRecord;
use crate::engine::Observer;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

/// Events buffered between serve's engine and the report thread.
const QUEUE: usize = 4096;

/// The watcher's report thread: bans queue themselves (triggers on the
/// state database at `db`); the thread delivers until `stop`.
pub fn start_watch(
    settings: Settings,
    db: &Path,
    stop: Arc<AtomicBool>,
) -> Result<(Arc<ReportMetrics>, std::thread::JoinHandle<()>), String> {
    let conn = outbox::open(db).map_err(|e| format!("state database {}: {e}", db.display()))?;
    outbox::set_ban_triggers(&conn, true)
        .map_err(|e| format!("state database {}: {e}", db.display()))?;
    log_start(&settings, db);
    let metrics = Arc::new(ReportMetrics::default());
    let w = worker::Worker::new(settings, conn, metrics.clone(), None);
    let t = std::thread::Builder::new()
        .name("report".into())
        .spawn(move || w.run(stop))
        .map_err(|e| format!("cannot start the report thread: {e}"))?;
    Ok((metrics, t))
}

fn log_start(s: &Settings, db: &Path) {
    for d in &s.dests {
        tracing::info!(
            dest = d.id,
            url = d.url_text,
            ban = d.ban,
            trapped = d.trapped,
            quota = d.quota,
            outbox = %db.display(),
            "report: destination"
        );
    }
}

/// Where serve keeps its outbox: `[report] outbox`, else `report.db`
/// beside the history (`None`: neither is set).
pub fn serve_outbox(s: &Settings, history: Option<&Path>) -> Option<PathBuf> {
    s.outbox
        .clone()
        .or_else(|| history.map(|h| h.with_file_name("report.db")))
}

/// Serve's side: an [`Observer`] that hands hosts engaged long enough to
/// the report thread.
pub struct ServeReports {
    tx: SyncSender<worker::Msg>,
    threshold: f64,
    dropped: AtomicU64,
    /// Until [`start_thread`](Self::start_thread).
    worker: std::sync::Mutex<Option<worker::Worker>>,
    pub metrics: Arc<ReportMetrics>,
}

impl ServeReports {
    /// Opens the outbox at `db` (as root, before privileges are dropped);
    /// events queue in memory until [`start_thread`](Self::start_thread).
    pub fn open(settings: Settings, db: &Path) -> Result<Arc<ServeReports>, String> {
        let conn = outbox::open(db).map_err(|e| format!("report outbox {}: {e}", db.display()))?;
        log_start(&settings, db);
        let metrics = Arc::new(ReportMetrics::default());
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let threshold = settings.engaged_threshold.as_secs_f64();
        let w = worker::Worker::new(settings, conn, metrics.clone(), Some(rx));
        Ok(Arc::new(ServeReports {
            tx,
            threshold,
            dropped: AtomicU64::new(0),
            worker: std::sync::Mutex::new(Some(w)),
            metrics,
        }))
    }

    /// Starts the report thread (after the privilege drop: no thread may
    /// run with the rights the process gives up).
    pub fn start_thread(&self) -> Result<(), String> {
        let w = self
            .worker
            .lock()
            .map_err(|_| "report: poisoned".to_string())?
            .take();
        let Some(w) = w else { return Ok(()) };
        std::thread::Builder::new()
            .name("report".into())
            .spawn(move || w.run(Arc::new(AtomicBool::new(false))))
            .map_err(|e| format!("cannot start the report thread: {e}"))?;
        Ok(())
    }

    /// Stores what is queued and stops the thread (waits at most `wait`:
    /// a request in flight may hold it up to its timeout; the event it
    /// carries is in the outbox already).
    pub fn close(&self, wait: Duration) {
        let (ack, done) = mpsc::channel();
        if self.tx.send(worker::Msg::Stop(ack)).is_ok() {
            let _ = done.recv_timeout(wait);
        }
    }

    /// The event for an ended connection, if it is one to report.
    pub fn event(&self, r: &ConnRecord) -> Option<policy::Event> {
        if r.engaged_secs < self.threshold {
            return None;
        }
        let ip = r.peer.ip().to_canonical();
        let end = r.start + Duration::from_secs_f64(r.held_secs.max(0.0));
        Some(policy::Event {
            kind: policy::EventKind::Trapped,
            host: ip.to_string(),
            at_ms: crate::engine::record::to_unix(end) as i64 * 1000,
            jail: None,
            offences: None,
            port: Some(r.original_dst.port()),
            engaged_secs: Some(r.engaged_secs),
            held_secs: Some(r.held_secs),
            // What the peer named itself (classified: the SSH
            // softwareversion, the HTTP User-Agent), else an SSH banner
            // in the head.
            client: r
                .client
                .software
                .as_deref()
                .and_then(policy::clean_client)
                .or_else(|| policy::client_from_head(&r.head)),
        })
    }
}

impl Observer for ServeReports {
    fn ended(&self, r: &ConnRecord) {
        let Some(ev) = self.event(r) else { return };
        match self.tx.try_send(worker::Msg::Event(ev)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed);
                if n.is_power_of_two() {
                    tracing::warn!(
                        dropped = n + 1,
                        "report: the report thread is behind; events dropped"
                    );
                }
            }
        }
    }
}
