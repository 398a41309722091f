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
    let ip = a.addr.trim().parse::<std::net::IpAddr>().ok();
    let split = crate::watcher::crowdsec::unban_split(&settings.state_db, &targets, ip, now);
    for note in &split.notes {
        println!("{note}");
    }
    let (release, still) = (split.release, split.still);
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
