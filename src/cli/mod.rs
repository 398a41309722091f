//! The command line: parses arguments, loads the config file, and hands
//! validated options to the module that does the work.

mod ban;
mod bans;
pub mod check_config;
mod docs;
mod report;
mod serve;
mod serve_stateless;
mod serve_stats;
mod stats;
mod takeover;
mod test_regex;
mod unban;
mod watch;

use crate::logging::{self, LogFormat};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit code for configuration and usage mistakes (as clap uses).
pub const EXIT_CONFIG: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "tarpit",
    version,
    about = "A userspace TCP tarpit: trap repeat offenders in zero-window connections"
)]
pub struct Cli {
    /// TOML configuration file; command-line flags override it.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format: human-readable lines or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// Log filter (`info`, `debug`, `tarpit=debug`); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info", value_name = "FILTER")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Accept every connection with a zero window and hold it.
    Serve(Box<serve::ServeArgs>),
    /// Show the connections a running `tarpit serve` holds right now.
    Stats(stats::StatsArgs),
    /// Summarize the connection history (text, --json or --html FILE).
    Report(report::ReportArgs),
    /// Follow logs and trap repeat offenders through nftables sets.
    Watch(watch::WatchArgs),
    /// Trap a host by hand.
    Ban(ban::BanArgs),
    /// Release a trapped host.
    Unban(unban::UnbanArgs),
    /// List active bans.
    Bans(bans::BansArgs),
    /// Validate the config file (all sections) and print what it means.
    CheckConfig(check_config::CheckConfigArgs),
    /// Show what a jail's filter makes of a log file (like fail2ban-regex).
    TestRegex(test_regex::TestRegexArgs),
    /// Print the manual page (roff), or write all pages with --dir.
    Man(docs::ManArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions(docs::CompletionsArgs),
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format, &cli.log_level);
    match cli.command {
        Command::Serve(ref a) => serve::run(&cli, a),
        Command::Stats(ref a) => stats::run(&cli, a),
        Command::Report(ref a) => report::run(&cli, a),
        Command::Watch(ref a) => watch::run(&cli, a),
        Command::Ban(ref a) => ban::run(&cli, a),
        Command::Unban(ref a) => unban::run(&cli, a),
        Command::Bans(ref a) => bans::run(&cli, a),
        Command::CheckConfig(ref a) => check_config::run(&cli, a),
        Command::TestRegex(ref a) => test_regex::run(&cli, a),
        Command::Man(ref a) => docs::man(a),
        Command::Completions(ref a) => docs::completions(a),
    }
}

/// Prints an error the way every subcommand does and returns its exit code.
pub(crate) fn fail(code: u8, msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("tarpit: error: {msg}");
    ExitCode::from(code)
}

/// `[watch]` from `--config` (defaults without), with `--state-db` applied;
/// a config mistake is printed and becomes exit code 2.
pub(crate) fn watch_settings(
    cli: &Cli,
    state_db: Option<PathBuf>,
) -> Result<crate::watcher::WatchSettings, ExitCode> {
    let mut s =
        crate::watcher::settings::load(cli.config.as_deref()).map_err(|e| fail(EXIT_CONFIG, e))?;
    if let Some(p) = state_db {
        s.state_db = p;
    }
    Ok(s)
}

/// An address or IPv6 network as typed by an admin; a plain IPv6 address
/// becomes its `v6_prefix` network, as the watcher would have banned it.
pub(crate) fn parse_target(s: &str, v6_prefix: u8) -> Result<crate::watcher::Target, String> {
    let t = s.trim();
    if let Ok(ip) = t.parse::<std::net::IpAddr>() {
        return Ok(crate::watcher::Target::from_ip(ip, v6_prefix));
    }
    t.parse::<crate::watcher::Target>()
        .map_err(|e| e.to_string())
}
