//! fail2ban-style filters: `failregex` with `<HOST>` and friends, and
//! `ignoreregex`.
//!
//! The tags expand to address patterns, and whatever a pattern captures must
//! also parse as an address and must not continue into more address
//! characters (`1.2.3.45` never yields `1.2.3.4`). Regexes see the line
//! *after* its leading timestamp, as in fail2ban, so `^` anchors at the text
//! the program wrote. A line whose failregex captures a group named `jail`
//! equal to this jail's own name is not counted: that is how the default
//! filter ignores bans by its own jail (fail2ban's recidive rule).

use regex::Regex;
use std::net::IpAddr;

/// fail2ban's own `Ban` lines, anchored like its recidive filter: only what
/// `fail2ban.actions` writes as `NOTICE [jail] Ban ADDR` and nothing after
/// it. `Restore Ban`, `Unban`, `already banned` and attacker text elsewhere
/// in a line (an SSH user name, an HTTP path) cannot match. An optional
/// syslog host name may precede the logger name.
pub const FAIL2BAN_BAN_REGEX: &str = r"^\s*(?:[\w.-]+\s+)?fail2ban\.actions\s*(?:\[\d+\])?:\s+NOTICE\s+\[(?P<jail>[^\]\s]+)\]\s+Ban\s+<HOST>\s*$";

const IPV4: &str = r"(?:\d{1,3}\.){3}\d{1,3}";
/// Loose on purpose; the capture is then parsed strictly by `IpAddr`.
const IPV6: &str = r"[0-9A-Fa-f]{0,4}:[0-9A-Fa-f:]*(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})?";

/// What one failregex tag may match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Any,
    V4,
    V6,
}

/// One compiled failregex.
#[derive(Debug, Clone)]
pub struct FailRegex {
    pub source: String,
    re: Regex,
    /// Group indexes of expanded tags, in order.
    groups: Vec<(usize, Kind)>,
    jail_group: Option<usize>,
}

/// Why a failregex was rejected (the caller adds file/line/key).
pub fn compile_failregex(src: &str) -> Result<FailRegex, String> {
    let mut pat = String::with_capacity(src.len() * 2);
    let mut rest = src;
    let mut n = 0usize;
    let mut kinds = Vec::new();
    while let Some(pos) = rest.find('<') {
        pat.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        let tag = ["<HOST>", "<ADDR>", "<IP4>", "<IP6>"]
            .into_iter()
            .find(|t| tail.starts_with(t));
        match tag {
            Some(t) => {
                let kind = match t {
                    "<IP4>" => Kind::V4,
                    "<IP6>" => Kind::V6,
                    _ => Kind::Any,
                };
                let g = |k: usize| format!("__tp_h{n}_{k}");
                let body = match kind {
                    Kind::V4 => format!("(?P<{}>{IPV4})", g(0)),
                    Kind::V6 => format!(r"(?:\[(?P<{}>{IPV6})\]|(?P<{}>{IPV6}))", g(0), g(1)),
                    Kind::Any => format!(
                        r"(?:\[(?P<{}>{IPV6})\]|(?P<{}>{IPV4})|(?P<{}>{IPV6}))",
                        g(0),
                        g(1),
                        g(2)
                    ),
                };
                pat.push_str(&body);
                kinds.push((n, kind));
                n += 1;
                rest = &tail[t.len()..];
            }
            None => {
                pat.push('<');
                rest = &tail[1..];
            }
        }
    }
    pat.push_str(rest);
    if n == 0 {
        return Err(format!(
            "failregex {src:?} has no <HOST> (or <ADDR>, <IP4>, <IP6>): it could never name whom to ban"
        ));
    }
    let re = Regex::new(&pat).map_err(|e| format!("invalid failregex {src:?}: {e}"))?;
    let mut groups = Vec::new();
    for (i, name) in re.capture_names().enumerate() {
        if let Some(name) = name {
            if let Some(rest) = name.strip_prefix("__tp_h") {
                let tag: usize = rest
                    .split('_')
                    .next()
                    .and_then(|x| x.parse().ok())
                    .unwrap_or(0);
                let kind = kinds
                    .iter()
                    .find(|(t, _)| *t == tag)
                    .map(|(_, k)| *k)
                    .unwrap_or(Kind::Any);
                groups.push((i, kind));
            }
        }
    }
    let jail_group = re.capture_names().position(|n| n == Some("jail"));
    Ok(FailRegex {
        source: src.to_string(),
        re,
        groups,
        jail_group,
    })
}

