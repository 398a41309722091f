//! `tarpit report`: totals, top hosts, ports, end reasons, hold durations and
//! a per-day series from the history database, as text, JSON or HTML.

use super::{fail, Cli, EXIT_CONFIG};
use crate::config::{self, parse_duration};
use crate::engine::record::to_unix;
use crate::stats::history;
use crate::stats::report;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
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

pub fn run(cli: &Cli, a: &ReportArgs) -> ExitCode {
    let path = match &a.history {
        Some(p) => p.clone(),
        None => {
            let from_file = match &cli.config {
                Some(p) => match config::load(p) {
                    Ok((cfg, _)) => cfg.serve.and_then(|s| s.history).map(PathBuf::from),
                    Err(e) => return fail(EXIT_CONFIG, e),
                },
                None => None,
            };
            from_file.unwrap_or_else(|| PathBuf::from(history::DEFAULT_PATH))
        }
    };
    let db = match history::open_for_reading(&path) {
        Ok(c) => c,
        Err(e) => return fail(1, e),
    };
    let until = to_unix(SystemTime::now());
    let since = (until - a.since.as_secs_f64()).max(0.0);
    let r = match report::compute(&db, since, until) {
        Ok(r) => r,
        Err(e) => return fail(1, format!("history database {}: {e}", path.display())),
    };
    if let Some(f) = &a.html {
        if let Err(e) = std::fs::write(f, report::render_html(&r)) {
            return fail(1, format!("cannot write {}: {e}", f.display()));
        }
    }
    if a.json {
        match serde_json::to_string_pretty(&r) {
            Ok(s) => println!("{s}"),
            Err(e) => return fail(1, e),
        }
    } else if a.html.is_none() {
        print!("{}", report::render_text(&r));
    }
    ExitCode::SUCCESS
}
