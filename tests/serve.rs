//! `tarpit serve` on real sockets: loopback, and namespaces where the test
//! needs to make a peer vanish.

mod support;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};
use support::netns::{privileged, veth, Netns};
use support::serve::{opts, InProc, Proc};
use support::{bin, wait_for};
use tarpit::engine::record::EndReason;

/// What a client sees when it tries to read.
#[derive(Debug, PartialEq)]
enum Seen {
    Nothing,
    Data,
    Eof,
    Reset,
    Other(ErrorKind),
}

fn read_outcome(s: &mut TcpStream, wait: Duration) -> Seen {
    let end = Instant::now() + wait;
    let mut b = [0u8; 64];
    loop {
        // A signal to the test process (a child exiting) interrupts the
        // read; that is no outcome, so wait out the rest of the time.
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Seen::Nothing;
        }
        s.set_read_timeout(Some(left)).unwrap();
        return match s.read(&mut b) {
            Ok(0) => Seen::Eof,
            Ok(_) => Seen::Data,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                Seen::Nothing
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => Seen::Reset,
            Err(e) => Seen::Other(e.kind()),
        };
    }
}

/// Connects from a chosen loopback source address.
fn connect_from(src: &str, dst: SocketAddr) -> TcpStream {
    let s = Socket::new(Domain::for_address(dst), Type::STREAM, Some(Protocol::TCP)).unwrap();
    let src: SocketAddr = format!("{src}:0").parse().unwrap();
    s.bind(&SockAddr::from(src)).unwrap();
    s.connect(&SockAddr::from(dst)).unwrap();
    s.into()
}

fn local_port(s: &TcpStream) -> u16 {
    s.local_addr().unwrap().port()
}

/// Closes abortively (RST), as a client that gives up hard.
fn reset(s: TcpStream) {
    let s = Socket::from(s);
    s.set_linger(Some(Duration::ZERO)).unwrap();
    drop(s);
}

#[test]
fn accepted_connection_gets_no_banner_and_no_fin() {
    let p = Proc::serve(&["--listen", "127.0.0.1:0"]);
    let mut c = TcpStream::connect(p.addr()).unwrap();
    assert_eq!(read_outcome(&mut c, Duration::from_secs(2)), Seen::Nothing);
    assert!(p.records().is_empty(), "still held: no record yet");
}

