//! Reading the state of a TCP socket the engine holds by raw descriptor:
//! `TCP_INFO`, the original destination, queue sizes, a peek at the
//! unread head, the pending error and the keepalive times.

use rustix::net::RecvFlags;
use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{BorrowedFd, RawFd};

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
    /// Milliseconds since the peer's last data segment (`tcpi_last_data_recv`).
    pub last_data_recv_ms: u32,
    /// Milliseconds since the peer's last acceptable ACK (`tcpi_last_ack_recv`),
    /// e.g. an answer to our keepalive.
    pub last_ack_recv_ms: u32,
    /// Keepalive or window probes sent and not yet answered (`tcpi_probes`).
    pub probes: u8,
    /// Milliseconds since we last sent data (`tcpi_last_data_sent`; since the
    /// handshake when we never did).
    pub last_data_sent_ms: u32,
    /// The peer's receive window as it last advertised it, bytes
    /// (`tcpi_snd_wnd`, Linux 5.4); `None` from an older kernel.
    pub snd_wnd: Option<u32>,
}

/// Linux `struct tcp_info` layout up to the fields we read (stable ABI,
/// append-only since 2.6; `bytes_received` and `segs_in` arrived in 4.1/4.2,
/// `snd_wnd` in 5.4).
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
    notsent_bytes: u32,
    min_rtt: u32,
    data_segs_in: u32,
    data_segs_out: u32,
    delivery_rate: u64,
    busy_time: u64,
    rwnd_limited: u64,
    sndbuf_limited: u64,
    delivered: u32,
    delivered_ce: u32,
    bytes_sent: u64,
    bytes_retrans: u64,
    dsack_dups: u32,
    reord_seen: u32,
    rcv_ooopack: u32,
    snd_wnd: u32,
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
    let len = len as usize;
    let full = len >= std::mem::offset_of!(RawTcpInfo, notsent_bytes);
    let has_wnd = len >= size_of::<RawTcpInfo>();
    Ok(TcpInfo {
        state: raw.state,
        rtt_us: raw.rtt,
        bytes_received: if full { raw.bytes_received } else { 0 },
        segs_in: if full { raw.segs_in } else { 0 },
        last_data_recv_ms: raw.last_data_recv,
        last_ack_recv_ms: raw.last_ack_recv,
        probes: raw.probes,
        last_data_sent_ms: raw.last_data_sent,
        snd_wnd: has_wnd.then_some(raw.snd_wnd),
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
/// consuming them (`MSG_PEEK | MSG_DONTWAIT`): the window stays closed and
/// the bytes stay queued. Used when a connection is released (and for the
/// live view) to see what the peer tried to send. rustix's `recv` writes
/// only into `buf` and returns the copied length, so no pointer is handled
/// here.
pub fn peek(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the borrow lives only for this one recv call and is never
    // stored; the caller passes a descriptor it holds open (a held
    // connection's slot, closed later through `sys::close`). A stale number
    // would make the kernel answer EBADF or peek another socket into our
    // own buffer, never write outside `buf`.
    let sock = unsafe { BorrowedFd::borrow_raw(fd) };
    let (copied, _) = rustix::net::recv(sock, buf, RecvFlags::PEEK | RecvFlags::DONTWAIT)?;
    Ok(copied)
}

/// Sends `buf` without blocking and without SIGPIPE (`MSG_DONTWAIT |
/// MSG_NOSIGNAL`); returns the bytes the kernel took. Used only by bait
/// policies, one small segment at a time.
pub fn send_nonblocking(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a readable slice of `buf.len()` bytes; the kernel only
    // reads it.
    let rc = unsafe {
        libc::send(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
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

/// Sets TCP_KEEPIDLE (seconds, at least 1). On a connected socket with
/// SO_KEEPALIVE the kernel re-arms the keepalive timer at once: the next
/// probe goes `secs` after the last packet received.
pub fn set_keepalive_idle(fd: RawFd, secs: u32) -> io::Result<()> {
    let v: libc::c_int = secs.clamp(1, 32767) as libc::c_int;
    // SAFETY: `v` is a readable int of the length passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_KEEPIDLE,
            (&v as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets TCP_USER_TIMEOUT (milliseconds, 0 = the kernel's default): how long
/// data we sent may stay unacknowledged before the kernel gives the
/// connection up (ETIMEDOUT), in place of `tcp_retries2` (~15 minutes).
/// With keepalives on it also bounds how long their probes may go
/// unanswered.
pub fn set_user_timeout(fd: RawFd, ms: u32) -> io::Result<()> {
    let v: libc::c_uint = ms;
    // SAFETY: `v` is a readable unsigned int of the length passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            (&v as *const libc::c_uint).cast(),
            size_of::<libc::c_uint>() as libc::socklen_t,
        )
    };
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

/// `IP_BIND_ADDRESS_NO_PORT`: a `bind(addr, 0)` before `connect` leaves the
/// port to `connect`, which picks it per destination. Many connections from
/// one source address then do not search the bind table for a free port
/// (the load-test clients of the benchmarks open a million).
pub fn set_bind_address_no_port(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `on` is a readable int of the size passed; the option has no
    // other memory effects.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
