//! An HTTP/1.x request (RFC 9112 §3 request line, §5 header fields):
//!
//! ```text
//! method SP request-target SP HTTP-version CRLF
//! *( field-name ":" OWS field-value OWS CRLF )
//! CRLF
//! ```
//!
//! We keep the method, the target, `Host` and `User-Agent`, each bounded.
//! Bare LF line ends are accepted (RFC 9112 §2.2 allows it). A request line
//! the peer has not finished (a long target filling the window) still
//! counts when its method is a registered one: the start is an HTTP
//! client's. Headers are read until the blank line or the end of what was
//! queued.

use super::{prefix, text, Identity, Opening, Protocol, MAX_FIELD, MAX_PATH};

/// Longest method we accept (`VERSION-CONTROL` is 15).
const MAX_METHOD: usize = 20;

/// Methods recognised on an unfinished request line (RFC 9110 §9 and the
/// WebDAV ones scanners send).
const KNOWN: [&[u8]; 14] = [
    b"GET",
    b"HEAD",
    b"POST",
    b"PUT",
    b"DELETE",
    b"CONNECT",
    b"OPTIONS",
    b"TRACE",
    b"PATCH",
    b"PROPFIND",
    b"PROPPATCH",
    b"MKCOL",
    b"COPY",
    b"MOVE",
];

/// RFC 9110 §5.6.2 `tchar`.
fn tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// `HTTP/d.d` (RFC 9112 §2.3).
fn is_version(v: &[u8]) -> bool {
    matches!(v, [b'H', b'T', b'T', b'P', b'/', a, b'.', b] if a.is_ascii_digit() && b.is_ascii_digit())
}

/// Splits off one line (without its CR LF / LF); `None` if no line end.
fn line(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = b.iter().position(|&c| c == b'\n')?;
    let l = b.get(..i)?;
    Some((l.strip_suffix(b"\r").unwrap_or(l), b.get(i + 1..)?))
}

fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// The methods of RFC 9110 §9 and PATCH (RFC 5789), each with the space
/// that ends it: what a request line opens with.
const OPENINGS: [&[u8]; 9] = [
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];

/// Whether `b` starts an HTTP/1.x request line: one of [`OPENINGS`].
pub fn opens(b: &[u8]) -> Opening {
    let mut any = Opening::No;
    for m in OPENINGS {
        match prefix(b, m) {
            Opening::Yes => return Opening::Yes,
            Opening::NotYet => any = Opening::NotYet,
            Opening::No => {}
        }
    }
    any
}

/// `Some` when `b` starts with an HTTP/1.x request line.
pub fn identify(b: &[u8]) -> Option<Identity> {
    let sp = b.iter().take(MAX_METHOD + 1).position(|&c| c == b' ')?;
    let method = b.get(..sp)?;
    if method.is_empty() || !method.iter().all(|&c| tchar(c)) {
        return None;
    }
    let after = b.get(sp + 1..)?;
    let (request, mut rest) = match line(after) {
        Some((l, rest)) => (l, rest),
        None => {
            // Unfinished: only a known method makes it HTTP.
            if !KNOWN.contains(&method) {
                return None;
            }
            (after, &b""[..])
        }
    };
    let target_end = request
        .iter()
        .rposition(|&c| c == b' ')
        .filter(|&i| request.get(i + 1..).is_some_and(is_version));
    let target = match target_end {
        Some(i) => request.get(..i)?,
        // No version: an unfinished line, or HTTP/0.9 style; known methods only.
        None if KNOWN.contains(&method) => request,
        None => return None,
    };
    if target.is_empty() && target_end.is_some() {
        return None;
    }
    let mut host = None;
    let mut agent = None;
    if target_end.is_some() {
        while let Some((l, next)) = line(rest) {
            rest = next;
            if l.is_empty() {
                break;
            }
            let Some(colon) = l.iter().position(|&c| c == b':') else {
                continue;
            };
            let (name, value) = (l.get(..colon)?, trim(l.get(colon + 1..)?));
            if host.is_none() && name.eq_ignore_ascii_case(b"host") {
                host = Some(text(value, MAX_FIELD));
            } else if agent.is_none() && name.eq_ignore_ascii_case(b"user-agent") {
                agent = Some(text(value, MAX_FIELD));
            }
        }
    }
    Some(Identity {
        protocol: Protocol::Http,
        software: agent,
        http_method: Some(text(method, MAX_METHOD)),
        http_path: (!target.is_empty()).then(|| text(target, MAX_PATH)),
        http_host: host,
        ..Identity::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `curl -s http://127.0.0.1:PORT/wp-login.php?x=1` (curl 7.88.1,
    /// Debian 12), captured on loopback.
    const CURL: &[u8] = include_bytes!("testdata/curl-7.88.1.bin");
    /// `wget -q -t1 http://127.0.0.1:PORT/` (wget 1.21.3), captured on loopback.
    const WGET: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:47005\r\nUser-Agent: Wget/1.21.3\r\nAccept: */*\r\nAccept-Encoding: identity\r\nConnection: Keep-Alive\r\n\r\n";

    #[test]
    fn real_curl_and_wget() {
        let id = identify(CURL).unwrap();
        assert_eq!(id.protocol, Protocol::Http);
        assert_eq!(id.http_method.as_deref(), Some("GET"));
        assert_eq!(id.http_path.as_deref(), Some("/wp-login.php?x=1"));
        assert_eq!(id.http_host.as_deref(), Some("127.0.0.1:47002"));
        assert_eq!(id.software.as_deref(), Some("curl/7.88.1"));
        let id = identify(WGET).unwrap();
        assert_eq!(id.software.as_deref(), Some("Wget/1.21.3"));
        assert_eq!(id.http_path.as_deref(), Some("/"));
    }

    #[test]
    fn variants() {
        // Bare LF, odd case, no headers finished.
        let id = identify(b"POST /x HTTP/1.0\nuser-AGENT:  zgrab/0.x \nHOST:a").unwrap();
        assert_eq!(id.http_method.as_deref(), Some("POST"));
        assert_eq!(id.software.as_deref(), Some("zgrab/0.x"));
        assert_eq!(id.http_host, None, "an unfinished header line is not read");
        // An unfinished request line of a known method.
        let mut long = b"GET /".to_vec();
        long.extend_from_slice(&[b'a'; 2000]);
        let id = identify(&long).unwrap();
        assert_eq!(id.http_path.as_deref().map(str::len), Some(MAX_PATH));
        // The first Host wins; hostile bytes come out escaped.
        let id = identify(
            b"GET /\x1b[2J HTTP/1.1\r\nHost: a\r\nHost: b\r\nUser-Agent: x\r\ny\"\\\r\n\r\n",
        )
        .unwrap();
        assert_eq!(id.http_host.as_deref(), Some("a"));
        assert_eq!(id.http_path.as_deref(), Some("/\\x1b[2J"));
        assert_eq!(id.software.as_deref(), Some("x"));
        // HTTP/2 prior knowledge is an HTTP client too.
        let id = identify(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
        assert_eq!(id.http_method.as_deref(), Some("PRI"));
    }

    #[test]
    fn not_http() {
        assert!(identify(b"").is_none());
        assert!(identify(b"GET").is_none());
        assert!(identify(b"HELLO world\r\n").is_none());
        assert!(identify(b"FOO /x").is_none(), "unknown method, unfinished");
        assert!(identify(b"G\x00T / HTTP/1.1\r\n").is_none());
        assert!(identify(b"GET  HTTP/1.1\r\n").is_none());
        assert!(identify(b"SSH-2.0-x\r\n").is_none());
    }
}
