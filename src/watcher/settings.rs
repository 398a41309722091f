//! `[watch]` and `[[watch.jail]]` validated into what the watcher runs on.
//!
//! Every mistake is reported at the line of the offending value. Without a
//! config file (or without jails) the watcher runs the seed's "multi-ban"
//! jail: fail2ban's own `Ban` lines in `/var/log/fail2ban.log`, 3 within a
//! day trap the host for a week.

use super::filter::{compile_failregex, Filter, FAIL2BAN_BAN_REGEX};
use super::host::Cidr;
use super::state::DEFAULT_STATE_DB;
use super::timestamp::StampKind;
use super::window::{Rules, MAX_BANTIME};
use crate::config::{parse_duration, ConfigError, DurationValue, Source, StrList, WatchSection};
use crate::firewall::TrapMode;
use regex::Regex;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

pub const DEFAULT_JAIL: &str = "multi-ban";
pub const DEFAULT_LOGPATH: &str = "/var/log/fail2ban.log";

/// One jail, ready to run.
#[derive(Debug, Clone)]
pub struct Jail {
    pub name: String,
    /// Paths or glob patterns, re-expanded while running.
    pub logpaths: Vec<String>,
    pub filter: Filter,
    pub rules: Rules,
    pub ignoreip: Vec<Cidr>,
}

/// Everything `tarpit watch` needs besides the command line.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    pub state_db: PathBuf,
    pub port: u16,
    pub table: String,
    pub set4: String,
    pub set6: String,
    pub ipv6_prefix: u8,
    /// Redirect to `port` (socket engine) or log+drop (stateless engine).
    pub mode: TrapMode,
    /// Ports trapped for everyone (see `NftConfig::decoy_ports`).
    pub decoy_ports: Vec<u16>,
    /// Only trapped hosts reach `port` (see `NftConfig::guard_port`).
    pub guard_port: bool,
    pub nft: PathBuf,
    /// `conntrack -D -s HOST` after each ban (off by default: it cuts the
    /// host's established sessions too).
    pub flush_conntrack: bool,
    pub poll_interval: Duration,
    pub check_interval: Duration,
    /// Applies to every jail, besides loopback and our own addresses.
    pub ignoreip: Vec<Cidr>,
    pub jails: Vec<Jail>,
    /// `[watch.crowdsec]`: LAPI bouncer and machine (off when absent).
    pub crowdsec: Option<crate::watcher::crowdsec::Settings>,
}

impl Default for WatchSettings {
    fn default() -> Self {
        WatchSettings {
            state_db: PathBuf::from(DEFAULT_STATE_DB),
            port: 2222,
            table: "tarpit".into(),
            set4: "trap4".into(),
            set6: "trap6".into(),
            ipv6_prefix: 64,
            mode: TrapMode::Redirect,
            decoy_ports: Vec::new(),
            guard_port: false,
            nft: PathBuf::from("nft"),
            flush_conntrack: false,
            poll_interval: Duration::from_millis(500),
            check_interval: Duration::from_secs(10),
            ignoreip: Vec::new(),
            jails: vec![default_jail()],
            crowdsec: None,
        }
    }
}

/// The seed's multi-ban jail.
pub fn default_jail() -> Jail {
    Jail {
        name: DEFAULT_JAIL.into(),
        logpaths: vec![DEFAULT_LOGPATH.into()],
        filter: default_filter(),
        rules: Rules::default(),
        ignoreip: Vec::new(),
    }
}

fn default_filter() -> Filter {
    Filter {
        fail: compile_failregex(FAIL2BAN_BAN_REGEX).into_iter().collect(),
        ignore: Vec::new(),
        require_stamp: Some(StampKind::Fail2ban),
    }
}

/// Names are used in nft and in logs: keep them plain.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

