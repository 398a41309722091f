//! Keeping the SYN-cookie keys across restarts (`--key-file`).
//!
//! Without it a restart draws a new key and every connection made before it
//! stops being answered. The file holds the current and the previous key as
//! hex, one per line, mode 0600 (anyone holding the key can make the tarpit
//! answer forged packets). It is rewritten atomically (temp file + rename)
//! at each rotation.

use super::cookie::Cookies;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

type Key = (u64, u64);

fn parse_key(line: &str) -> Option<Key> {
    let l = line.trim();
    if l.len() != 32 || !l.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((
        u64::from_str_radix(&l[..16], 16).ok()?,
        u64::from_str_radix(&l[16..], 16).ok()?,
    ))
}

/// Parses the file's text: one or two keys.
pub fn parse(text: &str) -> Option<(Key, Option<Key>)> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let current = parse_key(lines.next()?)?;
    let previous = match lines.next() {
        Some(l) => Some(parse_key(l)?),
        None => None,
    };
    if lines.next().is_some() {
        return None;
    }
    Some((current, previous))
}

pub fn render(c: &Cookies) -> String {
    let (cur, prev) = c.keys();
    let mut s = String::new();
    for (a, b) in std::iter::once(cur).chain(prev) {
        let _ = writeln!(s, "{a:016x}{b:016x}");
    }
    s
}

/// Loads the keys from `path`. A missing file gives fresh keys (and is
/// written); an unreadable or malformed one is reported and replaced, so a
/// damaged file never keeps the tarpit down.
pub fn load_or_create(path: &Path) -> Cookies {
    match std::fs::read_to_string(path) {
        Ok(text) => match parse(&text) {
            Some((cur, prev)) => {
                tracing::info!(path = %path.display(), "SYN-cookie keys restored");
                return Cookies::from_keys(cur, prev);
            }
            None => {
                tracing::warn!(path = %path.display(), "key file is malformed; starting with a new key (connections made before are no longer answered)")
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read key file; starting with a new key")
        }
    }
    let c = Cookies::new();
    if let Err(e) = save(path, &c) {
        tracing::warn!(path = %path.display(), error = %e, "cannot write key file; the key will not survive a restart");
    }
    c
}

/// Writes the keys atomically with mode 0600.
pub fn save(path: &Path, c: &Cookies) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(render(c).as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::stateless::packet::Tuple;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keys_survive_a_round_trip_and_a_rotation() {
        let dir = std::env::temp_dir().join(format!("tp-keyfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cookie.key");
        let _ = std::fs::remove_file(&path);
        let t = Tuple {
            src: "10.77.0.2".parse().unwrap(),
            dst: "10.77.0.1".parse().unwrap(),
            src_port: 1,
            dst_port: 22,
        };
        let mut a = load_or_create(&path);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let old = a.syn_ack_seq(&t, 5).wrapping_add(1);
        a.rotate();
        save(&path, &a).unwrap();
        let b = load_or_create(&path);
        // Both the connection made under the old key and new ones verify.
        assert!(b.verify(&t, 6, old).is_some());
        let new = a.syn_ack_seq(&t, 9).wrapping_add(1);
        assert!(b.verify(&t, 10, new).is_some());
        // A damaged file is replaced by a fresh key.
        std::fs::write(&path, "not a key\n").unwrap();
        let c = load_or_create(&path);
        assert!(c.verify(&t, 10, new).is_none());
        assert!(parse(&std::fs::read_to_string(&path).unwrap()).is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn parse_rejects_junk() {
        assert!(parse("").is_none());
        assert!(parse("00112233445566778899aabbccddeeff\n").is_some());
        assert!(
            parse("00112233445566778899aabbccddeeff\n00112233445566778899aabbccddeefg\n").is_none()
        );
        assert!(parse("0011\n").is_none());
        let three = "00112233445566778899aabbccddeeff\n".repeat(3);
        assert!(parse(&three).is_none());
    }
}
