//! The history database: every ended connection becomes one SQLite row.
//!
//! The engine must never wait on the disk, so [`History`] (an [`Observer`])
//! only does a `try_send` into a bounded channel; a writer thread drains it
//! and commits in batches (at most [`BATCH_ROWS`] rows or [`BATCH_WAIT`]
//! after the first row of a batch). When the channel is full the row is
//! counted as dropped and logged (rate-limited) — never blocking. A failed
//! transaction (disk full, I/O error) is logged and counted and the writer
//! carries on with the next batch. Retention prunes rows older than
//! `retention_days` at start and then hourly.

use super::metrics::HistoryMetrics;
use crate::engine::record::{to_unix, ConnRecord};
use crate::engine::Observer;
use rusqlite::{params, Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// Default database path.
pub const DEFAULT_PATH: &str = "/var/lib/tarpit/history.db";
/// Most rows per transaction.
pub const BATCH_ROWS: usize = 1000;
/// Longest a row waits for its transaction.
pub const BATCH_WAIT: Duration = Duration::from_secs(1);
/// Rows queued for the writer before new ones are dropped. A burst of
/// releases (shutdown of a full server) fits.
pub const QUEUE_ROWS: usize = 32 * 1024;

/// Schema version in `PRAGMA user_version`. 2: the `end_time` index gave
/// way to `blocks` (see [`SCHEMA`]); a version-1 file is migrated when
/// opened for writing and still read as it is.
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS connections (
    id             INTEGER PRIMARY KEY,
    start_time     REAL    NOT NULL,  -- unix seconds, accepted
    end_time       REAL    NOT NULL,  -- unix seconds, released
    held_secs      REAL    NOT NULL,
    listener       TEXT    NOT NULL,
    peer_ip        TEXT    NOT NULL,
    peer_port      INTEGER NOT NULL,
    local          TEXT    NOT NULL,
    orig_ip        TEXT    NOT NULL,
    orig_port      INTEGER NOT NULL,  -- the port the peer aimed at
    bytes_received INTEGER NOT NULL,
    fin_after_secs REAL,              -- NULL: the peer never tried to close
    end_reason     TEXT    NOT NULL,
    head           TEXT    NOT NULL
);
-- A block-range index: one row per written batch, the rowid range it took
-- and the span of its end times. Rows arrive roughly in end order, so a
-- time window maps to a narrow rowid range. It replaced an index on
-- end_time, whose per-row upkeep was a quarter of the writer's CPU.
CREATE TABLE IF NOT EXISTS blocks (
    first_id INTEGER NOT NULL,
    last_id  INTEGER NOT NULL,
    min_end  REAL    NOT NULL,
    max_end  REAL    NOT NULL
);
";

/// Version 1 to 2: drop the per-row index, cover the existing rows with one
/// block.
const MIGRATE_1_TO_2: &str = "
DROP INDEX IF EXISTS connections_end_time;
INSERT INTO blocks (first_id, last_id, min_end, max_end)
    SELECT min(id), max(id), min(end_time), max(end_time) FROM connections
    HAVING count(*) > 0;
";

/// Why the history cannot be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history database {path}: directory {dir} does not exist (create it, or pass --history PATH / --history off)")]
    NoDir { path: PathBuf, dir: PathBuf },
    #[error("history database {path}: {message}")]
    Db { path: PathBuf, message: String },
    #[error("history database {path} does not exist")]
    Missing { path: PathBuf },
}

fn db_err(path: &Path, what: &str, e: impl std::fmt::Display) -> HistoryError {
    HistoryError::Db {
        path: path.to_path_buf(),
        message: format!("{what}: {e}"),
    }
}

