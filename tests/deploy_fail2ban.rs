//! The fail2ban files in deploy/fail2ban, run by the real fail2ban from
//! Debian inside network namespaces the test creates:
//!
//! * a jail with `action = tarpit` bans after the failures the test writes;
//!   fail2ban's ban lands in our trap set with the bantime as the element's
//!   timeout, a connection from the banned address to port 22 is trapped by
//!   `tarpit serve` (recorded with original destination port 22), and
//!   fail2ban's unban releases it;
//! * the seed's multi-ban jail (jail.d/tarpit-multiban.conf, as shipped, only
//!   enabled by a `.local` the way the README says) reads fail2ban's own log
//!   and traps a host banned 3 times for a week.

mod support;

use serde_json::Value;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::netns::{privileged, sh, veth6, which, Netns};
use support::serve::Proc;
use support::{bin, wait_for};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn have_fail2ban(test: &str) -> bool {
    if !privileged(test) {
        return false;
    }
    if which("fail2ban-server") && Path::new("/etc/fail2ban/filter.d/sshd.conf").is_file() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: fail2ban missing in CI (tests/run-all.sh installs it)");
    }
    eprintln!("SKIP {test}: fail2ban not installed");
    false
}

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A fail2ban-server in the foreground inside a namespace, with its own
/// configuration directory: Debian's filters and actions, our action and
/// jail, and the jails the test adds. Killed and cleaned up on drop.
struct Fail2ban {
    child: Child,
    dir: PathBuf,
}

impl Fail2ban {
    fn start(ns: &Netns, tag: &str, jail_local: &str, extra: &[(&str, &str)]) -> Fail2ban {
        let dir = std::env::temp_dir().join(format!("tarpit-f2b-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let conf = dir.join("conf");
        std::fs::create_dir_all(conf.join("jail.d")).unwrap();
        sh(&format!(
            "cp -r /etc/fail2ban/action.d /etc/fail2ban/filter.d /etc/fail2ban/fail2ban.conf \
             /etc/fail2ban/jail.conf /etc/fail2ban/paths-common.conf /etc/fail2ban/paths-debian.conf {}",
            conf.display()
        ));
        std::fs::copy(
            repo().join("deploy/fail2ban/action.d/tarpit.conf"),
            conf.join("action.d/tarpit.conf"),
        )
        .unwrap();
        std::fs::copy(
            repo().join("deploy/fail2ban/jail.d/tarpit-multiban.conf"),
            conf.join("jail.d/tarpit-multiban.conf"),
        )
        .unwrap();
        // Where /etc/tarpit/tarpit.nft would be on an installed system.
        std::fs::write(
            conf.join("action.d/tarpit.local"),
            format!(
                "[Init]\nnft_include = {}\n",
                repo().join("deploy/nftables/tarpit.nft").display()
            ),
        )
        .unwrap();
        std::fs::write(
            conf.join("fail2ban.local"),
            format!(
                "[Definition]\nloglevel = INFO\nlogtarget = {d}/fail2ban.log\n\
                 socket = {d}/f2b.sock\npidfile = {d}/f2b.pid\ndbfile = :memory:\nallowipv6 = auto\n",
                d = dir.display()
            ),
        )
        .unwrap();
        std::fs::write(
            conf.join("jail.local"),
            jail_local.replace("@DIR@", &dir.display().to_string()),
        )
        .unwrap();
        for (name, text) in extra {
            std::fs::write(conf.join(name), text).unwrap();
        }
        std::fs::write(dir.join("auth.log"), "").unwrap();
        std::fs::write(dir.join("fail2ban.log"), "").unwrap();
        let child = ns
            .command("fail2ban-server")
            .args(["-f", "-x", "-c"])
            .arg(&conf)
            .env("PATH", PATH)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("server.out")).unwrap())
            .stderr(std::fs::File::create(dir.join("server.err")).unwrap())
            .spawn()
            .expect("spawn fail2ban-server");
        let mut f = Fail2ban { child, dir };
        wait_for(30.0, "fail2ban-server to start", || {
            if let Ok(Some(st)) = f.child.try_wait() {
                panic!(
                    "fail2ban-server exited ({st}): {}{}",
                    std::fs::read_to_string(f.dir.join("server.err")).unwrap_or_default(),
                    f.log()
                );
            }
            f.log().contains("Starting Fail2ban").then_some(())
        });
        f
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("fail2ban.log")).unwrap_or_default()
    }

    fn client(&self, args: &[&str]) -> String {
        let out = Command::new("fail2ban-client")
            .arg("-s")
            .arg(self.dir.join("f2b.sock"))
            .args(args)
            .env("PATH", PATH)
            .output()
            .expect("fail2ban-client");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "fail2ban-client {args:?}: {text}");
        text
    }

    /// Appends sshd "Failed password" lines, as rsyslog writes them, for `ip`.
    fn fail(&self, ip: &str, n: usize) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join("auth.log"))
            .unwrap();
        // Each line its own sshd process, as real attempts are (fail2ban ties
        // lines of one pid together).
        static PID: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(4000);
        for i in 0..n {
            let pid = PID.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let now = humantime::format_rfc3339_micros(std::time::SystemTime::now());
            writeln!(
                f,
                "{now} srv sshd[{pid}]: Failed password for root from {ip} port {} ssh2",
                50000 + i
            )
            .unwrap();
        }
    }

    /// Waits until fail2ban's log has `n` lines containing `needle`.
    fn wait_log(&self, needle: &str, n: usize, secs: f64) {
        wait_for(secs, &format!("{n}× {needle:?} in fail2ban.log"), || {
            (self.log().matches(needle).count() >= n).then_some(())
        });
    }
}

