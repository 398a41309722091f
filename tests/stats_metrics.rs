//! `/metrics` of a real `tarpit serve`, scraped over HTTP and parsed: the
//! values follow connections as they come and go, and no label carries a
//! peer address.

mod support;
use std::io::Write;
use std::net::{Ipv4Addr, Shutdown, SocketAddr};
use std::time::Duration;
use support::stats::*;
use support::{bin, poll};

fn scrape(addr: SocketAddr) -> Vec<Sample> {
    let (status, headers, body) = http_get(addr, "/metrics").expect("scrape");
    assert!(status.contains(" 200 "), "{status}");
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("application/openmetrics-text"),
        "{headers}"
    );
    assert!(
        body.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF"
    );
    parse_exposition(&body)
}

#[test]
fn metrics_follow_connections_without_peer_labels() {
    let dir = TempDir::new("metrics");
    let mport = free_port();
    let maddr: SocketAddr = format!("127.0.0.1:{mport}").parse().unwrap();
    let mut srv = Serve::start(
        dir.path(),
        &["--history", "off", "--metrics", &maddr.to_string()],
    );
    let l = format!("127.0.0.1:{}", srv.port);
    let lbl = [("listener", l.as_str())];

    let s = scrape(maddr);
    assert_eq!(metric(&s, "tarpit_held_connections", &lbl), 0.0);
    assert_eq!(metric(&s, "tarpit_connections_trapped_total", &lbl), 0.0);
    assert!(
        s.iter().any(|x| x.name == "tarpit_held_connections"),
        "series pre-created for the listener"
    );

    let mut clients = Vec::new();
    let sources: Vec<Ipv4Addr> = (0..6).map(|i| Ipv4Addr::new(127, 0, 3, 10 + i)).collect();
    for &src in &sources {
        clients.push(connect_from(src, srv.addr()).unwrap());
    }
    clients[0].write_all(b"hello").unwrap();
    clients[1].shutdown(Shutdown::Write).unwrap();

    let s = poll(Duration::from_secs(10), || {
        let s = scrape(maddr);
        (metric(&s, "tarpit_held_connections", &lbl) == 6.0
            && metric(&s, "tarpit_peer_close_attempts_total", &lbl) == 1.0)
            .then_some(s)
    })
    .expect("held 6 / close attempt 1 never shown");
    assert_eq!(metric(&s, "tarpit_connections_trapped_total", &lbl), 6.0);
    assert_eq!(metric(&s, "tarpit_hold_duration_seconds_count", &[]), 0.0);

    // Hold them a moment, then two reset (one of them had sent 5 bytes).
    std::thread::sleep(Duration::from_millis(400));
    let c1 = clients.remove(1);
    let c0 = clients.remove(0);
    reset(c0);
    reset(c1);
    let s = poll(Duration::from_secs(10), || {
        let s = scrape(maddr);
        (metric(&s, "tarpit_held_connections", &lbl) == 4.0).then_some(s)
    })
    .expect("held never dropped to 4");
    assert_eq!(metric(&s, "tarpit_connections_trapped_total", &lbl), 6.0);
    assert_eq!(
        metric(
            &s,
            "tarpit_connections_ended_total",
            &[("listener", &l), ("reason", "peer_reset")]
        ),
        2.0
    );
    assert_eq!(
        metric(
            &s,
            "tarpit_connections_ended_total",
            &[("reason", "lifetime")]
        ),
        0.0
    );
    assert_eq!(metric(&s, "tarpit_hold_duration_seconds_count", &[]), 2.0);
    let held = metric(&s, "tarpit_held_time_seconds_total", &[]);
    assert!(held >= 0.6, "two connections held >= 0.3 s each: {held}");
    assert!(
        (metric(&s, "tarpit_hold_duration_seconds_sum", &[]) - held).abs() < 1e-6,
        "histogram sum equals held seconds"
    );
    // The one that sent FIN at once wasted its attacker almost nothing; the
    // other was stuck until its RST.
    let wasted = metric(&s, "tarpit_attacker_time_wasted_seconds_total", &[]);
    assert!(
        wasted >= 0.3 && wasted < held - 0.2,
        "engaged until the FIN or RST: {wasted} of {held}"
    );
    assert!(
        (metric(&s, "tarpit_engaged_duration_seconds_sum", &[]) - wasted).abs() < 1e-6,
        "engaged histogram sum equals wasted seconds"
    );
    assert_eq!(
        metric(&s, "tarpit_peer_close_attempts_total", &lbl),
        1.0,
        "an RST is not a close attempt"
    );
    assert_eq!(metric(&s, "tarpit_unread_bytes_total", &[]), 5.0);
    // Buckets are cumulative and end with both connections in +Inf.
    let buckets: Vec<f64> = s
        .iter()
        .filter(|x| x.name == "tarpit_hold_duration_seconds_bucket")
        .map(|x| x.value)
        .collect();
    assert_eq!(buckets.len(), 17, "16 bounds (1 s .. 24 h) plus +Inf");
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    assert_eq!(
        metric(&s, "tarpit_hold_duration_seconds_bucket", &[("le", "+Inf")]),
        2.0
    );
    assert_eq!(
        metric(
            &s,
            "tarpit_hold_duration_seconds_bucket",
            &[("le", "86400.0")]
        ),
        2.0
    );

    // Every ended connection is counted under exactly one protocol.
    assert_eq!(
        metric(&s, "tarpit_connections_by_protocol_total", &[]),
        metric(&s, "tarpit_connections_ended_total", &[])
    );
    assert_eq!(
        s.iter()
            .filter(|x| x.name == "tarpit_connections_by_protocol_total")
            .count(),
        5
    );

    // No label anywhere carries a peer address, and label names are the
    // bounded set.
    let allowed = ["listener", "reason", "kind", "le", "protocol"];
    for x in &s {
        for (k, v) in &x.labels {
            if k == "protocol" {
                let fixed = ["ssh", "http", "tls", "other", "silent"];
                assert!(fixed.contains(&v.as_str()), "protocol {v} on {}", x.name);
            }
            assert!(
                allowed.contains(&k.as_str()),
                "unexpected label {k} on {}",
                x.name
            );
            for src in &sources {
                assert!(
                    !v.contains(&src.to_string()),
                    "peer address {src} in label {k}={v} of {}",
                    x.name
                );
            }
        }
    }

    // Other paths and methods are refused politely.
    let (status, _, _) = http_get(maddr, "/nope").unwrap();
    assert!(status.contains(" 404 "), "{status}");

    // Shutdown releases the rest: the server exits and the port closes.
    assert!(srv.stop().success());
    assert!(std::net::TcpStream::connect_timeout(&maddr, Duration::from_secs(2)).is_err());
}

