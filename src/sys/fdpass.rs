//! Passing descriptors between processes (`SCM_RIGHTS`) over a unix
//! `SOCK_SEQPACKET` socket, which keeps each message and its descriptors
//! together. Used by the takeover to hand held connections to a new process.
//! rustix builds and walks the `SCM_RIGHTS` control messages.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};

/// Most descriptors sent in one message (the kernel's SCM_MAX_FD is 253).
pub const MAX_FDS: usize = 250;

/// Sends `data` with `fds` attached as one message. The descriptors stay
/// open here; the receiver gets duplicates of them.
///
/// `fds` are raw because the takeover sends the engine's held connections,
/// which its slab keeps as `RawFd`s; the caller keeps them open across the
/// call (they are closed only after the new process confirmed).
pub fn send_with_fds(sock: &impl AsFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::other("too many descriptors in one message"));
    }
    let borrowed: Vec<BorrowedFd<'_>> = fds
        .iter()
        // SAFETY: each descriptor is open and stays open for this call: the
        // caller owns it (a listener, or a held connection in the engine's
        // slot) and closes it only after the handover. The borrows live in
        // `borrowed`, which is dropped when this function returns.
        .map(|&fd| unsafe { BorrowedFd::borrow_raw(fd) })
        .collect();
    let mut space = vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !borrowed.is_empty() && !control.push(SendAncillaryMessage::ScmRights(&borrowed)) {
        return Err(io::Error::other(
            "descriptors do not fit the control buffer",
        ));
    }
    let n = sendmsg(
        sock,
        &[IoSlice::new(data)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    if n != data.len() {
        return Err(io::Error::other("short send on a seqpacket socket"));
    }
    Ok(())
}

/// Receives one message into `buf`, returning its length and the
/// descriptors that came with it (close-on-exec, owned by the caller).
/// A length of 0 means the peer closed.
pub fn recv_with_fds(sock: &impl AsFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let r = recvmsg(
        sock,
        &mut [IoSliceMut::new(buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    // Take every descriptor that came (so that on the errors below they are
    // closed, not leaked).
    let mut fds = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(got) = msg {
            fds.extend(got);
        }
    }
    if r.flags.contains(ReturnFlags::CTRUNC) {
        return Err(io::Error::other("descriptors truncated"));
    }
    if r.flags.contains(ReturnFlags::TRUNC) {
        return Err(io::Error::other("message larger than the receive buffer"));
    }
    Ok((r.bytes, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::{Domain, Socket, Type};
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;

    #[test]
    fn descriptors_and_data_arrive_together() {
        let (a, b) = Socket::pair(Domain::UNIX, Type::SEQPACKET, None).unwrap();
        let mut f = tempfile_in_tmp();
        f.write_all(b"hello").unwrap();
        send_with_fds(&a, b"msg-1", &[f.as_raw_fd()]).unwrap();
        send_with_fds(&a, b"msg-2 no fds", &[]).unwrap();
        let mut buf = [0u8; 64];
        let (n, fds) = recv_with_fds(&b, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"msg-1");
        assert_eq!(fds.len(), 1);
        let mut g = std::fs::File::from(fds.into_iter().next().unwrap());
        g.rewind().unwrap();
        let mut s = String::new();
        g.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello", "the received descriptor is the same open file");
        let (n, fds) = recv_with_fds(&b, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"msg-2 no fds");
        assert!(fds.is_empty());
        drop(a);
        assert_eq!(recv_with_fds(&b, &mut buf).unwrap().0, 0);
    }

    fn tempfile_in_tmp() -> std::fs::File {
        let p = std::env::temp_dir().join(format!("tarpit-fdpass-{}", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        let _ = std::fs::remove_file(&p);
        f
    }
}
