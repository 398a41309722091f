//! The processes around the engines and the watcher: what `tarpit serve`
//! and `tarpit watch` do between a validated configuration and their exit.
//!
//! * [`serve`] — open-file limit, socket activation, takeover from a
//!   running server ([`takeover`]) and re-exec on SIGUSR2, binding, the
//!   statistics around the engine ([`stats`]), the privilege drop, the
//!   runtime, signals and systemd notifications; [`socket`] and
//!   [`stateless`] hold each engine's part;
//! * [`watch`] — the watcher's lock, signals and metrics thread.
//!
//! Nothing here parses arguments or prints: errors are returned typed
//! ([`Error`]), and the command line decides how they look and which exit
//! code they get.

mod policy_rules;
pub mod socket;
pub mod stateless;
pub mod stats;
pub mod takeover;
pub mod watch;

use crate::config::{EngineConfig, Privileges, ServeConfig};
use std::net::SocketAddr;

pub use stats::StatsError;
pub use takeover::TakeoverError;
pub use watch::{WatchError, WatchRun};

/// Why `tarpit serve` could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configured address cannot be bound (in use, not local, ...).
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("--takeover needs the control socket (not --control off)")]
    TakeoverWithoutControl,
    /// An explicit stateless key file that cannot be used.
    #[error(transparent)]
    KeyFile(#[from] crate::engine::stateless::keyfile::KeyFileError),
    #[error(transparent)]
    Activation(#[from] crate::systemd::ActivationError),
    #[error(transparent)]
    Takeover(#[from] TakeoverError),
    #[error("takeover: cannot confirm: {0}")]
    Confirm(std::io::Error),
    #[error(transparent)]
    Stats(#[from] StatsError),
    #[error("cannot drop privileges: {0}")]
    Privileges(std::io::Error),
    #[error("cannot start runtime: {0}")]
    Runtime(std::io::Error),
    /// The engine failed to start or to run.
    #[error(transparent)]
    Engine(std::io::Error),
    /// A policy's nftables rules (window zero, syn_delay) cannot be written.
    #[error("cannot install the policy rules (window = \"zero\" / syn_delay need nftables and root): {0}")]
    PolicyRules(crate::firewall::FwError),
}

impl Error {
    /// A mistake in what the user asked for (as opposed to a failure of the
    /// system): the command line reports it like a configuration error.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Error::Listen { .. } | Error::TakeoverWithoutControl | Error::KeyFile(_)
        )
    }
}

/// Runs `tarpit serve` until SIGTERM/SIGINT (or a handover).
pub fn serve(cfg: ServeConfig) -> Result<(), Error> {
    crate::engine::gate::set_limits(cfg.records);
    let r = match cfg.engine {
        EngineConfig::Socket(s) => socket::run(s, &cfg.stats, &cfg.privileges, cfg.takeover),
        EngineConfig::Stateless(o) => stateless::run(o, &cfg.stats, &cfg.privileges),
    };
    // What the gate still holds back is said before the process ends.
    crate::engine::gate::flush();
    r
}

/// Switches to the configured user/group (nothing configured: stays).
fn drop_privileges(p: &Privileges) -> Result<(), Error> {
    if !p.is_drop() {
        return Ok(());
    }
    crate::sys::drop_privileges(p.user.as_deref(), p.group.as_deref()).map_err(Error::Privileges)
}

/// The engines' runtime: one thread, the engine's own.
fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)
}

/// Keeps `systemctl status` showing how many connections are held, until
/// the engine stops answering. From the totals alone: every
/// [`systemd::STATUS_INTERVAL`], however many are held, nothing is listed.
async fn report_status<C: crate::engine::Commands>(handle: crate::engine::Handle<C>) {
    let mut tick = tokio::time::interval(crate::systemd::STATUS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = String::new();
    loop {
        tick.tick().await;
        let Some(t) = handle.totals().await else {
            return;
        };
        let line =
            crate::systemd::status_line(t.held_now, t.trapped, t.engaged_hours(), t.held_hours());
        if line != last {
            crate::systemd::notify_status(&line);
            last = line;
        }
    }
}

/// Resolves on SIGTERM or SIGINT (never, if they cannot be caught).
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
