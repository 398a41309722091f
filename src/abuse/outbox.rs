//! The outbox: report events and their delivery state in SQLite, so neither
//! a restart nor an outage of the other side loses one.
//!
//! * `rp_inbox` — events not yet sorted to destinations. The watcher's
//!   bans reach it through triggers on its `bans` table, in the ban's own
//!   transaction (a crash cannot lose one, `tarpit ban` from another
//!   process counts too); serve's worker inserts trapped hosts.
//! * `rp_outbox` — one row per (destination, event) still to deliver, with
//!   its tries and the earliest time of the next one.
//! * `rp_seen` / `rp_sent` — when a host last entered / was last delivered
//!   to a destination (once per host per `repeat_after`).
//! * `rp_dest` — a destination's pause and today's request count.
//!
//! Several processes may share the file: sorting is one transaction, and a
//! row is claimed (its `next_at` moved past the request's timeout) before
//! it is sent.

use super::policy::{admit, Admit, DestState, Event, EventKind};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::time::Duration;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS rp_inbox (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    kind     TEXT NOT NULL,
    host     TEXT NOT NULL,
    at       INTEGER NOT NULL,
    jail     TEXT,
    offences INTEGER,
    port     INTEGER,
    engaged  REAL,
    held     REAL,
    client   TEXT
);
CREATE TABLE IF NOT EXISTS rp_outbox (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    dest     TEXT NOT NULL,
    kind     TEXT NOT NULL,
    host     TEXT NOT NULL,
    at       INTEGER NOT NULL,
    jail     TEXT,
    offences INTEGER,
    port     INTEGER,
    engaged  REAL,
    held     REAL,
    client   TEXT,
    tries    INTEGER NOT NULL DEFAULT 0,
    next_at  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS rp_outbox_due ON rp_outbox(dest, next_at);
CREATE TABLE IF NOT EXISTS rp_seen (
    dest TEXT NOT NULL,
    host TEXT NOT NULL,
    at   INTEGER NOT NULL,
    PRIMARY KEY (dest, host)
);
CREATE TABLE IF NOT EXISTS rp_sent (
    dest TEXT NOT NULL,
    host TEXT NOT NULL,
    at   INTEGER NOT NULL,
    PRIMARY KEY (dest, host)
);
CREATE TABLE IF NOT EXISTS rp_dest (
    dest         TEXT PRIMARY KEY,
    paused_until INTEGER NOT NULL,
    day          INTEGER NOT NULL,
    used         INTEGER NOT NULL
);
";

/// The watcher's bans into the inbox (needs its `bans` table).
const BAN_TRIGGERS: &str = "
CREATE TRIGGER IF NOT EXISTS rp_ban_new AFTER INSERT ON bans BEGIN
    INSERT INTO rp_inbox (kind, host, at, jail, offences)
    VALUES ('ban', NEW.host, NEW.banned_at, NEW.jail, NEW.offences);
END;
CREATE TRIGGER IF NOT EXISTS rp_ban_again AFTER UPDATE OF banned_at ON bans
WHEN NEW.banned_at != OLD.banned_at BEGIN
    INSERT INTO rp_inbox (kind, host, at, jail, offences)
    VALUES ('ban', NEW.host, NEW.banned_at, NEW.jail, NEW.offences);
END;
";

/// Opens (creating) the outbox tables in the database at `path`.
/// A symbolic link is refused, as for the history.
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    use rusqlite::OpenFlags as F;
    let c = Connection::open_with_flags(
        path,
        F::SQLITE_OPEN_READ_WRITE
            | F::SQLITE_OPEN_CREATE
            | F::SQLITE_OPEN_NO_MUTEX
            | F::SQLITE_OPEN_NOFOLLOW,
    )?;
    c.busy_timeout(Duration::from_secs(10))?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "NORMAL")?;
    c.execute_batch(SCHEMA)?;
    Ok(c)
}

/// Bans queue events (on) or not (off; what is queued stays).
pub fn set_ban_triggers(c: &Connection, on: bool) -> rusqlite::Result<()> {
    if on {
        c.execute_batch(BAN_TRIGGERS)
    } else {
        c.execute_batch("DROP TRIGGER IF EXISTS rp_ban_new; DROP TRIGGER IF EXISTS rp_ban_again;")
    }
}

/// Drops the ban triggers from the state database at `path`, if it exists
/// (the watcher without `[report]`: bans no longer queue anything).
pub fn disable_ban_triggers(path: &Path) -> rusqlite::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let c = Connection::open(path)?;
    c.busy_timeout(Duration::from_secs(10))?;
    set_ban_triggers(&c, false)
}

