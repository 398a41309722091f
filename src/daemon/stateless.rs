//! `tarpit serve` with the stateless engine: the statistics, the engine's
//! two sockets, the privilege drop once they are open, then the engine on
//! its runtime with signals (SIGUSR1 rotates the cookie key) and systemd.

use super::{stats, Error};
use crate::config::{Privileges, StatsConfig};
use crate::engine::stateless::{self, StatelessOptions, StatelessServer};
use crate::systemd;

/// Runs the stateless engine until SIGTERM/SIGINT.
pub fn run(
    opts: StatelessOptions,
    stats_cfg: &StatsConfig,
    privileges: &Privileges,
) -> Result<(), Error> {
    // An explicit key file that cannot be used is a configuration error,
    // found before anything starts.
    if let Some(p) = &opts.key_file {
        stateless::keyfile::read(p)?;
    }
    // Its syn_delay is its own: chains a socket-engine run wrote for
    // policies would only linger.
    super::policy_rules::clean_stale(&crate::firewall::Firewall::new(
        crate::firewall::NftConfig::default(),
    ));
    let label = stateless::listener_label(opts.nflog_group);
    let stats = stats::prepare(stats_cfg, &[label])?;
    super::runtime()?.block_on(async move {
        let server = StatelessServer::bind(&opts, stats.observers()).map_err(Error::Engine)?;
        // Both sockets are open: root is no longer needed (the runtime has
        // one thread, this one; the history writer starts after the drop).
        super::drop_privileges(privileges)?;
        stats.start_threads()?;
        let handle = server.handle();
        let stats = stats.start_with(handle.clone(), Some(stateless::control_extras()), None);
        tracing::info!(
            nflog_group = opts.nflog_group,
            flow_cap = opts.flow_cap,
            key_rotation = ?opts.key_rotation,
            "serving (stateless engine)"
        );
        systemd::notify_ready(&systemd::status_line(0, 0, 0.0, 0.0));
        if std::env::var_os("NOTIFY_SOCKET").is_some() {
            tokio::spawn(super::report_status(handle.clone()));
        }
        let h = handle.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
                return;
            };
            while usr1.recv().await.is_some() {
                h.rotate_key().await;
            }
        });
        tokio::spawn(async move {
            super::wait_for_signal().await;
            tracing::info!("signal received; stopping");
            systemd::notify_stopping("stopping");
            handle.shutdown();
        });
        let (totals, counters) = server.run().await;
        stats.finish().await;
        tracing::info!(
            trapped = totals.trapped,
            ended = totals.ended,
            attacker_secs = totals.engaged_secs,
            held_secs = totals.held_secs,
            packets = counters.packets,
            syn_acks = counters.syn_acks,
            acks = counters.acks,
            send_errors = counters.send_errors,
            overruns = counters.overruns,
            "stopped"
        );
        Ok(())
    })
}
