//! The history database: rows match the records a real `tarpit serve`
//! emits, transactions are batched, a stalled writer drops instead of
//! blocking, retention prunes, and bad locations fail at start.

mod support;
use rusqlite::Connection;
use std::io::Write;
use std::net::{Ipv4Addr, Shutdown, SocketAddr};
use std::time::{Duration, Instant, SystemTime};
use support::stats::*;
use support::{bin, is_root, poll};
use tarpit::engine::record::{ConnRecord, EndReason};
use tarpit::stats::history::{self, History, HistoryOptions};
use tarpit::stats::metrics::HistoryMetrics;

fn rec(peer: &str, start: SystemTime, held: f64) -> ConnRecord {
    ConnRecord {
        listener: "127.0.0.1:2222".into(),
        peer: peer.parse().unwrap(),
        local: "127.0.0.1:2222".parse().unwrap(),
        original_dst: "127.0.0.1:22".parse().unwrap(),
        start,
        held_secs: held,
        engaged_secs: held,
        engaged_upper_bound: false,
        syn_wait_secs: 0.0,
        bytes_received: 3,
        fin_after_secs: None,
        end: EndReason::Lifetime,
        head: "abc".into(),
        client: Default::default(),
        estimated: false,
        policy: String::new(),
    }
}

fn count(db: &std::path::Path) -> i64 {
    Connection::open(db)
        .unwrap()
        .query_row("SELECT count(*) FROM connections", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn rows_match_the_records_of_a_real_server() {
    let dir = TempDir::new("histrows");
    let db = dir.path().join("history.db");
    let mut srv = Serve::start(dir.path(), &["--history", db.to_str().unwrap()]);
    let mut clients = Vec::new();
    for i in 0..8u8 {
        clients.push(connect_from(Ipv4Addr::new(127, 0, 4, 1 + i), srv.addr()).unwrap());
    }
    clients[0].write_all(b"SSH-2.0-x\r\n").unwrap();
    clients[1].shutdown(Shutdown::Write).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    reset(clients.remove(7));
    reset(clients.remove(6));
    poll(Duration::from_secs(10), || {
        (srv.snapshot()["totals"]["held_now"] == 6).then_some(())
    })
    .expect("resets seen");
    assert!(srv.stop().success());

    // The records as logged (one JSON object per line).
    let mut logged: Vec<serde_json::Value> = srv
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "tarpit::record")
        .collect();
    assert_eq!(logged.len(), 8, "{}", srv.log_text());
    logged.sort_by_key(|v| v["peer"].as_str().unwrap_or("").to_string());

    let c = Connection::open(&db).unwrap();
    let mut st = c
        .prepare(
            "SELECT peer_ip, peer_port, held_secs, bytes_received, fin_after_secs, end_reason,
                    orig_port, listener, head, start_time, end_time
             FROM connections ORDER BY peer_ip || ':' || peer_port",
        )
        .unwrap();
    #[allow(clippy::type_complexity)]
    let rows: Vec<(
        String,
        u16,
        f64,
        i64,
        Option<f64>,
        String,
        u16,
        String,
        String,
        f64,
        f64,
    )> = st
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
                r.get(9)?,
                r.get(10)?,
            ))
        })
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(rows.len(), 8, "every ended connection is a row");
    for (row, log) in rows.iter().zip(&logged) {
        let peer: SocketAddr = log["peer"].as_str().unwrap().parse().unwrap();
        assert_eq!(row.0, peer.ip().to_string());
        assert_eq!(row.1, peer.port());
        assert!((row.2 - log["held_secs"].as_f64().unwrap()).abs() < 1e-9);
        assert_eq!(row.3, log["bytes_received"].as_i64().unwrap());
        assert_eq!(row.4, log["fin_after_secs"].as_f64());
        assert_eq!(row.5, log["end"].as_str().unwrap());
        assert_eq!(row.6, srv.port);
        assert_eq!(row.7, log["listener"].as_str().unwrap());
        assert_eq!(row.8, log["head"].as_str().unwrap());
        assert!((row.10 - row.9 - row.2).abs() < 1e-6, "end = start + held");
    }
    // Engaged and its flag, as logged.
    let engaged: Vec<(f64, bool)> = c
        .prepare(
            "SELECT engaged_secs, engaged_bound FROM connections ORDER BY peer_ip || ':' || peer_port",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    for (e, log) in engaged.iter().zip(&logged) {
        assert!((e.0 - log["engaged_secs"].as_f64().unwrap()).abs() < 1e-9);
        assert_eq!(e.1, log["engaged_upper_bound"].as_bool().unwrap());
    }
    let by = |ip: &str| rows.iter().find(|r| r.0 == ip).unwrap().clone();
    assert_eq!(by("127.0.4.1").3, 11, "bytes sent, never read");
    assert_eq!(by("127.0.4.1").8, "SSH-2.0-x\\r\\n");
    assert!(by("127.0.4.2").4.is_some(), "FIN recorded");
    assert_eq!(by("127.0.4.8").5, "peer_reset");
    assert_eq!(by("127.0.4.3").5, "shutdown");
}

