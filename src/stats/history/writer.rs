//! The writer thread: the engine only `try_send`s a record into a bounded
//! queue; this thread commits batches through [`super::store`].

use super::store::{insert_batch_geo, prune, prune_rows};
use super::{db_err, open_for_writing, HistoryError, BATCH_ROWS, BATCH_WAIT, QUEUE_ROWS};
use crate::engine::record::{to_unix, ConnRecord};
use crate::engine::Observer;
use crate::geoip::{Geo, GeoIp};
use crate::stats::metrics::HistoryMetrics;
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// Tunables; the defaults are what `tarpit serve` uses.
#[derive(Debug, Clone)]
pub struct HistoryOptions {
    pub path: PathBuf,
    pub retention_days: u32,
    /// Size cap, rows (0 = none): checked at start, hourly, and each time
    /// about a sixteenth of it has been written.
    pub max_rows: u64,
    pub queue_rows: usize,
    pub batch_rows: usize,
    pub batch_wait: Duration,
    pub prune_every: Duration,
    /// MaxMind DB files (`[serve] geoip`): each row gets its peer's country,
    /// ASN and AS organisation, looked up by the writer thread.
    pub geoip: Vec<PathBuf>,
    /// Count connections and held time by country in the metrics
    /// (`[serve] metrics_country`).
    pub country_metrics: bool,
}

impl HistoryOptions {
    pub fn new(path: PathBuf, retention_days: u32) -> Self {
        HistoryOptions {
            path,
            retention_days,
            max_rows: super::DEFAULT_MAX_ROWS,
            queue_rows: QUEUE_ROWS,
            batch_rows: BATCH_ROWS,
            batch_wait: BATCH_WAIT,
            prune_every: Duration::from_secs(3600),
            geoip: Vec::new(),
            country_metrics: false,
        }
    }
}

enum Msg {
    Row(Box<ConnRecord>),
    Flush(mpsc::Sender<()>),
    Prune(mpsc::Sender<()>),
    Stop(mpsc::Sender<()>),
}

/// The history writer: feed it records (it is an [`Observer`]), close it at
/// the end to commit what is queued.
pub struct History {
    tx: SyncSender<Msg>,
    metrics: HistoryMetrics,
    /// Transactions committed (for tests and the benchmark).
    transactions: Arc<AtomicU64>,
    last_drop_log: AtomicU64,
    /// While the engine ends everything at shutdown ([`Observer::ending_all`]):
    /// until when (ms since the Unix epoch) a full queue is waited for
    /// instead of dropping the row. 0: never wait.
    wait_until_ms: AtomicU64,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The writer and its queue until [`History::start_writer`].
    unstarted: Mutex<Option<Unstarted>>,
    path: PathBuf,
}

struct Unstarted {
    writer: Writer,
    rx: mpsc::Receiver<Msg>,
    keep: Vec<std::os::fd::RawFd>,
}

impl History {
    /// Opens the database and starts the writer thread: [`open`](Self::open)
    /// then [`start_writer`](Self::start_writer), for callers that drop no
    /// privileges in between.
    pub fn start(opts: HistoryOptions, metrics: HistoryMetrics) -> Result<Arc<Self>, HistoryError> {
        let geo = if opts.geoip.is_empty() {
            None
        } else {
            Some(GeoIp::open(&opts.geoip)?)
        };
        let h = Self::open(opts, metrics, geo)?;
        h.start_writer()?;
        Ok(h)
    }

    /// Opens the database (errors here are errors at start) and prunes
    /// once, on the calling thread, starting no thread: `tarpit serve` opens
    /// it as root, drops privileges, and only then calls
    /// [`start_writer`](Self::start_writer), so that no thread ever runs
    /// with rights the process is giving up. Rows recorded before then wait
    /// in the queue. `geo` replaces `opts.geoip` (already opened).
    pub fn open(
        opts: HistoryOptions,
        metrics: HistoryMetrics,
        geo: Option<GeoIp>,
    ) -> Result<Arc<Self>, HistoryError> {
        let conn = open_for_writing(&opts.path)?;
        let keep = crate::sys::fdtable::fds_opened_on(&opts.path)
            .map_err(|e| db_err(&opts.path, "cannot list its descriptors", e))?;
        let (tx, rx) = mpsc::sync_channel(opts.queue_rows.max(1));
        let transactions = Arc::new(AtomicU64::new(0));
        let mut w = Writer {
            conn,
            opts: opts.clone(),
            metrics: metrics.clone(),
            transactions: transactions.clone(),
            batch: Vec::with_capacity(opts.batch_rows),
            geo,
            geos: Vec::new(),
            last_err_log: None,
            suppressed: 0,
            since_cap: 0,
        };
        w.prune();
        Ok(Arc::new(History {
            tx,
            metrics,
            transactions,
            last_drop_log: AtomicU64::new(0),
            wait_until_ms: AtomicU64::new(0),
            thread: Mutex::new(None),
            unstarted: Mutex::new(Some(Unstarted {
                writer: w,
                rx,
                keep,
            })),
            path: opts.path,
        }))
    }

