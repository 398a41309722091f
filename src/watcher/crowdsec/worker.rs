//! The LAPI side, on its own thread with a small runtime: pulls the
//! decision stream every `update_frequency`, stores what it accepts in the
//! state database and tells the watcher which traps changed; pushes the
//! outbox in order, with back-off while LAPI is away.
//!
//! The watcher never waits for LAPI: it only reads the database and the
//! channel. Errors are logged once a minute per kind.

use super::client::{Client, LapiError, Machine};
use super::decision::{accept, is_own, origin_label, Policy, Refusal, Stream, Trap};
use super::metrics::{CrowdSecMetrics, KindLabel, OriginLabel, ResultLabel};
use super::settings::Settings;
use super::store::{self, Row, Touched};
use crate::firewall::Target;
use crate::ratelimit::RateLimit;
use crate::watcher::state::ms;
use crate::watcher::IgnoreList;
use rusqlite::Connection;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Alerts per POST.
const PUSH_BATCH: usize = 50;
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A queued alert LAPI keeps rejecting (not an outage: a 4xx/5xx for this
/// very alert) is dropped after this many tries, so it cannot block the rest.
const MAX_TRIES: u32 = 5;

/// Logs once per `every` for each kind.
pub struct Limited {
    kinds: HashMap<&'static str, RateLimit>,
}

impl Limited {
    pub fn new() -> Limited {
        Limited {
            kinds: HashMap::new(),
        }
    }
    pub fn error(&mut self, kind: &'static str, msg: &str) {
        let hit = self
            .kinds
            .entry(kind)
            .or_insert_with(|| RateLimit::new(Duration::from_secs(60)))
            .hit();
        match hit {
            Some(1) => tracing::error!(kind, "crowdsec: {msg}"),
            Some(n) => tracing::error!(kind, suppressed = n - 1, "crowdsec: {msg}"),
            None => {}
        }
    }
    pub fn warn(&mut self, kind: &'static str, msg: &str) {
        let hit = self
            .kinds
            .entry(kind)
            .or_insert_with(|| RateLimit::new(Duration::from_secs(60)))
            .hit();
        match hit {
            Some(1) => tracing::warn!(kind, "crowdsec: {msg}"),
            Some(n) => tracing::warn!(kind, suppressed = n - 1, "crowdsec: {msg}"),
            None => {}
        }
    }
}

impl Default for Limited {
    fn default() -> Self {
        Self::new()
    }
}

pub struct Worker {
    pub settings: Settings,
    pub client: Client,
    pub conn: Connection,
    pub policy: Policy,
    pub ignore: IgnoreList,
    /// Extra never-trap ranges (`[watch] ignoreip`), for address refreshes.
    pub ignoreip: Vec<crate::watcher::Cidr>,
    pub metrics: Arc<CrowdSecMetrics>,
    pub tx: Sender<Touched>,
    pub log: Limited,
    /// True until a startup pull succeeded.
    pub need_startup: bool,
    next_pull: Instant,
    next_push: Instant,
    push_backoff: Duration,
    tries: HashMap<i64, u32>,
    next_own: Instant,
    next_gauges: Instant,
}

impl Worker {
    pub fn new(
        settings: Settings,
        db: &std::path::Path,
        v6_prefix: u8,
        ignoreip: Vec<crate::watcher::Cidr>,
        metrics: Arc<CrowdSecMetrics>,
        tx: Sender<Touched>,
    ) -> rusqlite::Result<Worker> {
        let conn = store::open(db)?;
        store::set_push(&conn, settings.push)?;
        let client = Client::new(
            settings.endpoint.clone(),
            settings.api_key.as_ref().map(|k| k.0.clone()),
            match (&settings.machine_id, &settings.password) {
                (Some(id), Some(pw)) => Some(Machine {
                    id: id.clone(),
                    password: pw.0.clone(),
                }),
                _ => None,
            },
        );
        let policy = Policy {
            types: settings.types.clone(),
            origins: settings.origins.clone(),
            v6_prefix,
        };
        let now = Instant::now();
        Ok(Worker {
            ignore: IgnoreList::with_own_addresses(&ignoreip),
            ignoreip,
            settings,
            client,
            conn,
            policy,
            metrics,
            tx,
            log: Limited::new(),
            need_startup: true,
            next_pull: now,
            next_push: now,
            push_backoff: Duration::from_secs(1),
            tries: HashMap::new(),
            next_own: now + Duration::from_secs(60),
            next_gauges: now,
        })
    }

    /// Runs until `stop` is set.
    pub fn run(mut self, stop: Arc<AtomicBool>) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "crowdsec: cannot start; no decisions are pulled or pushed");
                return;
            }
        };
        rt.block_on(async {
            while !stop.load(Ordering::Relaxed) {
                self.round().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }

    /// One pass: a pull when due, a push when due and queued.
    pub async fn round(&mut self) {
        let now = Instant::now();
        if now >= self.next_own {
            self.next_own = now + Duration::from_secs(60);
            self.ignore = IgnoreList::with_own_addresses(&self.ignoreip);
        }
        if self.settings.api_key.is_some() && now >= self.next_pull {
            self.next_pull = now + self.settings.update_frequency;
            self.pull().await;
        }
        if self.settings.push && Instant::now() >= self.next_push {
            self.push().await;
        }
        if Instant::now() >= self.next_gauges {
            self.next_gauges = Instant::now() + Duration::from_secs(2);
            self.gauges();
        }
    }

    fn gauges(&mut self) {
        let now = ms(SystemTime::now());
        if let Ok(n) = store::outbox_len(&self.conn) {
            self.metrics.push_queue.set(n);
        }
        if let Ok(rows) = store::counts(&self.conn, now) {
            self.metrics.decisions.clear();
            for (origin, own, n) in rows {
                let label = if own { "own" } else { origin_label(&origin) };
                self.metrics
                    .decisions
                    .get_or_create(&OriginLabel { origin: label })
                    .inc_by(n);
            }
        }
    }

    fn lapi_error(&mut self, what: &str, e: &LapiError) {
        self.metrics.error(e.kind());
        let hint = match e {
            LapiError::Auth { .. } if what == "pull" => {
                " (check api_key_file: `cscli bouncers add NAME -o raw`)"
            }
            LapiError::Auth { .. } => " (check machine_id/password_file: `cscli machines add`)",
            _ => "",
        };
        let kind = match (what, e.kind()) {
            ("pull", k) => match k {
                "auth" => "pull-auth",
                "unreachable" | "timeout" => "pull-unreachable",
                _ => "pull-other",
            },
            (_, k) => match k {
                "auth" => "push-auth",
                "unreachable" | "timeout" => "push-unreachable",
                _ => "push-other",
            },
        };
        self.log.error(
            kind,
            &format!("{what} failed: {e}{hint}; traps from stored decisions stay in place"),
        );
    }

    pub async fn pull(&mut self) {
        let startup = self.need_startup;
        match self.client.pull(startup).await {
            Ok(s) => {
                self.metrics
                    .pulls
                    .get_or_create(&ResultLabel { result: "ok" })
                    .inc();
                let t0 = Instant::now();
                let (n_new, n_del) = (s.new.len(), s.deleted.len());
                match self.process(s, startup) {
                    Ok(t) => {
                        if startup {
                            tracing::info!(
                                decisions = n_new,
                                stored = t.added,
                                forgotten = t.removed,
                                ms = t0.elapsed().as_millis() as u64,
                                "crowdsec: decision stream started"
                            );
                        } else if t.added + t.removed > 0 {
                            tracing::info!(
                                new = n_new,
                                deleted = n_del,
                                added = t.added,
                                removed = t.removed,
                                "crowdsec: decisions changed"
                            );
                        }
                        self.need_startup = false;
                        if !t.hosts.is_empty() || t.nets {
                            let _ = self.tx.send(t);
                        }
                    }
                    Err(e) => {
                        self.metrics.error("db");
                        self.log.error(
                            "db",
                            &format!("storing decisions failed: {e}; pulling them all again"),
                        );
                        self.need_startup = true;
                    }
                }
            }
            Err(e) => {
                self.metrics
                    .pulls
                    .get_or_create(&ResultLabel { result: "error" })
                    .inc();
                self.lapi_error("pull", &e);
            }
        }
    }

    /// Stores one stream answer; returns what changed.
    pub fn process(&mut self, s: Stream, startup: bool) -> rusqlite::Result<Touched> {
        let now = ms(SystemTime::now());
        let mut rows = Vec::with_capacity(s.new.len());
        for d in &s.new {
            match accept(d, &self.policy, &self.ignore) {
                Ok(a) => {
                    let own = match a.trap {
                        Trap::Host(h) => {
                            is_own(d, store::own_jail(&self.conn, &h, now)?.as_deref())
                        }
                        Trap::Net(_) => false,
                    };
                    rows.push(Row {
                        id: d.id,
                        trap: a.trap,
                        value: d.value.chars().take(64).collect(),
                        origin: d.origin.chars().take(64).collect(),
                        kind: d.kind.chars().take(64).collect(),
                        scenario: d.scenario.chars().take(256).collect(),
                        own,
                        expires_at: now
                            .saturating_add(a.remaining.as_millis().min(i64::MAX as u128) as i64),
                    });
                }
                Err(r) if r.is_refused() => {
                    self.metrics
                        .refused
                        .get_or_create(&KindLabel { kind: r.as_str() })
                        .inc();
                    let value: String = d.value.chars().take(80).collect();
                    let msg = format!(
                        "decision {} ({} {} {:?}) refused: {}",
                        d.id,
                        d.kind.escape_debug(),
                        d.scope.escape_debug(),
                        value,
                        match r {
                            Refusal::Ignored => "loopback, one of our own addresses, or ignoreip",
                            Refusal::TooWide => "range wider than /8 (IPv4) or /16 (IPv6)",
                            Refusal::Invalid => "not a valid address, range or duration",
                            _ => "over already",
                        }
                    );
                    match r {
                        Refusal::Ignored => self.log.warn("refused-ignored", &msg),
                        Refusal::TooWide => self.log.warn("refused-wide", &msg),
                        Refusal::Invalid => self.log.warn("refused-invalid", &msg),
                        _ => {}
                    }
                }
                Err(_) => {}
            }
        }
        let deleted: Vec<(i64, String)> = s
            .deleted
            .iter()
            .map(|d| (d.id, d.value.chars().take(64).collect()))
            .collect();
        store::apply(&mut self.conn, &rows, &deleted, startup, now)
    }

    pub async fn push(&mut self) {
        let queue = match store::outbox(&self.conn, PUSH_BATCH) {
            Ok(q) => q,
            Err(e) => {
                self.metrics.error("db");
                self.log
                    .error("db", &format!("reading the push queue: {e}"));
                self.next_push = Instant::now() + Duration::from_secs(5);
                return;
            }
        };
        if queue.is_empty() {
            self.next_push = Instant::now() + Duration::from_millis(200);
            return;
        }
        let now = ms(SystemTime::now());
        let last = queue.last().map(|o| o.seq).unwrap_or(0);
        // A single alert when one keeps failing: find the one LAPI rejects.
        let (batch, upto) = if self.tries.values().any(|n| *n > 1) {
            (&queue[..1], queue[0].seq)
        } else {
            (&queue[..], last)
        };
        let alerts: Vec<serde_json::Value> = batch.iter().filter_map(|o| alert(o, now)).collect();
        let r = if alerts.is_empty() {
            Ok(())
        } else {
            self.client
                .push(&serde_json::Value::Array(alerts.clone()))
                .await
        };
        match r {
            Ok(()) => {
                self.metrics.pushed.inc_by(alerts.len() as u64);
                if !alerts.is_empty() {
                    tracing::info!(alerts = alerts.len(), "crowdsec: bans pushed");
                }
                self.done(upto);
                self.push_backoff = Duration::from_secs(1);
                self.next_push = Instant::now();
            }
            Err(e) => {
                self.lapi_error("push", &e);
                if matches!(e, LapiError::Status { .. } | LapiError::Malformed(_)) {
                    let n = self.tries.entry(batch[0].seq).or_insert(0);
                    *n += 1;
                    if *n >= MAX_TRIES && batch.len() == 1 {
                        self.log.error(
                            "push-dropped",
                            &format!(
                                "LAPI rejected the alert for {} {} times; dropped from the queue",
                                batch[0].host, MAX_TRIES
                            ),
                        );
                        self.metrics.error("push_dropped");
                        self.done(batch[0].seq);
                    }
                }
                self.next_push = Instant::now() + self.push_backoff;
                self.push_backoff = (self.push_backoff * 2).min(MAX_BACKOFF);
            }
        }
    }

    fn done(&mut self, upto: i64) {
        self.tries.retain(|s, _| *s > upto);
        if let Err(e) = store::outbox_done(&self.conn, upto) {
            self.metrics.error("db");
            self.log
                .error("db", &format!("updating the push queue: {e}"));
        }
        if let Ok(n) = store::outbox_len(&self.conn) {
            self.metrics.push_queue.set(n);
        }
    }
}

/// A scenario name from a jail name: plain characters only.
fn scenario(jail: &str) -> String {
    let j: String = jail
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("tarpit/{j}")
}

/// The alert for one queued ban (None: the ban is over, or unreadable).
pub fn alert(o: &store::Outgoing, now_ms: i64) -> Option<serde_json::Value> {
    let left = o.expires_at - now_ms;
    if left <= 0 {
        return None;
    }
    let host: Target = o.host.parse().ok()?;
    let (scope, value) = match host {
        Target::V4(a) => ("Ip", a.to_string()),
        Target::V6Net(a, 128) => ("Ip", a.to_string()),
        Target::V6Net(a, p) => ("Range", format!("{a}/{p}")),
    };
    let scen = scenario(&o.jail);
    let dur = super::duration::format(Duration::from_millis(left as u64));
    let at = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + Duration::from_millis(o.banned_at.max(0) as u64),
    )
    .to_string();
    let mut source = serde_json::json!({"scope": scope, "value": value});
    if scope == "Ip" {
        source["ip"] = serde_json::Value::String(value.clone());
    } else {
        source["range"] = serde_json::Value::String(value.clone());
    }
    Some(serde_json::json!({
        "scenario": scen,
        "scenario_hash": "",
        "scenario_version": "",
        "message": format!("tarpit: {value} trapped by jail {}", &scen[7..]),
        "events_count": 1,
        "events": [],
        "start_at": at,
        "stop_at": at,
        "capacity": 0,
        "leakspeed": "0",
        "simulated": false,
        "remediation": true,
        "source": source,
        "decisions": [{
            "origin": "crowdsec",
            "type": "tarpit",
            "scope": scope,
            "value": value,
            "duration": dur,
            "scenario": scen,
        }],
    }))
}

