//! The raw `[report]`, `[report.abuseipdb]` and `[[webhook]]` tables, as
//! written. Types and shapes only; `crate::abuse::settings` validates the
//! values at the spans kept here, so every mistake names its line.

use super::watch::{DurationValue, StrList};
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

/// Categories by key (a port, a jail name, or `default`): AbuseIPDB's
/// category numbers.
pub type CategoryMap = BTreeMap<String, Spanned<Vec<Spanned<i64>>>>;

/// `[report]`: where abusers are reported, shared by every destination.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ReportSection {
    /// `tarpit serve`'s outbox database (default: its history database).
    /// The watcher keeps its outbox in its state database.
    pub outbox: Option<Spanned<String>>,
    /// `tarpit serve`: a host is reported once one of its connections kept
    /// it engaged this long (default 5m).
    pub engaged_threshold: Option<Spanned<DurationValue>>,
    /// `[report.abuseipdb]`.
    pub abuseipdb: Option<Spanned<AbuseIpdbSection>>,
}

/// `[report.abuseipdb]`, as written.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct AbuseIpdbSection {
    /// File with the API key (mode 0600).
    pub key_file: Option<Spanned<String>>,
    /// The report endpoint (default `https://api.abuseipdb.com/api/v2/report`).
    pub url: Option<Spanned<String>>,
    /// Most reports per UTC day (default 1000, the free plan's).
    pub daily_quota: Option<Spanned<i64>>,
    /// Categories of a trapped connection by the port it aimed at.
    pub categories: Option<Spanned<CategoryMap>>,
    /// Categories of a ban by the jail that made it.
    pub jail_categories: Option<Spanned<CategoryMap>>,
    /// Extra CA certificates (PEM) besides the built-in roots.
    pub ca_file: Option<Spanned<String>>,
    /// How long one request may take (default 20s).
    pub timeout: Option<Spanned<DurationValue>>,
}

/// One `[[webhook]]`, as written.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct WebhookSection {
    /// A name for logs and metrics (default `webhook-N`).
    pub name: Option<Spanned<String>>,
    pub url: Option<Spanned<String>>,
    /// `"ban"` and/or `"trapped"` (default both).
    pub events: Option<Spanned<StrList>>,
    /// How long one request may take (default 10s).
    pub timeout: Option<Spanned<DurationValue>>,
    /// Attempts after the first before an event is dropped (default 5).
    pub retries: Option<Spanned<i64>>,
    /// File of `Name: value` header lines (secrets, mode 0600).
    pub headers_file: Option<Spanned<String>>,
    /// At most one event per host this often (default 15m; "0s": all).
    pub repeat_after: Option<Spanned<DurationValue>>,
    /// Extra CA certificates (PEM) besides the built-in roots.
    pub ca_file: Option<Spanned<String>>,
}
