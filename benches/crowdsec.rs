//! `cargo bench --bench crowdsec`: what CrowdSec decisions cost `tarpit watch`.
//!
//! 1. Startup: a stream answer with N decisions (10,000 and 100,000; a fake
//!    LAPI on loopback serves the body LAPI 1.4.6 would) pulled, parsed,
//!    checked and stored in the state database, then applied as ONE
//!    firewall batch. With root the batch goes to real nftables in a
//!    namespace of its own (`tp-csbench-<pid>`, removed at the end);
//!    without, only the pull/store half runs. Target: 10,000 in < 1 s.
//! 2. Steady state: decisions applied per second from small stream answers
//!    (100 new decisions per pull).
//! 3. Ranges (root): 10,000 /24 networks written into the interval sets in
//!    one transaction, and rewritten (the cost of a range change at 10,000).
//!
//! `CS_BENCH_MAX` caps the largest startup (default 100,000).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tarpit::firewall::{Firewall, FwError, Net, NftConfig};
use tarpit::watcher::crowdsec::client::Endpoint;
use tarpit::watcher::crowdsec::settings::{Secret, Settings};
use tarpit::watcher::crowdsec::worker::Worker;
use tarpit::watcher::crowdsec::{Bridge, CrowdSecMetrics};
use tarpit::watcher::external::External;
use tarpit::watcher::Enforcer;

