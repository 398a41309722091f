//! `tarpit unban ADDR`: release a trapped host.

use super::{parse_target, watch_settings, Cli, Error};
use crate::firewall::Firewall;
use crate::watcher::{nft, state::ms, State};
use clap::Args;
use std::path::PathBuf;
use std::time::SystemTime;

#[derive(Debug, Args, Clone)]
pub struct UnbanArgs {
    /// The address (or IPv6 network) to release; an IPv6 address releases
    /// the banned prefix that contains it.
    pub addr: String,
    /// SQLite state file.
    #[arg(long, value_name = "FILE")]
    pub state_db: Option<PathBuf>,
}

pub fn run(cli: &Cli, a: &UnbanArgs) -> Result<(), Error> {
    let settings = watch_settings(cli, a.state_db.clone())?;
    let target = parse_target(&a.addr, settings.ipv6_prefix)?;
    let mut state = State::open(&settings.state_db)?;
    let now = ms(SystemTime::now());
    // A stored ban at another granularity that contains the address.
    let mut targets = vec![target];
    if let Ok(bans) = state.active_bans(now) {
        if let Ok(ip) = a.addr.trim().parse::<std::net::IpAddr>() {
            targets.extend(
                bans.iter()
                    .map(|b| b.host)
                    .filter(|h| h.contains(ip) && *h != target),
            );
        }
    }
    let mut was = false;
    for t in &targets {
        was |= state.unban(t, now)?;
    }
    // What CrowdSec still decides stays trapped: say so, and how to lift it.
    let held = crate::watcher::crowdsec::store::open(&settings.state_db)
        .ok()
        .and_then(|c| crate::watcher::crowdsec::store::list(&c, now).ok())
        .unwrap_or_default();
    let mut still = Vec::new();
    let mut release = Vec::new();
    for t in &targets {
        let ds: Vec<_> = held
            .iter()
            .filter(|d| {
                d.trap == t.to_string() || (d.trap.contains('/') && net_contains(&d.trap, &a.addr))
            })
            .collect();
        if ds.is_empty() {
            release.push(*t);
            continue;
        }
        let until = ds.iter().map(|d| d.expires_at).max().unwrap_or(now);
        still.push(crate::firewall::Ban {
            target: *t,
            timeout: std::time::Duration::from_millis((until - now).max(1) as u64),
        });
        for d in ds {
            println!(
                "{t} is still trapped by CrowdSec decision {} ({}{}, {}, {} left); lift it in CrowdSec: cscli decisions delete --id {}",
                d.id,
                d.origin.escape_debug(),
                if d.own { ", pushed by this host" } else { "" },
                d.scenario.escape_debug(),
                humantime::format_duration(std::time::Duration::from_secs(((d.expires_at - now).max(0) / 1000) as u64)),
                d.id
            );
        }
    }
    let fw = Firewall::new(nft::nft_config(&settings));
    // Re-adding what CrowdSec holds puts back its own remaining time (a
    // longer ban of ours no longer counts).
    fw.unban(&release)
        .and_then(|()| fw.ban(&still))
        .map_err(|e| {
            Error::Failed(format!(
                "{target} is released in the state database, but nftables failed: {e}"
            ))
        })?;
    if !still.is_empty() {
        if was {
            println!("our own ban of {target} is lifted");
        }
        return Ok(());
    }
    if was {
        println!("unbanned {target}");
    } else {
        println!("{target} was not banned (removed from the sets if it was there)");
    }
    Ok(())
}

/// True when the network text `net` contains the address text `addr`.
fn net_contains(net: &str, addr: &str) -> bool {
    match (
        net.parse::<crate::firewall::Net>(),
        addr.trim().parse::<std::net::IpAddr>(),
    ) {
        (Ok(n), Ok(ip)) => n.contains(&crate::firewall::Net::host(ip)),
        _ => false,
    }
}
