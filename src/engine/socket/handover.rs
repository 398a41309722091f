//! Takeover: handing listeners and every held connection to a new process.
//!
//! No tarpit before this one survived its own restart; every held attacker
//! was let go. Here the new process (`tarpit serve --takeover`) listens on a
//! private unix `SOCK_SEQPACKET` socket and asks the running one (over the
//! control socket) to connect there. The old process then sends, in order:
//!
//! 1. a header: its pid, listener labels, connection count;
//! 2. its listening sockets (`SCM_RIGHTS`);
//! 3. the held connections in batches of at most 100, each with its facts
//!    (peer, addresses, start time, lifetime left, FIN time, keepalive);
//! 4. an end marker.
//!
//! The new process registers everything, then answers `confirm`. Only then
//! does the old one stop (without closing anything: the sockets live on in
//! the new process, so the peers see neither FIN nor RST). If the new
//! process fails before confirming, the old one simply carries on.

use super::BoundListener;
use crate::sys::fdpass;
use serde::{Deserialize, Serialize};
use socket2::{Domain, SockAddr, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

const BATCH: usize = 100;
const MAX_MSG: usize = 256 * 1024;
const CONFIRM: &[u8] = b"confirm";

/// What travels with each held connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Facts {
    /// Index into the listener list.
    pub listener: u8,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub original_dst: SocketAddr,
    /// Accept time, seconds since the Unix epoch.
    pub start: f64,
    /// Seconds of lifetime left.
    pub lifetime_left: f64,
    pub fin_after: Option<f64>,
    pub keepalive_idle: u32,
    pub keepalive_intvl: u32,
    /// Bait progress (line, bytes of it sent), so a bait goes on where it
    /// stopped; absent from older processes.
    #[serde(default)]
    pub bait_pos: (u8, u8),
    /// Whether bait had begun (a bait waiting for its peer had not; one
    /// that met another protocol never will). `None` from older processes:
    /// then a position past the start says it had.
    #[serde(default)]
    pub bait_on: Option<bool>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Msg {
    Header {
        version: u32,
        pid: u32,
        listeners: Vec<String>,
        conns: usize,
    },
    Listeners,
    Conns {
        items: Vec<Facts>,
    },
    End,
}

/// A connection received from the old process.
#[derive(Debug)]
pub struct InheritedConn {
    pub fd: OwnedFd,
    pub facts: Facts,
}

/// Everything received, plus the way to confirm.
pub struct Inherited {
    pub old_pid: u32,
    pub listeners: Vec<BoundListener>,
    pub conns: Vec<InheritedConn>,
    pub confirm: Confirmer,
}

/// Sends the final `confirm`; the old process exits once it reads it.
pub struct Confirmer(Socket);

impl Confirmer {
    pub fn confirm(self) -> io::Result<()> {
        fdpass::send_with_fds(&self.0, CONFIRM, &[])
    }
}

/// The new process's side: a private socket the old process connects to.
pub struct Receiver {
    sock: Socket,
    path: PathBuf,
}

impl Receiver {
    /// Binds `path` (mode 0600; a stale file is replaced).
    pub fn bind(path: &Path) -> io::Result<Receiver> {
        let _ = std::fs::remove_file(path);
        let sock = Socket::new(Domain::UNIX, Type::SEQPACKET, None)?;
        // Mode 0600 from the start (no chmod after the bind).
        let addr = SockAddr::unix(path)?;
        crate::sys::with_umask(0o177, || sock.bind(&addr))?;
        sock.listen(1)?;
        Ok(Receiver {
            sock,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits (at most `timeout`) for the old process and receives all it
    /// hands over.
    pub fn receive(&self, timeout: Duration) -> io::Result<Inherited> {
        wait_readable(&self.sock, timeout)?;
        let (conn, _) = self.sock.accept()?;
        conn.set_read_timeout(Some(timeout))?;
        let mut buf = vec![0u8; MAX_MSG];
        let mut d = Decoder::new();
        loop {
            let (n, fds) = fdpass::recv_with_fds(&conn, &mut buf)?;
            if n == 0 {
                return Err(io::Error::other(format!(
                    "old process closed the handover before {}",
                    d.waiting_for()
                )));
            }
            if d.feed(&buf[..n], fds)? {
                break;
            }
        }
        let (pid, listeners, conns) = d.finish();
        Ok(Inherited {
            old_pid: pid,
            listeners: listeners
                .into_iter()
                .map(|(fd, label)| BoundListener {
                    sock: Socket::from(fd),
                    label,
                })
                .collect(),
            conns: conns
                .into_iter()
                .map(|(fd, facts)| InheritedConn { fd, facts })
                .collect(),
            confirm: Confirmer(conn),
        })
    }
}

/// Most listeners a handover may carry (`Facts::listener` is a `u8`).
pub const MAX_LISTENERS: usize = 256;
/// Most connections a handover may announce: more than any fd limit
/// allows. Checked before anything is allocated for them.
pub const MAX_CONNS: usize = 1 << 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Header,
    Listeners,
    Conns,
    Done,
}

/// The receiving side of the protocol, apart from the socket: fed one
/// message and the descriptors that came with it at a time, it checks
/// everything a confused or hostile sender could get wrong (order,
/// counts, indexes, numbers) before keeping anything. Generic over the
/// descriptor type so it can be driven without real descriptors.
pub struct Decoder<F> {
    stage: Stage,
    pid: u32,
    labels: Vec<String>,
    announced: usize,
    listeners: Vec<(F, String)>,
    conns: Vec<(F, Facts)>,
}

impl<F> Default for Decoder<F> {
    fn default() -> Self {
        Self::new()
    }
}

fn bad(m: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, m.into())
}

fn sane(f: &Facts, listeners: usize) -> Result<(), String> {
    if usize::from(f.listener) >= listeners {
        return Err(format!(
            "connection names listener {} of {listeners}",
            f.listener
        ));
    }
    let ok = |x: f64| x.is_finite() && x >= 0.0;
    if !ok(f.start) || !ok(f.lifetime_left) || f.fin_after.is_some_and(|x| !ok(x)) {
        return Err("connection facts with a negative or non-finite time".into());
    }
    Ok(())
}

impl<F> Decoder<F> {
    pub fn new() -> Self {
        Decoder {
            stage: Stage::Header,
            pid: 0,
            labels: Vec::new(),
            announced: 0,
            listeners: Vec::new(),
            conns: Vec::new(),
        }
    }

    /// What the next message should be, for error messages.
    pub fn waiting_for(&self) -> &'static str {
        match self.stage {
            Stage::Header => "the header",
            Stage::Listeners => "the listeners",
            Stage::Conns => "the end marker",
            Stage::Done => "nothing",
        }
    }

    /// Takes one message; `Ok(true)` once the end marker arrived.
    pub fn feed(&mut self, msg: &[u8], fds: Vec<F>) -> io::Result<bool> {
        let m: Msg =
            serde_json::from_slice(msg).map_err(|e| bad(format!("bad handover message: {e}")))?;
        match (self.stage, m) {
            (
                Stage::Header,
                Msg::Header {
                    version,
                    pid,
                    listeners,
                    conns,
                },
            ) => {
                if version != 1 {
                    return Err(bad(format!("handover version {version} unsupported")));
                }
                if listeners.is_empty() || listeners.len() > MAX_LISTENERS {
                    return Err(bad(format!(
                        "handover announces {} listeners (1..={MAX_LISTENERS})",
                        listeners.len()
                    )));
                }
                if conns > MAX_CONNS {
                    return Err(bad(format!(
                        "handover announces {conns} connections (at most {MAX_CONNS})"
                    )));
                }
                if !fds.is_empty() {
                    return Err(bad("descriptors with the handover header"));
                }
                self.pid = pid;
                self.labels = listeners;
                self.announced = conns;
                // Never trust the count for more than a few batches ahead.
                self.conns = Vec::with_capacity(conns.min(BATCH * 64));
                self.stage = Stage::Listeners;
                Ok(false)
            }
            (Stage::Header, _) => Err(bad("handover did not start with a header")),
            (Stage::Listeners, Msg::Listeners) => {
                if fds.len() != self.labels.len() {
                    return Err(bad("listener count mismatch"));
                }
                let labels = std::mem::take(&mut self.labels);
                self.listeners = fds.into_iter().zip(labels).collect();
                self.stage = Stage::Conns;
                Ok(false)
            }
            (Stage::Listeners, _) => Err(bad("expected the listeners")),
            (Stage::Conns, Msg::Conns { items }) => {
                if items.len() != fds.len() || items.is_empty() || items.len() > BATCH {
                    return Err(bad("connection batch mismatch"));
                }
                if self.conns.len() + items.len() > self.announced {
                    return Err(bad("more connections than the header announced"));
                }
                for f in &items {
                    sane(f, self.listeners.len()).map_err(bad)?;
                }
                self.conns.extend(fds.into_iter().zip(items));
                Ok(false)
            }
            (Stage::Conns, Msg::End) => {
                if self.conns.len() != self.announced {
                    return Err(bad(format!(
                        "handover ended after {} of {} connections",
                        self.conns.len(),
                        self.announced
                    )));
                }
                if !fds.is_empty() {
                    return Err(bad("descriptors with the end marker"));
                }
                self.stage = Stage::Done;
                Ok(true)
            }
            (Stage::Conns, _) => Err(bad("unexpected handover message")),
            (Stage::Done, _) => Err(bad("message after the end marker")),
        }
    }

    /// The old pid, the listeners with their labels, the connections.
    #[allow(clippy::type_complexity)]
    pub fn finish(self) -> (u32, Vec<(F, String)>, Vec<(F, Facts)>) {
        (self.pid, self.listeners, self.conns)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The old process's side: connects to `to`, sends everything, waits for the
/// confirmation. `Ok` only when the new process confirmed; the descriptors
/// are only borrowed (duplicates travel), so on any error nothing is lost.
pub fn send(
    to: &Path,
    labels: Vec<String>,
    listener_fds: &[RawFd],
    conns: &[(RawFd, Facts)],
    timeout: Duration,
) -> io::Result<()> {
    let sock = Socket::new(Domain::UNIX, Type::SEQPACKET, None)?;
    sock.connect(&SockAddr::unix(to)?)?;
    // Everything we hold goes to whoever listens there: only root or our
    // own user, by the kernel's word (SO_PEERCRED), not by the path.
    let cred = rustix::net::sockopt::socket_peercred(&sock)?;
    let uid = cred.uid.as_raw();
    if uid != 0 && uid != rustix::process::geteuid().as_raw() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "the handover socket {} belongs to uid {uid}, neither root nor us",
                to.display()
            ),
        ));
    }
    sock.set_write_timeout(Some(timeout))?;
    sock.set_read_timeout(Some(timeout))?;
    let send = |m: &Msg, fds: &[RawFd]| -> io::Result<()> {
        let data = serde_json::to_vec(m).map_err(io::Error::other)?;
        fdpass::send_with_fds(&sock, &data, fds)
    };
    send(
        &Msg::Header {
            version: 1,
            pid: std::process::id(),
            listeners: labels,
            conns: conns.len(),
        },
        &[],
    )?;
    send(&Msg::Listeners, listener_fds)?;
    for chunk in conns.chunks(BATCH) {
        let fds: Vec<RawFd> = chunk.iter().map(|(fd, _)| *fd).collect();
        let items = chunk.iter().map(|(_, f)| f.clone()).collect();
        send(&Msg::Conns { items }, &fds)?;
    }
    send(&Msg::End, &[])?;
    let mut buf = [0u8; 64];
    let (n, _) = fdpass::recv_with_fds(&sock, &mut buf)?;
    if &buf[..n] == CONFIRM {
        Ok(())
    } else {
        Err(io::Error::other("the new process did not confirm"))
    }
}

