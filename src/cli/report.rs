//! `tarpit report`: totals, top hosts, ports, end reasons, hold durations and
//! a per-day series from the history database, as text, JSON or HTML.

use super::{load_config, Cli, Error};
use crate::config::parse_duration;
use crate::engine::record::to_unix;
use crate::stats::history;
use crate::stats::report;
use clap::Args;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

#[derive(Debug, Args, Clone)]
pub struct ReportArgs {
    /// How far back to look (`7d`, `24h`, `90d`).
    #[arg(long, value_parser = parse_duration, default_value = "7d", value_name = "DURATION")]
    pub since: Duration,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write the report as one self-contained HTML page to FILE.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// History database (default: `[serve] history` from --config, else
    /// /var/lib/tarpit/history.db).
    #[arg(long, value_name = "PATH")]
    pub history: Option<PathBuf>,
}

pub fn run(cli: &Cli, a: &ReportArgs) -> Result<(), Error> {
    let path = match &a.history {
        Some(p) => p.clone(),
        None => {
            let file = load_config(cli.config.as_deref())?;
            let from_file = file.and_then(|(cfg, _)| cfg.serve?.history);
            PathBuf::from(from_file.as_deref().unwrap_or(history::DEFAULT_PATH))
        }
    };
    let db = history::open_for_reading(&path)?;
    let until = to_unix(SystemTime::now());
    let since = (until - a.since.as_secs_f64()).max(0.0);
    let r = report::compute(&db, since, until)
        .map_err(|e| Error::Failed(format!("history database {}: {e}", path.display())))?;
    if let Some(f) = &a.html {
        std::fs::write(f, report::render_html(&r))
            .map_err(|e| Error::Failed(format!("cannot write {}: {e}", f.display())))?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else if a.html.is_none() {
        print!("{}", report::render_text(&r));
    }
    Ok(())
}
