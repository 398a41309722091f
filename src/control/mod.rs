//! The control socket: how `tarpit stats` (and later commands such as a
//! takeover) talk to a running `tarpit serve`.
//!
//! A unix stream socket (never TCP: only local users with file permission may
//! ask), mode 0660. The protocol is line-delimited JSON: each request is one
//! object with a `cmd` field plus command-specific fields, each answer one
//! object `{"ok":true,"data":...}` or `{"ok":false,"error":"..."}`. New
//! commands are added by registering a [`Handler`] under a new `cmd` name;
//! the framing never changes.
//!
//! The server runs on the serve runtime next to the engine, so a client must
//! never be able to stall it: every read and write has a timeout, a request
//! line is capped at [`MAX_REQUEST`] bytes, and at most [`MAX_CLIENTS`]
//! clients are served at once, plus a reserve for root and the server's own
//! user; a client merely waiting for its next request gives its slot to a
//! newcomer ([`slots`]).
//!
//! Every command is registered with its [`Access`]: [`Access::Read`]
//! (statistics) for anyone the socket's file mode lets connect,
//! [`Access::Control`] (takeover) only for root or the server's own user by
//! `SO_PEERCRED`. The socket is created under a umask that gives it its
//! final mode at once, in a directory that must not be a symlink.

pub mod client;
pub mod slots;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

pub use client::{request, ClientError};

/// Where `tarpit serve` listens and `tarpit stats` connects by default.
pub const DEFAULT_PATH: &str = "/run/tarpit/control.sock";
/// Longest request line accepted; anything longer is answered with an error
/// and the connection closed.
pub const MAX_REQUEST: usize = 64 * 1024;
/// A client has this long to send a whole request line, and to take a whole
/// answer; after that it is disconnected.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// A command has this long to produce its answer.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(10);
/// Clients served at once (any peer); a newcomer who finds them all taken
/// displaces the one waiting longest for its next request, or is closed if
/// every one is running a command.
pub const MAX_CLIENTS: usize = slots::SHARED;
/// Further clients served at once for root or the server's own user only.
pub const PRIVILEGED_CLIENTS: usize = slots::RESERVED;

/// One request: a command name and its arguments.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub cmd: String,
    #[serde(flatten)]
    pub args: Map<String, Value>,
    /// Who sent it (SO_PEERCRED of the connection), set by the server;
    /// never taken from the request text.
    #[serde(skip)]
    pub peer: Option<Peer>,
}

/// The kernel's word on who is at the other end of a control connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

/// Who may send a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads the server's state: anyone who may connect (the socket's
    /// file mode and group decide).
    Read,
    /// Changes the server (takeover): root or the server's own user only.
    Control,
}

impl Access {
    pub fn allows(self, peer: Option<Peer>) -> bool {
        match self {
            Access::Read => true,
            Access::Control => peer.is_some_and(|p| p.is_privileged()),
        }
    }
}

impl Peer {
    /// Root, or the user this server runs as: the only peers allowed
    /// [`Access::Control`] commands.
    pub fn is_privileged(&self) -> bool {
        self.uid == 0 || self.uid == rustix::process::geteuid().as_raw()
    }
}

impl Request {
    pub fn new(cmd: &str) -> Self {
        Request {
            cmd: cmd.to_string(),
            args: Map::new(),
            peer: None,
        }
    }
}

/// One answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The `data` of an answer: a JSON value, or JSON text serialized straight
/// from the handler's own types. A snapshot page is the second kind: a
/// `Value` tree in between costs several times the answer's size in memory
/// (~3 KB per listed connection, against ~0.4 KB of text).
pub struct Answer(AnswerKind);

enum AnswerKind {
    Value(Value),
    Text(String),
}

impl Answer {
    /// `data` serialized from `t` now (so it is valid JSON by construction).
    pub fn serialized<T: Serialize + ?Sized>(t: &T) -> Result<Answer, String> {
        serde_json::to_string(t)
            .map(|s| Answer(AnswerKind::Text(s)))
            .map_err(|e| e.to_string())
    }
}

