//! Reporting abusers, end to end with the real binaries: `tarpit watch`
//! (dry run, state database of its own) reports its bans and `tarpit serve`
//! the hosts it kept engaged, to an AbuseIPDB stand-in and to webhooks
//! that this test runs on 127.0.0.1.
//!
//! The stand-in checks the documented AbuseIPDB v2 request (`POST
//! /api/v2/report`, headers `Key` and `Accept: application/json`, form
//! fields `ip`, `categories`, `comment`, `timestamp` in ISO 8601) and
//! answers as AbuseIPDB does: 200 with `{"data":{"ipAddress",
//! "abuseConfidenceScore"}}`, 429 with Retry-After and the errors JSON, 422
//! with the errors JSON. Every address is on loopback.

mod support;

use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::serve::Proc;
use support::watch::{ban_line, WatchProc};
use support::{bin, wait_for};

const KEY: &str = "d6f1c0ffee0123456789abcdef0123456789abcdef0123456789abcdef01234567";

/// One request the stand-in received.
#[derive(Debug, Clone)]
struct Req {
    at: Instant,
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: String,
}

impl Req {
    fn header(&self, k: &str) -> &str {
        self.headers.get(k).map(String::as_str).unwrap_or("")
    }

    fn form(&self) -> HashMap<String, String> {
        self.body
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (decode(k), decode(v)))
            .collect()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(h, 16).unwrap());
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// (status, extra headers, body) for a request and its number (0-based).
type Answer = Box<dyn Fn(&Req, usize) -> (u16, Vec<(&'static str, String)>, String) + Send + Sync>;

/// An HTTP/1.1 server on 127.0.0.1 (optionally TLS) that records requests.
struct Mock {
    addr: SocketAddr,
    reqs: Arc<Mutex<Vec<Req>>>,
    stop: Arc<AtomicBool>,
}

fn ok_json(ip: &str) -> String {
    format!(r#"{{"data":{{"ipAddress":"{ip}","abuseConfidenceScore":52}}}}"#)
}

impl Mock {
    fn start(answer: Answer) -> Mock {
        Self::start_on(TcpListener::bind("127.0.0.1:0").unwrap(), answer, None)
    }

    fn start_on(l: TcpListener, answer: Answer, tls: Option<Arc<rustls::ServerConfig>>) -> Mock {
        let addr = l.local_addr().unwrap();
        l.set_nonblocking(true).unwrap();
        let reqs = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r2, s2) = (reqs.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                let s = match l.accept() {
                    Ok((s, _)) => s,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                match &tls {
                    None => handle(s, &r2, &answer),
                    Some(cfg) => {
                        let Ok(conn) = rustls::ServerConnection::new(cfg.clone()) else {
                            continue;
                        };
                        handle(rustls::StreamOwned::new(conn, s), &r2, &answer);
                    }
                }
            }
        });
        Mock { addr, reqs, stop }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn reqs(&self) -> Vec<Req> {
        self.reqs.lock().unwrap().clone()
    }

    fn wait(&self, n: usize, secs: f64) -> Vec<Req> {
        wait_for(secs, &format!("{n} requests at {}", self.addr), || {
            let r = self.reqs();
            (r.len() >= n).then_some(r)
        })
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn handle<S: Read + Write>(s: S, reqs: &Mutex<Vec<Req>>, answer: &Answer) {
    let mut r = BufReader::new(s);
    let mut line = String::new();
    if r.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 {
            return;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    if r.read_exact(&mut body).is_err() {
        return;
    }
    let req = Req {
        at: Instant::now(),
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let n = {
        let mut g = reqs.lock().unwrap();
        g.push(req.clone());
        g.len() - 1
    };
    let (status, extra, body) = answer(&req, n);
    let mut out = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in extra {
        out += &format!("{k}: {v}\r\n");
    }
    out += "\r\n";
    out += &body;
    let mut s = r.into_inner();
    let _ = s.write_all(out.as_bytes());
    let _ = s.flush();
}

/// The documented AbuseIPDB v2 request, or a panic saying what is off.
fn check_abuseipdb(r: &Req) -> HashMap<String, String> {
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/api/v2/report");
    assert_eq!(r.header("key"), KEY);
    assert_eq!(r.header("accept"), "application/json");
    assert_eq!(
        r.header("content-type"),
        "application/x-www-form-urlencoded"
    );
    let f = r.form();
    for k in ["ip", "categories", "comment", "timestamp"] {
        assert!(f.contains_key(k), "no {k} in {:?}", r.body);
    }
    assert!(
        f["categories"].split(',').all(|c| c.parse::<u8>().is_ok()),
        "{f:?}"
    );
    let ts = &f["timestamp"];
    assert!(
        humantime::parse_rfc3339(ts).is_ok() && ts.ends_with('Z'),
        "timestamp {ts:?}"
    );
    assert!(!f["comment"].contains(KEY), "the key in the comment");
    f
}

static N: AtomicU32 = AtomicU32::new(0);

/// A directory with a config, a fail2ban log and a key file.
struct Scene {
    dir: PathBuf,
    conf: PathBuf,
    log: PathBuf,
    db: PathBuf,
    key: PathBuf,
}

impl Scene {
    fn new(tag: &str) -> Scene {
        let n = N.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("tarpit-rep-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let key = secret(&dir, "abuseipdb.key", &format!("{KEY}\n"));
        Scene {
            conf: dir.join("tarpit.toml"),
            log: dir.join("fail2ban.log"),
            db: dir.join("state.db"),
            key,
            dir,
        }
    }

    /// `[watch]` with one multi-ban jail (maxretry 1) and `extra`.
    fn write_watch(&self, extra: &str) {
        std::fs::write(&self.log, "").unwrap();
        std::fs::write(
            &self.conf,
            format!(
                "[watch]\npoll_interval = \"100ms\"\ncheck_interval = \"1s\"\n\n\
                 [[watch.jail]]\nname = \"multi-ban\"\nlogpath = {:?}\nmaxretry = 1\n\n{extra}\n",
                self.log.to_str().unwrap()
            ),
        )
        .unwrap();
    }

    fn abuseipdb(&self, url: &str, extra: &str) -> String {
        format!(
            "[report.abuseipdb]\nkey_file = {:?}\nurl = {url:?}\n{extra}\n",
            self.key.to_str().unwrap()
        )
    }

    fn watch(&self) -> WatchProc {
        let mut c = Command::new(bin());
        c.args(["--log-format", "json", "--config"])
            .arg(&self.conf)
            .args(["watch", "--dry-run", "--state-db"])
            .arg(&self.db);
        WatchProc::spawn(c)
    }

    fn ban(&self, ip: &str) {
        support::watch::append(&self.log, &ban_line("sshd", ip));
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn secret(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn count_for(reqs: &[Req], ip: &str) -> usize {
    reqs.iter()
        .filter(|r| r.form().get("ip").map(String::as_str) == Some(ip))
        .count()
}

/// Bans are reported once each, within the daily quota, in the documented
/// form; a webhook gets the ban as JSON.
#[test]
fn watch_reports_bans_within_the_quota() {
    let s = Scene::new("quota");
    let api = Mock::start(Box::new(|r, _| (200, vec![], ok_json(&r.form()["ip"]))));
    let hook = Mock::start(Box::new(|_, _| (204, vec![], String::new())));
    s.write_watch(&format!(
        "{}\n[[webhook]]\nname = \"ops\"\nurl = {:?}\nevents = [\"ban\"]\n",
        s.abuseipdb(&api.url("/api/v2/report"), "daily_quota = 2"),
        hook.url("/tarpit")
    ));
    let mut w = s.watch();
    for ip in ["10.77.91.1", "10.77.91.2", "10.77.91.3"] {
        s.ban(ip);
    }
    let reqs = api.wait(2, 15.0);
    let hooks = hook.wait(3, 15.0);
    std::thread::sleep(Duration::from_secs(2));
    let reqs = {
        let more = api.reqs();
        assert_eq!(more.len(), 2, "the quota is 2 a day: {reqs:?}");
        more
    };
    for r in &reqs {
        let f = check_abuseipdb(r);
        assert_eq!(f["categories"], "18", "multi-ban jail: Brute-Force");
        assert_eq!(
            f["comment"],
            "tarpit: banned after 1 offence (jail multi-ban) and trapped in a zero-window tarpit"
        );
    }
    assert_eq!(count_for(&reqs, "10.77.91.1"), 1);
    assert_eq!(count_for(&reqs, "10.77.91.2"), 1);
    let mut hosts: Vec<String> = hooks
        .iter()
        .map(|r| {
            assert_eq!(r.method, "POST");
            assert_eq!(r.path, "/tarpit");
            assert_eq!(r.header("content-type"), "application/json");
            let v = r.json();
            assert_eq!(v["event"], "ban");
            assert_eq!(v["jail"], "multi-ban");
            assert_eq!(v["source"], "tarpit");
            v["host"].as_str().unwrap().to_string()
        })
        .collect();
    hosts.sort();
    assert_eq!(hosts, ["10.77.91.1", "10.77.91.2", "10.77.91.3"]);
    assert!(
        !w.messages("report: sent").is_empty(),
        "{:?}",
        w.lines.lock().unwrap()
    );
    let log = w.lines.lock().unwrap().join("\n");
    assert!(!log.contains(KEY), "the key was logged");
    w.stop();
}

/// A report made while AbuseIPDB is unreachable survives a restart of the
/// watcher and is delivered once it answers.
#[test]
fn outbox_survives_a_restart_while_the_api_is_down() {
    let s = Scene::new("outage");
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let url = format!("http://127.0.0.1:{port}/api/v2/report");
    s.write_watch(&s.abuseipdb(&url, ""));
    let mut w = s.watch();
    s.ban("10.77.92.1");
    wait_for(15.0, "a failed try", || {
        (!w.messages("trying again").is_empty()).then_some(())
    });
    w.stop();
    let api = Mock::start_on(
        TcpListener::bind(("127.0.0.1", port)).unwrap(),
        Box::new(|r, _| (200, vec![], ok_json(&r.form()["ip"]))),
        None,
    );
    let mut w = s.watch();
    let reqs = api.wait(1, 20.0);
    let f = check_abuseipdb(&reqs[0]);
    assert_eq!(f["ip"], "10.77.92.1");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(api.reqs().len(), 1, "delivered once");
    w.stop();
}

/// 429 with Retry-After pauses every report for that long; 422 drops the
/// report it refuses (logged once, never retried); the rest go through.
#[test]
fn retry_after_pauses_everything_and_422_drops() {
    let s = Scene::new("429");
    let api = Mock::start(Box::new(|r, n| {
        let ip = r.form()["ip"].clone();
        if ip == "10.77.93.3" {
            return (
                422,
                vec![],
                r#"{"errors":[{"detail":"The ip is on our whitelist.","status":422,"source":{"parameter":"ip"}}]}"#.into(),
            );
        }
        if n == 0 {
            return (
                429,
                vec![("retry-after", "3".into())],
                r#"{"errors":[{"detail":"Daily rate limit of 1000 requests exceeded for this endpoint. See headers for additional details.","status":429}]}"#.into(),
            );
        }
        (200, vec![], ok_json(&ip))
    }));
    s.write_watch(&s.abuseipdb(&api.url("/api/v2/report"), ""));
    let mut w = s.watch();
    s.ban("10.77.93.1");
    api.wait(1, 15.0);
    s.ban("10.77.93.2");
    s.ban("10.77.93.3");
    let reqs = api.wait(4, 20.0);
    std::thread::sleep(Duration::from_secs(1));
    let reqs2 = api.reqs();
    assert_eq!(reqs2.len(), 4, "{reqs:?}");
    let first = reqs[0].at;
    for r in &reqs[1..] {
        check_abuseipdb(r);
        let gap = r.at.duration_since(first);
        assert!(
            gap >= Duration::from_millis(2900),
            "a request {gap:?} after the 429 (Retry-After: 3)"
        );
    }
    assert_eq!(
        count_for(&reqs2, "10.77.93.1"),
        2,
        "retried after the pause"
    );
    assert_eq!(count_for(&reqs2, "10.77.93.2"), 1);
    assert_eq!(count_for(&reqs2, "10.77.93.3"), 1, "422: not retried");
    let refused = w.messages("refused for good");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0]["message"]
        .as_str()
        .unwrap()
        .contains("whitelist"));
    assert_eq!(w.messages("every report waits").len(), 1);
    w.stop();
}

fn connect_from(src: &str, dst: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&format!("{src}:0").parse::<SocketAddr>().unwrap().into())
        .unwrap();
    s.connect(&dst.into()).unwrap();
    s.into()
}

fn reset(s: TcpStream) {
    let s = socket2::Socket::from(s);
    s.set_linger(Some(Duration::ZERO)).unwrap();
    drop(s);
}

/// `tarpit serve` reports a host once one of its connections was engaged
/// the threshold, once per 15 minutes, with the port it aimed at, how long
/// it was engaged and its client software, and nothing of ours; a webhook
/// that fails first gets the same JSON again. Run as root, serve drops to
/// `nobody` and still reports.
#[test]
fn serve_reports_engaged_hosts_once() {
    let s = Scene::new("serve");
    let api = Mock::start(Box::new(|r, _| (200, vec![], ok_json(&r.form()["ip"]))));
    let hook = Mock::start(Box::new(|_, n| {
        if n == 0 {
            (503, vec![], "busy".into())
        } else {
            (200, vec![], "{}".into())
        }
    }));
    let headers = secret(&s.dir, "hook.headers", "X-Token: hook-s3cret\n");
    // A free port, so the config can give categories for it.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    std::fs::write(
        &s.conf,
        format!(
            "[report]\nengaged_threshold = \"1s\"\noutbox = {:?}\n{}\n\
             [[webhook]]\nurl = {:?}\nevents = \"trapped\"\nretries = 2\nheaders_file = {:?}\n",
            s.dir.join("report.db").to_str().unwrap(),
            s.abuseipdb(
                &api.url("/api/v2/report"),
                &format!("categories = {{ {port} = [22, 18] }}")
            ),
            hook.url("/hook"),
            headers.to_str().unwrap()
        ),
    )
    .unwrap();
    let mport = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = Command::new(bin());
    c.args(["--log-format", "json", "--config"])
        .arg(&s.conf)
        .args(["serve", "--control", "off", "--history", "off", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--metrics")
        .arg(format!("127.0.0.1:{mport}"));
    if support::is_root() {
        // As deployed: the outbox opened as root, the report thread started
        // after the drop (it refuses to drop with a thread running).
        c.args(["--user", "nobody"]);
    }
    let mut p = Proc::spawn(c);
    let dst = p.addr();
    // Two engaged connections from one host, one too short from another,
    // one from our own address.
    let mut a = connect_from("127.0.0.2", dst);
    a.write_all(b"SSH-2.0-TestClient_1.0\r\n").unwrap();
    let b = connect_from("127.0.0.2", dst);
    let short = connect_from("127.0.0.3", dst);
    let own = connect_from("127.0.0.1", dst);
    std::thread::sleep(Duration::from_millis(300));
    reset(short);
    std::thread::sleep(Duration::from_millis(1300));
    reset(a);
    reset(b);
    reset(own);
    let reqs = api.wait(1, 15.0);
    let hooks = hook.wait(2, 20.0);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(api.reqs().len(), 1, "once per host: {:?}", api.reqs());
    let f = check_abuseipdb(&reqs[0]);
    assert_eq!(f["ip"], "127.0.0.2");
    assert_eq!(f["categories"], "22,18");
    let comment = &f["comment"];
    assert!(
        comment.starts_with(&format!(
            "tarpit: connected to TCP port {port} and was held in a zero-window tarpit; engaged 1s"
        )),
        "{comment}"
    );
    assert!(comment.ends_with("; client TestClient_1.0"), "{comment}");
    assert!(!comment.contains("127.0.0.1"), "our address: {comment}");
    // The webhook: a retry after the 503, the same body both times.
    assert_eq!(hook.reqs().len(), 2);
    assert_eq!(hooks[0].body, hooks[1].body);
    assert!(hooks[1].at.duration_since(hooks[0].at) >= Duration::from_secs(4));
    let v = hooks[1].json();
    assert_eq!(v["event"], "trapped");
    assert_eq!(v["client"], "TestClient_1.0", "the classified software");
    assert_eq!(v["host"], "127.0.0.2");
    assert_eq!(v["port"], port);
    assert!(v["engaged_secs"].as_f64().unwrap() >= 1.0, "{v}");
    assert_eq!(hooks[1].header("x-token"), "hook-s3cret");
    let m = scrape(mport);
    for want in [
        r#"tarpit_reports_sent_total{dest="abuseipdb"} 1"#,
        r#"tarpit_reports_sent_total{dest="webhook:webhook-1"} 1"#,
        r#"tarpit_reports_failed_total{dest="webhook:webhook-1",reason="retry"} 1"#,
        r#"tarpit_reports_queued{dest="abuseipdb"} 0"#,
    ] {
        assert!(m.contains(want), "{want} not in\n{m}");
    }
    dashboard_rows_query(&m);
    let st = p.term(10.0);
    assert!(st.success(), "{st}");
    let log = p.log();
    assert!(
        !log.contains(KEY) && !log.contains("hook-s3cret"),
        "a secret was logged"
    );
}

/// An https:// webhook is reached through TLS, trusting a CA given in
/// `ca_file`; without that CA the certificate is refused, and the event
/// stays queued (a retry is logged).
#[test]
fn https_webhook_with_a_private_ca() {
    let s = Scene::new("tls");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let ca_file = s.dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let hook = Mock::start_on(
        TcpListener::bind("127.0.0.1:0").unwrap(),
        Box::new(|_, _| (200, vec![], "{}".into())),
        Some(Arc::new(server)),
    );
    let url = format!("https://{}/tls-hook", hook.addr);
    s.write_watch(&format!(
        "[[webhook]]\nname = \"trusted\"\nurl = {url:?}\nca_file = {:?}\n\n\
         [[webhook]]\nname = \"untrusted\"\nurl = {url:?}\nretries = 1\n",
        ca_file.to_str().unwrap()
    ));
    let mut w = s.watch();
    s.ban("10.77.94.1");
    let reqs = hook.wait(1, 15.0);
    assert_eq!(reqs[0].path, "/tls-hook");
    assert_eq!(reqs[0].json()["host"], "10.77.94.1");
    let retry = wait_for(15.0, "the untrusted webhook's failure", || {
        w.messages("webhook:untrusted").into_iter().next()
    });
    let m = retry["message"].as_str().unwrap();
    assert!(m.contains("TLS") && m.contains("trying again"), "{m}");
    assert_eq!(
        hook.reqs().len(),
        1,
        "no request over an untrusted connection"
    );
    w.stop();
}

fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The dashboard's Reports row queries metrics this scrape has; its GeoIP
/// row the two by-country families (exported only with geoip, checked in
/// tests/geoip.rs).
fn dashboard_rows_query(scrape: &str) {
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/grafana/tarpit.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut row = String::new();
    let (mut reports, mut geo) = (0, Vec::new());
    for p in dash["panels"].as_array().unwrap() {
        if p["type"] == "row" {
            row = p["title"].as_str().unwrap().to_string();
            continue;
        }
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(i) = rest.find("tarpit_") {
                let tail = &rest[i..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                let name = &tail[..end];
                if row.starts_with("Reports") {
                    assert!(scrape.contains(name), "dashboard queries {name}: {expr}");
                    reports += 1;
                }
                if row.starts_with("Where from") {
                    geo.push((p["type"].as_str().unwrap().to_string(), name.to_string()));
                }
                rest = &tail[end..];
            }
        }
    }
    assert!(reports >= 3, "{reports}");
    assert!(geo.contains(&(
        "geomap".into(),
        "tarpit_attacker_time_by_country_seconds_total".into()
    )));
    assert!(geo.iter().all(
        |(_, n)| n == "tarpit_attacker_time_by_country_seconds_total"
            || n == "tarpit_connections_by_country_total"
    ));
}

/// `tarpit check-config` lists the destinations and the GeoIP files serve
/// would open; a mistake names file, line and key, exit code 2.
#[test]
fn check_config_lists_reports_and_geoip_files() {
    let s = Scene::new("check");
    std::fs::write(
        &s.conf,
        format!(
            "[serve]\ngeoip = [\"/var/lib/GeoIP/GeoLite2-Country.mmdb\", \"/var/lib/GeoIP/GeoLite2-ASN.mmdb\"]\n\
             metrics_country = true\n\n{}\n[[webhook]]\nurl = \"http://127.0.0.1:9/x\"\nretries = 3\n",
            s.abuseipdb("https://api.abuseipdb.com/api/v2/report", "")
        ),
    )
    .unwrap();
    let o = Command::new(bin())
        .arg("--config")
        .arg(&s.conf)
        .arg("check-config")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains("serve: geoip opens /var/lib/GeoIP/GeoLite2-Country.mmdb, /var/lib/GeoIP/GeoLite2-ASN.mmdb (metrics by country on)"),
        "{out}"
    );
    assert!(
        out.contains("abuseipdb: POST https://api.abuseipdb.com/api/v2/report (bans and trapped hosts, at most 1000 a day, a host at most every 15m)"),
        "{out}"
    );
    assert!(
        out.contains("webhook:webhook-1: POST http://127.0.0.1:9/x"),
        "{out}"
    );
    assert!(!out.contains(KEY), "{out}");
    std::fs::write(
        &s.conf,
        format!(
            "[report.abuseipdb]\nkey_file = {:?}\n\ndaily_quota = -3\n",
            s.key.to_str().unwrap()
        ),
    )
    .unwrap();
    let o = Command::new(bin())
        .arg("--config")
        .arg(&s.conf)
        .arg("check-config")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "{}:4: key `report.abuseipdb.daily_quota`",
            s.conf.display()
        )),
        "{err}"
    );
}
