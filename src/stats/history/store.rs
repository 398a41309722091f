//! Every SQL statement on the history's tables: batched inserts, pruning,
//! and the window queries the report is computed from.

use crate::engine::record::{to_unix, ConnRecord};
use crate::geoip::Geo;
use rusqlite::{params, Connection};
use std::time::SystemTime;

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

/// A time window of the history: the rows that *ended* in `[since, until]`
/// (unix seconds), with the rowid range the block index gives for it, so
/// each query is a range scan instead of a read of the whole table.
pub struct Window {
    since: f64,
    until: f64,
    lo: i64,
    hi: i64,
    /// SQL for a row's engaged time and its flag in this file's schema
    /// (see `schema::engaged_expr`).
    engaged: &'static str,
    bound: &'static str,
    /// SQL for a row's protocol (see `schema::protocol_expr`).
    protocol: &'static str,
    /// SQL for a row's policy (see `schema::policy_expr`).
    policy: &'static str,
}

/// The condition every window query uses: `?1..?2` the end times, `?3..?4`
/// the rowid range.
const IN_WINDOW: &str = "end_time >= ?1 AND end_time <= ?2 AND id >= ?3 AND id <= ?4";

impl Window {
    pub fn new(c: &Connection, since: f64, until: f64) -> rusqlite::Result<Window> {
        let (lo, hi) = id_range(c, since, until)?;
        Ok(Window {
            since,
            until,
            lo,
            hi,
            engaged: super::schema::engaged_expr(c)?,
            bound: super::schema::engaged_bound_expr(c)?,
            protocol: super::schema::protocol_expr(c)?,
            policy: super::schema::policy_expr(c)?,
        })
    }

    fn params(&self) -> [rusqlite::types::Value; 4] {
        use rusqlite::types::Value;
        [
            Value::Real(self.since),
            Value::Real(self.until),
            Value::Integer(self.lo),
            Value::Integer(self.hi),
        ]
    }
}

/// Sums over a window.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Sums {
    pub unique_hosts: u64,
    pub held_secs: f64,
    /// Attacker time wasted, and the part of it that is an upper bound.
    pub engaged_secs: f64,
    pub engaged_bound_secs: f64,
    pub bytes_received: u64,
    /// Rows whose peer tried to close.
    pub close_attempts: u64,
}

/// One group of a `GROUP BY`: its key, rows, attacker time wasted and
/// time held.
#[derive(Debug, Clone, PartialEq)]
pub struct Group<K> {
    pub key: K,
    pub connections: u64,
    pub engaged_secs: f64,
    pub held_secs: f64,
}

fn count(v: i64) -> u64 {
    v.max(0) as u64
}

/// A `Group` keyed by `key` from the row's `count(*), sum(engaged), sum(held_secs)`
/// columns, which start at column `first` (the shape every grouped query selects).
fn group<K>(r: &rusqlite::Row<'_>, key: K, first: usize) -> rusqlite::Result<Group<K>> {
    Ok(Group {
        key,
        connections: count(r.get(first)?),
        engaged_secs: r.get(first + 1)?,
        held_secs: r.get(first + 2)?,
    })
}

/// Every row's `held_secs`, ascending.
pub fn holds(c: &Connection, w: &Window) -> rusqlite::Result<Vec<f64>> {
    let mut st = c.prepare(&format!(
        "SELECT held_secs FROM connections WHERE {IN_WINDOW} ORDER BY held_secs"
    ))?;
    let rows = st.query_map(w.params(), |r| r.get::<_, f64>(0))?;
    rows.collect()
}

/// Every row's engaged time, ascending.
pub fn engaged(c: &Connection, w: &Window) -> rusqlite::Result<Vec<f64>> {
    let e = w.engaged;
    let mut st = c.prepare(&format!(
        "SELECT {e} FROM connections WHERE {IN_WINDOW} ORDER BY 1"
    ))?;
    let rows = st.query_map(w.params(), |r| r.get::<_, f64>(0))?;
    rows.collect()
}

