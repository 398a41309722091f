//! Per-port policies on real sockets: bait (ssh, http) waits for the peer
//! to speak its protocol, then drips one small segment per interval and
//! nothing while the peer's window is closed; real clients whose timeout is
//! per read stay stuck; records name the policy.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::netns::{privileged, Netns};
use support::serve::Proc;
use support::wait_for;

/// Every read for `dur`: (seconds since start, bytes).
fn arrivals(s: &mut TcpStream, dur: Duration) -> Vec<(f64, Vec<u8>)> {
    let t0 = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let left = dur.saturating_sub(t0.elapsed());
        if left.is_zero() {
            return out;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => panic!("EOF after {:?}", t0.elapsed()),
            Ok(n) => out.push((t0.elapsed().as_secs_f64(), buf[..n].to_vec())),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Gaps between arrivals are about one interval: never two segments in
/// one interval, never a missed one.
fn assert_one_per_interval(a: &[(f64, Vec<u8>)], interval: f64) {
    for w in a.windows(2) {
        let gap = w[1].0 - w[0].0;
        assert!(
            gap > interval * 0.6 && gap < interval * 1.6,
            "gap {gap:.2}s for a {interval}s drip: {a:?}"
        );
    }
}

#[test]
fn ssh_bait_drips_pre_banner_lines_one_small_segment_per_interval() {
    let mut p = Proc::serve(&[
        "--listen",
        "127.0.0.1:0",
        "--policy",
        "default:bait=ssh,drip=500ms",
    ]);
    let mut c = TcpStream::connect(p.addr()).unwrap();
    c.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").unwrap();
    let a = arrivals(&mut c, Duration::from_millis(3200));
    // The first segment at once, then one per 500 ms.
    assert!(a.first().is_some_and(|x| x.0 < 0.4), "{a:?}");
    assert!((6..=8).contains(&a.len()), "{} arrivals: {a:?}", a.len());
    assert_one_per_interval(&a, 0.5);
    assert!(a.iter().all(|(_, b)| (1..=4).contains(&b.len())), "{a:?}");
    let text: Vec<u8> = a.iter().flat_map(|x| x.1.clone()).collect();
    assert!(!text.starts_with(b"SSH-") && text[0].is_ascii_lowercase());
    assert!(text
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b' '));
    drop(c);
    p.term(10.0);
    let r = p.records();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["policy"], "bait=ssh,drip=500ms");
    // Bait never reads: what the client sent is still there to peek at.
    assert_eq!(r[0]["head"], "SSH-2.0-OpenSSH_9.2\\r\\n");
}

#[test]
fn http_bait_is_a_status_line_then_header_lines_that_never_end() {
    let p = Proc::serve(&[
        "--listen",
        "127.0.0.1:0",
        "--policy",
        "default:bait=http,drip=300ms",
    ]);
    let mut c = TcpStream::connect(p.addr()).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let a = arrivals(&mut c, Duration::from_millis(2500));
    assert_eq!(a[0].1, b"HTTP/1.1 200 OK\r\n", "{a:?}");
    assert!((7..=10).contains(&a.len()), "{} arrivals: {a:?}", a.len());
    assert_one_per_interval(&a, 0.3);
    let text: Vec<u8> = a[1..].iter().flat_map(|x| x.1.clone()).collect();
    let text = String::from_utf8(text).unwrap();
    // A header name: "X-" and lowercase letters.
    assert!(text.starts_with("X-"), "{text:?}");
    let name_end = text.find(':').unwrap_or(text.len());
    assert!(
        text[2..name_end].bytes().all(|b| b.is_ascii_lowercase()),
        "{text:?}"
    );
    assert!(!text.contains("\r\n\r\n"));
}

