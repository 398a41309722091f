//! The watch loop: logs → filters → window → state → firewall.
//!
//! [`sources`] finds and follows the log files (globs, rotation, inotify);
//! [`pipeline`] turns their lines into hits and bans; [`enforce`] puts bans
//! into the firewall and keeps it healthy (checks, rebuilds, back-off);
//! this file is the loop that drives them and reloads the config.
//!
//! The database is committed before the firewall is touched, so a ban is
//! never lost: if `nft` fails, the watcher logs it (rate-limited), keeps
//! running, and retries with back-off by re-applying every active ban from
//! the database in one batch. The same rebuild runs when the periodic check
//! finds our table or sets gone (`nft flush ruleset`, a restart of
//! nftables.service).

mod enforce;
mod pipeline;
mod sources;

pub use enforce::Enforcer;

use super::filter::LineVerdict;
use super::follow::{Follower, Start};
use super::host::{IgnoreList, Target};
use super::metrics::WatchMetrics;
use super::settings::{Jail, WatchSettings};
use super::state::{ms, BanRow, HitOutcome, State, StateError, BAN_MEMORY};
use super::timestamp;
use crate::ratelimit::RateLimit;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Counters, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchStats {
    pub lines: u64,
    pub matched: u64,
    pub ignored_regex: u64,
    pub ignored_ip: u64,
    pub invalid_address: u64,
    pub own_jail: u64,
    pub too_old: u64,
    pub already_banned: u64,
    pub bans: u64,
    pub fw_errors: u64,
    pub rebuilds: u64,
    pub db_errors: u64,
}

/// Logs an error at most once per `every` for each kind, saying how many
/// were held back: a broken nft or a full disk must not flood the journal.
struct RateLimited {
    every: Duration,
    kinds: HashMap<&'static str, RateLimit>,
}

impl RateLimited {
    fn new(every: Duration) -> Self {
        RateLimited {
            every,
            kinds: HashMap::new(),
        }
    }

    fn error(&mut self, kind: &'static str, msg: &str) {
        let every = self.every;
        let hit = self
            .kinds
            .entry(kind)
            .or_insert_with(|| RateLimit::new(every))
            .hit();
        match hit {
            Some(1) => tracing::error!(kind, "{msg}"),
            Some(n) => tracing::error!(kind, suppressed = n - 1, "{msg}"),
            None => {}
        }
    }
}

/// Lines the follower dropped: longer than 64 KiB, or binary.
fn skipped(s: &super::follow::FollowStats) -> u64 {
    s.oversize + s.binary
}

struct Source {
    follower: Follower,
    /// Indexes into the jails that read this file.
    jails: Vec<usize>,
}

pub struct Watcher<E: Enforcer> {
    settings: WatchSettings,
    state: State,
    fw: E,
    ignore: Vec<IgnoreList>,
    sources: Vec<Source>,
    by_path: HashMap<PathBuf, usize>,
    /// False after a firewall failure until a rebuild succeeds.
    fw_ok: bool,
    retry_at: Instant,
    backoff: Duration,
    next_check: Instant,
    next_scan: Instant,
    next_prune: Instant,
    /// When to re-read the machine's addresses (`None`: never).
    next_own: Option<Instant>,
    /// The machine's addresses, as last read.
    own: Vec<std::net::IpAddr>,
    started: bool,
    /// Jails added by a reload whose existing logs are read like at a first
    /// start (from `findtime` back), not from their beginning.
    fresh: Vec<usize>,
    errors: RateLimited,
    pub stats: WatchStats,
    metrics: Arc<WatchMetrics>,
    /// Traps decided elsewhere (CrowdSec), see `super::external`.
    external: Option<Box<dyn super::external::External>>,
}

const OWN_EVERY: Duration = Duration::from_secs(60);
/// Hits of hosts that never came back are forgotten this often.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

impl<E: Enforcer> Watcher<E> {
    /// `ignore_own` lists the machine's addresses (never banned, with
    /// loopback and each jail's `ignoreip`).
    pub fn new(settings: WatchSettings, state: State, fw: E, own: &[std::net::IpAddr]) -> Self {
        let ignore = Self::ignore_lists(&settings, own);
        let now = Instant::now();
        Watcher {
            settings,
            state,
            fw,
            ignore,
            sources: Vec::new(),
            by_path: HashMap::new(),
            fw_ok: false,
            retry_at: now,
            backoff: Duration::from_secs(1),
            next_check: now,
            next_scan: now,
            next_prune: now + PRUNE_EVERY,
            next_own: None,
            own: own.to_vec(),
            started: false,
            fresh: Vec::new(),
            errors: RateLimited::new(Duration::from_secs(60)),
            stats: WatchStats::default(),
            metrics: Arc::new(WatchMetrics::default()),
            external: None,
        }
    }

