//! What a report destination answers (status, Retry-After, body: the far
//! side's bytes) and what an attacker sent (the record's escaped head, for
//! the client software in a comment): every input gives an outcome, a
//! bounded printable detail, and a comment without the text it must never
//! carry.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tarpit::abuse::policy::{
    client_from_head, comment, error_detail, outcome, retry_after_ms, Answer, Event, EventKind,
    Protocol, MAX_COMMENT, MAX_PAUSE_MS,
};
use tarpit::engine::record::escape_bytes;

fuzz_target!(|data: &[u8]| {
    // Two bytes pick the status (100..599), then `Retry-After\nbody`.
    let [a, b, rest @ ..] = data else {
        return;
    };
    let sel = *a;
    let split = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    let (ra, body) = rest.split_at(split);
    let ra = String::from_utf8_lossy(ra).into_owned();
    let now = 1_764_594_000_000i64;
    if let Some(ms) = retry_after_ms(&ra, now) {
        assert!((0..=MAX_PAUSE_MS).contains(&ms));
    }
    let d = error_detail(body);
    assert!(d.chars().count() <= 201, "{d}");
    let status = 100 + u16::from_le_bytes([*a, *b]) % 500;
    for proto in [Protocol::AbuseIpdb, Protocol::Webhook] {
        let a = Answer::Http {
            status,
            retry_after: (sel & 1 == 1).then(|| ra.clone()),
            body: body.to_vec(),
        };
        let _ = outcome(proto, &a, u32::from(sel), Some(3), now);
    }
    // The same bytes as what an attacker sent first.
    let head = escape_bytes(rest);
    let client = client_from_head(&head);
    if let Some(c) = &client {
        assert!(c.len() <= 64 && c.chars().all(|c| c.is_ascii_graphic() || c == ' '));
    }
    let ev = Event {
        kind: EventKind::Trapped,
        host: "203.0.113.9".into(),
        at_ms: now,
        jail: None,
        offences: None,
        port: Some(22),
        engaged_secs: Some(f64::from(sel)),
        held_secs: None,
        client,
    };
    let never = ["192.0.2.1".to_string(), "secret-key".to_string()];
    let c = comment(&ev, &never);
    assert!(c.chars().count() <= MAX_COMMENT);
    assert!(!c.contains("192.0.2.1") && !c.contains("secret-key"), "{c}");
});
