//! `cargo bench --bench stateless`: what the stateless engine costs.
//!
//! 1. Decision speed: the engine core (parse, cookie check, flow table,
//!    reply build) on one core, in process — answered packets per second.
//! 2. End to end, in two network namespaces made here (10.77.200.0/24):
//!    a raw-socket flood of valid zero-window probes from the attacker
//!    namespace for a few seconds; answered packets per CPU-second of the
//!    tarpit process (nfnetlink_log in, AF_PACKET out).
//! 3. Holding: `STATELESS_HOLD_N` (default 100,000, at most 1,000,000)
//!    connections opened from the attacker namespace by ceil(N / 18,500)
//!    client processes (under the 20,000-descriptor limit), 4 source
//!    addresses each, each with 100 bytes stuck in its send queue: the
//!    tarpit's RSS per connection as they grow, then its CPU and answers
//!    per second over `STATELESS_HOLD_WINDOWS` (seconds, default 30,60,120),
//!    server sockets, conntrack entries, `tarpit stats` and the history.
//!    `hold-capped`: 100,000 at most with `--flow-cap 10000`.
//! 0. `sizes` and `growth`: the flow table's struct sizes, and a default
//!    core grown to 1,000,000 flows in process (RSS per flow, longest
//!    answer). `STATELESS_BENCH=a,b,...` picks parts (default all).
//!
//! Needs root (namespaces, nft); prints a reason and exits otherwise. Every
//! loop is bounded in count and time; client processes exit on their own
//! after 900 s at the latest; namespaces are removed on exit.

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};
use tarpit::engine::stateless::cookie::Cookies;
use tarpit::engine::stateless::core::Core;
use tarpit::engine::stateless::flows;
use tarpit::engine::stateless::packet::{self, Segment, Tuple};
use tarpit::engine::stateless::wire::tcp::{self, ACK as TCP_ACK, SYN as TCP_SYN};
use tarpit::engine::stateless::{Outcome, StatelessOptions};
use tarpit::firewall::{NftConfig, TrapMode};

const NET: &str = "10.77.200";
/// Connections per client process: under the 20,000-descriptor limit.
const PER_CLIENT_PROC: usize = 18_500;
/// Source addresses per client process.
const ADDRS_PER_PROC: usize = 4;
const CLIENT_HARD_STOP: Duration = Duration::from_secs(900);

/// The `i`-th client source address: 10.77.201.1, .2, ... .250, 10.77.202.1, ...
fn client_addr(i: usize) -> String {
    format!("10.77.{}.{}", 201 + i / 250, 1 + i % 250)
}
const GROUP: u16 = 7;

