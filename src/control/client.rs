//! The client side of the control socket, blocking: the CLI asks one
//! question and waits for one answer.

use super::{Request, Response};
use serde_json::Value;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest answer accepted (a snapshot of ~100,000 held connections).
pub const MAX_RESPONSE: u64 = 256 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nobody answers at the socket: the server is not running.
    #[error("tarpit serve is not running (no control socket answers at {path}: {source})")]
    NotRunning { path: PathBuf, source: io::Error },
    #[error("control socket {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("control socket {path}: unreadable answer: {message}")]
    Protocol { path: PathBuf, message: String },
    /// The server understood and said no.
    #[error("tarpit serve answered: {0}")]
    Server(String),
}

/// Sends one request and returns the `data` of its answer.
pub fn request(path: &Path, req: &Request, timeout: Duration) -> Result<Value, ClientError> {
    let io_err = |source| ClientError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut s = UnixStream::connect(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => ClientError::NotRunning {
            path: path.to_path_buf(),
            source,
        },
        _ => ClientError::Io {
            path: path.to_path_buf(),
            source,
        },
    })?;
    s.set_read_timeout(Some(timeout)).map_err(io_err)?;
    s.set_write_timeout(Some(timeout)).map_err(io_err)?;
    let mut line = serde_json::to_vec(req).map_err(|e| io_err(io::Error::other(e)))?;
    line.push(b'\n');
    s.write_all(&line).map_err(io_err)?;
    let mut r = BufReader::new(s.take(MAX_RESPONSE));
    let mut buf = Vec::new();
    r.read_until(b'\n', &mut buf).map_err(io_err)?;
    if buf.is_empty() {
        return Err(ClientError::Protocol {
            path: path.to_path_buf(),
            message: "connection closed without an answer".into(),
        });
    }
    let resp: Response = serde_json::from_slice(&buf).map_err(|e| ClientError::Protocol {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if resp.ok {
        Ok(resp.data.unwrap_or(Value::Null))
    } else {
        Err(ClientError::Server(
            resp.error.unwrap_or_else(|| "unspecified error".into()),
        ))
    }
}
