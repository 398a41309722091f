//! `[watch.crowdsec]` validated. Every mistake names file, line and key;
//! the secret files must exist, be non-empty and be readable by their owner
//! only (0600), as fail2ban and CrowdSec's own bouncers ask.

use crate::config::{parse_duration, ConfigError, CrowdSecSection, DurationValue, Source, StrList};
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

use super::client::Endpoint;

/// A secret read from a file; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(hidden)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub url: String,
    pub endpoint: Endpoint,
    pub api_key: Option<Secret>,
    pub api_key_file: Option<PathBuf>,
    pub machine_id: Option<String>,
    pub password: Option<Secret>,
    pub push: bool,
    pub types: Vec<String>,
    pub origins: Vec<String>,
    pub update_frequency: Duration,
}

pub const DEFAULT_UPDATE_FREQUENCY: Duration = Duration::from_secs(10);

/// Reads a secret file: exists, owner-only, one non-empty line.
pub fn read_secret(p: &Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a file", p.display()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} has mode {mode:o}: a secret must be readable by its owner only (chmod 600 {})",
            p.display(),
            p.display()
        ));
    }
    if meta.len() > 4096 {
        return Err(format!("{} is larger than 4 KiB; not a key", p.display()));
    }
    let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let s = text.trim();
    if s.is_empty() {
        return Err(format!("{} is empty", p.display()));
    }
    if s.contains(['\n', '\r']) || !s.chars().all(|c| c.is_ascii_graphic()) {
        return Err(format!(
            "{} must hold one line of printable ASCII",
            p.display()
        ));
    }
    Ok(s.to_string())
}

fn plain_word(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
}

pub fn resolve(sec: &Spanned<CrowdSecSection>, src: &Source) -> Result<Settings, ConfigError> {
    let c = sec.get_ref();
    let url = c.url.as_ref().ok_or_else(|| {
        src.error_at(
            sec.span(),
            "watch.crowdsec.url",
            "the LAPI url is required (e.g. \"http://127.0.0.1:8080/\")",
        )
    })?;
    let endpoint = Endpoint::parse(url.get_ref())
        .map_err(|m| src.error_at(url.span(), "watch.crowdsec.url", m))?;
    let secret = |v: &Option<Spanned<String>>,
                  key: &str|
     -> Result<Option<(PathBuf, Secret)>, ConfigError> {
        match v {
            None => Ok(None),
            Some(p) => {
                let path = PathBuf::from(p.get_ref());
                read_secret(&path)
                    .map(|s| Some((path, Secret(s))))
                    .map_err(|m| src.error_at(p.span(), key, m))
            }
        }
    };
    let key = secret(&c.api_key_file, "watch.crowdsec.api_key_file")?;
    let password = secret(&c.password_file, "watch.crowdsec.password_file")?;
    let machine_id = match &c.machine_id {
        None => None,
        Some(m) if plain_word(m.get_ref()) => Some(m.get_ref().clone()),
        Some(m) => {
            return Err(src.error_at(
                m.span(),
                "watch.crowdsec.machine_id",
                "letters, digits, `_`, `-`, `.`, `:`; at most 64",
            ))
        }
    };
    match (&machine_id, &password) {
        (Some(_), None) => {
            return Err(src.error_at(
                c.machine_id
                    .as_ref()
                    .map(|m| m.span())
                    .unwrap_or(sec.span()),
                "watch.crowdsec.password_file",
                "machine_id needs password_file",
            ))
        }
        (None, Some(_)) => {
            return Err(src.error_at(
                c.password_file
                    .as_ref()
                    .map(|m| m.span())
                    .unwrap_or(sec.span()),
                "watch.crowdsec.machine_id",
                "password_file needs machine_id",
            ))
        }
        _ => {}
    }
    if key.is_none() && machine_id.is_none() {
        return Err(src.error_at(
            sec.span(),
            "watch.crowdsec.api_key_file",
            "configure api_key_file (bouncer: pull decisions), machine_id + password_file (push bans), or both",
        ));
    }
    let push = match &c.push {
        Some(p) if *p.get_ref() && machine_id.is_none() => {
            return Err(src.error_at(
                p.span(),
                "watch.crowdsec.push",
                "push needs machine_id and password_file",
            ))
        }
        Some(p) => *p.get_ref(),
        None => machine_id.is_some(),
    };
    let words = |v: &Option<Spanned<StrList>>,
                 key: &str,
                 dflt: Vec<String>|
     -> Result<Vec<String>, ConfigError> {
        match v {
            None => Ok(dflt),
            Some(l) => StrList::items(l)
                .into_iter()
                .map(|(s, span)| {
                    if plain_word(&s) {
                        Ok(s)
                    } else {
                        Err(src.error_at(span, key, format!("{s:?} is not a plain word")))
                    }
                })
                .collect(),
        }
    };
    let types = words(&c.types, "watch.crowdsec.types", vec!["tarpit".into()])?;
    if types.is_empty() {
        let span = c.types.as_ref().map(|t| t.span()).unwrap_or(sec.span());
        return Err(src.error_at(
            span,
            "watch.crowdsec.types",
            "at least one decision type is needed",
        ));
    }
    let origins = words(&c.origins, "watch.crowdsec.origins", Vec::new())?;
    let update_frequency = match &c.update_frequency {
        None => DEFAULT_UPDATE_FREQUENCY,
        Some(v) => {
            let d: &DurationValue = v.get_ref();
            let d = parse_duration(&d.0)
                .map_err(|m| src.error_at(v.span(), "watch.crowdsec.update_frequency", m))?;
            if d < Duration::from_millis(100) || d > Duration::from_secs(3600) {
                return Err(src.error_at(
                    v.span(),
                    "watch.crowdsec.update_frequency",
                    "must be within 100ms..1h",
                ));
            }
            d
        }
    };
    Ok(Settings {
        url: url.get_ref().clone(),
        endpoint,
        api_key_file: key.as_ref().map(|k| k.0.clone()),
        api_key: key.map(|k| k.1),
        machine_id,
        password: password.map(|p| p.1),
        push,
        types,
        origins,
        update_frequency,
    })
}

