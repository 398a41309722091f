//! Running `tarpit watch` (and its sibling commands) for tests, inside a
//! namespace the test made, with a config, log and state file of its own.
#![allow(dead_code)]

use super::netns::Netns;
use super::{bin, wait_for};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

static N: AtomicU32 = AtomicU32::new(0);

/// A directory with `tarpit.toml`, `fail2ban.log` and `state.db`, removed on drop.
pub struct Scene {
    pub dir: PathBuf,
    pub conf: PathBuf,
    pub log: PathBuf,
    pub db: PathBuf,
}

impl Scene {
    /// `watch_extra` goes into `[watch]`, `jail_extra` into the one jail.
    pub fn new(tag: &str, watch_extra: &str, jail_extra: &str) -> Scene {
        let n = N.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("tarpit-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let s = Scene {
            conf: dir.join("tarpit.toml"),
            log: dir.join("fail2ban.log"),
            db: dir.join("state.db"),
            dir,
        };
        std::fs::write(
            &s.conf,
            format!(
                "[watch]\nstate_db = {:?}\npoll_interval = \"100ms\"\ncheck_interval = \"1s\"\n{watch_extra}\n\n\
                 [[watch.jail]]\nname = \"multi-ban\"\nlogpath = {:?}\n{jail_extra}\n",
                s.db.to_str().unwrap(),
                s.log.to_str().unwrap()
            ),
        )
        .unwrap();
        s
    }

    pub fn append(&self, text: &str) {
        append(&self.log, text);
    }

    /// `tarpit --config C ARGS` inside `ns`, waiting for it to finish.
    pub fn cli(&self, ns: &Netns, args: &[&str]) -> Output {
        ns.command(bin())
            .arg("--config")
            .arg(&self.conf)
            .args(args)
            .output()
            .expect("run tarpit")
    }

    pub fn watch(&self, ns: &Netns) -> WatchProc {
        let mut c = ns.command(bin());
        c.args(["--log-format", "json", "--config"])
            .arg(&self.conf)
            .arg("watch");
        WatchProc::spawn(c)
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn append(p: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// A fail2ban `Ban` line stamped now (local time, as fail2ban writes it).
pub fn ban_line(jail: &str, ip: &str) -> String {
    let out = Command::new("date")
        .arg("+%Y-%m-%d %H:%M:%S,%3N")
        .output()
        .unwrap();
    let ts = String::from_utf8(out.stdout).unwrap();
    format!(
        "{} fail2ban.actions        [4242]: NOTICE  [{jail}] Ban {ip}\n",
        ts.trim()
    )
}

/// A running `tarpit watch` whose JSON log lines are collected.
pub struct WatchProc {
    pub child: Child,
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl WatchProc {
    pub fn spawn(mut c: Command) -> WatchProc {
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn tarpit watch");
        let err = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l2 = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                l2.lock().unwrap().push(line);
            }
        });
        let mut p = WatchProc { child, lines };
        wait_for(15.0, "watcher following its log", || {
            if let Ok(Some(st)) = p.child.try_wait() {
                panic!("watch exited early ({st}): {:?}", p.lines.lock().unwrap());
            }
            p.json()
                .iter()
                .any(|v| v["message"] == "following log")
                .then_some(())
        });
        p
    }

    pub fn json(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn messages(&self, m: &str) -> Vec<Value> {
        self.json()
            .into_iter()
            .filter(|v| v["message"].as_str().is_some_and(|s| s.contains(m)))
            .collect()
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        let st = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let child = &mut self.child;
        let st = wait_for(10.0, "watch to exit", || child.try_wait().ok().flatten());
        assert!(st.success(), "watch exit status {st}");
    }
}

impl Drop for WatchProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `(value, timeout secs, expires secs)` of each element of `set` in table
/// `inet tarpit`, read with nft itself; empty when the set does not exist.
pub fn elements(ns: &Netns, set: &str) -> Vec<(String, Option<u64>, Option<u64>)> {
    let out = ns.try_run(&format!("nft -j list set inet tarpit {set}"));
    if !out.status.success() {
        return Vec::new();
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut res = Vec::new();
    for obj in v["nftables"].as_array().unwrap() {
        let Some(elems) = obj.get("set").and_then(|s| s.get("elem")) else {
            continue;
        };
        for e in elems.as_array().unwrap() {
            match e.get("elem") {
                Some(inner) => res.push((
                    inner["val"].as_str().unwrap_or("?").to_string(),
                    inner["timeout"].as_u64(),
                    inner["expires"].as_u64(),
                )),
                None => res.push((e.as_str().unwrap_or("?").to_string(), None, None)),
            }
        }
    }
    res
}

/// Waits (at most `secs`) until `set` holds `val`; returns its element.
pub fn wait_element(
    ns: &Netns,
    set: &str,
    val: &str,
    secs: f64,
) -> (String, Option<u64>, Option<u64>) {
    wait_for(secs, &format!("{val} in {set}"), || {
        let e = elements(ns, set).into_iter().find(|e| e.0 == val);
        if e.is_none() {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        e
    })
}
