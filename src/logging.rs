//! Logging setup: human-readable by default, one JSON object per line with
//! `--log-format json`. Connection records are ordinary events with target
//! `tarpit::record`, so they can be filtered like anything else.
//!
//! Log lines carry text other people chose (the first bytes a peer sent, an
//! address text from a log line, an SSH user name) and log watchers match
//! on them, so no such text may ever look like structure:
//!
//! * JSON: every value is a JSON string or number (serde escapes).
//! * human: a field value is written bare only if it is made of characters
//!   that cannot end a field (letters, digits, `.:/_-+@,[]%`); anything
//!   else is double-quoted with `"` `\` and every control or non-ASCII
//!   character escaped, so `x peer=203.0.113.66:22` stays inside its field.
//!   The message itself has its control characters escaped (no forged
//!   second line, no terminal escapes).
//! * colour only when stderr is a terminal (and `NO_COLOR` is unset): ANSI
//!   sequences never land in files or the journal.

use clap::ValueEnum;
use std::fmt::{self, Write as _};
use std::io::IsTerminal;
use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// Whether the human format may colour: only on a terminal, and never with
/// `NO_COLOR` set.
pub fn use_colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber, writing to stderr. `level` is a
/// `RUST_LOG`-style filter (`info`, `tarpit=debug`); `RUST_LOG` wins when set.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder
            .with_ansi(use_colour())
            .fmt_fields(SafeFields)
            .try_init(),
        LogFormat::Json => builder
            .with_ansi(false)
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

/// The human format's field formatter (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct SafeFields;

impl<'a> MakeVisitor<Writer<'a>> for SafeFields {
    type Visitor = SafeVisitor<'a>;

    fn make_visitor(&self, target: Writer<'a>) -> Self::Visitor {
        SafeVisitor {
            writer: target,
            empty: true,
            result: Ok(()),
        }
    }
}

/// Writes one event's fields for [`SafeFields`].
pub struct SafeVisitor<'a> {
    writer: Writer<'a>,
    empty: bool,
    result: fmt::Result,
}

/// Characters a bare value may contain: none of them ends a field or
/// starts a quoted one.
fn bare_ok(c: char) -> bool {
    c.is_ascii_alphanumeric() || ".:/_-+@,[]%".contains(c)
}

/// A value as Rust's `Debug` writes a string: quoted, with every `"` and
/// control character escaped. Such text is already one token.
fn is_quoted_token(s: &str) -> bool {
    let Some(inner) = s.strip_prefix('"').and_then(|r| r.strip_suffix('"')) else {
        return false;
    };
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.next().is_none() => return false,
            '\\' => {}
            '"' => return false,
            c if c.is_control() => return false,
            _ => {}
        }
    }
    true
}

/// `s` double-quoted: `"` and `\` backslashed, control and non-ASCII
/// characters as `\n`, `\r`, `\t` or `\u{..}`.
pub fn quote(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            ' '..='~' => o.push(c),
            c => {
                let _ = write!(o, "\\u{{{:x}}}", u32::from(c));
            }
        }
    }
    o.push('"');
    o
}

/// A field value as one token: bare when safe, else quoted.
fn token(s: &str, from_debug: bool) -> String {
    let bare = !s.is_empty() && s.chars().all(bare_ok);
    if bare || (from_debug && is_quoted_token(s)) {
        s.to_string()
    } else {
        quote(s)
    }
}

/// A message with its control characters escaped (it stays one line).
fn escape_message(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(o, "\\u{{{:x}}}", u32::from(c));
            }
            c => o.push(c),
        }
    }
    o
}

impl SafeVisitor<'_> {
    fn field(&mut self, field: &Field, text: &str, from_debug: bool) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        if name.starts_with("log.") {
            return;
        }
        let sep = if self.empty { "" } else { " " };
        self.empty = false;
        self.result = if name == "message" {
            write!(self.writer, "{sep}{}", escape_message(text))
        } else {
            let name = name.strip_prefix("r#").unwrap_or(name);
            write!(self.writer, "{sep}{name}={}", token(text, from_debug))
        };
    }
}

impl Visit for SafeVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, value, false);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut text = value.to_string();
        let mut src = value.source();
        while let Some(e) = src {
            let _ = write!(text, ": {e}");
            src = e.source();
        }
        self.field(field, &text, false);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        self.field(field, &text, field.name() != "message");
    }
}