#[cfg(test)]
mod tests {
    use crate::config;
    use crate::watcher::settings;
    use std::os::unix::fs::PermissionsExt;

    fn load(t: &str) -> Result<crate::watcher::WatchSettings, config::ConfigError> {
        let s = config::Source::new("/etc/tarpit/tarpit.toml", t);
        let f = config::parse(&s)?;
        settings::resolve(f.watch.as_ref().map(|w| (w, &s)))
    }

    fn secret_file(tag: &str, mode: u32, text: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("tarpit-cs-{tag}-{}", std::process::id()));
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn full_section_and_defaults() {
        let k = secret_file("key", 0o600, "f60533ad058c034f46bb3183f759e377\n");
        let pw = secret_file("pw", 0o600, "s3cret");
        let o = load(&format!(
            "[watch]\n[watch.crowdsec]\nurl = \"http://127.0.0.1:8080/\"\napi_key_file = {k:?}\n\
             machine_id = \"web-1\"\npassword_file = {pw:?}\ntypes = [\"tarpit\", \"ban\"]\nupdate_frequency = \"2s\"\n"
        ))
        .unwrap();
        let c = o.crowdsec.unwrap();
        assert_eq!(
            c.api_key.as_ref().unwrap().0,
            "f60533ad058c034f46bb3183f759e377"
        );
        assert!(c.push, "push defaults on with a machine");
        assert_eq!(c.types, vec!["tarpit", "ban"]);
        assert_eq!(c.update_frequency, std::time::Duration::from_secs(2));
        assert!(!format!("{c:?}").contains("f60533"), "Debug hides the key");
        let o = load(&format!(
            "[watch.crowdsec]\nurl = \"http://127.0.0.1:8080/\"\napi_key_file = {k:?}\n"
        ))
        .unwrap();
        let c = o.crowdsec.unwrap();
        assert!(!c.push);
        assert_eq!(c.types, vec!["tarpit"]);
        assert_eq!(c.update_frequency, std::time::Duration::from_secs(10));
        let _ = std::fs::remove_file(k);
        let _ = std::fs::remove_file(pw);
    }

    #[test]
    fn mistakes_name_line_and_key() {
        let k = secret_file("key2", 0o600, "abc");
        let open = secret_file("open", 0o644, "abc");
        let empty = secret_file("empty", 0o600, "\n");
        let cases = [
            (format!("[watch.crowdsec]\napi_key_file = {k:?}\n"), 1, "watch.crowdsec.url"),
            (format!("[watch.crowdsec]\nurl = \"https://x:1/\"\napi_key_file = {k:?}\n"), 2, "watch.crowdsec.url"),
            (format!("[watch.crowdsec]\nurl = \"http://x:1/\"\napi_key_file = {open:?}\n"), 3, "watch.crowdsec.api_key_file"),
            (format!("[watch.crowdsec]\nurl = \"http://x:1/\"\napi_key_file = {empty:?}\n"), 3, "watch.crowdsec.api_key_file"),
            ("[watch.crowdsec]\nurl = \"http://x:1/\"\napi_key_file = \"/nonexistent/k\"\n".to_string(), 3, "watch.crowdsec.api_key_file"),
            (format!("[watch.crowdsec]\nurl = \"http://x:1/\"\napi_key_file = {k:?}\npush = true\n"), 4, "watch.crowdsec.push"),
            (format!("[watch.crowdsec]\nurl = \"http://x:1/\"\napi_key_file = {k:?}\nmachine_id = \"m\"\n"), 4, "watch.crowdsec.password_file"),
            (format!("[watch.crowdsec]\nurl = \"http://x:1/\"\napi_key_file = {k:?}\ntypes = []\n"), 4, "watch.crowdsec.types"),
            (format!("[watch.crowdsec]\nurl = \"http://x:1/\"\napi_key_file = {k:?}\ntypes = [\"a b\"]\n"), 4, "watch.crowdsec.types"),
            (format!("[watch.crowdsec]\nurl = \"http://x:1/\"\napi_key_file = {k:?}\nupdate_frequency = \"2h\"\n"), 4, "watch.crowdsec.update_frequency"),
            (format!("[watch.crowdsec]\nurl = \"http://x:1/\"\napi_key_file = {k:?}\nkey = 1\n"), 4, "watch.crowdsec.key"),
        ];
        for (text, line, key) in cases {
            let e = load(&text).unwrap_err();
            assert_eq!(
                (e.line, e.key.as_deref()),
                (Some(line), Some(key)),
                "{text}: {e}"
            );
        }
        let e = load(&format!(
            "[watch.crowdsec]\nurl = \"http://x:1/\"\napi_key_file = {open:?}\n"
        ))
        .unwrap_err();
        assert!(e.message.contains("chmod 600"), "{e}");
        for p in [k, open, empty] {
            let _ = std::fs::remove_file(p);
        }
    }
}
