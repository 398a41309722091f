//! `cargo bench --bench hold`: how much it costs to hold N connections.
//!
//! Starts the real `tarpit serve` on loopback, opens N connections (default
//! 10,000; `HOLD_N=15000` for the target figure) from several client
//! processes (each stays far below the 20,000 open-file limit) whose source
//! addresses are spread over 127.x.y.z, holds them, and prints:
//! held count, userspace bytes per held connection ((RSS held − RSS idle)/N),
//! idle CPU over 10 s of holding, and the accept rate.
//!
//! `HOLD_MODE=bait` holds them under an ssh bait (`HOLD_DRIP`, default the
//! policy's 10 s) and measures 20 s instead of 10: CPU-seconds per second
//! of the drip (one small segment per connection per interval; the clients
//! never read) and the bytes per connection with the wheel's links. The
//! clients never speak, so this bait starts at accept (`start=accept`);
//! `HOLD_MODE=bait-wait` holds them under the default start instead (bait
//! waiting for the peer to speak SSH, on EPOLLIN): what waiting costs.
//!
//! `HOLD_MODE=stuck` holds them silent, but each client writes 2 KiB first,
//! more than the 1,152-byte window: every connection's FIN would be stuck,
//! so each gets an exit probe (one raw out-of-order byte, see `sys::probe`;
//! needs root) every max(1 s, age/20) — at this age every second, the
//! highest rate there is. The figure is the probes' CPU.
//!
//! With `HOLD_SNAPSHOTS=K` the control socket is on (in a temp dir) and,
//! once the connections are held, the bench asks K times each for the
//! default `snapshot` (what `tarpit stats` asks: the 1,000 longest-held),
//! for a snapshot of everything held (`limit` = N, at most 10,000 per
//! answer; what every `snapshot` was before issue 12) and for `totals`, and
//! prints how much the server's RSS grew per call.
//!
//! Bounded: at most `HOLD_N` (capped at 19,000) connections, and every
//! process exits on its own after 180 s at the latest.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::proc::{cpu_ns, fd_count, rss};
use support::serve::Proc;

const PER_CLIENT_PROC: usize = 4000;
/// Below the default `--per-ip` cap of 32, so the bench runs the default
/// configuration (per-peer lists kept) without evictions.
const PER_SOURCE_IP: usize = 30;
const HARD_STOP: Duration = Duration::from_secs(180);