#[test]
fn window_closes_and_data_stays_in_the_clients_send_queue() {
    let srv = InProc::start(opts("127.0.0.1:0"));
    let mut c = TcpStream::connect(srv.addr()).unwrap();
    c.set_nonblocking(true).unwrap();
    let chunk = vec![b'A'; 64 * 1024];
    let mut written = 0usize;
    let deadline = Instant::now() + Duration::from_secs(5);
    while written < 1 << 20 && Instant::now() < deadline {
        match c.write(&chunk[..chunk.len().min((1 << 20) - written)]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    assert_eq!(written, 1 << 20, "the client kernel buffers 1 MiB");
    std::thread::sleep(Duration::from_secs(1));
    let unacked = tarpit::sys::outq(c.as_raw_fd()).unwrap() as usize;
    assert!(
        unacked >= (1 << 20) - 4096,
        "only {unacked} bytes still unacknowledged"
    );
    let snap = srv.snapshot();
    assert_eq!(snap.conns.len(), 1);
    assert!(snap.conns[0].bytes_queued <= 4096, "{:?}", snap.conns[0]);
    srv.handle.shutdown();
    let r = srv.wait_records(1, 5.0).remove(0);
    assert!(
        r.bytes_received <= 4096,
        "received {} of 1 MiB",
        r.bytes_received
    );
    assert!(r.bytes_received > 0);
    drop(c);
}

#[test]
fn record_reports_the_few_bytes_received_and_what_they_were() {
    let srv = InProc::start(opts("127.0.0.1:0"));
    let mut c = TcpStream::connect(srv.addr()).unwrap();
    c.set_nonblocking(true).unwrap();
    let mut payload = b"SSH-2.0-Go\r\n".to_vec();
    payload.resize(300 * 1024, b'z');
    let mut off = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    while off < payload.len() && Instant::now() < deadline {
        match c.write(&payload[off..]) {
            Ok(n) => off += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    srv.handle.shutdown();
    let r = srv.wait_records(1, 5.0).remove(0);
    assert_eq!(r.end, EndReason::Shutdown);
    assert!(
        r.bytes_received > 0 && r.bytes_received <= 4096,
        "{}",
        r.bytes_received
    );
    assert!(r.head.starts_with("SSH-2.0-Go\\r\\nzz"), "{}", r.head);
    assert_eq!(r.peer.port(), local_port(&c));
    assert_eq!(
        r.original_dst,
        srv.addr(),
        "direct connection: original dst is the listener"
    );
}

#[test]
fn fin_is_ignored_and_recorded() {
    let srv = InProc::start(opts("127.0.0.1:0"));
    let mut c = TcpStream::connect(srv.addr()).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        read_outcome(&mut c, Duration::from_millis(300)),
        Seen::Nothing
    );
    let snap = srv.snapshot();
    assert_eq!(snap.conns.len(), 1, "still held after the peer's FIN");
    assert!(snap.conns[0].fin_after_secs.is_some());
    assert_eq!(snap.conns[0].state, "CLOSE_WAIT");
    assert_eq!(snap.totals.close_attempts, 1);
    srv.handle.shutdown();
    let r = srv.wait_records(1, 5.0).remove(0);
    assert!(r.peer_tried_close());
    assert!(r.held_secs >= 1.9, "{}", r.held_secs);
    assert_eq!(r.bytes_received, 0, "a FIN is not a byte");
}

#[test]
fn lifetime_ends_with_rst() {
    let p = Proc::serve(&[
        "--listen",
        "127.0.0.1:0",
        "--lifetime-min",
        "1s",
        "--lifetime-max",
        "2s",
    ]);
    let mut c = TcpStream::connect(p.addr()).unwrap();
    let t0 = Instant::now();
    assert_eq!(read_outcome(&mut c, Duration::from_secs(5)), Seen::Reset);
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "released too early: {took:?}"
    );
    let r = p.wait_records(1, 3.0).remove(0);
    assert_eq!(r["end"], "lifetime");
    let held = r["held_secs"].as_f64().unwrap();
    assert!((0.9..=2.3).contains(&held), "held {held}");
    assert_eq!(r["peer"], c.local_addr().unwrap().to_string());
}

#[test]
fn keepalive_is_on_with_random_times_in_range() {
    let mut o = opts("127.0.0.1:0");
    o.per_ip = 0;
    let srv = InProc::start(o);
    let clients: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(srv.addr()).unwrap())
        .collect();
    let snap = wait_for(5.0, "40 held", || {
        let s = srv.snapshot();
        (s.conns.len() == 40).then_some(s)
    });
    let mut idles = std::collections::BTreeSet::new();
    let mut intvls = std::collections::BTreeSet::new();
    for c in &snap.conns {
        assert!((60..=240).contains(&c.keepalive_idle_secs), "{c:?}");
        assert!((60..=240).contains(&c.keepalive_intvl_secs), "{c:?}");
        idles.insert(c.keepalive_idle_secs);
        intvls.insert(c.keepalive_intvl_secs);
    }
    assert!(
        idles.len() >= 10 && intvls.len() >= 10,
        "not spread: {idles:?} {intvls:?}"
    );
    assert!(
        *idles.first().unwrap() < 120 && *idles.last().unwrap() > 180,
        "{idles:?}"
    );
    // SO_KEEPALIVE: the kernel runs a keepalive timer on every held socket.
    let port = srv.addr().port();
    let out = Command::new("ss")
        .args([
            "-tnoH",
            "state",
            "established",
            &format!("( sport = :{port} )"),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 40, "{text}");
    assert!(lines.iter().all(|l| l.contains("keepalive")), "{text}");
    drop(clients);
}

#[test]
fn per_ip_cap_evicts_that_peers_oldest() {
    let mut o = opts("127.0.0.1:0");
    o.per_ip = 2;
    let srv = InProc::start(o);
    let mut a1 = connect_from("127.0.0.1", srv.addr());
    std::thread::sleep(Duration::from_millis(50));
    let mut other = connect_from("127.0.0.2", srv.addr());
    let mut a2 = connect_from("127.0.0.1", srv.addr());
    std::thread::sleep(Duration::from_millis(50));
    let mut a3 = connect_from("127.0.0.1", srv.addr());
    assert_eq!(read_outcome(&mut a1, Duration::from_secs(2)), Seen::Reset);
    let r = srv.wait_records(1, 3.0);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].end, EndReason::EvictedPerIp);
    assert_eq!(r[0].peer.port(), local_port(&a1));
    for c in [&mut a2, &mut a3, &mut other] {
        assert_eq!(read_outcome(c, Duration::from_millis(200)), Seen::Nothing);
    }
    assert_eq!(srv.snapshot().conns.len(), 3);
}

