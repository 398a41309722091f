//! `cargo bench --bench nft_restore`: how long `tarpit watch` needs to put
//! 10,000 bans back into nftables after a restart or a flushed ruleset
//! (target: under 1 s; fail2ban needs minutes for 20k).
//!
//! Needs root, `ip` and `nft`: it works in a network namespace of its own
//! (`tp-bench-<pid>`, removed at the end, even on panic). Without them it
//! prints why and exits. `NFT_BENCH_N` changes the count (capped at 100,000).
//! Prints: restore into an empty namespace, restore over the same 10,000
//! (the restart case: every timeout refreshed), `list` of all elements,
//! `intact`, and a single-ban round trip.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::time::{Duration, Instant};

use tarpit::firewall::{Ban, Firewall, NftConfig, Target};

struct Ns(String);

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn main() {
    let is_root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false);
    if !is_root {
        println!("nft_restore: SKIP (needs root to create a network namespace)");
        return;
    }
    let name = format!("tp-bench-{}", std::process::id());
    match Command::new("ip").args(["netns", "add", &name]).output() {
        Ok(o) if o.status.success() => {}
        other => {
            println!("nft_restore: SKIP (ip netns add failed: {other:?})");
            return;
        }
    }
    let ns = Ns(name);
    let n: u32 = std::env::var("NFT_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
        .min(100_000);
    let fw = Firewall::new(NftConfig {
        netns: Some(ns.0.clone()),
        ..NftConfig::default()
    });
    let bans: Vec<Ban> = (0..n)
        .map(|i| {
            // 60 % IPv4 (10.77.0.0/16 and up), 40 % IPv6 /64s in fd77::/16.
            let target = if i % 5 < 3 {
                Target::V4(Ipv4Addr::from(0x0a4d_0000 + i))
            } else {
                let a = Ipv6Addr::new(0xfd77, 0x20, (i >> 16) as u16, i as u16, 0, 0, 0, 1);
                Target::from_ip(IpAddr::V6(a), 64)
            };
            Ban {
                target,
                timeout: Duration::from_secs(86_400 + u64::from(i)),
            }
        })
        .collect();

    let time = |what: &str, f: &dyn Fn()| {
        let t0 = Instant::now();
        f();
        let s = t0.elapsed().as_secs_f64();
        println!("nft_restore: {what}: {s:.3} s");
        s
    };
    let before = fw.invocations();
    let fresh = time(
        &format!("restore {n} bans into an empty namespace"),
        &|| fw.restore(&bans).expect("restore"),
    );
    let mut again = Vec::new();
    for round in 1..=3 {
        again.push(time(
            &format!("restore {n} bans over existing ones (round {round})"),
            &|| fw.restore(&bans).expect("restore again"),
        ));
    }
    println!(
        "nft_restore: nft runs for the 4 restores: {}",
        fw.invocations() - before
    );
    let listed = std::cell::Cell::new(0);
    time(&format!("list {n} elements (nft -j list)"), &|| {
        listed.set(fw.list().expect("list").len())
    });
    assert_eq!(listed.get(), n as usize, "all bans are in the sets");
    time("intact()", &|| assert!(fw.intact().expect("intact")));
    time("ban of one host", &|| {
        fw.ban(&[Ban {
            target: Target::V4(Ipv4Addr::new(10, 78, 0, 1)),
            timeout: Duration::from_secs(60),
        }])
        .expect("ban")
    });
    again.sort_by(f64::total_cmp);
    println!(
        "nft_restore: RESULT {n} bans: fresh {fresh:.3} s, refresh median {:.3} s (target < 1 s)",
        again[again.len() / 2]
    );
}