impl Drop for Fail2ban {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- fail2ban.log ---\n{}", self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The elements of a trap set: address → (timeout, expires) in seconds.
fn elements(ns: &Netns, set: &str) -> Vec<(String, u64, u64)> {
    let out = ns.try_run(&format!("nft -j list set inet tarpit {set}"));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let mut found = Vec::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        for e in item["set"]["elem"].as_array().into_iter().flatten() {
            let el = &e["elem"];
            let val = match &el["val"] {
                Value::String(s) => s.clone(),
                Value::Object(o) if o.contains_key("prefix") => format!(
                    "{}/{}",
                    o["prefix"]["addr"].as_str().unwrap_or(""),
                    o["prefix"]["len"]
                ),
                other => other.to_string(),
            };
            found.push((
                val,
                el["timeout"].as_u64().unwrap_or(0),
                el["expires"].as_u64().unwrap_or(0),
            ));
        }
    }
    found
}

fn element(ns: &Netns, set: &str, addr: &str) -> Option<(u64, u64)> {
    elements(ns, set)
        .into_iter()
        .find(|(a, _, _)| a == addr)
        .map(|(_, t, e)| (t, e))
}

fn connect(ns: &Netns, to: &str) -> Result<(), ErrorKind> {
    let addr: SocketAddr = to.parse().unwrap();
    ns.in_thread(move || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(3))
            .map(drop)
            .map_err(|e| e.kind())
    })
}

