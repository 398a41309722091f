//! `tarpit watch` as a process: the state database and its single-instance
//! lock, the firewall (real or dry run), signals (SIGHUP reloads), the
//! CrowdSec worker and the metrics thread around the watcher's loop.

use crate::firewall::Firewall;
use crate::watcher::{nft, settings, State, StateError, WatchSettings, Watcher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// How to run the watcher, beyond its settings.
#[derive(Debug, Clone, Default)]
pub struct WatchRun {
    /// The config file SIGHUP reads again (`None`: the built-in defaults).
    pub config: Option<PathBuf>,
    /// `--state-db`, applied again over a reloaded config.
    pub state_db: Option<PathBuf>,
    /// Print the nft batches instead of running them.
    pub dry_run: bool,
    /// Keep the state in memory (no file, no lock).
    pub in_memory: bool,
    /// Serve Prometheus metrics here.
    pub metrics: Option<SocketAddr>,
    /// `[report]` / `[[webhook]]`: bans reported (read at start; a reload
    /// keeps them).
    pub report: Option<crate::abuse::Settings>,
}

/// Why `tarpit watch` could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("another `tarpit watch` is running on {} (lock {} is held)", db.display(), lock.display())]
    Locked { db: PathBuf, lock: PathBuf },
    #[error("{}: {source}", path.display())]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("crowdsec: {0}")]
    CrowdSec(String),
    #[error("report: {0}")]
    Report(String),
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Runs the watcher until SIGTERM/SIGINT.
pub fn run(settings: WatchSettings, how: &WatchRun) -> Result<(), WatchError> {
    let state = if how.in_memory {
        State::open_in_memory()?
    } else {
        State::open(&settings.state_db)?
    };
    // Two watchers on one database would both read each log: hits counted
    // twice. The lock lives as long as this process.
    let _lock = if how.in_memory {
        None
    } else {
        Some(lock(&settings.state_db)?)
    };
    let cfg = nft::nft_config(&settings);
    let fw = if how.dry_run {
        Firewall::dry_run(cfg, Box::new(std::io::stdout()))
    } else {
        Firewall::new(cfg)
    };
    let own = crate::sys::local_addresses().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot list this machine's addresses; only loopback is protected");
        Vec::new()
    });
    log_jails(&settings);
    let stop = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    spawn_signal_thread(stop.clone(), reload.clone());
    let mut crowdsec = None;
    if settings.crowdsec.is_some() {
        match crate::watcher::crowdsec::worker::db_path(&state) {
            Some(db) => {
                let c = crate::watcher::crowdsec::start(&settings, &db, stop.clone());
                crowdsec = Some(c.map_err(WatchError::CrowdSec)?);
            }
            None => tracing::warn!(
                "crowdsec: off in a dry run without --state-db (decisions live in the state database)"
            ),
        }
    }
    // Reports: the outbox is the state database, filled by triggers on
    // its bans; without [report] the triggers go.
    let db = crate::watcher::crowdsec::worker::db_path(&state);
    let mut report = None;
    match (&how.report, &db) {
        (Some(r), Some(db)) => {
            let (m, t) = crate::abuse::start_watch(r.clone(), db, stop.clone())
                .map_err(WatchError::Report)?;
            report = Some((m, t));
        }
        (Some(_), None) => tracing::warn!(
            "report: off in a dry run without --state-db (the outbox lives in the state database)"
        ),
        (None, Some(db)) => {
            if let Err(e) = crate::abuse::outbox::disable_ban_triggers(db) {
                tracing::warn!(error = %e, "report: cannot remove the ban triggers");
            }
        }
        (None, None) => {}
    }
    let mut w = Watcher::new(settings, state, fw, &own).refresh_own_addresses();
    let (mut cs_metrics, mut cs_thread) = (None, None);
    if let Some((bridge, m, t)) = crowdsec {
        w = w.with_external(Box::new(bridge));
        cs_metrics = Some(m);
        cs_thread = Some(t);
    }
    let metrics_thread = match how.metrics {
        Some(addr) => Some(
            serve_metrics(
                addr,
                w.metrics(),
                cs_metrics,
                report.as_ref().map(|r| r.0.clone()),
                stop.clone(),
            )
            .map_err(|source| WatchError::Metrics { addr, source })?,
        ),
        None => None,
    };
    // SIGHUP (`systemctl reload tarpit-watch`): the same config file, and
    // the same --state-db, read again.
    let mut load = || {
        let mut s = settings::load(how.config.as_deref()).map_err(|e| e.to_string())?;
        if let Some(p) = &how.state_db {
            s.state_db = p.clone();
        }
        log_jails(&s);
        Ok(s)
    };
    w.run_reloading(&stop, &reload, &mut load);
    if let Some(t) = metrics_thread {
        let _ = t.join();
    }
    // The crowdsec thread is not joined: a request to a hung LAPI may take
    // its full timeout, and everything it writes is in committed
    // transactions already.
    drop(cs_thread);
    drop(report);
    Ok(())
}

