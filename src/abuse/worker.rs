//! The report thread: takes events (serve: from its channel; watch: the ban
//! triggers fill the inbox), sorts them into the destinations' queues, and
//! delivers what [`policy::gate`] lets through, one request at a time,
//! applying [`policy::outcome`] to each answer. All state is in the outbox
//! database; this thread only holds a clock and a runtime for the requests.

use super::metrics::ReportMetrics;
use super::outbox::{self, Rule};
use super::policy::{self, Answer, Event, Gate, Outcome, Protocol};
use super::settings::{Dest, Settings};
use crate::ratelimit::RateLimit;
use rusqlite::Connection;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Most rows queued per destination; past it new events are dropped (and
/// counted): an outage during a flood must not fill the disk.
pub const QUEUE_CAP: u64 = 100_000;
/// Most requests per destination per pass, so one busy destination does
/// not starve the others or the inbox.
const PER_PASS: usize = 20;
/// How long admissions and deliveries are remembered.
const KEEP_MS: i64 = 7 * policy::DAY_MS;

/// What serve's engine side sends the worker.
pub enum Msg {
    Event(Event),
    /// Store what came before, then answer and stop.
    Stop(Sender<()>),
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Logs a kind of thing at most once a minute, counting the rest.
#[derive(Default)]
struct Limited(HashMap<String, RateLimit>);

impl Limited {
    fn warn(&mut self, kind: String, msg: &str) {
        let hit = self
            .0
            .entry(kind)
            .or_insert_with(|| RateLimit::new(Duration::from_secs(60)))
            .hit();
        match hit {
            Some(1) => tracing::warn!("report: {msg}"),
            Some(n) => tracing::warn!(suppressed = n - 1, "report: {msg}"),
            None => {}
        }
    }
}

pub struct Worker {
    settings: Settings,
    conn: Connection,
    rules: Vec<Rule>,
    metrics: Arc<ReportMetrics>,
    rx: Option<Receiver<Msg>>,
    /// Text no report may carry: our addresses, host name, secrets.
    never: Vec<String>,
    own: Vec<IpAddr>,
    log: Limited,
    next_own: Instant,
    next_prune: Instant,
}

/// This machine's addresses and name, as text.
fn own_facts() -> (Vec<IpAddr>, Vec<String>) {
    let ips = crate::sys::local_addresses().unwrap_or_default();
    let mut words: Vec<String> = ips.iter().map(|i| i.to_string()).collect();
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim();
        if !h.is_empty() && h != "localhost" {
            words.push(h.to_string());
            if let Some((short, _)) = h.split_once('.') {
                words.push(short.to_string());
            }
        }
    }
    (ips, words)
}

impl Worker {
    pub fn new(
        settings: Settings,
        conn: Connection,
        metrics: Arc<ReportMetrics>,
        rx: Option<Receiver<Msg>>,
    ) -> Worker {
        let rules = settings
            .dests
            .iter()
            .map(|d| Rule {
                dest: d.id.clone(),
                ban: d.ban,
                trapped: d.trapped,
                repeat_ms: d.repeat_ms,
                cap: QUEUE_CAP,
            })
            .collect();
        let now = Instant::now();
        let mut w = Worker {
            settings,
            conn,
            rules,
            metrics,
            rx,
            never: Vec::new(),
            own: Vec::new(),
            log: Limited::default(),
            next_own: now,
            next_prune: now,
        };
        w.refresh_own();
        w
    }

    fn refresh_own(&mut self) {
        let (ips, mut words) = own_facts();
        for d in &self.settings.dests {
            // The `Accept` value is no secret, and too common to redact.
            words.extend(d.secrets().into_iter().filter(|s| s != "application/json"));
        }
        self.own = ips;
        self.never = words;
        self.next_own = Instant::now() + Duration::from_secs(60);
    }

    /// Runs until `stop` is set (watch) or a [`Msg::Stop`] (serve).
    pub fn run(mut self, stop: Arc<AtomicBool>) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "report: cannot start; nothing is reported");
                return;
            }
        };
        loop {
            let (evs, ack) = self.wait(Duration::from_millis(250));
            if !evs.is_empty() {
                self.store(evs);
            }
            if let Some(a) = ack {
                let _ = a.send(());
                return;
            }
            if stop.load(Ordering::Relaxed) {
                return;
            }
            self.pass(&rt);
        }
    }

    /// Events that arrived within `d` (the channel, else a sleep).
    fn wait(&mut self, d: Duration) -> (Vec<Event>, Option<Sender<()>>) {
        let mut evs = Vec::new();
        let Some(rx) = &self.rx else {
            std::thread::sleep(d);
            return (evs, None);
        };
        let first = match rx.recv_timeout(d) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => return (evs, None),
            // The hook is gone: store nothing more, keep delivering.
            Err(RecvTimeoutError::Disconnected) => {
                self.rx = None;
                return (evs, None);
            }
        };
        let mut next = Some(first);
        while let Some(m) = next {
            match m {
                Msg::Event(e) => evs.push(e),
                Msg::Stop(a) => return (evs, Some(a)),
            }
            if evs.len() >= 1000 {
                break;
            }
            next = rx.try_recv().ok();
        }
        (evs, None)
    }

    fn store(&mut self, evs: Vec<Event>) {
        let evs: Vec<Event> = evs
            .into_iter()
            .filter(|e| {
                !e.host
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| self.own.contains(&ip))
            })
            .collect();
        if let Err(e) = outbox::push_inbox(&mut self.conn, &evs) {
            tracing::error!(error = %e, events = evs.len(), "report: cannot store events; they are lost");
        }
    }

    /// One pass: sort the inbox, deliver what is due, update the gauges.
    pub fn pass(&mut self, rt: &tokio::runtime::Runtime) {
        if Instant::now() >= self.next_own {
            self.refresh_own();
        }
        let now = now_ms();
        if Instant::now() >= self.next_prune {
            self.next_prune = Instant::now() + Duration::from_secs(3600);
            let _ = outbox::prune(&self.conn, now, KEEP_MS);
        }
        match outbox::sort(&mut self.conn, &self.rules, now, 1000) {
            Ok(s) => {
                for (dest, admitted, _repeats, full) in s.per_dest {
                    if full > 0 {
                        for _ in 0..full {
                            self.metrics.failed(&dest, "queue_full");
                        }
                        self.log.warn(
                            format!("full-{dest}"),
                            &format!(
                                "{dest}: the outbox holds {QUEUE_CAP} reports; {full} new dropped"
                            ),
                        );
                    }
                    if admitted > 0 {
                        tracing::debug!(dest, admitted, "report: queued");
                    }
                }
            }
            Err(e) => self
                .log
                .warn("db".into(), &format!("cannot read the inbox: {e}")),
        }
        for i in 0..self.settings.dests.len() {
            if let Err(e) = self.deliver(rt, i) {
                self.log.warn("db".into(), &format!("outbox database: {e}"));
            }
            let d = &self.settings.dests[i].id;
            if let Ok(n) = outbox::pending(&self.conn, d) {
                self.metrics
                    .queued
                    .get_or_create(&super::metrics::DestLabel { dest: d.clone() })
                    .set(n);
            }
        }
    }

    fn deliver(&mut self, rt: &tokio::runtime::Runtime, i: usize) -> rusqlite::Result<()> {
        let d = self.settings.dests[i].clone();
        for _ in 0..PER_PASS {
            let now = now_ms();
            let mut st = outbox::dest_state(&self.conn, &d.id)?;
            let Some(item) = outbox::next_due(&self.conn, &d.id, now)? else {
                return Ok(());
            };
            let host = item.event.host.clone();
            let last = outbox::last_sent(&self.conn, &d.id, &host)?;
            match policy::gate(&st, d.quota, last, d.repeat_ms, now) {
                Gate::Hold(t) => {
                    outbox::hold_all(&self.conn, &d.id, t)?;
                    return Ok(());
                }
                Gate::Later(t) => {
                    outbox::reschedule(&self.conn, item.seq, t, item.tries)?;
                    continue;
                }
                Gate::Go => {}
            }
            let lease = now + d.timeout.as_millis() as i64 + 5_000;
            if !outbox::claim(&self.conn, item.seq, now, lease)? {
                continue;
            }
            let Some((ctype, body)) = self.request(&d, &item.event) else {
                self.metrics.failed(&d.id, "unreportable");
                tracing::debug!(
                    dest = d.id,
                    host,
                    "report: an IPv6 prefix; AbuseIPDB takes addresses only"
                );
                outbox::finish(&mut self.conn, item.seq, &d.id, &host, None)?;
                continue;
            };
            let headers: Vec<(String, String)> = d
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .collect();
            let ans = rt.block_on(super::http::post(
                &d.url, &d.tls, &headers, ctype, body, d.timeout,
            ));
            let now = now_ms();
            let out = policy::outcome(d.proto, &ans, item.tries, d.retries, now);
            if matches!(ans, Answer::Http { .. }) && !matches!(out, Outcome::Pause { .. }) {
                st.count(now);
            }
            match out {
                Outcome::Sent => {
                    self.metrics.sent(&d.id);
                    let score = match (&ans, d.proto) {
                        (Answer::Http { body, .. }, Protocol::AbuseIpdb) => {
                            serde_json::from_slice::<serde_json::Value>(body)
                                .ok()
                                .and_then(|v| v["data"]["abuseConfidenceScore"].as_i64())
                        }
                        _ => None,
                    };
                    tracing::info!(
                        dest = d.id,
                        host,
                        event = item.event.kind.as_str(),
                        score,
                        "report: sent"
                    );
                    outbox::finish(&mut self.conn, item.seq, &d.id, &host, Some(now))?;
                }
                Outcome::AlreadyReported => {
                    self.metrics.failed(&d.id, "already_reported");
                    tracing::info!(
                        dest = d.id,
                        host,
                        "report: already reported within 15 minutes; done"
                    );
                    outbox::finish(&mut self.conn, item.seq, &d.id, &host, Some(now))?;
                }
                Outcome::Rejected(why) => {
                    self.metrics.failed(&d.id, "rejected");
                    self.log.warn(
                        format!("rejected-{}", d.id),
                        &format!(
                            "{}: the report of {host} was refused for good ({why}); dropped",
                            d.id
                        ),
                    );
                    outbox::finish(&mut self.conn, item.seq, &d.id, &host, None)?;
                }
                Outcome::GiveUp(why) => {
                    self.metrics.failed(&d.id, "gave_up");
                    self.log.warn(
                        format!("gave-up-{}", d.id),
                        &format!(
                            "{}: no delivery of {host} after {} tries ({why}); dropped",
                            d.id,
                            item.tries + 1
                        ),
                    );
                    outbox::finish(&mut self.conn, item.seq, &d.id, &host, None)?;
                }
                Outcome::Retry { at, why } => {
                    self.metrics.failed(&d.id, "retry");
                    self.log.warn(
                        format!("retry-{}", d.id),
                        &format!(
                            "{}: {why}; trying again in {}s (kept in the outbox)",
                            d.id,
                            (at - now).max(0) / 1000
                        ),
                    );
                    outbox::reschedule(&self.conn, item.seq, at, item.tries + 1)?;
                }
                Outcome::Pause { until, why } => {
                    self.metrics.failed(&d.id, "paused");
                    st.paused_until = until;
                    tracing::warn!(
                        dest = d.id,
                        seconds = (until - now).max(0) / 1000,
                        "report: {}: {why}; every report waits",
                        d.id
                    );
                    outbox::reschedule(&self.conn, item.seq, until, item.tries)?;
                    outbox::hold_all(&self.conn, &d.id, until)?;
                    outbox::save_dest_state(&self.conn, &d.id, &st)?;
                    return Ok(());
                }
            }
            outbox::save_dest_state(&self.conn, &d.id, &st)?;
        }
        Ok(())
    }

    /// The content type and body for `ev` at `d` (`None`: not reportable
    /// there).
    fn request(&self, d: &Dest, ev: &Event) -> Option<(&'static str, Vec<u8>)> {
        match d.proto {
            Protocol::AbuseIpdb => {
                let ip = ev.single_ip()?;
                let cats = policy::categories(ev, &d.ports, &d.jails);
                let comment = policy::comment(ev, &self.never);
                Some((
                    "application/x-www-form-urlencoded",
                    policy::abuseipdb_form(&ip.to_string(), &cats, &comment, ev.at_ms).into_bytes(),
                ))
            }
            Protocol::Webhook => Some((
                "application/json",
                policy::webhook_json(ev).to_string().into_bytes(),
            )),
        }
    }
}
