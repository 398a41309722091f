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

    let _ = writeln!(o, "\nTop hosts by attacker time wasted");
    let _ = writeln!(
        o,
        "  {:<40} {:>8} {:>12} {:>12}",
        "HOST", "CONNS", "ENGAGED", "HELD"
    );
    for h in &r.top_hosts {
        let _ = writeln!(
            o,
            "  {:<40} {:>8} {:>12} {:>12}",
            h.host,
            h.connections,
            fmt_hold(h.engaged_secs),
            fmt_hold(h.held_secs)
        );
    }
    let _ = writeln!(o, "\nPorts aimed at");
    let _ = writeln!(
        o,
        "  {:<8} {:>8} {:>12} {:>12}",
        "PORT", "CONNS", "ENGAGED", "HELD"
    );
    for p in &r.ports {
        let _ = writeln!(
            o,
            "  {:<8} {:>8} {:>12} {:>12}",
            p.port,
            p.connections,
            fmt_hold(p.engaged_secs),
            fmt_hold(p.held_secs)
        );
    }
    if !r.top_countries.is_empty() {
        let _ = writeln!(o, "\nTop countries by attacker time wasted");
        let _ = writeln!(
            o,
            "  {:<8} {:>8} {:>8} {:>12} {:>12}",
            "COUNTRY", "CONNS", "HOSTS", "ENGAGED", "HELD"
        );
        for c in &r.top_countries {
            let _ = writeln!(
                o,
                "  {:<8} {:>8} {:>8} {:>12} {:>12}",
                c.country,
                c.connections,
                c.hosts,
                fmt_hold(c.engaged_secs),
                fmt_hold(c.held_secs)
            );
        }
    }
    if !r.top_asns.is_empty() {
        let _ = writeln!(o, "\nTop ASNs by attacker time wasted");
        let _ = writeln!(
            o,
            "  {:<10} {:<32} {:>8} {:>8} {:>12} {:>12}",
            "ASN", "ORGANISATION", "CONNS", "HOSTS", "ENGAGED", "HELD"
        );
        for a in &r.top_asns {
            let org: String = a.org.chars().filter(|c| !c.is_control()).take(32).collect();
            let _ = writeln!(
                o,
                "  {:<10} {:<32} {:>8} {:>8} {:>12} {:>12}",
                format!("AS{}", a.asn),
                org,
                a.connections,
                a.hosts,
                fmt_hold(a.engaged_secs),
                fmt_hold(a.held_secs)
            );
        }
    }
    if !r.protocols.is_empty() {
        let _ = writeln!(o, "\nWhat they tried (protocol) by attacker time wasted");
        let _ = writeln!(
            o,
            "  {:<8} {:>8} {:>12} {:>12}",
            "PROTOCOL", "CONNS", "ENGAGED", "HELD"
        );
        for p in &r.protocols {
            let _ = writeln!(
                o,
                "  {:<8} {:>8} {:>12} {:>12}",
                p.protocol,
                p.connections,
                fmt_hold(p.engaged_secs),
                fmt_hold(p.held_secs)
            );
        }
    }
    if !r.clients.is_empty() {
        let _ = writeln!(o, "\nTop client software by attacker time wasted");
        let _ = writeln!(
            o,
            "  {:<48} {:<8} {:>8} {:>8} {:>12} {:>12}",
            "CLIENT", "PROTOCOL", "CONNS", "HOSTS", "ENGAGED", "HELD"
        );
        for c in &r.clients {
            // Stored escaped (printable ASCII); cut to the column.
            let name: String = c
                .client
                .chars()
                .filter(|c| !c.is_control())
                .take(48)
                .collect();
            let _ = writeln!(
                o,
                "  {:<48} {:<8} {:>8} {:>8} {:>12} {:>12}",
                name,
                c.protocol,
                c.connections,
                c.hosts,
                fmt_hold(c.engaged_secs),
                fmt_hold(c.held_secs)
            );
        }
    }
    if !r.policies.is_empty() {
        let _ = writeln!(o, "\nPolicies by attacker time wasted");
        let _ = writeln!(
            o,
            "  {:<44} {:>8} {:>8} {:>12} {:>12} {:>12}",
            "POLICY", "CONNS", "HOSTS", "ENGAGED", "OF IT <=", "HELD"
        );
        for p in &r.policies {
            // Ours (records name it), but read from a file: no control
            // characters reach the terminal.
            let name: String = p.policy.chars().filter(|c| !c.is_control()).collect();
            let _ = writeln!(
                o,
                "  {:<44} {:>8} {:>8} {:>12} {:>12} {:>12}",
                name,
                p.connections,
                p.hosts,
                fmt_hold(p.engaged_secs),
                fmt_hold(p.engaged_upper_bound_secs),
                fmt_hold(p.held_secs)
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
