//! Network namespaces: entering one (the calling thread), or running a
//! child program inside one.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Moves the *calling thread* into the network namespace `ns` (a handle such
/// as `/run/netns/NAME` opened read-only). Sockets the thread creates
/// afterwards live in that namespace. Used by tests and tools that act as a
/// host inside a namespace they created.
pub fn enter_netns(ns: &std::fs::File) -> io::Result<()> {
    // SAFETY: `ns` is an open namespace file; setns only reads the fd and
    // affects the calling thread.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Running a child program inside a named network namespace without `ip netns
/// exec`: the child calls `setns(2)` between fork and exec. Keeping this in
/// our own process means a missing program is reported as `NotFound` by
/// `spawn`, not as an exit status of some wrapper.
///
/// Arranges for `cmd`'s child to join the network namespace `ns` (an open
/// `/run/netns/NAME` file) before it executes. The file is kept alive inside
/// the command until the command is dropped.
pub fn exec_in_netns(cmd: &mut Command, ns: File) {
    let closure = move || {
        // SAFETY: setns(2) is a plain syscall, async-signal-safe, allowed
        // between fork and exec; `ns` is an open file owned by this closure,
        // so the descriptor is valid for the call.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the closure only performs the setns syscall and builds an
    // `io::Error` from errno (no allocation, no locks), which is what
    // `pre_exec` requires of code running in the forked child.
    unsafe {
        cmd.pre_exec(closure);
    }
}
