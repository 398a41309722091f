//! What to report, to whom, when, and what an answer means: pure functions
//! of their arguments (no I/O, no clock; times are epoch milliseconds the
//! caller passes), so every rule is tested on its own, quinn-proto style.
//!
//! * [`admit`] — does an event enter a destination's outbox (once per host
//!   per `repeat_after`, bounded queue);
//! * [`gate`] — may the next queued item go now (pause, daily quota, the
//!   host's last delivery);
//! * [`outcome`] — what an HTTP answer (or its absence) means: sent,
//!   already reported, rejected for good, retry later, pause everything;
//! * [`categories`], [`comment`], [`abuseipdb_form`], [`webhook_json`] —
//!   what is sent. The comment carries our facts about the attacker only:
//!   never our own addresses, names or secrets.

use std::collections::BTreeMap;
use std::time::Duration;

pub const MINUTE_MS: i64 = 60_000;
pub const DAY_MS: i64 = 86_400_000;
/// AbuseIPDB refuses a second report of one address within 15 minutes.
pub const ABUSEIPDB_REPEAT_MS: i64 = 15 * MINUTE_MS;
/// A pause asked for by a 429 without a usable Retry-After.
pub const DEFAULT_PAUSE_MS: i64 = MINUTE_MS;
/// The longest pause any answer can ask for.
pub const MAX_PAUSE_MS: i64 = DAY_MS;
/// The longest wait between two tries of one item.
pub const MAX_BACKOFF_MS: i64 = 10 * MINUTE_MS;
/// AbuseIPDB's comment limit, in characters.
pub const MAX_COMMENT: usize = 1024;

/// What happened to a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// `tarpit watch` banned it (its jail saw enough offences).
    Ban,
    /// `tarpit serve` kept one of its connections engaged at least the
    /// threshold.
    Trapped,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Ban => "ban",
            EventKind::Trapped => "trapped",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        match s {
            "ban" => Some(EventKind::Ban),
            "trapped" => Some(EventKind::Trapped),
            _ => None,
        }
    }
}

/// One thing to report about one host.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: EventKind,
    /// An IPv4 or IPv6 address; for bans of IPv6 hosts, the banned prefix
    /// (`2001:db8::/64`).
    pub host: String,
    /// When it happened (epoch ms).
    pub at_ms: i64,
    /// Ban: the jail that made it.
    pub jail: Option<String>,
    /// Ban: offences counted.
    pub offences: Option<u32>,
    /// Trapped: the port the connection aimed at (before a redirect).
    pub port: Option<u16>,
    /// Trapped: seconds the attacker's program was stuck.
    pub engaged_secs: Option<f64>,
    /// Trapped: seconds we held the connection.
    pub held_secs: Option<f64>,
    /// Trapped: the client software, when known (already [`clean_client`]ed).
    pub client: Option<String>,
}

impl Event {
    pub fn ban(host: &str, jail: &str, offences: u32, at_ms: i64) -> Event {
        Event {
            kind: EventKind::Ban,
            host: host.to_string(),
            at_ms,
            jail: Some(jail.to_string()),
            offences: Some(offences),
            port: None,
            engaged_secs: None,
            held_secs: None,
            client: None,
        }
    }

    /// The single address AbuseIPDB can take (`None`: an IPv6 prefix).
    pub fn single_ip(&self) -> Option<std::net::IpAddr> {
        match self.host.split_once('/') {
            None => self.host.parse().ok(),
            Some((a, "128")) | Some((a, "32")) => a.parse().ok(),
            Some(_) => None,
        }
    }
}

/// Client software from the first bytes a peer sent (escaped as in
/// records): an SSH identification string (`SSH-2.0-Go`), else nothing.
///
/// Hook: once records carry a classified client (issue 10 §4), the serve
/// side passes that instead and this stays the fallback.
pub fn client_from_head(head: &str) -> Option<String> {
    if !head.starts_with("SSH-") {
        return None;
    }
    let end = head.find('\\').unwrap_or(head.len());
    clean_client(&head[..end])
}

