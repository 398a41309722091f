//! `tarpit serve --engine stateless`: its flags (`--engine`,
//! `--nflog-group`, `--flow-cap`, `--flow-idle`, `--key-rotation`), their
//! merge with `[serve]`, and the process around the stateless engine. Kept
//! apart from `serve.rs` so each engine's glue stays small.

use super::fail;
use crate::config::{parse_duration, ConfigError, ServeSection, Source};
use crate::engine::stateless::{StatelessOptions, StatelessServer};
use crate::sys;
use crate::systemd;
use clap::{Args, ValueEnum};
use std::process::ExitCode;
use std::time::Duration;

/// Which engine holds the connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Engine {
    /// Accept and hold real sockets (one kernel socket per connection).
    #[default]
    Socket,
    /// Answer packets nftables logs to nfnetlink_log; nothing per connection.
    Stateless,
}

#[derive(Debug, Args, Default, Clone)]
pub struct EngineFlags {
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
    pub key_file: Option<std::path::PathBuf>,
}

/// The engine chosen by flags over the file.
pub fn engine(
    f: &EngineFlags,
    file: Option<(&ServeSection, &Source)>,
) -> Result<Engine, ConfigError> {
    if let Some(e) = f.engine {
        return Ok(e);
    }
    match file.and_then(|(s, src)| s.engine.as_ref().map(|e| (e, src))) {
        None => Ok(Engine::Socket),
        Some((e, src)) => match e.get_ref().as_str() {
            "socket" => Ok(Engine::Socket),
            "stateless" => Ok(Engine::Stateless),
            other => Err(src.error_at(
                e.span(),
                "serve.engine",
                format!("unknown engine {other:?}; use \"socket\" or \"stateless\""),
            )),
        },
    }
}

/// Flags over `[serve]` over defaults, validated.
pub fn resolve(
    f: &EngineFlags,
    file: Option<(&ServeSection, &Source)>,
) -> Result<StatelessOptions, ConfigError> {
    let mut o = StatelessOptions::default();
    if let Some((s, src)) = file {
        o.nflog_group = s.nflog_group.unwrap_or(o.nflog_group);
        o.flow_cap = s.flow_cap.unwrap_or(o.flow_cap);
        if let Some(k) = &s.key_file {
            if k.get_ref().trim().is_empty() {
                return Err(src.error_at(k.span(), "serve.key_file", "empty path"));
            }
            o.key_file = Some(k.get_ref().into());
        }
        for (v, key, slot) in [
            (&s.flow_idle, "serve.flow_idle", &mut o.flow_idle),
            (&s.key_rotation, "serve.key_rotation", &mut o.key_rotation),
        ] {
            if let Some(v) = v {
                *slot = parse_duration(v.get_ref()).map_err(|m| src.error_at(v.span(), key, m))?;
            }
        }
    }
    o.nflog_group = f.nflog_group.unwrap_or(o.nflog_group);
    o.flow_cap = f.flow_cap.unwrap_or(o.flow_cap);
    o.flow_idle = f.flow_idle.unwrap_or(o.flow_idle);
    o.key_rotation = f.key_rotation.unwrap_or(o.key_rotation);
    if let Some(k) = &f.key_file {
        o.key_file = Some(k.clone());
    }
    let bad = |key: &str, message: &str| ConfigError {
        file: file
            .map(|(_, s)| s.path.clone())
            .unwrap_or_else(|| "command line".into()),
        line: None,
        key: Some(key.into()),
        message: message.into(),
    };
    if o.flow_cap == 0 || o.flow_cap > 100_000_000 {
        return Err(bad("flow_cap", "must be within 1..100000000"));
    }
    if o.flow_idle < Duration::from_secs(1) {
        return Err(bad("flow_idle", "must be at least 1s"));
    }
    if o.key_rotation < Duration::from_secs(1) || o.key_rotation > Duration::from_secs(365 * 86400)
    {
        return Err(bad("key_rotation", "must be within 1s..1 year"));
    }
    Ok(o)
}

