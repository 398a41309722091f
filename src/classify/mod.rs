//! What a trapped peer tried: the bytes it sent and we never read, named.
//!
//! At release the socket engine peeks (never reads: the window stays shut)
//! the whole receive queue — at most the receive buffer, [`PEEK_BYTES`];
//! the advertised window is 1,152 B — and hands it to [`classify`]. The
//! answer, an [`Identity`], travels on the record into the log line, the
//! history, the report and the metrics (protocol only).
//!
//! This module is pure: bytes in, an [`Identity`] out; no I/O. Each
//! protocol has its own file and a checked reader over the slice (no
//! indexing that can panic, every length checked before it is used), so
//! hostile input yields `Other` at worst; `fuzz/fuzz_targets/classify.rs`
//! holds it to that.
//!
//! * [`ssh`]: the identification string (RFC 4253 §4.2);
//! * [`http`]: an HTTP/1.x request line and headers (RFC 9112 §3, §5);
//! * [`tls`]: a ClientHello (RFC 8446 §4.1.2) with SNI, ALPN and its JA4
//!   fingerprint.
//!
//! Every text in an [`Identity`] is attacker-chosen, so it leaves here
//! already escaped by [`escape_bytes`] (printable ASCII, `\xNN` for the
//! rest, `\\` for a backslash) and bounded ([`text`]): no consumer can
//! print a control character by accident. Formats that need more (logfmt
//! quoting, HTML) add their own escaping on top.

pub mod http;
pub mod ssh;
pub mod tls;

use crate::engine::record::escape_bytes;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Bytes peeked at release: the listener's whole receive buffer (asking
/// for 1 byte of `SO_RCVBUF` yields 2,304 on Linux, half of it window), so
/// nothing queued is missed.
pub const PEEK_BYTES: usize = 2304;

/// Longest text kept of one field, in raw bytes (before escaping, which at
/// most quadruples it).
pub const MAX_FIELD: usize = 128;
/// Longest HTTP request target kept, raw bytes.
pub const MAX_PATH: usize = 256;

/// What the peer spoke, from a fixed set (so it can be a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// An SSH identification string.
    Ssh,
    /// An HTTP/1.x request.
    Http,
    /// A TLS ClientHello.
    Tls,
    /// Some bytes, none of the above.
    Other,
    /// Nothing sent.
    #[default]
    Silent,
}

impl Protocol {
    pub const ALL: [Protocol; 5] = [
        Protocol::Ssh,
        Protocol::Http,
        Protocol::Tls,
        Protocol::Other,
        Protocol::Silent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Ssh => "ssh",
            Protocol::Http => "http",
            Protocol::Tls => "tls",
            Protocol::Other => "other",
            Protocol::Silent => "silent",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the peer's first bytes say about it. Every text is escaped and
/// bounded (see the module docs); `None` where the protocol has no such
/// field or the peer did not send it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub protocol: Protocol,
    /// The client program as it names itself: the SSH `softwareversion`
    /// (`OpenSSH_9.2p1`, `libssh2_1.10.0`) or the HTTP `User-Agent`
    /// (`curl/7.88.1`). TLS names no software (see `ja4`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software: Option<String>,
    /// SSH `protoversion` (`2.0`, `1.99`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_version: Option<String>,
    /// SSH `comments` (`Debian-2+deb12u10`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_comments: Option<String>,
    /// HTTP method, request target and `Host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_host: Option<String>,
    /// TLS server name (SNI) and the ALPN protocols, comma-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_sni: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_alpn: Option<String>,
    /// The JA4 fingerprint of the ClientHello (see [`tls::ja4`]), when the
    /// whole hello was in the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ja4: Option<String>,
}

impl Identity {
    /// For an engine that never sees the payload (the stateless engine):
    /// `Silent` when the peer sent nothing, else `Other` (sent bytes, not
    /// looked at).
    pub fn unseen(bytes_sent: u64) -> Self {
        Identity {
            protocol: if bytes_sent == 0 {
                Protocol::Silent
            } else {
                Protocol::Other
            },
            ..Identity::default()
        }
    }

    /// The best single name for the client program: its software, else
    /// (TLS) its fingerprint. What the report groups by.
    pub fn client(&self) -> Option<&str> {
        self.software.as_deref().or(self.ja4.as_deref())
    }
}

/// Names what `queued` (the start of the peer's unread bytes) is.
pub fn classify(queued: &[u8]) -> Identity {
    if queued.is_empty() {
        return Identity::default();
    }
    if let Some(id) = ssh::identify(queued) {
        return id;
    }
    if let Some(id) = tls::identify(queued) {
        return id;
    }
    if let Some(id) = http::identify(queued) {
        return id;
    }
    Identity {
        protocol: Protocol::Other,
        ..Identity::default()
    }
}

/// Whether the start of a queue opens a given protocol (see [`opens`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// It does.
    Yes,
    /// It does not, whatever follows.
    No,
    /// Too few bytes to tell (none yet, or a prefix of an opening).
    NotYet,
}

/// Bytes [`opens`] needs at most to decide (`OPTIONS ` and `CONNECT `).
pub const OPENING_BYTES: usize = 8;

