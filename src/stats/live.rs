//! The live view: the `snapshot` control command on the serve side and the
//! table `tarpit stats` prints from its answer.

use crate::engine::record::LiveConn;
use crate::engine::Snapshot;
use std::fmt::Write as _;

/// Control command name answered by [`crate::engine::snapshot_handler`]
/// (the figures come from TCP_INFO on demand; no held socket is ever read).
pub const SNAPSHOT_CMD: &str = "snapshot";
/// Control command answered by [`crate::engine::totals_handler`]: the
/// totals alone, cheap at any number held.
pub const TOTALS_CMD: &str = "totals";

/// Attacker-hours wasted so far (engaged: until each attacker's FIN or
/// RST), ended plus still-held connections.
pub fn attacker_hours(s: &Snapshot) -> f64 {
    s.totals.engaged_hours()
}

/// Hours we spent holding (what it cost us), ended plus still held.
pub fn held_hours(s: &Snapshot) -> f64 {
    s.totals.held_hours()
}

/// Sorts longest-held first (the order the table shows).
pub fn sort_by_held(conns: &mut [LiveConn]) {
    conns.sort_by(|a, b| b.held_secs.total_cmp(&a.held_secs));
}

/// Compact duration: `45s`, `12m05s`, `3h02m`, `2d04h`.
pub fn fmt_secs(s: f64) -> String {
    let t = s.max(0.0) as u64;
    match t {
        0..=59 => format!("{t}s"),
        60..=3599 => format!("{}m{:02}s", t / 60, t % 60),
        3600..=86399 => format!("{}h{:02}m", t / 3600, (t % 3600) / 60),
        _ => format!("{}d{:02}h", t / 86400, (t % 86400) / 3600),
    }
}

/// Widest CLIENT cell of the live table (software or TLS fingerprint).
const CLIENT_WIDTH: usize = 40;

/// The `tarpit stats` table: one row per held connection, longest-held
/// first, at most `max_rows` rows (a line says how many were left out),
/// then the totals line.
pub fn render_table(snap: &Snapshot, max_rows: Option<usize>) -> String {
    render_table_geo(snap, max_rows, None)
}

