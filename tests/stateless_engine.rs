//! The stateless engine end to end, in namespaces made here: a server
//! namespace with the raw-priority log+drop rules and `tarpit serve
//! --engine stateless`, an attacker namespace with real TCP clients and a
//! raw socket for hand-made segments.

mod support;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};
use support::lab::{Lab, LabConfig};
use support::netns::privileged;
use tarpit::engine::stateless::packet::Segment;
use tarpit::engine::stateless::wire::checksum;
use tarpit::engine::stateless::wire::tcp::{
    self, ACK as TCP_ACK, FIN as TCP_FIN, PSH as TCP_PSH, RST as TCP_RST, SYN as TCP_SYN,
};

/// Opens `n` connections to `dst` from `src` inside the attacker namespace,
/// `threads` at a time, writes `payload` bytes on each, and hands the
/// sockets back (they stay in the attacker namespace).
fn connect_many(
    lab: &Lab,
    src: IpAddr,
    dst: SocketAddr,
    n: usize,
    payload: usize,
) -> Vec<TcpStream> {
    let threads = 20;
    lab.attacker.in_thread(move || {
        let hs: Vec<_> = (0..threads)
            .map(|k| {
                std::thread::spawn(move || {
                    let mut v = Vec::new();
                    for _ in (k..n).step_by(threads) {
                        let s = Socket::new(Domain::for_address(dst), Type::STREAM, None)
                            .expect("socket");
                        s.bind(&SocketAddr::new(src, 0).into()).expect("bind");
                        s.connect_timeout(&dst.into(), Duration::from_secs(10))
                            .expect("handshake with the stateless tarpit");
                        let mut t: TcpStream = s.into();
                        t.set_nonblocking(true).expect("nonblocking");
                        let wrote = t.write(&vec![b'A'; payload]).expect("write");
                        assert_eq!(wrote, payload);
                        v.push(t);
                    }
                    v
                })
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().expect("client thread"))
            .collect()
    })
}

/// `ss` lines for TCP sockets in a namespace whose peer is `peer_ip`.
fn ss_lines(ns: &support::netns::Netns, peer_ip: &str) -> Vec<String> {
    let out = ns.run("ss -tanoH");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(peer_ip))
        .map(str::to_string)
        .collect()
}

/// Unanswered persist probes from an `ss -o` timer field
/// (`timer:(persist,25sec,0)`), if the persist timer is running.
fn persist_probes(line: &str) -> Option<u32> {
    let t = line.split("timer:(persist,").nth(1)?;
    t.split(')').next()?.rsplit(',').next()?.parse().ok()
}

