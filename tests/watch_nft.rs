//! `tarpit watch` against the real `nft`, each test in a network namespace
//! of its own: bans appear as set elements with timeouts, a restart puts
//! them back with the time they have left, a flushed ruleset is rebuilt, a
//! failing nft is retried without losing anything, and rotated logs are
//! followed. The addresses are only text in log lines; nothing is contacted.

mod support;

use std::time::{Duration, Instant};
use support::netns::{privileged, Netns};
use support::wait_for;
use support::watch::{append, ban_line, elements, wait_element, Scene};

const WEEK: u64 = 604_800;

#[test]
fn bans_appear_with_timeouts_and_restart_restores_remaining_time() {
    if !privileged("bans_appear_with_timeouts_and_restart_restores_remaining_time") {
        return;
    }
    let ns = Netns::new("wnft");
    let sc = Scene::new("wnft", "", "");
    let mut w = sc.watch(&ns);
    for _ in 0..3 {
        sc.append(&ban_line("sshd", "10.77.1.5"));
        sc.append(&ban_line("nginx", "fd77:1:2:3::99"));
    }
    // Two bans of another host are not enough; a Restore Ban does not count.
    for _ in 0..2 {
        sc.append(&ban_line("sshd", "10.77.1.6"));
    }
    sc.append(&ban_line("sshd", "10.77.1.6").replace("] Ban", "] Restore Ban"));
    let e4 = wait_element(&ns, "trap4", "10.77.1.5", 10.0);
    assert!(
        matches!(e4.1, Some(t) if t > WEEK - 30 && t <= WEEK),
        "{e4:?}"
    );
    assert!(e4.2.is_some_and(|x| x <= WEEK), "{e4:?}");
    // IPv6 is trapped per /64.
    let e6 = wait_element(&ns, "trap6", "fd77:1:2:3::", 10.0);
    assert!(e6.1.is_some_and(|t| t > WEEK - 30), "{e6:?}");
    assert!(!elements(&ns, "trap4").iter().any(|e| e.0 == "10.77.1.6"));
    w.stop();

    // A reboot: the ruleset is gone. Time passes; the watcher starts again.
    ns.run("nft flush ruleset");
    std::thread::sleep(Duration::from_secs(3));
    let mut w = sc.watch(&ns);
    let e4 = wait_element(&ns, "trap4", "10.77.1.5", 10.0);
    let t = e4.1.unwrap();
    assert!(
        t <= WEEK - 3 && t > WEEK - 60,
        "restored with remaining time: {e4:?}"
    );
    wait_element(&ns, "trap6", "fd77:1:2:3::", 10.0);
    let restored = w.messages("active bans restored");
    assert!(
        restored.iter().any(|v| v["restored"] == 2),
        "one batch of 2: {restored:?}"
    );
    // The old lines were not read again: 10.77.1.6's two hits plus one new
    // line make the third, and it is banned exactly now.
    sc.append(&ban_line("sshd", "10.77.1.6"));
    wait_element(&ns, "trap4", "10.77.1.6", 10.0);
    w.stop();

    // `tarpit bans --json` shows all three.
    let out = sc.cli(&ns, &["bans", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hosts: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["host"].as_str().unwrap())
        .collect();
    assert_eq!(hosts.len(), 3, "{hosts:?}");
    assert!(hosts.contains(&"fd77:1:2:3::/64"), "{hosts:?}");
}

#[test]
fn flushed_ruleset_is_rebuilt_and_manual_bans_work() {
    if !privileged("flushed_ruleset_is_rebuilt_and_manual_bans_work") {
        return;
    }
    let ns = Netns::new("wflush");
    let sc = Scene::new("wflush", "", "");
    let w = sc.watch(&ns);
    // A second watcher on the same state refuses to start.
    let out = sc.cli(&ns, &["watch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another `tarpit watch` is running"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A manual ban while the watcher runs.
    let out = sc.cli(&ns, &["ban", "10.77.2.9", "--for", "2h"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e = wait_element(&ns, "trap4", "10.77.2.9", 5.0);
    assert!(e.1.is_some_and(|t| t > 7000 && t <= 7200), "{e:?}");
    // Loopback is refused.
    let out = sc.cli(&ns, &["ban", "127.0.0.1"]);
    assert_eq!(out.status.code(), Some(2));

    let t0 = Instant::now();
    ns.run("nft flush ruleset");
    let e = wait_element(&ns, "trap4", "10.77.2.9", 30.0);
    eprintln!("ruleset rebuilt {:?} after the flush", t0.elapsed());
    assert!(e.1.is_some_and(|t| t <= 7200));
    wait_for(5.0, "rebuild logged", || {
        (!w.messages("rebuilding").is_empty()).then_some(())
    });

    // Unban while it runs: gone, and the watcher does not put it back.
    let out = sc.cli(&ns, &["unban", "10.77.2.9"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!elements(&ns, "trap4").iter().any(|e| e.0 == "10.77.2.9"));
    ns.run("nft flush ruleset");
    wait_for(30.0, "rebuilt table", || {
        ns.try_run("nft list set inet tarpit trap4")
            .status
            .success()
            .then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(!elements(&ns, "trap4").iter().any(|e| e.0 == "10.77.2.9"));
}

#[test]
fn failing_nft_keeps_state_and_is_retried() {
    if !privileged("failing_nft_keeps_state_and_is_retried") {
        return;
    }
    let ns = Netns::new("wfail");
    // An nft that fails while a flag file exists, then behaves.
    let sc0 = Scene::new("wfail-probe", "", "");
    let flag = sc0.dir.join("broken");
    let wrapper = sc0.dir.join("nft-wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ -e {f} ]; then echo 'simulated nft failure' >&2; exit 1; fi\nexec nft \"$@\"\n",
            f = flag.display()
        ),
    )
    .unwrap();
    support::netns::sh(&format!("chmod +x {}", wrapper.display()));
    std::fs::write(&flag, "").unwrap();
    let sc = Scene::new(
        "wfail",
        &format!("nft = {:?}", wrapper.to_str().unwrap()),
        "",
    );
    let mut w = sc.watch(&ns);
    for _ in 0..3 {
        sc.append(&ban_line("sshd", "10.77.3.3"));
    }
    // The ban is decided and stored although nft fails.
    wait_for(10.0, "ban in the state db", || {
        let out = sc.cli(&ns, &["bans", "--json"]);
        String::from_utf8_lossy(&out.stdout)
            .contains("10.77.3.3")
            .then_some(())
    });
    assert!(!w.messages("nftables failed").is_empty());
    assert!(w.child.try_wait().unwrap().is_none(), "still running");
    assert!(elements(&ns, "trap4").is_empty());
    // nft recovers: applied on a retry (back-off 1, 2, 4 ... s).
    std::fs::remove_file(&flag).unwrap();
    wait_element(&ns, "trap4", "10.77.3.3", 40.0);
}

#[test]
fn rotated_logs_are_followed_end_to_end() {
    if !privileged("rotated_logs_are_followed_end_to_end") {
        return;
    }
    let ns = Netns::new("wrot");
    let sc = Scene::new("wrot", "", "");
    let _w = sc.watch(&ns);
    // Waits until the watcher has counted `n` hits of `ip` (read from the
    // state database, which WAL lets us read while it writes).
    let settle_hits = |ip: &str, n: usize| {
        let t: tarpit::watcher::Target = ip.parse().unwrap();
        wait_for(10.0, &format!("{n} hits of {ip}"), || {
            let st = tarpit::watcher::State::open(&sc.db).ok()?;
            (st.hits("multi-ban", &t).ok()?.len() == n).then_some(())
        });
    };
    let settle = || std::thread::sleep(Duration::from_millis(300));

    // rename + create: two hits before, one after.
    sc.append(&ban_line("sshd", "10.77.4.1"));
    sc.append(&ban_line("sshd", "10.77.4.1"));
    settle_hits("10.77.4.1", 2);
    std::fs::rename(&sc.log, sc.dir.join("fail2ban.log.1")).unwrap();
    sc.append(&ban_line("sshd", "10.77.4.1"));
    wait_element(&ns, "trap4", "10.77.4.1", 10.0);

    // copytruncate.
    sc.append(&ban_line("sshd", "10.77.4.2"));
    sc.append(&ban_line("sshd", "10.77.4.2"));
    settle_hits("10.77.4.2", 2);
    std::fs::copy(&sc.log, sc.dir.join("fail2ban.log.2")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&sc.log)
        .unwrap()
        .set_len(0)
        .unwrap();
    settle();
    sc.append(&ban_line("sshd", "10.77.4.2"));
    wait_element(&ns, "trap4", "10.77.4.2", 10.0);

    // delete, a while without the file, recreate.
    sc.append(&ban_line("sshd", "10.77.4.3"));
    sc.append(&ban_line("sshd", "10.77.4.3"));
    settle_hits("10.77.4.3", 2);
    std::fs::remove_file(&sc.log).unwrap();
    settle();
    append(&sc.log, &ban_line("sshd", "10.77.4.3"));
    wait_element(&ns, "trap4", "10.77.4.3", 10.0);

    // Junk does not stop it: binary, invalid UTF-8, a 100 KiB line.
    let mut junk = vec![0u8, 1, 2, 0xff, b'\n'];
    junk.extend(std::iter::repeat_n(b'x', 100 * 1024));
    junk.extend_from_slice(b"\n\xc3\x28 NOTICE [sshd] Ban 10.77.4.4\n");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&sc.log)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &junk))
        .unwrap();
    for _ in 0..3 {
        sc.append(&ban_line("sshd", "10.77.4.5"));
    }
    wait_element(&ns, "trap4", "10.77.4.5", 10.0);
    assert!(!elements(&ns, "trap4").iter().any(|e| e.0 == "10.77.4.4"));
}

#[test]
fn ten_thousand_bans_restore_in_one_batch() {
    if !privileged("ten_thousand_bans_restore_in_one_batch") {
        return;
    }
    let ns = Netns::new("w10k");
    // An nft that logs each invocation's arguments, to count transactions.
    let sc0 = Scene::new("w10k-wrap", "", "");
    let calls = sc0.dir.join("calls");
    let wrapper = sc0.dir.join("nft-wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$*\" >> {}\nexec nft \"$@\"\n",
            calls.display()
        ),
    )
    .unwrap();
    support::netns::sh(&format!("chmod +x {}", wrapper.display()));
    let sc = Scene::new(
        "w10k",
        &format!("nft = {:?}", wrapper.to_str().unwrap()),
        "",
    );
    {
        let mut st = tarpit::watcher::State::open(&sc.db).unwrap();
        let now = tarpit::watcher::state::ms(std::time::SystemTime::now());
        for i in 0..10_000u32 {
            let ip = std::net::Ipv4Addr::new(10, 77, 100 + (i / 250) as u8, (i % 250) as u8 + 1);
            let t = tarpit::watcher::Target::V4(ip);
            st.ban(
                &t,
                "multi-ban",
                Duration::from_secs(3600 + u64::from(i)),
                now,
            )
            .unwrap();
        }
    }
    let w = sc.watch(&ns);
    let msg = wait_for(30.0, "restore message", || {
        w.messages("active bans restored").into_iter().next()
    });
    assert_eq!(msg["restored"], 10_000, "{msg}");
    eprintln!("restored 10,000 bans in one nft batch: {} ms", msg["ms"]);
    let n = elements(&ns, "trap4").len();
    assert_eq!(n, 10_000);
    let log = std::fs::read_to_string(&calls).unwrap();
    let batches: Vec<&str> = log.lines().filter(|l| l.contains("-f")).collect();
    assert_eq!(batches.len(), 1, "one nft transaction: {log}");
}
