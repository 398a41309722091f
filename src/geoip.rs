//! Where attackers come from, offline: country, ASN and AS organisation
//! from MaxMind DB files (GeoLite2-Country/-City/-ASN or DB-IP lite, kept
//! current by the operator's geoipupdate).
//!
//! A lookup is made once per connection, when its record is written (never
//! per packet), by whoever owns the [`GeoIp`] (the history writer thread).
//! Files are read into memory, so geoipupdate's atomic replace never changes
//! the bytes under a running lookup; every [`CHECK_EVERY`] the files are
//! stat'ed and a changed one is opened again. A file that is missing,
//! corrupt or of the wrong type is an error at start naming it; one that
//! goes bad later is a (rate-limited) warning and gives no enrichment until
//! it is good again.

use crate::ratelimit::RateLimit;
use maxminddb::{path, Reader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// How often the files are checked for having been replaced.
pub const CHECK_EVERY: Duration = Duration::from_secs(10);
/// Longest AS organisation kept (longer ones are cut at a char boundary).
const MAX_ORG: usize = 128;

/// What the databases say about one address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Geo {
    /// ISO 3166-1 alpha-2, upper case (`DE`).
    pub country: Option<String>,
    pub asn: Option<u32>,
    /// Printable text only, at most 128 bytes.
    pub as_org: Option<String>,
}

/// A database that cannot be used; names the file.
#[derive(Debug, Clone, thiserror::Error)]
#[error("GeoIP database {}: {message}", path.display())]
pub struct GeoIpError {
    pub path: PathBuf,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Country,
    Asn,
}

/// `(device, inode, mtime, length)`: changes when the file is replaced or
/// rewritten.
type Stamp = (u64, u64, Option<SystemTime>, u64);

fn stamp(p: &Path) -> std::io::Result<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p)?;
    Ok((m.dev(), m.ino(), m.modified().ok(), m.len()))
}

struct Db {
    path: PathBuf,
    kind: Kind,
    reader: Option<Reader<Vec<u8>>>,
    stamp: Option<Stamp>,
}

/// Opens and checks one file: readable, a valid MaxMind DB (its search tree
/// and data verified), with country or ASN data.
pub fn open_one(path: &Path) -> Result<(Kind, Reader<Vec<u8>>), GeoIpError> {
    open_checked(path, true)
}

fn open_checked(path: &Path, verify: bool) -> Result<(Kind, Reader<Vec<u8>>), GeoIpError> {
    let err = |m: String| GeoIpError {
        path: path.to_path_buf(),
        message: m,
    };
    if let Err(e) = std::fs::metadata(path) {
        return Err(err(format!("cannot read it: {e}")));
    }
    let r = Reader::open_readfile(path).map_err(|e| err(format!("not a MaxMind DB file: {e}")))?;
    if verify {
        r.verify()
            .map_err(|e| err(format!("corrupt MaxMind DB file: {e}")))?;
    }
    let t = r.metadata().database_type.to_ascii_lowercase();
    let kind = if t.contains("asn") {
        Kind::Asn
    } else if t.contains("country") || t.contains("city") {
        Kind::Country
    } else {
        return Err(err(format!(
            "database type {:?} has neither country nor ASN data (use GeoLite2-Country, -City, -ASN or DB-IP's lite files)",
            r.metadata().database_type
        )));
    };
    Ok((kind, r))
}

/// The configured databases.
pub struct GeoIp {
    dbs: Vec<Db>,
    next_check: Instant,
    warn: RateLimit,
}

impl std::fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.dbs
                    .iter()
                    .map(|d| (&d.path, d.kind, d.reader.is_some())),
            )
            .finish()
    }
}

impl GeoIp {
    /// Opens every file; the first that cannot be used is the error.
    pub fn open(paths: &[PathBuf]) -> Result<GeoIp, GeoIpError> {
        Self::open_with(paths, true)
    }

    /// Like [`open`](Self::open) without the full verification (seconds for
    /// a City file): for `tarpit stats`, which only shows what it finds.
    pub fn open_quick(paths: &[PathBuf]) -> Result<GeoIp, GeoIpError> {
        Self::open_with(paths, false)
    }

    fn open_with(paths: &[PathBuf], verify: bool) -> Result<GeoIp, GeoIpError> {
        let mut dbs = Vec::new();
        for p in paths {
            let st = stamp(p).ok();
            let (kind, reader) = open_checked(p, verify)?;
            tracing::info!(path = %p.display(), kind = ?kind, "GeoIP database loaded");
            dbs.push(Db {
                path: p.clone(),
                kind,
                reader: Some(reader),
                stamp: st,
            });
        }
        Ok(GeoIp {
            dbs,
            next_check: Instant::now() + CHECK_EVERY,
            warn: RateLimit::new(Duration::from_secs(60)),
        })
    }

