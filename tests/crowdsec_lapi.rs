//! The LAPI client and worker against the real CrowdSec Local API (Debian's
//! package, run offline on loopback with its own config and database), and
//! against a fake HTTP server for the faults a real LAPI will not produce
//! on demand (500s, malformed and huge bodies, hangs).

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::crowdsec::{available, Lapi};
use tarpit::watcher::crowdsec::client::{Client, Endpoint, LapiError, Machine};
use tarpit::watcher::crowdsec::settings::{Secret, Settings};
use tarpit::watcher::crowdsec::store;
use tarpit::watcher::crowdsec::worker::Worker;
use tarpit::watcher::crowdsec::CrowdSecMetrics;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn client(url: &str, key: Option<&str>, machine: Option<(&str, &str)>) -> Client {
    Client::new(
        Endpoint::parse(url).unwrap(),
        key.map(str::to_string),
        machine.map(|(id, pw)| Machine {
            id: id.into(),
            password: pw.into(),
        }),
    )
}

#[test]
fn bouncer_stream_startup_then_changes_and_wrong_key() {
    if !available("bouncer_stream_startup_then_changes_and_wrong_key") {
        return;
    }
    let mut lapi = Lapi::new("stream");
    let key = lapi.add_bouncer("tarpit-test");
    lapi.start();
    lapi.cscli_ok(&[
        "decisions",
        "add",
        "--type",
        "tarpit",
        "--ip",
        "10.77.90.2",
        "--duration",
        "2h",
    ]);
    lapi.cscli_ok(&[
        "decisions",
        "add",
        "--type",
        "tarpit",
        "--range",
        "10.78.0.0/16",
    ]);
    let rt = rt();
    let c = client(&lapi.url(), Some(&key), None);
    let s = rt.block_on(c.pull(true)).unwrap();
    assert_eq!(s.new.len(), 2, "{s:?}");
    let ip = s.new.iter().find(|d| d.value == "10.77.90.2").unwrap();
    assert_eq!((ip.kind.as_str(), ip.scope.as_str()), ("tarpit", "Ip"));
    let d = tarpit::watcher::crowdsec::duration::parse(&ip.duration).unwrap();
    assert!(
        d.abs > Duration::from_secs(7000) && d.abs <= Duration::from_secs(7200),
        "{d:?}"
    );
    // Nothing new since.
    let s = rt.block_on(c.pull(false)).unwrap();
    assert!(s.new.is_empty() && s.deleted.is_empty(), "{s:?}");
    // A deletion shows up in `deleted`.
    lapi.cscli_ok(&["decisions", "delete", "--ip", "10.77.90.2"]);
    let s = rt.block_on(c.pull(false)).unwrap();
    assert_eq!(s.deleted.len(), 1, "{s:?}");
    assert_eq!(s.deleted[0].value, "10.77.90.2");
    // A wrong key is a 403, reported as a credentials problem.
    let bad = client(&lapi.url(), Some("0123456789abcdef"), None);
    match rt.block_on(bad.pull(true)) {
        Err(LapiError::Auth { code: 403, .. }) => {}
        other => panic!("expected 403, got {other:?}"),
    }
    // LAPI down: unreachable, not a panic.
    lapi.stop();
    match rt.block_on(c.pull(false)) {
        Err(LapiError::Unreachable(..)) => {}
        other => panic!("expected unreachable, got {other:?}"),
    }
}

