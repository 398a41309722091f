//! `tarpit watch` as a CrowdSec bouncer and machine, end to end against the
//! real LAPI (Debian's crowdsec, offline, own config and database):
//! decisions trap hosts in a namespace and deletions release them; our bans
//! are pushed; outages of LAPI and restarts of the watcher lose nothing;
//! and a fleet of two servers traps together.
//!
//! Addresses: 10.77.60-69.0/24 and fd77:60-69::/64, inside namespaces made
//! here. Every LAPI listens on loopback or inside such a namespace.

mod support;

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;
use support::crowdsec::{available, Lapi};
use support::netns::{privileged, veth6, Netns};
use support::serve::Proc;
use support::watch::{ban_line, elements, Scene};
use support::{bin, wait_for};

fn connect(ns: &Netns, addr: &str) -> std::io::Result<TcpStream> {
    let a: SocketAddr = addr.parse().unwrap();
    ns.in_thread(move || TcpStream::connect_timeout(&a, Duration::from_secs(3)))
}

/// Waits until a connection from `ns` to `addr` is accepted (held by the
/// tarpit: nothing listens on port 22) or refused, as `held` says.
fn wait_held(ns: &Netns, addr: &str, held: bool, what: &str) {
    wait_for(15.0, what, || {
        let r = connect(ns, addr);
        let ok = match &r {
            Ok(_) => held,
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => !held,
            Err(_) => false,
        };
        if !ok {
            std::thread::sleep(Duration::from_millis(200));
        }
        ok.then_some(())
    })
}

fn secret(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// `[watch.crowdsec]` text for `lapi` with a new bouncer (and machine).
fn crowdsec_section(
    lapi: &Lapi,
    dir: &std::path::Path,
    name: &str,
    machine: bool,
    extra: &str,
) -> String {
    let key = lapi.add_bouncer(name);
    let kf = secret(dir, &format!("{name}.key"), &key);
    let mut s = format!(
        "[watch.crowdsec]\nurl = {:?}\napi_key_file = {:?}\nupdate_frequency = \"1s\"\n{extra}\n",
        lapi.url(),
        kf.to_str().unwrap()
    );
    if machine {
        let pw = format!("pw-{name}-0123456789");
        lapi.add_machine(name, &pw);
        let pf = secret(dir, &format!("{name}.pw"), &pw);
        s += &format!(
            "machine_id = {name:?}\npassword_file = {:?}\n",
            pf.to_str().unwrap()
        );
    }
    s
}

fn serve_in(ns: &Netns) -> Proc {
    let mut c = ns.command(bin());
    c.args([
        "--log-format",
        "json",
        "serve",
        "--listen",
        "0.0.0.0:2222",
        "--listen",
        "[::]:2222",
        "--control",
        "off",
        "--history",
        "off",
    ]);
    Proc::spawn(c)
}

/// Scene dir first (the watcher's config needs the secrets written there).
fn scene(tag: &str) -> Scene {
    Scene::new(tag, "port = 2222", "")
}

fn rewrite_conf(sc: &Scene, crowdsec: &str, jail_extra: &str) {
    std::fs::write(
        &sc.conf,
        format!(
            "[watch]\nstate_db = {:?}\npoll_interval = \"100ms\"\ncheck_interval = \"1s\"\nport = 2222\n\n{crowdsec}\n\
             [[watch.jail]]\nname = \"multi-ban\"\nlogpath = {:?}\n{jail_extra}\n",
            sc.db.to_str().unwrap(),
            sc.log.to_str().unwrap()
        ),
    )
    .unwrap();
}

/// On a failure, prints what the watchers logged and their sets.
struct Dump<'a>(Vec<(&'a support::watch::WatchProc, &'a Netns)>, &'a Lapi);

