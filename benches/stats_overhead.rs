//! `cargo bench --bench stats_overhead`: what the statistics cost.
//!
//! Runs the real `tarpit serve` twice per round — statistics off
//! (`--control off --history off`, no metrics) and on (control socket,
//! SQLite history, `/metrics` scraped every second) — and in each run traps
//! N connections (default 10,000; `STATS_BENCH_N`, capped at 19,000) from
//! several client processes whose sources are spread over 127.x.y.z, holds
//! them, then has the clients reset them all so every connection also ends
//! (one history row each). Prints per run: server CPU for trapping and for
//! ending (all threads, from /proc/PID/task/*/schedstat), RSS idle/held and
//! userspace bytes per held connection, and history rows written; then the
//! on/off CPU ratio. `STATS_BENCH_ROUNDS` (default 3) alternates off/on runs; the summary
//! gives medians (the machine is shared, single runs are noisy). The engine
//! thread's own CPU is shown apart: the history writer runs on its own
//! thread, so that is the part that could delay accepting; the writer
//! thread's own CPU is printed too. `STATS_BENCH_ON` (default
//! `control,history,metrics`) picks what the on runs enable.
//!
//! Bounded: at most 19,000 connections per run, clients exit on their own
//! after 180 s, every wait has a deadline.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};
use support::proc::{cpu_ns, fd_count, rss};
use support::serve::Proc;

const PER_CLIENT_PROC: usize = 4000;
/// Below the default `--per-ip` cap of 32: no evictions.
const PER_SOURCE_IP: usize = 30;
const HARD_STOP: Duration = Duration::from_secs(180);

