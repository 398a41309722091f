//! The units' `SystemCallFilter=@system-service` + `~@privileged` must allow
//! every system call the daemons really make, or systemd kills them (EPERM at
//! best). Without a systemd to run the units here, the test runs each daemon
//! the way its unit does, as an unprivileged user with only the unit's
//! ambient capability (setpriv: none for serve, CAP_NET_ADMIN for watch),
//! records the calls with strace while it works (connections held, a peer
//! closing, SQLite history, the control socket, metrics, nft batches run by
//! the watcher, shutdown) and checks them against the sets
//! `systemd-analyze syscall-filter` defines. That the watcher's bans land
//! also proves CAP_NET_ADMIN is all it needs.

mod support;

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::netns::{privileged, which, Netns};
use support::{bin, is_root, wait_for};

fn tools(test: &str) -> bool {
    if is_root() && which("strace") && which("setpriv") && which("systemd-analyze") {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: needs root, strace, setpriv and systemd-analyze in CI (tests/run-all.sh installs them)");
    }
    eprintln!("SKIP {test}: needs root, strace and systemd-analyze");
    false
}

/// All system calls in a `systemd-analyze syscall-filter` group, nested
/// groups expanded.
fn group(name: &str, seen: &mut BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if !seen.insert(name.to_string()) {
        return out;
    }
    let o = Command::new("systemd-analyze")
        .args(["syscall-filter", name])
        .output()
        .expect("systemd-analyze syscall-filter");
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    for l in text.lines().skip(1) {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if l.starts_with('@') {
            out.extend(group(l, seen));
        } else {
            out.insert(l.to_string());
        }
    }
    out
}

/// What the units allow: `@system-service` minus `@privileged`.
fn allowed() -> BTreeSet<String> {
    let allow = group("@system-service", &mut BTreeSet::new());
    let deny = group("@privileged", &mut BTreeSet::new());
    assert!(allow.contains("accept4") && deny.contains("setuid"));
    allow.difference(&deny).cloned().collect()
}

/// System call names in an `strace -f -o` file (one file, all processes).
fn traced(path: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            // "1234  name(args..." or "1234  <... name resumed>..."
            let rest = l.split_once(' ')?.1.trim_start();
            if rest.starts_with("<...") {
                let name = rest.trim_start_matches("<...").split_whitespace().next()?;
                return Some(name.to_string());
            }
            let name = rest.split('(').next()?;
            (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                .then(|| name.to_string())
        })
        .collect()
}

/// The traced program's pid: strace's child that runs `tarpit` (strace
/// forks short-lived probes of its own at start).
fn tracee(strace: &Child) -> u32 {
    wait_for(10.0, "strace's tarpit child", || {
        let kids = std::fs::read_to_string(format!(
            "/proc/{}/task/{}/children",
            strace.id(),
            strace.id()
        ))
        .ok()?;
        kids.split_whitespace()
            .filter_map(|k| k.parse::<u32>().ok())
            .find(|k| {
                std::fs::read_to_string(format!("/proc/{k}/comm"))
                    .is_ok_and(|c| c.trim() == "tarpit")
            })
    })
}

/// Kills what is left of the traced daemon if the test fails midway.
struct Reap(Vec<u32>);

impl Drop for Reap {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = Command::new("kill")
                .args(["-KILL", &p.to_string()])
                .output();
        }
    }
}

fn term_and_wait(mut strace: Child, pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let st = wait_for(15.0, "traced daemon to exit", || {
        strace.try_wait().ok().flatten()
    });
    assert!(st.success(), "strace/daemon exit status {st}");
}

fn check(what: &str, trace: &Path) {
    let used = traced(trace);
    assert!(used.len() > 20, "{what}: too few calls traced: {used:?}");
    let allow = allowed();
    let denied: Vec<_> = used.difference(&allow).collect();
    println!(
        "{what}: {} distinct system calls, all allowed: {}",
        used.len(),
        denied.is_empty()
    );
    assert!(
        denied.is_empty(),
        "{what} makes system calls the unit's SystemCallFilter forbids: {denied:?}"
    );
}