fn log_jails(s: &WatchSettings) {
    for j in &s.jails {
        tracing::info!(jail = %j.name, logpath = ?j.logpaths, maxretry = j.rules.maxretry,
            findtime = ?j.rules.findtime, bantime = ?j.rules.bantime, "jail");
    }
}

/// Takes `<state_db>.watch.lock` exclusively (flock), or says who has it.
fn lock(db: &Path) -> Result<std::fs::File, WatchError> {
    let mut p = db.as_os_str().to_owned();
    p.push(".watch.lock");
    let p = PathBuf::from(p);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p);
    let f = match f {
        Ok(f) => f,
        Err(source) => return Err(WatchError::Lock { path: p, source }),
    };
    match crate::sys::try_lock_exclusive(&f) {
        Ok(true) => Ok(f),
        Ok(false) => Err(WatchError::Locked {
            db: db.to_path_buf(),
            lock: p,
        }),
        Err(source) => Err(WatchError::Lock { path: p, source }),
    }
}

/// Sets `stop` on SIGTERM or SIGINT, so the loop finishes its transaction;
/// sets `reload` on SIGHUP.
fn spawn_signal_thread(stop: Arc<AtomicBool>, reload: Arc<AtomicBool>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::warn!(error = %e, "no signal handling; SIGTERM ends the watcher abruptly");
            return;
        }
    };
    use tokio::signal::unix::{signal, SignalKind};
    // Register before returning, so a signal right after start is caught.
    let handlers = rt.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
            signal(SignalKind::hangup())?,
        ))
    });
    let (mut term, mut int, mut hup) = match handlers {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = %e, "no signal handling; SIGTERM ends the watcher abruptly");
            return;
        }
    };
    std::thread::spawn(move || {
        rt.block_on(async {
            loop {
                tokio::select! {
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                    _ = hup.recv() => {
                        tracing::info!("SIGHUP: reloading the configuration");
                        reload.store(true, Ordering::Relaxed);
                    }
                }
            }
        });
        tracing::info!("signal received; stopping");
        stop.store(true, Ordering::Relaxed);
    });
}

/// Serves the watcher's metrics from a small runtime on its own thread (the
/// watcher itself is a plain loop) until `stop` is set.
fn serve_metrics(
    addr: SocketAddr,
    metrics: Arc<crate::watcher::metrics::WatchMetrics>,
    crowdsec: Option<Arc<crate::watcher::crowdsec::CrowdSecMetrics>>,
    report: Option<Arc<crate::abuse::ReportMetrics>>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let server = crate::stats::metrics::MetricsServer::bind(addr)?;
    tracing::info!(address = %server.local_addr()?, "serving metrics");
    let mut reg = prometheus_client::registry::Registry::with_prefix("tarpit");
    metrics.register(&mut reg);
    if let Some(c) = crowdsec {
        c.register(&mut reg);
    }
    if let Some(r) = report {
        r.register(&mut reg);
    }
    let reg = Arc::new(reg);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(std::thread::spawn(move || {
        rt.block_on(async move {
            let stopped = async move {
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            };
            if let Err(e) = server.run(reg, stopped).await {
                tracing::error!(error = %e, "metrics server failed");
            }
        })
    }))
}