/// Adds events to the inbox.
pub fn push_inbox(c: &mut Connection, evs: &[Event]) -> rusqlite::Result<()> {
    let tx = c.transaction()?;
    {
        let mut st = tx.prepare_cached(
            "INSERT INTO rp_inbox (kind, host, at, jail, offences, port, engaged, held, client)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        for e in evs {
            st.execute(params![
                e.kind.as_str(),
                e.host,
                e.at_ms,
                e.jail,
                e.offences,
                e.port,
                e.engaged_secs,
                e.held_secs,
                e.client
            ])?;
        }
    }
    tx.commit()
}

/// A destination as the sorter sees it.
#[derive(Debug, Clone)]
pub struct Rule {
    pub dest: String,
    pub ban: bool,
    pub trapped: bool,
    pub repeat_ms: i64,
    /// Most rows queued for it.
    pub cap: u64,
}

/// What one sorting pass did, per destination: (admitted, repeats, full).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sorted {
    pub events: usize,
    pub per_dest: Vec<(String, u64, u64, u64)>,
}

const EVENT_COLS: &str = "kind, host, at, jail, offences, port, engaged, held, client";

fn event_from(r: &rusqlite::Row, at: usize) -> rusqlite::Result<Option<Event>> {
    let kind: String = r.get(at)?;
    let Some(kind) = EventKind::parse(&kind) else {
        return Ok(None);
    };
    Ok(Some(Event {
        kind,
        host: r.get(at + 1)?,
        at_ms: r.get(at + 2)?,
        jail: r.get(at + 3)?,
        offences: r.get(at + 4)?,
        port: r.get(at + 5)?,
        engaged_secs: r.get(at + 6)?,
        held_secs: r.get(at + 7)?,
        client: r.get(at + 8)?,
    }))
}

/// Moves up to `limit` inbox events into the destinations' queues, once per
/// host per `repeat_ms` each, in one transaction.
pub fn sort(
    c: &mut Connection,
    rules: &[Rule],
    now: i64,
    limit: usize,
) -> rusqlite::Result<Sorted> {
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut out = Sorted {
        per_dest: rules.iter().map(|r| (r.dest.clone(), 0, 0, 0)).collect(),
        ..Default::default()
    };
    let rows: Vec<(i64, Option<Event>)> = {
        let mut st = tx.prepare_cached(&format!(
            "SELECT seq, {EVENT_COLS} FROM rp_inbox ORDER BY seq LIMIT ?1"
        ))?;
        let it = st.query_map([limit as i64], |r| Ok((r.get(0)?, event_from(r, 1)?)))?;
        it.collect::<Result<_, _>>()?
    };
    let Some(last) = rows.last().map(|r| r.0) else {
        return Ok(out);
    };
    let mut pending: Vec<u64> = rules
        .iter()
        .map(|r| {
            tx.query_row(
                "SELECT COUNT(*) FROM rp_outbox WHERE dest = ?1",
                [&r.dest],
                |x| x.get::<_, i64>(0),
            )
            .map(|n| n.max(0) as u64)
        })
        .collect::<Result<_, _>>()?;
    for (_, ev) in &rows {
        let Some(ev) = ev else { continue };
        out.events += 1;
        for (i, r) in rules.iter().enumerate() {
            let wants = match ev.kind {
                EventKind::Ban => r.ban,
                EventKind::Trapped => r.trapped,
            };
            if !wants {
                continue;
            }
            let seen: Option<i64> = tx
                .query_row(
                    "SELECT at FROM rp_seen WHERE dest = ?1 AND host = ?2",
                    params![r.dest, ev.host],
                    |x| x.get(0),
                )
                .optional()?;
            match admit(seen, r.repeat_ms, pending[i], r.cap, now) {
                Admit::Repeat => out.per_dest[i].2 += 1,
                Admit::Full => out.per_dest[i].3 += 1,
                Admit::Yes => {
                    tx.execute(
                        &format!(
                            "INSERT INTO rp_outbox (dest, {EVENT_COLS}, next_at)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
                        ),
                        params![
                            r.dest,
                            ev.kind.as_str(),
                            ev.host,
                            ev.at_ms,
                            ev.jail,
                            ev.offences,
                            ev.port,
                            ev.engaged_secs,
                            ev.held_secs,
                            ev.client,
                            now
                        ],
                    )?;
                    tx.execute(
                        "INSERT INTO rp_seen (dest, host, at) VALUES (?1, ?2, ?3)
                         ON CONFLICT (dest, host) DO UPDATE SET at = excluded.at",
                        params![r.dest, ev.host, now],
                    )?;
                    pending[i] += 1;
                    out.per_dest[i].1 += 1;
                }
            }
        }
    }
    tx.execute("DELETE FROM rp_inbox WHERE seq <= ?1", [last])?;
    tx.commit()?;
    Ok(out)
}

