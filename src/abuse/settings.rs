//! `[report]`, `[report.abuseipdb]` and `[[webhook]]` validated. Every
//! mistake names file, line and key; secret files (the AbuseIPDB key, a
//! webhook's headers) must be readable by their owner only.

use super::http::{tls_config, Url};
use super::policy::{Categories, Protocol, ABUSEIPDB_REPEAT_MS};
use crate::config::report::CategoryMap;
use crate::config::{parse_duration, ConfigError, DurationValue, FileConfig, Source, StrList};
use crate::watcher::crowdsec::settings::{read_secret, Secret};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

pub const DEFAULT_URL: &str = "https://api.abuseipdb.com/api/v2/report";
pub const DEFAULT_QUOTA: u32 = 1000;
pub const DEFAULT_THRESHOLD: Duration = Duration::from_secs(300);
pub const DEFAULT_ABUSEIPDB_TIMEOUT: Duration = Duration::from_secs(20);
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_RETRIES: u32 = 5;

/// Everything configured for reporting; `None` from [`resolve`] when
/// nothing is.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `[report] outbox` (serve; default: the history database).
    pub outbox: Option<PathBuf>,
    /// Serve: a connection engaged this long reports its host.
    pub engaged_threshold: Duration,
    pub dests: Vec<Dest>,
}

