//! Prometheus metrics: the serve-side metric set (an [`Observer`]) and a small
//! HTTP server for `/metrics` that any subcommand can run over its own
//! [`Registry`] (the watcher uses it for its ban metrics).
//!
//! Another subcommand exposes its own metrics like this (bind before
//! dropping privileges so a bad address is an error at start; serve inside
//! its tokio runtime):
//!
//! ```no_run
//! use prometheus_client::metrics::gauge::Gauge;
//! use prometheus_client::registry::Registry;
//! use std::sync::Arc;
//! use tarpit::stats::metrics::MetricsServer;
//!
//! # async fn f() -> std::io::Result<()> {
//! let mut reg = Registry::with_prefix("tarpit");
//! let active: Gauge = Gauge::default();
//! reg.register("active_bans", "Bans in force", active.clone());
//! let server = MetricsServer::bind("127.0.0.1:9465".parse().unwrap())?;
//! let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
//! tokio::spawn(server.run(Arc::new(reg), async move {
//!     let _ = stop_rx.await;
//! }));
//! active.set(3);
//! # drop(stop_tx);
//! # Ok(())
//! # }
//! ```
//!
//! Labels are bounded by configuration, never by attackers: `listener` (the
//! configured addresses), `reason` (the six end reasons), `kind` (accept
//! error kinds), `protocol` (the five of `classify::Protocol`: what the
//! peer spoke is a fixed set; its software, path or SNI never becomes a
//! label). Per-IP data lives in the history database, because a label
//! per peer address grows without bound (the endlessh-go lesson).

use crate::classify::Protocol;
use crate::engine::record::{ConnRecord, EndReason};
use crate::engine::Observer;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Hold-duration buckets, seconds: 1 s to 24 h.
pub const HOLD_BUCKETS: [f64; 16] = [
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 3600.0, 7200.0,
    21600.0, 43200.0, 86400.0,
];

