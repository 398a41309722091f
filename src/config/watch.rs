//! The raw `[watch]` table and its `[[watch.jail]]` entries, as written.
//!
//! Only types and shapes are checked here; the watcher's settings validate the
//! values (durations, regexes, addresses) and report mistakes at the spans
//! kept below, so every error still names its line.

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use toml::Spanned;

/// `[watch]`: settings shared by all jails, plus the jails.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct WatchSection {
    /// SQLite state file (bans, hits in the window, log positions).
    pub state_db: Option<Spanned<String>>,
    /// Port of `tarpit serve` that trapped traffic is redirected to.
    pub port: Option<Spanned<i64>>,
    /// nftables table (family `inet`).
    pub table: Option<Spanned<String>>,
    pub set4: Option<Spanned<String>>,
    pub set6: Option<Spanned<String>>,
    /// IPv6 hosts are trapped per prefix of this length.
    pub ipv6_prefix: Option<Spanned<i64>>,
    /// The `nft` program.
    pub nft: Option<Spanned<String>>,
    /// Also delete a trapped host's conntrack entries, so connections it
    /// already has open are redirected too.
    pub flush_conntrack: Option<bool>,
    /// How often logs are polled for new lines.
    pub poll_interval: Option<Spanned<DurationValue>>,
    /// How often the ruleset is checked for having been flushed.
    pub check_interval: Option<Spanned<DurationValue>>,
    /// Addresses never banned by any jail (in addition to each jail's own).
    pub ignoreip: Option<Spanned<StrList>>,
    /// `"socket"` (default: redirect to `port`) or `"stateless"` (log to
    /// `nflog_group` and drop at raw priority, for `serve --engine stateless`).
    pub engine: Option<Spanned<String>>,
    /// nfnetlink_log group for `engine = "stateless"`.
    pub nflog_group: Option<Spanned<i64>>,
    /// TCP ports trapped for every source (decoys), besides the trapped hosts.
    pub decoy_ports: Option<Spanned<Vec<i64>>>,
    /// Drop direct connections to `port` from hosts not in the sets.
    pub guard_port: Option<bool>,
    /// `[watch.crowdsec]`: bouncer and machine of a CrowdSec Local API.
    pub crowdsec: Option<Spanned<CrowdSecSection>>,
    #[serde(default)]
    pub jail: Vec<Spanned<JailSection>>,
}

/// `[watch.crowdsec]`, as written (validated in `crate::watcher::crowdsec::settings`).
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct CrowdSecSection {
    /// LAPI, `http://127.0.0.1:8080/`.
    pub url: Option<Spanned<String>>,
    /// File with the bouncer key (`cscli bouncers add tarpit -o raw`), mode 0600.
    pub api_key_file: Option<Spanned<String>>,
    /// Machine name for pushing our bans (`cscli machines add`).
    pub machine_id: Option<Spanned<String>>,
    /// File with the machine's password, mode 0600.
    pub password_file: Option<Spanned<String>>,
    /// Push our bans as alerts (default: on when a machine is configured).
    pub push: Option<Spanned<bool>>,
    /// Decision types that trap (default `["tarpit"]`).
    pub types: Option<Spanned<StrList>>,
    /// Only decisions of these origins (default: all).
    pub origins: Option<Spanned<StrList>>,
    /// How often the decision stream is pulled (default 10s).
    pub update_frequency: Option<Spanned<DurationValue>>,
}

/// One `[[watch.jail]]`.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct JailSection {
    pub name: Option<Spanned<String>>,
    pub enabled: Option<bool>,
    pub logpath: Option<Spanned<StrList>>,
    pub failregex: Option<Spanned<StrList>>,
    pub ignoreregex: Option<Spanned<StrList>>,
    pub maxretry: Option<Spanned<i64>>,
    pub findtime: Option<Spanned<DurationValue>>,
    pub bantime: Option<Spanned<DurationValue>>,
    pub bantime_factor: Option<Spanned<f64>>,
    pub bantime_maxtime: Option<Spanned<DurationValue>>,
    pub ignoreip: Option<Spanned<StrList>>,
}

/// A duration as written: a string (`"10m"`, `"1w"`) or a bare number of
/// seconds (`86400`, as fail2ban configs have it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationValue(pub String);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DurationValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"10m\", \"1d\", \"1w\" or a number of seconds")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationValue, E> {
                Ok(DurationValue(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<DurationValue, E> {
                Ok(DurationValue(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<DurationValue, E> {
                Ok(DurationValue(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// One string or a list of them (`logpath = "/var/log/x"` or `[...]`). List
/// items keep their own spans so an error points at the right line of a
/// multi-line array.
#[derive(Debug, Clone, PartialEq)]
pub enum StrList {
    One(String),
    Many(Vec<Spanned<String>>),
}

impl StrList {
    /// The items with their spans (a single string gets `whole`).
    pub fn items(this: &Spanned<StrList>) -> Vec<(String, std::ops::Range<usize>)> {
        match this.get_ref() {
            StrList::One(s) => vec![(s.clone(), this.span())],
            StrList::Many(v) => v.iter().map(|s| (s.get_ref().clone(), s.span())).collect(),
        }
    }
}

impl<'de> Deserialize<'de> for StrList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StrList, E> {
                Ok(StrList::One(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StrList, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<Spanned<String>>()? {
                    out.push(s);
                }
                Ok(StrList::Many(out))
            }
        }
        d.deserialize_any(V)
    }
}
