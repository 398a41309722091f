//! fail2ban-style filters: `failregex` with `<HOST>` and friends, and
//! `ignoreregex`.
//!
//! The tags expand to address patterns, and whatever a pattern captures must
//! also parse as an address and must not continue into more address
//! characters (`1.2.3.45` never yields `1.2.3.4`). Regexes see the line
//! *after* its leading timestamp and the blanks after it, as in fail2ban,
//! so `^` anchors at the text the program wrote. A line whose failregex
//! captures a group named `jail` equal to this jail's own name is not
//! counted: that is how the default filter ignores bans by its own jail
//! (fail2ban's recidive rule).

use super::timestamp::{self, StampKind};
use regex::Regex;
use std::net::IpAddr;
use std::time::SystemTime;

/// fail2ban's own `Ban` lines, anchored like its recidive filter: only what
/// `fail2ban.actions` writes as `NOTICE [jail] Ban ADDR` and nothing after
/// it. `Restore Ban`, `Unban`, `already banned` and attacker text elsewhere
/// in a line (an SSH user name, an HTTP path) cannot match. The default
/// filter also requires fail2ban's own timestamp in front (see
/// [`Filter::require_stamp`]): a line without one, or a syslog line any
/// local user can write with `logger -t fail2ban.actions`, never counts.
pub const FAIL2BAN_BAN_REGEX: &str =
    r"^fail2ban\.actions\s*(?:\[[0-9]+\])?:\s+NOTICE\s+\[(?P<jail>[^\]\s]+)\]\s+Ban\s+<HOST>\s*$";

// ASCII digits only: `\d` is Unicode and would let `١.٢.٣.٤` (Arabic-Indic
// digits) be taken for an address, shadowing the real one behind it.
const IPV4: &str = r"(?:[0-9]{1,3}\.){3}[0-9]{1,3}";
/// Loose on purpose; the capture is then parsed strictly by `IpAddr`.
const IPV6: &str =
    r"[0-9A-Fa-f]{0,4}:[0-9A-Fa-f:]*(?:(?:[0-9]{1,3}\.){3}[0-9]{1,3}|[0-9A-Fa-f]{1,4})?";

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
    /// Only lines stamped in this format count (the default jail: fail2ban's
    /// own `2024-01-15 10:23:45,123`, which only fail2ban writes into its
    /// log). `None`: any line, stamped or not.
    pub require_stamp: Option<StampKind>,
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
    /// A filter of these regexes that takes any line.
    pub fn new(fail: Vec<FailRegex>, ignore: Vec<Regex>) -> Filter {
        Filter {
            fail,
            ignore,
            require_stamp: None,
        }
    }

    /// The whole pipeline for one raw log line: the timestamp is split off
    /// ([`timestamp::split`]), then [`Filter::check`]. Returns the line's own
    /// time, if it has one.
    pub fn check_line(
        &self,
        line: &str,
        now: SystemTime,
        own_jail: &str,
    ) -> (Option<SystemTime>, LineVerdict) {
        let (st, text) = timestamp::split(line, now);
        (
            st.map(|s| s.time),
            self.check(st.map(|s| s.kind), text, own_jail),
        )
    }

    /// Matches `text`, a line without its timestamp; `stamp` is the format
    /// of the timestamp that was split off, if any.
    pub fn check(&self, stamp: Option<StampKind>, text: &str, own_jail: &str) -> LineVerdict {
        if self.require_stamp.is_some() && stamp != self.require_stamp {
            return LineVerdict::NoMatch;
        }
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

/// True when `src` ends with an unescaped `$` (or `\\z`).
fn end_anchored(src: &str) -> bool {
    let s = src.trim_end();
    if let Some(body) = s.strip_suffix("\\z") {
        return body.chars().rev().take_while(|c| *c == '\\').count() % 2 == 0;
    }
    match s.strip_suffix('$') {
        Some(body) => body.chars().rev().take_while(|c| *c == '\\').count() % 2 == 0,
        None => false,
    }
}

/// A greedy `.*` / `.+` (not `.*?`) somewhere in `s`, unescaped.
fn has_greedy_dot(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'.' if matches!(b.get(i + 1), Some(b'*' | b'+')) && b.get(i + 2) != Some(&b'?') => {
                return true
            }
            _ => i += 1,
        }
    }
    false
}

/// What `check-config` warns about in a failregex: patterns that run but
/// let attacker text decide what counts.
pub fn lint_failregex(src: &str) -> Vec<String> {
    let mut w = Vec::new();
    if !src.starts_with('^') {
        w.push(format!(
            "failregex {src:?} is not anchored with ^: text an attacker controls later in a line could match"
        ));
    }
    let first_tag = ["<HOST>", "<ADDR>", "<IP4>", "<IP6>"]
        .iter()
        .filter_map(|t| src.find(t))
        .min();
    if let Some(pos) = first_tag {
        if has_greedy_dot(&src[..pos]) && !end_anchored(src) {
            w.push(format!(
                "failregex {src:?} has a greedy .* before the address and no end anchor $: \
                 attacker text after the real address (`user=x rhost=203.0.113.8`) decides whom to ban; \
                 end it with $ and spell out what follows the address"
            ));
        }
    }
    w
}

/// What `check-config` warns about in an ignoreregex.
pub fn lint_ignoreregex(src: &str) -> Vec<String> {
    let mut w = Vec::new();
    if !src.starts_with('^') {
        w.push(format!(
            "ignoreregex {src:?} is not anchored with ^: an attacker can write matching text \
             (an SSH user name, an HTTP path) into a line to have it ignored"
        ));
    }
    w
}

