//! `tarpit stats` against a real `tarpit serve`: the table and JSON show
//! exactly the connections this test holds, totals follow them as they end,
//! a stopped server is reported plainly, and misbehaving control clients do
//! not stall trapping.

mod support;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;
use support::stats::*;
use support::{bin, poll};

fn conns(snap: &Value) -> Vec<Value> {
    snap["conns"].as_array().cloned().unwrap_or_default()
}

fn find<'a>(cs: &'a [Value], peer: &str) -> &'a Value {
    cs.iter()
        .find(|c| c["peer"] == peer)
        .unwrap_or_else(|| panic!("{peer} not in snapshot: {cs:?}"))
}

#[test]
fn live_table_matches_held_connections() {
    let dir = TempDir::new("live");
    let mut srv = Serve::start(dir.path(), NO_HISTORY);
    let mode = std::fs::metadata(&srv.control)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660, "control socket mode");

    // Five clients from distinct sources; two send bytes, one half-closes.
    let mut clients = Vec::new();
    for i in 0..5u8 {
        let c = connect_from(Ipv4Addr::new(127, 0, 0, 20 + i), srv.addr()).unwrap();
        clients.push(c);
    }
    clients[0].write_all(b"SSH-2.0-test\r\n").unwrap();
    clients[1].write_all(b"0123456789").unwrap();
    clients[2].shutdown(Shutdown::Write).unwrap();
    let peers: Vec<String> = clients
        .iter()
        .map(|c| c.local_addr().unwrap().to_string())
        .collect();

    let snap = poll(Duration::from_secs(10), || {
        let s = srv.snapshot();
        let cs = conns(&s);
        let ready = cs.len() == 5
            && find(&cs, &peers[0])["bytes_received"] == 14
            && find(&cs, &peers[1])["bytes_received"] == 10
            && !find(&cs, &peers[2])["fin_after_secs"].is_null();
        ready.then_some(s)
    })
    .expect("snapshot never showed the five connections with their bytes");
    let cs = conns(&snap);
    for p in &peers {
        let c = find(&cs, p);
        assert_eq!(c["listener"], format!("127.0.0.1:{}", srv.port));
        assert_eq!(c["original_dst"], srv.addr().to_string());
        assert!(c["lifetime_left_secs"].as_f64().unwrap() > 0.0);
        assert_eq!(c["state"].as_str().map(|s| s.is_empty()), Some(false));
    }
    assert_eq!(find(&cs, &peers[0])["bytes_queued"], 14, "never read");
    assert!(find(&cs, &peers[3])["fin_after_secs"].is_null());
    assert_eq!(snap["totals"]["held_now"], 5);
    assert_eq!(snap["totals"]["trapped"], 5);
    assert_eq!(snap["totals"]["close_attempts"], 1);

    // The table: every peer, its aimed-at port, and the totals line.
    let o = srv.stats(&[]);
    assert!(o.status.success());
    let table = String::from_utf8_lossy(&o.stdout).to_string();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("PEER"), "{table}");
    assert_eq!(lines.len(), 1 + 5 + 1, "{table}");
    for p in &peers {
        assert!(table.contains(p.as_str()), "{p} missing in\n{table}");
    }
    let close_row = lines.iter().find(|l| l.starts_with(&peers[2])).unwrap();
    assert!(close_row.contains("yes@"), "{close_row}");
    let totals = lines.last().unwrap();
    assert!(totals.contains("held now 5"), "{totals}");
    assert!(totals.contains("trapped since start 5"), "{totals}");
    assert!(totals.contains("ended: none"), "{totals}");

    // Two peers reset: the live view drops them and counts the reason.
    let c4 = clients.pop().unwrap();
    let c3 = clients.pop().unwrap();
    reset(c4);
    reset(c3);
    let snap = poll(Duration::from_secs(10), || {
        let s = srv.snapshot();
        (s["totals"]["held_now"] == 3).then_some(s)
    })
    .expect("resets never seen");
    assert_eq!(snap["totals"]["by_reason"]["peer_reset"], 2);
    assert!(conns(&snap)
        .iter()
        .all(|c| c["peer"] != peers[3] && c["peer"] != peers[4]));
    let table = String::from_utf8_lossy(&srv.stats(&[]).stdout).to_string();
    assert!(table.contains("peer_reset 2"), "{table}");

    // A stopped server: a plain message and exit 1.
    assert!(srv.stop().success());
    let o = srv.stats(&[]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not running"), "{err}");
    assert!(!srv.control.exists(), "socket file removed on exit");
}

