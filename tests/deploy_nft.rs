//! deploy/nftables/tarpit.nft, loaded with the real `nft` in a namespace the
//! test creates: it builds the trap sets and the redirect rule, loading it
//! again keeps the trapped hosts and does not duplicate rules, the redirect
//! really sends a trapped host's port-22 connection to port 2222, and the
//! commented decoy-port example is valid once uncommented.

mod support;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;
use support::netns::{privileged, veth, Netns};

fn include() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/nftables/tarpit.nft")
}

fn list(ns: &Netns) -> String {
    String::from_utf8(ns.run("nft list table inet tarpit").stdout).unwrap()
}

#[test]
fn include_builds_sets_and_reloads_without_losing_bans() {
    if !privileged("include_builds_sets_and_reloads_without_losing_bans") {
        return;
    }
    let ns = Netns::new("nftinc");
    let f = include();
    ns.run(&format!("nft -f {}", f.display()));
    ns.run("nft add element inet tarpit trap4 { 10.77.31.9 timeout 1h }");
    ns.run("nft add element inet tarpit trap6 { fd77:31:: timeout 1h }");
    // A second load, as an nftables reload or fail2ban's actionstart does.
    ns.run(&format!("nft -f {}", f.display()));
    let t = list(&ns);
    assert!(t.contains("10.77.31.9 timeout 1h"), "{t}");
    assert!(t.contains("fd77:31:: timeout 1h"), "{t}");
    assert_eq!(t.matches("redirect to :2222").count(), 2, "{t}");
    assert!(t.contains("priority dstnat - 10"), "{t}");
    for set in ["trap4", "trap6"] {
        let j = String::from_utf8(ns.run(&format!("nft -j list set inet tarpit {set}")).stdout)
            .unwrap();
        assert!(j.contains("\"timeout\""), "{set} has no timeout flag: {j}");
    }
}

#[test]
fn decoy_example_is_valid_when_uncommented() {
    if !privileged("decoy_example_is_valid_when_uncommented") {
        return;
    }
    let text = std::fs::read_to_string(include()).unwrap();
    let decoy = "# fib daddr type local tcp dport { 23, 3389, 5900 } redirect to :2222";
    assert!(text.contains(decoy), "decoy example missing");
    let enabled = text.replace(
        decoy,
        "fib daddr type local tcp dport { 23, 3389, 5900 } redirect to :2222",
    );
    let ns = Netns::new("nftdec");
    let path = std::env::temp_dir().join(format!("tarpit-decoy-{}.nft", std::process::id()));
    std::fs::write(&path, enabled).unwrap();
    ns.run(&format!("nft -f {}", path.display()));
    let t = list(&ns);
    let _ = std::fs::remove_file(&path);
    assert!(
        t.contains("fib daddr type local tcp dport { 23, 3389, 5900 } redirect to :2222"),
        "{t}"
    );
}

#[test]
fn trapped_host_is_redirected_untrapped_is_not() {
    if !privileged("trapped_host_is_redirected_untrapped_is_not") {
        return;
    }
    let server = Netns::new("nftsrv");
    let attacker = Netns::new("nftatk");
    let other = Netns::new("nftoth");
    veth(&server, "10.77.32.1/24", &attacker, "10.77.32.2/24");
    veth(&server, "10.77.33.1/24", &other, "10.77.33.2/24");
    server.run(&format!("nft -f {}", include().display()));
    server.run("nft add element inet tarpit trap4 { 10.77.32.2 timeout 1h }");

    // Port 2222 stands in for tarpit serve; nothing listens on 22.
    let l = server.in_thread(|| TcpListener::bind("10.77.32.1:2222").unwrap());
    l.set_nonblocking(false).unwrap();
    let got = attacker.in_thread(|| {
        TcpStream::connect_timeout(&"10.77.32.1:22".parse().unwrap(), Duration::from_secs(3)).map(
            |mut s| {
                let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
                let _ = s.read(&mut [0u8; 1]);
            },
        )
    });
    assert!(
        got.is_ok(),
        "trapped host's connection to :22 was not redirected: {got:?}"
    );
    let (_, peer) = l.accept().unwrap();
    assert_eq!(peer.ip().to_string(), "10.77.32.2");

    // A host outside the set gets the real answer: RST from the closed port.
    let refused = other.in_thread(|| {
        TcpStream::connect_timeout(&"10.77.33.1:22".parse().unwrap(), Duration::from_secs(3))
            .map(|_| ())
            .map_err(|e| e.kind())
    });
    assert_eq!(refused, Err(std::io::ErrorKind::ConnectionRefused));
}

/// The include and `tarpit watch` build the very same table, and either can
/// come first: the watcher's ensure on top of the include changes nothing
/// and keeps the trapped hosts.
#[test]
fn include_is_exactly_the_watchers_ruleset() {
    if !privileged("include_is_exactly_the_watchers_ruleset") {
        return;
    }
    use tarpit::firewall::{Firewall, NftConfig};
    let ensure = |ns: &Netns| {
        Firewall::new(NftConfig {
            netns: Some(ns.name.clone()),
            ..NftConfig::default()
        })
        .ensure()
        .expect("watcher's ensure");
    };
    let by_include = Netns::new("nfteqa");
    let by_watcher = Netns::new("nfteqb");
    by_include.run(&format!("nft -f {}", include().display()));
    ensure(&by_watcher);
    assert_eq!(list(&by_include), list(&by_watcher));

    by_include.run("nft add element inet tarpit trap4 { 10.77.34.9 timeout 1h }");
    ensure(&by_include);
    let t = list(&by_include);
    assert!(t.contains("10.77.34.9 timeout 1h"), "{t}");
    assert_eq!(t.matches("redirect to :2222").count(), 2, "{t}");
    // And the other way round: the include over the watcher's table.
    let before = list(&by_watcher);
    by_watcher.run(&format!("nft -f {}", include().display()));
    assert_eq!(list(&by_watcher), before);
}