    /// Also applies (and restores) the traps `x` decides.
    pub fn with_external(mut self, x: Box<dyn super::external::External>) -> Self {
        self.external = Some(x);
        self
    }

    /// Shares the watcher's metrics (for `--metrics`).
    pub fn metrics(&self) -> Arc<WatchMetrics> {
        self.metrics.clone()
    }

    fn ignore_lists(settings: &WatchSettings, own: &[std::net::IpAddr]) -> Vec<IgnoreList> {
        settings
            .jails
            .iter()
            .map(|j| {
                let mut l = IgnoreList::new(own, &settings.ignoreip);
                l.add(&j.ignoreip);
                l
            })
            .collect()
    }

    /// Re-reads this machine's addresses every minute: DHCP leases and
    /// IPv6 temporary addresses change while the watcher runs.
    pub fn refresh_own_addresses(mut self) -> Self {
        self.next_own = Some(Instant::now() + OWN_EVERY);
        self
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn firewall(&self) -> &E {
        &self.fw
    }

    pub fn firewall_ok(&self) -> bool {
        self.fw_ok
    }

    /// One round: new lines from every log, bans applied, ruleset checked.
    pub fn tick(&mut self) {
        let now = Instant::now();
        if !self.started {
            self.rebuild();
            self.scan();
            self.started = true;
            self.next_scan = now + Duration::from_secs(2);
            self.next_check = now + self.settings.check_interval;
        } else if now >= self.next_scan {
            self.scan();
            self.next_scan = now + Duration::from_secs(2);
        }
        if self.next_own.is_some_and(|t| now >= t) {
            self.next_own = Some(now + OWN_EVERY);
            match crate::sys::local_addresses() {
                Ok(own) => {
                    self.ignore = Self::ignore_lists(&self.settings, &own);
                    self.own = own;
                }
                Err(e) => self.errors.error(
                    "own-addresses",
                    &format!("cannot list this machine's addresses: {e}"),
                ),
            }
        }
        if now >= self.next_prune {
            self.next_prune = now + PRUNE_EVERY;
            let now_ms = ms(SystemTime::now());
            for j in &self.settings.jails {
                if let Err(e) = self.state.prune_hits(&j.name, j.rules.horizon(now_ms)) {
                    self.errors.error("db", &format!("{e}"));
                }
            }
            let forget = now_ms.saturating_sub(BAN_MEMORY.as_millis() as i64);
            if let Err(e) = self.state.prune_bans(forget) {
                self.errors.error("db", &format!("{e}"));
            }
        }
        if !self.fw_ok && now >= self.retry_at {
            self.stats.rebuilds += 1;
            self.rebuild();
        }
        for si in 0..self.sources.len() {
            for _ in 0..16 {
                if !self.poll_source(si) {
                    break;
                }
            }
        }
        if let Some(x) = self.external.as_mut() {
            if let Err(e) = x.tick(&self.fw, self.fw_ok) {
                self.fw_failed(&e);
            }
        }
        if self.fw_ok && Instant::now() >= self.next_check {
            self.next_check = Instant::now() + self.settings.check_interval;
            self.count_active();
            match self.fw.intact() {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(
                        "our nftables table or sets are gone (ruleset flushed?); rebuilding"
                    );
                    self.stats.rebuilds += 1;
                    self.rebuild();
                }
                Err(e) => self.fw_failed(&e),
            }
        }
    }

