//! Bans into the firewall: one batch per tick, and when anything failed or
//! the ruleset vanished, a rebuild of everything from the state database
//! with exponential back-off.

use super::*;
use crate::firewall::FwError;
use crate::watcher::external::ExternalError;

/// What the watcher needs from a firewall. `crate::firewall::Firewall` is
/// the real one; tests use fakes that fail on demand. The watcher logs an error
/// (rate-limited) and retries with back-off.
pub trait Enforcer {
    /// Creates the table, sets and rule (idempotent).
    fn ensure(&self) -> Result<(), FwError>;
    /// Adds hosts with their timeouts, in one transaction.
    fn ban(&self, bans: &[(Target, Duration)]) -> Result<(), FwError>;
    /// After a start, a failure or a flush: creates what `ensure` does and
    /// adds every active ban, all in one transaction.
    fn restore(&self, bans: &[(Target, Duration)]) -> Result<(), FwError>;
    fn unban(&self, hosts: &[Target]) -> Result<(), FwError>;
    /// False when the table, a set or the rule is missing.
    fn intact(&self) -> Result<bool, FwError>;
    /// Makes the interval sets hold exactly these networks (CrowdSec
    /// ranges), in one transaction.
    fn set_ranges(&self, nets: &[(crate::firewall::Net, Duration)]) -> Result<(), FwError> {
        let _ = nets;
        Err(FwError::Config("this firewall has no range sets".into()))
    }
}

pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(60);

impl<E: Enforcer> Watcher<E> {
    /// Sets the active-bans gauge from the state database.
    pub(super) fn count_active(&mut self) {
        if let Ok(b) = self.state.active_bans(ms(SystemTime::now())) {
            self.metrics.active_bans.set(b.len() as i64);
        }
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
        let mut r: Result<(), ExternalError> = self.fw.restore(&items).map_err(Into::into);
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

    pub(super) fn fw_failed(&mut self, e: &dyn std::fmt::Display) {
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

    pub(super) fn apply(&mut self, bans: &[BanRow]) {
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
}