#[test]
fn transactions_are_batched_by_count_and_time() {
    let dir = TempDir::new("histbatch");
    let db = dir.path().join("h.db");
    let h = History::start(
        HistoryOptions::new(db.clone(), 90),
        HistoryMetrics::default(),
    )
    .unwrap();
    let now = SystemTime::now();
    for i in 0..2500u32 {
        h.record(&rec(
            &format!("127.0.5.{}:{}", i % 200 + 1, 1000 + i),
            now,
            1.0,
        ));
    }
    assert!(h.flush(Duration::from_secs(30)));
    assert_eq!(count(&db), 2500);
    assert_eq!(h.metrics().rows_written.get(), 2500);
    let tx = h.transactions();
    assert!(
        (3..=5).contains(&tx),
        "2500 rows in at most 1000-row transactions: {tx}"
    );

    // A lone row is committed by the timer, without a flush.
    h.record(&rec("127.0.5.9:9", now, 1.0));
    let t0 = Instant::now();
    poll(Duration::from_secs(10), || {
        (count(&db) == 2501).then_some(())
    })
    .expect("a lone row must be committed by the batch timer");
    assert!(
        t0.elapsed() >= Duration::from_millis(500),
        "waited for the batch window"
    );
    assert_eq!(h.transactions(), tx + 1);
    h.close(Duration::from_secs(10));
}

#[test]
fn the_estimated_flag_is_a_column() {
    let dir = TempDir::new("histest");
    let db = dir.path().join("h.db");
    let h = History::start(
        HistoryOptions::new(db.clone(), 90),
        HistoryMetrics::default(),
    )
    .unwrap();
    let now = SystemTime::now();
    h.record(&rec("127.0.6.1:1", now, 1.0));
    h.record(&ConnRecord {
        client: Default::default(),
        estimated: true,
        policy: String::new(),
        ..rec("127.0.6.2:2", now, 1.0)
    });
    assert!(h.flush(Duration::from_secs(30)));
    h.close(Duration::from_secs(10));
    let c = Connection::open(&db).unwrap();
    let mut st = c
        .prepare("SELECT peer_ip, estimated FROM connections ORDER BY peer_ip")
        .unwrap();
    let rows: Vec<(String, bool)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        rows,
        vec![("127.0.6.1".into(), false), ("127.0.6.2".into(), true)]
    );
}

#[test]
fn stalled_writer_drops_rows_instead_of_blocking() {
    let dir = TempDir::new("histdrop");
    let db = dir.path().join("h.db");
    let mut o = HistoryOptions::new(db.clone(), 90);
    o.queue_rows = 8;
    o.batch_rows = 1;
    let h = History::start(o, HistoryMetrics::default()).unwrap();
    // Another connection holds the write lock: the writer is stuck in its
    // busy wait.
    let blocker = Connection::open(&db).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let now = SystemTime::now();
    for i in 0..100u32 {
        h.record(&rec(&format!("127.0.6.1:{}", 1000 + i), now, 1.0));
    }
    let m = h.metrics().clone();
    assert!(
        m.rows_dropped.get() >= 80,
        "dropped {}",
        m.rows_dropped.get()
    );
    blocker.execute_batch("COMMIT").unwrap();
    drop(blocker);
    assert!(h.flush(Duration::from_secs(30)));
    let written = m.rows_written.get();
    assert_eq!(
        written + m.rows_dropped.get() + m.rows_failed.get(),
        100,
        "every row is written, dropped or failed, and counted"
    );
    assert_eq!(count(&db) as u64, written);
    h.close(Duration::from_secs(10));
}