/// Bait waits for the peer to speak the bait's protocol. Against ssh bait a
/// banner grabber (4 KiB of anything, then a read), a client that says
/// nothing, an HTTP request and an unfinished `SS` get nothing at all and
/// are held as by silence; `SS` then `H-2.0-…` gets the bait at once. Against
/// http bait an SSH client gets nothing, a GET the status line.
#[test]
fn bait_waits_for_the_peer_to_speak_its_protocol() {
    let mut ssh = Proc::serve(&[
        "--listen",
        "127.0.0.1:0",
        "--policy",
        "default:bait=ssh,drip=200ms",
    ]);
    let mut http = Proc::serve(&[
        "--listen",
        "127.0.0.1:0",
        "--policy",
        "default:bait=http,drip=200ms",
    ]);
    let connect = |p: &Proc, first: &[u8]| {
        let mut c = TcpStream::connect(p.addr()).unwrap();
        c.write_all(first).unwrap();
        c
    };
    let mut muted = vec![
        connect(&ssh, &[b'x'; 4096]),
        connect(&ssh, b""),
        connect(&ssh, b"GET / HTTP/1.1\r\n\r\n"),
        connect(&ssh, b"SS"),
        connect(&http, b"SSH-2.0-OpenSSH_9.2\r\n"),
    ];
    let mut late = connect(&ssh, b"SS");
    let mut get = connect(&http, b"GET / HTTP/1.1\r\n");
    let t0 = Instant::now();
    let got = arrivals(&mut get, Duration::from_millis(1000));
    assert_eq!(got[0].1, b"HTTP/1.1 200 OK\r\n", "{got:?}");
    assert!(got[0].0 < 0.3 && got.len() >= 4, "{got:?}");
    let quiet = arrivals(&mut late, Duration::from_millis(500));
    assert!(quiet.is_empty(), "{quiet:?}");
    late.write_all(b"H-2.0-OpenSSH_9.2\r\n").unwrap();
    let bait = arrivals(&mut late, Duration::from_millis(1000));
    // The first segment as soon as the identification is complete.
    assert!(bait.first().is_some_and(|x| x.0 < 0.3), "{bait:?}");
    assert!(bait.len() >= 4, "{bait:?}");
    std::thread::sleep(Duration::from_millis(2500).saturating_sub(t0.elapsed()));
    // 2.5 s, 12 drip intervals: not one byte for the others.
    for c in &mut muted {
        c.set_nonblocking(true).unwrap();
        let mut b = [0u8; 64];
        match c.read(&mut b) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            r => panic!("a muted client read {r:?}"),
        }
    }
    ssh.term(10.0);
    http.term(10.0);
    let mut r = ssh.records();
    r.extend(http.records());
    assert_eq!(r.len(), 7, "{r:?}");
    for x in &r {
        // Held until the shutdown, what they sent still unread.
        assert_eq!(x["end"], "shutdown", "{x}");
        assert!(x["held_secs"].as_f64().unwrap() >= 2.4, "{x}");
    }
    let heads: Vec<&str> = r.iter().filter_map(|x| x["head"].as_str()).collect();
    assert!(heads.contains(&"SSH-2.0-OpenSSH_9.2\\r\\n"), "{heads:?}");
    assert!(heads.contains(&"GET / HTTP/1.1\\r\\n"), "{heads:?}");
    assert_eq!(heads.iter().filter(|h| h.starts_with("xxxx")).count(), 1);
}

/// python3 running `code`; returns how long it ran (killed at `cap`) and
/// what it printed.
fn python_for(code: &str, cap: Duration) -> (Duration, String) {
    let t0 = Instant::now();
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", code])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let st = wait_for(cap.as_secs_f64() + 5.0, "python", || {
        if t0.elapsed() >= cap {
            let _ = child.kill();
        }
        child.try_wait().ok().flatten()
    });
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let _ = st;
    (t0.elapsed(), out)
}

/// Real clients whose timeouts are per read: paramiko (2 s banner timeout
/// here; 15 s by default) and Python's http.client (2 s timeout) give up
/// after that against silence, and are still waiting after 8 s of a 1 s
/// drip.
#[test]
fn per_read_timeouts_keep_resetting() {
    let silent = Proc::serve(&["--listen", "127.0.0.1:0"]);
    let bait = Proc::serve(&[
        "--listen",
        "127.0.0.1:0",
        "--listen",
        "127.0.0.2:0",
        "--policy",
        "default:bait=ssh,drip=1s",
    ]);
    let paramiko = |port: u16, host: &str| {
        format!(
            "import paramiko,socket\nt=paramiko.Transport(socket.create_connection(('{host}',{port})))\nt.banner_timeout=2\ntry:\n  t.start_client(timeout=60)\nexcept Exception as e:\n  print('gave up:', e)\n"
        )
    };
    let http = Proc::serve(&[
        "--listen",
        "127.0.0.1:0",
        "--policy",
        "default:bait=http,drip=1s",
    ]);
    let get = |port: u16| {
        format!(
            "import http.client\nc=http.client.HTTPConnection('127.0.0.1',{port},timeout=2)\ntry:\n  c.request('GET','/')\n  r=c.getresponse()\n  print('response', r.status)\nexcept Exception as e:\n  print('gave up:', type(e).__name__)\n"
        )
    };
    // All four at once: the test takes the 8 s cap once.
    let runs: Vec<_> = [
        (paramiko(silent.addr().port(), "127.0.0.1"), false),
        (paramiko(bait.addr().port(), "127.0.0.1"), true),
        (get(silent.addr().port()), false),
        (get(http.addr().port()), true),
    ]
    .into_iter()
    .map(|(code, held)| {
        (
            held,
            std::thread::spawn(move || python_for(&code, Duration::from_secs(8))),
        )
    })
    .collect();
    for (held, t) in runs {
        let (t, out) = t.join().unwrap();
        if held {
            assert!(t >= Duration::from_secs(8) && out.is_empty(), "{t:?} {out}");
        } else {
            assert!(
                t < Duration::from_secs(6) && out.contains("gave up"),
                "{t:?} {out}"
            );
        }
    }
}