/// Where the worker keeps its state: the watcher's database file.
pub fn db_path(state: &crate::watcher::State) -> Option<PathBuf> {
    let p = state.path();
    (p != std::path::Path::new(":memory:")).then(|| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_carry_a_tarpit_decision_in_lapi_spelling() {
        let o = store::Outgoing {
            seq: 1,
            host: "fd77:5::/64".into(),
            jail: "multi ban".into(),
            banned_at: 1_000_000,
            expires_at: 1_000_000 + 7 * 86_400_000,
        };
        let a = alert(&o, 1_000_000).unwrap();
        let d = &a["decisions"][0];
        assert_eq!(d["type"], "tarpit");
        assert_eq!(d["scope"], "Range");
        assert_eq!(d["value"], "fd77:5::/64");
        assert_eq!(d["duration"], "168h");
        assert_eq!(d["scenario"], "tarpit/multi_ban");
        let o4 = store::Outgoing {
            host: "10.77.1.2".into(),
            ..o.clone()
        };
        let a = alert(&o4, 1_000_000 + 86_400_000).unwrap();
        assert_eq!(a["decisions"][0]["scope"], "Ip");
        assert_eq!(a["source"]["ip"], "10.77.1.2");
        assert_eq!(a["decisions"][0]["duration"], "144h");
        // Over already: nothing to push.
        assert!(alert(&o4, o4.expires_at).is_none());
    }
}
