//! Network namespaces: entering one (the calling thread), or running a
//! child program inside one.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};

/// Moves the *calling thread* into the network namespace `ns` (a handle such
/// as `/run/netns/NAME` opened read-only). Sockets the thread creates
/// afterwards live in that namespace. Used by tests and tools that act as a
/// host inside a namespace they created.
pub fn enter_netns(ns: &std::fs::File) -> io::Result<()> {
    move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::Network))?;
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
        // rustix makes the raw setns(2) syscall (no libc wrapper, no
        // allocation); `ns` is an open file owned by this closure.
        move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::Network))?;
        Ok(())
    };
    // SAFETY: the closure only performs the setns syscall and turns its
    // errno into an `io::Error` (`from_raw_os_error`: no allocation, no
    // locks), which is what `pre_exec` requires of code running in the
    // forked child.
    unsafe {
        cmd.pre_exec(closure);
    }
}
