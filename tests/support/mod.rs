//! The one kit shared by the integration tests and the benchmarks
//! (benchmarks include it with `#[path = "../tests/support/mod.rs"]`):
//! namespaces, `tarpit serve`/`watch` processes, the stateless lab, the
//! statistics helpers and /proc readers.
#![allow(dead_code)]

pub mod crowdsec;
pub mod efficacy;
pub mod lab;
pub mod netns;
pub mod proc;
pub mod serve;
pub mod stats;
pub mod watch;

use std::time::{Duration, Instant};

/// The `tarpit` binary cargo built for this test or benchmark.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tarpit")
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `limit`.
pub fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`poll`] for `secs`, panicking with `what` when it runs out.
pub fn wait_for<T>(secs: f64, what: &str, f: impl FnMut() -> Option<T>) -> T {
    poll(Duration::from_secs_f64(secs), f).unwrap_or_else(|| panic!("timed out waiting for {what}"))
}
