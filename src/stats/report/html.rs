//! The report as one self-contained HTML page (inline CSS and SVG).

use super::{utc_day, Report};
use std::fmt::Write as _;

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
        "attacker-hours-upper-bound",
        "of which upper bounds",
        format!("{:.2}", t.attacker_hours_upper_bound),
    );
    card(
        &mut o,
        "held-hours",
        "held-hours (our cost)",
        format!("{:.2}", t.held_hours),
    );
    card(
        &mut o,
        "median-engaged",
        "median engaged (s)",
        format!("{:.1}", t.median_engaged_secs),
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
                d.engaged_secs / 3600.0,
                format!(
                    "{:.2} h, {} connections",
                    d.engaged_secs / 3600.0,
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
    o.push_str(r#"<table id="per-day"><tr><th>day</th><th class="n">connections</th><th class="n">attacker-hours</th><th class="n">held-hours</th></tr>"#);
    for d in &r.per_day {
        let _ = write!(
            o,
            r#"<tr data-day="{}"><td>{}</td><td class="n">{}</td><td class="n">{:.2}</td><td class="n">{:.2}</td></tr>"#,
            esc(&d.day),
            esc(&d.day),
            d.connections,
            d.engaged_secs / 3600.0,
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
    o.push_str(r#"<table id="histogram"><tr><th>duration</th><th class="n">connections held</th><th class="n">attackers engaged</th></tr>"#);
    for b in &r.histogram {
        let _ = write!(
            o,
            r#"<tr data-bucket="{}"><td>{}</td><td class="n">{}</td><td class="n">{}</td></tr>"#,
            b.lo_secs,
            esc(&b.label),
            b.connections,
            b.engaged
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
    o.push_str(r#"<table id="ports"><tr><th>port</th><th class="n">connections</th><th class="n">engaged (s)</th><th class="n">held (s)</th></tr>"#);
    for p in &r.ports {
        let _ = write!(
            o,
            r#"<tr data-port="{}"><td>{}</td><td class="n">{}</td><td class="n">{:.1}</td><td class="n">{:.1}</td></tr>"#,
            p.port, p.port, p.connections, p.engaged_secs, p.held_secs
        );
    }
    o.push_str("</table>\n");

    o.push_str("<h2>Top hosts by attacker time wasted</h2>\n");
    o.push_str(r#"<table id="top-hosts"><tr><th>host</th><th class="n">connections</th><th class="n">engaged (s)</th><th class="n">held (s)</th></tr>"#);
    for h in &r.top_hosts {
        let _ = write!(
            o,
            r#"<tr data-host="{}"><td>{}</td><td class="n">{}</td><td class="n">{:.1}</td><td class="n">{:.1}</td></tr>"#,
            esc(&h.host),
            esc(&h.host),
            h.connections,
            h.engaged_secs,
            h.held_secs
        );
    }
    o.push_str("</table>\n");

    if !r.top_countries.is_empty() {
        o.push_str("<h2>Top countries by attacker time wasted</h2>\n");
        o.push_str(r#"<table id="top-countries"><tr><th>country</th><th class="n">connections</th><th class="n">hosts</th><th class="n">engaged (s)</th><th class="n">held (s)</th></tr>"#);
        for c in &r.top_countries {
            let _ = write!(
                o,
                r#"<tr data-country="{}"><td>{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{:.1}</td><td class="n">{:.1}</td></tr>"#,
                esc(&c.country),
                esc(&c.country),
                c.connections,
                c.hosts,
                c.engaged_secs,
                c.held_secs
            );
        }
        o.push_str("</table>\n");
    }
    if !r.top_asns.is_empty() {
        o.push_str("<h2>Top ASNs by attacker time wasted</h2>\n");
        o.push_str(r#"<table id="top-asns"><tr><th>ASN</th><th>organisation</th><th class="n">connections</th><th class="n">hosts</th><th class="n">engaged (s)</th><th class="n">held (s)</th></tr>"#);
        for a in &r.top_asns {
            let _ = write!(
                o,
                r#"<tr data-asn="{}"><td>AS{}</td><td>{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{:.1}</td><td class="n">{:.1}</td></tr>"#,
                a.asn,
                a.asn,
                esc(&a.org),
                a.connections,
                a.hosts,
                a.engaged_secs,
                a.held_secs
            );
        }
        o.push_str("</table>\n");
    }
    if !r.protocols.is_empty() {
        o.push_str("<h2>What they tried, by attacker time wasted</h2>\n");
        o.push_str(r#"<table id="protocols"><tr><th>protocol</th><th class="n">connections</th><th class="n">engaged (s)</th><th class="n">held (s)</th></tr>"#);
        for p in &r.protocols {
            let _ = write!(
                o,
                r#"<tr data-protocol="{}"><td>{}</td><td class="n">{}</td><td class="n">{:.1}</td><td class="n">{:.1}</td></tr>"#,
                esc(&p.protocol),
                esc(&p.protocol),
                p.connections,
                p.engaged_secs,
                p.held_secs
            );
        }
        o.push_str("</table>\n");
    }
    if !r.clients.is_empty() {
        o.push_str("<h2>Top client software by attacker time wasted</h2>\n");
        o.push_str(r#"<table id="clients"><tr><th>client</th><th>protocol</th><th class="n">connections</th><th class="n">hosts</th><th class="n">engaged (s)</th><th class="n">held (s)</th></tr>"#);
        for c in &r.clients {
            // Attacker text: stored escaped, HTML-escaped on top.
            let _ = write!(
                o,
                r#"<tr data-client="{}"><td>{}</td><td>{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{:.1}</td><td class="n">{:.1}</td></tr>"#,
                esc(&c.client),
                esc(&c.client),
                esc(&c.protocol),
                c.connections,
                c.hosts,
                c.engaged_secs,
                c.held_secs
            );
        }
        o.push_str("</table>\n");
    }
    if !r.policies.is_empty() {
        o.push_str("<h2>Policies by attacker time wasted</h2>\n");
        o.push_str(r#"<table id="policies"><tr><th>policy</th><th class="n">connections</th><th class="n">hosts</th><th class="n">engaged (s)</th><th class="n">of it upper bound (s)</th><th class="n">held (s)</th></tr>"#);
        for p in &r.policies {
            let _ = write!(
                o,
                r#"<tr data-policy="{}"><td>{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{:.1}</td><td class="n">{:.1}</td><td class="n">{:.1}</td></tr>"#,
                esc(&p.policy),
                esc(&p.policy),
                p.connections,
                p.hosts,
                p.engaged_secs,
                p.engaged_upper_bound_secs,
                p.held_secs
            );
        }
        o.push_str("</table>\n");
    }
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
    fn html_escapes_text() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
