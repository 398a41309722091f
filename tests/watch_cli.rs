//! The watch-side commands that need no root: check-config, test-regex and
//! `watch --dry-run` (which prints nft batches instead of running them).
//! Addresses in the logs are only text; nothing is contacted.

mod support;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use support::watch::{append, ban_line};
use support::{bin, wait_for};

struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
fn tmp(tag: &str) -> Dir {
    let d = std::env::temp_dir().join(format!("tarpit-wcli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Dir(d)
}

#[test]
fn check_config_names_file_line_and_key() {
    let d = tmp("cc");
    let conf = d.0.join("t.toml");
    std::fs::write(
        &conf,
        "[watch]\nport = 2222\n\n[[watch.jail]]\nname = \"a\"\nmaxretrys = 3\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .arg("--config")
        .arg(&conf)
        .arg("check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:6: key `watch.jail.maxretrys`", conf.display())),
        "{err}"
    );

    std::fs::write(
        &conf,
        "[[watch.jail]]\nname = \"a\"\nfailregex = [\n  '^x <HOST>$',\n  '^Failed from \\S+$',\n]\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .arg("--config")
        .arg(&conf)
        .arg("check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":5: key `watch.jail.failregex`"), "{err}");
    assert!(err.contains("<HOST>"), "{err}");

    std::fs::write(
        &conf,
        "[[watch.jail]]\nname = \"a\"\nbantime = \"forever\"\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .arg("--config")
        .arg(&conf)
        .arg("check-config")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":3: key `watch.jail.bantime`"), "{err}");

    std::fs::write(&conf, "[watch]\n[[watch.jail]]\nname = \"ok\"\n").unwrap();
    let out = Command::new(bin())
        .arg("--config")
        .arg(&conf)
        .arg("check-config")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("jail ok"));
}

#[test]
fn check_config_warns_about_filters_attackers_can_steer() {
    let d = tmp("lint");
    let conf = d.0.join("t.toml");
    std::fs::write(
        &conf,
        "[[watch.jail]]\nname = \"pam\"\nlogpath = \"/var/log/auth.log\"\n\
         failregex = '^\\S+ sshd\\[[0-9]+\\]: pam_unix\\(sshd:auth\\): authentication failure;.* rhost=<HOST>'\n\
         ignoreregex = 'user=backup'\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .arg("--config")
        .arg(&conf)
        .arg("check-config")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8_lossy(&out.stdout);
    let warnings: Vec<&str> = s.lines().filter(|l| l.contains("warning:")).collect();
    assert_eq!(warnings.len(), 2, "{s}");
    assert!(
        warnings[0].contains("greedy .*") && warnings[0].contains("$"),
        "{s}"
    );
    assert!(
        warnings[1].contains("ignoreregex") && warnings[1].contains("user=backup"),
        "{s}"
    );
}

#[test]
fn test_regex_reports_hits_and_who_would_be_banned() {
    let d = tmp("tr");
    let log = d.0.join("fail2ban.log");
    for _ in 0..3 {
        append(&log, &ban_line("sshd", "203.0.113.7"));
    }
    append(&log, &ban_line("sshd", "203.0.113.8"));
    append(&log, &ban_line("multi-ban", "203.0.113.8"));
    append(
        &log,
        &ban_line("sshd", "203.0.113.8").replace("] Ban", "] Unban"),
    );
    append(
        &log,
        "Jan 15 10:23:45 web1 sshd[99]: Invalid user NOTICE [sshd] Ban 203.0.113.9 from 10.77.0.5\n",
    );
    append(&log, "\u{0}\u{1}binary\n");
    let out = Command::new(bin())
        .arg("test-regex")
        .arg(&log)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("Lines: 8 read, 4 matched"), "{s}");
    assert!(s.contains("1 by this jail's own bans"), "{s}");
    assert!(s.contains("1 binary"), "{s}");
    let line = |h: &str| s.lines().find(|l| l.contains(h)).map(str::to_string);
    assert!(
        line("203.0.113.7").unwrap().contains("would be banned"),
        "{s}"
    );
    assert!(
        !line("203.0.113.8").unwrap().contains("would be banned"),
        "{s}"
    );
    assert!(line("203.0.113.9").is_none(), "injected address: {s}");
    assert!(s.contains("Would ban 1 host(s)"), "{s}");

    let out = Command::new(bin())
        .args(["test-regex", "--jail", "nope"])
        .arg(&log)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn watch_dry_run_prints_batches_and_needs_no_root() {
    let d = tmp("dry");
    let log = d.0.join("fail2ban.log");
    let conf = d.0.join("t.toml");
    std::fs::write(
        &conf,
        format!(
            "[watch]\nport = 2299\npoll_interval = \"100ms\"\nstate_db = \"/nonexistent/never/written.db\"\n\
             [[watch.jail]]\nlogpath = {:?}\n",
            log.to_str().unwrap()
        ),
    )
    .unwrap();
    let mut child = Command::new(bin())
        .arg("--config")
        .arg(&conf)
        .args(["watch", "--dry-run"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut so = child.stdout.take().unwrap();
    let buf = Arc::new(Mutex::new(String::new()));
    let b2 = buf.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = so.read(&mut chunk) {
            if n == 0 {
                break;
            }
            b2.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    });
    wait_for(10.0, "ruleset batch", || {
        buf.lock()
            .unwrap()
            .contains("redirect to :2299")
            .then_some(())
    });
    for _ in 0..3 {
        append(&log, &ban_line("sshd", "203.0.113.50"));
    }
    wait_for(10.0, "element batch", || {
        buf.lock()
            .unwrap()
            .contains("add element inet tarpit trap4 { 203.0.113.50 timeout 604800s }")
            .then_some(())
    });
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let st = wait_for(10.0, "exit", || child.try_wait().ok().flatten());
    assert!(st.success());
    assert!(!std::path::Path::new("/nonexistent/never").exists());
}
