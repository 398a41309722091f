//! Network namespaces made by a test, removed when dropped (even on panic).
//!
//! Addresses used inside them come from 10.77.0.0/16 / fd77::/16 only.

#![allow(dead_code)]

use super::is_root;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// True when the test can use namespaces and nft. Outside CI a non-root run
/// skips with a message; in CI (`CI` set) a missing privilege is a failure.
pub fn privileged(test: &str) -> bool {
    let ok = is_root() && which("ip") && which("nft");
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("{test}: needs root, ip and nft in CI");
        }
        eprintln!("SKIP {test}: needs root, ip and nft");
    }
    ok
}

pub fn which(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
        || std::path::Path::new("/usr/sbin").join(bin).is_file()
}

/// Runs a command, panicking with its stderr when it fails.
pub fn sh(cmd: &str) -> Output {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("spawn sh");
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A network namespace that exists while this value lives.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates `tp-<tag>-<pid>-<n>` with loopback up.
    pub fn new(tag: &str) -> Netns {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("tp-{tag}-{}-{n}", std::process::id());
        let ns = Netns { name };
        sh(&format!("ip netns add {}", ns.name));
        ns.run("ip link set lo up");
        ns
    }

    /// `ip netns exec NAME sh -c CMD`, panicking on failure.
    pub fn run(&self, cmd: &str) -> Output {
        sh(&format!(
            "ip netns exec {} sh -c '{}'",
            self.name,
            cmd.replace('\'', "'\\''")
        ))
    }

    /// Like [`run`](Self::run) but returns the output whatever the status.
    pub fn try_run(&self, cmd: &str) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", cmd])
            .output()
            .expect("spawn ip netns exec")
    }

    /// A `Command` that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `f` on a new thread that has entered this namespace; sockets it
    /// creates live there.
    pub fn in_thread<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns");
            tarpit::sys::enter_netns(&file).expect("setns");
            f()
        })
        .join()
        .expect("netns thread panicked")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Joins two namespaces with a veth pair: `a` gets `a_cidr` (e.g.
/// "10.77.1.1/24"), `b` gets `b_cidr`. Optional IPv6 addresses likewise.
pub fn veth(a: &Netns, a_cidr: &str, b: &Netns, b_cidr: &str) {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let ia = format!("va{}x{n}", std::process::id() % 100000);
    let ib = format!("vb{}x{n}", std::process::id() % 100000);
    sh(&format!(
        "ip link add {ia} netns {} type veth peer name {ib} netns {}",
        a.name, b.name
    ));
    a.run(&format!(
        "ip addr add {a_cidr} dev {ia} && ip link set {ia} up"
    ));
    b.run(&format!(
        "ip addr add {b_cidr} dev {ib} && ip link set {ib} up"
    ));
}

/// Like [`veth`] with IPv6 addresses too (`nodad` so they are usable at once).
pub fn veth6(a: &Netns, a4: &str, a6: &str, b: &Netns, b4: &str, b6: &str) {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let ia = format!("va{}y{n}", std::process::id() % 100000);
    let ib = format!("vb{}y{n}", std::process::id() % 100000);
    sh(&format!(
        "ip link add {ia} netns {} type veth peer name {ib} netns {}",
        a.name, b.name
    ));
    a.run(&format!(
        "ip addr add {a4} dev {ia} && ip -6 addr add {a6} dev {ia} nodad && ip link set {ia} up"
    ));
    b.run(&format!(
        "ip addr add {b4} dev {ib} && ip -6 addr add {b6} dev {ib} nodad && ip link set {ib} up"
    ));
}