fn main() {
    if let Ok(spec) = std::env::var("STATELESS_CLIENT") {
        client(&spec);
        return;
    }
    let parts = std::env::var("STATELESS_BENCH").unwrap_or_else(|_| "all".into());
    let want = |p: &str| parts == "all" || parts.split(',').any(|x| x == p);
    if want("sizes") {
        sizes();
    }
    if want("growth") {
        growth();
    }
    if want("decide") {
        in_process();
    }
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    if !root {
        println!("skipping the namespace parts: need root");
        return;
    }
    let n: usize = std::env::var("STATELESS_HOLD_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
        .min(1_000_000);
    if want("e2e") {
        end_to_end();
    }
    if want("hold") {
        hold(n, &[]);
    }
    if want("hold-capped") {
        hold(n.min(100_000), &["--flow-cap".into(), "10000".into()]);
    }
}

/// The sizes memory per flow is made of.
fn sizes() {
    println!(
        "sizes: flow {} B + index {} B per flow (linear hashing, one bucket per flow); FlowInfo {} B, LiveConn {} B (snapshots only)",
        flows::FLOW_BYTES,
        flows::INDEX_BYTES_PER_FLOW,
        std::mem::size_of::<flows::FlowInfo>(),
        std::mem::size_of::<tarpit::engine::record::LiveConn>(),
    );
}

/// Resident set of this process, bytes.
fn self_rss() -> u64 {
    rss(std::process::id())
}

/// Goal 1 in process: a default engine core grows from 0 to 1,000,000
/// flows (one handshake ACK each, as a real client's); its RSS growth per
/// flow at each step, and the longest single answer during growth (an index
/// that rehashed all at once would show here as a long stall).
fn growth() {
    let opts = StatelessOptions::default();
    let keys = Cookies::with_key(3, 4);
    let mut core = Core::new(
        &opts,
        Cookies::with_key(3, 4),
        Vec::new(),
        SystemTime::now(),
    );
    let mut out = [0u8; packet::MAX_REPLY];
    let mut pkt = vec![0u8; 128];
    let marks = [
        1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000,
    ];
    let dst: IpAddr = "10.77.255.1".parse().unwrap();
    let rss0 = self_rss();
    let started = Instant::now();
    let (mut worst, mut worst_at) = (Duration::ZERO, 0u32);
    let mut slow = 0u64; // answers that took over 100 us
    let mut total = Duration::ZERO;
    let mut worst_per_flow = 0.0f64;
    for n in 0..1_000_000u32 {
        let t = Tuple {
            src: IpAddr::V4(std::net::Ipv4Addr::from(0x0a4d_0000 | (n >> 14))),
            dst,
            src_port: 1024 + (n & 0x3fff) as u16,
            dst_port: 22,
        };
        let iss = keys.syn_ack_seq(&t, 1000);
        let len = peer_segment(t, TCP_ACK, 1001, iss.wrapping_add(1))
            .emit(&mut pkt)
            .expect("build");
        let t0 = Instant::now();
        let o = core.handle(&pkt[..len], 1, &mut out);
        let d = t0.elapsed();
        assert!(matches!(o, Outcome::Reply { .. }), "{o:?}");
        total += d;
        if d > worst {
            (worst, worst_at) = (d, n + 1);
        }
        if d > Duration::from_micros(100) {
            slow += 1;
        }
        if marks.contains(&(n + 1)) {
            let grown = self_rss().saturating_sub(rss0);
            let per = grown as f64 / f64::from(n + 1);
            worst_per_flow = worst_per_flow.max(per);
            println!(
                "growth {:>9} flows: RSS +{:>7.2} MiB = {per:>5.1} B/flow; index {} buckets",
                n + 1,
                grown as f64 / 1048576.0,
                core.flow_buckets(),
            );
        }
    }
    println!(
        "growth to 1M: worst {worst_per_flow:.1} B/flow; longest answer {:.1} us (at flow {worst_at}), {slow} answers over 100 us, mean {:.2} us; {:.1}s in all",
        worst.as_secs_f64() * 1e6,
        total.as_secs_f64() * 1e6 / 1e6,
        started.elapsed().as_secs_f64()
    );
}

fn tuple(port: u16) -> Tuple {
    Tuple {
        src: "10.77.0.2".parse().unwrap(),
        dst: "10.77.0.1".parse().unwrap(),
        src_port: port,
        dst_port: 22,
    }
}

/// A segment the peer of `t` sends: no payload, MSS on a SYN.
fn peer_segment(t: Tuple, flags: u8, seq: u32, ack: u32) -> Segment<'static> {
    Segment {
        src: t.src,
        dst: t.dst,
        tcp: tcp::Repr {
            src_port: t.src_port,
            dst_port: t.dst_port,
            seq_number: seq,
            ack_number: ack,
            flags,
            window_len: 64240,
            max_seg_size: (flags & TCP_SYN != 0).then_some(1460),
            payload: &[],
        },
        payload_len: 0,
    }
}

fn from_peer(t: Tuple, flags: u8, seq: u32, ack: u32) -> Vec<u8> {
    let mut b = vec![0u8; 128];
    let n = peer_segment(t, flags, seq, ack)
        .emit(&mut b)
        .expect("build");
    b.truncate(n);
    b
}

