//! Running `nft` / `conntrack` as child processes: optional network
//! namespace, stdin fed and output collected at once on the calling thread
//! (a 10,000-ban batch is bigger than a pipe buffer, and so is a listing),
//! and a deadline so a wedged child cannot hang the watcher forever.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::FwError;

/// What a finished child left behind.
pub struct Finished {
    pub status: std::process::ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// `program` as given if it contains a '/'; otherwise the first match in
/// `PATH`, then `/usr/sbin` and `/sbin` (where Debian puts nft and conntrack,
/// and which minimal service PATHs often lack). `None` if found nowhere.
pub fn resolve(program: &Path) -> Option<PathBuf> {
    if program.as_os_str().is_empty() {
        return None;
    }
    if program.components().count() > 1 || program.is_absolute() {
        return program.is_file().then(|| program.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Runs `program args..` (inside `/run/netns/<netns>` if given), writing
/// `stdin` to it, and waits at most `limit`.
pub fn run(
    program: &Path,
    args: &[&str],
    stdin: Option<&[u8]>,
    netns: Option<&str>,
    limit: Duration,
) -> Result<Finished, FwError> {
    let describe = || {
        let mut s = program.display().to_string();
        for a in args {
            s.push(' ');
            s.push_str(a);
        }
        s
    };
    let Some(exe) = resolve(program) else {
        return Err(FwError::NftMissing(program.to_path_buf()));
    };
    let mut cmd = Command::new(&exe);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(ns) = netns {
        let path = Path::new("/run/netns").join(ns);
        let file = std::fs::File::open(&path).map_err(|e| FwError::Io {
            what: format!("opening network namespace {}", path.display()),
            source: e,
        })?;
        crate::sys::exec_in_netns(&mut cmd, file);
    }
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => FwError::NftMissing(program.to_path_buf()),
        _ => FwError::Io {
            what: format!("starting {}", describe()),
            source: e,
        },
    })?;
    let deadline = Instant::now() + limit;
    let wait_err = |e| FwError::Io {
        what: format!("waiting for {}", describe()),
        source: e,
    };
    let piped = pump(&mut child, stdin.unwrap_or_default(), deadline).map_err(|e| {
        let _ = child.kill();
        let _ = child.wait();
        wait_err(e)
    })?;
    let finished = match piped {
        Some((stdout, stderr)) => wait_until(
            &mut child,
            deadline.saturating_duration_since(Instant::now()),
        )
        .map_err(wait_err)?
        .map(|status| Finished {
            status,
            stdout,
            stderr,
        }),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            None
        }
    };
    finished.ok_or_else(|| FwError::Timeout {
        command: describe(),
        after: limit,
    })
}

/// Feeds `input` to the child's stdin and collects its stdout and stderr
/// until both close, on this thread (poll(2) over non-blocking pipes): no
/// helper thread, so `tarpit serve` can run nft at start, while still
/// privileged, and still start its first thread only after the privilege
/// drop. `None` when `deadline` passed first. A write error (EPIPE) just
/// means the child stopped reading early; its exit status and stderr say
/// why.
fn pump(
    child: &mut Child,
    input: &[u8],
    deadline: Instant,
) -> io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    use rustix::event::{PollFd, PollFlags, Timespec};
    use std::os::fd::{AsFd, OwnedFd};
    let nonblocking = |fd: OwnedFd| -> io::Result<OwnedFd> {
        let fl = rustix::fs::fcntl_getfl(&fd)?;
        rustix::fs::fcntl_setfl(&fd, fl | rustix::fs::OFlags::NONBLOCK)?;
        Ok(fd)
    };
    let mut inp = match child.stdin.take() {
        Some(p) if !input.is_empty() => Some(nonblocking(OwnedFd::from(p))?),
        _ => None, // dropped: the child sees EOF
    };
    let mut outs = [
        child
            .stdout
            .take()
            .map(OwnedFd::from)
            .map(nonblocking)
            .transpose()?,
        child
            .stderr
            .take()
            .map(OwnedFd::from)
            .map(nonblocking)
            .transpose()?,
    ];
    let mut got = [Vec::new(), Vec::new()];
    let mut written = 0;
    let mut buf = vec![0u8; 65536];
    while inp.is_some() || outs.iter().any(Option::is_some) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        {
            let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(3);
            if let Some(fd) = &inp {
                fds.push(PollFd::new(fd, PollFlags::OUT));
            }
            for fd in outs.iter().flatten() {
                fds.push(PollFd::new(fd, PollFlags::IN));
            }
            let nap = left.min(Duration::from_millis(100));
            let ts = Timespec {
                tv_sec: nap.as_secs() as i64,
                tv_nsec: i64::from(nap.subsec_nanos()),
            };
            match rustix::event::poll(&mut fds, Some(&ts)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        // Whatever is ready goes now; the rest says EAGAIN.
        if let Some(fd) = &inp {
            match rustix::io::write(fd.as_fd(), &input[written..]) {
                Ok(n) => written += n,
                Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {}
                Err(_) => written = input.len(),
            }
            if written >= input.len() {
                inp = None;
            }
        }
        for (slot, acc) in outs.iter_mut().zip(got.iter_mut()) {
            let Some(fd) = slot else { continue };
            loop {
                match rustix::io::read(fd.as_fd(), &mut buf) {
                    Ok(0) => {
                        *slot = None;
                        break;
                    }
                    Ok(n) => acc.extend_from_slice(&buf[..n]),
                    Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    let [out, err] = got;
    Ok(Some((out, err)))
}

/// Waits for `child`; after `limit` kills it and returns `None`.
fn wait_until(child: &mut Child, limit: Duration) -> io::Result<Option<std::process::ExitStatus>> {
    let deadline = Instant::now() + limit;
    let mut nap = Duration::from_millis(1);
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(Some(st));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_absolute_and_path_programs() {
        assert_eq!(
            resolve(Path::new("/bin/sh")),
            Some(PathBuf::from("/bin/sh"))
        );
        assert!(resolve(Path::new("sh")).is_some());
        assert!(resolve(Path::new("/nonexistent/nft")).is_none());
        assert!(resolve(Path::new("no-such-program-tarpit")).is_none());
        assert!(resolve(Path::new("")).is_none());
    }

    #[test]
    fn feeds_stdin_bigger_than_a_pipe_and_collects_output() {
        let data = vec![b'x'; 1 << 20];
        let f = run(
            Path::new("cat"),
            &[],
            Some(&data),
            None,
            Duration::from_secs(30),
        )
        .unwrap();
        assert!(f.status.success());
        assert_eq!(f.stdout.len(), data.len());
    }

    #[test]
    fn missing_program_and_timeout_are_reported() {
        let e = run(
            Path::new("/nonexistent/nft"),
            &[],
            None,
            None,
            Duration::from_secs(1),
        );
        assert!(matches!(e, Err(FwError::NftMissing(_))));
        let e = run(
            Path::new("sleep"),
            &["5"],
            None,
            None,
            Duration::from_millis(100),
        );
        assert!(matches!(e, Err(FwError::Timeout { .. })), "{:?}", e.err());
    }

    #[test]
    fn feeds_and_collects_more_than_a_pipe_holds() {
        // 1 MiB in; the same out, and stderr apart (a pipe holds 64 KiB:
        // feeding and reading must interleave).
        let input: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        let f = run(
            Path::new("/bin/sh"),
            &["-c", "cat; echo done >&2; exit 3"],
            Some(&input),
            None,
            Duration::from_secs(20),
        )
        .unwrap();
        assert_eq!(f.status.code(), Some(3));
        assert!(f.stdout == input, "{} bytes back", f.stdout.len());
        assert_eq!(f.stderr, b"done\n");
    }

    #[test]
    fn a_child_that_stops_reading_early_is_not_an_error() {
        let input = vec![b'x'; 1 << 20];
        let f = run(
            Path::new("/bin/sh"),
            &["-c", "head -c 10 >/dev/null; echo no more >&2; exit 1"],
            Some(&input),
            None,
            Duration::from_secs(20),
        )
        .unwrap();
        assert_eq!(f.status.code(), Some(1));
        assert_eq!(f.stderr, b"no more\n");
    }
}
