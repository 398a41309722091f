//! `tarpit serve`: its flags; [`config::serve`](crate::config::serve) merges
//! them over `[serve]`, [`daemon`](crate::daemon) runs the result.

use super::{load_config, Cli, Error};
use crate::config::serve::parse_policy_flag;
use crate::config::{parse_duration, EngineKind, ServeConfig, ServeOverrides};
use crate::engine::policy::Policy;
use clap::{Args, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Args, Default, Clone)]
pub struct ServeArgs {
    /// Address to listen on (repeatable). Default: 0.0.0.0:2222 and [::]:2222.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Vec<SocketAddr>,
    /// Shortest lifetime of a held connection.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub lifetime_min: Option<Duration>,
    /// Longest lifetime of a held connection.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub lifetime_max: Option<Duration>,
    /// Shortest keepalive idle/interval.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub keepalive_min: Option<Duration>,
    /// Longest keepalive idle/interval.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub keepalive_max: Option<Duration>,
    /// Unanswered keepalive probes before a peer counts as gone.
    #[arg(long, value_name = "N")]
    pub keepalive_count: Option<u32>,
    /// After a peer's FIN, the next keepalive probe comes this long after it:
    /// just past the attacker kernel's FIN-WAIT-2 timeout (Linux: 60s).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub fin_wait: Option<Duration>,
    /// Most connections held at once (default: open-file limit minus a
    /// reserve, and at most a quarter of RAM at 8 KiB each).
    #[arg(long, value_name = "N")]
    pub max_conns: Option<usize>,
    /// Most connections held per IPv4 address or IPv6 prefix (0 = unlimited).
    #[arg(long, value_name = "N")]
    pub per_ip: Option<usize>,
    /// IPv6 prefix length peers are grouped by for --per-ip (16-64).
    #[arg(long, value_name = "BITS")]
    pub ipv6_prefix: Option<u8>,
    /// Most connections held per IPv6 /48 (a site), whatever its /64s
    /// (0 = unlimited; default 512).
    #[arg(long = "per-ipv6-48", value_name = "N")]
    pub per_ipv6_48: Option<usize>,
    /// listen() backlog.
    #[arg(long, value_name = "N")]
    pub backlog: Option<u32>,
    /// What connections to a port meet (repeatable; over `[serve.policy]`):
    /// PORT:SPEC or default:SPEC, SPEC being bait=ssh|http, drip=DURATION,
    /// start=peer|accept, window=zero, syn_delay=DURATION, syn_mode=learn|always,
    /// syn_learn=DURATION, comma-separated; `default:silent` is
    /// the built-in default. PORT is the original destination port.
    #[arg(long, value_parser = parse_policy_flag, value_name = "PORT:SPEC")]
    pub policy: Vec<(Option<u16>, Policy)>,
    /// Take over the listeners and held connections of the `tarpit serve`
    /// answering on the control socket (none answering: start fresh).
    #[arg(long)]
    pub takeover: bool,
    /// Switch to this user after binding.
    #[arg(long)]
    pub user: Option<String>,
    /// Switch to this group after binding.
    #[arg(long)]
    pub group: Option<String>,
    /// Control socket for `tarpit stats` (unix socket, mode 0660), or `off`.
    /// Default: /run/tarpit/control.sock.
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (off by default).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<SocketAddr>,
    /// History database (SQLite), or `off`. Default: /var/lib/tarpit/history.db.
    #[arg(long, value_name = "PATH")]
    pub history: Option<PathBuf>,
    /// Days of history kept (default 90).
    #[arg(long, value_name = "DAYS")]
    pub history_days: Option<u32>,
    /// Most rows the history keeps, the oldest pruned first (default
    /// 5,000,000; 0 = no cap).
    #[arg(long, value_name = "ROWS")]
    pub history_max_rows: Option<u64>,
    /// Connection records logged per second for all hosts together, in
    /// bursts of 5 s worth; the rest is summarised (default 200; 0 = all).
    #[arg(long, value_name = "N")]
    pub records_per_sec: Option<u32>,
    /// Connection records one host (IPv4 address, IPv6 /64) may log in a
    /// burst, then one a second; the rest is summarised (default 100; 0 = all).
    #[arg(long, value_name = "N")]
    pub records_per_host: Option<u32>,
    /// Engine: `socket` (default) or `stateless` (needs the raw-priority
    /// nftables log+drop rules, see `tarpit watch` with engine = "stateless").
    #[arg(long, value_enum, value_name = "ENGINE")]
    pub engine: Option<Engine>,
    /// Stateless engine: nfnetlink_log group the nftables rules log to.
    #[arg(long, value_name = "N")]
    pub nflog_group: Option<u16>,
    /// Stateless engine: most flows kept for statistics (~56 bytes each).
    #[arg(long, value_name = "N")]
    pub flow_cap: Option<usize>,
    /// Stateless engine: a flow silent this long is reported ended.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub flow_idle: Option<Duration>,
    /// Stateless engine: SYN-cookie key lifetime; connections are answered
    /// for one to two periods. SIGUSR1 rotates at once.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub key_rotation: Option<Duration>,
    /// Stateless engine: keep the SYN-cookie keys in this file (mode 0600)
    /// so connections survive a restart.
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
}

/// Which engine holds the connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Engine {
    /// Accept and hold real sockets (one kernel socket per connection).
    Socket,
    /// Answer packets nftables logs to nfnetlink_log; nothing per connection.
    Stateless,
}

impl ServeArgs {
    fn overrides(&self) -> ServeOverrides {
        let a = self.clone();
        ServeOverrides {
            listen: a.listen,
            lifetime_min: a.lifetime_min,
            lifetime_max: a.lifetime_max,
            keepalive_min: a.keepalive_min,
            keepalive_max: a.keepalive_max,
            keepalive_count: a.keepalive_count,
            fin_wait: a.fin_wait,
            max_conns: a.max_conns,
            per_ip: a.per_ip,
            ipv6_prefix: a.ipv6_prefix,
            per_ipv6_48: a.per_ipv6_48,
            backlog: a.backlog,
            takeover: a.takeover,
            user: a.user,
            group: a.group,
            control: a.control,
            metrics: a.metrics,
            history: a.history,
            history_days: a.history_days,
            history_max_rows: a.history_max_rows,
            records_per_sec: a.records_per_sec,
            records_per_host: a.records_per_host,
            engine: a.engine.map(|e| match e {
                Engine::Socket => EngineKind::Socket,
                Engine::Stateless => EngineKind::Stateless,
            }),
            nflog_group: a.nflog_group,
            flow_cap: a.flow_cap,
            flow_idle: a.flow_idle,
            key_rotation: a.key_rotation,
            key_file: a.key_file,
            policies: a.policy,
        }
    }
}

pub fn run(cli: &Cli, a: &ServeArgs) -> Result<(), Error> {
    let loaded = load_config(cli.config.as_deref())?;
    let section = loaded
        .as_ref()
        .and_then(|(c, s)| c.serve.as_ref().map(|sv| (sv, s)));
    let mut cfg = ServeConfig::resolve(&a.overrides(), section)?;
    if let Some((c, s)) = &loaded {
        cfg.stats.report = crate::abuse::settings::resolve(c, s)?;
    }
    Ok(crate::daemon::serve(cfg)?)
}
