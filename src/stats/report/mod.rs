//! `tarpit report`: what the history says about a time window, computed once
//! into a [`Report`] and rendered as terminal text, JSON or one
//! self-contained HTML page (inline CSS and SVG, no JavaScript, nothing
//! fetched from the network — it must open from a mail attachment).
//!
//! Two times per connection run through every figure: **engaged** (how long
//! the attacker's program was stuck, until its FIN or RST; "attacker-hours
//! wasted") and **held** (how long we held the socket: what it cost us).
//!
//! A connection belongs to the window when it *ended* inside it (its row is
//! written then). Percentiles use the nearest-rank method: the p-th
//! percentile of n sorted holds is the value at rank ceil(p·n).
//!
//! [`compute`] asks the history's store for the window's figures;
//! [`text`] and [`html`] render them. The SQL lives with the schema, in
//! [`crate::stats::history::store`].

mod compute;
mod html;
mod text;

pub use compute::compute;
pub use html::render_html;
pub use text::render_text;

use serde::Serialize;

/// Rows in the top-hosts and ports tables.
pub const TOP_N: usize = 20;

/// Edges of the hold-duration histogram, seconds; the last bucket is open.
pub const HIST_EDGES: [f64; 12] = [
    0.0, 1.0, 10.0, 60.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 3600.0, 21600.0, 86400.0,
];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Window, unix seconds.
    pub since: f64,
    pub until: f64,
    pub totals: Totals,
    /// Top [`TOP_N`] hosts by attacker time wasted (engaged).
    pub top_hosts: Vec<HostRow>,
    /// Top [`TOP_N`] ports aimed at, by connections.
    pub ports: Vec<PortRow>,
    pub end_reasons: Vec<ReasonRow>,
    pub histogram: Vec<Bucket>,
    /// One entry per UTC day of the window, oldest first, zeros included.
    pub per_day: Vec<DayRow>,
    /// With GeoIP (`[serve] geoip`): top [`TOP_N`] countries and ASNs by
    /// engaged time (`time_basis`); empty without it.
    pub top_countries: Vec<CountryRow>,
    pub top_asns: Vec<AsnRow>,
    /// What the country and ASN tables rank by: `"engaged"` (seconds the
    /// attackers were stuck; `held_secs` is shown next to it).
    pub time_basis: &'static str,
    /// Every protocol the peers spoke (`ssh`, `http`, `tls`, `other`,
    /// `silent`; see [`crate::classify`]), by engaged time.
    pub protocols: Vec<ProtocolRow>,
    /// Top [`TOP_N`] client programs by engaged time: the software they
    /// name (SSH version, HTTP User-Agent), else their TLS JA4. Escaped
    /// text, as stored.
    pub clients: Vec<ClientRow>,
    /// Every policy that held connections (`silent`, `bait=ssh,drip=10s`,
    /// `window=zero`, ... as records name them; see
    /// [`crate::engine::policy`]), by engaged time: which one wastes the
    /// most attacker time, and at what cost.
    pub policies: Vec<PolicyRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyRow {
    pub policy: String,
    pub connections: u64,
    pub hosts: u64,
    pub engaged_secs: f64,
    /// The part of `engaged_secs` that is an upper bound (peers found
    /// gone; data stuck behind a zero window makes most of them so).
    pub engaged_upper_bound_secs: f64,
    pub held_secs: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProtocolRow {
    pub protocol: String,
    pub connections: u64,
    pub engaged_secs: f64,
    pub held_secs: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClientRow {
    /// The software or fingerprint, escaped (attacker text).
    pub client: String,
    pub protocol: String,
    pub connections: u64,
    pub hosts: u64,
    pub engaged_secs: f64,
    pub held_secs: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CountryRow {
    /// ISO 3166-1 alpha-2.
    pub country: String,
    pub connections: u64,
    pub hosts: u64,
    pub engaged_secs: f64,
    pub held_secs: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AsnRow {
    pub asn: u32,
    /// The AS organisation as the database names it (may be empty).
    pub org: String,
    pub connections: u64,
    pub hosts: u64,
    pub engaged_secs: f64,
    pub held_secs: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    pub connections: u64,
    pub unique_hosts: u64,
    /// Engaged hours: what the attackers lost.
    pub attacker_hours: f64,
    /// The part of `attacker_hours` that is an upper bound (peers found
    /// gone; see `record::engaged`).
    pub attacker_hours_upper_bound: f64,
    /// Hours we held the connections: what they cost us.
    pub held_hours: f64,
    pub median_engaged_secs: f64,
    pub p90_engaged_secs: f64,
    pub median_hold_secs: f64,
    pub p90_hold_secs: f64,
    pub bytes_received: u64,
    pub close_attempts: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostRow {
    pub host: String,
    pub connections: u64,
    pub engaged_secs: f64,
    pub held_secs: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PortRow {
    pub port: u16,
    pub connections: u64,
    pub engaged_secs: f64,
    pub held_secs: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReasonRow {
    pub reason: String,
    pub connections: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bucket {
    /// Human label: `1m–5m`, `≥24h`.
    pub label: String,
    pub lo_secs: f64,
    /// `None` for the open last bucket.
    pub hi_secs: Option<f64>,
    /// Connections held this long.
    pub connections: u64,
    /// Connections whose attacker was stuck this long.
    pub engaged: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DayRow {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub connections: u64,
    pub engaged_secs: f64,
    pub held_secs: f64,
}

/// Nearest-rank percentile of an ascending slice (0 when empty).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// `YYYY-MM-DD` (UTC) of a unix time.
pub fn utc_day(unix: f64) -> String {
    crate::calendar::utc_day(unix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 5.0);
        assert_eq!(percentile(&v, 0.9), 9.0);
        assert_eq!(percentile(&v[..1], 0.9), 1.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn utc_days() {
        assert_eq!(utc_day(0.0), "1970-01-01");
        assert_eq!(utc_day(951_782_400.0), "2000-02-29");
        assert_eq!(utc_day(1_767_225_599.0), "2025-12-31");
    }
}
