//! The watch loop: logs → filters → window → state → firewall.
//!
//! The database is committed before the firewall is touched, so a ban is
//! never lost: if `nft` fails, the watcher logs it (rate-limited), keeps
//! running, and retries with back-off by re-applying every active ban from
//! the database in one batch. The same rebuild runs when the periodic check
//! finds our table or sets gone (`nft flush ruleset`, a restart of
//! nftables.service).

use super::filter::LineVerdict;
use super::follow::{Follower, Start};
use super::host::{IgnoreList, Target};
use super::metrics::WatchMetrics;
use super::settings::{Jail, WatchSettings};
use super::state::{ms, BanRow, HitOutcome, State, StateError};
use super::timestamp;
use crate::ratelimit::RateLimit;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// What the watcher needs from a firewall. `crate::firewall::Firewall` is
/// the real one; tests use fakes that fail on demand. Errors are messages:
/// the watcher only logs them and retries.
pub trait Enforcer {
    /// Creates the table, sets and rule (idempotent).
    fn ensure(&self) -> Result<(), String>;
    /// Adds hosts with their timeouts, in one transaction.
    fn ban(&self, bans: &[(Target, Duration)]) -> Result<(), String>;
    /// After a start, a failure or a flush: creates what `ensure` does and
    /// adds every active ban, all in one transaction.
    fn restore(&self, bans: &[(Target, Duration)]) -> Result<(), String>;
    fn unban(&self, hosts: &[Target]) -> Result<(), String>;
    /// False when the table, a set or the rule is missing.
    fn intact(&self) -> Result<bool, String>;
    /// Makes the interval sets hold exactly these networks (CrowdSec
    /// ranges), in one transaction.
    fn set_ranges(&self, nets: &[(crate::firewall::Net, Duration)]) -> Result<(), String> {
        let _ = nets;
        Err("this firewall has no range sets".into())
    }
}

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

/// Most bytes read from one file per poll; bounds one transaction.
const CHUNK_BYTES: usize = 4 << 20;
const MAX_BACKOFF: Duration = Duration::from_secs(60);
const OWN_EVERY: Duration = Duration::from_secs(60);
/// Hits of hosts that never came back are forgotten this often.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

fn is_glob(p: &str) -> bool {
    p.contains(['*', '?', '['])
}