impl From<Value> for Answer {
    fn from(v: Value) -> Self {
        Answer(AnswerKind::Value(v))
    }
}

/// One answer line (with its `\n`).
fn answer_line(r: Result<Answer, String>) -> Vec<u8> {
    let resp = match r {
        Ok(Answer(AnswerKind::Text(t))) => {
            let mut b = Vec::with_capacity(t.len() + 20);
            b.extend_from_slice(b"{\"ok\":true,\"data\":");
            b.extend_from_slice(t.as_bytes());
            b.extend_from_slice(b"}\n");
            return b;
        }
        Ok(Answer(AnswerKind::Value(v))) => Response {
            ok: true,
            data: Some(v),
            error: None,
        },
        Err(e) => Response::error(e),
    };
    let mut b = serde_json::to_vec(&resp)
        .unwrap_or_else(|_| br#"{"ok":false,"error":"answer could not be encoded"}"#.to_vec());
    b.push(b'\n');
    b
}

impl Response {
    fn error(e: impl Into<String>) -> Self {
        Response {
            ok: false,
            data: None,
            error: Some(e.into()),
        }
    }
}

/// What a command handler returns: the `data` of the answer, or an error text.
pub type Reply = Pin<Box<dyn Future<Output = Result<Answer, String>> + Send>>;

/// Answers one command. Handlers run on the serve runtime and must not block.
pub trait Handler: Send + Sync {
    fn call(&self, req: Request) -> Reply;
}

impl<F> Handler for F
where
    F: Fn(Request) -> Reply + Send + Sync,
{
    fn call(&self, req: Request) -> Reply {
        self(req)
    }
}

/// Why the control socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: another tarpit serve is already answering there")]
    InUse { path: PathBuf },
    #[error("control socket {path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        source: io::Error,
    },
}

/// A bound control socket plus its commands. Removing the socket file on
/// drop tells clients plainly that the server is gone.
pub struct ControlServer {
    listener: Option<std::os::unix::net::UnixListener>,
    path: PathBuf,
    commands: BTreeMap<String, (Access, Arc<dyn Handler>)>,
}

/// The socket's mode, given at creation by the umask (never chmod'ed
/// after the bind: no moment with a wider mode).
pub const SOCKET_MODE: u32 = 0o660;