/// The accept error kinds the engine reports, pre-created at zero so
/// `rate()` works from the first error on; a kind not listed here still
/// gets its series when it first happens.
pub const ACCEPT_ERROR_KINDS: [&str; 7] = [
    "emfile",
    "enfile",
    "enobufs",
    "enomem",
    "econnaborted",
    "eperm",
    "other",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabel {
    pub listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndLabels {
    pub listener: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabel {
    pub protocol: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

/// Counters the history writer keeps; registered only when metrics are on,
/// but always counted (the writer logs them too).
#[derive(Clone, Debug, Default)]
pub struct HistoryMetrics {
    /// Rows committed to the database.
    pub rows_written: Counter,
    /// Rows not queued because the writer had fallen behind.
    pub rows_dropped: Counter,
    /// Rows lost because their transaction failed (disk full, I/O error).
    pub rows_failed: Counter,
    /// Failed transactions.
    pub write_errors: Counter,
    /// Rows removed by retention.
    pub rows_pruned: Counter,
    /// With GeoIP and `metrics_country`: connections recorded and seconds
    /// held, by country code (`--` unknown); at most 26 x 26 + 1 values.
    pub country_conns: Family<CountryLabel, Counter>,
    pub country_held: Family<CountryLabel, Counter<f64, AtomicU64>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CountryLabel {
    pub country: String,
}

impl HistoryMetrics {
    /// Counts one recorded connection of `country` (an ISO code or none).
    pub fn by_country(&self, country: Option<&str>, held_secs: f64) {
        let l = CountryLabel {
            country: country.unwrap_or("--").to_string(),
        };
        self.country_conns.get_or_create(&l).inc();
        self.country_held
            .get_or_create(&l)
            .inc_by(held_secs.max(0.0));
    }

    /// The by-country families (only when configured: still no per-IP labels).
    pub fn register_country(&self, reg: &mut Registry) {
        reg.register(
            "connections_by_country",
            "Connections recorded, by the peer's country (GeoIP; -- unknown)",
            self.country_conns.clone(),
        );
        reg.register(
            "attacker_time_by_country_seconds",
            "Seconds connections were held, by the peer's country (GeoIP; -- unknown)",
            self.country_held.clone(),
        );
    }

    pub fn register(&self, reg: &mut Registry) {
        reg.register(
            "history_rows_written",
            "Connection records committed to the history database",
            self.rows_written.clone(),
        );
        reg.register(
            "history_rows_dropped",
            "Connection records dropped because the history writer fell behind",
            self.rows_dropped.clone(),
        );
        reg.register(
            "history_rows_failed",
            "Connection records lost because their transaction failed (disk full, I/O error)",
            self.rows_failed.clone(),
        );
        reg.register(
            "history_write_errors",
            "History transactions that failed",
            self.write_errors.clone(),
        );
        reg.register(
            "history_rows_pruned",
            "History rows removed by retention",
            self.rows_pruned.clone(),
        );
    }
}

/// The serve-side metric set. As an [`Observer`] it only bumps atomics, so
/// it never blocks the engine.
#[derive(Debug)]
pub struct ServeMetrics {
    held: Family<ListenerLabel, Gauge>,
    trapped: Family<ListenerLabel, Counter>,
    ended: Family<EndLabels, Counter>,
    hold_secs: Histogram,
    engaged_hist: Histogram,
    attacker_secs: Counter<f64, AtomicU64>,
    attacker_bound_secs: Counter<f64, AtomicU64>,
    held_total_secs: Counter<f64, AtomicU64>,
    bytes_unread: Counter,
    close_attempts: Family<ListenerLabel, Counter>,
    accept_errors: Family<KindLabel, Counter>,
    dropped: Family<KindLabel, Counter>,
    /// Ended connections and their engaged seconds by protocol, one
    /// series per [`Protocol::ALL`] entry (indexed alike), made at start.
    protocol_conns: Vec<Counter>,
    protocol_engaged: Vec<Counter<f64, AtomicU64>>,
    /// Handles of the configured listeners' series, fetched once: the hot
    /// path then neither allocates a label nor takes the family's lock.
    known: std::collections::HashMap<String, ListenerSeries>,
}

#[derive(Debug)]
struct ListenerSeries {
    held: Gauge,
    trapped: Counter,
    close_attempts: Counter,
    /// Indexed like [`EndReason::ALL`].
    ended: Vec<Counter>,
}

impl ServeMetrics {
    /// Creates the metrics, registers them in `reg` (prefix it `tarpit`), and
    /// pre-creates the series of every listener at zero so dashboards show
    /// them before the first connection.
    pub fn new(reg: &mut Registry, listeners: &[String]) -> Arc<Self> {
        let m = ServeMetrics {
            held: Family::default(),
            trapped: Family::default(),
            ended: Family::default(),
            hold_secs: Histogram::new(HOLD_BUCKETS),
            engaged_hist: Histogram::new(HOLD_BUCKETS),
            attacker_secs: Counter::default(),
            attacker_bound_secs: Counter::default(),
            held_total_secs: Counter::default(),
            bytes_unread: Counter::default(),
            close_attempts: Family::default(),
            accept_errors: Family::default(),
            dropped: Family::default(),
            protocol_conns: Vec::new(),
            protocol_engaged: Vec::new(),
            known: Default::default(),
        };
        let mut known = std::collections::HashMap::new();
        for l in listeners {
            let ll = ListenerLabel {
                listener: l.clone(),
            };
            let series = ListenerSeries {
                held: m.held.get_or_create(&ll).clone(),
                trapped: m.trapped.get_or_create(&ll).clone(),
                close_attempts: m.close_attempts.get_or_create(&ll).clone(),
                ended: EndReason::ALL
                    .iter()
                    .map(|r| {
                        m.ended
                            .get_or_create(&EndLabels {
                                listener: l.clone(),
                                reason: r.as_str().into(),
                            })
                            .clone()
                    })
                    .collect(),
            };
            known.insert(l.clone(), series);
        }
        let mut m = m;
        m.known = known;
        let conns: Family<ProtocolLabel, Counter> = Family::default();
        let engaged: Family<ProtocolLabel, Counter<f64, AtomicU64>> = Family::default();
        for p in Protocol::ALL {
            let l = ProtocolLabel {
                protocol: p.as_str().into(),
            };
            m.protocol_conns.push(conns.get_or_create(&l).clone());
            m.protocol_engaged.push(engaged.get_or_create(&l).clone());
        }
        reg.register(
            "connections_by_protocol",
            "Ended connections by what the peer spoke (ssh, http, tls, other, silent)",
            conns,
        );
        reg.register_with_unit(
            "attacker_time_by_protocol",
            "Engaged time of ended connections by what the peer spoke (ssh, http, tls, other, silent)",
            Unit::Seconds,
            engaged,
        );
        for k in ACCEPT_ERROR_KINDS {
            let _ = m.accept_errors.get_or_create(&KindLabel { kind: k.into() });
        }
        reg.register(
            "held_connections",
            "Connections held right now",
            m.held.clone(),
        );
        reg.register(
            "connections_trapped",
            "Connections accepted and held",
            m.trapped.clone(),
        );
        reg.register(
            "connections_ended",
            "Held connections that ended, by why",
            m.ended.clone(),
        );
        reg.register_with_unit(
            "hold_duration",
            "How long ended connections were held",
            Unit::Seconds,
            m.hold_secs.clone(),
        );
        reg.register_with_unit(
            "engaged_duration",
            "How long the attacker's program was stuck in ended connections (until its FIN or RST)",
            Unit::Seconds,
            m.engaged_hist.clone(),
        );
        reg.register_with_unit(
            "attacker_time_wasted",
            "Time attackers' programs were stuck in connections that have ended (engaged: until their FIN or RST)",
            Unit::Seconds,
            m.attacker_secs.clone(),
        );
        reg.register_with_unit(
            "attacker_time_wasted_upper_bound",
            "The part of attacker_time_wasted that is an upper bound (peer found gone, no FIN or RST seen)",
            Unit::Seconds,
            m.attacker_bound_secs.clone(),
        );
        reg.register_with_unit(
            "held_time",
            "Time we held connections that have ended (what they cost us)",
            Unit::Seconds,
            m.held_total_secs.clone(),
        );
        reg.register_with_unit(
            "unread",
            "Bytes peers sent that were never read",
            Unit::Bytes,
            m.bytes_unread.clone(),
        );
        reg.register(
            "peer_close_attempts",
            "Held connections whose peer tried to close (sent FIN)",
            m.close_attempts.clone(),
        );
        reg.register(
            "accept_errors",
            "accept() failures, by kind",
            m.accept_errors.clone(),
        );
        reg.register(
            "packets_dropped",
            "Trapped packets left unanswered because the stateless engine fell behind, by kind: nflog_overrun (times the kernel's log socket overflowed, each losing a batch or more), send_error (replies the device refused)",
            m.dropped.clone(),
        );
        Arc::new(m)
    }
}

impl Observer for ServeMetrics {
    fn trapped(&self, listener: &str) {
        if let Some(k) = self.known.get(listener) {
            k.trapped.inc();
            k.held.inc();
            return;
        }
        let l = ListenerLabel {
            listener: listener.to_string(),
        };
        self.trapped.get_or_create(&l).inc();
        self.held.get_or_create(&l).inc();
    }

    fn resumed(&self, listener: &str) {
        if let Some(k) = self.known.get(listener) {
            k.held.inc();
            return;
        }
        self.held
            .get_or_create(&ListenerLabel {
                listener: listener.to_string(),
            })
            .inc();
    }

    fn peer_close_attempt(&self, listener: &str) {
        if let Some(k) = self.known.get(listener) {
            k.close_attempts.inc();
            return;
        }
        self.close_attempts
            .get_or_create(&ListenerLabel {
                listener: listener.to_string(),
            })
            .inc();
    }

    fn ended(&self, r: &ConnRecord) {
        let reason_i = EndReason::ALL.iter().position(|&e| e == r.end);
        match (self.known.get(&r.listener), reason_i) {
            (Some(k), Some(i)) => {
                k.held.dec();
                k.ended[i].inc();
            }
            _ => {
                self.held
                    .get_or_create(&ListenerLabel {
                        listener: r.listener.clone(),
                    })
                    .dec();
                self.ended
                    .get_or_create(&EndLabels {
                        listener: r.listener.clone(),
                        reason: r.end.as_str().into(),
                    })
                    .inc();
            }
        }
        self.hold_secs.observe(r.held_secs);
        self.held_total_secs.inc_by(r.held_secs.max(0.0));
        self.engaged_hist.observe(r.engaged_secs);
        self.attacker_secs.inc_by(r.engaged_secs.max(0.0));
        if r.engaged_upper_bound {
            self.attacker_bound_secs.inc_by(r.engaged_secs.max(0.0));
        }
        self.bytes_unread.inc_by(r.bytes_received);
        if let Some(i) = Protocol::ALL.iter().position(|&p| p == r.client.protocol) {
            if let (Some(c), Some(e)) = (self.protocol_conns.get(i), self.protocol_engaged.get(i)) {
                c.inc();
                e.inc_by(r.engaged_secs.max(0.0));
            }
        }
    }

    fn dropped(&self, kind: &str, n: u64) {
        self.dropped
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc_by(n);
    }

    fn accept_error(&self, kind: &str) {
        self.accept_errors
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc();
    }
}

/// Content type of the OpenMetrics text exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Scrapers served at once; more wait in the listen backlog.
const MAX_SCRAPERS: usize = 16;
/// A scraper must send its request headers within this time, and a whole
/// connection lasts at most [`CONN_LIMIT`].
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
const CONN_LIMIT: Duration = Duration::from_secs(60);

/// A bound `/metrics` listener. Binding is separate from serving so a bad
/// address is an error at start, before privileges are dropped.
pub struct MetricsServer {
    listener: std::net::TcpListener,
}

impl MetricsServer {
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        Ok(MetricsServer { listener })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves `GET /metrics` from `registry` until `shutdown` completes.
    /// Must run inside a tokio runtime; each scrape encodes on the spot.
    pub async fn run(
        self,
        registry: Arc<Registry>,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let listener = tokio::net::TcpListener::from_std(self.listener)?;
        let slots = Arc::new(Semaphore::new(MAX_SCRAPERS));
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                p = slots.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return Ok(()),
                },
            };
            let (stream, _) = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::debug!(error = %e, "metrics: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let registry = registry.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let registry = registry.clone();
                    async move { Ok::<_, std::convert::Infallible>(answer(&req, &registry)) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
                let _ = tokio::time::timeout(CONN_LIMIT, conn).await;
                drop(permit);
            });
        }
    }
}

fn answer<B>(req: &Request<B>, registry: &Registry) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, ctype: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        r
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => {
            let mut body = String::new();
            match prometheus_client::encoding::text::encode(&mut body, registry) {
                Ok(()) => reply(StatusCode::OK, CONTENT_TYPE, body),
                Err(_) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    "encoding failed\n".into(),
                ),
            }
        }
        "/" => reply(
            StatusCode::OK,
            "text/plain",
            "tarpit: metrics at /metrics\n".into(),
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn observer_updates_series_without_peer_labels() {
        let mut reg = Registry::with_prefix("tarpit");
        let m = ServeMetrics::new(&mut reg, &["127.0.0.1:2222".into()]);
        m.trapped("127.0.0.1:2222");
        m.trapped("127.0.0.1:2222");
        m.ended(&ConnRecord {
            listener: "127.0.0.1:2222".into(),
            peer: "127.0.0.9:4000".parse().unwrap(),
            local: "127.0.0.1:2222".parse().unwrap(),
            original_dst: "127.0.0.1:22".parse().unwrap(),
            start: SystemTime::now(),
            held_secs: 90.0,
            engaged_secs: 12.5,
            engaged_upper_bound: false,
            syn_wait_secs: 0.0,
            bytes_received: 7,
            fin_after_secs: None,
            end: EndReason::PeerReset,
            head: String::new(),
            client: Default::default(),
            estimated: false,
            policy: String::new(),
        });
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &reg).unwrap();
        assert!(
            s.contains("tarpit_held_connections{listener=\"127.0.0.1:2222\"} 1"),
            "{s}"
        );
        assert!(s.contains("tarpit_connections_trapped_total{listener=\"127.0.0.1:2222\"} 2"));
        assert!(s.contains("reason=\"peer_reset\"} 1"));
        assert!(
            s.contains("tarpit_attacker_time_wasted_seconds_total 12.5"),
            "{s}"
        );
        assert!(s.contains("tarpit_held_time_seconds_total 90.0"), "{s}");
        assert!(s.contains("tarpit_attacker_time_wasted_upper_bound_seconds_total 0.0"));
        assert!(s.contains("tarpit_engaged_duration_seconds_bucket{le=\"30.0\"} 1"));
        assert!(s.contains("tarpit_unread_bytes_total 7"));
        assert!(s.contains("tarpit_hold_duration_seconds_bucket{le=\"120.0\"} 1"));
        // One series per protocol from the start; the silent record counted.
        assert!(
            s.contains("tarpit_connections_by_protocol_total{protocol=\"silent\"} 1"),
            "{s}"
        );
        assert!(s.contains("tarpit_connections_by_protocol_total{protocol=\"ssh\"} 0"));
        assert!(
            s.contains("tarpit_attacker_time_by_protocol_seconds_total{protocol=\"silent\"} 12.5")
        );
        assert_eq!(
            s.matches("tarpit_connections_by_protocol_total{").count(),
            5
        );
        assert!(!s.contains("127.0.0.9"));
        // A connection held again (restart, eviction) ends like the others:
        // the gauge follows what is held.
        m.resumed("127.0.0.1:2222");
        m.dropped("nflog_overrun", 1);
        m.dropped("send_error", 3);
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &reg).unwrap();
        assert!(
            s.contains("tarpit_held_connections{listener=\"127.0.0.1:2222\"} 2"),
            "{s}"
        );
        assert!(s.contains("tarpit_connections_trapped_total{listener=\"127.0.0.1:2222\"} 2"));
        assert!(
            s.contains("tarpit_packets_dropped_total{kind=\"send_error\"} 3"),
            "{s}"
        );
        assert!(s.contains("tarpit_packets_dropped_total{kind=\"nflog_overrun\"} 1"));
        // A listener not known at start (e.g. inherited) gets its series too.
        m.trapped("[::1]:2222");
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &reg).unwrap();
        assert!(
            s.contains("tarpit_held_connections{listener=\"[::1]:2222\"} 1"),
            "{s}"
        );
    }
}