/// Runs the stateless engine until SIGTERM/SIGINT.
pub fn run(
    opts: StatelessOptions,
    stats: super::serve_stats::Prepared,
    privdrop: (Option<&str>, Option<&str>),
) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(1, format!("cannot start runtime: {e}")),
    };
    let result = rt.block_on(async move {
        let server = StatelessServer::bind(&opts, stats.observers())?;
        // Both sockets are open: root is no longer needed.
        if privdrop.0.is_some() || privdrop.1.is_some() {
            sys::drop_privileges(privdrop.0, privdrop.1).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot drop privileges: {e}"))
            })?;
        }
        let handle = server.handle();
        let stats = stats.start_with(
            crate::engine::stateless::snapshot_handler(handle.clone()),
            None,
        );
        tracing::info!(
            nflog_group = opts.nflog_group,
            flow_cap = opts.flow_cap,
            key_rotation = ?opts.key_rotation,
            "serving (stateless engine)"
        );
        systemd::notify_ready(&systemd::status_line(0, 0, 0.0, 0.0));
        let h = handle.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
                return;
            };
            while usr1.recv().await.is_some() {
                h.rotate_key().await;
            }
        });
        tokio::spawn(async move {
            super::serve::wait_for_signal().await;
            tracing::info!("signal received; stopping");
            systemd::notify_stopping("stopping");
            handle.shutdown();
        });
        let (totals, counters) = server.run().await;
        stats.finish().await;
        tracing::info!(
            trapped = totals.trapped,
            ended = totals.ended,
            attacker_secs = totals.engaged_secs,
            held_secs = totals.held_secs,
            packets = counters.packets,
            syn_acks = counters.syn_acks,
            acks = counters.acks,
            send_errors = counters.send_errors,
            overruns = counters.overruns,
            "stopped"
        );
        Ok::<_, std::io::Error>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(t: &str) -> Source {
        Source::new("t.toml", t)
    }

    #[test]
    fn engine_from_flag_file_or_default() {
        let s = src("[serve]\nengine = \"stateless\"\nnflog_group = 9\nkey_rotation = \"2h\"\n");
        let f = crate::config::parse(&s).unwrap();
        let file = Some((f.serve.as_ref().unwrap(), &s));
        assert_eq!(
            engine(&EngineFlags::default(), file).unwrap(),
            Engine::Stateless
        );
        assert_eq!(
            engine(&EngineFlags::default(), None).unwrap(),
            Engine::Socket
        );
        let flag = EngineFlags {
            engine: Some(Engine::Socket),
            nflog_group: Some(3),
            ..Default::default()
        };
        assert_eq!(engine(&flag, file).unwrap(), Engine::Socket);
        let o = resolve(&EngineFlags::default(), file).unwrap();
        assert_eq!(o.nflog_group, 9);
        assert_eq!(o.key_rotation, Duration::from_secs(7200));
        assert_eq!(resolve(&flag, file).unwrap().nflog_group, 3);
    }

    #[test]
    fn bad_values_name_line_and_key() {
        let s = src("[serve]\n\nengine = \"quantum\"\n");
        let f = crate::config::parse(&s).unwrap();
        let e = engine(
            &EngineFlags::default(),
            Some((f.serve.as_ref().unwrap(), &s)),
        )
        .unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (Some(3), Some("serve.engine")));
        let s = src("[serve]\nflow_idle = \"soon\"\n");
        let f = crate::config::parse(&s).unwrap();
        let e = resolve(
            &EngineFlags::default(),
            Some((f.serve.as_ref().unwrap(), &s)),
        )
        .unwrap_err();
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(2), Some("serve.flow_idle"))
        );
        let zero = EngineFlags {
            flow_cap: Some(0),
            ..Default::default()
        };
        assert!(resolve(&zero, None).is_err());
    }
}
