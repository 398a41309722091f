//! The arithmetic behind `cargo bench --bench efficacy`'s tables: per-tool
//! engaged figures from the tarpit's records, the 10 % / 2 s match, the
//! verdicts and the escaped last line of a tool's output.

mod support;

use serde_json::json;
use support::efficacy::*;

fn rec(
    peer: &str,
    start: &str,
    engaged: f64,
    held: f64,
    fin: bool,
    end: &str,
) -> serde_json::Value {
    json!({
        "target": "tarpit::record",
        "peer": peer,
        "start": start,
        "engaged_secs": engaged,
        "held_secs": held,
        "engaged_upper_bound": false,
        "peer_tried_close": fin,
        "end": end,
    })
}

#[test]
fn figures_span_from_first_accept_to_last_engaged_end_per_source() {
    let lines = [
        rec(
            "10.77.250.101:40000",
            "2026-12-01T13:00:00.000Z",
            10.0,
            70.0,
            true,
            "peer_reset",
        ),
        // A later, shorter connection of the same tool ends before the first.
        rec(
            "10.77.250.101:40002",
            "2026-12-01T13:00:02.500Z",
            3.0,
            65.0,
            true,
            "peer_reset",
        ),
        rec(
            "10.77.250.101:40004",
            "2026-12-01T13:00:20.000Z",
            5.5,
            30.0,
            false,
            "shutdown",
        ),
        rec(
            "10.77.250.102:50000",
            "2026-12-01T13:00:01.000Z",
            99.0,
            99.0,
            false,
            "shutdown",
        ),
        json!({"target": "tarpit::daemon", "message": "serving"}),
        json!({"target": "tarpit::record", "peer": "not an address"}),
    ];
    let conns: Vec<Conn> = lines.iter().filter_map(Conn::from_record).collect();
    assert_eq!(conns.len(), 4, "{conns:?}");
    let f = figures(&conns, "10.77.250.101".parse().unwrap());
    assert_eq!(f.conns, 3);
    assert_eq!(f.first, 1_796_130_000.0, "2026-12-01T13:00:00Z");
    let near = |got: Option<(f64, f64)>, want: (f64, f64)| {
        let (a, b) = got.expect("connected");
        assert!(
            (a - want.0).abs() < 1e-3 && (b - want.1).abs() < 1e-3,
            "{got:?}"
        );
    };
    // Started 1.5 s before its first accept, stuck 30 s in all.
    near(since_accept(30.0, f.first - 1.5, &f), (1.5, 28.5));
    // Record times are rounded: never before the start, never past the end.
    near(since_accept(30.0, f.first + 0.05, &f), (0.0, 30.0));
    near(since_accept(1.0, f.first - 5.0, &f), (1.0, 0.0));
    assert!((f.span - 25.5).abs() < 1e-9, "{f:?}");
    assert!((f.sum - 18.5).abs() < 1e-9, "{f:?}");
    assert!((f.held - 165.0).abs() < 1e-9, "{f:?}");
    assert_eq!(f.unfinished, 1);
    assert!(!f.bound);
    let none = figures(&conns, "10.77.250.103".parse().unwrap());
    assert_eq!(none, Figures::default());
    assert_eq!(since_accept(30.0, 0.0, &none), None);
}

/// A counted SYN wait moves the count's start back to the first SYN and
/// the engaged end stays where the connection's engaged ended.
#[test]
fn a_counted_syn_wait_starts_the_span_at_the_first_syn() {
    let mut r = rec(
        "10.77.250.101:40000",
        "2026-12-01T13:01:09.000Z",
        79.0,
        20.0,
        true,
        "peer_reset",
    );
    r["syn_wait_secs"] = json!(69.0);
    let c = Conn::from_record(&r).unwrap();
    assert_eq!(c.wait, 69.0);
    let f = figures(&[c], "10.77.250.101".parse().unwrap());
    assert_eq!(f.first, 1_796_130_000.0, "13:00:00Z, the first SYN");
    assert!((f.span - 79.0).abs() < 1e-9, "{f:?}");
    assert!((f.sum - 79.0).abs() < 1e-9, "{f:?}");
    // The tool started 0.5 s before its first SYN: pre 0.5, not 69.5.
    let (pre, since) = since_accept(80.0, f.first - 0.5, &f).unwrap();
    assert!((pre - 0.5).abs() < 1e-9 && (since - 79.5).abs() < 1e-9);
    assert!(matches(since, f.span));
}

#[test]
fn match_is_ten_percent_or_two_seconds_whichever_is_larger() {
    assert!(matches(10.0, 11.9));
    assert!(!matches(10.0, 12.1));
    assert!(matches(240.0, 217.0));
    assert!(!matches(240.0, 215.0));
    assert!(!matches(15.0, 0.0));
}

#[test]
fn verdicts_and_best_pick_the_longest_first_of_equals() {
    assert_eq!(compare(30.0, 10.0, 0.5), Verdict::Longer);
    assert_eq!(compare(10.2, 10.0, 0.5), Verdict::Same);
    assert_eq!(compare(2.0, 134.0, 0.5), Verdict::Shorter);
    // The bench's tolerance: 2 s, or 2 % of the longer above 100 s.
    assert_eq!(verdict(211.3, 212.2), Verdict::Same);
    assert_eq!(verdict(36.8, 34.7), Verdict::Longer);
    assert_eq!(verdict(10.1, 12.0), Verdict::Same);
    assert_eq!(verdict(21.5, 240.0), Verdict::Shorter);
    assert_eq!(verdict(234.0, 240.0), Verdict::Shorter);
    assert_eq!(verdict(236.0, 240.0), Verdict::Same);
    assert_eq!(best([("a", 1.0), ("b", 5.0), ("c", 5.0)]), Some(("b", 5.0)));
    assert_eq!(best(std::iter::empty()), None);
}

#[test]
fn last_line_is_escaped_and_cut() {
    let out = b"Connecting...\r\nkex_exchange_identification: banner line contains invalid characters \x1b[31m\n\n  \n";
    let l = last_line(out, 200);
    assert!(l.starts_with("kex_exchange_identification"), "{l}");
    assert!(l.ends_with("\\x1b[31m"), "{l}");
    assert_eq!(last_line(out, 10).chars().count(), 10);
    assert_eq!(last_line(b"", 10), "");
    assert_eq!(
        last_line(b"Starting\nefficacy-connect 1.5\n", 40),
        "Starting"
    );
}

#[test]
fn connect_marker_is_the_first_marker_line() {
    let out = b"noise\nefficacy-connect 1764594000.125\nefficacy-connect 5\nTraceback...\n";
    assert_eq!(connect_marker(out), Some(1764594000.125));
    assert_eq!(connect_marker(b"efficacy-connect soon\n"), None);
    assert_eq!(connect_marker(b""), None);
}