struct Ns(String);
impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// A fake LAPI answering every request with the next body (then `{}`).
fn serve(bodies: Vec<Vec<u8>>, stop: Arc<AtomicBool>) -> (String, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let url = format!("http://{}/", l.local_addr().unwrap());
    let t = std::thread::spawn(move || {
        let mut bodies = bodies.into_iter();
        while !stop.load(Ordering::Relaxed) {
            let Ok((mut s, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            };
            let _ = s.set_nonblocking(false);
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let body = bodies
                .next()
                .unwrap_or_else(|| b"{\"new\":null,\"deleted\":null}".to_vec());
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    (url, t)
}

/// A stream body with `n` Ip decisions starting at id `first`.
fn body(first: u32, n: u32) -> Vec<u8> {
    let mut s = String::from("{\"deleted\":null,\"new\":[");
    for i in 0..n {
        let id = first + i;
        if i > 0 {
            s.push(',');
        }
        // 10.100.0.0 and up; never this machine's.
        let a = std::net::Ipv4Addr::from(0x0a64_0000u32 + id);
        s += &format!(
            "{{\"duration\":\"167h59m59.{:03}s\",\"id\":{id},\"origin\":\"crowdsec\",\"scenario\":\"tarpit/multi-ban\",\"scope\":\"Ip\",\"type\":\"tarpit\",\"value\":\"{a}\"}}",
            id % 1000
        );
    }
    s += "]}";
    s.into_bytes()
}

fn settings(url: &str) -> Settings {
    Settings {
        url: url.into(),
        endpoint: Endpoint::parse(url).unwrap(),
        api_key: Some(Secret("bench".into())),
        api_key_file: None,
        machine_id: None,
        password: None,
        push: false,
        types: vec!["tarpit".into()],
        origins: vec![],
        update_frequency: Duration::from_secs(1),
    }
}

/// An enforcer that only counts (for runs without root).
#[derive(Default)]
struct Count(std::cell::Cell<usize>, std::cell::Cell<usize>);
impl Enforcer for Count {
    fn ensure(&self) -> Result<(), FwError> {
        Ok(())
    }
    fn ban(&self, b: &[(tarpit::firewall::Target, Duration)]) -> Result<(), FwError> {
        self.0.set(self.0.get() + 1);
        self.1.set(self.1.get() + b.len());
        Ok(())
    }
    fn restore(&self, b: &[(tarpit::firewall::Target, Duration)]) -> Result<(), FwError> {
        self.ban(b)
    }
    fn unban(&self, _: &[tarpit::firewall::Target]) -> Result<(), FwError> {
        Ok(())
    }
    fn intact(&self) -> Result<bool, FwError> {
        Ok(true)
    }
    fn set_ranges(&self, _: &[(Net, Duration)]) -> Result<(), FwError> {
        Ok(())
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let max: u32 = std::env::var("CS_BENCH_MAX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
        .min(200_000);
    let ns = if is_root()
        && Command::new("ip")
            .args([
                "netns",
                "add",
                &format!("tp-csbench-{}", std::process::id()),
            ])
            .output()
            .is_ok_and(|o| o.status.success())
    {
        Some(Ns(format!("tp-csbench-{}", std::process::id())))
    } else {
        println!("crowdsec: no root (or no ip netns): firewall batches are counted, not run");
        None
    };
    let fw = ns.as_ref().map(|ns| {
        let f = Firewall::new(NftConfig {
            netns: Some(ns.0.clone()),
            range_sets: true,
            ..NftConfig::default()
        });
        f.ensure().expect("nft ensure");
        f
    });
    let dir = std::env::temp_dir().join(format!("tarpit-csbench-{}", std::process::id()));

    for n in [10_000u32, 100_000].into_iter().filter(|n| *n <= max) {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("state.db");
        let stop = Arc::new(AtomicBool::new(false));
        let b = body(1, n);
        let size = b.len();
        let (url, t) = serve(vec![b], stop.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let mut w = Worker::new(
            settings(&url),
            &db,
            64,
            vec![],
            Arc::new(CrowdSecMetrics::default()),
            tx,
        )
        .unwrap();
        let mut bridge = Bridge::new(tarpit::watcher::crowdsec::store::open(&db).unwrap(), rx);
        let t0 = Instant::now();
        rt.block_on(w.pull());
        let pulled = t0.elapsed();
        let count = Count::default();
        let t1 = Instant::now();
        match &fw {
            Some(f) => bridge.tick(f, true).expect("apply"),
            None => bridge.tick(&count, true).expect("apply"),
        }
        let applied = t1.elapsed();
        let total = t0.elapsed();
        if fw.is_none() {
            assert_eq!((count.0.get(), count.1.get()), (1, n as usize), "one batch");
        }
        println!(
            "crowdsec startup: {n} decisions ({:.1} MB stream): pull+parse+store {:.0} ms, one firewall batch {:.0} ms{}, total {:.0} ms ({:.0} decisions/s)",
            size as f64 / 1e6,
            pulled.as_secs_f64() * 1e3,
            applied.as_secs_f64() * 1e3,
            if fw.is_some() { " (real nft)" } else { " (counted only)" },
            total.as_secs_f64() * 1e3,
            n as f64 / total.as_secs_f64()
        );
        stop.store(true, Ordering::Relaxed);
        let _ = t.join();
        if let Some(f) = &fw {
            // Empty the host set again for the next size.
            f.restore(&[]).ok();
            let _ = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &ns.as_ref().unwrap().0,
                    "nft",
                    "flush",
                    "set",
                    "inet",
                    "tarpit",
                    "trap4",
                ])
                .output();
        }
    }

    // Steady state: 50 pulls of 100 new decisions each.
    {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("state.db");
        let stop = Arc::new(AtomicBool::new(false));
        let bodies: Vec<Vec<u8>> = (0..51)
            .map(|i| body(1_000_000 + i * 100, if i == 0 { 0 } else { 100 }))
            .collect();
        let (url, t) = serve(bodies, stop.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let mut w = Worker::new(
            settings(&url),
            &db,
            64,
            vec![],
            Arc::new(CrowdSecMetrics::default()),
            tx,
        )
        .unwrap();
        let mut bridge = Bridge::new(tarpit::watcher::crowdsec::store::open(&db).unwrap(), rx);
        rt.block_on(w.pull()); // the (empty) startup
        let count = Count::default();
        let t0 = Instant::now();
        for _ in 0..50 {
            rt.block_on(w.pull());
            match &fw {
                Some(f) => bridge.tick(f, true).expect("apply"),
                None => bridge.tick(&count, true).expect("apply"),
            }
        }
        let el = t0.elapsed();
        println!(
            "crowdsec stream: 50 pulls x 100 decisions applied in {:.0} ms: {:.0} decisions/s, {:.1} ms per pull{}",
            el.as_secs_f64() * 1e3,
            5000.0 / el.as_secs_f64(),
            el.as_secs_f64() * 1e3 / 50.0,
            if fw.is_some() { " (real nft)" } else { " (counted only)" }
        );
        stop.store(true, Ordering::Relaxed);
        let _ = t.join();
    }

    // Ranges at 10,000.
    if let Some(f) = &fw {
        let nets: Vec<(Net, Duration)> = (0..10_000u32)
            .map(|i| {
                let a = std::net::Ipv4Addr::from(0x0b00_0000u32 + (i << 8));
                (
                    Net::new(a.into(), 24).unwrap(),
                    Duration::from_secs(3600 + u64::from(i)),
                )
            })
            .collect();
        let t0 = Instant::now();
        f.set_ranges(&nets).expect("set_ranges");
        let first = t0.elapsed();
        let t1 = Instant::now();
        f.set_ranges(&nets).expect("set_ranges again");
        let again = t1.elapsed();
        let t2 = Instant::now();
        let intact = f.intact().expect("intact");
        let check = t2.elapsed();
        assert!(intact);
        println!(
            "crowdsec ranges: 10000 /24 into the interval set {:.0} ms, rewritten whole {:.0} ms, integrity check with them {:.0} ms",
            first.as_secs_f64() * 1e3,
            again.as_secs_f64() * 1e3,
            check.as_secs_f64() * 1e3
        );
    } else {
        println!("crowdsec ranges: SKIP (needs root for nft in a namespace)");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
