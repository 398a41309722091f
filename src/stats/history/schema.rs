//! The history's tables, their version, and opening a file for writing
//! (created and migrated) or reading (checked, never changed).

use super::{db_err, HistoryError};
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Schema version in `PRAGMA user_version`. 2: the `end_time` index gave
/// way to `blocks` (see [`SCHEMA`]); a version-1 file is migrated when
/// opened for writing and still read as it is.
/// 3: `country`, `asn`, `as_org` (GeoIP, NULL without it), added to older
/// files with `ALTER TABLE` when opened for writing.
/// 4: `engaged_secs` and `engaged_bound` (what the attacker lost, next
/// to `held_secs`, what it cost us).
/// 5: `estimated` (the stateless engine's flag: the row's start and
/// figures are lower bounds), added the same way.
/// 6: what the peer tried (`protocol`, `software` and the SSH/HTTP/TLS
/// fields of [`crate::classify::Identity`], escaped) and the `policy`
/// that held it; older rows get a protocol from their `head`.
/// 7: `syn_wait_secs` (seconds a syn_delay kept the client in SYN
/// retransmissions; part of `engaged_secs`), 0 in older rows (no delay was
/// counted then).
const SCHEMA_VERSION: i64 = 7;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS connections (
    id             INTEGER PRIMARY KEY,
    start_time     REAL    NOT NULL,  -- unix seconds, accepted
    end_time       REAL    NOT NULL,  -- unix seconds, released
    held_secs      REAL    NOT NULL,  -- what holding it cost us
    listener       TEXT    NOT NULL,
    peer_ip        TEXT    NOT NULL,
    peer_port      INTEGER NOT NULL,
    local          TEXT    NOT NULL,
    orig_ip        TEXT    NOT NULL,
    orig_port      INTEGER NOT NULL,  -- the port the peer aimed at
    bytes_received INTEGER NOT NULL,
    fin_after_secs REAL,              -- NULL: the peer never tried to close
    end_reason     TEXT    NOT NULL,
    head           TEXT    NOT NULL,
    country        TEXT,              -- ISO 3166-1 alpha-2 (GeoIP); NULL: unknown
    asn            INTEGER,
    as_org         TEXT,
    engaged_secs   REAL    NOT NULL DEFAULT 0,  -- the attacker was stuck (until its FIN/RST)
    engaged_bound  INTEGER NOT NULL DEFAULT 0,  -- 1: engaged_secs is an upper bound
    estimated      INTEGER NOT NULL DEFAULT 0,  -- 1: start and figures are lower bounds
    protocol       TEXT,              -- ssh, http, tls, other, silent (classify::Protocol)
    software       TEXT,              -- SSH softwareversion / HTTP User-Agent (escaped)
    ssh_version    TEXT,
    ssh_comments   TEXT,
    http_method    TEXT,
    http_path      TEXT,
    http_host      TEXT,
    tls_sni        TEXT,
    tls_alpn       TEXT,
    ja4            TEXT,
    policy         TEXT,              -- the policy that held it (engine::policy); NULL: before v6
    syn_wait_secs  REAL    NOT NULL DEFAULT 0   -- in SYN retransmissions before the accept (syn_delay); in engaged_secs
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
/// Versions 1 and 2 to 3: the GeoIP columns.
const MIGRATE_TO_3: &str = "
ALTER TABLE connections ADD COLUMN country TEXT;
ALTER TABLE connections ADD COLUMN asn INTEGER;
ALTER TABLE connections ADD COLUMN as_org TEXT;
";

/// Versions 1 to 4 to 5: the stateless engine's `estimated` flag.
const MIGRATE_4_TO_5: &str = "
ALTER TABLE connections ADD COLUMN estimated INTEGER NOT NULL DEFAULT 0;
";

/// Versions 1 to 5 to 6: what the peer tried, and the policy. Rows written
/// before kept only their first 48 bytes, escaped (`head`): that is enough
/// to tell the protocol (an SSH banner, a request line, a TLS handshake
/// record), not to fill the other fields, which stay NULL.
const MIGRATE_5_TO_6: &str = r"
ALTER TABLE connections ADD COLUMN protocol TEXT;
ALTER TABLE connections ADD COLUMN software TEXT;
ALTER TABLE connections ADD COLUMN ssh_version TEXT;
ALTER TABLE connections ADD COLUMN ssh_comments TEXT;
ALTER TABLE connections ADD COLUMN http_method TEXT;
ALTER TABLE connections ADD COLUMN http_path TEXT;
ALTER TABLE connections ADD COLUMN http_host TEXT;
ALTER TABLE connections ADD COLUMN tls_sni TEXT;
ALTER TABLE connections ADD COLUMN tls_alpn TEXT;
ALTER TABLE connections ADD COLUMN ja4 TEXT;
ALTER TABLE connections ADD COLUMN policy TEXT;
UPDATE connections SET protocol = CASE
    WHEN head = '' AND bytes_received = 0 THEN 'silent'
    WHEN head GLOB 'SSH-[0-9]*' THEN 'ssh'
    WHEN head GLOB '\x16\x03*' THEN 'tls'
    WHEN head GLOB '[A-Z]* /*' OR head GLOB '[A-Z]* [*]*' OR head GLOB '[A-Z]* http*' THEN 'http'
    ELSE 'other' END;
";

/// Versions 1 to 6 to 7: the handshake's wait (none was counted before).
const MIGRATE_6_TO_7: &str = "
ALTER TABLE connections ADD COLUMN syn_wait_secs REAL NOT NULL DEFAULT 0;
";

const MIGRATE_1_TO_2: &str = "
DROP INDEX IF EXISTS connections_end_time;
INSERT INTO blocks (first_id, last_id, min_end, max_end)
    SELECT min(id), max(id), min(end_time), max(end_time) FROM connections
    HAVING count(*) > 0;
";

/// Version 3 to 4: the engaged columns. Rows written before knew only the
/// FIN: a peer that sent one was stuck until then, otherwise for the whole
/// hold (the best figure available; new rows are exact or flagged).
const MIGRATE_3_TO_4: &str = "
ALTER TABLE connections ADD COLUMN engaged_secs REAL NOT NULL DEFAULT 0;
ALTER TABLE connections ADD COLUMN engaged_bound INTEGER NOT NULL DEFAULT 0;
UPDATE connections SET engaged_secs = min(held_secs, coalesce(fin_after_secs, held_secs));
";

/// SQL for the engaged time of a row in `c`'s schema: the column, or for a
/// file older than version 4 (read-only, not migrated) the figure the
/// migration would give.
pub fn engaged_expr(c: &Connection) -> rusqlite::Result<&'static str> {
    Ok(if has_column(c, "engaged_secs")? {
        "engaged_secs"
    } else {
        "min(held_secs, coalesce(fin_after_secs, held_secs))"
    })
}

