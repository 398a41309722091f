//! The optional TOML file (`--config /etc/tarpit/tarpit.toml`).
//!
//! Each subcommand owns one table (`[serve]`, `[watch]`, ...). This module
//! parses and locates: it turns any mistake into a [`ConfigError`] that
//! names the file, the line and the key, so an admin can fix it without
//! guessing. Values that need more than a type check (durations, addresses)
//! are kept as [`toml::Spanned`] so their later validation can point at the
//! line too. [`serve`] also merges `tarpit serve`'s flags over its table into
//! the one typed [`ServeConfig`] the daemon runs from.

pub mod duration;
pub mod report;
pub mod serve;
pub mod watch;

use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

pub use duration::parse_duration;
pub use report::{AbuseIpdbSection, ReportSection, WebhookSection};
pub use serve::{
    EngineConfig, EngineKind, Privileges, ServeConfig, ServeOverrides, ServeSection, SocketConfig,
    StatsConfig,
};
pub use watch::{CrowdSecSection, DurationValue, JailSection, StrList, WatchSection};

/// A configuration mistake, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Dotted key (`serve.max_conns`), when known.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if let Some(k) = &self.key {
            write!(f, ": key `{k}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The text of a loaded config file, kept to locate later validation errors.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

impl Source {
    /// A source not read from a file (tests, text from elsewhere).
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        Source {
            path: path.into(),
            text: text.into(),
        }
    }

    /// 1-based line of a byte offset.
    pub fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// An error about the value at `span` for `key`.
    pub fn error_at(
        &self,
        span: std::ops::Range<usize>,
        key: &str,
        msg: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.path.clone(),
            line: Some(self.line_of(span.start)),
            key: Some(key.to_string()),
            message: msg.into(),
        }
    }
}

/// The whole file. Unknown tables or keys are errors: a typo must not be
/// silently ignored on a security tool.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub serve: Option<ServeSection>,
    #[serde(default)]
    pub watch: Option<WatchSection>,
    /// `[report]` / `[report.abuseipdb]`: abusers reported (serve and watch).
    #[serde(default)]
    pub report: Option<ReportSection>,
    /// `[[webhook]]`: a JSON POST per ban and per trapped host.
    #[serde(default)]
    pub webhook: Vec<toml::Spanned<WebhookSection>>,
}

/// Reads and parses `path`.
pub fn load(path: &Path) -> Result<(FileConfig, Source), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: None,
        key: None,
        message: format!("cannot read: {e}"),
    })?;
    let src = Source {
        path: path.to_path_buf(),
        text,
    };
    let cfg = parse(&src)?;
    Ok((cfg, src))
}

/// Parses already-read text.
pub fn parse(src: &Source) -> Result<FileConfig, ConfigError> {
    toml::from_str::<FileConfig>(&src.text).map_err(|e| toml_error(src, &e))
}

/// Turns a toml/serde error into a located one. toml gives a byte span; the
/// key is taken from the error text (`unknown field `x``) or from the line the
/// span points into (`key = value`), qualified by the enclosing `[table]`.
pub fn toml_error(src: &Source, e: &toml::de::Error) -> ConfigError {
    let message = e.message().trim().to_string();
    let Some(span) = e.span() else {
        return ConfigError {
            file: src.path.clone(),
            line: None,
            key: None,
            message,
        };
    };
    let line = src.line_of(span.start);
    let line_text = src.text.lines().nth(line - 1).unwrap_or("");
    let table = enclosing_table(&src.text, line);
    let key = backticked(&message, "unknown field `")
        .or_else(|| backticked(&message, "missing field `"))
        .or_else(|| {
            line_text
                .split_once('=')
                .map(|(k, _)| k.trim().trim_matches('"').to_string())
                .filter(|k| !k.is_empty() && !k.starts_with('['))
        })
        .map(|k| match &table {
            Some(t) if !k.contains('.') => format!("{t}.{k}"),
            _ => k,
        })
        .or(table);
    ConfigError {
        file: src.path.clone(),
        line: Some(line),
        key,
        message,
    }
}

fn backticked(msg: &str, prefix: &str) -> Option<String> {
    let rest = &msg[msg.find(prefix)? + prefix.len()..];
    Some(rest[..rest.find('`')?].to_string())
}

/// Name of the `[table]` or `[[table]]` header above `line` (1-based).
fn enclosing_table(text: &str, line: usize) -> Option<String> {
    text.lines()
        .take(line)
        .filter_map(|l| {
            let t = l.trim();
            let t = t
                .strip_prefix("[[")
                .and_then(|r| r.strip_suffix("]]"))
                .or_else(|| {
                    t.strip_prefix('[')
                        .and_then(|r| r.split_once(']'))
                        .map(|(n, _)| n)
                })?;
            Some(t.trim().to_string())
        })
        .last()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(text: &str) -> Source {
        Source {
            path: PathBuf::from("/etc/tarpit/tarpit.toml"),
            text: text.to_string(),
        }
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = parse(&src("[serve]\nmax_conns = 10\nper_iq = 3\n")).unwrap_err();
        assert_eq!(e.line, Some(3));
        assert_eq!(e.key.as_deref(), Some("serve.per_iq"));
        let s = e.to_string();
        assert!(
            s.starts_with("/etc/tarpit/tarpit.toml:3: key `serve.per_iq`"),
            "{s}"
        );
    }

    #[test]
    fn wrong_type_names_line_and_key() {
        let e = parse(&src("# c\n[serve]\n\nmax_conns = \"many\"\n")).unwrap_err();
        assert_eq!(e.line, Some(4));
        assert_eq!(e.key.as_deref(), Some("serve.max_conns"));
    }

    #[test]
    fn unknown_table_is_an_error() {
        let e = parse(&src("[srve]\nx = 1\n")).unwrap_err();
        assert_eq!(e.line, Some(1));
        assert!(e.message.contains("srve"), "{}", e.message);
    }

    #[test]
    fn spanned_values_locate_later_errors() {
        let s = src("[serve]\nlifetime_min = \"12 parsecs\"\n");
        let cfg = parse(&s).unwrap();
        let v = cfg.serve.unwrap().lifetime_min.unwrap();
        let e = s.error_at(v.span(), "serve.lifetime_min", "bad duration");
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn syntax_error_has_a_line() {
        let e = parse(&src("[serve]\nmax_conns = = 3\n")).unwrap_err();
        assert_eq!(e.line, Some(2));
    }
}
