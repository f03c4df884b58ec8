//! Entering a named network namespace (`ip netns` style, /run/netns/NAME):
//! the one setns(2) of the agent, xtask's lab traffic and the bench.
//! Userspace only (the `user` feature).

extern crate std;

use std::{format, fs::File, io, os::fd::AsRawFd};

/// Moves the calling thread into network namespace `name`. Namespaces are
/// per thread: call it before spawning the threads that should live there.
pub fn enter(name: &str) -> io::Result<()> {
    let path = format!("/run/netns/{name}");
    let f = File::open(&path).map_err(|e| io::Error::new(e.kind(), format!("network namespace {name:?} ({path}): {e}")))?;
    // SAFETY: a valid namespace fd and a constant flag; no memory is shared.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("entering network namespace {name:?}: {e}")));
    }
    Ok(())
}
