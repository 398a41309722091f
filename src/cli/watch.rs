//! `tarpit watch`: follow logs and trap repeat offenders.

use super::{watch_settings, Cli, Error};
use crate::daemon::{watch, WatchRun};
use clap::Args;
use std::path::PathBuf;

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

pub fn run(cli: &Cli, a: &WatchArgs) -> Result<(), Error> {
    let settings = watch_settings(cli, a.state_db.clone())?;
    let how = WatchRun {
        config: cli.config.clone(),
        state_db: a.state_db.clone(),
        dry_run: a.dry_run,
        in_memory: a.dry_run && a.state_db.is_none(),
        metrics: a.metrics,
        report: crate::abuse::settings::load(cli.config.as_deref())?,
    };
    Ok(watch::run(settings, &how)?)
}
