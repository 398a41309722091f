//! The command line: clap definitions, one file per subcommand, each turning
//! its flags into a typed configuration and handing it to the module that
//! does the work. [`try_main`] returns one typed [`Error`]; [`main`] prints
//! it and maps it to the exit code.

mod ban;
mod bans;
pub mod check_config;
mod docs;
mod report;
mod serve;
mod stats;
mod test_regex;
mod unban;
mod watch;

use crate::config::{self, ConfigError, FileConfig, Source};
use crate::logging::{self, LogFormat};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Exit code for configuration and usage mistakes (as clap uses).
pub const EXIT_CONFIG: u8 = 2;
/// Exit code for everything else that went wrong.
pub const EXIT_FAILURE: u8 = 1;

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

/// Why a command failed; [`Error::exit_code`] is the one mapping to codes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A mistake in the arguments that clap cannot see.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Serve(#[from] crate::daemon::Error),
    #[error(transparent)]
    Watch(#[from] crate::daemon::WatchError),
    #[error(transparent)]
    State(#[from] crate::watcher::StateError),
    #[error(transparent)]
    Control(#[from] crate::control::ClientError),
    #[error(transparent)]
    History(#[from] crate::stats::history::HistoryError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// Something failed; the text says what and where.
    #[error("{0}")]
    Failed(String),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) | Error::Usage(_) => EXIT_CONFIG,
            Error::Serve(e) if e.is_usage() => EXIT_CONFIG,
            _ => EXIT_FAILURE,
        }
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    match try_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tarpit: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Parses the arguments and runs the command.
pub fn try_main() -> Result<(), Error> {
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
        Command::CheckConfig(_) => check_config::run(&cli),
        Command::TestRegex(ref a) => test_regex::run(&cli, a),
        Command::Man(ref a) => docs::man(a),
        Command::Completions(ref a) => docs::completions(a),
    }
}

/// The `--config` file, parsed, when one is given.
fn load_config(path: Option<&Path>) -> Result<Option<(FileConfig, Source)>, Error> {
    Ok(path.map(config::load).transpose()?)
}

/// `[watch]` from `--config` (defaults without), with `--state-db` applied.
fn watch_settings(
    cli: &Cli,
    state_db: Option<PathBuf>,
) -> Result<crate::watcher::WatchSettings, Error> {
    let mut s = crate::watcher::settings::load(cli.config.as_deref())?;
    if let Some(p) = state_db {
        s.state_db = p;
    }
    Ok(s)
}

/// An address or IPv6 network as typed by an admin; a plain IPv6 address
/// becomes its `v6_prefix` network, as the watcher would have banned it.
fn parse_target(s: &str, v6_prefix: u8) -> Result<crate::watcher::Target, Error> {
    let t = s.trim();
    if let Ok(ip) = t.parse::<std::net::IpAddr>() {
        return Ok(crate::watcher::Target::from_ip(ip, v6_prefix));
    }
    t.parse::<crate::watcher::Target>()
        .map_err(|e| Error::Usage(e.to_string()))
}
