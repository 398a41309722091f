//! CrowdSec's part of the state database (same SQLite file as the
//! watcher's, own tables):
//!
//! * `cs_decisions` — every decision we apply, keyed by LAPI id, with its
//!   expiry on our clock (now + the remaining duration LAPI sent; LAPI 1.4.6
//!   sends no absolute time, so clock skew between hosts cannot matter). A
//!   restart or a LAPI outage keeps every trap; a flushed ruleset is rebuilt
//!   from here.
//! * `cs_outbox` — bans to push as alerts, in order. Filled by triggers on
//!   the watcher's `bans` table, in the same transaction as the ban itself,
//!   so neither a crash nor a LAPI outage loses one, and `tarpit ban` from
//!   another process is pushed too.
//!
//! What a host is trapped for is the longest of its own ban and every
//! CrowdSec decision for it: a deletion only lifts what nobody else holds.

use super::decision::Trap;
use crate::firewall::{Net, Target};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::time::Duration;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS bans (
    host       TEXT PRIMARY KEY,
    jail       TEXT NOT NULL,
    banned_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    offences   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS cs_decisions (
    id         INTEGER PRIMARY KEY,
    trap       TEXT NOT NULL,
    value      TEXT NOT NULL,
    is_net     INTEGER NOT NULL,
    origin     TEXT NOT NULL,
    kind       TEXT NOT NULL,
    scenario   TEXT NOT NULL,
    own        INTEGER NOT NULL,
    seen_at    INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS cs_decisions_trap ON cs_decisions(trap);
CREATE INDEX IF NOT EXISTS cs_decisions_value ON cs_decisions(value);
CREATE TABLE IF NOT EXISTS cs_outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    host       TEXT NOT NULL,
    jail       TEXT NOT NULL,
    banned_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
";

const TRIGGERS: &str = "
CREATE TRIGGER IF NOT EXISTS cs_push_new AFTER INSERT ON bans BEGIN
    INSERT INTO cs_outbox (host, jail, banned_at, expires_at)
    VALUES (NEW.host, NEW.jail, NEW.banned_at, NEW.expires_at);
END;
CREATE TRIGGER IF NOT EXISTS cs_push_again AFTER UPDATE OF banned_at ON bans
WHEN NEW.banned_at != OLD.banned_at BEGIN
    INSERT INTO cs_outbox (host, jail, banned_at, expires_at)
    VALUES (NEW.host, NEW.jail, NEW.banned_at, NEW.expires_at);
END;
";

/// Opens the state database at `path` with CrowdSec's tables.
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    let c = Connection::open(path)?;
    c.busy_timeout(Duration::from_secs(10))?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "NORMAL")?;
    c.execute_batch(SCHEMA)?;
    Ok(c)
}

/// Pushing on: every new ban is queued. Off: the triggers go (the queue is
/// kept for when it comes back on).
pub fn set_push(c: &Connection, on: bool) -> rusqlite::Result<()> {
    if on {
        c.execute_batch(TRIGGERS)
    } else {
        c.execute_batch("DROP TRIGGER IF EXISTS cs_push_new; DROP TRIGGER IF EXISTS cs_push_again;")
    }
}

/// One decision to store.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: i64,
    pub trap: Trap,
    /// The decision's value as LAPI sent it (deletions name values).
    pub value: String,
    pub origin: String,
    pub kind: String,
    pub scenario: String,
    pub own: bool,
    pub expires_at: i64,
}

/// What a batch of stream changes touched, for the firewall.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Touched {
    pub hosts: std::collections::BTreeSet<Target>,
    pub nets: bool,
    pub added: usize,
    pub removed: usize,
}

impl Touched {
    fn note(&mut self, t: &Trap) {
        match t {
            Trap::Host(h) => {
                self.hosts.insert(*h);
            }
            Trap::Net(_) => self.nets = true,
        }
    }
}

