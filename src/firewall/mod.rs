//! Trapping hosts with nftables: a table `inet tarpit` whose nat prerouting
//! chain redirects all TCP from the hosts in two timeout sets (`trap4`,
//! `trap6`) to the tarpit's port.
//!
//! We drive the `nft` program the way fail2ban and sshguard do: changes go in
//! as one batch on stdin (`nft -f -`), which nftables applies as a single
//! atomic transaction, and reads use `nft -j list` (JSON). This keeps us off
//! the moving target of the netlink ABI, and a batch is what makes restoring
//! 10,000 bans take a fraction of a second instead of 10,000 process starts.
//!
//! Every ban carries its own element timeout, so the kernel lifts it even
//! when the watcher is gone. IPv6 hosts are trapped per network (/64 by
//! default): the set holds network addresses and the rule masks the packet's
//! source before the lookup.
//!
//! All calls block until `nft` exits (bounded by [`NftConfig::timeout`]);
//! async callers should use `spawn_blocking`. A [`Firewall`] is `Send + Sync`.

mod batch;
mod exec;
mod json;
mod net;
pub mod policy;
pub mod stateless;
mod target;

pub use net::Net;

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

pub use batch::{source_matches, timeout_secs, validate_name, GUARD_CHAIN, MAX_TIMEOUT};

/// The `nft -f` text [`Firewall::ensure`] applies: table, sets, chain, rules.
/// For shipping a ruleset file that agrees with the watcher.
pub fn ruleset_text(cfg: &NftConfig) -> Result<String, FwError> {
    let mut s = String::new();
    batch::ensure_commands(cfg, &mut s)?;
    Ok(s)
}

/// Just `add table` and the two `add set` commands, with the canonical set
/// definitions: for other modules that add their own chains matching the
/// sets (see [`source_matches`]).
pub fn set_text(cfg: &NftConfig) -> Result<String, FwError> {
    let mut s = String::new();
    batch::set_commands(cfg, &mut s)?;
    Ok(s)
}
pub use target::{mask_v6, v6_mask, Ban, Target, TargetParseError};

/// Trapped targets with their remaining time (`None`: the element has no
/// timeout).
pub type Listing = Vec<(Target, Option<Duration>)>;

/// What the trapped hosts' TCP packets meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrapMode {
    /// A nat prerouting chain redirects them to [`NftConfig::port`], where
    /// `tarpit serve` (socket engine) accepts them.
    #[default]
    Redirect,
    /// A raw-priority prerouting chain copies them to nfnetlink_log `group`
    /// and drops them before conntrack; `tarpit serve --engine stateless`
    /// answers them (see `crate::firewall::stateless`).
    Stateless { group: u16 },
}

/// Where and how to trap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftConfig {
    /// Name of our table (family is always `inet`): `table inet <name>`.
    pub family_table: String,
    /// Set of trapped IPv4 addresses.
    pub set4: String,
    /// Set of trapped IPv6 networks.
    pub set6: String,
    /// Port the tarpit listens on; trapped TCP is redirected there.
    pub port: u16,
    /// The nft program (a bare name is looked up in PATH, then /usr/sbin, /sbin).
    pub nft: PathBuf,
    /// IPv6 hosts are trapped per network of this prefix length (1..=128).
    pub v6_prefix: u8,
    /// Run nft (and conntrack) inside the named network namespace
    /// (`/run/netns/NAME`, as made by `ip netns add`). A test and operations
    /// aid: it lets one host drive the firewall of a container or test
    /// namespace. `None` (default): the caller's own namespace.
    pub netns: Option<String>,
    /// After each successful [`Firewall::ban`], delete the trapped hosts'
    /// conntrack entries (`conntrack -D -s ADDR`) so connections they already
    /// have open are re-evaluated by the nat rule too. Off by default: it
    /// also cuts the host's established sessions.
    pub flush_conntrack: bool,
    /// The conntrack program (only used with `flush_conntrack`).
    pub conntrack: PathBuf,
    /// Longest time one nft/conntrack run may take before it is killed.
    pub timeout: Duration,
    /// Redirect to the socket engine, or log+drop for the stateless engine.
    pub mode: TrapMode,
    /// TCP ports trapped for every source addressed to this host (decoys:
    /// nobody has business there). Matched with `fib daddr type local`, so
    /// a router never captures traffic it only forwards.
    pub decoy_ports: Vec<u16>,
    /// Also keep two interval sets for networks (`<set4>_net`,
    /// `<set6>_net`, see [`Firewall::set_ranges`]) and match them like the
    /// host sets. On when `[watch.crowdsec]` is configured.
    pub range_sets: bool,
    /// Redirect mode: drop TCP addressed to this host's [`port`](Self::port)
    /// directly from hosts not in the sets (chain [`GUARD_CHAIN`], before
    /// the redirect), so the tarpit holds only the hosts it was told to
    /// trap. Loopback stays open (local checks and tools).
    pub guard_port: bool,
}

