//! nfnetlink_log datagrams as the kernel (or anyone able to write to the
//! socket's buffer) delivers them, down to the packet parser and the
//! socket engine's source reader (`tcp_source`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tarpit::engine::nflog::{messages, tcp_source, Message};
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
            let seg = Segment::parse(p.payload);
            // The socket engine's reader takes less: whatever the full
            // parser accepts, it names the same source.
            let src = tcp_source(p.payload);
            if let Ok(s) = seg {
                let t = s.tuple();
                assert_eq!(src, Some(std::net::SocketAddr::new(t.src, t.src_port)));
            }
        }
    }
});
