//! `tarpit serve`'s configuration: the raw `[serve]` table, the flags as
//! plain data ([`ServeOverrides`], filled by the command line), and the one
//! typed result ([`ServeConfig`]) the daemon runs from: flags over the file
//! over the defaults, validated.
//!
//! The engine is a tagged variant ([`EngineConfig`]): `engine = "socket"`
//! (the default) or `"stateless"` decides which keys may appear at all, so a
//! key (or flag) for the engine not in use is an error naming its line,
//! not a setting silently ignored.

use super::{parse_duration, ConfigError, Source};
use crate::engine::policy::{self, Bait, BaitStart, Policies, Policy, SynMode};
use crate::engine::socket::ServeOptions;
use crate::engine::stateless::StatelessOptions;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

/// `[serve]` as written: every field optional; command-line flags override
/// it. Engine-specific values keep their spans so a key for the other
/// engine can be pointed at.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ServeSection {
    pub listen: Option<Spanned<Vec<Spanned<String>>>>,
    pub lifetime_min: Option<Spanned<String>>,
    pub lifetime_max: Option<Spanned<String>>,
    pub keepalive_min: Option<Spanned<String>>,
    pub keepalive_max: Option<Spanned<String>>,
    pub keepalive_count: Option<Spanned<u32>>,
    /// After a peer's FIN: delay of the next keepalive probe.
    pub fin_wait: Option<Spanned<String>>,
    pub max_conns: Option<Spanned<usize>>,
    pub per_ip: Option<Spanned<usize>>,
    pub ipv6_prefix: Option<Spanned<u8>>,
    /// Most connections held per IPv6 /48, whatever its /64s.
    pub per_ipv6_48: Option<Spanned<usize>>,
    pub backlog: Option<Spanned<u32>>,
    /// Switch to this user once everything is bound.
    pub user: Option<String>,
    /// Switch to this group once everything is bound.
    pub group: Option<String>,
    /// Control socket path, or `"off"`.
    pub control: Option<String>,
    /// `/metrics` address (`127.0.0.1:9464`); absent = off.
    pub metrics: Option<Spanned<String>>,
    /// History database path, or `"off"`.
    pub history: Option<String>,
    /// Days of history kept.
    pub history_days: Option<u32>,
    /// Most rows the history keeps (the oldest go first); 0 = no cap.
    pub history_max_rows: Option<u64>,
    /// Connection records logged per second, all hosts (0 = no limit).
    pub records_per_sec: Option<u32>,
    /// Connection records a host may log in a burst, then one a second
    /// (0 = no limit).
    pub records_per_host: Option<u32>,
    /// MaxMind DB files (GeoLite2-Country/-City/-ASN, DB-IP lite): each
    /// history row gets its peer's country, ASN and AS organisation.
    pub geoip: Option<Vec<Spanned<String>>>,
    /// With `geoip`: metrics by country (`country` label, ~250 values).
    pub metrics_country: Option<bool>,
    /// `"socket"` (default) or `"stateless"`.
    pub engine: Option<Spanned<String>>,
    /// Stateless engine: nfnetlink_log group.
    pub nflog_group: Option<Spanned<u16>>,
    /// Stateless engine: most flows kept for statistics.
    pub flow_cap: Option<Spanned<usize>>,
    /// Stateless engine: silence after which a flow is reported ended.
    pub flow_idle: Option<Spanned<String>>,
    /// Stateless engine: SYN-cookie key lifetime.
    pub key_rotation: Option<Spanned<String>>,
    /// Stateless engine: file keeping the SYN-cookie keys across restarts.
    pub key_file: Option<Spanned<String>>,
    /// `[serve.policy]`: `"22" = { bait = "ssh" }`, `default = { ... }`,
    /// keyed by the original destination port.
    pub policy: Option<BTreeMap<String, Spanned<PolicySection>>>,
}

/// One `[serve.policy]` entry as written.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    /// `"ssh"` or `"http"`.
    pub bait: Option<Spanned<String>>,
    /// Interval between two bait segments.
    pub drip: Option<Spanned<String>>,
    /// `"peer"` (the default: once the peer speaks the bait's protocol) or
    /// `"accept"`.
    pub bait_start: Option<Spanned<String>>,
    /// `"zero"` (or `"normal"`).
    pub window: Option<Spanned<String>>,
    pub syn_delay: Option<Spanned<String>>,
    /// `"learn"` (the default: delay only addresses that escaped the silent
    /// trap early) or `"always"`.
    pub syn_delay_mode: Option<Spanned<String>>,
    /// Learn mode's window: a connection the peer ends within this long of
    /// the accept teaches its address.
    pub syn_delay_learn: Option<Spanned<String>>,
}

/// Which engine holds the connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineKind {
    /// Real sockets, one per held connection.
    #[default]
    Socket,
    /// Packets from nfnetlink_log, answered with SYN cookies.
    Stateless,
}

impl EngineKind {
    fn name(self) -> &'static str {
        match self {
            EngineKind::Socket => "socket",
            EngineKind::Stateless => "stateless",
        }
    }
}

/// The command-line flags of `tarpit serve`, as plain data (the clap
/// definitions live in `cli`). `None`/empty: not given.
#[derive(Debug, Default, Clone)]
pub struct ServeOverrides {
    pub listen: Vec<SocketAddr>,
    pub lifetime_min: Option<Duration>,
    pub lifetime_max: Option<Duration>,
    pub keepalive_min: Option<Duration>,
    pub keepalive_max: Option<Duration>,
    pub keepalive_count: Option<u32>,
    pub fin_wait: Option<Duration>,
    pub max_conns: Option<usize>,
    pub per_ip: Option<usize>,
    pub ipv6_prefix: Option<u8>,
    pub per_ipv6_48: Option<usize>,
    pub backlog: Option<u32>,
    pub takeover: bool,
    pub user: Option<String>,
    pub group: Option<String>,
    pub control: Option<PathBuf>,
    pub metrics: Option<SocketAddr>,
    pub history: Option<PathBuf>,
    pub history_days: Option<u32>,
    pub history_max_rows: Option<u64>,
    pub records_per_sec: Option<u32>,
    pub records_per_host: Option<u32>,
    pub engine: Option<EngineKind>,
    pub nflog_group: Option<u16>,
    pub flow_cap: Option<usize>,
    pub flow_idle: Option<Duration>,
    pub key_rotation: Option<Duration>,
    pub key_file: Option<PathBuf>,
    /// `--policy PORT:SPEC` / `default:SPEC`, in order (a later one for the
    /// same port wins; each replaces the file's entry for its port).
    pub policies: Vec<(Option<u16>, Policy)>,
}