/// Attacker text made safe for a comment: printable ASCII without quotes or
/// angle brackets, at most 64 characters; nothing left: `None`.
pub fn clean_client(s: &str) -> Option<String> {
    let t: String = s
        .chars()
        .filter(|c| (c.is_ascii_graphic() || *c == ' ') && !matches!(c, '"' | '<' | '>' | '\\'))
        .take(64)
        .collect();
    let t = t.trim().to_string();
    (!t.is_empty()).then_some(t)
}

/// AbuseIPDB categories by a key (a port, or a jail name), with a default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Categories {
    pub by_key: BTreeMap<String, Vec<u8>>,
    pub default: Vec<u8>,
}

/// AbuseIPDB's category numbers we use by default.
pub const CAT_PORT_SCAN: u8 = 14;
pub const CAT_BRUTE_FORCE: u8 = 18;
pub const CAT_SSH: u8 = 22;

impl Categories {
    /// Trapped connections: port 22 → SSH + Brute-Force, others → Port Scan.
    pub fn ports_default() -> Categories {
        Categories {
            by_key: [("22".to_string(), vec![CAT_SSH, CAT_BRUTE_FORCE])].into(),
            default: vec![CAT_PORT_SCAN],
        }
    }

    /// Bans: jail `sshd` → SSH + Brute-Force, others → Brute-Force.
    pub fn jails_default() -> Categories {
        Categories {
            by_key: [("sshd".to_string(), vec![CAT_SSH, CAT_BRUTE_FORCE])].into(),
            default: vec![CAT_BRUTE_FORCE],
        }
    }

    pub fn get(&self, key: &str) -> &[u8] {
        self.by_key.get(key).unwrap_or(&self.default)
    }
}

/// The categories of an event: by port for trapped connections, by jail
/// for bans.
pub fn categories(ev: &Event, ports: &Categories, jails: &Categories) -> Vec<u8> {
    match ev.kind {
        EventKind::Trapped => ports.get(&ev.port.map(|p| p.to_string()).unwrap_or_default()),
        EventKind::Ban => jails.get(ev.jail.as_deref().unwrap_or("")),
    }
    .to_vec()
}

fn secs(s: f64) -> String {
    humantime::format_duration(Duration::from_secs(s.max(0.0) as u64)).to_string()
}

/// The comment: what we saw the host do. Only facts about the attacker
/// (the port it aimed at, how long it was engaged, its client software, the
/// jail and offences of a ban); any of `never` (our own addresses, host
/// name, key) that still turns up — attacker text can carry anything — is
/// replaced. At most [`MAX_COMMENT`] characters.
pub fn comment(ev: &Event, never: &[String]) -> String {
    let mut c = match ev.kind {
        EventKind::Trapped => {
            let mut c = String::from("tarpit: ");
            match ev.port {
                Some(p) => c += &format!("connected to TCP port {p}"),
                None => c += "connected",
            }
            c += " and was held in a zero-window tarpit";
            if let Some(e) = ev.engaged_secs {
                c += &format!("; engaged {}", secs(e));
            }
            if let Some(cl) = &ev.client {
                c += &format!("; client {cl}");
            }
            c
        }
        EventKind::Ban => {
            let mut c = String::from("tarpit: banned");
            if let Some(n) = ev.offences {
                c += &format!(" after {n} offence{}", if n == 1 { "" } else { "s" });
            }
            if let Some(j) = ev.jail.as_deref().and_then(clean_client) {
                c += &format!(" (jail {j})");
            }
            c += " and trapped in a zero-window tarpit";
            c
        }
    };
    for n in never.iter().filter(|n| n.len() >= 2) {
        if c.contains(n.as_str()) {
            c = c.replace(n.as_str(), "[redacted]");
        }
    }
    c.chars().take(MAX_COMMENT).collect()
}

