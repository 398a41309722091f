//! `tarpit serve`: accept every connection, never read, hold it 12–24 minutes.
//!
//! The public surface is [`ServeOptions`] (what to do), [`Server`] (bound
//! listeners, ready to run), [`Handle`] (ask a running server for a live
//! snapshot) and [`Observer`] (be told about every trapped and ended
//! connection — the statistics side plugs in here).

pub mod bait;
mod bind;
mod engine;
pub mod handover;
pub mod synlog;
pub mod table;

use crate::engine::{Inbox, Observer, Snapshot, Totals};
use socket2::Socket;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

pub use bind::{inspect as inspect_listener, listen as bind_listener};

/// Descriptors kept free for everything that is not a held connection
/// (listeners, epoll, log files, databases, the control socket): 1/16 of
/// the limit, between 16 and 64.
pub fn fd_reserve(nofile: u64) -> u64 {
    (nofile / 16).clamp(16, 64)
}

/// Default cap per IPv6 /48: 16 full /64s at the default `per_ip`.
pub const DEFAULT_PER_IPV6_48: usize = 512;

/// Everything `tarpit serve` needs to know, already validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeOptions {
    pub listen: Vec<SocketAddr>,
    /// Lifetime of a held connection, drawn uniformly from this range.
    pub lifetime: (Duration, Duration),
    /// TCP_KEEPIDLE and TCP_KEEPINTVL, each drawn uniformly from this range.
    pub keepalive: (Duration, Duration),
    /// TCP_KEEPCNT: unanswered probes before the peer counts as gone.
    pub keepalive_count: u32,
    /// After the peer's FIN, TCP_KEEPIDLE becomes this, so the next probe
    /// comes just after the attacker kernel dropped its FIN-WAIT-2 socket
    /// (60 s on Linux) and frees ours about then.
    pub fin_wait: Duration,
    /// Global cap; `None` = the smaller of RLIMIT_NOFILE minus
    /// [`fd_reserve`] and [`memory_budget`].
    pub max_conns: Option<usize>,
    /// Per-peer cap (IPv4 address or IPv6 prefix); 0 = unlimited.
    pub per_ip: usize,
    /// IPv6 peers are grouped by this prefix length for `per_ip` (16–64).
    pub ipv6_prefix: u8,
    /// Cap per IPv6 /48 (a site), whatever its prefixes; 0 = unlimited.
    /// Without it one /48 is 65,536 /64s of `per_ip` each: it fills any
    /// budget and evicts every other trapped host.
    pub per_ipv6_48: usize,
    pub backlog: u32,
    /// What each original destination port meets (default: silent).
    pub policies: crate::engine::policy::Policies,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            listen: vec![
                "0.0.0.0:2222".parse().expect("literal"),
                "[::]:2222".parse().expect("literal"),
            ],
            lifetime: (Duration::from_secs(12 * 60), Duration::from_secs(24 * 60)),
            keepalive: (Duration::from_secs(60), Duration::from_secs(240)),
            keepalive_count: 3,
            fin_wait: Duration::from_secs(65),
            max_conns: None,
            per_ip: 32,
            ipv6_prefix: 64,
            per_ipv6_48: DEFAULT_PER_IPV6_48,
            backlog: 4096,
            policies: Default::default(),
        }
    }
}

/// What a [`Handle`] asks of the engine loop.
pub enum Command {
    Snapshot(crate::engine::Page, oneshot::Sender<Snapshot>),
    Totals(oneshot::Sender<Totals>),
    /// Hand everything to the process listening at the path; answers with
    /// the number of connections handed over once it confirmed.
    Handover(std::path::PathBuf, oneshot::Sender<Result<usize, String>>),
}

impl crate::engine::Commands for Command {
    fn snapshot(page: crate::engine::Page, reply: oneshot::Sender<Snapshot>) -> Self {
        Command::Snapshot(page, reply)
    }
    fn totals(reply: oneshot::Sender<Totals>) -> Self {
        Command::Totals(reply)
    }
}

/// Asks a running server for information (see [`crate::engine::Handle`]).
/// Cheap to clone.
pub type Handle = crate::engine::Handle<Command>;

impl Handle {
    /// Hands listeners and held connections to the new process whose
    /// [`handover::Receiver`] is bound at `to`. On success the server stops
    /// without releasing anything; on failure it carries on as before.
    pub async fn handover(&self, to: std::path::PathBuf) -> Result<usize, String> {
        self.ask(|tx| Command::Handover(to, tx))
            .await
            .ok_or_else(|| "server stopped".to_string())?
    }
}

/// A bound listener with its label (its address as the user gave it).
pub struct BoundListener {
    pub sock: Socket,
    pub label: String,
}

/// Binds every address in `opts.listen`. The error names the address.
pub fn bind_all(opts: &ServeOptions) -> Result<Vec<BoundListener>, (SocketAddr, io::Error)> {
    opts.listen
        .iter()
        .map(|&a| {
            let sock = bind::listen(a, opts.backlog).map_err(|e| (a, e))?;
            // Label by the bound address, so `:0` shows the port it got.
            let label = bind::inspect(&sock)
                .map(|(b, _)| b)
                .unwrap_or(a)
                .to_string();
            Ok(BoundListener { sock, label })
        })
        .collect()
}