#[test]
fn retention_prunes_old_rows_at_start_and_on_demand() {
    let dir = TempDir::new("histprune");
    let db = dir.path().join("h.db");
    let day = Duration::from_secs(86400);
    let now = SystemTime::now();
    {
        let mut c = history::open_for_writing(&db).unwrap();
        let old: Vec<ConnRecord> = (0..5)
            .map(|i| rec(&format!("127.0.7.1:{}", 100 + i), now - day * 10, 60.0))
            .collect();
        let fresh: Vec<ConnRecord> = (0..3)
            .map(|i| rec(&format!("127.0.7.2:{}", 100 + i), now - day, 60.0))
            .collect();
        history::insert_batch(&mut c, &old).unwrap();
        history::insert_batch(&mut c, &fresh).unwrap();
    }
    assert_eq!(count(&db), 8);
    let h = History::start(
        HistoryOptions::new(db.clone(), 7),
        HistoryMetrics::default(),
    )
    .unwrap();
    assert_eq!(count(&db), 3, "rows older than 7 days pruned at start");
    assert_eq!(h.metrics().rows_pruned.get(), 5);

    // Rows that age past the window while running go on the next prune.
    h.record(&rec("127.0.7.3:1", now - day * 8, 5.0));
    h.record(&rec("127.0.7.3:2", now, 5.0));
    assert!(h.flush(Duration::from_secs(10)));
    assert_eq!(count(&db), 5);
    assert!(h.prune_now(Duration::from_secs(10)));
    assert_eq!(count(&db), 4);
    assert_eq!(h.metrics().rows_pruned.get(), 6);
    h.close(Duration::from_secs(10));
}

#[test]
fn size_cap_keeps_the_newest_rows_at_start_and_while_running() {
    let dir = TempDir::new("histcap");
    let db = dir.path().join("h.db");
    let now = SystemTime::now();
    let batch = |from: u16, to: u16| -> Vec<ConnRecord> {
        (from..to)
            .map(|i| rec(&format!("127.0.8.1:{}", 100 + i), now, 1.0))
            .collect()
    };
    {
        let mut c = history::open_for_writing(&db).unwrap();
        for (a, b) in [(0, 4), (4, 8), (8, 10)] {
            history::insert_batch(&mut c, &batch(a, b)).unwrap();
        }
    }
    assert_eq!(count(&db), 10);
    let mut o = HistoryOptions::new(db.clone(), 90);
    o.max_rows = 6;
    let h = History::start(o, HistoryMetrics::default()).unwrap();
    assert_eq!(count(&db), 6, "capped at start");
    assert_eq!(h.metrics().rows_pruned.get(), 4);
    let ports = |db: &std::path::Path| -> Vec<i64> {
        let c = Connection::open(db).unwrap();
        let mut st = c
            .prepare("SELECT peer_port FROM connections ORDER BY id")
            .unwrap();
        let v = st.query_map([], |r| r.get(0)).unwrap();
        v.map(Result::unwrap).collect()
    };
    assert_eq!(
        ports(&db),
        (104..110).collect::<Vec<_>>(),
        "the newest kept"
    );
    // The block index still covers exactly what is left.
    let c = Connection::open(&db).unwrap();
    let (lo, stale): (i64, i64) = c
        .query_row(
            "SELECT min(first_id), (SELECT count(*) FROM blocks WHERE last_id < (SELECT min(id) FROM connections)) FROM blocks",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let min_id: i64 = c
        .query_row("SELECT min(id) FROM connections", [], |r| r.get(0))
        .unwrap();
    assert_eq!((lo, stale), (min_id, 0));
    // A flood while running: 3,000 rows; the cap is applied as they come
    // (every ~1,000) and on each prune.
    for i in 0..3000u16 {
        h.record(&rec(&format!("127.0.8.2:{}", 1000 + i), now, 1.0));
    }
    assert!(h.flush(Duration::from_secs(10)));
    assert!(count(&db) < 1006, "{}", count(&db));
    assert!(h.prune_now(Duration::from_secs(10)));
    assert_eq!(ports(&db), (3994..4000).collect::<Vec<_>>());
    h.close(Duration::from_secs(10));
}

fn serve_fails(args: &[&str]) -> String {
    let dir = TempDir::new("histbad");
    let o = std::process::Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--control"])
        .arg(dir.path().join("c.sock"))
        .args(args)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "serve must refuse to start");
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn missing_directory_and_corrupt_database_are_errors_at_start() {
    let dir = TempDir::new("histerr");
    let missing = dir.path().join("nope").join("h.db");
    let err = serve_fails(&["--history", missing.to_str().unwrap()]);
    assert!(
        err.contains("does not exist") && err.contains("nope"),
        "{err}"
    );

    let corrupt = dir.path().join("corrupt.db");
    std::fs::write(&corrupt, vec![0x5au8; 8192]).unwrap();
    let err = serve_fails(&["--history", corrupt.to_str().unwrap()]);
    assert!(err.contains(corrupt.to_str().unwrap()), "{err}");

    let foreign = dir.path().join("foreign.db");
    Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE users(x)")
        .unwrap();
    let err = serve_fails(&["--history", foreign.to_str().unwrap()]);
    assert!(err.contains("not a tarpit history"), "{err}");

    let o = std::process::Command::new(bin())
        .args(["report", "--history"])
        .arg(&corrupt)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(corrupt.to_str().unwrap()), "{err}");
}

