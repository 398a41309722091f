//! How fast `tarpit watch` digests a log: lines per second through
//! timestamp parsing, the default fail2ban filter, the window and the
//! SQLite state (one transaction per chunk), with a firewall that does
//! nothing. Prints figures; asserts nothing about speed.
//!
//! `WATCH_LINES` (default 200,000) lines, 1 in 10 a `Ban` line for one of
//! 5,000 hosts (so some hosts reach 3 and are banned).

use std::io::Write;
use std::time::{Duration, Instant};
use tarpit::watcher::{settings, Enforcer, State, Target, WatchSettings, Watcher};

struct Null;
impl Enforcer for Null {
    fn ensure(&self) -> Result<(), tarpit::firewall::FwError> {
        Ok(())
    }
    fn ban(&self, _: &[(Target, Duration)]) -> Result<(), tarpit::firewall::FwError> {
        Ok(())
    }
    fn restore(&self, _: &[(Target, Duration)]) -> Result<(), tarpit::firewall::FwError> {
        Ok(())
    }
    fn unban(&self, _: &[Target]) -> Result<(), tarpit::firewall::FwError> {
        Ok(())
    }
    fn intact(&self) -> Result<bool, tarpit::firewall::FwError> {
        Ok(true)
    }
}

fn main() {
    let n: usize = std::env::var("WATCH_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let dir = std::env::temp_dir().join(format!("tarpit-bench-watch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let log = dir.join("fail2ban.log");
    let ts = {
        let out = std::process::Command::new("date")
            .arg("+%Y-%m-%d %H:%M:%S,000")
            .output()
            .expect("date");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&log).expect("log"));
        for i in 0..n {
            if i % 10 == 0 {
                let h = (i / 10) % 5000;
                writeln!(
                    f,
                    "{ts} fail2ban.actions        [811]: NOTICE  [sshd] Ban 10.77.{}.{}",
                    h / 250,
                    h % 250 + 1
                )
            } else {
                writeln!(
                    f,
                    "{ts} fail2ban.filter         [811]: INFO    [sshd] Found 10.77.9.{} - {ts}",
                    i % 250
                )
            }
            .expect("write");
        }
    }
    let size = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let mut s = WatchSettings {
        state_db: dir.join("state.db"),
        ..WatchSettings::default()
    };
    let mut j = settings::default_jail();
    j.logpaths = vec![log.to_string_lossy().into_owned()];
    s.jails = vec![j];
    let state = State::open(&s.state_db).expect("state");
    let mut w = Watcher::new(s, state, Null, &[]);
    // The first tick starts at the first line within findtime: all of them.
    let t0 = Instant::now();
    while w.stats.lines < n as u64 && t0.elapsed() < Duration::from_secs(300) {
        w.tick();
    }
    let el = t0.elapsed().as_secs_f64();
    println!(
        "watch_lines: {} lines ({:.1} MB) in {:.3} s = {:.0} lines/s, {:.1} MB/s; {} matched, {} bans",
        w.stats.lines,
        size as f64 / 1e6,
        el,
        w.stats.lines as f64 / el,
        size as f64 / 1e6 / el,
        w.stats.matched,
        w.stats.bans
    );
    let _ = std::fs::remove_dir_all(&dir);
}