/// Outcome of matching one line's text against one failregex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegexHit {
    NoMatch,
    Host(IpAddr),
    /// Matched, but what the tag captured is no valid address.
    InvalidAddress(String),
    /// Matched a line about this jail's own bans.
    OwnJail,
}

fn is_addr_char(c: u8) -> bool {
    c.is_ascii_hexdigit() || c == b'.' || c == b':'
}

impl FailRegex {
    /// Matches `text` (a line without its timestamp). `own_jail` is the
    /// name whose bans must not be counted.
    pub fn matches(&self, text: &str, own_jail: &str) -> RegexHit {
        let Some(caps) = self.re.captures(text) else {
            return RegexHit::NoMatch;
        };
        if let Some(j) = self.jail_group.and_then(|g| caps.get(g)) {
            if j.as_str() == own_jail {
                return RegexHit::OwnJail;
            }
        }
        for &(g, kind) in &self.groups {
            let Some(m) = caps.get(g) else { continue };
            let s = m.as_str();
            let b = text.as_bytes();
            let bracketed = m.start() > 0 && b[m.start() - 1] == b'[';
            // The capture must be the whole address, not a slice of a longer
            // token (`1.2.3.45`, `::1:2`, `a1.2.3.4`).
            let before_ok = bracketed
                || m.start() == 0
                || !(is_addr_char(b[m.start() - 1]) || b[m.start() - 1].is_ascii_alphanumeric());
            let after = b.get(m.end()).copied();
            let after_ok = match after {
                None => true,
                Some(b']') if bracketed => true,
                Some(c) if c.is_ascii_alphanumeric() => false,
                // "1.2.3.4." ends a sentence; "1.2.3.4.5" is no address.
                Some(b'.') => !b.get(m.end() + 1).is_some_and(u8::is_ascii_digit),
                Some(b':') if s.contains(':') => false,
                Some(_) => true,
            };
            let parsed: Option<IpAddr> = s.parse().ok();
            return match parsed {
                Some(ip) if before_ok && after_ok => {
                    let ok_kind = match kind {
                        Kind::Any => true,
                        Kind::V4 => ip.is_ipv4(),
                        Kind::V6 => ip.is_ipv6(),
                    };
                    if ok_kind {
                        RegexHit::Host(ip)
                    } else {
                        RegexHit::InvalidAddress(s.to_string())
                    }
                }
                _ => RegexHit::InvalidAddress(s.to_string()),
            };
        }
        RegexHit::NoMatch
    }
}

/// The failregexes and ignoreregexes of one jail.
#[derive(Debug, Clone)]
pub struct Filter {
    pub fail: Vec<FailRegex>,
    pub ignore: Vec<Regex>,
}

/// What a filter makes of a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineVerdict {
    NoMatch,
    Ignored,
    Host(IpAddr),
    InvalidAddress(String),
    OwnJail,
}