#[test]
fn read_only_directory_is_an_error_at_start() {
    let dir = TempDir::new("histro");
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let db = ro.join("h.db");
    let control = dir.path().join("c.sock");
    let o = if is_root() {
        // Root ignores mode bits: use a read-only mount in a private mount
        // namespace instead.
        std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mount -t tmpfs -o ro,size=1m tmpfs '{}' && exec '{}' serve --listen 127.0.0.1:0 --control '{}' --history '{}'",
                ro.display(),
                bin(),
                control.display(),
                db.display()
            ))
            .output()
            .unwrap()
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        std::process::Command::new(bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--control"])
            .arg(&control)
            .arg("--history")
            .arg(&db)
            .output()
            .unwrap()
    };
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(db.to_str().unwrap()), "{err}");
}

#[test]
fn disk_full_is_logged_and_counted_and_serve_keeps_trapping() {
    if !is_root() {
        if std::env::var_os("CI").is_some() {
            panic!("needs root in CI (tmpfs in a mount namespace)");
        }
        eprintln!("SKIP disk_full: needs root for a small tmpfs");
        return;
    }
    let dir = TempDir::new("histfull");
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let db = small.join("h.db");
    let mport = free_port();
    let maddr: SocketAddr = format!("127.0.0.1:{mport}").parse().unwrap();
    // serve in a private mount namespace over a 512 KiB tmpfs; once its
    // database exists, fill the rest of the tmpfs.
    let script = format!(
        "mount -t tmpfs -o size=512k tmpfs '{s}' || exit 9
         ( i=0; while [ ! -e '{s}/h.db-wal' ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
           dd if=/dev/zero of='{s}/fill' bs=4k 2>/dev/null; touch '{s}/filled' 2>/dev/null ) &
         exec \"$0\" \"$@\"",
        s = small.display()
    );
    let srv = Serve::start_wrapped(
        dir.path(),
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ],
        &[
            "--history",
            db.to_str().unwrap(),
            "--metrics",
            &maddr.to_string(),
        ],
    );
    std::thread::sleep(Duration::from_secs(1));
    // Many short connections: their rows cannot fit.
    let mut round = 0u32;
    let errors = poll(Duration::from_secs(30), || {
        round += 1;
        for i in 0..50u32 {
            let src = Ipv4Addr::new(127, 1, (round % 250) as u8, (i % 250) as u8 + 1);
            if let Ok(c) = connect_from(src, srv.addr()) {
                reset(c);
            }
        }
        std::thread::sleep(Duration::from_millis(1200));
        let (_, _, body) = http_get(maddr, "/metrics").ok()?;
        let s = parse_exposition(&body);
        let e = metric(&s, "tarpit_history_write_errors_total", &[]);
        (e > 0.0).then_some(s)
    })
    .expect("writes into a full disk never failed");
    assert!(metric(&errors, "tarpit_history_rows_failed_total", &[]) > 0.0);
    // Still trapping and answering.
    let c = connect_from(Ipv4Addr::new(127, 1, 255, 1), srv.addr()).unwrap();
    let snap = poll(Duration::from_secs(10), || {
        let s = srv.snapshot();
        (s["totals"]["held_now"] == 1).then_some(s)
    })
    .expect("serve stopped trapping after disk full");
    assert!(snap["totals"]["trapped"].as_u64().unwrap() > 50);
    assert!(
        srv.log_text().contains("history write failed"),
        "logged: {}",
        srv.log_text()
    );
    drop(c);
}