/// A directory the unprivileged user can write, holding a copy of the
/// binary it can execute (the build tree may not be reachable for it).
fn scratch(tag: &str) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let d = std::env::temp_dir().join(format!("tarpit-sys-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
    let b = d.join("tarpit");
    std::fs::copy(bin(), &b).unwrap();
    std::fs::set_permissions(&b, std::fs::Permissions::from_mode(0o755)).unwrap();
    (d, b)
}

/// `setpriv` to `nobody`, keeping only `caps` (as ambient capabilities, the
/// way the units grant them), then strace writing to `trace`.
fn as_unit_user(c: &mut Command, caps: &[&str], trace: &Path) {
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
    if !caps.is_empty() {
        let list = caps
            .iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(",");
        c.arg(format!("--inh-caps={list}"))
            .arg(format!("--ambient-caps={list}"));
    }
    c.args(["strace", "-f", "-qq", "-o"]).arg(trace);
}

#[test]
fn serve_stays_inside_the_units_syscall_filter() {
    if !tools("serve_stays_inside_the_units_syscall_filter") {
        return;
    }
    let (dir, tarpit) = scratch("serve");
    let trace = dir.join("trace");
    let mut c = Command::new("setpriv");
    as_unit_user(&mut c, &[], &trace);
    let strace = c
        .arg(&tarpit)
        .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
        .arg("--control")
        .arg(dir.join("control.sock"))
        .arg("--history")
        .arg(dir.join("history.db"))
        .args([
            "--metrics",
            "127.0.0.1:0",
            "--lifetime-min",
            "1s",
            "--lifetime-max",
            "1s",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("strace");
    let mut strace = strace;
    let pid = tracee(&strace);
    let _reap = Reap(vec![pid, strace.id()]);
    // The port it got, from its JSON log (stderr passes through strace).
    let err = strace.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let port: u16 = wait_for(10.0, "listening line", || {
        while let Ok(l) = rx.try_recv() {
            seen.push(l);
        }
        seen.iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["message"] == "listening")
            .find_map(|v| v["listener"].as_str()?.rsplit_once(':')?.1.parse().ok())
    });
    let mut held: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    drop(held.pop()); // a peer that closes
                      // Lifetime 1 s: the engine's release path and history writes run.
    std::thread::sleep(Duration::from_millis(2500));
    let _ = Command::new(&tarpit)
        .args(["stats", "--control"])
        .arg(dir.join("control.sock"))
        .output();
    term_and_wait(strace, pid);
    check("tarpit serve", &trace);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn watch_and_its_nft_stay_inside_the_units_syscall_filter() {
    if !tools("watch_and_its_nft_stay_inside_the_units_syscall_filter")
        || !privileged("watch_and_its_nft_stay_inside_the_units_syscall_filter")
    {
        return;
    }
    let ns = Netns::new("sysw");
    let (dir, tarpit) = scratch("watch");
    let log = dir.join("fail2ban.log");
    std::fs::write(&log, "").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let conf = dir.join("tarpit.toml");
    std::fs::write(
        &conf,
        format!(
            "[watch]\nstate_db = {:?}\npoll_interval = \"100ms\"\n\n[[watch.jail]]\nname = \"multi-ban\"\nlogpath = {:?}\n",
            dir.join("state.db").display().to_string(),
            log.display().to_string()
        ),
    )
    .unwrap();
    let trace = dir.join("trace");
    // Inside the namespace, so the watcher and its nft run there.
    let mut c = ns.command("setpriv");
    as_unit_user(&mut c, &["net_admin"], &trace);
    let strace = c
        .arg(&tarpit)
        .args(["--log-format", "json", "--config"])
        .arg(&conf)
        .arg("watch")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("strace");
    let pid = tracee(&strace);
    let _reap = Reap(vec![pid, strace.id()]);
    wait_for(15.0, "the watcher's table", || {
        ns.try_run("nft list table inet tarpit")
            .status
            .success()
            .then_some(())
    });
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    for jail in ["sshd", "postfix", "sshd"] {
        let ts = humantime::format_rfc3339_millis(std::time::SystemTime::now())
            .to_string()
            .replace('T', " ")
            .replace('.', ",")
            .trim_end_matches('Z')
            .to_string();
        use std::io::Write;
        writeln!(
            f,
            "{ts} fail2ban.actions        [4242]: NOTICE  [{jail}] Ban 10.77.45.9"
        )
        .unwrap();
    }
    wait_for(15.0, "the ban in trap4", || {
        String::from_utf8_lossy(&ns.try_run("nft list set inet tarpit trap4").stdout)
            .contains("10.77.45.9")
            .then_some(())
    });
    term_and_wait(strace, pid);
    check("tarpit watch (with nft)", &trace);
    let _ = std::fs::remove_dir_all(&dir);
}