/// Like [`render_table`]; with `country` (a GeoIP lookup) a `CC` column
/// shows each peer's country (`-` unknown).
pub fn render_table_geo(
    snap: &Snapshot,
    max_rows: Option<usize>,
    country: Option<&dyn Fn(std::net::IpAddr) -> Option<String>>,
) -> String {
    let mut conns = snap.conns.clone();
    sort_by_held(&mut conns);
    let mut header = vec![
        "PEER", "AIMED AT", "LISTENER", "HELD", "ENGAGED", "LEFT", "QUEUED", "RECEIVED", "CLOSE",
        "STATE", "RTT", "POLICY", "PROTO", "CLIENT",
    ];
    if country.is_some() {
        header.push("CC");
    }
    let shown = max_rows.unwrap_or(usize::MAX).min(conns.len());
    let rows: Vec<Vec<String>> = conns[..shown]
        .iter()
        .map(|c| {
            let mut r = vec![
                c.peer.to_string(),
                c.original_dst.to_string(),
                c.listener.clone(),
                fmt_secs(c.held_secs),
                fmt_secs(c.engaged_secs),
                fmt_secs(c.lifetime_left_secs),
                c.bytes_queued.to_string(),
                c.bytes_received.to_string(),
                match c.fin_after_secs {
                    Some(f) => format!("yes@{}", fmt_secs(f)),
                    None => "no".into(),
                },
                c.state.clone(),
                format!("{:.1}ms", f64::from(c.rtt_us) / 1000.0),
                // Ours, but from the server's answer: no control characters.
                match c
                    .policy
                    .chars()
                    .filter(|ch| !ch.is_control())
                    .collect::<String>()
                {
                    p if p.is_empty() => "-".into(),
                    p => p,
                },
                c.client.protocol.to_string(),
                // Escaped when classified (printable ASCII); cut to a column.
                c.client
                    .client()
                    .map(|s| s.chars().take(CLIENT_WIDTH).collect())
                    .unwrap_or_else(|| "-".into()),
            ];
            if let Some(f) = country {
                r.push(f(c.peer.ip()).unwrap_or_else(|| "-".into()));
            }
            r
        })
        .collect();
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[&str]| {
        let mut l = String::new();
        for (i, (c, &w)) in cells.iter().zip(&width).enumerate() {
            // Numbers right-aligned, text left-aligned.
            if (3..=7).contains(&i) || i == 10 {
                let _ = write!(l, "{c:>w$}  ");
            } else {
                let _ = write!(l, "{c:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut out, &header);
    for r in &rows {
        let cells: Vec<&str> = r.iter().map(String::as_str).collect();
        line(&mut out, &cells);
    }
    // The stateless engine lists only its longest-held connections; the
    // totals count all of them.
    let all = conns
        .len()
        .max(usize::try_from(snap.totals.held_now).unwrap_or(usize::MAX));
    if shown < all {
        let _ = writeln!(out, "... and {} more", all - shown);
    }
    out.push_str(&totals_line(snap));
    out.push('\n');
    out
}

/// `held now 3 · trapped since start 10 · attacker-hours wasted 1.25 · held-hours 2.50 · ...`
///
/// "Wasted" is engaged time (until the attacker's FIN or RST); held-hours
/// is what holding cost us. The part of the wasted figure that is only an
/// upper bound (peers found gone, see `record::engaged`) is named.
pub fn totals_line(snap: &Snapshot) -> String {
    let t = &snap.totals;
    let mut s = format!(
        "held now {} · trapped since start {} · attacker-hours wasted {:.2}",
        t.held_now,
        t.trapped,
        attacker_hours(snap),
    );
    if t.engaged_bound_secs > 0.0 {
        let _ = write!(
            s,
            " (of which {:.2} upper bound)",
            t.engaged_bound_secs / 3600.0
        );
    }
    let _ = write!(
        s,
        " · held-hours {:.2} · peer close attempts {}",
        held_hours(snap),
        t.close_attempts
    );
    if t.estimated {
        s.push_str(" · estimated (flows were evicted from the stateless table)");
    }
    if t.by_reason.is_empty() {
        s.push_str(" · ended: none");
    } else {
        s.push_str(" · ended:");
        let parts: Vec<String> = t
            .by_reason
            .iter()
            .map(|(k, v)| format!(" {k} {v}"))
            .collect();
        s.push_str(&parts.join(","));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Totals;
    use std::time::SystemTime;

    fn conn(peer: &str, held: f64) -> LiveConn {
        LiveConn {
            listener: "127.0.0.1:2222".into(),
            peer: peer.parse().unwrap(),
            local: "127.0.0.1:2222".parse().unwrap(),
            original_dst: "127.0.0.1:22".parse().unwrap(),
            start: SystemTime::now(),
            held_secs: held,
            engaged_secs: held,
            lifetime_left_secs: 100.0,
            bytes_queued: 5,
            bytes_received: 5,
            fin_after_secs: None,
            rtt_us: 1500,
            keepalive_idle_secs: 60,
            keepalive_intvl_secs: 60,
            state: "ESTABLISHED".into(),
            client: Default::default(),
            estimated: false,
            policy: "silent".into(),
        }
    }

    #[test]
    fn totals_line_says_when_figures_are_estimates() {
        let mut snap = Snapshot::default();
        assert!(!totals_line(&snap).contains("estimated"));
        snap.totals.estimated = true;
        assert!(totals_line(&snap).contains("estimated"));
    }

    #[test]
    fn table_sorted_longest_first_with_totals() {
        let mut by_reason = std::collections::BTreeMap::new();
        by_reason.insert("lifetime".to_string(), 4);
        let mut ssh = conn("127.0.0.3:1001", 3700.0);
        ssh.client = crate::classify::classify(b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n");
        ssh.policy = "bait=ssh,drip=10s".into();
        let snap = Snapshot {
            conns: vec![conn("127.0.0.2:1000", 5.0), ssh],
            totals: Totals {
                held_now: 2,
                trapped: 6,
                ended: 4,
                held_secs: 3600.0,
                live_held_secs: 3705.0,
                engaged_secs: 1800.0,
                live_engaged_secs: 3705.0,
                by_reason,
                ..Default::default()
            },
        };
        let t = render_table(&snap, None);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("PEER"));
        assert!(lines[1].starts_with("127.0.0.3:1001"), "{t}");
        assert!(lines[1].contains("1h01m"));
        assert!(
            lines[0].ends_with("POLICY             PROTO   CLIENT"),
            "{t}"
        );
        assert!(
            lines[1].ends_with("bait=ssh,drip=10s  ssh     OpenSSH_9.2p1"),
            "{t}"
        );
        assert!(lines[2].ends_with("silent             silent  -"), "{t}");
        assert!(lines[2].starts_with("127.0.0.2:1000"));
        assert!(lines[3].contains("held now 2"));
        assert!(lines[3].contains("trapped since start 6"));
        assert!(
            lines[3].contains("attacker-hours wasted 1.53 · held-hours 2.03"),
            "{}",
            lines[3]
        );
        assert!(lines[3].contains("lifetime 4"));
        let t = render_table(&snap, Some(1));
        assert!(t.contains("... and 1 more"));
    }

    #[test]
    fn durations_are_compact() {
        assert_eq!(fmt_secs(45.2), "45s");
        assert_eq!(fmt_secs(725.0), "12m05s");
        assert_eq!(fmt_secs(10920.0), "3h02m");
        assert_eq!(fmt_secs(187200.0), "2d04h");
    }
}
