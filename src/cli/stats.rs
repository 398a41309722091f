//! `tarpit stats`: the connections a running `tarpit serve` holds right now,
//! asked over its control socket.

use super::{fail, Cli, EXIT_CONFIG};
use crate::config;
use crate::control::{self, ClientError, Request};
use crate::engine::Snapshot;
use crate::stats::live::{self, SNAPSHOT_CMD};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Args, Default, Clone)]
pub struct StatsArgs {
    /// Control socket of the running `tarpit serve` (default: `[serve] control`
    /// from --config, else /run/tarpit/control.sock).
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Print the snapshot as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Refresh in place every second, like `top` (Ctrl-C to quit).
    #[arg(long)]
    pub watch: bool,
}

/// The control socket path: the flag, else the config file, else the default.
pub fn control_path(cli: &Cli, flag: Option<&PathBuf>) -> Result<PathBuf, ExitCode> {
    if let Some(p) = flag {
        return Ok(p.clone());
    }
    if let Some(p) = &cli.config {
        let (cfg, _) = config::load(p).map_err(|e| fail(EXIT_CONFIG, e))?;
        if let Some(c) = cfg.serve.and_then(|s| s.control) {
            return Ok(PathBuf::from(c));
        }
    }
    Ok(PathBuf::from(control::DEFAULT_PATH))
}

fn fetch(path: &std::path::Path) -> Result<Snapshot, ClientError> {
    let v = control::request(path, &Request::new(SNAPSHOT_CMD), Duration::from_secs(15))?;
    serde_json::from_value(v).map_err(|e| ClientError::Protocol {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

pub fn run(cli: &Cli, a: &StatsArgs) -> ExitCode {
    let path = match control_path(cli, a.control.as_ref()) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if path.as_os_str() == "off" {
        return fail(
            1,
            "the control socket is turned off (`control = \"off\"`); nothing to ask",
        );
    }
    let rows = std::env::var("LINES")
        .ok()
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(40)
        .saturating_sub(3)
        .max(5);
    loop {
        let snap = match fetch(&path) {
            Ok(s) => s,
            Err(e) => return fail(1, e),
        };
        let text = if a.json {
            match serde_json::to_string_pretty(&snap) {
                Ok(s) => s + "\n",
                Err(e) => return fail(1, e),
            }
        } else {
            live::render_table(&snap, a.watch.then_some(rows))
        };
        let mut out = std::io::stdout().lock();
        let written = if a.watch {
            // Home the cursor, clear the screen, redraw.
            write!(out, "\x1b[H\x1b[2J{text}")
        } else {
            write!(out, "{text}")
        };
        if written.and_then(|_| out.flush()).is_err() {
            return ExitCode::SUCCESS; // stdout closed (e.g. piped into head)
        }
        if !a.watch {
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
