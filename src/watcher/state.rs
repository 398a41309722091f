//! The watcher's memory: bans, hits inside the window, and how far each log
//! has been read, in one SQLite file (WAL, so `tarpit bans` reads while the
//! watcher writes).
//!
//! The database, not nftables, is the truth: the sets are rebuilt from it
//! after a restart or a flushed ruleset. A log's read position is written in
//! the same transaction as the hits its lines produced, so a crash between
//! two batches replays nothing and loses nothing.

use super::host::Target;
use super::window::Rules;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Default location of the state file.
pub const DEFAULT_STATE_DB: &str = "/var/lib/tarpit/state.db";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state database {path}: {source}")]
    Sql {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("state database {path}: cannot create its directory: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Milliseconds since the epoch (the unit of every stored time).
pub fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One ban as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanRow {
    pub host: Target,
    pub jail: String,
    pub banned_at: i64,
    pub expires_at: i64,
    /// How many times this host has been banned (all jails, ever).
    pub offences: u32,
}

impl BanRow {
    /// Time left at `now_ms` (zero when over).
    pub fn remaining(&self, now_ms: i64) -> Duration {
        Duration::from_millis((self.expires_at - now_ms).max(0) as u64)
    }
}

/// How far a log file has been read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub inode: u64,
    pub dev: u64,
    /// Byte offset just after the last complete line handled.
    pub offset: u64,
    /// Hash of the file's first line (empty until it has one).
    pub fingerprint: String,
}

/// What a hit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HitOutcome {
    /// Counted; the window is not full yet (`count` hits in it).
    Counted(usize),
    /// The window filled: the host is banned.
    Banned(BanRow),
    /// The host is banned already; the hit is not counted.
    AlreadyBanned,
    /// Older than `findtime`: can never fill a window.
    TooOld,
}

