//! Advisory file locks (single-instance guards), over rustix's flock.

use std::io;

use rustix::fs::FlockOperation;

/// Takes an exclusive flock(2) on `f` without waiting: `Ok(false)` when
/// another process holds it. Released when the file is closed.
pub fn try_lock_exclusive(f: &std::fs::File) -> io::Result<bool> {
    match rustix::fs::flock(f, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
