//! `cargo bench --bench efficacy` (root): does the tarpit waste real
//! attackers' time, and does it count that time truly?
//!
//! Real clients (OpenSSH, hydra, medusa, ncrack, nmap -sV, curl, wget,
//! paramiko, asyncssh, python requests/urllib, a raw 4 KiB writer) run, all
//! in parallel, against every target: a DROP rule, a closed port, endlessh,
//! and `tarpit serve` (ports 22 and 80) with the default silent trap and
//! with each policy in [`TARGETS`]. Every client runs under a wall-clock cap
//! (`EFFICACY_CAP`, default 240 s) and is killed there. The bench prints how
//! long each tool was stuck (its process start to its exit, by the bench's
//! clock) and what the tarpit itself counted for that tool's connections
//! (engaged, from its JSON records, matched by source address), then the
//! best policy against the best of DROP, endlessh and the silent trap.
//!
//! Topology (10.77.250.0/24, namespaces made and removed here): a hub
//! namespace with a bridge; each target in its own namespace at
//! 10.77.250.(10+j), each tool in its own namespace at 10.77.250.(100+i),
//! so the tarpit's records say which tool a connection came from.
//!
//! Knobs: `EFFICACY_CAP` (seconds, default 240), `EFFICACY_GRACE` (at most
//! this many seconds after the clients for the tarpit's figures to be final,
//! default 380 − cap, at least 60; it ends as soon as they are),
//! `EFFICACY_TOOLS` / `EFFICACY_TARGETS` (comma-separated names as the
//! tables print them, case-insensitive, e.g.
//! `EFFICACY_TOOLS='ssh,nmap -sV' EFFICACY_TARGETS=DROP,silent,syn60`: run
//! only those; an unknown name stops the bench and lists the known ones),
//! `EFFICACY_PYENV` (the venv with PyPI paramiko, asyncssh and requests;
//! default `target/efficacy-venv`, made by `benches/efficacy-tools.sh`),
//! `EFFICACY_SERVE_ARGS` (replaces the serve flags below; the record-limit
//! flags are added unless it names them), `EFFICACY_VISITS` (1 to 4,
//! default 1: each tool runs that many times in a row against each target
//! from the same namespace, the next visit as soon as the previous one
//! ended, and the tables are printed per visit — what syn_delay's learn
//! mode does to a tool's second visit), `EFFICACY_KEEP` (keep the scratch
//! directory: each client's output and each tarpit's records). A missing
//! tool is skipped with a message saying how to install it.
//!
//! Verdicts: two stuck times are the same within 2 s or 2 % (whichever is
//! larger; see `support::efficacy::verdict` for the measured spread).

#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::efficacy::{self as fig, Conn, Figures, Verdict};
use support::netns::{sh, which, Netns};
use support::serve::Proc;

/// The /24 everything lives in.
const NET: &str = "10.77.250";

/// The targets, in table order. Adding a policy is one line: its name and
/// its `tarpit serve --policy PORT:SPEC` arguments, space-separated (see the
/// README's "Policies per port").
const TARGETS: &[(&str, Kind)] = &[
    ("DROP", Kind::Drop),
    ("closed", Kind::Closed),
    ("endlessh", Kind::Endlessh),
    ("silent", Kind::Tarpit("")),
    ("bait", Kind::Tarpit("22:bait=ssh 80:bait=http")),
    (
        "bait-accept",
        Kind::Tarpit("22:bait=ssh,start=accept 80:bait=http,start=accept"),
    ),
    ("window0", Kind::Tarpit("default:window=zero")),
    // Learn mode (the default): delayed only after escaping early.
    ("syn60", Kind::Tarpit("default:syn_delay=60s")),
    (
        "syn60-always",
        Kind::Tarpit("default:syn_delay=60s,syn_mode=always"),
    ),
    (
        "bait+syn60",
        Kind::Tarpit("22:bait=ssh,syn_delay=60s 80:bait=http,syn_delay=60s"),
    ),
    (
        "bait+window0",
        // Window zero keeps the peer's bytes out: bait can only start at accept.
        Kind::Tarpit("22:bait=ssh,start=accept,window=zero 80:bait=http,start=accept,window=zero"),
    ),
];

/// The peers the best policy must match or beat (the goal).
const PEERS: &[&str] = &["DROP", "endlessh", "silent"];

/// `tarpit serve` flags for every tarpit target: the defaults but a 10 min
/// lifetime (longer than any round) and short keepalives, so a peer whose
/// data was stuck is found gone within the grace period and its engaged
/// figure is final (keepalive probes are bare ACKs the client's kernel
/// answers: they never change what the client program sees).
const SERVE_ARGS: &[&str] = &[
    "--listen",
    "0.0.0.0:22",
    "--listen",
    "0.0.0.0:80",
    "--lifetime-min",
    "10m",
    "--lifetime-max",
    "10m",
    "--keepalive-min",
    "20s",
    "--keepalive-max",
    "20s",
];

