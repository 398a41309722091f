//! CrowdSec: `tarpit watch` as a bouncer (pulls `tarpit` decisions from a
//! Local API and traps them) and as a machine (pushes every ban it makes
//! as an alert carrying a `tarpit` decision), so a fleet traps together.
//!
//! * [`decision`] — pure: stream parsing, which decisions we trap and how;
//! * [`duration`] — Go duration text;
//! * [`client`] — the LAPI HTTP client (bounded answers, re-login on 401);
//! * [`store`] — decisions and the push queue in the state database;
//! * [`worker`] — the LAPI thread: pulls, pushes, back-off;
//! * [`bridge`] — the watcher's hook: database changes → firewall;
//! * [`settings`] — `[watch.crowdsec]`.

pub mod bridge;
pub mod client;
pub mod decision;
pub mod duration;
pub mod metrics;
pub mod settings;
pub mod store;
pub mod worker;

pub use bridge::Bridge;
pub use metrics::CrowdSecMetrics;
pub use settings::Settings;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Starts the LAPI thread for `[watch.crowdsec]` on the state database at
/// `db`; returns the watcher's hook, the metrics and the thread.
pub fn start(
    watch: &crate::watcher::WatchSettings,
    db: &Path,
    stop: Arc<AtomicBool>,
) -> Result<(Bridge, Arc<CrowdSecMetrics>, std::thread::JoinHandle<()>), String> {
    let cs = watch
        .crowdsec
        .clone()
        .ok_or_else(|| "no [watch.crowdsec] configured".to_string())?;
    let metrics = Arc::new(CrowdSecMetrics::default());
    let (tx, rx) = std::sync::mpsc::channel();
    tracing::info!(
        url = %cs.url,
        bouncer = cs.api_key.is_some(),
        push = cs.push,
        types = ?cs.types,
        every = ?cs.update_frequency,
        "crowdsec: starting"
    );
    let worker = worker::Worker::new(
        cs,
        db,
        watch.ipv6_prefix,
        watch.ignoreip.clone(),
        metrics.clone(),
        tx,
    )
    .map_err(|e| format!("state database {}: {e}", db.display()))?;
    let conn = store::open(db).map_err(|e| format!("state database {}: {e}", db.display()))?;
    let t = std::thread::Builder::new()
        .name("crowdsec".into())
        .spawn(move || worker.run(stop))
        .map_err(|e| format!("cannot start the crowdsec thread: {e}"))?;
    Ok((Bridge::new(conn, rx), metrics, t))
}

/// What `tarpit check-config` says about the LAPI credentials: `Ok(lines)`
/// when accepted or LAPI is unreachable (not tested then), `Err` when LAPI
/// refused them.
pub fn check_credentials(cs: &Settings) -> Result<Vec<String>, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let mut c = client::Client::new(
        cs.endpoint.clone(),
        cs.api_key.as_ref().map(|k| k.0.clone()),
        match (&cs.machine_id, &cs.password) {
            (Some(id), Some(pw)) => Some(client::Machine {
                id: id.clone(),
                password: pw.0.clone(),
            }),
            _ => None,
        },
    );
    c.timeout = std::time::Duration::from_secs(5);
    let mut out = Vec::new();
    let mut refused = Vec::new();
    let mut tests: Vec<(&str, Result<(), client::LapiError>)> = Vec::new();
    if cs.api_key.is_some() {
        tests.push(("bouncer key", rt.block_on(c.check_key())));
    }
    if cs.machine_id.is_some() {
        tests.push(("machine login", rt.block_on(c.login())));
    }
    for (what, r) in tests {
        match r {
            Ok(()) => out.push(format!("crowdsec: {what} accepted by LAPI at {}", cs.url)),
            Err(e @ (client::LapiError::Unreachable(..) | client::LapiError::Timeout(_))) => {
                out.push(format!("crowdsec: {what} not tested: {e}"))
            }
            Err(e) => refused.push(format!("crowdsec: {what}: {e}")),
        }
    }
    if refused.is_empty() {
        Ok(out)
    } else {
        Err(refused.join("; "))
    }
}

/// What `tarpit unban` may release: the targets no CrowdSec decision holds
/// (`release`), and those one still does (`still`, with the decision's own
/// remaining time, so a longer ban of ours no longer counts), with a line
/// per holding decision saying how to lift it in CrowdSec.
#[derive(Debug, Default)]
pub struct UnbanSplit {
    pub release: Vec<crate::firewall::Target>,
    pub still: Vec<crate::firewall::Ban>,
    pub notes: Vec<String>,
}

/// Splits `targets` by the decisions stored in the state database at `db`
/// (none readable: everything is released). `ip` is the address the
/// operator typed, matched against stored ranges.
pub fn unban_split(
    db: &Path,
    targets: &[crate::firewall::Target],
    ip: Option<std::net::IpAddr>,
    now: i64,
) -> UnbanSplit {
    use crate::firewall::Net;
    use std::time::Duration;
    let held = store::open(db)
        .ok()
        .and_then(|c| store::list(&c, now).ok())
        .unwrap_or_default();
    let in_range = |trap: &str| match (trap.parse::<Net>(), ip) {
        (Ok(n), Some(ip)) => trap.contains('/') && n.contains(&Net::host(ip)),
        _ => false,
    };
    let mut out = UnbanSplit::default();
    for t in targets {
        let ds: Vec<_> = held
            .iter()
            .filter(|d| d.trap == t.to_string() || in_range(&d.trap))
            .collect();
        if ds.is_empty() {
            out.release.push(*t);
            continue;
        }
        let until = ds.iter().map(|d| d.expires_at).max().unwrap_or(now);
        out.still.push(crate::firewall::Ban {
            target: *t,
            timeout: Duration::from_millis((until - now).max(1) as u64),
        });
        for d in ds {
            let left = Duration::from_secs(((d.expires_at - now).max(0) / 1000) as u64);
            out.notes.push(format!(
                "{t} is still trapped by CrowdSec decision {} ({}{}, {}, {} left); lift it in CrowdSec: cscli decisions delete --id {}",
                d.id,
                d.origin.escape_debug(),
                if d.own { ", pushed by this host" } else { "" },
                d.scenario.escape_debug(),
                humantime::format_duration(left),
                d.id
            ));
        }
    }
    out
}
