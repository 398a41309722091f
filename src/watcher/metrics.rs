//! What `tarpit watch` exposes on its own `--metrics` port: active bans,
//! bans by jail, log lines by jail and result, nft batches and errors, and
//! the duration of the last restore. Labels are jail names and fixed result
//! words only — never an address (per-host data lives in the state DB).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JailLabel {
    pub jail: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LineLabels {
    pub jail: String,
    /// `matched`, `ignored` (ignoreregex, own jail, ignoreip), `unmatched`,
    /// `invalid` (matched text that is no address) or `skipped` (oversized
    /// or binary lines the follower dropped).
    pub result: String,
}

/// The watcher's metrics. Cheap to update (atomics); always kept, served
/// only with `--metrics`.
#[derive(Debug, Default)]
pub struct WatchMetrics {
    pub active_bans: Gauge,
    pub bans: Family<JailLabel, Counter>,
    pub lines: Family<LineLabels, Counter>,
    pub nft_batches: Counter,
    pub nft_errors: Counter,
    pub restore_duration: Gauge<f64, AtomicU64>,
}

impl WatchMetrics {
    /// Registers everything under `reg` (use `Registry::with_prefix("tarpit")`).
    pub fn register(&self, reg: &mut Registry) {
        reg.register(
            "active_bans",
            "Hosts trapped right now",
            self.active_bans.clone(),
        );
        reg.register("bans", "Bans issued, by jail", self.bans.clone());
        reg.register(
            "log_lines",
            "Log lines read, by jail and result",
            self.lines.clone(),
        );
        reg.register(
            "nft_batches",
            "nft transactions run",
            self.nft_batches.clone(),
        );
        reg.register(
            "nft_errors",
            "nft transactions that failed",
            self.nft_errors.clone(),
        );
        reg.register(
            "restore_duration_seconds",
            "How long the last restore of all active bans took",
            self.restore_duration.clone(),
        );
    }

    pub fn line(&self, jail: &str, result: &str) {
        self.lines
            .get_or_create(&LineLabels {
                jail: jail.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    pub fn lines_n(&self, jail: &str, result: &str, n: u64) {
        if n > 0 {
            self.lines
                .get_or_create(&LineLabels {
                    jail: jail.to_string(),
                    result: result.to_string(),
                })
                .inc_by(n);
        }
    }

    pub fn ban(&self, jail: &str) {
        self.bans
            .get_or_create(&JailLabel {
                jail: jail.to_string(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_the_names_the_dashboard_uses() {
        let m = WatchMetrics::default();
        m.line("sshd", "matched");
        m.ban("sshd");
        m.nft_batches.inc();
        m.active_bans.set(3);
        let mut reg = Registry::with_prefix("tarpit");
        m.register(&mut reg);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        for want in [
            "tarpit_active_bans 3",
            "tarpit_bans_total{jail=\"sshd\"} 1",
            "tarpit_log_lines_total{jail=\"sshd\",result=\"matched\"} 1",
            "tarpit_nft_batches_total 1",
            "tarpit_nft_errors_total 0",
            "tarpit_restore_duration_seconds",
        ] {
            assert!(out.contains(want), "{want} missing in:\n{out}");
        }
    }
}