impl VisitOutput<fmt::Result> for SafeVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for SafeVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::record::escape_bytes;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The human line of one record-like event, formatted as `init` does
    /// for a file (no terminal).
    fn human(head: &str, address: &str, user: &str) -> String {
        captured(|| {
            tracing::info!(
                peer = %"10.77.0.5:4242".parse::<std::net::SocketAddr>().unwrap(),
                head = %head,
                address = %address,
                user = ?user,
                held_secs = 1.5,
                "connection released"
            );
        })
    }

    /// What `f` logs, as `init` formats it for a file (no terminal).
    fn captured(f: impl FnOnce()) -> String {
        let buf = Buf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .with_level(false)
            .fmt_fields(SafeFields)
            .finish();
        tracing::subscriber::with_default(sub, f);
        let v = buf.0.lock().unwrap().clone();
        String::from_utf8(v).unwrap()
    }

    /// A strict logfmt reader: `key=bare` or `key="quoted"` separated by
    /// single spaces, after the message. Returns the keys and raw values.
    fn fields(line: &str) -> Vec<(String, String)> {
        let line = line.strip_suffix('\n').expect("one line");
        assert!(!line.contains('\n') && !line.contains('\r'), "{line:?}");
        let rest = line
            .trim_start()
            .strip_prefix("connection released ")
            .unwrap_or_else(|| panic!("{line:?}"));
        let mut out = Vec::new();
        let mut s = rest;
        while !s.is_empty() {
            let eq = s.find('=').unwrap_or_else(|| panic!("{line:?}"));
            let key = &s[..eq];
            s = &s[eq + 1..];
            let val_end = if s.starts_with('"') {
                let b = s.as_bytes();
                let mut i = 1;
                loop {
                    match b.get(i) {
                        Some(b'\\') => i += 2,
                        Some(b'"') => break i + 1,
                        Some(_) => i += 1,
                        None => panic!("unterminated: {line:?}"),
                    }
                }
            } else {
                s.find(' ').unwrap_or(s.len())
            };
            out.push((key.to_string(), s[..val_end].to_string()));
            s = &s[val_end..];
            s = s.strip_prefix(' ').unwrap_or(s);
        }
        out
    }

    fn unquote(v: &str) -> String {
        let Some(inner) = v.strip_prefix('"').and_then(|r| r.strip_suffix('"')) else {
            return v.to_string();
        };
        let mut o = String::new();
        let mut it = inner.chars();
        while let Some(c) = it.next() {
            if c != '\\' {
                o.push(c);
                continue;
            }
            match it.next() {
                Some('n') => o.push('\n'),
                Some('r') => o.push('\r'),
                Some('t') => o.push('\t'),
                Some('u') => {
                    let hex: String = it.by_ref().skip(1).take_while(|c| *c != '}').collect();
                    o.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap());
                }
                Some(c) => o.push(c),
                None => panic!("dangling backslash"),
            }
        }
        o
    }

    #[test]
    fn attacker_bytes_never_create_a_field() {
        let mut inputs: Vec<Vec<u8>> = vec![
            b"x peer=203.0.113.66:22".to_vec(),
            b"x\" peer=203.0.113.66:22 \"".to_vec(),
            b"\\\" peer=1".to_vec(),
            b"a\nINFO forged line peer=1".to_vec(),
            b"\x1b[31mred\x1b[0m".to_vec(),
            b"".to_vec(),
            b" ".to_vec(),
            b"=".to_vec(),
            b"\"".to_vec(),
            "\u{202e}evil\u{2028}x".as_bytes().to_vec(),
        ];
        // And a bounded pseudo-random sweep over the printable-and-not bytes.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            let len = (x % 24) as usize;
            let mut v = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v.push(
                    b" =\"\\\n\r\tx\x1bpeer:1."[(x % 16) as usize]
                        ^ if x & 0x100 != 0 { 0x80 } else { 0 },
                );
            }
            inputs.push(v);
        }
        for bytes in inputs {
            let head = escape_bytes(&bytes);
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let line = human(&head, &text, &text);
            let f = fields(&line);
            let keys: Vec<&str> = f.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(
                keys,
                ["peer", "head", "address", "user", "held_secs"],
                "{bytes:?} -> {line:?}"
            );
            assert_eq!(f[0].1, "10.77.0.5:4242");
            assert_eq!(unquote(&f[1].1), head, "{line:?}");
            assert_eq!(unquote(&f[2].1), text, "{line:?}");
            assert_eq!(unquote(&f[3].1), text, "{line:?}");
            assert!(!line.contains('\x1b'), "{line:?}");
        }
    }

    /// The record event itself (what `emit_record` writes in the human
    /// format), carrying what the classifier kept of hostile bytes: every
    /// field is one of the record's own, once, holding exactly its text.
    #[test]
    fn classified_attacker_text_never_creates_a_field() {
        use crate::classify::classify;
        use crate::engine::record::{ConnRecord, EndReason};
        let hostile: [&[u8]; 5] = [
            b"x peer=203.0.113.66:22 end=lifetime",
            b"x\" protocol=ssh \"",
            b"a\nINFO forged line peer=1",
            b"\x1b[31mred\x1b[0m\\\"",
            "\u{202e}evil\u{2028}=".as_bytes(),
        ];
        for h in hostile {
            let mut inputs = Vec::new();
            let mut ssh = b"SSH-2.0-".to_vec();
            ssh.extend_from_slice(h);
            ssh.push(b' ');
            ssh.extend_from_slice(h);
            inputs.push(ssh);
            let mut http = b"GET /".to_vec();
            http.extend_from_slice(h);
            http.extend_from_slice(b" HTTP/1.1\r\nHost: ");
            http.extend_from_slice(h);
            http.extend_from_slice(b"\r\nUser-Agent: ");
            http.extend_from_slice(h);
            http.extend_from_slice(b"\r\n\r\n");
            inputs.push(http);
            for bytes in inputs {
                let r = ConnRecord {
                    listener: "0.0.0.0:22".into(),
                    peer: "10.77.0.5:4242".parse().unwrap(),
                    local: "10.77.0.1:22".parse().unwrap(),
                    original_dst: "10.77.0.1:22".parse().unwrap(),
                    start: std::time::SystemTime::UNIX_EPOCH,
                    held_secs: 1.0,
                    engaged_secs: 1.0,
                    engaged_upper_bound: false,
                    syn_wait_secs: 0.0,
                    bytes_received: bytes.len() as u64,
                    fin_after_secs: None,
                    end: EndReason::PeerReset,
                    head: escape_bytes(&bytes),
                    client: classify(&bytes),
                    estimated: false,
                    policy: "silent".into(),
                };
                let line = captured(|| crate::engine::emit_record(&r, None));
                let f = fields(&line);
                let keys: Vec<&str> = f.iter().map(|(k, _)| k.as_str()).collect();
                let c = &r.client;
                let mut want = vec![
                    ("listener", "0.0.0.0:22".to_string()),
                    ("peer", "10.77.0.5:4242".into()),
                    ("local", "10.77.0.1:22".into()),
                    ("original_dst", "10.77.0.1:22".into()),
                    ("start", "1970-01-01T00:00:00.000Z".into()),
                    ("held_secs", "1.0".into()),
                    ("engaged_secs", "1.0".into()),
                    ("engaged_upper_bound", "false".into()),
                    ("syn_wait_secs", "0.0".into()),
                    ("bytes_received", bytes.len().to_string()),
                    ("peer_tried_close", "false".into()),
                    ("policy", "silent".into()),
                    ("end", "peer_reset".into()),
                    ("head", r.head.clone()),
                    ("protocol", c.protocol.to_string()),
                ];
                for (k, v) in [
                    ("software", &c.software),
                    ("ssh_version", &c.ssh_version),
                    ("ssh_comments", &c.ssh_comments),
                    ("http_method", &c.http_method),
                    ("http_path", &c.http_path),
                    ("http_host", &c.http_host),
                ] {
                    if let Some(v) = v {
                        want.push((k, v.clone()));
                    }
                }
                let want_keys: Vec<&str> = want.iter().map(|(k, _)| *k).collect();
                assert_eq!(keys, want_keys, "{bytes:?} -> {line:?}");
                for ((_, got), (k, v)) in f.iter().zip(&want) {
                    assert_eq!(&unquote(got), v, "{k} in {line:?}");
                }
                // (A newline ends an HTTP line: then there is no agent.)
                assert!(c.software.is_some() || h.contains(&b'\n'), "{bytes:?}");
                assert!(!line.contains('\x1b'), "{line:?}");
            }
        }
    }

    #[test]
    fn plain_values_stay_bare() {
        let line = human("SSH-2.0-Go", "2001:db8::1", "root");
        assert!(
            line.contains("peer=10.77.0.5:4242 head=SSH-2.0-Go address=2001:db8::1 user=\"root\""),
            "{line}"
        );
        assert_eq!(quote("a b\"\\\x07é"), "\"a b\\\"\\\\\\u{7}\\u{e9}\"");
        assert_eq!(escape_message("a\nb\x1b"), "a\\nb\\u{1b}");
    }
}