/// While the client's window is closed (an nftables rule in the client's
/// namespace zeroes the window it advertises), the server queues one
/// segment and writes nothing more; once it opens, the drip goes on, one
/// segment per interval. Bait starts at accept here: the client has not
/// said a word.
#[test]
fn bait_writes_nothing_more_while_the_window_is_closed() {
    if !privileged("bait_writes_nothing_more_while_the_window_is_closed") {
        return;
    }
    let ns = Netns::new("baitwin");
    let port = 2299;
    let mut cmd = ns.command(support::bin());
    cmd.args([
        "--log-format",
        "json",
        "serve",
        "--control",
        "off",
        "--history",
        "off",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--policy",
        "default:bait=ssh,drip=300ms,start=accept",
    ]);
    let _p = Proc::spawn(cmd);
    ns.run(&format!(
        "nft add table inet t && nft add chain inet t out '{{ type filter hook output priority 0; }}' && nft add rule inet t out tcp dport {port} tcp window set 0"
    ));
    let send_q = || -> u32 {
        let out = ns.run(&format!("ss -tnH state established '( sport = :{port} )'"));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.split_whitespace()
            .nth(1)
            .and_then(|q| q.parse().ok())
            .unwrap_or(u32::MAX)
    };
    let mut c = ns.in_thread(move || TcpStream::connect(("127.0.0.1", port)).unwrap());
    std::thread::sleep(Duration::from_secs(3));
    // Ten intervals: one segment (1-4 bytes) waits, nothing was added.
    let q = send_q();
    assert!((1..=4).contains(&q), "send queue {q}");
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut b = [0u8; 64];
    assert!(
        c.read(&mut b).is_err(),
        "nothing can arrive through a zero window"
    );
    ns.run("nft delete table inet t");
    // The client's next segment tells the server its real window.
    c.write_all(b"x").unwrap();
    let a = arrivals(&mut c, Duration::from_millis(2000));
    let first = a.first().map(|x| x.1.len()).unwrap_or(0);
    assert!(
        first >= q as usize,
        "the queued segment arrives first: {a:?}"
    );
    assert!((5..=8).contains(&a.len()), "{a:?}");
    assert_one_per_interval(&a[1..], 0.3);
}

/// A server namespace (10.77.<net>.1) and a client namespace (.2), the
/// server running `tarpit serve` with `args` there.
fn pair(tag: &str, net: u8, args: &[&str]) -> (Netns, Netns, Proc) {
    let srv = Netns::new(&format!("{tag}s"));
    let cli = Netns::new(&format!("{tag}c"));
    support::netns::veth(
        &srv,
        &format!("10.77.{net}.1/24"),
        &cli,
        &format!("10.77.{net}.2/24"),
    );
    let mut cmd = srv.command(support::bin());
    cmd.args([
        "--log-format",
        "json",
        "serve",
        "--control",
        "off",
        "--history",
        "off",
    ])
    .args(args);
    let p = Proc::spawn(cmd);
    (srv, cli, p)
}

