//! Engaged versus held: every figure counts only the time the attacker's
//! program was really stuck (until its FIN or RST, or, when its data was
//! stuck and no FIN could arrive, until the last packet seen from it,
//! flagged), next to the time we held the socket. After a FIN the next
//! keepalive probe is rescheduled to `--fin-wait`.

mod support;

use rusqlite::Connection;
use socket2::SockRef;
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};
use support::netns::{privileged, veth, Netns};
use support::stats::*;
use support::{bin, poll};

/// A server and a client namespace joined by a veth pair, and their
/// addresses (10.77.N.1 and .2; the pair is the test's own, so tests
/// running at once do not share it).
struct Lab {
    srv: Netns,
    cli: Netns,
    sa: String,
    ca: String,
}

fn lab(tag: &str) -> Lab {
    let srv = Netns::new(&format!("{tag}s"));
    let cli = Netns::new(&format!("{tag}c"));
    let n = std::process::id() % 200 + 20;
    let (sa, ca) = (format!("10.77.{n}.1"), format!("10.77.{n}.2"));
    veth(&srv, &format!("{sa}/24"), &cli, &format!("{ca}/24"));
    Lab { srv, cli, sa, ca }
}

/// `tarpit serve` in `ns` on `listen`, JSON log, no control socket, no
/// history, and `extra`.
fn serve(ns: &Netns, listen: &str, extra: &[&str]) -> support::serve::Proc {
    let mut cmd = ns.command(bin());
    cmd.args([
        "--log-format",
        "json",
        "serve",
        "--listen",
        listen,
        "--control",
        "off",
        "--history",
        "off",
    ]);
    cmd.args(extra);
    support::serve::Proc::spawn(cmd)
}

fn scrape(addr: SocketAddr) -> Vec<Sample> {
    let (status, _, body) = http_get(addr, "/metrics").expect("scrape");
    assert!(status.contains("200"), "{status}");
    parse_exposition(&body)
}

/// (peer port, engaged, bound, held, fin_after, end)
type Row = (u16, f64, bool, f64, Option<f64>, String);

fn rows(db: &std::path::Path) -> Vec<Row> {
    let c = Connection::open(db).unwrap();
    let mut st = c
        .prepare(
            "SELECT peer_port, engaged_secs, engaged_bound, held_secs, fin_after_secs, end_reason
             FROM connections ORDER BY id",
        )
        .unwrap();
    st.query_map([], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
        ))
    })
    .unwrap()
    .map(|r| r.unwrap())
    .collect()
}