impl Default for NftConfig {
    fn default() -> Self {
        NftConfig {
            family_table: "tarpit".into(),
            set4: "trap4".into(),
            set6: "trap6".into(),
            port: 2222,
            nft: PathBuf::from("nft"),
            v6_prefix: 64,
            netns: None,
            flush_conntrack: false,
            conntrack: PathBuf::from("conntrack"),
            timeout: Duration::from_secs(30),
            mode: TrapMode::Redirect,
            decoy_ports: Vec::new(),
            range_sets: false,
            guard_port: false,
        }
    }
}

/// Why a firewall operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FwError {
    /// The program could not be found (not installed, wrong path).
    #[error("{} not found: install nftables (Debian: apt-get install nftables) or set the nft path", .0.display())]
    NftMissing(PathBuf),
    /// nft ran and refused; `stderr` is nft's own explanation.
    #[error("`{command}` failed ({}): {}{}", status_text(*.status), stderr.trim(),
        hint.as_deref().map(|h| format!(" (hint: {h})")).unwrap_or_default())]
    NftFailed {
        /// Exit code, `None` when killed by a signal.
        status: Option<i32>,
        stderr: String,
        /// The command line that failed (the batch itself is not repeated).
        command: String,
        /// What usually causes this error, when we can tell.
        hint: Option<String>,
    },
    /// nft's output was not what we expected.
    #[error("cannot understand nft output: {0}")]
    Parse(String),
    /// The configuration would produce an invalid (or injectable) batch.
    #[error("invalid firewall configuration: {0}")]
    Config(String),
    /// nft did not finish in time and was killed.
    #[error("`{command}` did not finish within {after:?} and was killed")]
    Timeout { command: String, after: Duration },
    /// Any other I/O failure (namespace file, spawning, dry-run output).
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn status_text(s: Option<i32>) -> String {
    match s {
        Some(c) => format!("exit status {c}"),
        None => "killed by a signal".into(),
    }
}

/// Result of [`Firewall::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Integrity {
    /// Human-readable names of what is missing; empty when intact.
    pub missing: Vec<String>,
}

impl Integrity {
    pub fn is_intact(&self) -> bool {
        self.missing.is_empty()
    }
}

enum Mode {
    Real,
    DryRun(Mutex<Box<dyn Write + Send>>),
}

/// The handle to our part of the ruleset.
pub struct Firewall {
    cfg: NftConfig,
    mode: Mode,
    invocations: AtomicU64,
}

impl Firewall {
    /// A firewall that runs `nft`. Nothing is checked until the first call.
    pub fn new(cfg: NftConfig) -> Self {
        Firewall {
            cfg,
            mode: Mode::Real,
            invocations: AtomicU64::new(0),
        }
    }

    /// A firewall that writes each batch (and each conntrack command, as a
    /// comment) to `out` instead of running anything; needs no root. Reads
    /// report an empty, intact ruleset.
    pub fn dry_run(cfg: NftConfig, out: Box<dyn Write + Send>) -> Self {
        Firewall {
            cfg,
            mode: Mode::DryRun(Mutex::new(out)),
            invocations: AtomicU64::new(0),
        }
    }

    pub fn config(&self) -> &NftConfig {
        &self.cfg
    }

    pub fn is_dry_run(&self) -> bool {
        matches!(self.mode, Mode::DryRun(_))
    }

    /// How many nft runs (or, dry, printed batches) this handle has made:
    /// lets callers and tests see that a restore is one transaction.
    pub fn invocations(&self) -> u64 {
        self.invocations.load(Ordering::Relaxed)
    }

