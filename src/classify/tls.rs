//! A TLS ClientHello (RFC 8446 §4.1.2; TLS 1.0–1.2 hellos have the same
//! shape), read from the record layer (RFC 8446 §5.1):
//!
//! ```text
//! record:    type(22) legacy_version(2) length(2) fragment
//! handshake: msg_type(1 = client_hello) length(3) body
//! body:      legacy_version(2) random(32) session_id<0..32>
//!            cipher_suites<2..2^16-2> compression_methods<1..2^8-1>
//!            extensions<8..2^16-1>   (type(2) data<0..2^16-1>)*
//! ```
//!
//! The hello may be split over several records; their fragments are
//! joined. We keep the server name (SNI, RFC 6066 §3), the ALPN list
//! (RFC 7301 §3.1) and compute the JA4 fingerprint ([`ja4`]). A hello cut
//! short by our window (more than the queue holds) still names SNI and
//! ALPN if they came before the cut, but gets no fingerprint: a JA4 of a
//! part would look like a different client.

use super::{text, Identity, Protocol, Reader, Short, MAX_FIELD, PEEK_BYTES};
use ring::digest::{digest, SHA256};

const CONTENT_HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0x0000;
const EXT_SIGNATURE_ALGORITHMS: u16 = 0x000d;
const EXT_ALPN: u16 = 0x0010;
const EXT_SUPPORTED_VERSIONS: u16 = 0x002b;

/// GREASE values (RFC 8701 §2): `0x?a?a` with both bytes equal.
pub fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

/// What a ClientHello offers, as far as the queue held it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHello<'a> {
    pub legacy_version: u16,
    /// In the order sent, GREASE included.
    pub ciphers: Vec<u16>,
    /// Extension types in the order sent, GREASE included.
    pub extensions: Vec<u16>,
    pub server_name: Option<&'a [u8]>,
    pub alpn: Vec<&'a [u8]>,
    pub supported_versions: Vec<u16>,
    pub signature_algorithms: Vec<u16>,
    /// The whole hello was there (else the fields are what came first).
    pub complete: bool,
}

/// The handshake bytes of the consecutive handshake records at the start
/// of `b`, joined (a hello may be fragmented over records). `None` if `b`
/// does not start like a handshake record (type 22, version 3.x).
pub fn handshake(b: &[u8]) -> Option<Vec<u8>> {
    let mut r = Reader::new(b);
    let mut out = Vec::new();
    let mut first = true;
    while let Ok(kind) = r.u8() {
        let major = r.u8();
        if kind != CONTENT_HANDSHAKE || !matches!(major, Ok(3) | Err(Short)) {
            if first {
                return None;
            }
            break;
        }
        first = false;
        let (Ok(_minor), Ok(len)) = (r.u8(), r.u16()) else {
            break;
        };
        match r.take(usize::from(len)) {
            Ok(fragment) => out.extend_from_slice(fragment),
            Err(Short) => {
                // The record goes on past what was queued: keep its start.
                out.extend_from_slice(r.rest());
                break;
            }
        }
        if out.len() > PEEK_BYTES {
            break;
        }
    }
    Some(out)
}

/// Parses a ClientHello handshake message (type, 24-bit length, body).
/// `None` if it is another handshake message; a hello cut short comes back
/// with what it had and `complete: false`.
pub fn parse_hello(hs: &[u8]) -> Option<ClientHello<'_>> {
    let mut h = ClientHello::default();
    let mut r = Reader::new(hs);
    match r.u8() {
        Ok(CLIENT_HELLO) => {}
        Ok(_) => return None,
        Err(Short) => return Some(h),
    }
    let Ok(len) = r.u24() else { return Some(h) };
    let (body, whole) = match r.take(len) {
        Ok(body) => (body, true),
        Err(Short) => (r.rest(), false),
    };
    let parsed = parse_body(&mut Reader::new(body), &mut h);
    h.complete = whole && parsed.is_ok();
    Some(h)
}

/// The body after the handshake header; `Err` where it ended early (the
/// fields read so far stay in `h`).
fn parse_body<'a>(r: &mut Reader<'a>, h: &mut ClientHello<'a>) -> Result<(), Short> {
    h.legacy_version = r.u16()?;
    r.take(32)?; // random
    r.vec8()?; // legacy_session_id
    let (ciphers, whole) = vec16_partial(r)?;
    u16_list(Reader::new(ciphers), &mut h.ciphers);
    if !whole {
        return Err(Short);
    }
    r.vec8()?; // legacy_compression_methods
    if r.is_empty() {
        return Ok(()); // no extensions (TLS 1.0–1.2 allow it)
    }
    // Cut by the window: the extensions that arrived whole still count.
    let (exts, whole) = vec16_partial(r)?;
    let mut exts = Reader::new(exts);
    while !exts.is_empty() {
        let kind = exts.u16()?;
        let data = exts.vec16()?;
        h.extensions.push(kind);
        // A malformed extension body is skipped; the type still counts.
        let _ = extension(kind, data, h);
    }
    if whole {
        Ok(())
    } else {
        Err(Short)
    }
}

