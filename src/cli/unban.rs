//! `tarpit unban ADDR`: release a trapped host.

use super::{fail, parse_target, watch_settings, Cli, EXIT_CONFIG};
use crate::firewall::Firewall;
use crate::watcher::{nft, state::ms, State};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
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

pub fn run(cli: &Cli, a: &UnbanArgs) -> ExitCode {
    let settings = match watch_settings(cli, a.state_db.clone()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let target = match parse_target(&a.addr, settings.ipv6_prefix) {
        Ok(t) => t,
        Err(e) => return fail(EXIT_CONFIG, e),
    };
    let mut state = match State::open(&settings.state_db) {
        Ok(s) => s,
        Err(e) => return fail(1, e),
    };
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
        match state.unban(t, now) {
            Ok(w) => was |= w,
            Err(e) => return fail(1, e),
        }
    }
    let fw = Firewall::new(nft::nft_config(&settings));
    if let Err(e) = fw.unban(&targets) {
        return fail(
            1,
            format!("{target} is released in the state database, but nftables failed: {e}"),
        );
    }
    if was {
        println!("unbanned {target}");
    } else {
        println!("{target} was not banned (removed from the sets if it was there)");
    }
    ExitCode::SUCCESS
}
