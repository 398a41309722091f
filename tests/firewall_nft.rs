//! The nftables side of `tarpit watch`, against the real `nft` in network
//! namespaces each test creates. Elements are checked with `nft -j list set`
//! run independently of the code under test.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::netns::{privileged, veth, Netns};
use tarpit::firewall::{Ban, Firewall, FwError, NftConfig, Target};

fn cfg_in(ns: &Netns) -> NftConfig {
    NftConfig {
        netns: Some(ns.name.clone()),
        ..NftConfig::default()
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ban(t: Target, secs: u64) -> Ban {
    Ban {
        target: t,
        timeout: Duration::from_secs(secs),
    }
}

fn v4(s: &str) -> Target {
    Target::from_ip(ip(s), 64)
}

/// `(value, timeout, expires)` of every element of `set`, read with nft itself.
fn elements(ns: &Netns, set: &str) -> Vec<(String, Option<u64>, Option<u64>)> {
    let out = ns.run(&format!("nft -j list set inet tarpit {set}"));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut res = Vec::new();
    for obj in v["nftables"].as_array().unwrap() {
        let Some(elems) = obj.get("set").and_then(|s| s.get("elem")) else {
            continue;
        };
        for e in elems.as_array().unwrap() {
            match e.get("elem") {
                Some(inner) => res.push((
                    inner["val"].as_str().unwrap().to_string(),
                    inner["timeout"].as_u64(),
                    inner["expires"].as_u64(),
                )),
                None => res.push((e.as_str().unwrap().to_string(), None, None)),
            }
        }
    }
    res
}

fn table_names(ns: &Netns) -> Vec<String> {
    let out = ns.run("nft -j list tables");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("table"))
        .map(|t| {
            format!(
                "{} {}",
                t["family"].as_str().unwrap(),
                t["name"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn ensure_is_idempotent_and_one_transaction() {
    if !privileged("ensure_is_idempotent_and_one_transaction") {
        return;
    }
    let ns = Netns::new("fwens");
    let fw = Firewall::new(cfg_in(&ns));
    assert!(!fw.intact().unwrap(), "fresh namespace has no table");
    fw.ensure().unwrap();
    fw.ban(&[ban(v4("10.77.1.1"), 600)]).unwrap();
    fw.ensure().unwrap();
    fw.ensure().unwrap();
    assert_eq!(table_names(&ns), vec!["inet tarpit".to_string()]);
    let chain = String::from_utf8(ns.run("nft list chain inet tarpit prerouting").stdout).unwrap();
    assert_eq!(chain.matches("redirect to :2222").count(), 2, "{chain}");
    assert!(
        chain.contains("type nat hook prerouting priority dstnat - 10"),
        "{chain}"
    );
    assert_eq!(elements(&ns, "trap4").len(), 1, "ensure keeps elements");
    assert!(fw.intact().unwrap());
    assert_eq!(fw.invocations(), 6, "each call is a single nft run");
}

#[test]
fn ban_adds_elements_with_their_timeout() {
    if !privileged("ban_adds_elements_with_their_timeout") {
        return;
    }
    let ns = Netns::new("fwban");
    let fw = Firewall::new(cfg_in(&ns));
    fw.ensure().unwrap();
    fw.ban(&[
        ban(v4("10.77.2.1"), 3600),
        ban(v4("10.77.2.2"), 60),
        ban(Target::from_ip(ip("fd77:2::1"), 64), 7200),
    ])
    .unwrap();
    let mut e4 = elements(&ns, "trap4");
    e4.sort();
    assert_eq!(e4.len(), 2);
    assert_eq!((e4[0].0.as_str(), e4[0].1), ("10.77.2.1", Some(3600)));
    assert!(e4[0].2.unwrap() > 3500 && e4[0].2.unwrap() <= 3600);
    assert_eq!((e4[1].0.as_str(), e4[1].1), ("10.77.2.2", Some(60)));
    let e6 = elements(&ns, "trap6");
    assert_eq!(e6.len(), 1);
    assert_eq!((e6[0].0.as_str(), e6[0].1), ("fd77:2::", Some(7200)));

    let mut listed = fw.list().unwrap();
    listed.sort();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0].0, v4("10.77.2.1"));
    let rem = listed[0].1.unwrap();
    assert!(
        rem > Duration::from_secs(3500) && rem <= Duration::from_secs(3600),
        "{rem:?}"
    );
    assert_eq!(listed[2].0, Target::V6Net("fd77:2::".parse().unwrap(), 64));
}

#[test]
fn reban_refreshes_the_timeout_both_ways() {
    if !privileged("reban_refreshes_the_timeout_both_ways") {
        return;
    }
    let ns = Netns::new("fwref");
    let fw = Firewall::new(cfg_in(&ns));
    let t4 = v4("10.77.3.1");
    let t6 = Target::from_ip(ip("fd77:3::1"), 64);
    fw.restore(&[ban(t4, 100), ban(t6, 100)]).unwrap();
    fw.ban(&[ban(t4, 5000), ban(t6, 5000)]).unwrap();
    for set in ["trap4", "trap6"] {
        let e = elements(&ns, set);
        assert_eq!(e.len(), 1, "{set}: {e:?}");
        assert_eq!(e[0].1, Some(5000), "{set}: longer");
        assert!(e[0].2.unwrap() > 4900, "{set}: {e:?}");
    }
    fw.ban(&[ban(t4, 50), ban(t6, 50)]).unwrap();
    for set in ["trap4", "trap6"] {
        let e = elements(&ns, set);
        assert_eq!(e.len(), 1, "{set}: {e:?}");
        assert_eq!(e[0].1, Some(50), "{set}: shorter");
        assert!(e[0].2.unwrap() <= 50, "{set}: {e:?}");
    }
}

#[test]
fn unban_removes_and_absent_is_fine() {
    if !privileged("unban_removes_and_absent_is_fine") {
        return;
    }
    let ns = Netns::new("fwunb");
    let fw = Firewall::new(cfg_in(&ns));
    // Nothing to release before the table even exists.
    fw.unban(&[v4("10.77.4.1")]).unwrap();
    fw.ensure().unwrap();
    let keep = v4("10.77.4.2");
    let t6 = Target::from_ip(ip("fd77:4::1"), 64);
    fw.ban(&[ban(v4("10.77.4.1"), 600), ban(keep, 600), ban(t6, 600)])
        .unwrap();
    fw.unban(&[
        v4("10.77.4.1"),
        v4("10.77.4.99"),
        Target::from_ip(ip("fd77:4::abcd"), 64),
    ])
    .unwrap();
    let e4 = elements(&ns, "trap4");
    assert_eq!(e4.len(), 1);
    assert_eq!(e4[0].0, "10.77.4.2");
    assert!(elements(&ns, "trap6").is_empty());
    // Unbanning again: all absent now, still fine, and no temporary element
    // is left behind.
    fw.unban(&[v4("10.77.4.1"), t6]).unwrap();
    assert_eq!(elements(&ns, "trap4").len(), 1);
    assert!(elements(&ns, "trap6").is_empty());
}

#[test]
fn ipv6_is_trapped_per_64_and_mapped_v4_as_v4() {
    if !privileged("ipv6_is_trapped_per_64_and_mapped_v4_as_v4") {
        return;
    }
    let ns = Netns::new("fwv6");
    let fw = Firewall::new(cfg_in(&ns));
    fw.ensure().unwrap();
    fw.ban(&[
        ban(fw.target_of(ip("fd77:5:0:1::1")), 600),
        ban(fw.target_of(ip("fd77:5:0:1:dead:beef:1:2")), 900),
        ban(fw.target_of(ip("fd77:5:0:2::1")), 600),
        ban(fw.target_of(ip("::ffff:10.77.5.9")), 600),
    ])
    .unwrap();
    let mut e6 = elements(&ns, "trap6");
    e6.sort();
    assert_eq!(e6.len(), 2, "{e6:?}");
    assert_eq!((e6[0].0.as_str(), e6[0].1), ("fd77:5:0:1::", Some(900)));
    assert_eq!(e6[1].0, "fd77:5:0:2::");
    let e4 = elements(&ns, "trap4");
    assert_eq!(e4.len(), 1);
    assert_eq!(e4[0].0, "10.77.5.9");
    let chain = String::from_utf8(ns.run("nft list chain inet tarpit prerouting").stdout).unwrap();
    assert!(
        chain.contains("ip6 saddr & ffff:ffff:ffff:ffff:: == @trap6"),
        "{chain}"
    );
}

#[test]
fn flushed_ruleset_is_detected_and_restore_rebuilds_it() {
    if !privileged("flushed_ruleset_is_detected_and_restore_rebuilds_it") {
        return;
    }
    let ns = Netns::new("fwfl");
    let fw = Firewall::new(cfg_in(&ns));
    let bans = [
        ban(v4("10.77.6.1"), 600),
        ban(fw.target_of(ip("fd77:6::1")), 700),
    ];
    fw.restore(&bans).unwrap();
    assert!(fw.intact().unwrap());
    ns.run("nft flush ruleset");
    assert!(!fw.intact().unwrap());
    assert_eq!(
        fw.check().unwrap().missing,
        vec!["table inet tarpit".to_string()]
    );
    // A ban alone must not recreate a half ruleset; the error says why.
    match fw.ban(&bans) {
        Err(e @ FwError::NftFailed { .. }) => {
            assert!(e.to_string().contains("ruleset flushed?"), "{e}")
        }
        other => panic!("ban into a flushed ruleset: {other:?}"),
    }
    fw.restore(&bans).unwrap();
    assert!(fw.intact().unwrap());
    assert_eq!(fw.list().unwrap().len(), 2);

    // Only a rule deleted: also noticed, and named.
    ns.run("nft flush chain inet tarpit prerouting");
    let missing = fw.check().unwrap().missing;
    assert_eq!(missing.len(), 2, "{missing:?}");
    assert!(missing[0].contains("@trap4"), "{missing:?}");
    fw.ensure().unwrap();
    assert!(fw.intact().unwrap());
}

#[test]
fn restore_of_10000_bans_is_one_nft_run() {
    if !privileged("restore_of_10000_bans_is_one_nft_run") {
        return;
    }
    let ns = Netns::new("fwbig");
    let fw = Firewall::new(cfg_in(&ns));
    let bans = big_ban_list(10_000);
    // Some are already there with another timeout: restore refreshes them.
    fw.restore(&bans[..100]).unwrap();
    let before = fw.invocations();
    let t0 = Instant::now();
    fw.restore(&bans).unwrap();
    let took = t0.elapsed();
    assert_eq!(fw.invocations() - before, 1, "one nft run");
    eprintln!("restore of 10,000 bans: {:.3} s", took.as_secs_f64());
    let e4 = elements(&ns, "trap4");
    let e6 = elements(&ns, "trap6");
    assert_eq!(e4.len() + e6.len(), 10_000);
    assert_eq!(e6.len(), 4_000);
    assert!(
        e4.iter().chain(&e6).all(|e| e.1.is_some()),
        "all with timeout"
    );
    assert_eq!(fw.list().unwrap().len(), 10_000);
    // The same restore in a dry run prints exactly one batch.
    let out = Arc::new(Mutex::new(Vec::new()));
    let dry = Firewall::dry_run(NftConfig::default(), Box::new(SharedBuf(out.clone())));
    dry.restore(&bans).unwrap();
    assert_eq!(dry.invocations(), 1);
    let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
    assert_eq!(text.matches("# nft -f -").count(), 1);
}

/// 6,000 IPv4 addresses and 4,000 IPv6 /64s, timeouts from 1 h up.
fn big_ban_list(n: u32) -> Vec<Ban> {
    (0..n)
        .map(|i| {
            let target = if i % 5 < 3 {
                Target::V4(Ipv4Addr::from(0x0a4d_0000 + i))
            } else {
                let a =
                    std::net::Ipv6Addr::new(0xfd77, 0x10, (i >> 16) as u16, i as u16, 0, 0, 0, 1);
                Target::from_ip(IpAddr::V6(a), 64)
            };
            ban(target, 3600 + u64::from(i))
        })
        .collect()
}

#[derive(Clone)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);
impl Write for SharedBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn missing_nft_is_a_clear_error_never_a_panic() {
    let fw = Firewall::new(NftConfig {
        nft: "/nonexistent/nft".into(),
        ..NftConfig::default()
    });
    let t = v4("10.77.7.1");
    let checks: Vec<Result<(), FwError>> = vec![
        fw.ensure(),
        fw.ban(&[ban(t, 5)]),
        fw.restore(&[]),
        fw.unban(&[t]),
        fw.list().map(|_| ()),
        fw.intact().map(|_| ()),
    ];
    for r in checks {
        let e = r.unwrap_err();
        assert!(matches!(e, FwError::NftMissing(_)), "{e}");
        assert!(e.to_string().contains("/nonexistent/nft not found"), "{e}");
    }
}

#[test]
fn dry_run_prints_batches_and_runs_nothing() {
    // No root needed, and a missing nft does not matter.
    let out = Arc::new(Mutex::new(Vec::new()));
    let fw = Firewall::dry_run(
        NftConfig {
            nft: "/nonexistent/nft".into(),
            ..NftConfig::default()
        },
        Box::new(SharedBuf(out.clone())),
    );
    fw.ensure().unwrap();
    fw.ban(&[ban(v4("10.77.8.1"), 90)]).unwrap();
    fw.unban(&[v4("10.77.8.1")]).unwrap();
    assert!(fw.intact().unwrap());
    let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
    assert_eq!(text.matches("# nft -f -\n").count(), 3, "{text}");
    assert!(text.contains("add table inet tarpit\n"));
    assert!(text.contains("add element inet tarpit trap4 { 10.77.8.1 timeout 90s }\n"));
    assert!(text.contains("delete element inet tarpit trap4 { 10.77.8.1 }\n"));
}

#[test]
fn bad_names_never_reach_nft() {
    let fw = Firewall::new(NftConfig {
        family_table: "tarpit; flush ruleset".into(),
        ..NftConfig::default()
    });
    let e = fw.ensure().unwrap_err();
    assert!(matches!(e, FwError::Config(_)), "{e}");
    assert_eq!(fw.invocations(), 0);
}

#[test]
fn child_processes_inherit_the_threads_namespace() {
    if !privileged("child_processes_inherit_the_threads_namespace") {
        return;
    }
    // The alternative to `netns` in the config: run the firewall on a thread
    // that entered the namespace. A unique table name keeps the host's
    // ruleset safe even if inheritance did not work.
    let ns = Netns::new("fwthr");
    let table = format!("tp_thr_{}", std::process::id());
    let cfg = NftConfig {
        family_table: table.clone(),
        ..NftConfig::default()
    };
    ns.in_thread(move || Firewall::new(cfg).ensure().unwrap());
    assert!(table_names(&ns).contains(&format!("inet {table}")));
    let host = support::netns::sh("nft list tables");
    let host = String::from_utf8_lossy(&host.stdout);
    assert!(!host.contains(&table), "leaked into the host: {host}");
}

#[test]
fn conntrack_entries_of_a_banned_host_are_dropped_when_asked() {
    if !privileged("conntrack_entries_of_a_banned_host_are_dropped_when_asked") {
        return;
    }
    if !support::netns::which("conntrack") {
        panic!("conntrack is not installed (tests/run-all.sh installs it)");
    }
    let srv = Netns::new("fwcts");
    let att = Netns::new("fwcta");
    veth(&att, "10.77.9.1/24", &srv, "10.77.9.2/24");
    let fw = Firewall::new(NftConfig {
        flush_conntrack: true,
        ..cfg_in(&srv)
    });
    fw.ensure().unwrap(); // the nat chain makes the kernel track connections
    let l = srv.in_thread(|| TcpListener::bind("10.77.9.2:0").unwrap());
    let port = l.local_addr().unwrap().port();
    let c = att.in_thread(move || TcpStream::connect(("10.77.9.2", port)).unwrap());
    let (_s, _) = l.accept().unwrap();
    let count = || {
        let out = srv.try_run("conntrack -L -s 10.77.9.1 2>/dev/null");
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    assert!(count() >= 1, "connection is tracked");
    fw.ban(&[ban(v4("10.77.9.1"), 60)]).unwrap();
    assert_eq!(count(), 0, "entries of the banned host are gone");
    drop(c);
}

/// What a TCP connect from `src` to `dst` found.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// Accepted by something: the redirect took it to the stand-in tarpit.
    Connected,
    /// RST: nothing listens there.
    Refused,
    Other(String),
}

fn connect_from(ns: &Netns, src: &'static str, dst: SocketAddr) -> Outcome {
    ns.in_thread(move || {
        let src = SocketAddr::new(ip(src), 0);
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(src),
            socket2::Type::STREAM,
            None,
        )
        .unwrap();
        sock.bind(&src.into()).unwrap();
        match sock.connect_timeout(&dst.into(), Duration::from_secs(3)) {
            Ok(()) => Outcome::Connected,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Outcome::Refused,
            Err(e) => Outcome::Other(e.to_string()),
        }
    })
}

#[test]
fn banned_host_lands_in_the_tarpit_port_others_get_rst() {
    if !privileged("banned_host_lands_in_the_tarpit_port_others_get_rst") {
        return;
    }
    let srv = Netns::new("fwe2s");
    let att = Netns::new("fwe2a");
    veth(&att, "10.77.10.1/24", &srv, "10.77.10.2/24");
    // A second, never banned host on the attacker's side of the link.
    let iface = veth_name(&att);
    att.run(&format!("ip addr add 10.77.10.3/24 dev {iface}"));

    // Stand-in for `tarpit serve`: a plain listener on the redirect port.
    let tarpit = srv.in_thread(|| TcpListener::bind("0.0.0.0:0").unwrap());
    let port = tarpit.local_addr().unwrap().port();
    tarpit.set_nonblocking(true).unwrap();
    let fw = Firewall::new(NftConfig {
        port,
        ..cfg_in(&srv)
    });
    fw.ensure().unwrap();
    let ssh: SocketAddr = "10.77.10.2:22".parse().unwrap();

    assert_eq!(
        connect_from(&att, "10.77.10.1", ssh),
        Outcome::Refused,
        "before the ban"
    );
    fw.ban(&[ban(fw.target_of(ip("10.77.10.1")), 600)]).unwrap();
    assert_eq!(
        connect_from(&att, "10.77.10.1", ssh),
        Outcome::Connected,
        "banned"
    );
    let (conn, peer) = accept_within(&tarpit, Duration::from_secs(3)).expect("tarpit got it");
    assert_eq!(peer.ip(), ip("10.77.10.1"));
    let orig = tarpit::sys::original_dst(conn.as_raw_fd(), false).unwrap();
    assert_eq!(orig, ssh, "the redirect keeps the original destination");
    assert_eq!(
        connect_from(&att, "10.77.10.3", ssh),
        Outcome::Refused,
        "other host"
    );
    assert!(accept_within(&tarpit, Duration::from_millis(200)).is_none());

    fw.unban(&[fw.target_of(ip("10.77.10.1"))]).unwrap();
    assert_eq!(
        connect_from(&att, "10.77.10.1", ssh),
        Outcome::Refused,
        "after unban"
    );
    let mut buf = [0u8; 1];
    let _ = (&conn).read(&mut buf);
}

/// Connects from `src` in `ns` to `dst`, giving up after `limit`.
fn try_connect(ns: &Netns, src: &'static str, dst: SocketAddr, limit: Duration) -> Outcome {
    ns.in_thread(move || {
        let src = SocketAddr::new(ip(src), 0);
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(src),
            socket2::Type::STREAM,
            None,
        )
        .unwrap();
        sock.bind(&src.into()).unwrap();
        match sock.connect_timeout(&dst.into(), limit) {
            Ok(()) => Outcome::Connected,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Outcome::Refused,
            Err(e) => Outcome::Other(e.to_string()),
        }
    })
}

#[test]
fn guard_port_lets_only_trapped_hosts_reach_the_tarpit_port() {
    if !privileged("guard_port_lets_only_trapped_hosts_reach_the_tarpit_port") {
        return;
    }
    let srv = Netns::new("fwgds");
    let att = Netns::new("fwgda");
    veth(&att, "10.77.11.1/24", &srv, "10.77.11.2/24");
    let iface = veth_name(&att);
    att.run(&format!("ip addr add 10.77.11.3/24 dev {iface}"));
    let tarpit = srv.in_thread(|| TcpListener::bind("0.0.0.0:0").unwrap());
    let port = tarpit.local_addr().unwrap().port();
    tarpit.set_nonblocking(true).unwrap();
    let direct = SocketAddr::new(ip("10.77.11.2"), port);
    let ssh: SocketAddr = "10.77.11.2:22".parse().unwrap();
    let quick = Duration::from_millis(700);
    let dropped = |o: Outcome| matches!(o, Outcome::Other(_));

    // The default: anyone reaches the tarpit's port directly.
    let open = Firewall::new(NftConfig {
        port,
        ..cfg_in(&srv)
    });
    open.ensure().unwrap();
    assert_eq!(
        try_connect(&att, "10.77.11.3", direct, quick),
        Outcome::Connected
    );
    assert!(accept_within(&tarpit, Duration::from_secs(2)).is_some());

    let fw = Firewall::new(NftConfig {
        port,
        guard_port: true,
        ..cfg_in(&srv)
    });
    fw.ensure().unwrap();
    assert!(fw.intact().unwrap(), "{:?}", fw.check().unwrap());
    let o = try_connect(&att, "10.77.11.3", direct, quick);
    assert!(dropped(o), "a host not in the sets still reaches the port");
    fw.ban(&[ban(fw.target_of(ip("10.77.11.1")), 600)]).unwrap();
    assert_eq!(
        try_connect(&att, "10.77.11.1", direct, quick),
        Outcome::Connected,
        "a trapped host, directly"
    );
    assert_eq!(
        try_connect(&att, "10.77.11.1", ssh, quick),
        Outcome::Connected,
        "a trapped host, redirected"
    );
    let o = try_connect(&att, "10.77.11.3", direct, quick);
    assert!(dropped(o), "the other host, after the ban");
    assert_eq!(
        try_connect(&att, "10.77.11.3", ssh, quick),
        Outcome::Refused,
        "the other host's other traffic is untouched"
    );
    // Local clients are not guarded.
    let local = SocketAddr::new(ip("127.0.0.1"), port);
    assert_eq!(
        try_connect(&srv, "127.0.0.1", local, quick),
        Outcome::Connected
    );
    // Turned off again: the guard chain goes.
    open.ensure().unwrap();
    assert_eq!(
        try_connect(&att, "10.77.11.3", direct, quick),
        Outcome::Connected
    );
    assert!(!srv
        .run("nft list table inet tarpit")
        .stdout
        .windows(5)
        .any(|w| w == b"guard"));
}

fn accept_within(l: &TcpListener, limit: Duration) -> Option<(TcpStream, SocketAddr)> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        match l.accept() {
            Ok(x) => return Some(x),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
    None
}

#[test]
fn a_conflicting_set_is_a_clear_error() {
    if !privileged("a_conflicting_set_is_a_clear_error") {
        return;
    }
    let ns = Netns::new("fwcfl");
    // Someone else's (or an older) layout: trap6 as an interval set.
    ns.run("nft add table inet tarpit && nft add set inet tarpit trap6 \\{ type ipv6_addr\\; flags interval\\; \\}");
    let fw = Firewall::new(cfg_in(&ns));
    let e = fw.ensure().unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(
            e,
            FwError::NftFailed {
                status: Some(1),
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("File exists") && msg.contains("nft delete table inet tarpit"),
        "{msg}"
    );
    assert!(!fw.intact().unwrap());
    ns.run("nft delete table inet tarpit");
    fw.ensure().unwrap();
    assert!(fw.intact().unwrap());
}

#[test]
fn banned_ipv6_network_lands_in_the_tarpit_port() {
    if !privileged("banned_ipv6_network_lands_in_the_tarpit_port") {
        return;
    }
    let srv = Netns::new("fw6s");
    let att = Netns::new("fw6a");
    support::netns::veth6(
        &att,
        "10.77.11.1/24",
        "fd77:11:0:1::1/64",
        &srv,
        "10.77.11.2/24",
        "fd77:11:0:1::2/64",
    );
    // Another address in the attacker's /64, and a host in another /64.
    let iface = veth_name(&att);
    att.run(&format!(
        "ip -6 addr add fd77:11:0:1::99/64 dev {iface} nodad && ip -6 addr add fd77:11:0:2::3/64 dev {iface} nodad"
    ));
    let siface = veth_name(&srv);
    srv.run(&format!(
        "ip -6 addr add fd77:11:0:2::2/64 dev {siface} nodad"
    ));
    let tarpit = srv.in_thread(|| TcpListener::bind("[::]:0").unwrap());
    let port = tarpit.local_addr().unwrap().port();
    tarpit.set_nonblocking(true).unwrap();
    let fw = Firewall::new(NftConfig {
        port,
        ..cfg_in(&srv)
    });
    fw.ensure().unwrap();
    let ssh: SocketAddr = "[fd77:11:0:1::2]:22".parse().unwrap();
    assert_eq!(
        connect_from(&att, "fd77:11:0:1::1", ssh),
        Outcome::Refused,
        "before"
    );
    fw.ban(&[ban(fw.target_of(ip("fd77:11:0:1::1")), 600)])
        .unwrap();
    for (src, want) in [
        ("fd77:11:0:1::1", Outcome::Connected),
        ("fd77:11:0:1::99", Outcome::Connected), // same /64
        ("fd77:11:0:2::3", Outcome::Refused),    // other /64
    ] {
        assert_eq!(connect_from(&att, src, ssh), want, "from {src}");
        if want == Outcome::Connected {
            let (_c, peer) = accept_within(&tarpit, Duration::from_secs(3)).expect("accepted");
            assert_eq!(peer.ip(), ip(src));
        }
    }
    fw.unban(&[fw.target_of(ip("fd77:11:0:1::1234"))]).unwrap();
    assert_eq!(
        connect_from(&att, "fd77:11:0:1::99", ssh),
        Outcome::Refused,
        "after unban"
    );
}

fn veth_name(ns: &Netns) -> String {
    let out = String::from_utf8(ns.run("ip -o link show type veth").stdout).unwrap();
    out.split(':')
        .nth(1)
        .unwrap()
        .trim()
        .split('@')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn unban_still_releases_when_the_other_set_is_gone() {
    if !privileged("unban_still_releases_when_the_other_set_is_gone") {
        return;
    }
    let ns = Netns::new("fwhalf");
    let fw = Firewall::new(cfg_in(&ns));
    assert!(fw.list().unwrap().is_empty(), "no table lists as empty");
    let t4 = v4("10.77.12.1");
    let t6 = fw.target_of(ip("fd77:12::1"));
    fw.restore(&[ban(t4, 600), ban(t6, 600)]).unwrap();
    // Someone removed trap6 (rules first, since they reference it).
    ns.run("nft flush chain inet tarpit prerouting && nft delete set inet tarpit trap6");
    // (Targets only: two listings may straddle a second of the timeout.)
    let listed: Vec<_> = fw.list().unwrap().into_iter().map(|(t, _)| t).collect();
    assert_eq!(listed, vec![t4]);
    fw.unban(&[t4, t6]).unwrap();
    assert!(
        elements(&ns, "trap4").is_empty(),
        "the IPv4 host is released"
    );
    assert!(fw.list().unwrap().is_empty());
    let c = fw.check().unwrap();
    assert!(
        c.missing
            .iter()
            .any(|m| m.starts_with("set inet tarpit trap6")),
        "{c:?}"
    );
}

#[test]
fn concurrent_bans_from_many_threads_all_land() {
    if !privileged("concurrent_bans_from_many_threads_all_land") {
        return;
    }
    // The watcher and `tarpit ban` (another process) may change the sets at
    // the same moment; each call is its own transaction and none is lost.
    let ns = Netns::new("fwconc");
    let fw = Arc::new(Firewall::new(cfg_in(&ns)));
    fw.ensure().unwrap();
    let threads: Vec<_> = (0..8u32)
        .map(|k| {
            let fw = fw.clone();
            std::thread::spawn(move || {
                for i in 0..20u32 {
                    let t = Target::V4(Ipv4Addr::from(0x0a4d_0d00 + k * 32 + i));
                    fw.ban(&[ban(t, 600)]).unwrap();
                    if k % 2 == 0 {
                        fw.ensure().unwrap(); // rule rewrites in between
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(elements(&ns, "trap4").len(), 160);
    assert!(fw.intact().unwrap());
}