fn main() {
    if let Ok(spec) = std::env::var("HOLD_CLIENT") {
        client(&spec);
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` would not, but
    // nothing here needs arguments.
    let n: usize = std::env::var("HOLD_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
        .min(19_000);
    let mut extra: Vec<String> = std::env::var("HOLD_SERVE_ARGS")
        .map(|s| s.split_whitespace().map(String::from).collect())
        .unwrap_or_default();
    let mode = std::env::var("HOLD_MODE").unwrap_or_default();
    let bait = mode == "bait" || mode == "bait-wait";
    let start = if mode == "bait" { ",start=accept" } else { "" };
    let drip = std::env::var("HOLD_DRIP").unwrap_or_else(|_| "10s".into());
    if bait {
        extra.extend([
            "--policy".into(),
            format!("default:bait=ssh,drip={drip}{start}"),
        ]);
    }
    let stuck = mode == "stuck";
    let window = Duration::from_secs(if bait { 20 } else { 10 });
    let snapshots: usize = std::env::var("HOLD_SNAPSHOTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
        .min(1000);
    let ctl_dir = std::env::temp_dir().join(format!("tarpit-hold-{}", std::process::id()));
    let control = ctl_dir.join("control.sock");
    if snapshots > 0 {
        std::fs::create_dir_all(&ctl_dir).expect("temp dir");
    }
    // HOLD_BIN: another build of tarpit to measure (an older one, say).
    let bin = std::env::var("HOLD_BIN").unwrap_or_else(|_| support::bin().to_string());
    let mut c = Command::new(bin);
    c.args([
        "--log-format",
        "json",
        "--log-level",
        "warn,tarpit::daemon=info",
        "serve",
        "--listen",
        "127.0.0.1:0",
        // Measure the engine alone, and never touch the host's paths.
        "--history",
        "off",
        "--control",
    ]);
    if snapshots > 0 {
        c.arg(&control);
    } else {
        c.arg("off");
    }
    c.args(&extra);
    let mut server = Proc::spawn(c);
    server.forget_lines();
    let pid = server.pid();
    let addr = server.addr();

    std::thread::sleep(Duration::from_secs(1));
    let rss_idle = rss(pid);
    let fds_idle = fd_count(pid);
    let cpu_idle0 = cpu_ns(pid);

    // Load: several client processes, each with its own source range.
    let procs = n.div_ceil(PER_CLIENT_PROC);
    let t0 = Instant::now();
    let mut clients: Vec<Child> = (0..procs)
        .map(|i| {
            let count = PER_CLIENT_PROC.min(n - i * PER_CLIENT_PROC);
            Command::new(std::env::current_exe().expect("self"))
                .env(
                    "HOLD_CLIENT",
                    format!("{addr} {count} {i} {}", if stuck { 2048 } else { 0 }),
                )
                .stdin(Stdio::piped())
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
    }
    // Held = descriptors the server opened for them.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut held = 0;
    while Instant::now() < deadline {
        held = fd_count(pid).saturating_sub(fds_idle);
        if held >= connected {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let accept_secs = t0.elapsed().as_secs_f64();
    let accept_cpu = cpu_ns(pid) - cpu_idle0;
    std::thread::sleep(Duration::from_secs(2));
    let rss_held = rss(pid);
    let cpu0 = cpu_ns(pid);
    let w0 = Instant::now();
    std::thread::sleep(window);
    let cpu1 = cpu_ns(pid);
    let wall = w0.elapsed().as_secs_f64();
    let held_after = fd_count(pid).saturating_sub(fds_idle);

    let per_conn = (rss_held.saturating_sub(rss_idle)) as f64 / held.max(1) as f64;
    let cpu_pct = (cpu1 - cpu0) as f64 / 1e9 / wall * 100.0;
    let mode = if mode == "bait-wait" {
        format!("ssh bait, drip {drip}, waiting for peers that never speak")
    } else if bait {
        format!("ssh bait, drip {drip}, from accept")
    } else if stuck {
        "silent, every client wrote 2 KiB (exit probes every 1 s)".into()
    } else {
        "silent".into()
    };
    println!("hold benchmark: N={n} ({procs} client processes), {mode}");
    println!("  connected by clients      {connected}");
    println!(
        "  held by tarpit            {held} (still {held_after} after {} s)",
        window.as_secs()
    );
    println!(
        "  RSS idle / held           {} KiB / {} KiB",
        rss_idle / 1024,
        rss_held / 1024
    );
    println!("  userspace bytes per conn  {per_conn:.1}");
    println!(
        "  CPU while holding ({} s)   {cpu_pct:.4} % of one core = {:.5} CPU-s/s",
        window.as_secs(),
        cpu_pct / 100.0
    );
    println!(
        "  accept rate               {:.0} conn/s ({held} in {accept_secs:.2} s, clients' connect time included)",
        held as f64 / accept_secs
    );
    println!(
        "  server CPU while trapping {:.2} s for {held} connections",
        accept_cpu as f64 / 1e9
    );
    println!(
        "  slot size                 {} B",
        std::mem::size_of::<tarpit::engine::socket::table::Held>()
    );

    if snapshots > 0 {
        let all = format!(r#"{{"cmd":"snapshot","limit":{held}}}"#);
        // Smallest first: the peak (VmHWM) only grows, so each line's peak
        // growth is its own.
        for (what, req) in [
            ("totals", r#"{"cmd":"totals"}"#),
            ("snapshot (default: 1,000 listed)", r#"{"cmd":"snapshot"}"#),
            ("snapshot of all held (as before)", all.as_str()),
        ] {
            let req: tarpit::control::Request = serde_json::from_str(req).expect("request");
            let before = rss(pid);
            let peak_before = hwm(pid);
            let t = Instant::now();
            let mut bytes = 0;
            let mut first = 0;
            let mut answered = true;
            for i in 0..snapshots {
                let v = match tarpit::control::request(&control, &req, Duration::from_secs(60)) {
                    Ok(v) => v,
                    Err(e) => {
                        println!("  {what:<34} not answered: {e}");
                        answered = false;
                        break;
                    }
                };
                bytes = serde_json::to_vec(&v).map_or(0, |b| b.len());
                if i == 0 {
                    first = rss(pid).saturating_sub(before);
                }
            }
            if !answered {
                continue;
            }
            let ms = t.elapsed().as_secs_f64() * 1000.0 / snapshots as f64;
            let grew = rss(pid).saturating_sub(before);
            let peak = hwm(pid).saturating_sub(peak_before);
            println!(
                "  {what:<34} peak RSS +{} KiB ({:.0} B per held conn); RSS +{} KiB after the first call, +{} KiB after {snapshots}; {ms:.1} ms and {} KiB of answer per call",
                peak / 1024,
                peak as f64 / held.max(1) as f64,
                first / 1024,
                grew / 1024,
                bytes / 1024
            );
        }
        println!("  RSS after the calls        {} KiB", rss(pid) / 1024);
        let _ = std::fs::remove_dir_all(&ctl_dir);
    }

    for c in &mut clients {
        drop(c.stdin.take());
    }
    for c in &mut clients {
        let _ = c.wait();
    }
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = server.child.wait();
}

/// Peak resident size (VmHWM) of `pid`, in bytes.
fn hwm(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// Client process: `ADDR COUNT INDEX` — opens COUNT connections from
/// 127.(10+INDEX).x.y sources, prints `connected N`, holds until stdin closes
/// (or HARD_STOP), then exits.
fn client(spec: &str) {
    let mut it = spec.split_whitespace();
    let addr: SocketAddr = it.next().and_then(|v| v.parse().ok()).expect("addr");
    let count: usize = it.next().and_then(|v| v.parse().ok()).expect("count");
    let idx: usize = it.next().and_then(|v| v.parse().ok()).expect("index");
    let write: usize = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let data = vec![b'x'; write];
    let started = Instant::now();
    let mut held = Vec::with_capacity(count);
    for i in 0..count {
        if started.elapsed() > HARD_STOP {
            break;
        }
        let ip = i / PER_SOURCE_IP;
        let src: SocketAddr = format!("127.{}.{}.{}:0", 10 + idx, ip / 250, 1 + ip % 250)
            .parse()
            .expect("src");
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        if s.bind(&src.into()).is_err() || s.connect(&addr.into()).is_err() {
            continue;
        }
        let mut t = TcpStream::from(s);
        // Into the send buffer at once; the part past the window stays there.
        if write > 0 && t.write_all(&data).is_err() {
            continue;
        }
        held.push(t);
    }
    println!("connected {}", held.len());
    let _ = std::io::stdout().flush();
    // Hold until the parent closes stdin, bounded by HARD_STOP.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::stdin().read_line(&mut s);
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(HARD_STOP.saturating_sub(started.elapsed()));
}
