//! `tarpit serve` with the socket engine: the open-file limit, the
//! listeners (taken over, socket-activated or bound), the statistics, the
//! privilege drop, then the engine on its runtime with signals, systemd
//! status and re-exec on SIGUSR2.

use super::{stats, takeover, Error};
use crate::config::{Privileges, SocketConfig, StatsConfig};
use crate::engine::socket::handover::InheritedConn;
use crate::engine::socket::{self as engine, BoundListener, ServeOptions, Server};
use crate::{sys, systemd};
use std::time::Duration;

/// Runs the socket engine until SIGTERM/SIGINT or a handover.
pub fn run(
    cfg: SocketConfig,
    stats_cfg: &StatsConfig,
    privileges: &Privileges,
    takeover: bool,
) -> Result<(), Error> {
    let opts = cfg.options;
    let nofile = sys::raise_nofile_limit().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read RLIMIT_NOFILE; assuming 1024");
        1024
    });
    let mem_total = sys::mem_total_bytes()
        .map_err(|e| tracing::warn!(error = %e, "cannot read the memory size; connection budget from descriptors only"))
        .ok();
    let max_conns = engine::effective_max_conns(&opts, nofile, mem_total);

    // Listeners systemd bound for us (tarpit.socket) win over the addresses
    // in the flags or the file.
    let activated = systemd::activated_listeners()?;
    let (bound, inherited_conns, took_over) = if takeover {
        let ctl = stats_cfg.control.as_deref();
        match takeover::receive(ctl.ok_or(Error::TakeoverWithoutControl)?)? {
            Some((inh, asked)) => (
                inh.listeners,
                take_over(inh.conns, inh.old_pid, inh.confirm, asked)?,
                true,
            ),
            None => (
                listeners(&opts, cfg.defaults_used, activated)?,
                Vec::new(),
                false,
            ),
        }
    } else {
        (
            listeners(&opts, cfg.defaults_used, activated)?,
            Vec::new(),
            false,
        )
    };
    for b in &bound {
        let rcvbuf = b.sock.recv_buffer_size().unwrap_or(0);
        tracing::info!(listener = %b.label, rcvbuf, "listening");
    }
    let labels: Vec<String> = bound.iter().map(|b| b.label.clone()).collect();
    let rules = super::policy_rules::at_start(&opts.policies, &labels)?;
    let syn_log = syn_log(&opts);
    let stats = stats::prepare(stats_cfg, &labels)?;
    // Root is no longer needed; no thread has started yet.
    super::drop_privileges(privileges)?;
    stats.start_threads()?;
    let syn_log = syn_log.and_then(|(log, sock)| match log.spawn_reader(sock) {
        Ok(()) => Some(log),
        Err(e) => {
            tracing::warn!(error = %e, "syn_delay: cannot start the SYN log reader; handshake waits go uncounted");
            None
        }
    });

    let can_hand_over = stats_cfg.control.is_some();
    super::runtime()?.block_on(async move {
        let server = Server::inherit(opts.clone(), bound, inherited_conns, stats.observers(), max_conns)
            .map_err(Error::Engine)?;
        let server = match syn_log {
            Some(l) => server.with_syn_log(l),
            None => server,
        };
        let handle = server.handle();
        let stats = stats.start(handle.clone());
        tracing::info!(pid = std::process::id(), max_conns, per_ip = opts.per_ip, lifetime = ?opts.lifetime, keepalive = ?opts.keepalive, "serving");
        if took_over {
            systemd::notify_main_pid();
        }
        systemd::notify_ready(&systemd::status_line(0, 0, 0.0, 0.0));
        if can_hand_over {
            tokio::spawn(reexec_on_sigusr2());
        }
        if std::env::var_os("NOTIFY_SOCKET").is_some() {
            tokio::spawn(super::report_status(handle.clone()));
        }
        tokio::spawn(async move {
            super::wait_for_signal().await;
            tracing::info!("signal received; releasing all connections");
            systemd::notify_stopping("releasing all connections");
            handle.shutdown();
        });
        let totals = server.run().await;
        rules.at_exit(totals.handed_off);
        stats.finish().await;
        if totals.handed_over > 0 {
            tracing::info!(conns = totals.handed_over, "handed over to the new process; exiting");
        }
        tracing::info!(trapped = totals.trapped, ended = totals.ended, attacker_secs = totals.engaged_secs,
            held_secs = totals.held_secs, "stopped");
        Ok(())
    })
}

/// With a syn_delay policy: the nflog group its rules log first SYNs to,
/// bound while still privileged (see `engine::socket::synlog`). Not fatal:
/// without it (the group taken by another process) the delays still work,
/// only their seconds are not counted.
fn syn_log(
    opts: &ServeOptions,
) -> Option<(engine::synlog::SynLog, crate::engine::nflog::NflogSocket)> {
    use crate::engine::nflog::{Batching, NflogSocket};
    let longest = opts.policies.all().filter_map(|p| p.syn_delay).max()?;
    let group = crate::firewall::policy::SYN_LOG_GROUP;
    match NflogSocket::bind(group, Batching::default(), 1 << 20) {
        Ok(sock) => Some((engine::synlog::SynLog::new(longest), sock)),
        Err(e) => {
            tracing::warn!(group, error = %e, "syn_delay: cannot bind the SYN log group; handshake waits go uncounted");
            None
        }
    }
}

/// Confirms a received handover and waits for the old process to exit.
fn take_over(
    conns: Vec<InheritedConn>,
    old_pid: u32,
    confirm: engine::handover::Confirmer,
    asked: takeover::Asked,
) -> Result<Vec<InheritedConn>, Error> {
    confirm.confirm().map_err(Error::Confirm)?;
    asked.finish();
    tracing::info!(
        conns = conns.len(),
        old_pid,
        "took over listeners and connections"
    );
    if !takeover::wait_gone(old_pid, Duration::from_secs(10)) {
        tracing::warn!(old_pid, "old process still running after the takeover");
    }
    Ok(conns)
}

/// The socket-activated listeners, else each configured address bound; with
/// the built-in defaults a host without IPv6 still serves IPv4.
fn listeners(
    opts: &ServeOptions,
    defaults_used: bool,
    activated: Option<Vec<BoundListener>>,
) -> Result<Vec<BoundListener>, Error> {
    if let Some(ls) = activated {
        if !defaults_used {
            tracing::warn!("socket-activated: ignoring the configured listen addresses");
        }
        return Ok(ls);
    }
    let mut bound = Vec::new();
    for addr in &opts.listen {
        let one = ServeOptions {
            listen: vec![*addr],
            ..opts.clone()
        };
        match engine::bind_all(&one) {
            Ok(mut b) => bound.append(&mut b),
            Err((a, e)) if defaults_used && a.is_ipv6() && bound.len() == 1 => {
                tracing::warn!(address = %a, error = %e, "IPv6 unavailable; serving IPv4 only");
            }
            Err((addr, source)) => return Err(Error::Listen { addr, source }),
        }
    }
    Ok(bound)
}

/// SIGUSR2 (`systemctl reload`): start a fresh copy of ourselves that takes
/// everything over; if it fails, we simply keep serving.
async fn reexec_on_sigusr2() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut usr2) = signal(SignalKind::user_defined2()) else {
        return;
    };
    while usr2.recv().await.is_some() {
        match takeover::spawn_successor() {
            Ok(pid) => tracing::info!(successor = pid, "SIGUSR2: started a successor to take over"),
            Err(e) => {
                tracing::error!(error = %e, "SIGUSR2: cannot start a successor; keeping everything")
            }
        }
    }
}