/// Added to every tarpit target's flags (unless `EFFICACY_SERVE_ARGS`
/// names them): no record-line rate limit, so every connection has its own
/// record (the default limits summarise a host's records past a burst of
/// 100, and nmap or ncrack under a policy open dozens to hundreds).
const RECORD_ARGS: &[&str] = &["--records-per-sec", "0", "--records-per-host", "0"];

#[derive(Clone, Copy)]
enum Kind {
    /// `tcp dport {22, 80} drop` in the input hook.
    Drop,
    /// Nothing listens: the kernel answers RST.
    Closed,
    /// Debian's endlessh on 22 and on 80, its defaults.
    Endlessh,
    /// `tarpit serve` with these `--policy` specs ("" = the silent trap).
    Tarpit(&'static str),
}

#[derive(Clone, Copy, PartialEq)]
enum Port {
    Ssh,
    Http,
    Both,
}

impl Port {
    fn label(self) -> &'static str {
        match self {
            Port::Ssh => "22",
            Port::Http => "80",
            Port::Both => "22,80",
        }
    }
}

#[derive(Clone, Copy)]
enum Prog {
    /// A program on PATH and the Debian package that has it.
    Bin(&'static str, &'static str),
    /// Debian's python3 (`/usr/bin/python3`) with these modules.
    SysPy(&'static str),
    /// The venv's python with these PyPI modules.
    VenvPy(&'static str),
}

struct Tool {
    name: &'static str,
    port: Port,
    prog: Prog,
    /// Arguments; `{dst}` is the target's address.
    args: &'static [&'static str],
}

const SSH: &[&str] = &[
    "-F",
    "/dev/null",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "PasswordAuthentication=no",
    "-o",
    "KbdInteractiveAuthentication=no",
    "root@{dst}",
    "true",
];
const SSH_CT10: &[&str] = &[
    "-F",
    "/dev/null",
    "-o",
    "ConnectTimeout=10",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "PasswordAuthentication=no",
    "-o",
    "KbdInteractiveAuthentication=no",
    "root@{dst}",
    "true",
];

/// Every python client says when its imports are done and it connects
/// (`efficacy-connect <unix time>` on stderr): the bench's stopwatch and cap
/// start there, not at the interpreter's start (importing paramiko or
/// asyncssh takes 0.5–5 s on a busy 2-core machine, which no server could
/// count or change).
const PARAMIKO: &str = "import sys, time, paramiko
sys.stderr.write('efficacy-connect %.3f\\n' % time.time()); sys.stderr.flush()
c = paramiko.SSHClient()
c.set_missing_host_key_policy(paramiko.AutoAddPolicy())
c.connect(sys.argv[1], username='root', password='toor', look_for_keys=False, allow_agent=False)
";
const ASYNCSSH: &str = "import asyncio, sys, time, asyncssh
sys.stderr.write('efficacy-connect %.3f\\n' % time.time()); sys.stderr.flush()
async def main():
    async with asyncssh.connect(sys.argv[1], username='root', password='toor', known_hosts=None):
        pass
asyncio.run(main())
";
const REQUESTS: &str = "import sys, time, requests
sys.stderr.write('efficacy-connect %.3f\\n' % time.time()); sys.stderr.flush()
requests.get('http://%s/' % sys.argv[1], timeout=10)
";
const URLLIB: &str = "import sys, time, urllib.request
sys.stderr.write('efficacy-connect %.3f\\n' % time.time()); sys.stderr.flush()
urllib.request.urlopen('http://%s/' % sys.argv[1]).read()
";
/// Connects, writes 4 KiB (more than the trap's window: data stuck), then
/// waits for any byte or the close.
const RAW4K: &str = "import socket, sys, time
sys.stderr.write('efficacy-connect %.3f\\n' % time.time()); sys.stderr.flush()
s = socket.create_connection((sys.argv[1], 22))
s.sendall(b'x' * 4096)
s.recv(1)
";

const TOOLS: &[Tool] = &[
    Tool {
        name: "ssh",
        port: Port::Ssh,
        prog: Prog::Bin("ssh", "openssh-client"),
        args: SSH,
    },
    Tool {
        name: "ssh ConnectTimeout=10",
        port: Port::Ssh,
        prog: Prog::Bin("ssh", "openssh-client"),
        args: SSH_CT10,
    },
    Tool {
        name: "hydra ssh",
        port: Port::Ssh,
        prog: Prog::Bin("hydra", "hydra"),
        args: &["-l", "root", "-p", "toor", "-I", "ssh://{dst}"],
    },
    Tool {
        name: "medusa ssh",
        port: Port::Ssh,
        prog: Prog::Bin("medusa", "medusa"),
        args: &["-h", "{dst}", "-u", "root", "-p", "toor", "-M", "ssh"],
    },
    Tool {
        name: "ncrack ssh",
        port: Port::Ssh,
        prog: Prog::Bin("ncrack", "ncrack"),
        args: &["--user", "root", "--pass", "toor", "ssh://{dst}"],
    },
    Tool {
        name: "paramiko (Debian)",
        port: Port::Ssh,
        prog: Prog::SysPy("paramiko"),
        args: &["-c", PARAMIKO, "{dst}"],
    },
    Tool {
        name: "paramiko (PyPI)",
        port: Port::Ssh,
        prog: Prog::VenvPy("paramiko"),
        args: &["-c", PARAMIKO, "{dst}"],
    },
    Tool {
        name: "asyncssh",
        port: Port::Ssh,
        prog: Prog::VenvPy("asyncssh"),
        args: &["-c", ASYNCSSH, "{dst}"],
    },
    Tool {
        name: "raw 4 KiB",
        port: Port::Ssh,
        prog: Prog::SysPy("socket"),
        args: &["-c", RAW4K, "{dst}"],
    },
    Tool {
        name: "nmap -sV",
        port: Port::Both,
        prog: Prog::Bin("nmap", "nmap"),
        args: &["-sV", "-n", "-p", "22,80", "{dst}"],
    },
    Tool {
        name: "curl",
        port: Port::Http,
        prog: Prog::Bin("curl", "curl"),
        args: &["-sS", "-o", "/dev/null", "http://{dst}/"],
    },
    Tool {
        name: "curl -m 30",
        port: Port::Http,
        prog: Prog::Bin("curl", "curl"),
        args: &["-sS", "-m", "30", "-o", "/dev/null", "http://{dst}/"],
    },
    Tool {
        name: "wget",
        port: Port::Http,
        prog: Prog::Bin("wget", "wget"),
        args: &["-O", "/dev/null", "http://{dst}/"],
    },
    Tool {
        name: "requests timeout=10",
        port: Port::Http,
        prog: Prog::VenvPy("requests"),
        args: &["-c", REQUESTS, "{dst}"],
    },
    Tool {
        name: "urllib",
        port: Port::Http,
        prog: Prog::SysPy("urllib.request"),
        args: &["-c", URLLIB, "{dst}"],
    },
];

const SYS_PY: &str = "/usr/bin/python3";

/// How one client run ended.
#[derive(Clone)]
struct Outcome {
    /// Seconds from its start (a python client: its connect marker) to its
    /// exit or the cap.
    stuck: f64,
    /// Seconds the interpreter took before the marker (0 for programs).
    startup: f64,
    /// When the stopwatch started (Unix seconds).
    origin: f64,
    capped: bool,
    status: String,
    last: String,
}

/// Child processes (endlessh) killed when the bench ends, however it ends.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The scratch directory, removed at the end.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("EFFICACY_KEEP").is_some() {
            println!(
                "efficacy: kept {} (client outputs, records)",
                self.0.display()
            );
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn env_secs(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().trim_end_matches('s').parse().ok())
        .unwrap_or(default)
}