#[test]
fn global_cap_evicts_the_oldest() {
    let mut o = opts("127.0.0.1:0");
    o.per_ip = 0;
    o.max_conns = Some(3);
    let srv = InProc::start(o);
    let mut cs = Vec::new();
    for i in 0..4 {
        cs.push(connect_from(&format!("127.0.0.{}", 10 + i), srv.addr()));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        read_outcome(&mut cs[0], Duration::from_secs(2)),
        Seen::Reset
    );
    let r = srv.wait_records(1, 3.0);
    assert_eq!(r[0].end, EndReason::EvictedGlobal);
    assert_eq!(r[0].peer.ip().to_string(), "127.0.0.10");
    let snap = srv.snapshot();
    assert_eq!(snap.conns.len(), 3);
    assert_eq!(snap.totals.by_reason.get("evicted_global"), Some(&1));
}

#[test]
fn survives_fd_exhaustion_and_accepts_again() {
    const LIMIT: usize = 48;
    let mut cmd = Command::new("bash");
    cmd.arg("-c").arg(format!(
        "ulimit -n {LIMIT} && exec {} --log-format json serve --listen 127.0.0.1:0 --max-conns 10000 --per-ip 0 --control off --history off",
        bin()
    ));
    let mut p = Proc::spawn(cmd);
    let addr = p.addr();
    // 3x as many clients as the process has descriptors.
    let mut clients: Vec<TcpStream> = Vec::new();
    for i in 0..3 * LIMIT {
        clients.push(connect_from(&format!("127.0.1.{}", 1 + i % 200), addr));
        if i < 20 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(p.child.try_wait().unwrap().is_none(), "server died");
    // Free descriptors: the first 20 clients (accepted first) reset.
    for c in clients.drain(..20) {
        reset(c);
    }
    std::thread::sleep(Duration::from_secs(2));
    let st = p.term(5.0);
    assert!(st.success(), "{st}");
    let recs = p.records();
    let resets = recs.iter().filter(|r| r["end"] == "peer_reset").count();
    assert_eq!(
        resets,
        20,
        "the 20 reset clients were held and noticed; log:\n{}",
        p.log()
    );
    let distinct: std::collections::HashSet<String> = recs
        .iter()
        .map(|r| r["peer"].as_str().unwrap().to_string())
        .collect();
    assert!(
        distinct.len() > LIMIT,
        "only {} connections ever held: it did not accept again after fds freed; log:\n{}",
        distinct.len(),
        p.log()
    );
    // Accept errors were logged, but at most about once per second.
    let warns: Vec<_> = p
        .json()
        .into_iter()
        .filter(|v| v["message"] == "accept failed; backing off")
        .collect();
    assert!(!warns.is_empty(), "EMFILE was never reported");
    assert!(
        warns.len() <= 6,
        "{} accept-error lines in ~4 s",
        warns.len()
    );
    let total: u64 = warns.iter().map(|w| w["count"].as_u64().unwrap_or(0)).sum();
    assert!(total as usize >= warns.len());
    assert!(warns.iter().all(|w| w["kind"] == "emfile"), "{warns:?}");
}

#[test]
fn ipv6_loopback_and_dual_listeners_coexist() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let v4 = format!("0.0.0.0:{port}");
    let v6 = format!("[::]:{port}");
    let mut p = Proc::serve(&["--listen", &v4, "--listen", &v6]);
    assert_eq!(p.listeners.len(), 2);
    let c4 = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let c6 = TcpStream::connect(format!("[::1]:{port}")).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(p.term(3.0).success());
    let recs = p.records();
    assert_eq!(recs.len(), 2);
    let find = |c: &TcpStream| {
        recs.iter()
            .find(|r| r["peer"] == c.local_addr().unwrap().to_string())
            .unwrap_or_else(|| panic!("no record for {c:?}: {recs:?}"))
            .clone()
    };
    assert_eq!(find(&c4)["listener"], v4);
    assert_eq!(find(&c6)["listener"], v6);
    assert_eq!(find(&c6)["original_dst"], format!("[::1]:{port}"));
}