impl Drop for Dump<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (w, ns) in &self.0 {
                eprintln!(
                    "--- watch in {}:\n{}",
                    ns.name,
                    w.lines.lock().unwrap().join("\n")
                );
                let r = ns.try_run("nft list table inet tarpit");
                eprintln!("--- nft:\n{}", String::from_utf8_lossy(&r.stdout));
            }
            eprintln!("--- LAPI:\n{}", self.1.log());
        }
    }
}

/// Connects from `src` (an address of `ns`) to `dst`.
fn connect_from(ns: &Netns, src: &str, dst: &str) -> std::io::Result<()> {
    let s = SocketAddr::new(src.parse().unwrap(), 0);
    let d: SocketAddr = dst.parse().unwrap();
    ns.in_thread(move || {
        let sock =
            socket2::Socket::new(socket2::Domain::for_address(d), socket2::Type::STREAM, None)?;
        sock.bind(&s.into())?;
        sock.connect_timeout(&d.into(), Duration::from_secs(3))
    })
}

fn wait_held_from(ns: &Netns, src: &str, dst: &str, held: bool, what: &str) {
    wait_for(15.0, what, || {
        let ok = match connect_from(ns, src, dst) {
            Ok(()) => held,
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => !held,
            Err(_) => false,
        };
        if !ok {
            std::thread::sleep(Duration::from_millis(200));
        }
        ok.then_some(())
    })
}

