//! Keeping the SYN-cookie keys across restarts (`--key-file`).
//!
//! Without it a restart draws a new key and every connection made before it
//! stops being answered. The file holds the current and the previous key as
//! hex, one per line, mode 0600 (anyone holding the key can make the tarpit
//! answer forged packets). It is rewritten atomically (temp file + rename)
//! at each rotation.

use super::cookie::Cookies;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

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

/// Why the key file cannot be used. The path was given explicitly, so
/// each of these stops the start (exit 2) rather than silently replacing
/// the keys: a typo or a damaged file must not cost every held connection.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("key file {path}: malformed (want one or two lines of 32 hex digits)")]
    Malformed { path: PathBuf },
    #[error("key file {path}: cannot read: {source} (a symlink is refused)")]
    Read { path: PathBuf, source: io::Error },
    #[error("key file {path}: not a regular file")]
    NotAFile { path: PathBuf },
    #[error("key file {path}: cannot write: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// Reads the keys at `path`; `None` when there is no file. The file is
/// opened with `O_NOFOLLOW`: we run as root, and a symlink planted there
/// must not make us read (or later replace) another file.
pub fn read(path: &Path) -> Result<Option<(Key, Option<Key>)>, KeyFileError> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let mut f = match f {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(KeyFileError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let read_err = |source| KeyFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    if !f.metadata().map_err(read_err)?.is_file() {
        return Err(KeyFileError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let mut text = String::new();
    // Two keys are 66 bytes; anything much longer is no key file.
    (&mut f)
        .take(4096)
        .read_to_string(&mut text)
        .map_err(|_| KeyFileError::Malformed {
            path: path.to_path_buf(),
        })?;
    match parse(&text) {
        Some(k) => Ok(Some(k)),
        None => Err(KeyFileError::Malformed {
            path: path.to_path_buf(),
        }),
    }
}

/// Loads the keys from `path`; a missing file gives fresh keys, which are
/// written there. Any other problem is an error (see [`KeyFileError`]).
pub fn load_or_create(path: &Path) -> Result<Cookies, KeyFileError> {
    if let Some((cur, prev)) = read(path)? {
        tracing::info!(path = %path.display(), "SYN-cookie keys restored");
        return Ok(Cookies::from_keys(cur, prev));
    }
    let c = Cookies::new();
    save(path, &c).map_err(|source| KeyFileError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(c)
}

/// Writes the keys atomically with mode 0600: a new file under a random
/// name in the same directory, created with `O_EXCL|O_NOFOLLOW` (nothing
/// there can be followed or reused), synced, then renamed over `path`
/// (rename replaces a symlink itself, never its target).
pub fn save(path: &Path, c: &Cookies) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{:016x}.tmp", rand::random::<u64>()));
    let tmp = path.with_file_name(tmp_name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(&tmp)?;
    let done = f
        .write_all(render(c).as_bytes())
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
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
        let mut a = load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let old = a.syn_ack_seq(&t, 5).wrapping_add(1);
        a.rotate();
        save(&path, &a).unwrap();
        let b = load_or_create(&path).unwrap();
        // Both the connection made under the old key and new ones verify.
        assert!(b.verify(&t, 6, old).is_some());
        let new = a.syn_ack_seq(&t, 9).wrapping_add(1);
        assert!(b.verify(&t, 10, new).is_some());
        // A damaged file is an error and stays as it is (before: silently
        // replaced by a fresh key, losing every connection).
        std::fs::write(&path, "not a key\n").unwrap();
        assert!(matches!(
            load_or_create(&path),
            Err(KeyFileError::Malformed { .. })
        ));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a key\n");
        assert!(b.verify(&t, 10, new).is_some());
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

    #[test]
    fn symlinks_are_neither_read_nor_written_through() {
        use std::os::unix::fs::symlink;
        let dir = std::env::temp_dir().join(format!("tp-keyfile-ln-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        let path = dir.join("cookie.key");
        symlink(&victim, &path).unwrap();
        // Reading through the link is refused.
        assert!(matches!(read(&path), Err(KeyFileError::Read { .. })));
        // The old fixed temp name `<key>.tmp` planted as a link: saving
        // neither writes through it nor through the key's own link.
        symlink(&victim, path.with_extension("tmp")).unwrap();
        save(&path, &Cookies::new()).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        let m = std::fs::symlink_metadata(&path).unwrap();
        assert!(m.file_type().is_file(), "the link itself was replaced");
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        assert!(read(&path).unwrap().is_some());
        // No temp files left behind.
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp") && n.starts_with('.'))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        // A directory is no key file.
        assert!(matches!(read(&dir), Err(KeyFileError::NotAFile { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