/// A stored trap: `is_net` says which set (an IPv6 /64 host prints like a
/// network).
fn trap_of_text(s: &str, is_net: bool) -> Option<Trap> {
    if is_net {
        s.parse::<Net>().ok().map(Trap::Net)
    } else {
        s.parse::<Target>().ok().map(Trap::Host)
    }
}

/// Applies one stream answer in one transaction: `new` rows stored (a known
/// id gets the new expiry), `deleted` removed (again and again, as LAPI
/// repeats them: idempotent). With `startup`, rows LAPI no longer has are
/// removed too (deleted while we were away).
///
/// LAPI 1.4.6 streams one decision per value (the longest) and lists a
/// value as deleted only when no decision for it is left, possibly under
/// an id we never saw: so a deletion removes every row of that value.
pub fn apply(
    c: &mut Connection,
    new: &[Row],
    deleted: &[(i64, String)],
    startup: bool,
    now_ms: i64,
) -> rusqlite::Result<Touched> {
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut t = Touched::default();
    if startup {
        tx.execute_batch("CREATE TEMP TABLE IF NOT EXISTS cs_keep (id INTEGER PRIMARY KEY); DELETE FROM cs_keep;")?;
        {
            let mut ins = tx.prepare_cached("INSERT OR IGNORE INTO cs_keep (id) VALUES (?1)")?;
            for r in new {
                ins.execute([r.id])?;
            }
        }
        let gone: Vec<(i64, String, bool)> = {
            let mut st = tx.prepare(
                "SELECT id, trap, is_net FROM cs_decisions WHERE id NOT IN (SELECT id FROM cs_keep)",
            )?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        for (id, trap, is_net) in gone {
            tx.execute("DELETE FROM cs_decisions WHERE id = ?1", [id])?;
            t.removed += 1;
            if let Some(tr) = trap_of_text(&trap, is_net) {
                t.note(&tr);
            }
        }
        tx.execute_batch("DELETE FROM cs_keep;")?;
    }
    {
        let mut ins = tx.prepare_cached(
            "INSERT INTO cs_decisions (id, trap, value, is_net, origin, kind, scenario, own, seen_at, expires_at)
             VALUES (?1, ?2, ?10, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT(id) DO UPDATE SET trap = excluded.trap, is_net = excluded.is_net,
                expires_at = excluded.expires_at, own = excluded.own
             WHERE cs_decisions.trap != excluded.trap OR cs_decisions.expires_at / 1000 != excluded.expires_at / 1000",
        )?;
        let known = |id: i64| -> rusqlite::Result<bool> {
            tx.query_row("SELECT 1 FROM cs_decisions WHERE id = ?1", [id], |_| Ok(()))
                .optional()
                .map(|o| o.is_some())
        };
        for r in new {
            let was = known(r.id)?;
            let n = ins.execute(params![
                r.id,
                r.trap.to_string(),
                matches!(r.trap, Trap::Net(_)),
                r.origin,
                r.kind,
                r.scenario,
                r.own,
                now_ms,
                r.expires_at,
                r.value
            ])?;
            if n > 0 {
                if !was {
                    t.added += 1;
                }
                t.note(&r.trap);
            }
        }
    }
    {
        let mut del = tx.prepare_cached(
            "DELETE FROM cs_decisions WHERE id = ?1 OR value = ?2 RETURNING trap, is_net",
        )?;
        for (id, value) in deleted {
            let gone: Vec<(String, bool)> = del
                .query_map(params![id, value], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            for (trap, is_net) in gone {
                t.removed += 1;
                if let Some(tr) = trap_of_text(&trap, is_net) {
                    t.note(&tr);
                }
            }
        }
    }
    // Housekeeping: what is over is gone from the sets already.
    tx.execute("DELETE FROM cs_decisions WHERE expires_at <= ?1", [now_ms])?;
    tx.commit()?;
    Ok(t)
}

/// The jail of our own running ban for `host`, if any (to recognise our
/// pushes coming back in the stream).
pub fn own_jail(c: &Connection, host: &Target, now_ms: i64) -> rusqlite::Result<Option<String>> {
    c.query_row(
        "SELECT jail FROM bans WHERE host = ?1 AND expires_at > ?2",
        params![host.to_string(), now_ms],
        |r| r.get(0),
    )
    .optional()
}

/// Every host trapped by our own bans or a CrowdSec decision, with the
/// latest expiry of all (one query, for large batches).
pub fn all_hosts(c: &Connection, now_ms: i64) -> rusqlite::Result<Vec<(Target, i64)>> {
    let mut st = c.prepare_cached(
        "SELECT t, MAX(e) FROM (
            SELECT host AS t, expires_at AS e FROM bans WHERE expires_at > ?1
            UNION ALL
            SELECT trap AS t, expires_at AS e FROM cs_decisions WHERE is_net = 0 AND expires_at > ?1)
         GROUP BY t",
    )?;
    parsed_expiries(&mut st, now_ms)
}

/// Every host a CrowdSec decision traps, with the latest expiry.
pub fn active_hosts(c: &Connection, now_ms: i64) -> rusqlite::Result<Vec<(Target, i64)>> {
    let mut st = c.prepare_cached(
        "SELECT trap, MAX(expires_at) FROM cs_decisions WHERE is_net = 0 AND expires_at > ?1 GROUP BY trap",
    )?;
    parsed_expiries(&mut st, now_ms)
}

/// Every network a CrowdSec decision traps, with the latest expiry.
pub fn active_nets(c: &Connection, now_ms: i64) -> rusqlite::Result<Vec<(Net, i64)>> {
    let mut st = c.prepare_cached(
        "SELECT trap, MAX(expires_at) FROM cs_decisions WHERE is_net = 1 AND expires_at > ?1 GROUP BY trap",
    )?;
    parsed_expiries(&mut st, now_ms)
}

/// Runs a `(text, expiry)` query bound to `now_ms` and keeps the rows whose
/// text parses as `T` (a row we cannot read is skipped, never trapped).
fn parsed_expiries<T: std::str::FromStr>(
    st: &mut rusqlite::CachedStatement<'_>,
    now_ms: i64,
) -> rusqlite::Result<Vec<(T, i64)>> {
    let rows = st.query_map([now_ms], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })?;
    let mut out = Vec::new();
    for r in rows {
        let (t, e) = r?;
        if let Ok(t) = t.parse::<T>() {
            out.push((t, e));
        }
    }
    Ok(out)
}

/// The latest expiry of anything that traps `host`: our own ban or a
/// CrowdSec decision (`None`: nothing does any more).
pub fn trapped_until(c: &Connection, host: &Target, now_ms: i64) -> rusqlite::Result<Option<i64>> {
    let key = host.to_string();
    c.query_row(
        "SELECT MAX(e) FROM (
            SELECT expires_at AS e FROM bans WHERE host = ?1 AND expires_at > ?2
            UNION ALL
            SELECT expires_at AS e FROM cs_decisions WHERE trap = ?1 AND expires_at > ?2)",
        params![key, now_ms],
        |r| r.get::<_, Option<i64>>(0),
    )
}