/// Whether `queued` begins the way a client of `protocol` begins: SSH its
/// identification string (`SSH-`, RFC 4253 §4.2), HTTP a request line (a
/// method of RFC 9110 §9 and a space). A cheap prefix test on at most
/// [`OPENING_BYTES`] — what bait waits for before it answers — where
/// [`classify`] parses the whole queue. Other protocols never open.
pub fn opens(protocol: Protocol, queued: &[u8]) -> Opening {
    match protocol {
        Protocol::Ssh => ssh::opens(queued),
        Protocol::Http => http::opens(queued),
        _ => Opening::No,
    }
}

/// [`Opening`] of `queued` against one fixed opening `want`.
fn prefix(queued: &[u8], want: &[u8]) -> Opening {
    let n = queued.len().min(want.len());
    match (queued.get(..n) == want.get(..n), n == want.len()) {
        (false, _) => Opening::No,
        (true, true) => Opening::Yes,
        (true, false) => Opening::NotYet,
    }
}

/// Attacker bytes as a field: at most `max` of them, escaped.
pub fn text(b: &[u8], max: usize) -> String {
    escape_bytes(b.get(..max).unwrap_or(b))
}

/// A checked reader over a byte slice (smoltcp style: every read says
/// whether the bytes were there; nothing indexes past the end).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

/// The input ended before a field did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Short;

impl<'a> Reader<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Reader { rest: b }
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Short> {
        if n > self.rest.len() {
            return Err(Short);
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    pub fn u8(&mut self) -> Result<u8, Short> {
        let b = self.take(1)?;
        b.first().copied().ok_or(Short)
    }

    pub fn u16(&mut self) -> Result<u16, Short> {
        match *self.take(2)? {
            [a, b] => Ok(u16::from_be_bytes([a, b])),
            _ => Err(Short),
        }
    }

    pub fn u24(&mut self) -> Result<usize, Short> {
        match *self.take(3)? {
            [a, b, c] => Ok(usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c)),
            _ => Err(Short),
        }
    }

    /// A field with a `len`-byte big-endian length prefix (1 or 2 bytes).
    pub fn vec8(&mut self) -> Result<&'a [u8], Short> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    pub fn vec16(&mut self) -> Result<&'a [u8], Short> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_and_other() {
        assert_eq!(classify(b"").protocol, Protocol::Silent);
        assert_eq!(classify(b"\x00\x01garbage").protocol, Protocol::Other);
        assert_eq!(classify(b"\r\n").protocol, Protocol::Other);
        assert_eq!(Identity::unseen(0).protocol, Protocol::Silent);
        assert_eq!(Identity::unseen(3).protocol, Protocol::Other);
    }

    #[test]
    fn openings() {
        use Opening::*;
        for (p, b, want) in [
            (Protocol::Ssh, &b""[..], NotYet),
            (Protocol::Ssh, b"SS", NotYet),
            (Protocol::Ssh, b"SSH-", Yes),
            (Protocol::Ssh, b"SSH-2.0-OpenSSH_9.2\r\n", Yes),
            (Protocol::Ssh, b"ssh-", No),
            (Protocol::Ssh, b"SSX", No),
            (Protocol::Ssh, b"GET / HTTP/1.1\r\n", No),
            (Protocol::Http, b"", NotYet),
            (Protocol::Http, b"G", NotYet),
            (Protocol::Http, b"GET", NotYet),
            (Protocol::Http, b"GET ", Yes),
            (Protocol::Http, b"GET / HTTP/1.1\r\n", Yes),
            (Protocol::Http, b"OPTIONS * HTTP/1.1", Yes),
            (Protocol::Http, b"CONNECT a:443 HTTP/1.1", Yes),
            (Protocol::Http, b"P", NotYet),
            (Protocol::Http, b"PATCH /", Yes),
            (Protocol::Http, b"PUT /", Yes),
            (Protocol::Http, b"POS", NotYet),
            (Protocol::Http, b"GETX", No),
            (Protocol::Http, b"get /", No),
            (Protocol::Http, b"PROPFIND /", No),
            (Protocol::Http, b"\x16\x03\x01", No),
            (Protocol::Http, b"SSH-2.0-x", No),
            (Protocol::Tls, b"\x16\x03\x01", No),
        ] {
            assert_eq!(opens(p, b), want, "{p} {b:?}");
        }
        // Deciding never needs more than OPENING_BYTES.
        let long = b"OPTIONS * HTTP/1.1\r\n";
        assert_eq!(opens(Protocol::Http, &long[..OPENING_BYTES]), Yes);
    }

    #[test]
    fn protocol_names_round_trip() {
        for p in Protocol::ALL {
            assert_eq!(Protocol::parse(p.as_str()), Some(p));
        }
        assert_eq!(Protocol::parse("smtp"), None);
    }

    #[test]
    fn reader_never_reads_past_the_end() {
        let mut r = Reader::new(&[0, 3, 1, 2]);
        assert_eq!(r.vec16(), Err(Short));
        let mut r = Reader::new(&[0, 2, 1, 2, 9]);
        assert_eq!(r.vec16(), Ok(&[1u8, 2][..]));
        assert_eq!(r.u16(), Err(Short));
        assert_eq!(r.u8(), Ok(9));
        assert!(r.is_empty());
        assert_eq!(r.u24(), Err(Short));
    }

    #[test]
    fn text_is_bounded_and_escaped() {
        assert_eq!(text(b"a\x1b[31m\n", 128), "a\\x1b[31m\\n");
        assert_eq!(text(&[b'x'; 300], 4), "xxxx");
    }
}