#[test]
fn fail2ban_ban_lands_in_trap_set_and_serve_traps_the_host() {
    if !have_fail2ban("fail2ban_ban_lands_in_trap_set_and_serve_traps_the_host") {
        return;
    }
    let server = Netns::new("f2bsrv");
    let attacker = Netns::new("f2batk");
    veth6(
        &server,
        "10.77.41.1/24",
        "fd77:41::1/64",
        &attacker,
        "10.77.41.2/24",
        "fd77:41::2/64",
    );
    // A second link: the attacker also has an address in fd77:42::/64.
    veth6(
        &server,
        "10.77.43.1/24",
        "fd77:42::1/64",
        &attacker,
        "10.77.43.2/24",
        "fd77:42::2/64",
    );
    // The attacker's fd77:41::/64 is already trapped for an hour (as `tarpit watch`
    // would): fail2ban's shorter ban must neither shorten nor end it.
    server.run(&format!(
        "nft -f {} && nft add element inet tarpit trap6 {{ fd77:41:: timeout 1h }}",
        repo().join("deploy/nftables/tarpit.nft").display()
    ));

    let f2b = Fail2ban::start(
        &server,
        "ban",
        "[test-sshd]\nenabled = true\nfilter = sshd\nport = ssh\nlogpath = @DIR@/auth.log\n\
         backend = polling\nmaxretry = 3\nfindtime = 600\nbantime = 600\naction = tarpit\n",
        &[],
    );
    f2b.wait_log("Jail 'test-sshd' started", 1, 30.0);
    f2b.fail("10.77.41.2", 3);
    f2b.fail("fd77:41::2", 3);
    f2b.fail("fd77:42::2", 3);
    f2b.wait_log("Ban 10.77.41.2", 1, 30.0);
    f2b.wait_log("Ban fd77:41::2", 1, 30.0);
    f2b.wait_log("Ban fd77:42::2", 1, 30.0);

    let (timeout, expires) = wait_for(10.0, "10.77.41.2 in trap4", || {
        element(&server, "trap4", "10.77.41.2")
    });
    // fail2ban's bantime (600 s from the failure) became the element's timeout.
    assert!((590..=600).contains(&timeout), "timeout {timeout}");
    assert!(expires <= timeout && expires >= 580, "expires {expires}");
    let (t6, _) = element(&server, "trap6", "fd77:41::").expect("trap6 element kept");
    assert!(t6 >= 3500, "the hour-long trap was shortened to {t6}s");
    // An IPv6 ban traps the host's /64, as tarpit watch does.
    let (t6, _) = wait_for(10.0, "fd77:42:: in trap6", || {
        element(&server, "trap6", "fd77:42::")
    });
    assert!((590..=600).contains(&t6), "timeout {t6}");

    // Banned host → redirected to the tarpit, which records port 22.
    let p = Proc::spawn({
        let mut c = server.command(bin());
        c.args([
            "--log-format",
            "json",
            "serve",
            // Hermetic: no history or control socket on the host's paths.
            "--history",
            "off",
            "--control",
            "off",
            "--listen",
            "0.0.0.0:2222",
            "--listen",
            "[::]:2222",
            "--lifetime-min",
            "1s",
            "--lifetime-max",
            "1s",
        ]);
        c
    });
    assert_eq!(connect(&attacker, "10.77.41.1:22"), Ok(()));
    assert_eq!(connect(&attacker, "[fd77:41::1]:22"), Ok(()));
    assert_eq!(connect(&attacker, "[fd77:42::1]:22"), Ok(()));
    let recs = p.wait_records(3, 15.0);
    for (peer, dst) in [
        ("10.77.41.2", "10.77.41.1:22"),
        ("fd77:41::2", "[fd77:41::1]:22"),
        ("fd77:42::2", "[fd77:42::1]:22"),
    ] {
        let r = recs
            .iter()
            .find(|r| r["peer"].as_str().is_some_and(|s| s.contains(peer)))
            .unwrap_or_else(|| panic!("no record for {peer}: {recs:?}"));
        assert_eq!(r["original_dst"].as_str(), Some(dst), "{r}");
    }

    // fail2ban's unban releases the host: the real answer (RST) again.
    f2b.client(&["set", "test-sshd", "unbanip", "10.77.41.2"]);
    wait_for(10.0, "10.77.41.2 out of trap4", || {
        element(&server, "trap4", "10.77.41.2")
            .is_none()
            .then_some(())
    });
    assert_eq!(
        connect(&attacker, "10.77.41.1:22"),
        Err(ErrorKind::ConnectionRefused)
    );
    f2b.client(&["set", "test-sshd", "unbanip", "fd77:42::2"]);
    wait_for(10.0, "fd77:42:: out of trap6", || {
        element(&server, "trap6", "fd77:42::")
            .is_none()
            .then_some(())
    });
    assert_eq!(
        connect(&attacker, "[fd77:42::1]:22"),
        Err(ErrorKind::ConnectionRefused)
    );
    // ...but not a host that a longer ban still holds.
    f2b.client(&["set", "test-sshd", "unbanip", "fd77:41::2"]);
    f2b.wait_log("Unban fd77:41::2", 1, 10.0);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        element(&server, "trap6", "fd77:41::").is_some(),
        "unban released a host another ban holds for an hour"
    );
    assert_eq!(connect(&attacker, "[fd77:41::1]:22"), Ok(()));

    // Stopping the jail (or fail2ban) does not release the trapped: the
    // elements keep their timeouts, a restart's "Restore Ban" re-adds them.
    f2b.client(&["set", "test-sshd", "banip", "10.77.41.2"]);
    wait_for(10.0, "manual ban in trap4", || {
        element(&server, "trap4", "10.77.41.2")
    });
    f2b.client(&["stop", "test-sshd"]);
    f2b.wait_log("Jail 'test-sshd' stopped", 1, 20.0);
    assert!(
        element(&server, "trap4", "10.77.41.2").is_some(),
        "stopping fail2ban released a trapped host"
    );
    assert!(
        !f2b.log().contains("ERROR"),
        "fail2ban reported errors:\n{}",
        f2b.log()
    );
}

