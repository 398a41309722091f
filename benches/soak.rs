//! `cargo bench --bench soak`: a long churn through the whole daemon.
//!
//! Runs the real `tarpit serve` on 127.0.0.1 with the control socket, the
//! SQLite history and `/metrics` on, and has several client processes open
//! and reset `SOAK_CONNS` connections (default 1,000,000) paced over
//! `SOAK_SECS` (default 600 s), each from a source spread over 127.x.y.z.
//! Meanwhile `tarpit watch` runs in a namespace the bench creates, following
//! a fail2ban log that grows by a Ban line every 100 ms, and the bench asks
//! `tarpit stats` and scrapes `/metrics` every 5 s.
//!
//! It prints, and checks (a failed check exits non-zero):
//! * server RSS after a warm-up (the first 5 % of the connections, at least
//!   30,000: SQLite's page cache and the allocator's arenas reach their
//!   working size there)
//!   and at the end, back to within 1 MiB;
//! * open descriptors at start and end (no leak);
//! * history rows = connections; metrics trapped = ended = connections,
//!   held 0, history rows written = connections;
//! * no error line in the daemon's log (nor the watcher's), every Ban line
//!   digested (one ban per line in state.db).
//!
//! Bounded: connections by `SOAK_CONNS` (at most 2,000,000), every process
//! exits on its own after `2 × SOAK_SECS + 120 s`, every wait has a deadline.
//! Each client holds at most a batch of 64 sockets (far below the 20,000
//! open-file limit). The watcher part needs root, `ip` and `nft`; without
//! them it is skipped with a message.
//!
//! `SOAK_TARPIT=PATH` runs that `tarpit` binary instead of the one cargo
//! built (copy both binaries aside for a long run, so a rebuild meanwhile
//! does not swap them).

#[path = "../tests/support/mod.rs"]
mod support;

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::proc::{cpu_ns, fd_count, rss};
use support::stats::{free_port, http_get, metric, parse_exposition, TempDir};

/// Sockets a client opens before resetting them all.
const BATCH: usize = 64;
/// Connections per source address (below the default `--per-ip` of 32, and
/// they never overlap much anyway).
const PER_SOURCE_IP: usize = 16;