fn wait_readable(sock: &Socket, timeout: Duration) -> io::Result<()> {
    // A blocking accept with a deadline: SO_RCVTIMEO applies to accept().
    sock.set_read_timeout(Some(timeout))
}

#[cfg(test)]
mod decoder_tests {
    use super::*;

    fn msg(m: &Msg) -> Vec<u8> {
        serde_json::to_vec(m).unwrap()
    }

    fn facts(listener: u8) -> Facts {
        Facts {
            listener,
            peer: "10.77.0.2:4000".parse().unwrap(),
            local: "10.77.0.1:22".parse().unwrap(),
            original_dst: "10.77.0.1:22".parse().unwrap(),
            start: 1.0,
            lifetime_left: 5.0,
            fin_after: None,
            keepalive_idle: 60,
            keepalive_intvl: 10,
            bait_pos: (0, 0),
            bait_on: None,
        }
    }

    fn header(listeners: usize, conns: usize) -> Vec<u8> {
        msg(&Msg::Header {
            version: 1,
            pid: 7,
            listeners: (0..listeners).map(|i| format!("l{i}")).collect(),
            conns,
        })
    }

    #[test]
    fn a_well_formed_handover_decodes() {
        let mut d = Decoder::<u32>::new();
        assert!(!d.feed(&header(2, 3), vec![]).unwrap());
        assert!(!d.feed(&msg(&Msg::Listeners), vec![10, 11]).unwrap());
        let items = vec![facts(0), facts(1)];
        assert!(!d.feed(&msg(&Msg::Conns { items }), vec![20, 21]).unwrap());
        let items = vec![facts(1)];
        assert!(!d.feed(&msg(&Msg::Conns { items }), vec![22]).unwrap());
        assert!(d.feed(&msg(&Msg::End), vec![]).unwrap());
        let (pid, l, c) = d.finish();
        assert_eq!(pid, 7);
        assert_eq!(l, vec![(10, "l0".into()), (11, "l1".into())]);
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn a_huge_announced_count_is_refused_before_allocating() {
        // Before: Vec::with_capacity(count) with the sender's count
        // (capacity overflow, or gigabytes, from one message).
        let mut d = Decoder::<u32>::new();
        let e = d.feed(&header(1, usize::MAX), vec![]).unwrap_err();
        assert!(e.to_string().contains("connections"), "{e}");
        let mut d = Decoder::<u32>::new();
        d.feed(&header(1, MAX_CONNS), vec![]).unwrap();
        assert!(d.conns.capacity() <= BATCH * 64);
    }

    #[test]
    fn lies_and_disorder_are_refused() {
        let start = |conns| {
            let mut d = Decoder::<u32>::new();
            d.feed(&header(1, conns), vec![]).unwrap();
            d.feed(&msg(&Msg::Listeners), vec![1]).unwrap();
            d
        };
        // More than announced, fewer than announced.
        let mut d = start(1);
        let two = msg(&Msg::Conns {
            items: vec![facts(0), facts(0)],
        });
        assert!(d.feed(&two, vec![1, 2]).is_err());
        let mut d = start(2);
        assert!(d.feed(&msg(&Msg::End), vec![]).is_err());
        // A listener index out of range; a NaN lifetime.
        let mut d = start(1);
        let m = msg(&Msg::Conns {
            items: vec![facts(1)],
        });
        assert!(d.feed(&m, vec![1]).is_err());
        let mut f = facts(0);
        f.lifetime_left = -1.0;
        let mut d = start(1);
        assert!(d
            .feed(&msg(&Msg::Conns { items: vec![f] }), vec![1])
            .is_err());
        // Out of order, after the end, fds where none belong.
        let mut d = Decoder::<u32>::new();
        assert!(d.feed(&msg(&Msg::End), vec![]).is_err());
        let mut d = Decoder::<u32>::new();
        assert!(d.feed(&header(1, 0), vec![9]).is_err());
        let mut d = start(0);
        assert!(d.feed(&msg(&Msg::End), vec![]).unwrap());
        assert!(d.feed(&msg(&Msg::End), vec![]).is_err());
        assert!(Decoder::<u32>::new().feed(b"\xff{", vec![]).is_err());
        assert!(Decoder::<u32>::new().feed(&header(0, 0), vec![]).is_err());
        assert!(Decoder::<u32>::new()
            .feed(&header(MAX_LISTENERS + 1, 0), vec![])
            .is_err());
    }
}
