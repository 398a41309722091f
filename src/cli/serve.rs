//! `tarpit serve`: flags, their merge with `[serve]`, and the process around
//! the engine (limits, privileges, signals).

use super::{fail, Cli, EXIT_CONFIG};
use crate::config::{self, parse_duration, ConfigError, ServeSection, Source};
use crate::engine::socket::{self as listener, ServeOptions, Server};
use crate::sys;
use crate::systemd;
use clap::Args;
use std::net::SocketAddr;
use std::process::ExitCode;
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
    /// Most connections held at once (default: open-file limit minus a reserve).
    #[arg(long, value_name = "N")]
    pub max_conns: Option<usize>,
    /// Most connections held per IPv4 address or IPv6 prefix (0 = unlimited).
    #[arg(long, value_name = "N")]
    pub per_ip: Option<usize>,
    /// IPv6 prefix length peers are grouped by for --per-ip (16-64).
    #[arg(long, value_name = "BITS")]
    pub ipv6_prefix: Option<u8>,
    /// listen() backlog.
    #[arg(long, value_name = "N")]
    pub backlog: Option<u32>,
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
    #[command(flatten)]
    pub stats: super::serve_stats::StatsFlags,
    #[command(flatten)]
    pub engine: super::serve_stateless::EngineFlags,
}