/// A 16-bit length-prefixed vector, or as much of it as there is (`false`).
fn vec16_partial<'a>(r: &mut Reader<'a>) -> Result<(&'a [u8], bool), Short> {
    let n = usize::from(r.u16()?);
    Ok(match r.take(n) {
        Ok(v) => (v, true),
        Err(Short) => (r.rest(), false),
    })
}

fn u16_list(mut r: Reader<'_>, out: &mut Vec<u16>) {
    while let Ok(v) = r.u16() {
        out.push(v);
    }
}

fn extension<'a>(kind: u16, data: &'a [u8], h: &mut ClientHello<'a>) -> Result<(), Short> {
    let mut r = Reader::new(data);
    match kind {
        EXT_SERVER_NAME => {
            let mut list = Reader::new(r.vec16()?);
            while !list.is_empty() {
                let name_type = list.u8()?;
                let name = list.vec16()?;
                if name_type == 0 && h.server_name.is_none() {
                    h.server_name = Some(name);
                }
            }
        }
        EXT_ALPN => {
            let mut list = Reader::new(r.vec16()?);
            while !list.is_empty() {
                h.alpn.push(list.vec8()?);
            }
        }
        EXT_SUPPORTED_VERSIONS => u16_list(Reader::new(r.vec8()?), &mut h.supported_versions),
        EXT_SIGNATURE_ALGORITHMS => u16_list(Reader::new(r.vec16()?), &mut h.signature_algorithms),
        _ => {}
    }
    Ok(())
}