/// A stored decision, for `tarpit bans` and `tarpit unban`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub id: i64,
    pub trap: String,
    pub origin: String,
    pub kind: String,
    pub scenario: String,
    pub own: bool,
    pub seen_at: i64,
    pub expires_at: i64,
}

/// Running decisions, soonest expiry first.
pub fn list(c: &Connection, now_ms: i64) -> rusqlite::Result<Vec<Stored>> {
    let mut st = c.prepare(
        "SELECT id, trap, origin, kind, scenario, own, seen_at, expires_at FROM cs_decisions
         WHERE expires_at > ?1 ORDER BY expires_at",
    )?;
    let rows = st.query_map([now_ms], |r| {
        Ok(Stored {
            id: r.get(0)?,
            trap: r.get(1)?,
            origin: r.get(2)?,
            kind: r.get(3)?,
            scenario: r.get(4)?,
            own: r.get(5)?,
            seen_at: r.get(6)?,
            expires_at: r.get(7)?,
        })
    })?;
    rows.collect()
}

/// Running decisions by (origin, own), for the metrics.
pub fn counts(c: &Connection, now_ms: i64) -> rusqlite::Result<Vec<(String, bool, i64)>> {
    let mut st = c.prepare_cached(
        "SELECT origin, own, COUNT(*) FROM cs_decisions WHERE expires_at > ?1 GROUP BY origin, own",
    )?;
    let rows = st.query_map([now_ms], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    rows.collect()
}

/// One queued push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub seq: i64,
    pub host: String,
    pub jail: String,
    pub banned_at: i64,
    pub expires_at: i64,
}

