//! What they tried, identified, end to end: real clients (OpenSSH `ssh`,
//! `curl` over HTTP and HTTPS, `openssl s_client`, plus a silent and a
//! garbage-sending socket) against a real `tarpit serve` on 127.0.0.1. While
//! held, `tarpit stats` names them; once released, the records, the history
//! rows, `tarpit report` and the metrics carry protocol, software and SNI,
//! and the report's and the metrics' sums equal the rows.

mod support;
use rusqlite::Connection;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use support::netns::which;
use support::stats::*;
use support::{bin, wait_for};

/// The second word of `curl --version` (`curl 7.88.1 (x86_64...`).
fn curl_version() -> String {
    let o = Command::new("curl").arg("--version").output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    text.split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

/// A client process capped at `secs` (killed after), its output discarded.
fn client(args: &[&str], secs: u32) -> std::process::Child {
    Command::new("timeout")
        .arg(secs.to_string())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn real_clients_are_named_in_records_history_report_and_metrics() {
    for tool in ["ssh", "curl", "openssl", "timeout"] {
        assert!(
            which(tool),
            "{tool} is needed (tests/run-all.sh installs it)"
        );
    }
    let ssh_software = {
        let o = Command::new("ssh").arg("-V").output().unwrap();
        let t = String::from_utf8_lossy(&o.stderr).to_string();
        t.split_whitespace().next().unwrap_or_default().to_string()
    };
    assert!(ssh_software.starts_with("OpenSSH_"), "{ssh_software}");
    let curl_version = curl_version();
    let dir = TempDir::new("classify");
    let db = dir.path().join("history.db");
    let maddr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut srv = Serve::start(
        dir.path(),
        &[
            "--history",
            db.to_str().unwrap(),
            "--metrics",
            &maddr.to_string(),
            "--lifetime-min",
            "8s",
            "--lifetime-max",
            "8s",
        ],
    );
    let port = srv.port.to_string();
    let url_host = format!("tarpit.test:{port}");
    let resolve = format!("{url_host}:127.0.0.1");
    let mut kids = vec![
        client(
            &[
                "ssh",
                "-F",
                "/dev/null",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-p",
                &port,
                "root@127.0.0.1",
            ],
            4,
        ),
        client(
            &[
                "curl",
                "-s",
                "-o",
                "/dev/null",
                &format!("http://127.0.0.1:{port}/wp-login.php?x=1"),
            ],
            4,
        ),
        client(
            &[
                "curl",
                "-sk",
                "-o",
                "/dev/null",
                "--resolve",
                &resolve,
                &format!("https://{url_host}/"),
            ],
            4,
        ),
        client(
            &[
                "openssl",
                "s_client",
                "-connect",
                &format!("127.0.0.1:{port}"),
                "-servername",
                "bait.test",
                "-alpn",
                "h2,http/1.1",
            ],
            4,
        ),
    ];
    let silent = TcpStream::connect(srv.addr()).unwrap();
    let mut other = TcpStream::connect(srv.addr()).unwrap();
    other.write_all(b"\x00\x01hello \x1b[2J\xff").unwrap();

    // While held: the live table names what each sent.
    let table = wait_for(20.0, "six classified live rows", || {
        let snap = srv.snapshot();
        let conns = snap["conns"].as_array()?.clone();
        let protos: Vec<&str> = conns
            .iter()
            .filter_map(|c| c["client"]["protocol"].as_str())
            .collect();
        let n = |p: &str| protos.iter().filter(|&&x| x == p).count();
        (conns.len() == 6 && n("ssh") == 1 && n("http") == 1 && n("tls") == 2 && n("other") == 1)
            .then(|| String::from_utf8_lossy(&srv.stats(&[]).stdout).to_string())
    });
    assert!(table.lines().next().unwrap().contains("PROTO"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.contains(" ssh ") && l.ends_with(&ssh_software)),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.contains(" http ") && l.ends_with(&format!("curl/{curl_version}"))),
        "{table}"
    );
    for k in &mut kids {
        let _ = k.wait();
    }

    // Released at their lifetime: six rows.
    wait_for(30.0, "six history rows", || {
        let c = Connection::open(&db).ok()?;
        let n: i64 = c
            .query_row("SELECT count(*) FROM connections", [], |r| r.get(0))
            .ok()?;
        (n == 6).then_some(())
    });
    drop((silent, other));
    let c = Connection::open(&db).unwrap();
    type Row = (
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let mut st = c
        .prepare(
            "SELECT protocol, software, http_path, http_host, tls_sni, tls_alpn, ja4
             FROM connections ORDER BY protocol, tls_sni",
        )
        .unwrap();
    let rows: Vec<Row> = st
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let protos: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        protos,
        ["http", "other", "silent", "ssh", "tls", "tls"],
        "{rows:?}"
    );
    let http = &rows[0];
    assert_eq!(
        http.1.as_deref(),
        Some(format!("curl/{curl_version}").as_str())
    );
    assert_eq!(http.2.as_deref(), Some("/wp-login.php?x=1"));
    assert_eq!(
        http.3.as_deref(),
        Some(format!("127.0.0.1:{port}").as_str())
    );
    assert_eq!(rows[3].1.as_deref(), Some(ssh_software.as_str()));
    // Sorted by SNI: openssl's bait.test, then curl's tarpit.test.
    for (row, sni) in [(&rows[4], "bait.test"), (&rows[5], "tarpit.test")] {
        assert_eq!(row.4.as_deref(), Some(sni), "{row:?}");
        assert_eq!(row.5.as_deref(), Some("h2,http/1.1"), "{row:?}");
        let ja4 = row.6.as_deref().unwrap_or_default();
        assert!(ja4.starts_with("t13d") && ja4.len() == 36, "{row:?}");
    }
    drop(st);

    // The records (JSON log) carry the same.
    let records: Vec<Value> = srv
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "tarpit::record")
        .collect();
    assert_eq!(records.len(), 6);
    let by = |p: &str| -> Vec<&Value> { records.iter().filter(|r| r["protocol"] == p).collect() };
    assert_eq!(by("ssh")[0]["software"], ssh_software.as_str());
    assert_eq!(by("http")[0]["http_path"], "/wp-login.php?x=1");
    let mut snis: Vec<&str> = by("tls")
        .iter()
        .filter_map(|r| r["tls_sni"].as_str())
        .collect();
    snis.sort_unstable();
    assert_eq!(snis, ["bait.test", "tarpit.test"]);
    assert!(by("other")[0]["head"]
        .as_str()
        .unwrap()
        .contains("\\x1b[2J\\xff"));
    assert!(by("silent")[0].get("software").is_none());

    // Report and metrics: per protocol, the rows' sums.
    let mut want: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    let mut st = c
        .prepare("SELECT protocol, count(*), sum(engaged_secs) FROM connections GROUP BY 1")
        .unwrap();
    for r in st
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, f64>(2)?,
            ))
        })
        .unwrap()
    {
        let (p, n, e) = r.unwrap();
        want.insert(p, (n as u64, e));
    }
    let o = Command::new(bin())
        .args(["report", "--history"])
        .arg(&db)
        .args(["--since", "1d", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rep: Value = serde_json::from_slice(&o.stdout).unwrap();
    let got: BTreeMap<String, (u64, f64)> = rep["protocols"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["protocol"].as_str().unwrap().to_string(),
                (
                    p["connections"].as_u64().unwrap(),
                    p["engaged_secs"].as_f64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(got, want);
    let clients = rep["clients"].as_array().unwrap();
    assert!(
        clients
            .iter()
            .any(|c| c["client"] == ssh_software.as_str() && c["protocol"] == "ssh"),
        "{clients:?}"
    );
    assert_eq!(clients.len(), 4, "ssh, curl, two JA4s: {clients:?}");
    let text = Command::new(bin())
        .args(["report", "--history"])
        .arg(&db)
        .args(["--since", "1d"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(text.contains("Top client software"), "{text}");
    assert!(text.contains(&ssh_software), "{text}");

    let (_, _, body) = http_get(maddr, "/metrics").unwrap();
    let s = parse_exposition(&body);
    for (p, (n, e)) in &want {
        let l = [("protocol", p.as_str())];
        assert_eq!(
            metric(&s, "tarpit_connections_by_protocol_total", &l),
            *n as f64,
            "{p}"
        );
        let m = metric(&s, "tarpit_attacker_time_by_protocol_seconds_total", &l);
        assert!((m - e).abs() < 1e-6, "{p}: metrics {m} rows {e}");
    }
    srv.stop();
}