/// `application/x-www-form-urlencoded` escaping of one value.
pub fn form_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                o.push(b as char)
            }
            b' ' => o.push('+'),
            _ => o.push_str(&format!("%{b:02X}")),
        }
    }
    o
}

/// ISO 8601 / RFC 3339 UTC time of epoch milliseconds, in seconds.
pub fn iso8601(at_ms: i64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + Duration::from_millis(at_ms.max(0) as u64),
    )
    .to_string()
}

/// The body of AbuseIPDB v2 `POST /report`: `ip`, `categories` (comma
/// separated), `comment`, `timestamp` (ISO 8601).
pub fn abuseipdb_form(ip: &str, categories: &[u8], comment: &str, at_ms: i64) -> String {
    let cats: Vec<String> = categories.iter().map(|c| c.to_string()).collect();
    format!(
        "ip={}&categories={}&comment={}&timestamp={}",
        form_escape(ip),
        form_escape(&cats.join(",")),
        form_escape(comment),
        form_escape(&iso8601(at_ms))
    )
}

/// The JSON a webhook receives for one event.
pub fn webhook_json(ev: &Event) -> serde_json::Value {
    let mut v = serde_json::json!({
        "source": "tarpit",
        "event": ev.kind.as_str(),
        "host": ev.host,
        "at": iso8601(ev.at_ms),
    });
    if let Some(j) = &ev.jail {
        v["jail"] = j.clone().into();
    }
    if let Some(n) = ev.offences {
        v["offences"] = n.into();
    }
    if let Some(p) = ev.port {
        v["port"] = p.into();
    }
    if let Some(e) = ev.engaged_secs {
        v["engaged_secs"] = ((e * 10.0).round() / 10.0).into();
    }
    if let Some(h) = ev.held_secs {
        v["held_secs"] = ((h * 10.0).round() / 10.0).into();
    }
    if let Some(c) = &ev.client {
        v["client"] = c.clone().into();
    }
    v
}

/// Whether an event enters a destination's outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// The host was admitted less than `repeat_after` ago.
    Repeat,
    /// The outbox holds `cap` items already: the event is dropped (counted).
    Full,
}

/// `last_ms`: when this host last entered this outbox.
pub fn admit(last_ms: Option<i64>, repeat_ms: i64, pending: u64, cap: u64, now_ms: i64) -> Admit {
    if last_ms.is_some_and(|t| now_ms - t < repeat_ms && now_ms >= t) {
        return Admit::Repeat;
    }
    if pending >= cap {
        return Admit::Full;
    }
    Admit::Yes
}

/// A destination's shared state: paused until, and requests made on the
/// current UTC day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DestState {
    pub paused_until: i64,
    /// UTC day number (`ms / DAY_MS`) that `used` counts.
    pub day: i64,
    pub used: u32,
}

impl DestState {
    /// One request answered: counted against today's quota.
    pub fn count(&mut self, now_ms: i64) {
        let d = now_ms.div_euclid(DAY_MS);
        if d != self.day {
            self.day = d;
            self.used = 0;
        }
        self.used = self.used.saturating_add(1);
    }

    /// Requests made today.
    pub fn used_today(&self, now_ms: i64) -> u32 {
        if now_ms.div_euclid(DAY_MS) == self.day {
            self.used
        } else {
            0
        }
    }
}

/// May the next item go now?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Go,
    /// Paused or today's quota used: the whole destination waits until then.
    Hold(i64),
    /// This host was delivered less than `repeat_after` ago: this item
    /// waits until then (keeping its tries), the others go on.
    Later(i64),
}