/// Bytes the peer acknowledged after the client wrote as much as it could
/// (up to 1 MiB) and waited `wait`.
fn acked_after_writing(s: &TcpStream, wait: Duration) -> (usize, usize) {
    use std::os::fd::AsRawFd;
    s.set_nonblocking(true).unwrap();
    let chunk = [b'x'; 16384];
    let mut written = 0;
    let mut w = s;
    let end = Instant::now() + wait;
    while Instant::now() < end && written < (1 << 20) {
        match w.write(&chunk) {
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    let unacked = tarpit::sys::outq(s.as_raw_fd()).unwrap() as usize;
    (written, written - unacked)
}

/// window = "zero" on the redirected port 22 (policy by original
/// destination) and not on the listener's own port: through 22 a client
/// writing 1 MiB gets 0 bytes acknowledged and nothing reaches our receive
/// queue; directly on the listener port the usual ~1,152 bytes do.
#[test]
fn window_zero_gets_nothing_acknowledged() {
    if !privileged("window_zero_gets_nothing_acknowledged") {
        return;
    }
    let (srv, cli, mut p) = pair(
        "wz",
        61,
        &["--listen", "10.77.61.1:2281", "--policy", "22:window=zero"],
    );
    srv.run("nft add table ip t && nft add chain ip t pre '{ type nat hook prerouting priority dstnat; }' && nft add rule ip t pre tcp dport 22 redirect to :2281");
    let (zero, normal) = cli.in_thread(|| {
        let z = TcpStream::connect("10.77.61.1:22").unwrap();
        let n = TcpStream::connect("10.77.61.1:2281").unwrap();
        let wait = Duration::from_secs(2);
        (acked_after_writing(&z, wait), acked_after_writing(&n, wait))
    });
    assert!(
        zero.0 > 0 && zero.1 == 0,
        "window zero: written/acked {zero:?}"
    );
    assert!(normal.1 >= 1000, "normal window: written/acked {normal:?}");
    let rules = srv.run("nft list chain inet tarpit policy_out");
    let rules = String::from_utf8_lossy(&rules.stdout).to_string();
    assert!(
        rules.contains("ct original proto-dst 22 tcp window set 0"),
        "{rules}"
    );
    p.term(10.0);
    let r = p.records();
    let by_port = |port: &str| {
        r.iter()
            .find(|x| x["original_dst"].as_str().unwrap().ends_with(port))
            .unwrap_or_else(|| panic!("no record for {port}: {r:?}"))
            .clone()
    };
    let z = by_port(":22");
    assert_eq!(z["bytes_received"], 0, "{z}");
    assert_eq!(z["policy"], "window=zero");
    // No FIN can pass a zero window: engaged is only an upper bound.
    assert_eq!(z["engaged_upper_bound"], true, "{z}");
    assert_eq!(z["peer_tried_close"], false, "{z}");
    let n = by_port(":2281");
    assert!(n["bytes_received"].as_u64().unwrap() >= 1000, "{n}");
    assert_eq!(n["policy"], "silent");
}

/// What the two clients of the syn_delay tests met.
#[derive(Debug)]
struct Delayed {
    /// The quick client's first connect (3 s timeout): how long, whether
    /// it got through.
    quick_first: (Duration, bool),
    /// Its retry from the same port: how long, connected, still held 1.5 s
    /// later (a read timed out rather than ending).
    quick_retry: (Duration, bool, bool),
    /// The patient client's connect (30 s timeout).
    patient: (Duration, bool),
}

/// A client from `quick` with a 3 s connect timeout that retries once from
/// the same port (as medusa and ncrack do; a retry from a new port is the
/// easier case), and one from `patient` that
/// waits up to 30 s, in parallel inside `ns`. Each connection that gets
/// through is held 1.5 s and then closed (FIN).
fn delayed_clients(
    ns: &Netns,
    quick: (std::net::IpAddr, SocketAddr),
    patient: (std::net::IpAddr, SocketAddr),
) -> Delayed {
    use socket2::{Domain, Socket, Type};
    /// Connects from `src` (port `port`, 0: any): how long, the stream,
    /// the port.
    fn connect(
        src: (std::net::IpAddr, u16),
        dst: SocketAddr,
        t: Duration,
    ) -> (Duration, Option<TcpStream>, u16) {
        let s = Socket::new(Domain::for_address(dst), Type::STREAM, None).unwrap();
        s.set_reuse_address(true).unwrap();
        s.bind(&SocketAddr::new(src.0, src.1).into()).unwrap();
        let port = s.local_addr().unwrap().as_socket().unwrap().port();
        let t0 = Instant::now();
        let r = s.connect_timeout(&dst.into(), t);
        (t0.elapsed(), r.ok().map(|()| s.into()), port)
    }
    fn held(mut s: TcpStream) -> bool {
        s.set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        let mut b = [0u8; 16];
        matches!(s.read(&mut b), Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
    }
    ns.in_thread(move || {
        let p = std::thread::spawn(move || {
            let (t, s, _) = connect((patient.0, 0), patient.1, Duration::from_secs(30));
            let ok = s.is_some();
            if let Some(s) = s {
                held(s);
            }
            (t, ok)
        });
        let first = connect((quick.0, 0), quick.1, Duration::from_secs(3));
        let retry = connect((quick.0, first.2), quick.1, Duration::from_secs(3));
        let retry_held = retry.1.map(held);
        Delayed {
            quick_first: (first.0, first.1.is_some()),
            quick_retry: (retry.0, retry_held.is_some(), retry_held == Some(true)),
            patient: p.join().unwrap(),
        }
    })
}

/// What both engines must show: the quick client gives up on the delayed
/// handshake, its retry (a new attempt: another initial sequence number) is
/// accepted at once and held, having waited `quick_wait`; the patient one is
/// accepted only after its port's delay D (4 s), its record counts the wait
/// (between D and 2·D + 2 s) in engaged, which then exceeds held.
fn assert_delayed(
    d: &Delayed,
    recs: &[serde_json::Value],
    (quick_ip, quick_wait): (&str, std::ops::RangeInclusive<f64>),
    patient_ip: &str,
) {
    assert!(
        !d.quick_first.1 && d.quick_first.0 >= Duration::from_millis(2900),
        "{d:?}"
    );
    assert!(d.quick_retry.1 && d.quick_retry.2, "{d:?}");
    assert!(d.quick_retry.0 < Duration::from_millis(500), "{d:?}");
    assert!(d.patient.1, "{d:?}");
    assert!(
        d.patient.0 >= Duration::from_secs(4) && d.patient.0 < Duration::from_secs(10),
        "{d:?}"
    );
    let of = |ip: &str| -> Vec<&serde_json::Value> {
        recs.iter()
            .filter(|r| r["peer"].as_str().unwrap().starts_with(&format!("{ip}:")))
            .collect()
    };
    let (q, p) = (of(quick_ip), of(patient_ip));
    assert_eq!((q.len(), p.len()), (1, 1), "{recs:?}");
    let qw = q[0]["syn_wait_secs"].as_f64().unwrap();
    assert!(quick_wait.contains(&qw), "{quick_wait:?}: {:?}", q[0]);
    assert!(
        q[0]["engaged_secs"].as_f64().unwrap() >= qw + 1.0,
        "{:?}",
        q[0]
    );
    assert_eq!(q[0]["policy"], "syn_delay=10s,syn_mode=always");
    let wait = p[0]["syn_wait_secs"].as_f64().unwrap();
    let engaged = p[0]["engaged_secs"].as_f64().unwrap();
    let held = p[0]["held_secs"].as_f64().unwrap();
    assert!((3.5..=10.5).contains(&wait), "syn_wait {wait}: {:?}", p[0]);
    // The wait is within what the client saw (connect time), ±0.6 s
    // (whole seconds in the socket engine, ticks of the FIN in the stateless one).
    assert!(
        (wait - d.patient.0.as_secs_f64()).abs() <= 0.6,
        "{wait} vs {d:?}"
    );
    assert!(engaged >= wait + 1.0 && engaged > held, "{:?}", p[0]);
}

/// syn_delay (socket engine, nftables): a port without the policy connects
/// at once; a client that gives up on the delay and retries is exempt from
/// then on (its address in `syn_fast4`); the patient one's wait is counted
/// (first SYN read from the rules' nflog group).
#[test]
fn syn_delay_exempts_a_retrying_client_and_counts_a_patient_ones_wait() {
    if !privileged("syn_delay_exempts_a_retrying_client_and_counts_a_patient_ones_wait") {
        return;
    }
    let (srv, cli, mut p) = pair(
        "sd",
        62,
        &[
            "--listen",
            "10.77.62.1:2282",
            "--listen",
            "10.77.62.1:2283",
            "--listen",
            "10.77.62.1:2284",
            "--policy",
            "2282:syn_delay=10s,syn_mode=always",
            "--policy",
            "2283:syn_delay=4s,syn_mode=always",
        ],
    );
    cli.run("for d in $(ls /sys/class/net | grep ^vb); do ip addr add 10.77.62.3/24 dev $d; done");
    let direct = cli.in_thread(|| {
        let t = Instant::now();
        let n =
            TcpStream::connect_timeout(&"10.77.62.1:2284".parse().unwrap(), Duration::from_secs(5));
        (t.elapsed(), n.is_ok())
    });
    assert!(
        direct.1 && direct.0 < Duration::from_millis(500),
        "{direct:?}"
    );
    let d = delayed_clients(
        &cli,
        (
            "10.77.62.2".parse().unwrap(),
            "10.77.62.1:2282".parse().unwrap(),
        ),
        (
            "10.77.62.3".parse().unwrap(),
            "10.77.62.1:2283".parse().unwrap(),
        ),
    );
    let fast = srv.run("nft list set inet tarpit syn_fast4");
    let fast = String::from_utf8_lossy(&fast.stdout).to_string();
    assert!(
        fast.contains("10.77.62.2") && !fast.contains("10.77.62.3"),
        "{fast}"
    );
    p.term(10.0);
    let recs: Vec<_> = p
        .records()
        .into_iter()
        .filter(|r| !r["local"].as_str().unwrap().ends_with(":2284"))
        .collect();
    // The socket engine counts from the port's first logged SYN: the first
    // attempt's, 3 s before.
    assert_delayed(&d, &recs, ("10.77.62.2", 2.5..=3.6), "10.77.62.3");
}

/// The same against the stateless engine (its own bounded tables).
#[test]
fn stateless_syn_delay_exempts_a_retrying_client_and_counts_a_patient_ones_wait() {
    if !privileged("stateless_syn_delay_exempts_a_retrying_client_and_counts_a_patient_ones_wait") {
        return;
    }
    let mut lab = support::lab::Lab::new(
        "sds",
        &support::lab::LabConfig {
            trapped_hosts: vec![2, 3],
            extra_args: [
                "--policy",
                "22:syn_delay=10s,syn_mode=always",
                "--policy",
                "80:syn_delay=4s,syn_mode=always",
            ]
            .map(String::from)
            .to_vec(),
            ..Default::default()
        },
    );
    let d = delayed_clients(
        &lab.attacker,
        (
            lab.v4(2).parse().unwrap(),
            format!("{}:22", lab.v4(1)).parse().unwrap(),
        ),
        (
            lab.v4(3).parse().unwrap(),
            format!("{}:80", lab.v4(1)).parse().unwrap(),
        ),
    );
    let log = lab.stop();
    let recs: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["target"] == "tarpit::record")
        .collect();
    // The stateless engine counts per attempt: the retry waited nothing.
    assert_delayed(&d, &recs, (&lab.v4(2), 0.0..=0.0), &lab.v4(3));
}

/// What the two clients of the learn-mode tests met: connect times of the
/// quick one's two visits (it leaves after 1 s) and the staying one's
/// (it stays 4 s, past the learn window of 3 s); the second visits'
/// sockets, still open.
#[derive(Debug)]
struct Learned {
    quick: [Option<Duration>; 2],
    stays: [Option<Duration>; 2],
    open: Vec<socket2::Socket>,
}

/// From `quick`: connect, leave after 1 s, connect again (20 s timeout);
/// in parallel from `stays`: connect, leave after 4 s, connect again.
/// Leaving is a FIN, or with `reset` an RST (SO_LINGER 0: the stateless
/// engine's zero window keeps a FIN out).
fn learning_clients(
    ns: &Netns,
    quick: (std::net::IpAddr, SocketAddr),
    stays: (std::net::IpAddr, SocketAddr),
    reset: bool,
) -> Learned {
    use socket2::{Domain, Socket, Type};
    fn visit(src: std::net::IpAddr, dst: SocketAddr) -> (Option<Duration>, Option<Socket>) {
        let s = Socket::new(Domain::for_address(dst), Type::STREAM, None).unwrap();
        s.bind(&SocketAddr::new(src, 0).into()).unwrap();
        let t0 = Instant::now();
        match s.connect_timeout(&dst.into(), Duration::from_secs(20)) {
            Ok(()) => (Some(t0.elapsed()), Some(s)),
            Err(_) => (None, None),
        }
    }
    let twice = move |(src, dst): (std::net::IpAddr, SocketAddr), stay: Duration| {
        let (t1, s1) = visit(src, dst);
        std::thread::sleep(stay);
        if let Some(s) = s1 {
            if reset {
                s.set_linger(Some(Duration::ZERO)).unwrap();
            }
        }
        let (t2, s2) = visit(src, dst);
        ([t1, t2], s2)
    };
    ns.in_thread(move || {
        let s = std::thread::spawn(move || twice(stays, Duration::from_secs(4)));
        let (quick, q2) = twice(quick, Duration::from_secs(1));
        let (stays, s2) = s.join().unwrap();
        Learned {
            quick,
            stays,
            open: q2.into_iter().chain(s2).collect(),
        }
    })
}

/// Learn mode (the default) with D = 3 s: first visits are accepted at
/// once; a client that left after 1 s is delayed (≥ D) on its next visit,
/// one that stayed past the window is not.
fn assert_learned(l: &Learned) {
    let fast = |t: Option<Duration>| t.is_some_and(|t| t < Duration::from_millis(500));
    assert!(
        fast(l.quick[0]) && fast(l.stays[0]) && fast(l.stays[1]),
        "{l:?}"
    );
    assert!(
        l.quick[1].is_some_and(|t| t >= Duration::from_millis(2900) && t < Duration::from_secs(10)),
        "{l:?}"
    );
}

/// syn_delay's learn mode, socket engine (nftables sets `syn_young4`,
/// `syn_learn4`).
#[test]
fn syn_delay_learns_the_clients_that_left_early() {
    if !privileged("syn_delay_learns_the_clients_that_left_early") {
        return;
    }
    let (srv, cli, mut p) = pair(
        "sdl",
        67,
        &[
            "--listen",
            "10.77.67.1:2285",
            "--policy",
            "2285:syn_delay=3s,syn_learn=3s",
        ],
    );
    cli.run("for d in $(ls /sys/class/net | grep ^vb); do ip addr add 10.77.67.3/24 dev $d; done");
    let dst: SocketAddr = "10.77.67.1:2285".parse().unwrap();
    let mut l = learning_clients(
        &cli,
        ("10.77.67.2".parse().unwrap(), dst),
        ("10.77.67.3".parse().unwrap(), dst),
        false,
    );
    let learned = srv.run("nft list set inet tarpit syn_learn4");
    let learned = String::from_utf8_lossy(&learned.stdout).to_string();
    drop(std::mem::take(&mut l.open));
    p.term(10.0);
    assert_learned(&l);
    assert!(
        learned.contains("10.77.67.2") && !learned.contains("10.77.67.3"),
        "{learned}"
    );
    let recs = p.records();
    assert!(
        recs.iter()
            .all(|r| r["policy"] == "syn_delay=3s,syn_learn=3s"),
        "{recs:?}"
    );
}

/// The same against the stateless engine (its bounded tables).
#[test]
fn stateless_syn_delay_learns_the_clients_that_left_early() {
    if !privileged("stateless_syn_delay_learns_the_clients_that_left_early") {
        return;
    }
    let mut lab = support::lab::Lab::new(
        "sdls",
        &support::lab::LabConfig {
            trapped_hosts: vec![2, 3],
            extra_args: ["--policy", "22:syn_delay=3s,syn_learn=3s"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        },
    );
    let dst: SocketAddr = format!("{}:22", lab.v4(1)).parse().unwrap();
    let l = learning_clients(
        &lab.attacker,
        (lab.v4(2).parse().unwrap(), dst),
        (lab.v4(3).parse().unwrap(), dst),
        true,
    );
    lab.stop();
    assert_learned(&l);
}

/// A takeover hands each bait connection over with its position: the
/// stream goes on (one status line, then well-formed header lines across
/// the switch) instead of starting again. One still waiting for its peer
/// goes on waiting, and gets its status line when it speaks.
#[test]
fn bait_goes_on_where_it_stopped_after_a_takeover() {
    let dir = std::env::temp_dir().join(format!("tarpit-baittk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ctl = dir.join("control.sock");
    let ctl = ctl.to_str().unwrap();
    let args = ["--control", ctl, "--policy", "default:bait=http,drip=100ms"];
    let mut old = Proc::serve(&[&["--listen", "127.0.0.1:0"][..], &args].concat());
    let mut c = TcpStream::connect(old.addr()).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    let mut waiting = TcpStream::connect(old.addr()).unwrap();
    let mut got: Vec<u8> = arrivals(&mut c, Duration::from_millis(1500))
        .into_iter()
        .flat_map(|x| x.1)
        .collect();
    let _new = Proc::serve(&[&["--listen", "127.0.0.1:1", "--takeover"][..], &args].concat());
    wait_for(15.0, "old process exits", || {
        old.child.try_wait().ok().flatten()
    });
    // Nothing yet, from either process.
    let quiet = arrivals(&mut waiting, Duration::from_millis(300));
    assert!(quiet.is_empty(), "{quiet:?}");
    waiting.write_all(b"HEAD / HTTP/1.1\r\n").unwrap();
    let after: Vec<u8> = arrivals(&mut c, Duration::from_millis(3000))
        .into_iter()
        .flat_map(|x| x.1)
        .collect();
    let spoke: Vec<u8> = arrivals(&mut waiting, Duration::from_millis(300))
        .into_iter()
        .flat_map(|x| x.1)
        .collect();
    let spoke = String::from_utf8(spoke).unwrap();
    assert!(
        spoke.starts_with("HTTP/1.1 200 OK\r\nX-") && spoke.len() > 30,
        "{spoke:?}"
    );
    assert!(after.len() >= 8, "the new process drips: {after:?}");
    got.extend(after);
    let text = String::from_utf8(got).unwrap();
    assert_eq!(text.matches("HTTP/1.1 200 OK\r\n").count(), 1, "{text:?}");
    // After the status line: header lines, the last one unfinished, with
    // the syntax intact across the switch (a restart would repeat the
    // status line; another stream would break a line's shape).
    assert!(
        header_prefix(&text["HTTP/1.1 200 OK\r\n".len()..]),
        "{text:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `text` is zero or more `X-name: value\r\n` lines (name lowercase,
/// value alphanumeric) followed by the beginning of one more.
fn header_prefix(text: &str) -> bool {
    enum Step {
        Lit(&'static [u8]),
        Run(fn(&u8) -> bool),
    }
    use Step::{Lit, Run};
    const LINE: [Step; 5] = [
        Lit(b"X-"),
        Run(u8::is_ascii_lowercase),
        Lit(b": "),
        Run(u8::is_ascii_alphanumeric),
        Lit(b"\r\n"),
    ];
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        for step in &LINE {
            match step {
                Lit(want) => {
                    for &w in *want {
                        if i == b.len() {
                            return true;
                        }
                        if b[i] != w {
                            return false;
                        }
                        i += 1;
                    }
                }
                Run(class) => {
                    let start = i;
                    while i < b.len() && class(&b[i]) {
                        i += 1;
                    }
                    if i == b.len() {
                        return true;
                    }
                    if i == start {
                        return false;
                    }
                }
            }
        }
    }
    true
}

/// Bait's bytes waiting for an acknowledgement stop the keepalives, so a
/// peer that vanished would be given up only after `tcp_retries2` (~15
/// minutes). The bait's TCP_USER_TIMEOUT (keepalive idle + interval ×
/// count: 1 + 1 × 3 = 4 s here) frees it as peer_timeout in that time; a
/// live peer whose window is closed (it answers the zero-window probes) is
/// still held after twice that.
#[test]
fn bait_frees_a_vanished_peer_at_the_user_timeout() {
    if !privileged("bait_frees_a_vanished_peer_at_the_user_timeout") {
        return;
    }
    let (_srv, cli, p) = pair(
        "baitut",
        66,
        &[
            "--listen",
            "10.77.66.1:2222",
            "--keepalive-min",
            "1s",
            "--keepalive-max",
            "1s",
            "--policy",
            "default:bait=ssh,drip=300ms",
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    let (mut gone, mut live) = cli.in_thread(|| {
        let c = || TcpStream::connect(("10.77.66.1", 2222)).unwrap();
        (c(), c())
    });
    for c in [&mut gone, &mut live] {
        c.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").unwrap();
        assert!(!arrivals(c, Duration::from_millis(700)).is_empty());
    }
    let (gp, lp) = (
        gone.local_addr().unwrap().port(),
        live.local_addr().unwrap().port(),
    );
    // `gone` vanishes (everything to it dropped); `live` answers, with its
    // window closed.
    cli.run(&format!(
        "nft add table inet t && nft add chain inet t in '{{ type filter hook input priority 0; }}' && nft add rule inet t in tcp dport {gp} drop && nft add chain inet t out '{{ type filter hook output priority 0; }}' && nft add rule inet t out tcp sport {gp} drop && nft add rule inet t out tcp sport {lp} tcp window set 0"
    ));
    let t0 = Instant::now();
    let r = p.wait_records(1, 15.0);
    let freed = t0.elapsed().as_secs_f64();
    eprintln!("vanished peer freed after {freed:.1} s: {}", r[0]);
    assert_eq!(r[0]["end"], "peer_timeout", "{}", r[0]);
    assert_eq!(r[0]["peer"], format!("10.77.66.2:{gp}"));
    assert!((3.5..7.5).contains(&freed), "{freed}");
    // The live one with its window closed: still held after more than the
    // user timeout.
    std::thread::sleep(Duration::from_secs(8).saturating_sub(t0.elapsed()));
    assert_eq!(p.records().len(), 1, "{:?}", p.records());
    drop(live);
}

/// `tarpit serve` in namespace `ns` with `args`, its control socket off
/// unless `args` names one.
fn serve_in(ns: &Netns, args: &[&str]) -> Proc {
    let mut cmd = ns.command(support::bin());
    cmd.args(["--log-format", "json", "serve", "--history", "off"]);
    if !args.contains(&"--control") {
        cmd.args(["--control", "off"]);
    }
    cmd.args(args);
    Proc::spawn(cmd)
}

/// The chains and sets of table `inet tarpit` in `ns`, sorted.
fn tarpit_objects(ns: &Netns) -> Vec<String> {
    let o = ns.try_run("nft -j -t list table inet tarpit");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    let mut names: Vec<String> = v["nftables"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| {
                    let (kind, o) = x.as_object()?.iter().next()?;
                    (kind == "chain" || kind == "set")
                        .then(|| format!("{kind} {}", o["name"].as_str().unwrap_or("")))
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn logged(p: &Proc, message_part: &str) -> bool {
    p.json().iter().any(|v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains(message_part))
    })
}

/// The policy chains and sets live exactly as long as a serve needs them:
/// removed on a clean shutdown; left by a killed one and removed by the
/// next serve that has no such policy; kept across a takeover (the new
/// process relies on them). A watcher's set in the same table is never
/// touched.
#[test]
fn policy_rules_leave_nothing_stale() {
    if !privileged("policy_rules_leave_nothing_stale") {
        return;
    }
    let ns = Netns::new("pst");
    ns.run("nft add table inet tarpit && nft add set inet tarpit trap4 \"{ type ipv4_addr; flags timeout; }\"");
    // A set of an earlier version's syn_delay, removed with the others.
    ns.run("nft add set inet tarpit syn_wait4 \"{ type ipv4_addr . inet_service; flags dynamic, timeout; }\"");
    let watcher = vec!["set trap4".to_string()];
    let with_policies: Vec<String> = [
        "chain policy_in",
        "chain policy_out",
        "set syn_addr4",
        "set syn_addr6",
        "set syn_fast4",
        "set syn_fast6",
        "set syn_learn4",
        "set syn_learn6",
        "set syn_try_seen4",
        "set syn_try_seen6",
        "set syn_try_wait4",
        "set syn_try_wait6",
        "set syn_young4",
        "set syn_young6",
        "set trap4",
    ]
    .map(String::from)
    .to_vec();
    let policy = [
        "--listen",
        "127.0.0.1:2290",
        "--policy",
        "default:window=zero,syn_delay=5s",
    ];

    // Clean shutdown: removed (the earlier version's set too).
    let mut a = serve_in(&ns, &policy);
    let mut first = with_policies.clone();
    first.push("set syn_wait4".into());
    first.sort();
    assert_eq!(tarpit_objects(&ns), first);
    a.term(10.0);
    assert_eq!(tarpit_objects(&ns), watcher, "{}", a.log());
    assert!(logged(&a, "policy rules removed"), "{}", a.log());

    // Killed: stale, until a serve without such policies starts.
    let b = serve_in(&ns, &policy);
    b.signal("KILL");
    drop(b);
    assert_eq!(tarpit_objects(&ns), with_policies);
    let mut c = serve_in(
        &ns,
        &["--listen", "127.0.0.1:2290", "--policy", "default:bait=ssh"],
    );
    assert_eq!(tarpit_objects(&ns), watcher, "{}", c.log());
    assert!(
        logged(&c, "removed policy rules an earlier configuration left"),
        "{}",
        c.log()
    );
    c.term(10.0);
    assert_eq!(tarpit_objects(&ns), watcher);

    // A takeover: the successor keeps them; its own shutdown removes them.
    let dir = std::env::temp_dir().join(format!("tarpit-pst-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ctl = dir.join("control.sock");
    let ctl = ctl.to_str().unwrap();
    let mut old = serve_in(&ns, &[&policy[..], &["--control", ctl]].concat());
    let mut new = serve_in(
        &ns,
        &[&policy[..], &["--control", ctl, "--takeover"]].concat(),
    );
    wait_for(15.0, "old process exits", || {
        old.child.try_wait().ok().flatten()
    });
    old.drain();
    assert_eq!(tarpit_objects(&ns), with_policies, "{}", old.log());
    new.term(10.0);
    assert_eq!(tarpit_objects(&ns), watcher, "{}", new.log());
    let _ = std::fs::remove_dir_all(&dir);
}