    /// Starts the writer thread of an [`open`](Self::open)ed history (a
    /// second call does nothing).
    ///
    /// The writer thread first moves onto a private fd table
    /// ([`crate::sys::fdtable`]): sharing one with the engine made every fd
    /// syscall of the engine slower, which cost more CPU than all the
    /// SQLite work. It keeps only the database's own descriptors.
    pub fn start_writer(&self) -> Result<(), HistoryError> {
        let Some(Unstarted { writer, rx, keep }) =
            self.unstarted.lock().ok().and_then(|mut u| u.take())
        else {
            return Ok(());
        };
        let thread = std::thread::Builder::new()
            .name("tarpit-history".into())
            .spawn(move || {
                if let Err(e) = crate::sys::fdtable::private_fd_table(&keep) {
                    tracing::warn!(error = %e, "history writer shares the engine's fd table");
                }
                writer.run(rx)
            })
            .map_err(|e| db_err(&self.path, "cannot start writer thread", e))?;
        if let Ok(mut t) = self.thread.lock() {
            *t = Some(thread);
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues one record without waiting (except while the engine ends
    /// everything at shutdown: then a full queue is waited for, up to
    /// [`SHUTDOWN_WAIT`] in all). A row that cannot be queued is counted
    /// (`tarpit_history_rows_dropped_total`) and logged, at most every 10 s.
    pub fn record(&self, r: &ConnRecord) {
        let mut msg = Msg::Row(Box::new(r.clone()));
        let until = self.wait_until_ms.load(Ordering::Relaxed);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => return,
                Err(TrySendError::Full(m)) if until > 0 && unix_ms() < until => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => break,
            }
        }
        self.metrics.rows_dropped.inc();
        let now = to_unix(SystemTime::now()) as u64;
        let last = self.last_drop_log.load(Ordering::Relaxed);
        if now >= last + 10 {
            self.last_drop_log.store(now, Ordering::Relaxed);
            tracing::warn!(
                path = %self.path.display(),
                dropped_total = self.metrics.rows_dropped.get(),
                "history writer behind; dropping connection records"
            );
        }
    }

    /// Rows that could not be queued, since start.
    pub fn rows_dropped(&self) -> u64 {
        self.metrics.rows_dropped.get()
    }

    /// Waits (at most `limit`) until everything queued so far is committed.
    pub fn flush(&self, limit: Duration) -> bool {
        self.ask(Msg::Flush, limit)
    }

    /// Runs retention now (it also runs at start and hourly).
    pub fn prune_now(&self, limit: Duration) -> bool {
        self.ask(Msg::Prune, limit)
    }

    /// Commits what is queued and stops the writer thread. Blocks (bounded
    /// by `limit`): call it after the engine has stopped.
    pub fn close(&self, limit: Duration) {
        let dropped = self.rows_dropped();
        if dropped > 0 {
            tracing::warn!(
                path = %self.path.display(),
                dropped_total = dropped,
                "history: connection records dropped since start (the writer fell behind)"
            );
        }
        // Never started (the engine failed early): commit what it queued.
        if let Err(e) = self.start_writer() {
            tracing::error!(error = %e, "history: rows queued before the start are lost");
            return;
        }
        if self.ask(Msg::Stop, limit) {
            if let Ok(mut t) = self.thread.lock() {
                if let Some(t) = t.take() {
                    let _ = t.join();
                }
            }
        }
    }

    pub fn transactions(&self) -> u64 {
        self.transactions.load(Ordering::Relaxed)
    }

    pub fn metrics(&self) -> &HistoryMetrics {
        &self.metrics
    }

    fn ask(&self, make: fn(mpsc::Sender<()>) -> Msg, limit: Duration) -> bool {
        let (ack, done) = mpsc::channel();
        let deadline = Instant::now() + limit;
        let mut msg = make(ack);
        // The queue may be full: retry until the deadline rather than block.
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(m)) => {
                    if Instant::now() >= deadline {
                        return false;
                    }
                    msg = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        done.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }
}

impl Observer for History {
    fn ended(&self, r: &ConnRecord) {
        self.record(r);
    }