/// `last_sent`: when this host was last delivered to this destination.
pub fn gate(
    st: &DestState,
    quota: Option<u32>,
    last_sent: Option<i64>,
    repeat_ms: i64,
    now_ms: i64,
) -> Gate {
    if now_ms < st.paused_until {
        return Gate::Hold(st.paused_until);
    }
    if let Some(q) = quota {
        if st.used_today(now_ms) >= q {
            return Gate::Hold((now_ms.div_euclid(DAY_MS) + 1) * DAY_MS);
        }
    }
    if let Some(t) = last_sent {
        if now_ms >= t && now_ms - t < repeat_ms {
            return Gate::Later(t + repeat_ms);
        }
    }
    Gate::Go
}

/// What a request got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Http {
        status: u16,
        /// The `Retry-After` header, as sent.
        retry_after: Option<String>,
        /// The body (bounded by the client).
        body: Vec<u8>,
    },
    /// No answer: refused, unreachable, TLS failure, timeout.
    Failed(String),
}

/// Which protocol a destination speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    AbuseIpdb,
    Webhook,
}

/// What to do with an item after its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    /// AbuseIPDB already has a report of this address from us within 15
    /// minutes (another process, or a queue that caught up): done.
    AlreadyReported,
    /// Refused for good (422, other 4xx): dropped, logged once.
    Rejected(String),
    /// Try this item again then.
    Retry {
        at: i64,
        why: String,
    },
    /// Pause the whole destination until then (429 with Retry-After, or a
    /// refused key); this item goes first when it resumes.
    Pause {
        until: i64,
        why: String,
    },
    /// A webhook's retries are used up: dropped, logged.
    GiveUp(String),
}

/// Wait before try number `tries + 1`: 5s, 10s, 20s ... at most 10 minutes.
pub fn backoff_ms(tries: u32) -> i64 {
    (5_000i64 << tries.min(16)).min(MAX_BACKOFF_MS)
}

/// `Retry-After` as milliseconds from now: delta-seconds or an HTTP-date.
pub fn retry_after_ms(v: &str, now_ms: i64) -> Option<i64> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some((s.min(MAX_PAUSE_MS as u64 / 1000) as i64) * 1000);
    }
    let t = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(v)
        .ok()?;
    Some((t.as_millisecond() - now_ms).clamp(0, MAX_PAUSE_MS))
}

/// The first `errors[].detail` of an AbuseIPDB answer, escaped and short.
pub fn error_detail(body: &[u8]) -> String {
    let d = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["errors"][0]["detail"].as_str().map(str::to_string));
    let s = d.unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
    // Escaped first, then cut: escapes (`\0`, `\u{1b}`) are longer than
    // what they stand for (found by the report_answer fuzz target).
    let esc: String = s.escape_debug().collect();
    let mut out: String = esc.chars().take(200).collect();
    if esc.chars().count() > 200 {
        out.push('…');
    }
    out
}