/// What one held connection may cost the kernel, bytes: the socket, its
/// `tcp_sock`, inode, file and epoll entry (~3 KiB) plus the few skbs a bot's
/// banner and keepalive answers leave queued (we never read them).
pub const CONN_KERNEL_BYTES: u64 = 8 * 1024;

/// Held connections may take this share (1/N) of the machine's memory by
/// default: the rest stays for the system the tarpit protects.
pub const MEMORY_SHARE: u64 = 4;

/// The default cap from memory: a quarter of `MemTotal` at
/// [`CONN_KERNEL_BYTES`] each (1 GiB → 32,768; 16 GiB → 524,288), at least
/// 1,024. Without it the cap is the descriptor limit, ~1M under the unit,
/// which a flood of one IPv6 /48 fills with ~8 GB of kernel memory.
pub fn memory_budget(mem_total: u64) -> u64 {
    (mem_total / MEMORY_SHARE / CONN_KERNEL_BYTES).max(1024)
}

/// The global cap actually in force: the configured one, or the smaller of
/// what the descriptor limit and the memory allow (`mem_total` unknown:
/// descriptors only).
pub fn effective_max_conns(opts: &ServeOptions, nofile: u64, mem_total: Option<u64>) -> usize {
    opts.max_conns.unwrap_or_else(|| {
        let fds = nofile.saturating_sub(fd_reserve(nofile)).max(1);
        let mem = mem_total.map_or(u64::MAX, memory_budget);
        fds.min(mem) as usize
    })
}

/// Bound listeners plus everything needed to run the engine.
pub struct Server {
    engine: engine::Engine,
    inbox: Inbox<Command>,
    handle: Handle,
}

impl Server {
    /// Must be called inside a tokio runtime (registers the listeners).
    pub fn new(
        opts: ServeOptions,
        listeners: Vec<BoundListener>,
        observers: Vec<Arc<dyn Observer>>,
        max_conns: usize,
    ) -> io::Result<Self> {
        let ls = listeners
            .into_iter()
            .map(|b| {
                b.sock.set_nonblocking(true)?;
                let port = bind::inspect(&b.sock).map(|(a, _)| a.port()).unwrap_or(0);
                Ok(engine::Listener {
                    sock: crate::sys::register_async(b.sock)?,
                    label: b.label,
                    port,
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        let engine = engine::Engine::new(opts, ls, observers, max_conns)?;
        let (handle, inbox) = crate::engine::channel();
        Ok(Server {
            engine,
            inbox,
            handle,
        })
    }

    /// Like [`Server::new`], continuing the connections a previous process
    /// handed over (see [`handover`]): their start times and remaining
    /// lifetimes carry over.
    pub fn inherit(
        opts: ServeOptions,
        listeners: Vec<BoundListener>,
        conns: Vec<handover::InheritedConn>,
        observers: Vec<Arc<dyn Observer>>,
        max_conns: usize,
    ) -> io::Result<Self> {
        let mut s = Server::new(opts, listeners, observers, max_conns)?;
        s.engine.import(conns);
        Ok(s)
    }

    /// Counts delayed clients' SYN retransmissions in their records (see
    /// [`synlog`]).
    pub fn with_syn_log(mut self, log: synlog::SynLog) -> Self {
        self.engine.set_syn_log(log);
        self
    }

    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Serves until [`Handle::shutdown`], then releases every connection
    /// (emitting its record) and returns the totals.
    pub async fn run(self) -> Totals {
        let Server {
            engine,
            inbox,
            handle,
        } = self;
        let totals = engine.run(inbox.commands, inbox.shutdown).await;
        drop(handle);
        totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn default_budget_is_bounded_by_memory_as_well_as_descriptors() {
        let d = ServeOptions::default();
        // The unit's 1M descriptors on a 1 GiB machine: memory decides.
        assert_eq!(effective_max_conns(&d, 1 << 20, Some(GIB)), 32_768);
        assert_eq!(effective_max_conns(&d, 1 << 20, Some(16 * GIB)), 524_288);
        // Few descriptors on a big machine: descriptors decide.
        assert_eq!(effective_max_conns(&d, 1024, Some(64 * GIB)), 1024 - 64);
        // Unknown memory: descriptors only; a tiny machine keeps a floor.
        assert_eq!(effective_max_conns(&d, 4096, None), 4096 - 64);
        assert_eq!(memory_budget(64 << 20), 2048);
        assert_eq!(memory_budget(16 << 20), 1024);
        // An explicit cap is the operator's.
        let o = ServeOptions {
            max_conns: Some(2_000_000),
            ..d
        };
        assert_eq!(effective_max_conns(&o, 1 << 20, Some(GIB)), 2_000_000);
    }
}
