//! Report figures for `/metrics` (serve's and the watcher's): sent, failed
//! by reason, queued, per destination. The `dest` label is a configured
//! name (`abuseipdb`, `webhook:NAME`), never an address.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestLabel {
    pub dest: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailLabel {
    pub dest: String,
    /// `retry`, `paused`, `rejected`, `gave_up`, `already_reported`,
    /// `unreportable`, `queue_full`.
    pub reason: &'static str,
}

#[derive(Debug, Default)]
pub struct ReportMetrics {
    pub sent: Family<DestLabel, Counter>,
    pub failed: Family<FailLabel, Counter>,
    pub queued: Family<DestLabel, Gauge>,
}

impl ReportMetrics {
    pub fn register(&self, reg: &mut Registry) {
        reg.register(
            "reports_sent",
            "Reports delivered (AbuseIPDB, webhooks), by destination",
            self.sent.clone(),
        );
        reg.register(
            "reports_failed",
            "Report attempts that did not deliver, by destination and reason",
            self.failed.clone(),
        );
        reg.register(
            "reports_queued",
            "Reports waiting in the outbox, by destination",
            self.queued.clone(),
        );
    }

    pub fn sent(&self, dest: &str) {
        self.sent
            .get_or_create(&DestLabel { dest: dest.into() })
            .inc();
    }

    pub fn failed(&self, dest: &str, reason: &'static str) {
        self.failed
            .get_or_create(&FailLabel {
                dest: dest.into(),
                reason,
            })
            .inc_by(1);
    }
}
