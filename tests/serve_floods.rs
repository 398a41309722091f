//! `tarpit serve` under floods: one IPv6 site cycling through its /64s must
//! not take the whole budget and evict the other trapped hosts.

mod support;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{ErrorKind, Read};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;
use support::netns::{privileged, Netns};
use support::serve::{opts, InProc};
use tarpit::engine::record::EndReason;

/// Connects from `src` (an address of the namespace) to `dst`.
fn connect_from(src: &str, dst: SocketAddr) -> TcpStream {
    let s = Socket::new(Domain::for_address(dst), Type::STREAM, Some(Protocol::TCP)).unwrap();
    let src: SocketAddr = SocketAddr::new(src.parse().unwrap(), 0);
    s.bind(&SockAddr::from(src)).unwrap();
    s.connect(&SockAddr::from(dst)).unwrap();
    s.into()
}

/// True when the server reset `s` within `wait`.
fn was_reset(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut b = [0u8; 8];
    matches!(s.read(&mut b), Err(e) if e.kind() == ErrorKind::ConnectionReset)
}

fn site(ip: IpAddr) -> bool {
    ip.to_string().starts_with("fd77:48:1:")
}

#[test]
fn one_ipv6_48_cannot_take_the_budget_from_other_hosts() {
    if !privileged("one_ipv6_48_cannot_take_the_budget_from_other_hosts") {
        return;
    }
    let ns = Netns::new("p48");
    // A site (fd77:48:1::/48) with eight /64s, a real host elsewhere, and
    // the tarpit's own address.
    let mut cmds: Vec<String> = (0..8)
        .map(|k| format!("ip -6 addr add fd77:48:1:{k}::1/128 dev lo nodad"))
        .collect();
    cmds.push("ip -6 addr add fd77:48:2::7/128 dev lo nodad".into());
    cmds.push("ip -6 addr add fd77:48:ff::1/128 dev lo nodad".into());
    ns.run(&cmds.join(" && "));
    ns.in_thread(|| {
        let mut o = opts("[fd77:48:ff::1]:0");
        o.per_ip = 2;
        o.per_ipv6_48 = 4;
        o.max_conns = Some(8);
        let srv = InProc::start(o);
        let mut host: Vec<TcpStream> = (0..2)
            .map(|_| connect_from("fd77:48:2::7", srv.addr()))
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        // The flood: three connections from each of the site's /64s.
        let mut flood = Vec::new();
        for k in 0..8 {
            for _ in 0..3 {
                flood.push(connect_from(&format!("fd77:48:1:{k}::1"), srv.addr()));
            }
        }
        let snap = support::wait_for(5.0, "the flood handled", || {
            let s = srv.snapshot();
            (s.totals.trapped + s.totals.refused_per_net >= 26).then_some(s)
        });
        for c in &mut host {
            assert!(
                !was_reset(c, Duration::from_millis(300)),
                "the real host was evicted"
            );
        }
        let held_site = snap.conns.iter().filter(|c| site(c.peer.ip())).count();
        let held_host = snap.conns.len() - held_site;
        assert_eq!((held_site, held_host), (4, 2), "{:?}", snap.totals);
        assert!(snap.totals.refused_per_net > 0, "{:?}", snap.totals);
        let recs = srv.records();
        assert!(recs.iter().all(|r| site(r.peer.ip())), "{recs:?}");
        assert!(
            recs.iter()
                .all(|r| matches!(r.end, EndReason::EvictedPerIp | EndReason::EvictedPerNet)),
            "{recs:?}"
        );
        assert_eq!(snap.totals.by_reason.get("evicted_global"), None);
        drop(flood);
    });
}

#[test]
fn a_flooding_hosts_records_are_summarised_and_the_history_keeps_them_all() {
    let dir = support::stats::TempDir::new("recgate");
    let db = dir.path().join("h.db");
    let mut p = support::serve::Proc::serve(&[
        "--listen",
        "127.0.0.1:0",
        "--per-ip",
        "0",
        "--records-per-host",
        "3",
        "--records-per-sec",
        "0",
        "--history",
        db.to_str().unwrap(),
    ]);
    let from = |src: &str| {
        let s = connect_from(src, p.addr());
        std::thread::sleep(Duration::from_millis(20));
        support::stats::reset(s);
    };
    for _ in 0..10 {
        from("127.0.0.1");
    }
    from("127.0.0.2");
    from("127.0.0.2");
    let st = p.term(10.0);
    assert!(st.success(), "{st}");
    let recs = p.records();
    let of = |ip: &str| {
        recs.iter()
            .filter(|r| {
                r["peer"]
                    .as_str()
                    .is_some_and(|a| a.starts_with(&format!("{ip}:")))
            })
            .count()
    };
    assert_eq!((of("127.0.0.1"), of("127.0.0.2")), (3, 2), "{}", p.log());
    let sum: Vec<_> = p
        .json()
        .into_iter()
        .filter(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("records suppressed"))
        })
        .collect();
    assert_eq!(sum.len(), 1, "{}", p.log());
    assert_eq!(
        (sum[0]["suppressed"].as_u64(), sum[0]["hosts"].as_u64()),
        (Some(7), Some(1))
    );
    let rows: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM connections", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 12, "every connection is a history row");
}
