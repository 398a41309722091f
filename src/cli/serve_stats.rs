//! The statistics side of `tarpit serve`: its flags (`--control`,
//! `--metrics`, `--history`, `--history-days`), their merge with `[serve]`,
//! and the wiring of the control socket, metrics and history around the
//! engine. Kept apart from `serve.rs` so the engine's glue stays small.

use crate::config::{ConfigError, ServeSection, Source};
use crate::control::{self, ControlServer};
use crate::engine::socket::Handle;
use crate::engine::Observer;
use crate::geoip::GeoIp;
use crate::stats::history::{self, History, HistoryOptions};
use crate::stats::live;
use crate::stats::metrics::{HistoryMetrics, MetricsServer, ServeMetrics};
use clap::Args;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The word that turns a path-valued feature off.
const OFF: &str = "off";
/// Default retention of the history, days.
pub const DEFAULT_HISTORY_DAYS: u32 = 90;

#[derive(Debug, Args, Default, Clone)]
pub struct StatsFlags {
    /// Control socket for `tarpit stats` (unix socket, mode 0660), or `off`.
    /// Default: /run/tarpit/control.sock.
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (off by default).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<SocketAddr>,
    /// History database (SQLite), or `off`. Default: /var/lib/tarpit/history.db.
    #[arg(long, value_name = "PATH")]
    pub history: Option<PathBuf>,
    /// Days of history kept (default 90).
    #[arg(long, value_name = "DAYS")]
    pub history_days: Option<u32>,
}

/// The resolved statistics settings.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsOptions {
    /// `None` = no control socket.
    pub control: Option<PathBuf>,
    /// The control path was chosen by the user (a failure to bind it is
    /// fatal), not the built-in default (a failure only warns, so a second
    /// instance or an unprivileged run still traps).
    pub control_explicit: bool,
    pub metrics: Option<SocketAddr>,
    /// `None` = no history.
    pub history: Option<PathBuf>,
    /// The history path is the built-in default, whose directory is created
    /// when missing (an explicit path's directory must exist).
    pub history_default: bool,
    pub history_days: u32,
    /// `[serve] geoip`: MaxMind DB files for the history's rows.
    pub geoip: Vec<PathBuf>,
    /// `[serve] metrics_country`.
    pub country_metrics: bool,
}

/// Flags over `[serve]` over defaults.
pub fn resolve(
    f: &StatsFlags,
    file: Option<(&ServeSection, &Source)>,
) -> Result<StatsOptions, ConfigError> {
    let section = file.map(|(s, _)| s);
    let chosen = f
        .control
        .clone()
        .or_else(|| section.and_then(|s| s.control.clone()).map(PathBuf::from));
    let control_explicit = chosen.is_some();
    let control = chosen.unwrap_or_else(|| PathBuf::from(control::DEFAULT_PATH));

    let mut metrics = f.metrics;
    if metrics.is_none() {
        if let (Some(v), Some((_, src))) = (section.and_then(|s| s.metrics.as_ref()), file) {
            let addr = v.get_ref().trim().parse::<SocketAddr>().map_err(|_| {
                src.error_at(
                    v.span(),
                    "serve.metrics",
                    format!(
                        "invalid address {:?}; use e.g. \"127.0.0.1:9464\"",
                        v.get_ref()
                    ),
                )
            })?;
            metrics = Some(addr);
        }
    }

    let chosen = f
        .history
        .clone()
        .or_else(|| section.and_then(|s| s.history.clone()).map(PathBuf::from));
    let history_default = chosen.is_none();
    let history = chosen.unwrap_or_else(|| PathBuf::from(history::DEFAULT_PATH));
    let history_days = f
        .history_days
        .or(section.and_then(|s| s.history_days))
        .unwrap_or(DEFAULT_HISTORY_DAYS);
    if history_days == 0 {
        let (file, line) = match file {
            Some((_, src)) if f.history_days.is_none() => (src.path.clone(), None),
            _ => (PathBuf::from("command line"), None),
        };
        return Err(ConfigError {
            file,
            line,
            key: Some("serve.history_days".into()),
            message: "must be at least 1 (use `history = \"off\"` to keep no history)".into(),
        });
    }
    let mut geoip = Vec::new();
    if let (Some(list), Some((_, src))) = (section.and_then(|s| s.geoip.as_ref()), file) {
        for p in list {
            if p.get_ref().trim().is_empty() {
                return Err(src.error_at(p.span(), "serve.geoip", "empty path"));
            }
            geoip.push(PathBuf::from(p.get_ref()));
        }
    }
    let country_metrics = section.and_then(|s| s.metrics_country).unwrap_or(false);
    if country_metrics && geoip.is_empty() {
        if let Some((_, src)) = file {
            return Err(ConfigError {
                file: src.path.clone(),
                line: None,
                key: Some("serve.metrics_country".into()),
                message: "needs `geoip` (the country comes from its files)".into(),
            });
        }
    }
    Ok(StatsOptions {
        geoip,
        country_metrics,
        control: (control.as_os_str() != OFF).then_some(control),
        control_explicit,
        metrics,
        history: (history.as_os_str() != OFF).then_some(history),
        history_default,
        history_days,
    })
}