#[test]
fn misbehaving_control_clients_do_not_stall_trapping() {
    let dir = TempDir::new("ctlabuse");
    let srv = Serve::start(dir.path(), NO_HISTORY);

    // Idle clients that never send a byte.
    let idle: Vec<UnixStream> = (0..10)
        .map(|_| UnixStream::connect(&srv.control).unwrap())
        .collect();
    // A client that streams garbage without a newline.
    let mut flood = UnixStream::connect(&srv.control).unwrap();
    flood
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = flood.write_all(&vec![b'x'; 200 * 1024]);
    // A client with a garbage line gets an error answer.
    let mut garbage = UnixStream::connect(&srv.control).unwrap();
    garbage.write_all(b"\x00\xffnot json\n").unwrap();
    garbage
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    let _ = garbage.read_to_string(&mut answer);
    let v: Value = serde_json::from_str(answer.trim()).unwrap();
    assert_eq!(v["ok"], false);
    assert!(v["error"].as_str().unwrap().contains("bad request"));

    // Hold some connections first so each snapshot answer is sizeable, then a
    // client that asks for many snapshots and never reads the answers.
    let mut held = Vec::new();
    for i in 0..40u8 {
        held.push(connect_from(Ipv4Addr::new(127, 0, 1, 1 + i), srv.addr()).unwrap());
    }
    let mut deaf = UnixStream::connect(&srv.control).unwrap();
    deaf.set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    for _ in 0..300 {
        if deaf.write_all(b"{\"cmd\":\"snapshot\"}\n").is_err() {
            break;
        }
    }

    // Trapping and answering go on while all of them hang around.
    for i in 0..40u8 {
        held.push(connect_from(Ipv4Addr::new(127, 0, 2, 1 + i), srv.addr()).unwrap());
    }
    let snap = poll(Duration::from_secs(10), || {
        let s = srv.snapshot();
        (s["totals"]["held_now"] == 80).then_some(s)
    })
    .expect("server stopped trapping or answering while control clients misbehaved");
    assert_eq!(snap["totals"]["trapped"], 80);

    // The idle ones are eventually dropped by the server (read timeout).
    for mut c in idle {
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut b = [0u8; 1];
        assert_eq!(c.read(&mut b).unwrap_or(0), 0, "idle client closed");
    }
    // An oversized line is refused with an error.
    let mut big = UnixStream::connect(&srv.control).unwrap();
    let mut req = vec![b' '; 70 * 1024];
    req.extend_from_slice(b"\n");
    let _ = big.write_all(&req);
    big.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = String::new();
    let _ = big.read_to_string(&mut answer);
    assert!(answer.contains("longer than"), "{answer}");
    drop((flood, deaf, held));
}

#[test]
fn live_rows_name_their_policy() {
    let dir = TempDir::new("livepolicy");
    let bait_port = free_port();
    let listen = format!("127.0.0.1:{bait_port}");
    let policy = format!("{bait_port}:bait=http,drip=10s");
    let srv = Serve::start(
        dir.path(),
        &["--history", "off", "--listen", &listen, "--policy", &policy],
    );
    let silent = connect_from(Ipv4Addr::new(127, 0, 0, 30), srv.addr()).unwrap();
    let bait = connect_from(
        Ipv4Addr::new(127, 0, 0, 31),
        ([127, 0, 0, 1], bait_port).into(),
    )
    .unwrap();
    let (sp, bp) = (
        silent.local_addr().unwrap().to_string(),
        bait.local_addr().unwrap().to_string(),
    );
    let snap = poll(Duration::from_secs(10), || {
        let s = srv.snapshot();
        (conns(&s).len() == 2).then_some(s)
    })
    .expect("snapshot never showed both connections");
    let cs = conns(&snap);
    assert_eq!(find(&cs, &sp)["policy"], "silent");
    assert_eq!(find(&cs, &bp)["policy"], "bait=http,drip=10s");
    let table = String::from_utf8_lossy(&srv.stats(&[]).stdout).to_string();
    assert!(table.lines().next().unwrap().contains("POLICY"), "{table}");
    let row = |p: &str| {
        table
            .lines()
            .find(|l| l.starts_with(p))
            .unwrap()
            .to_string()
    };
    assert!(row(&sp).contains(" silent "), "{table}");
    assert!(row(&bp).contains(" bait=http,drip=10s "), "{table}");
}

