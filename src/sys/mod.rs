//! The one place with `unsafe`: thin wrappers over the Linux socket and
//! process calls that `socket2` and `std` do not cover.
//!
//! Every function here takes or returns plain Rust types, checks the kernel's
//! return value once, and turns failures into `io::Error`. Callers never see
//! a raw pointer. Each `unsafe` block carries a `// SAFETY:` line saying why
//! the call is sound.
//!
//! One file per family of calls; the flat names below are re-exported so
//! callers write `sys::tcp_info`, `sys::Epoll`, ...

mod epoll;
mod fd;
pub mod fdpass;
pub mod fdtable;
mod ifaddrs;
mod inotify;
mod lock;
pub mod netlink;
mod netns;
pub mod packet;
pub mod probe;
mod process;
mod tcp;

pub use epoll::{ev, Epoll};
pub use fd::{close, register_async, take_inherited_fds, StableFd};
pub use ifaddrs::local_addresses;
pub use inotify::Inotify;
pub use lock::try_lock_exclusive;
pub use netns::{enter_netns, exec_in_netns};
pub use process::{drop_privileges, mem_total_bytes, raise_nofile_limit, rss_bytes, with_umask};
pub use tcp::{
    inq, keepalive_times, original_dst, outq, peek, send_nonblocking, set_bind_address_no_port,
    set_keepalive_idle, set_user_timeout, take_error, tcp_info, TcpInfo,
};