#[test]
fn ipv4_mapped_peers_are_recorded_as_ipv4() {
    // A dual-stack listener (as systemd may hand us) sees IPv4 peers as
    // ::ffff:a.b.c.d; records and per-IP grouping must treat them as IPv4.
    let s = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP)).unwrap();
    s.set_only_v6(false).unwrap();
    s.bind(&SockAddr::from("[::]:0".parse::<SocketAddr>().unwrap()))
        .unwrap();
    s.listen(16).unwrap();
    let port = s.local_addr().unwrap().as_socket().unwrap().port();
    let bound = vec![tarpit::engine::socket::BoundListener {
        sock: s,
        label: format!("[::]:{port}"),
    }];
    let mut o = opts(&format!("[::]:{port}"));
    o.per_ip = 1;
    let srv = InProc::with_listeners(o, bound, 1000);
    let a = connect_from("127.0.0.1", format!("127.0.0.1:{port}").parse().unwrap());
    std::thread::sleep(Duration::from_millis(50));
    let _b = connect_from("127.0.0.1", format!("127.0.0.1:{port}").parse().unwrap());
    let r = srv.wait_records(1, 3.0).remove(0);
    assert_eq!(
        r.end,
        EndReason::EvictedPerIp,
        "mapped peers grouped as one IPv4 host"
    );
    assert_eq!(r.peer, a.local_addr().unwrap(), "recorded as plain IPv4");
    assert!(r.original_dst.is_ipv4());
}

#[test]
fn sigterm_releases_everything_and_exits_zero() {
    let mut p = Proc::serve(&["--listen", "127.0.0.1:0"]);
    let mut cs: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(p.addr()).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    let st = p.term(2.0);
    assert!(st.success(), "{st}");
    assert!(t0.elapsed() < Duration::from_secs(2));
    for c in &mut cs {
        assert_eq!(read_outcome(c, Duration::from_secs(1)), Seen::Reset);
    }
    let recs = p.records();
    assert_eq!(recs.len(), 5);
    assert!(recs.iter().all(|r| r["end"] == "shutdown"), "{recs:?}");
}

#[test]
fn port_in_use_is_a_clear_error_with_exit_2() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap();
    let out = Command::new(bin())
        .args(["serve", "--listen", &addr.to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on {addr}")) && err.contains("in use"),
        "{err}"
    );
}

#[test]
fn invalid_listen_value_is_a_clear_error() {
    for bad in ["nonsense", "127.0.0.1", "127.0.0.1:99999", "[::1]"] {
        let out = Command::new(bin())
            .args(["serve", "--listen", bad])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--listen") && err.contains(bad),
            "{bad}: {err}"
        );
    }
}