pub fn sums(c: &Connection, w: &Window) -> rusqlite::Result<Sums> {
    c.query_row(
        &format!(
            "SELECT count(DISTINCT peer_ip), coalesce(sum(held_secs), 0.0),
                    coalesce(sum(bytes_received), 0), count(fin_after_secs),
                    coalesce(sum({e}), 0.0),
                    coalesce(sum(CASE WHEN {b} <> 0 THEN {e} ELSE 0.0 END), 0.0)
             FROM connections WHERE {IN_WINDOW}",
            e = w.engaged,
            b = w.bound
        ),
        w.params(),
        |r| {
            Ok(Sums {
                unique_hosts: count(r.get(0)?),
                held_secs: r.get(1)?,
                bytes_received: count(r.get(2)?),
                close_attempts: count(r.get(3)?),
                engaged_secs: r.get(4)?,
                engaged_bound_secs: r.get(5)?,
            })
        },
    )
}

/// The `limit` peers that lost the most time (engaged).
pub fn top_hosts(c: &Connection, w: &Window, limit: usize) -> rusqlite::Result<Vec<Group<String>>> {
    let e = w.engaged;
    let mut st = c.prepare(&format!(
        "SELECT peer_ip, count(*), sum({e}), sum(held_secs) FROM connections WHERE {IN_WINDOW}
         GROUP BY peer_ip ORDER BY sum({e}) DESC, sum(held_secs) DESC, peer_ip LIMIT {limit}"
    ))?;
    let rows = st.query_map(w.params(), |r| group(r, r.get(0)?, 1))?;
    rows.collect()
}

/// True when the file has the GeoIP columns (schema 3; older files are
/// read as they are).
pub fn has_geo(c: &Connection) -> rusqlite::Result<bool> {
    let n: i64 = c.query_row(
        "SELECT count(*) FROM pragma_table_info('connections')
         WHERE name IN ('country', 'asn', 'as_org')",
        [],
        |r| r.get(0),
    )?;
    Ok(n == 3)
}

/// The `limit` countries whose attackers lost the most time (engaged), with their distinct
/// hosts; rows without a country are left out.
pub fn top_countries(
    c: &Connection,
    w: &Window,
    limit: usize,
) -> rusqlite::Result<Vec<(Group<String>, u64)>> {
    if !has_geo(c)? {
        return Ok(Vec::new());
    }
    let mut st = c.prepare(&format!(
        "SELECT country, count(*), sum(held_secs), count(DISTINCT peer_ip), sum({e})
         FROM connections WHERE {IN_WINDOW} AND country IS NOT NULL
         GROUP BY country ORDER BY sum({e}) DESC, sum(held_secs) DESC, country LIMIT {limit}",
        e = w.engaged
    ))?;
    let rows = st.query_map(w.params(), |r| {
        Ok((
            Group {
                key: r.get(0)?,
                connections: count(r.get(1)?),
                engaged_secs: r.get(4)?,
                held_secs: r.get(2)?,
            },
            count(r.get(3)?),
        ))
    })?;
    rows.collect()
}

/// The `limit` ASNs whose attackers lost the most time (engaged), with an organisation name and
/// their distinct hosts; rows without an ASN are left out.
pub fn top_asns(
    c: &Connection,
    w: &Window,
    limit: usize,
) -> rusqlite::Result<Vec<(Group<u32>, String, u64)>> {
    if !has_geo(c)? {
        return Ok(Vec::new());
    }
    let mut st = c.prepare(&format!(
        "SELECT asn, count(*), sum(held_secs), coalesce(max(as_org), ''), count(DISTINCT peer_ip),
                sum({e})
         FROM connections WHERE {IN_WINDOW} AND asn IS NOT NULL
         GROUP BY asn ORDER BY sum({e}) DESC, sum(held_secs) DESC, asn LIMIT {limit}",
        e = w.engaged
    ))?;
    let rows = st.query_map(w.params(), |r| {
        Ok((
            Group {
                key: r.get::<_, i64>(0)?.clamp(0, i64::from(u32::MAX)) as u32,
                connections: count(r.get(1)?),
                engaged_secs: r.get(5)?,
                held_secs: r.get(2)?,
            },
            r.get(3)?,
            count(r.get(4)?),
        ))
    })?;
    rows.collect()
}

/// The `limit` ports aimed at by the most connections.
pub fn top_ports(c: &Connection, w: &Window, limit: usize) -> rusqlite::Result<Vec<Group<u16>>> {
    let mut st = c.prepare(&format!(
        "SELECT orig_port, count(*), sum({e}), sum(held_secs) FROM connections WHERE {IN_WINDOW}
         GROUP BY orig_port ORDER BY count(*) DESC, orig_port LIMIT {limit}",
        e = w.engaged
    ))?;
    let rows = st.query_map(w.params(), |r| {
        group(r, r.get::<_, i64>(0)?.clamp(0, 65535) as u16, 1)
    })?;
    rows.collect()
}

