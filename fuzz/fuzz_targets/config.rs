//! The config file, validated as check-config does (every [serve] and
//! [watch] rule, every located error message), then the filter lint.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tarpit::cli::check_config::validate;
use tarpit::config::{parse, Source};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let src = Source::new("fuzz.toml", text);
    match parse(&src) {
        Ok(cfg) => match validate(Some((&cfg, &src))) {
            Ok(w) => {
                for j in &w.jails {
                    let _ = tarpit::watcher::filter::lint(&j.filter);
                }
            }
            Err(e) => {
                let _ = e.to_string();
            }
        },
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