/// Every warning for one filter, failregexes first.
pub fn lint(f: &Filter) -> Vec<String> {
    let mut w: Vec<String> = f
        .fail
        .iter()
        .flat_map(|r| lint_failregex(&r.source))
        .collect();
    w.extend(f.ignore.iter().flat_map(|r| lint_ignoreregex(r.as_str())));
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_filter() -> Filter {
        crate::watcher::settings::default_jail().filter
    }

    /// The whole pipeline, as the watcher runs it.
    fn check(f: &Filter, line: &str) -> LineVerdict {
        f.check_line(line, SystemTime::now(), "multi-ban").1
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
        for l in [
            // Without fail2ban's own timestamp: anyone may write these (a
            // syslog logpath takes `logger -t fail2ban.actions ...` from
            // every local user).
            "Jan 15 10:23:45 web1 fail2ban.actions[811]: NOTICE [sshd] Ban 192.0.2.9",
            "fail2ban.actions: NOTICE [sshd] Ban 192.0.2.9",
            "fail2ban.actions [811]: NOTICE [sshd] Ban 192.0.2.9",
            "2024-01-15T10:23:45.123Z fail2ban.actions [811]: NOTICE [sshd] Ban 192.0.2.9",
            "2024-01-15 10:23:45.123 fail2ban.actions [811]: NOTICE [sshd] Ban 192.0.2.9",
            "2024-01-15 10:23:45 fail2ban.actions [811]: NOTICE [sshd] Ban 192.0.2.9",
            "Jan 15 10:23:45 web1 user: 2024-01-15 10:23:45,123 fail2ban.actions [811]: NOTICE [sshd] Ban 192.0.2.9",

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
        let f = Filter::new(
            vec![compile_failregex(
                r"^\S+ sshd\[\d+\]: Failed password for .* from <HOST> port \d+",
            )
            .unwrap()],
            vec![],
        );
        let t = |s| f.check(None, s, "sshd");
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
        let f = Filter::new(
            vec![compile_failregex(r"from <HOST>").unwrap()],
            vec![Regex::new("user=monitor").unwrap()],
        );
        assert_eq!(
            f.check(None, "fail user=monitor from 192.0.2.1", "j"),
            LineVerdict::Ignored
        );
        assert_eq!(
            f.check(None, "fail user=bob from 192.0.2.1", "j"),
            host("192.0.2.1")
        );
    }

    #[test]
    fn text_starts_after_the_stamp_and_its_blanks() {
        // The README's sshd style: `^\S+ sshd` must see the host name first.
        let f = Filter::new(
            vec![compile_failregex(
                r"^\S+ sshd\[[0-9]+\]: Failed password for .* from <HOST> port [0-9]+ ssh2$",
            )
            .unwrap()],
            vec![],
        );
        let now = SystemTime::now();
        for l in [
            "Jan 15 10:23:45 web1 sshd[811]: Failed password for root from 192.0.2.4 port 22 ssh2",
            "Jan  5 10:23:45 web1 sshd[811]: Failed password for root from 192.0.2.4 port 22 ssh2",
            "2024-01-15T10:23:45.123456+01:00 web1 sshd[811]: Failed password for root from 192.0.2.4 port 22 ssh2",
            "2024-01-15 10:23:45\tweb1 sshd[811]: Failed password for root from 192.0.2.4 port 22 ssh2",
        ] {
            assert_eq!(f.check_line(l, now, "sshd").1, host("192.0.2.4"), "{l}");
        }
    }

    #[test]
    fn address_patterns_take_ascii_digits_only() {
        // Arabic-Indic digits are `\d` in Unicode regexes: before, this
        // captured them as an (invalid) address and lost the line.
        let r = compile_failregex(r"from <IP4>").unwrap();
        assert_eq!(
            r.matches("from \u{661}.\u{662}.\u{663}.\u{664} or from 192.0.2.4", ""),
            RegexHit::Host("192.0.2.4".parse().unwrap())
        );
        let r = compile_failregex(r"from <HOST>$").unwrap();
        assert_eq!(
            r.matches("from \u{661}.\u{662}.\u{663}.\u{664}", ""),
            RegexHit::NoMatch
        );
    }

    #[test]
    fn lint_flags_greedy_unanchored_and_ignoreregex() {
        // CVE-2013-7176 shape: greedy .* before the tag, nothing after it.
        let pam =
            r"^\S+ sshd\[[0-9]+\]: pam_unix\(sshd:auth\): authentication failure;.* rhost=<HOST>";
        let w = lint_failregex(pam);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("greedy"), "{w:?}");
        // And it really bans the attacker's choice.
        let f = Filter::new(vec![compile_failregex(pam).unwrap()], vec![]);
        assert_eq!(
            f.check(
                None,
                "web1 sshd[9]: pam_unix(sshd:auth): authentication failure; logname= uid=0 rhost=10.77.0.7  user=x rhost=203.0.113.8",
                "j"
            ),
            host("203.0.113.8")
        );
        assert!(lint_failregex(&format!("{pam}(?:\\s+user=\\S*)?\\s*$")).is_empty());
        assert!(lint_failregex(r"^a .*? from <HOST>").is_empty());
        assert!(lint_failregex(r"^a from <HOST> .*").is_empty());
        assert_eq!(lint_failregex(r"^a .* from <HOST>\$").len(), 1);
        assert_eq!(lint_failregex(r"a from <HOST>$").len(), 1);
        assert!(lint_failregex(FAIL2BAN_BAN_REGEX).is_empty());
        assert_eq!(lint_ignoreregex("user=backup").len(), 1);
        assert!(
            lint_ignoreregex(r"^\S+ sshd\[[0-9]+\]: Failed password for backup from").is_empty()
        );
        assert!(lint(&default_filter()).is_empty());
    }
}
