//! `tarpit report`: what the history says about a time window, computed once
//! into a [`Report`] and rendered as terminal text, JSON or one
//! self-contained HTML page (inline CSS and SVG, no JavaScript, nothing
//! fetched from the network — it must open from a mail attachment).
//!
//! A connection belongs to the window when it *ended* inside it (its row is
//! written then). Percentiles use the nearest-rank method: the p-th
//! percentile of n sorted holds is the value at rank ceil(p·n).

use rusqlite::{params, Connection};
use serde::Serialize;
use std::fmt::Write as _;

/// Rows in the top-hosts and ports tables.
pub const TOP_N: usize = 20;

/// Edges of the hold-duration histogram, seconds; the last bucket is open.
pub const HIST_EDGES: [f64; 12] = [
    0.0, 1.0, 10.0, 60.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 3600.0, 21600.0, 86400.0,
];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Window, unix seconds.
    pub since: f64,
    pub until: f64,
    pub totals: Totals,
    /// Top [`TOP_N`] hosts by total time held.
    pub top_hosts: Vec<HostRow>,
    /// Top [`TOP_N`] ports aimed at, by connections.
    pub ports: Vec<PortRow>,
    pub end_reasons: Vec<ReasonRow>,
    pub histogram: Vec<Bucket>,
    /// One entry per UTC day of the window, oldest first, zeros included.
    pub per_day: Vec<DayRow>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    pub connections: u64,
    pub unique_hosts: u64,
    pub attacker_hours: f64,
    pub median_hold_secs: f64,
    pub p90_hold_secs: f64,
    pub bytes_received: u64,
    pub close_attempts: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostRow {
    pub host: String,
    pub connections: u64,
    pub held_secs: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PortRow {
    pub port: u16,
    pub connections: u64,
    pub held_secs: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReasonRow {
    pub reason: String,
    pub connections: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bucket {
    /// Human label: `1m–5m`, `≥24h`.
    pub label: String,
    pub lo_secs: f64,
    /// `None` for the open last bucket.
    pub hi_secs: Option<f64>,
    pub connections: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DayRow {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub connections: u64,
    pub held_secs: f64,
}

/// Nearest-rank percentile of an ascending slice (0 when empty).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// `YYYY-MM-DD` (UTC) of a unix time.
pub fn utc_day(unix: f64) -> String {
    let days = (unix / 86400.0).floor() as i64;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn fmt_edge(s: f64) -> String {
    let s = s as u64;
    match s {
        0 => "0s".into(),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        _ => format!("{}h", s / 3600),
    }
}

/// Computes the report over rows that ended in `[since, until]` (unix secs).
pub fn compute(c: &Connection, since: f64, until: f64) -> rusqlite::Result<Report> {
    // `?3..?4` is the rowid range the history's block index gives for the
    // window: a range scan instead of reading the whole table.
    const W: &str = "end_time >= ?1 AND end_time <= ?2 AND id >= ?3 AND id <= ?4";
    let (lo, hi) = super::history::id_range(c, since, until)?;
    let mut holds: Vec<f64> = Vec::new();
    {
        let mut st = c.prepare(&format!(
            "SELECT held_secs FROM connections WHERE {W} ORDER BY held_secs"
        ))?;
        let rows = st.query_map(params![since, until, lo, hi], |r| r.get::<_, f64>(0))?;
        for h in rows {
            holds.push(h?);
        }
    }
    let (unique_hosts, held_total, bytes, fins): (i64, f64, i64, i64) = c.query_row(
        &format!(
            "SELECT count(DISTINCT peer_ip), coalesce(sum(held_secs), 0.0),
                    coalesce(sum(bytes_received), 0), count(fin_after_secs)
             FROM connections WHERE {W}"
        ),
        params![since, until, lo, hi],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    let totals = Totals {
        connections: holds.len() as u64,
        unique_hosts: unique_hosts.max(0) as u64,
        attacker_hours: held_total / 3600.0,
        median_hold_secs: percentile(&holds, 0.5),
        p90_hold_secs: percentile(&holds, 0.9),
        bytes_received: bytes.max(0) as u64,
        close_attempts: fins.max(0) as u64,
    };

    let top_hosts = c
        .prepare(&format!(
            "SELECT peer_ip, count(*), sum(held_secs) FROM connections WHERE {W}
             GROUP BY peer_ip ORDER BY sum(held_secs) DESC, peer_ip LIMIT {TOP_N}"
        ))?
        .query_map(params![since, until, lo, hi], |r| {
            Ok(HostRow {
                host: r.get(0)?,
                connections: r.get::<_, i64>(1)?.max(0) as u64,
                held_secs: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let ports = c
        .prepare(&format!(
            "SELECT orig_port, count(*), sum(held_secs) FROM connections WHERE {W}
             GROUP BY orig_port ORDER BY count(*) DESC, orig_port LIMIT {TOP_N}"
        ))?
        .query_map(params![since, until, lo, hi], |r| {
            Ok(PortRow {
                port: r.get::<_, i64>(0)?.clamp(0, 65535) as u16,
                connections: r.get::<_, i64>(1)?.max(0) as u64,
                held_secs: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let end_reasons = c
        .prepare(&format!(
            "SELECT end_reason, count(*) FROM connections WHERE {W}
             GROUP BY end_reason ORDER BY count(*) DESC, end_reason"
        ))?
        .query_map(params![since, until, lo, hi], |r| {
            Ok(ReasonRow {
                reason: r.get(0)?,
                connections: r.get::<_, i64>(1)?.max(0) as u64,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;

    let mut histogram: Vec<Bucket> = HIST_EDGES
        .iter()
        .enumerate()
        .map(|(i, &lo)| {
            let hi = HIST_EDGES.get(i + 1).copied();
            Bucket {
                label: match hi {
                    Some(h) => format!("{}–{}", fmt_edge(lo), fmt_edge(h)),
                    None => format!("≥{}", fmt_edge(lo)),
                },
                lo_secs: lo,
                hi_secs: hi,
                connections: 0,
            }
        })
        .collect();
    for &h in &holds {
        let i = HIST_EDGES.iter().rposition(|&e| h >= e).unwrap_or(0);
        histogram[i].connections += 1;
    }

    // Per day, zeros included, from the window start (or the first row, for
    // very long windows) to its end.
    let mut days: std::collections::BTreeMap<String, (u64, f64)> = Default::default();
    {
        let mut st = c.prepare(&format!(
            "SELECT end_time, held_secs FROM connections WHERE {W}"
        ))?;
        let rows = st.query_map(params![since, until, lo, hi], |r| {
            Ok((r.get::<_, f64>(0)?, r.get::<_, f64>(1)?))
        })?;
        for row in rows {
            let (end, held) = row?;
            let e = days.entry(utc_day(end)).or_default();
            e.0 += 1;
            e.1 += held;
        }
    }
    let first_row_day = days.keys().next().cloned();
    let mut per_day = Vec::new();
    let start_day = (since / 86400.0).floor() as i64;
    let end_day = (until / 86400.0).floor() as i64;
    let mut d = start_day.max(end_day - 366);
    if let Some(f) = &first_row_day {
        // Skip leading empty days of an "everything" window.
        while d < end_day && utc_day(d as f64 * 86400.0) < *f && end_day - d > 31 {
            d += 1;
        }
    }
    while d <= end_day {
        let key = utc_day(d as f64 * 86400.0);
        let (n, h) = days.get(&key).copied().unwrap_or((0, 0.0));
        per_day.push(DayRow {
            day: key,
            connections: n,
            held_secs: h,
        });
        d += 1;
    }

    Ok(Report {
        since,
        until,
        totals,
        top_hosts,
        ports,
        end_reasons,
        histogram,
        per_day,
    })
}

fn fmt_hold(s: f64) -> String {
    crate::stats::live::fmt_secs(s)
}

fn bar(v: f64, max: f64, width: usize) -> String {
    if max <= 0.0 || v <= 0.0 {
        return String::new();
    }
    let n = ((v / max) * width as f64).round().max(1.0) as usize;
    "█".repeat(n.min(width))
}

/// The terminal report.
pub fn render_text(r: &Report) -> String {
    let mut o = String::new();
    let t = &r.totals;
    let _ = writeln!(
        o,
        "tarpit report: {} .. {} (UTC, by end of connection)\n",
        utc_day(r.since),
        utc_day(r.until)
    );
    let _ = writeln!(o, "  connections          {}", t.connections);
    let _ = writeln!(o, "  unique hosts         {}", t.unique_hosts);
    let _ = writeln!(o, "  attacker-hours       {:.2}", t.attacker_hours);
    let _ = writeln!(
        o,
        "  median hold          {} ({:.1}s)",
        fmt_hold(t.median_hold_secs),
        t.median_hold_secs
    );
    let _ = writeln!(
        o,
        "  p90 hold             {} ({:.1}s)",
        fmt_hold(t.p90_hold_secs),
        t.p90_hold_secs
    );
    let _ = writeln!(o, "  bytes never read     {}", t.bytes_received);
    let _ = writeln!(o, "  peer close attempts  {}", t.close_attempts);

    let _ = writeln!(o, "\nTop hosts by time held");
    let _ = writeln!(o, "  {:<40} {:>8} {:>12}", "HOST", "CONNS", "HELD");
    for h in &r.top_hosts {
        let _ = writeln!(
            o,
            "  {:<40} {:>8} {:>12}",
            h.host,
            h.connections,
            fmt_hold(h.held_secs)
        );
    }
    let _ = writeln!(o, "\nPorts aimed at");
    let _ = writeln!(o, "  {:<8} {:>8} {:>12}", "PORT", "CONNS", "HELD");
    for p in &r.ports {
        let _ = writeln!(
            o,
            "  {:<8} {:>8} {:>12}",
            p.port,
            p.connections,
            fmt_hold(p.held_secs)
        );
    }
    let _ = writeln!(o, "\nEnd reasons");
    for e in &r.end_reasons {
        let _ = writeln!(o, "  {:<16} {:>8}", e.reason, e.connections);
    }
    let _ = writeln!(o, "\nHold duration");
    let hmax = r.histogram.iter().map(|b| b.connections).max().unwrap_or(0) as f64;
    for b in &r.histogram {
        let _ = writeln!(
            o,
            "  {:<10} {:>8} {}",
            b.label,
            b.connections,
            bar(b.connections as f64, hmax, 40)
        );
    }
    let _ = writeln!(o, "\nPer day (attacker-hours)");
    let dmax = r.per_day.iter().map(|d| d.held_secs).fold(0.0, f64::max);
    for d in &r.per_day {
        let _ = writeln!(
            o,
            "  {} {:>8} conns {:>9.2} h {}",
            d.day,
            d.connections,
            d.held_secs / 3600.0,
            bar(d.held_secs, dmax, 40)
        );
    }
    o
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

/// A vertical bar chart as inline SVG. `values` are (label, value, shown text).
fn svg_bars(id: &str, title: &str, values: &[(String, f64, String)]) -> String {
    let n = values.len().max(1);
    let (w, h, left, bottom, top) = (760.0_f64, 260.0_f64, 50.0, 60.0, 20.0);
    let bw = (w - left - 10.0) / n as f64;
    let max = values.iter().map(|v| v.1).fold(0.0, f64::max);
    let mut s = format!(
        r#"<figure><figcaption>{}</figcaption><svg id="{}" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{}">"#,
        esc(title),
        esc(id),
        esc(title)
    );
    let _ = write!(
        s,
        r##"<line x1="{left}" y1="{y}" x2="{x2}" y2="{y}" stroke="#888"/>"##,
        y = h - bottom,
        x2 = w - 10.0
    );
    let _ = write!(
        s,
        r##"<text x="{x}" y="{y}" font-size="10" text-anchor="end" fill="#555">{}</text>"##,
        esc(&format_max(max)),
        x = left - 4.0,
        y = top + 4.0
    );
    for (i, (label, v, text)) in values.iter().enumerate() {
        let bh = if max > 0.0 {
            (v / max) * (h - bottom - top)
        } else {
            0.0
        };
        let x = left + i as f64 * bw;
        let _ = write!(
            s,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#c0392b"><title>{}: {}</title></rect>"##,
            x + bw * 0.1,
            h - bottom - bh,
            (bw * 0.8).max(1.0),
            bh,
            esc(label),
            esc(text)
        );
        // Label every bar when few, else every k-th.
        let every = (n / 16).max(1);
        if i % every == 0 {
            let _ = write!(
                s,
                r##"<text x="{:.1}" y="{:.1}" font-size="10" fill="#333" transform="rotate(45 {:.1} {:.1})">{}</text>"##,
                x + bw * 0.3,
                h - bottom + 12.0,
                x + bw * 0.3,
                h - bottom + 12.0,
                esc(label)
            );
        }
    }
    s.push_str("</svg></figure>\n");
    s
}

fn format_max(m: f64) -> String {
    if m >= 100.0 || m == m.trunc() {
        format!("{m:.0}")
    } else {
        format!("{m:.2}")
    }
}

/// The self-contained HTML page. Figures carry ids / data attributes so the
/// page can be checked against the database mechanically.
pub fn render_html(r: &Report) -> String {
    let t = &r.totals;
    let mut o = String::new();
    o.push_str(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<title>tarpit report</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:900px}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse}td,th{padding:.2em .8em;text-align:left}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
tr:nth-child(even){background:#f6f6f6}
.cards{display:flex;flex-wrap:wrap;gap:1em}.card{border:1px solid #ddd;border-radius:6px;padding:.6em 1em}
.card .v{font-size:1.4em;font-weight:600}.card .k{color:#666;font-size:.85em}
figure{margin:1em 0}figcaption{font-weight:600;margin-bottom:.3em}
</style></head><body>
"#,
    );
    let _ = writeln!(
        o,
        r#"<h1>tarpit report</h1><p id="window">{} .. {} (UTC, connections that ended in the window)</p>"#,
        utc_day(r.since),
        utc_day(r.until)
    );
    let card = |o: &mut String, id: &str, k: &str, v: String| {
        let _ = write!(
            o,
            r#"<div class="card"><div class="v" id="{id}">{}</div><div class="k">{}</div></div>"#,
            esc(&v),
            esc(k)
        );
    };
    o.push_str(r#"<div class="cards">"#);
    card(
        &mut o,
        "connections",
        "connections",
        t.connections.to_string(),
    );
    card(
        &mut o,
        "unique-hosts",
        "unique hosts",
        t.unique_hosts.to_string(),
    );
    card(
        &mut o,
        "attacker-hours",
        "attacker-hours wasted",
        format!("{:.2}", t.attacker_hours),
    );
    card(
        &mut o,
        "median-hold",
        "median hold (s)",
        format!("{:.1}", t.median_hold_secs),
    );
    card(
        &mut o,
        "p90-hold",
        "p90 hold (s)",
        format!("{:.1}", t.p90_hold_secs),
    );
    card(
        &mut o,
        "bytes-received",
        "bytes never read",
        t.bytes_received.to_string(),
    );
    card(
        &mut o,
        "close-attempts",
        "peer close attempts",
        t.close_attempts.to_string(),
    );
    o.push_str("</div>\n");

    o.push_str("<h2>Attacker time wasted per day</h2>\n");
    let days: Vec<(String, f64, String)> = r
        .per_day
        .iter()
        .map(|d| {
            (
                d.day.clone(),
                d.held_secs / 3600.0,
                format!(
                    "{:.2} h, {} connections",
                    d.held_secs / 3600.0,
                    d.connections
                ),
            )
        })
        .collect();
    o.push_str(&svg_bars(
        "chart-per-day",
        "attacker-hours per day (UTC)",
        &days,
    ));
    o.push_str(r#"<table id="per-day"><tr><th>day</th><th class="n">connections</th><th class="n">attacker-hours</th></tr>"#);
    for d in &r.per_day {
        let _ = write!(
            o,
            r#"<tr data-day="{}"><td>{}</td><td class="n">{}</td><td class="n">{:.2}</td></tr>"#,
            esc(&d.day),
            esc(&d.day),
            d.connections,
            d.held_secs / 3600.0
        );
    }
    o.push_str("</table>\n");

    o.push_str("<h2>Hold duration</h2>\n");
    let hist: Vec<(String, f64, String)> = r
        .histogram
        .iter()
        .map(|b| {
            (
                b.label.clone(),
                b.connections as f64,
                format!("{} connections", b.connections),
            )
        })
        .collect();
    o.push_str(&svg_bars(
        "chart-hold",
        "connections by hold duration",
        &hist,
    ));
    o.push_str(r#"<table id="histogram"><tr><th>held</th><th class="n">connections</th></tr>"#);
    for b in &r.histogram {
        let _ = write!(
            o,
            r#"<tr data-bucket="{}"><td>{}</td><td class="n">{}</td></tr>"#,
            b.lo_secs,
            esc(&b.label),
            b.connections
        );
    }
    o.push_str("</table>\n");

    o.push_str("<h2>Ports aimed at</h2>\n");
    let ports: Vec<(String, f64, String)> = r
        .ports
        .iter()
        .map(|p| {
            (
                p.port.to_string(),
                p.connections as f64,
                format!("{} connections", p.connections),
            )
        })
        .collect();
    o.push_str(&svg_bars(
        "chart-ports",
        "connections by port aimed at",
        &ports,
    ));
    o.push_str(r#"<table id="ports"><tr><th>port</th><th class="n">connections</th><th class="n">held (s)</th></tr>"#);
    for p in &r.ports {
        let _ = write!(
            o,
            r#"<tr data-port="{}"><td>{}</td><td class="n">{}</td><td class="n">{:.1}</td></tr>"#,
            p.port, p.port, p.connections, p.held_secs
        );
    }
    o.push_str("</table>\n");

    o.push_str("<h2>Top hosts by time held</h2>\n");
    o.push_str(r#"<table id="top-hosts"><tr><th>host</th><th class="n">connections</th><th class="n">held (s)</th></tr>"#);
    for h in &r.top_hosts {
        let _ = write!(
            o,
            r#"<tr data-host="{}"><td>{}</td><td class="n">{}</td><td class="n">{:.1}</td></tr>"#,
            esc(&h.host),
            esc(&h.host),
            h.connections,
            h.held_secs
        );
    }
    o.push_str("</table>\n");

    o.push_str("<h2>End reasons</h2>\n");
    o.push_str(r#"<table id="end-reasons"><tr><th>reason</th><th class="n">connections</th></tr>"#);
    for e in &r.end_reasons {
        let _ = write!(
            o,
            r#"<tr data-reason="{}"><td>{}</td><td class="n">{}</td></tr>"#,
            esc(&e.reason),
            esc(&e.reason),
            e.connections
        );
    }
    o.push_str("</table>\n</body></html>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 5.0);
        assert_eq!(percentile(&v, 0.9), 9.0);
        assert_eq!(percentile(&v[..1], 0.9), 1.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn utc_days() {
        assert_eq!(utc_day(0.0), "1970-01-01");
        assert_eq!(utc_day(951_782_400.0), "2000-02-29");
        assert_eq!(utc_day(1_767_225_599.0), "2025-12-31");
    }

    #[test]
    fn html_escapes_text() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
