//! A two-namespace lab for the stateless engine: a server namespace running
//! `tarpit serve --engine stateless` behind the raw-priority log+drop rules,
//! and an attacker namespace joined to it by veth. Addresses:
//! 10.77.N.1 / fd77:N::1 (server), 10.77.N.2.. / fd77:N::2.. (attacker).

#![allow(dead_code)]

use super::netns::{sh, Netns};
use std::io::Read;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};
use tarpit::firewall::{NftConfig, TrapMode};

static SUBNET: AtomicU8 = AtomicU8::new(10);

pub const GROUP: u16 = 7;

pub struct Lab {
    pub server: Netns,
    pub attacker: Netns,
    pub net: u8,
    pub tarpit: Option<Child>,
    pub log: std::path::PathBuf,
}

pub struct LabConfig {
    /// Attacker addresses (last octet / last group) put in the trap sets.
    pub trapped_hosts: Vec<u8>,
    /// Extra attacker addresses that are not trapped.
    pub free_hosts: Vec<u8>,
    pub decoy_ports: Vec<u16>,
    pub extra_args: Vec<String>,
    /// Install the firewall module's stateless rules (false: the test installs
    /// its own, e.g. through the firewall module).
    pub rules: bool,
    /// Leave the attacker veth's checksum offload on: its TCP segments then
    /// carry partial checksums, as from a local container.
    pub checksum_offload: bool,
}

impl Default for LabConfig {
    fn default() -> Self {
        LabConfig {
            trapped_hosts: vec![2],
            free_hosts: vec![],
            decoy_ports: vec![],
            extra_args: vec![],
            rules: true,
            checksum_offload: false,
        }
    }
}

impl Lab {
    pub fn new(tag: &str, cfg: &LabConfig) -> Lab {
        let net = SUBNET.fetch_add(1, Ordering::SeqCst);
        let server = Netns::new(&format!("{tag}s"));
        let attacker = Netns::new(&format!("{tag}a"));
        let n = net;
        let pid = std::process::id() % 100000;
        let (ia, ib) = (format!("sa{pid}x{n}"), format!("sb{pid}x{n}"));
        sh(&format!(
            "ip link add {ia} netns {} type veth peer name {ib} netns {}",
            server.name, attacker.name
        ));
        server.run(&format!(
            "ip addr add 10.77.{n}.1/24 dev {ia} && ip -6 addr add fd77:{n}::1/64 dev {ia} nodad && ip link set {ia} up"
        ));
        let mut hosts = cfg.trapped_hosts.clone();
        hosts.extend(&cfg.free_hosts);
        for h in &hosts {
            attacker.run(&format!(
                "ip addr add 10.77.{n}.{h}/24 dev {ib} && ip -6 addr add fd77:{n}::{h}/64 dev {ib} nodad"
            ));
        }
        // Checksums in full on the wire, as from a real NIC: veth would
        // otherwise leave them to "hardware" that does not exist.
        attacker.run(&format!("ip link set {ib} up"));
        if !cfg.checksum_offload {
            attacker.run(&format!("ethtool -K {ib} tx off >/dev/null"));
        }
        // The rules `tarpit watch` installs with `engine = "stateless"`.
        let rules = NftConfig {
            mode: TrapMode::Stateless { group: GROUP },
            // Exact addresses (the sets below hold single hosts).
            v6_prefix: 128,
            decoy_ports: cfg.decoy_ports.clone(),
            ..NftConfig::default()
        };
        let mut script = if cfg.rules {
            tarpit::firewall::ruleset_text(&rules).expect("valid firewall config")
        } else {
            String::new()
        };
        for h in cfg.trapped_hosts.iter().filter(|_| cfg.rules) {
            script += &format!("add element inet tarpit trap4 {{ 10.77.{n}.{h} }}\n");
            script += &format!("add element inet tarpit trap6 {{ fd77:{n}::{h} }}\n");
        }
        // A conntrack user, so conntrack is active in the server namespace
        // and "no entry" means something.
        script += "add table inet probe\n";
        script +=
            "add chain inet probe input { type filter hook input priority 0; policy accept; }\n";
        script += "add rule inet probe input ct state established,related counter accept\n";
        let path = std::env::temp_dir().join(format!("{}.nft", server.name));
        std::fs::write(&path, script).expect("write nft script");
        server.run(&format!("nft -f {}", path.display()));
        let _ = std::fs::remove_file(&path);
        let log = std::env::temp_dir().join(format!("{}.log", server.name));
        let mut lab = Lab {
            server,
            attacker,
            net,
            tarpit: None,
            log,
        };
        lab.start_tarpit(&cfg.extra_args);
        lab
    }

    pub fn start_tarpit(&mut self, extra: &[String]) {
        let logf = std::fs::File::create(&self.log).expect("log file");
        let mut cmd = self.server.command(env!("CARGO_BIN_EXE_tarpit"));
        cmd.args([
            "--log-format",
            "json",
            "--log-level",
            "info",
            "serve",
            "--engine",
            "stateless",
            "--nflog-group",
            &GROUP.to_string(),
        ])
        .args(if extra.iter().any(|a| a == "--control") {
            &[][..]
        } else {
            &["--control", "off"][..]
        })
        .args(if extra.iter().any(|a| a == "--history") {
            &[][..]
        } else {
            &["--history", "off"][..]
        })
        .args(extra)
        .stdin(Stdio::null())
        .stdout(logf.try_clone().expect("dup"))
        .stderr(logf);
        self.tarpit = Some(cmd.spawn().expect("spawn tarpit"));
        self.wait_log("serving (stateless engine)", Duration::from_secs(20));
    }

    pub fn v4(&self, host: u8) -> String {
        format!("10.77.{}.{host}", self.net)
    }

    pub fn v6(&self, host: u8) -> String {
        format!("fd77:{}::{host}", self.net)
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Waits until the tarpit's log contains `needle` (panics after `max`).
    pub fn wait_log(&self, needle: &str, max: Duration) {
        let t = Instant::now();
        while t.elapsed() < max {
            if self.log_text().contains(needle) {
                return;
            }
            if let Some(c) = &self.tarpit {
                let pid = c.id();
                if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("tarpit log never showed {needle:?}:\n{}", self.log_text());
    }

    pub fn count_log(&self, needle: &str) -> usize {
        self.log_text().matches(needle).count()
    }

    pub fn pid(&self) -> u32 {
        self.tarpit.as_ref().expect("tarpit running").id()
    }

    /// Resident set size of the tarpit, bytes.
    pub fn rss(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("status");
        s.lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .expect("VmRSS")
            * 1024
    }

    pub fn signal(&self, sig: &str) {
        sh(&format!("kill -{sig} {}", self.pid()));
    }

    /// Stops the tarpit (SIGTERM) and returns its whole log.
    pub fn stop(&mut self) -> String {
        if let Some(mut c) = self.tarpit.take() {
            let _ = sh(&format!("kill -TERM {}", c.id()));
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        self.log_text()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut c) = self.tarpit.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}