/// Opens (creating if needed) the database for writing and proves it is
/// writable and really a tarpit history, so every mistake shows at start.
pub fn open_for_writing(path: &Path) -> Result<Connection, HistoryError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(HistoryError::NoDir {
            path: path.to_path_buf(),
            dir,
        });
    }
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| {
        db_err(
            path,
            "cannot open or create (is its directory writable?)",
            e,
        )
    })?;
    c.busy_timeout(Duration::from_secs(5))
        .map_err(|e| db_err(path, "cannot configure", e))?;
    let mode: String = c
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(|e| db_err(path, "not a usable SQLite database", e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(path = %path.display(), mode, "history: WAL unavailable");
    }
    c.execute_batch("PRAGMA synchronous=NORMAL")
        .map_err(|e| db_err(path, "cannot configure", e))?;
    let version = check_schema(&c, path)?;
    let migrate = if version == 1 { MIGRATE_1_TO_2 } else { "" };
    // A real write, so a read-only directory or file fails now.
    c.execute_batch(&format!(
        "BEGIN IMMEDIATE; {SCHEMA} {migrate} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
    ))
    .map_err(|e| db_err(path, "cannot write", e))?;
    Ok(c)
}

/// Opens an existing database read-only (for `tarpit report`).
pub fn open_for_reading(path: &Path) -> Result<Connection, HistoryError> {
    match std::fs::metadata(path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(HistoryError::Missing {
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(db_err(path, "cannot read", e)),
    }
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| db_err(path, "cannot open", e))?;
    let _ = c.busy_timeout(Duration::from_secs(5));
    check_schema(&c, path)?;
    let has: i64 = c
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='connections'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| db_err(path, "not a usable SQLite database", e))?;
    if has == 0 {
        return Err(db_err(path, "not a tarpit history", "no connections table"));
    }
    Ok(c)
}

/// Checks the file is a history this tarpit understands; its version.
fn check_schema(c: &Connection, path: &Path) -> Result<i64, HistoryError> {
    let v: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| db_err(path, "not a usable SQLite database", e))?;
    if v > SCHEMA_VERSION {
        return Err(db_err(
            path,
            "unsupported schema",
            format!("version {v} is newer than this tarpit ({SCHEMA_VERSION})"),
        ));
    }
    let tables: i64 = c
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type='table' AND name <> 'connections'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| db_err(path, "not a usable SQLite database", e))?;
    if v == 0 && tables > 0 {
        return Err(db_err(
            path,
            "not a tarpit history",
            "it holds other tables; refusing to write into it",
        ));
    }
    Ok(v)
}

/// The rowid range holding every row that ended in `[since, until]`, from
/// the block index; `(1, 0)` (empty) if no block overlaps. A version-1 file
/// (read-only, not migrated) has no blocks: the whole table.
pub fn id_range(c: &Connection, since: f64, until: f64) -> rusqlite::Result<(i64, i64)> {
    let has_blocks: i64 = c.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='blocks'",
        [],
        |r| r.get(0),
    )?;
    if has_blocks == 0 {
        return Ok((i64::MIN, i64::MAX));
    }
    let (lo, hi): (Option<i64>, Option<i64>) = c.query_row(
        "SELECT min(first_id), max(last_id) FROM blocks WHERE max_end >= ?1 AND min_end <= ?2",
        params![since, until],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok((lo.unwrap_or(1), hi.unwrap_or(0)))
}

/// Rows per multi-row `INSERT` statement: one statement execution per
/// chunk instead of per row roughly halves SQLite's per-row cost.
const ROWS_PER_STATEMENT: usize = 50;
const COLUMNS: usize = 13;

fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO connections (start_time, end_time, held_secs, listener, peer_ip, peer_port,
            local, orig_ip, orig_port, bytes_received, fin_after_secs, end_reason, head) VALUES ",
    );
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push('(');
        for j in 0..COLUMNS {
            if j > 0 {
                sql.push(',');
            }
            sql.push('?');
        }
        sql.push(')');
    }
    sql
}

/// Formats addresses for binding without a heap allocation per column:
/// the writer binds three address texts per row, and `to_string()` for each
/// was a noticeable share of its per-row cost. The buffer is reused (it
/// grows once); IPv4, the common case, gets a direct digit writer, IPv6
/// goes through `Display`, which writes exactly the same text.
#[derive(Default)]
struct AddrText(String);

