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
//!
//! [`schema`] owns the tables and opening a file; [`store`] owns every SQL
//! statement on them (writes, pruning, and the queries `tarpit report`
//! runs); [`writer`] is the thread that feeds the store off the engine's
//! path.

pub mod schema;
pub mod store;
pub mod writer;

pub use schema::{open_for_reading, open_for_writing};
pub use store::{id_range, insert_batch, insert_batch_geo, prune, prune_rows};
pub use writer::{History, HistoryOptions};

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default database path.
pub const DEFAULT_PATH: &str = "/var/lib/tarpit/history.db";
/// Most rows per transaction.
pub const BATCH_ROWS: usize = 1000;
/// Longest a row waits for its transaction.
pub const BATCH_WAIT: Duration = Duration::from_secs(1);
/// Default size cap of the history, rows (about 150 bytes each on disk:
/// ~750 MB). A flood of 1,000 connections a second reaches it in ~1.4 h,
/// well inside the 90 days of age retention; the oldest rows go first.
pub const DEFAULT_MAX_ROWS: u64 = 5_000_000;
/// Rows queued for the writer before new ones are dropped. A burst of
/// releases (shutdown of a full server) fits.
pub const QUEUE_ROWS: usize = 32 * 1024;

/// Why the history cannot be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history database {path}: directory {dir} does not exist (create it, or pass --history PATH / --history off)")]
    NoDir { path: PathBuf, dir: PathBuf },
    #[error("history database {path}: {message}")]
    Db { path: PathBuf, message: String },
    #[error("history database {path} does not exist")]
    Missing { path: PathBuf },
    #[error(transparent)]
    GeoIp(#[from] crate::geoip::GeoIpError),
}

fn db_err(path: &Path, what: &str, e: impl std::fmt::Display) -> HistoryError {
    HistoryError::Db {
        path: path.to_path_buf(),
        message: format!("{what}: {e}"),
    }
}