    /// The target for `ip` at this firewall's IPv6 granularity.
    pub fn target_of(&self, ip: std::net::IpAddr) -> Target {
        Target::from_ip(ip, self.cfg.v6_prefix)
    }

    /// Creates the table, sets, chain and rules if missing, in one atomic
    /// batch; rewrites the two rules (so a changed port or prefix takes
    /// effect) and keeps all set elements. Safe to call any number of times.
    pub fn ensure(&self) -> Result<(), FwError> {
        let mut b = String::new();
        batch::ensure_commands(&self.cfg, &mut b)?;
        self.apply(&b)
    }

    /// Traps every ban's target for its timeout, in one transaction. A target
    /// already trapped gets the new timeout (shorter or longer). Does not
    /// create the table: after a flushed ruleset, call [`restore`](Self::restore)
    /// with all active bans instead. An empty list runs nothing.
    pub fn ban(&self, bans: &[Ban]) -> Result<(), FwError> {
        if bans.is_empty() {
            return Ok(());
        }
        let mut b = String::new();
        batch::ban_commands(&self.cfg, bans, &mut b)?;
        self.apply(&b)?;
        if self.cfg.flush_conntrack {
            for ban in bans {
                if let Err(e) = self.flush_conntrack(&ban.target) {
                    tracing::warn!(target_host = %ban.target, error = %e, "conntrack flush failed; the ban itself is in place");
                }
            }
        }
        Ok(())
    }

    /// [`ensure`](Self::ensure) plus every ban, as ONE nft transaction: after
    /// a restart or a flushed ruleset the table comes back complete or not at
    /// all. Elements not in `bans` are left alone (they expire on their own).
    pub fn restore(&self, bans: &[Ban]) -> Result<(), FwError> {
        let mut b = String::new();
        batch::ensure_commands(&self.cfg, &mut b)?;
        batch::ban_commands(&self.cfg, bans, &mut b)?;
        self.apply(&b)
    }

    /// Writes the per-port policy rules (window zero, syn_delay) for
    /// listeners on `listen_ports`, replacing earlier ones atomically (see
    /// [`policy`]). Leaves the trap chains and sets alone.
    pub fn set_policies(
        &self,
        listen_ports: &[u16],
        ps: &crate::engine::policy::Policies,
    ) -> Result<(), FwError> {
        let mut b = String::new();
        policy::policy_commands(&self.cfg, listen_ports, ps, &mut b)?;
        self.apply(&b)
    }

    /// Which per-port policy chains and sets (window zero, syn_delay) our
    /// table has, whoever wrote them: none when there is no table (a dry
    /// run lists none).
    pub fn policy_objects(&self) -> Result<policy::Present, FwError> {
        let Some(text) = self.list_table(true)? else {
            return Ok(policy::Present::default());
        };
        Ok(policy::Present::of(
            &json::names_in_table(&text, &self.cfg, "chain")?,
            &json::names_in_table(&text, &self.cfg, "set")?,
        ))
    }

    /// Deletes the policy chains and sets in `present` (from
    /// [`policy_objects`](Self::policy_objects)) in one transaction; the
    /// trap chains and sets are left alone. Nothing to delete runs nothing.
    pub fn remove_policies(&self, present: &policy::Present) -> Result<(), FwError> {
        if present.is_empty() {
            return Ok(());
        }
        let mut b = String::new();
        policy::remove_commands(&self.cfg, present, &mut b)?;
        self.apply(&b)
    }