/// One destination: AbuseIPDB or a webhook.
#[derive(Clone)]
pub struct Dest {
    /// `abuseipdb` or `webhook:NAME`: the outbox rows' key, a metric label.
    pub id: String,
    pub proto: Protocol,
    pub url: Url,
    pub url_text: String,
    pub ban: bool,
    pub trapped: bool,
    pub timeout: Duration,
    /// Attempts after the first (`None`: until delivered).
    pub retries: Option<u32>,
    /// At most one event per host this often, ms.
    pub repeat_ms: i64,
    pub quota: Option<u32>,
    /// Extra request headers (AbuseIPDB: `Key`; webhooks: the headers file).
    pub headers: Vec<(String, Secret)>,
    pub ports: Categories,
    pub jails: Categories,
    pub tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Dest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dest")
            .field("id", &self.id)
            .field("url", &self.url_text)
            .field("ban", &self.ban)
            .field("trapped", &self.trapped)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("repeat_ms", &self.repeat_ms)
            .field("quota", &self.quota)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Equal in what they do (the TLS settings follow from `ca_file`, which
/// is not kept).
impl PartialEq for Dest {
    fn eq(&self, o: &Dest) -> bool {
        let names = |d: &Dest| {
            d.headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<Vec<_>>()
        };
        self.id == o.id
            && self.proto == o.proto
            && self.url == o.url
            && self.ban == o.ban
            && self.trapped == o.trapped
            && self.timeout == o.timeout
            && self.retries == o.retries
            && self.repeat_ms == o.repeat_ms
            && self.quota == o.quota
            && names(self) == names(o)
            && self.ports == o.ports
            && self.jails == o.jails
    }
}

impl Dest {
    /// Whether this destination takes events of `kind`.
    pub fn wants(&self, kind: super::policy::EventKind) -> bool {
        match kind {
            super::policy::EventKind::Ban => self.ban,
            super::policy::EventKind::Trapped => self.trapped,
        }
    }

    /// The secret header values, so no message ever shows one.
    pub fn secrets(&self) -> Vec<String> {
        self.headers.iter().map(|(_, v)| v.0.clone()).collect()
    }
}

/// Reads `path` and resolves its report sections (no file: none).
pub fn load(path: Option<&Path>) -> Result<Option<Settings>, ConfigError> {
    match path {
        None => Ok(None),
        Some(p) => {
            let (cfg, src) = crate::config::load(p)?;
            resolve(&cfg, &src)
        }
    }
}

fn duration(
    v: &Option<Spanned<DurationValue>>,
    key: &str,
    src: &Source,
    dflt: Duration,
    range: (Duration, Duration),
) -> Result<Duration, ConfigError> {
    let Some(v) = v else { return Ok(dflt) };
    let d = parse_duration(&v.get_ref().0).map_err(|m| src.error_at(v.span(), key, m))?;
    if d < range.0 || d > range.1 {
        return Err(src.error_at(
            v.span(),
            key,
            format!(
                "must be within {}..{}",
                humantime::format_duration(range.0),
                humantime::format_duration(range.1)
            ),
        ));
    }
    Ok(d)
}

fn url(
    v: &Option<Spanned<String>>,
    key: &str,
    src: &Source,
    whole: std::ops::Range<usize>,
    dflt: Option<&str>,
) -> Result<(Url, String), ConfigError> {
    match (v, dflt) {
        (Some(u), _) => Url::parse(u.get_ref())
            .map(|p| (p, u.get_ref().clone()))
            .map_err(|m| src.error_at(u.span(), key, m)),
        (None, Some(d)) => Ok((
            Url::parse(d).map_err(|m| src.error_at(whole, key, m))?,
            d.into(),
        )),
        (None, None) => Err(src.error_at(whole, key, "a url is required")),
    }
}

fn tls(
    v: &Option<Spanned<String>>,
    key: &str,
    src: &Source,
) -> Result<Arc<rustls::ClientConfig>, ConfigError> {
    match v {
        None => tls_config(None).map_err(|m| ConfigError {
            file: src.path.clone(),
            line: None,
            key: Some(key.into()),
            message: m,
        }),
        Some(p) => {
            tls_config(Some(Path::new(p.get_ref()))).map_err(|m| src.error_at(p.span(), key, m))
        }
    }
}

fn categories(
    v: &Option<Spanned<CategoryMap>>,
    key: &str,
    src: &Source,
    dflt: Categories,
    keys_are_ports: bool,
) -> Result<Categories, ConfigError> {
    let Some(m) = v else { return Ok(dflt) };
    let mut out = Categories {
        by_key: Default::default(),
        default: dflt.default,
    };
    for (k, list) in m.get_ref() {
        let mut cats = Vec::new();
        for c in list.get_ref() {
            match u8::try_from(*c.get_ref()) {
                Ok(n) if (1..=23).contains(&n) => cats.push(n),
                _ => {
                    return Err(src.error_at(
                        c.span(),
                        &format!("{key}.{k}"),
                        format!(
                            "{} is not an AbuseIPDB category (1-23, see abuseipdb.com/categories)",
                            c.get_ref()
                        ),
                    ))
                }
            }
        }
        if cats.is_empty() {
            return Err(src.error_at(list.span(), &format!("{key}.{k}"), "at least one category"));
        }
        if k == "default" {
            out.default = cats;
        } else {
            if keys_are_ports && k.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(src.error_at(
                    list.span(),
                    &format!("{key}.{k}"),
                    format!("{k:?} is not a TCP port (1-65535) or `default`"),
                ));
            }
            out.by_key.insert(k.clone(), cats);
        }
    }
    Ok(out)
}

/// Reads a headers file: `Name: value` lines (`#` comments), owner-only.
pub fn read_headers(p: &Path) -> Result<Vec<(String, Secret)>, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if !meta.is_file() || mode & 0o077 != 0 {
        return Err(format!(
            "{} must be a file readable by its owner only (chmod 600 {})",
            p.display(),
            p.display()
        ));
    }
    if meta.len() > 16 * 1024 {
        return Err(format!("{} is larger than 16 KiB", p.display()));
    }
    let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let at = format!("{}:{}", p.display(), i + 1);
        let (k, v) = l
            .split_once(':')
            .ok_or_else(|| format!("{at}: expected `Name: value`"))?;
        let (k, v) = (k.trim(), v.trim());
        let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if k.is_empty() || !k.chars().all(token) {
            return Err(format!("{at}: {k:?} is not a header name"));
        }
        if matches!(
            k.to_ascii_lowercase().as_str(),
            "host" | "content-length" | "content-type" | "transfer-encoding" | "connection"
        ) {
            return Err(format!("{at}: {k} is set by tarpit itself"));
        }
        if !v.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
            // The value is a secret: not shown.
            return Err(format!("{at}: the value of {k} must be printable ASCII"));
        }
        out.push((k.to_string(), Secret(v.to_string())));
    }
    Ok(out)
}

