//! For the statistics tests: a real `tarpit serve` process killed on
//! drop, free ports, clients bound to chosen 127.0.0.x sources.
#![allow(dead_code)]

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::{bin, poll};

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("tarpit-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port free right now on 127.0.0.1.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Connects to `dst` from `src` (any 127.0.0.0/8 address works on Linux
/// loopback without configuration).
pub fn connect_from(src: Ipv4Addr, dst: SocketAddr) -> std::io::Result<TcpStream> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.bind(&SockAddr::from(SocketAddr::new(src.into(), 0)))?;
    s.connect_timeout(&SockAddr::from(dst), Duration::from_secs(5))?;
    Ok(s.into())
}

/// Closes with an RST rather than a FIN.
pub fn reset(s: TcpStream) {
    let s = Socket::from(s);
    let _ = s.set_linger(Some(Duration::ZERO));
    drop(s);
}

/// A running `tarpit serve`; SIGKILLed on drop if still running.
pub struct Serve {
    pub child: Child,
    pub port: u16,
    pub control: PathBuf,
    pub log: PathBuf,
}

impl Serve {
    /// Starts `tarpit serve` on 127.0.0.1:<free port> with the control socket
    /// in `dir` plus `extra` flags, and waits for the control socket.
    pub fn start(dir: &Path, extra: &[&str]) -> Serve {
        Self::start_wrapped(dir, &[], extra)
    }

    /// Like [`Serve::start`], run through `wrapper` (a command line that
    /// ends by exec'ing its arguments, e.g. `unshare ... sh -c 'exec "$0" "$@"'`).
    pub fn start_wrapped(dir: &Path, wrapper: &[&str], extra: &[&str]) -> Serve {
        let port = free_port();
        let control = dir.join("control.sock");
        let log = dir.join("serve.log");
        let mut args: Vec<String> = vec![
            "--log-format".into(),
            "json".into(),
            "serve".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--per-ip".into(),
            "0".into(),
            "--control".into(),
            control.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut cmd = match wrapper.split_first() {
            Some((prog, rest)) => {
                let mut c = Command::new(prog);
                c.args(rest).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        let child = cmd
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut s = Serve {
            child,
            port,
            control,
            log,
        };
        // Generous: a loaded machine (and, for wrapped starts, mount
        // namespace set-up, which waits for RCU grace periods) can be slow.
        let limit = if wrapper.is_empty() { 60 } else { 180 };
        let up = poll(Duration::from_secs(limit), || {
            if let Ok(Some(st)) = s.child.try_wait() {
                panic!("serve exited early ({st}): {}", s.log_text());
            }
            std::os::unix::net::UnixStream::connect(&s.control)
                .ok()
                .map(|_| ())
        });
        assert!(
            up.is_some(),
            "control socket never appeared: {}",
            s.log_text()
        );
        s
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait (bounded) for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let st = poll(Duration::from_secs(20), || {
            self.child.try_wait().ok().flatten()
        });
        st.unwrap_or_else(|| panic!("serve did not exit on SIGTERM: {}", self.log_text()))
    }

    /// Runs `tarpit stats` against this server.
    pub fn stats(&self, extra: &[&str]) -> Output {
        Command::new(bin())
            .arg("stats")
            .arg("--control")
            .arg(&self.control)
            .args(extra)
            .output()
            .unwrap()
    }

    /// `tarpit stats --json`, parsed.
    pub fn snapshot(&self) -> serde_json::Value {
        let o = self.stats(&["--json"]);
        assert!(
            o.status.success(),
            "stats failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Flags for a server whose test does not look at the history.
pub const NO_HISTORY: &[&str] = &["--history", "off"];

/// `GET path` over HTTP/1.1 on 127.0.0.1; returns (status line, headers, body).
/// Just enough client for a test; the server side is hyper.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(String, String, String)> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    Ok((status.to_string(), headers.to_string(), body.to_string()))
}

/// One sample of an exposition: name, labels, value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Parses the OpenMetrics/Prometheus text format (samples only).
pub fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample line has a value");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let inner = rest.strip_suffix('}').expect("closing brace");
                let mut labels = Vec::new();
                let mut rest = inner;
                while !rest.is_empty() {
                    let (k, r) = rest.split_once("=\"").expect("label =\"");
                    let end = r.find('"').expect("closing quote");
                    labels.push((k.to_string(), r[..end].to_string()));
                    rest = r[end + 1..].trim_start_matches(',');
                }
                (n.to_string(), labels)
            }
            None => (series.to_string(), Vec::new()),
        };
        out.push(Sample {
            name,
            labels,
            value: value.parse().expect("numeric value"),
        });
    }
    out
}

/// The value of `name` whose labels include all of `want` (0 if absent).
pub fn metric(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            want.iter()
                .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|s| s.value)
        .sum()
}