#[test]
fn thousand_connections_are_held_by_the_peer_alone() {
    if !privileged("thousand_connections_are_held_by_the_peer_alone") {
        return;
    }
    // Default settings (a flow cap of a million): memory follows the
    // connections held, not the cap.
    let lab = Lab::new(
        "slk",
        &LabConfig {
            trapped_hosts: vec![2],
            free_hosts: vec![3],
            ..Default::default()
        },
    );
    let rss_before = lab.rss();
    let attacker: IpAddr = lab.v4(2).parse().unwrap();
    let server: SocketAddr = format!("{}:22", lab.v4(1)).parse().unwrap();
    let conns = connect_many(&lab, attacker, server, 1000, 100);
    assert_eq!(conns.len(), 1000);
    // Window zero: every byte stays in the client's send queue.
    for c in &conns {
        assert_eq!(tarpit::sys::outq(c.as_raw_fd()).unwrap(), 100);
    }

    // A connection from an untrapped address to a real listener does reach
    // the server's stack, and conntrack sees it: conntrack is on, so "no
    // entry" below is meaningful.
    let real = lab.server.in_thread({
        let a = format!("{}:0", lab.v4(1));
        move || TcpListener::bind(a).unwrap()
    });
    let real_addr = real.local_addr().unwrap();
    let free: IpAddr = lab.v4(3).parse().unwrap();
    let ok = lab.attacker.in_thread(move || {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.bind(&SocketAddr::new(free, 0).into()).unwrap();
        s.connect_timeout(&real_addr.into(), Duration::from_secs(5))
            .map(|()| TcpStream::from(s))
    });
    let _ok = ok.expect("untrapped address reaches the normal stack");
    let _accepted = real.accept().expect("accepted by the real listener");

    let ct =
        String::from_utf8_lossy(&lab.server.run("conntrack -L 2>/dev/null").stdout).to_string();
    assert!(ct.contains(&lab.v4(3)), "conntrack is active: {ct}");
    assert!(
        !ct.contains(&format!("src={} ", lab.v4(2))),
        "no conntrack entry for trapped peers:\n{ct}"
    );
    assert!(
        ss_lines(&lab.server, &format!("{}:", lab.v4(2))).is_empty(),
        "no server socket"
    );

    let rss_after = lab.rss();
    let grown = rss_after.saturating_sub(rss_before);
    // 56 B per flow; the rest is slack for pages the runtime touches. The
    // fixed-size index this replaced cost 1.5 MB here.
    let budget = 1000 * 256;
    eprintln!("tarpit RSS {rss_before} -> {rss_after} bytes (+{grown}) for 1000 connections (budget {budget})");
    assert!(
        grown < budget,
        "RSS grew by {grown} bytes for 1000 flows, more than {budget}"
    );

    // A minute later they are all still established, data still queued,
    // the persist timer running and its probes answered (an unanswered
    // persist timer would count 6+ probes by now).
    std::thread::sleep(Duration::from_secs(60));
    let lines = ss_lines(&lab.attacker, &format!("{}:22", lab.v4(1)));
    assert_eq!(lines.len(), 1000, "{:?}", &lines[..lines.len().min(5)]);
    for l in &lines {
        let f: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(f[0], "ESTAB", "{l}");
        assert_eq!(f[2], "100", "Send-Q: {l}");
        let probes = persist_probes(l).unwrap_or_else(|| panic!("persist timer: {l}"));
        assert!(probes <= 1, "probes unanswered: {l}");
    }
    for c in &conns {
        assert_eq!(tarpit::sys::outq(c.as_raw_fd()).unwrap(), 100);
    }
    assert!(ss_lines(&lab.server, &format!("{}:", lab.v4(2))).is_empty());
    let ct =
        String::from_utf8_lossy(&lab.server.run("conntrack -L 2>/dev/null").stdout).to_string();
    assert!(!ct.contains(&format!("src={} ", lab.v4(2))), "{ct}");
    drop(conns);
}

/// A raw TCP socket in the attacker namespace for hand-made segments.
struct Raw {
    sock: Socket,
    src: IpAddr,
    dst: IpAddr,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Answer {
    to_port: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    window: u16,
    header_len: usize,
    mss: Option<u16>,
}

impl Raw {
    fn open(lab: &Lab, src: IpAddr, dst: IpAddr) -> Raw {
        let sock = lab.attacker.in_thread(move || {
            let d = if src.is_ipv4() {
                Domain::IPV4
            } else {
                Domain::IPV6
            };
            let s = Socket::new(d, Type::RAW, Some(Protocol::TCP)).expect("raw socket");
            if src.is_ipv4() {
                s.set_header_included_v4(true).expect("IP_HDRINCL");
            }
            s.bind(&SocketAddr::new(src, 0).into()).expect("bind raw");
            s
        });
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Raw { sock, src, dst }
    }

    /// A segment from `sport` to port 22, optionally mangled before sending.
    fn send(
        &self,
        sport: u16,
        flags: u8,
        seq: u32,
        ack: u32,
        data: &[u8],
        mangle: impl FnOnce(&mut Vec<u8>),
    ) {
        let mut b = vec![0u8; 2000];
        let n = Segment {
            src: self.src,
            dst: self.dst,
            tcp: tcp::Repr {
                src_port: sport,
                dst_port: 22,
                seq_number: seq,
                ack_number: ack,
                flags,
                window_len: 64240,
                max_seg_size: (flags & TCP_SYN != 0).then_some(1460),
                payload: data,
            },
            payload_len: data.len(),
        }
        .emit(&mut b)
        .unwrap();
        b.truncate(n);
        mangle(&mut b);
        let wire: &[u8] = if self.src.is_ipv4() { &b } else { &b[40..] };
        self.sock
            .send_to(wire, &SockAddr::from(SocketAddr::new(self.dst, 0)))
            .expect("send raw");
    }