#[test]
fn seed_multiban_jail_traps_a_thrice_banned_host_for_a_week() {
    if !have_fail2ban("seed_multiban_jail_traps_a_thrice_banned_host_for_a_week") {
        return;
    }
    let server = Netns::new("f2bmb");
    // bantime 4 s: fail2ban drops a ban whose end (counted from the
    // failure's whole-second timestamp) has already passed.
    // The sshd jail bans with an action that does nothing (the seed's jails
    // drop with iptables); its bans, written by fail2ban to fail2ban.log,
    // feed the multi-ban jail exactly as shipped, enabled the README's way.
    let f2b = Fail2ban::start(
        &server,
        "multi",
        "[test-sshd]\nenabled = true\nfilter = sshd\nport = ssh\nlogpath = @DIR@/auth.log\n\
         backend = polling\nmaxretry = 3\nfindtime = 600\nbantime = 4\naction = noop\n\n\
         [tarpit-multiban]\nenabled = true\nlogpath = @DIR@/fail2ban.log\nbackend = polling\n",
        &[(
            "action.d/noop.conf",
            "[Definition]\nactionban = true\nactionunban = true\n",
        )],
    );
    f2b.wait_log("Jail 'tarpit-multiban' started", 1, 30.0);
    f2b.wait_log("Jail 'test-sshd' started", 1, 30.0);
    assert!(
        element(&server, "trap4", "10.77.42.9").is_none(),
        "trapped before any ban"
    );
    for round in 1..=3 {
        f2b.fail("10.77.42.9", 3);
        f2b.wait_log("[test-sshd] Ban 10.77.42.9", round, 30.0);
        f2b.wait_log("[test-sshd] Unban 10.77.42.9", round, 30.0);
        if round < 3 {
            assert!(
                !f2b.log().contains("[tarpit-multiban] Ban"),
                "multi-ban after only {round} bans"
            );
        }
    }
    f2b.wait_log("[tarpit-multiban] Ban 10.77.42.9", 1, 30.0);
    let (timeout, _) = wait_for(10.0, "multi-ban element", || {
        element(&server, "trap4", "10.77.42.9")
    });
    assert!(
        (604_700..=604_800).contains(&timeout),
        "multi-ban timeout {timeout}, want one week"
    );
}

