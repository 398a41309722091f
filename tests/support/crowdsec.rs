//! A real CrowdSec Local API (Debian's `crowdsec` package) for tests: its
//! own config directory and SQLite database, no agent, no online API, no
//! prometheus, listening on a free port of 127.0.0.1 (or of an address
//! inside a namespace the test made). Stopped by its pid when dropped.
//!
//! Bouncers and machines are registered with `cscli -c CFG`, which writes
//! the database directly, so they work before LAPI runs. `cscli decisions`
//! talks to the API as the machine in `local_api_credentials.yaml`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static N: AtomicU32 = AtomicU32::new(0);

/// True when the crowdsec binaries are installed. Outside CI a test may
/// skip without them; in CI (`CI` set) a missing package is a failure.
pub fn available(test: &str) -> bool {
    let ok = Path::new("/usr/bin/crowdsec").is_file() && Path::new("/usr/bin/cscli").is_file();
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("{test}: crowdsec is not installed (tests/run-all.sh installs it)");
        }
        eprintln!("SKIP {test}: crowdsec is not installed (apt-get install crowdsec)");
    }
    ok
}

/// A free TCP port on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub struct Lapi {
    pub dir: PathBuf,
    pub cfg: PathBuf,
    /// `ip:port` it listens on.
    pub listen: String,
    /// Network namespace it runs in (`None`: the test's own).
    pub netns: Option<String>,
    child: Option<Child>,
}

impl Lapi {
    /// Writes the config for a LAPI on `127.0.0.1:<free port>`.
    pub fn new(tag: &str) -> Lapi {
        Self::with_listen(tag, &format!("127.0.0.1:{}", free_port()), None)
    }

    /// Writes the config for a LAPI on `listen`, run inside `netns`.
    pub fn with_listen(tag: &str, listen: &str, netns: Option<&str>) -> Lapi {
        let n = N.fetch_add(1, Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("tarpit-lapi-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["data", "hub", "notifications"] {
            std::fs::create_dir_all(dir.join(d)).expect("lapi dir");
        }
        let d = dir.display();
        std::fs::write(dir.join("hub/.index.json"), "{}").unwrap();
        std::fs::write(dir.join("simulation.yaml"), "simulation: off\n").unwrap();
        std::fs::write(
            dir.join("profiles.yaml"),
            "name: default_ip_remediation\nfilters:\n - Alert.Remediation == true && Alert.GetScope() == \"Ip\"\n\
             decisions:\n - type: ban\n   duration: 4h\non_success: break\n",
        )
        .unwrap();
        let cfg = dir.join("config.yaml");
        std::fs::write(
            &cfg,
            format!(
                "common:\n  daemonize: false\n  log_media: file\n  log_level: info\n  log_dir: {d}/\n  working_dir: {d}\n\
                 config_paths:\n  config_dir: {d}/\n  data_dir: {d}/data/\n  simulation_path: {d}/simulation.yaml\n\
                 \x20 hub_dir: {d}/hub/\n  index_path: {d}/hub/.index.json\n  notification_dir: {d}/notifications/\n\
                 \x20 plugin_dir: /usr/lib/crowdsec/plugins/\n\
                 cscli:\n  output: human\n\
                 db_config:\n  log_level: info\n  type: sqlite\n  db_path: {d}/data/crowdsec.db\n  use_wal: true\n\
                 api:\n  client:\n    credentials_path: {d}/local_api_credentials.yaml\n\
                 \x20 server:\n    log_level: info\n    listen_uri: {listen}\n    profiles_path: {d}/profiles.yaml\n\
                 prometheus:\n  enabled: false\n"
            ),
        )
        .unwrap();
        let lapi = Lapi {
            dir,
            cfg,
            listen: listen.to_string(),
            netns: netns.map(str::to_string),
            child: None,
        };
        // The machine cscli itself uses for `decisions add/list/delete`.
        let creds = lapi.dir.join("local_api_credentials.yaml");
        let out = lapi.cscli(&[
            "machines",
            "add",
            "cscli-admin",
            "--password",
            "admin-password-1234",
            "-f",
            creds.to_str().unwrap(),
            "--force",
        ]);
        assert!(out.status.success(), "cscli machines add: {}", text(&out));
        lapi
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.listen)
    }

    fn command(&self, program: &str) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, program]);
                c
            }
            None => Command::new(program),
        }
    }

    /// `cscli -c CFG ARGS`, whatever its status.
    pub fn cscli(&self, args: &[&str]) -> Output {
        self.command("cscli")
            .arg("-c")
            .arg(&self.cfg)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run cscli")
    }

    /// Like [`cscli`](Self::cscli), panicking unless it succeeds.
    pub fn cscli_ok(&self, args: &[&str]) -> String {
        let out = self.cscli(args);
        assert!(out.status.success(), "cscli {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Registers a bouncer; returns its API key.
    pub fn add_bouncer(&self, name: &str) -> String {
        let key = self.cscli_ok(&["bouncers", "add", name, "-o", "raw"]);
        let key = key.trim().to_string();
        assert!(!key.is_empty(), "no key from cscli bouncers add");
        key
    }

    /// Registers a machine with `password` (credentials file in `dir`).
    pub fn add_machine(&self, name: &str, password: &str) {
        let f = self.dir.join(format!("machine-{name}.yaml"));
        self.cscli_ok(&[
            "machines",
            "add",
            name,
            "--password",
            password,
            "-f",
            f.to_str().unwrap(),
            "--force",
        ]);
    }

    /// Starts LAPI and waits until it answers HTTP.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "LAPI already running");
        let logf = std::fs::File::create(self.dir.join("stdout.log")).unwrap();
        let child = self
            .command("crowdsec")
            .arg("-c")
            .arg(&self.cfg)
            .args(["-no-cs", "-no-capi"])
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .expect("spawn crowdsec");
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if self.answers() {
                return;
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("crowdsec exited ({st}): {}", self.log());
            }
            assert!(Instant::now() < end, "LAPI never answered: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// True when something answers HTTP on the listen address (a request
    /// without a key gets 403, which is an answer).
    fn answers(&self) -> bool {
        let (ip, port) = self.listen.rsplit_once(':').expect("ip:port");
        // bash's /dev/tcp, so the probe runs inside LAPI's namespace too.
        let probe = format!(
            "exec 3<>/dev/tcp/{ip}/{port} && printf 'GET /v1/decisions/stream HTTP/1.0\\r\\n\\r\\n' >&3 && head -c 12 <&3"
        );
        match self
            .command("bash")
            .arg("-c")
            .arg(probe)
            .stderr(Stdio::null())
            .output()
        {
            Ok(o) => String::from_utf8_lossy(&o.stdout).starts_with("HTTP/1."),
            Err(_) => false,
        }
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops LAPI by its pid (SIGTERM, then SIGKILL) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let end = Instant::now() + Duration::from_secs(10);
            while Instant::now() < end {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// LAPI's own log, for failure messages.
    pub fn log(&self) -> String {
        let mut s = std::fs::read_to_string(self.dir.join("stdout.log")).unwrap_or_default();
        s += &std::fs::read_to_string(self.dir.join("crowdsec_api.log")).unwrap_or_default();
        s
    }

    /// `cscli decisions list -o json -a`, flattened to the decisions.
    pub fn decisions(&self) -> Vec<serde_json::Value> {
        let out = self.cscli_ok(&["decisions", "list", "-o", "json", "-a"]);
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_default();
        v.as_array()
            .into_iter()
            .flatten()
            .flat_map(|alert| alert["decisions"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

impl Drop for Lapi {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
