//! The statistics around an engine: the control socket, the metrics and
//! the history, bound or opened before privileges are dropped and run
//! beside the engine until it stops.

use crate::config::StatsConfig;
use crate::control::{self, Access, ControlError, ControlServer};
use crate::engine::socket::Handle;
use crate::engine::{self, Commands, Extras, Observer};
use crate::geoip::GeoIp;
use crate::stats::history::{History, HistoryError, HistoryOptions};
use crate::stats::live;
use crate::stats::metrics::{HistoryMetrics, MetricsServer, ServeMetrics};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Why the statistics could not be set up (the daemon does not start).
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("history database {}: cannot create {}: {source} (pass --history PATH or --history off)", path.display(), dir.display())]
    HistoryDir {
        path: PathBuf,
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error(transparent)]
    GeoIp(#[from] crate::geoip::GeoIpError),
    #[error("report: {0}")]
    Report(String),
}

/// Everything bound or opened before privileges are dropped, so a mistake is
/// an error at start rather than later.
pub struct Prepared {
    control: Option<ControlServer>,
    metrics: Option<MetricsServer>,
    registry: Registry,
    serve_metrics: Arc<ServeMetrics>,
    history: Option<Arc<History>>,
    reports: Option<Arc<crate::abuse::ServeReports>>,
}

