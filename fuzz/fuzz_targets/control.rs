//! The control socket's framing and request parsing, fed what a local
//! client sends: lines split with the same size limit, each parsed, and
//! every answer serialisable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tarpit::control::{parse_request, read_line_limited, Line};
use tokio::io::BufReader;

fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the reader's buffer size, so lines straddle
    // refills in every way; the limit is small so TooLong is reachable.
    let Some((&cap, rest)) = data.split_first() else {
        return;
    };
    let max = 512;
    rt().block_on(async {
        let mut r = BufReader::with_capacity(usize::from(cap % 64) + 1, rest);
        let mut total = 0usize;
        loop {
            match read_line_limited(&mut r, max).await {
                Ok(Line::Complete(l)) => {
                    assert!(l.len() <= max);
                    total += l.len() + 1;
                    if let Ok(req) = parse_request(&l) {
                        serde_json::to_vec(&req).expect("a request serialises");
                    }
                }
                Ok(Line::TooLong) | Ok(Line::Eof) | Err(_) => break,
            }
            assert!(total <= rest.len() + 1);
        }
    });
});
