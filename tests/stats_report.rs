//! `tarpit report` over a known set of rows: the figures are the ones worked
//! out by hand below; the HTML page renders in headless Chromium and the
//! numbers on the rendered page equal those queried from the database.

mod support;
use rusqlite::Connection;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};
use support::bin;
use support::stats::*;
use tarpit::engine::record::{engaged, ConnRecord, EndFacts, EndReason};
use tarpit::stats::history;

const H: u64 = 3600;
const D: u64 = 86400;

/// (host, port aimed at, held secs, end reason, fin after, bytes, ended how long ago)
#[allow(clippy::type_complexity)]
const ROWS: &[(&str, u16, f64, EndReason, Option<f64>, u64, u64)] = &[
    ("127.0.8.1", 22, 1200.0, EndReason::Lifetime, None, 10, H),
    ("127.0.8.1", 22, 900.0, EndReason::Lifetime, None, 0, 2 * D),
    ("127.0.8.1", 23, 30.0, EndReason::PeerReset, None, 0, 3 * D),
    ("127.0.8.2", 22, 5.0, EndReason::PeerReset, Some(2.0), 0, H),
    ("127.0.8.2", 2222, 0.5, EndReason::EvictedPerIp, None, 0, D),
    ("127.0.8.3", 22, 3600.0, EndReason::Lifetime, None, 0, 4 * D),
    (
        "127.0.8.3",
        80,
        60.0,
        EndReason::PeerTimeout,
        None,
        0,
        5 * D,
    ),
    (
        "127.0.8.4",
        22,
        45.0,
        EndReason::Shutdown,
        Some(10.0),
        0,
        6 * D,
    ),
    (
        "127.0.8.5",
        443,
        120.0,
        EndReason::PeerReset,
        None,
        0,
        2 * H,
    ),
    ("127.0.8.6", 22, 7200.0, EndReason::Lifetime, None, 0, D),
    ("127.0.8.1", 22, 15.0, EndReason::PeerReset, None, 0, 3 * H),
    // Outside a 7-day window.
    (
        "127.0.8.9",
        22,
        99999.0,
        EndReason::Lifetime,
        None,
        0,
        20 * D,
    ),
];

/// The policy each row's port was held by: records name it (`Policy`'s
/// `Display`); an empty one (rows from before policies) counts as silent.
fn policy_of(port: u16) -> &'static str {
    match port {
        22 => "bait=ssh,drip=10s",
        80 => "window=zero",
        443 => "syn_delay=60s",
        23 => "silent",
        _ => "",
    }
}

fn build_db(dir: &Path) -> PathBuf {
    let db = dir.join("history.db");
    let mut c = history::open_for_writing(&db).unwrap();
    let now = SystemTime::now();
    let recs: Vec<ConnRecord> = ROWS
        .iter()
        .enumerate()
        .map(|(i, &(host, port, held, end, fin, bytes, ago))| {
            let ended = now - Duration::from_secs(ago);
            // The peer_timeout row was last heard of 40 s before it was
            // found gone: engaged 20 s, an upper bound.
            let (engaged_secs, engaged_upper_bound) = engaged(&EndFacts {
                held_secs: held,
                fin_after_secs: fin,
                end,
                silent_secs: (end == EndReason::PeerTimeout).then_some(40.0),
                reset_by_probe: false,
                reset_by_bait: false,
            });
            ConnRecord {
                listener: "0.0.0.0:2222".into(),
                peer: format!("{host}:{}", 40000 + i).parse().unwrap(),
                local: "10.77.0.1:2222".parse().unwrap(),
                original_dst: format!("10.77.0.1:{port}").parse().unwrap(),
                start: ended - Duration::from_secs_f64(held),
                held_secs: held,
                engaged_secs,
                engaged_upper_bound,
                syn_wait_secs: 0.0,
                bytes_received: bytes,
                fin_after_secs: fin,
                end,
                head: String::new(),
                client: Default::default(),
                estimated: false,
                policy: policy_of(port).into(),
            }
        })
        .collect();
    history::insert_batch(&mut c, &recs).unwrap();
    db
}