/// The comma-separated names in `var` (`None` when unset or empty); exits
/// naming the known ones when one of them is not among `known`
/// (case-insensitive), so a typo never silently runs less.
fn env_names<'a>(var: &str, known: impl Iterator<Item = &'a str> + Clone) -> Option<Vec<String>> {
    let v = std::env::var(var).ok()?;
    let names: Vec<String> = v
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if names.is_empty() {
        return None;
    }
    for n in &names {
        if !known.clone().any(|k| k.eq_ignore_ascii_case(n)) {
            eprintln!(
                "efficacy: {var}: unknown name {n:?}; known: {}",
                known.clone().collect::<Vec<_>>().join(", ")
            );
            std::process::exit(2);
        }
    }
    Some(names)
}

fn main() {
    if !support::is_root() || !which("ip") || !which("nft") {
        eprintln!("SKIP efficacy: needs root, ip and nft (it makes network namespaces)");
        return;
    }
    let cap = Duration::from_secs_f64(env_secs("EFFICACY_CAP", 240.0));
    // A client whose data is stuck behind our window and that exits leaves
    // an orphaned FIN-WAIT-1 socket whose zero-window probes (answered by
    // our kernel, so indistinguishable from a live program's) go on until
    // their backoff reaches the 120 s maximum: measured ~330 s after the
    // data got stuck on this LAN (RTO 208 ms). Its engaged figure is final
    // once a keepalive then meets an RST, ~20 s later.
    let grace = Duration::from_secs_f64(env_secs(
        "EFFICACY_GRACE",
        (380.0 - cap.as_secs_f64()).max(60.0),
    ));
    let pyenv = std::env::var_os("EFFICACY_PYENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/efficacy-venv"));
    let venv_py = pyenv.join("bin/python3");
    let mut serve_args: Vec<String> = match std::env::var("EFFICACY_SERVE_ARGS") {
        Ok(s) => s.split_whitespace().map(String::from).collect(),
        Err(_) => SERVE_ARGS.iter().map(|s| s.to_string()).collect(),
    };
    for pair in RECORD_ARGS.chunks(2) {
        if !serve_args.iter().any(|a| a == pair[0]) {
            serve_args.extend(pair.iter().map(|s| s.to_string()));
        }
    }
    let visits = env_secs("EFFICACY_VISITS", 1.0);
    if !(1.0..=4.0).contains(&visits) || visits.fract() != 0.0 {
        panic!("EFFICACY_VISITS: a whole number 1..4, not {visits}");
    }
    let visits = visits as usize;
    let want_tools = env_names("EFFICACY_TOOLS", TOOLS.iter().map(|t| t.name));
    let want_targets = env_names("EFFICACY_TARGETS", TARGETS.iter().map(|t| t.0));
    remove_stale_namespaces();

    // Which tools can run here (the python check also compiles the modules
    // once, so the round does not pay for it).
    let mut tools: Vec<(usize, &Tool, String)> = vec![];
    for (i, t) in TOOLS.iter().enumerate() {
        if let Some(w) = &want_tools {
            if !w.iter().any(|n| n.eq_ignore_ascii_case(t.name)) {
                continue;
            }
        }
        let (prog, missing) = match t.prog {
            Prog::Bin(b, pkg) => (
                b.to_string(),
                (!which(b)).then(|| format!("{b} not found (apt-get install {pkg})")),
            ),
            Prog::SysPy(m) => (
                SYS_PY.to_string(),
                py_missing(Path::new(SYS_PY), m, "python3-"),
            ),
            Prog::VenvPy(m) => (
                venv_py.display().to_string(),
                py_missing(&venv_py, m, "")
                    .map(|e| format!("{e} in {} (run benches/efficacy-tools.sh)", pyenv.display())),
            ),
        };
        match missing {
            Some(why) => println!("SKIP {}: {why}", t.name),
            None => tools.push((i, t, prog)),
        }
    }
    let targets: Vec<(usize, &str, Kind)> = TARGETS
        .iter()
        .enumerate()
        .filter(|(_, (n, k))| {
            let wanted = want_targets
                .as_ref()
                .is_none_or(|w| w.iter().any(|x| x.eq_ignore_ascii_case(n)));
            let endlessh_ok = !matches!(k, Kind::Endlessh) || which("endlessh");
            if wanted && !endlessh_ok {
                println!("SKIP target endlessh: endlessh not found (apt-get install endlessh)");
            }
            wanted && endlessh_ok
        })
        .map(|(j, (n, k))| (j, *n, *k))
        .collect();
    if tools.is_empty() || targets.is_empty() {
        println!("efficacy: nothing to run");
        return;
    }

    let scratch = Scratch(std::env::temp_dir().join(format!("tp-efficacy-{}", std::process::id())));
    std::fs::create_dir_all(&scratch.0).expect("scratch dir");

    // The lab: hub bridge, one namespace per target and per tool.
    let hub = Netns::new("effhub");
    hub.run("ip link add br0 type bridge && ip link set br0 up");
    let mut link_n = 0u32;
    let mut attach = |ns: &Netns, host: usize| {
        link_n += 1;
        let pid = std::process::id() % 100000;
        let (h, p) = (format!("eh{pid}x{link_n}"), format!("ep{pid}x{link_n}"));
        sh(&format!(
            "ip link add {h} netns {} type veth peer name {p} netns {}",
            hub.name, ns.name
        ));
        hub.run(&format!("ip link set {h} master br0 && ip link set {h} up"));
        ns.run(&format!(
            "ip addr add {NET}.{host}/24 dev {p} && ip link set {p} up"
        ));
    };
    let target_ns: Vec<Netns> = targets
        .iter()
        .map(|(j, _, _)| {
            let ns = Netns::new(&format!("efft{j}"));
            attach(&ns, 10 + j);
            ns
        })
        .collect();
    let tool_ns: Vec<Netns> = tools
        .iter()
        .map(|(i, _, _)| {
            let ns = Netns::new(&format!("effc{i}"));
            attach(&ns, 100 + i);
            ns
        })
        .collect();

    // The targets.
    let mut children = Children(vec![]);
    let mut tarpits: Vec<(usize, Proc, PathBuf)> = vec![];
    for (k, (j, name, kind)) in targets.iter().enumerate() {
        let ns = &target_ns[k];
        match kind {
            Kind::Drop => {
                let f = scratch.0.join("drop.nft");
                std::fs::write(
                    &f,
                    "table inet efficacy {\n chain input {\n  type filter hook input priority 0; policy accept;\n  tcp dport { 22, 80 } drop\n }\n}\n",
                )
                .expect("write nft");
                ns.run(&format!("nft -f {}", f.display()));
            }
            Kind::Closed => {}
            Kind::Endlessh => {
                for port in ["22", "80"] {
                    let c = ns
                        .command("endlessh")
                        .args(["-f", "/dev/null", "-p", port])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("spawn endlessh");
                    children.0.push(c);
                    let listening = support::poll(Duration::from_secs(10), || {
                        let o = ns.try_run(&format!("ss -Hltn 'sport = :{port}'"));
                        (!o.stdout.is_empty()).then_some(())
                    });
                    assert!(listening.is_some(), "endlessh never listened on {port}");
                }
            }
            Kind::Tarpit(policy) => {
                let ctl = scratch.0.join(format!("ctl-{j}.sock"));
                let mut c = ns.command(support::bin());
                c.args(["--log-format", "json", "serve"])
                    .args(&serve_args)
                    .args(["--history", "off", "--control"])
                    .arg(&ctl);
                for spec in policy.split_whitespace() {
                    c.args(["--policy", spec]);
                }
                let p = Proc::spawn(c);
                println!(
                    "target {name}: tarpit serve {}{}",
                    serve_args.join(" "),
                    policy
                        .split_whitespace()
                        .map(|p| format!(" --policy {p}"))
                        .collect::<String>()
                );
                tarpits.push((k, p, ctl));
            }
        }
    }

    // The round: every tool against every target at once, each capped.
    println!(
        "efficacy: {} tools x {} targets in parallel, cap {:.0} s each, {visits} visit(s) each",
        tools.len(),
        targets.len(),
        cap.as_secs_f64()
    );
    let round0 = Instant::now();
    let mut handles = vec![];
    for (k, (_, tname, _)) in targets.iter().enumerate() {
        let dst = format!("{NET}.{}", 10 + targets[k].0);
        for (ti, (_, tool, prog)) in tools.iter().enumerate() {
            let argv: Vec<String> = std::iter::once(prog.clone())
                .chain(tool.args.iter().map(|a| a.replace("{dst}", &dst)))
                .collect();
            let ns = tool_ns[ti].name.clone();
            let base = scratch.0.clone();
            let label = format!("{} @ {tname}", tool.name);
            handles.push((
                ti,
                k,
                std::thread::spawn(move || {
                    (0..visits)
                        .map(|v| {
                            let dir = base.join(format!("run-{ti}-{k}-v{v}"));
                            std::fs::create_dir_all(&dir).expect("run dir");
                            run_client(&ns, &argv, &dir, cap, &label)
                        })
                        .collect::<Vec<_>>()
                }),
            ));
            // Spread the starts a little: 2 cores, ~100 programs starting.
            std::thread::sleep(Duration::from_millis(30));
        }
    }
    // Per visit, per tool, per target.
    let mut outcomes: Vec<Vec<Vec<Option<Outcome>>>> =
        vec![vec![vec![None; targets.len()]; tools.len()]; visits];
    for (ti, k, h) in handles {
        for (v, o) in h.join().expect("client thread").into_iter().enumerate() {
            outcomes[v][ti][k] = Some(o);
        }
    }
    println!(
        "efficacy: clients done after {:.0} s",
        round0.elapsed().as_secs_f64()
    );

    // Grace: until every live connection's engaged figure is final (it saw
    // the FIN) or the connection is gone.
    let g0 = Instant::now();
    let mut unfinal = 0;
    while g0.elapsed() < grace {
        unfinal = tarpits.iter().map(|(_, _, ctl)| not_final(ctl)).sum();
        if unfinal == 0 {
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    println!(
        "efficacy: tarpit figures {} after {:.0} s of grace",
        if unfinal == 0 {
            "final".to_string()
        } else {
            format!("NOT final for {unfinal} connections (no FIN, not yet found gone)")
        },
        g0.elapsed().as_secs_f64()
    );
    let mut records: Vec<Vec<Conn>> = vec![vec![]; targets.len()];
    for (k, p, _) in &mut tarpits {
        p.term(20.0);
        let recs = p.records();
        let lines: Vec<String> = recs.iter().map(|v| v.to_string()).collect();
        let _ = std::fs::write(
            scratch.0.join(format!("records-{}.jsonl", targets[*k].1)),
            lines.join("\n"),
        );
        records[*k] = recs.iter().filter_map(Conn::from_record).collect();
    }
    drop(tarpits);
    drop(children);

    for (v, outs) in outcomes.iter().enumerate() {
        if visits > 1 {
            println!("\n===== visit {} of {visits} =====", v + 1);
        }
        // This visit's connections: those that began (first SYN) at or
        // after its start and before the next visit's.
        let begun = |ti: usize, k: usize, w: usize| {
            outcomes
                .get(w)
                .and_then(|o| o[ti][k].as_ref())
                .map(|o| o.origin - o.startup)
        };
        let recs: Vec<Vec<Conn>> = (0..targets.len())
            .map(|k| {
                records[k]
                    .iter()
                    .filter(|c| {
                        let Some(ti) = tools.iter().position(|t| tool_src(t.0) == c.src) else {
                            return false;
                        };
                        let at = c.start - c.wait + 0.5;
                        begun(ti, k, v).is_none_or(|b| at >= b)
                            && begun(ti, k, v + 1).is_none_or(|b| at < b)
                    })
                    .cloned()
                    .collect()
            })
            .collect();
        print!(
            "{}",
            report(&tools, &targets, outs, &recs, cap.as_secs_f64())
        );
    }
    drop(tool_ns);
    drop(target_ns);
    drop(hub);
}

/// `Some(reason)` when `python` cannot import `module`.
fn py_missing(python: &Path, module: &str, deb_prefix: &str) -> Option<String> {
    if !python.is_file() {
        return Some(format!("no {}", python.display()));
    }
    let ok = Command::new(python)
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    (!ok).then(|| {
        if deb_prefix.is_empty() {
            format!("python module {module} missing")
        } else {
            format!(
                "python module {module} missing (apt-get install {deb_prefix}{})",
                module.split('.').next().unwrap_or(module)
            )
        }
    })
}

/// Namespaces left by an efficacy run that was killed (its pid is gone):
/// their processes are ended and they are removed.
fn remove_stale_namespaces() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.starts_with("tp-eff") {
            continue;
        }
        let pid = name.rsplit('-').nth(1).and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "ip netns pids {name} | xargs -r kill -9; ip netns del {name}"
                ))
                .status();
            println!("removed stale namespace {name}");
        }
    }
}