pub struct State {
    conn: Connection,
    path: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS bans (
    host       TEXT PRIMARY KEY,
    jail       TEXT NOT NULL,
    banned_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    offences   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS bans_expires ON bans(expires_at);
CREATE TABLE IF NOT EXISTS hits (
    jail TEXT NOT NULL,
    host TEXT NOT NULL,
    at   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS hits_jail_host ON hits(jail, host, at);
CREATE TABLE IF NOT EXISTS positions (
    path        TEXT PRIMARY KEY,
    inode       INTEGER NOT NULL,
    dev         INTEGER NOT NULL,
    offset      INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    updated     INTEGER NOT NULL
);
";

impl State {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<State, StateError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StateError::Dir {
                path: path.to_path_buf(),
                source,
            })?;
        }
        let err = |source| StateError::Sql {
            path: path.to_path_buf(),
            source,
        };
        // NOFOLLOW: the watcher runs as root; a symlink planted at the
        // path must not make it create or write another file.
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
                | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
                | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
                | rusqlite::OpenFlags::SQLITE_OPEN_NOFOLLOW,
        )
        .map_err(err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(State {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// A throw-away database (for `watch --dry-run`: nothing is persisted,
    /// so a later real run reads the same lines again).
    pub fn open_in_memory() -> Result<State, StateError> {
        let path = PathBuf::from(":memory:");
        let err = |source| StateError::Sql {
            path: path.clone(),
            source,
        };
        let conn = Connection::open_in_memory().map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(State { conn, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, source: rusqlite::Error) -> StateError {
        StateError::Sql {
            path: self.path.clone(),
            source,
        }
    }

    /// Starts a transaction; nothing is visible to others until `commit`.
    pub fn begin(&mut self) -> Result<Batch<'_>, StateError> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|source| StateError::Sql {
                path: path.clone(),
                source,
            })?;
        Ok(Batch { tx, path })
    }

    /// Bans still running at `now_ms`, soonest expiry first.
    pub fn active_bans(&self, now_ms: i64) -> Result<Vec<BanRow>, StateError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT host, jail, banned_at, expires_at, offences FROM bans
                 WHERE expires_at > ?1 ORDER BY expires_at",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([now_ms], row_to_ban)
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for r in rows {
            if let Some(b) = r.map_err(|e| self.err(e))? {
                out.push(b);
            }
        }
        Ok(out)
    }

    /// The stored row for `host`, active or not.
    pub fn ban_of(&self, host: &Target) -> Result<Option<BanRow>, StateError> {
        self.conn
            .query_row(
                "SELECT host, jail, banned_at, expires_at, offences FROM bans WHERE host = ?1",
                [host.to_string()],
                row_to_ban,
            )
            .optional()
            .map(Option::flatten)
            .map_err(|e| self.err(e))
    }

    pub fn position(&self, path: &Path) -> Result<Option<Position>, StateError> {
        self.conn
            .query_row(
                "SELECT inode, dev, offset, fingerprint FROM positions WHERE path = ?1",
                [path.to_string_lossy()],
                |r| {
                    Ok(Position {
                        inode: r.get::<_, i64>(0)? as u64,
                        dev: r.get::<_, i64>(1)? as u64,
                        offset: r.get::<_, i64>(2)? as u64,
                        fingerprint: r.get(3)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Hits currently stored for (`jail`, `host`), in ms.
    pub fn hits(&self, jail: &str, host: &Target) -> Result<Vec<i64>, StateError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT at FROM hits WHERE jail = ?1 AND host = ?2 ORDER BY at")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![jail, host.to_string()], |r| r.get::<_, i64>(0))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Bans `host` (manually or from a window) for `dur` from `now_ms`;
    /// returns the stored row.
    pub fn ban(
        &mut self,
        host: &Target,
        jail: &str,
        dur: Duration,
        now_ms: i64,
    ) -> Result<BanRow, StateError> {
        let mut b = self.begin()?;
        let row = b.ban(host, jail, dur, now_ms)?;
        b.commit()?;
        Ok(row)
    }

    /// Ends `host`'s ban now and forgets its hits; keeps its offence count.
    /// Returns whether a ban was running.
    pub fn unban(&mut self, host: &Target, now_ms: i64) -> Result<bool, StateError> {
        let b = self.begin()?;
        let key = host.to_string();
        let n =
            b.tx.execute(
                "UPDATE bans SET expires_at = ?2 WHERE host = ?1 AND expires_at > ?2",
                params![key, now_ms],
            )
            .map_err(|e| b.err(e))?;
        b.tx.execute("DELETE FROM hits WHERE host = ?1", [&key])
            .map_err(|e| b.err(e))?;
        b.commit()?;
        Ok(n > 0)
    }

    /// Forgets hits older than `horizon_ms` in every jail (housekeeping).
    pub fn prune_hits(&self, jail: &str, horizon_ms: i64) -> Result<usize, StateError> {
        self.conn
            .execute(
                "DELETE FROM hits WHERE jail = ?1 AND at < ?2",
                params![jail, horizon_ms],
            )
            .map_err(|e| self.err(e))
    }

    /// Forgets bans that ended before `ended_before_ms` (housekeeping), so a
    /// flood of one-off hosts does not grow the file for ever. Their
    /// offence counts go with them: a host back after that starts afresh.
    pub fn prune_bans(&self, ended_before_ms: i64) -> Result<usize, StateError> {
        self.conn
            .execute(
                "DELETE FROM bans WHERE expires_at < ?1",
                params![ended_before_ms],
            )
            .map_err(|e| self.err(e))
    }
}

/// How long an ended ban is remembered (for its offence count, which
/// lengthens the next ban under `bantime_factor`, and `tarpit bans`).
pub const BAN_MEMORY: Duration = Duration::from_secs(30 * 86400);

fn row_to_ban(r: &rusqlite::Row) -> rusqlite::Result<Option<BanRow>> {
    let host: String = r.get(0)?;
    // A row we cannot parse (hand-edited file) is skipped, not fatal.
    let Ok(host) = host.parse::<Target>() else {
        return Ok(None);
    };
    Ok(Some(BanRow {
        host,
        jail: r.get(1)?,
        banned_at: r.get(2)?,
        expires_at: r.get(3)?,
        offences: r.get::<_, i64>(4)?.clamp(0, i64::from(u32::MAX)) as u32,
    }))
}

/// One transaction: the hits of a batch of lines and the position after them.
pub struct Batch<'a> {
    tx: Transaction<'a>,
    path: PathBuf,
}

impl Batch<'_> {
    fn err(&self, source: rusqlite::Error) -> StateError {
        StateError::Sql {
            path: self.path.clone(),
            source,
        }
    }

    fn active_ban(&self, key: &str, now_ms: i64) -> Result<bool, StateError> {
        self.tx
            .query_row(
                "SELECT 1 FROM bans WHERE host = ?1 AND expires_at > ?2",
                params![key, now_ms],
                |_| Ok(()),
            )
            .optional()
            .map(|o| o.is_some())
            .map_err(|e| self.err(e))
    }

    /// Counts a hit by `host` at `at_ms` in `jail`; bans when the window
    /// fills (and forgets the hits that filled it, as fail2ban does).
    pub fn record_hit(
        &mut self,
        jail: &str,
        rules: &Rules,
        host: &Target,
        at_ms: i64,
        now_ms: i64,
    ) -> Result<HitOutcome, StateError> {
        let horizon = rules.horizon(now_ms);
        if at_ms < horizon {
            return Ok(HitOutcome::TooOld);
        }
        let key = host.to_string();
        if self.active_ban(&key, now_ms)? {
            return Ok(HitOutcome::AlreadyBanned);
        }
        self.tx
            .execute(
                "DELETE FROM hits WHERE jail = ?1 AND host = ?2 AND at < ?3",
                params![jail, key, horizon],
            )
            .map_err(|e| self.err(e))?;
        self.tx
            .execute(
                "INSERT INTO hits (jail, host, at) VALUES (?1, ?2, ?3)",
                params![jail, key, at_ms],
            )
            .map_err(|e| self.err(e))?;
        let hits: Vec<i64> = {
            let mut st = self
                .tx
                .prepare_cached("SELECT at FROM hits WHERE jail = ?1 AND host = ?2")
                .map_err(|e| self.err(e))?;
            let rows = st
                .query_map(params![jail, key], |r| r.get::<_, i64>(0))
                .map_err(|e| self.err(e))?;
            rows.collect::<Result<_, _>>().map_err(|e| self.err(e))?
        };
        if !rules.window_full(&hits) {
            return Ok(HitOutcome::Counted(hits.len()));
        }
        self.tx
            .execute(
                "DELETE FROM hits WHERE jail = ?1 AND host = ?2",
                params![jail, key],
            )
            .map_err(|e| self.err(e))?;
        let prev: u32 = self
            .tx
            .query_row("SELECT offences FROM bans WHERE host = ?1", [&key], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
            .map_err(|e| self.err(e))?
            .unwrap_or(0)
            .clamp(0, i64::from(u32::MAX)) as u32;
        let dur = rules.ban_duration(prev.saturating_add(1));
        self.ban(host, jail, dur, now_ms).map(HitOutcome::Banned)
    }

    /// Records a ban of `host` for `dur` from `now_ms`, one more offence.
    /// A running longer ban is kept as long.
    pub fn ban(
        &mut self,
        host: &Target,
        jail: &str,
        dur: Duration,
        now_ms: i64,
    ) -> Result<BanRow, StateError> {
        let key = host.to_string();
        let expires = now_ms.saturating_add(dur.as_millis().min(i64::MAX as u128) as i64);
        self.tx
            .execute(
                "INSERT INTO bans (host, jail, banned_at, expires_at, offences)
                 VALUES (?1, ?2, ?3, ?4, 1)
                 ON CONFLICT(host) DO UPDATE SET
                    jail = excluded.jail,
                    banned_at = excluded.banned_at,
                    expires_at = MAX(excluded.expires_at,
                        CASE WHEN bans.expires_at > excluded.banned_at THEN bans.expires_at ELSE 0 END),
                    offences = bans.offences + 1",
                params![key, jail, now_ms, expires],
            )
            .map_err(|e| self.err(e))?;
        self.tx
            .query_row(
                "SELECT host, jail, banned_at, expires_at, offences FROM bans WHERE host = ?1",
                [&key],
                row_to_ban,
            )
            .map_err(|e| self.err(e))?
            // We just wrote `host.to_string()`, which always parses back.
            .ok_or_else(|| self.err(rusqlite::Error::QueryReturnedNoRows))
    }

    /// Stores how far `path` has been read.
    pub fn set_position(
        &mut self,
        path: &Path,
        pos: &Position,
        now_ms: i64,
    ) -> Result<(), StateError> {
        self.tx
            .execute(
                "INSERT INTO positions (path, inode, dev, offset, fingerprint, updated)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(path) DO UPDATE SET inode = excluded.inode, dev = excluded.dev,
                    offset = excluded.offset, fingerprint = excluded.fingerprint,
                    updated = excluded.updated",
                params![
                    path.to_string_lossy(),
                    pos.inode as i64,
                    pos.dev as i64,
                    pos.offset as i64,
                    pos.fingerprint,
                    now_ms
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn commit(self) -> Result<(), StateError> {
        let path = self.path;
        self.tx
            .commit()
            .map_err(|source| StateError::Sql { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    fn tmpdb(tag: &str) -> (State, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "tarpit-state-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let p = dir.join("sub").join("state.db");
        (State::open(&p).unwrap(), dir)
    }

    fn host(s: &str) -> Target {
        s.parse().unwrap()
    }

    fn rules() -> Rules {
        Rules {
            maxretry: 3,
            findtime: Duration::from_secs(86400),
            bantime: Duration::from_secs(3600),
            bantime_factor: 2.0,
            bantime_maxtime: Some(Duration::from_secs(3 * 3600)),
        }
    }

    #[test]
    fn three_hits_in_a_window_ban_and_reset() {
        let (mut s, dir) = tmpdb("win");
        let h = host("192.0.2.1");
        let now = 1000 * H;
        let mut b = s.begin().unwrap();
        assert_eq!(
            b.record_hit("j", &rules(), &h, now - 20 * H, now).unwrap(),
            HitOutcome::Counted(1)
        );
        assert_eq!(
            b.record_hit("j", &rules(), &h, now - 10 * H, now).unwrap(),
            HitOutcome::Counted(2)
        );
        let HitOutcome::Banned(row) = b.record_hit("j", &rules(), &h, now, now).unwrap() else {
            panic!("no ban")
        };
        b.commit().unwrap();
        assert_eq!(row.offences, 1);
        assert_eq!(row.expires_at - row.banned_at, H);
        assert!(s.hits("j", &h).unwrap().is_empty());
        assert_eq!(s.active_bans(now).unwrap(), vec![row.clone()]);
        // While banned, more hits are not counted.
        let mut b = s.begin().unwrap();
        assert_eq!(
            b.record_hit("j", &rules(), &h, now + 1, now + 1).unwrap(),
            HitOutcome::AlreadyBanned
        );
        b.commit().unwrap();
        // After it ends, a second ban is twice as long, the third capped.
        let later = row.expires_at + 1;
        let mut b = s.begin().unwrap();
        for i in 0..3 {
            let _ = b
                .record_hit("j", &rules(), &h, later + i, later + i)
                .unwrap();
        }
        b.commit().unwrap();
        let r2 = s.ban_of(&h).unwrap().unwrap();
        assert_eq!((r2.offences, r2.expires_at - r2.banned_at), (2, 2 * H));
        let later = r2.expires_at + 1;
        let mut b = s.begin().unwrap();
        for i in 0..3 {
            let _ = b
                .record_hit("j", &rules(), &h, later + i, later + i)
                .unwrap();
        }
        b.commit().unwrap();
        let r3 = s.ban_of(&h).unwrap().unwrap();
        assert_eq!((r3.offences, r3.expires_at - r3.banned_at), (3, 3 * H));
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn old_hits_do_not_count_and_jails_are_separate() {
        let (mut s, dir) = tmpdb("old");
        let h = host("192.0.2.2");
        let now = 1000 * H;
        let mut b = s.begin().unwrap();
        assert_eq!(
            b.record_hit("j", &rules(), &h, now - 25 * H, now).unwrap(),
            HitOutcome::TooOld
        );
        assert_eq!(
            b.record_hit("j", &rules(), &h, now - 2 * H, now).unwrap(),
            HitOutcome::Counted(1)
        );
        assert_eq!(
            b.record_hit("k", &rules(), &h, now - 2 * H, now).unwrap(),
            HitOutcome::Counted(1)
        );
        assert_eq!(
            b.record_hit("j", &rules(), &h, now - H, now).unwrap(),
            HitOutcome::Counted(2)
        );
        b.commit().unwrap();
        // A day later the first two have slid out.
        let mut b = s.begin().unwrap();
        assert_eq!(
            b.record_hit("j", &rules(), &h, now + 23 * H, now + 23 * H)
                .unwrap(),
            HitOutcome::Counted(2)
        );
        b.commit().unwrap();
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn uncommitted_batch_leaves_nothing_and_positions_persist() {
        let (mut s, dir) = tmpdb("tx");
        let h = host("192.0.2.3");
        let p = Path::new("/var/log/x.log");
        let pos = Position {
            inode: 7,
            dev: 8,
            offset: 1234,
            fingerprint: "abc".into(),
        };
        {
            let mut b = s.begin().unwrap();
            b.record_hit("j", &rules(), &h, 5 * H, 5 * H).unwrap();
            b.set_position(p, &pos, 5 * H).unwrap();
            // dropped without commit: rolled back
        }
        assert!(s.hits("j", &h).unwrap().is_empty());
        assert_eq!(s.position(p).unwrap(), None);
        let mut b = s.begin().unwrap();
        b.record_hit("j", &rules(), &h, 5 * H, 5 * H).unwrap();
        b.set_position(p, &pos, 5 * H).unwrap();
        b.commit().unwrap();
        let db = s.path().to_path_buf();
        drop(s);
        let s = State::open(&db).unwrap();
        assert_eq!(s.hits("j", &h).unwrap(), vec![5 * H]);
        assert_eq!(s.position(p).unwrap(), Some(pos));
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn prune_forgets_hits_outside_the_window() {
        let (mut s, dir) = tmpdb("prune");
        let (a, b) = (host("192.0.2.4"), host("192.0.2.5"));
        let mut tx = s.begin().unwrap();
        tx.record_hit("j", &rules(), &a, 10 * H, 10 * H).unwrap();
        tx.record_hit("j", &rules(), &b, 30 * H, 30 * H).unwrap();
        tx.commit().unwrap();
        assert_eq!(s.prune_hits("j", rules().horizon(40 * H)).unwrap(), 1);
        assert!(s.hits("j", &a).unwrap().is_empty());
        assert_eq!(s.hits("j", &b).unwrap(), vec![30 * H]);
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn prune_forgets_bans_ended_long_ago_and_keeps_the_rest() {
        let (mut s, dir) = tmpdb("prunebans");
        let (a, b, c) = (host("192.0.2.4"), host("192.0.2.5"), host("2001:db8::/64"));
        let hour = Duration::from_secs(3600);
        let mut tx = s.begin().unwrap();
        tx.ban(&a, "j", hour, 0).unwrap(); // ended at 1 H
        tx.ban(&b, "j", hour, 10 * H).unwrap(); // ended at 11 H
        tx.ban(&c, "j", 100 * hour, 0).unwrap(); // runs until 100 H
        tx.commit().unwrap();
        assert_eq!(s.prune_bans(5 * H).unwrap(), 1);
        assert_eq!(s.ban_of(&a).unwrap(), None);
        assert_eq!(s.ban_of(&b).unwrap().unwrap().offences, 1);
        assert_eq!(s.active_bans(50 * H).unwrap().len(), 1);
        assert_eq!(s.prune_bans(50 * H).unwrap(), 1);
        assert!(
            s.ban_of(&c).unwrap().is_some(),
            "a running ban is never pruned"
        );
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn manual_ban_unban_and_remaining() {
        let (mut s, dir) = tmpdb("man");
        let h = host("2001:db8:1:2::/64");
        let now = 100 * H;
        let row = s.ban(&h, "manual", Duration::from_secs(7200), now).unwrap();
        assert_eq!(row.remaining(now + H), Duration::from_secs(3600));
        // A shorter ban does not cut a longer running one.
        let row2 = s
            .ban(&h, "other", Duration::from_secs(60), now + 1)
            .unwrap();
        assert_eq!(row2.expires_at, row.expires_at);
        assert_eq!(row2.offences, 2);
        assert!(s.unban(&h, now + 2).unwrap());
        assert!(s.active_bans(now + 2).unwrap().is_empty());
        assert!(!s.unban(&h, now + 3).unwrap());
        assert_eq!(s.ban_of(&h).unwrap().unwrap().offences, 2);
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_symlinked_database_is_refused() {
        let dir = std::env::temp_dir().join(format!("tarpit-state-ln-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, "").unwrap();
        let p = dir.join("state.db");
        std::os::unix::fs::symlink(&victim, &p).unwrap();
        assert!(State::open(&p).is_err());
        assert_eq!(std::fs::metadata(&victim).unwrap().len(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