/// AbuseIPDB's answer to a repeat within 15 minutes: a 429 whose error
/// names the `ip` parameter ("You can only report the same IP address
/// (`…`) once in 15 minutes."), not the rate limit ("Daily rate limit …").
fn is_repeat_refusal(body: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    v["errors"].as_array().is_some_and(|es| {
        es.iter().any(|e| {
            e["source"]["parameter"] == "ip"
                || e["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("once in 15 minutes"))
        })
    })
}

/// What `ans` means for an item tried `tries` times before (0: first try).
/// `retries`: a webhook's attempts after the first (`None`: until it goes
/// through — AbuseIPDB reports are never dropped for an outage).
pub fn outcome(
    proto: Protocol,
    ans: &Answer,
    tries: u32,
    retries: Option<u32>,
    now_ms: i64,
) -> Outcome {
    let retry = |why: String| match retries {
        Some(r) if tries >= r => Outcome::GiveUp(why),
        _ => Outcome::Retry {
            at: now_ms + backoff_ms(tries),
            why,
        },
    };
    let (status, retry_after, body) = match ans {
        Answer::Failed(e) => return retry(e.clone()),
        Answer::Http {
            status,
            retry_after,
            body,
        } => (*status, retry_after, body),
    };
    let detail = || error_detail(body);
    match (proto, status) {
        (_, 200..=299) => Outcome::Sent,
        // The repeat refusal is a 429 too, but names the address: whatever
        // headers come with it, it is no reason to pause the others.
        (Protocol::AbuseIpdb, 429) if is_repeat_refusal(body) => Outcome::AlreadyReported,
        (_, 429) => {
            let wait = retry_after
                .as_deref()
                .and_then(|v| retry_after_ms(v, now_ms))
                .unwrap_or(DEFAULT_PAUSE_MS)
                .max(1000);
            Outcome::Pause {
                until: now_ms + wait,
                why: format!("429 Too Many Requests: {}", detail()),
            }
        }
        (Protocol::AbuseIpdb, 401 | 403) => Outcome::Pause {
            until: now_ms + 10 * MINUTE_MS,
            why: format!(
                "{status}: the key was refused (check key_file): {}",
                detail()
            ),
        },
        (_, 408) | (_, 500..=599) => retry(format!("{status}: {}", detail())),
        (_, s) => Outcome::Rejected(format!("{s}: {}", detail())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trapped(port: u16, engaged: f64, client: Option<&str>) -> Event {
        Event {
            kind: EventKind::Trapped,
            host: "203.0.113.7".into(),
            at_ms: 1_764_594_000_000,
            jail: None,
            offences: None,
            port: Some(port),
            engaged_secs: Some(engaged),
            held_secs: Some(engaged + 3.0),
            client: client.map(str::to_string),
        }
    }

    #[test]
    fn categories_by_port_and_jail() {
        let (p, j) = (Categories::ports_default(), Categories::jails_default());
        assert_eq!(categories(&trapped(22, 1.0, None), &p, &j), vec![22, 18]);
        assert_eq!(categories(&trapped(80, 1.0, None), &p, &j), vec![14]);
        let b = Event::ban("198.51.100.1", "sshd", 3, 0);
        assert_eq!(categories(&b, &p, &j), vec![22, 18]);
        let b = Event::ban("198.51.100.1", "multi-ban", 3, 0);
        assert_eq!(categories(&b, &p, &j), vec![18]);
    }

    #[test]
    fn comments_carry_our_facts_and_never_our_own() {
        let c = comment(&trapped(22, 723.4, Some("SSH-2.0-Go")), &[]);
        assert_eq!(
            c,
            "tarpit: connected to TCP port 22 and was held in a zero-window tarpit; engaged 12m 3s; client SSH-2.0-Go"
        );
        // Attacker text naming one of our addresses or our host name.
        let ev = trapped(80, 5.0, Some("curl 192.0.2.10 web1.example"));
        let c = comment(&ev, &["192.0.2.10".into(), "web1.example".into()]);
        assert!(!c.contains("192.0.2.10") && !c.contains("web1"), "{c}");
        let b = comment(&Event::ban("198.51.100.1", "sshd", 1, 0), &[]);
        assert_eq!(
            b,
            "tarpit: banned after 1 offence (jail sshd) and trapped in a zero-window tarpit"
        );
        let long = trapped(80, 1.0, Some(&"x".repeat(5000)));
        assert!(comment(&long, &[]).len() <= MAX_COMMENT);
    }

    #[test]
    fn client_software_from_an_ssh_banner_only() {
        assert_eq!(
            client_from_head("SSH-2.0-libssh_0.9.6\\r\\n\\x00\\x00").as_deref(),
            Some("SSH-2.0-libssh_0.9.6")
        );
        assert_eq!(client_from_head("GET / HTTP/1.1\\r\\n"), None);
        assert_eq!(client_from_head(""), None);
        assert_eq!(clean_client("<script>\"x\""), Some("scriptx".into()));
    }

    #[test]
    fn form_is_urlencoded_with_iso_timestamp() {
        let f = abuseipdb_form("2001:db8::1", &[22, 18], "a b&c=d;é", 1_764_594_000_000);
        assert_eq!(
            f,
            "ip=2001%3Adb8%3A%3A1&categories=22%2C18&comment=a+b%26c%3Dd%3B%C3%A9&timestamp=2025-12-01T13%3A00%3A00Z"
        );
    }

    #[test]
    fn single_ip_only_for_addresses() {
        let mut e = Event::ban("2001:db8::/64", "j", 1, 0);
        assert_eq!(e.single_ip(), None);
        e.host = "2001:db8::5/128".into();
        assert!(e.single_ip().is_some());
        e.host = "10.77.0.1".into();
        assert!(e.single_ip().is_some());
    }

    #[test]
    fn admit_once_per_window_and_bounded() {
        let w = ABUSEIPDB_REPEAT_MS;
        assert_eq!(admit(None, w, 0, 10, 1000), Admit::Yes);
        assert_eq!(admit(Some(1000), w, 0, 10, 1000 + w - 1), Admit::Repeat);
        assert_eq!(admit(Some(1000), w, 0, 10, 1000 + w), Admit::Yes);
        assert_eq!(admit(None, w, 10, 10, 0), Admit::Full);
        // A clock that went back does not block a host for ever.
        assert_eq!(admit(Some(5000), w, 0, 10, 1000), Admit::Yes);
        assert_eq!(admit(Some(0), 0, 0, 10, 0), Admit::Yes, "webhook: all");
    }

    #[test]
    fn gate_pause_quota_and_repeat() {
        let now = 10 * DAY_MS + 5000;
        let mut st = DestState::default();
        assert_eq!(gate(&st, Some(2), None, 0, now), Gate::Go);
        st.count(now);
        st.count(now);
        assert_eq!(st.used_today(now), 2);
        assert_eq!(gate(&st, Some(2), None, 0, now), Gate::Hold(11 * DAY_MS));
        assert_eq!(
            gate(&st, Some(2), None, 0, 11 * DAY_MS),
            Gate::Go,
            "a new day"
        );
        st.count(11 * DAY_MS);
        assert_eq!(st.used, 1);
        st.paused_until = now + 7000;
        assert_eq!(gate(&st, None, None, 0, now), Gate::Hold(now + 7000));
        let st = DestState::default();
        let w = ABUSEIPDB_REPEAT_MS;
        assert_eq!(
            gate(&st, None, Some(now - 1000), w, now),
            Gate::Later(now - 1000 + w)
        );
        assert_eq!(gate(&st, None, Some(now - w), w, now), Gate::Go);
    }

    fn http(status: u16, ra: Option<&str>, body: &str) -> Answer {
        Answer::Http {
            status,
            retry_after: ra.map(str::to_string),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn abuseipdb_answers() {
        let now = 1_000_000;
        let ok = http(
            200,
            None,
            r#"{"data":{"ipAddress":"1.2.3.4","abuseConfidenceScore":52}}"#,
        );
        assert_eq!(
            outcome(Protocol::AbuseIpdb, &ok, 0, None, now),
            Outcome::Sent
        );
        let limited = http(
            429,
            Some("120"),
            r#"{"errors":[{"detail":"Daily rate limit of 1000 requests exceeded for this endpoint.","status":429}]}"#,
        );
        match outcome(Protocol::AbuseIpdb, &limited, 0, None, now) {
            Outcome::Pause { until, why } => {
                assert_eq!(until, now + 120_000);
                assert!(why.contains("Daily rate limit"), "{why}");
            }
            o => panic!("{o:?}"),
        }
        let repeat = http(
            429,
            None,
            r#"{"errors":[{"detail":"You can only report the same IP address (`1.2.3.4`) once in 15 minutes.","status":429,"source":{"parameter":"ip"}}]}"#,
        );
        assert_eq!(
            outcome(Protocol::AbuseIpdb, &repeat, 0, None, now),
            Outcome::AlreadyReported
        );
        let Answer::Http { body, .. } = repeat else {
            unreachable!()
        };
        let with_header = Answer::Http {
            status: 429,
            retry_after: Some("900".into()),
            body,
        };
        assert_eq!(
            outcome(Protocol::AbuseIpdb, &with_header, 0, None, now),
            Outcome::AlreadyReported,
            "a repeat pauses nothing, whatever its headers"
        );
        let bad = http(
            422,
            None,
            r#"{"errors":[{"detail":"The ip must be a valid IPv4 or IPv6 address (e.g. 8.8.8.8 or 2001:4860:4860::8888).","status":422,"source":{"parameter":"ip"}}]}"#,
        );
        match outcome(Protocol::AbuseIpdb, &bad, 0, None, now) {
            Outcome::Rejected(w) => assert!(w.starts_with("422: The ip must be"), "{w}"),
            o => panic!("{o:?}"),
        }
        // Outages: retried for ever, backing off.
        for (tries, wait) in [(0, 5_000), (1, 10_000), (3, 40_000), (20, MAX_BACKOFF_MS)] {
            let a = Answer::Failed("connection refused".into());
            assert_eq!(
                outcome(Protocol::AbuseIpdb, &a, tries, None, now),
                Outcome::Retry {
                    at: now + wait,
                    why: "connection refused".into()
                }
            );
        }
        assert!(matches!(
            outcome(Protocol::AbuseIpdb, &http(503, None, "down"), 9, None, now),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            outcome(Protocol::AbuseIpdb, &http(401, None, "{}"), 0, None, now),
            Outcome::Pause { .. }
        ));
        // A 429 without Retry-After that is the rate limit: a minute.
        let plain = http(429, None, r#"{"errors":[{"detail":"Too Many Attempts."}]}"#);
        assert!(matches!(
            outcome(Protocol::AbuseIpdb, &plain, 0, None, now),
            Outcome::Pause { until, .. } if until == now + DEFAULT_PAUSE_MS
        ));
    }

    #[test]
    fn webhook_answers_and_retries() {
        let now = 0;
        assert_eq!(
            outcome(Protocol::Webhook, &http(204, None, ""), 0, Some(2), now),
            Outcome::Sent
        );
        let down = http(500, None, "oops");
        assert!(matches!(
            outcome(Protocol::Webhook, &down, 1, Some(2), now),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            outcome(Protocol::Webhook, &down, 2, Some(2), now),
            Outcome::GiveUp(_)
        ));
        assert!(matches!(
            outcome(Protocol::Webhook, &http(404, None, ""), 0, Some(2), now),
            Outcome::Rejected(_)
        ));
    }

    #[test]
    fn error_details_stay_short_once_escaped() {
        let d = error_detail(&[0u8; 300]);
        assert!(d.chars().count() <= 201, "{d}");
        assert!(d.starts_with("\\0\\0") && d.ends_with('…'), "{d}");
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(retry_after_ms("30", 0), Some(30_000));
        assert_eq!(retry_after_ms("999999999", 0), Some(MAX_PAUSE_MS));
        let now = 1_764_594_000_000; // 2025-12-01T13:00:00Z
        assert_eq!(
            retry_after_ms("Mon, 01 Dec 2025 13:00:42 GMT", now),
            Some(42_000)
        );
        assert_eq!(retry_after_ms("soon", now), None);
    }

    #[test]
    fn webhook_body() {
        let v = webhook_json(&trapped(22, 61.26, Some("SSH-2.0-Go")));
        assert_eq!(v["event"], "trapped");
        assert_eq!(v["host"], "203.0.113.7");
        assert_eq!(v["port"], 22);
        assert_eq!(v["engaged_secs"], 61.3);
        assert_eq!(v["at"], "2025-12-01T13:00:00Z");
        let v = webhook_json(&Event::ban("10.77.0.1", "sshd", 3, 0));
        assert_eq!(v["event"], "ban");
        assert_eq!(v["jail"], "sshd");
        assert_eq!(v["offences"], 3);
    }
}