#[test]
fn second_server_on_same_control_socket_is_refused() {
    let dir = TempDir::new("ctlinuse");
    let _a = Serve::start(dir.path(), NO_HISTORY);
    let o = std::process::Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--control"])
        .arg(dir.path().join("control.sock"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("already answering"), "{err}");
}

#[test]
fn watch_redraws_and_exits_when_the_server_stops() {
    use std::process::{Command, Stdio};
    let dir = TempDir::new("watch");
    let mut srv = Serve::start(dir.path(), NO_HISTORY);
    let _c = connect_from(Ipv4Addr::new(127, 0, 9, 1), srv.addr()).unwrap();
    let mut w = Command::new(bin())
        .args(["stats", "--watch", "--control"])
        .arg(&srv.control)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = w.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    std::thread::sleep(Duration::from_millis(2500));
    assert!(srv.stop().success());
    let st = poll(Duration::from_secs(10), || w.try_wait().ok().flatten());
    let st = match st {
        Some(s) => s,
        None => {
            let _ = w.kill();
            panic!("stats --watch did not notice the server stopped");
        }
    };
    assert_eq!(st.code(), Some(1));
    let text = reader.join().unwrap();
    assert!(text.matches("\x1b[2J").count() >= 2, "redrawn: {text:?}");
    assert!(text.contains("127.0.9.1:"), "{text}");
    assert!(text.contains("held now 1"), "{text}");
    let mut err = String::new();
    let _ = w.stderr.take().unwrap().read_to_string(&mut err);
    assert!(err.contains("not running"), "{err}");
}

/// One request line, one answer, over the control socket.
fn ask(srv: &Serve, req: &str) -> Value {
    use std::io::BufRead;
    let mut s = UnixStream::connect(&srv.control).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("{req}\n").as_bytes()).unwrap();
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line).unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["ok"], true, "{req}: {v}");
    v["data"].clone()
}

/// Issue 12 item 5: a snapshot lists a bounded page (longest-held first,
/// `limit`/`offset`, at most 10,000 whatever is asked) with totals over all,
/// `totals` answers without listing anything, and `tarpit stats` asks for
/// `--limit` rows, `--all` pages, `--totals` only the totals. Before, every
/// snapshot listed every held connection and there was no `totals`.
#[test]
fn snapshots_are_paged_and_totals_come_alone() {
    use std::io::BufRead;
    let dir = TempDir::new("pages");
    let srv = Serve::start(dir.path(), NO_HISTORY);
    let mut held = Vec::new();
    for i in 0..12u8 {
        held.push(connect_from(Ipv4Addr::new(127, 0, 3, 1 + i), srv.addr()).unwrap());
        // Distinct start ticks (100 ms), so "longest-held first" is one order.
        std::thread::sleep(Duration::from_millis(120));
    }
    let peers: Vec<String> = held
        .iter()
        .map(|c| c.local_addr().unwrap().to_string())
        .collect();
    poll(Duration::from_secs(10), || {
        (ask(&srv, r#"{"cmd":"totals"}"#)["totals"]["held_now"] == 12).then_some(())
    })
    .expect("12 held");
    let t = ask(&srv, r#"{"cmd":"totals"}"#);
    assert!(t.get("conns").is_none(), "{t}");
    assert_eq!(t["totals"]["trapped"], 12);
    assert!(t["totals"]["live_held_secs"].as_f64().unwrap() > 1.0, "{t}");

    let p = ask(&srv, r#"{"cmd":"snapshot","limit":5,"offset":3}"#);
    let got: Vec<String> = conns(&p)
        .iter()
        .map(|c| c["peer"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, peers[3..8]);
    assert_eq!(p["totals"]["held_now"], 12);
    assert_eq!(
        (p["offset"].clone(), p["limit"].clone()),
        (3.into(), 5.into())
    );
    // Whatever is asked, one answer lists at most 10,000.
    let p = ask(&srv, r#"{"cmd":"snapshot","limit":100000000}"#);
    assert_eq!(p["limit"], 10_000);
    assert_eq!(conns(&p).len(), 12);
    let p = ask(&srv, r#"{"cmd":"snapshot"}"#);
    assert_eq!(p["limit"], 1000, "the default page");
    let mut s = UnixStream::connect(&srv.control).unwrap();
    s.write_all(b"{\"cmd\":\"snapshot\",\"limit\":-1}\n")
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line).unwrap();
    assert!(line.contains("non-negative integer"), "{line}");

    let o = srv.stats(&["--limit", "4"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}");
    assert!(text.contains("... and 8 more"), "{text}");
    assert!(
        text.contains(&peers[0]) && !text.contains(&peers[4]),
        "{text}"
    );
    let o = srv.stats(&["--all", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(conns(&v).len(), 12);
    let o = srv.stats(&["--totals"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.starts_with("held now 12 · trapped since start 12"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1, "{text}");
    drop(held);
}