/// Part 1: the decision path alone, one core.
fn in_process() {
    let opts = StatelessOptions::default();
    let cookies = Cookies::with_key(1, 2);
    // 10,000 connections' probes, round robin (flow table lookups hit).
    let probes: Vec<Vec<u8>> = (0..10_000u16)
        .map(|p| {
            let t = tuple(10_000 + p);
            let iss = cookies.syn_ack_seq(&t, 1000);
            from_peer(t, TCP_ACK, 1000, iss.wrapping_add(1))
        })
        .collect();
    let syns: Vec<Vec<u8>> = (0..10_000u16)
        .map(|p| from_peer(tuple(10_000 + p), TCP_SYN, 1000, 0))
        .collect();
    let mut core = Core::new(&opts, cookies, Vec::new(), SystemTime::now());
    let mut out = [0u8; packet::MAX_REPLY];
    for (name, set) in [("SYN -> SYN/ACK", &syns), ("probe -> ACK", &probes)] {
        let t = Instant::now();
        let mut answered = 0u64;
        let mut i = 0usize;
        while t.elapsed() < Duration::from_secs(2) && answered < 50_000_000 {
            for _ in 0..1000 {
                if let Outcome::Reply { .. } = core.handle(&set[i % set.len()], 1, &mut out) {
                    answered += 1;
                }
                i += 1;
            }
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "in-process {name:<15} {:>10.0} answered/s on one core ({answered} in {secs:.2}s)",
            answered as f64 / secs
        );
    }
}

/// `STATELESS_NAPI_THREADS=1`: see [`Lab::new`].
fn napi_threads() -> bool {
    std::env::var("STATELESS_NAPI_THREADS").is_ok_and(|v| v == "1")
}

/// Two namespaces joined by veth; removed on drop.
struct Lab {
    server: String,
    attacker: String,
    tarpit: Option<Child>,
    log: std::path::PathBuf,
}