/// The oldest `n` queued pushes.
pub fn outbox(c: &Connection, n: usize) -> rusqlite::Result<Vec<Outgoing>> {
    let mut st = c.prepare_cached(
        "SELECT seq, host, jail, banned_at, expires_at FROM cs_outbox ORDER BY seq LIMIT ?1",
    )?;
    let rows = st.query_map([n as i64], |r| {
        Ok(Outgoing {
            seq: r.get(0)?,
            host: r.get(1)?,
            jail: r.get(2)?,
            banned_at: r.get(3)?,
            expires_at: r.get(4)?,
        })
    })?;
    rows.collect()
}

/// Drops the queued pushes up to `seq` (they were delivered, or are over).
pub fn outbox_done(c: &Connection, seq: i64) -> rusqlite::Result<usize> {
    c.execute("DELETE FROM cs_outbox WHERE seq <= ?1", [seq])
}

pub fn outbox_len(c: &Connection) -> rusqlite::Result<i64> {
    c.query_row("SELECT COUNT(*) FROM cs_outbox", [], |r| r.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(tag: &str) -> (Connection, std::path::PathBuf) {
        let d = std::env::temp_dir().join(format!("tarpit-csstore-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        (open(&d.join("state.db")).unwrap(), d)
    }

    fn row(id: i64, trap: &str, exp: i64) -> Row {
        Row {
            id,
            trap: if trap.contains('/') {
                Trap::Net(trap.parse().unwrap())
            } else {
                Trap::Host(trap.parse().unwrap())
            },
            value: format!("v{id}"),
            origin: "cscli".into(),
            kind: "tarpit".into(),
            scenario: "manual".into(),
            own: false,
            expires_at: exp,
        }
    }

    #[test]
    fn deletions_are_idempotent_and_counted_against_other_holders() {
        let (mut c, d) = db("ref");
        let h: Target = "10.77.1.2".parse().unwrap();
        let t = apply(
            &mut c,
            &[row(1, "10.77.1.2", 5000), row(2, "10.77.1.2", 9000)],
            &[],
            false,
            100,
        )
        .unwrap();
        assert_eq!(
            (t.added, t.hosts.iter().copied().collect::<Vec<_>>()),
            (2, vec![h])
        );
        // The same answer again changes nothing.
        let t = apply(&mut c, &[row(1, "10.77.1.2", 5000)], &[], false, 200).unwrap();
        assert_eq!(t, Touched::default());
        assert_eq!(trapped_until(&c, &h, 300).unwrap(), Some(9000));
        let t = apply(&mut c, &[], &[(2, "v2".into())], false, 300).unwrap();
        assert_eq!(t.removed, 1);
        assert_eq!(trapped_until(&c, &h, 300).unwrap(), Some(5000));
        // Repeated deletion: nothing more.
        assert_eq!(
            apply(&mut c, &[], &[(2, "v2".into())], false, 300)
                .unwrap()
                .removed,
            0
        );
        // A deletion under an id we never saw removes the value's rows.
        let mut r3 = row(3, "10.77.1.9", 5000);
        r3.value = "10.77.1.9".into();
        apply(&mut c, &[r3], &[], false, 300).unwrap();
        let t = apply(&mut c, &[], &[(99, "10.77.1.9".into())], false, 300).unwrap();
        assert_eq!(t.removed, 1);
        // Our own longer ban outlives a CrowdSec deletion.
        c.execute(
            "INSERT INTO bans VALUES ('10.77.1.2', 'multi-ban', 0, 20000, 1)",
            [],
        )
        .unwrap();
        apply(&mut c, &[], &[(1, "v1".into())], false, 400).unwrap();
        assert_eq!(trapped_until(&c, &h, 400).unwrap(), Some(20000));
        assert_eq!(own_jail(&c, &h, 400).unwrap().as_deref(), Some("multi-ban"));
        drop(c);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn startup_forgets_what_lapi_no_longer_has_and_nets_are_separate() {
        let (mut c, d) = db("startup");
        apply(
            &mut c,
            &[row(1, "10.77.1.2", 5000), row(3, "10.78.0.0/16", 5000)],
            &[],
            false,
            100,
        )
        .unwrap();
        assert_eq!(active_nets(&c, 100).unwrap().len(), 1);
        assert_eq!(active_hosts(&c, 100).unwrap().len(), 1);
        let t = apply(&mut c, &[row(1, "10.77.1.2", 5000)], &[], true, 200).unwrap();
        assert!(t.nets && t.removed == 1, "{t:?}");
        assert!(active_nets(&c, 200).unwrap().is_empty());
        // An IPv6 /64 host is a host, not a network, when it goes.
        let mut r = row(4, "10.77.1.2", 5000);
        r.trap = Trap::Host("fd77:5::/64".parse().unwrap());
        apply(&mut c, &[r], &[], false, 200).unwrap();
        let t = apply(&mut c, &[], &[(4, "x".into())], false, 200).unwrap();
        assert!(!t.nets && t.hosts.len() == 1, "{t:?}");
        // Expired rows go by themselves.
        apply(&mut c, &[], &[], false, 6000).unwrap();
        assert!(list(&c, 0).unwrap().is_empty());
        drop(c);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn outbox_is_filled_by_bans_in_order_only_while_pushing() {
        let (c, d) = db("outbox");
        set_push(&c, true).unwrap();
        c.execute("INSERT INTO bans VALUES ('10.77.1.2', 'j', 10, 20, 1)", [])
            .unwrap();
        c.execute("INSERT INTO bans VALUES ('10.77.1.3', 'j', 11, 21, 1)", [])
            .unwrap();
        // An unban (expiry only) is not a new ban; a re-ban is.
        c.execute(
            "UPDATE bans SET expires_at = 12 WHERE host = '10.77.1.2'",
            [],
        )
        .unwrap();
        c.execute(
            "UPDATE bans SET banned_at = 30, expires_at = 40 WHERE host = '10.77.1.2'",
            [],
        )
        .unwrap();
        let q = outbox(&c, 10).unwrap();
        assert_eq!(
            q.iter()
                .map(|o| (o.host.as_str(), o.banned_at))
                .collect::<Vec<_>>(),
            vec![("10.77.1.2", 10), ("10.77.1.3", 11), ("10.77.1.2", 30)]
        );
        outbox_done(&c, q[1].seq).unwrap();
        assert_eq!(outbox_len(&c).unwrap(), 1);
        set_push(&c, false).unwrap();
        c.execute("INSERT INTO bans VALUES ('10.77.1.4', 'j', 11, 21, 1)", [])
            .unwrap();
        assert_eq!(outbox_len(&c).unwrap(), 1);
        drop(c);
        let _ = std::fs::remove_dir_all(d);
    }
}
