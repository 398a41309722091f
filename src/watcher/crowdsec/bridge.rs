//! The watcher's side of CrowdSec: turns "these traps changed" from the
//! worker into firewall calls, from the database (the truth). A host is
//! trapped for the longest of our ban and its decisions; when nothing holds
//! it any more it is released. Networks are rewritten whole.

use super::store::{self, Touched};
use crate::firewall::{Net, Target};
use crate::watcher::external::{External, ExternalError};
use crate::watcher::state::ms;
use crate::watcher::Enforcer;
use rusqlite::Connection;
use std::collections::BTreeSet;
use std::sync::mpsc::Receiver;
use std::time::{Duration, SystemTime};

pub struct Bridge {
    conn: Connection,
    rx: Receiver<Touched>,
    hosts: BTreeSet<Target>,
    nets_dirty: bool,
    /// When a nested network outlives the one covering it: rewrite then.
    refresh_at: Option<i64>,
    /// How many batches were applied (tests).
    pub applied: u64,
}

/// Above this many changed hosts one query reads them all.
const BULK: usize = 256;

impl Bridge {
    pub fn new(conn: Connection, rx: Receiver<Touched>) -> Bridge {
        Bridge {
            conn,
            rx,
            hosts: BTreeSet::new(),
            nets_dirty: true,
            refresh_at: None,
            applied: 0,
        }
    }

    fn nets(&mut self, now: i64) -> Result<Vec<(Net, Duration)>, rusqlite::Error> {
        let nets = store::active_nets(&self.conn, now)?;
        let items: Vec<(Net, Duration)> = nets
            .into_iter()
            .map(|(n, e)| (n, Duration::from_millis((e - now).max(0) as u64)))
            .filter(|(_, d)| !d.is_zero())
            .collect();
        let (_, refresh) = crate::firewall::Net::outermost_refresh(&items);
        self.refresh_at = refresh.map(|d| now + d.as_millis() as i64 + 1000);
        Ok(items)
    }
}

impl External for Bridge {
    fn tick(&mut self, fw: &dyn Enforcer, fw_ok: bool) -> Result<(), ExternalError> {
        while let Ok(t) = self.rx.try_recv() {
            self.hosts.extend(t.hosts);
            self.nets_dirty |= t.nets;
        }
        let now = ms(SystemTime::now());
        if self.refresh_at.is_some_and(|r| now >= r) {
            self.nets_dirty = true;
        }
        if !fw_ok || (self.hosts.is_empty() && !self.nets_dirty) {
            return Ok(());
        }
        if !self.hosts.is_empty() {
            let mut ban = Vec::new();
            let mut unban = Vec::new();
            if self.hosts.len() > BULK {
                let all: std::collections::HashMap<Target, i64> =
                    store::all_hosts(&self.conn, now)?.into_iter().collect();
                for h in &self.hosts {
                    match all.get(h) {
                        Some(e) => ban.push((*h, Duration::from_millis((e - now).max(1) as u64))),
                        None => unban.push(*h),
                    }
                }
            } else {
                for h in &self.hosts {
                    match store::trapped_until(&self.conn, h, now)? {
                        Some(e) => ban.push((*h, Duration::from_millis((e - now).max(1) as u64))),
                        None => unban.push(*h),
                    }
                }
            }
            fw.ban(&ban)?;
            fw.unban(&unban)?;
            self.applied += 1;
            tracing::debug!(
                trapped = ban.len(),
                released = unban.len(),
                "crowdsec decisions applied"
            );
            self.hosts.clear();
        }
        if self.nets_dirty {
            let items = self.nets(now)?;
            fw.set_ranges(&items)?;
            self.nets_dirty = false;
        }
        Ok(())
    }

    fn hosts(&mut self) -> Vec<(Target, Duration)> {
        let now = ms(SystemTime::now());
        self.hosts.clear();
        match store::active_hosts(&self.conn, now) {
            Ok(v) => v
                .into_iter()
                .map(|(t, e)| (t, Duration::from_millis((e - now).max(0) as u64)))
                .filter(|(_, d)| !d.is_zero())
                .collect(),
            Err(e) => {
                tracing::error!(error = %e, "crowdsec: cannot read stored decisions for the restore");
                Vec::new()
            }
        }
    }

    fn restore_nets(&mut self, fw: &dyn Enforcer) -> Result<(), ExternalError> {
        let now = ms(SystemTime::now());
        let items = self.nets(now)?;
        fw.set_ranges(&items)?;
        self.nets_dirty = false;
        Ok(())
    }

    fn until(&mut self, host: &Target) -> Option<Duration> {
        let now = ms(SystemTime::now());
        store::trapped_until(&self.conn, host, now)
            .ok()
            .flatten()
            .map(|e| Duration::from_millis((e - now).max(0) as u64))
    }
}