fn main() {
    if let Ok(spec) = std::env::var("STATS_BENCH_CLIENT") {
        client(&spec);
        return;
    }
    let n: usize = std::env::var("STATS_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
        .min(19_000);
    let rounds: usize = std::env::var("STATS_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .clamp(1, 7);
    let tmp = std::env::temp_dir().join(format!("tarpit-statsbench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).expect("temp dir");

    println!("stats_overhead: N={n}, {rounds} round(s) of off/on");
    let mut off = Vec::new();
    let mut on = Vec::new();
    for r in 0..rounds {
        // Alternate which goes first so drift on a shared machine evens out.
        let order = if r % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for stats in order {
            let res = run(n, stats, &tmp.join(format!("r{r}")));
            res.print(if stats { "on " } else { "off" });
            if stats {
                on.push(res);
            } else {
                off.push(res);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    let mean = |v: &[Run], f: fn(&Run) -> f64| {
        let mut x: Vec<f64> = v.iter().map(f).collect();
        x.sort_by(f64::total_cmp);
        x[x.len() / 2]
    };
    let total = |r: &Run| r.cpu_trap + r.cpu_end;
    let (t_off, t_on) = (mean(&off, total), mean(&on, total));
    let (b_off, b_on) = (
        mean(&off, |r| r.bytes_per_conn),
        mean(&on, |r| r.bytes_per_conn),
    );
    println!("summary (median of {rounds}):");
    println!(
        "  server CPU, trap+end {n}: off {t_off:.3} s, on {t_on:.3} s => {:+.1} %",
        (t_on / t_off - 1.0) * 100.0
    );
    println!(
        "  trap only:            off {:.3} s, on {:.3} s",
        mean(&off, |r| r.cpu_trap),
        mean(&on, |r| r.cpu_trap)
    );
    println!(
        "  end (+history rows):  off {:.3} s, on {:.3} s",
        mean(&off, |r| r.cpu_end),
        mean(&on, |r| r.cpu_end)
    );
    let (e_off, e_on) = (mean(&off, |r| r.cpu_engine), mean(&on, |r| r.cpu_engine));
    println!(
        "  engine thread only:   off {e_off:.3} s, on {e_on:.3} s => {:+.1} %",
        (e_on / e_off - 1.0) * 100.0
    );
    println!(
        "  history writer thread: on {:.3} s",
        mean(&on, |r| r.cpu_writer)
    );
    println!("  userspace bytes per held connection: off {b_off:.0}, on {b_on:.0}");
    println!(
        "  RSS held: off {:.0} KiB, on {:.0} KiB",
        mean(&off, |r| r.rss_held as f64 / 1024.0),
        mean(&on, |r| r.rss_held as f64 / 1024.0)
    );
}

struct Run {
    held: usize,
    ended: usize,
    cpu_trap: f64,
    cpu_end: f64,
    /// Trap + end, the engine (main) thread only.
    cpu_engine: f64,
    /// The history writer thread, since start (it is idle before the
    /// first row).
    cpu_writer: f64,
    rss_idle: u64,
    rss_held: u64,
    bytes_per_conn: f64,
    rows: f64,
    scrapes: usize,
}

impl Run {
    fn print(&self, label: &str) {
        println!(
            "  stats {label}: held {} ended {} | CPU trap {:.3} s, end {:.3} s, engine thread {:.3} s, history writer {:.3} s | RSS idle {} KiB, held {} KiB, {:.0} B/conn | history rows {} | scrapes {}",
            self.held,
            self.ended,
            self.cpu_trap,
            self.cpu_end,
            self.cpu_engine,
            self.cpu_writer,
            self.rss_idle / 1024,
            self.rss_held / 1024,
            self.bytes_per_conn,
            self.rows,
            self.scrapes
        );
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn run(n: usize, stats: bool, dir: &std::path::Path) -> Run {
    std::fs::create_dir_all(dir).expect("run dir");
    let db: PathBuf = dir.join(format!("history-{}.db", if stats { "on" } else { "off" }));
    let maddr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let mut args: Vec<String> = vec![
        "--log-format".into(),
        "json".into(),
        "--log-level".into(),
        "warn,tarpit::daemon=info".into(),
        "serve".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
    ];
    // `STATS_BENCH_ON=control,history,metrics` (the default: all three)
    // picks what the "on" runs enable, to see which part costs what.
    let want = std::env::var("STATS_BENCH_ON").unwrap_or_else(|_| "control,history,metrics".into());
    let has = |f: &str| stats && want.split(',').any(|w| w.trim() == f);
    let (history, metrics) = (has("history"), has("metrics"));
    if stats {
        let control = dir.join("control.sock");
        args.extend([
            "--control".into(),
            if has("control") {
                control.display().to_string()
            } else {
                "off".into()
            },
            "--history".into(),
            if history {
                db.display().to_string()
            } else {
                "off".into()
            },
        ]);
        if metrics {
            args.extend(["--metrics".into(), maddr.to_string()]);
        }
    } else {
        args.extend([
            "--control".into(),
            "off".into(),
            "--history".into(),
            "off".into(),
        ]);
    }
    let mut c = Command::new(support::bin());
    c.args(&args);
    let mut server = Proc::spawn(c);
    server.forget_lines();
    let pid = server.pid();
    let addr = server.addr();

    // With metrics on, scrape every second like Prometheus would.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scraper = metrics.then(|| {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if scrape(maddr).is_some() {
                    n += 1;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            n
        })
    });

    std::thread::sleep(Duration::from_secs(1));
    let rss_idle = rss(pid);
    let fds_idle = fd_count(pid);
    let cpu0 = cpu_ns(pid);
    let eng0 = thread_cpu_ns(pid);

    let procs = n.div_ceil(PER_CLIENT_PROC);
    let mut clients: Vec<(Child, ChildStdin, BufReader<std::process::ChildStdout>)> = (0..procs)
        .map(|i| {
            let count = PER_CLIENT_PROC.min(n - i * PER_CLIENT_PROC);
            let mut c = Command::new(std::env::current_exe().expect("self"))
                .env("STATS_BENCH_CLIENT", format!("{addr} {count} {i}"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn client");
            let stdin = c.stdin.take().expect("stdin");
            let out = BufReader::new(c.stdout.take().expect("stdout"));
            (c, stdin, out)
        })
        .collect();
    let mut connected = 0;
    for (_, _, out) in &mut clients {
        let mut l = String::new();
        out.read_line(&mut l).ok();
        connected += l
            .trim()
            .strip_prefix("connected ")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
    }
    let held = wait_until(Duration::from_secs(60), || {
        let h = fd_count(pid).saturating_sub(fds_idle);
        (h >= connected).then_some(h)
    })
    .unwrap_or_else(|| fd_count(pid).saturating_sub(fds_idle));
    std::thread::sleep(Duration::from_millis(500));
    let cpu1 = cpu_ns(pid);
    let rss_held = rss(pid);

    // Every client resets its connections: each ends as peer_reset.
    for (_, stdin, _) in &mut clients {
        let _ = stdin.write_all(b"reset\n");
        let _ = stdin.flush();
    }
    for (_, _, out) in &mut clients {
        let mut l = String::new();
        out.read_line(&mut l).ok();
    }
    let _ = wait_until(Duration::from_secs(60), || {
        (fd_count(pid) <= fds_idle).then_some(())
    });
    let mut rows = 0.0;
    if history {
        // Until the writer has committed every row (batches of <= 1 s).
        // Counted from the database by this process: polling `/metrics` at
        // 50 Hz here would bill the server for ~50 scrapes per run that no
        // Prometheus makes (the scraper thread above keeps the realistic
        // 1/s), which was a third of the measured overhead.
        rows = wait_until(Duration::from_secs(30), || {
            let r = db_rows(&db)?;
            (r >= connected as f64).then_some(r)
        })
        .unwrap_or_else(|| db_rows(&db).unwrap_or(0.0));
    } else {
        // Same settle time as the on run's last batch.
        std::thread::sleep(Duration::from_millis(1200));
    }
    let cpu2 = cpu_ns(pid);
    let eng2 = thread_cpu_ns(pid);
    let writer = named_thread_cpu_ns(pid, "tarpit-history");
    if history && metrics {
        // The writer's own count, after the CPU reading.
        rows = scrape(maddr)
            .map(|b| sample(&b, "tarpit_history_rows_written_total"))
            .unwrap_or(rows);
    }
    let ended = connected.saturating_sub(fd_count(pid).saturating_sub(fds_idle));

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let scrapes = scraper.map(|t| t.join().unwrap_or(0)).unwrap_or(0);
    for (mut c, stdin, _) in clients {
        drop(stdin);
        let _ = c.wait();
    }
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = server.child.wait();
    Run {
        held,
        ended,
        cpu_trap: (cpu1 - cpu0) as f64 / 1e9,
        cpu_end: (cpu2 - cpu1) as f64 / 1e9,
        cpu_engine: (eng2 - eng0) as f64 / 1e9,
        cpu_writer: writer as f64 / 1e9,
        rss_idle,
        rss_held,
        bytes_per_conn: rss_held.saturating_sub(rss_idle) as f64 / held.max(1) as f64,
        rows,
        scrapes,
    }
}

fn wait_until<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// GET /metrics; the body, if the answer was 200.
fn scrape(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// Rows committed to the history database, read through SQLite (WAL: the
/// reader never blocks the writer).
fn db_rows(db: &std::path::Path) -> Option<f64> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .ok()?;
    c.query_row("SELECT count(*) FROM connections", [], |r| {
        r.get::<_, i64>(0)
    })
    .ok()
    .map(|n| n as f64)
}

fn sample(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Client process: `ADDR COUNT INDEX` — opens COUNT connections from
/// 127.(20+INDEX).x.y, prints `connected N`; on `reset` from stdin closes
/// them all with an RST and prints `reset N`; exits when stdin closes (or
/// after HARD_STOP).
fn client(spec: &str) {
    let mut it = spec.split_whitespace();
    let addr: SocketAddr = it.next().and_then(|v| v.parse().ok()).expect("addr");
    let count: usize = it.next().and_then(|v| v.parse().ok()).expect("count");
    let idx: usize = it.next().and_then(|v| v.parse().ok()).expect("index");
    let started = Instant::now();
    let mut held = Vec::with_capacity(count);
    for i in 0..count {
        if started.elapsed() > HARD_STOP {
            break;
        }
        let ip = i / PER_SOURCE_IP;
        let src: SocketAddr = format!("127.{}.{}.{}:0", 20 + idx, ip / 250, 1 + ip % 250)
            .parse()
            .expect("src");
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        if s.bind(&src.into()).is_err() || s.connect(&addr.into()).is_err() {
            continue;
        }
        held.push(s);
    }
    println!("connected {}", held.len());
    let _ = std::io::stdout().flush();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for l in stdin.lock().lines() {
            match l {
                Ok(l) if l.trim() == "reset" => {
                    let _ = tx.send(true);
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let _ = tx.send(false);
    });
    while let Ok(true) = rx.recv_timeout(HARD_STOP.saturating_sub(started.elapsed())) {
        let n = held.len();
        for s in held.drain(..) {
            let _ = s.set_linger(Some(Duration::ZERO));
        }
        println!("reset {n}");
        let _ = std::io::stdout().flush();
    }
}

/// CPU time of the server's main thread (the engine), nanoseconds.
fn thread_cpu_ns(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU time of the server's thread called `name`, nanoseconds (0 if none).
fn named_thread_cpu_ns(pid: u32, name: &str) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| {
                    std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == name)
                })
                .filter_map(|e| std::fs::read_to_string(e.path().join("schedstat")).ok())
                .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0)
}
