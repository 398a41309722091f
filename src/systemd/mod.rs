//! Living under systemd: readiness and status notifications (`Type=notify`)
//! and listeners handed over by socket activation (`LISTEN_FDS`).
//!
//! Everything here is a no-op outside systemd: without `NOTIFY_SOCKET` the
//! notifications go nowhere, without `LISTEN_PID`/`LISTEN_FDS` naming this
//! process there are no listeners to take.

use crate::engine::socket::{self as listener, BoundListener};
use sd_notify::NotifyState;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::time::Duration;

/// How often `STATUS=` is refreshed with the held count.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(5);

/// Tells the service manager that startup is over (`READY=1`), with a first
/// status line. Errors are logged, never fatal: a tarpit that cannot talk to
/// systemd still traps.
pub fn notify_ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells the service manager that this process is now the service's main
/// process (after a takeover; needs `NotifyAccess=all`).
pub fn notify_main_pid() {
    send(&[NotifyState::MainPid(std::process::id())]);
}

/// Replaces the one-line status `systemctl status` shows.
pub fn notify_status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// Tells the service manager that shutdown has begun (`STOPPING=1`).
pub fn notify_stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

fn send(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// The status line for a server holding `held` connections.
/// `attacker_hours` is engaged time (what attackers lost), `held_hours` what
/// holding cost us.
pub fn status_line(held: u64, trapped: u64, attacker_hours: f64, held_hours: f64) -> String {
    format!("holding {held} connections; {trapped} trapped since start, {attacker_hours:.1} attacker-hours wasted, {held_hours:.1} hours held")
}

/// Why an inherited descriptor cannot serve as a listener.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("socket activation: {0}")]
    Env(io::Error),
    #[error("socket activation: descriptor {fd}: {reason}")]
    Bad { fd: i32, reason: String },
}

/// The listeners systemd passed (LISTEN_FDS / LISTEN_PID naming this
/// process), checked and labelled by address, or `None` when this process
/// was not socket-activated.
///
/// Each must be a listening TCP socket. A receive buffer larger than the
/// kernel's minimum (a socket unit without `ReceiveBuffer=1`) would open a
/// wide window in every SYN/ACK: it is lowered here, with a warning. That
/// still applies to every connection accepted from then on, because an
/// accepted socket takes its buffer from the listener when the SYN arrives.
pub fn activated_listeners() -> Result<Option<Vec<BoundListener>>, ActivationError> {
    let fds: Vec<i32> = sd_notify::listen_fds()
        .map_err(ActivationError::Env)?
        .collect();
    if fds.is_empty() {
        return Ok(None);
    }
    let owned =
        crate::sys::take_inherited_fds(fds.iter().copied()).map_err(ActivationError::Env)?;
    let floor = min_rcvbuf();
    let mut out = Vec::with_capacity(owned.len());
    for (fd, o) in fds.into_iter().zip(owned) {
        let sock = Socket::from(o);
        let bad = |reason: String| ActivationError::Bad { fd, reason };
        let (addr, mut rcvbuf) =
            listener::inspect_listener(&sock).map_err(|e| bad(e.to_string()))?;
        if sock.protocol().ok().flatten() != Some(Protocol::TCP) {
            return Err(bad(format!("{addr} is not a TCP socket")));
        }
        if !sock.is_listener().map_err(|e| bad(e.to_string()))? {
            return Err(bad(format!(
                "{addr} is not listening (use ListenStream= with Accept=no)"
            )));
        }
        if let Some(floor) = floor {
            if rcvbuf > floor {
                tracing::warn!(
                    listener = %addr,
                    rcvbuf,
                    want = floor,
                    "inherited listener has a large receive buffer (set ReceiveBuffer=1 in the socket unit); lowering it"
                );
                sock.set_recv_buffer_size(1)
                    .map_err(|e| bad(format!("cannot lower SO_RCVBUF: {e}")))?;
                rcvbuf = sock.recv_buffer_size().unwrap_or(rcvbuf);
            }
        }
        sock.set_nonblocking(true).map_err(|e| bad(e.to_string()))?;
        tracing::info!(listener = %addr, fd, rcvbuf, "socket activation: listener taken over");
        out.push(BoundListener {
            sock,
            label: addr.to_string(),
        });
    }
    Ok(Some(out))
}

/// The smallest receive buffer the kernel grants (what `SO_RCVBUF = 1`
/// becomes), measured on a throwaway socket: 2304 bytes on 64-bit Linux
/// today, but it depends on the kernel's `sk_buff` size.
fn min_rcvbuf() -> Option<usize> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).ok()?;
    s.set_recv_buffer_size(1).ok()?;
    s.recv_buffer_size().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimum_receive_buffer_is_small() {
        let m = min_rcvbuf().unwrap();
        assert!(m > 0 && m <= 8192, "{m}");
    }

    #[test]
    fn not_activated_without_listen_pid() {
        // The test process was not started by systemd with LISTEN_PID = us.
        if std::env::var_os("LISTEN_PID").is_none() {
            assert!(activated_listeners().unwrap().is_none());
        }
    }

    #[test]
    fn status_line_names_the_held_count() {
        assert_eq!(
            status_line(3, 10, 1.5, 4.0),
            "holding 3 connections; 10 trapped since start, 1.5 attacker-hours wasted, 4.0 hours held"
        );
    }
}
