//! `tarpit check-config`: validate the whole file without running anything.

use super::{load_config, Cli, Error};
use crate::config::{ConfigError, FileConfig, ServeConfig, ServeOverrides, Source};
use crate::watcher::{settings, WatchSettings};
use clap::Args;

#[derive(Debug, Args, Clone, Default)]
pub struct CheckConfigArgs {}

/// Validates a parsed file exactly as `serve` and `watch` would read it
/// (`None`: no file, the built-in defaults); the watcher's settings on
/// success. Touches nothing outside memory.
pub fn validate(loaded: Option<(&FileConfig, &Source)>) -> Result<WatchSettings, ConfigError> {
    if let Some((cfg, src)) = loaded {
        if let Some(s) = &cfg.serve {
            ServeConfig::resolve(&ServeOverrides::default(), Some((s, src)))?;
        }
        crate::abuse::settings::resolve(cfg, src)?;
    }
    settings::resolve(loaded.and_then(|(c, s)| c.watch.as_ref().map(|w| (w, s))))
}

pub fn run(cli: &Cli) -> Result<(), Error> {
    let loaded = load_config(cli.config.as_deref())?;
    let w = validate(loaded.as_ref().map(|(c, s)| (c, s)))?;
    match &cli.config {
        Some(p) => println!("{}: OK", p.display()),
        None => println!("no --config given: built-in defaults"),
    }
    if let Some((cfg, src)) = &loaded {
        let serve = ServeConfig::resolve(
            &ServeOverrides::default(),
            cfg.serve.as_ref().map(|s| (s, src)),
        )?;
        let policies = match &serve.engine {
            crate::config::EngineConfig::Socket(s) => &s.options.policies,
            crate::config::EngineConfig::Stateless(o) => &o.policies,
        };
        if policies.all().any(|p| !p.is_silent()) {
            for (port, p) in &policies.ports {
                println!("serve: policy for port {port}: {p}");
            }
            println!("serve: policy for other ports: {}", policies.default);
        }
        if !serve.stats.geoip.is_empty() {
            let files: Vec<String> = serve
                .stats
                .geoip
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            println!(
                "serve: geoip opens {}{}",
                files.join(", "),
                if serve.stats.country_metrics {
                    " (metrics by country on)"
                } else {
                    ""
                }
            );
        }
        if let Some(r) = crate::abuse::settings::resolve(cfg, src)? {
            let outbox = crate::abuse::serve_outbox(&r, serve.stats.history.as_deref());
            println!(
                "report: serve reports hosts engaged >= {} (outbox {}); watch reports its bans (outbox: its state database)",
                humantime::format_duration(r.engaged_threshold),
                outbox.map_or("none: set [report] outbox".into(), |p| p.display().to_string())
            );
            for d in &r.dests {
                println!(
                    "  {}: POST {} ({}{}{}), timeout {}{}",
                    d.id,
                    d.url_text,
                    match (d.ban, d.trapped) {
                        (true, true) => "bans and trapped hosts",
                        (true, false) => "bans",
                        _ => "trapped hosts",
                    },
                    d.quota
                        .map_or(String::new(), |q| format!(", at most {q} a day")),
                    if d.repeat_ms > 0 {
                        format!(
                            ", a host at most every {}",
                            humantime::format_duration(std::time::Duration::from_millis(
                                d.repeat_ms as u64
                            ))
                        )
                    } else {
                        String::new()
                    },
                    humantime::format_duration(d.timeout),
                    d.retries
                        .map_or(", retried until delivered".into(), |n| format!(
                            ", {n} retries"
                        ))
                );
            }
        }
    }
    println!(
        "watch: state {}, nft table inet {} sets {}/{}, {}, IPv6 per /{}",
        w.state_db.display(),
        w.table,
        w.set4,
        w.set6,
        match w.mode {
            crate::firewall::TrapMode::Redirect => format!("redirect to port {}", w.port),
            crate::firewall::TrapMode::Stateless { group } =>
                format!("log to nflog group {group} and drop (stateless engine)"),
        },
        w.ipv6_prefix
    );
    if let Some(cs) = &w.crowdsec {
        println!(
            "  crowdsec: {} (bouncer {}, push {}), types {}, every {}",
            cs.url,
            if cs.api_key.is_some() { "on" } else { "off" },
            if cs.push { "on" } else { "off" },
            cs.types.join(","),
            humantime::format_duration(cs.update_frequency)
        );
        let lines = crate::watcher::crowdsec::check_credentials(cs).map_err(Error::Usage)?;
        lines.iter().for_each(|l| println!("  {l}"));
    }
    for j in &w.jails {
        println!(
            "  jail {}: {} failregex, {} ignoreregex, maxretry {} within {}, ban {}{}; logs {}",
            j.name,
            j.filter.fail.len(),
            j.filter.ignore.len(),
            j.rules.maxretry,
            humantime::format_duration(j.rules.findtime),
            humantime::format_duration(j.rules.bantime),
            if j.rules.bantime_factor > 1.0 {
                format!(
                    " (x{} per repeat, at most {})",
                    j.rules.bantime_factor,
                    humantime::format_duration(
                        j.rules
                            .bantime_maxtime
                            .unwrap_or(crate::watcher::window::MAX_BANTIME)
                    )
                )
            } else {
                String::new()
            },
            j.logpaths.join(", ")
        );
        for w in crate::watcher::filter::lint(&j.filter) {
            println!("    warning: {w}");
        }
    }
    Ok(())
}