impl AddrText {
    fn push_u16(&mut self, v: u16) {
        let mut d = [0u8; 5];
        let mut i = d.len();
        let mut v = v;
        loop {
            i -= 1;
            d[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        for &c in &d[i..] {
            self.0.push(char::from(c));
        }
    }

    fn ip(&mut self, ip: std::net::IpAddr) -> &str {
        self.0.clear();
        self.push_ip(ip);
        &self.0
    }

    /// `ip:port`, or `[ip6]:port`, exactly as `SocketAddr`'s `Display`.
    fn sock(&mut self, a: &std::net::SocketAddr) -> &str {
        self.0.clear();
        match a {
            std::net::SocketAddr::V4(v) => {
                self.push_ip((*v.ip()).into());
                self.0.push(':');
                self.push_u16(a.port());
            }
            std::net::SocketAddr::V6(_) => {
                let _ = std::fmt::Write::write_fmt(&mut self.0, format_args!("{a}"));
            }
        }
        &self.0
    }

    fn push_ip(&mut self, ip: std::net::IpAddr) {
        match ip {
            std::net::IpAddr::V4(v) => {
                let [a, b, c, d] = v.octets();
                self.push_u16(u16::from(a));
                self.0.push('.');
                self.push_u16(u16::from(b));
                self.0.push('.');
                self.push_u16(u16::from(c));
                self.0.push('.');
                self.push_u16(u16::from(d));
            }
            std::net::IpAddr::V6(v) => {
                let _ = std::fmt::Write::write_fmt(&mut self.0, format_args!("{v}"));
            }
        }
    }
}

/// Scratch buffers of one row's address texts.
#[derive(Default)]
struct RowText {
    peer_ip: AddrText,
    local: AddrText,
    orig_ip: AddrText,
}

fn bind_row(
    st: &mut rusqlite::CachedStatement<'_>,
    first: usize,
    r: &ConnRecord,
    t: &mut RowText,
) -> rusqlite::Result<()> {
    let start = to_unix(r.start);
    let i = first * COLUMNS;
    st.raw_bind_parameter(i + 1, start)?;
    st.raw_bind_parameter(i + 2, start + r.held_secs)?;
    st.raw_bind_parameter(i + 3, r.held_secs)?;
    st.raw_bind_parameter(i + 4, r.listener.as_str())?;
    st.raw_bind_parameter(i + 5, t.peer_ip.ip(r.peer.ip()))?;
    st.raw_bind_parameter(i + 6, r.peer.port())?;
    st.raw_bind_parameter(i + 7, t.local.sock(&r.local))?;
    st.raw_bind_parameter(i + 8, t.orig_ip.ip(r.original_dst.ip()))?;
    st.raw_bind_parameter(i + 9, r.original_dst.port())?;
    st.raw_bind_parameter(i + 10, i64::try_from(r.bytes_received).unwrap_or(i64::MAX))?;
    st.raw_bind_parameter(i + 11, r.fin_after_secs)?;
    st.raw_bind_parameter(i + 12, r.end.as_str())?;
    st.raw_bind_parameter(i + 13, r.head.as_str())?;
    Ok(())
}

/// Inserts rows in one transaction, with their block (see [`SCHEMA`]).
pub fn insert_batch(c: &mut Connection, rows: &[ConnRecord]) -> rusqlite::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let tx = c.transaction()?;
    let before: i64 = tx.query_row("SELECT coalesce(max(id), 0) FROM connections", [], |r| {
        r.get(0)
    })?;
    let mut text = RowText::default();
    {
        let mut chunks = rows.chunks_exact(ROWS_PER_STATEMENT);
        let mut many = tx.prepare_cached(&insert_sql(ROWS_PER_STATEMENT))?;
        for chunk in &mut chunks {
            for (k, r) in chunk.iter().enumerate() {
                bind_row(&mut many, k, r, &mut text)?;
            }
            many.raw_execute()?;
        }
        let mut one = tx.prepare_cached(&insert_sql(1))?;
        for r in chunks.remainder() {
            bind_row(&mut one, 0, r, &mut text)?;
            one.raw_execute()?;
        }
    }
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for r in rows {
        let end = to_unix(r.start) + r.held_secs;
        lo = lo.min(end);
        hi = hi.max(end);
    }
    tx.prepare_cached(
        "INSERT INTO blocks (first_id, last_id, min_end, max_end) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![before + 1, tx.last_insert_rowid(), lo, hi])?;
    tx.commit()
}

/// Deletes rows that ended before `cutoff`; returns how many. Only the
/// rowids up to the last block holding such rows are scanned.
pub fn prune(c: &mut Connection, cutoff: SystemTime) -> rusqlite::Result<usize> {
    let cutoff = to_unix(cutoff);
    let tx = c.transaction()?;
    let n = tx.execute(
        "DELETE FROM connections WHERE end_time < ?1
           AND id <= (SELECT coalesce(max(last_id), 0) FROM blocks WHERE min_end < ?1)",
        params![cutoff],
    )?;
    tx.execute("DELETE FROM blocks WHERE max_end < ?1", params![cutoff])?;
    tx.commit()?;
    Ok(n)
}

/// Tunables; the defaults are what `tarpit serve` uses.
#[derive(Debug, Clone)]
pub struct HistoryOptions {
    pub path: PathBuf,
    pub retention_days: u32,
    pub queue_rows: usize,
    pub batch_rows: usize,
    pub batch_wait: Duration,
    pub prune_every: Duration,
}

impl HistoryOptions {
    pub fn new(path: PathBuf, retention_days: u32) -> Self {
        HistoryOptions {
            path,
            retention_days,
            queue_rows: QUEUE_ROWS,
            batch_rows: BATCH_ROWS,
            batch_wait: BATCH_WAIT,
            prune_every: Duration::from_secs(3600),
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
    thread: Mutex<Option<JoinHandle<()>>>,
    path: PathBuf,
}

impl History {
    /// Opens the database (errors here are errors at start), prunes once, and
    /// starts the writer thread.
    ///
    /// The writer thread first moves onto a private fd table
    /// ([`crate::sys::fdtable`]): sharing one with the engine made every fd
    /// syscall of the engine slower, which cost more CPU than all the
    /// SQLite work. It keeps only the database's own descriptors.
    pub fn start(opts: HistoryOptions, metrics: HistoryMetrics) -> Result<Arc<Self>, HistoryError> {
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
            last_err_log: None,
            suppressed: 0,
        };
        w.prune();
        let thread = std::thread::Builder::new()
            .name("tarpit-history".into())
            .spawn(move || {
                if let Err(e) = crate::sys::fdtable::private_fd_table(&keep) {
                    tracing::warn!(error = %e, "history writer shares the engine's fd table");
                }
                w.run(rx)
            })
            .map_err(|e| db_err(&opts.path, "cannot start writer thread", e))?;
        Ok(Arc::new(History {
            tx,
            metrics,
            transactions,
            last_drop_log: AtomicU64::new(0),
            thread: Mutex::new(Some(thread)),
            path: opts.path,
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues one record without ever waiting.
    pub fn record(&self, r: &ConnRecord) {
        match self.tx.try_send(Msg::Row(Box::new(r.clone()))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
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
        }
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
    last_err_log: Option<Instant>,
    suppressed: u64,
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
        match insert_batch(&mut self.conn, &self.batch) {
            Ok(()) => {
                self.metrics.rows_written.inc_by(n);
                self.transactions.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.metrics.write_errors.inc();
                self.metrics.rows_failed.inc_by(n);
                self.log_error("history write failed; rows lost", &e, n);
            }
        }
        self.batch.clear();
    }

    fn prune(&mut self) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_texts_match_display() {
        let mut t = AddrText::default();
        for a in [
            "0.0.0.0:0",
            "127.0.0.1:2222",
            "255.255.255.255:65535",
            "10.77.3.40:9",
            "[::1]:22",
            "[fd77::1:2]:80",
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
            "[::ffff:1.2.3.4]:1",
            "[fe80::1%7]:443",
        ] {
            let a: std::net::SocketAddr = a.parse().unwrap();
            assert_eq!(t.sock(&a), a.to_string());
            assert_eq!(t.ip(a.ip()), a.ip().to_string());
        }
    }
}
