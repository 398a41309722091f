//! Lines to bans: timestamp, filter, ignore lists, the jail's window, and
//! the state database (committed before the firewall is touched).

use super::*;

impl<E: Enforcer> Watcher<E> {
    pub(super) fn handle_lines(
        &mut self,
        path: &Path,
        jails: &[usize],
        lines: &[crate::watcher::follow::Line],
        position: Option<&crate::watcher::state::Position>,
    ) -> Result<Vec<BanRow>, StateError> {
        let mut new_bans = Vec::new();
        let mut tx = self.state.begin()?;
        for line in lines {
            self.stats.lines += 1;
            let now = SystemTime::now();
            let (st, text) = timestamp::split(&line.text, now);
            let at = st.map_or(now, |st| st.time.min(now));
            let kind = st.map(|st| st.kind);
            for &ji in jails {
                let jail: &Jail = &self.settings.jails[ji];
                let m = &self.metrics;
                match jail.filter.check(kind, text, &jail.name) {
                    LineVerdict::NoMatch => m.line(&jail.name, "unmatched"),
                    LineVerdict::Ignored => {
                        self.stats.ignored_regex += 1;
                        m.line(&jail.name, "ignored");
                    }
                    LineVerdict::OwnJail => {
                        self.stats.own_jail += 1;
                        m.line(&jail.name, "ignored");
                    }
                    LineVerdict::InvalidAddress(a) => {
                        self.stats.invalid_address += 1;
                        m.line(&jail.name, "invalid");
                        tracing::debug!(jail = %jail.name, address = %a, "matched, but not a valid address");
                    }
                    LineVerdict::Host(ip) => {
                        self.stats.matched += 1;
                        let key = Target::from_ip(ip, self.settings.ipv6_prefix);
                        if self.ignore[ji].is_ignored(ip) || self.ignore[ji].covers_key(&key) {
                            self.stats.ignored_ip += 1;
                            m.line(&jail.name, "ignored");
                            continue;
                        }
                        m.line(&jail.name, "matched");
                        match tx.record_hit(&jail.name, &jail.rules, &key, ms(at), ms(now))? {
                            HitOutcome::Counted(n) => {
                                tracing::debug!(jail = %jail.name, host = %key, hits = n, "hit");
                            }
                            HitOutcome::TooOld => self.stats.too_old += 1,
                            HitOutcome::AlreadyBanned => self.stats.already_banned += 1,
                            HitOutcome::Banned(row) => {
                                self.stats.bans += 1;
                                m.ban(&jail.name);
                                tracing::info!(
                                    target: "tarpit::ban",
                                    host = %row.host,
                                    jail = %row.jail,
                                    offences = row.offences,
                                    ban_secs = (row.expires_at - row.banned_at) / 1000,
                                    "trapping host"
                                );
                                new_bans.push(row);
                            }
                        }
                    }
                }
            }
        }
        if let Some(p) = position {
            tx.set_position(path, p, ms(SystemTime::now()))?;
        }
        tx.commit()?;
        Ok(new_bans)
    }
}