#[test]
fn machine_pushes_tarpit_decisions_and_logs_in_again_on_401() {
    if !available("machine_pushes_tarpit_decisions_and_logs_in_again_on_401") {
        return;
    }
    let mut lapi = Lapi::new("push");
    lapi.add_machine("web-1", "pushpassword-123");
    lapi.start();
    let rt = rt();
    let mut c = client(&lapi.url(), None, Some(("web-1", "pushpassword-123")));
    let o = store::Outgoing {
        seq: 1,
        host: "10.77.91.2".into(),
        jail: "multi-ban".into(),
        banned_at: tarpit::watcher::state::ms(std::time::SystemTime::now()),
        expires_at: tarpit::watcher::state::ms(std::time::SystemTime::now()) + 7 * 86_400_000,
    };
    let a = tarpit::watcher::crowdsec::worker::alert(&o, o.banned_at).unwrap();
    rt.block_on(c.push(&serde_json::Value::Array(vec![a])))
        .unwrap();
    assert_eq!(c.logins, 1);
    let ds = lapi.decisions();
    let d = ds
        .iter()
        .find(|d| d["value"] == "10.77.91.2")
        .unwrap_or_else(|| panic!("no decision in {ds:?}"));
    assert_eq!(d["type"], "tarpit");
    assert_eq!(d["scope"], "Ip");
    assert_eq!(d["scenario"], "tarpit/multi-ban");
    // An IPv6 /64 goes as a Range.
    let o6 = store::Outgoing {
        host: "fd77:91::/64".into(),
        ..o.clone()
    };
    // An expired token: the push logs in again and succeeds.
    c.set_token(Some("eyJhbGciOiJIUzI1NiJ9.e30.invalid".into()));
    let a = tarpit::watcher::crowdsec::worker::alert(&o6, o.banned_at).unwrap();
    rt.block_on(c.push(&serde_json::Value::Array(vec![a])))
        .unwrap();
    assert_eq!(c.logins, 2, "re-login after 401");
    let ds = lapi.decisions();
    assert!(
        ds.iter()
            .any(|d| d["value"] == "fd77:91::/64" && d["scope"] == "Range"),
        "{ds:?}"
    );
    // A wrong password is a credentials error.
    let mut bad = client(&lapi.url(), None, Some(("web-1", "wrong-password-0")));
    match rt.block_on(bad.login()) {
        Err(LapiError::Auth { .. }) => {}
        other => panic!("expected auth error, got {other:?}"),
    }
}

/// A one-request-at-a-time HTTP server that answers each request with the
/// next canned response (raw bytes), for `n` requests.
fn fake(responses: Vec<Vec<u8>>) -> (String, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", l.local_addr().unwrap());
    let t = std::thread::spawn(move || {
        for r in responses {
            let Ok((mut s, _)) = l.accept() else { return };
            let mut buf = [0u8; 4096];
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.read(&mut buf);
            let _ = s.write_all(&r);
        }
    });
    (url, t)
}

fn http(status: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

#[test]
fn faults_are_errors_not_crashes() {
    let huge_claim = b"HTTP/1.1 200 OK\r\ncontent-length: 999999999999\r\n\r\n{".to_vec();
    let mut chunked_huge = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    // 65 MiB in 1 MiB chunks (more than the 64 MiB limit), written lazily
    // by the server below.
    let chunk = vec![b' '; 1 << 20];
    for _ in 0..65 {
        chunked_huge.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked_huge.extend_from_slice(&chunk);
        chunked_huge.extend_from_slice(b"\r\n");
    }
    chunked_huge.extend_from_slice(b"0\r\n\r\n");
    let (url, t) = fake(vec![
        http(
            "500 Internal Server Error",
            b"{\"message\":\"validation failed\"}",
        ),
        http("200 OK", b"{\"new\": [{\"id\": \"x\"}]}"),
        http("200 OK", b"not json at all \x1b[31m"),
        huge_claim,
        chunked_huge,
        http("200 OK", b"{\"new\":null,\"deleted\":null}"),
    ]);
    let rt = rt();
    let c = client(&url, Some("k"), None);
    let r = rt.block_on(c.pull(true));
    assert!(
        matches!(r, Err(LapiError::Status { code: 500, .. })),
        "{r:?}"
    );
    let r = rt.block_on(c.pull(true));
    assert!(matches!(r, Err(LapiError::Malformed(_))), "{r:?}");
    let r = rt.block_on(c.pull(true));
    match &r {
        Err(LapiError::Malformed(m)) => assert!(!m.contains('\x1b'), "escaped: {m}"),
        other => panic!("{other:?}"),
    }
    let r = rt.block_on(c.pull(true));
    assert!(matches!(r, Err(LapiError::TooBig(_))), "{r:?}");
    let r = rt.block_on(c.pull(true));
    assert!(matches!(r, Err(LapiError::TooBig(_))), "{r:?}");
    // And after all that, a good answer works.
    let r = rt.block_on(c.pull(true)).unwrap();
    assert!(r.new.is_empty());
    t.join().unwrap();
}

#[test]
fn a_hung_lapi_times_out() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", l.local_addr().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let t = std::thread::spawn(move || {
        let conn = l.accept();
        while !s2.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(conn);
    });
    let rt = rt();
    let mut c = client(&url, Some("k"), None);
    c.timeout = Duration::from_millis(300);
    let r = rt.block_on(c.pull(true));
    assert!(matches!(r, Err(LapiError::Timeout(_))), "{r:?}");
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
}