fn report(db: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(bin())
        .arg("report")
        .arg("--history")
        .arg(db)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn report_figures_from_known_rows() {
    let dir = TempDir::new("report");
    let db = build_db(dir.path());
    let o = report(&db, &["--since", "7d", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    let t = &r["totals"];
    assert_eq!(t["connections"], 11);
    assert_eq!(t["unique_hosts"], 6);
    // Held: 0.5+5+15+30+45+60+120+900+1200+3600+7200 = 13175.5 s. Engaged:
    // the same, but 2 (not 5) and 10 (not 45) where the peer sent FIN, and
    // 20 (not 60) for the peer found gone: 13097.5 s, 20 s of it a bound.
    assert!((t["held_hours"].as_f64().unwrap() - 13175.5 / 3600.0).abs() < 1e-9);
    assert!((t["attacker_hours"].as_f64().unwrap() - 13097.5 / 3600.0).abs() < 1e-9);
    assert!((t["attacker_hours_upper_bound"].as_f64().unwrap() - 20.0 / 3600.0).abs() < 1e-9);
    // Sorted engaged: 0.5 2 10 15 20 30 120 900 1200 3600 7200.
    assert_eq!(t["median_engaged_secs"], 30.0);
    assert_eq!(t["p90_engaged_secs"], 3600.0);
    // Sorted holds: 0.5 5 15 30 45 60 120 900 1200 3600 7200; nearest rank
    // 6 of 11 and 10 of 11.
    assert_eq!(t["median_hold_secs"], 60.0);
    assert_eq!(t["p90_hold_secs"], 3600.0);
    assert_eq!(t["bytes_received"], 10);
    assert_eq!(t["close_attempts"], 2);

    let hosts: Vec<(String, u64, f64, f64)> = r["top_hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["host"].as_str().unwrap().to_string(),
                h["connections"].as_u64().unwrap(),
                h["engaged_secs"].as_f64().unwrap(),
                h["held_secs"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        hosts,
        vec![
            ("127.0.8.6".into(), 1, 7200.0, 7200.0),
            ("127.0.8.3".into(), 2, 3620.0, 3660.0),
            ("127.0.8.1".into(), 4, 2145.0, 2145.0),
            ("127.0.8.5".into(), 1, 120.0, 120.0),
            ("127.0.8.4".into(), 1, 10.0, 45.0),
            ("127.0.8.2".into(), 2, 2.5, 5.5),
        ]
    );
    let ports: Vec<(u64, u64)> = r["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["port"].as_u64().unwrap(),
                p["connections"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ports, vec![(22, 7), (23, 1), (80, 1), (443, 1), (2222, 1)]);
    let reasons: Vec<(String, u64)> = r["end_reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["reason"].as_str().unwrap().to_string(),
                e["connections"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("lifetime".into(), 4),
            ("peer_reset".into(), 4),
            ("evicted_per_ip".into(), 1),
            ("peer_timeout".into(), 1),
            ("shutdown".into(), 1),
        ]
    );
    let hist: Vec<u64> = r["histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["connections"].as_u64().unwrap())
        .collect();
    // Edges 0 1 10 60 300 600 900 1200 1800 3600 6h 24h.
    assert_eq!(hist, vec![1, 1, 3, 2, 0, 0, 1, 1, 0, 2, 0, 0]);
    let hist_engaged: Vec<u64> = r["histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["engaged"].as_u64().unwrap())
        .collect();
    assert_eq!(hist_engaged, vec![1, 1, 4, 1, 0, 0, 1, 1, 0, 2, 0, 0]);

    // Per day: the database's own grouping by UTC date is the oracle.
    let c = Connection::open(&db).unwrap();
    let since = r["since"].as_f64().unwrap();
    let mut st = c
        .prepare(
            "SELECT date(end_time, 'unixepoch'), count(*), sum(held_secs) FROM connections
             WHERE end_time >= ?1 GROUP BY 1",
        )
        .unwrap();
    let want: Vec<(String, u64, f64)> = st
        .query_map([since], |r| {
            Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?))
        })
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let days = r["per_day"].as_array().unwrap();
    assert!((8..=9).contains(&days.len()), "7 days back plus today");
    let nonzero: Vec<(String, u64, f64)> = days
        .iter()
        .filter(|d| d["connections"].as_u64().unwrap() > 0)
        .map(|d| {
            (
                d["day"].as_str().unwrap().to_string(),
                d["connections"].as_u64().unwrap(),
                d["held_secs"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(nonzero, want);
    assert_eq!(
        days.iter()
            .map(|d| d["connections"].as_u64().unwrap())
            .sum::<u64>(),
        11
    );

    // Per policy (hosts, engaged, of it upper bound, held): port 22's seven
    // rows under bait (engaged 1200+900+2+3600+10+7200+15, held
    // 1200+900+5+3600+45+7200+15); 443 under syn_delay; 23 ("silent") and
    // 2222 (no policy recorded) together as silent; 80 under window=zero,
    // whose row is the peer found gone (engaged 20 s, a bound). They add up
    // to the totals.
    let policies: Vec<(String, u64, u64, f64, f64, f64)> = r["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["policy"].as_str().unwrap().to_string(),
                p["connections"].as_u64().unwrap(),
                p["hosts"].as_u64().unwrap(),
                p["engaged_secs"].as_f64().unwrap(),
                p["engaged_upper_bound_secs"].as_f64().unwrap(),
                p["held_secs"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        policies,
        vec![
            ("bait=ssh,drip=10s".into(), 7, 5, 12927.0, 0.0, 12965.0),
            ("syn_delay=60s".into(), 1, 1, 120.0, 0.0, 120.0),
            ("silent".into(), 2, 2, 30.5, 0.0, 30.5),
            ("window=zero".into(), 1, 1, 20.0, 20.0, 60.0),
        ]
    );

    // The terminal report shows the same figures.
    let o = report(&db, &["--since", "7d"]);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    for needle in [
        "connections          11",
        "unique hosts         6",
        "attacker-hours       3.64 wasted",
        "held-hours           3.66",
        "(60.0s)",
        "(3600.0s)",
        "127.0.8.6",
        "peer_reset",
        "Policies by attacker time wasted",
        "bait=ssh,drip=10s",
        "window=zero",
    ] {
        assert!(text.contains(needle), "{needle:?} missing in\n{text}");
    }
    // A narrower window leaves out older rows.
    let o = report(&db, &["--since", "1d", "--json"]);
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["totals"]["connections"], 4, "ended within the last day");
}

fn chromium() -> Option<String> {
    for c in ["chromium", "chromium-browser"] {
        if Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Some(c.to_string());
        }
    }
    if std::env::var_os("CI").is_some() {
        panic!("chromium is needed in CI (tests/run-all.sh installs it)");
    }
    eprintln!("SKIP html report rendering: chromium not installed");
    None
}

fn headless(bin: &str, profile: &Path, extra: &[&str], page: &Path) -> std::process::Output {
    Command::new("timeout")
        .arg("120")
        .arg(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap()
}

/// Text of the element with `id`.
fn by_id(dom: &str, id: &str) -> String {
    let key = format!("id=\"{id}\"");
    let at = dom.find(&key).unwrap_or_else(|| panic!("no #{id} in page"));
    let rest = &dom[at..];
    let open = rest.find('>').unwrap() + 1;
    let close = rest[open..].find('<').unwrap();
    rest[open..open + close].trim().to_string()
}

/// Cells of the row with `attr="val"`.
fn row_cells(dom: &str, attr: &str, val: &str) -> Vec<String> {
    let key = format!("{attr}=\"{val}\"");
    let at = dom.find(&key).unwrap_or_else(|| panic!("no row {key}"));
    let end = at + dom[at..].find("</tr>").unwrap();
    dom[at..end]
        .split("<td")
        .skip(1)
        .map(|c| {
            let open = c.find('>').unwrap() + 1;
            let close = c[open..].find('<').unwrap_or(c.len() - open);
            c[open..open + close].trim().to_string()
        })
        .collect()
}

#[test]
fn html_report_renders_and_matches_the_database() {
    let Some(chrome) = chromium() else {
        return;
    };
    let dir = TempDir::new("reporthtml");
    let db = build_db(dir.path());
    let page = dir.path().join("report.html");
    let o = report(&db, &["--since", "7d", "--html", page.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("<svg"), "inline SVG charts");
    for forbidden in ["<script", "<link", "src=", "href=", "@import", "url("] {
        assert!(
            !html.contains(forbidden),
            "page must be self-contained: {forbidden}"
        );
    }

    let profile = dir.path().join("chrome-profile");
    let o = headless(&chrome, &profile, &["--dump-dom"], &page);
    assert!(
        o.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let dom = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(dom.contains("tarpit report"), "rendered DOM: {dom:.300}");
    assert_eq!(dom.matches("<svg").count(), 3, "three charts rendered");
    assert!(dom.contains("<rect"), "bars drawn");

    // Figures queried straight from the database for the same window.
    let c = Connection::open(&db).unwrap();
    let since = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        - 7.0 * 86400.0
        - 120.0; // the report ran a moment ago; no row is that close to the edge
    let (n, hosts, secs, bytes, held): (i64, i64, f64, i64, f64) = c
        .query_row(
            "SELECT count(*), count(DISTINCT peer_ip), sum(engaged_secs), sum(bytes_received),
                    sum(held_secs)
             FROM connections WHERE end_time >= ?1",
            [since],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    assert_eq!(by_id(&dom, "held-hours"), format!("{:.2}", held / 3600.0));
    assert_eq!(by_id(&dom, "connections"), n.to_string());
    assert_eq!(by_id(&dom, "unique-hosts"), hosts.to_string());
    assert_eq!(
        by_id(&dom, "attacker-hours"),
        format!("{:.2}", secs / 3600.0)
    );
    assert_eq!(by_id(&dom, "bytes-received"), bytes.to_string());
    let mut holds: Vec<f64> = c
        .prepare("SELECT held_secs FROM connections WHERE end_time >= ?1 ORDER BY held_secs")
        .unwrap()
        .query_map([since], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    holds.sort_by(f64::total_cmp);
    let rank = |p: f64| holds[((p * holds.len() as f64).ceil() as usize).max(1) - 1];
    assert_eq!(by_id(&dom, "median-hold"), format!("{:.1}", rank(0.5)));
    assert_eq!(by_id(&dom, "p90-hold"), format!("{:.1}", rank(0.9)));

    let mut st = c
        .prepare(
            "SELECT orig_port, count(*) FROM connections WHERE end_time >= ?1 GROUP BY orig_port",
        )
        .unwrap();
    for row in st
        .query_map([since], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
        .unwrap()
    {
        let (port, cnt) = row.unwrap();
        let cells = row_cells(&dom, "data-port", &port.to_string());
        assert_eq!(cells[1], cnt.to_string(), "port {port}");
    }
    let mut st = c
        .prepare(
            "SELECT peer_ip, count(*), sum(engaged_secs), sum(held_secs) FROM connections
             WHERE end_time >= ?1 GROUP BY peer_ip",
        )
        .unwrap();
    for row in st
        .query_map([since], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, f64>(2)?,
                r.get::<_, f64>(3)?,
            ))
        })
        .unwrap()
    {
        let (host, cnt, engaged, held) = row.unwrap();
        let cells = row_cells(&dom, "data-host", &host);
        assert_eq!(cells[1], cnt.to_string(), "host {host}");
        assert_eq!(cells[2], format!("{engaged:.1}"), "host {host}");
        assert_eq!(cells[3], format!("{held:.1}"), "host {host}");
    }
    let mut st = c
        .prepare(
            "SELECT end_reason, count(*) FROM connections WHERE end_time >= ?1 GROUP BY end_reason",
        )
        .unwrap();
    for row in st
        .query_map([since], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })
        .unwrap()
    {
        let (reason, cnt) = row.unwrap();
        assert_eq!(row_cells(&dom, "data-reason", &reason)[1], cnt.to_string());
    }
    let mut st = c
        .prepare(
            "SELECT date(end_time, 'unixepoch'), count(*), sum(engaged_secs), sum(held_secs)
             FROM connections WHERE end_time >= ?1 GROUP BY 1",
        )
        .unwrap();
    for row in st
        .query_map([since], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, f64>(2)?,
                r.get::<_, f64>(3)?,
            ))
        })
        .unwrap()
    {
        let (day, cnt, engaged, held) = row.unwrap();
        let cells = row_cells(&dom, "data-day", &day);
        assert_eq!(cells[1], cnt.to_string(), "day {day}");
        assert_eq!(cells[2], format!("{:.2}", engaged / 3600.0), "day {day}");
        assert_eq!(cells[3], format!("{:.2}", held / 3600.0), "day {day}");
    }

    let mut st = c
        .prepare(
            "SELECT coalesce(nullif(policy, ''), 'silent'), count(*), count(DISTINCT peer_ip),
                    sum(engaged_secs), sum(held_secs)
             FROM connections WHERE end_time >= ?1 GROUP BY 1",
        )
        .unwrap();
    let mut n_policies = 0;
    for row in st
        .query_map([since], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, f64>(3)?,
                r.get::<_, f64>(4)?,
            ))
        })
        .unwrap()
    {
        let (policy, cnt, hosts, engaged, held) = row.unwrap();
        let cells = row_cells(&dom, "data-policy", &policy);
        assert_eq!(cells[1], cnt.to_string(), "policy {policy}");
        assert_eq!(cells[2], hosts.to_string(), "policy {policy}");
        assert_eq!(cells[3], format!("{engaged:.1}"), "policy {policy}");
        assert_eq!(cells[5], format!("{held:.1}"), "policy {policy}");
        n_policies += 1;
    }
    assert_eq!(n_policies, 4);

    // And it paints: a screenshot is a real, non-trivial PNG.
    let shot = dir.path().join("report.png");
    let o = headless(
        &chrome,
        &profile,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1000,2400",
            "--hide-scrollbars",
        ],
        &page,
    );
    assert!(
        o.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(
        png.len() > 20_000,
        "screenshot too small to hold the charts: {}",
        png.len()
    );
}
