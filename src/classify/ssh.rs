//! The SSH identification string (RFC 4253 §4.2):
//!
//! ```text
//! SSH-protoversion-softwareversion SP comments CR LF
//! ```
//!
//! at most 255 characters with the CR LF. A client sends it first (only a
//! server may send other lines before it), so the queue starts with it.
//! We accept a bare LF too (old clients, per the RFC's compatibility note)
//! and a line the peer has not finished (no LF yet): its start is still an
//! SSH client's.

use super::{prefix, text, Identity, Opening, Protocol, MAX_FIELD};

/// The longest identification line, CR LF included (RFC 4253 §4.2).
const MAX_LINE: usize = 255;

/// Whether `b` starts an identification string: `SSH-` (a server may send
/// other lines first, a client may not).
pub fn opens(b: &[u8]) -> Opening {
    prefix(b, b"SSH-")
}

/// `Some` when `b` starts with an identification string.
pub fn identify(b: &[u8]) -> Option<Identity> {
    let rest = b.strip_prefix(b"SSH-")?;
    let window = rest.get(..MAX_LINE - 4).unwrap_or(rest);
    let line = match window.iter().position(|&c| c == b'\n') {
        Some(i) => window.get(..i)?,
        None => window,
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let dash = line.iter().position(|&c| c == b'-');
    let (proto, after) = match dash {
        Some(i) => (line.get(..i)?, line.get(i + 1..)?),
        None => (line, &b""[..]),
    };
    // protoversion is digits and dots ("2.0", "1.99"); anything else is not
    // an SSH peer that happens to start with "SSH-".
    if proto.is_empty() || !proto.iter().all(|c| c.is_ascii_digit() || *c == b'.') {
        return None;
    }
    let (software, comments) = match after.iter().position(|&c| c == b' ') {
        Some(i) => (after.get(..i)?, after.get(i + 1..)),
        None => (after, None),
    };
    let field = |f: &[u8]| (!f.is_empty()).then(|| text(f, MAX_FIELD));
    Some(Identity {
        protocol: Protocol::Ssh,
        software: field(software),
        ssh_version: field(proto),
        ssh_comments: comments.and_then(field),
        ..Identity::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ssh -p PORT root@127.0.0.1` (OpenSSH 9.2p1, Debian 12) as captured
    /// on loopback: the whole of what it sent before waiting for us.
    const OPENSSH: &[u8] = include_bytes!("testdata/openssh-9.2p1.bin");

    #[test]
    fn real_openssh_banner() {
        let id = identify(OPENSSH).unwrap();
        assert_eq!(id.protocol, Protocol::Ssh);
        assert_eq!(id.software.as_deref(), Some("OpenSSH_9.2p1"));
        assert_eq!(id.ssh_version.as_deref(), Some("2.0"));
        assert_eq!(id.ssh_comments.as_deref(), Some("Debian-2+deb12u10"));
    }

    #[test]
    fn variants() {
        // No comments, bare LF, KEXINIT behind it.
        let id = identify(b"SSH-2.0-libssh2_1.10.0\n\x00\x00\x05\xdc\x0a\x14").unwrap();
        assert_eq!(id.software.as_deref(), Some("libssh2_1.10.0"));
        assert_eq!(id.ssh_comments, None);
        // Unfinished line: what there is.
        let id = identify(b"SSH-1.99-paramiko_3.4").unwrap();
        assert_eq!(id.software.as_deref(), Some("paramiko_3.4"));
        assert_eq!(id.ssh_version.as_deref(), Some("1.99"));
        // Hostile bytes come out escaped.
        let id = identify(b"SSH-2.0-x\x1b[2J\xff y\x00z\r\n").unwrap();
        assert_eq!(id.software.as_deref(), Some("x\\x1b[2J\\xff"));
        assert_eq!(id.ssh_comments.as_deref(), Some("y\\x00z"));
        // A long software field is cut at MAX_FIELD bytes.
        let mut long = b"SSH-2.0-".to_vec();
        long.extend_from_slice(&[b'A'; 400]);
        let id = identify(&long).unwrap();
        assert_eq!(id.software.as_deref().map(str::len), Some(MAX_FIELD));
    }

    #[test]
    fn not_ssh() {
        assert!(identify(b"").is_none());
        assert!(identify(b"SSH").is_none());
        assert!(identify(b"SSH-").is_none());
        assert!(identify(b"SSH-x-OpenSSH\r\n").is_none());
        assert!(identify(b"GET / HTTP/1.1\r\n").is_none());
    }
}
