//! CPU affinity: the bench keeps the generator, the router's NAPI thread
//! and BPF_PROG_TEST_RUN samples each on a CPU of their own.

use anyhow::{Context as _, Result};

/// Pins task `pid` (0: the calling thread, and the threads it starts from
/// now on) to `cpus`.
pub fn set_affinity(pid: i32, cpus: &[usize]) -> Result<()> {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| format!("pinning task {pid} to CPUs {cpus:?}"));
        }
    }
    Ok(())
}

/// The CPUs the calling thread may run on.
pub fn affinity() -> Result<Vec<usize>> {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok((0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect())
    }
}
