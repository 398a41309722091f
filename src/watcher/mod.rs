//! `tarpit watch`: follows logs, counts offences per host in a sliding
//! window, and traps repeat offenders by adding them to nftables sets.
//!
//! * [`settings`] — `[watch]` / `[[watch.jail]]` validated;
//! * [`filter`] — fail2ban-style `failregex` with `<HOST>`;
//! * [`timestamp`] — the time a line says it was written;
//! * [`window`] — when hits make a ban and for how long;
//! * [`host`] — the unit of counting (IPv4 address, IPv6 prefix) and `ignoreip`;
//! * [`state`] — SQLite: bans, hits, log positions;
//! * [`crowdsec`] — the fleet: CrowdSec decisions in (bouncer), our bans out (machine).

pub mod crowdsec;
pub mod engine;
pub mod external;
pub mod filter;
pub mod follow;
pub mod host;
pub mod metrics;
pub mod nft;
pub mod settings;
pub mod state;
pub mod timestamp;
pub mod window;

pub use engine::{Enforcer, WatchStats, Watcher};
pub use host::{Cidr, IgnoreList, Target};
pub use settings::{Jail, WatchSettings};
pub use state::{BanRow, State, StateError};