/// Runs one client in namespace `ns`, killing its process group `cap`
/// after it started (a python client: after its connect marker).
fn run_client(ns: &str, argv: &[String], dir: &Path, cap: Duration, label: &str) -> Outcome {
    let out_path = dir.join("output");
    let out = File::create(&out_path).expect("output file");
    let python = argv[0].ends_with("python3");
    let wall0 = SystemTime::now();
    let t0 = Instant::now();
    let spawned = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(argv)
        .current_dir(dir)
        .env("HOME", dir)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(out)
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => panic!("{label}: cannot start {argv:?}: {e}"),
    };
    // When the clock starts: the marker's time, as an Instant.
    let origin_of = |text: &[u8]| {
        let at = fig::connect_marker(text)?;
        let since = at - wall0.duration_since(UNIX_EPOCH).ok()?.as_secs_f64();
        Some(t0 + Duration::from_secs_f64(since.max(0.0)))
    };
    let mut origin = (!python).then_some(t0);
    let (end, capped, status) = loop {
        if origin.is_none() {
            origin = origin_of(&std::fs::read(&out_path).unwrap_or_default());
        }
        if let Ok(Some(st)) = child.try_wait() {
            break (Instant::now(), false, st);
        }
        if origin.unwrap_or(t0).elapsed() >= cap {
            let end = Instant::now();
            if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
            let st = child.wait().expect("wait");
            break (end, true, st);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read(&out_path).unwrap_or_default();
    let origin = origin.or_else(|| origin_of(&text)).unwrap_or(t0);
    Outcome {
        stuck: end.saturating_duration_since(origin).as_secs_f64(),
        startup: origin.saturating_duration_since(t0).as_secs_f64(),
        origin: wall0
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
            + origin.saturating_duration_since(t0).as_secs_f64(),
        capped,
        status: if capped {
            "killed at cap".into()
        } else {
            status
                .code()
                .map_or_else(|| status.to_string(), |c| format!("exit {c}"))
        },
        last: fig::last_line(&text, 110),
    }
}

/// Live connections of a tarpit whose engaged figure can still change:
/// no FIN seen yet.
fn not_final(ctl: &Path) -> usize {
    let req = tarpit::control::Request::new(tarpit::stats::live::SNAPSHOT_CMD);
    match tarpit::control::request(ctl, &req, Duration::from_secs(5)) {
        Ok(v) => v["conns"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .filter(|c| !c["fin_after_secs"].is_number())
                    .count()
            })
            .unwrap_or(0),
        Err(_) => 0,
    }
}