/// One queued delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub seq: i64,
    pub event: Event,
    pub tries: u32,
}

/// The oldest due item of `dest` (`next_at <= now`).
pub fn next_due(c: &Connection, dest: &str, now: i64) -> rusqlite::Result<Option<Item>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT seq, tries, {EVENT_COLS} FROM rp_outbox
         WHERE dest = ?1 AND next_at <= ?2 ORDER BY seq LIMIT 1"
    ))?;
    let r = st
        .query_row(params![dest, now], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, u32>(1)?, event_from(r, 2)?))
        })
        .optional()?;
    match r {
        None => Ok(None),
        Some((seq, _, None)) => {
            // Unreadable (written by a newer version?): drop it.
            c.execute("DELETE FROM rp_outbox WHERE seq = ?1", [seq])?;
            Ok(None)
        }
        Some((seq, tries, Some(event))) => Ok(Some(Item { seq, event, tries })),
    }
}

/// Takes `seq` for a request until `until`; false if another process has.
pub fn claim(c: &Connection, seq: i64, now: i64, until: i64) -> rusqlite::Result<bool> {
    Ok(c.execute(
        "UPDATE rp_outbox SET next_at = ?3 WHERE seq = ?1 AND next_at <= ?2",
        params![seq, now, until],
    )? == 1)
}

/// Puts `seq` back for `at`, with `tries`.
pub fn reschedule(c: &Connection, seq: i64, at: i64, tries: u32) -> rusqlite::Result<()> {
    c.execute(
        "UPDATE rp_outbox SET next_at = ?2, tries = ?3 WHERE seq = ?1",
        params![seq, at, tries],
    )?;
    Ok(())
}

/// Every queued item of `dest` waits until `at` (a pause).
pub fn hold_all(c: &Connection, dest: &str, at: i64) -> rusqlite::Result<()> {
    c.execute(
        "UPDATE rp_outbox SET next_at = MAX(next_at, ?2) WHERE dest = ?1",
        params![dest, at],
    )?;
    Ok(())
}

/// Removes `seq`; `delivered`: remember when its host reached `dest`.
pub fn finish(
    c: &mut Connection,
    seq: i64,
    dest: &str,
    host: &str,
    delivered: Option<i64>,
) -> rusqlite::Result<()> {
    let tx = c.transaction()?;
    tx.execute("DELETE FROM rp_outbox WHERE seq = ?1", [seq])?;
    if let Some(at) = delivered {
        tx.execute(
            "INSERT INTO rp_sent (dest, host, at) VALUES (?1, ?2, ?3)
             ON CONFLICT (dest, host) DO UPDATE SET at = MAX(at, excluded.at)",
            params![dest, host, at],
        )?;
    }
    tx.commit()
}

pub fn last_sent(c: &Connection, dest: &str, host: &str) -> rusqlite::Result<Option<i64>> {
    c.query_row(
        "SELECT at FROM rp_sent WHERE dest = ?1 AND host = ?2",
        params![dest, host],
        |r| r.get(0),
    )
    .optional()
}

pub fn dest_state(c: &Connection, dest: &str) -> rusqlite::Result<DestState> {
    Ok(c.query_row(
        "SELECT paused_until, day, used FROM rp_dest WHERE dest = ?1",
        [dest],
        |r| {
            Ok(DestState {
                paused_until: r.get(0)?,
                day: r.get(1)?,
                used: r.get(2)?,
            })
        },
    )
    .optional()?
    .unwrap_or_default())
}

pub fn save_dest_state(c: &Connection, dest: &str, s: &DestState) -> rusqlite::Result<()> {
    c.execute(
        "INSERT INTO rp_dest (dest, paused_until, day, used) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (dest) DO UPDATE SET paused_until = excluded.paused_until,
             day = excluded.day, used = excluded.used",
        params![dest, s.paused_until, s.day, s.used],
    )?;
    Ok(())
}

