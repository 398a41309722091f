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
        sock.bind(&SockAddr::unix(path)?)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
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
        let mut next = |want: &str| -> io::Result<(Msg, Vec<OwnedFd>)> {
            let (n, fds) = fdpass::recv_with_fds(&conn, &mut buf)?;
            if n == 0 {
                return Err(io::Error::other(format!(
                    "old process closed the handover before {want}"
                )));
            }
            let m = serde_json::from_slice(&buf[..n])
                .map_err(|e| io::Error::other(format!("bad handover message: {e}")))?;
            Ok((m, fds))
        };
        let (
            Msg::Header {
                version,
                pid,
                listeners: labels,
                conns: count,
            },
            _,
        ) = next("the header")?
        else {
            return Err(io::Error::other("handover did not start with a header"));
        };
        if version != 1 {
            return Err(io::Error::other(format!(
                "handover version {version} unsupported"
            )));
        }
        let (Msg::Listeners, lfds) = next("the listeners")? else {
            return Err(io::Error::other("expected the listeners"));
        };
        if lfds.len() != labels.len() {
            return Err(io::Error::other("listener count mismatch"));
        }
        let listeners = lfds
            .into_iter()
            .zip(labels)
            .map(|(fd, label)| BoundListener {
                sock: Socket::from(fd),
                label,
            })
            .collect();
        let mut conns = Vec::with_capacity(count);
        loop {
            match next("the end marker")? {
                (Msg::Conns { items }, fds) => {
                    if items.len() != fds.len() {
                        return Err(io::Error::other("connection batch mismatch"));
                    }
                    conns.extend(
                        fds.into_iter()
                            .zip(items)
                            .map(|(fd, facts)| InheritedConn { fd, facts }),
                    );
                }
                (Msg::End, _) => break,
                _ => return Err(io::Error::other("unexpected handover message")),
            }
        }
        Ok(Inherited {
            old_pid: pid,
            listeners,
            conns,
            confirm: Confirmer(conn),
        })
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