/// The report sections of a parsed file.
pub fn resolve(cfg: &FileConfig, src: &Source) -> Result<Option<Settings>, ConfigError> {
    let mut dests = Vec::new();
    let mut outbox = None;
    let mut engaged_threshold = DEFAULT_THRESHOLD;
    if let Some(r) = &cfg.report {
        let rs = r;
        outbox = match &rs.outbox {
            Some(p) if p.get_ref().is_empty() => {
                return Err(src.error_at(p.span(), "report.outbox", "an empty path"))
            }
            Some(p) => Some(PathBuf::from(p.get_ref())),
            None => None,
        };
        engaged_threshold = duration(
            &rs.engaged_threshold,
            "report.engaged_threshold",
            src,
            DEFAULT_THRESHOLD,
            (Duration::from_secs(1), Duration::from_secs(86_400)),
        )?;
        if let Some(a) = &rs.abuseipdb {
            dests.push(abuseipdb(a, src)?);
        }
    }
    for (i, w) in cfg.webhook.iter().enumerate() {
        let d = webhook(w, i, src)?;
        if dests.iter().any(|o: &Dest| o.id == d.id) {
            let span = w.get_ref().name.as_ref().map_or(w.span(), |n| n.span());
            return Err(src.error_at(span, "webhook.name", "two webhooks of this name"));
        }
        dests.push(d);
    }
    if dests.is_empty() {
        return Ok(None);
    }
    Ok(Some(Settings {
        outbox,
        engaged_threshold,
        dests,
    }))
}

fn abuseipdb(
    a: &Spanned<crate::config::AbuseIpdbSection>,
    src: &Source,
) -> Result<Dest, ConfigError> {
    let s = a.get_ref();
    let kf = s.key_file.as_ref().ok_or_else(|| {
        src.error_at(
            a.span(),
            "report.abuseipdb.key_file",
            "the file holding the API key is required (mode 0600)",
        )
    })?;
    let key = read_secret(Path::new(kf.get_ref()))
        .map_err(|m| src.error_at(kf.span(), "report.abuseipdb.key_file", m))?;
    let (u, url_text) = url(
        &s.url,
        "report.abuseipdb.url",
        src,
        a.span(),
        Some(DEFAULT_URL),
    )?;
    let quota = match &s.daily_quota {
        None => DEFAULT_QUOTA,
        Some(q) => u32::try_from(*q.get_ref())
            .ok()
            .filter(|n| (1..=1_000_000).contains(n))
            .ok_or_else(|| {
                src.error_at(
                    q.span(),
                    "report.abuseipdb.daily_quota",
                    "reports per UTC day: 1..1000000 (the free plan allows 1000)",
                )
            })?,
    };
    Ok(Dest {
        id: "abuseipdb".into(),
        proto: Protocol::AbuseIpdb,
        url: u,
        url_text,
        ban: true,
        trapped: true,
        timeout: duration(
            &s.timeout,
            "report.abuseipdb.timeout",
            src,
            DEFAULT_ABUSEIPDB_TIMEOUT,
            (Duration::from_millis(100), Duration::from_secs(300)),
        )?,
        retries: None,
        repeat_ms: ABUSEIPDB_REPEAT_MS,
        quota: Some(quota),
        headers: vec![
            ("Key".into(), Secret(key)),
            ("Accept".into(), Secret("application/json".into())),
        ],
        ports: categories(
            &s.categories,
            "report.abuseipdb.categories",
            src,
            Categories::ports_default(),
            true,
        )?,
        jails: categories(
            &s.jail_categories,
            "report.abuseipdb.jail_categories",
            src,
            Categories::jails_default(),
            false,
        )?,
        tls: tls(&s.ca_file, "report.abuseipdb.ca_file", src)?,
    })
}