/// Rows queued for `dest`.
pub fn pending(c: &Connection, dest: &str) -> rusqlite::Result<i64> {
    c.query_row(
        "SELECT COUNT(*) FROM rp_outbox WHERE dest = ?1",
        [dest],
        |r| r.get(0),
    )
}

/// Forgets admissions and deliveries older than `keep_ms`.
pub fn prune(c: &Connection, now: i64, keep_ms: i64) -> rusqlite::Result<()> {
    c.execute("DELETE FROM rp_seen WHERE at < ?1", [now - keep_ms])?;
    c.execute("DELETE FROM rp_sent WHERE at < ?1", [now - keep_ms])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(tag: &str) -> (Connection, std::path::PathBuf) {
        let p = std::env::temp_dir().join(format!("tarpit-outbox-{tag}-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&p);
        (open(&p).unwrap(), p)
    }

    fn rule(dest: &str, repeat_ms: i64, cap: u64) -> Rule {
        Rule {
            dest: dest.into(),
            ban: true,
            trapped: true,
            repeat_ms,
            cap,
        }
    }

    #[test]
    fn bans_reach_the_inbox_through_triggers() {
        let (mut c, p) = db("trig");
        c.execute_batch(
            "CREATE TABLE bans (host TEXT PRIMARY KEY, jail TEXT NOT NULL, banned_at INTEGER NOT NULL,
             expires_at INTEGER NOT NULL, offences INTEGER NOT NULL);",
        )
        .unwrap();
        set_ban_triggers(&c, true).unwrap();
        c.execute(
            "INSERT INTO bans VALUES ('10.77.0.1', 'sshd', 1000, 9000, 3)",
            [],
        )
        .unwrap();
        c.execute("UPDATE bans SET banned_at = 2000, offences = 4", [])
            .unwrap();
        c.execute("UPDATE bans SET expires_at = 99999", []).unwrap();
        let s = sort(&mut c, &[rule("a", 0, 10)], 5000, 100).unwrap();
        assert_eq!(s.events, 2);
        let i = next_due(&c, "a", 5000).unwrap().unwrap();
        assert_eq!(i.event, Event::ban("10.77.0.1", "sshd", 3, 1000));
        set_ban_triggers(&c, false).unwrap();
        c.execute("UPDATE bans SET banned_at = 3000", []).unwrap();
        assert_eq!(
            sort(&mut c, &[rule("a", 0, 10)], 5000, 100).unwrap().events,
            0
        );
        drop(c);
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn sorting_dedupes_per_host_and_caps() {
        let (mut c, p) = db("sort");
        let evs: Vec<Event> = ["1.1.1.1", "1.1.1.1", "2.2.2.2", "3.3.3.3"]
            .iter()
            .map(|h| Event::ban(h, "j", 1, 0))
            .collect();
        push_inbox(&mut c, &evs).unwrap();
        let rules = [rule("a", 900_000, 2), rule("b", 0, 100)];
        let s = sort(&mut c, &rules, 1000, 100).unwrap();
        assert_eq!(s.events, 4);
        assert_eq!(s.per_dest[0], ("a".into(), 2, 1, 1));
        assert_eq!(s.per_dest[1], ("b".into(), 4, 0, 0));
        assert_eq!(pending(&c, "a").unwrap(), 2);
        // Claims, a pause, delivery.
        let i = next_due(&c, "a", 1000).unwrap().unwrap();
        assert!(claim(&c, i.seq, 1000, 50_000).unwrap());
        assert!(!claim(&c, i.seq, 1000, 50_000).unwrap(), "claimed once");
        let j = next_due(&c, "a", 1000).unwrap().unwrap();
        assert_ne!(i.seq, j.seq);
        hold_all(&c, "a", 20_000).unwrap();
        assert!(next_due(&c, "a", 19_999).unwrap().is_none());
        finish(&mut c, i.seq, "a", &i.event.host, Some(1000)).unwrap();
        assert_eq!(last_sent(&c, "a", "1.1.1.1").unwrap(), Some(1000));
        assert_eq!(pending(&c, "a").unwrap(), 1);
        let st = DestState {
            paused_until: 5,
            day: 3,
            used: 7,
        };
        save_dest_state(&c, "a", &st).unwrap();
        assert_eq!(dest_state(&c, "a").unwrap(), st);
        assert_eq!(dest_state(&c, "zz").unwrap(), DestState::default());
        prune(&c, 10_000_000, 1000).unwrap();
        assert_eq!(last_sent(&c, "a", "1.1.1.1").unwrap(), None);
        drop(c);
        let _ = std::fs::remove_file(p);
    }
}