fn sh(cmd: &str) -> String {
    let o = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    assert!(
        o.status.success(),
        "`{cmd}`: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

impl Lab {
    fn new(extra: &[String], attacker_hosts: usize) -> Lab {
        let pid = std::process::id();
        let lab = Lab {
            server: format!("tp-sbs-{pid}"),
            attacker: format!("tp-sba-{pid}"),
            tarpit: None,
            log: std::env::temp_dir().join(format!("tp-sbs-{pid}.log")),
        };
        let (s, a) = (&lab.server, &lab.attacker);
        sh(&format!("ip netns add {s} && ip netns add {a}"));
        sh(&format!(
            "ip link add sbs{pid} netns {s} type veth peer name sba{pid} netns {a}"
        ));
        sh(&format!(
            "ip -n {s} addr add {NET}.1/16 dev sbs{pid} && ip -n {s} link set sbs{pid} up && ip -n {s} link set lo up"
        ));
        let mut cmds = format!("ip -n {a} addr add {NET}.10/16 dev sba{pid}; ");
        for h in 0..attacker_hosts {
            cmds += &format!("ip -n {a} addr add {}/16 dev sba{pid}; ", client_addr(h));
        }
        sh(&cmds);
        sh(&format!(
            "ip -n {a} link set sba{pid} up && ip -n {a} link set lo up && ip netns exec {a} ethtool -K sba{pid} tx off >/dev/null"
        ));
        if napi_threads() {
            // The replies' receive processing in the attacker's kernel runs
            // in a NAPI kernel thread, not in the softirq of the tarpit's
            // send() (which is what veth does by default, charging the
            // attacker's receive path to the tarpit).
            sh(&format!(
                "ip netns exec {a} ethtool -K sba{pid} gro on rx-gro-list on >/dev/null && ip netns exec {a} sh -c 'echo 1 > /sys/class/net/sba{pid}/threaded'"
            ));
            // veth hands a frame to the peer's NAPI thread only if it is
            // "eligible for GRO": with TSO on, only socket-owned frames are,
            // and frames from the tarpit's TX ring are owned by the ring.
            // Without TSO (nothing to segment here) all are.
            sh(&format!(
                "ip netns exec {s} ethtool -K sbs{pid} tso off >/dev/null"
            ));
        }
        // Lots of ephemeral ports per source address.
        sh(&format!(
            "ip netns exec {a} sysctl -qw net.ipv4.ip_local_port_range='1024 65000'"
        ));
        // What `tarpit watch` installs for `engine = "stateless"` and
        // `decoy_ports = [22]`.
        let rules = NftConfig {
            mode: TrapMode::Stateless { group: GROUP },
            decoy_ports: vec![22],
            ..NftConfig::default()
        };
        let f = std::env::temp_dir().join(format!("tp-sbs-{pid}.nft"));
        let text = tarpit::firewall::ruleset_text(&rules).expect("valid firewall config");
        std::fs::write(&f, text).expect("write rules");
        sh(&format!("ip netns exec {s} nft -f {}", f.display()));
        let _ = std::fs::remove_file(&f);
        // A conntrack user in the server namespace, so conntrack is active
        // there and "0 entries" means something.
        sh(&format!(
            "ip netns exec {s} nft 'add table inet probe; add chain inet probe input {{ type filter hook input priority 0; }}; add rule inet probe input ct state established counter accept'"
        ));
        let mut lab = lab;
        let logf = std::fs::File::create(&lab.log).expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.server, env!("CARGO_BIN_EXE_tarpit")])
            .args([
                "--log-format",
                "json",
                "--log-level",
                "warn,tarpit::daemon=info",
            ])
            .args(["serve", "--engine", "stateless", "--nflog-group", "7"])
            .args(if extra.iter().any(|a| a == "--control") {
                &[][..]
            } else {
                &["--control", "off"][..]
            })
            .args(if extra.iter().any(|a| a == "--history") {
                &[][..]
            } else {
                &["--history", "off"][..]
            })
            .args(extra)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("dup"))
            .stderr(logf)
            .spawn()
            .expect("spawn tarpit");
        lab.tarpit = Some(child);
        let t = Instant::now();
        while !lab.log_text().contains("serving (stateless engine)") {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "tarpit did not start: {}",
                lab.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        lab
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.tarpit.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Stops the tarpit and returns its final "stopped" log line.
    fn stop(&mut self) -> serde_json::Value {
        if let Some(mut c) = self.tarpit.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(20) {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["fields"]["message"] == "stopped" || v["message"] == "stopped")
            .unwrap_or_default()
    }

    /// Runs `f` on a thread inside the attacker namespace.
    fn in_attacker<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let p = format!("/run/netns/{}", self.attacker);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(p).expect("netns");
            tarpit::sys::enter_netns(&ns).expect("setns");
            f()
        })
        .join()
        .expect("attacker thread")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut c) = self.tarpit.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.server])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.attacker])
            .status();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn field(v: &serde_json::Value, k: &str) -> u64 {
    v["fields"][k]
        .as_u64()
        .or_else(|| v[k].as_u64())
        .unwrap_or(0)
}

/// utime + stime of `pid`, seconds.
fn cpu_secs(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    ticks as f64 / 100.0
}

/// Where a process's resident memory is: anonymous vs file-backed (the
/// binary's pages), and the largest mappings.
fn memory_breakdown(pid: u32) -> String {
    let roll = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let kb = |k: &str| {
        roll.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut maps: Vec<(u64, String)> = Vec::new();
    let mut name = String::new();
    for l in smaps.lines() {
        if l.split_whitespace()
            .next()
            .is_some_and(|f| f.contains('-') && !f.ends_with(':'))
        {
            let f: Vec<&str> = l.split_whitespace().collect();
            name = format!("{} {}", f[0], f.get(5).copied().unwrap_or("[anon]"));
        } else if let Some(v) = l.strip_prefix("Rss:") {
            let r: u64 = v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0);
            maps.push((r, name.clone()));
        }
    }
    maps.sort_by_key(|m| std::cmp::Reverse(m.0));
    let top: Vec<String> = maps
        .iter()
        .take(6)
        .map(|(r, n)| format!("{:.1} MiB {n}", *r as f64 / 1024.0))
        .collect();
    format!(
        "Rss {:.1} MiB = anonymous {:.1} + file-backed and ring {:.1}; largest mappings: {}",
        kb("Rss:") as f64 / 1024.0,
        kb("Anonymous:") as f64 / 1024.0,
        kb("Rss:").saturating_sub(kb("Anonymous:")) as f64 / 1024.0,
        top.join("; ")
    )
}

fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// Part 2: bounded floods from a raw socket in the attacker namespace:
/// SYNs (each answered with a SYN/ACK), then zero-window probes carrying
/// valid cookies (each answered with an ACK).
fn end_to_end() {
    let mut lab = Lab::new(&[], 1);
    let server_ip: IpAddr = format!("{NET}.1").parse().unwrap();
    let me: IpAddr = format!("{NET}.10").parse().unwrap();
    let flows: Vec<Tuple> = (0..256u16)
        .map(|p| Tuple {
            src: me,
            dst: server_ip,
            src_port: 20_000 + p,
            dst_port: 22,
        })
        .collect();
    let syns: Vec<Vec<u8>> = flows
        .iter()
        .map(|t| from_peer(*t, TCP_SYN, 1000, 0))
        .collect();
    // Learn each flow's cookie from its SYN/ACK.
    let (s, cookies) = lab.in_attacker({
        let syns = syns.clone();
        move || {
            let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::TCP)).expect("raw");
            s.set_header_included_v4(true).expect("hdrincl");
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .expect("timeout");
            let dst = SockAddr::from(SocketAddr::new(server_ip, 0));
            let mut cookies = std::collections::HashMap::new();
            let t = Instant::now();
            while cookies.len() < syns.len() && t.elapsed() < Duration::from_secs(10) {
                for p in &syns {
                    let _ = s.send_to(p, &dst);
                }
                let mut buf = [0u8; 1500];
                let t2 = Instant::now();
                while t2.elapsed() < Duration::from_millis(500) {
                    let Ok(n) = (&s).read(&mut buf) else { break };
                    if let Ok(seg) = Segment::parse(&buf[..n]) {
                        if seg.tcp.src_port == 22 && seg.tcp.flags == TCP_SYN | TCP_ACK {
                            cookies.insert(seg.tcp.dst_port, seg.tcp.seq_number);
                        }
                    }
                }
            }
            (s, cookies)
        }
    });
    assert_eq!(cookies.len(), flows.len(), "every SYN answered");
    let probes: Vec<Vec<u8>> = flows
        .iter()
        .map(|t| from_peer(*t, TCP_ACK, 1000, cookies[&t.src_port].wrapping_add(1)))
        .collect();
    // From here on the attacker's kernel must not see the answers (it
    // would answer each with an RST).
    let a = &lab.attacker;
    sh(&format!(
        "ip netns exec {a} nft 'add table inet b; add chain inet b pre {{ type filter hook prerouting priority raw; }}; add rule inet b pre tcp sport 22 drop'"
    ));
    let dst = SockAddr::from(SocketAddr::new(server_ip, 0));
    let mut cpus = Vec::new();
    for (name, set) in [("SYN -> SYN/ACK", &syns), ("probe -> ACK", &probes)] {
        std::thread::sleep(Duration::from_millis(300));
        let c0 = cpu_secs(lab.pid());
        let t = Instant::now();
        let mut sent = 0u64;
        while t.elapsed() < Duration::from_secs(5) && sent < 20_000_000 {
            for p in set.iter() {
                if s.send_to(p, &dst).is_ok() {
                    sent += 1;
                }
            }
        }
        let secs = t.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(500));
        let cpu = cpu_secs(lab.pid()) - c0;
        println!(
            "end-to-end {name:<15} sent {sent} in {secs:.1}s ({:.0}/s); tarpit used {cpu:.2} CPU-s",
            sent as f64 / secs
        );
        cpus.push(cpu);
    }
    let stopped = lab.stop();
    let (syn_acks, acks) = (field(&stopped, "syn_acks"), field(&stopped, "acks"));
    println!(
        "end-to-end: tarpit read {} packets, answered {syn_acks} SYN/ACKs ({:.0} per CPU-second) and {acks} ACKs ({:.0} per CPU-second); overruns (kernel dropped log copies) {}, AF_PACKET send errors {}",
        field(&stopped, "packets"),
        syn_acks as f64 / cpus[0].max(0.01),
        acks as f64 / cpus[1].max(0.01),
        field(&stopped, "overruns"),
        field(&stopped, "send_errors"),
    );
}