/// The writer thread runs on its own fd table (so the engine keeps the
/// kernel's single-table fast path): it must not keep the process's sockets
/// alive: a socket closed by the rest of the process is really closed.
#[test]
fn writer_holds_no_reference_to_the_process_sockets() {
    let dir = TempDir::new("histfds");
    let db = dir.path().join("h.db");
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = History::start(
        HistoryOptions::new(db.clone(), 90),
        HistoryMetrics::default(),
    )
    .unwrap();
    drop(l);
    let e = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .expect_err("the listener was closed; nothing may still accept on it");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");

    // Rows are still written by the thread's own connection.
    h.record(&rec("127.0.8.1:1", SystemTime::now(), 1.0));
    assert!(h.flush(Duration::from_secs(10)));
    assert_eq!(count(&db), 1);
    // Readers in the same process share SQLite's -shm descriptor with the
    // writer: it must be valid in both tables.
    for _ in 0..20 {
        h.record(&rec("127.0.8.1:2", SystemTime::now(), 1.0));
        assert!(h.flush(Duration::from_secs(10)));
        count(&db);
    }
    assert_eq!(count(&db), 21);
    h.close(Duration::from_secs(10));
}

/// A version-1 file (per-row index on end_time) is migrated on open: the
/// index goes, one block covers the old rows, and time windows found
/// through the blocks count exactly what a full scan counts, even for a
/// batch whose rows end out of order.
#[test]
fn version_1_history_is_migrated_and_windows_match_a_full_scan() {
    let dir = TempDir::new("histv1");
    let db = dir.path().join("h.db");
    let day = 86400.0;
    let now = tarpit::engine::record::to_unix(SystemTime::now());
    {
        let c = Connection::open(&db).unwrap();
        c.execute_batch(
            "CREATE TABLE connections (
                id INTEGER PRIMARY KEY, start_time REAL NOT NULL, end_time REAL NOT NULL,
                held_secs REAL NOT NULL, listener TEXT NOT NULL, peer_ip TEXT NOT NULL,
                peer_port INTEGER NOT NULL, local TEXT NOT NULL, orig_ip TEXT NOT NULL,
                orig_port INTEGER NOT NULL, bytes_received INTEGER NOT NULL,
                fin_after_secs REAL, end_reason TEXT NOT NULL, head TEXT NOT NULL);
             CREATE INDEX connections_end_time ON connections(end_time);
             PRAGMA user_version = 1;",
        )
        .unwrap();
        for (i, ago) in [10.0, 9.0, 2.0, 1.0].iter().enumerate() {
            let end = now - ago * day;
            c.execute(
                "INSERT INTO connections (start_time, end_time, held_secs, listener, peer_ip,
                    peer_port, local, orig_ip, orig_port, bytes_received, fin_after_secs,
                    end_reason, head)
                 VALUES (?1, ?2, 60.0, '127.0.0.1:2222', '127.0.9.1', ?3, '127.0.0.1:2222',
                    '127.0.0.1', 2222, 0, NULL, 'lifetime', '')",
                rusqlite::params![end - 60.0, end, 1000 + i as i64],
            )
            .unwrap();
        }
    }
    let mut c = history::open_for_writing(&db).unwrap();
    let q = |c: &Connection, sql: &str| -> i64 { c.query_row(sql, [], |r| r.get(0)).unwrap() };
    // Version 1 goes through 2 (blocks) and 3 (the GeoIP columns) to 4
    // (engaged) to 5 (the stateless engine's `estimated` flag, 0 for the
    // old rows).
    assert_eq!(q(&c, "PRAGMA user_version"), 7);
    assert_eq!(
        q(&c, "SELECT count(*) FROM connections WHERE estimated != 0"),
        0
    );
    assert_eq!(
        q(
            &c,
            "SELECT count(*) FROM pragma_table_info('connections') WHERE name IN ('country', 'asn', 'as_org')"
        ),
        3
    );
    assert_eq!(
        q(
            &c,
            "SELECT count(*) FROM sqlite_master WHERE type='index' AND name='connections_end_time'"
        ),
        0
    );
    assert_eq!(q(&c, "SELECT count(*) FROM blocks"), 1);

    // A batch mixing a very old row with fresh ones, then another batch.
    let t = |ago: f64| tarpit::engine::record::from_unix(now - ago * day - 5.0);
    history::insert_batch(
        &mut c,
        &[
            rec("127.0.9.2:1", t(0.5), 5.0),
            rec("127.0.9.2:2", t(30.0), 5.0),
            rec("127.0.9.2:3", t(3.0), 5.0),
        ],
    )
    .unwrap();
    history::insert_batch(&mut c, &[rec("127.0.9.3:1", t(0.1), 5.0)]).unwrap();
    for (from, to) in [
        (5.0, 0.0),
        (40.0, 20.0),
        (9.5, 1.5),
        (100.0, 0.0),
        (0.05, 0.0),
        (60.0, 50.0),
    ] {
        let (since, until) = (now - from * day, now - to * day + 1.0);
        let (lo, hi) = history::id_range(&c, since, until).unwrap();
        let via_blocks: i64 = c
            .query_row(
                "SELECT count(*) FROM connections WHERE end_time >= ?1 AND end_time <= ?2 AND id >= ?3 AND id <= ?4",
                rusqlite::params![since, until, lo, hi],
                |r| r.get(0),
            )
            .unwrap();
        let scan: i64 = c
            .query_row(
                "SELECT count(*) FROM connections WHERE end_time >= ?1 AND end_time <= ?2",
                rusqlite::params![since, until],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(via_blocks, scan, "window {from}..{to} days ago");
    }
    // Retention finds the old rows in every block: 10 d, 9 d and 30 d ago.
    let cutoff = SystemTime::now() - Duration::from_secs(7 * 86400);
    assert_eq!(history::prune(&mut c, cutoff).unwrap(), 3);
    assert_eq!(q(&c, "SELECT count(*) FROM connections"), 5);
    drop(c);
    // A report over the migrated file.
    let r = tarpit::stats::report::compute(
        &history::open_for_reading(&db).unwrap(),
        now - 5.0 * day,
        now + 1.0,
    )
    .unwrap();
    assert_eq!(r.totals.connections, 5);
}

