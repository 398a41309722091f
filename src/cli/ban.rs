//! `tarpit ban ADDR`: trap a host by hand.

use super::{parse_target, watch_settings, Cli, Error};
use crate::config::parse_duration;
use crate::firewall::{Ban, Firewall};
use crate::watcher::{nft, state::ms, IgnoreList, State};
use clap::Args;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

#[derive(Debug, Args, Clone)]
pub struct BanArgs {
    /// IPv4 or IPv6 address (IPv6 is trapped per prefix, /64 by default), or
    /// an IPv6 network `2001:db8::/64`.
    pub addr: String,
    /// How long (default: the first jail's bantime, 1w without a config).
    #[arg(long = "for", value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,
    /// Jail name recorded with the ban.
    #[arg(long, default_value = "manual")]
    pub jail: String,
    /// SQLite state file.
    #[arg(long, value_name = "FILE")]
    pub state_db: Option<PathBuf>,
}

pub fn run(cli: &Cli, a: &BanArgs) -> Result<(), Error> {
    let settings = watch_settings(cli, a.state_db.clone())?;
    let target = parse_target(&a.addr, settings.ipv6_prefix)?;
    let own = crate::sys::local_addresses().unwrap_or_default();
    if IgnoreList::new(&own, &[]).covers_key(&target) {
        return Err(Error::Usage(format!(
            "refusing to ban {target}: it is loopback or one of this machine's own addresses"
        )));
    }
    let dur = a
        .duration
        .or_else(|| settings.jails.first().map(|j| j.rules.bantime))
        .unwrap_or(Duration::from_secs(7 * 86400));
    if dur.is_zero() {
        return Err(Error::Usage("--for must be more than zero".into()));
    }
    let mut state = State::open(&settings.state_db)?;
    let now = ms(SystemTime::now());
    let row = state.ban(&target, &a.jail, dur, now)?;
    let fw = Firewall::new(nft::nft_config(&settings));
    // restore = create the table if needed + add, in one transaction.
    let ban = Ban {
        target,
        timeout: row.remaining(now),
    };
    fw.restore(&[ban]).map_err(|e| Error::Failed(format!("{target} is recorded as banned, but nftables failed: {e}; a running `tarpit watch` applies it when nft works")))?;
    println!(
        "banned {target} for {} (jail {}, offence {})",
        humantime::format_duration(Duration::from_secs(row.remaining(now).as_secs())),
        row.jail,
        row.offences
    );
    Ok(())
}