fn settings(url: &str, key: &str) -> Settings {
    Settings {
        url: url.into(),
        endpoint: Endpoint::parse(url).unwrap(),
        api_key: Some(Secret(key.into())),
        api_key_file: None,
        machine_id: None,
        password: None,
        push: false,
        types: vec!["tarpit".into()],
        origins: vec![],
        update_frequency: Duration::from_secs(1),
    }
}

#[test]
fn worker_refuses_what_we_never_trap_and_stores_the_rest() {
    if !available("worker_refuses_what_we_never_trap_and_stores_the_rest") {
        return;
    }
    let mut lapi = Lapi::new("worker");
    let key = lapi.add_bouncer("tarpit-w");
    lapi.start();
    for args in [
        &["--type", "tarpit", "--ip", "10.77.92.2", "--duration", "1h"][..],
        &["--type", "tarpit", "--ip", "10.77.92.2"][..], // a duplicate, longer
        &["--type", "tarpit", "--ip", "127.0.0.1"][..],
        &["--type", "tarpit", "--ip", "192.0.2.7"][..], // ignoreip below
        &["--type", "tarpit", "--range", "0.0.0.0/0"][..],
        &["--type", "tarpit", "--range", "10.79.0.0/16"][..],
        &["--type", "tarpit", "--ip", "fd77:92::5"][..],
        &["--type", "tarpit", "--ip", "fd77:92::6"][..], // the same /64
        &["--type", "ban", "--ip", "10.77.92.3"][..],
    ] {
        let mut a = vec!["decisions", "add"];
        a.extend_from_slice(args);
        lapi.cscli_ok(&a);
    }
    let dir = std::env::temp_dir().join(format!("tarpit-csw-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("state.db");
    let (tx, rx) = std::sync::mpsc::channel();
    let metrics = Arc::new(CrowdSecMetrics::default());
    let mut w = Worker::new(
        settings(&lapi.url(), &key),
        &db,
        64,
        vec!["192.0.2.0/24".parse().unwrap()],
        metrics.clone(),
        tx,
    )
    .unwrap();
    let rt = rt();
    rt.block_on(w.pull());
    assert!(!w.need_startup);
    let t = rx.try_recv().expect("a change notice");
    let hosts: Vec<String> = t.hosts.iter().map(|h| h.to_string()).collect();
    assert_eq!(hosts, vec!["10.77.92.2", "fd77:92::/64"]);
    assert!(t.nets);
    let conn = store::open(&db).unwrap();
    let now = tarpit::watcher::state::ms(std::time::SystemTime::now());
    let stored = store::list(&conn, now).unwrap();
    // LAPI streams one decision per value (the longest); the two
    // addresses of one /64 are two decisions for one trap.
    assert_eq!(stored.len(), 4, "{stored:?}");
    assert!(stored.iter().any(|s| s.trap == "10.79.0.0/16"));
    let refused = |k: &'static str| {
        metrics
            .refused
            .get_or_create(&tarpit::watcher::crowdsec::metrics::KindLabel { kind: k })
            .get()
    };
    assert_eq!(refused("ignored"), 2, "loopback and ignoreip");
    assert_eq!(refused("too_wide"), 1, "the /0");
    let h: tarpit::firewall::Target = "10.77.92.2".parse().unwrap();
    let longer = stored.iter().find(|s| s.trap == "10.77.92.2").unwrap().id;
    // Deleting the longer duplicate: the shorter still decides the host,
    // and LAPI says nothing; it stays trapped.
    lapi.cscli_ok(&["decisions", "delete", "--id", &longer.to_string()]);
    rt.block_on(w.pull());
    assert!(store::trapped_until(&conn, &h, now).unwrap().is_some());
    // The last one goes: LAPI lists the value as deleted (under the id we
    // never saw) and the host is free.
    lapi.cscli_ok(&["decisions", "delete", "--ip", "10.77.92.2"]);
    rt.block_on(w.pull());
    assert_eq!(store::trapped_until(&conn, &h, now).unwrap(), None);
    // One address of the /64 deleted: the other still traps the /64.
    lapi.cscli_ok(&["decisions", "delete", "--ip", "fd77:92::5"]);
    rt.block_on(w.pull());
    let net: tarpit::firewall::Target = "fd77:92::/64".parse().unwrap();
    assert!(store::trapped_until(&conn, &net, now).unwrap().is_some());
    // A decision deleted while we were away (a restarted watcher pulls
    // with startup=true): the full list no longer has it, so it goes.
    lapi.cscli_ok(&["decisions", "delete", "--range", "10.79.0.0/16"]);
    w.need_startup = true;
    rt.block_on(w.pull());
    let stored = store::list(&conn, now).unwrap();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].trap, "fd77:92::/64");
    drop(conn);
    let _ = std::fs::remove_dir_all(&dir);
}

