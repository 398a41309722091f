//! The jails shipped in `deploy/jails/` against what the real daemons write:
//! Debian's `sshd` (logging to a file with `-E`) failed by the real `ssh`
//! client, and Debian's nginx answering basic-auth failures. Each runs in a
//! namespace of its own, the client in another (10.77.0.0/16), and
//! `tarpit watch` runs the shipped jail file with only its `logpath`
//! pointed at the test's log. The README quotes the files byte for byte.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use support::netns::{privileged, veth, which, Netns};
use support::serve::Proc;
use support::watch::{elements, wait_element, WatchProc};
use support::{bin, wait_for};

static N: AtomicU32 = AtomicU32::new(0);

const JAILS: [&str; 2] = ["sshd.toml", "nginx-http-auth.toml"];

fn shipped(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/jails")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A scratch directory removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let n = N.fetch_add(1, Ordering::SeqCst);
        let d = std::env::temp_dir().join(format!("tarpit-jail-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed (and reaped) on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `[watch]` for the test plus the shipped jail, whose `logpath` line is
/// the only thing changed.
fn config(dir: &Path, jail_file: &str, shipped_log: &str, log: &Path) -> PathBuf {
    let jail = shipped(jail_file);
    let from = format!("logpath = \"{shipped_log}\"\n");
    assert_eq!(jail.matches(&from).count(), 1, "{jail_file} has {from:?}");
    let jail = jail.replace(
        &from,
        &format!("logpath = {:?}\n", log.display().to_string()),
    );
    let conf = dir.join("tarpit.toml");
    std::fs::write(
        &conf,
        format!(
            "[watch]\nstate_db = {:?}\npoll_interval = \"100ms\"\ncheck_interval = \"1s\"\n\n{jail}",
            dir.join("state.db").display().to_string()
        ),
    )
    .unwrap();
    conf
}

fn watch(ns: &Netns, conf: &Path) -> WatchProc {
    let mut c = ns.command(bin());
    c.args(["--log-format", "json", "--config"])
        .arg(conf)
        .args(["watch", "--metrics", "127.0.0.1:9465"]);
    WatchProc::spawn(c)
}

/// One series of the watcher's metrics (inside `ns`), 0 when absent.
fn metric(ns: &Netns, series: &str) -> f64 {
    let text = ns.in_thread(|| {
        let mut s = TcpStream::connect("127.0.0.1:9465").expect("metrics port");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    });
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

fn lines(jail: &str, result: &str) -> String {
    format!("tarpit_log_lines_total{{jail=\"{jail}\",result=\"{result}\"}}")
}

fn wait_text(path: &Path, needle: &str, n: usize) -> String {
    wait_for(
        15.0,
        &format!("{n} x {needle:?} in {}", path.display()),
        || {
            let t = std::fs::read_to_string(path).unwrap_or_default();
            (t.matches(needle).count() >= n).then_some(t)
        },
    )
}

fn have(test: &str, bins: &[&str]) -> bool {
    if !privileged(test) {
        return false;
    }
    let missing: Vec<&&str> = bins.iter().filter(|b| !which(b)).collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: needs {missing:?} (tests/run-all.sh installs them)");
    }
    eprintln!("SKIP {test}: needs {missing:?}");
    false
}

#[test]
fn readme_quotes_the_shipped_jails_exactly_and_they_are_valid() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    for f in JAILS {
        let text = shipped(f);
        assert!(
            readme.contains(&format!("```toml\n{text}```\n")),
            "README.md does not quote deploy/jails/{f} byte for byte"
        );
        let d = Dir::new("check");
        let conf = config(&d.0, f, logpath_of(&text), &d.0.join("x.log"));
        let o = Command::new(bin())
            .arg("--config")
            .arg(&conf)
            .arg("check-config")
            .output()
            .unwrap();
        let out =
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{f}: {out}");
        assert!(!out.contains("unanchored"), "{f}: {out}");
    }
}

fn logpath_of(jail: &str) -> &str {
    jail.lines()
        .find_map(|l| l.strip_prefix("logpath = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("a single logpath")
}

/// The real `ssh` client, never asking anything, never using the machine's
/// keys, agent or known hosts.
fn ssh(ns: &Netns, dir: &Path, target: &str, password: Option<&str>) -> String {
    let mut c = match password {
        Some(_) => {
            let mut c = ns.command("sshpass");
            c.args(["-e", "ssh"]);
            c
        }
        None => ns.command("ssh"),
    };
    c.env_remove("SSH_AUTH_SOCK")
        .args(["-F", "/dev/null", "-p", "22"])
        .args(["-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null"])
        .args(["-o", "GlobalKnownHostsFile=/dev/null"])
        .args(["-o", "ConnectTimeout=10"])
        .args(["-o", "IdentitiesOnly=yes"])
        .arg("-o")
        .arg(format!("IdentityFile={}", dir.join("client_key").display()));
    match password {
        Some(p) => {
            c.env("SSHPASS", p)
                .args(["-o", "PreferredAuthentications=password"])
                .args(["-o", "PubkeyAuthentication=no"])
                .args(["-o", "NumberOfPasswordPrompts=1"]);
        }
        None => {
            c.args(["-o", "BatchMode=yes"])
                .args(["-o", "PreferredAuthentications=publickey"]);
        }
    }
    let o = c.arg(target).arg("true").output().expect("run ssh");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        !o.status.success() && err.contains("Permission denied"),
        "ssh {target}: {err}"
    );
    err
}

/// Debian's sshd writes the three kinds of line; the shipped sshd jail
/// counts each, bans the client at exactly `maxretry` (5) hits, and its next
/// connection to port 22 is held by `tarpit serve`.
#[test]
fn real_sshd_failures_ban_and_trap_with_the_shipped_jail() {
    let test = "real_sshd_failures_ban_and_trap_with_the_shipped_jail";
    if !have(test, &["sshd", "ssh", "sshpass", "ssh-keygen"]) {
        return;
    }
    let d = Dir::new("sshd");
    let server = Netns::new("jsshs");
    let client = Netns::new("jsshc");
    veth(&server, "10.77.51.1/24", &client, "10.77.51.2/24");
    // sshd's privilege-separation directory (Debian's unit makes it).
    support::netns::sh("mkdir -p /run/sshd && chmod 0755 /run/sshd");
    support::netns::sh(&format!(
        "ssh-keygen -q -t ed25519 -N '' -f {0}/host_key && ssh-keygen -q -t ed25519 -N '' -f {0}/client_key",
        d.0.display()
    ));
    let log = d.0.join("sshd.log");
    let cfg = d.0.join("sshd_config");
    std::fs::write(
        &cfg,
        format!(
            "Port 22\nListenAddress 10.77.51.1\nHostKey {0}/host_key\nPidFile {0}/sshd.pid\n\
             PasswordAuthentication yes\nKbdInteractiveAuthentication no\nUsePAM no\n\
             AuthorizedKeysFile none\nLogLevel INFO\n",
            d.0.display()
        ),
    )
    .unwrap();
    let sshd = Daemon(
        server
            .command("/usr/sbin/sshd")
            .arg("-D")
            .arg("-f")
            .arg(&cfg)
            .arg("-E")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sshd"),
    );
    wait_text(&log, "Server listening on 10.77.51.1 port 22.", 1);

    let conf = config(&d.0, "sshd.toml", "/var/log/auth.log", &log);
    let _watch = watch(&server, &conf);
    let serve = Proc::spawn({
        let mut c = server.command(bin());
        c.args(["--log-format", "json", "serve", "--history", "off"])
            .args(["--control", "off", "--listen", "0.0.0.0:2222"])
            .args(["--lifetime-min", "1s", "--lifetime-max", "1s"]);
        c
    });

    let matched = lines("sshd", "matched");
    // A wrong password for a real user: "Failed password" and, as the client
    // gives up, "Connection closed by authenticating user ... [preauth]".
    ssh(&client, &d.0, "root@10.77.51.1", Some("wrong"));
    wait_text(&log, "Connection closed by authenticating user root", 1);
    // An unknown user: "Invalid user" and "Failed password for invalid user".
    ssh(&client, &d.0, "nosuchuser@10.77.51.1", Some("wrong"));
    let text = wait_text(&log, "Connection closed by invalid user nosuchuser", 1);
    for want in [
        "Failed password for root from 10.77.51.2 port ",
        "Invalid user nosuchuser from 10.77.51.2 port ",
        "Failed password for invalid user nosuchuser from 10.77.51.2 port ",
    ] {
        assert!(text.contains(want), "sshd wrote no {want:?}:\n{text}");
    }
    wait_for(15.0, "4 matched lines", || {
        (metric(&server, &matched) == 4.0).then_some(())
    });
    assert!(
        elements(&server, "trap4").is_empty(),
        "banned before maxretry"
    );
    // A key sshd does not accept: only "Connection closed by authenticating
    // user ... [preauth]" — the fifth hit.
    ssh(&client, &d.0, "root@10.77.51.1", None);
    let (_, timeout, _) = wait_element(&server, "trap4", "10.77.51.2", 15.0);
    let timeout = timeout.expect("element timeout");
    assert!((3590..=3600).contains(&timeout), "ban {timeout}s, want 1h");
    assert_eq!(metric(&server, &matched), 5.0);

    // Trapped: the client's next connection to sshd's port is held by serve.
    client.in_thread(|| {
        let s =
            TcpStream::connect_timeout(&"10.77.51.1:22".parse().unwrap(), Duration::from_secs(5))
                .expect("connect while trapped");
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut b = [0u8; 64];
        // sshd would greet with "SSH-2.0-..."; the tarpit never writes.
        assert!(matches!((&s).read(&mut b), Err(_) | Ok(0)), "got a banner");
    });
    let rec = wait_for(15.0, "serve's record of the client", || {
        serve.records().into_iter().find(|r| {
            r["peer"]
                .as_str()
                .is_some_and(|p| p.starts_with("10.77.51.2:"))
        })
    });
    assert_eq!(rec["original_dst"], "10.77.51.1:22", "{rec}");
    drop(sshd);
}

/// One HTTP request from `ns` with optional basic-auth `user:password`
/// (raw bytes); returns the status line.
fn http(ns: &Netns, to: &'static str, cred: Option<&[u8]>) -> String {
    let auth = cred.map(|c| {
        use std::fmt::Write as _;
        // Base64 by hand: no dev-dependency for one header.
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for ch in c.chunks(3) {
            let b = [ch[0], *ch.get(1).unwrap_or(&0), *ch.get(2).unwrap_or(&0)];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= ch.len() {
                    s.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    s.push('=');
                }
            }
        }
        let mut h = String::new();
        let _ = write!(h, "Authorization: Basic {s}\r\n");
        h
    });
    ns.in_thread(move || {
        let mut s = TcpStream::connect(to).expect("connect nginx");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let req = format!(
            "GET /private/ HTTP/1.1\r\nHost: test\r\n{}Connection: close\r\n\r\n",
            auth.unwrap_or_default()
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    })
}

/// Debian's nginx with basic auth: 401s to requests that sent a user count,
/// a browser's first request (no user) does not, and user names carrying
/// forged log lines naming another host ban only their sender. The test also
/// shows why the jail reads the access log: nginx's error log writes the
/// user name's newline as it is.
#[test]
fn real_nginx_auth_failures_ban_with_the_shipped_jail() {
    let test = "real_nginx_auth_failures_ban_with_the_shipped_jail";
    if !have(test, &["nginx", "openssl"]) {
        return;
    }
    let d = Dir::new("nginx");
    let server = Netns::new("jngs");
    let client = Netns::new("jngc");
    veth(&server, "10.77.52.1/24", &client, "10.77.52.2/24");
    let dir = d.0.display().to_string();
    support::netns::sh(&format!(
        "mkdir -p {dir}/www/private {dir}/tmp && echo ok > {dir}/www/private/index.html && \
         printf 'alice:%s\\n' \"$(openssl passwd -apr1 secret)\" > {dir}/htpasswd && chmod 0755 {dir}"
    ));
    std::fs::write(
        d.0.join("nginx.conf"),
        format!(
            "daemon off;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\nevents {{ worker_connections 64; }}\n\
             http {{\n  access_log {dir}/access.log combined;\n  client_body_temp_path {dir}/tmp;\n\
             proxy_temp_path {dir}/tmp;\n  fastcgi_temp_path {dir}/tmp;\n  uwsgi_temp_path {dir}/tmp;\n\
             scgi_temp_path {dir}/tmp;\n  server {{\n    listen 10.77.52.1:80;\n    server_name test;\n\
             root {dir}/www;\n    location /private/ {{ auth_basic \"private\"; auth_basic_user_file {dir}/htpasswd; }}\n  }}\n}}\n"
        ),
    )
    .unwrap();
    let _nginx = Daemon(
        server
            .command("nginx")
            .arg("-c")
            .arg(d.0.join("nginx.conf"))
            .arg("-e")
            .arg(d.0.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nginx"),
    );
    let to = "10.77.52.1:80";
    wait_for(15.0, "nginx answering", || {
        let ok = client.in_thread(move || TcpStream::connect(to).is_ok());
        ok.then_some(())
    });
    let access = d.0.join("access.log");
    let conf = config(
        &d.0,
        "nginx-http-auth.toml",
        "/var/log/nginx/access.log",
        &access,
    );
    let _watch = watch(&server, &conf);

    let jail = "nginx-http-auth";
    // The browser's first request: 401 without a user, not an offence.
    assert!(http(&client, to, None).contains(" 401 "));
    assert!(http(&client, to, Some(b"alice:secret")).contains(" 200 "));
    wait_for(15.0, "the 401 without a user ignored", || {
        (metric(&server, &lines(jail, "ignored")) == 1.0).then_some(())
    });
    // Forged lines naming 10.77.52.50 in the user name (which can hold
    // anything but ':'): a newline and a whole access-log line, and quotes.
    let forged_line: &[u8] =
        b"x\n10.77.52.50 - y [01/Jan/2026] \"GET / HTTP/1.1\" 401 1 \"-\" \"-\"\nz:pw";
    let forged_quotes: &[u8] = b"y\" 401 1 \"-\" \"-\"\n10.77.52.50 - y [x] \"GET:pw";
    for cred in [
        forged_line,
        forged_quotes,
        b"alice:wrong".as_slice(),
        b"mallory:guess".as_slice(),
    ] {
        assert!(http(&client, to, Some(cred)).contains(" 401 "));
    }
    wait_for(15.0, "4 matched lines", || {
        (metric(&server, &lines(jail, "matched")) == 4.0).then_some(())
    });
    assert!(
        elements(&server, "trap4").is_empty(),
        "banned before maxretry"
    );
    // The error log takes the newline as it is: client text starts a line.
    let error_log = std::fs::read_to_string(d.0.join("error.log")).unwrap();
    assert!(
        error_log.contains("\n10.77.52.50 - y [01/Jan/2026]"),
        "nginx's error log no longer splits at a user name's newline; update the jail's comment:\n{error_log}"
    );
    assert!(http(&client, to, Some(b"alice:wrong-again")).contains(" 401 "));
    let (_, timeout, _) = wait_element(&server, "trap4", "10.77.52.2", 15.0);
    assert!((3590..=3600).contains(&timeout.expect("timeout")));
    assert_eq!(metric(&server, &lines(jail, "matched")), 5.0);
    let set: Vec<String> = elements(&server, "trap4")
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(
        set,
        vec!["10.77.52.2".to_string()],
        "only the sender is banned"
    );
    let log = std::fs::read_to_string(&access).unwrap();
    assert!(
        log.contains("10.77.52.2 - x\\x0A10.77.52.50 - y [")
            && log.contains("10.77.52.2 - y\\x22 401 1 \\x22-\\x22"),
        "the access log escapes newlines and quotes:\n{log}"
    );
}
