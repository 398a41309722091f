//! `systemctl reload tarpit-watch` is SIGHUP to a real `tarpit watch`: the
//! config is read again, jails come and go, and hits, log positions and bans
//! survive; a broken file is reported with file, line and key and the
//! running configuration stays.

mod support;

use std::path::Path;
use std::time::Duration;
use support::netns::{privileged, Netns};
use support::wait_for;
use support::watch::{ban_line, elements, wait_element, Scene};

fn hup(pid: u32) {
    let st = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// The scene's `[watch]` plus the multi-ban jail on the scene's log and,
/// optionally, a "web" jail (one hit bans) on `web_log`.
fn write_conf(sc: &Scene, web_log: Option<&Path>, extra: &str) {
    let mut t = format!(
        "[watch]\nstate_db = {:?}\npoll_interval = \"100ms\"\ncheck_interval = \"1s\"\n\n\
         [[watch.jail]]\nname = \"multi-ban\"\nlogpath = {:?}\n{extra}\n",
        sc.db.to_str().unwrap(),
        sc.log.to_str().unwrap()
    );
    if let Some(w) = web_log {
        t.push_str(&format!(
            "\n[[watch.jail]]\nname = \"web\"\nlogpath = {:?}\n\
             failregex = '^\\s*web: denied <HOST>$'\nmaxretry = 1\nbantime = \"2h\"\n",
            w.to_str().unwrap()
        ));
    }
    std::fs::write(&sc.conf, t).unwrap();
}

/// A line of the "web" log, stamped now (RFC 3339).
fn web_line(ip: &str) -> String {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    format!("{now} web: denied {ip}\n")
}

fn has(ns: &Netns, ip: &str) -> bool {
    elements(ns, "trap4").iter().any(|e| e.0 == ip)
}

#[test]
fn sighup_reloads_jails_and_keeps_hits_positions_and_bans() {
    if !privileged("sighup_reloads_jails_and_keeps_hits_positions_and_bans") {
        return;
    }
    let ns = Netns::new("wrel");
    let sc = Scene::new("wrel", "", "");
    let web = sc.dir.join("web.log");
    std::fs::write(&web, web_line("10.77.60.9")).unwrap(); // before the jail exists
    write_conf(&sc, None, "");
    let mut w = sc.watch(&ns);
    let pid = w.child.id();

    // Two of three hits, and a ban from the start.
    for _ in 0..3 {
        sc.append(&ban_line("sshd", "10.77.60.1"));
    }
    wait_element(&ns, "trap4", "10.77.60.1", 10.0);
    sc.append(&ban_line("sshd", "10.77.60.2"));
    sc.append(&ban_line("sshd", "10.77.60.2"));
    let hits = || {
        let st = tarpit::watcher::State::open(&sc.db).unwrap();
        st.hits("multi-ban", &"10.77.60.2".parse().unwrap())
            .unwrap()
            .len()
    };
    wait_for(10.0, "two hits in the state", || {
        (hits() == 2).then_some(())
    });

    // Reload with a second jail: its existing log is read from `findtime`
    // back, like at a first start, so the line already there counts.
    write_conf(&sc, Some(&web), "");
    hup(pid);
    let r = wait_for(10.0, "reloaded", || {
        w.messages("configuration reloaded").into_iter().next()
    });
    assert_eq!(r["added"], "[\"web\"]", "{r}");
    let (_, t, _) = wait_element(&ns, "trap4", "10.77.60.9", 10.0);
    assert!(t.unwrap() > 3600, "the web jail's 2h ban: {t:?}");
    // The multi-ban hits survived the reload and its log was not re-read
    // (re-reading would have counted 10.77.60.2 twice more, and banned it).
    assert_eq!(hits(), 2, "hits lost or counted again");
    assert!(!has(&ns, "10.77.60.2"), "hits were counted again");
    sc.append(&ban_line("sshd", "10.77.60.2"));
    wait_element(&ns, "trap4", "10.77.60.2", 10.0);

    // A broken file: named with line and key; the old config keeps running.
    std::fs::write(
        &sc.conf,
        std::fs::read_to_string(&sc.conf)
            .unwrap()
            .replace("maxretry = 1\n", "maxretry = 1\nmaxretries = 2\n"),
    )
    .unwrap();
    let line = std::fs::read_to_string(&sc.conf)
        .unwrap()
        .lines()
        .position(|l| l == "maxretries = 2")
        .unwrap()
        + 1;
    hup(pid);
    let e = wait_for(10.0, "the reload error", || {
        w.messages("reload failed").into_iter().next()
    });
    let msg = e["fields"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
        + e["message"].as_str().unwrap_or_default();
    let want = format!("{}:{line}:", sc.conf.display());
    assert!(
        msg.contains(&want) && msg.contains("watch.jail.maxretries"),
        "{e}"
    );
    assert!(w.child.try_wait().unwrap().is_none(), "watch exited");
    support::watch::append(&web, &web_line("10.77.60.10"));
    wait_element(&ns, "trap4", "10.77.60.10", 10.0);

    // Remove the web jail: its log is no longer read; the bans it made stay.
    write_conf(&sc, None, "");
    hup(pid);
    wait_for(10.0, "second reload", || {
        (w.messages("configuration reloaded").len() == 2).then_some(())
    });
    support::watch::append(&web, &web_line("10.77.60.11"));
    for _ in 0..3 {
        sc.append(&ban_line("sshd", "10.77.60.12"));
    }
    // The multi-ban log is polled in the same ticks as the web log would be.
    wait_element(&ns, "trap4", "10.77.60.12", 10.0);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!has(&ns, "10.77.60.11"), "a removed jail still bans");
    for ip in ["10.77.60.1", "10.77.60.2", "10.77.60.9", "10.77.60.10"] {
        assert!(has(&ns, ip), "{ip}: ban lost on reload");
    }
    // One restore at start; reloads never rebuilt the ruleset.
    assert_eq!(w.messages("active bans restored").len(), 1);
    w.stop();
}
