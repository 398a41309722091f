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
//! clients are served at once (the rest are closed at accept).

pub mod client;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::Semaphore;

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
/// Clients served at once; more are closed right after accept.
pub const MAX_CLIENTS: usize = 32;

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

impl Peer {
    /// Root, or the user this server runs as: the only peers allowed
    /// commands that change the server (see [`ControlServer::register_privileged`]).
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

impl Response {
    fn from_result(r: Result<Value, String>) -> Self {
        match r {
            Ok(v) => Response {
                ok: true,
                data: Some(v),
                error: None,
            },
            Err(e) => Response::error(e),
        }
    }

    fn error(e: impl Into<String>) -> Self {
        Response {
            ok: false,
            data: None,
            error: Some(e.into()),
        }
    }
}

/// What a command handler returns: the `data` of the answer, or an error text.
pub type Reply = Pin<Box<dyn Future<Output = Result<Value, String>> + Send>>;

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
    commands: BTreeMap<String, Arc<dyn Handler>>,
    /// Commands only root or our own user may send.
    privileged: std::collections::BTreeSet<String>,
}

impl ControlServer {
    /// Binds `path` (creating its directory, mode 0755, if missing) with mode
    /// 0660. A stale socket left by a dead server is replaced; one that still
    /// answers is [`ControlError::InUse`]. Call before dropping privileges.
    pub fn bind(path: &Path) -> Result<Self, ControlError> {
        let err = |what, source| ControlError::Io {
            path: path.to_path_buf(),
            what,
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::create_dir_all(dir).map_err(|e| err("cannot create directory", e))?;
                let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
            }
        }
        match std::fs::symlink_metadata(path) {
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
        let listener =
            std::os::unix::net::UnixListener::bind(path).map_err(|e| err("cannot bind", e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
            .map_err(|e| err("cannot set mode 0660", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| err("cannot set non-blocking", e))?;
        let mut s = ControlServer {
            listener: Some(listener),
            path: path.to_path_buf(),
            commands: BTreeMap::new(),
            privileged: Default::default(),
        };
        s.register_builtin();
        Ok(s)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds (or replaces) the handler for `cmd`, a read-only command:
    /// anyone who may connect (file mode 0660) may send it.
    pub fn register(&mut self, cmd: &str, handler: Arc<dyn Handler>) {
        self.privileged.remove(cmd);
        self.commands.insert(cmd.to_string(), handler);
    }

    /// Adds a command that changes the server (takeover): answered only
    /// for root or the user the server runs as, by SO_PEERCRED; the socket
    /// group that may read statistics may not send it.
    pub fn register_privileged(&mut self, cmd: &str, handler: Arc<dyn Handler>) {
        self.commands.insert(cmd.to_string(), handler);
        self.privileged.insert(cmd.to_string());
    }

    fn register_builtin(&mut self) {
        self.register(
            "ping",
            Arc::new(|_req: Request| -> Reply {
                Box::pin(async { Ok(Value::String("pong".into())) })
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
        let mut names: Vec<String> = self.commands.keys().cloned().collect();
        names.push("commands".into());
        names.sort();
        let names = Value::from(names);
        let commands = Arc::new(std::mem::take(&mut self.commands));
        let privileged = Arc::new(std::mem::take(&mut self.privileged));
        let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
        tokio::pin!(shutdown);
        let mut limited = crate::ratelimit::RateLimit::new(Duration::from_secs(10));
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                res = listener.accept() => match res {
                    Ok((stream, _)) => {
                        let Ok(permit) = slots.clone().try_acquire_owned() else {
                            if limited.hit().is_some() {
                                tracing::warn!(max = MAX_CLIENTS, "control socket: too many clients; closing new ones");
                            }
                            drop(stream);
                            continue;
                        };
                        let commands = commands.clone();
                        let privileged = privileged.clone();
                        let names = names.clone();
                        tokio::spawn(async move {
                            serve_client(stream, &commands, &privileged, &names).await;
                            drop(permit);
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

/// Answers one client's requests, one per line, until it hangs up, sends
/// something unusable, or is too slow.
async fn serve_client(
    stream: UnixStream,
    commands: &BTreeMap<String, Arc<dyn Handler>>,
    privileged: &std::collections::BTreeSet<String>,
    names: &Value,
) {
    let peer = stream.peer_cred().ok().map(|c| Peer {
        uid: c.uid(),
        gid: c.gid(),
        pid: c.pid(),
    });
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    loop {
        let line =
            match tokio::time::timeout(IO_TIMEOUT, read_line_limited(&mut r, MAX_REQUEST)).await {
                Err(_) | Ok(Err(_)) | Ok(Ok(Line::Eof)) => return,
                Ok(Ok(Line::TooLong)) => {
                    let resp = Response::error(format!("request longer than {MAX_REQUEST} bytes"));
                    let _ = write_response(&mut w, &resp).await;
                    return;
                }
                Ok(Ok(Line::Complete(l))) => l,
            };
        let (resp, keep) = match parse_request(&line) {
            Err(e) => (Response::error(e), false),
            Ok(req) if req.cmd == "commands" => (Response::from_result(Ok(names.clone())), true),
            Ok(req)
                if privileged.contains(&req.cmd) && !peer.is_some_and(|p| p.is_privileged()) =>
            {
                (
                    Response::error(format!(
                        "permission denied: {:?} is only for root or the server's own user",
                        req.cmd
                    )),
                    true,
                )
            }
            Ok(mut req) => match commands.get(&req.cmd) {
                None => (
                    Response::error(format!("unknown command {:?}", req.cmd)),
                    true,
                ),
                Some(h) => match tokio::time::timeout(CMD_TIMEOUT, {
                    req.peer = peer;
                    h.call(req)
                })
                .await
                {
                    Ok(r) => (Response::from_result(r), true),
                    Err(_) => (Response::error("command timed out"), true),
                },
            },
        };
        if write_response(&mut w, &resp).await.is_err() || !keep {
            return;
        }
    }
}

async fn write_response(
    w: &mut tokio::net::unix::OwnedWriteHalf,
    resp: &Response,
) -> io::Result<()> {
    let mut buf = serde_json::to_vec(resp).map_err(io::Error::other)?;
    buf.push(b'\n');
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
