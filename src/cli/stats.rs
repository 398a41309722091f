//! `tarpit stats`: the connections a running `tarpit serve` holds right now,
//! asked over its control socket.

use super::{load_config, Cli, Error};
use crate::control::{self, ClientError, Request};
use crate::engine::Snapshot;
use crate::engine::SNAPSHOT_MAX;
use crate::stats::live::{self, SNAPSHOT_CMD, TOTALS_CMD};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
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
    /// List at most N connections, longest-held first (the totals count
    /// all of them). The server lists at most 10,000 per answer.
    #[arg(long, value_name = "N", default_value_t = crate::engine::SNAPSHOT_LIMIT, conflicts_with_all = ["all", "totals"])]
    pub limit: usize,
    /// List every held connection (fetched 10,000 at a time).
    #[arg(long, conflicts_with = "totals")]
    pub all: bool,
    /// Only the totals: nothing listed, cheap at any number held.
    #[arg(long)]
    pub totals: bool,
}

/// The control socket path: the flag, else the config file, else the default.
fn control_path(cli: &Cli, flag: Option<&PathBuf>) -> Result<PathBuf, Error> {
    if let Some(p) = flag {
        return Ok(p.clone());
    }
    let file = load_config(cli.config.as_deref())?;
    let from_file = file.and_then(|(cfg, _)| cfg.serve?.control);
    Ok(PathBuf::from(
        from_file.as_deref().unwrap_or(control::DEFAULT_PATH),
    ))
}

/// `[serve] geoip` of the config file, if any (errors there are serve's to report).
fn geoip_files(cli: &Cli) -> Option<Vec<PathBuf>> {
    let (cfg, _) = crate::config::load(cli.config.as_deref()?).ok()?;
    let list = cfg.serve?.geoip?;
    let v: Vec<PathBuf> = list.iter().map(|p| PathBuf::from(p.get_ref())).collect();
    (!v.is_empty()).then_some(v)
}

fn ask(path: &std::path::Path, req: &Request) -> Result<serde_json::Value, ClientError> {
    control::request(path, req, Duration::from_secs(15))
}

fn decode<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
    v: serde_json::Value,
) -> Result<T, ClientError> {
    serde_json::from_value(v).map_err(|e| ClientError::Protocol {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// What to list: `Some(n)` at most n connections, `None` all of them,
/// `Some(0)` the totals alone.
fn fetch(path: &std::path::Path, want: Option<usize>) -> Result<Snapshot, ClientError> {
    if want == Some(0) {
        #[derive(serde::Deserialize)]
        struct TotalsOnly {
            totals: crate::engine::Totals,
        }
        let t: TotalsOnly = decode(path, ask(path, &Request::new(TOTALS_CMD))?)?;
        return Ok(Snapshot {
            conns: Vec::new(),
            totals: t.totals,
        });
    }
    let page = |offset: usize, limit: usize| {
        let mut req = Request::new(SNAPSHOT_CMD);
        req.args.insert("offset".into(), offset.into());
        req.args.insert("limit".into(), limit.into());
        req
    };
    if let Some(n) = want {
        return decode(path, ask(path, &page(0, n))?);
    }
    // Every connection: page after page (connections ending meanwhile may
    // shift one onto a page already read, or off the end).
    let mut all: Snapshot = decode(path, ask(path, &page(0, SNAPSHOT_MAX))?)?;
    loop {
        let held = usize::try_from(all.totals.held_now).unwrap_or(usize::MAX);
        if all.conns.len() >= held || all.conns.len() % SNAPSHOT_MAX != 0 {
            return Ok(all);
        }
        let next: Snapshot = decode(path, ask(path, &page(all.conns.len(), SNAPSHOT_MAX))?)?;
        if next.conns.is_empty() {
            return Ok(all);
        }
        all.conns.extend(next.conns);
        all.totals = next.totals;
    }
}

pub fn run(cli: &Cli, a: &StatsArgs) -> Result<(), Error> {
    let path = control_path(cli, a.control.as_ref())?;
    if path.as_os_str() == "off" {
        return Err(Error::Failed(
            "the control socket is turned off (`control = \"off\"`); nothing to ask".into(),
        ));
    }
    // `[serve] geoip` from --config: a country column (looked up here, for
    // display only). A file that cannot be read is said once and skipped.
    let geo = geoip_files(cli).and_then(|paths| match crate::geoip::GeoIp::open_quick(&paths) {
        Ok(g) => Some(g),
        Err(e) => {
            eprintln!("tarpit: warning: {e}; no countries shown");
            None
        }
    });
    let country = |ip: std::net::IpAddr| geo.as_ref().and_then(|g| g.lookup_only(ip).country);
    let rows = std::env::var("LINES")
        .ok()
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(40)
        .saturating_sub(3)
        .max(5);
    loop {
        let want = if a.totals {
            Some(0)
        } else if a.watch {
            Some(rows.min(a.limit))
        } else if a.all {
            None
        } else {
            Some(a.limit)
        };
        let snap = fetch(&path, want)?;
        let text = if a.totals {
            if a.json {
                serde_json::to_string_pretty(&serde_json::json!({ "totals": snap.totals }))? + "\n"
            } else {
                live::totals_line(&snap) + "\n"
            }
        } else if a.json {
            let mut v = serde_json::to_value(&snap)?;
            if geo.is_some() {
                if let Some(cs) = v.get_mut("conns").and_then(|c| c.as_array_mut()) {
                    for (c, live) in cs.iter_mut().zip(&snap.conns) {
                        if let Some(o) = c.as_object_mut() {
                            o.insert("country".into(), country(live.peer.ip()).into());
                        }
                    }
                }
            }
            serde_json::to_string_pretty(&v)? + "\n"
        } else {
            let f: &dyn Fn(std::net::IpAddr) -> Option<String> = &country;
            live::render_table_geo(&snap, a.watch.then_some(rows), geo.is_some().then_some(f))
        };
        let mut out = std::io::stdout().lock();
        let written = if a.watch {
            // Home the cursor, clear the screen, redraw.
            write!(out, "\x1b[H\x1b[2J{text}")
        } else {
            write!(out, "{text}")
        };
        if written.and_then(|_| out.flush()).is_err() {
            return Ok(()); // stdout closed (e.g. piped into head)
        }
        if !a.watch {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