/// JA4_a's two-character TLS version: the highest non-GREASE
/// `supported_versions` entry, else the hello's `legacy_version`.
fn version_code(h: &ClientHello<'_>) -> &'static str {
    let v = h
        .supported_versions
        .iter()
        .copied()
        .filter(|&v| !is_grease(v))
        .max()
        .unwrap_or(h.legacy_version);
    match v {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        0x0200 => "s2",
        0x0100 => "s1",
        _ => "00",
    }
}

/// JA4_a's ALPN part: first and last character of the first ALPN value;
/// when either is not alphanumeric, the first hex digit of the first byte
/// and the last hex digit of the last byte; `00` without ALPN.
fn alpn_code(h: &ClientHello<'_>) -> String {
    match h.alpn.first().map(|v| (v.first(), v.last())) {
        Some((Some(&a), Some(&z))) if a.is_ascii_alphanumeric() && z.is_ascii_alphanumeric() => {
            format!("{}{}", char::from(a), char::from(z))
        }
        Some((Some(&a), Some(&z))) => format!("{:x}{:x}", a >> 4, z & 0x0f),
        _ => "00".into(),
    }
}

/// The first 12 hex digits of SHA-256 of `s`, or twelve zeros for an empty
/// list (as JA4 writes it).
fn hash12(s: &str) -> String {
    if s.is_empty() {
        return "000000000000".into();
    }
    let d = digest(&SHA256, s.as_bytes());
    d.as_ref()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn hex_list(v: impl Iterator<Item = u16>) -> String {
    v.map(|x| format!("{x:04x}")).collect::<Vec<_>>().join(",")
}

/// The JA4 fingerprint (FoxIO's JA4, TLS over TCP), as its specification
/// defines it:
///
/// * **JA4_a** `t` + version ([`version_code`]) + `d` with an SNI
///   extension / `i` without + the number of cipher suites and of
///   extensions (two digits each, GREASE not counted, SNI and ALPN counted,
///   at most 99) + [`alpn_code`];
/// * **JA4_b** the first 12 hex digits of SHA-256 of the cipher suites as
///   4-digit lower-case hex, sorted, comma-separated, GREASE removed;
/// * **JA4_c** the same hash of the extension types, sorted, without
///   GREASE, SNI (`0000`) and ALPN (`0010`), then `_` and the signature
///   algorithms in the order sent (no `_` when there are none).
///
/// `None` for a hello we did not see whole.
pub fn ja4(h: &ClientHello<'_>) -> Option<String> {
    if !h.complete {
        return None;
    }
    let mut ciphers: Vec<u16> = h
        .ciphers
        .iter()
        .copied()
        .filter(|&c| !is_grease(c))
        .collect();
    let exts: Vec<u16> = h
        .extensions
        .iter()
        .copied()
        .filter(|&e| !is_grease(e))
        .collect();
    let a = format!(
        "t{}{}{:02}{:02}{}",
        version_code(h),
        if exts.contains(&EXT_SERVER_NAME) {
            'd'
        } else {
            'i'
        },
        ciphers.len().min(99),
        exts.len().min(99),
        alpn_code(h)
    );
    ciphers.sort_unstable();
    let b = hash12(&hex_list(ciphers.into_iter()));
    let mut sorted: Vec<u16> = exts
        .into_iter()
        .filter(|&e| e != EXT_SERVER_NAME && e != EXT_ALPN)
        .collect();
    sorted.sort_unstable();
    let mut c = hex_list(sorted.into_iter());
    let sigs = hex_list(h.signature_algorithms.iter().copied());
    if !sigs.is_empty() {
        c.push('_');
        c.push_str(&sigs);
    }
    Some(format!("{a}_{b}_{}", hash12(&c)))
}

/// `Some` when `b` starts with a TLS handshake record.
pub fn identify(b: &[u8]) -> Option<Identity> {
    let hs = handshake(b)?;
    let h = parse_hello(&hs)?;
    let alpn: Vec<String> = h.alpn.iter().take(8).map(|p| text(p, 32)).collect();
    Some(Identity {
        protocol: Protocol::Tls,
        tls_sni: h.server_name.map(|n| text(n, MAX_FIELD)),
        tls_alpn: (!alpn.is_empty()).then(|| alpn.join(",")),
        ja4: ja4(&h),
        ..Identity::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `curl -sk https://tarpit.example:PORT/ --resolve ...` (curl 7.88.1,
    /// OpenSSL 3.0, Debian 12): its first flight, captured on loopback.
    const CURL: &[u8] = include_bytes!("testdata/curl-7.88.1-tls.bin");
    /// `openssl s_client -servername bait.example -alpn h2,http/1.1`
    /// (OpenSSL 3.0.19), captured on loopback.
    const S_CLIENT: &[u8] = include_bytes!("testdata/openssl-3.0-s_client.bin");

    // The expected fingerprints were computed from the same captures by an
    // independent script written from the JA4 specification (Python,
    // hashlib), not by this code.
    #[test]
    fn real_curl_hello() {
        let id = identify(CURL).unwrap();
        assert_eq!(id.protocol, Protocol::Tls);
        assert_eq!(id.tls_sni.as_deref(), Some("tarpit.example"));
        assert_eq!(id.tls_alpn.as_deref(), Some("h2,http/1.1"));
        assert_eq!(
            id.ja4.as_deref(),
            Some("t13d3112h2_e8f1e7e78f70_b26ce05bbdd6")
        );
        assert_eq!(id.software, None);
    }

    #[test]
    fn real_s_client_hello() {
        let id = identify(S_CLIENT).unwrap();
        assert_eq!(id.tls_sni.as_deref(), Some("bait.example"));
        assert_eq!(
            id.ja4.as_deref(),
            Some("t13d3111h2_e8f1e7e78f70_1f22a2ca17c4")
        );
    }

    #[test]
    fn spec_example_hashes() {
        // The worked example of the JA4 specification.
        assert_eq!(
            hash12("002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9"),
            "8daaf6152771"
        );
        assert_eq!(
            hash12("0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01_0403,0804,0401,0503,0805,0501,0806,0601"),
            "e5627efa2ab1"
        );
        assert_eq!(
            hash12("0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01"),
            "6d807ffa2a79"
        );
        assert_eq!(hash12(""), "000000000000");
    }

    /// A hello built by hand: `ciphers`, then `exts` as (type, data).
    fn hello(version: u16, ciphers: &[u16], exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = version.to_be_bytes().to_vec();
        body.extend_from_slice(&[7; 32]);
        body.push(0);
        body.extend_from_slice(&((ciphers.len() * 2) as u16).to_be_bytes());
        for c in ciphers {
            body.extend_from_slice(&c.to_be_bytes());
        }
        body.extend_from_slice(&[1, 0]);
        let mut e = Vec::new();
        for (t, d) in exts {
            e.extend_from_slice(&t.to_be_bytes());
            e.extend_from_slice(&(d.len() as u16).to_be_bytes());
            e.extend_from_slice(d);
        }
        body.extend_from_slice(&(e.len() as u16).to_be_bytes());
        body.extend_from_slice(&e);
        let mut hs = vec![CLIENT_HELLO, 0, (body.len() >> 8) as u8, body.len() as u8];
        hs.extend_from_slice(&body);
        let mut rec = vec![CONTENT_HANDSHAKE, 3, 1];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn grease_is_ignored_and_codes_follow_the_spec() {
        assert!(is_grease(0x0a0a) && is_grease(0xfafa) && !is_grease(0x0a1a));
        let alpn = |p: &[u8]| {
            let mut d = vec![0, (p.len() + 1) as u8, p.len() as u8];
            d.extend_from_slice(p);
            d
        };
        let plain = hello(0x0303, &[0x1301, 0xc02b], &[(0x0017, vec![])]);
        let greased = hello(
            0x0303,
            &[0x3a3a, 0x1301, 0xc02b],
            &[(0x1a1a, vec![]), (0x0017, vec![]), (0xdada, vec![0])],
        );
        let a = ja4(&parse_hello(&handshake(&plain).unwrap()).unwrap()).unwrap();
        let b = ja4(&parse_hello(&handshake(&greased).unwrap()).unwrap()).unwrap();
        assert_eq!(a, b);
        assert!(a.starts_with("t12i020100_"), "{a}");
        // supported_versions wins over legacy_version; GREASE there too.
        let v13 = hello(0x0303, &[0x1301], &[(0x002b, vec![4, 0x7a, 0x7a, 3, 4])]);
        let h = ja4(&parse_hello(&handshake(&v13).unwrap()).unwrap()).unwrap();
        assert!(h.starts_with("t13i0101"), "{h}");
        // ALPN: first and last character, hex digits when not alphanumeric.
        for (p, code) in [
            (&b"http/1.1"[..], "h1"),
            (b"h2", "h2"),
            (b"\x01x\xff", "0f"),
        ] {
            let raw = hello(0x0303, &[0x1301], &[(0x0010, alpn(p))]);
            let f = ja4(&parse_hello(&handshake(&raw).unwrap()).unwrap()).unwrap();
            assert_eq!(&f[8..10], code, "{f}");
        }
        // No extensions at all (TLS 1.0 style).
        let mut old = hello(0x0301, &[0x002f], &[]);
        old.truncate(old.len() - 2); // drop the empty extensions vector
        old[4] -= 2;
        old[8] -= 2;
        let f = ja4(&parse_hello(&handshake(&old).unwrap()).unwrap()).unwrap();
        assert!(
            f.starts_with("t10i010000_") && f.ends_with("_000000000000"),
            "{f}"
        );
    }

    #[test]
    fn fragmented_and_cut_hellos() {
        // The same hello split over two records fingerprints the same.
        let hs = &CURL[5..];
        let mut two = vec![CONTENT_HANDSHAKE, 3, 1, 0, 100];
        two.extend_from_slice(&hs[..100]);
        two.extend_from_slice(&[CONTENT_HANDSHAKE, 3, 1]);
        two.extend_from_slice(&((hs.len() - 100) as u16).to_be_bytes());
        two.extend_from_slice(&hs[100..]);
        assert_eq!(identify(&two), identify(CURL));
        // Cut by the window: SNI if it came before the cut, no fingerprint.
        let id = identify(&CURL[..300]).unwrap();
        assert_eq!(id.protocol, Protocol::Tls);
        assert_eq!(id.tls_sni.as_deref(), Some("tarpit.example"));
        assert_eq!(id.ja4, None);
        for n in 0..CURL.len() {
            let id = super::super::classify(&CURL[..n]);
            let want = if n == 0 {
                Protocol::Silent
            } else {
                Protocol::Tls
            };
            assert_eq!(id.protocol, want, "{n}");
            assert_eq!(id.ja4.is_some(), n == CURL.len(), "{n}");
        }
    }

    #[test]
    fn not_tls() {
        assert!(identify(b"GET / HTTP/1.1\r\n").is_none());
        assert!(identify(b"\x16\x02\x00").is_none());
        // A handshake record of another message is not a client.
        assert!(identify(b"\x16\x03\x03\x00\x04\x02\x00\x00\x00").is_none());
        // A hostile server name comes out escaped.
        let sni = b"\x00\x0a\x00\x00\x07a\x1b[2J\n\xff";
        let raw = hello(0x0303, &[0x1301], &[(0x0000, sni.to_vec())]);
        let id = identify(&raw).unwrap();
        assert_eq!(id.tls_sni.as_deref(), Some("a\\x1b[2J\\n\\xff"));
    }
}
