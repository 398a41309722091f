//! nfnetlink_log datagrams as the kernel (or anyone able to write to the
//! socket's buffer) delivers them, down to the packet parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tarpit::engine::stateless::nflog::{messages, Message};
use tarpit::engine::stateless::packet::Segment;

fuzz_target!(|data: &[u8]| {
    let mut n = 0usize;
    for m in messages(data) {
        n += 1;
        assert!(
            n <= data.len() / 16 + 1,
            "more messages than the datagram holds"
        );
        if let Ok(Message::Packet(p)) = m {
            assert!(p.hwaddr.len() <= 8);
            let _ = Segment::parse(p.payload);
        }
    }
});
