//! One writer per data plane: an agent holds an exclusive lock for its pin
//! directory as long as it runs, so that two agents (say, started with
//! different control sockets) never write the same maps. bpffs holds only
//! pins, so the lock file lives under /run/cowroute, named after the pin
//! directory; the kernel drops the lock with the process, however it ends.

use anyhow::{bail, Context as _, Result};
use std::{
    fs::File,
    io::{Read as _, Seek as _, Write as _},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

/// Where the locks live.
pub const LOCK_DIR: &str = "/run/cowroute/locks";

/// The held lock; released when dropped or when the process ends.
#[derive(Debug)]
pub struct PinLock {
    _file: File,
    pub path: PathBuf,
}

/// The lock file for `pin_dir`: its path with `/` turned into `_`.
pub fn lock_path(pin_dir: &Path) -> PathBuf {
    let name: String = pin_dir.to_string_lossy().trim_matches('/').chars().map(|c| if c == '/' { '_' } else { c }).collect();
    Path::new(LOCK_DIR).join(format!("{name}.lock"))
}

impl PinLock {
    /// Takes the lock for `pin_dir`, or says which agent holds it.
    pub fn acquire(pin_dir: &Path) -> Result<PinLock> {
        std::fs::create_dir_all(LOCK_DIR).with_context(|| format!("creating {LOCK_DIR}"))?;
        let path = lock_path(pin_dir);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            bail!(
                "another agent (pid {}) owns the data plane pinned under {}: one writer per pin directory (stop it, or use another --pin-dir)",
                holder.trim(),
                pin_dir.display()
            );
        }
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        Ok(PinLock { _file: file, path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_for_one_pin_directory_is_refused() {
        let dir = Path::new("/sys/fs/bpf/cowroute-lock-test").join(std::process::id().to_string());
        let first = PinLock::acquire(&dir).unwrap();
        let err = PinLock::acquire(&dir).unwrap_err().to_string();
        assert!(err.contains(&format!("pid {}", std::process::id())) && err.contains("one writer"), "{err}");
        drop(first);
        let again = PinLock::acquire(&dir).unwrap();
        let _ = std::fs::remove_file(&again.path);
    }
}
