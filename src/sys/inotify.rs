//! Directory change notifications for the watcher, over rustix's inotify
//! (its `Reader` walks the kernel's `inotify_event` records, so no
//! hand-written layout here).

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};

/// Directory change notifications (inotify(7)), so the watcher reads a new
/// log line at once instead of at its next poll. Watching the directory,
/// not the file, also reports rotations (create, rename, delete).
pub struct Inotify {
    fd: OwnedFd,
}

impl Inotify {
    pub fn new() -> io::Result<Inotify> {
        Ok(Inotify {
            fd: inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC)?,
        })
    }

    /// Reports writes, creations, renames and deletions inside `dir`.
    pub fn watch_dir(&self, dir: &std::path::Path) -> io::Result<()> {
        if dir.as_os_str().as_bytes().contains(&0) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"));
        }
        let mask = WatchFlags::MODIFY
            | WatchFlags::CREATE
            | WatchFlags::DELETE
            | WatchFlags::MOVED_FROM
            | WatchFlags::MOVED_TO
            | WatchFlags::CLOSE_WRITE
            | WatchFlags::ATTRIB;
        inotify::add_watch(&self.fd, dir, mask)?;
        Ok(())
    }

    /// Waits up to `timeout` for events and drains them. Returns the names
    /// of the directory entries that changed (`None` for a queue overflow,
    /// after which anything may have changed); empty when nothing happened.
    pub fn wait(
        &self,
        timeout: std::time::Duration,
    ) -> io::Result<Vec<Option<std::ffi::OsString>>> {
        let mut pfd = [PollFd::new(&self.fd, PollFlags::IN)];
        // Whole milliseconds, as poll(2) took them before.
        let ms = timeout.as_millis().min(i32::MAX as u128) as i64;
        let ts = Timespec {
            tv_sec: ms / 1000,
            tv_nsec: (ms % 1000) * 1_000_000,
        };
        let mut names = Vec::new();
        match rustix::event::poll(&mut pfd, Some(&ts)) {
            Ok(0) => return Ok(names),
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => return Ok(names),
            Err(e) => return Err(e.into()),
        }
        // One read, not "until empty": something that writes in the
        // directory whenever we act (a tracer, our own log file) would keep
        // it from ever emptying. What is left wakes the next wait. The
        // reader reads only when its buffer is empty, so stopping once it
        // is empty again makes exactly one read.
        let mut buf = [MaybeUninit::<u8>::uninit(); 8192];
        let mut reader = inotify::Reader::new(&self.fd, &mut buf);
        // Nothing there after all, or a read error, ends the loop: what
        // was gathered stands, as before.
        while let Ok(event) = reader.next() {
            if event.events().contains(ReadFlags::QUEUE_OVERFLOW) {
                names.push(None);
            } else {
                let name = event.file_name().map(|n| n.to_bytes()).unwrap_or(&[]);
                names.push(Some(std::ffi::OsStr::from_bytes(name).to_os_string()));
            }
            if reader.is_buffer_empty() {
                break;
            }
        }
        Ok(names)
    }
}
