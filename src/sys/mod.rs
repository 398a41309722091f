//! The one place with `unsafe`: thin wrappers over the Linux socket and
//! process calls that `socket2` and `std` do not cover.
//!
//! Every function here takes or returns plain Rust types, checks the kernel's
//! return value once, and turns failures into `io::Error`. Callers never see
//! a raw pointer. Each `unsafe` block carries a `// SAFETY:` line saying why
//! the call is sound.

pub mod fdpass;
pub mod fdtable;
pub mod netlink;
pub mod packet;

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub mod netns_exec;

/// The subset of `struct tcp_info` the tarpit reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpInfo {
    /// TCP state (`TCP_ESTABLISHED` = 1, `TCP_CLOSE_WAIT` = 8, ...).
    pub state: u8,
    /// Smoothed round-trip time in microseconds.
    pub rtt_us: u32,
    /// Bytes the peer sent that the kernel acknowledged (`tcpi_bytes_received`).
    /// The tarpit never reads them: they sit in the receive queue.
    pub bytes_received: u64,
    /// Segments received from the peer (`tcpi_segs_in`), probes included.
    pub segs_in: u32,
}

/// Linux `struct tcp_info` layout up to the fields we read (stable ABI,
/// append-only since 2.6; `bytes_received` and `segs_in` arrived in 4.1/4.2).
#[repr(C)]
#[derive(Default)]
struct RawTcpInfo {
    state: u8,
    ca_state: u8,
    retransmits: u8,
    probes: u8,
    backoff: u8,
    options: u8,
    wscale: u8,
    app_limited: u8,
    rto: u32,
    ato: u32,
    snd_mss: u32,
    rcv_mss: u32,
    unacked: u32,
    sacked: u32,
    lost: u32,
    retrans: u32,
    fackets: u32,
    last_data_sent: u32,
    last_ack_sent: u32,
    last_data_recv: u32,
    last_ack_recv: u32,
    pmtu: u32,
    rcv_ssthresh: u32,
    rtt: u32,
    rttvar: u32,
    snd_ssthresh: u32,
    snd_cwnd: u32,
    advmss: u32,
    reordering: u32,
    rcv_rtt: u32,
    rcv_space: u32,
    total_retrans: u32,
    pacing_rate: u64,
    max_pacing_rate: u64,
    bytes_acked: u64,
    bytes_received: u64,
    segs_out: u32,
    segs_in: u32,
}

/// Reads `TCP_INFO` without touching the data stream.
pub fn tcp_info(fd: RawFd) -> io::Result<TcpInfo> {
    let mut raw = RawTcpInfo::default();
    let mut len = size_of::<RawTcpInfo>() as libc::socklen_t;
    // SAFETY: `raw` is a properly aligned, writable buffer of `len` bytes and
    // the kernel writes at most `len` bytes into it, updating `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut raw as *mut RawTcpInfo).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let full = len as usize >= size_of::<RawTcpInfo>();
    Ok(TcpInfo {
        state: raw.state,
        rtt_us: raw.rtt,
        bytes_received: if full { raw.bytes_received } else { 0 },
        segs_in: if full { raw.segs_in } else { 0 },
    })
}

/// `SO_ORIGINAL_DST` (IPv4) and `IP6T_SO_ORIGINAL_DST` (IPv6) share the value 80.
const SO_ORIGINAL_DST: libc::c_int = 80;

/// The destination the peer originally aimed at, as recorded by conntrack
/// before an nftables `redirect`/`dnat` rewrote it. `Err` when the connection
/// was not translated (no conntrack entry) — callers fall back to the local
/// address, which is then the same thing.
pub fn original_dst(fd: RawFd, ipv6: bool) -> io::Result<SocketAddr> {
    if ipv6 {
        // SAFETY: all-zero is a valid `sockaddr_in6`.
        let mut sa: libc::sockaddr_in6 = unsafe { MaybeUninit::zeroed().assume_init() };
        let mut len = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        // SAFETY: `sa` is a writable `sockaddr_in6` of `len` bytes.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_IPV6,
                SO_ORIGINAL_DST,
                (&mut sa as *mut libc::sockaddr_in6).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let ip = Ipv6Addr::from(sa.sin6_addr.s6_addr);
        Ok(SocketAddr::V6(SocketAddrV6::new(
            ip,
            u16::from_be(sa.sin6_port),
            0,
            sa.sin6_scope_id,
        )))
    } else {
        // SAFETY: all-zero is a valid `sockaddr_in`.
        let mut sa: libc::sockaddr_in = unsafe { MaybeUninit::zeroed().assume_init() };
        let mut len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: `sa` is a writable `sockaddr_in` of `len` bytes.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_IP,
                SO_ORIGINAL_DST,
                (&mut sa as *mut libc::sockaddr_in).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let ip = Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr));
        Ok(SocketAddr::V4(SocketAddrV4::new(
            ip,
            u16::from_be(sa.sin_port),
        )))
    }
}

