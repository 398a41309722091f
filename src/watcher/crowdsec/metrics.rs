//! CrowdSec figures on `tarpit watch --metrics`: running decisions by
//! origin, pulls, pushes, the push queue, refusals and errors. Labels are
//! fixed words (origins mapped by `decision::origin_label`), never an
//! address or text from LAPI.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OriginLabel {
    /// `crowdsec`, `cscli`, `capi`, `lists`, `console`, `other`, or `own`
    /// (our pushes coming back).
    pub origin: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Debug, Default)]
pub struct CrowdSecMetrics {
    pub decisions: Family<OriginLabel, Gauge>,
    pub pulls: Family<ResultLabel, Counter>,
    pub pushed: Counter,
    pub push_queue: Gauge,
    pub refused: Family<KindLabel, Counter>,
    pub errors: Family<KindLabel, Counter>,
}

impl CrowdSecMetrics {
    pub fn register(&self, reg: &mut Registry) {
        reg.register(
            "crowdsec_decisions",
            "CrowdSec decisions trapping right now, by origin",
            self.decisions.clone(),
        );
        reg.register(
            "crowdsec_pulls",
            "Decision stream pulls, by result",
            self.pulls.clone(),
        );
        reg.register(
            "crowdsec_pushed",
            "Bans pushed to LAPI as alerts",
            self.pushed.clone(),
        );
        reg.register(
            "crowdsec_push_queue",
            "Bans waiting to be pushed",
            self.push_queue.clone(),
        );
        reg.register(
            "crowdsec_refused",
            "Decisions not applied, by reason",
            self.refused.clone(),
        );
        reg.register(
            "crowdsec_errors",
            "LAPI and database errors, by kind",
            self.errors.clone(),
        );
    }

    pub fn error(&self, kind: &'static str) {
        self.errors.get_or_create(&KindLabel { kind }).inc();
    }
}