#[test]
fn config_mistakes_name_file_line_and_key() {
    let dir = std::env::temp_dir().join(format!("tarpit-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        (
            "[serve]\nper_ip = 3\nper_iq = 4\n",
            ":3: key `serve.per_iq`",
        ),
        (
            "[serve]\nlifetime_max = \"soon\"\n",
            ":2: key `serve.lifetime_max`",
        ),
        (
            "[serve]\nlisten = [\"0.0.0.0:22\", \"bogus\"]\n",
            ":2: key `serve.listen`",
        ),
        ("[serve]\nmax_conns = -1\n", ":2: key `serve.max_conns`"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let f = dir.join(format!("c{i}.toml"));
        std::fs::write(&f, text).unwrap();
        let out = Command::new(bin())
            .args(["--config", f.to_str().unwrap(), "serve"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("{}{want}", f.display())),
            "{text} -> {err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_file_values_apply_and_flags_override() {
    let dir = std::env::temp_dir().join(format!("tarpit-cfg2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("t.toml");
    std::fs::write(&f, "[serve]\nlisten = [\"127.0.0.1:0\"]\nlifetime_min = \"1s\"\nlifetime_max = \"1s\"\nper_ip = 1\n").unwrap();
    let mut c = Command::new(bin());
    c.args([
        "--log-format",
        "json",
        "--config",
        f.to_str().unwrap(),
        "serve",
        "--per-ip",
        "5",
    ]);
    let p = Proc::spawn(c);
    let v: Vec<_> = p
        .json()
        .into_iter()
        .filter(|v| v["message"] == "serving")
        .collect();
    assert_eq!(v[0]["per_ip"], 5, "flag overrides file");
    let mut s = TcpStream::connect(p.addr()).unwrap();
    assert_eq!(
        read_outcome(&mut s, Duration::from_secs(3)),
        Seen::Reset,
        "file lifetime 1s applies"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn vanished_peer_is_freed_by_keepalive() {
    if !privileged("vanished_peer_is_freed_by_keepalive") {
        return;
    }
    let client_ns = Netns::new("van");
    let server_ns = Netns::new("van");
    veth(&client_ns, "10.77.3.1/24", &server_ns, "10.77.3.2/24");
    let srv = server_ns.in_thread(|| {
        let mut o = opts("10.77.3.2:0");
        o.keepalive = (Duration::from_secs(1), Duration::from_secs(1));
        o.keepalive_count = 2;
        InProc::start(o)
    });
    let addr = srv.addr();
    let c = client_ns.in_thread(move || TcpStream::connect(addr).unwrap());
    wait_for(3.0, "held", || {
        (srv.snapshot().conns.len() == 1).then_some(())
    });
    // The client host falls silent: no FIN, no RST, nothing.
    client_ns.run("nft add table inet t && nft add chain inet t in \"{ type filter hook input priority 0; policy drop; }\" && nft add chain inet t out \"{ type filter hook output priority 0; policy drop; }\"");
    let r = srv.wait_records(1, 10.0).remove(0);
    assert_eq!(r.end, EndReason::PeerTimeout);
    assert!(r.held_secs >= 2.0, "{}", r.held_secs);
    assert_eq!(srv.snapshot().conns.len(), 0);
    drop(c);
}

#[test]
fn flood_beyond_the_caps_keeps_the_freshest() {
    let mut o = opts("127.0.0.1:0");
    o.per_ip = 5;
    o.max_conns = Some(50);
    let srv = InProc::start(o);
    let mut cs = Vec::new();
    for i in 0..500 {
        cs.push(connect_from(&format!("127.0.2.{}", 1 + i % 20), srv.addr()));
    }
    let recs = srv.wait_records(450, 10.0);
    let snap = srv.snapshot();
    assert_eq!(snap.totals.trapped, 500);
    assert_eq!(snap.conns.len(), 50);
    assert_eq!(recs.len(), 450);
    let mut per_ip = std::collections::HashMap::new();
    for c in &snap.conns {
        *per_ip.entry(c.peer.ip()).or_insert(0) += 1;
    }
    assert!(per_ip.values().all(|&n| n <= 5), "{per_ip:?}");
    // The 50 held are the last 50 that connected.
    let held: std::collections::HashSet<u16> = snap.conns.iter().map(|c| c.peer.port()).collect();
    let last: std::collections::HashSet<u16> = cs[450..].iter().map(local_port).collect();
    assert_eq!(held, last);
    assert!(recs
        .iter()
        .all(|r| matches!(r.end, EndReason::EvictedPerIp | EndReason::EvictedGlobal)));
}

#[test]
fn drops_privileges_after_binding() {
    if !support::is_root() {
        assert!(std::env::var_os("CI").is_none(), "CI runs as root");
        eprintln!("SKIP drops_privileges_after_binding: needs root");
        return;
    }
    let p = Proc::serve(&[
        "--listen",
        "127.0.0.1:0",
        "--user",
        "nobody",
        "--group",
        "nogroup",
    ]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.child.id())).unwrap();
    let uid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_string();
    assert!(
        uid.split_whitespace().skip(1).all(|u| u == "65534"),
        "{uid}"
    );
    let mut c = TcpStream::connect(p.addr()).unwrap();
    assert_eq!(
        read_outcome(&mut c, Duration::from_millis(500)),
        Seen::Nothing
    );
}

#[test]
fn config_user_and_group_are_honoured() {
    if !support::is_root() {
        assert!(std::env::var_os("CI").is_none(), "CI runs as root");
        eprintln!("SKIP config_user_and_group_are_honoured: needs root");
        return;
    }
    let dir = std::env::temp_dir().join(format!("tarpit-cfg-user-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("t.toml");
    std::fs::write(&f, "[serve]\nuser = \"nobody\"\ngroup = \"nogroup\"\n").unwrap();
    let mut c = Command::new(bin());
    c.args([
        "--log-format",
        "json",
        "--config",
        f.to_str().unwrap(),
        "serve",
    ])
    .args([
        "--listen",
        "127.0.0.1:0",
        "--control",
        "off",
        "--history",
        "off",
    ]);
    let p = Proc::spawn(c);
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.child.id())).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    for (field, want) in [("Uid:", "65534"), ("Gid:", "65534")] {
        let line = status.lines().find(|l| l.starts_with(field)).unwrap();
        assert!(line.split_whitespace().skip(1).all(|u| u == want), "{line}");
    }
}

/// Issue 12 item 9: the privilege drop comes before any thread starts
/// (before, the history writer thread was started as root and the drop came
/// later). Under strace, the daemon's first setuid comes before its first
/// new thread; every thread of the running daemon is nobody; and the
/// history, opened as root, is still written by the unprivileged writer.
#[test]
fn privileges_are_dropped_before_any_thread_starts() {
    if !support::is_root() || !support::netns::which("strace") {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root, with strace"
        );
        eprintln!("SKIP privileges_are_dropped_before_any_thread_starts: needs root and strace");
        return;
    }
    let dir = std::env::temp_dir().join(format!("tarpit-drop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("t.toml");
    std::fs::write(&cfg, "[serve]\nuser = \"nobody\"\ngroup = \"nogroup\"\n").unwrap();
    let trace = dir.join("trace");
    let db = dir.join("history.db");
    let mut c = Command::new("strace");
    c.args([
        "-f",
        "-qq",
        "-e",
        "trace=clone,clone3,setuid,setresuid",
        "-o",
    ])
    .arg(&trace)
    .arg(bin())
    .args(["--log-format", "json", "--config"])
    .arg(&cfg)
    .args(["serve", "--listen", "127.0.0.1:0", "--control"])
    .arg(dir.join("control.sock"))
    .arg("--history")
    .arg(&db);
    let mut p = Proc::spawn(c);
    let children = format!("/proc/{0}/task/{0}/children", p.pid());
    let pid: u32 = std::fs::read_to_string(children)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Killing strace (Proc's drop) would leave the daemon running.
    struct Kill(Option<u32>);
    impl Drop for Kill {
        fn drop(&mut self) {
            if let Some(pid) = self.0 {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
    }
    let mut daemon = Kill(Some(pid));
    let mut threads = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(t.unwrap().path().join("status")).unwrap();
        let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert!(
            uid.split_whitespace().skip(1).all(|u| u == "65534"),
            "{uid}"
        );
        threads += 1;
    }
    assert!(threads >= 2, "the history writer thread runs");
    let mut s = TcpStream::connect(p.addr()).unwrap();
    s.write_all(b"SSH-2.0-x\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    reset(s);
    p.wait_records(1, 10.0);
    // SIGTERM to the daemon itself; strace ends with it.
    let st = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let child = &mut p.child;
    wait_for(10.0, "exit after SIGTERM", || {
        child.try_wait().ok().flatten()
    });
    daemon.0 = None;
    p.drain();
    assert!(
        p.json().iter().any(|v| v["message"] == "stopped"),
        "{}",
        p.log()
    );
    let rows: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM connections", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1, "{}", p.log());
    // strace -f lines: "PID syscall(args) = result".
    let text = std::fs::read_to_string(&trace).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let first = |what: &dyn Fn(&str) -> bool| text.lines().position(what);
    let setuid = first(&|l| l.contains("setuid(65534") || l.contains("setresuid(65534"))
        .unwrap_or_else(|| panic!("no setuid in the trace:\n{text}"));
    let thread = first(&|l| l.contains("CLONE_THREAD"))
        .unwrap_or_else(|| panic!("no thread in the trace:\n{text}"));
    assert!(
        setuid < thread,
        "a thread started before the privilege drop:\n{text}"
    );
}

#[test]
fn half_open_connections_do_not_disturb_trapping() {
    if !privileged("half_open_connections_do_not_disturb_trapping") {
        return;
    }
    let client_ns = Netns::new("half");
    let server_ns = Netns::new("half");
    veth(&client_ns, "10.77.4.1/24", &server_ns, "10.77.4.2/24");
    let iface = String::from_utf8(
        client_ns
            .run("ip -o link show | grep -o \"va[0-9x]*\" | head -1")
            .stdout,
    )
    .unwrap();
    client_ns.run(&format!("ip addr add 10.77.4.3/24 dev {}", iface.trim()));
    // The half-open source never sees the SYN/ACK, so it never completes.
    client_ns.run("nft add table inet h && nft add chain inet h in \"{ type filter hook input priority 0; }\" && nft add rule inet h in ip daddr 10.77.4.1 tcp flags \\& \\(syn\\|ack\\) == syn\\|ack drop");
    let srv = server_ns.in_thread(|| InProc::start(opts("10.77.4.2:0")));
    let addr = srv.addr();
    let half = client_ns.in_thread(move || {
        (0..200)
            .map(|_| {
                let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
                s.bind(&SockAddr::from(
                    "10.77.4.1:0".parse::<SocketAddr>().unwrap(),
                ))
                .unwrap();
                s.set_nonblocking(true).unwrap();
                let _ = s.connect(&SockAddr::from(addr));
                s
            })
            .collect::<Vec<_>>()
    });
    std::thread::sleep(Duration::from_millis(300));
    let synrecv = server_ns.run("ss -tnH state syn-recv | wc -l");
    let n: usize = String::from_utf8_lossy(&synrecv.stdout)
        .trim()
        .parse()
        .unwrap();
    assert!(n > 0, "no half-open connections on the server");
    let good = client_ns.in_thread(move || connect_from("10.77.4.3", addr));
    let snap = wait_for(3.0, "the real client held", || {
        let s = srv.snapshot();
        (!s.conns.is_empty()).then_some(s)
    });
    assert_eq!(snap.conns.len(), 1);
    assert_eq!(snap.conns[0].peer, good.local_addr().unwrap());
    drop(half);
}

#[test]
fn unprivileged_run_on_defaults_still_traps() {
    // `cargo run -- serve` as a normal user: the default control socket and
    // history paths are not writable; serve warns and traps anyway.
    if !support::is_root() || !support::netns::which("setpriv") {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root with setpriv"
        );
        eprintln!("SKIP unprivileged_run_on_defaults_still_traps: needs root and setpriv");
        return;
    }
    let dir = std::env::temp_dir().join(format!("tarpit-unpriv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("tarpit");
    std::fs::copy(bin(), &exe).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&exe)
        .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"]);
    c.env("HOME", &dir).current_dir(&dir);
    let mut p = Proc::spawn(c);
    let warns: Vec<String> = p
        .json()
        .iter()
        .filter(|v| v["level"] == "WARN")
        .filter_map(|v| v["message"].as_str().map(String::from))
        .collect();
    assert!(
        warns.iter().any(|m| m.contains("without history")),
        "{warns:?}"
    );
    // No nftables access: one line says what to check by hand (stale
    // policy rules), and serving goes on.
    let nft_lines: Vec<serde_json::Value> = p
        .json()
        .into_iter()
        .filter(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("policy rules"))
        })
        .collect();
    assert_eq!(nft_lines.len(), 1, "{nft_lines:?}");
    let m = nft_lines[0]["message"].as_str().unwrap();
    assert!(
        m.contains("cannot check nftables")
            && m.contains("nft delete chain inet tarpit policy_out"),
        "{m}"
    );
    let mut s = TcpStream::connect(p.addr()).unwrap();
    assert_eq!(
        read_outcome(&mut s, Duration::from_millis(300)),
        Seen::Nothing
    );
    assert!(p.term(3.0).success());
    assert_eq!(p.records().len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}
