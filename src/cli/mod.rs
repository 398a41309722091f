//! The command line: parses arguments, loads the config file, and hands
//! validated options to the module that does the work.

mod report;
mod serve;
mod serve_stats;
mod stats;
mod takeover;

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
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format, &cli.log_level);
    match cli.command {
        Command::Serve(ref a) => serve::run(&cli, a),
        Command::Stats(ref a) => stats::run(&cli, a),
        Command::Report(ref a) => report::run(&cli, a),
    }
}

/// Prints an error the way every subcommand does and returns its exit code.
pub(crate) fn fail(code: u8, msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("tarpit: error: {msg}");
    ExitCode::from(code)
}