/// Merges flags over the file over the defaults, and validates.
pub fn resolve(
    a: &ServeArgs,
    file: Option<(&ServeSection, &Source)>,
) -> Result<ServeOptions, ConfigError> {
    let d = ServeOptions::default();
    let mut o = d.clone();
    let cli_err = |key: &str, msg: String| ConfigError {
        file: "command line".into(),
        line: None,
        key: Some(key.to_string()),
        message: msg,
    };
    let dur = |v: &Option<toml::Spanned<String>>,
               key: &str,
               src: &Source|
     -> Result<Option<Duration>, ConfigError> {
        match v {
            None => Ok(None),
            Some(s) => parse_duration(s.get_ref())
                .map(Some)
                .map_err(|m| src.error_at(s.span(), key, m)),
        }
    };
    if let Some((f, src)) = file {
        if let Some(l) = &f.listen {
            o.listen = l
                .iter()
                .map(|s| {
                    s.get_ref().trim().parse::<SocketAddr>().map_err(|_| {
                        src.error_at(
                            s.span(),
                            "serve.listen",
                            format!(
                                "invalid address {:?}; use e.g. \"0.0.0.0:2222\" or \"[::]:2222\"",
                                s.get_ref()
                            ),
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = dur(&f.lifetime_min, "serve.lifetime_min", src)? {
            o.lifetime.0 = v;
        }
        if let Some(v) = dur(&f.lifetime_max, "serve.lifetime_max", src)? {
            o.lifetime.1 = v;
        }
        if let Some(v) = dur(&f.keepalive_min, "serve.keepalive_min", src)? {
            o.keepalive.0 = v;
        }
        if let Some(v) = dur(&f.keepalive_max, "serve.keepalive_max", src)? {
            o.keepalive.1 = v;
        }
        o.keepalive_count = f.keepalive_count.unwrap_or(o.keepalive_count);
        if let Some(v) = dur(&f.fin_wait, "serve.fin_wait", src)? {
            o.fin_wait = v;
        }
        o.max_conns = f.max_conns.or(o.max_conns);
        o.per_ip = f.per_ip.unwrap_or(o.per_ip);
        o.ipv6_prefix = f.ipv6_prefix.unwrap_or(o.ipv6_prefix);
        o.backlog = f.backlog.unwrap_or(o.backlog);
    }
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
    o.backlog = a.backlog.unwrap_or(o.backlog);

    let (where_file, line_of) = match file {
        Some((_, src)) => (src.path.clone(), Some(src)),
        None => ("command line".into(), None),
    };
    let bad = |key: &str, msg: String| match line_of {
        Some(_) => ConfigError {
            file: where_file.clone(),
            line: None,
            key: Some(key.into()),
            message: msg,
        },
        None => cli_err(key, msg),
    };
    if o.lifetime.0 > o.lifetime.1 {
        return Err(bad(
            "lifetime_min",
            format!(
                "lifetime_min ({:?}) is larger than lifetime_max ({:?})",
                o.lifetime.0, o.lifetime.1
            ),
        ));
    }
    if o.lifetime.0 < Duration::from_millis(100) {
        return Err(bad("lifetime_min", "must be at least 100ms".into()));
    }
    if o.lifetime.1 > Duration::from_secs(365 * 86400) {
        return Err(bad("lifetime_max", "must be at most one year".into()));
    }
    if o.keepalive.0 > o.keepalive.1 {
        return Err(bad(
            "keepalive_min",
            "keepalive_min is larger than keepalive_max".into(),
        ));
    }
    if o.keepalive.0 < Duration::from_secs(1) || o.keepalive.1 > Duration::from_secs(32767) {
        return Err(bad(
            "keepalive_min",
            "keepalive times must be within 1s..32767s (kernel limits)".into(),
        ));
    }
    if o.keepalive_count == 0 || o.keepalive_count > 127 {
        return Err(bad("keepalive_count", "must be within 1..127".into()));
    }
    if o.fin_wait < Duration::from_secs(1) || o.fin_wait > Duration::from_secs(32767) {
        return Err(bad(
            "fin_wait",
            "must be within 1s..32767s (kernel keepalive limits)".into(),
        ));
    }
    if !(16..=64).contains(&o.ipv6_prefix) {
        return Err(bad("ipv6_prefix", "must be within 16..64".into()));
    }
    if o.listen.is_empty() {
        return Err(bad("listen", "at least one address is needed".into()));
    }
    Ok(o)
}

pub fn run(cli: &Cli, a: &ServeArgs) -> ExitCode {
    let loaded = match &cli.config {
        Some(p) => match config::load(p) {
            Ok(x) => Some(x),
            Err(e) => return fail(EXIT_CONFIG, e),
        },
        None => None,
    };
    let section = loaded
        .as_ref()
        .and_then(|(c, s)| c.serve.as_ref().map(|sv| (sv, s)));
    let opts = match resolve(a, section) {
        Ok(o) => o,
        Err(e) => return fail(EXIT_CONFIG, e),
    };
    let stats_opts = match super::serve_stats::resolve(&a.stats, section) {
        Ok(o) => o,
        Err(e) => return fail(EXIT_CONFIG, e),
    };
    match super::serve_stateless::engine(&a.engine, section) {
        Ok(super::serve_stateless::Engine::Socket) => {}
        Ok(super::serve_stateless::Engine::Stateless) => {
            let o = match super::serve_stateless::resolve(&a.engine, section) {
                Ok(o) => o,
                Err(e) => return fail(EXIT_CONFIG, e),
            };
            // An explicit key file that cannot be used is a configuration
            // error, found before anything starts.
            if let Some(p) = &o.key_file {
                if let Err(e) = crate::engine::stateless::keyfile::read(p) {
                    return fail(EXIT_CONFIG, e);
                }
            }
            let label = crate::engine::stateless::listener_label(o.nflog_group);
            let stats = match super::serve_stats::prepare(&stats_opts, &[label]) {
                Ok(s) => s,
                Err(e) => return fail(1, e),
            };
            return super::serve_stateless::run(o, stats, (a.user.as_deref(), a.group.as_deref()));
        }
        Err(e) => return fail(EXIT_CONFIG, e),
    }
    let defaults_used = a.listen.is_empty() && section.is_none_or(|(s, _)| s.listen.is_none());

    let nofile = match sys::raise_nofile_limit() {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read RLIMIT_NOFILE; assuming 1024");
            1024
        }
    };
    let max_conns = listener::effective_max_conns(&opts, nofile);

    // Listeners systemd bound for us (tarpit.socket) win over the addresses
    // in the flags or the file.
    let activated = match systemd::activated_listeners() {
        Ok(v) => v,
        Err(e) => return fail(1, e),
    };
    let mut bound = Vec::new();
    let mut inherited_conns = Vec::new();
    let inherited = if a.takeover {
        let Some(ctl) = stats_opts.control.as_deref() else {
            return fail(
                EXIT_CONFIG,
                "--takeover needs the control socket (not --control off)",
            );
        };
        match super::takeover::receive(ctl) {
            Ok(i) => i,
            Err(e) => return fail(1, e),
        }
    } else {
        None
    };
    let took_over = inherited.is_some();
    let can_hand_over = stats_opts.control.is_some();
    if let Some(inh) = inherited {
        let n = inh.conns.len();
        let old = inh.old_pid;
        bound = inh.listeners;
        inherited_conns = inh.conns;
        if let Err(e) = inh.confirm.confirm() {
            return fail(1, format!("takeover: cannot confirm: {e}"));
        }
        tracing::info!(
            conns = n,
            old_pid = old,
            "took over listeners and connections"
        );
        if !super::takeover::wait_gone(old, Duration::from_secs(10)) {
            tracing::warn!(
                old_pid = old,
                "old process still running after the takeover"
            );
        }
    } else if let Some(ls) = activated {
        if !defaults_used {
            tracing::warn!("socket-activated: ignoring the configured listen addresses");
        }
        bound = ls;
    } else {
        // Bind each address; with the built-in defaults a host without IPv6
        // still serves IPv4.
        for addr in &opts.listen {
            let one = ServeOptions {
                listen: vec![*addr],
                ..opts.clone()
            };
            match listener::bind_all(&one) {
                Ok(mut b) => bound.append(&mut b),
                Err((a, e)) if defaults_used && a.is_ipv6() && bound.len() == 1 => {
                    tracing::warn!(address = %a, error = %e, "IPv6 unavailable; serving IPv4 only");
                }
                Err((a, e)) => return fail(EXIT_CONFIG, format!("cannot listen on {a}: {e}")),
            }
        }
    }
    for b in &bound {
        let rcvbuf = b.sock.recv_buffer_size().unwrap_or(0);
        tracing::info!(listener = %b.label, rcvbuf, "listening");
    }

    let stats = match super::serve_stats::prepare(
        &stats_opts,
        &bound.iter().map(|b| b.label.clone()).collect::<Vec<_>>(),
    ) {
        Ok(s) => s,
        Err(e) => return fail(1, e),
    };

    if cli_has_privdrop(a) {
        if let Err(e) = sys::drop_privileges(a.user.as_deref(), a.group.as_deref()) {
            return fail(1, format!("cannot drop privileges: {e}"));
        }
    }

    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(1, format!("cannot start runtime: {e}")),
    };
    let result = rt.block_on(async move {
        let server = Server::inherit(opts.clone(), bound, inherited_conns, stats.observers(), max_conns)?;
        let handle = server.handle();
        let stats = stats.start(handle.clone());
        tracing::info!(pid = std::process::id(), max_conns, per_ip = opts.per_ip, lifetime = ?opts.lifetime, keepalive = ?opts.keepalive, "serving");
        if took_over {
            systemd::notify_main_pid();
        }
        systemd::notify_ready(&systemd::status_line(0, 0, 0.0, 0.0));
        if can_hand_over {
            tokio::spawn(reexec_on_sigusr2());
        }
        if std::env::var_os("NOTIFY_SOCKET").is_some() {
            tokio::spawn(report_status(handle.clone()));
        }
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("signal received; releasing all connections");
            systemd::notify_stopping("releasing all connections");
            handle.shutdown();
        });
        let totals = server.run().await;
        stats.finish().await;
        if totals.handed_over > 0 {
            tracing::info!(conns = totals.handed_over, "handed over to the new process; exiting");
        }
        tracing::info!(trapped = totals.trapped, ended = totals.ended, attacker_secs = totals.engaged_secs,
            held_secs = totals.held_secs, "stopped");
        Ok::<_, std::io::Error>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, e),
    }
}

/// Keeps `systemctl status` showing how many connections are held, until
/// the server stops answering.
async fn report_status(handle: listener::Handle) {
    let mut tick = tokio::time::interval(systemd::STATUS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = String::new();
    loop {
        tick.tick().await;
        let Some(snap) = handle.snapshot().await else {
            return;
        };
        let t = &snap.totals;
        let line = systemd::status_line(t.held_now, t.trapped, t.engaged_hours(), t.held_hours());
        if line != last {
            systemd::notify_status(&line);
            last = line;
        }
    }
}

/// SIGUSR2 (`systemctl reload`): start a fresh copy of ourselves that takes
/// everything over; if it fails, we simply keep serving.
async fn reexec_on_sigusr2() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut usr2) = signal(SignalKind::user_defined2()) else {
        return;
    };
    while usr2.recv().await.is_some() {
        match super::takeover::spawn_successor() {
            Ok(pid) => tracing::info!(successor = pid, "SIGUSR2: started a successor to take over"),
            Err(e) => {
                tracing::error!(error = %e, "SIGUSR2: cannot start a successor; keeping everything")
            }
        }
    }
}

fn cli_has_privdrop(a: &ServeArgs) -> bool {
    a.user.is_some() || a.group.is_some()
}

pub(super) async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    let mut int = match signal(SignalKind::interrupt()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(t: &str) -> Source {
        Source::new("t.toml", t)
    }

    #[test]
    fn flags_override_file_override_defaults() {
        let s = src(
            "[serve]\nper_ip = 5\nmax_conns = 100\nlifetime_min = \"1m\"\nlifetime_max = \"2m\"\n",
        );
        let f = config::parse(&s).unwrap();
        let a = ServeArgs {
            per_ip: Some(7),
            ..Default::default()
        };
        let o = resolve(&a, Some((f.serve.as_ref().unwrap(), &s))).unwrap();
        assert_eq!(o.per_ip, 7);
        assert_eq!(o.max_conns, Some(100));
        assert_eq!(
            o.lifetime,
            (Duration::from_secs(60), Duration::from_secs(120))
        );
        assert_eq!(o.keepalive, ServeOptions::default().keepalive);
    }

    #[test]
    fn bad_duration_in_file_names_line_and_key() {
        let s = src("[serve]\n\nkeepalive_max = \"forever\"\n");
        let f = config::parse(&s).unwrap();
        let e = resolve(&ServeArgs::default(), Some((f.serve.as_ref().unwrap(), &s))).unwrap_err();
        assert_eq!(e.line, Some(3));
        assert_eq!(e.key.as_deref(), Some("serve.keepalive_max"));
    }

    #[test]
    fn bad_listen_in_file_names_line() {
        let s = src("[serve]\nlisten = [\"0.0.0.0:2222\",\n  \"localhost\"]\n");
        let f = config::parse(&s).unwrap();
        let e = resolve(&ServeArgs::default(), Some((f.serve.as_ref().unwrap(), &s))).unwrap_err();
        assert_eq!(e.line, Some(3));
        assert_eq!(e.key.as_deref(), Some("serve.listen"));
    }

    #[test]
    fn inverted_ranges_are_rejected() {
        let a = ServeArgs {
            lifetime_min: Some(Duration::from_secs(10)),
            lifetime_max: Some(Duration::from_secs(5)),
            ..Default::default()
        };
        assert!(resolve(&a, None).is_err());
    }
}
