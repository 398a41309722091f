//! Running `nft` / `conntrack` as child processes: optional network
//! namespace, stdin fed from a thread (a 10,000-ban batch is bigger than a
//! pipe buffer), output collected, and a deadline so a wedged child cannot
//! hang the watcher forever.

use std::io::{self, Read, Write};
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
    let writer = match (stdin, child.stdin.take()) {
        (Some(data), Some(mut pipe)) => {
            let data = data.to_vec();
            Some(thread::spawn(move || pipe.write_all(&data)))
        }
        _ => None,
    };
    let out = reader(child.stdout.take());
    let err = reader(child.stderr.take());
    let status = wait_until(&mut child, limit).map_err(|e| FwError::Io {
        what: format!("waiting for {}", describe()),
        source: e,
    })?;
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    // A write error (EPIPE) just means the child stopped reading early; its
    // exit status and stderr say why, so that is what we report.
    if let Some(w) = writer {
        let _ = w.join();
    }
    match status {
        Some(status) => Ok(Finished {
            status,
            stdout,
            stderr,
        }),
        None => Err(FwError::Timeout {
            command: describe(),
            after: limit,
        }),
    }
}

fn reader<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
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
}
