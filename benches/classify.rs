//! What classifying a released connection's queue costs: `classify` over
//! the captured first flights of real clients (the unit tests' bytes), and
//! over a full 2,304-byte queue of garbage. Prints ns per call.
//!   cargo bench --bench classify

use std::hint::black_box;
use std::time::Instant;
use tarpit::classify::{classify, PEEK_BYTES};

fn main() {
    let inputs: [(&str, &[u8]); 6] = [
        (
            "ssh (OpenSSH 9.2p1)",
            include_bytes!("../src/classify/testdata/openssh-9.2p1.bin"),
        ),
        (
            "http (curl 7.88.1)",
            include_bytes!("../src/classify/testdata/curl-7.88.1.bin"),
        ),
        (
            "tls (curl 7.88.1, 517 B, JA4)",
            include_bytes!("../src/classify/testdata/curl-7.88.1-tls.bin"),
        ),
        (
            "tls (s_client, 336 B, JA4)",
            include_bytes!("../src/classify/testdata/openssl-3.0-s_client.bin"),
        ),
        ("other (2,304 B of 0xab)", &[0xab; PEEK_BYTES]),
        ("silent (0 B)", b""),
    ];
    let n = 200_000u32;
    for (name, bytes) in inputs {
        let t = Instant::now();
        for _ in 0..n {
            black_box(classify(black_box(bytes)));
        }
        let ns = t.elapsed().as_nanos() as f64 / f64::from(n);
        println!("classify: {name:<32} {ns:>8.0} ns/call");
    }
}