    /// The kinds of data the usable files give now.
    pub fn kinds(&self) -> Vec<Kind> {
        self.dbs
            .iter()
            .filter(|d| d.reader.is_some())
            .map(|d| d.kind)
            .collect()
    }

    /// Re-opens files that changed (at most every [`CHECK_EVERY`]).
    pub fn refresh(&mut self) {
        let now = Instant::now();
        if now < self.next_check {
            return;
        }
        self.next_check = now + CHECK_EVERY;
        self.refresh_now();
    }

    /// Re-opens every file that changed, now.
    pub fn refresh_now(&mut self) {
        for d in &mut self.dbs {
            let st = stamp(&d.path).ok();
            if st == d.stamp && (st.is_some() || d.reader.is_none()) {
                continue;
            }
            d.stamp = st;
            match open_one(&d.path) {
                Ok((kind, r)) if kind == d.kind => {
                    tracing::info!(path = %d.path.display(), "GeoIP database changed; reloaded");
                    d.reader = Some(r);
                }
                Ok((kind, _)) => {
                    d.reader = None;
                    let msg = format!(
                        "GeoIP database {}: now holds {kind:?} data instead of {:?}; not used until fixed",
                        d.path.display(),
                        d.kind
                    );
                    if let Some(n) = self.warn.hit() {
                        tracing::warn!(suppressed = n - 1, "{msg}");
                    }
                }
                Err(e) => {
                    d.reader = None;
                    if let Some(n) = self.warn.hit() {
                        tracing::warn!(
                            suppressed = n - 1,
                            "{e}; no enrichment from it until it is good again"
                        );
                    }
                }
            }
        }
    }

    /// Country, ASN and organisation of `ip` (IPv4-mapped IPv6 as IPv4).
    pub fn lookup(&mut self, ip: IpAddr) -> Geo {
        self.refresh();
        self.lookup_only(ip)
    }

    /// Like [`lookup`](Self::lookup), without checking the files.
    pub fn lookup_only(&self, ip: IpAddr) -> Geo {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let mut g = Geo::default();
        for d in &self.dbs {
            let Some(r) = &d.reader else { continue };
            let Ok(res) = r.lookup(ip) else { continue };
            match d.kind {
                Kind::Country if g.country.is_none() => {
                    let code = res
                        .decode_path::<String>(&path!["country", "iso_code"])
                        .ok()
                        .flatten()
                        .or_else(|| {
                            res.decode_path::<String>(&path!["registered_country", "iso_code"])
                                .ok()
                                .flatten()
                        });
                    g.country =
                        code.filter(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()));
                }
                Kind::Asn if g.asn.is_none() => {
                    g.asn = res
                        .decode_path::<u32>(&path!["autonomous_system_number"])
                        .ok()
                        .flatten();
                    g.as_org = res
                        .decode_path::<String>(&path!["autonomous_system_organization"])
                        .ok()
                        .flatten()
                        .map(|s| clean(&s))
                        .filter(|s| !s.is_empty());
                }
                _ => {}
            }
        }
        g
    }
}

/// Printable characters only (control characters dropped), at most
/// [`MAX_ORG`] bytes.
fn clean(s: &str) -> String {
    let mut o = String::new();
    for c in s.chars().filter(|c| !c.is_control()) {
        if o.len() + c.len_utf8() > MAX_ORG {
            break;
        }
        o.push(c);
    }
    o.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_garbage_files_name_the_file() {
        let d = std::env::temp_dir().join(format!("tarpit-geoip-unit-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&d);
        let missing = d.join("nope.mmdb");
        let e = GeoIp::open(std::slice::from_ref(&missing)).unwrap_err();
        assert_eq!(e.path, missing);
        assert!(e.to_string().contains("nope.mmdb"), "{e}");
        let junk = d.join("junk.mmdb");
        std::fs::write(&junk, b"this is not a database").unwrap();
        let e = GeoIp::open(std::slice::from_ref(&junk)).unwrap_err();
        assert!(
            e.to_string().contains("junk.mmdb") && e.message.contains("MaxMind"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn org_text_is_cleaned_and_bounded() {
        assert_eq!(clean("Evil\u{1b}[31m Corp\n"), "Evil[31m Corp");
        assert!(clean(&"é".repeat(200)).len() <= MAX_ORG);
    }
}