/// SQL for "engaged is an upper bound" (0/1) in `c`'s schema.
pub fn engaged_bound_expr(c: &Connection) -> rusqlite::Result<&'static str> {
    Ok(if has_column(c, "engaged_bound")? {
        "engaged_bound"
    } else {
        "0"
    })
}

/// SQL for a row's protocol in `c`'s schema: the column (NULL there only
/// if written by hand), or for a file older than version 6 (read-only, not
/// migrated) what the migration would give.
pub fn protocol_expr(c: &Connection) -> rusqlite::Result<&'static str> {
    Ok(if has_column(c, "protocol")? {
        "coalesce(protocol, 'other')"
    } else {
        r"(CASE WHEN head = '' AND bytes_received = 0 THEN 'silent' WHEN head GLOB 'SSH-[0-9]*' THEN 'ssh'
            WHEN head GLOB '\x16\x03*' THEN 'tls'
            WHEN head GLOB '[A-Z]* /*' OR head GLOB '[A-Z]* [*]*' OR head GLOB '[A-Z]* http*' THEN 'http'
            ELSE 'other' END)"
    })
}

/// SQL for the policy that held a row (`engine::policy::Policy`'s
/// `Display`) in `c`'s schema. Rows without one (written before policies
/// existed, or a file older than version 6) were all held by the only
/// behaviour there was then: the silent trap.
pub fn policy_expr(c: &Connection) -> rusqlite::Result<&'static str> {
    Ok(if has_column(c, "policy")? {
        "coalesce(nullif(policy, ''), 'silent')"
    } else {
        "'silent'"
    })
}

/// True when the file has the classifier's columns (schema 6).
pub fn has_client(c: &Connection) -> rusqlite::Result<bool> {
    has_column(c, "software")
}

fn has_column(c: &Connection, name: &str) -> rusqlite::Result<bool> {
    let n: i64 = c.query_row(
        "SELECT count(*) FROM pragma_table_info('connections') WHERE name = ?1",
        [name],
        |r| r.get(0),
    )?;
    Ok(n > 0)
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
        // NOFOLLOW: we may run as root; a symlink planted at the path must
        // not make us create or write another file.
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW,
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
    let migrate = match version {
        1 => format!(
            "{MIGRATE_1_TO_2}{MIGRATE_TO_3}{MIGRATE_3_TO_4}{MIGRATE_4_TO_5}{MIGRATE_5_TO_6}{MIGRATE_6_TO_7}"
        ),
        2 => format!(
            "{MIGRATE_TO_3}{MIGRATE_3_TO_4}{MIGRATE_4_TO_5}{MIGRATE_5_TO_6}{MIGRATE_6_TO_7}"
        ),
        3 => format!("{MIGRATE_3_TO_4}{MIGRATE_4_TO_5}{MIGRATE_5_TO_6}{MIGRATE_6_TO_7}"),
        4 => format!("{MIGRATE_4_TO_5}{MIGRATE_5_TO_6}{MIGRATE_6_TO_7}"),
        5 => format!("{MIGRATE_5_TO_6}{MIGRATE_6_TO_7}"),
        6 => MIGRATE_6_TO_7.to_string(),
        _ => String::new(),
    };
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
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlinked_database_is_refused() {
        let dir = std::env::temp_dir().join(format!("tarpit-hist-ln-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, "").unwrap();
        let p = dir.join("history.db");
        std::os::unix::fs::symlink(&victim, &p).unwrap();
        assert!(open_for_writing(&p).is_err());
        assert!(open_for_reading(&p).is_err());
        assert_eq!(std::fs::metadata(&victim).unwrap().len(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