impl ControlServer {
    /// Binds `path` with mode [`SOCKET_MODE`] (creating its directory, mode
    /// 0755, if missing). The directory, and the path, must not be a
    /// symlink (they are refused, not followed). A stale socket left by a
    /// dead server is replaced; one that still answers is
    /// [`ControlError::InUse`]. Call before dropping privileges, while the
    /// process has one thread (the umask is process-wide).
    pub fn bind(path: &Path) -> Result<Self, ControlError> {
        let err = |what, source| ControlError::Io {
            path: path.to_path_buf(),
            what,
            source,
        };
        let symlink = |what| {
            err(
                what,
                io::Error::new(io::ErrorKind::InvalidInput, "is a symlink; not followed"),
            )
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            match std::fs::symlink_metadata(dir) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(symlink("refusing its directory"))
                }
                Ok(_) => {}
                Err(_) => {
                    use std::os::unix::fs::DirBuilderExt;
                    crate::sys::with_umask(0o022, || {
                        std::fs::DirBuilder::new()
                            .recursive(true)
                            .mode(0o755)
                            .create(dir)
                    })
                    .map_err(|e| err("cannot create directory", e))?;
                }
            }
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => return Err(symlink("refusing")),
            Ok(m) if m.file_type().is_socket() => {
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    return Err(ControlError::InUse {
                        path: path.to_path_buf(),
                    });
                }
                std::fs::remove_file(path).map_err(|e| err("cannot remove stale socket", e))?;
            }
            Ok(_) => {
                return Err(err(
                    "refusing to replace",
                    io::Error::new(io::ErrorKind::AlreadyExists, "exists and is not a socket"),
                ))
            }
            Err(_) => {}
        }
        let listener = crate::sys::with_umask(0o777 & !SOCKET_MODE, || {
            std::os::unix::net::UnixListener::bind(path)
        })
        .map_err(|e| err("cannot bind", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| err("cannot set non-blocking", e))?;
        let mut s = ControlServer {
            listener: Some(listener),
            path: path.to_path_buf(),
            commands: BTreeMap::new(),
        };
        s.register_builtin();
        Ok(s)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds (or replaces) the handler for `cmd`, sent by the peers `access`
    /// allows.
    pub fn register(&mut self, cmd: &str, access: Access, handler: Arc<dyn Handler>) {
        self.commands.insert(cmd.to_string(), (access, handler));
    }

    fn register_builtin(&mut self) {
        self.register(
            "ping",
            Access::Read,
            Arc::new(|_req: Request| -> Reply {
                Box::pin(async { Ok(Value::String("pong".into()).into()) })
            }),
        );
    }

    /// Serves clients until `shutdown` completes. Must run inside the tokio
    /// runtime.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let std_listener = match self.listener.take() {
            Some(l) => l,
            None => return Ok(()),
        };
        let listener = tokio::net::UnixListener::from_std(std_listener)?;
        let commands = Arc::new(std::mem::take(&mut self.commands));
        let slots = slots::Slots::new();
        tokio::pin!(shutdown);
        let mut limited = crate::ratelimit::RateLimit::new(Duration::from_secs(10));
        let mut displaced = crate::ratelimit::RateLimit::new(Duration::from_secs(10));
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                res = listener.accept() => match res {
                    Ok((stream, _)) => {
                        let peer = stream.peer_cred().ok().map(|c| Peer {
                            uid: c.uid(),
                            gid: c.gid(),
                            pid: c.pid(),
                        });
                        let slot = match slots.admit(peer.is_some_and(|p| p.is_privileged())) {
                            slots::Admit::Free(s) => s,
                            slots::Admit::Displaced(s) => {
                                if displaced.hit().is_some() {
                                    tracing::info!(max = MAX_CLIENTS, "control socket: all slots taken; closing the client idle longest");
                                }
                                s
                            }
                            slots::Admit::Full => {
                                if limited.hit().is_some() {
                                    tracing::warn!(max = MAX_CLIENTS, "control socket: too many clients busy; closing new ones");
                                }
                                drop(stream);
                                continue;
                            }
                        };
                        let commands = commands.clone();
                        tokio::spawn(async move {
                            serve_client(stream, peer, slot, &commands).await;
                        });
                    }
                    Err(e) => {
                        if limited.hit().is_some() {
                            tracing::warn!(error = %e, "control socket: accept failed");
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
        Ok(())
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The commands `peer` may send, by name (the answer to `commands`).
fn allowed_names(
    commands: &BTreeMap<String, (Access, Arc<dyn Handler>)>,
    peer: Option<Peer>,
) -> Value {
    let mut names: Vec<&str> = commands
        .iter()
        .filter(|(_, (a, _))| a.allows(peer))
        .map(|(n, _)| n.as_str())
        .chain(["commands"])
        .collect();
    names.sort_unstable();
    Value::from(names)
}

/// Answers one client's requests, one per line, until it hangs up, sends
/// something unusable, is too slow, or is displaced by a newcomer while it
/// waits for its next request.
async fn serve_client(
    stream: UnixStream,
    peer: Option<Peer>,
    mut slot: slots::Slot,
    commands: &BTreeMap<String, (Access, Arc<dyn Handler>)>,
) {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    loop {
        let displaced = slot.waiting();
        let read = tokio::time::timeout(IO_TIMEOUT, read_line_limited(&mut r, MAX_REQUEST));
        let line = tokio::select! {
            _ = displaced => return,
            line = read => line,
        };
        if !slot.busy() {
            return;
        }
        let line = match line {
            Err(_) | Ok(Err(_)) | Ok(Ok(Line::Eof)) => return,
            Ok(Ok(Line::TooLong)) => {
                let resp = Err(format!("request longer than {MAX_REQUEST} bytes"));
                let _ = write_response(&mut w, resp).await;
                return;
            }
            Ok(Ok(Line::Complete(l))) => l,
        };
        let (resp, keep) = match parse_request(&line) {
            Err(e) => (Err(e), false),
            Ok(req) if req.cmd == "commands" => (Ok(allowed_names(commands, peer).into()), true),
            Ok(mut req) => match commands.get(&req.cmd) {
                None => (Err(format!("unknown command {:?}", req.cmd)), true),
                Some((access, _)) if !access.allows(peer) => (
                    Err(format!(
                        "permission denied: {:?} is only for root or the server's own user",
                        req.cmd
                    )),
                    true,
                ),
                Some((_, h)) => match tokio::time::timeout(CMD_TIMEOUT, {
                    req.peer = peer;
                    h.call(req)
                })
                .await
                {
                    Ok(r) => (r, true),
                    Err(_) => (Err("command timed out".to_string()), true),
                },
            },
        };
        if write_response(&mut w, resp).await.is_err() || !keep {
            return;
        }
    }
}

async fn write_response(
    w: &mut tokio::net::unix::OwnedWriteHalf,
    resp: Result<Answer, String>,
) -> io::Result<()> {
    let buf = answer_line(resp);
    match tokio::time::timeout(IO_TIMEOUT, w.write_all(&buf)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "client not reading",
        )),
    }
}

/// One request, or why it is none (the text of the error answer).
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    serde_json::from_slice::<Request>(line).map_err(|e| format!("bad request: {e}"))
}

