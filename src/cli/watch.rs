//! `tarpit watch`: follow logs and trap repeat offenders.

use super::{fail, watch_settings, Cli};
use crate::firewall::Firewall;
use crate::watcher::{nft, State, Watcher};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Debug, Args, Default, Clone)]
pub struct WatchArgs {
    /// Print the nft batches instead of running them (needs no root). The
    /// state is kept in memory unless --state-db is given.
    #[arg(long)]
    pub dry_run: bool,
    /// SQLite state file (default: `[watch] state_db`, /var/lib/tarpit/state.db).
    #[arg(long, value_name = "FILE")]
    pub state_db: Option<PathBuf>,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9465); off by default.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<std::net::SocketAddr>,
}

pub fn run(cli: &Cli, a: &WatchArgs) -> ExitCode {
    let settings = match watch_settings(cli, a.state_db.clone()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let state = if a.dry_run && a.state_db.is_none() {
        State::open_in_memory()
    } else {
        State::open(&settings.state_db)
    };
    let state = match state {
        Ok(s) => s,
        Err(e) => return fail(1, e),
    };
    // Two watchers on one database would both read each log: hits counted
    // twice. The lock lives as long as this process.
    let _lock = if a.dry_run && a.state_db.is_none() {
        None
    } else {
        match lock(&settings.state_db) {
            Ok(l) => Some(l),
            Err(e) => return fail(1, e),
        }
    };
    let cfg = nft::nft_config(&settings);
    let fw = if a.dry_run {
        Firewall::dry_run(cfg, Box::new(std::io::stdout()))
    } else {
        Firewall::new(cfg)
    };
    let own = crate::sys::local_addresses().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot list this machine's addresses; only loopback is protected");
        Vec::new()
    });
    for j in &settings.jails {
        tracing::info!(jail = %j.name, logpath = ?j.logpaths, maxretry = j.rules.maxretry,
            findtime = ?j.rules.findtime, bantime = ?j.rules.bantime, "jail");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    spawn_signal_thread(stop.clone(), reload.clone());
    let mut crowdsec = None;
    if settings.crowdsec.is_some() {
        match crate::watcher::crowdsec::worker::db_path(&state) {
            Some(db) => match crate::watcher::crowdsec::start(&settings, &db, stop.clone()) {
                Ok(c) => crowdsec = Some(c),
                Err(e) => return fail(1, format!("crowdsec: {e}")),
            },
            None => tracing::warn!(
                "crowdsec: off in a dry run without --state-db (decisions live in the state database)"
            ),
        }
    }
    let mut w = Watcher::new(settings, state, fw, &own).refresh_own_addresses();
    let mut cs_metrics = None;
    let mut cs_thread = None;
    if let Some((bridge, m, t)) = crowdsec {
        w = w.with_external(Box::new(bridge));
        cs_metrics = Some(m);
        cs_thread = Some(t);
    }
    let metrics_thread = match a.metrics {
        Some(addr) => match serve_metrics(addr, w.metrics(), cs_metrics, stop.clone()) {
            Ok(t) => Some(t),
            Err(e) => return fail(1, format!("cannot serve metrics on {addr}: {e}")),
        },
        None => None,
    };
    // SIGHUP (`systemctl reload tarpit-watch`): the same config file, and
    // the same --state-db, read again.
    let mut load = || {
        let mut s =
            crate::watcher::settings::load(cli.config.as_deref()).map_err(|e| e.to_string())?;
        if let Some(p) = &a.state_db {
            s.state_db = p.clone();
        }
        for j in &s.jails {
            tracing::info!(jail = %j.name, logpath = ?j.logpaths, maxretry = j.rules.maxretry,
                findtime = ?j.rules.findtime, bantime = ?j.rules.bantime, "jail");
        }
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
    ExitCode::SUCCESS
}

/// Takes `<state_db>.watch.lock` exclusively (flock), or says who has it.
fn lock(db: &std::path::Path) -> Result<std::fs::File, String> {
    let mut p = db.as_os_str().to_owned();
    p.push(".watch.lock");
    let p = PathBuf::from(p);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(|e| format!("{}: {e}", p.display()))?;
    match crate::sys::try_lock_exclusive(&f) {
        Ok(true) => Ok(f),
        Ok(false) => Err(format!(
            "another `tarpit watch` is running on {} (lock {} is held)",
            db.display(),
            p.display()
        )),
        Err(e) => Err(format!("{}: {e}", p.display())),
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
    addr: std::net::SocketAddr,
    metrics: Arc<crate::watcher::metrics::WatchMetrics>,
    crowdsec: Option<Arc<crate::watcher::crowdsec::CrowdSecMetrics>>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let server = crate::stats::metrics::MetricsServer::bind(addr)?;
    tracing::info!(address = %server.local_addr()?, "serving metrics");
    let mut reg = prometheus_client::registry::Registry::with_prefix("tarpit");
    metrics.register(&mut reg);
    if let Some(c) = crowdsec {
        c.register(&mut reg);
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
