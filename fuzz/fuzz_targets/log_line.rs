//! One log line through the watcher's pipeline: timestamp, the default and
//! a user filter (failregex + ignoreregex), address parsing, aggregation and
//! the ignore list.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tarpit::watcher::filter::{compile_failregex, Filter, LineVerdict};
use tarpit::watcher::settings::default_jail;
use tarpit::watcher::{IgnoreList, Target};

fn filters() -> &'static (Vec<Filter>, IgnoreList) {
    static F: OnceLock<(Vec<Filter>, IgnoreList)> = OnceLock::new();
    F.get_or_init(|| {
        let user = Filter::new(
            vec![
                compile_failregex(
                    r"^\S+ sshd\[[0-9]+\]: Failed password for .* from <HOST> port [0-9]+ ssh2$",
                )
                .unwrap(),
                compile_failregex(r"client <ADDR>:[0-9]+").unwrap(),
                compile_failregex(r"v4 <IP4> v6 <IP6>").unwrap(),
            ],
            vec![regex::Regex::new(r"^\S+ sshd\[[0-9]+\]: Failed password for backup ").unwrap()],
        );
        let ignore = IgnoreList::new(
            &["10.77.0.1".parse().unwrap(), "fd77::1".parse().unwrap()],
            &[
                "192.0.2.0/24".parse().unwrap(),
                "2001:db8:1:2::100/120".parse().unwrap(),
            ],
        );
        (vec![default_jail().filter, user], ignore)
    })
}

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    // A fixed "now" keeps runs reproducible (2024-06-01).
    let now = UNIX_EPOCH + Duration::from_secs(1_717_200_000);
    let (filters, ignore) = filters();
    for f in filters {
        let (at, v) = f.check_line(&line, now, "multi-ban");
        if let Some(t) = at {
            assert!(
                t >= UNIX_EPOCH
                    && t < SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_800)
            );
        }
        if let LineVerdict::Host(ip) = v {
            for p in [48u8, 64, 128] {
                let key = Target::from_ip(ip, p);
                assert!(key.contains(ip));
                let _ = ignore.is_ignored(ip) || ignore.covers_key(&key);
                assert_eq!(key.to_string().parse::<Target>().ok(), Some(key));
            }
        }
    }
});
