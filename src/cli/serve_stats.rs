//! The statistics side of `tarpit serve`: its flags (`--control`,
//! `--metrics`, `--history`, `--history-days`), their merge with `[serve]`,
//! and the wiring of the control socket, metrics and history around the
//! engine. Kept apart from `serve.rs` so the engine's glue stays small.

use crate::config::{ConfigError, ServeSection, Source};
use crate::control::{self, ControlServer};
use crate::listener::{Handle, Observer};
use crate::stats::live;
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

/// The word that turns a path-valued feature off.
const OFF: &str = "off";

#[derive(Debug, Args, Default, Clone)]
pub struct StatsFlags {
    /// Control socket for `tarpit stats` (unix socket, mode 0660), or `off`.
    /// Default: /run/tarpit/control.sock.
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
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
    Ok(StatsOptions {
        control: (control.as_os_str() != OFF).then_some(control),
        control_explicit,
    })
}

/// Everything bound or opened before privileges are dropped, so a mistake is
/// an error at start rather than later.
pub struct Prepared {
    control: Option<ControlServer>,
}

/// Binds the control socket.
pub fn prepare(o: &StatsOptions) -> Result<Prepared, String> {
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
    Ok(Prepared { control })
}

/// The statistics tasks running beside the engine.
pub struct Running {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Prepared {
    /// Observers to hand to the engine.
    pub fn observers(&self) -> Vec<Arc<dyn Observer>> {
        Vec::new()
    }

    /// Starts serving the control socket. Call inside the serve runtime.
    pub fn start(self, handle: Handle) -> Running {
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        if let Some(mut c) = self.control {
            c.register(live::SNAPSHOT_CMD, live::snapshot_handler(handle.clone()));
            c.register(super::takeover::CMD, super::takeover::handler(handle));
            tracing::info!(path = %c.path().display(), "control socket ready");
            let mut rx = stop_rx.clone();
            tasks.push(tokio::spawn(async move {
                let stopped = async move {
                    let _ = rx.wait_for(|s| *s).await;
                };
                if let Err(e) = c.run(stopped).await {
                    tracing::error!(error = %e, "control socket failed");
                }
            }));
        }
        Running { stop, tasks }
    }
}

impl Running {
    /// Stops the control socket (removing its file) once the engine is done.
    pub async fn finish(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