    /// The next segment from the server's port 22, within `wait`.
    fn answer(&self, wait: Duration) -> Option<Answer> {
        let t = Instant::now();
        let mut buf = [0u8; 2048];
        while t.elapsed() < wait {
            let Ok(n) = (&self.sock).read(&mut buf) else {
                continue;
            };
            let bytes = &buf[..n];
            // IPv4 raw sockets deliver the IP header, IPv6 ones do not (only
            // the server talks to this namespace).
            let tcp_bytes = if self.src.is_ipv4() {
                match Segment::parse(bytes) {
                    Ok(s) if s.src == self.dst && s.dst == self.src => &bytes[20..],
                    _ => continue,
                }
            } else {
                bytes
            };
            let Ok(h) = tcp::Packet::new_checked(tcp_bytes) else {
                continue;
            };
            if h.src_port() != 22 {
                continue;
            }
            return Some(Answer {
                to_port: h.dst_port(),
                flags: h.flags(),
                seq: h.seq_number(),
                ack: h.ack_number(),
                window: h.window_len(),
                header_len: h.header_len(),
                mss: h.mss(),
            });
        }
        None
    }

    /// Handshake from `sport`: returns our ISN and the tarpit's ISS + 1.
    fn handshake(&self, sport: u16, isn: u32) -> u32 {
        self.send(sport, TCP_SYN, isn, 0, b"", |_| {});
        let a = self.answer(Duration::from_secs(3)).expect("SYN/ACK");
        assert_eq!(a.flags, TCP_SYN | TCP_ACK, "{a:?}");
        assert_eq!(a.ack, isn.wrapping_add(1));
        a.seq.wrapping_add(1)
    }
}

/// Runs the whole protocol check for one family.
fn protocol_checks(lab: &Lab, v6: bool) {
    let (src, dst): (IpAddr, IpAddr) = if v6 {
        (lab.v6(2).parse().unwrap(), lab.v6(1).parse().unwrap())
    } else {
        (lab.v4(2).parse().unwrap(), lab.v4(1).parse().unwrap())
    };
    let raw = Raw::open(lab, src, dst);
    let quiet = Duration::from_millis(300);

    // SYN -> SYN/ACK, window 0, MSS option only (24-byte header).
    let isn = 0xfffffff0u32;
    raw.send(41000, TCP_SYN, isn, 0, b"", |_| {});
    let a = raw.answer(Duration::from_secs(3)).expect("SYN/ACK");
    assert_eq!(
        (a.to_port, a.flags, a.ack, a.window),
        (41000, TCP_SYN | TCP_ACK, isn.wrapping_add(1), 0)
    );
    assert_eq!(a.header_len, 24);
    assert!(a.mss.is_some());
    let our = a.seq.wrapping_add(1);
    let next = isn.wrapping_add(1);

    // Handshake ACK, data, a Linux probe (seq - 1), a BSD probe (1 byte):
    // each gets a zero-window ACK acknowledging none of the data.
    for (seq, data) in [
        (next, &b""[..]),
        (next, b"GET / HTTP/1.0\r\n"),
        (isn, b""),
        (next, b"x"),
    ] {
        raw.send(41000, TCP_ACK | TCP_PSH, seq, our, data, |_| {});
        let a = raw.answer(Duration::from_secs(3)).expect("ACK");
        assert_eq!(
            (a.to_port, a.flags, a.seq, a.ack, a.window),
            (41000, TCP_ACK, our, next, 0),
            "{a:?}"
        );
    }

    // A marker connection: the first answer after an unanswered segment
    // must be the marker's.
    let mnext = 5001u32;
    let mour = raw.handshake(42000, 5000);
    let expect_silence = |what: &str| {
        raw.send(42000, TCP_ACK, mnext, mour, b"", |_| {});
        let a = raw.answer(Duration::from_secs(3)).expect("marker answer");
        assert_eq!(a.to_port, 42000, "{what} was answered: {a:?}");
    };

    raw.send(41000, TCP_ACK, next.wrapping_add(7), our, b"", |_| {});
    expect_silence("an ACK with a wrong sequence number");
    raw.send(41000, TCP_ACK, next, our.wrapping_add(1), b"", |_| {});
    expect_silence("an ACK with a wrong acknowledgement number");
    raw.send(41999, TCP_ACK, next, our, b"", |_| {});
    expect_silence("an ACK from another port");
    raw.send(41000, TCP_FIN | TCP_ACK, next, our, b"", |_| {});
    expect_silence("a FIN");
    raw.send(41000, TCP_RST | TCP_ACK, next, our, b"", |_| {});
    expect_silence("an RST");
    let tcp_csum = if v6 { 40 + 16 } else { 20 + 16 };
    raw.send(41000, TCP_ACK, next, our, b"", |p| p[tcp_csum] ^= 0x5a);
    expect_silence("a segment with a bad checksum");
    raw.send(41000, TCP_SYN, 7, 0, b"", |p| p[tcp_csum + 1] ^= 0x01);
    expect_silence("a SYN with a bad checksum");
    if !v6 {
        raw.send(41000, TCP_SYN, 7, 0, b"", |p| {
            p[6] |= 0x20; // more fragments
            fix_ip_checksum(p);
        });
        expect_silence("a fragment");
        raw.send(41000, TCP_SYN, 7, 0, b"", |p| {
            p.splice(20..20, [1u8, 1, 1, 0]); // NOP NOP NOP EOL
            p[0] = 0x46;
            let len = p.len() as u16;
            p[2..4].copy_from_slice(&len.to_be_bytes());
            fix_ip_checksum(p);
        });
        expect_silence("a SYN with IP options");
    }
    // Still answered after all that (nothing was remembered).
    raw.send(41000, TCP_ACK, isn, our, b"", |_| {});
    assert_eq!(
        raw.answer(Duration::from_secs(3)).map(|a| a.to_port),
        Some(41000)
    );
    assert!(raw.answer(quiet).is_none(), "nothing else arrives");
}

fn fix_ip_checksum(p: &mut [u8]) {
    let ihl = usize::from(p[0] & 0x0f) * 4;
    p[10] = 0;
    p[11] = 0;
    let c = checksum::compute(0, &p[..ihl]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
}

#[test]
fn crafted_segments_get_exactly_the_right_answers() {
    if !privileged("crafted_segments_get_exactly_the_right_answers") {
        return;
    }
    let mut lab = Lab::new("slp", &LabConfig::default());
    protocol_checks(&lab, false);
    protocol_checks(&lab, true);
    let log = lab.stop();
    // The RSTs ended their records; the engine reported its refusals.
    assert!(log.contains("\"end\":\"peer_reset\""), "{log}");
    assert!(log.contains("\"peer_tried_close\":true"), "{log}");
}

#[test]
fn key_rotation_keeps_current_connections_and_retires_old_ones() {
    if !privileged("key_rotation_keeps_current_connections_and_retires_old_ones") {
        return;
    }
    let mut lab = Lab::new(
        "slr",
        &LabConfig {
            trapped_hosts: vec![2, 4],
            ..Default::default()
        },
    );
    let src: IpAddr = lab.v4(2).parse().unwrap();
    let dst: IpAddr = lab.v4(1).parse().unwrap();
    let raw = Raw::open(&lab, src, dst);
    // Real clients too (from another address, so the raw socket does not
    // see their traffic): they must stay answered across one rotation.
    let server: SocketAddr = format!("{}:22", lab.v4(1)).parse().unwrap();
    let clients: IpAddr = lab.v4(4).parse().unwrap();
    let conns = connect_many(&lab, clients, server, 20, 10);

    let old = raw.handshake(43000, 100);
    raw.send(43000, TCP_ACK, 101, old, b"", |_| {});
    assert!(raw.answer(Duration::from_secs(3)).is_some());

    lab.signal("USR1");
    lab.wait_log("\"generation\":1", Duration::from_secs(10));
    // Made under the previous key: still answered.
    raw.send(43000, TCP_ACK, 100, old, b"", |_| {});
    assert_eq!(
        raw.answer(Duration::from_secs(3)).map(|a| a.to_port),
        Some(43000)
    );
    let young = raw.handshake(44000, 200);
    raw.send(44000, TCP_ACK, 201, young, b"", |_| {});
    assert_eq!(
        raw.answer(Duration::from_secs(3)).map(|a| a.to_port),
        Some(44000)
    );

    // The real clients' persist probes keep being answered.
    std::thread::sleep(Duration::from_secs(4));
    let lines = ss_lines(&lab.attacker, &format!("{}:22", lab.v4(1)));
    assert_eq!(lines.len(), 20, "{lines:?}");
    for l in &lines {
        assert!(l.starts_with("ESTAB"), "{l}");
        assert!(persist_probes(l).is_some_and(|p| p <= 1), "{l}");
    }

    lab.signal("USR1");
    lab.wait_log("\"generation\":2", Duration::from_secs(10));
    // Two rotations later the first key is gone: no answer; the younger
    // connection is still answered.
    raw.send(43000, TCP_ACK, 100, old, b"", |_| {});
    raw.send(44000, TCP_ACK, 200, young, b"", |_| {});
    assert_eq!(
        raw.answer(Duration::from_secs(3)).map(|a| a.to_port),
        Some(44000)
    );
    assert!(raw.answer(Duration::from_millis(300)).is_none());
    let log = lab.stop();
    assert!(
        log.contains("\"end\":\"lifetime\""),
        "retired flows are reported: {log}"
    );
    drop(conns);
}

#[test]
fn decoy_ports_are_trapped_and_other_ports_reach_the_stack_over_ipv6_too() {
    if !privileged("decoy_ports_are_trapped_and_other_ports_reach_the_stack_over_ipv6_too") {
        return;
    }
    let lab = Lab::new(
        "sld",
        &LabConfig {
            trapped_hosts: vec![],
            free_hosts: vec![3],
            decoy_ports: vec![2323],
            ..Default::default()
        },
    );
    for v6 in [false, true] {
        let (src, srv): (IpAddr, IpAddr) = if v6 {
            (lab.v6(3).parse().unwrap(), lab.v6(1).parse().unwrap())
        } else {
            (lab.v4(3).parse().unwrap(), lab.v4(1).parse().unwrap())
        };
        let decoy = SocketAddr::new(srv, 2323);
        let conns = connect_many(&lab, src, decoy, 50, 64);
        for c in &conns {
            assert_eq!(tarpit::sys::outq(c.as_raw_fd()).unwrap(), 64);
        }
        // Another port: the server's own stack answers (here: refuses).
        let real = lab
            .server
            .in_thread(move || TcpListener::bind(SocketAddr::new(srv, 0)).unwrap());
        let port = real.local_addr().unwrap().port();
        let ok = lab.attacker.in_thread(move || {
            TcpStream::connect_timeout(&SocketAddr::new(srv, port), Duration::from_secs(5))
        });
        assert!(ok.is_ok(), "untrapped port reaches the stack");
        let closed = lab.attacker.in_thread(move || {
            TcpStream::connect_timeout(&SocketAddr::new(srv, 1), Duration::from_secs(5))
        });
        assert_eq!(
            closed.map(|_| ()).unwrap_err().kind(),
            std::io::ErrorKind::ConnectionRefused,
            "a closed, untrapped port is refused by the kernel"
        );
        let ss = ss_lines(&lab.server, ":2323");
        assert!(ss.is_empty(), "no server socket on the decoy port: {ss:?}");
    }
}

#[test]
fn the_watchers_firewall_in_stateless_mode_traps_banned_hosts() {
    if !privileged("the_watchers_firewall_in_stateless_mode_traps_banned_hosts") {
        return;
    }
    use tarpit::firewall::{Ban, Firewall, NftConfig, Target, TrapMode};
    let lab = Lab::new(
        "slw",
        &LabConfig {
            trapped_hosts: vec![],
            free_hosts: vec![2],
            rules: false,
            ..Default::default()
        },
    );
    let cfg = NftConfig {
        netns: Some(lab.server.name.clone()),
        mode: TrapMode::Stateless {
            group: support::lab::GROUP,
        },
        ..NftConfig::default()
    };
    let fw = Firewall::new(cfg.clone());
    fw.ensure().expect("ensure in stateless mode");
    assert!(fw.intact().unwrap());
    let src: IpAddr = lab.v4(2).parse().unwrap();
    let src6: IpAddr = lab.v6(2).parse().unwrap();
    fw.ban(&[
        Ban {
            target: Target::from_ip(src, 64),
            timeout: Duration::from_secs(600),
        },
        Ban {
            target: Target::from_ip(src6, 64),
            timeout: Duration::from_secs(600),
        },
    ])
    .expect("ban");
    for (from, to) in [(src, lab.v4(1)), (src6, lab.v6(1))] {
        let server = SocketAddr::new(to.parse().unwrap(), 22);
        let conns = connect_many(&lab, from, server, 5, 30);
        for c in &conns {
            assert_eq!(tarpit::sys::outq(c.as_raw_fd()).unwrap(), 30);
        }
    }

    // Back to the socket engine: the log+drop chain goes, the redirect
    // comes; nothing listens on 2222 here, so the kernel refuses.
    let fw = Firewall::new(NftConfig {
        mode: TrapMode::Redirect,
        ..cfg
    });
    assert!(
        !fw.intact().unwrap(),
        "a stateless table is not a redirect table"
    );
    fw.ensure().expect("ensure in redirect mode");
    assert!(fw.intact().unwrap());
    let rules =
        String::from_utf8_lossy(&lab.server.run("nft list table inet tarpit").stdout).to_string();
    assert!(!rules.contains("log group"), "{rules}");
    assert!(rules.contains("10.77."), "bans survive the switch: {rules}");
    let server = SocketAddr::new(lab.v4(1).parse().unwrap(), 22);
    let refused = lab.attacker.in_thread(move || {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.bind(&SocketAddr::new(src, 0).into()).unwrap();
        s.connect_timeout(&server.into(), Duration::from_secs(5))
            .map_err(|e| e.kind())
    });
    assert_eq!(refused, Err(std::io::ErrorKind::ConnectionRefused));
}

#[test]
fn stats_and_history_see_stateless_connections() {
    if !privileged("stats_and_history_see_stateless_connections") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("tp-sls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("control.sock");
    let db = dir.join("history.db");
    let mut lab = Lab::new(
        "sls",
        &LabConfig {
            extra_args: vec![
                "--control".into(),
                sock.display().to_string(),
                "--history".into(),
                db.display().to_string(),
                // Both sockets and the history are opened as root; then the
                // drop, before any thread starts (issue 12 item 9).
                "--user".into(),
                "nobody".into(),
                "--group".into(),
                "nogroup".into(),
            ],
            ..Default::default()
        },
    );
    let pid = lab.tarpit.as_ref().expect("tarpit").id();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(t.unwrap().path().join("status")).unwrap();
        let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert!(
            uid.split_whitespace().skip(1).all(|u| u == "65534"),
            "{uid}"
        );
    }
    let src: IpAddr = lab.v4(2).parse().unwrap();
    let server: SocketAddr = format!("{}:22", lab.v4(1)).parse().unwrap();
    let conns = connect_many(&lab, src, server, 3, 10);
    // The flow appears at the handshake ACK; give the engine a moment.
    std::thread::sleep(Duration::from_millis(300));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tarpit"))
        .args(["stats", "--json", "--control"])
        .arg(&sock)
        .output()
        .expect("tarpit stats");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stats JSON");
    let live = v["conns"].as_array().expect("conns");
    assert_eq!(live.len(), 3, "{v}");
    assert!(
        live.iter()
            .all(|c| c["listener"] == "nflog:7" && c["state"] == "ESTABLISHED"),
        "{v}"
    );
    assert_eq!(v["totals"]["held_now"], 3, "{v}");
    assert_eq!(v["totals"]["trapped"], 3, "{v}");
    drop(conns);
    let log = lab.stop();
    assert_eq!(log.matches("\"end\":\"shutdown\"").count(), 3, "{log}");
    // The history got one row per connection: `tarpit report` counts them.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tarpit"))
        .args(["report", "--json", "--since", "1d", "--history"])
        .arg(&db)
        .output()
        .expect("tarpit report");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report JSON");
    assert_eq!(r["totals"]["connections"], 3, "{r}");
    assert_eq!(r["ports"][0]["port"], 22, "{r}");
    assert_eq!(r["end_reasons"][0]["reason"], "shutdown", "{r}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_key_file_keeps_connections_answered_across_restarts() {
    if !privileged("a_key_file_keeps_connections_answered_across_restarts") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("tp-slk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("cookie.key");
    let _ = std::fs::remove_file(&key);
    let with_key = vec!["--key-file".to_string(), key.display().to_string()];
    let mut lab = Lab::new(
        "slk",
        &LabConfig {
            extra_args: with_key.clone(),
            ..Default::default()
        },
    );
    let src: IpAddr = lab.v4(2).parse().unwrap();
    let dst: IpAddr = lab.v4(1).parse().unwrap();
    let raw = Raw::open(&lab, src, dst);
    let our = raw.handshake(45000, 700);
    lab.stop();
    lab.start_tarpit(&with_key);
    raw.send(45000, TCP_ACK, 700, our, b"", |_| {});
    let a = raw
        .answer(Duration::from_secs(3))
        .expect("answered after a restart with the key file");
    assert_eq!((a.to_port, a.seq, a.ack), (45000, our, 701));
    // Without the file a restart draws a new key: the old connection is no
    // longer answered.
    lab.stop();
    lab.start_tarpit(&[]);
    raw.send(45000, TCP_ACK, 700, our, b"", |_| {});
    assert!(raw.answer(Duration::from_millis(500)).is_none());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The tarpit's packet counters, from its control socket's snapshot.
fn counters(sock: &std::path::Path) -> serde_json::Value {
    let mut req = tarpit::control::Request::new("snapshot");
    req.args.insert("limit".into(), 0.into());
    let v = tarpit::control::request(sock, &req, Duration::from_secs(10)).expect("snapshot");
    v["counters"].clone()
}

#[test]
fn a_syn_flood_does_not_stop_held_connections_being_answered() {
    if !privileged("a_syn_flood_does_not_stop_held_connections_being_answered") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("tp-slf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("control.sock");
    // .2: hand-made held connections that probe; .3: the flood; .4: real
    // clients with data stuck in their send queues.
    let mut lab = Lab::new(
        "slf",
        &LabConfig {
            trapped_hosts: vec![2, 3, 4],
            extra_args: vec!["--control".into(), sock.display().to_string()],
            ..Default::default()
        },
    );
    let (held_src, flood_src, client_src): (IpAddr, IpAddr, IpAddr) = (
        lab.v4(2).parse().unwrap(),
        lab.v4(3).parse().unwrap(),
        lab.v4(4).parse().unwrap(),
    );
    let dst: IpAddr = lab.v4(1).parse().unwrap();
    let server = SocketAddr::new(dst, 22);
    let conns = connect_many(&lab, client_src, server, 50, 100);
    let raw = Raw::open(&lab, held_src, dst);
    let held: Vec<(u16, u32, u32)> = (0..20u16)
        .map(|k| {
            let isn = 5000 + u32::from(k) * 1000;
            (46000 + k, isn, raw.handshake(46000 + k, isn))
        })
        .collect();
    for &(port, isn, our) in &held {
        raw.send(port, TCP_ACK, isn + 1, our, b"", |_| {});
    }
    while raw.answer(Duration::from_millis(200)).is_some() {}
    // The flood's SYN/ACKs die in the attacker's prerouting (no RSTs back,
    // no load on the attacker's stack beyond the wire).
    lab.attacker.run(&format!(
        "nft 'add table inet flood; add chain inet flood pre {{ type filter hook prerouting priority raw; }}; add rule inet flood pre ip daddr {flood_src} tcp sport 22 drop'"
    ));

    // The flood: SYNs from 30,000 ports of .3, as fast as one raw socket
    // sends them, until the probes are done (30 s and 20 M packets at most).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent_so_far = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let flood = {
        let stop = stop.clone();
        let sent_so_far = sent_so_far.clone();
        let path = format!("/run/netns/{}", lab.attacker.name);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("netns");
            tarpit::sys::enter_netns(&ns).expect("setns");
            let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::TCP)).expect("raw");
            s.set_header_included_v4(true).expect("IP_HDRINCL");
            let to = SockAddr::from(SocketAddr::new(dst, 0));
            let syns: Vec<Vec<u8>> = (0..30_000u32)
                .map(|k| {
                    let mut b = vec![0u8; 128];
                    let n = Segment {
                        src: flood_src,
                        dst,
                        tcp: tcp::Repr {
                            src_port: 20000 + k as u16,
                            dst_port: 22,
                            seq_number: k.wrapping_mul(2_654_435_761),
                            ack_number: 0,
                            flags: TCP_SYN,
                            window_len: 64240,
                            max_seg_size: Some(1460),
                            payload: b"",
                        },
                        payload_len: 0,
                    }
                    .emit(&mut b)
                    .unwrap();
                    b.truncate(n);
                    b
                })
                .collect();
            let t = Instant::now();
            let mut sent = 0u64;
            'flood: while t.elapsed() < Duration::from_secs(30) && sent < 20_000_000 {
                for p in &syns {
                    if s.send_to(p, &to).is_ok() {
                        sent += 1;
                    }
                    if sent % 1024 == 0 {
                        sent_so_far.store(sent, std::sync::atomic::Ordering::Relaxed);
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            break 'flood;
                        }
                    }
                }
            }
            (sent, t.elapsed())
        })
    };

    // Meanwhile every held connection probes every 100 ms. Phase 0: the
    // flood alone (2 s); the tarpit is then stopped (SIGSTOP, as
    // a stall would) until the kernel has overrun its log socket; phase 1: the
    // flood goes on and the tarpit catches up (2 s).
    let probe_for = |d: Duration| -> std::collections::HashSet<u16> {
        let mut answered = std::collections::HashSet::new();
        let t = Instant::now();
        while t.elapsed() < d {
            for &(port, isn, our) in &held {
                raw.send(port, TCP_ACK, isn, our, b"", |_| {});
            }
            let t2 = Instant::now();
            while t2.elapsed() < Duration::from_millis(100) {
                if let Some(a) = raw.answer(Duration::from_millis(20)) {
                    if a.flags == TCP_ACK && a.window == 0 {
                        answered.insert(a.to_port);
                    }
                }
            }
        }
        answered
    };
    std::thread::sleep(Duration::from_millis(300));
    let before = probe_for(Duration::from_secs(2));
    // Stopped until the flood has sent more than the engine's 8 MiB log
    // socket can queue (~100 B per SYN in nflog batches), however fast this
    // machine floods: the overrun is then certain, not a matter of load.
    lab.signal("STOP");
    let at_stop = sent_so_far.load(std::sync::atomic::Ordering::Relaxed);
    let t_stop = Instant::now();
    while sent_so_far.load(std::sync::atomic::Ordering::Relaxed) < at_stop + 200_000
        && t_stop.elapsed() < Duration::from_secs(15)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    lab.signal("CONT");
    let after = probe_for(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, took) = flood.join().expect("flood thread");
    eprintln!(
        "flood: {sent} SYNs in {:.1}s ({:.0}/s)",
        took.as_secs_f64(),
        sent as f64 / took.as_secs_f64()
    );
    assert!(sent > 50_000, "the flood ran: {sent} SYNs");
    let ports: std::collections::HashSet<u16> = held.iter().map(|h| h.0).collect();
    assert_eq!(
        before, ports,
        "every held connection answered during the flood"
    );
    assert_eq!(
        after, ports,
        "and still answered after the stall, flood going on"
    );

    let c = counters(&sock);
    eprintln!("counters: {c}");
    assert!(
        c["syn_acks"].as_u64().unwrap_or(0) > sent / 4,
        "the flood was answered: {c}"
    );
    assert!(
        c["overruns"].as_u64().unwrap_or(0) >= 1,
        "the stall is counted: {c}"
    );
    // Said, but not once per lost batch: at most once a second.
    let lines = lab.count_log("log socket overrun");
    assert!(
        (1..=4).contains(&lines),
        "{lines} overrun lines:\n{}",
        lab.log_text()
    );

    // The real clients never noticed: established, data still queued.
    let lines = ss_lines(&lab.attacker, &format!("{}:22", lab.v4(1)));
    let estab: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(&format!("{client_src}:")))
        .collect();
    assert_eq!(estab.len(), 50, "{lines:?}");
    for l in estab {
        let f: Vec<&str> = l.split_whitespace().collect();
        assert_eq!((f[0], f[2]), ("ESTAB", "100"), "{l}");
    }
    drop(conns);
    lab.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn clients_with_partial_checksums_are_held_too() {
    if !privileged("clients_with_partial_checksums_are_held_too") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("tp-slc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("control.sock");
    // veth's default: checksums left to "hardware" that never computes them,
    // as from a container on this host.
    let mut lab = Lab::new(
        "slc",
        &LabConfig {
            extra_args: vec!["--control".into(), sock.display().to_string()],
            checksum_offload: true,
            ..Default::default()
        },
    );
    let src: IpAddr = lab.v4(2).parse().unwrap();
    let server: SocketAddr = format!("{}:22", lab.v4(1)).parse().unwrap();
    let conns = connect_many(&lab, src, server, 5, 100);
    for c in &conns {
        assert_eq!(tarpit::sys::outq(c.as_raw_fd()).unwrap(), 100);
    }
    std::thread::sleep(Duration::from_millis(300));
    let c = counters(&sock);
    assert!(
        c["partial_checksums"].as_u64().unwrap_or(0) >= 5,
        "the handshake ACKs came with partial checksums: {c}"
    );
    assert_eq!(c["rejected"].get("bad_checksum"), None, "{c}");
    assert!(c["flows"].as_u64().unwrap_or(0) >= 5, "{c}");
    drop(conns);
    lab.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