impl Filter {
    pub fn check(&self, text: &str, own_jail: &str) -> LineVerdict {
        let mut verdict = LineVerdict::NoMatch;
        for f in &self.fail {
            match f.matches(text, own_jail) {
                RegexHit::NoMatch => continue,
                RegexHit::Host(ip) => {
                    verdict = LineVerdict::Host(ip);
                    break;
                }
                RegexHit::OwnJail => {
                    verdict = LineVerdict::OwnJail;
                    break;
                }
                RegexHit::InvalidAddress(s) => {
                    verdict = LineVerdict::InvalidAddress(s);
                    // Another failregex may still find a valid address.
                }
            }
        }
        if matches!(verdict, LineVerdict::Host(_)) && self.ignore.iter().any(|r| r.is_match(text)) {
            return LineVerdict::Ignored;
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_filter() -> Filter {
        Filter {
            fail: vec![compile_failregex(FAIL2BAN_BAN_REGEX).unwrap()],
            ignore: vec![],
        }
    }

    /// Strips the timestamp the way the watcher does before matching.
    fn check(f: &Filter, line: &str) -> LineVerdict {
        let text = match super::super::timestamp::parse_prefix(line, std::time::SystemTime::now()) {
            Some(st) => &line[st.len..],
            None => line,
        };
        f.check(text, "multi-ban")
    }

    fn host(s: &str) -> LineVerdict {
        LineVerdict::Host(s.parse().unwrap())
    }

    #[test]
    fn default_filter_counts_only_real_ban_lines() {
        let f = default_filter();
        assert_eq!(
            check(&f, "2024-01-15 10:23:45,123 fail2ban.actions        [811]: NOTICE  [sshd] Ban 192.0.2.1"),
            host("192.0.2.1")
        );
        assert_eq!(
            check(&f, "2024-01-15 10:23:45,123 fail2ban.actions [811]: NOTICE [nginx-http-auth] Ban 2001:db8::7"),
            host("2001:db8::7")
        );
        assert_eq!(
            check(
                &f,
                "Jan 15 10:23:45 web1 fail2ban.actions[811]: NOTICE [sshd] Ban 192.0.2.9"
            ),
            host("192.0.2.9")
        );
        for l in [
            "2024-01-15 10:23:45,123 fail2ban.actions [811]: NOTICE [sshd] Restore Ban 192.0.2.1",
            "2024-01-15 10:23:45,123 fail2ban.actions [811]: NOTICE [sshd] Unban 192.0.2.1",
            "2024-01-15 10:23:45,123 fail2ban.actions [811]: NOTICE [sshd] 192.0.2.1 already banned",
            "2024-01-15 10:23:45,123 fail2ban.filter [811]: INFO [sshd] Found 192.0.2.1 - 2024-01-15 10:23:45",
            "2024-01-15 10:23:45,123 fail2ban.actions [811]: WARNING [sshd] Ban 192.0.2.1",
            "2024-01-15 10:23:45,123 fail2ban.actions [811]: NOTICE [sshd] Ban 192.0.2.1 extra",
            "2024-01-15 10:23:45,123 fail2ban.actions [811]: NOTICE [sshd] Ban 192.0.2.1.5",
            "2024-01-15 10:23:45,123 fail2ban.actions [811]: NOTICE [sshd] Ban 192.0.2.10x",
        ] {
            assert!(!matches!(check(&f, l), LineVerdict::Host(_)), "{l}");
        }
    }

    #[test]
    fn bans_by_own_jail_do_not_count() {
        let f = default_filter();
        assert_eq!(
            check(
                &f,
                "2024-01-15 10:23:45,123 fail2ban.actions [811]: NOTICE [multi-ban] Ban 192.0.2.1"
            ),
            LineVerdict::OwnJail
        );
    }

    #[test]
    fn log_injection_never_bans_the_injected_address() {
        let f = default_filter();
        for l in [
            // An SSH user name chosen by the attacker.
            "Jan 15 10:23:45 web1 sshd[99]: Invalid user NOTICE [sshd] Ban 203.0.113.9 from 10.77.0.5 port 4242",
            "Jan 15 10:23:45 web1 sshd[99]: Failed password for invalid user fail2ban.actions [1]: NOTICE [sshd] Ban 203.0.113.9",
            // An HTTP path.
            "10.77.0.5 - - [15/Jan/2024:10:23:45 +0000] \"GET /fail2ban.actions: NOTICE [sshd] Ban 203.0.113.9 HTTP/1.1\" 404",
            // fail2ban echoing a matched line that contains attacker text.
            "2024-01-15 10:23:45,123 fail2ban.filter [811]: INFO [sshd] Found 10.77.0.5 - fail2ban.actions [1]: NOTICE [sshd] Ban 203.0.113.9",
            "2024-01-15 10:23:45,123 fail2ban.actions [811]: NOTICE [sshd] Ban 10.77.0.5 NOTICE [sshd] Ban 203.0.113.9",
        ] {
            let v = check(&f, l);
            assert_ne!(v, host("203.0.113.9"), "{l}");
            assert!(!matches!(v, LineVerdict::Host(_)), "{l}: {v:?}");
        }
    }

    #[test]
    fn user_regex_tags_expand_strictly() {
        let f = Filter {
            fail: vec![compile_failregex(
                r"^\S+ sshd\[\d+\]: Failed password for .* from <HOST> port \d+",
            )
            .unwrap()],
            ignore: vec![],
        };
        let t = |s| f.check(s, "sshd");
        assert_eq!(
            t("web1 sshd[1]: Failed password for root from 192.0.2.4 port 22"),
            host("192.0.2.4")
        );
        assert_eq!(
            t("web1 sshd[1]: Failed password for root from 2001:db8::4 port 22"),
            host("2001:db8::4")
        );
        assert_eq!(
            t("web1 sshd[1]: Failed password for root from ::ffff:192.0.2.4 port 22"),
            host("::ffff:192.0.2.4")
        );
        assert_eq!(
            t("web1 sshd[1]: Failed password for root from 999.1.1.1 port 22"),
            LineVerdict::InvalidAddress("999.1.1.1".into())
        );
        assert_eq!(
            t("web1 sshd[1]: Accepted password for root from 192.0.2.4 port 22"),
            LineVerdict::NoMatch
        );

        let v4 = compile_failregex(r"from <IP4>$").unwrap();
        assert_eq!(
            v4.matches("from 192.0.2.1", ""),
            RegexHit::Host("192.0.2.1".parse().unwrap())
        );
        assert_eq!(v4.matches("from 2001:db8::1", ""), RegexHit::NoMatch);
        let v6 = compile_failregex(r"from <IP6> x").unwrap();
        assert_eq!(
            v6.matches("from [2001:db8::1] x", ""),
            RegexHit::Host("2001:db8::1".parse().unwrap())
        );
        assert_eq!(
            v6.matches("from 2001:db8::1 x", ""),
            RegexHit::Host("2001:db8::1".parse().unwrap())
        );
        let a = compile_failregex(r"client <ADDR>:\d+").unwrap();
        assert_eq!(
            a.matches("client [2001:db8::1]:443", ""),
            RegexHit::Host("2001:db8::1".parse().unwrap())
        );
        assert_eq!(
            a.matches("client 192.0.2.8:443", ""),
            RegexHit::Host("192.0.2.8".parse().unwrap())
        );
    }

    #[test]
    fn regex_without_host_tag_is_rejected() {
        let e = compile_failregex(r"^Failed password from \S+$").unwrap_err();
        assert!(e.contains("<HOST>"), "{e}");
        assert!(compile_failregex(r"from <HOST> (").is_err());
        // `<` that is no tag stays literal.
        assert!(compile_failregex(r"<x> from <HOST>").is_ok());
    }

    #[test]
    fn ignoreregex_wins() {
        let f = Filter {
            fail: vec![compile_failregex(r"from <HOST>").unwrap()],
            ignore: vec![Regex::new("user=monitor").unwrap()],
        };
        assert_eq!(
            f.check("fail user=monitor from 192.0.2.1", "j"),
            LineVerdict::Ignored
        );
        assert_eq!(
            f.check("fail user=bob from 192.0.2.1", "j"),
            host("192.0.2.1")
        );
    }
}