/// Clients that give up (FIN) after 3 s and 7 s, one that resets after
/// 5 s, one that stays: engaged ends at the FIN or RST (within 0.5 s), the
/// keepalive after a FIN is `--fin-wait`, and the metrics, the report and
/// the live totals add up to the rows.
#[test]
fn engaged_ends_at_fin_or_rst_and_every_sum_matches_the_rows() {
    let dir = TempDir::new("engaged");
    let db = dir.path().join("history.db");
    let mport = free_port();
    let maddr = SocketAddr::from(([127, 0, 0, 1], mport));
    let mut srv = Serve::start(
        dir.path(),
        &[
            "--history",
            db.to_str().unwrap(),
            "--metrics",
            &maddr.to_string(),
            "--keepalive-min",
            "300s",
            "--keepalive-max",
            "300s",
            "--fin-wait",
            "77s",
        ],
    );
    let t0 = Instant::now();
    let c3 = TcpStream::connect(srv.addr()).unwrap();
    let r5 = TcpStream::connect(srv.addr()).unwrap();
    let c7 = TcpStream::connect(srv.addr()).unwrap();
    let stay = TcpStream::connect(srv.addr()).unwrap();
    let port = |s: &TcpStream| s.local_addr().unwrap().port();
    let (p3, p5, p7, pstay) = (port(&c3), port(&r5), port(&c7), port(&stay));
    let sleep_until = |secs: f64| {
        let at = t0 + Duration::from_secs_f64(secs);
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        t0.elapsed().as_secs_f64()
    };
    let gave_up3 = sleep_until(3.0);
    c3.shutdown(Shutdown::Write).unwrap();
    let gave_up5 = sleep_until(5.0);
    reset(r5);
    let gave_up7 = sleep_until(7.0);
    c7.shutdown(Shutdown::Write).unwrap();

    // The FIN rescheduled the keepalive; the live row counts engaged to it.
    let snap = poll(Duration::from_secs(10), || {
        let s = srv.snapshot();
        let fins = s["conns"]
            .as_array()?
            .iter()
            .filter(|c| c["fin_after_secs"].is_number())
            .count();
        (fins == 2).then_some(s)
    })
    .expect("both FINs seen");
    for c in snap["conns"].as_array().unwrap() {
        let peer: SocketAddr = c["peer"].as_str().unwrap().parse().unwrap();
        let held = c["held_secs"].as_f64().unwrap();
        let engaged = c["engaged_secs"].as_f64().unwrap();
        if peer.port() == pstay {
            assert_eq!(engaged, held, "still engaged: {c}");
            assert_eq!(c["keepalive_idle_secs"], 300, "{c}");
        } else {
            assert_eq!(Some(engaged), c["fin_after_secs"].as_f64(), "{c}");
            assert!(engaged <= held);
            assert_eq!(c["keepalive_idle_secs"], 77, "probe after the FIN: {c}");
        }
    }
    let totals = &snap["totals"];
    let live: f64 = snap["conns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["engaged_secs"].as_f64().unwrap())
        .sum();
    assert!((totals["live_engaged_secs"].as_f64().unwrap() - live).abs() < 1e-6);

    // The two that sent FIN now reset too (their program is long gone).
    reset(c3);
    reset(c7);
    poll(Duration::from_secs(10), || {
        (srv.snapshot()["totals"]["held_now"] == 1).then_some(())
    })
    .expect("three ended");
    let ended = poll(Duration::from_secs(10), || {
        let r = rows(&db);
        (r.len() == 3).then_some(r)
    })
    .expect("three rows written");
    let by = |rows: &[Row], p: u16| rows.iter().find(|r| r.0 == p).unwrap().clone();
    for (p, gave_up) in [(p3, gave_up3), (p5, gave_up5), (p7, gave_up7)] {
        let r = by(&ended, p);
        assert_eq!(r.5, "peer_reset");
        assert!(!r.2, "exact, not a bound: {r:?}");
        assert!(
            (r.1 - gave_up).abs() <= 0.5,
            "engaged {} for a client that gave up at {gave_up:.2}: {r:?}",
            r.1
        );
        assert!(r.3 >= r.1);
    }
    let r3 = by(&ended, p3);
    assert!(r3.3 > r3.1 + 3.0, "held on after the FIN: {ended:?}");

    // Metrics and the report add up to the rows.
    let s = scrape(maddr);
    let sum_engaged: f64 = ended.iter().map(|r| r.1).sum();
    let sum_held: f64 = ended.iter().map(|r| r.3).sum();
    let wasted = metric(&s, "tarpit_attacker_time_wasted_seconds_total", &[]);
    assert!(
        (wasted - sum_engaged).abs() < 1e-6,
        "{wasted} vs {sum_engaged}"
    );
    let held = metric(&s, "tarpit_held_time_seconds_total", &[]);
    assert!((held - sum_held).abs() < 1e-6, "{held} vs {sum_held}");
    assert!((metric(&s, "tarpit_engaged_duration_seconds_sum", &[]) - sum_engaged).abs() < 1e-6);
    assert!((metric(&s, "tarpit_hold_duration_seconds_sum", &[]) - sum_held).abs() < 1e-6);
    let snap = srv.snapshot();
    assert!((snap["totals"]["engaged_secs"].as_f64().unwrap() - sum_engaged).abs() < 1e-6);
    assert!((snap["totals"]["held_secs"].as_f64().unwrap() - sum_held).abs() < 1e-6);

    drop(stay);
    assert!(srv.stop().success());
    let all = rows(&db);
    let s = by(&all, pstay);
    assert_eq!(s.5, "shutdown");
    assert_eq!(s.1, s.3, "we ended it: engaged all along");
    let o = Command::new(bin())
        .args(["report", "--since", "1d", "--json", "--history"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let e: f64 = all.iter().map(|r| r.1).sum();
    let h: f64 = all.iter().map(|r| r.3).sum();
    let t = &r["totals"];
    assert!((t["attacker_hours"].as_f64().unwrap() * 3600.0 - e).abs() < 1e-6);
    assert!((t["held_hours"].as_f64().unwrap() * 3600.0 - h).abs() < 1e-6);
    assert_eq!(t["attacker_hours_upper_bound"], 0.0);
    // The stop line says both.
    let stop = srv
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "stopped")
        .expect("stop line");
    assert!((stop["attacker_secs"].as_f64().unwrap() - e).abs() < 1e-6);
    assert!((stop["held_secs"].as_f64().unwrap() - h).abs() < 1e-6);
}

/// A client whose data is stuck behind our window exits (its FIN queues
/// behind the data and never arrives), then its host vanishes: engaged
/// ends at the last packet seen from it, no later than its exit + 130 s,
/// and is flagged as an upper bound.
#[test]
fn data_stuck_client_that_vanishes_is_engaged_until_its_last_packet_flagged() {
    if !privileged("data_stuck_client_that_vanishes") {
        return;
    }
    let Lab {
        srv: srv_ns,
        cli: cli_ns,
        sa,
        ..
    } = lab("eng");
    let listen = format!("{sa}:2222");
    let srv = serve(
        &srv_ns,
        &listen,
        &[
            "--keepalive-min",
            "2s",
            "--keepalive-max",
            "2s",
            "--keepalive-count",
            "2",
        ],
    );
    let dst: SocketAddr = listen.parse().unwrap();
    let exit_after = cli_ns.in_thread(move || {
        let t0 = Instant::now();
        let mut s = TcpStream::connect_timeout(&dst, Duration::from_secs(5)).unwrap();
        s.set_nonblocking(true).unwrap();
        let chunk = [b'x'; 4096];
        let mut sent = 0;
        while sent < 256 * 1024 {
            match s.write(&chunk) {
                Ok(k) => sent += k,
                Err(_) => break, // window closed: the rest is stuck
            }
        }
        std::thread::sleep(Duration::from_secs(2));
        assert!(SockRef::from(&s).linger().unwrap().is_none());
        drop(s); // the program exits: the FIN queues behind the stuck data
        t0.elapsed().as_secs_f64()
    });
    // A second later the attacker's host is gone: no RST, no answer.
    std::thread::sleep(Duration::from_secs(1));
    cli_ns.run("ip link del $(ip -o link show type veth | cut -d: -f2 | cut -d@ -f1)");
    let recs = srv.wait_records(1, 60.0);
    let r = &recs[0];
    let engaged = r["engaged_secs"].as_f64().unwrap();
    let held = r["held_secs"].as_f64().unwrap();
    assert_eq!(r["peer_tried_close"], false, "no FIN could arrive: {r}");
    assert_eq!(r["engaged_upper_bound"], true, "{r}");
    assert!(r["bytes_received"].as_u64().unwrap() > 0, "{r}");
    if r["end"] == "peer_reset" {
        // An exit probe reached the orphan before its host vanished: it
        // reset within a probe interval (1 s at this age) of the exit.
        assert!(engaged <= exit_after + 2.0, "exit {exit_after:.1}: {r}");
        assert!(engaged >= exit_after - 0.5, "exit {exit_after:.1}: {r}");
        return;
    }
    assert_eq!(r["end"], "peer_timeout", "{r}");
    assert!(engaged <= exit_after + 130.0, "{r}");
    // Its kernel answered our keepalives until the host vanished (a second
    // after the exit); the probes after that went unanswered.
    assert!(engaged >= exit_after - 2.5, "exit {exit_after:.1}: {r}");
    assert!(held > engaged + 2.0, "{r}");
}

/// Exit probes: clients whose FIN can never reach us — under window zero
/// (through a redirected port 22, so the probe is un-NATed like the rest)
/// writing 64 KiB and exiting at 3 s and 7 s, a silent-trap client writing
/// 1 MiB and exiting at 5 s — are engaged until within max(2 s, 10 %) of
/// their exit, flagged as an upper bound; a live client that polls for
/// input (POLLIN and POLLPRI) for 10 s meanwhile sees nothing and reads
/// nothing.
#[test]
fn exit_probes_end_engaged_at_the_exit_of_clients_whose_fin_is_stuck() {
    if !privileged("exit_probes_end_engaged") {
        return;
    }
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let Lab {
        srv: srv_ns,
        cli: cli_ns,
        sa,
        ..
    } = lab("prb");
    srv_ns.run("nft add table ip t && nft add chain ip t pre '{ type nat hook prerouting priority dstnat; }' && nft add rule ip t pre tcp dport 22 redirect to :2222");
    let listen = format!("{sa}:2222");
    let srv = serve(&srv_ns, &listen, &["--policy", "22:window=zero"]);
    let zero: SocketAddr = format!("{sa}:22").parse().unwrap();
    let silent: SocketAddr = listen.parse().unwrap();
    // (client port, seconds from connect to exit) per writer; the poller's
    // events and bytes read.
    let (exits, polled) = cli_ns.in_thread(move || {
        let writer = move |dst: SocketAddr, bytes: usize, exit: f64| {
            move || {
                let t0 = Instant::now();
                let mut s = TcpStream::connect_timeout(&dst, Duration::from_secs(5)).unwrap();
                s.set_nonblocking(true).unwrap();
                let chunk = [b'x'; 16384];
                let mut sent = 0;
                while sent < bytes && t0.elapsed() < Duration::from_secs(2) {
                    match s.write(&chunk[..chunk.len().min(bytes - sent)]) {
                        Ok(k) => sent += k,
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
                assert!(sent > 2000, "wrote {sent}");
                std::thread::sleep(Duration::from_secs_f64(exit).saturating_sub(t0.elapsed()));
                let port = s.local_addr().unwrap().port();
                drop(s); // exits: its FIN queues behind the stuck data
                (port, t0.elapsed().as_secs_f64())
            }
        };
        let poller = move || {
            let mut s = TcpStream::connect_timeout(&zero, Duration::from_secs(5)).unwrap();
            s.write_all(&[b'y'; 4096]).unwrap();
            let mut fds = [PollFd::new(&s, PollFlags::IN | PollFlags::PRI)];
            let ten = Timespec {
                tv_sec: 10,
                tv_nsec: 0,
            };
            let events = poll(&mut fds, Some(&ten)).unwrap();
            s.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 64];
            let read = match std::io::Read::read(&mut s, &mut buf) {
                Ok(k) => k,
                Err(e) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}");
                    0
                }
            };
            (events, read)
        };
        std::thread::scope(|sc| {
            let w = [
                sc.spawn(writer(zero, 64 * 1024, 3.0)),
                sc.spawn(writer(zero, 64 * 1024, 7.0)),
                sc.spawn(writer(silent, 1 << 20, 5.0)),
            ];
            let p = sc.spawn(poller);
            let exits: Vec<(u16, f64)> = w.into_iter().map(|h| h.join().unwrap()).collect();
            (exits, p.join().unwrap())
        })
    });
    assert_eq!(polled, (0, 0), "the live client saw (events, bytes)");
    let recs = srv.wait_records(3, 20.0);
    for (port, exit) in exits {
        let r = recs
            .iter()
            .find(|r| r["peer"].as_str().unwrap().ends_with(&format!(":{port}")))
            .unwrap_or_else(|| panic!("no record for the client exiting at {exit:.1}: {recs:?}"));
        let engaged = r["engaged_secs"].as_f64().unwrap();
        assert_eq!(r["end"], "peer_reset", "{r}");
        assert_eq!(r["peer_tried_close"], false, "no FIN could arrive: {r}");
        assert_eq!(r["engaged_upper_bound"], true, "{r}");
        eprintln!(
            "exit {exit:.2} engaged {engaged:.2} held {}",
            r["held_secs"]
        );
        let slack = (exit * 0.1).max(2.0);
        assert!(
            engaged >= exit - 0.5 && engaged <= exit + slack,
            "engaged {engaged:.2} for a client that exited at {exit:.2}: {r}"
        );
    }
}

/// Bait + window zero (bait from accept, a 5 s drip): the program's FIN
/// cannot reach us, and exit probes go out between the drips — each one the
/// byte the bait stream will have there, one past our next. Readers that
/// exit at 3 s, 7 s and 12 s are engaged until within max(2 s, 10 %) of
/// their exit (the drips alone would make it 5.1 and 10.1 s); six readers that
/// stay 12 s read exactly the bait stream, no stray byte, in three drips
/// (0, 5, 10 s) with probes between. Three of them connect from ports whose
/// second drip is one byte: it must cover the probe's byte too, or the peer
/// acknowledges a byte our kernel has not sent, which drops those ACKs, and
/// the stream stalls.
#[test]
fn exit_probes_between_drips_end_bait_window_zero_engaged_and_keep_the_stream() {
    if !privileged("exit_probes_between_drips") {
        return;
    }
    use std::io::Read;
    use tarpit::engine::policy::Bait;
    use tarpit::engine::socket::bait;
    let Lab {
        srv: srv_ns,
        cli: cli_ns,
        sa,
        ca,
    } = lab("prbb");
    let listen = format!("{sa}:22");
    let srv = serve(
        &srv_ns,
        &listen,
        &["--policy", "22:bait=ssh,drip=5s,start=accept,window=zero"],
    );
    let dst: SocketAddr = listen.parse().unwrap();
    let client: std::net::IpAddr = ca.parse().unwrap();
    let peer_ip = match client {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(v6) => v6.octets(),
    };
    // Client ports whose second drip (at 5 s, after probes) is one byte:
    // the case where the probe's byte would become the next in order.
    let one_byte_second: Vec<u16> = (41000..60000)
        .filter(|&port| {
            let seed = bait::seed(&peer_ip, port);
            let mut buf = [0u8; bait::MAX_SEGMENT];
            let first = bait::segment(Bait::Ssh, seed, bait::Pos::default(), &mut buf);
            let pos = bait::advance(Bait::Ssh, seed, bait::Pos::default(), first);
            bait::segment(Bait::Ssh, seed, pos, &mut buf) == 1
        })
        .take(3)
        .collect();
    assert_eq!(one_byte_second.len(), 3);
    // Reads all it is sent until `exit` s after connect, then closes (all
    // read: its FIN waits behind our zero window, no RST at close); from
    // `port` if given.
    let reader = move |exit: f64, port: Option<u16>| {
        move || {
            let t0 = Instant::now();
            let mut s: TcpStream = match port {
                None => TcpStream::connect_timeout(&dst, Duration::from_secs(5)).unwrap(),
                Some(port) => {
                    let s =
                        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                            .unwrap();
                    s.bind(&SocketAddr::new(client, port).into()).unwrap();
                    s.connect_timeout(&dst.into(), Duration::from_secs(5))
                        .unwrap();
                    s.into()
                }
            };
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            // Reads with data more than 1 s after the one before: drips.
            let (mut drips, mut last) = (0, None::<Instant>);
            while t0.elapsed() < Duration::from_secs_f64(exit) {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(k) => {
                        got.extend_from_slice(&buf[..k]);
                        if last.is_none_or(|l| l.elapsed() > Duration::from_secs(1)) {
                            drips += 1;
                        }
                        last = Some(Instant::now());
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(e) => panic!("{e}"),
                }
            }
            let port = s.local_addr().unwrap().port();
            drop(s);
            (port, t0.elapsed().as_secs_f64(), got, drips)
        }
    };
    let ends = cli_ns.in_thread(move || {
        std::thread::scope(|sc| {
            let mut r = vec![sc.spawn(reader(3.0, None)), sc.spawn(reader(7.0, None))];
            for port in &one_byte_second {
                r.push(sc.spawn(reader(12.0, Some(*port))));
            }
            for _ in 0..3 {
                r.push(sc.spawn(reader(12.0, None)));
            }
            r.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
        })
    });
    for (port, _, got, _) in &ends {
        // The stream bait drips to this peer, at least as long as `got`.
        let seed = bait::seed(&peer_ip, *port);
        let (mut pos, mut want, mut buf) =
            (bait::Pos::default(), Vec::new(), [0u8; bait::MAX_SEGMENT]);
        while want.len() < got.len() {
            let k = bait::segment(Bait::Ssh, seed, pos, &mut buf);
            want.extend_from_slice(&buf[..k]);
            pos = bait::advance(Bait::Ssh, seed, pos, k);
        }
        assert!(!got.is_empty(), "client {port} read nothing");
        assert_eq!(
            String::from_utf8_lossy(got),
            String::from_utf8_lossy(&want[..got.len()]),
            "client {port} read another stream"
        );
    }
    for (port, _, got, drips) in &ends[2..] {
        let seed = bait::seed(&peer_ip, *port);
        let (mut pos, mut sizes, mut buf) = (bait::Pos::default(), Vec::new(), [0u8; 17]);
        for _ in 0..3 {
            let k = bait::segment(Bait::Ssh, seed, pos, &mut buf);
            sizes.push(k);
            pos = bait::advance(Bait::Ssh, seed, pos, k);
        }
        eprintln!(
            "client {port}: {drips} drips, {} bytes, stream segments {sizes:?}",
            got.len()
        );
        assert_eq!(
            *drips,
            3,
            "client {port}: {drips} drips in 12 s ({} bytes)",
            got.len()
        );
    }
    let recs = srv.wait_records(ends.len(), 20.0);
    for (port, exit, _, _) in &ends {
        let r = recs
            .iter()
            .find(|r| r["peer"].as_str().unwrap().ends_with(&format!(":{port}")))
            .unwrap_or_else(|| panic!("no record for the client exiting at {exit:.1}: {recs:?}"));
        let engaged = r["engaged_secs"].as_f64().unwrap();
        eprintln!(
            "bait+window0 exit {exit:.2} engaged {engaged:.2} held {}",
            r["held_secs"]
        );
        assert_eq!(r["end"], "peer_reset", "{r}");
        assert_eq!(r["peer_tried_close"], false, "no FIN could arrive: {r}");
        assert_eq!(r["engaged_upper_bound"], true, "{r}");
        let slack = (exit * 0.1).max(2.0);
        assert!(
            engaged >= exit - 0.5 && engaged <= exit + slack,
            "engaged {engaged:.2} for a client that exited at {exit:.2}: {r}"
        );
    }
}