/// The `tarpit` binary under test.
fn tarpit_bin() -> String {
    std::env::var("SOAK_TARPIT").unwrap_or_else(|_| support::bin().to_string())
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if let Ok(spec) = std::env::var("SOAK_CLIENT") {
        client(&spec);
        return;
    }
    let n = env_num("SOAK_CONNS", 1_000_000).clamp(1000, 2_000_000) as usize;
    let secs = env_num("SOAK_SECS", 600).clamp(10, 3600);
    let procs = env_num("SOAK_PROCS", 4).clamp(1, 16);
    let hard_stop = Duration::from_secs(2 * secs + 120);
    let started = Instant::now();
    let dir = TempDir::new("soak");
    let mut failures: Vec<String> = Vec::new();

    // The daemon, everything on.
    let ctl = dir.path().join("control.sock");
    let db = dir.path().join("history.db");
    let metrics_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut server = Server::start(&[
        "--listen",
        "127.0.0.1:0",
        "--control",
        ctl.to_str().unwrap(),
        "--history",
        db.to_str().unwrap(),
        "--metrics",
        &metrics_addr.to_string(),
    ]);
    let pid = server.child.id();
    let addr = server.addr;
    println!(
        "soak: {n} connections over ~{secs} s from {procs} client processes to {addr} (pid {pid})"
    );

    // The watcher, in a namespace of its own, digesting a growing log.
    let watcher = Watcher::start();
    let writer_stop = Arc::new(AtomicBool::new(false));
    let lines_written = Arc::new(AtomicU64::new(0));
    let log_writer = watcher.as_ref().map(|w| {
        let (stop, count, log) = (
            writer_stop.clone(),
            lines_written.clone(),
            w.scene.log.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) && started.elapsed() < hard_stop {
                let k = count.load(Ordering::Relaxed);
                let ip = format!("10.77.{}.{}", 100 + k / 250 % 150, 1 + k % 250);
                support::watch::append(&log, &support::watch::ban_line("sshd", &ip));
                count.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    });

    // Warm-up at full speed, then the baseline: 5 % of the connections, at
    // least 30,000 (their rows fill SQLite's 2 MiB page cache).
    let warm = (n / 20).max(30_000).min(n / 2);
    run_clients(addr, warm, 1, 0, Duration::from_secs(1), hard_stop);
    if !wait_until(Duration::from_secs(120), || {
        let m = scrape(metrics_addr);
        (m.ended >= warm as f64 && m.rows >= warm as f64 && m.held == 0.0).then_some(())
    }) {
        failures.push(format!(
            "warm-up of {warm} did not settle: {:?}",
            scrape(metrics_addr)
        ));
    }
    // Let the last scrape's connection close before counting.
    std::thread::sleep(Duration::from_secs(2));
    let rss0 = rss(pid);
    let fds0 = fd_count(pid);
    let cpu0 = cpu_ns(pid);
    println!(
        "  after warm-up ({warm}): RSS {} KiB, {fds0} descriptors",
        rss0 / 1024
    );

    // The soak proper: clients paced in the background; the bench asks
    // for stats and metrics meanwhile.
    let rest = n - warm;
    let t0 = Instant::now();
    let pace = Duration::from_secs(secs);
    let load = std::thread::spawn(move || run_clients(addr, rest, procs, 1, pace, hard_stop));
    let mut stats_calls = 0u64;
    let mut stats_failures = 0u64;
    let mut rss_max = rss0;
    let mut last_print = Instant::now();
    while !load.is_finished() && started.elapsed() < hard_stop {
        std::thread::sleep(Duration::from_secs(5));
        let out = Command::new(tarpit_bin())
            .args(["stats", "--json", "--control"])
            .arg(&ctl)
            .output();
        stats_calls += 1;
        if !out.is_ok_and(|o| o.status.success()) {
            stats_failures += 1;
        }
        let m = scrape(metrics_addr);
        rss_max = rss_max.max(rss(pid));
        if last_print.elapsed() >= Duration::from_secs(60) {
            last_print = Instant::now();
            println!(
                "  {:>4.0} s: ended {:.0}, held {:.0}, RSS {} KiB, {} descriptors",
                t0.elapsed().as_secs_f64(),
                m.ended,
                m.held,
                rss(pid) / 1024,
                fd_count(pid)
            );
        }
    }
    let connected = load.join().expect("load thread");
    let churn_secs = t0.elapsed().as_secs_f64();
    let total = warm + connected;
    let settled = wait_until(Duration::from_secs(120), || {
        let m = scrape(metrics_addr);
        (m.ended >= total as f64 && m.rows >= total as f64 && m.held == 0.0).then_some(())
    });
    let m = scrape(metrics_addr);
    std::thread::sleep(Duration::from_secs(2));
    let rss1 = rss(pid);
    let fds1 = fd_count(pid);
    let cpu = (cpu_ns(pid) - cpu0) as f64 / 1e9;
    let rows = history_rows(&db);

    writer_stop.store(true, Ordering::Relaxed);
    if let Some(t) = log_writer {
        let _ = t.join();
    }
    let exit = server.stop();
    let watch_report = watcher.map(|w| w.finish(lines_written.load(Ordering::Relaxed)));

    let drift = rss1 as i64 - rss0 as i64;
    println!(
        "  churn: {connected} connections in {churn_secs:.0} s ({:.0}/s), server CPU {cpu:.1} s ({:.1} µs per connection)",
        connected as f64 / churn_secs,
        cpu * 1e6 / connected.max(1) as f64
    );
    println!(
        "  RSS start / end / peak  {} / {} / {} KiB (end − start {:+} KiB)",
        rss0 / 1024,
        rss1 / 1024,
        rss_max / 1024,
        drift / 1024
    );
    println!("  descriptors start / end {fds0} / {fds1}");
    println!(
        "  connections {total}; history rows {rows}; metrics trapped {:.0}, ended {:.0}, held {:.0}, rows written {:.0}, rows dropped {:.0}",
        m.trapped, m.ended, m.held, m.rows, m.dropped
    );
    println!("  tarpit stats calls {stats_calls} ({stats_failures} failed)");
    let (lines, records, errors, warns) = server.counts();
    println!(
        "  daemon log: {lines} lines, {records} records, {} error lines, {} warnings; exit {exit}",
        errors.len(),
        warns.len()
    );
    for e in errors.iter().chain(&warns).take(10) {
        println!("    {e}");
    }
    if let Some(r) = &watch_report {
        println!(
            "  watcher: {} Ban lines written, {} bans in state.db, {} error lines",
            r.written,
            r.bans,
            r.errors.len()
        );
        for e in r.errors.iter().take(10) {
            println!("    {e}");
        }
    }

    if !settled {
        failures.push("the daemon never settled (ended/rows/held)".into());
    }
    if drift.unsigned_abs() > 1 << 20 {
        failures.push(format!("RSS moved {drift:+} bytes (more than 1 MiB)"));
    }
    if fds1 != fds0 {
        failures.push(format!("descriptors {fds0} → {fds1}"));
    }
    if connected < rest * 99 / 100 {
        failures.push(format!("clients connected only {connected} of {rest}"));
    }
    if rows != total as u64 {
        failures.push(format!("history rows {rows} ≠ connections {total}"));
    }
    let t = total as f64;
    if m.trapped != t || m.ended != t || m.held != 0.0 || m.rows != t || m.dropped != 0.0 {
        failures.push(format!("metrics disagree with {total} connections: {m:?}"));
    }
    if stats_failures > 0 {
        failures.push(format!("{stats_failures} `tarpit stats` calls failed"));
    }
    if !errors.is_empty() {
        failures.push(format!("{} error lines in the daemon's log", errors.len()));
    }
    if !exit.success() {
        failures.push(format!("daemon exit {exit}"));
    }
    if let Some(r) = &watch_report {
        if !r.errors.is_empty() {
            failures.push(format!(
                "{} error lines in the watcher's log",
                r.errors.len()
            ));
        }
        if r.bans != r.written {
            failures.push(format!("watcher: {} Ban lines, {} bans", r.written, r.bans));
        }
    }
    if failures.is_empty() {
        println!("soak: OK");
    } else {
        for f in &failures {
            println!("soak: FAIL {f}");
        }
        std::process::exit(1);
    }
}

/// What the bench reads from `/metrics`.
#[derive(Debug, Default)]
struct Metrics {
    trapped: f64,
    ended: f64,
    held: f64,
    rows: f64,
    dropped: f64,
}

fn scrape(addr: SocketAddr) -> Metrics {
    let Ok((_, _, body)) = http_get(addr, "/metrics") else {
        return Metrics::default();
    };
    let s = parse_exposition(&body);
    Metrics {
        trapped: metric(&s, "tarpit_connections_trapped_total", &[]),
        ended: metric(&s, "tarpit_connections_ended_total", &[]),
        held: metric(&s, "tarpit_held_connections", &[]),
        rows: metric(&s, "tarpit_history_rows_written_total", &[]),
        dropped: metric(&s, "tarpit_history_rows_dropped_total", &[]),
    }
}

fn history_rows(db: &Path) -> u64 {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| {
            c.query_row("SELECT COUNT(*) FROM connections", [], |r| {
                r.get::<_, i64>(0)
            })
        })
        .map(|v| v as u64)
        .unwrap_or(0)
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> Option<()>) -> bool {
    support::poll(limit, || {
        let r = f();
        if r.is_none() {
            std::thread::sleep(Duration::from_millis(200));
        }
        r
    })
    .is_some()
}