/// Rows per protocol the peers spoke (`classify::Protocol`), most engaged
/// time first.
pub fn by_protocol(c: &Connection, w: &Window) -> rusqlite::Result<Vec<Group<String>>> {
    let mut st = c.prepare(&format!(
        "SELECT {p}, count(*), sum({e}), sum(held_secs) FROM connections WHERE {IN_WINDOW}
         GROUP BY 1 ORDER BY sum({e}) DESC, count(*) DESC, 1",
        p = w.protocol,
        e = w.engaged
    ))?;
    let rows = st.query_map(w.params(), |r| group(r, r.get(0)?, 1))?;
    rows.collect()
}

/// Rows per policy that held them (`silent`, `bait=ssh,drip=10s`, ...),
/// most engaged time first, with their distinct hosts and the part of the
/// engaged time that is an upper bound.
pub fn by_policy(c: &Connection, w: &Window) -> rusqlite::Result<Vec<(Group<String>, u64, f64)>> {
    let mut st = c.prepare(&format!(
        "SELECT {p}, count(*), sum({e}), sum(held_secs), count(DISTINCT peer_ip),
                sum(CASE WHEN {b} <> 0 THEN {e} ELSE 0.0 END)
         FROM connections WHERE {IN_WINDOW}
         GROUP BY 1 ORDER BY sum({e}) DESC, count(*) DESC, 1",
        p = w.policy,
        e = w.engaged,
        b = w.bound
    ))?;
    let rows = st.query_map(w.params(), |r| {
        Ok((group(r, r.get(0)?, 1)?, count(r.get(4)?), r.get(5)?))
    })?;
    rows.collect()
}

/// The `limit` client programs whose attackers lost the most time: the
/// software they name (SSH version, HTTP User-Agent), else their TLS
/// fingerprint (JA4), with the protocol and distinct hosts. Rows naming
/// none are left out; empty for files older than schema 6.
pub fn top_clients(
    c: &Connection,
    w: &Window,
    limit: usize,
) -> rusqlite::Result<Vec<(Group<String>, String, u64)>> {
    if !super::schema::has_client(c)? {
        return Ok(Vec::new());
    }
    let mut st = c.prepare(&format!(
        "SELECT coalesce(software, ja4) AS client, {p}, count(*), sum({e}), sum(held_secs),
                count(DISTINCT peer_ip)
         FROM connections WHERE {IN_WINDOW} AND coalesce(software, ja4) IS NOT NULL
         GROUP BY 1, 2 ORDER BY sum({e}) DESC, count(*) DESC, 1, 2 LIMIT {limit}",
        p = w.protocol,
        e = w.engaged
    ))?;
    let rows = st.query_map(w.params(), |r| {
        Ok((group(r, r.get(0)?, 2)?, r.get(1)?, count(r.get(5)?)))
    })?;
    rows.collect()
}

/// Rows per end reason, most first.
pub fn end_reasons(c: &Connection, w: &Window) -> rusqlite::Result<Vec<Group<String>>> {
    let mut st = c.prepare(&format!(
        "SELECT end_reason, count(*), sum({e}), sum(held_secs) FROM connections WHERE {IN_WINDOW}
         GROUP BY end_reason ORDER BY count(*) DESC, end_reason",
        e = w.engaged
    ))?;
    let rows = st.query_map(w.params(), |r| group(r, r.get(0)?, 1))?;
    rows.collect()
}

/// Calls `f(end_time, held_secs, engaged_secs)` for every row of the window.
pub fn for_each_end(
    c: &Connection,
    w: &Window,
    mut f: impl FnMut(f64, f64, f64),
) -> rusqlite::Result<()> {
    let mut st = c.prepare(&format!(
        "SELECT end_time, held_secs, {e} FROM connections WHERE {IN_WINDOW}",
        e = w.engaged
    ))?;
    let rows = st.query_map(w.params(), |r| {
        Ok((
            r.get::<_, f64>(0)?,
            r.get::<_, f64>(1)?,
            r.get::<_, f64>(2)?,
        ))
    })?;
    for row in rows {
        let (end, held, engaged) = row?;
        f(end, held, engaged);
    }
    Ok(())
}

/// Rows per multi-row `INSERT` statement: one statement execution per
/// chunk instead of per row roughly halves SQLite's per-row cost.
const ROWS_PER_STATEMENT: usize = 50;
const COLUMNS: usize = 31;

fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO connections (start_time, end_time, held_secs, listener, peer_ip, peer_port,
            local, orig_ip, orig_port, bytes_received, fin_after_secs, end_reason, head,
            country, asn, as_org, engaged_secs, engaged_bound,
            estimated, protocol, software, ssh_version, ssh_comments, http_method,
            http_path, http_host, tls_sni, tls_alpn, ja4, policy, syn_wait_secs) VALUES ",
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
    g: Option<&Geo>,
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
    st.raw_bind_parameter(i + 14, g.and_then(|g| g.country.as_deref()))?;
    st.raw_bind_parameter(i + 15, g.and_then(|g| g.asn))?;
    st.raw_bind_parameter(i + 16, g.and_then(|g| g.as_org.as_deref()))?;
    st.raw_bind_parameter(i + 17, r.engaged_secs)?;
    st.raw_bind_parameter(i + 18, i64::from(r.engaged_upper_bound))?;
    st.raw_bind_parameter(i + 19, r.estimated)?;
    let c = &r.client;
    st.raw_bind_parameter(i + 20, c.protocol.as_str())?;
    st.raw_bind_parameter(i + 21, c.software.as_deref())?;
    st.raw_bind_parameter(i + 22, c.ssh_version.as_deref())?;
    st.raw_bind_parameter(i + 23, c.ssh_comments.as_deref())?;
    st.raw_bind_parameter(i + 24, c.http_method.as_deref())?;
    st.raw_bind_parameter(i + 25, c.http_path.as_deref())?;
    st.raw_bind_parameter(i + 26, c.http_host.as_deref())?;
    st.raw_bind_parameter(i + 27, c.tls_sni.as_deref())?;
    st.raw_bind_parameter(i + 28, c.tls_alpn.as_deref())?;
    st.raw_bind_parameter(i + 29, c.ja4.as_deref())?;
    st.raw_bind_parameter(i + 30, (!r.policy.is_empty()).then_some(r.policy.as_str()))?;
    st.raw_bind_parameter(i + 31, r.syn_wait_secs)?;
    Ok(())
}

/// Inserts rows in one transaction, with their block (see [`SCHEMA`]).
pub fn insert_batch(c: &mut Connection, rows: &[ConnRecord]) -> rusqlite::Result<()> {
    insert_batch_geo(c, rows, &[])
}

/// Like [`insert_batch`], with each row's GeoIP facts (`geo[i]` for
/// `rows[i]`; rows beyond `geo` get none).
pub fn insert_batch_geo(
    c: &mut Connection,
    rows: &[ConnRecord],
    geo: &[Geo],
) -> rusqlite::Result<()> {
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
        let mut n = 0;
        for chunk in &mut chunks {
            for (k, r) in chunk.iter().enumerate() {
                bind_row(&mut many, k, r, geo.get(n), &mut text)?;
                n += 1;
            }
            many.raw_execute()?;
        }
        let mut one = tx.prepare_cached(&insert_sql(1))?;
        for r in chunks.remainder() {
            bind_row(&mut one, 0, r, geo.get(n), &mut text)?;
            n += 1;
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

/// Keeps at most `max_rows` rows: the oldest go (lowest ids: rows are
/// written in end order), with the blocks that covered only them; a block
/// cut in two keeps its newer part. The size cap beside the age one, so a
/// flood cannot fill the disk within the retention window.
pub fn prune_rows(c: &mut Connection, max_rows: u64) -> rusqlite::Result<usize> {
    let tx = c.transaction()?;
    // min/max of the rowid are two b-tree descents; a count(*) would read
    // the whole table. Ids are unique (and nearly dense: pruning only ever
    // takes the lowest), so keeping those above `cut` keeps at most `keep`.
    let (min_id, max_id): (i64, i64) = tx.query_row(
        "SELECT coalesce(min(id), 0), coalesce(max(id), 0) FROM connections",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let keep = i64::try_from(max_rows).unwrap_or(i64::MAX);
    let cut = max_id.saturating_sub(keep);
    if cut < min_id {
        return Ok(0);
    }
    let n = tx.execute("DELETE FROM connections WHERE id <= ?1", params![cut])?;
    tx.execute("DELETE FROM blocks WHERE last_id <= ?1", params![cut])?;
    tx.execute(
        "UPDATE blocks SET first_id = ?1 + 1 WHERE first_id <= ?1",
        params![cut],
    )?;
    tx.commit()?;
    Ok(n)
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