/// A version-2 file (no engaged columns) reads as if migrated, and is
/// upgraded in place on open for writing: old rows are engaged until their
/// FIN if they had one, else for the whole hold; nothing is flagged.
#[test]
fn version_2_history_gets_engaged_columns_in_place() {
    let dir = TempDir::new("histv2");
    let db = dir.path().join("h.db");
    let now = tarpit::engine::record::to_unix(SystemTime::now());
    {
        let c = Connection::open(&db).unwrap();
        c.execute_batch(
            "CREATE TABLE connections (
                id INTEGER PRIMARY KEY, start_time REAL NOT NULL, end_time REAL NOT NULL,
                held_secs REAL NOT NULL, listener TEXT NOT NULL, peer_ip TEXT NOT NULL,
                peer_port INTEGER NOT NULL, local TEXT NOT NULL, orig_ip TEXT NOT NULL,
                orig_port INTEGER NOT NULL, bytes_received INTEGER NOT NULL,
                fin_after_secs REAL, end_reason TEXT NOT NULL, head TEXT NOT NULL);
             CREATE TABLE blocks (first_id INTEGER NOT NULL, last_id INTEGER NOT NULL,
                min_end REAL NOT NULL, max_end REAL NOT NULL);
             PRAGMA user_version = 2;",
        )
        .unwrap();
        // (held, fin_after): engaged 3, 100, 50 (a FIN after the hold can't count more).
        for (i, (held, fin)) in [(200.0, Some(3.0)), (100.0, None), (50.0, Some(80.0))]
            .iter()
            .enumerate()
        {
            let end = now - 60.0 - i as f64;
            c.execute(
                "INSERT INTO connections (start_time, end_time, held_secs, listener, peer_ip,
                    peer_port, local, orig_ip, orig_port, bytes_received, fin_after_secs,
                    end_reason, head)
                 VALUES (?1, ?2, ?3, '127.0.0.1:2222', '127.0.9.1', ?4, '127.0.0.1:2222',
                    '127.0.0.1', 22, 0, ?5, 'peer_reset', '')",
                rusqlite::params![end - held, end, held, 1000 + i as i64, fin],
            )
            .unwrap();
        }
        c.execute_batch(
            "INSERT INTO blocks SELECT min(id), max(id), min(end_time), max(end_time) FROM connections",
        )
        .unwrap();
    }
    let window = (now - 3600.0, now + 1.0);
    let before = tarpit::stats::report::compute(
        &history::open_for_reading(&db).unwrap(),
        window.0,
        window.1,
    )
    .unwrap();
    assert!((before.totals.attacker_hours - 153.0 / 3600.0).abs() < 1e-9);
    assert!((before.totals.held_hours - 350.0 / 3600.0).abs() < 1e-9);
    let c = history::open_for_writing(&db).unwrap();
    let q = |sql: &str| -> f64 { c.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(q("PRAGMA user_version"), 7.0);
    assert_eq!(q("SELECT sum(engaged_secs) FROM connections"), 153.0);
    assert_eq!(q("SELECT sum(engaged_bound) FROM connections"), 0.0);
    drop(c);
    let after = tarpit::stats::report::compute(
        &history::open_for_reading(&db).unwrap(),
        window.0,
        window.1,
    )
    .unwrap();
    assert_eq!(before.totals, after.totals);
    assert_eq!(before.top_hosts, after.top_hosts);
}