/// Everything `tarpit serve` runs from.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub engine: EngineConfig,
    pub stats: StatsConfig,
    pub privileges: Privileges,
    /// Take over from the server answering on the control socket.
    pub takeover: bool,
    /// How many connection records are logged under a flood.
    pub records: crate::engine::gate::RecordLimits,
}

/// The engine and its settings.
#[derive(Debug, Clone)]
pub enum EngineConfig {
    Socket(SocketConfig),
    Stateless(StatelessOptions),
}

/// The socket engine's settings.
#[derive(Debug, Clone)]
pub struct SocketConfig {
    pub options: ServeOptions,
    /// No address was configured: the built-in defaults (a host without
    /// IPv6 then still serves IPv4).
    pub defaults_used: bool,
}

/// Whom to run as once everything is bound; both `None`: stay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Privileges {
    pub user: Option<String>,
    pub group: Option<String>,
}

impl Privileges {
    pub fn is_drop(&self) -> bool {
        self.user.is_some() || self.group.is_some()
    }
}

/// The word that turns a path-valued feature off.
const OFF: &str = "off";
/// Default retention of the history, days.
pub const DEFAULT_HISTORY_DAYS: u32 = 90;

/// The statistics settings: control socket, metrics, history.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsConfig {
    /// `None` = no control socket.
    pub control: Option<PathBuf>,
    /// The control path was chosen by the user (a failure to bind it is
    /// fatal), not the built-in default (a failure only warns, so a second
    /// instance or an unprivileged run still traps).
    pub control_explicit: bool,
    pub metrics: Option<SocketAddr>,
    /// `None` = no history.
    pub history: Option<PathBuf>,
    /// The history path is the built-in default, whose directory is created
    /// when missing (an explicit path's directory must exist).
    pub history_default: bool,
    pub history_days: u32,
    /// Size cap of the history, rows (0 = none).
    pub history_max_rows: u64,
    /// `[serve] geoip`: MaxMind DB files for the history's rows.
    pub geoip: Vec<PathBuf>,
    /// `[serve] metrics_country`.
    pub country_metrics: bool,
    /// `[report]` / `[[webhook]]` (set from the whole file by the command
    /// line; `None`: nothing is reported).
    pub report: Option<crate::abuse::Settings>,
}

type File<'a> = Option<(&'a ServeSection, &'a Source)>;

impl ServeConfig {
    /// Flags over `[serve]` over the defaults, validated.
    pub fn resolve(o: &ServeOverrides, file: File) -> Result<ServeConfig, ConfigError> {
        let kind = engine_kind(o, file)?;
        check_engine_keys(kind, o, file)?;
        let engine = match kind {
            EngineKind::Socket => EngineConfig::Socket(socket(o, file)?),
            EngineKind::Stateless => EngineConfig::Stateless(stateless(o, file)?),
        };
        let section = file.map(|(s, _)| s);
        Ok(ServeConfig {
            engine,
            stats: stats(o, file)?,
            privileges: Privileges {
                user: o.user.clone().or_else(|| section?.user.clone()),
                group: o.group.clone().or_else(|| section?.group.clone()),
            },
            takeover: o.takeover,
            records: crate::engine::gate::RecordLimits {
                per_sec: o
                    .records_per_sec
                    .or_else(|| section?.records_per_sec)
                    .unwrap_or(crate::engine::gate::RecordLimits::default().per_sec),
                per_host: o
                    .records_per_host
                    .or_else(|| section?.records_per_host)
                    .unwrap_or(crate::engine::gate::RecordLimits::default().per_host),
            },
        })
    }
}

/// The engine chosen by the flag, else the file, else socket.
fn engine_kind(o: &ServeOverrides, file: File) -> Result<EngineKind, ConfigError> {
    let from_file = match file.and_then(|(s, src)| s.engine.as_ref().map(|e| (e, src))) {
        None => None,
        Some((e, src)) => Some(match e.get_ref().as_str() {
            "socket" => EngineKind::Socket,
            "stateless" => EngineKind::Stateless,
            other => {
                return Err(src.error_at(
                    e.span(),
                    "serve.engine",
                    format!("unknown engine {other:?}; use \"socket\" or \"stateless\""),
                ))
            }
        }),
    };
    Ok(o.engine.or(from_file).unwrap_or_default())
}

/// A key or flag that only the other engine reads is a mistake.
fn check_engine_keys(kind: EngineKind, o: &ServeOverrides, file: File) -> Result<(), ConfigError> {
    let other = match kind {
        EngineKind::Socket => EngineKind::Stateless,
        EngineKind::Stateless => EngineKind::Socket,
    };
    let msg = || {
        format!(
            "only the {} engine uses this, and the engine in use is {:?}",
            other.name(),
            kind.name()
        )
    };
    if let Some((s, src)) = file {
        let socket_keys = [
            ("listen", s.listen.as_ref().map(Spanned::span)),
            ("lifetime_min", s.lifetime_min.as_ref().map(Spanned::span)),
            ("lifetime_max", s.lifetime_max.as_ref().map(Spanned::span)),
            ("keepalive_min", s.keepalive_min.as_ref().map(Spanned::span)),
            ("keepalive_max", s.keepalive_max.as_ref().map(Spanned::span)),
            (
                "keepalive_count",
                s.keepalive_count.as_ref().map(Spanned::span),
            ),
            ("fin_wait", s.fin_wait.as_ref().map(Spanned::span)),
            ("max_conns", s.max_conns.as_ref().map(Spanned::span)),
            ("per_ip", s.per_ip.as_ref().map(Spanned::span)),
            ("ipv6_prefix", s.ipv6_prefix.as_ref().map(Spanned::span)),
            ("per_ipv6_48", s.per_ipv6_48.as_ref().map(Spanned::span)),
            ("backlog", s.backlog.as_ref().map(Spanned::span)),
        ];
        let stateless_keys = [
            ("nflog_group", s.nflog_group.as_ref().map(Spanned::span)),
            ("flow_cap", s.flow_cap.as_ref().map(Spanned::span)),
            ("flow_idle", s.flow_idle.as_ref().map(Spanned::span)),
            ("key_rotation", s.key_rotation.as_ref().map(Spanned::span)),
            ("key_file", s.key_file.as_ref().map(Spanned::span)),
        ];
        let foreign = match kind {
            EngineKind::Socket => &stateless_keys[..],
            EngineKind::Stateless => &socket_keys[..],
        };
        if let Some((key, Some(span))) = foreign.iter().find(|(_, s)| s.is_some()) {
            return Err(src.error_at(span.clone(), &format!("serve.{key}"), msg()));
        }
    }
    let socket_flags = [
        ("--listen", !o.listen.is_empty()),
        ("--lifetime-min", o.lifetime_min.is_some()),
        ("--lifetime-max", o.lifetime_max.is_some()),
        ("--keepalive-min", o.keepalive_min.is_some()),
        ("--keepalive-max", o.keepalive_max.is_some()),
        ("--keepalive-count", o.keepalive_count.is_some()),
        ("--fin-wait", o.fin_wait.is_some()),
        ("--max-conns", o.max_conns.is_some()),
        ("--per-ip", o.per_ip.is_some()),
        ("--ipv6-prefix", o.ipv6_prefix.is_some()),
        ("--per-ipv6-48", o.per_ipv6_48.is_some()),
        ("--backlog", o.backlog.is_some()),
    ];
    let stateless_flags = [
        ("--nflog-group", o.nflog_group.is_some()),
        ("--flow-cap", o.flow_cap.is_some()),
        ("--flow-idle", o.flow_idle.is_some()),
        ("--key-rotation", o.key_rotation.is_some()),
        ("--key-file", o.key_file.is_some()),
    ];
    let foreign = match kind {
        EngineKind::Socket => &stateless_flags[..],
        EngineKind::Stateless => &socket_flags[..],
    };
    match foreign.iter().find(|(_, given)| *given) {
        Some((flag, _)) => Err(command_line(flag, msg())),
        None => Ok(()),
    }
}