fn secret_file(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("tarpit-cs-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tarpit(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tarpit"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn check_config_tests_the_credentials_when_lapi_is_reachable() {
    if !available("check_config_tests_the_credentials_when_lapi_is_reachable") {
        return;
    }
    let mut lapi = Lapi::new("check");
    let key = lapi.add_bouncer("tarpit-check");
    lapi.add_machine("check-m", "check-password-1");
    lapi.start();
    let d = tmpdir("check");
    let conf = |key: &str, pw: &str| {
        let kf = secret_file(&d, "key", key);
        let pf = secret_file(&d, "pw", pw);
        let c = d.join("tarpit.toml");
        std::fs::write(
            &c,
            format!(
                "[watch]\nstate_db = {:?}\n[watch.crowdsec]\nurl = {:?}\napi_key_file = {kf:?}\nmachine_id = \"check-m\"\npassword_file = {pf:?}\n",
                d.join("state.db"),
                lapi.url()
            ),
        )
        .unwrap();
        c
    };
    let c = conf(&key, "check-password-1");
    let out = tarpit(&["--config", c.to_str().unwrap(), "check-config"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("bouncer key accepted"), "{text}");
    assert!(text.contains("machine login accepted"), "{text}");
    let c = conf("0123456789abcdef0123", "check-password-1");
    let out = tarpit(&["--config", c.to_str().unwrap(), "check-config"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bouncer key") && err.contains("403"), "{err}");
    let c = conf(&key, "wrong-password-99");
    let out = tarpit(&["--config", c.to_str().unwrap(), "check-config"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("machine login"));
    // LAPI down: the file is fine, the credentials are just not tested.
    lapi.stop();
    let out = tarpit(&["--config", c.to_str().unwrap(), "check-config"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("not tested"), "{text}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn watch_metrics_count_decisions_pulls_and_the_push_queue() {
    if !available("watch_metrics_count_decisions_pulls_and_the_push_queue") {
        return;
    }
    let mut lapi = Lapi::new("metrics");
    let key = lapi.add_bouncer("tarpit-metrics");
    lapi.add_machine("metrics-m", "metrics-password-1");
    lapi.start();
    lapi.cscli_ok(&["decisions", "add", "--type", "tarpit", "--ip", "10.77.93.2"]);
    let d = tmpdir("metrics");
    let kf = secret_file(&d, "key", &key);
    let pf = secret_file(&d, "pw", "metrics-password-1");
    let log = d.join("fail2ban.log");
    std::fs::write(&log, "").unwrap();
    let c = d.join("tarpit.toml");
    std::fs::write(
        &c,
        format!(
            "[watch]\nstate_db = {:?}\npoll_interval = \"100ms\"\n[watch.crowdsec]\nurl = {:?}\napi_key_file = {kf:?}\n\
             machine_id = \"metrics-m\"\npassword_file = {pf:?}\nupdate_frequency = \"500ms\"\n\
             [[watch.jail]]\nname = \"multi-ban\"\nlogpath = {log:?}\n",
            d.join("state.db"),
            lapi.url()
        ),
    )
    .unwrap();
    let port = support::crowdsec::free_port();
    let out_path = d.join("dry.out");
    let out = std::fs::File::create(&out_path).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tarpit"))
        .args([
            "--config",
            c.to_str().unwrap(),
            "watch",
            "--dry-run",
            "--state-db",
        ])
        .arg(d.join("state.db"))
        .args(["--metrics", &format!("127.0.0.1:{port}")])
        .stdout(out)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let get = || -> String {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return String::new();
        };
        let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n");
        let mut b = String::new();
        let _ = s.read_to_string(&mut b);
        b
    };
    let end = std::time::Instant::now() + Duration::from_secs(15);
    let mut m = String::new();
    while std::time::Instant::now() < end {
        m = get();
        if m.contains("tarpit_crowdsec_decisions{origin=\"cscli\"} 1") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = child.kill();
    let _ = child.wait();
    for want in [
        "tarpit_crowdsec_decisions{origin=\"cscli\"} 1",
        "tarpit_crowdsec_pulls_total{result=\"ok\"}",
        "tarpit_crowdsec_push_queue 0",
        "tarpit_crowdsec_pushed_total 0",
    ] {
        assert!(m.contains(want), "{want} missing in:\n{m}");
    }
    assert!(!m.contains("10.77.93.2"), "no address in labels");
    // The decision reached the firewall batch.
    let dry = std::fs::read_to_string(&out_path).unwrap();
    assert!(dry.contains("10.77.93.2 timeout"), "{dry}");
    let _ = std::fs::remove_dir_all(&d);
}

/// Counts firewall batches (the real one is exercised in crowdsec_watch).
#[derive(Default)]
struct Count(std::cell::Cell<usize>, std::cell::Cell<usize>);
impl tarpit::watcher::Enforcer for Count {
    fn ensure(&self) -> Result<(), tarpit::firewall::FwError> {
        Ok(())
    }
    fn ban(
        &self,
        b: &[(tarpit::firewall::Target, Duration)],
    ) -> Result<(), tarpit::firewall::FwError> {
        self.0.set(self.0.get() + 1);
        self.1.set(self.1.get() + b.len());
        Ok(())
    }
    fn restore(
        &self,
        b: &[(tarpit::firewall::Target, Duration)],
    ) -> Result<(), tarpit::firewall::FwError> {
        self.ban(b)
    }
    fn unban(&self, _: &[tarpit::firewall::Target]) -> Result<(), tarpit::firewall::FwError> {
        Ok(())
    }
    fn intact(&self) -> Result<bool, tarpit::firewall::FwError> {
        Ok(true)
    }
    fn set_ranges(
        &self,
        _: &[(tarpit::firewall::Net, Duration)],
    ) -> Result<(), tarpit::firewall::FwError> {
        Ok(())
    }
}

#[test]
fn a_hundred_thousand_decisions_at_startup_are_one_batch_and_lapi_clocks_do_not_matter() {
    use tarpit::watcher::external::External;
    let n = 100_000u32;
    let mut s = String::from("{\"deleted\":null,\"new\":[");
    for id in 1..=n {
        if id > 1 {
            s.push(',');
        }
        let a = std::net::Ipv4Addr::from(0x0a64_0000u32 + id);
        s += &format!("{{\"duration\":\"1h\",\"id\":{id},\"origin\":\"crowdsec\",\"scenario\":\"x\",\"scope\":\"Ip\",\"type\":\"tarpit\",\"value\":\"{a}\"}}");
    }
    s += "]}";
    let (url, t) = fake(vec![http("200 OK", s.as_bytes())]);
    let dir = tmpdir("100k");
    let db = dir.join("state.db");
    let (tx, rx) = std::sync::mpsc::channel();
    let mut w = Worker::new(
        settings(&url, "k"),
        &db,
        64,
        vec![],
        Arc::new(CrowdSecMetrics::default()),
        tx,
    )
    .unwrap();
    let rt = rt();
    let before = tarpit::watcher::state::ms(std::time::SystemTime::now());
    rt.block_on(w.pull());
    let after = tarpit::watcher::state::ms(std::time::SystemTime::now());
    t.join().unwrap();
    let conn = store::open(&db).unwrap();
    let stored = store::list(&conn, before).unwrap();
    assert_eq!(stored.len(), n as usize);
    // LAPI sends remaining durations only: the expiry is on our clock,
    // whatever LAPI's says (no absolute time is read from it).
    for d in [&stored[0], &stored[stored.len() - 1]] {
        assert!(
            d.expires_at >= before + 3_600_000 && d.expires_at <= after + 3_600_000,
            "{d:?}"
        );
    }
    let mut b = tarpit::watcher::crowdsec::Bridge::new(store::open(&db).unwrap(), rx);
    let count = Count::default();
    b.tick(&count, true).unwrap();
    assert_eq!((count.0.get(), count.1.get()), (1, n as usize), "one batch");
    drop(conn);
    let _ = std::fs::remove_dir_all(&dir);
}