    /// Switches to `new` (a re-read config) without losing anything: the
    /// state database, every log's read position and every ban stay; jails
    /// are added and removed; a log no jail reads any more is let go (its
    /// stored position stays, for when it comes back). What the firewall and
    /// the database were set up with (state_db, table, sets, port, engine,
    /// ipv6_prefix, nft, flush_conntrack) only changes at a restart: those
    /// keys keep their running values, with a warning. Returns the names of
    /// the jails added and removed.
    pub fn reload(&mut self, mut new: WatchSettings) -> (Vec<String>, Vec<String>) {
        let old = &self.settings;
        let fixed: [(&str, bool); 9] = [
            ("watch.state_db", new.state_db != old.state_db),
            ("watch.table", new.table != old.table),
            ("watch.set4", new.set4 != old.set4),
            ("watch.set6", new.set6 != old.set6),
            ("watch.port", new.port != old.port),
            ("watch.engine", new.mode != old.mode),
            ("watch.ipv6_prefix", new.ipv6_prefix != old.ipv6_prefix),
            ("watch.nft", new.nft != old.nft),
            (
                "watch.flush_conntrack",
                new.flush_conntrack != old.flush_conntrack,
            ),
        ];
        for (key, changed) in fixed {
            if changed {
                tracing::warn!(
                    key,
                    "changed in the config; takes effect at the next restart"
                );
            }
        }
        new.state_db = old.state_db.clone();
        new.table = old.table.clone();
        new.set4 = old.set4.clone();
        new.set6 = old.set6.clone();
        new.port = old.port;
        new.mode = old.mode;
        new.ipv6_prefix = old.ipv6_prefix;
        new.nft = old.nft.clone();
        new.flush_conntrack = old.flush_conntrack;

        let names =
            |s: &WatchSettings| -> Vec<String> { s.jails.iter().map(|j| j.name.clone()).collect() };
        let (was, now) = (names(old), names(&new));
        let added: Vec<String> = now.iter().filter(|n| !was.contains(n)).cloned().collect();
        let removed: Vec<String> = was.iter().filter(|n| !now.contains(n)).cloned().collect();
        self.fresh = new
            .jails
            .iter()
            .enumerate()
            .filter(|(_, j)| added.contains(&j.name))
            .map(|(i, _)| i)
            .collect();
        // Keep the followers (open file, position) of logs still read; the
        // next scan maps them to the new jail indexes and adds new logs.
        let own = self.own.clone();
        self.settings = new;
        self.ignore = Self::ignore_lists(&self.settings, &own);
        for s in &mut self.sources {
            s.jails.clear();
        }
        self.scan();
        let before = self.sources.len();
        let keep: Vec<bool> = self.sources.iter().map(|s| !s.jails.is_empty()).collect();
        let mut i = 0;
        self.sources.retain(|_| {
            i += 1;
            keep[i - 1]
        });
        if self.sources.len() != before {
            tracing::info!(
                logs = before - self.sources.len(),
                "no longer following logs no jail reads"
            );
        }
        self.by_path = self
            .sources
            .iter()
            .enumerate()
            .map(|(i, s)| (s.follower.path().to_path_buf(), i))
            .collect();
        self.next_scan = Instant::now() + Duration::from_secs(2);
        (added, removed)
    }

    /// Runs until `stop` is set: a tick whenever a watched directory changes
    /// (inotify), and at least every poll interval (polling alone where
    /// inotify is unavailable or silent, e.g. on NFS).
    pub fn run(&mut self, stop: &AtomicBool) {
        self.run_reloading(stop, &AtomicBool::new(false), &mut || {
            Err("reload is not available".to_string())
        });
    }

