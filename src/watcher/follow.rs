//! Following one log file across rotations, truncations and restarts.
//!
//! A log is the path, not the open file: logrotate renames it and creates a
//! new one (we finish the old file through our open handle, then read the
//! new one from its start), copies and truncates it (the size drops below
//! our offset), or a program deletes and recreates it. We notice by the
//! inode, a size smaller than our offset, and a fingerprint of the first
//! line (which catches a truncate followed by a rewrite past our offset
//! between two polls). Polling, at most a second apart, works on every
//! filesystem, including those where inotify stays silent (NFS, overlay).
//!
//! The follower never decides what a line means; it hands out complete
//! lines with the [`Position`] just after them, and the caller stores that
//! position in the same transaction as the hits (see `state`).

use super::state::Position;
use super::timestamp;
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Longer lines are skipped whole (and counted): no program we parse writes
/// them, and a truncated line could match where the full one would not.
pub const MAX_LINE: usize = 64 * 1024;

/// One complete line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub text: String,
    /// The bytes were not valid UTF-8 (replaced by U+FFFD for matching).
    pub invalid_utf8: bool,
}

/// Counters of everything unusual the follower met.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FollowStats {
    pub lines: u64,
    pub oversize: u64,
    pub invalid_utf8: u64,
    /// Lines with NUL bytes: binary junk, skipped.
    pub binary: u64,
    pub rotations: u64,
    pub truncations: u64,
    pub vanished: u64,
}

/// Where to start when the file is first opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Continue from a stored position (if it still describes this file, or
    /// a rotated copy of it in the same directory).
    Resume(Position),
    /// First ever start on an existing log: from the first line whose
    /// timestamp is within `findtime` of now, else from the end.
    Tail(Duration),
    /// A new file: from its start.
    Beginning,
}

/// New lines and the position after them.
#[derive(Debug, Default)]
pub struct Chunk {
    pub lines: Vec<Line>,
    /// `None` while the file does not exist (nothing to store).
    pub position: Option<Position>,
    /// Human-readable notes ("rotated", "truncated") for the log.
    pub notes: Vec<String>,
}

struct Open {
    file: File,
    inode: u64,
    dev: u64,
    /// Just after the last newline handled.
    offset: u64,
    /// Next byte to read (> offset while a line is incomplete).
    read_pos: u64,
    /// Bytes [offset, read_pos) unless `skipping`.
    pending: Vec<u8>,
    /// Inside an oversize line: discard until its newline.
    skipping: bool,
    fingerprint: String,
}

pub struct Follower {
    path: PathBuf,
    open: Option<Open>,
    start: Start,
    pub stats: FollowStats,
}

/// FNV-1a over the first line: stable across builds and Rust versions
/// (it is stored), and only has to tell two log files apart.
fn fnv(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{}:{h:016x}", data.len())
}

/// Fingerprint of `f`'s first line, or empty while it has no complete one.
fn first_line_fingerprint(f: &File) -> io::Result<String> {
    let mut buf = vec![0u8; 4096];
    let mut have = 0usize;
    loop {
        let n = f.read_at(&mut buf[have..], have as u64)?;
        if n == 0 {
            return Ok(String::new());
        }
        if let Some(nl) = buf[have..have + n].iter().position(|&b| b == b'\n') {
            return Ok(fnv(&buf[..have + nl]));
        }
        have += n;
        if have >= MAX_LINE {
            return Ok(fnv(&buf[..MAX_LINE]));
        }
        if have == buf.len() {
            buf.resize((buf.len() * 2).min(MAX_LINE), 0);
        }
    }
}

fn open_at(path: &Path) -> io::Result<(File, Metadata)> {
    let f = File::open(path)?;
    let m = f.metadata()?;
    Ok((f, m))
}

