//! Makes sure a BPF filesystem is mounted where the maps are pinned.

use anyhow::{bail, Context as _, Result};
use std::{ffi::CString, path::Path};

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else { return false };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC }
}

/// Mounts bpffs at `/sys/fs/bpf` when the pin directory is not on one yet,
/// then creates the pin directory.
pub fn ensure_pin_dir(pin_dir: &Path) -> Result<()> {
    let mount_point = Path::new("/sys/fs/bpf");
    if !pin_dir.starts_with(mount_point) {
        bail!("pin directory {} is not under {}", pin_dir.display(), mount_point.display());
    }
    if !is_bpffs(mount_point) {
        tracing::info!("bpffs is not mounted at /sys/fs/bpf: mounting it");
        let target = CString::new("/sys/fs/bpf").unwrap();
        let fstype = CString::new("bpf").unwrap();
        let rc = unsafe { libc::mount(fstype.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            bail!("bpffs is not mounted at /sys/fs/bpf and mounting it failed: {err} (run as root: mount -t bpf bpf /sys/fs/bpf)");
        }
    }
    std::fs::create_dir_all(pin_dir).with_context(|| format!("creating pin directory {}", pin_dir.display()))?;
    Ok(())
}
