//! The report's figures for a window, from the history's store.

use super::{percentile, utc_day};
use super::{
    AsnRow, Bucket, ClientRow, CountryRow, DayRow, HostRow, PolicyRow, PortRow, ProtocolRow,
    ReasonRow, Report, Totals, HIST_EDGES, TOP_N,
};
use crate::stats::history::store::{self, Window};
use rusqlite::Connection;

/// Computes the report over rows that ended in `[since, until]` (unix secs).
pub fn compute(c: &Connection, since: f64, until: f64) -> rusqlite::Result<Report> {
    let w = Window::new(c, since, until)?;
    let holds = store::holds(c, &w)?;
    let engaged = store::engaged(c, &w)?;
    let sums = store::sums(c, &w)?;
    let totals = Totals {
        connections: holds.len() as u64,
        unique_hosts: sums.unique_hosts,
        attacker_hours: sums.engaged_secs / 3600.0,
        attacker_hours_upper_bound: sums.engaged_bound_secs / 3600.0,
        held_hours: sums.held_secs / 3600.0,
        median_engaged_secs: percentile(&engaged, 0.5),
        p90_engaged_secs: percentile(&engaged, 0.9),
        median_hold_secs: percentile(&holds, 0.5),
        p90_hold_secs: percentile(&holds, 0.9),
        bytes_received: sums.bytes_received,
        close_attempts: sums.close_attempts,
    };
    let top_hosts = store::top_hosts(c, &w, TOP_N)?
        .into_iter()
        .map(|g| HostRow {
            host: g.key,
            connections: g.connections,
            engaged_secs: g.engaged_secs,
            held_secs: g.held_secs,
        })
        .collect();
    let ports = store::top_ports(c, &w, TOP_N)?
        .into_iter()
        .map(|g| PortRow {
            port: g.key,
            connections: g.connections,
            engaged_secs: g.engaged_secs,
            held_secs: g.held_secs,
        })
        .collect();
    let end_reasons = store::end_reasons(c, &w)?
        .into_iter()
        .map(|g| ReasonRow {
            reason: g.key,
            connections: g.connections,
        })
        .collect();

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
                engaged: 0,
            }
        })
        .collect();
    let bucket = |v: f64| HIST_EDGES.iter().rposition(|&edge| v >= edge).unwrap_or(0);
    for &h in &holds {
        histogram[bucket(h)].connections += 1;
    }
    for &en in &engaged {
        histogram[bucket(en)].engaged += 1;
    }

    // Per day, zeros included, from the window start (or the first row, for
    // very long windows) to its end.
    let mut days: std::collections::BTreeMap<String, (u64, f64, f64)> = Default::default();
    store::for_each_end(c, &w, |end, held, en| {
        let d = days.entry(utc_day(end)).or_default();
        d.0 += 1;
        d.1 += held;
        d.2 += en;
    })?;
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
        let (n, h, en) = days.get(&key).copied().unwrap_or((0, 0.0, 0.0));
        per_day.push(DayRow {
            day: key,
            connections: n,
            engaged_secs: en,
            held_secs: h,
        });
        d += 1;
    }

    let top_countries = store::top_countries(c, &w, TOP_N)?
        .into_iter()
        .map(|(g, hosts)| CountryRow {
            country: g.key,
            connections: g.connections,
            hosts,
            engaged_secs: g.engaged_secs,
            held_secs: g.held_secs,
        })
        .collect();
    let top_asns = store::top_asns(c, &w, TOP_N)?
        .into_iter()
        .map(|(g, org, hosts)| AsnRow {
            asn: g.key,
            org,
            connections: g.connections,
            hosts,
            engaged_secs: g.engaged_secs,
            held_secs: g.held_secs,
        })
        .collect();

    let protocols = store::by_protocol(c, &w)?
        .into_iter()
        .map(|g| ProtocolRow {
            protocol: g.key,
            connections: g.connections,
            engaged_secs: g.engaged_secs,
            held_secs: g.held_secs,
        })
        .collect();
    let clients = store::top_clients(c, &w, TOP_N)?
        .into_iter()
        .map(|(g, protocol, hosts)| ClientRow {
            client: g.key,
            protocol,
            connections: g.connections,
            hosts,
            engaged_secs: g.engaged_secs,
            held_secs: g.held_secs,
        })
        .collect();
    let policies = store::by_policy(c, &w)?
        .into_iter()
        .map(|(g, hosts, bound)| PolicyRow {
            policy: g.key,
            connections: g.connections,
            hosts,
            engaged_secs: g.engaged_secs,
            engaged_upper_bound_secs: bound,
            held_secs: g.held_secs,
        })
        .collect();

    Ok(Report {
        since,
        until,
        totals,
        top_hosts,
        ports,
        end_reasons,
        histogram,
        per_day,
        top_countries,
        top_asns,
        time_basis: "engaged",
        protocols,
        clients,
        policies,
    })
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
