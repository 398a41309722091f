//! `tarpit watch --metrics`: its own Prometheus endpoint, scraped over HTTP
//! inside a namespace the test made.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use support::netns::{privileged, Netns};
use support::watch::{ban_line, Scene, WatchProc};
use support::{bin, wait_for};

fn scrape(ns: &Netns) -> String {
    ns.in_thread(|| {
        let mut s = TcpStream::connect("127.0.0.1:9465").expect("metrics port");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
}

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn watch_metrics_count_lines_bans_and_batches_without_addresses() {
    if !privileged("watch_metrics_count_lines_bans_and_batches_without_addresses") {
        return;
    }
    let ns = Netns::new("wmet");
    let sc = Scene::new("wmet", "", "");
    let mut c = ns.command(bin());
    c.args(["--log-format", "json", "--config"])
        .arg(&sc.conf)
        .args(["watch", "--metrics", "127.0.0.1:9465"]);
    let mut w = WatchProc::spawn(c);
    for _ in 0..3 {
        sc.append(&ban_line("sshd", "10.77.1.5"));
    }
    sc.append(&ban_line("sshd", "127.0.0.1")); // loopback: never banned
    sc.append("2026-01-01 00:00:00,000 unrelated line\n");
    sc.append("binary \0 junk\n");
    let matched = "tarpit_log_lines_total{jail=\"multi-ban\",result=\"matched\"}";
    let ignored = "tarpit_log_lines_total{jail=\"multi-ban\",result=\"ignored\"}";
    let unmatched = "tarpit_log_lines_total{jail=\"multi-ban\",result=\"unmatched\"}";
    let skipped = "tarpit_log_lines_total{jail=\"multi-ban\",result=\"skipped\"}";
    // The ban is counted when its line is read and the gauge follows once
    // nft has the element: wait for both, and for every line to be read.
    let text = wait_for(10.0, "the ban, the gauge and every line", || {
        let t = scrape(&ns);
        (value(&t, "tarpit_bans_total{jail=\"multi-ban\"}") == Some(1.0)
            && value(&t, "tarpit_active_bans") == Some(1.0)
            && value(&t, skipped).is_some()
            && value(&t, unmatched).is_some())
        .then_some(t)
    });
    assert_eq!(value(&text, matched), Some(3.0), "{text}");
    assert_eq!(value(&text, ignored), Some(1.0), "{text}");
    assert_eq!(value(&text, unmatched), Some(1.0), "{text}");
    assert_eq!(value(&text, skipped), Some(1.0), "{text}");
    assert_eq!(value(&text, "tarpit_active_bans"), Some(1.0), "{text}");
    assert!(
        value(&text, "tarpit_nft_batches_total").unwrap_or(0.0) >= 2.0,
        "restore + ban: {text}"
    );
    assert_eq!(value(&text, "tarpit_nft_errors_total"), Some(0.0), "{text}");
    assert!(
        value(&text, "tarpit_restore_duration_seconds").is_some_and(|d| d > 0.0),
        "{text}"
    );
    assert!(
        !text.contains("10.77.") && !text.contains("127.0.0.1"),
        "no address in any label: {text}"
    );
    // Flushing the ruleset: the rebuild is another batch, bans stay counted.
    ns.run("nft flush ruleset");
    let after = wait_for(10.0, "rebuild batch", || {
        let t = scrape(&ns);
        (value(&t, "tarpit_nft_batches_total").unwrap_or(0.0) >= 3.0).then_some(t)
    });
    assert_eq!(value(&after, "tarpit_active_bans"), Some(1.0), "{after}");
    w.stop();
}