#[test]
fn decisions_trap_and_deletions_release_ip_range_and_ipv6() {
    let name = "decisions_trap_and_deletions_release_ip_range_and_ipv6";
    if !privileged(name) || !available(name) {
        return;
    }
    let server = Netns::new("csd-s");
    let attacker = Netns::new("csd-a");
    veth6(
        &attacker,
        "10.77.60.2/24",
        "fd77:60::2/64",
        &server,
        "10.77.60.1/24",
        "fd77:60::1/64",
    );
    // A second attacker address, inside the range decision below (which
    // must not contain the server's own 10.77.60.1).
    attacker.run(
        "ip addr add 10.77.60.130/24 dev $(ip -o -4 addr show | awk '/10.77.60.2\\//{print $2}')",
    );
    // The attacker's IPv6 /64 must not be the server's own (that one is
    // refused): a second prefix, routed.
    attacker.run("ip -6 addr add fd77:61::2/64 dev $(ip -o -4 addr show | awk '/10.77.60.2\\//{print $2}') nodad");
    server.run("ip -6 route add fd77:61::/64 via fd77:60::2");
    let _serve = serve_in(&server);
    let mut lapi = Lapi::with_listen(
        "dec",
        &format!("127.0.0.1:{}", support::crowdsec::free_port()),
        Some(&server.name),
    );
    lapi.start();
    let sc = scene("csd");
    let cs = crowdsec_section(&lapi, &sc.dir, "tarpit-dec", false, "");
    rewrite_conf(&sc, &cs, "");
    let w = sc.watch(&server);
    let _dump = Dump(vec![(&w, &server)], &lapi);

    wait_held(&attacker, "10.77.60.1:22", false, "RST before any decision");
    // An Ip decision of type tarpit traps the host...
    lapi.cscli_ok(&[
        "decisions",
        "add",
        "--type",
        "tarpit",
        "--ip",
        "10.77.60.2",
        "--duration",
        "2h",
    ]);
    wait_held(
        &attacker,
        "10.77.60.1:22",
        true,
        "held after the tarpit decision",
    );
    let e = elements(&server, "trap4")
        .into_iter()
        .find(|e| e.0 == "10.77.60.2")
        .expect("in trap4");
    let t = e.1.expect("a timeout");
    assert!(t > 7000 && t <= 7200, "the decision's remaining time: {t}");
    // ...and deleting it releases the host.
    lapi.cscli_ok(&["decisions", "delete", "--ip", "10.77.60.2"]);
    wait_held(&attacker, "10.77.60.1:22", false, "RST after the deletion");

    // A Range: the interval set.
    lapi.cscli_ok(&[
        "decisions",
        "add",
        "--type",
        "tarpit",
        "--range",
        "10.77.60.128/25",
    ]);
    wait_held_from(
        &attacker,
        "10.77.60.130",
        "10.77.60.1:22",
        true,
        "held from inside the range",
    );
    let r = elements(&server, "trap4_net");
    assert!(!r.is_empty(), "the range is in the interval set: {r:?}");
    wait_held(&attacker, "10.77.60.1:22", false, "outside the range: RST");
    lapi.cscli_ok(&["decisions", "delete", "--range", "10.77.60.128/25"]);
    wait_held_from(
        &attacker,
        "10.77.60.130",
        "10.77.60.1:22",
        false,
        "RST after the range deletion",
    );

    // IPv6: the /64 policy (another address of the /64 is trapped too).
    lapi.cscli_ok(&[
        "decisions",
        "add",
        "--type",
        "tarpit",
        "--ip",
        "fd77:61::77",
    ]);
    wait_held_from(
        &attacker,
        "fd77:61::2",
        "[fd77:60::1]:22",
        true,
        "IPv6 /64 held",
    );
    assert!(
        elements(&server, "trap6")
            .iter()
            .any(|e| e.0 == "fd77:61::"),
        "the /64"
    );
    lapi.cscli_ok(&["decisions", "delete", "--ip", "fd77:61::77"]);
    wait_held_from(
        &attacker,
        "fd77:61::2",
        "[fd77:60::1]:22",
        false,
        "IPv6 RST after deletion",
    );

    // A `ban` decision is not ours unless configured; decisions for the
    // server's own address or its /64 are refused.
    lapi.cscli_ok(&["decisions", "add", "--type", "ban", "--ip", "10.77.60.2"]);
    lapi.cscli_ok(&["decisions", "add", "--type", "tarpit", "--ip", "10.77.60.1"]);
    lapi.cscli_ok(&["decisions", "add", "--type", "tarpit", "--ip", "fd77:60::2"]);
    // A marker decision, pulled after the others.
    lapi.cscli_ok(&[
        "decisions",
        "add",
        "--type",
        "tarpit",
        "--ip",
        "10.77.60.130",
    ]);
    wait_held_from(
        &attacker,
        "10.77.60.130",
        "10.77.60.1:22",
        true,
        "the marker decision applied",
    );
    assert!(
        connect(&attacker, "10.77.60.1:22").is_err(),
        "ban type ignored"
    );
    assert!(
        connect(&attacker, "[fd77:60::1]:22").is_err(),
        "own /64 refused"
    );
    let t4 = elements(&server, "trap4");
    assert!(
        !t4.iter()
            .any(|e| e.0 == "10.77.60.1" || e.0 == "10.77.60.2"),
        "{t4:?}"
    );
}

fn stored(sc: &Scene) -> Vec<tarpit::watcher::crowdsec::store::Stored> {
    let c = tarpit::watcher::crowdsec::store::open(&sc.db).unwrap();
    tarpit::watcher::crowdsec::store::list(
        &c,
        tarpit::watcher::state::ms(std::time::SystemTime::now()),
    )
    .unwrap()
}

fn in_set(ns: &Netns, set: &str, val: &str) -> bool {
    elements(ns, set).iter().any(|e| e.0 == val)
}