/// Validates `[watch]` from `src` (or returns the defaults for `None`).
pub fn resolve(section: Option<(&WatchSection, &Source)>) -> Result<WatchSettings, ConfigError> {
    let mut o = WatchSettings::default();
    let Some((w, src)) = section else {
        return Ok(o);
    };
    let dur = |v: &Spanned<DurationValue>, key: &str| -> Result<Duration, ConfigError> {
        parse_duration(&v.get_ref().0).map_err(|m| src.error_at(v.span(), key, m))
    };
    let name = |v: &Spanned<String>, key: &str| -> Result<String, ConfigError> {
        if valid_name(v.get_ref()) {
            Ok(v.get_ref().clone())
        } else {
            Err(src.error_at(
                v.span(),
                key,
                format!(
                    "{:?} is not a valid name (letters, digits, `_`, `-`, `.`; at most 64)",
                    v.get_ref()
                ),
            ))
        }
    };
    let cidrs = |v: &Spanned<StrList>, key: &str| -> Result<Vec<Cidr>, ConfigError> {
        StrList::items(v)
            .into_iter()
            .flat_map(|(s, span)| {
                // fail2ban separates ignoreip by spaces or commas inside one string.
                s.split(|c: char| c.is_whitespace() || c == ',')
                    .filter(|x| !x.is_empty())
                    .map(|x| (x.to_string(), span.clone()))
                    .collect::<Vec<_>>()
            })
            .map(|(s, span)| s.parse::<Cidr>().map_err(|m| src.error_at(span, key, m)))
            .collect()
    };

    if let Some(p) = &w.state_db {
        if p.get_ref().trim().is_empty() {
            return Err(src.error_at(p.span(), "watch.state_db", "empty path"));
        }
        o.state_db = PathBuf::from(p.get_ref());
    }
    if let Some(p) = &w.port {
        o.port = u16::try_from(*p.get_ref())
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| src.error_at(p.span(), "watch.port", "must be within 1..65535"))?;
    }
    if let Some(v) = &w.table {
        o.table = name(v, "watch.table")?;
    }
    if let Some(v) = &w.set4 {
        o.set4 = name(v, "watch.set4")?;
    }
    if let Some(v) = &w.set6 {
        o.set6 = name(v, "watch.set6")?;
    }
    if o.set4 == o.set6 {
        let span = w
            .set6
            .as_ref()
            .or(w.set4.as_ref())
            .map(|s| s.span())
            .unwrap_or(0..0);
        return Err(src.error_at(span, "watch.set6", "set4 and set6 must differ"));
    }
    if let Some(p) = &w.ipv6_prefix {
        o.ipv6_prefix = u8::try_from(*p.get_ref())
            .ok()
            .filter(|p| (16..=128).contains(p))
            .ok_or_else(|| src.error_at(p.span(), "watch.ipv6_prefix", "must be within 16..128"))?;
    }
    if let Some(p) = &w.nft {
        o.nft = PathBuf::from(p.get_ref());
    }
    let group = match &w.nflog_group {
        Some(g) => u16::try_from(*g.get_ref())
            .map_err(|_| src.error_at(g.span(), "watch.nflog_group", "must be within 0..65535"))?,
        None => crate::engine::stateless::StatelessOptions::default().nflog_group,
    };
    if let Some(e) = &w.engine {
        o.mode = match e.get_ref().as_str() {
            "socket" => TrapMode::Redirect,
            "stateless" => TrapMode::Stateless { group },
            other => {
                return Err(src.error_at(
                    e.span(),
                    "watch.engine",
                    format!("unknown engine {other:?}; use \"socket\" or \"stateless\""),
                ))
            }
        };
    }
    if let Some(ports) = &w.decoy_ports {
        o.decoy_ports = ports
            .get_ref()
            .iter()
            .map(|&p| u16::try_from(p).ok().filter(|&p| p != 0))
            .collect::<Option<Vec<u16>>>()
            .ok_or_else(|| {
                src.error_at(
                    ports.span(),
                    "watch.decoy_ports",
                    "ports must be within 1..65535",
                )
            })?;
    }
    o.flush_conntrack = w.flush_conntrack.unwrap_or(false);
    o.guard_port = w.guard_port.unwrap_or(false);
    if let Some(v) = &w.poll_interval {
        o.poll_interval = dur(v, "watch.poll_interval")?;
        if o.poll_interval < Duration::from_millis(10) || o.poll_interval > Duration::from_secs(1) {
            return Err(src.error_at(
                v.span(),
                "watch.poll_interval",
                "must be within 10ms..1s (new lines must be seen within a second)",
            ));
        }
    }
    if let Some(v) = &w.check_interval {
        o.check_interval = dur(v, "watch.check_interval")?;
        if o.check_interval < Duration::from_millis(100)
            || o.check_interval > Duration::from_secs(30)
        {
            return Err(src.error_at(
                v.span(),
                "watch.check_interval",
                "must be within 100ms..30s (a flushed ruleset must be noticed within 30 s)",
            ));
        }
    }
    if let Some(v) = &w.ignoreip {
        o.ignoreip = cidrs(v, "watch.ignoreip")?;
    }

    if let Some(c) = &w.crowdsec {
        o.crowdsec = Some(crate::watcher::crowdsec::settings::resolve(c, src)?);
    }

    if !w.jail.is_empty() {
        o.jails.clear();
    }
    for sj in &w.jail {
        let j = sj.get_ref();
        if j.enabled == Some(false) {
            continue;
        }
        let mut jail = default_jail();
        if let Some(n) = &j.name {
            jail.name = name(n, "watch.jail.name")?;
        }
        if o.jails.iter().any(|x| x.name == jail.name) {
            let span = j.name.as_ref().map(|n| n.span()).unwrap_or(sj.span());
            return Err(src.error_at(
                span,
                "watch.jail.name",
                format!("jail {:?} is defined twice", jail.name),
            ));
        }
        if let Some(v) = &j.logpath {
            jail.logpaths = StrList::items(v)
                .into_iter()
                .map(|(s, span)| {
                    if s.trim().is_empty() {
                        Err(src.error_at(span, "watch.jail.logpath", "empty path"))
                    } else if let Err(e) = glob::Pattern::new(&s) {
                        Err(src.error_at(
                            span,
                            "watch.jail.logpath",
                            format!("bad glob {s:?}: {e}"),
                        ))
                    } else {
                        Ok(s)
                    }
                })
                .collect::<Result<_, _>>()?;
            if jail.logpaths.is_empty() {
                return Err(src.error_at(
                    v.span(),
                    "watch.jail.logpath",
                    "at least one path is needed",
                ));
            }
        }
        if let Some(v) = &j.failregex {
            jail.filter.fail = StrList::items(v)
                .into_iter()
                .map(|(s, span)| {
                    compile_failregex(&s).map_err(|m| src.error_at(span, "watch.jail.failregex", m))
                })
                .collect::<Result<_, _>>()?;
            if jail.filter.fail.is_empty() {
                return Err(src.error_at(
                    v.span(),
                    "watch.jail.failregex",
                    "at least one failregex is needed",
                ));
            }
            // The fail2ban timestamp rule belongs to the default filter only.
            jail.filter.require_stamp = None;
        }
        if let Some(v) = &j.ignoreregex {
            jail.filter.ignore = StrList::items(v)
                .into_iter()
                .filter(|(s, _)| !s.is_empty())
                .map(|(s, span)| {
                    Regex::new(&s).map_err(|e| {
                        src.error_at(
                            span,
                            "watch.jail.ignoreregex",
                            format!("invalid regex {s:?}: {e}"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = &j.maxretry {
            jail.rules.maxretry = u32::try_from(*v.get_ref())
                .ok()
                .filter(|n| (1..=100_000).contains(n))
                .ok_or_else(|| {
                    src.error_at(v.span(), "watch.jail.maxretry", "must be within 1..100000")
                })?;
        }
        if let Some(v) = &j.findtime {
            jail.rules.findtime = dur(v, "watch.jail.findtime")?;
            if jail.rules.findtime.is_zero() {
                return Err(src.error_at(
                    v.span(),
                    "watch.jail.findtime",
                    "must be more than zero",
                ));
            }
        }
        if let Some(v) = &j.bantime {
            jail.rules.bantime = dur(v, "watch.jail.bantime")?;
            if jail.rules.bantime < Duration::from_secs(1) || jail.rules.bantime > MAX_BANTIME {
                return Err(src.error_at(
                    v.span(),
                    "watch.jail.bantime",
                    "must be within 1s..10 years",
                ));
            }
        }
        if let Some(v) = &j.bantime_factor {
            let f = *v.get_ref();
            if !(f.is_finite() && (1.0..=1000.0).contains(&f)) {
                return Err(src.error_at(
                    v.span(),
                    "watch.jail.bantime_factor",
                    "must be within 1..1000 (1 = no increment)",
                ));
            }
            jail.rules.bantime_factor = f;
        }
        if let Some(v) = &j.bantime_maxtime {
            let m = dur(v, "watch.jail.bantime_maxtime")?;
            if m < jail.rules.bantime || m > MAX_BANTIME {
                return Err(src.error_at(
                    v.span(),
                    "watch.jail.bantime_maxtime",
                    "must be at least bantime and at most 10 years",
                ));
            }
            jail.rules.bantime_maxtime = Some(m);
        }
        if let Some(v) = &j.ignoreip {
            jail.ignoreip = cidrs(v, "watch.jail.ignoreip")?;
        }
        o.jails.push(jail);
    }
    if o.jails.is_empty() {
        return Err(ConfigError {
            file: src.path.clone(),
            line: None,
            key: Some("watch.jail".into()),
            message: "every jail is disabled; nothing to watch".into(),
        });
    }
    Ok(o)
}

/// Loads `[watch]` from the config file at `path` (defaults without one).
pub fn load(path: Option<&std::path::Path>) -> Result<WatchSettings, ConfigError> {
    match path {
        None => resolve(None),
        Some(p) => {
            let (cfg, src) = crate::config::load(p)?;
            resolve(cfg.watch.as_ref().map(|w| (w, &src)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn src(t: &str) -> Source {
        Source {
            path: PathBuf::from("/etc/tarpit/tarpit.toml"),
            text: t.into(),
        }
    }

    fn load(t: &str) -> Result<WatchSettings, ConfigError> {
        let s = src(t);
        let f = config::parse(&s)?;
        resolve(f.watch.as_ref().map(|w| (w, &s)))
    }

    #[test]
    fn no_config_is_the_multi_ban_jail() {
        let o = load("").unwrap();
        assert_eq!(o.jails.len(), 1);
        let j = &o.jails[0];
        assert_eq!(j.name, "multi-ban");
        assert_eq!(j.logpaths, vec!["/var/log/fail2ban.log".to_string()]);
        assert_eq!(j.rules.maxretry, 3);
        assert_eq!(j.rules.findtime, Duration::from_secs(86400));
        assert_eq!(j.rules.bantime, Duration::from_secs(604800));
        assert_eq!(o.port, 2222);
        assert_eq!(o.state_db, PathBuf::from("/var/lib/tarpit/state.db"));
    }

    #[test]
    fn full_jail_parses() {
        let o = load(
            r#"
[watch]
state_db = "/tmp/x/state.db"
port = 2223
flush_conntrack = true
ignoreip = "192.0.2.0/24 2001:db8::/32"

[[watch.jail]]
name = "sshd"
logpath = ["/var/log/auth.log", "/var/log/auth*.log"]
failregex = [
  'sshd\[\d+\]: Failed password for .* from <HOST> port \d+',
  'sshd\[\d+\]: Invalid user .* from <HOST>$',
]
ignoreregex = 'user=backup'
maxretry = 5
findtime = 600
bantime = "1h"
bantime_factor = 2
bantime_maxtime = "1w"
ignoreip = ["10.0.0.1"]

[[watch.jail]]
name = "off"
enabled = false
"#,
        )
        .unwrap();
        assert_eq!(o.port, 2223);
        assert!(o.flush_conntrack);
        assert_eq!(o.ignoreip.len(), 2);
        assert_eq!(o.jails.len(), 1);
        let j = &o.jails[0];
        assert_eq!(j.filter.fail.len(), 2);
        assert_eq!(j.filter.ignore.len(), 1);
        assert_eq!(j.rules.maxretry, 5);
        assert_eq!(j.rules.findtime, Duration::from_secs(600));
        assert_eq!(j.rules.bantime_factor, 2.0);
        assert_eq!(j.rules.bantime_maxtime, Some(Duration::from_secs(604800)));
    }

    fn err(t: &str) -> ConfigError {
        load(t).unwrap_err()
    }

    #[test]
    fn engine_selects_the_trap_mode() {
        assert_eq!(load("[watch]\n").unwrap().mode, TrapMode::Redirect);
        let o = load("[watch]\nengine = \"stateless\"\nnflog_group = 12\n").unwrap();
        assert_eq!(o.mode, TrapMode::Stateless { group: 12 });
        let o = load("[watch]\nengine = \"stateless\"\n").unwrap();
        assert_eq!(o.mode, TrapMode::Stateless { group: 7 });
        let e = err("[watch]\n\nengine = \"kernel\"\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(3), Some("watch.engine")));
        let o = load("[watch]\ndecoy_ports = [23, 2323]\n").unwrap();
        assert_eq!(o.decoy_ports, vec![23, 2323]);
        assert!(!o.guard_port);
        assert!(load("[watch]\nguard_port = true\n").unwrap().guard_port);
        assert!(
            crate::watcher::nft::nft_config(&load("[watch]\nguard_port = true\n").unwrap())
                .guard_port
        );
        let e = err("[watch]\n\ndecoy_ports = [23, 0]\n");
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(3), Some("watch.decoy_ports"))
        );
        let e = err("[watch]\nnflog_group = 70000\n");
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(2), Some("watch.nflog_group"))
        );
    }

    #[test]
    fn unknown_key_in_a_jail_names_line_and_key() {
        let e = err("[watch]\n\n[[watch.jail]]\nname = \"a\"\nmaxretries = 3\n");
        assert_eq!(e.line, Some(5));
        assert_eq!(e.key.as_deref(), Some("watch.jail.maxretries"));
        assert!(
            e.to_string().starts_with("/etc/tarpit/tarpit.toml:5:"),
            "{e}"
        );
    }

    #[test]
    fn bad_duration_names_line_and_key() {
        let e = err("[[watch.jail]]\nname = \"a\"\nfindtime = \"a fortnight\"\n");
        assert_eq!(e.line, Some(3));
        assert_eq!(e.key.as_deref(), Some("watch.jail.findtime"));
        let e = err("[watch]\ncheck_interval = \"5m\"\n");
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(2), Some("watch.check_interval"))
        );
    }

    #[test]
    fn regex_without_host_names_the_array_line() {
        let e = err("[[watch.jail]]\nfailregex = [\n  'from <HOST>',\n  'no host here',\n]\n");
        assert_eq!(e.line, Some(4));
        assert_eq!(e.key.as_deref(), Some("watch.jail.failregex"));
        assert!(e.message.contains("<HOST>"), "{}", e.message);
    }

    #[test]
    fn other_bad_values() {
        let e = err("[[watch.jail]]\nignoreip = [\"10.0.0.0/8\", \"10.0.0.0/40\"]\n");
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(2), Some("watch.jail.ignoreip"))
        );
        let e = err("[[watch.jail]]\nmaxretry = 0\n");
        assert_eq!(e.key.as_deref(), Some("watch.jail.maxretry"));
        let e = err("[[watch.jail]]\nbantime = \"1h\"\nbantime_maxtime = \"10m\"\n");
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(3), Some("watch.jail.bantime_maxtime"))
        );
        let e = err("[watch]\nport = 70000\n");
        assert_eq!(e.key.as_deref(), Some("watch.port"));
        let e = err("[watch]\ntable = \"a b\"\n");
        assert_eq!(e.key.as_deref(), Some("watch.table"));
        let e = err("[[watch.jail]]\nname = \"x\"\n[[watch.jail]]\nname = \"x\"\n");
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(4), Some("watch.jail.name"))
        );
        let e = err("[[watch.jail]]\nignoreregex = '('\n");
        assert_eq!(e.key.as_deref(), Some("watch.jail.ignoreregex"));
        let e = err("[[watch.jail]]\nmaxretry = \"three\"\n");
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(2), Some("watch.jail.maxretry"))
        );
    }
}
