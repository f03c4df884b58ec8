//! Entering a named network namespace (`ip netns` style, /run/netns/NAME).

use anyhow::{Context as _, Result};
use std::{fs::File, os::fd::AsRawFd};

/// Moves the calling thread into network namespace `name`. Call it before any
/// other thread exists: threads spawned later inherit it.
pub fn enter(name: &str) -> Result<()> {
    let path = format!("/run/netns/{name}");
    let f = File::open(&path).with_context(|| format!("network namespace {name:?} ({path})"))?;
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("entering network namespace {name:?}"));
    }
    Ok(())
}