/// The daemon with its log read line by line: counted, errors and warnings
/// kept, record lines dropped (there is one per connection).
struct Server {
    child: Child,
    addr: SocketAddr,
    lines: Arc<AtomicU64>,
    records: Arc<AtomicU64>,
    kept: Arc<Mutex<(Vec<String>, Vec<String>)>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(tarpit_bin())
            .args(["--log-format", "json", "serve"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tarpit serve");
        let err = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = Arc::new(AtomicU64::new(0));
        let records = Arc::new(AtomicU64::new(0));
        let kept = Arc::new(Mutex::new((Vec::new(), Vec::new())));
        let (l2, r2, k2) = (lines.clone(), records.clone(), kept.clone());
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                l2.fetch_add(1, Ordering::Relaxed);
                if line.contains("\"tarpit::record\"") {
                    r2.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                if v["message"] == "listening" {
                    if let Some(a) = v["listener"].as_str().and_then(|a| a.parse().ok()) {
                        let _ = tx.send(a);
                    }
                }
                let mut k = k2.lock().unwrap();
                match v["level"].as_str() {
                    Some("ERROR") => k.0.push(line),
                    Some("WARN") if k.1.len() < 100 => k.1.push(line),
                    None => k.0.push(format!("(not JSON) {line}")),
                    _ => {}
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("tarpit serve never said where it listens");
        let ctl = args
            .windows(2)
            .find(|w| w[0] == "--control")
            .map(|w| w[1].to_string())
            .expect("--control");
        assert!(
            support::poll(Duration::from_secs(30), || {
                std::os::unix::net::UnixStream::connect(&ctl)
                    .ok()
                    .map(|_| ())
            })
            .is_some(),
            "control socket never appeared"
        );
        Server {
            child,
            addr,
            lines,
            records,
            kept,
            reader: Some(reader),
        }
    }

    /// SIGTERM, bounded wait, then the log read to its end.
    fn stop(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let child = &mut self.child;
        let st = support::poll(Duration::from_secs(30), || child.try_wait().ok().flatten());
        let st = st.unwrap_or_else(|| {
            let _ = self.child.kill();
            self.child.wait().expect("wait")
        });
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        st
    }

    fn counts(&self) -> (u64, u64, Vec<String>, Vec<String>) {
        let k = self.kept.lock().unwrap();
        (
            self.lines.load(Ordering::Relaxed),
            self.records.load(Ordering::Relaxed),
            k.0.clone(),
            k.1.clone(),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Watcher {
    // Field order: the process ends before its namespace and files go.
    proc: support::watch::WatchProc,
    scene: support::watch::Scene,
    ns: support::netns::Netns,
}

struct WatchReport {
    written: u64,
    bans: u64,
    errors: Vec<String>,
}

impl Watcher {
    fn start() -> Option<Watcher> {
        if !(support::is_root() && support::netns::which("ip") && support::netns::which("nft")) {
            println!("  (watcher part skipped: needs root, ip and nft)");
            return None;
        }
        let ns = support::netns::Netns::new("soak");
        let scene = support::watch::Scene::new("soak-watch", "", "maxretry = 1");
        support::watch::append(&scene.log, "");
        let mut c = ns.command(&tarpit_bin());
        c.args(["--log-format", "json", "--config"])
            .arg(&scene.conf)
            .arg("watch");
        let proc = support::watch::WatchProc::spawn(c);
        Some(Watcher { proc, scene, ns })
    }

    /// Waits (bounded) until every Ban line is a ban, stops the watcher.
    fn finish(mut self, written: u64) -> WatchReport {
        let bans = || {
            rusqlite::Connection::open_with_flags(
                &self.scene.db,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .and_then(|c| c.query_row("SELECT COUNT(*) FROM bans", [], |r| r.get::<_, i64>(0)))
            .map(|v| v as u64)
            .unwrap_or(0)
        };
        wait_until(Duration::from_secs(30), || {
            (bans() >= written).then_some(())
        });
        let b = bans();
        self.proc.stop();
        let errors = self
            .proc
            .json()
            .into_iter()
            .filter(|v| v["level"] == "ERROR")
            .map(|v| v.to_string())
            .collect();
        let _ = &self.ns;
        WatchReport {
            written,
            bans: b,
            errors,
        }
    }
}

/// Runs `procs` client processes (indexes from `first`) sharing `n`
/// connections, paced to take about `pace`; returns how many connected.
fn run_clients(
    addr: SocketAddr,
    n: usize,
    procs: u64,
    first: u64,
    pace: Duration,
    hard_stop: Duration,
) -> usize {
    let procs = procs as usize;
    let mut clients: Vec<Child> = (0..procs)
        .map(|i| {
            let count = n / procs + usize::from(i < n % procs);
            Command::new(std::env::current_exe().expect("self"))
                .env(
                    "SOAK_CLIENT",
                    format!(
                        "{addr} {count} {} {} {}",
                        first as usize + i,
                        pace.as_millis(),
                        hard_stop.as_millis()
                    ),
                )
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn client")
        })
        .collect();
    let mut connected = 0;
    for c in &mut clients {
        let mut out = BufReader::new(c.stdout.take().expect("client stdout"));
        let mut l = String::new();
        out.read_line(&mut l).ok();
        connected += l
            .trim()
            .strip_prefix("connected ")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        let _ = c.wait();
    }
    connected
}

/// Client process: `ADDR COUNT INDEX PACE_MS STOP_MS` — opens COUNT
/// connections in batches of [`BATCH`] from 127.(20+INDEX).x.y sources,
/// resets each batch at once, spreads the batches over PACE_MS, prints
/// `connected N`. Gives up after STOP_MS.
fn client(spec: &str) {
    let mut it = spec.split_whitespace();
    let addr: SocketAddr = it.next().and_then(|v| v.parse().ok()).expect("addr");
    let count: usize = it.next().and_then(|v| v.parse().ok()).expect("count");
    let idx: usize = it.next().and_then(|v| v.parse().ok()).expect("index");
    let pace = Duration::from_millis(it.next().and_then(|v| v.parse().ok()).expect("pace"));
    let stop = Duration::from_millis(it.next().and_then(|v| v.parse().ok()).expect("stop"));
    let started = Instant::now();
    let mut done = 0usize;
    let mut batch: Vec<TcpStream> = Vec::with_capacity(BATCH);
    let mut i = 0usize;
    while i < count && started.elapsed() < stop {
        batch.clear();
        while batch.len() < BATCH && i < count {
            let k = i / PER_SOURCE_IP % 62_500;
            i += 1;
            let src: SocketAddr = format!("127.{}.{}.{}:0", 20 + idx, k / 250, 1 + k % 250)
                .parse()
                .expect("src");
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                .expect("socket");
            if s.bind(&src.into()).is_err() || s.connect(&addr.into()).is_err() {
                continue;
            }
            batch.push(TcpStream::from(s));
        }
        // Let the server take them before the reset.
        std::thread::sleep(Duration::from_millis(2));
        for s in batch.drain(..) {
            support::stats::reset(s);
            done += 1;
        }
        // Pacing: be at `i / count` of the way through `pace`.
        let due = pace.mul_f64(i as f64 / count as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    println!("connected {done}");
    let _ = std::io::stdout().flush();
}