/// The address of tool `i`'s namespace (its index in `TOOLS`).
fn tool_src(i: usize) -> std::net::IpAddr {
    format!("{NET}.{}", 100 + i).parse().expect("address")
}

fn secs(o: &Outcome) -> String {
    if o.capped {
        format!("{:.0}+", o.stuck)
    } else {
        format!("{:.1}", o.stuck)
    }
}

/// Aligned text columns; the first `left` columns left-aligned.
fn table(rows: &[Vec<String>], left: usize) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut w = vec![0; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut s = String::new();
    for r in rows {
        let mut l = String::new();
        for (i, c) in r.iter().enumerate() {
            let pad = w[i] - c.chars().count();
            if i < left {
                l += c;
                l += &" ".repeat(pad + 2);
            } else {
                l += &" ".repeat(pad);
                l += c;
                l += "  ";
            }
        }
        s += l.trim_end();
        s.push('\n');
    }
    s
}

fn report(
    tools: &[(usize, &Tool, String)],
    targets: &[(usize, &str, Kind)],
    outcomes: &[Vec<Option<Outcome>>],
    records: &[Vec<Conn>],
    cap: f64,
) -> String {
    let mut s = String::new();
    let src = |ti: usize| tool_src(tools[ti].0);
    let is_tarpit = |k: usize| matches!(targets[k].2, Kind::Tarpit(_));
    let stuck = |ti: usize, k: usize| outcomes[ti][k].as_ref().map_or(0.0, |o| o.stuck);

    let _ = writeln!(
        s,
        "\nseconds stuck (client start to exit, bench clock; N+ = still stuck at the {cap:.0} s cap)"
    );
    let mut rows = vec![std::iter::once("tool".to_string())
        .chain(std::iter::once("port".into()))
        .chain(targets.iter().map(|t| t.1.to_string()))
        .collect::<Vec<_>>()];
    for (ti, (_, t, _)) in tools.iter().enumerate() {
        let mut r = vec![t.name.to_string(), t.port.label().to_string()];
        for o in &outcomes[ti] {
            r.push(o.as_ref().map_or("-".into(), secs));
        }
        rows.push(r);
    }
    s += &table(&rows, 2);

    for k in (0..targets.len()).filter(|&k| is_tarpit(k)) {
        let _ = writeln!(
            s,
            "\ntarpit target {}: what it counted per tool (pre = tool start to its first accept less the SYN wait the tarpit counted: start-up, an nmap SYN scan, an uncounted SYN delay; engaged = from there to the last engaged end, <= upper bound, * = ended at shutdown without FIN; sum = engaged over the connections; engaged is compared with stuck - pre)",
            targets[k].1
        );
        let mut rows = vec![[
            "tool",
            "stuck",
            "pre",
            "conns",
            "engaged",
            "sum",
            "held",
            "engaged vs stuck - pre",
        ]
        .map(String::from)
        .to_vec()];
        for (ti, (_, t, _)) in tools.iter().enumerate() {
            let Some(o) = &outcomes[ti][k] else { continue };
            let f = fig::figures(&records[k], src(ti));
            rows.push(vec![
                t.name.to_string(),
                secs(o),
                fig::since_accept(o.stuck, o.origin, &f)
                    .map_or("-".into(), |(p, _)| format!("{p:.1}")),
                f.conns.to_string(),
                engaged_cell(&f),
                format!("{:.1}", f.sum),
                format!("{:.1}", f.held),
                match_cell(o, &f),
            ]);
        }
        s += &table(&rows, 1);
    }

    // The goal: best policy vs best peer, per tool.
    let policies: Vec<usize> = (0..targets.len())
        .filter(|&k| is_tarpit(k) && targets[k].1 != "silent")
        .collect();
    let peers: Vec<usize> = (0..targets.len())
        .filter(|&k| PEERS.contains(&targets[k].1))
        .collect();
    let _ = writeln!(
        s,
        "\nbest policy vs best of {} (stuck seconds; same = within 2 s or 2 %), and engaged vs stuck - pre on every tarpit target",
        PEERS.join("/")
    );
    let mut rows = vec![[
        "tool",
        "best policy",
        "best peer",
        "verdict",
        "engaged within 10% or 2 s",
    ]
    .map(String::from)
    .to_vec()];
    let mut shorter = vec![];
    let silent = (0..targets.len()).find(|&k| targets[k].1 == "silent");
    for (ti, (_, t, _)) in tools.iter().enumerate() {
        let name = |k: usize| targets[k].1;
        let bp = fig::best(policies.iter().map(|&k| (name(k), stuck(ti, k))));
        let bq = fig::best(peers.iter().map(|&k| (name(k), stuck(ti, k))));
        let cell = |b: Option<(&str, f64)>| b.map_or("-".into(), |(n, v)| format!("{n} {v:.1}"));
        let verdict = match (bp, bq) {
            (Some((_, a)), Some((_, b))) => fig::verdict(a, b).label().to_string(),
            _ => "-".into(),
        };
        let mut bad = vec![];
        for k in (0..targets.len()).filter(|&k| is_tarpit(k)) {
            let f = fig::figures(&records[k], src(ti));
            let Some(o) = &outcomes[ti][k] else { continue };
            match fig::since_accept(o.stuck, o.origin, &f) {
                Some((_, since)) if !fig::matches(since, f.span) => bad.push(format!(
                    "{} {}{:.1} vs {since:.1}",
                    name(k),
                    if f.bound || f.unfinished > 0 {
                        "<="
                    } else {
                        ""
                    },
                    f.span
                )),
                _ => {}
            }
            if let Some(sk) = silent.filter(|&sk| sk != k) {
                if fig::verdict(stuck(ti, k), stuck(ti, sk)) == Verdict::Shorter {
                    shorter.push(format!(
                        "{} holds {} {:.1} s, the silent trap {:.1} s",
                        name(k),
                        t.name,
                        stuck(ti, k),
                        stuck(ti, sk)
                    ));
                }
            }
        }
        rows.push(vec![
            t.name.to_string(),
            cell(bp),
            cell(bq),
            verdict,
            if bad.is_empty() {
                "yes".into()
            } else {
                format!("NO: {}", bad.join("; "))
            },
        ]);
    }
    s += &table(&rows, 5);

    // One policy per port faces every tool: how each single policy fares.
    let _ = writeln!(
        s,
        "\neach policy alone against the best of {} for each tool",
        PEERS.join("/")
    );
    for &k in &policies {
        let mut worse = vec![];
        for (ti, (_, t, _)) in tools.iter().enumerate() {
            let bq = fig::best(peers.iter().map(|&q| (targets[q].1, stuck(ti, q))));
            if let Some((pn, pv)) = bq {
                if fig::verdict(stuck(ti, k), pv) == Verdict::Shorter {
                    worse.push(format!("{} {:.1} < {pn} {pv:.1}", t.name, stuck(ti, k)));
                }
            }
        }
        let _ = writeln!(
            s,
            "  {}: at least as long for {} of {} tools{}",
            targets[k].1,
            tools.len() - worse.len(),
            tools.len(),
            if worse.is_empty() {
                String::new()
            } else {
                format!("; shorter: {}", worse.join(", "))
            }
        );
    }
    if shorter.is_empty() {
        s += "\nno policy shortens any tool's stuck time compared to the silent trap\n";
    } else {
        s += "\npolicies that SHORTEN a tool's stuck time compared to the silent trap:\n";
        for l in shorter {
            let _ = writeln!(s, "  {l}");
        }
    }

    let _ = writeln!(
        s,
        "\nhow each client ended (last line of its output, escaped)"
    );
    for (ti, (_, t, _)) in tools.iter().enumerate() {
        for (k, tg) in targets.iter().enumerate() {
            if let Some(o) = &outcomes[ti][k] {
                let _ = writeln!(
                    s,
                    "  {} @ {}: {} after {}{}: {}",
                    t.name,
                    tg.1,
                    o.status,
                    secs(o),
                    if o.startup > 0.0 {
                        format!(" (+{:.1} s python start)", o.startup)
                    } else {
                        String::new()
                    },
                    o.last
                );
            }
        }
    }
    s
}

fn engaged_cell(f: &Figures) -> String {
    if f.conns == 0 {
        return "-".into();
    }
    format!(
        "{}{:.1}{}",
        if f.bound { "<=" } else { "" },
        f.span,
        if f.unfinished > 0 { "*" } else { "" }
    )
}

/// Engaged against the stuck time since the tarpit's count began (the first
/// accept, or the first SYN of a counted syn_delay).
fn match_cell(o: &Outcome, f: &Figures) -> String {
    let Some((_, since)) = fig::since_accept(o.stuck, o.origin, f) else {
        return "- (never accepted)".into();
    };
    format!(
        "{} ({:+.1} s){}",
        if fig::matches(since, f.span) {
            "yes"
        } else {
            "NO"
        },
        f.span - since,
        if o.capped { ", killed at cap" } else { "" }
    )
}
