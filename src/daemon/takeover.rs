//! `tarpit serve --takeover`: the process glue around
//! [`handover`](crate::engine::socket::handover).
//!
//! The old process answers the control command `takeover` by handing its
//! listeners and held connections to the socket named in the request. The
//! new process binds that socket, asks, receives, confirms, and waits for
//! the old one to exit before it binds the control socket itself.

use crate::control::{self, ClientError, Handler, Reply, Request};
use crate::engine::socket::handover::{Inherited, Receiver};
use crate::engine::socket::Handle;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The control command name.
pub const CMD: &str = "takeover";

/// How long the whole handover may take.
const TIMEOUT: Duration = Duration::from_secs(20);

/// A server answered but the handover failed: it keeps everything, and we
/// must not start beside it.
#[derive(Debug, thiserror::Error)]
pub enum TakeoverError {
    #[error("takeover socket {}: {source}", path.display())]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("takeover failed: {asked} ({source})")]
    Refused {
        asked: ClientError,
        source: std::io::Error,
    },
    #[error("takeover failed: {0}")]
    Failed(std::io::Error),
}

/// The old process's handler: `{"cmd":"takeover","socket":PATH}`, a
/// privileged command (root or our own user only). PATH must be the one a
/// new process with the requester's pid binds beside `control` (nothing
/// else: any other socket would receive every held connection), and the
/// process listening there must be root or our user too (checked by the
/// handover itself).
pub fn handler(handle: Handle, control: PathBuf) -> Arc<dyn Handler> {
    Arc::new(move |req: Request| -> Reply {
        let handle = handle.clone();
        let control = control.clone();
        Box::pin(async move {
            let to = req
                .args
                .get("socket")
                .and_then(Value::as_str)
                .ok_or_else(|| "takeover needs a \"socket\" path".to_string())?;
            let pid = req
                .peer
                .and_then(|p| p.pid)
                .and_then(|p| u32::try_from(p).ok())
                .ok_or_else(|| "takeover: the requester's pid is unknown".to_string())?;
            let expected = side_path_for(&control, pid);
            if Path::new(to) != expected {
                return Err(format!(
                    "takeover: the socket must be {} (beside the control socket, named for the requesting process)",
                    expected.display()
                ));
            }
            let n = handle.handover(expected).await?;
            Ok(json!({ "conns": n, "pid": std::process::id() }).into())
        })
    })
}

/// The new process's side. `Ok(None)`: no running server answered, start
/// fresh. `Err`: a server answered but the handover failed (it keeps
/// everything; we must not start beside it).
pub fn receive(control_path: &Path) -> Result<Option<(Inherited, Asked)>, TakeoverError> {
    // Nobody listening at all: nothing to take over.
    if let Err(e) = std::os::unix::net::UnixStream::connect(control_path) {
        if matches!(
            e.kind(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
        ) {
            tracing::info!(control = %control_path.display(), "no running tarpit serve to take over; starting fresh");
            return Ok(None);
        }
    }
    let side = side_path(control_path);
    let rx = Receiver::bind(&side).map_err(|source| TakeoverError::Bind {
        path: side.clone(),
        source,
    })?;
    let mut req = Request::new(CMD);
    req.args
        .insert("socket".into(), Value::String(side.display().to_string()));
    let ctl = control_path.to_path_buf();
    let asker = std::thread::spawn(move || control::request(&ctl, &req, TIMEOUT));
    // The old process connects to us while its answer to the request is
    // still pending (it answers after our confirmation), so do not wait for
    // the answer unless the handover itself failed.
    match rx.receive(TIMEOUT) {
        Ok(inh) => Ok(Some((inh, Asked(asker)))),
        Err(e) => match asker.join() {
            Ok(Err(ClientError::NotRunning { .. })) => Ok(None),
            Ok(Err(asked)) => Err(TakeoverError::Refused { asked, source: e }),
            Ok(Ok(_)) | Err(_) => Err(TakeoverError::Failed(e)),
        },
    }
}

/// The thread waiting for the old process's answer to the takeover
/// request, which comes once the handover is confirmed.
pub struct Asked(std::thread::JoinHandle<Result<Value, ClientError>>);

impl Asked {
    /// Waits (bounded by the request's own timeout) for the thread to end,
    /// so that it is gone before the privilege drop, which must find the
    /// process single-threaded. Call after confirming.
    pub fn finish(self) {
        if let Ok(Err(e)) = self.0.join() {
            tracing::debug!(error = %e, "takeover request: no answer after the handover");
        }
    }
}

/// Where the new process listens for the handover: beside the control socket.
fn side_path(control_path: &Path) -> PathBuf {
    side_path_for(control_path, std::process::id())
}

/// The handover socket of process `pid`: `<control>.takeover.<pid>`.
pub fn side_path_for(control_path: &Path, pid: u32) -> PathBuf {
    let mut name = control_path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".takeover.{pid}"));
    control_path.with_file_name(name)
}

/// Waits until process `pid` has exited (at most `timeout`).
pub fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if !Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// Starts a fresh copy of this program with the same arguments plus
/// `--takeover`, which takes everything over from us. Used on SIGUSR2
/// (`systemctl reload tarpit`): after a package upgrade the new binary at
/// the same path takes over, so an upgrade releases nobody. Prefers the path
/// we were started as (`argv[0]`, the upgraded file) over `/proc/self/exe`
/// (which still points at the replaced binary).
pub fn spawn_successor() -> std::io::Result<u32> {
    let mut args = std::env::args_os();
    let argv0 = args.next().map(PathBuf::from);
    let exe = match argv0 {
        Some(p) if p.is_absolute() && p.is_file() => p,
        _ => std::env::current_exe()?,
    };
    let mut rest: Vec<std::ffi::OsString> = args.collect();
    if !rest.iter().any(|a| a == "--takeover") {
        rest.push("--takeover".into());
    }
    let child = std::process::Command::new(exe)
        .args(rest)
        .stdin(std::process::Stdio::null())
        .spawn()?;
    Ok(child.id())
}