    fn ending_all(&self) {
        let until = unix_ms().saturating_add(SHUTDOWN_WAIT.as_millis() as u64);
        self.wait_until_ms.store(until, Ordering::Relaxed);
    }
}

/// How long the shutdown records may wait in all for room in the queue (the
/// writer commits tens of thousands of rows a second; a million held flows
/// take a few seconds more to stop, not a million lost rows).
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(20);

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How often a collecting writer drains its queue.
const POLL: Duration = Duration::from_millis(50);

#[derive(PartialEq, Eq)]
enum Flow {
    Go,
    Stop,
}

struct Writer {
    conn: Connection,
    opts: HistoryOptions,
    metrics: HistoryMetrics,
    transactions: Arc<AtomicU64>,
    batch: Vec<ConnRecord>,
    geo: Option<GeoIp>,
    /// The batch's GeoIP facts (reused buffer).
    geos: Vec<Geo>,
    last_err_log: Option<Instant>,
    suppressed: u64,
    /// Rows written since the size cap was last checked.
    since_cap: u64,
}

impl Writer {
    /// Idle, the writer blocks for the first row; then, until that row's
    /// batch window closes, it sleeps in [`POLL`] steps and drains the queue
    /// without blocking. The engine's `try_send` therefore almost never has
    /// to wake this thread (one wake-up per batch, not per row), which is
    /// most of what a row would otherwise cost.
    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        let mut next_prune = Instant::now() + self.opts.prune_every;
        loop {
            let wait = next_prune.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(m) => {
                    if self.handle(m) == Flow::Stop {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.commit();
                    return;
                }
            }
            let deadline = Instant::now() + self.opts.batch_wait;
            while !self.batch.is_empty() {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                std::thread::sleep(POLL.min(deadline - now));
                loop {
                    match rx.try_recv() {
                        Ok(m) => {
                            if self.handle(m) == Flow::Stop {
                                return;
                            }
                        }
                        Err(mpsc::TryRecvError::Empty) => break,
                        Err(mpsc::TryRecvError::Disconnected) => {
                            self.commit();
                            return;
                        }
                    }
                }
            }
            self.commit();
            let now = Instant::now();
            if now >= next_prune {
                self.prune();
                next_prune = now + self.opts.prune_every;
            }
        }
    }

    fn handle(&mut self, m: Msg) -> Flow {
        match m {
            Msg::Row(r) => {
                self.batch.push(*r);
                if self.batch.len() >= self.opts.batch_rows {
                    self.commit();
                }
            }
            Msg::Flush(ack) => {
                self.commit();
                let _ = ack.send(());
            }
            Msg::Prune(ack) => {
                self.commit();
                self.prune();
                let _ = ack.send(());
            }
            Msg::Stop(ack) => {
                self.commit();
                let _ = ack.send(());
                return Flow::Stop;
            }
        }
        Flow::Go
    }

    fn commit(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let n = self.batch.len() as u64;
        self.geos.clear();
        if let Some(g) = &mut self.geo {
            g.refresh();
            for r in &self.batch {
                let facts = g.lookup_only(r.peer.ip());
                if self.opts.country_metrics {
                    self.metrics
                        .by_country(facts.country.as_deref(), r.held_secs);
                }
                self.geos.push(facts);
            }
        }
        match insert_batch_geo(&mut self.conn, &self.batch, &self.geos) {
            Ok(()) => {
                self.metrics.rows_written.inc_by(n);
                self.transactions.fetch_add(1, Ordering::Relaxed);
                self.since_cap += n;
                let every = (self.opts.max_rows / 16).max(super::BATCH_ROWS as u64);
                if self.opts.max_rows > 0 && self.since_cap >= every {
                    self.cap_rows();
                }
            }
            Err(e) => {
                self.metrics.write_errors.inc();
                self.metrics.rows_failed.inc_by(n);
                self.log_error("history write failed; rows lost", &e, n);
            }
        }
        self.batch.clear();
    }

    /// Applies the size cap (oldest rows first).
    fn cap_rows(&mut self) {
        self.since_cap = 0;
        if self.opts.max_rows == 0 {
            return;
        }
        match prune_rows(&mut self.conn, self.opts.max_rows) {
            Ok(n) => {
                self.metrics.rows_pruned.inc_by(n as u64);
                if n > 0 {
                    tracing::info!(
                        rows = n,
                        max_rows = self.opts.max_rows,
                        "history: pruned the oldest rows (size cap)"
                    );
                }
            }
            Err(e) => {
                self.metrics.write_errors.inc();
                self.log_error("history prune failed", &e, 0);
            }
        }
    }

    fn prune(&mut self) {
        self.cap_rows();
        let keep = Duration::from_secs(u64::from(self.opts.retention_days) * 86400);
        let cutoff = SystemTime::now()
            .checked_sub(keep)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        match prune(&mut self.conn, cutoff) {
            Ok(n) => {
                self.metrics.rows_pruned.inc_by(n as u64);
                if n > 0 {
                    tracing::info!(
                        rows = n,
                        days = self.opts.retention_days,
                        "history: pruned old rows"
                    );
                }
            }
            Err(e) => {
                self.metrics.write_errors.inc();
                self.log_error("history prune failed", &e, 0);
            }
        }
    }

    /// At most one line per 10 s, saying how many were suppressed.
    fn log_error(&mut self, what: &str, e: &rusqlite::Error, rows: u64) {
        let now = Instant::now();
        match self.last_err_log {
            Some(t) if now.duration_since(t) < Duration::from_secs(10) => self.suppressed += 1,
            _ => {
                tracing::error!(
                    path = %self.opts.path.display(),
                    error = %e,
                    rows,
                    suppressed = self.suppressed,
                    "{what}"
                );
                self.last_err_log = Some(now);
                self.suppressed = 0;
            }
        }
    }
}