/// Bytes waiting in the receive queue (`SIOCINQ`), i.e. sent by the peer and
/// never read by us.
pub fn inq(fd: RawFd) -> io::Result<u32> {
    ioctl_int(fd, libc::FIONREAD)
}

/// Bytes in the send queue not yet acknowledged by the peer (`SIOCOUTQ`).
pub fn outq(fd: RawFd) -> io::Result<u32> {
    ioctl_int(fd, libc::TIOCOUTQ)
}

fn ioctl_int(fd: RawFd, req: libc::Ioctl) -> io::Result<u32> {
    let mut v: libc::c_int = 0;
    // SAFETY: both requests write one `int` through the pointer.
    let rc = unsafe { libc::ioctl(fd, req, &mut v as *mut libc::c_int) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v.max(0) as u32)
}

/// Copies up to `buf.len()` bytes from the head of the receive queue without
/// consuming them (`MSG_PEEK | MSG_DONTWAIT`): the window stays closed. Used
/// once, when a connection is released, to record what the peer tried to send.
pub fn peek(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a writable slice of `buf.len()` bytes.
    let rc = unsafe {
        libc::recv(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as usize)
}

/// `SO_ERROR`: the pending socket error (ECONNRESET, ETIMEDOUT, ...), cleared.
pub fn take_error(fd: RawFd) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` is a writable int of `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

/// Closes a raw descriptor that the caller owns and will not use again.
pub fn close(fd: RawFd) {
    // SAFETY: the caller transfers ownership of `fd`; wrapping it in an
    // `OwnedFd` and dropping it closes it exactly once.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
}

/// A level of indirection over an epoll instance used only for "peer gone"
/// events on held connections (EPOLLRDHUP / EPOLLERR / EPOLLHUP, edge
/// triggered). One kernel epitem per connection, nothing in userspace.
pub struct Epoll {
    fd: OwnedFd,
}

/// Readiness bits reported by [`Epoll::wait`].
pub mod ev {
    pub const RDHUP: u32 = libc::EPOLLRDHUP as u32;
    pub const HUP: u32 = libc::EPOLLHUP as u32;
    pub const ERR: u32 = libc::EPOLLERR as u32;
}

impl Epoll {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the returned fd is checked and then owned.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nobody else owns.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Watches `fd` for the peer closing or failing; `token` comes back with
    /// its events.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut e = libc::epoll_event {
            events: (libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: token,
        };
        // SAFETY: `e` is a valid epoll_event; the kernel copies it.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut e) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Changes the token of an already watched `fd`.
    pub fn modify(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut e = libc::epoll_event {
            events: (libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: token,
        };
        // SAFETY: `e` is a valid epoll_event; the kernel copies it.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_MOD, fd, &mut e) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Non-blocking wait: fills `out` with `(token, events)` and returns how
    /// many were written.
    pub fn wait(&self, out: &mut [(u64, u32)]) -> io::Result<usize> {
        const MAX: usize = 256;
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; MAX];
        let n = out.len().min(MAX);
        // SAFETY: `evs` holds `n` writable epoll_event slots.
        let rc = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), evs.as_mut_ptr(), n as i32, 0) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(e);
        }
        for (slot, e) in out.iter_mut().zip(evs.iter()).take(rc as usize) {
            *slot = (e.u64, e.events);
        }
        Ok(rc as usize)
    }
}

impl AsRawFd for Epoll {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is a writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if rl.rlim_cur < rl.rlim_max {
        let want = libc::rlimit {
            rlim_cur: rl.rlim_max,
            rlim_max: rl.rlim_max,
        };
        // SAFETY: `want` is a valid rlimit that only raises soft to hard.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            rl.rlim_cur = rl.rlim_max;
        }
    }
    Ok(rl.rlim_cur)
}

