//! The takeover handover as the new process receives it: a sequence of
//! messages, each with some descriptors, from a confused or hostile
//! sender. Input: messages prefixed by a 2-byte length and a byte giving
//! the number of (stand-in) descriptors attached.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tarpit::engine::socket::handover::Decoder;

fuzz_target!(|data: &[u8]| {
    let mut d = Decoder::<u32>::new();
    let mut rest = data;
    let mut fd = 0u32;
    while rest.len() >= 3 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 3);
        let nfds = u32::from(rest[2]);
        let msg = &rest[3..3 + len];
        rest = &rest[3 + len..];
        let fds: Vec<u32> = (fd..fd + nfds).collect();
        fd += nfds;
        match d.feed(msg, fds) {
            Ok(true) => {
                let (_, listeners, conns) = d.finish();
                assert!(!listeners.is_empty());
                for (_, f) in &conns {
                    assert!(usize::from(f.listener) < listeners.len());
                    assert!(f.lifetime_left.is_finite() && f.lifetime_left >= 0.0);
                }
                return;
            }
            Ok(false) => {}
            Err(_) => return,
        }
    }
});
