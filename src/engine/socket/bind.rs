//! Listening sockets, configured before `listen()` so that every accepted
//! connection inherits the tiny receive buffer (and so the tiny window in the
//! SYN/ACK).

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;

/// Binds and listens on `addr` with `SO_RCVBUF` at the kernel's minimum
/// (asking for 1 byte yields 2304 on Linux: a 1152-byte window that closes
/// once the peer has sent that much), `SO_REUSEADDR`, and `IPV6_V6ONLY` on
/// IPv6 sockets so `0.0.0.0:P` and `[::]:P` can both bind.
pub fn listen(addr: SocketAddr, backlog: u32) -> io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_recv_buffer_size(1)?;
    sock.bind(&addr.into())?;
    sock.listen(backlog.min(i32::MAX as u32) as i32)?;
    sock.set_nonblocking(true)?;
    Ok(sock)
}

/// Checks a listener handed to us (socket activation, takeover): it must be
/// a listening TCP socket; returns its address and receive buffer size.
pub fn inspect(sock: &Socket) -> io::Result<(SocketAddr, usize)> {
    if sock.r#type()? != Type::STREAM {
        return Err(io::Error::other("not a stream socket"));
    }
    let addr = sock
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("not an IP socket"))?;
    let rcvbuf = sock.recv_buffer_size()?;
    Ok((addr, rcvbuf))
}