    /// Like [`run`](Self::run); whenever `reload` is set (SIGHUP), `load`
    /// re-reads the config and the watcher switches to it
    /// ([`reload`](Self::reload)). A config that does not load is logged
    /// (it names file, line and key) and the running one stays.
    pub fn run_reloading(
        &mut self,
        stop: &AtomicBool,
        reload: &AtomicBool,
        load: &mut dyn FnMut() -> Result<WatchSettings, String>,
    ) {
        let ino = match crate::sys::Inotify::new() {
            Ok(i) => {
                self.watch_all(&i);
                Some(i)
            }
            Err(e) => {
                tracing::info!(error = %e, "inotify unavailable; polling only");
                None
            }
        };
        // Wake-ups by busy neighbours in a log directory are coalesced.
        let min_gap = Duration::from_millis(20);
        while !stop.load(Ordering::Relaxed) {
            if reload.swap(false, Ordering::Relaxed) {
                match load() {
                    Ok(new) => {
                        let (added, removed) = self.reload(new);
                        if let Some(i) = &ino {
                            self.watch_all(i);
                        }
                        tracing::info!(
                            jails = ?self.settings.jails.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(),
                            added = ?added,
                            removed = ?removed,
                            "configuration reloaded"
                        );
                    }
                    Err(e) => tracing::error!(
                        "reload failed, still running the previous configuration: {e}"
                    ),
                }
            }
            let t0 = Instant::now();
            self.tick();
            let until = t0 + self.settings.poll_interval;
            std::thread::sleep(min_gap.saturating_sub(t0.elapsed()));
            while !stop.load(Ordering::Relaxed)
                && !reload.load(Ordering::Relaxed)
                && Instant::now() < until
            {
                let slice = (until - Instant::now()).min(Duration::from_millis(50));
                match &ino {
                    Some(i) => {
                        let changed = i.wait(slice).unwrap_or_default();
                        if changed
                            .iter()
                            .any(|n| n.as_ref().is_none_or(|n| self.is_log_name(n)))
                        {
                            break;
                        }
                        if !changed.is_empty() {
                            // Busy neighbours: at most ~100 wake-ups a second.
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                    None => std::thread::sleep(slice),
                }
            }
        }
        tracing::info!(
            lines = self.stats.lines,
            matched = self.stats.matched,
            bans = self.stats.bans,
            "watcher stopped"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::FwError;
    use crate::watcher::settings;
    use std::cell::{Cell, RefCell};
    use std::io::Write;

    /// A firewall that records what it was asked and fails on demand.
    #[derive(Default)]
    struct Fake {
        set: RefCell<HashMap<Target, Duration>>,
        fail: Cell<bool>,
        intact: Cell<bool>,
        restores: Cell<usize>,
    }

    impl Enforcer for Fake {
        fn ensure(&self) -> Result<(), FwError> {
            if self.fail.get() {
                return Err(FwError::NftMissing("nft".into()));
            }
            self.intact.set(true);
            Ok(())
        }
        fn ban(&self, bans: &[(Target, Duration)]) -> Result<(), FwError> {
            if self.fail.get() {
                return Err(FwError::NftFailed {
                    status: Some(1),
                    stderr: "Error: Could not process rule".into(),
                    command: "nft -f -".into(),
                    hint: None,
                });
            }
            self.set.borrow_mut().extend(bans.iter().copied());
            Ok(())
        }
        fn restore(&self, bans: &[(Target, Duration)]) -> Result<(), FwError> {
            self.restores.set(self.restores.get() + 1);
            self.ensure()?;
            self.ban(bans)
        }
        fn unban(&self, hosts: &[Target]) -> Result<(), FwError> {
            for h in hosts {
                self.set.borrow_mut().remove(h);
            }
            Ok(())
        }
        fn intact(&self) -> Result<bool, FwError> {
            Ok(self.intact.get())
        }
    }

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn setup(tag: &str) -> (Dir, WatchSettings) {
        let d = std::env::temp_dir().join(format!("tarpit-engine-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let mut s = WatchSettings {
            state_db: d.join("state.db"),
            check_interval: Duration::from_millis(100),
            ..WatchSettings::default()
        };
        s.jails = vec![settings::default_jail()];
        s.jails[0].logpaths = vec![d.join("fail2ban.log").to_string_lossy().into()];
        (Dir(d), s)
    }

    fn ban_line(ip: &str) -> String {
        // Local time "now", as fail2ban writes it.
        let out = std::process::Command::new("date")
            .arg("+%Y-%m-%d %H:%M:%S,000")
            .output()
            .unwrap();
        let ts = String::from_utf8(out.stdout).unwrap();
        format!(
            "{} fail2ban.actions        [811]: NOTICE  [sshd] Ban {ip}\n",
            ts.trim()
        )
    }

    fn append(p: &Path, s: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .unwrap();
        f.write_all(s.as_bytes()).unwrap();
    }

    fn watcher(s: &WatchSettings, fake: Fake) -> Watcher<Fake> {
        let st = State::open(&s.state_db).unwrap();
        Watcher::new(s.clone(), st, fake, &["10.77.0.1".parse().unwrap()])
    }

    #[test]
    fn three_bans_trap_and_restart_neither_loses_nor_double_counts() {
        let (d, s) = setup("e2e");
        let log = d.0.join("fail2ban.log");
        let mut w = watcher(&s, Fake::default());
        w.tick(); // log missing: nothing yet
        append(&log, &ban_line("192.0.2.10"));
        append(&log, &ban_line("192.0.2.10"));
        // Ignored ones: own address, loopback, injected text.
        append(&log, &ban_line("10.77.0.1"));
        append(&log, &ban_line("127.0.0.1"));
        append(
            &log,
            "Jan 1 00:00:00 h sshd[1]: Invalid user NOTICE [sshd] Ban 192.0.2.10 from 10.77.0.9\n",
        );
        w.tick();
        assert_eq!(w.stats.matched, 4);
        assert_eq!(w.stats.ignored_ip, 2);
        assert!(w.firewall().set.borrow().is_empty());
        drop(w);
        // Restart: the two hits are remembered, not re-read.
        let mut w = watcher(&s, Fake::default());
        append(&log, &ban_line("192.0.2.10"));
        w.tick();
        assert_eq!(w.stats.lines, 1, "only the new line is read");
        let set = w.firewall().set.borrow().clone();
        let key: Target = "192.0.2.10".parse().unwrap();
        let t = set.get(&key).copied().expect("banned");
        assert!(
            t > Duration::from_secs(604790) && t <= Duration::from_secs(604800),
            "{t:?}"
        );
        drop(w);
        // Another restart restores it with the remaining time, in one batch.
        let w2 = {
            let mut w = watcher(&s, Fake::default());
            w.tick();
            w
        };
        assert_eq!(w2.firewall().restores.get(), 1);
        assert!(w2.firewall().set.borrow().contains_key(&key));
    }

    #[test]
    fn nft_failure_keeps_state_and_retries() {
        let (d, s) = setup("fail");
        let log = d.0.join("fail2ban.log");
        let fake = Fake::default();
        fake.fail.set(true);
        let mut w = watcher(&s, fake);
        w.tick();
        assert!(!w.firewall_ok());
        for _ in 0..3 {
            append(&log, &ban_line("2001:db8:5:6::9"));
        }
        w.tick();
        assert_eq!(w.stats.bans, 1);
        assert!(w.firewall().set.borrow().is_empty());
        // nft comes back: after the back-off the ban is applied from the DB.
        w.firewall().fail.set(false);
        w.retry_at = Instant::now();
        w.tick();
        assert!(w.firewall_ok());
        let key: Target = "2001:db8:5:6::/64".parse().unwrap();
        assert!(w.firewall().set.borrow().contains_key(&key));
    }

    #[test]
    fn inotify_watches_log_directories() {
        let (d, mut s) = setup("ino");
        s.jails[0].logpaths.push("/var/log/nginx/*.log".into());
        s.jails[0].logpaths.push("/srv/*/logs/x.log".into());
        let w = watcher(&s, Fake::default());
        assert_eq!(
            w.watch_dirs(),
            vec![
                d.0.clone(),
                PathBuf::from("/var/log/nginx"),
                PathBuf::from("/srv")
            ]
        );
        let ino = crate::sys::Inotify::new().unwrap();
        ino.watch_dir(&d.0).unwrap();
        assert!(ino.wait(Duration::from_millis(10)).unwrap().is_empty());
        append(&d.0.join("fail2ban.log"), "x\n");
        let names = ino.wait(Duration::from_secs(5)).unwrap();
        assert!(!names.is_empty());
        assert!(names
            .iter()
            .all(|n| n.as_deref() == Some(std::ffi::OsStr::new("fail2ban.log"))));
        // Drained: nothing pending any more.
        assert!(ino.wait(Duration::from_millis(10)).unwrap().is_empty());
        // Only our logs wake the watcher.
        let is = |n: &str| w.is_log_name(std::ffi::OsStr::new(n));
        assert!(is("fail2ban.log") && is("fail2ban.log.1") && is("x.log"));
        assert!(!is("state.db") && !is("trace") && !is("fail2ban.logger"));
    }

    #[test]
    fn flushed_ruleset_is_rebuilt() {
        let (_d, s) = setup("flush");
        let mut w = watcher(&s, Fake::default());
        let mut st = State::open(&s.state_db).unwrap();
        let key: Target = "192.0.2.77".parse().unwrap();
        st.ban(
            &key,
            "manual",
            Duration::from_secs(3600),
            ms(SystemTime::now()),
        )
        .unwrap();
        w.tick();
        assert!(w.firewall().set.borrow().contains_key(&key));
        // Flush.
        w.firewall().set.borrow_mut().clear();
        w.firewall().intact.set(false);
        std::thread::sleep(Duration::from_millis(150));
        w.tick();
        assert!(w.firewall().set.borrow().contains_key(&key));
        assert_eq!(w.stats.rebuilds, 1);
    }
}
