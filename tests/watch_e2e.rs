//! The whole point, end to end: fail2ban bans a host three times, and its
//! next connection to port 22 lands in the tarpit, while everybody else
//! still reaches the real (here: closed) port; `tarpit unban` lets it go.
//!
//! Three namespaces made by the test, joined by veth: the server
//! (10.77.20.1, 10.77.21.1) runs `tarpit serve` and `tarpit watch`; the
//! attacker (10.77.20.2) and another host (10.77.21.2) connect to it.

mod support;

use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use support::netns::{privileged, veth, Netns};
use support::serve::Proc;
use support::watch::{ban_line, wait_element, Scene};
use support::{bin, wait_for};

fn connect(ns: &Netns, addr: &str) -> std::io::Result<TcpStream> {
    let a: SocketAddr = addr.parse().unwrap();
    ns.in_thread(move || TcpStream::connect_timeout(&a, Duration::from_secs(3)))
}

fn refused(r: std::io::Result<TcpStream>, who: &str) {
    match r {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
        other => panic!("{who}: expected RST (connection refused), got {other:?}"),
    }
}

#[test]
fn three_fail2ban_bans_send_the_attacker_into_the_tarpit_until_unban() {
    if !privileged("three_fail2ban_bans_send_the_attacker_into_the_tarpit_until_unban") {
        return;
    }
    let server = Netns::new("e2es");
    let attacker = Netns::new("e2ea");
    let other = Netns::new("e2eo");
    veth(&attacker, "10.77.20.2/24", &server, "10.77.20.1/24");
    veth(&other, "10.77.21.2/24", &server, "10.77.21.1/24");

    let mut c = server.command(bin());
    c.args([
        "--log-format",
        "json",
        "serve",
        "--listen",
        "0.0.0.0:2222",
        "--lifetime-min",
        "1s",
        "--lifetime-max",
        "1s",
    ]);
    let serve = Proc::spawn(c);
    let sc = Scene::new("e2e", "port = 2222", "");
    let _watch = sc.watch(&server);

    // Before: port 22 is closed for everybody.
    refused(
        connect(&attacker, "10.77.20.1:22"),
        "attacker before the ban",
    );

    // fail2ban bans the attacker three times (different jails).
    for jail in ["sshd", "postfix", "sshd"] {
        sc.append(&ban_line(jail, "10.77.20.2"));
    }
    let t0 = Instant::now();
    wait_element(&server, "trap4", "10.77.20.2", 10.0);
    eprintln!("third Ban line to set element: {:?}", t0.elapsed());

    // Now its connection to port 22 is accepted by the tarpit...
    let mut s = connect(&attacker, "10.77.20.1:22").expect("attacker trapped: accepted");
    // ...whose window closes: a bounded amount of data gets out, then nothing.
    s.set_nonblocking(true).unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0usize;
    let end = Instant::now() + Duration::from_secs(5);
    let mut stalled = false;
    while sent < 16 << 20 && Instant::now() < end {
        match s.write(&chunk) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                // Give the window a moment to (not) reopen.
                std::thread::sleep(Duration::from_millis(200));
                if matches!(s.write(&chunk), Err(ref e) if e.kind() == ErrorKind::WouldBlock) {
                    stalled = true;
                    break;
                }
            }
            Err(e) => panic!("write to tarpit: {e}"),
        }
    }
    assert!(stalled, "window never closed after {sent} bytes");
    eprintln!("attacker stalled after {sent} bytes");
    drop(s);
    // The tarpit's record says where the attacker aimed: port 22.
    let rec = wait_for(15.0, "tarpit record of the attacker", || {
        serve.records().into_iter().find(|r| {
            r["peer"]
                .as_str()
                .is_some_and(|p| p.starts_with("10.77.20.2:"))
        })
    });
    assert_eq!(rec["original_dst"], "10.77.20.1:22", "{rec}");

    // Another host still gets the real answer.
    refused(connect(&other, "10.77.21.1:22"), "other host");

    // Unban: the attacker gets RST again.
    let out = sc.cli(&server, &["unban", "10.77.20.2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    refused(connect(&attacker, "10.77.20.1:22"), "attacker after unban");
}
