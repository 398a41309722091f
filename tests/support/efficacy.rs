//! The figures `cargo bench --bench efficacy` prints, computed from the
//! tarpit's JSON records and the bench's own clock: per tool (one source
//! address each), how long the tarpit says it was engaged, and whether that
//! matches how long the tool really was stuck. Pure code, tested in
//! `tests/efficacy_figures.rs`.

#![allow(dead_code)]

use serde_json::Value;
use std::net::{IpAddr, SocketAddr};

/// One ended connection, from a `tarpit::record` JSON line.
#[derive(Debug, Clone, PartialEq)]
pub struct Conn {
    pub src: IpAddr,
    /// Accepted at (Unix seconds).
    pub start: f64,
    /// Engaged, including `wait`.
    pub engaged: f64,
    /// `syn_wait_secs`: the seconds a syn_delay kept it in SYN
    /// retransmissions before `start` (0 in records without the field).
    pub wait: f64,
    pub held: f64,
    /// `engaged_upper_bound`: no FIN or RST said when the program quit.
    pub bound: bool,
    pub fin: bool,
    pub end: String,
}

impl Conn {
    /// Reads a record line's fields; `None` when it is not a record or a
    /// field is missing or malformed.
    pub fn from_record(v: &Value) -> Option<Conn> {
        if v["target"] != "tarpit::record" {
            return None;
        }
        let peer: SocketAddr = v["peer"].as_str()?.parse().ok()?;
        let start = humantime::parse_rfc3339(v["start"].as_str()?).ok()?;
        let start = start
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs_f64();
        Some(Conn {
            src: peer.ip(),
            start,
            engaged: v["engaged_secs"].as_f64()?,
            wait: v["syn_wait_secs"].as_f64().unwrap_or(0.0),
            held: v["held_secs"].as_f64()?,
            bound: v["engaged_upper_bound"].as_bool().unwrap_or(false),
            fin: v["peer_tried_close"].as_bool().unwrap_or(false),
            end: v["end"].as_str()?.to_string(),
        })
    }
}

/// What the tarpit counted for one tool's connections.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub conns: usize,
    /// Where the tarpit's count begins: the first accept less its counted
    /// SYN wait, i.e. the first SYN it counted (Unix seconds; 0 without
    /// connections).
    pub first: f64,
    /// `first` to the last engaged end (accept + engaged − wait) over the
    /// tool's connections: the wall-clock time the tarpit says the tool was
    /// stuck, comparable with the bench's own stopwatch.
    pub span: f64,
    /// Sum of engaged over the connections ("attacker time wasted").
    pub sum: f64,
    pub held: f64,
    /// Some connection's engaged is only an upper bound.
    pub bound: bool,
    /// Connections we ended at shutdown with no FIN: engaged counts to the
    /// end of the round (the tool's data was stuck and it was not yet found
    /// gone).
    pub unfinished: usize,
}

pub fn figures(conns: &[Conn], src: IpAddr) -> Figures {
    let mine: Vec<&Conn> = conns.iter().filter(|c| c.src == src).collect();
    let Some(first) = mine.iter().map(|c| c.start - c.wait).reduce(f64::min) else {
        return Figures::default();
    };
    let last = mine
        .iter()
        .map(|c| c.start + c.engaged - c.wait)
        .fold(first, f64::max);
    Figures {
        conns: mine.len(),
        first,
        span: last - first,
        sum: mine.iter().map(|c| c.engaged).sum(),
        held: mine.iter().map(|c| c.held).sum(),
        bound: mine.iter().any(|c| c.bound),
        unfinished: mine
            .iter()
            .filter(|c| c.end == "shutdown" && !c.fin)
            .count(),
    }
}

/// How long the tool was stuck after the tarpit's count began
/// ([`Figures::first`]), and how long before that (`pre`: its own start-up,
/// DNS, an nmap SYN scan, a SYN delay the tarpit did not count):
/// `(pre, since_accept)` for a tool that started at
/// `origin` (Unix seconds) and was stuck `stuck` seconds; `None` when the
/// tarpit accepted none of its connections.
pub fn since_accept(stuck: f64, origin: f64, f: &Figures) -> Option<(f64, f64)> {
    (f.conns > 0).then(|| {
        let pre = (f.first - origin).clamp(0.0, stuck);
        (pre, stuck - pre)
    })
}

/// The criterion: the tarpit's engaged figure is within 10 % or
/// 2 s (whichever is larger) of the real stuck time.
pub fn matches(stuck: f64, engaged: f64) -> bool {
    (stuck - engaged).abs() <= (0.1 * stuck).max(2.0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Longer,
    Same,
    Shorter,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Longer => "longer",
            Verdict::Same => "same",
            Verdict::Shorter => "SHORTER",
        }
    }
}

/// `a` against `b`, equal within `tol` seconds (clients that time out at
/// the same moment differ by scheduling noise only).
pub fn compare(a: f64, b: f64, tol: f64) -> Verdict {
    if a > b + tol {
        Verdict::Longer
    } else if a < b - tol {
        Verdict::Shorter
    } else {
        Verdict::Same
    }
}

/// `a` against `b` as the bench judges stuck times: the same within 2 s
/// or 2 % of the longer, whichever is larger. Why not less: a tool whose
/// end is its own timer varies that much between targets where it behaved
/// identically, from its own start-up on a loaded 2-core machine (135
/// clients start within 4 s), not from the target. Measured in the 240 s
/// round of 14:53 UTC on 2026-12-01: hydra 34.5–36.8 s (its time before
/// the first connect alone 2.7–4.6 s), nmap -sV 211.3–212.7 s, ssh
/// ConnectTimeout=10 10.1–11.0 s, curl -m 30 30.1–30.9 s. The 0.5 s used
/// before called window0's nmap 211.3 s shorter than silence's 212.2 s.
/// What a policy really changes is far larger (syn60: medusa 21.5 s vs
/// 240+; bait: a banner grabber 0.6 s vs 240+).
pub fn verdict(a: f64, b: f64) -> Verdict {
    compare(a, b, (0.02 * a.max(b)).max(2.0))
}

/// The entry holding the tool longest (the first of equals).
pub fn best<'a>(it: impl IntoIterator<Item = (&'a str, f64)>) -> Option<(&'a str, f64)> {
    it.into_iter()
        .fold(None, |acc: Option<(&str, f64)>, (n, s)| match acc {
            Some((_, b)) if b >= s => acc,
            _ => Some((n, s)),
        })
}

/// The last non-empty line of a client's output (not its connect marker),
/// escaped and cut to `max` characters (tools print what the server sent
/// them: attacker-controlled bytes when the server is endlessh).
pub fn last_line(out: &[u8], max: usize) -> String {
    let line = out
        .split(|&b| b == b'\n' || b == b'\r')
        .rfind(|l| {
            l.iter().any(|b| !b.is_ascii_whitespace()) && !l.starts_with(b"efficacy-connect ")
        })
        .unwrap_or(&[]);
    let s = tarpit::engine::record::escape_bytes(line.trim_ascii());
    if s.chars().count() > max {
        s.chars().take(max.saturating_sub(1)).collect::<String>() + "…"
    } else {
        s
    }
}

/// The time (Unix seconds) a python client printed on its
/// `efficacy-connect <time>` line, once its imports were done.
pub fn connect_marker(out: &[u8]) -> Option<f64> {
    out.split(|&b| b == b'\n').find_map(|l| {
        std::str::from_utf8(l)
            .ok()?
            .trim()
            .strip_prefix("efficacy-connect ")?
            .parse()
            .ok()
    })
}