/// Compressed rotations are never read, even when a glob matches them.
fn compressed(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("gz" | "xz" | "bz2" | "zst" | "lz4" | "zip")
    )
}

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

    /// Sets the active-bans gauge from the state database.
    fn count_active(&mut self) {
        if let Ok(b) = self.state.active_bans(ms(SystemTime::now())) {
            self.metrics.active_bans.set(b.len() as i64);
        }
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

    /// Creates the ruleset and puts back every active ban with its remaining
    /// time, in one batch. On failure the watcher still runs and retries.
    pub fn rebuild(&mut self) -> bool {
        let now = ms(SystemTime::now());
        let bans = match self.state.active_bans(now) {
            Ok(b) => b,
            Err(e) => {
                self.stats.db_errors += 1;
                self.errors.error("db", &format!("{e}"));
                return false;
            }
        };
        let mut items: Vec<(Target, Duration)> = bans
            .iter()
            .map(|b| (b.host, b.remaining(now)))
            .filter(|(_, d)| !d.is_zero())
            .collect();
        if let Some(x) = self.external.as_mut() {
            // The batch keeps the longest timeout of duplicates.
            items.extend(x.hosts());
        }
        let t0 = Instant::now();
        let mut r = self.fw.restore(&items);
        if let (Ok(()), Some(x)) = (&r, self.external.as_mut()) {
            r = x.restore_nets(&self.fw);
        }
        self.metrics.nft_batches.inc();
        self.metrics
            .restore_duration
            .set(t0.elapsed().as_secs_f64());
        match r {
            Ok(()) => {
                self.metrics.active_bans.set(items.len() as i64);
                tracing::info!(
                    restored = items.len(),
                    ms = t0.elapsed().as_millis() as u64,
                    "firewall ready; active bans restored"
                );
                self.fw_ok = true;
                self.backoff = Duration::from_secs(1);
                true
            }
            Err(e) => {
                self.fw_failed(&e);
                false
            }
        }
    }

    fn fw_failed(&mut self, e: &str) {
        self.stats.fw_errors += 1;
        self.metrics.nft_errors.inc();
        self.fw_ok = false;
        self.errors.error(
            "firewall",
            &format!(
                "nftables failed: {e}; bans are kept in the state database and will be applied on retry in {:?}",
                self.backoff
            ),
        );
        self.retry_at = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// Expands every jail's logpaths and starts following new files.
    fn scan(&mut self) {
        let first = !self.started;
        let fresh = std::mem::take(&mut self.fresh);
        let mut found: Vec<(PathBuf, usize, Duration)> = Vec::new();
        for (ji, jail) in self.settings.jails.iter().enumerate() {
            for pat in &jail.logpaths {
                if is_glob(pat) {
                    if let Ok(paths) = glob::glob(pat) {
                        for p in paths.flatten() {
                            if p.is_file() && !compressed(&p) {
                                found.push((p, ji, jail.rules.findtime));
                            }
                        }
                    }
                } else {
                    found.push((PathBuf::from(pat), ji, jail.rules.findtime));
                }
            }
        }
        for (path, ji, findtime) in found {
            if let Some(&si) = self.by_path.get(&path) {
                let s = &mut self.sources[si];
                if !s.jails.contains(&ji) {
                    s.jails.push(ji);
                }
                continue;
            }
            let start = match self.state.position(&path) {
                Ok(Some(pos)) => Start::Resume(pos),
                Ok(None) if (first || fresh.contains(&ji)) && path.exists() => {
                    Start::Tail(findtime)
                }
                Ok(None) => Start::Beginning,
                Err(e) => {
                    self.stats.db_errors += 1;
                    self.errors.error("db", &format!("{e}"));
                    continue;
                }
            };
            tracing::info!(path = %path.display(), start = ?start, "following log");
            self.by_path.insert(path.clone(), self.sources.len());
            self.sources.push(Source {
                follower: Follower::new(path, start),
                jails: vec![ji],
            });
        }
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

    /// Polls one file and handles its lines; true when there may be more.
    fn poll_source(&mut self, si: usize) -> bool {
        let before = self.sources[si].follower.position();
        let skipped_before = skipped(&self.sources[si].follower.stats);
        let chunk = self.sources[si]
            .follower
            .poll(CHUNK_BYTES, SystemTime::now());
        let skipped_now = skipped(&self.sources[si].follower.stats) - skipped_before;
        for &ji in &self.sources[si].jails {
            self.metrics
                .lines_n(&self.settings.jails[ji].name, "skipped", skipped_now);
        }
        let path = self.sources[si].follower.path().to_path_buf();
        for n in &chunk.notes {
            tracing::info!(path = %path.display(), "{n}");
        }
        if chunk.lines.is_empty() && chunk.position == before {
            return false;
        }
        let jails: Vec<usize> = self.sources[si].jails.clone();
        let more = !chunk.lines.is_empty();
        match self.handle_lines(&path, &jails, &chunk.lines, chunk.position.as_ref()) {
            Ok(new_bans) => {
                if !new_bans.is_empty() {
                    self.apply(&new_bans);
                }
                more
            }
            Err(e) => {
                self.stats.db_errors += 1;
                self.errors
                    .error("db", &format!("{e}; the lines will be read again"));
                if let Some(p) = before {
                    self.sources[si].follower.rewind(&p);
                }
                false
            }
        }
    }

    fn handle_lines(
        &mut self,
        path: &Path,
        jails: &[usize],
        lines: &[super::follow::Line],
        position: Option<&super::state::Position>,
    ) -> Result<Vec<BanRow>, StateError> {
        let mut new_bans = Vec::new();
        let mut tx = self.state.begin()?;
        for line in lines {
            self.stats.lines += 1;
            let now = SystemTime::now();
            let (st, text) = timestamp::split(&line.text, now);
            let at = st.map_or(now, |st| st.time.min(now));
            let kind = st.map(|st| st.kind);
            for &ji in jails {
                let jail: &Jail = &self.settings.jails[ji];
                let m = &self.metrics;
                match jail.filter.check(kind, text, &jail.name) {
                    LineVerdict::NoMatch => m.line(&jail.name, "unmatched"),
                    LineVerdict::Ignored => {
                        self.stats.ignored_regex += 1;
                        m.line(&jail.name, "ignored");
                    }
                    LineVerdict::OwnJail => {
                        self.stats.own_jail += 1;
                        m.line(&jail.name, "ignored");
                    }
                    LineVerdict::InvalidAddress(a) => {
                        self.stats.invalid_address += 1;
                        m.line(&jail.name, "invalid");
                        tracing::debug!(jail = %jail.name, address = %a, "matched, but not a valid address");
                    }
                    LineVerdict::Host(ip) => {
                        self.stats.matched += 1;
                        let key = Target::from_ip(ip, self.settings.ipv6_prefix);
                        if self.ignore[ji].is_ignored(ip) || self.ignore[ji].covers_key(&key) {
                            self.stats.ignored_ip += 1;
                            m.line(&jail.name, "ignored");
                            continue;
                        }
                        m.line(&jail.name, "matched");
                        match tx.record_hit(&jail.name, &jail.rules, &key, ms(at), ms(now))? {
                            HitOutcome::Counted(n) => {
                                tracing::debug!(jail = %jail.name, host = %key, hits = n, "hit");
                            }
                            HitOutcome::TooOld => self.stats.too_old += 1,
                            HitOutcome::AlreadyBanned => self.stats.already_banned += 1,
                            HitOutcome::Banned(row) => {
                                self.stats.bans += 1;
                                m.ban(&jail.name);
                                tracing::info!(
                                    target: "tarpit::ban",
                                    host = %row.host,
                                    jail = %row.jail,
                                    offences = row.offences,
                                    ban_secs = (row.expires_at - row.banned_at) / 1000,
                                    "trapping host"
                                );
                                new_bans.push(row);
                            }
                        }
                    }
                }
            }
        }
        if let Some(p) = position {
            tx.set_position(path, p, ms(SystemTime::now()))?;
        }
        tx.commit()?;
        Ok(new_bans)
    }

    fn apply(&mut self, bans: &[BanRow]) {
        if !self.fw_ok {
            // The next rebuild applies them from the database.
            return;
        }
        let now = ms(SystemTime::now());
        let mut items: Vec<(Target, Duration)> =
            bans.iter().map(|b| (b.host, b.remaining(now))).collect();
        if let Some(x) = self.external.as_mut() {
            for (h, d) in items.iter_mut() {
                *d = (*d).max(x.until(h).unwrap_or_default());
            }
        }
        self.metrics.nft_batches.inc();
        if let Err(e) = self.fw.ban(&items) {
            self.fw_failed(&e);
        }
        self.count_active();
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

    /// Adds an inotify watch for every log directory (again after a reload:
    /// watching a directory twice is harmless).
    fn watch_all(&self, ino: &crate::sys::Inotify) {
        for d in self.watch_dirs() {
            if let Err(e) = ino.watch_dir(&d) {
                tracing::debug!(dir = %d.display(), error = %e, "no inotify watch; polling");
            }
        }
    }

    /// Directories to watch with inotify: the parent of each logpath (for a
    /// glob, of its first component without wildcards).
    fn watch_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for j in &self.settings.jails {
            for p in &j.logpaths {
                let mut d = PathBuf::new();
                for c in Path::new(p).components() {
                    if is_glob(&c.as_os_str().to_string_lossy()) {
                        break;
                    }
                    d.push(c);
                }
                // A literal path names the file: watch its directory.
                if !is_glob(p) {
                    d.pop();
                }
                if !d.as_os_str().is_empty() && !dirs.contains(&d) {
                    dirs.push(d);
                }
            }
        }
        dirs
    }

    /// True when a changed directory entry `name` may be one of our logs.
    /// Changes to anything else in the directory (our own trace or log
    /// output, other programs' logs) must not wake us: that could feed back.
    fn is_log_name(&self, name: &std::ffi::OsStr) -> bool {
        let name = name.to_string_lossy();
        self.settings
            .jails
            .iter()
            .flat_map(|j| &j.logpaths)
            .any(|p| {
                let last = Path::new(p)
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if is_glob(&last) {
                    glob::Pattern::new(&last).is_ok_and(|g| g.matches(&name))
                } else {
                    // Also the rotated copy (`x.log.1`) that we may still finish.
                    name == last || name.starts_with(&format!("{last}."))
                }
            })
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
        fn ensure(&self) -> Result<(), String> {
            if self.fail.get() {
                return Err("nft: command not found".into());
            }
            self.intact.set(true);
            Ok(())
        }
        fn ban(&self, bans: &[(Target, Duration)]) -> Result<(), String> {
            if self.fail.get() {
                return Err("nft: exit 1".into());
            }
            self.set.borrow_mut().extend(bans.iter().copied());
            Ok(())
        }
        fn restore(&self, bans: &[(Target, Duration)]) -> Result<(), String> {
            self.restores.set(self.restores.get() + 1);
            self.ensure()?;
            self.ban(bans)
        }
        fn unban(&self, hosts: &[Target]) -> Result<(), String> {
            for h in hosts {
                self.set.borrow_mut().remove(h);
            }
            Ok(())
        }
        fn intact(&self) -> Result<bool, String> {
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
