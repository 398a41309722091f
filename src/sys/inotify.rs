//! Directory change notifications for the watcher.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

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