/// What the peer tried is in the row (schema 6): protocol, software and
/// the protocol's fields, escaped as the record carries them, and the
/// policy that held it.
#[test]
fn what_the_peer_tried_is_a_column() {
    let dir = TempDir::new("histclient");
    let db = dir.path().join("h.db");
    let mut c = history::open_for_writing(&db).unwrap();
    let now = SystemTime::now();
    let classify = tarpit::classify::classify;
    let rows = [
        ConnRecord {
            client: classify(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10\r\n"),
            policy: "bait=ssh,drip=10s".into(),
            ..rec("127.0.7.1:1", now, 10.0)
        },
        ConnRecord {
            client: classify(
                b"GET /\x1b[2J HTTP/1.1\r\nHost: h\r\nUser-Agent: curl/7.88.1\r\n\r\n",
            ),
            ..rec("127.0.7.2:1", now, 20.0)
        },
        rec("127.0.7.3:1", now, 30.0),
    ];
    history::insert_batch(&mut c, &rows).unwrap();
    let mut st = c
        .prepare(
            "SELECT protocol, software, ssh_version, ssh_comments, http_method, http_path,
                    http_host, policy FROM connections ORDER BY peer_ip",
        )
        .unwrap();
    type Row = (String, Option<String>, Option<String>, Option<String>);
    type Rest = (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let got: Vec<(Row, Rest)> = st
        .query_map([], |r| {
            Ok((
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?),
                (r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?),
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        got[0],
        (
            (
                "ssh".into(),
                s("OpenSSH_9.2p1"),
                s("2.0"),
                s("Debian-2+deb12u10")
            ),
            (None, None, None, s("bait=ssh,drip=10s"))
        )
    );
    assert_eq!(
        got[1],
        (
            ("http".into(), s("curl/7.88.1"), None, None),
            (s("GET"), s("/\\x1b[2J"), s("h"), None)
        )
    );
    assert_eq!(got[2].0 .0, "silent");
}

/// The seconds a syn_delay kept a client waiting are a column (schema 7),
/// part of the row's engaged time.
#[test]
fn the_handshake_wait_is_a_column() {
    let dir = TempDir::new("histsynwait");
    let db = dir.path().join("h.db");
    let mut c = history::open_for_writing(&db).unwrap();
    let now = SystemTime::now();
    let rows = [
        ConnRecord {
            syn_wait_secs: 61.5,
            engaged_secs: 71.5,
            ..rec("127.0.7.1:1", now, 10.0)
        },
        rec("127.0.7.2:1", now, 20.0),
    ];
    history::insert_batch(&mut c, &rows).unwrap();
    let mut st = c
        .prepare("SELECT syn_wait_secs, engaged_secs, held_secs FROM connections ORDER BY peer_ip")
        .unwrap();
    let got: Vec<(f64, f64, f64)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, [(61.5, 71.5, 10.0), (0.0, 20.0, 20.0)]);
}

/// A version-5 file (no classifier columns) reads as if migrated and is
/// upgraded in place: each old row's protocol from its escaped `head`.
#[test]
fn version_5_history_gets_protocols_from_heads() {
    let dir = TempDir::new("histv5");
    let db = dir.path().join("h.db");
    let now = tarpit::engine::record::to_unix(SystemTime::now());
    // (head as stored, bytes_received, protocol it gets)
    let heads = [
        ("SSH-2.0-OpenSSH_8.4p1 Debian-5\\r\\n", 40, "ssh"),
        ("GET /.env HTTP/1.1\\r\\nHost: x\\r\\n", 48, "http"),
        (
            "\\x16\\x03\\x01\\x02\\x00\\x01\\x00\\x01\\xfc\\x03\\x03",
            48,
            "tls",
        ),
        ("", 0, "silent"),
        ("", 12, "other"),
        ("\\x00\\x00\\x00\\x85\\xffSMBr", 48, "other"),
    ];
    {
        let c = Connection::open(&db).unwrap();
        c.execute_batch(
            "CREATE TABLE connections (
                id INTEGER PRIMARY KEY, start_time REAL NOT NULL, end_time REAL NOT NULL,
                held_secs REAL NOT NULL, listener TEXT NOT NULL, peer_ip TEXT NOT NULL,
                peer_port INTEGER NOT NULL, local TEXT NOT NULL, orig_ip TEXT NOT NULL,
                orig_port INTEGER NOT NULL, bytes_received INTEGER NOT NULL,
                fin_after_secs REAL, end_reason TEXT NOT NULL, head TEXT NOT NULL,
                country TEXT, asn INTEGER, as_org TEXT,
                engaged_secs REAL NOT NULL DEFAULT 0, engaged_bound INTEGER NOT NULL DEFAULT 0,
                estimated INTEGER NOT NULL DEFAULT 0);
             CREATE TABLE blocks (first_id INTEGER NOT NULL, last_id INTEGER NOT NULL,
                min_end REAL NOT NULL, max_end REAL NOT NULL);
             PRAGMA user_version = 5;",
        )
        .unwrap();
        for (i, (head, bytes, _)) in heads.iter().enumerate() {
            let end = now - 60.0 - i as f64;
            c.execute(
                "INSERT INTO connections (start_time, end_time, held_secs, listener, peer_ip,
                    peer_port, local, orig_ip, orig_port, bytes_received, fin_after_secs,
                    end_reason, head, engaged_secs)
                 VALUES (?1, ?2, 10.0, '127.0.0.1:2222', '127.0.9.1', ?3, '127.0.0.1:2222',
                    '127.0.0.1', 22, ?4, NULL, 'peer_reset', ?5, ?6)",
                rusqlite::params![end - 10.0, end, 1000 + i as i64, bytes, head, i as f64],
            )
            .unwrap();
        }
        c.execute_batch(
            "INSERT INTO blocks SELECT min(id), max(id), min(end_time), max(end_time) FROM connections",
        )
        .unwrap();
    }
    let window = (now - 3600.0, now + 1.0);
    let before = tarpit::stats::report::compute(
        &history::open_for_reading(&db).unwrap(),
        window.0,
        window.1,
    )
    .unwrap();
    let c = history::open_for_writing(&db).unwrap();
    let v: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, 7);
    // No wait was counted before schema 7.
    let waited: f64 = c
        .query_row("SELECT sum(syn_wait_secs) FROM connections", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(waited, 0.0);
    let mut st = c
        .prepare("SELECT protocol, policy, software FROM connections ORDER BY id")
        .unwrap();
    let got: Vec<(String, Option<String>, Option<String>)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let want: Vec<(String, Option<String>, Option<String>)> = heads
        .iter()
        .map(|h| (h.2.to_string(), None, None))
        .collect();
    assert_eq!(got, want);
    drop(st);
    drop(c);
    let after = tarpit::stats::report::compute(
        &history::open_for_reading(&db).unwrap(),
        window.0,
        window.1,
    )
    .unwrap();
    assert_eq!(before.protocols, after.protocols);
    // other: rows 4 and 5 (engaged 4 + 5 s), first by engaged time.
    assert_eq!(after.protocols[0].protocol, "other");
    assert_eq!(after.protocols[0].connections, 2);
    assert_eq!(after.protocols[0].engaged_secs, 9.0);
    assert_eq!(after.protocols.len(), 5);
    assert!(after.clients.is_empty());
    // No policy recorded before version 6: all of it the silent trap, read
    // the same before and after the migration.
    assert_eq!(before.policies, after.policies);
    assert_eq!(after.policies.len(), 1);
    assert_eq!(after.policies[0].policy, "silent");
    assert_eq!(after.policies[0].connections, heads.len() as u64);
}