impl Follower {
    pub fn new(path: PathBuf, start: Start) -> Follower {
        Follower {
            path,
            open: None,
            start,
            stats: FollowStats::default(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The position after the last line handed out (None when not open).
    pub fn position(&self) -> Option<Position> {
        self.open.as_ref().map(|o| Position {
            inode: o.inode,
            dev: o.dev,
            offset: o.offset,
            fingerprint: o.fingerprint.clone(),
        })
    }

    /// Goes back to `pos` (after a failed commit, so those lines are read
    /// again), if the open file is still the one it describes.
    pub fn rewind(&mut self, pos: &Position) {
        match &mut self.open {
            Some(o) if o.inode == pos.inode && o.dev == pos.dev => {
                o.offset = pos.offset;
                o.read_pos = pos.offset;
                o.pending.clear();
                o.skipping = false;
            }
            _ => {
                self.open = None;
                self.start = Start::Resume(pos.clone());
            }
        }
    }

    /// Reads what is new, at most about `max_bytes`.
    pub fn poll(&mut self, max_bytes: usize, now: SystemTime) -> Chunk {
        let mut chunk = Chunk::default();
        let meta = std::fs::metadata(&self.path);
        match meta {
            Err(_) => {
                // Gone (deleted, or renamed with nothing new yet): finish
                // what the old handle still holds, then wait for the path.
                if let Some(mut o) = self.open.take() {
                    self.drain(&mut o, &mut chunk, usize::MAX);
                    self.stats.vanished += 1;
                    chunk
                        .notes
                        .push("log vanished; waiting for it to return".into());
                    self.start = Start::Beginning;
                }
                return chunk;
            }
            Ok(m) => {
                let same = self
                    .open
                    .as_ref()
                    .is_some_and(|o| o.inode == m.ino() && o.dev == m.dev());
                if self.open.is_some() && !same {
                    // Rotated: the old file first, to its very end.
                    if let Some(mut o) = self.open.take() {
                        self.drain(&mut o, &mut chunk, usize::MAX);
                    }
                    self.stats.rotations += 1;
                    chunk
                        .notes
                        .push("log rotated; reading the new file from its start".into());
                    self.start = Start::Beginning;
                }
                if self.open.is_none() {
                    match self.open_file(now) {
                        Ok(Some(o)) => self.open = Some(o),
                        Ok(None) => return chunk,
                        Err(e) => {
                            chunk.notes.push(format!("cannot open: {e}"));
                            return chunk;
                        }
                    }
                    // A resumed rotated copy: finish it, then the path.
                    let (ino, dev) = (m.ino(), m.dev());
                    if self
                        .open
                        .as_ref()
                        .is_some_and(|o| o.inode != ino || o.dev != dev)
                    {
                        if let Some(mut o) = self.open.take() {
                            self.drain(&mut o, &mut chunk, usize::MAX);
                        }
                        chunk
                            .notes
                            .push("finished the rotated file; reading the new one".into());
                        self.start = Start::Beginning;
                        match self.open_file(now) {
                            Ok(Some(o)) => self.open = Some(o),
                            _ => return chunk,
                        }
                    }
                }
                let Some(mut o) = self.open.take() else {
                    return chunk;
                };
                let size = o.file.metadata().map(|m| m.len()).unwrap_or(0);
                let mut reset = false;
                if size < o.read_pos {
                    self.stats.truncations += 1;
                    chunk
                        .notes
                        .push("log truncated; reading from its start".into());
                    reset = true;
                } else if !o.fingerprint.is_empty() {
                    let fp = first_line_fingerprint(&o.file).unwrap_or_default();
                    if fp != o.fingerprint {
                        self.stats.truncations += 1;
                        chunk.notes.push(
                            "log rewritten (first line changed); reading from its start".into(),
                        );
                        reset = true;
                    }
                }
                if reset {
                    o.offset = 0;
                    o.read_pos = 0;
                    o.pending.clear();
                    o.skipping = false;
                    o.fingerprint = String::new();
                }
                self.read_new(&mut o, &mut chunk, max_bytes);
                if o.fingerprint.is_empty() {
                    o.fingerprint = first_line_fingerprint(&o.file).unwrap_or_default();
                }
                chunk.position = Some(Position {
                    inode: o.inode,
                    dev: o.dev,
                    offset: o.offset,
                    fingerprint: o.fingerprint.clone(),
                });
                self.open = Some(o);
            }
        }
        chunk
    }

    /// Opens the file according to `self.start`; `None` if it is missing.
    fn open_file(&mut self, now: SystemTime) -> io::Result<Option<Open>> {
        let (file, m) = match open_at(&self.path) {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mk = |file: File, m: &Metadata, offset: u64| -> Open {
            let fingerprint = first_line_fingerprint(&file).unwrap_or_default();
            Open {
                file,
                inode: m.ino(),
                dev: m.dev(),
                offset,
                read_pos: offset,
                pending: Vec::new(),
                skipping: false,
                fingerprint,
            }
        };
        let start = std::mem::replace(&mut self.start, Start::Beginning);
        Ok(Some(match start {
            Start::Beginning => mk(file, &m, 0),
            Start::Tail(findtime) => {
                let off = tail_offset(&file, m.len(), findtime, now).unwrap_or(m.len());
                mk(file, &m, off)
            }
            Start::Resume(pos) => {
                if m.ino() == pos.inode && m.dev() == pos.dev {
                    let o = mk(file, &m, 0);
                    if (pos.fingerprint.is_empty() || o.fingerprint == pos.fingerprint)
                        && m.len() >= pos.offset
                    {
                        Open {
                            offset: pos.offset,
                            read_pos: pos.offset,
                            ..o
                        }
                    } else {
                        o
                    }
                } else if let Some(old) = find_rotated(&self.path, &pos) {
                    // Rotated while we were stopped: finish the old copy
                    // first (poll sees the path's other inode afterwards).
                    old
                } else {
                    mk(file, &m, 0)
                }
            }
        }))
    }

    /// Reads the rest of `o` to its end (a rotated or deleted file), the
    /// final unterminated line included.
    fn drain(&mut self, o: &mut Open, chunk: &mut Chunk, max: usize) {
        self.read_new(o, chunk, max);
        if !o.skipping && !o.pending.is_empty() {
            let bytes = std::mem::take(&mut o.pending);
            self.emit(&bytes, chunk);
        }
    }

    fn read_new(&mut self, o: &mut Open, chunk: &mut Chunk, max_bytes: usize) {
        let mut buf = vec![0u8; 256 * 1024];
        let mut budget = max_bytes;
        while budget > 0 {
            let want = buf.len().min(budget);
            let n = match o.file.read_at(&mut buf[..want], o.read_pos) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    chunk.notes.push(format!("read error: {e}"));
                    break;
                }
            };
            budget = budget.saturating_sub(n);
            let data = &buf[..n];
            let mut start = 0usize;
            while let Some(nl) = data[start..].iter().position(|&b| b == b'\n') {
                let end = start + nl;
                if o.skipping {
                    o.skipping = false;
                } else if o.pending.len() + (end - start) > MAX_LINE {
                    self.stats.oversize += 1;
                    o.pending.clear();
                } else if o.pending.is_empty() {
                    self.emit(&data[start..end], chunk);
                } else {
                    let mut l = std::mem::take(&mut o.pending);
                    l.extend_from_slice(&data[start..end]);
                    self.emit(&l, chunk);
                }
                start = end + 1;
                o.read_pos += (nl + 1) as u64;
                o.offset = o.read_pos;
            }
            let rest = &data[start..];
            o.read_pos += rest.len() as u64;
            if !o.skipping {
                if o.pending.len() + rest.len() > MAX_LINE {
                    self.stats.oversize += 1;
                    o.pending.clear();
                    o.skipping = true;
                } else {
                    o.pending.extend_from_slice(rest);
                }
            }
        }
    }

    fn emit(&mut self, raw: &[u8], chunk: &mut Chunk) {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        self.stats.lines += 1;
        if raw.contains(&0) {
            self.stats.binary += 1;
            return;
        }
        match std::str::from_utf8(raw) {
            Ok(s) => chunk.lines.push(Line {
                text: s.to_string(),
                invalid_utf8: false,
            }),
            Err(_) => {
                self.stats.invalid_utf8 += 1;
                chunk.lines.push(Line {
                    text: String::from_utf8_lossy(raw).into_owned(),
                    invalid_utf8: true,
                });
            }
        }
    }
}

/// A file in `path`'s directory with the stored inode and first line: the
/// log as it was before a rotation that happened while we were stopped.
fn find_rotated(path: &Path, pos: &Position) -> Option<Open> {
    let dir = path.parent()?;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let Ok(m) = e.metadata() else { continue };
        if m.ino() != pos.inode || m.dev() != pos.dev || !m.is_file() || m.len() < pos.offset {
            continue;
        }
        let Ok(file) = File::open(e.path()) else {
            continue;
        };
        let fp = first_line_fingerprint(&file).unwrap_or_default();
        if !pos.fingerprint.is_empty() && fp != pos.fingerprint {
            continue;
        }
        return Some(Open {
            file,
            inode: pos.inode,
            dev: pos.dev,
            offset: pos.offset,
            read_pos: pos.offset,
            pending: Vec::new(),
            skipping: false,
            fingerprint: fp,
        });
    }
    None
}

/// Offset of the first line stamped within `findtime` of `now`, looking at
/// most 64 MiB back; `None` when no line there has a timestamp.
fn tail_offset(f: &File, size: u64, findtime: Duration, now: SystemTime) -> Option<u64> {
    const LOOK_BACK: u64 = 64 << 20;
    let from = size.saturating_sub(LOOK_BACK);
    let horizon = now.checked_sub(findtime).unwrap_or(SystemTime::UNIX_EPOCH);
    let mut pos = from;
    let mut first_line = from > 0;
    let mut carry: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut saw_stamp = false;
    while pos < size {
        let n = f.read_at(&mut buf, pos).ok()?;
        if n == 0 {
            break;
        }
        let base = pos - carry.len() as u64;
        carry.extend_from_slice(&buf[..n]);
        pos += n as u64;
        let mut start = 0usize;
        while let Some(nl) = carry[start..].iter().position(|&b| b == b'\n') {
            let line = &carry[start..start + nl];
            let line_off = base + start as u64;
            start += nl + 1;
            if first_line {
                first_line = false; // a partial line where we began reading
                continue;
            }
            if line.len() > MAX_LINE {
                continue;
            }
            let text = String::from_utf8_lossy(line);
            if let Some(st) = timestamp::parse_prefix(&text, now) {
                saw_stamp = true;
                if st.time >= horizon {
                    return Some(line_off);
                }
            }
        }
        carry.drain(..start);
        if carry.len() > MAX_LINE {
            carry.clear();
            first_line = true;
        }
    }
    // Every stamped line is older than the window: start at the end.
    saw_stamp.then_some(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn tmp(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("tarpit-follow-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn append(p: &Path, s: &[u8]) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .unwrap();
        f.write_all(s).unwrap();
    }
    fn texts(c: &Chunk) -> Vec<&str> {
        c.lines.iter().map(|l| l.text.as_str()).collect()
    }
    fn now() -> SystemTime {
        SystemTime::now()
    }

    #[test]
    fn reads_complete_lines_only() {
        let d = tmp("partial");
        let p = d.0.join("a.log");
        append(&p, b"one\ntw");
        let mut f = Follower::new(p.clone(), Start::Beginning);
        let c = f.poll(1 << 20, now());
        assert_eq!(texts(&c), ["one"]);
        assert_eq!(c.position.unwrap().offset, 4);
        append(&p, b"o\r\nthree\n");
        let c = f.poll(1 << 20, now());
        assert_eq!(texts(&c), ["two", "three"]);
        assert_eq!(c.position.unwrap().offset, 15);
        assert!(f.poll(1 << 20, now()).lines.is_empty());
    }

    #[test]
    fn rename_and_create_finishes_the_old_file() {
        let d = tmp("rename");
        let p = d.0.join("a.log");
        append(&p, b"1\n");
        let mut f = Follower::new(p.clone(), Start::Beginning);
        assert_eq!(texts(&f.poll(1 << 20, now())), ["1"]);
        append(&p, b"2\n");
        std::fs::rename(&p, d.0.join("a.log.1")).unwrap();
        append(&d.0.join("a.log.1"), b"3-late\n");
        append(&p, b"4\n");
        let c = f.poll(1 << 20, now());
        assert_eq!(texts(&c), ["2", "3-late", "4"]);
        assert_eq!(f.stats.rotations, 1);
    }

    #[test]
    fn copytruncate_is_detected_by_size() {
        let d = tmp("trunc");
        let p = d.0.join("a.log");
        append(&p, b"aaaaaaaaaa\nbbbbbbbbbb\n");
        let mut f = Follower::new(p.clone(), Start::Beginning);
        assert_eq!(f.poll(1 << 20, now()).lines.len(), 2);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&p, b"new\n");
        let c = f.poll(1 << 20, now());
        assert_eq!(texts(&c), ["new"]);
        assert_eq!(f.stats.truncations, 1);
    }

    #[test]
    fn truncate_and_rewrite_past_offset_is_detected_by_fingerprint() {
        let d = tmp("fp");
        let p = d.0.join("a.log");
        append(&p, b"first\n");
        let mut f = Follower::new(p.clone(), Start::Beginning);
        assert_eq!(f.poll(1 << 20, now()).lines.len(), 1);
        std::fs::write(&p, b"other line\nsecond\n").unwrap();
        let c = f.poll(1 << 20, now());
        assert_eq!(texts(&c), ["other line", "second"]);
    }

    #[test]
    fn delete_and_recreate_reads_the_new_file_from_start() {
        let d = tmp("del");
        let p = d.0.join("a.log");
        append(&p, b"x\n");
        let mut f = Follower::new(p.clone(), Start::Beginning);
        assert_eq!(f.poll(1 << 20, now()).lines.len(), 1);
        append(&p, b"y\n");
        std::fs::remove_file(&p).unwrap();
        let c = f.poll(1 << 20, now());
        assert_eq!(texts(&c), ["y"]);
        assert!(c.position.is_none());
        assert_eq!(f.stats.vanished, 1);
        assert!(f.poll(1 << 20, now()).lines.is_empty());
        append(&p, b"z\n");
        assert_eq!(texts(&f.poll(1 << 20, now())), ["z"]);
    }

    #[test]
    fn long_binary_and_invalid_lines_are_counted_not_fatal() {
        let d = tmp("junk");
        let p = d.0.join("a.log");
        let mut data = Vec::new();
        data.extend_from_slice(b"ok1\n");
        data.extend(std::iter::repeat_n(b'A', MAX_LINE + 10));
        data.extend_from_slice(b"\nok2\nbin\x00ary\n\xff\xfebad utf8\n");
        data.extend(std::iter::repeat_n(b'B', 3 * MAX_LINE));
        append(&p, &data);
        let mut f = Follower::new(p.clone(), Start::Beginning);
        let c = f.poll(1 << 20, now());
        assert_eq!(texts(&c), ["ok1", "ok2", "\u{fffd}\u{fffd}bad utf8"]);
        assert_eq!(f.stats.oversize, 2);
        assert_eq!(f.stats.binary, 1);
        assert_eq!(f.stats.invalid_utf8, 1);
        // The oversize tail ends; the next line is read normally.
        append(&p, b"BBB\nok3\n");
        assert_eq!(texts(&f.poll(1 << 20, now())), ["ok3"]);
        assert_eq!(f.stats.oversize, 2);
    }

    #[test]
    fn resume_continues_at_the_stored_offset_or_restarts_for_another_file() {
        let d = tmp("resume");
        let p = d.0.join("a.log");
        append(&p, b"1\n2\n");
        let mut f = Follower::new(p.clone(), Start::Beginning);
        f.poll(1 << 20, now());
        let pos = f.position().unwrap();
        append(&p, b"3\n");
        let mut g = Follower::new(p.clone(), Start::Resume(pos.clone()));
        assert_eq!(texts(&g.poll(1 << 20, now())), ["3"]);
        // Rotated while stopped: the rest of the old file, then the new one.
        append(&p, b"4\n");
        let pos = g.position().unwrap();
        append(&p, b"5\n");
        std::fs::rename(&p, d.0.join("a.log.1")).unwrap();
        append(&p, b"new\n");
        let mut h = Follower::new(p.clone(), Start::Resume(pos));
        let mut got = Vec::new();
        for _ in 0..3 {
            got.extend(h.poll(1 << 20, now()).lines.into_iter().map(|l| l.text));
        }
        assert_eq!(got, ["4", "5", "new"]);
        // A stored position of some other file: read from the start.
        let other = Position {
            inode: 1,
            dev: 1,
            offset: 999,
            fingerprint: "x".into(),
        };
        std::fs::remove_file(d.0.join("a.log.1")).unwrap();
        let mut k = Follower::new(p.clone(), Start::Resume(other));
        assert_eq!(texts(&k.poll(1 << 20, now())), ["new"]);
    }

    #[test]
    fn tail_starts_findtime_back_when_stamped_else_at_end() {
        let d = tmp("tail");
        let p = d.0.join("a.log");
        append(
            &p,
            b"2020-01-01T00:00:00Z old\n2020-01-01T01:00:00Z mid\n2020-01-01T02:00:00Z new\n",
        );
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1577840400 + 1800); // 01:30Z
        let mut f = Follower::new(p.clone(), Start::Tail(Duration::from_secs(3600)));
        assert_eq!(
            texts(&f.poll(1 << 20, at)),
            ["2020-01-01T01:00:00Z mid", "2020-01-01T02:00:00Z new"]
        );
        let q = d.0.join("b.log");
        append(&q, b"no stamps\nat all\n");
        let mut g = Follower::new(q.clone(), Start::Tail(Duration::from_secs(3600)));
        assert!(g.poll(1 << 20, at).lines.is_empty());
        append(&q, b"later\n");
        assert_eq!(texts(&g.poll(1 << 20, at)), ["later"]);
    }

    #[test]
    fn rewind_rereads() {
        let d = tmp("rewind");
        let p = d.0.join("a.log");
        append(&p, b"1\n");
        let mut f = Follower::new(p.clone(), Start::Beginning);
        let before = f.poll(1 << 20, now()).position.unwrap();
        append(&p, b"2\n");
        assert_eq!(texts(&f.poll(1 << 20, now())), ["2"]);
        f.rewind(&before);
        assert_eq!(texts(&f.poll(1 << 20, now())), ["2"]);
    }
}
