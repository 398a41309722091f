//! The terminal report.

use super::{utc_day, Report};
use std::fmt::Write as _;

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

/// A column of a text table: its heading and width, its cells left-aligned
/// (text, [`L`]) or right-aligned (figures, [`R`]).
struct Col {
    head: &'static str,
    width: usize,
    left: bool,
}

#[allow(non_snake_case)]
const fn L(head: &'static str, width: usize) -> Col {
    Col {
        head,
        width,
        left: true,
    }
}

#[allow(non_snake_case)]
const fn R(head: &'static str, width: usize) -> Col {
    Col {
        head,
        width,
        left: false,
    }
}

/// One line of a table: two spaces, then each cell padded to its column,
/// one space apart.
fn line(o: &mut String, cols: &[Col], cells: &[&dyn std::fmt::Display]) {
    o.push(' ');
    for (c, v) in cols.iter().zip(cells) {
        let _ = if c.left {
            write!(o, " {:<w$}", v, w = c.width)
        } else {
            write!(o, " {:>w$}", v, w = c.width)
        };
    }
    o.push('\n');
}

/// A blank line, a table's title, and its column headings.
fn heading(o: &mut String, title: &str, cols: &[Col]) {
    let _ = writeln!(o, "\n{title}");
    let heads: Vec<&dyn std::fmt::Display> = cols.iter().map(|c| &c.head as _).collect();
    line(o, cols, &heads);
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
    let _ = writeln!(
        o,
        "  attacker-hours       {:.2} wasted (engaged; {:.2} of it upper bounds)",
        t.attacker_hours, t.attacker_hours_upper_bound
    );
    let _ = writeln!(
        o,
        "  held-hours           {:.2} (what holding cost us)",
        t.held_hours
    );
    let _ = writeln!(
        o,
        "  median engaged       {} ({:.1}s)",
        fmt_hold(t.median_engaged_secs),
        t.median_engaged_secs
    );
    let _ = writeln!(
        o,
        "  p90 engaged          {} ({:.1}s)",
        fmt_hold(t.p90_engaged_secs),
        t.p90_engaged_secs
    );
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

    const HOSTS: &[Col] = &[
        L("HOST", 40),
        R("CONNS", 8),
        R("ENGAGED", 12),
        R("HELD", 12),
    ];
    heading(&mut o, "Top hosts by attacker time wasted", HOSTS);
    for h in &r.top_hosts {
        let (e, held) = (fmt_hold(h.engaged_secs), fmt_hold(h.held_secs));
        line(&mut o, HOSTS, &[&h.host, &h.connections, &e, &held]);
    }
    const PORTS: &[Col] = &[L("PORT", 8), R("CONNS", 8), R("ENGAGED", 12), R("HELD", 12)];
    heading(&mut o, "Ports aimed at", PORTS);
    for p in &r.ports {
        let (e, held) = (fmt_hold(p.engaged_secs), fmt_hold(p.held_secs));
        line(&mut o, PORTS, &[&p.port, &p.connections, &e, &held]);
    }
    if !r.top_countries.is_empty() {
        const COUNTRIES: &[Col] = &[
            L("COUNTRY", 8),
            R("CONNS", 8),
            R("HOSTS", 8),
            R("ENGAGED", 12),
            R("HELD", 12),
        ];
        heading(&mut o, "Top countries by attacker time wasted", COUNTRIES);
        for c in &r.top_countries {
            let (e, held) = (fmt_hold(c.engaged_secs), fmt_hold(c.held_secs));
            line(
                &mut o,
                COUNTRIES,
                &[&c.country, &c.connections, &c.hosts, &e, &held],
            );
        }
    }
    if !r.top_asns.is_empty() {
        const ASNS: &[Col] = &[
            L("ASN", 10),
            L("ORGANISATION", 32),
            R("CONNS", 8),
            R("HOSTS", 8),
            R("ENGAGED", 12),
            R("HELD", 12),
        ];
        heading(&mut o, "Top ASNs by attacker time wasted", ASNS);
        for a in &r.top_asns {
            let org: String = a.org.chars().filter(|c| !c.is_control()).take(32).collect();
            let (asn, e, held) = (
                format!("AS{}", a.asn),
                fmt_hold(a.engaged_secs),
                fmt_hold(a.held_secs),
            );
            line(
                &mut o,
                ASNS,
                &[&asn, &org, &a.connections, &a.hosts, &e, &held],
            );
        }
    }
    if !r.protocols.is_empty() {
        const PROTOCOLS: &[Col] = &[
            L("PROTOCOL", 8),
            R("CONNS", 8),
            R("ENGAGED", 12),
            R("HELD", 12),
        ];
        heading(
            &mut o,
            "What they tried (protocol) by attacker time wasted",
            PROTOCOLS,
        );
        for p in &r.protocols {
            let (e, held) = (fmt_hold(p.engaged_secs), fmt_hold(p.held_secs));
            line(&mut o, PROTOCOLS, &[&p.protocol, &p.connections, &e, &held]);
        }
    }
    if !r.clients.is_empty() {
        const CLIENTS: &[Col] = &[
            L("CLIENT", 48),
            L("PROTOCOL", 8),
            R("CONNS", 8),
            R("HOSTS", 8),
            R("ENGAGED", 12),
            R("HELD", 12),
        ];
        heading(
            &mut o,
            "Top client software by attacker time wasted",
            CLIENTS,
        );
        for c in &r.clients {
            // Stored escaped (printable ASCII); cut to the column.
            let name: String = c
                .client
                .chars()
                .filter(|c| !c.is_control())
                .take(48)
                .collect();
            let (e, held) = (fmt_hold(c.engaged_secs), fmt_hold(c.held_secs));
            line(
                &mut o,
                CLIENTS,
                &[&name, &c.protocol, &c.connections, &c.hosts, &e, &held],
            );
        }
    }
    if !r.policies.is_empty() {
        const POLICIES: &[Col] = &[
            L("POLICY", 44),
            R("CONNS", 8),
            R("HOSTS", 8),
            R("ENGAGED", 12),
            R("OF IT <=", 12),
            R("HELD", 12),
        ];
        heading(&mut o, "Policies by attacker time wasted", POLICIES);
        for p in &r.policies {
            // Ours (records name it), but read from a file: no control
            // characters reach the terminal.
            let name: String = p.policy.chars().filter(|c| !c.is_control()).collect();
            let (e, ub, held) = (
                fmt_hold(p.engaged_secs),
                fmt_hold(p.engaged_upper_bound_secs),
                fmt_hold(p.held_secs),
            );
            line(
                &mut o,
                POLICIES,
                &[&name, &p.connections, &p.hosts, &e, &ub, &held],
            );
        }
    }
    let _ = writeln!(o, "\nEnd reasons");
    for e in &r.end_reasons {
        let _ = writeln!(o, "  {:<16} {:>8}", e.reason, e.connections);
    }
    let _ = writeln!(
        o,
        "\nDuration (connections held / attackers engaged that long)"
    );
    let hmax = r
        .histogram
        .iter()
        .map(|b| b.connections.max(b.engaged))
        .max()
        .unwrap_or(0) as f64;
    for b in &r.histogram {
        let _ = writeln!(
            o,
            "  {:<10} {:>8} {:>8} {}",
            b.label,
            b.connections,
            b.engaged,
            bar(b.engaged as f64, hmax, 40)
        );
    }
    let _ = writeln!(o, "\nPer day (attacker-hours wasted / held-hours)");
    let dmax = r.per_day.iter().map(|d| d.engaged_secs).fold(0.0, f64::max);
    for d in &r.per_day {
        let _ = writeln!(
            o,
            "  {} {:>8} conns {:>9.2} h {:>9.2} h {}",
            d.day,
            d.connections,
            d.engaged_secs / 3600.0,
            d.held_secs / 3600.0,
            bar(d.engaged_secs, dmax, 40)
        );
    }
    o
}
