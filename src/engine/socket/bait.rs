//! The bytes a bait policy drips: a pure function of a connection's seed and
//! its position, so a held connection stores two bytes of progress and no
//! buffer.
//!
//! * **ssh**: RFC 4253 §4.2 lets a server send "other lines of data" before
//!   its identification string; they must not begin with `SSH-`. Ours are
//!   lowercase text, 200–250 bytes each (libssh refuses a line over 256,
//!   OpenSSH over 8192), sent 1–4 bytes per segment. The small segments
//!   matter: paramiko gives the first line 15 s and every later one 2 s, but
//!   restarts the clock on each `recv` that returns bytes, so a first line
//!   still growing every 10 s holds it until that line ends (~10 minutes),
//!   where whole lines would free it 2 s after the first.
//! * **http**: the status line `HTTP/1.1 200 OK` as one segment, then header
//!   lines `X-name: value` of 100–250 bytes, 1–4 bytes per segment, never the
//!   blank line that ends the header block. A line stays far below the
//!   per-line limits (Python 65,536, curl 100 KiB) and a client needs hours
//!   to see the 100 headers Python allows.

use crate::engine::policy::Bait;

/// Where a connection is in its bait stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    /// Line number (wraps; HTTP's line 0, the status line, is sent once).
    pub line: u8,
    /// Bytes of that line already sent.
    pub off: u8,
}

/// Longest segment [`segment`] produces.
pub const MAX_SEGMENT: usize = STATUS.len();

const STATUS: &[u8] = b"HTTP/1.1 200 OK\r\n";
const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
const TEXT: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789 ";
const VALUE: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

