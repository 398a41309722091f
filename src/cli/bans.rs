//! `tarpit bans`: the active bans, from the state database.

use super::{watch_settings, Cli, Error};
use crate::watcher::{state::ms, State};
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Args, Clone)]
pub struct BansArgs {
    /// One JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
    /// SQLite state file.
    #[arg(long, value_name = "FILE")]
    pub state_db: Option<PathBuf>,
}

#[derive(Serialize)]
struct Row {
    host: String,
    /// `jail`, `manual` (`tarpit ban`) or `crowdsec` (a LAPI decision).
    origin: String,
    /// The jail; for CrowdSec the decision's scenario.
    jail: String,
    /// Unix seconds.
    since: i64,
    expires: i64,
    remaining_secs: u64,
    offences: u32,
}

fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

pub fn run(cli: &Cli, a: &BansArgs) -> Result<(), Error> {
    let settings = watch_settings(cli, a.state_db.clone())?;
    if !settings.state_db.exists() {
        // Nothing was ever banned; do not create the file as a side effect.
        if a.json {
            println!("[]");
        } else {
            println!(
                "no active bans ({} does not exist)",
                settings.state_db.display()
            );
        }
        return Ok(());
    }
    let state = State::open(&settings.state_db)?;
    let now = ms(SystemTime::now());
    let bans = state.active_bans(now)?;
    let mut rows: Vec<Row> = bans
        .iter()
        .map(|b| Row {
            host: b.host.to_string(),
            origin: if b.jail == "manual" { "manual" } else { "jail" }.into(),
            jail: b.jail.clone(),
            since: b.banned_at / 1000,
            expires: b.expires_at / 1000,
            remaining_secs: b.remaining(now).as_secs(),
            offences: b.offences,
        })
        .collect();
    // CrowdSec decisions (our own pushes coming back are our bans above).
    if let Ok(c) = crate::watcher::crowdsec::store::open(&settings.state_db) {
        for d in crate::watcher::crowdsec::store::list(&c, now).unwrap_or_default() {
            if d.own {
                continue;
            }
            let scenario: String = d.scenario.chars().take(40).collect();
            rows.push(Row {
                host: d.trap.clone(),
                origin: "crowdsec".into(),
                jail: scenario.escape_debug().to_string(),
                since: d.seen_at / 1000,
                expires: d.expires_at / 1000,
                remaining_secs: ((d.expires_at - now).max(0) / 1000) as u64,
                offences: 0,
            });
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("no active bans");
        return Ok(());
    }
    println!(
        "{:<28} {:<9} {:<16} {:<21} {:<21} {:>14} {:>8}",
        "HOST", "ORIGIN", "JAIL", "SINCE", "EXPIRES", "REMAINING", "OFFENCES"
    );
    for r in &rows {
        println!(
            "{:<28} {:<9} {:<16} {:<21} {:<21} {:>14} {:>8}",
            r.host,
            r.origin,
            r.jail,
            rfc3339(r.since * 1000),
            rfc3339(r.expires * 1000),
            humantime::format_duration(Duration::from_secs(r.remaining_secs)).to_string(),
            r.offences
        );
    }
    Ok(())
}
