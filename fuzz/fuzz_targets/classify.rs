//! What a peer left in our receive queue (up to the receive buffer), as the
//! socket engine hands it to the classifier at release.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tarpit::classify::{classify, opens, tls, Opening, Protocol, MAX_PATH, OPENING_BYTES, PEEK_BYTES};

fuzz_target!(|data: &[u8]| {
    let data = data.get(..PEEK_BYTES).unwrap_or(data);
    let id = classify(data);
    assert_eq!(id.protocol == Protocol::Silent, data.is_empty());
    // Every text is escaped (printable ASCII only) and bounded.
    for t in [
        &id.software,
        &id.ssh_version,
        &id.ssh_comments,
        &id.http_method,
        &id.http_path,
        &id.http_host,
        &id.tls_sni,
        &id.tls_alpn,
        &id.ja4,
    ]
    .into_iter()
    .flatten()
    {
        assert!(t.bytes().all(|c| (0x20..0x7f).contains(&c)), "{t:?}");
        assert!(t.len() <= 4 * MAX_PATH + 8 * 4 * 32 + 8, "{}", t.len());
    }
    // The bait gate's prefix test needs no more than OPENING_BYTES and
    // always decides once it has them.
    for p in [Protocol::Ssh, Protocol::Http] {
        let o = opens(p, data);
        let short = data.get(..OPENING_BYTES).unwrap_or(data);
        assert_eq!(o, opens(p, short));
        if data.len() >= OPENING_BYTES {
            assert_ne!(o, Opening::NotYet);
        }
    }
    if let Some(j) = &id.ja4 {
        assert_eq!(j.len(), 36, "{j}");
    }
    if let Some(hs) = tls::handshake(data) {
        if let Some(h) = tls::parse_hello(&hs) {
            assert!(h.ciphers.len() <= hs.len() / 2);
            let _ = tls::ja4(&h);
        }
    }
});