fn mix(mut z: u64) -> u64 {
    // splitmix64's finaliser: cheap, and good enough to look random.
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn h(seed: u64, line: u8, off: u16, salt: u64) -> u64 {
    mix(seed ^ (u64::from(line) << 40) ^ (u64::from(off) << 16) ^ salt)
}

/// The per-connection seed, from facts the slot already holds that a
/// takeover does not change (the peer's address and port), so the stream
/// goes on unchanged in the new process.
pub fn seed(peer_ip: &[u8; 16], peer_port: u16) -> u64 {
    let a = u64::from_be_bytes(peer_ip[..8].try_into().unwrap_or_default());
    let b = u64::from_be_bytes(peer_ip[8..].try_into().unwrap_or_default());
    mix(a ^ mix(b ^ u64::from(peer_port)))
}

fn is_status(bait: Bait, line: u8) -> bool {
    bait == Bait::Http && line == 0
}

/// Length of a line, CR LF included.
fn line_len(bait: Bait, seed: u64, line: u8) -> usize {
    if is_status(bait, line) {
        return STATUS.len();
    }
    let r = h(seed, line, 0xffff, 1) as usize;
    match bait {
        Bait::Ssh => 200 + r % 51,
        Bait::Http => 100 + r % 151,
    }
}

/// Byte `i` of a line of length `len`.
fn byte_at(bait: Bait, seed: u64, line: u8, len: usize, i: usize) -> u8 {
    if is_status(bait, line) {
        return STATUS[i];
    }
    if i == len - 2 {
        return b'\r';
    }
    if i == len - 1 {
        return b'\n';
    }
    let r = h(seed, line, i as u16, 2) as usize;
    match bait {
        // Starts with a letter; lowercase, so never "SSH-".
        Bait::Ssh if i == 0 => LOWER[r % LOWER.len()],
        Bait::Ssh => TEXT[r % TEXT.len()],
        Bait::Http => {
            // "X-" name ": " value; the name is a token of 6-15 letters.
            let name = 6 + (h(seed, line, 0xfffe, 3) as usize) % 10;
            match i {
                0 => b'X',
                1 => b'-',
                _ if i < 2 + name => LOWER[r % LOWER.len()],
                _ if i == 2 + name => b':',
                _ if i == 3 + name => b' ',
                _ => VALUE[r % VALUE.len()],
            }
        }
    }
}

/// Writes the next segment at `pos` into `buf`; returns its length (1 to
/// [`MAX_SEGMENT`]).
pub fn segment(bait: Bait, seed: u64, pos: Pos, buf: &mut [u8; MAX_SEGMENT]) -> usize {
    let len = line_len(bait, seed, pos.line);
    let off = usize::from(pos.off).min(len - 1);
    let want = if is_status(bait, pos.line) {
        len
    } else {
        1 + (h(seed, pos.line, off as u16, 4) as usize) % 4
    };
    let n = want.min(len - off);
    for (k, b) in buf[..n].iter_mut().enumerate() {
        *b = byte_at(bait, seed, pos.line, len, off + k);
    }
    n
}

/// The position after `n` more bytes were sent.
pub fn advance(bait: Bait, seed: u64, pos: Pos, n: usize) -> Pos {
    let len = line_len(bait, seed, pos.line);
    let off = usize::from(pos.off) + n;
    if off < len {
        return Pos {
            line: pos.line,
            off: off as u8,
        };
    }
    let next = pos.line.wrapping_add(1);
    Pos {
        // The status line is sent once, even after the line number wraps.
        line: if bait == Bait::Http && next == 0 {
            1
        } else {
            next
        },
        off: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stream from the start, `segments` segments long, and its segment sizes.
    fn stream(bait: Bait, seed: u64, segments: usize) -> (Vec<u8>, Vec<usize>) {
        let mut pos = Pos::default();
        let mut out = Vec::new();
        let mut sizes = Vec::new();
        let mut buf = [0u8; MAX_SEGMENT];
        for _ in 0..segments {
            let n = segment(bait, seed, pos, &mut buf);
            out.extend_from_slice(&buf[..n]);
            sizes.push(n);
            pos = advance(bait, seed, pos, n);
        }
        (out, sizes)
    }

    #[test]
    fn ssh_lines_are_rfc4253_pre_banner_lines() {
        for s in 0..20 {
            let (bytes, sizes) = stream(Bait::Ssh, seed(&[s as u8; 16], 40000 + s as u16), 2000);
            assert!(sizes.iter().all(|&n| (1..=4).contains(&n)));
            let text = String::from_utf8(bytes).unwrap();
            let lines: Vec<&str> = text.split_inclusive("\r\n").collect();
            assert!(lines.len() > 5, "{}", lines.len());
            for l in &lines[..lines.len() - 1] {
                assert!(
                    l.ends_with("\r\n") && (200..=250).contains(&l.len()),
                    "{l:?}"
                );
                assert!(!l.starts_with("SSH-"));
                assert!(l[..l.len() - 2].bytes().all(|b| TEXT.contains(&b)));
                assert!(l.as_bytes()[0].is_ascii_lowercase());
            }
        }
    }

    #[test]
    fn http_is_a_status_line_then_valid_headers_without_an_end() {
        for s in 0..20 {
            let (bytes, sizes) = stream(Bait::Http, seed(&[s as u8; 16], 1234), 3000);
            assert_eq!(sizes[0], STATUS.len());
            let text = String::from_utf8(bytes).unwrap();
            let mut lines = text.split_inclusive("\r\n");
            assert_eq!(lines.next(), Some("HTTP/1.1 200 OK\r\n"));
            let lines: Vec<&str> = lines.collect();
            assert!(lines.len() > 10);
            for l in &lines[..lines.len() - 1] {
                assert!((100..=250).contains(&l.len()), "{l:?}");
                let (name, value) = l.trim_end_matches("\r\n").split_once(": ").unwrap();
                assert!(
                    name.starts_with("X-") && name[2..].bytes().all(|b| b.is_ascii_lowercase())
                );
                assert!(!value.is_empty() && value.bytes().all(|b| b.is_ascii_alphanumeric()));
            }
            assert!(!text.contains("\r\n\r\n"));
        }
    }

    #[test]
    fn the_status_line_is_not_repeated_when_lines_wrap() {
        let p = Pos { line: 255, off: 0 };
        let s = seed(&[3; 16], 4);
        let len = line_len(Bait::Http, s, 255);
        assert_eq!(advance(Bait::Http, s, p, len), Pos { line: 1, off: 0 });
        assert_eq!(
            advance(Bait::Ssh, s, p, line_len(Bait::Ssh, s, 255)).line,
            0
        );
    }

    #[test]
    fn partial_writes_continue_where_they_stopped() {
        let s = seed(&[9; 16], 9);
        let (whole, _) = stream(Bait::Ssh, s, 300);
        // Sending one byte of each segment yields the same byte stream.
        let mut pos = Pos::default();
        let mut out = Vec::new();
        let mut buf = [0u8; MAX_SEGMENT];
        while out.len() < whole.len() {
            segment(Bait::Ssh, s, pos, &mut buf);
            out.push(buf[0]);
            pos = advance(Bait::Ssh, s, pos, 1);
        }
        assert_eq!(out, whole);
    }
}
