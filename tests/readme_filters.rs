//! Every filter the README shows, run against lines in the real formats
//! (syslog, ISO 8601, fail2ban's own log) and against the attacker-written
//! variants the README says they withstand. check-config must not warn
//! about any of them.

use std::time::SystemTime;
use tarpit::config::{parse, Source};
use tarpit::watcher::filter::{lint, LineVerdict};
use tarpit::watcher::settings::{resolve, Jail};

/// The `[watch]` example block of the README.
fn readme_jails() -> Vec<Jail> {
    let readme = include_str!("../README.md");
    let block = readme
        .split("```toml")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .find(|b| b.contains("[[watch.jail]]"))
        .expect("README has a [[watch.jail]] example");
    let src = Source::new("README.md", block);
    let cfg = parse(&src).expect("README example parses");
    let w = resolve(cfg.watch.as_ref().map(|w| (w, &src))).expect("README example is valid");
    w.jails
}

fn jail<'a>(jails: &'a [Jail], name: &str) -> &'a Jail {
    jails.iter().find(|j| j.name == name).expect(name)
}

fn verdict(j: &Jail, line: &str) -> LineVerdict {
    j.filter.check_line(line, SystemTime::now(), &j.name).1
}

fn host(s: &str) -> LineVerdict {
    LineVerdict::Host(s.parse().unwrap())
}

#[test]
fn readme_examples_lint_clean() {
    for j in readme_jails() {
        let w = lint(&j.filter);
        assert!(w.is_empty(), "jail {}: {w:?}", j.name);
    }
}

#[test]
fn readme_sshd_example_matches_real_lines_and_resists_user_names() {
    let jails = readme_jails();
    let j = jail(&jails, "sshd");
    let rest = "web1 sshd[811]: Failed password for root from 10.77.0.5 port 4242 ssh2";
    for stamp in [
        "Jan 15 10:23:45",
        "Jan  5 10:23:45",
        "2024-01-15T10:23:45.123456+01:00",
        "2024-01-15T10:23:45Z",
    ] {
        let l = format!("{stamp} {rest}");
        assert_eq!(verdict(j, &l), host("10.77.0.5"), "{l}");
    }
    // The user name is the attacker's: whatever it says, the address sshd
    // wrote last is the one counted.
    for user in [
        "x from 203.0.113.8 port 1 ssh2",
        "invalid user x from 203.0.113.8 port 1",
        "backup",
        "user=backup",
    ] {
        let l = format!(
            "Jan 15 10:23:45 web1 sshd[811]: Failed password for invalid user {user} from 10.77.0.5 port 4242 ssh2"
        );
        assert_eq!(verdict(j, &l), host("10.77.0.5"), "{l}");
    }
    // The ignoreregex spares the real backup account only.
    assert_eq!(
        verdict(
            j,
            "Jan 15 10:23:45 web1 sshd[811]: Failed password for backup from 10.77.0.5 port 4242 ssh2"
        ),
        LineVerdict::Ignored
    );
    assert_eq!(
        verdict(
            j,
            "Jan 15 10:23:45 web1 sshd[811]: Failed password for backup from 1.2.3.4 port 1 ssh2 from 10.77.0.5 port 4242 ssh2"
        ),
        host("10.77.0.5")
    );
    assert_eq!(
        verdict(
            j,
            "Jan 15 10:23:45 web1 sshd[811]: Accepted password for root from 10.77.0.5 port 4242 ssh2"
        ),
        LineVerdict::NoMatch
    );
}

#[test]
fn readme_multi_ban_example_counts_fail2ban_lines_only() {
    let jails = readme_jails();
    let j = jail(&jails, "multi-ban");
    assert_eq!(
        verdict(
            j,
            "2024-01-15 10:23:45,123 fail2ban.actions        [811]: NOTICE  [sshd] Ban 10.77.0.9"
        ),
        host("10.77.0.9")
    );
    for l in [
        "Jan 15 10:23:45 web1 fail2ban.actions: NOTICE [sshd] Ban 10.77.0.9",
        "fail2ban.actions: NOTICE [sshd] Ban 10.77.0.9",
        "2024-01-15 10:23:45,123 fail2ban.actions [811]: NOTICE [sshd] Restore Ban 10.77.0.9",
    ] {
        assert_eq!(verdict(j, l), LineVerdict::NoMatch, "{l}");
    }
}