/// The seed's whole setup with our tools: the real fail2ban bans a host three
/// times (its sshd jail, its own fail2ban.log), `tarpit watch` reads that log
/// with its default multi-ban rule (3 within 24 h → a week), and the host's
/// next connection to port 22 is held by `tarpit serve`.
#[test]
fn fail2ban_log_drives_tarpit_watch_to_the_multiban() {
    if !have_fail2ban("fail2ban_log_drives_tarpit_watch_to_the_multiban") {
        return;
    }
    let server = Netns::new("f2bws");
    let attacker = Netns::new("f2bwa");
    veth6(
        &server,
        "10.77.44.1/24",
        "fd77:44::1/64",
        &attacker,
        "10.77.44.9/24",
        "fd77:44::9/64",
    );
    let f2b = Fail2ban::start(
        &server,
        "watch",
        "[test-sshd]\nenabled = true\nfilter = sshd\nport = ssh\nlogpath = @DIR@/auth.log\n\
         backend = polling\nmaxretry = 3\nfindtime = 600\nbantime = 4\naction = noop\n",
        &[(
            "action.d/noop.conf",
            "[Definition]\nactionban = true\nactionunban = true\n",
        )],
    );
    f2b.wait_log("Jail 'test-sshd' started", 1, 30.0);

    // tarpit watch with nothing but where the log is: the default jail rule.
    let conf = f2b.dir.join("tarpit.toml");
    std::fs::write(
        &conf,
        format!(
            "[watch]\nstate_db = {:?}\npoll_interval = \"200ms\"\n\n\
             [[watch.jail]]\nname = \"multi-ban\"\nlogpath = {:?}\n",
            f2b.dir.join("state.db").display().to_string(),
            f2b.dir.join("fail2ban.log").display().to_string()
        ),
    )
    .unwrap();
    let mut wc = server.command(bin());
    wc.args(["--log-format", "json", "--config"])
        .arg(&conf)
        .arg("watch");
    let _watch = support::watch::WatchProc::spawn(wc);
    let serve = Proc::spawn({
        let mut c = server.command(bin());
        c.args([
            "--log-format",
            "json",
            "serve",
            // Hermetic: no history or control socket on the host's paths.
            "--history",
            "off",
            "--control",
            "off",
            "--listen",
            "0.0.0.0:2222",
            "--lifetime-min",
            "1s",
            "--lifetime-max",
            "1s",
        ]);
        c
    });
    assert_eq!(
        connect(&attacker, "10.77.44.1:22"),
        Err(ErrorKind::ConnectionRefused),
        "trapped before any ban"
    );

    for round in 1..=3 {
        f2b.fail("10.77.44.9", 3);
        f2b.wait_log("[test-sshd] Ban 10.77.44.9", round, 30.0);
        f2b.wait_log("[test-sshd] Unban 10.77.44.9", round, 30.0);
        if round < 3 {
            // Give the watcher time to have read the line: still not trapped.
            std::thread::sleep(Duration::from_millis(600));
            assert!(
                element(&server, "trap4", "10.77.44.9").is_none(),
                "trapped after only {round} bans"
            );
        }
    }
    let (timeout, _) = wait_for(10.0, "watch's multi-ban element", || {
        element(&server, "trap4", "10.77.44.9")
    });
    assert!(
        (604_700..=604_800).contains(&timeout),
        "multi-ban timeout {timeout}, want one week"
    );
    assert_eq!(connect(&attacker, "10.77.44.1:22"), Ok(()));
    let rec = wait_for(15.0, "serve's record of the attacker", || {
        serve.records().into_iter().find(|r| {
            r["peer"]
                .as_str()
                .is_some_and(|p| p.starts_with("10.77.44.9:"))
        })
    });
    assert_eq!(rec["original_dst"], "10.77.44.1:22", "{rec}");
}