/// What [`read_line_limited`] read.
pub enum Line {
    Complete(Vec<u8>),
    TooLong,
    Eof,
}

/// Reads up to and excluding the next `\n`, never buffering more than `max`
/// bytes. A final unterminated line before EOF counts as a line.
pub async fn read_line_limited<R: AsyncBufRead + Unpin>(r: &mut R, max: usize) -> io::Result<Line> {
    let mut out = Vec::new();
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(if out.is_empty() {
                Line::Eof
            } else {
                Line::Complete(out)
            });
        }
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            if out.len() + i > max {
                return Ok(Line::TooLong);
            }
            out.extend_from_slice(&buf[..i]);
            r.consume(i + 1);
            return Ok(Line::Complete(out));
        }
        let n = buf.len();
        if out.len() + n > max {
            return Ok(Line::TooLong);
        }
        out.extend_from_slice(buf);
        r.consume(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn line_reader_limits_and_splits() {
        let data: &[u8] = b"{\"cmd\":\"a\"}\nxyz";
        let mut r = BufReader::new(data);
        assert!(
            matches!(read_line_limited(&mut r, 100).await.unwrap(), Line::Complete(l) if l == b"{\"cmd\":\"a\"}")
        );
        assert!(
            matches!(read_line_limited(&mut r, 100).await.unwrap(), Line::Complete(l) if l == b"xyz")
        );
        assert!(matches!(
            read_line_limited(&mut r, 100).await.unwrap(),
            Line::Eof
        ));
        let long = vec![b'a'; 300];
        let mut r = BufReader::with_capacity(16, &long[..]);
        assert!(matches!(
            read_line_limited(&mut r, 100).await.unwrap(),
            Line::TooLong
        ));
    }

    #[test]
    fn request_keeps_extra_fields() {
        let r: Request = serde_json::from_str(r#"{"cmd":"x","fd":3}"#).unwrap();
        assert_eq!(r.cmd, "x");
        assert_eq!(r.args.get("fd"), Some(&Value::from(3)));
    }
}