/// Everything bound or opened before privileges are dropped, so a mistake is
/// an error at start rather than later.
pub struct Prepared {
    control: Option<ControlServer>,
    metrics: Option<MetricsServer>,
    registry: Registry,
    serve_metrics: Arc<ServeMetrics>,
    history: Option<Arc<History>>,
}

/// Binds the control socket and the metrics port, opens the history.
/// `listeners` are the labels of the bound listeners (metric series).
pub fn prepare(o: &StatsOptions, listeners: &[String]) -> Result<Prepared, String> {
    let control = match &o.control {
        Some(p) => match ControlServer::bind(p) {
            Ok(c) => Some(c),
            Err(e) if !o.control_explicit => {
                tracing::warn!(error = %e, "running without a control socket (`tarpit stats` will not work); pass --control PATH");
                None
            }
            Err(e) => return Err(e.to_string()),
        },
        None => None,
    };
    let metrics = match o.metrics {
        Some(a) => {
            Some(MetricsServer::bind(a).map_err(|e| format!("cannot serve metrics on {a}: {e}"))?)
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
        Some(GeoIp::open(&o.geoip).map_err(|e| e.to_string())?)
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
    Ok(Prepared {
        control,
        metrics,
        registry,
        serve_metrics,
        history,
    })
}

fn open_history(
    p: &std::path::Path,
    o: &StatsOptions,
    hm: HistoryMetrics,
    geo: Option<GeoIp>,
) -> Result<std::sync::Arc<History>, String> {
    if o.history_default {
        if let Some(dir) = p.parent().filter(|d| !d.exists()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                format!(
                    "history database {}: cannot create {}: {e} (pass --history PATH or --history off)",
                    p.display(),
                    dir.display()
                )
            })?;
        }
    }
    let mut ho = HistoryOptions::new(p.to_path_buf(), o.history_days);
    ho.country_metrics = o.country_metrics;
    History::start_with_geo(ho, hm, geo).map_err(|e| e.to_string())
}

/// The statistics tasks running beside the engine.
pub struct Running {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    history: Option<Arc<History>>,
}

impl Prepared {
    /// Observers to hand to the engine.
    pub fn observers(&self) -> Vec<Arc<dyn Observer>> {
        let mut v: Vec<Arc<dyn Observer>> = vec![self.serve_metrics.clone()];
        if let Some(h) = &self.history {
            v.push(h.clone());
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
        self.start_with(crate::engine::snapshot_handler(handle), takeover)
    }

    /// [`start`](Self::start) for an engine that brings its own snapshot
    /// handler and may not support takeover (the stateless engine holds no
    /// sockets to hand over).
    pub fn start_with(
        self,
        snapshot: Arc<dyn control::Handler>,
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
            c.register(live::SNAPSHOT_CMD, snapshot);
            if let Some(t) = takeover {
                c.register_privileged(super::takeover::CMD, t);
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
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn src(t: &str) -> Source {
        Source::new("t.toml", t)
    }

    #[test]
    fn defaults_and_off() {
        let o = resolve(&StatsFlags::default(), None).unwrap();
        assert_eq!(o.control, Some(PathBuf::from(control::DEFAULT_PATH)));
        assert!(!o.control_explicit);
        assert_eq!(o.metrics, None);
        assert_eq!(o.history, Some(PathBuf::from(history::DEFAULT_PATH)));
        assert!(o.history_default);
        assert_eq!(o.history_days, 90);
        let f = StatsFlags {
            control: Some("off".into()),
            history: Some("off".into()),
            ..Default::default()
        };
        let o = resolve(&f, None).unwrap();
        assert_eq!((o.control, o.history), (None, None));
    }

    #[test]
    fn file_keys_and_flag_precedence() {
        let s = src("[serve]\ncontrol = \"/tmp/c.sock\"\nmetrics = \"127.0.0.1:9464\"\nhistory = \"/tmp/h.db\"\nhistory_days = 7\n");
        let cfg = config::parse(&s).unwrap();
        let sec = cfg.serve.as_ref().unwrap();
        let o = resolve(&StatsFlags::default(), Some((sec, &s))).unwrap();
        assert_eq!(o.control, Some(PathBuf::from("/tmp/c.sock")));
        assert!(o.control_explicit);
        assert_eq!(o.metrics, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(o.history, Some(PathBuf::from("/tmp/h.db")));
        assert!(!o.history_default);
        assert_eq!(o.history_days, 7);
        let f = StatsFlags {
            history_days: Some(3),
            metrics: Some("127.0.0.1:1".parse().unwrap()),
            ..Default::default()
        };
        let o = resolve(&f, Some((sec, &s))).unwrap();
        assert_eq!(o.history_days, 3);
        assert_eq!(o.metrics, Some("127.0.0.1:1".parse().unwrap()));
    }

    #[test]
    fn bad_metrics_address_names_line_and_key() {
        let s = src("[serve]\n\nmetrics = \"localhost\"\n");
        let cfg = config::parse(&s).unwrap();
        let e = resolve(
            &StatsFlags::default(),
            Some((cfg.serve.as_ref().unwrap(), &s)),
        )
        .unwrap_err();
        assert_eq!(e.line, Some(3));
        assert_eq!(e.key.as_deref(), Some("serve.metrics"));
    }

    #[test]
    fn zero_history_days_is_rejected() {
        let f = StatsFlags {
            history_days: Some(0),
            ..Default::default()
        };
        assert!(resolve(&f, None).is_err());
    }
}