fn command_line(key: &str, message: String) -> ConfigError {
    ConfigError {
        file: "command line".into(),
        line: None,
        key: Some(key.to_string()),
        message,
    }
}

/// An error about a value whose origin (file or flag) is not tracked: it
/// names the file when there is one, like the checks always did.
fn unlocated(file: File, key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        file: file.map_or_else(|| "command line".into(), |(_, s)| s.path.clone()),
        line: None,
        key: Some(key.into()),
        message: message.into(),
    }
}

fn duration(
    v: &Option<Spanned<String>>,
    key: &str,
    src: &Source,
) -> Result<Option<Duration>, ConfigError> {
    v.as_ref()
        .map(|s| parse_duration(s.get_ref()).map_err(|m| src.error_at(s.span(), key, m)))
        .transpose()
}

/// The value of an optional spanned key.
fn v<T: Copy>(x: &Option<Spanned<T>>) -> Option<T> {
    x.as_ref().map(|s| *s.get_ref())
}

fn socket(a: &ServeOverrides, file: File) -> Result<SocketConfig, ConfigError> {
    let mut o = ServeOptions::default();
    if let Some((f, src)) = file {
        if let Some(l) = &f.listen {
            o.listen = l
                .get_ref()
                .iter()
                .map(|s| {
                    s.get_ref().trim().parse::<SocketAddr>().map_err(|_| {
                        let m = format!(
                            "invalid address {:?}; use e.g. \"0.0.0.0:2222\" or \"[::]:2222\"",
                            s.get_ref()
                        );
                        src.error_at(s.span(), "serve.listen", m)
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        let d = |v, key| duration(v, key, src);
        o.lifetime.0 = d(&f.lifetime_min, "serve.lifetime_min")?.unwrap_or(o.lifetime.0);
        o.lifetime.1 = d(&f.lifetime_max, "serve.lifetime_max")?.unwrap_or(o.lifetime.1);
        o.keepalive.0 = d(&f.keepalive_min, "serve.keepalive_min")?.unwrap_or(o.keepalive.0);
        o.keepalive.1 = d(&f.keepalive_max, "serve.keepalive_max")?.unwrap_or(o.keepalive.1);
        o.keepalive_count = v(&f.keepalive_count).unwrap_or(o.keepalive_count);
        o.fin_wait = d(&f.fin_wait, "serve.fin_wait")?.unwrap_or(o.fin_wait);
        o.max_conns = v(&f.max_conns).or(o.max_conns);
        o.per_ip = v(&f.per_ip).unwrap_or(o.per_ip);
        o.ipv6_prefix = v(&f.ipv6_prefix).unwrap_or(o.ipv6_prefix);
        o.per_ipv6_48 = v(&f.per_ipv6_48).unwrap_or(o.per_ipv6_48);
        o.backlog = v(&f.backlog).unwrap_or(o.backlog);
    }
    o.policies = policies(a, file)?;
    if !a.listen.is_empty() {
        o.listen = a.listen.clone();
    }
    o.lifetime.0 = a.lifetime_min.unwrap_or(o.lifetime.0);
    o.lifetime.1 = a.lifetime_max.unwrap_or(o.lifetime.1);
    o.keepalive.0 = a.keepalive_min.unwrap_or(o.keepalive.0);
    o.keepalive.1 = a.keepalive_max.unwrap_or(o.keepalive.1);
    o.keepalive_count = a.keepalive_count.unwrap_or(o.keepalive_count);
    o.fin_wait = a.fin_wait.unwrap_or(o.fin_wait);
    o.max_conns = a.max_conns.or(o.max_conns);
    o.per_ip = a.per_ip.unwrap_or(o.per_ip);
    o.ipv6_prefix = a.ipv6_prefix.unwrap_or(o.ipv6_prefix);
    o.per_ipv6_48 = a.per_ipv6_48.unwrap_or(o.per_ipv6_48);
    o.backlog = a.backlog.unwrap_or(o.backlog);

    let bad = |key: &str, msg: String| Err(unlocated(file, key, msg));
    if o.lifetime.0 > o.lifetime.1 {
        let (min, max) = o.lifetime;
        return bad(
            "lifetime_min",
            format!("lifetime_min ({min:?}) is larger than lifetime_max ({max:?})"),
        );
    }
    if o.lifetime.0 < Duration::from_millis(100) {
        return bad("lifetime_min", "must be at least 100ms".into());
    }
    if o.lifetime.1 > Duration::from_secs(365 * 86400) {
        return bad("lifetime_max", "must be at most one year".into());
    }
    if o.keepalive.0 > o.keepalive.1 {
        return bad(
            "keepalive_min",
            "keepalive_min is larger than keepalive_max".into(),
        );
    }
    if o.keepalive.0 < Duration::from_secs(1) || o.keepalive.1 > Duration::from_secs(32767) {
        return bad(
            "keepalive_min",
            "keepalive times must be within 1s..32767s (kernel limits)".into(),
        );
    }
    if o.keepalive_count == 0 || o.keepalive_count > 127 {
        return bad("keepalive_count", "must be within 1..127".into());
    }
    if o.fin_wait < Duration::from_secs(1) || o.fin_wait > Duration::from_secs(32767) {
        return bad(
            "fin_wait",
            "must be within 1s..32767s (kernel keepalive limits)".into(),
        );
    }
    if !(16..=64).contains(&o.ipv6_prefix) {
        return bad("ipv6_prefix", "must be within 16..64".into());
    }
    if o.listen.is_empty() {
        return bad("listen", "at least one address is needed".into());
    }
    let defaults_used = a.listen.is_empty() && file.is_none_or(|(s, _)| s.listen.is_none());
    Ok(SocketConfig {
        options: o,
        defaults_used,
    })
}

/// The file's `[serve.policy]`, then the `--policy` flags over it.
fn policies(a: &ServeOverrides, file: File) -> Result<Policies, ConfigError> {
    let mut ps = Policies::default();
    if let Some((f, src)) = file {
        for (key, entry) in f.policy.iter().flatten() {
            let at = |k: &str| format!("serve.policy.{key}{k}");
            let port = if key == "default" {
                None
            } else {
                match key.parse::<u16>() {
                    Ok(p) if p > 0 => Some(p),
                    _ => {
                        return Err(src.error_at(
                            entry.span(),
                            &at(""),
                            format!("{key:?} is not a port (1-65535) or \"default\""),
                        ))
                    }
                }
            };
            let e = entry.get_ref();
            let p = policy_from(
                text(&e.bait),
                duration(&e.drip, &at(".drip"), src)?,
                text(&e.bait_start),
                text(&e.window),
                duration(&e.syn_delay, &at(".syn_delay"), src)?,
                text(&e.syn_delay_mode),
                duration(&e.syn_delay_learn, &at(".syn_delay_learn"), src)?,
            )
            .map_err(|(k, m)| {
                let span = match k {
                    "bait" => e.bait.as_ref().map(Spanned::span),
                    "drip" => e.drip.as_ref().map(Spanned::span),
                    "bait_start" => e.bait_start.as_ref().map(Spanned::span),
                    "window" => e.window.as_ref().map(Spanned::span),
                    "syn_delay_mode" => e.syn_delay_mode.as_ref().map(Spanned::span),
                    "syn_delay_learn" => e.syn_delay_learn.as_ref().map(Spanned::span),
                    _ => e.syn_delay.as_ref().map(Spanned::span),
                };
                src.error_at(span.unwrap_or(entry.span()), &at(&format!(".{k}")), m)
            })?;
            match port {
                None => ps.default = p,
                Some(n) => ps.set_port(n, p),
            }
        }
    }
    for (port, p) in &a.policies {
        match port {
            None => ps.default = *p,
            Some(n) => ps.set_port(*n, *p),
        }
    }
    if ps.ports.len() > Policies::MAX_PORTS {
        return Err(unlocated(
            file,
            "serve.policy",
            format!("at most {} ports may have a policy", Policies::MAX_PORTS),
        ));
    }
    Ok(ps)
}

fn text(x: &Option<Spanned<String>>) -> Option<&str> {
    x.as_ref().map(|s| s.get_ref().as_str())
}

/// One policy from its parts; the error names the part (`bait`, `drip`,
/// `bait_start`, `window`, `syn_delay`, `syn_delay_mode`, `syn_delay_learn`).
fn policy_from(
    bait: Option<&str>,
    drip: Option<Duration>,
    start: Option<&str>,
    window: Option<&str>,
    syn_delay: Option<Duration>,
    syn_mode: Option<&str>,
    syn_learn: Option<Duration>,
) -> Result<Policy, (&'static str, String)> {
    let bait = match bait {
        None | Some("none") => None,
        Some(b) => Some(Bait::parse(b).ok_or((
            "bait",
            format!("unknown bait {b:?}; use \"ssh\", \"http\" or \"none\""),
        ))?),
    };
    let drip = match (bait, drip) {
        (None, Some(_)) => return Err(("drip", "drip needs a bait".into())),
        (None, None) => Duration::ZERO,
        (Some(b), d) => d.unwrap_or(b.default_drip()),
    };
    if bait.is_some() && !(policy::DRIP_MIN..=policy::DRIP_MAX).contains(&drip) {
        return Err((
            "drip",
            format!(
                "must be within {:?}..{:?}",
                policy::DRIP_MIN,
                policy::DRIP_MAX
            ),
        ));
    }
    let bait_start = match (bait, start) {
        (_, None) => BaitStart::default(),
        (None, Some(_)) => return Err(("bait_start", "bait_start needs a bait".into())),
        (Some(_), Some(s)) => BaitStart::parse(s).ok_or((
            "bait_start",
            format!("unknown bait_start {s:?}; use \"peer\" or \"accept\""),
        ))?,
    };
    let window_zero = match window {
        None | Some("normal") => false,
        Some("zero") => true,
        Some(w) => {
            return Err((
                "window",
                format!("unknown window {w:?}; use \"zero\" or \"normal\""),
            ))
        }
    };
    if bait.is_some() && window_zero && bait_start == BaitStart::Peer {
        // Named where the user wrote it: the start if given, else the window.
        return Err((
            if start.is_some() {
                "bait_start"
            } else {
                "window"
            },
            "window = \"zero\" keeps the peer's bytes out, so bait would wait for \
             them for ever; set bait_start = \"accept\" (--policy: start=accept) \
             to bait from the accept on"
                .into(),
        ));
    }
    if let Some(d) = syn_delay {
        if d < Duration::from_secs(1) || d > policy::SYN_DELAY_MAX {
            return Err((
                "syn_delay",
                format!("must be within 1s..{:?}", policy::SYN_DELAY_MAX),
            ));
        }
    }
    if syn_delay.is_none() {
        if syn_mode.is_some() {
            return Err(("syn_delay_mode", "needs a syn_delay".into()));
        }
        if syn_learn.is_some() {
            return Err(("syn_delay_learn", "needs a syn_delay".into()));
        }
    }
    let syn_mode = match syn_mode {
        None | Some("learn") => {
            let window = syn_learn.unwrap_or(policy::SYN_LEARN_DEFAULT);
            if window < Duration::from_secs(1) || window > policy::SYN_LEARN_MAX {
                return Err((
                    "syn_delay_learn",
                    format!("must be within 1s..{:?}", policy::SYN_LEARN_MAX),
                ));
            }
            SynMode::Learn { window }
        }
        Some("always") if syn_learn.is_some() => {
            return Err((
                "syn_delay_learn",
                "syn_delay_learn is the window of syn_delay_mode = \"learn\"; \
                 \"always\" delays every address"
                    .into(),
            ))
        }
        Some("always") => SynMode::Always,
        Some(m) => {
            return Err((
                "syn_delay_mode",
                format!("unknown syn_delay_mode {m:?}; use \"learn\" or \"always\""),
            ))
        }
    };
    Ok(Policy {
        bait,
        drip,
        bait_start,
        window_zero,
        syn_delay,
        syn_mode,
    })
}

/// Parses a `--policy` value: `PORT:SPEC` or `default:SPEC`, where SPEC is
/// `key=value` pairs separated by commas (`22:bait=ssh,drip=10s`,
/// `22:bait=ssh,start=accept,window=zero`, `80:window=zero,syn_delay=30s`,
/// `default:silent`).
pub fn parse_policy_flag(s: &str) -> Result<(Option<u16>, Policy), String> {
    let (port, spec) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: use PORT:SPEC or default:SPEC, e.g. 22:bait=ssh"))?;
    let port = match port.trim() {
        "default" => None,
        p => Some(
            p.parse::<u16>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{p:?} is not a port (1-65535) or \"default\""))?,
        ),
    };
    let (mut bait, mut drip, mut start, mut window, mut syn_delay) = (None, None, None, None, None);
    let (mut syn_mode, mut syn_learn) = (None, None);
    for kv in spec.split(',').map(str::trim).filter(|x| !x.is_empty()) {
        if kv == "silent" {
            continue;
        }
        let (k, v) = kv.split_once('=').ok_or_else(|| {
            format!(
                "{kv:?}: use key=value (bait, drip, start, window, syn_delay, syn_mode, syn_learn)"
            )
        })?;
        match k.trim() {
            "bait" => bait = Some(v.trim().to_string()),
            "drip" => drip = Some(parse_duration(v)?),
            "start" => start = Some(v.trim().to_string()),
            "window" => window = Some(v.trim().to_string()),
            "syn_delay" => syn_delay = Some(parse_duration(v)?),
            "syn_mode" => syn_mode = Some(v.trim().to_string()),
            "syn_learn" => syn_learn = Some(parse_duration(v)?),
            other => {
                return Err(format!(
                    "unknown policy key {other:?}; use bait, drip, start, window, syn_delay, syn_mode, syn_learn"
                ))
            }
        }
    }
    let p = policy_from(
        bait.as_deref(),
        drip,
        start.as_deref(),
        window.as_deref(),
        syn_delay,
        syn_mode.as_deref(),
        syn_learn,
    )
    // The flag's keys for the start and syn_delay's mode are shorter.
    .map_err(|(k, m)| {
        let k = match k {
            "bait_start" => "start",
            "syn_delay_mode" => "syn_mode",
            "syn_delay_learn" => "syn_learn",
            k => k,
        };
        format!("{k}: {m}")
    })?;
    Ok((port, p))
}

fn stateless(f: &ServeOverrides, file: File) -> Result<StatelessOptions, ConfigError> {
    let mut o = StatelessOptions::default();
    if let Some((s, src)) = file {
        o.nflog_group = v(&s.nflog_group).unwrap_or(o.nflog_group);
        o.flow_cap = v(&s.flow_cap).unwrap_or(o.flow_cap);
        if let Some(k) = &s.key_file {
            if k.get_ref().trim().is_empty() {
                return Err(src.error_at(k.span(), "serve.key_file", "empty path"));
            }
            o.key_file = Some(k.get_ref().into());
        }
        o.flow_idle = duration(&s.flow_idle, "serve.flow_idle", src)?.unwrap_or(o.flow_idle);
        o.key_rotation =
            duration(&s.key_rotation, "serve.key_rotation", src)?.unwrap_or(o.key_rotation);
    }
    o.nflog_group = f.nflog_group.unwrap_or(o.nflog_group);
    o.flow_cap = f.flow_cap.unwrap_or(o.flow_cap);
    o.flow_idle = f.flow_idle.unwrap_or(o.flow_idle);
    o.key_rotation = f.key_rotation.unwrap_or(o.key_rotation);
    if let Some(k) = &f.key_file {
        o.key_file = Some(k.clone());
    }
    o.policies = policies(f, file)?;
    // Bait and window zero need real sockets; syn_delay works here too.
    let socket_only = |p: &Policy| p.bait.is_some() || p.window_zero;
    if o.policies.all().any(socket_only) {
        let msg =
            "bait and window need the socket engine; the stateless engine does syn_delay only";
        if f.policies.iter().any(|(_, p)| socket_only(p)) {
            return Err(command_line("--policy", msg.into()));
        }
        if let Some((sec, src)) = file {
            for (key, e) in sec.policy.iter().flatten() {
                let v = e.get_ref();
                for (k, x) in [("bait", &v.bait), ("window", &v.window)] {
                    if let Some(x) = x {
                        if x.get_ref() != "none" && x.get_ref() != "normal" {
                            return Err(src.error_at(
                                x.span(),
                                &format!("serve.policy.{key}.{k}"),
                                msg,
                            ));
                        }
                    }
                }
            }
        }
        return Err(unlocated(file, "serve.policy", msg));
    }
    if o.flow_cap == 0 || o.flow_cap > 100_000_000 {
        return Err(unlocated(file, "flow_cap", "must be within 1..100000000"));
    }
    if o.flow_idle < Duration::from_secs(1) {
        return Err(unlocated(file, "flow_idle", "must be at least 1s"));
    }
    if o.key_rotation < Duration::from_secs(1) || o.key_rotation > Duration::from_secs(365 * 86400)
    {
        return Err(unlocated(file, "key_rotation", "must be within 1s..1 year"));
    }
    Ok(o)
}

fn stats(f: &ServeOverrides, file: File) -> Result<StatsConfig, ConfigError> {
    let section = file.map(|(s, _)| s);
    let chosen = f
        .control
        .clone()
        .or_else(|| section.and_then(|s| s.control.clone()).map(PathBuf::from));
    let control_explicit = chosen.is_some();
    let control = chosen.unwrap_or_else(|| PathBuf::from(crate::control::DEFAULT_PATH));

    let mut metrics = f.metrics;
    if metrics.is_none() {
        if let (Some(v), Some((_, src))) = (section.and_then(|s| s.metrics.as_ref()), file) {
            let addr = v.get_ref().trim().parse::<SocketAddr>().map_err(|_| {
                let m = format!(
                    "invalid address {:?}; use e.g. \"127.0.0.1:9464\"",
                    v.get_ref()
                );
                src.error_at(v.span(), "serve.metrics", m)
            })?;
            metrics = Some(addr);
        }
    }

    let chosen = f
        .history
        .clone()
        .or_else(|| section.and_then(|s| s.history.clone()).map(PathBuf::from));
    let history_default = chosen.is_none();
    let history = chosen.unwrap_or_else(|| PathBuf::from(crate::stats::history::DEFAULT_PATH));
    let history_days = f
        .history_days
        .or(section.and_then(|s| s.history_days))
        .unwrap_or(DEFAULT_HISTORY_DAYS);
    if history_days == 0 {
        let from_file = if f.history_days.is_none() { file } else { None };
        return Err(unlocated(
            from_file,
            "serve.history_days",
            "must be at least 1 (use `history = \"off\"` to keep no history)",
        ));
    }
    let history_max_rows = f
        .history_max_rows
        .or(section.and_then(|s| s.history_max_rows))
        .unwrap_or(crate::stats::history::DEFAULT_MAX_ROWS);
    let mut geoip = Vec::new();
    if let (Some(list), Some((_, src))) = (section.and_then(|s| s.geoip.as_ref()), file) {
        for p in list {
            if p.get_ref().trim().is_empty() {
                return Err(src.error_at(p.span(), "serve.geoip", "empty path"));
            }
            geoip.push(PathBuf::from(p.get_ref()));
        }
    }
    let country_metrics = section.and_then(|s| s.metrics_country).unwrap_or(false);
    if country_metrics && geoip.is_empty() {
        return Err(unlocated(
            file,
            "serve.metrics_country",
            "needs `geoip` (the country comes from its files)",
        ));
    }
    Ok(StatsConfig {
        geoip,
        country_metrics,
        control: (control.as_os_str() != OFF).then_some(control),
        control_explicit,
        metrics,
        history: (history.as_os_str() != OFF).then_some(history),
        history_default,
        history_days,
        history_max_rows,
        report: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn resolve(text: &str, o: &ServeOverrides) -> Result<ServeConfig, ConfigError> {
        let s = Source::new("t.toml", text);
        let f = config::parse(&s)?;
        ServeConfig::resolve(o, f.serve.as_ref().map(|sv| (sv, &s)))
    }

    fn socket_of(c: ServeConfig) -> SocketConfig {
        match c.engine {
            EngineConfig::Socket(s) => s,
            EngineConfig::Stateless(_) => panic!("stateless"),
        }
    }

    fn stateless_of(c: ServeConfig) -> StatelessOptions {
        match c.engine {
            EngineConfig::Stateless(s) => s,
            EngineConfig::Socket(_) => panic!("socket"),
        }
    }

    #[test]
    fn flags_override_file_override_defaults() {
        let a = ServeOverrides {
            per_ip: Some(7),
            ..Default::default()
        };
        let c = resolve(
            "[serve]\nper_ip = 5\nmax_conns = 100\nlifetime_min = \"1m\"\nlifetime_max = \"2m\"\n",
            &a,
        )
        .unwrap();
        let s = socket_of(c);
        assert_eq!(s.options.per_ip, 7);
        assert_eq!(s.options.max_conns, Some(100));
        assert_eq!(
            s.options.lifetime,
            (Duration::from_secs(60), Duration::from_secs(120))
        );
        assert_eq!(s.options.keepalive, ServeOptions::default().keepalive);
        assert!(s.defaults_used);
    }

    #[test]
    fn bad_values_in_file_name_line_and_key() {
        let d = ServeOverrides::default();
        for (text, line, key) in [
            (
                "[serve]\n\nkeepalive_max = \"forever\"\n",
                3,
                "serve.keepalive_max",
            ),
            (
                "[serve]\nlisten = [\"0.0.0.0:2222\",\n  \"localhost\"]\n",
                3,
                "serve.listen",
            ),
            ("[serve]\n\nmetrics = \"localhost\"\n", 3, "serve.metrics"),
            ("[serve]\n\nengine = \"quantum\"\n", 3, "serve.engine"),
            (
                "[serve]\nengine = \"stateless\"\nflow_idle = \"soon\"\n",
                3,
                "serve.flow_idle",
            ),
            ("[serve]\nmax_conns = -1\n", 2, "serve.max_conns"),
        ] {
            let e = resolve(text, &d).unwrap_err();
            assert_eq!(
                (e.line, e.key.as_deref()),
                (Some(line), Some(key)),
                "{text}"
            );
        }
    }

    #[test]
    fn inverted_ranges_and_zeros_are_rejected() {
        let a = ServeOverrides {
            lifetime_min: Some(Duration::from_secs(10)),
            lifetime_max: Some(Duration::from_secs(5)),
            ..Default::default()
        };
        assert!(ServeConfig::resolve(&a, None).is_err());
        let a = ServeOverrides {
            history_days: Some(0),
            ..Default::default()
        };
        assert!(ServeConfig::resolve(&a, None).is_err());
        let a = ServeOverrides {
            engine: Some(EngineKind::Stateless),
            flow_cap: Some(0),
            ..Default::default()
        };
        assert!(ServeConfig::resolve(&a, None).is_err());
    }

    #[test]
    fn engine_from_flag_file_or_default() {
        let text = "[serve]\nengine = \"stateless\"\nnflog_group = 9\nkey_rotation = \"2h\"\n";
        let o = stateless_of(resolve(text, &ServeOverrides::default()).unwrap());
        assert_eq!(o.nflog_group, 9);
        assert_eq!(o.key_rotation, Duration::from_secs(7200));
        let flag = ServeOverrides {
            nflog_group: Some(3),
            ..Default::default()
        };
        assert_eq!(stateless_of(resolve(text, &flag).unwrap()).nflog_group, 3);
        let c = ServeConfig::resolve(&ServeOverrides::default(), None).unwrap();
        assert!(matches!(c.engine, EngineConfig::Socket(_)));
    }

    #[test]
    fn a_key_or_flag_for_the_engine_not_in_use_is_reported() {
        let d = ServeOverrides::default();
        let e = resolve("[serve]\nper_ip = 3\n\nnflog_group = 9\n", &d).unwrap_err();
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(4), Some("serve.nflog_group"))
        );
        assert!(e.message.contains("stateless"), "{e}");
        let e = resolve("[serve]\nengine = \"stateless\"\nlisten = []\n", &d).unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (Some(3), Some("serve.listen")));
        // The flag picks the engine: the file's keys for the other are reported.
        let socket = ServeOverrides {
            engine: Some(EngineKind::Socket),
            ..Default::default()
        };
        let e = resolve("[serve]\nengine = \"stateless\"\nflow_cap = 5\n", &socket).unwrap_err();
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(3), Some("serve.flow_cap"))
        );
        let mixed = ServeOverrides {
            engine: Some(EngineKind::Stateless),
            per_ip: Some(3),
            ..Default::default()
        };
        let e = ServeConfig::resolve(&mixed, None).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("--per-ip"));
        assert_eq!(e.file, PathBuf::from("command line"));
    }

    #[test]
    fn stats_defaults_off_and_precedence() {
        let c = ServeConfig::resolve(&ServeOverrides::default(), None).unwrap();
        let o = c.stats;
        assert_eq!(o.control, Some(PathBuf::from(crate::control::DEFAULT_PATH)));
        assert!(!o.control_explicit && o.history_default);
        assert_eq!((o.metrics, o.history_days), (None, 90));
        assert_eq!(o.history_max_rows, crate::stats::history::DEFAULT_MAX_ROWS);
        let off = ServeOverrides {
            control: Some("off".into()),
            history: Some("off".into()),
            ..Default::default()
        };
        let o = ServeConfig::resolve(&off, None).unwrap().stats;
        assert_eq!((o.control, o.history), (None, None));
        let text = "[serve]\ncontrol = \"/tmp/c.sock\"\nmetrics = \"127.0.0.1:9464\"\nhistory = \"/tmp/h.db\"\nhistory_days = 7\n";
        let o = resolve(text, &ServeOverrides::default()).unwrap().stats;
        assert_eq!(o.control, Some(PathBuf::from("/tmp/c.sock")));
        assert!(o.control_explicit && !o.history_default);
        assert_eq!(o.metrics, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!((o.history, o.history_days), (Some("/tmp/h.db".into()), 7));
        let f = ServeOverrides {
            history_days: Some(3),
            metrics: Some("127.0.0.1:1".parse().unwrap()),
            ..Default::default()
        };
        let o = resolve(text, &f).unwrap().stats;
        assert_eq!(o.history_days, 3);
        assert_eq!(o.metrics, Some("127.0.0.1:1".parse().unwrap()));
        let capped = resolve(
            "[serve]\nhistory_max_rows = 1000\n",
            &ServeOverrides::default(),
        );
        assert_eq!(capped.unwrap().stats.history_max_rows, 1000);
        let flag = ServeOverrides {
            history_max_rows: Some(0),
            ..Default::default()
        };
        let o = resolve("[serve]\nhistory_max_rows = 1000\n", &flag).unwrap();
        assert_eq!(o.stats.history_max_rows, 0);
    }

    #[test]
    fn policies_from_the_file_and_flags() {
        let text = "[serve.policy]\n\"22\" = { bait = \"ssh\", syn_delay = \"60s\" }\n\"80\" = { bait = \"http\", drip = \"2s\", bait_start = \"accept\", window = \"zero\" }\ndefault = { window = \"zero\" }\n";
        let s = socket_of(resolve(text, &ServeOverrides::default()).unwrap());
        let ps = &s.options.policies;
        assert!(ps.default.window_zero && ps.default.bait.is_none());
        let ssh = *ps.get(ps.index_of(22));
        assert_eq!(ssh.bait, Some(Bait::Ssh));
        assert_eq!(ssh.drip, Bait::Ssh.default_drip());
        assert_eq!(ssh.syn_delay, Some(Duration::from_secs(60)));
        assert_eq!(ssh.bait_start, BaitStart::Peer);
        // syn_delay learns by default; always and another window on request.
        assert_eq!(ssh.syn_mode, SynMode::DEFAULT);
        let (_, p) = parse_policy_flag("22:syn_delay=60s,syn_mode=always").unwrap();
        assert_eq!(p.syn_mode, SynMode::Always);
        let (_, p) = parse_policy_flag("22:syn_delay=60s,syn_mode=learn,syn_learn=5s").unwrap();
        assert_eq!(
            p.syn_mode,
            SynMode::Learn {
                window: Duration::from_secs(5)
            }
        );
        let t = "[serve.policy]\n\"22\" = { syn_delay = \"5s\", syn_delay_mode = \"always\" }\n\"23\" = { syn_delay = \"5s\", syn_delay_learn = \"30s\" }\n";
        let s2 = socket_of(resolve(t, &ServeOverrides::default()).unwrap());
        let q = &s2.options.policies;
        assert_eq!(q.get(q.index_of(22)).syn_mode, SynMode::Always);
        assert_eq!(
            q.get(q.index_of(23)).to_string(),
            "syn_delay=5s,syn_learn=30s"
        );
        let http = *ps.get(ps.index_of(80));
        assert_eq!(http.bait_start, BaitStart::Accept);
        assert_eq!(
            (http.bait, http.drip),
            (Some(Bait::Http), Duration::from_secs(2))
        );
        assert!(http.window_zero);
        // A flag replaces the file's entry for its port.
        let flag = ServeOverrides {
            policies: vec![parse_policy_flag("22:bait=http,drip=1s").unwrap()],
            ..Default::default()
        };
        let s = socket_of(resolve(text, &flag).unwrap());
        let p = *s.options.policies.get(s.options.policies.index_of(22));
        assert_eq!(
            (p.bait, p.drip, p.syn_delay),
            (Some(Bait::Http), Duration::from_secs(1), None)
        );
        // Nothing configured: silent everywhere.
        let c = socket_of(ServeConfig::resolve(&ServeOverrides::default(), None).unwrap());
        assert!(c.options.policies.all().all(Policy::is_silent));
    }

    #[test]
    fn policy_mistakes_name_file_line_and_key() {
        let d = ServeOverrides::default();
        for (text, line, key) in [
            (
                "[serve.policy]\n\n\"22\" = { bait = \"telnet\" }\n",
                3,
                "serve.policy.22.bait",
            ),
            (
                "[serve.policy]\n\"x\" = { bait = \"ssh\" }\n",
                2,
                "serve.policy.x",
            ),
            (
                "[serve.policy]\n\"22\" = { drip = \"5s\" }\n",
                2,
                "serve.policy.22.drip",
            ),
            (
                "[serve.policy]\n\"22\" = { bait = \"ssh\", drip = \"1h\" }\n",
                2,
                "serve.policy.22.drip",
            ),
            (
                "[serve.policy]\n\"22\" = { window = \"tiny\" }\n",
                2,
                "serve.policy.22.window",
            ),
            (
                "[serve.policy]\ndefault = { syn_delay = \"soon\" }\n",
                2,
                "serve.policy.default.syn_delay",
            ),
            (
                "[serve.policy]\n\"22\" = { syn_delay = \"5s\", syn_delay_mode = \"sometimes\" }\n",
                2,
                "serve.policy.22.syn_delay_mode",
            ),
            (
                "[serve.policy]\n\"22\" = { syn_delay_mode = \"always\" }\n",
                2,
                "serve.policy.22.syn_delay_mode",
            ),
            (
                "[serve.policy]\n\"22\" = { syn_delay = \"5s\", syn_delay_learn = \"2h\" }\n",
                2,
                "serve.policy.22.syn_delay_learn",
            ),
            (
                "[serve.policy]\n\"22\" = { syn_delay = \"5s\", syn_delay_mode = \"always\", syn_delay_learn = \"9s\" }\n",
                2,
                "serve.policy.22.syn_delay_learn",
            ),
            (
                "[serve.policy]\ndefault = { syn_delay = \"2h\" }\n",
                2,
                "serve.policy.default.syn_delay",
            ),
            (
                "[serve.policy]\n\"22\" = { bait = \"ssh\", bait_start = \"later\" }\n",
                2,
                "serve.policy.22.bait_start",
            ),
            (
                "[serve.policy]\n\"22\" = { bait_start = \"accept\" }\n",
                2,
                "serve.policy.22.bait_start",
            ),
            // Window zero keeps out the bytes bait would wait for.
            (
                "[serve.policy]\n\n\"22\" = { bait = \"ssh\", window = \"zero\" }\n",
                3,
                "serve.policy.22.window",
            ),
            (
                "[serve.policy]\n\"22\" = { bait = \"ssh\", bait_start = \"peer\", window = \"zero\" }\n",
                2,
                "serve.policy.22.bait_start",
            ),
        ] {
            let e = resolve(text, &d).unwrap_err();
            assert_eq!(
                (e.line, e.key.as_deref()),
                (Some(line), Some(key)),
                "{text}: {e}"
            );
        }
        let e = resolve(
            "[serve.policy]\n\"22\" = { bait = \"ssh\", colour = \"red\" }\n",
            &d,
        )
        .unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.contains("colour"), "{e}");
        for bad in [
            "22",
            "0:bait=ssh",
            "22:bait=ftp",
            "22:drip=1s",
            "22:speed=1",
            "x:bait=ssh",
            "22:bait=ssh,start=later",
            "22:start=accept",
            "22:syn_mode=always",
            "22:syn_delay=5s,syn_mode=often",
            "22:syn_delay=5s,syn_learn=0s",
            "22:syn_delay=5s,syn_mode=always,syn_learn=5s",
        ] {
            assert!(parse_policy_flag(bad).is_err(), "{bad}");
        }
        let e = parse_policy_flag("22:bait=ssh,window=zero").unwrap_err();
        assert!(e.contains("start=accept"), "{e}");
        let e = resolve(
            "[serve.policy]\n\"22\" = { bait = \"ssh\", window = \"zero\" }\n",
            &d,
        )
        .unwrap_err();
        assert!(e.message.contains("bait_start = \"accept\""), "{e}");
        let (_, p) = parse_policy_flag("22:bait=ssh,start=accept,window=zero").unwrap();
        assert_eq!((p.bait_start, p.window_zero), (BaitStart::Accept, true));
        assert_eq!(p.to_string(), "bait=ssh,drip=10s,start=accept,window=zero");
        let (_, p) = parse_policy_flag("22:bait=ssh,start=peer").unwrap();
        assert_eq!(p.bait_start, BaitStart::Peer);
        assert_eq!(
            parse_policy_flag("default:silent").unwrap(),
            (None, Policy::SILENT)
        );
    }

    #[test]
    fn the_stateless_engine_takes_syn_delay_only() {
        let text =
            "[serve]\nengine = \"stateless\"\n[serve.policy]\n\"22\" = { syn_delay = \"30s\" }\n";
        let o = stateless_of(resolve(text, &ServeOverrides::default()).unwrap());
        assert_eq!(
            o.policies.get(o.policies.index_of(22)).syn_delay,
            Some(Duration::from_secs(30))
        );
        let text = "[serve]\nengine = \"stateless\"\n[serve.policy]\n\"22\" = { syn_delay = \"30s\" }\n\"80\" = { bait = \"http\" }\n";
        let e = resolve(text, &ServeOverrides::default()).unwrap_err();
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(5), Some("serve.policy.80.bait")),
            "{e}"
        );
        let flag = ServeOverrides {
            engine: Some(EngineKind::Stateless),
            policies: vec![parse_policy_flag("22:window=zero").unwrap()],
            ..Default::default()
        };
        let e = ServeConfig::resolve(&flag, None).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("--policy"));
    }

    #[test]
    fn user_and_group_come_from_the_file_unless_flagged() {
        let text = "[serve]\nuser = \"nobody\"\ngroup = \"nogroup\"\n";
        let c = resolve(text, &ServeOverrides::default()).unwrap();
        assert_eq!(c.privileges.user.as_deref(), Some("nobody"));
        assert_eq!(c.privileges.group.as_deref(), Some("nogroup"));
        let flag = ServeOverrides {
            user: Some("daemon".into()),
            ..Default::default()
        };
        let c = resolve(text, &flag).unwrap();
        assert_eq!(c.privileges.user.as_deref(), Some("daemon"));
        assert_eq!(c.privileges.group.as_deref(), Some("nogroup"));
        assert!(!ServeConfig::resolve(&ServeOverrides::default(), None)
            .unwrap()
            .privileges
            .is_drop());
    }
}
