//! The stateless engine's whole per-packet path: IPv4/IPv6/TCP parsing,
//! cookie checks, the flow table, reply building. Input: packets, each
//! prefixed by a 2-byte length and a flag byte (bit 0: fix the IPv4 header and TCP
//! checksums first, so the fuzzer gets past that gate; bits 1-7: ticks to advance).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;
use std::time::{Duration, UNIX_EPOCH};
use tarpit::engine::stateless::cookie::Cookies;
use tarpit::engine::stateless::core::{Core, Outcome};
use tarpit::engine::stateless::packet::{Segment, MAX_REPLY};
use tarpit::engine::stateless::wire::checksum::{compute as checksum, pseudo_header};
use tarpit::engine::stateless::StatelessOptions;

/// Rewrites the TCP checksum of `p` if it looks like IPv4/IPv6 + TCP.
fn fix_checksum(p: &mut [u8]) {
    let (src, dst, l4) = match p.first().map(|b| b >> 4) {
        Some(4) if p.len() >= 20 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let s: [u8; 4] = p[12..16].try_into().unwrap();
            let d: [u8; 4] = p[16..20].try_into().unwrap();
            (IpAddr::from(s), IpAddr::from(d), ihl)
        }
        Some(6) if p.len() >= 40 => {
            let s: [u8; 16] = p[8..24].try_into().unwrap();
            let d: [u8; 16] = p[24..40].try_into().unwrap();
            (IpAddr::from(s), IpAddr::from(d), 40)
        }
        _ => return,
    };
    if p.len() < l4 + 18 {
        return;
    }
    if p[0] >> 4 == 4 {
        p[10] = 0;
        p[11] = 0;
        let c = checksum(0, &p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
    }
    p[l4 + 16] = 0;
    p[l4 + 17] = 0;
    let len = p.len() - l4;
    let c = checksum(pseudo_header(src, dst, 6, len), &p[l4..]);
    p[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
}

fuzz_target!(|data: &[u8]| {
    let opts = StatelessOptions {
        flow_cap: 8,
        ..StatelessOptions::default()
    };
    let mut core = Core::new(
        &opts,
        Cookies::from_keys((1, 2), Some((3, 4))),
        Vec::new(),
        UNIX_EPOCH + Duration::from_secs(1_717_200_000),
    );
    let mut out = [0u8; MAX_REPLY];
    let mut now = 1u32;
    let mut rest = data;
    while rest.len() >= 3 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 3);
        let flags = rest[2];
        let mut pkt = rest[3..3 + len].to_vec();
        rest = &rest[3 + len..];
        if flags & 1 != 0 {
            fix_checksum(&mut pkt);
        }
        now += u32::from(flags >> 1) * 50;
        let _ = Segment::parse(&pkt);
        if let Outcome::Reply { len } = core.handle(&pkt, now, &mut out) {
            // What we send must itself be a valid segment.
            assert!(len <= out.len());
            Segment::parse(&out[..len]).expect("our own reply parses");
        }
        if flags & 0x80 != 0 {
            core.tick(now);
        }
    }
    let _ = core.snapshot(now, 4);
    core.rotate(now);
    core.shutdown(now + 1);
});