/// One question to the tarpit's control socket: the stateless snapshot
/// (10 longest-held connections) with its totals and counters.
fn ask(sock: &std::path::Path) -> Option<serde_json::Value> {
    let mut req = tarpit::control::Request::new("snapshot");
    req.args.insert("limit".into(), 10.into());
    tarpit::control::request(sock, &req, Duration::from_secs(30)).ok()
}

fn conntrack_count(ns: &str) -> String {
    sh(&format!(
        "ip netns exec {ns} conntrack -C 2>/dev/null || echo '?'"
    ))
    .trim()
    .to_string()
}

/// Part 3: hold `n` connections from `ceil(n / 18,500)` client processes
/// (4 source addresses each), printing the tarpit's memory as they grow,
/// then its CPU while it keeps them all answered, `tarpit stats` and the
/// history at that scale.
fn hold(n: usize, extra: &[String]) {
    let procs = n.div_ceil(PER_CLIENT_PROC);
    let dir = std::env::temp_dir().join(format!("tp-sbh-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench dir");
    let sock = dir.join("control.sock");
    let db = dir.join("history.db");
    let mut args: Vec<String> = extra.to_vec();
    args.extend([
        "--control".into(),
        sock.display().to_string(),
        "--history".into(),
        db.display().to_string(),
    ]);
    let mut lab = Lab::new(&args, procs * ADDRS_PER_PROC);
    let pid = lab.pid();
    std::thread::sleep(Duration::from_millis(500));
    let rss0 = rss(pid);
    println!(
        "hold {n} connections from {procs} client processes, {} source addresses, tarpit {}: idle RSS {:.2} MiB",
        procs * ADDRS_PER_PROC,
        if extra.is_empty() {
            "with default settings".to_string()
        } else {
            extra.join(" ")
        },
        rss0 as f64 / 1048576.0
    );
    println!("  idle tarpit memory: {}", memory_breakdown(pid));
    let exe = std::env::current_exe().expect("current exe");
    let started = Instant::now();
    let mut clients: Vec<Child> = Vec::new();
    let (tx, rx) = std::sync::mpsc::channel::<(usize, usize)>();
    for k in 0..procs {
        let count = PER_CLIENT_PROC.min(n - k * PER_CLIENT_PROC);
        let srcs: Vec<String> = (0..ADDRS_PER_PROC)
            .map(|j| client_addr(k * ADDRS_PER_PROC + j))
            .collect();
        let spec = format!("{},{NET}.1,22,{count},100", srcs.join("+"));
        let mut c = Command::new("ip")
            .args(["netns", "exec", &lab.attacker])
            .arg(&exe)
            .env("STATELESS_CLIENT", spec)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn client");
        let out = c.stdout.take().expect("stdout");
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            // `ready HELD QUEUED`
            let v: Vec<usize> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            let _ = tx.send((
                v.first().copied().unwrap_or(0),
                v.get(1).copied().unwrap_or(0),
            ));
        });
        clients.push(c);
    }
    drop(tx);
    // Watch the table grow until every client reported (bounded).
    let (mut held, mut queued, mut reported) = (0usize, 0usize, 0usize);
    let mut worst_per_conn = 0.0f64;
    let mut next_print = Duration::ZERO;
    while reported < procs && started.elapsed() < CLIENT_HARD_STOP {
        while let Ok((h, q)) = rx.try_recv() {
            held += h;
            queued += q;
            reported += 1;
        }
        std::thread::sleep(Duration::from_millis(200));
        if started.elapsed() < next_print && reported < procs {
            continue;
        }
        next_print = started.elapsed() + Duration::from_secs(5);
        let Some(v) = ask(&sock) else { continue };
        let flows = v["totals"]["held_now"].as_u64().unwrap_or(0);
        let r = rss(pid);
        let per = r.saturating_sub(rss0) as f64 / flows.max(1) as f64;
        if flows >= 1000 {
            worst_per_conn = worst_per_conn.max(per);
        }
        println!(
            "  {:>6.1}s: {flows:>7} flows in the table, tarpit RSS {:>6.2} MiB (+{:>6.2} MiB = {per:>6.1} B/conn), clients done {reported}/{procs}",
            started.elapsed().as_secs_f64(),
            r as f64 / 1048576.0,
            r.saturating_sub(rss0) as f64 / 1048576.0,
        );
    }
    let established = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let v = ask(&sock).unwrap_or_default();
    let flows = v["totals"]["held_now"].as_u64().unwrap_or(0);
    let sockets = sh(&format!("ip netns exec {} ss -tanH | wc -l", lab.server));
    let r = rss(pid);
    println!(
        "  established {held} connections ({queued} with 100 bytes queued) in {:.1}s; {flows} flows; tarpit RSS {:.2} MiB (+{:.1} B/conn; worst during growth {worst_per_conn:.1} B/conn); server-namespace TCP sockets {}; server conntrack entries {}",
        established.as_secs_f64(),
        r as f64 / 1048576.0,
        r.saturating_sub(rss0) as f64 / flows.max(1) as f64,
        sockets.trim(),
        conntrack_count(&lab.server),
    );
    println!(
        "  counters: ignored {} rejected {} flows_evicted {} send_errors {} overruns {}",
        v["counters"]["ignored"],
        v["counters"]["rejected"],
        v["counters"]["flows_evicted"],
        v["counters"]["send_errors"],
        v["counters"]["overruns"]
    );
    println!("  tarpit memory: {}", memory_breakdown(pid));
    // Keep them answered: the clients' persist timers back off to one
    // probe per 2 minutes; CPU and answers per second over successive
    // windows as they do.
    let windows: Vec<u64> = std::env::var("STATELESS_HOLD_WINDOWS")
        .ok()
        .map(|w| w.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![30, 60, 120]);
    let counters = |v: &serde_json::Value| {
        let c = &v["counters"];
        (
            c["acks"].as_u64().unwrap_or(0) + c["syn_acks"].as_u64().unwrap_or(0),
            c["overruns"].as_u64().unwrap_or(0),
            c["send_errors"].as_u64().unwrap_or(0),
        )
    };
    for w in windows {
        let c0 = cpu_secs(pid);
        let (a0, _, _) = counters(&ask(&sock).unwrap_or_default());
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(w));
        let v = ask(&sock).unwrap_or_default();
        let secs = t0.elapsed().as_secs_f64();
        let cpu = cpu_secs(pid) - c0;
        let (a1, over, errs) = counters(&v);
        println!(
            "  +{:>5.0}s holding {} flows: tarpit CPU {:.2}% of one core, {:.0} answers/s, RSS {:.2} MiB; nflog overruns {over}, AF_PACKET send errors {errs} (since start)",
            (t0.elapsed() + t0.duration_since(started) - established).as_secs_f64(),
            v["totals"]["held_now"],
            cpu / secs * 100.0,
            (a1.saturating_sub(a0)) as f64 / secs,
            rss(pid) as f64 / 1048576.0,
        );
    }
    // `tarpit stats` at this scale: the table (longest-held first, then
    // "... and N more") and the totals line.
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_tarpit"))
        .args(["stats", "--control"])
        .arg(&sock)
        .env("LINES", "8")
        .output()
        .expect("tarpit stats");
    let text = String::from_utf8_lossy(&out.stdout);
    println!(
        "  tarpit stats ({:.2}s, exit {}): {} / {}",
        t.elapsed().as_secs_f64(),
        out.status,
        text.lines().rev().nth(1).unwrap_or("").trim(),
        text.lines().last().unwrap_or("").trim()
    );
    for mut c in clients {
        drop(c.stdin.take());
        let _ = c.wait();
    }
    let stopped = lab.stop();
    println!(
        "  stopped: trapped {} packets {} syn_acks {} acks {} overruns {} send_errors {}",
        field(&stopped, "trapped"),
        field(&stopped, "packets"),
        field(&stopped, "syn_acks"),
        field(&stopped, "acks"),
        field(&stopped, "overruns"),
        field(&stopped, "send_errors"),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_tarpit"))
        .args(["report", "--json", "--since", "1d", "--history"])
        .arg(&db)
        .output()
        .expect("tarpit report");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let dropped = lab
        .log_text()
        .lines()
        .rev()
        .find(|l| l.contains("dropped_total"))
        .unwrap_or("")
        .to_string();
    println!(
        "  history: {} rows (tarpit report {}); last history-drop line: {}",
        r["totals"]["connections"],
        out.status,
        if dropped.is_empty() { "none" } else { &dropped }
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Client process: `src+src+...,dst,port,count,payload`. Opens `count`
/// connections from the sources in turn, writes `payload` bytes on each,
/// prints `ready HELD QUEUED`, and holds them until stdin closes (or 900 s).
fn client(spec: &str) {
    let deadline = Instant::now() + CLIENT_HARD_STOP;
    let p: Vec<&str> = spec.split(',').collect();
    let srcs: Vec<IpAddr> = p
        .first()
        .map(|v| v.split('+').filter_map(|a| a.parse().ok()).collect())
        .unwrap_or_default();
    let (Some(_), Some(dst), Some(port), Some(count), Some(payload)) = (
        srcs.first(),
        p.get(1).and_then(|v| v.parse::<IpAddr>().ok()),
        p.get(2).and_then(|v| v.parse::<u16>().ok()),
        p.get(3).and_then(|v| v.parse::<usize>().ok()),
        p.get(4).and_then(|v| v.parse::<usize>().ok()),
    ) else {
        eprintln!("bad client spec {spec}");
        return;
    };
    let _ = tarpit::sys::raise_nofile_limit();
    let dst = SocketAddr::new(dst, port);
    let threads = 16;
    let hs: Vec<_> = (0..threads)
        .map(|k| {
            let srcs = srcs.clone();
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let mut queued = 0usize;
                let data = vec![b'A'; payload];
                for i in (k..count).step_by(threads) {
                    let src = srcs[i % srcs.len()];
                    if Instant::now() > deadline {
                        break;
                    }
                    let Ok(s) = Socket::new(Domain::IPV4, Type::STREAM, None) else {
                        break;
                    };
                    // The port is chosen by connect (per destination), not
                    // by a search of the bind table.
                    let _ = tarpit::sys::set_bind_address_no_port(s.as_raw_fd());
                    if s.bind(&SocketAddr::new(src, 0).into()).is_err() {
                        break;
                    }
                    if s.connect_timeout(&dst.into(), Duration::from_secs(10))
                        .is_err()
                    {
                        continue;
                    }
                    let mut t: TcpStream = s.into();
                    let _ = t.set_nonblocking(true);
                    if t.write(&data).is_ok_and(|w| w == payload) {
                        queued += 1;
                    }
                    v.push(t);
                }
                (v, queued)
            })
        })
        .collect();
    let mut conns: Vec<TcpStream> = Vec::new();
    let mut queued = 0;
    for h in hs {
        let (v, q) = h.join().unwrap_or_default();
        conns.extend(v);
        queued += q;
    }
    println!("ready {} {queued}", conns.len());
    let _ = std::io::stdout().flush();
    // Hold until the parent closes stdin, bounded.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut b = [0u8; 1];
        let _ = std::io::stdin().read(&mut b);
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    drop(conns);
}