/// Binds the control socket and the metrics port, opens the history.
/// `listeners` are the labels of the bound listeners (metric series).
pub fn prepare(o: &StatsConfig, listeners: &[String]) -> Result<Prepared, StatsError> {
    let control = match &o.control {
        Some(p) => match ControlServer::bind(p) {
            Ok(c) => Some(c),
            Err(e) if !o.control_explicit => {
                tracing::warn!(error = %e, "running without a control socket (`tarpit stats` will not work); pass --control PATH");
                None
            }
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    let metrics = match o.metrics {
        Some(addr) => {
            Some(MetricsServer::bind(addr).map_err(|source| StatsError::Metrics { addr, source })?)
        }
        None => None,
    };
    let mut registry = Registry::with_prefix("tarpit");
    let serve_metrics = ServeMetrics::new(&mut registry, listeners);
    let hm = HistoryMetrics::default();
    hm.register(&mut registry);
    // A GeoIP file that cannot be used stops the start, naming the file,
    // even where a missing default history only warns.
    let geo = if o.geoip.is_empty() {
        None
    } else if o.history.is_none() {
        tracing::warn!(
            "`geoip` is set but the history is off; GeoIP is only used for history rows"
        );
        None
    } else {
        Some(GeoIp::open(&o.geoip)?)
    };
    if o.country_metrics && geo.is_some() {
        hm.register_country(&mut registry);
    }
    let history = match &o.history {
        Some(p) => match open_history(p, o, hm, geo) {
            Ok(h) => {
                tracing::info!(path = %p.display(), days = o.history_days, "history enabled");
                Some(h)
            }
            // The built-in default path is a convenience: an unprivileged
            // run (`cargo run -- serve`) still traps, like the control socket.
            Err(e) if o.history_default => {
                tracing::warn!(error = %e, "running without history; pass --history PATH");
                None
            }
            Err(e) => return Err(e),
        },
        None => None,
    };
    // Reports: the outbox opened now, before privileges are dropped.
    let reports = match &o.report {
        None => None,
        Some(r) => {
            let db = crate::abuse::serve_outbox(r, o.history.as_deref()).ok_or_else(|| {
                StatsError::Report(
                    "the history is off: set [report] outbox to a database file for the reports"
                        .into(),
                )
            })?;
            let rep =
                crate::abuse::ServeReports::open(r.clone(), &db).map_err(StatsError::Report)?;
            rep.metrics.register(&mut registry);
            Some(rep)
        }
    };
    Ok(Prepared {
        control,
        metrics,
        registry,
        serve_metrics,
        history,
        reports,
    })
}

fn open_history(
    p: &Path,
    o: &StatsConfig,
    hm: HistoryMetrics,
    geo: Option<GeoIp>,
) -> Result<Arc<History>, StatsError> {
    if o.history_default {
        if let Some(dir) = p.parent().filter(|d| !d.exists()) {
            std::fs::create_dir_all(dir).map_err(|source| StatsError::HistoryDir {
                path: p.to_path_buf(),
                dir: dir.to_path_buf(),
                source,
            })?;
        }
    }
    let mut ho = HistoryOptions::new(p.to_path_buf(), o.history_days);
    ho.country_metrics = o.country_metrics;
    ho.max_rows = o.history_max_rows;
    Ok(History::open(ho, hm, geo)?)
}

/// The statistics tasks running beside the engine.
pub struct Running {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    history: Option<Arc<History>>,
    reports: Option<Arc<crate::abuse::ServeReports>>,
}

impl Prepared {
    /// Starts the history writer and report threads. Call after the privilege drop:
    /// it is the daemon's first thread besides the main one, and no thread
    /// may run with the rights the process gives up.
    pub fn start_threads(&self) -> Result<(), StatsError> {
        if let Some(h) = &self.history {
            h.start_writer()?;
        }
        if let Some(r) = &self.reports {
            r.start_thread().map_err(StatsError::Report)?;
        }
        Ok(())
    }

    /// Observers to hand to the engine.
    pub fn observers(&self) -> Vec<Arc<dyn Observer>> {
        let mut v: Vec<Arc<dyn Observer>> = vec![self.serve_metrics.clone()];
        if let Some(h) = &self.history {
            v.push(h.clone());
        }
        if let Some(r) = &self.reports {
            v.push(r.clone());
        }
        v
    }

    /// Starts serving the control socket and the metrics. Call inside the
    /// serve runtime.
    pub fn start(self, handle: Handle) -> Running {
        let takeover = self
            .control
            .as_ref()
            .map(|c| super::takeover::handler(handle.clone(), c.path().to_path_buf()));
        self.start_with(handle, None, takeover)
    }

    /// [`start`](Self::start) for any engine: `snapshot` and `totals` from
    /// its handle with its `extras`, and a takeover handler if it supports
    /// one (the stateless engine holds no sockets to hand over).
    pub fn start_with<C: Commands>(
        self,
        handle: engine::Handle<C>,
        extras: Option<Extras<C>>,
        takeover: Option<Arc<dyn control::Handler>>,
    ) -> Running {
        let (stop, stop_rx) = watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        let mut tasks = Vec::new();
        if let Some(mut c) = self.control {
            c.register(
                live::SNAPSHOT_CMD,
                Access::Read,
                engine::snapshot_handler(handle.clone(), extras.clone()),
            );
            c.register(
                live::TOTALS_CMD,
                Access::Read,
                engine::totals_handler(handle, extras),
            );
            if let Some(t) = takeover {
                c.register(super::takeover::CMD, Access::Control, t);
            }
            tracing::info!(path = %c.path().display(), "control socket ready");
            let until = stopped();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = c.run(until).await {
                    tracing::error!(error = %e, "control socket failed");
                }
            }));
        }
        if let Some(m) = self.metrics {
            if let Ok(a) = m.local_addr() {
                tracing::info!(address = %a, "metrics at /metrics");
            }
            let registry = Arc::new(self.registry);
            let until = stopped();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = m.run(registry, until).await {
                    tracing::error!(error = %e, "metrics server failed");
                }
            }));
        }
        Running {
            stop,
            tasks,
            history: self.history,
            reports: self.reports,
        }
    }
}

impl Running {
    /// Once the engine is done: commits the last history rows (the shutdown
    /// records included) and stops the control socket (removing its file)
    /// and the metrics server.
    pub async fn finish(self) {
        if let Some(h) = self.history {
            let _ = tokio::task::spawn_blocking(move || h.close(Duration::from_secs(30))).await;
        }
        if let Some(r) = self.reports {
            let _ = tokio::task::spawn_blocking(move || r.close(Duration::from_secs(5))).await;
        }
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
