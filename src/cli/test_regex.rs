//! `tarpit test-regex LOGFILE`: what a jail would make of a log, like
//! fail2ban-regex. Reads the whole file; changes nothing.

use super::{Cli, Error};
use crate::watcher::filter::LineVerdict;
use crate::watcher::follow::{Follower, Start};
use crate::watcher::{settings, IgnoreList, Target};
use clap::Args;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Args, Clone)]
pub struct TestRegexArgs {
    /// The log file to read.
    pub logfile: PathBuf,
    /// Jail whose filter and limits to use (default: the first).
    #[arg(long)]
    pub jail: Option<String>,
}

pub fn run(cli: &Cli, a: &TestRegexArgs) -> Result<(), Error> {
    let w = settings::load(cli.config.as_deref())?;
    let jail = match &a.jail {
        Some(n) => w.jails.iter().find(|j| &j.name == n).ok_or_else(|| {
            let names: Vec<&str> = w.jails.iter().map(|j| j.name.as_str()).collect();
            Error::Usage(format!("no jail {n:?}; configured: {}", names.join(", ")))
        })?,
        None => w
            .jails
            .first()
            .ok_or_else(|| Error::Usage("no jail configured".into()))?,
    };
    std::fs::File::open(&a.logfile)
        .map_err(|e| Error::Failed(format!("{}: {e}", a.logfile.display())))?;
    let own = crate::sys::local_addresses().unwrap_or_default();
    let mut ignore = IgnoreList::new(&own, &w.ignoreip);
    ignore.add(&jail.ignoreip);

    let mut f = Follower::new(a.logfile.clone(), Start::Beginning);
    let (mut matched, mut ignored_re, mut own_jail, mut invalid, mut ignored_ip) =
        (0u64, 0, 0, 0, 0);
    let mut hosts: BTreeMap<Target, Vec<i64>> = BTreeMap::new();
    let now = SystemTime::now();
    loop {
        let chunk = f.poll(8 << 20, now);
        if chunk.lines.is_empty() {
            break;
        }
        for line in &chunk.lines {
            let (at, verdict) = jail.filter.check_line(&line.text, now, &jail.name);
            let at = at.unwrap_or(now);
            match verdict {
                LineVerdict::NoMatch => {}
                LineVerdict::Ignored => ignored_re += 1,
                LineVerdict::OwnJail => own_jail += 1,
                LineVerdict::InvalidAddress(_) => invalid += 1,
                LineVerdict::Host(ip) => {
                    matched += 1;
                    let key = Target::from_ip(ip, w.ipv6_prefix);
                    if ignore.is_ignored(ip) || ignore.covers_key(&key) {
                        ignored_ip += 1;
                        continue;
                    }
                    let ms = at
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_millis() as i64)
                        .unwrap_or(0);
                    hosts.entry(key).or_default().push(ms);
                }
            }
        }
    }
    let st = f.stats;
    println!("Jail: {} ({} failregex)", jail.name, jail.filter.fail.len());
    for r in &jail.filter.fail {
        println!("  failregex: {}", r.source);
    }
    println!(
        "Lines: {} read, {} matched, {} ignored by ignoreregex, {} by this jail's own bans, {} invalid addresses, {} ignored addresses",
        st.lines, matched, ignored_re, own_jail, invalid, ignored_ip
    );
    println!(
        "Skipped: {} longer than 64 KiB, {} binary; {} with invalid UTF-8 (matched as replaced text)",
        st.oversize, st.binary, st.invalid_utf8
    );
    println!("Hosts: {}", hosts.len());
    let mut banned = Vec::new();
    for (h, hits) in &hosts {
        let would = jail.rules.window_full(hits);
        if would {
            banned.push(h);
        }
        println!(
            "  {:<28} {:>6} hits{}",
            h.to_string(),
            hits.len(),
            if would { "  -> would be banned" } else { "" }
        );
    }
    println!(
        "Would ban {} host(s) ({} hits within {}, ban {})",
        banned.len(),
        jail.rules.maxretry,
        humantime::format_duration(jail.rules.findtime),
        humantime::format_duration(jail.rules.bantime)
    );
    Ok(())
}