#[test]
fn metrics_address_in_use_is_an_error_at_start() {
    let dir = TempDir::new("metricsbusy");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = busy.local_addr().unwrap().to_string();
    let o = std::process::Command::new(bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--history",
            "off",
            "--metrics",
            &a,
        ])
        .arg("--control")
        .arg(dir.path().join("c.sock"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&a) && err.contains("metrics"), "{err}");
}

/// Every serve metric the Grafana dashboard queries exists in a real scrape
/// (a renamed metric would silently blank a panel).
#[test]
fn grafana_dashboard_queries_existing_serve_metrics() {
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/grafana/tarpit.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let dir = TempDir::new("grafana");
    let maddr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _srv = Serve::start(
        dir.path(),
        &["--history", "off", "--metrics", &maddr.to_string()],
    );
    let (_, _, body) = http_get(maddr, "/metrics").unwrap();
    let mut names: std::collections::BTreeSet<String> = parse_exposition(&body)
        .into_iter()
        .map(|s| s.name)
        .collect();
    // Families without samples yet (no accept error so far) are declared.
    for l in body.lines() {
        let mut w = l.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(n), Some(t)) =
            (w.next(), w.next(), w.next(), w.next())
        {
            match t {
                "counter" => names.insert(format!("{n}_total")),
                "histogram" => names.insert(format!("{n}_bucket")),
                _ => names.insert(n.to_string()),
            };
        }
    }
    let mut checked = 0;
    let mut other_row = false;
    for p in dash["panels"].as_array().unwrap() {
        if p["type"] == "row" {
            // The watcher's own /metrics, and rows of families exported
            // only when configured (GeoIP by country, reports; their names
            // are checked by tests/geoip.rs and tests/report_abuseipdb.rs).
            other_row = p["title"].as_str().unwrap_or("").starts_with("Watch")
                || p["description"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("Only when configured");
            continue;
        }
        if other_row {
            continue;
        }
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(i) = rest.find("tarpit_") {
                let tail = &rest[i..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                let name = &tail[..end];
                assert!(
                    names.contains(name),
                    "dashboard queries {name}, not exported: {expr}"
                );
                checked += 1;
                rest = &tail[end..];
            }
        }
    }
    assert!(checked >= 10, "checked {checked} metric references");
}