    /// Releases the targets in one transaction. Targets that are not trapped,
    /// and a missing table or set (nothing to release), are not errors.
    pub fn unban(&self, targets: &[Target]) -> Result<(), FwError> {
        if targets.is_empty() {
            return Ok(());
        }
        let mut b = String::new();
        batch::unban_commands(&self.cfg, targets, &mut b)?;
        match self.apply(&b) {
            Err(FwError::NftFailed { .. }) => {}
            other => return other,
        }
        // The batch failed as a whole, so nothing was released. Most likely
        // the ruleset was flushed (table or one set gone): retry per set and
        // let a set that does not exist count as "nothing to release", so
        // that the hosts in the other set are still released.
        let (v4, v6): (Vec<Target>, Vec<Target>) =
            targets.iter().partition(|t| matches!(t, Target::V4(_)));
        for part in [v4, v6] {
            if part.is_empty() {
                continue;
            }
            let mut b = String::new();
            batch::unban_commands(&self.cfg, &part, &mut b)?;
            match self.apply(&b) {
                Ok(()) => {}
                Err(FwError::NftFailed { stderr, .. })
                    if stderr.contains("No such file or directory") => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Trapped targets with their remaining time (`None`: no timeout, e.g.
    /// added by hand). A missing table or set lists as empty (use
    /// [`intact`](Self::intact) to notice a flushed ruleset); a dry run
    /// lists nothing.
    pub fn list(&self) -> Result<Listing, FwError> {
        let Some(text) = self.list_table(false)? else {
            return Ok(Vec::new()); // no table: nothing is trapped
        };
        let (els, skipped) = json::elements(&text, &self.cfg)?;
        if skipped > 0 {
            tracing::warn!(
                skipped,
                "set elements that are not single addresses/networks were ignored"
            );
        }
        Ok(els)
    }

    /// True when table, sets, chain and both redirect rules are present as
    /// [`ensure`](Self::ensure) makes them (false e.g. after `nft flush ruleset`).
    pub fn intact(&self) -> Result<bool, FwError> {
        Ok(self.check()?.is_intact())
    }

    /// Like [`intact`](Self::intact), naming what is missing (for logs).
    pub fn check(&self) -> Result<Integrity, FwError> {
        match self.list_table(true)? {
            None => Ok(Integrity {
                missing: vec![format!("table inet {}", self.cfg.family_table)],
            }),
            Some(text) => Ok(Integrity {
                missing: json::missing_parts(&text, &self.cfg)?,
            }),
        }
    }

    /// Deletes the conntrack entries whose source is `target` (for IPv6 the
    /// whole network). Having none is not an error.
    pub fn flush_conntrack(&self, target: &Target) -> Result<(), FwError> {
        let (family, addr, mask) = match target {
            Target::V4(a) => ("ipv4", a.to_string(), None),
            Target::V6Net(a, p) => {
                let p = (*p).max(self.cfg.v6_prefix);
                (
                    "ipv6",
                    mask_v6(*a, p).to_string(),
                    (p < 128).then(|| v6_mask(p).to_string()),
                )
            }
        };
        let mut args = vec!["-D", "-f", family, "-s", addr.as_str()];
        if let Some(m) = mask.as_deref() {
            args.extend(["--mask-src", m]);
        }
        if let Mode::DryRun(out) = &self.mode {
            let line = format!("# {} {}\n", self.cfg.conntrack.display(), args.join(" "));
            return write_dry(out, &line);
        }
        let f = exec::run(
            &self.cfg.conntrack,
            &args,
            None,
            self.cfg.netns.as_deref(),
            self.cfg.timeout,
        )?;
        let stderr = String::from_utf8_lossy(&f.stderr);
        // conntrack exits 1 when it deleted nothing.
        if f.status.success() || stderr.contains("0 flow entries") {
            return Ok(());
        }
        Err(FwError::NftFailed {
            status: f.status.code(),
            stderr: stderr.into_owned(),
            command: format!("{} {}", self.cfg.conntrack.display(), args.join(" ")),
            hint: None,
        })
    }

    /// Runs one batch as one transaction (`nft -f -`), or prints it.
    fn apply(&self, batch: &str) -> Result<(), FwError> {
        self.invocations.fetch_add(1, Ordering::Relaxed);
        if let Mode::DryRun(out) = &self.mode {
            return write_dry(out, &format!("# nft -f -\n{batch}"));
        }
        let f = exec::run(
            &self.cfg.nft,
            &["-f", "-"],
            Some(batch.as_bytes()),
            self.cfg.netns.as_deref(),
            self.cfg.timeout,
        )?;
        if f.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&f.stderr);
        Err(FwError::NftFailed {
            status: f.status.code(),
            hint: hint_for(&stderr, &self.cfg),
            stderr: truncate(&stderr, 4000),
            command: format!(
                "{} -f - ({} line batch)",
                self.cfg.nft.display(),
                batch.lines().count()
            ),
        })
    }

    /// `nft -j list table inet T` (`terse`: `nft -j -t list ruleset`);
    /// `None` when the table does not exist.
    ///
    /// The structure check reads the whole ruleset tersely: nft resolves
    /// `@set` references in `list table`/`list chain` by fetching every set
    /// element, which with 100,000 bans costs 1.5 s, while a terse ruleset
    /// listing takes 10 ms whatever the sets hold.
    fn list_table(&self, terse: bool) -> Result<Option<String>, FwError> {
        batch::validate(&self.cfg)?;
        if self.is_dry_run() {
            return Ok(Some(dry_listing(&self.cfg)));
        }
        self.invocations.fetch_add(1, Ordering::Relaxed);
        let t = &self.cfg.family_table;
        let args: &[&str] = if terse {
            &["-j", "-t", "list", "ruleset"]
        } else {
            &["-j", "list", "table", "inet", t]
        };
        let f = exec::run(
            &self.cfg.nft,
            args,
            None,
            self.cfg.netns.as_deref(),
            self.cfg.timeout,
        )?;
        let stderr = String::from_utf8_lossy(&f.stderr);
        if f.status.success() {
            return String::from_utf8(f.stdout)
                .map(Some)
                .map_err(|_| FwError::Parse("nft printed invalid UTF-8".into()));
        }
        if stderr.contains("No such file or directory") {
            return Ok(None);
        }
        Err(FwError::NftFailed {
            status: f.status.code(),
            hint: hint_for(&stderr, &self.cfg),
            stderr: truncate(&stderr, 4000),
            command: format!("{} {}", self.cfg.nft.display(), args.join(" ")),
        })
    }
}

/// The usual cause of an nft error message, for people reading logs.
fn hint_for(stderr: &str, cfg: &NftConfig) -> Option<String> {
    let t = &cfg.family_table;
    if stderr.contains("Operation not permitted") {
        return Some("changing nftables needs root or CAP_NET_ADMIN".into());
    }
    if stderr.contains("File exists")
        && (stderr.contains("add set") || stderr.contains("add chain"))
    {
        return Some(format!(
            "table inet {t} already has a set or chain of that name with another type or flags \
             (another tool, or an older layout); `nft delete table inet {t}` lets it be rebuilt \
             (active bans come back on the next restore), or configure other names"
        ));
    }
    if stderr.contains("No such file or directory")
        && (stderr.contains("add element") || stderr.contains("delete element"))
    {
        return Some(format!(
            "table inet {t} or its sets are missing (ruleset flushed?); a restore rebuilds them"
        ));
    }
    None
}

/// What a dry run "lists": our ruleset as ensure would make it, no elements.
fn dry_listing(cfg: &NftConfig) -> String {
    let t = &cfg.family_table;
    let v6_left = if cfg.v6_prefix >= 128 {
        r#"{"payload": {"protocol": "ip6", "field": "saddr"}}"#.to_string()
    } else {
        format!(
            r#"{{"&": [{{"payload": {{"protocol": "ip6", "field": "saddr"}}}}, "{}"]}}"#,
            v6_mask(cfg.v6_prefix)
        )
    };
    let chain = batch::chain_of(cfg);
    let (chain_type, act) = match cfg.mode {
        TrapMode::Redirect => (
            "nat",
            format!(r#"{{"redirect": {{"port": {}}}}}"#, cfg.port),
        ),
        TrapMode::Stateless { group } => (
            "filter",
            format!(r#"{{"log": {{"group": {group}, "snaplen": 128}}}}, {{"drop": null}}"#),
        ),
    };
    let rule = |left: &str, set: &str| {
        format!(
            r#"{{"rule": {{"family": "inet", "table": "{t}", "chain": "{chain}", "expr": [{{"match": {{"left": {left}, "right": "@{set}"}}}}, {act}]}}}}"#,
        )
    };
    let set = |name: &str, ty: &str| {
        format!(
            r#"{{"set": {{"family": "inet", "table": "{t}", "name": "{name}", "type": "{ty}", "flags": ["timeout"]}}}}"#
        )
    };
    let guard = if batch::guards(cfg) {
        format!(
            r#", {{"chain": {{"family": "inet", "table": "{t}", "name": "{GUARD_CHAIN}", "type": "filter", "hook": "prerouting"}}}}"#
        )
    } else {
        String::new()
    };
    format!(
        r#"{{"nftables": [{{"table": {{"family": "inet", "name": "{t}"}}}}, {}, {}, {{"chain": {{"family": "inet", "table": "{t}", "name": "{chain}", "type": "{chain_type}", "hook": "prerouting"}}}}{guard}, {}, {}]}}"#,
        set(&cfg.set4, "ipv4_addr"),
        set(&cfg.set6, "ipv6_addr"),
        rule(
            r#"{"payload": {"protocol": "ip", "field": "saddr"}}"#,
            &cfg.set4
        ),
        rule(&v6_left, &cfg.set6),
    )
}

fn write_dry(out: &Mutex<Box<dyn Write + Send>>, text: &str) -> Result<(), FwError> {
    let mut w = out.lock().unwrap_or_else(|p| p.into_inner());
    w.write_all(text.as_bytes())
        .and_then(|()| w.flush())
        .map_err(|e| FwError::Io {
            what: "writing the dry-run batch".into(),
            source: e,
        })
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes)", &s[..end], s.len() - end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A `Write` whose bytes the test can read afterwards.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn dry(cfg: NftConfig) -> (Firewall, Shared) {
        let s = Shared::default();
        (Firewall::dry_run(cfg, Box::new(s.clone())), s)
    }

    #[test]
    fn dry_run_prints_one_batch_per_call_and_runs_nothing() {
        let cfg = NftConfig {
            nft: "/nonexistent/nft".into(),
            flush_conntrack: true,
            conntrack: "/nonexistent/conntrack".into(),
            ..NftConfig::default()
        };
        let (fw, out) = dry(cfg);
        fw.ensure().unwrap();
        let bans: Vec<Ban> = (0..3)
            .map(|i| Ban {
                target: Target::V4(std::net::Ipv4Addr::new(10, 77, 0, i)),
                timeout: Duration::from_secs(60),
            })
            .collect();
        fw.ban(&bans).unwrap();
        fw.restore(&bans).unwrap();
        fw.unban(&[bans[0].target]).unwrap();
        assert_eq!(fw.invocations(), 4);
        assert!(fw.intact().unwrap());
        assert!(fw.list().unwrap().is_empty());
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.matches("# nft -f -\n").count(), 4, "{text}");
        assert!(text.contains("add table inet tarpit\n"));
        assert!(
            text.contains("# /nonexistent/conntrack -D -f ipv4 -s 10.77.0.2\n"),
            "{text}"
        );
    }

    #[test]
    fn errors_say_what_happened() {
        let e = FwError::NftMissing("/nonexistent/nft".into());
        assert!(e.to_string().contains("/nonexistent/nft not found"), "{e}");
        let e = FwError::NftFailed {
            status: Some(1),
            stderr: "Error: Could not process rule: Operation not permitted\n".into(),
            command: "nft -f - (7 line batch)".into(),
            hint: None,
        };
        assert_eq!(
            e.to_string(),
            "`nft -f - (7 line batch)` failed (exit status 1): Error: Could not process rule: Operation not permitted"
        );
    }

    #[test]
    fn firewall_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Firewall>();
    }

    #[test]
    fn dry_listing_is_intact_for_any_valid_config() {
        for p in [1, 48, 64, 127, 128] {
            for mode in [TrapMode::Redirect, TrapMode::Stateless { group: 3 }] {
                let cfg = NftConfig {
                    v6_prefix: p,
                    port: 9,
                    mode,
                    ..NftConfig::default()
                };
                assert!(json::missing_parts(&dry_listing(&cfg), &cfg)
                    .unwrap()
                    .is_empty());
            }
        }
        // A redirect listing does not satisfy stateless mode, nor the reverse.
        let r = NftConfig::default();
        let s = NftConfig {
            mode: TrapMode::Stateless { group: 3 },
            ..NftConfig::default()
        };
        assert_eq!(json::missing_parts(&dry_listing(&r), &s).unwrap().len(), 3);
        assert_eq!(json::missing_parts(&dry_listing(&s), &r).unwrap().len(), 3);
        let other_group = NftConfig {
            mode: TrapMode::Stateless { group: 4 },
            ..NftConfig::default()
        };
        assert_eq!(
            json::missing_parts(&dry_listing(&s), &other_group)
                .unwrap()
                .len(),
            2
        );
    }
}