/// Looks up a user and (optionally) a group by name and switches the process
/// to them: supplementary groups cleared, gid first, then uid.
pub fn drop_privileges(user: Option<&str>, group: Option<&str>) -> io::Result<()> {
    use std::ffi::CString;
    let mut uid: Option<libc::uid_t> = None;
    let mut gid: Option<libc::gid_t> = None;
    if let Some(u) = user {
        let c = CString::new(u).map_err(|_| io::Error::other("user name contains NUL"))?;
        // SAFETY: `c` is a valid C string; getpwnam returns NULL or a pointer
        // to static storage that we read immediately, single-threaded at start.
        let pw = unsafe { libc::getpwnam(c.as_ptr()) };
        if pw.is_null() {
            return Err(io::Error::other(format!("no such user: {u}")));
        }
        // SAFETY: `pw` is non-null and points to a valid passwd record.
        unsafe {
            uid = Some((*pw).pw_uid);
            gid = Some((*pw).pw_gid);
        }
    }
    if let Some(g) = group {
        let c = CString::new(g).map_err(|_| io::Error::other("group name contains NUL"))?;
        // SAFETY: as for getpwnam above.
        let gr = unsafe { libc::getgrnam(c.as_ptr()) };
        if gr.is_null() {
            return Err(io::Error::other(format!("no such group: {g}")));
        }
        // SAFETY: `gr` is non-null and points to a valid group record.
        gid = Some(unsafe { (*gr).gr_gid });
    }
    if let Some(g) = gid {
        // SAFETY: plain syscalls with integer arguments.
        unsafe {
            if libc::setgroups(0, std::ptr::null()) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::setgid(g) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    if let Some(u) = uid {
        // SAFETY: plain syscall with an integer argument.
        if unsafe { libc::setuid(u) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Resident set size of this process in bytes, from /proc/self/statm.
pub fn rss_bytes() -> io::Result<u64> {
    let s = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::other("unexpected /proc/self/statm"))?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Ok(pages * page.max(4096) as u64)
}

/// Registers an owned descriptor with the tokio reactor.
pub fn register_async<T: std::os::fd::AsFd + AsRawFd>(
    inner: T,
) -> io::Result<tokio::io::unix::AsyncFd<T>> {
    // SAFETY: `T: AsFd` means `inner` owns (or borrows for its whole life) an
    // open descriptor, and the types used here (`socket2::Socket`, `Epoll`,
    // `netlink::Netlink`) own exactly one `OwnedFd` that they never swap, so
    // the descriptor stays valid and unchanged for as long as the `AsyncFd` holds `inner`.
    unsafe { tokio::io::unix::AsyncFd::register(inner) }.map_err(|e| e.into())
}

impl std::os::fd::AsFd for Epoll {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Moves the *calling thread* into the network namespace `ns` (a handle such
/// as `/run/netns/NAME` opened read-only). Sockets the thread creates
/// afterwards live in that namespace. Used by tests and tools that act as a
/// host inside a namespace they created.
pub fn enter_netns(ns: &std::fs::File) -> io::Result<()> {
    // SAFETY: `ns` is an open namespace file; setns only reads the fd and
    // affects the calling thread.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// TCP_KEEPIDLE and TCP_KEEPINTVL of a socket, in seconds.
pub fn keepalive_times(fd: RawFd) -> io::Result<(u32, u32)> {
    let get = |opt: libc::c_int| -> io::Result<u32> {
        let mut v: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `v` is a writable int of `len` bytes.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                opt,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(v.max(0) as u32)
    };
    Ok((get(libc::TCP_KEEPIDLE)?, get(libc::TCP_KEEPINTVL)?))
}

/// Set once the descriptors a service manager passed have been taken, so
/// they are wrapped in an owner exactly once.
static INHERITED_TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Takes ownership of descriptors `fds` that the parent (systemd, or a
/// launcher acting like it) left open for this process, e.g. the socket
/// activation range 3..3+LISTEN_FDS. Each must be open (`F_GETFD`), and the
/// whole call succeeds at most once per process: a second call returns an
/// error instead of creating a second owner for the same descriptor.
pub fn take_inherited_fds(fds: impl IntoIterator<Item = RawFd>) -> io::Result<Vec<OwnedFd>> {
    use std::sync::atomic::Ordering;
    let fds: Vec<RawFd> = fds.into_iter().collect();
    for &fd in &fds {
        // SAFETY: F_GETFD only reads the descriptor's flags; any integer is
        // an acceptable argument (EBADF for one that is not open).
        if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(io::Error::other(format!(
                "inherited descriptor {fd} is not open"
            )));
        }
    }
    if INHERITED_TAKEN.swap(true, Ordering::SeqCst) {
        return Err(io::Error::other("inherited descriptors were already taken"));
    }
    Ok(fds
        .into_iter()
        // SAFETY: each `fd` is open (checked above), was left to this
        // process by its parent, and nothing in this process owns it yet:
        // the flag above makes this the only place that ever wraps them.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect())
}

/// Every address configured on this host's interfaces (in the current
/// network namespace), from getifaddrs(3). The watcher never bans these.
pub fn local_addresses() -> io::Result<Vec<std::net::IpAddr>> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head into `head`; on success we free it
    // with freeifaddrs below and never use it afterwards.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a non-null node of the list getifaddrs returned,
        // alive until freeifaddrs.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family field is
            // valid to read; the cast below matches that family's layout.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: family AF_INET means the sockaddr is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))));
            } else if family == libc::AF_INET6 {
                // SAFETY: family AF_INET6 means the sockaddr is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// Seconds since the epoch of a broken-down *local* time (log timestamps
/// such as fail2ban's carry no zone), via mktime(3) so the system's zone
/// rules and DST apply. `None` when the time does not exist.
pub fn local_time_to_unix(
    year: i32,
    month: u32,
    day: u32,
    hour: u32,
    min: u32,
    sec: u32,
) -> Option<i64> {
    // SAFETY: tm is a plain C struct for which all-zero is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = year - 1900;
    tm.tm_mon = month as i32 - 1;
    tm.tm_mday = day as i32;
    tm.tm_hour = hour as i32;
    tm.tm_min = min as i32;
    tm.tm_sec = sec as i32;
    tm.tm_isdst = -1;
    // SAFETY: mktime reads and normalises the struct we own; glibc's mktime
    // takes its own lock around the zone data.
    let t = unsafe { libc::mktime(&mut tm) };
    if t == -1 {
        None
    } else {
        Some(t as i64)
    }
}

/// Directory change notifications (inotify(7)), so the watcher reads a new
/// log line at once instead of at its next poll. Watching the directory,
/// not the file, also reports rotations (create, rename, delete).
pub struct Inotify {
    fd: OwnedFd,
}

impl Inotify {
    pub fn new() -> io::Result<Inotify> {
        // SAFETY: plain syscall; on success it returns a new descriptor that
        // we own from here on.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and nothing else owns it.
        Ok(Inotify {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Reports writes, creations, renames and deletions inside `dir`.
    pub fn watch_dir(&self, dir: &std::path::Path) -> io::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
        let mask = libc::IN_MODIFY
            | libc::IN_CREATE
            | libc::IN_DELETE
            | libc::IN_MOVED_FROM
            | libc::IN_MOVED_TO
            | libc::IN_CLOSE_WRITE
            | libc::IN_ATTRIB;
        // SAFETY: `c` is a valid NUL-terminated path for the duration of the
        // call; the descriptor is our open inotify instance.
        let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), c.as_ptr(), mask) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout` for events and drains them. Returns the names
    /// of the directory entries that changed (`None` for a queue overflow,
    /// after which anything may have changed); empty when nothing happened.
    pub fn wait(
        &self,
        timeout: std::time::Duration,
    ) -> io::Result<Vec<Option<std::ffi::OsString>>> {
        use std::os::unix::ffi::OsStrExt;
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd, count 1.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(Vec::new())
            } else {
                Err(e)
            };
        }
        let mut names = Vec::new();
        if n == 0 {
            return Ok(names);
        }
        // One read, not "until empty": something that writes in the
        // directory whenever we act (a tracer, our own log file) would keep
        // it from ever emptying. What is left wakes the next wait.
        let mut buf = [0u8; 8192];
        // SAFETY: `buf` is writable for its whole length.
        let r = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if r > 0 {
            // struct inotify_event { int wd; u32 mask, cookie, len; char name[len]; }
            let data = &buf[..r as usize];
            let mut i = 0usize;
            while i + 16 <= data.len() {
                let word = |k: usize| {
                    u32::from_ne_bytes([
                        data[i + k],
                        data[i + k + 1],
                        data[i + k + 2],
                        data[i + k + 3],
                    ])
                };
                let mask = word(4);
                let len = word(12) as usize;
                let name = data.get(i + 16..i + 16 + len).unwrap_or(&[]);
                let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
                if mask & libc::IN_Q_OVERFLOW != 0 {
                    names.push(None);
                } else {
                    names.push(Some(std::ffi::OsStr::from_bytes(name).to_os_string()));
                }
                i += 16 + len;
            }
        }
        Ok(names)
    }
}

/// Takes an exclusive flock(2) on `f` without waiting: `Ok(false)` when
/// another process holds it. Released when the file is closed.
pub fn try_lock_exclusive(f: &std::fs::File) -> io::Result<bool> {
    // SAFETY: flock only operates on the open descriptor `f` owns.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::WouldBlock {
        Ok(false)
    } else {
        Err(e)
    }
}