#[test]
fn bans_are_pushed_outages_lose_nothing_and_restarts_keep_every_trap() {
    let name = "bans_are_pushed_outages_lose_nothing_and_restarts_keep_every_trap";
    if !privileged(name) || !available(name) {
        return;
    }
    let server = Netns::new("csp-s");
    let attacker = Netns::new("csp-a");
    veth6(
        &attacker,
        "10.77.62.2/24",
        "fd77:62::2/64",
        &server,
        "10.77.62.1/24",
        "fd77:62::1/64",
    );
    let mut lapi = Lapi::with_listen(
        "push",
        &format!("127.0.0.1:{}", support::crowdsec::free_port()),
        Some(&server.name),
    );
    lapi.start();
    let sc = scene("csp");
    let cs = crowdsec_section(&lapi, &sc.dir, "tarpit-push", true, "");
    rewrite_conf(&sc, &cs, "");
    let mut w = sc.watch(&server);

    // The multi-ban jail bans a host: it is pushed as a tarpit decision.
    for jail in ["sshd", "postfix", "sshd"] {
        sc.append(&ban_line(jail, "10.77.62.2"));
    }
    let d = wait_for(15.0, "the pushed decision in LAPI", || {
        let d = lapi
            .decisions()
            .into_iter()
            .find(|d| d["value"] == "10.77.62.2");
        if d.is_none() {
            std::thread::sleep(Duration::from_millis(200));
        }
        d
    });
    assert_eq!(d["type"], "tarpit", "{d}");
    assert_eq!(d["scenario"], "tarpit/multi-ban", "{d}");
    let dur = tarpit::watcher::crowdsec::duration::parse(d["duration"].as_str().unwrap()).unwrap();
    assert!(dur.abs > Duration::from_secs(604_000), "a week: {dur:?}");
    // It comes back in the stream as our own: recognised, not re-pushed.
    let own = wait_for(15.0, "our decision back from the stream", || {
        let s = stored(&sc);
        if s.is_empty() {
            std::thread::sleep(Duration::from_millis(200));
        }
        s.into_iter().find(|s| s.trap == "10.77.62.2")
    });
    assert!(own.own, "{own:?}");
    // A decision of the fleet (another agent) for another host.
    lapi.cscli_ok(&["decisions", "add", "--type", "tarpit", "--ip", "10.77.62.5"]);
    wait_for(15.0, "the fleet's decision trapped", || {
        in_set(&server, "trap4", "10.77.62.5").then_some(())
    });
    let bans = sc.cli(&server, &["bans", "--json"]);
    let bans: serde_json::Value = serde_json::from_slice(&bans.stdout).unwrap();
    let origin = |h: &str| {
        bans.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["host"] == h)
            .map(|r| r["origin"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(origin("10.77.62.2"), vec!["jail"], "our own once: {bans}");
    assert_eq!(origin("10.77.62.5"), vec!["crowdsec"], "{bans}");
    // `tarpit unban` of a host CrowdSec decides says so and leaves it trapped.
    let out = sc.cli(&server, &["unban", "10.77.62.5"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("still trapped by CrowdSec decision"),
        "{text}"
    );
    assert!(in_set(&server, "trap4", "10.77.62.5"));

    // LAPI goes away while bans happen: they wait in the outbox...
    lapi.stop();
    attacker.run(
        "ip addr add 10.77.62.3/24 dev $(ip -o -4 addr show | awk '/10.77.62.2\\//{print $2}')",
    );
    for jail in ["sshd", "postfix", "sshd"] {
        sc.append(&ban_line(jail, "10.77.62.3"));
    }
    wait_for(15.0, "the local ban while LAPI is down", || {
        in_set(&server, "trap4", "10.77.62.3").then_some(())
    });
    // ...and arrive when it is back.
    lapi.start();
    wait_for(30.0, "the queued push delivered", || {
        let found = lapi.decisions().iter().any(|d| d["value"] == "10.77.62.3");
        if !found {
            std::thread::sleep(Duration::from_millis(300));
        }
        found.then_some(())
    });

    // The watcher restarted while LAPI is down, after a flushed ruleset:
    // every trap is back from the state database.
    lapi.stop();
    w.stop();
    server.run("nft flush ruleset");
    assert!(!in_set(&server, "trap4", "10.77.62.5"));
    let _w2 = sc.watch(&server);
    for h in ["10.77.62.2", "10.77.62.3", "10.77.62.5"] {
        wait_for(15.0, &format!("{h} trapped again"), || {
            in_set(&server, "trap4", h).then_some(())
        });
    }
    // LAPI was down when this watcher started: once it is back, new
    // decisions arrive.
    lapi.start();
    lapi.cscli_ok(&["decisions", "add", "--type", "tarpit", "--ip", "10.77.62.6"]);
    wait_for(20.0, "a decision after LAPI came back", || {
        in_set(&server, "trap4", "10.77.62.6").then_some(())
    });
}

/// Joins `ns` to the bridge `br` in `hub` with a veth pair; `ns` gets `cidr`.
fn bridge_port(hub: &Netns, br: &str, ns: &Netns, cidr: &str, n: u32) {
    let pid = std::process::id() % 100000;
    let (a, b) = (format!("fh{pid}x{n}"), format!("fn{pid}x{n}"));
    support::netns::sh(&format!(
        "ip link add {a} netns {} type veth peer name {b} netns {}",
        hub.name, ns.name
    ));
    hub.run(&format!(
        "ip link set {a} master {br} && ip link set {a} up"
    ));
    ns.run(&format!("ip addr add {cidr} dev {b} && ip link set {b} up"));
}

#[test]
fn the_fleet_traps_together() {
    let name = "the_fleet_traps_together";
    if !privileged(name) || !available(name) {
        return;
    }
    // One LAN: the LAPI host, servers A and B, and the attacker.
    let hub = Netns::new("csf-l");
    let a = Netns::new("csf-a");
    let b = Netns::new("csf-b");
    let x = Netns::new("csf-x");
    hub.run(
        "ip link add br0 type bridge && ip link set br0 up && ip addr add 10.77.64.1/24 dev br0",
    );
    bridge_port(&hub, "br0", &a, "10.77.64.10/24", 0);
    bridge_port(&hub, "br0", &b, "10.77.64.11/24", 1);
    bridge_port(&hub, "br0", &x, "10.77.64.2/24", 2);
    let mut lapi = Lapi::with_listen(
        "fleet",
        &format!("10.77.64.1:{}", support::crowdsec::free_port()),
        Some(&hub.name),
    );
    lapi.start();
    let _serve_a = serve_in(&a);
    let _serve_b = serve_in(&b);
    let sa = scene("csfa");
    let sb = scene("csfb");
    let cs_a = crowdsec_section(&lapi, &sa.dir, "host-a", true, "");
    let cs_b = crowdsec_section(&lapi, &sb.dir, "host-b", true, "");
    rewrite_conf(&sa, &cs_a, "");
    rewrite_conf(&sb, &cs_b, "");
    let wa = sa.watch(&a);
    let wb = sb.watch(&b);
    let _dump = Dump(vec![(&wa, &a), (&wb, &b)], &lapi);

    wait_held(&x, "10.77.64.11:22", false, "B answers RST before");
    // Three fail2ban Ban lines in host A's log...
    for jail in ["sshd", "postfix", "sshd"] {
        sa.append(&ban_line(jail, "10.77.64.2"));
    }
    wait_held(&x, "10.77.64.10:22", true, "A traps the attacker");
    // ...and host B holds the attacker's connection to its port 22 too.
    wait_held(
        &x,
        "10.77.64.11:22",
        true,
        "B traps the attacker within 15 s",
    );
    // B got it from the fleet, not from its own log, and does not push it.
    let sb_stored = stored(&sb);
    let d = sb_stored
        .iter()
        .find(|d| d.trap == "10.77.64.2")
        .expect("B stored the decision");
    assert!(!d.own, "{d:?}");
    assert_eq!(d.scenario, "tarpit/multi-ban");
    std::thread::sleep(Duration::from_secs(2));
    let n = lapi
        .decisions()
        .iter()
        .filter(|d| d["value"] == "10.77.64.2")
        .count();
    assert_eq!(n, 1, "pushed once, by A only");
}