fn webhook(
    w: &Spanned<crate::config::WebhookSection>,
    i: usize,
    src: &Source,
) -> Result<Dest, ConfigError> {
    let s = w.get_ref();
    let name = match &s.name {
        None => format!("webhook-{}", i + 1),
        Some(n) => {
            let v = n.get_ref();
            if v.is_empty()
                || v.len() > 32
                || !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(src.error_at(
                    n.span(),
                    "webhook.name",
                    "letters, digits, `-`, `_`, `.`; at most 32",
                ));
            }
            v.clone()
        }
    };
    let (u, url_text) = url(&s.url, "webhook.url", src, w.span(), None)?;
    let (mut ban, mut trapped) = (true, true);
    if let Some(ev) = &s.events {
        (ban, trapped) = (false, false);
        for (e, span) in StrList::items(ev) {
            match e.as_str() {
                "ban" => ban = true,
                "trapped" => trapped = true,
                _ => {
                    return Err(src.error_at(
                        span,
                        "webhook.events",
                        format!("{e:?}: the events are \"ban\" and \"trapped\""),
                    ))
                }
            }
        }
        if !ban && !trapped {
            return Err(src.error_at(ev.span(), "webhook.events", "no event chosen"));
        }
    }
    let retries = match &s.retries {
        None => DEFAULT_RETRIES,
        Some(r) => u32::try_from(*r.get_ref())
            .ok()
            .filter(|n| *n <= 100)
            .ok_or_else(|| src.error_at(r.span(), "webhook.retries", "0..100"))?,
    };
    let headers = match &s.headers_file {
        None => Vec::new(),
        Some(p) => read_headers(Path::new(p.get_ref()))
            .map_err(|m| src.error_at(p.span(), "webhook.headers_file", m))?,
    };
    let repeat = duration(
        &s.repeat_after,
        "webhook.repeat_after",
        src,
        Duration::from_secs(900),
        (Duration::ZERO, Duration::from_secs(7 * 86_400)),
    )?;
    Ok(Dest {
        id: format!("webhook:{name}"),
        proto: Protocol::Webhook,
        url: u,
        url_text,
        ban,
        trapped,
        timeout: duration(
            &s.timeout,
            "webhook.timeout",
            src,
            DEFAULT_WEBHOOK_TIMEOUT,
            (Duration::from_millis(100), Duration::from_secs(300)),
        )?,
        retries: Some(retries),
        repeat_ms: repeat.as_millis() as i64,
        quota: None,
        headers,
        ports: Categories::ports_default(),
        jails: Categories::jails_default(),
        tls: tls(&s.ca_file, "webhook.ca_file", src)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use std::os::unix::fs::PermissionsExt;

    fn load(t: &str) -> Result<Option<Settings>, ConfigError> {
        let s = config::Source::new("/etc/tarpit/tarpit.toml", t);
        let f = config::parse(&s)?;
        resolve(&f, &s)
    }

    fn file(tag: &str, mode: u32, text: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("tarpit-rp-{tag}-{}", std::process::id()));
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn full_sections_and_defaults() {
        let k = file("key", 0o600, "0123456789abcdef\n");
        let h = file(
            "hdr",
            0o600,
            "# auth\nAuthorization: Bearer s3cr3t\nX-Tag: tarpit\n",
        );
        let s = load(&format!(
            "[report]\nengaged_threshold = \"1m\"\n[report.abuseipdb]\nkey_file = {k:?}\n\
             categories = {{ 22 = [22, 18], 2222 = [22], default = [14, 15] }}\n\
             jail_categories = {{ nginx = [21] }}\n\n\
             [[webhook]]\nurl = \"http://127.0.0.1:9/hook\"\nevents = \"ban\"\nheaders_file = {h:?}\nretries = 2\n\
             [[webhook]]\nname = \"chat\"\nurl = \"https://hooks.example/x\"\nrepeat_after = \"0s\"\n"
        ))
        .unwrap()
        .unwrap();
        assert_eq!(s.engaged_threshold, Duration::from_secs(60));
        let a = &s.dests[0];
        assert_eq!(a.id, "abuseipdb");
        assert!(a.url.https && a.url.host == "api.abuseipdb.com");
        assert_eq!(a.quota, Some(1000));
        assert_eq!(a.headers[0].1 .0, "0123456789abcdef");
        assert_eq!(a.ports.get("2222"), &[22]);
        assert_eq!(a.ports.get("80"), &[14, 15]);
        assert_eq!(a.jails.get("nginx"), &[21]);
        assert_eq!(a.jails.get("x"), &[18]);
        assert!(
            !format!("{a:?}").contains("0123456789abcdef"),
            "Debug hides the key"
        );
        let w = &s.dests[1];
        assert_eq!(w.id, "webhook:webhook-1");
        assert!(w.ban && !w.trapped);
        assert_eq!(w.retries, Some(2));
        assert_eq!(w.headers.len(), 2);
        assert!(!format!("{w:?}").contains("s3cr3t"));
        assert_eq!(s.dests[2].id, "webhook:chat");
        assert_eq!(s.dests[2].repeat_ms, 0);
        assert!(load("[serve]\n").unwrap().is_none(), "nothing configured");
        for p in [k, h] {
            let _ = std::fs::remove_file(p);
        }
    }

    #[test]
    fn mistakes_name_line_and_key() {
        let k = file("key2", 0o600, "abc");
        let open = file("open", 0o644, "abc");
        let bad_h = file("badh", 0o600, "NoColon\n");
        let cases = [
            ("[report.abuseipdb]\ndaily_quota = 5\n".to_string(), 1, "report.abuseipdb.key_file"),
            (format!("[report.abuseipdb]\nkey_file = {open:?}\n"), 2, "report.abuseipdb.key_file"),
            (format!("[report.abuseipdb]\nkey_file = {k:?}\nurl = \"ftp://x/\"\n"), 3, "report.abuseipdb.url"),
            (format!("[report.abuseipdb]\nkey_file = {k:?}\ndaily_quota = 0\n"), 3, "report.abuseipdb.daily_quota"),
            (format!("[report.abuseipdb]\nkey_file = {k:?}\ncategories = {{ 22 = [99] }}\n"), 3, "report.abuseipdb.categories.22"),
            (format!("[report.abuseipdb]\nkey_file = {k:?}\ncategories = {{ ssh = [22] }}\n"), 3, "report.abuseipdb.categories.ssh"),
            (format!("[report.abuseipdb]\nkey_file = {k:?}\nca_file = \"/nonexistent\"\n"), 3, "report.abuseipdb.ca_file"),
            (format!("[report.abuseipdb]\nkey_file = {k:?}\nkey = 1\n"), 3, "report.abuseipdb.key"),
            ("[report]\nengaged_threshold = \"soon\"\n".to_string(), 2, "report.engaged_threshold"),
            ("[[webhook]]\nevents = [\"ban\"]\n".to_string(), 1, "webhook.url"),
            ("[[webhook]]\nurl = \"http://x/\"\nevents = [\"bam\"]\n".to_string(), 3, "webhook.events"),
            ("[[webhook]]\nurl = \"http://x/\"\nretries = -1\n".to_string(), 3, "webhook.retries"),
            (format!("[[webhook]]\nurl = \"http://x/\"\nheaders_file = {bad_h:?}\n"), 3, "webhook.headers_file"),
            ("[[webhook]]\nurl = \"http://x/\"\n[[webhook]]\nurl = \"http://y/\"\ntimeout = \"1h\"\n".to_string(), 5, "webhook.timeout"),
            ("[[webhook]]\nname = \"a\"\nurl = \"http://x/\"\n[[webhook]]\nname = \"a\"\nurl = \"http://y/\"\n".to_string(), 5, "webhook.name"),
        ];
        for (text, line, key) in cases {
            let e = load(&text).unwrap_err();
            assert_eq!(
                (e.line, e.key.as_deref()),
                (Some(line), Some(key)),
                "{text}: {e}"
            );
            assert!(!e.to_string().contains("abc\""), "{e}");
        }
        for p in [k, open, bad_h] {
            let _ = std::fs::remove_file(p);
        }
    }
}
