//! `cargo xtask setup`: installs, only when missing, what building and
//! testing cowroute needs. A second run only checks and says what it found.

use anyhow::{bail, Context as _, Result};
use std::{
    path::{Path, PathBuf},
    process::Command,
};
use xtask::sh;

const DEBIAN_PACKAGES: &[&str] =
    &["bpftool", "iproute2", "tcpdump", "iputils-ping", "ethtool", "procps", "iputils-tracepath", "frr", "exabgp"];
const BPF_LINKER_VERSION: &str = "0.13.0";

fn say(what: &str, state: &str) {
    println!("setup: {what:<24} {state}");
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_owned()
}

pub fn setup() -> Result<()> {
    rust_src()?;
    bpf_linker()?;
    debian_packages()?;
    bpffs()?;
    Ok(())
}

fn nightly_sysroot() -> Result<PathBuf> {
    let out = sh::run(&mut sh::cmd("rustc", &["+nightly", "--print", "sysroot"]))
        .context("the nightly toolchain is needed for the eBPF crate")?;
    Ok(PathBuf::from(out.trim()))
}

fn rust_src() -> Result<()> {
    let sysroot = nightly_sysroot()?;
    let core = sysroot.join("lib/rustlib/src/rust/library/core/src/lib.rs");
    if core.exists() {
        say("nightly rust-src", "present");
        return Ok(());
    }
    say("nightly rust-src", "missing: rustup component add rust-src --toolchain nightly");
    if sh::run_visible(&mut sh::cmd("rustup", &["component", "add", "rust-src", "--toolchain", "nightly"])).is_err() {
        let tarball = workspace_root().join("../shared/toolchain/rust-src-1.97.0-nightly-2026-05-19.tar.xz");
        println!("setup: rustup could not add rust-src; unpacking the fallback {}", tarball.display());
        if !tarball.exists() {
            bail!("rust-src is missing, rustup failed, and the fallback {} does not exist", tarball.display());
        }
        sh::run(Command::new("tar").arg("-xJf").arg(&tarball).arg("-C").arg(sysroot.join("lib/rustlib")))?;
    }
    if !core.exists() {
        bail!("rust-src still missing at {}", core.display());
    }
    say("nightly rust-src", "installed");
    Ok(())
}

fn bpf_linker_ok() -> bool {
    sh::run(&mut sh::cmd("bpf-linker", &["--version"])).is_ok_and(|v| v.contains(BPF_LINKER_VERSION))
}

fn bpf_linker() -> Result<()> {
    if bpf_linker_ok() {
        say("bpf-linker", &format!("{BPF_LINKER_VERSION} present"));
        return Ok(());
    }
    say("bpf-linker", "missing: building it against nightly's LLVM (about a minute)");
    // bpf-linker must use the same LLVM as the nightly rustc: link it
    // against the nightly's own libLLVM.
    let lib = nightly_sysroot()?.join("lib");
    let so = std::fs::read_dir(&lib)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so"))
        .with_context(|| format!("no libLLVM.so in {}", lib.display()))?;
    let prefix = PathBuf::from("/opt/rustc-llvm");
    std::fs::create_dir_all(prefix.join("lib"))?;
    for name in ["libLLVM.so", so.as_str()] {
        let link = prefix.join("lib").join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(lib.join(&so), &link)?;
    }
    sh::run_visible(
        Command::new("cargo")
            .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION, "--locked", "--no-default-features", "--features", "llvm-22"])
            .env("LLVM_PREFIX", &prefix),
    )?;
    if !bpf_linker_ok() {
        bail!("bpf-linker was installed but `bpf-linker --version` does not report {BPF_LINKER_VERSION} (is ~/.cargo/bin on PATH?)");
    }
    say("bpf-linker", "installed");
    Ok(())
}

fn installed(pkg: &str) -> bool {
    sh::run(&mut sh::cmd("dpkg-query", &["-W", "-f=${Status}", pkg])).is_ok_and(|s| s.contains("install ok installed"))
}

fn debian_packages() -> Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        say("Debian packages", &format!("present ({})", DEBIAN_PACKAGES.join(", ")));
        return Ok(());
    }
    say("Debian packages", &format!("installing {}", missing.join(", ")));
    sh::run_visible(&mut sh::cmd("apt-get", &["update", "-q"]))?;
    let mut c = sh::cmd("apt-get", &["install", "-y", "-q", "--no-install-recommends"]);
    c.args(&missing).env("DEBIAN_FRONTEND", "noninteractive");
    sh::run_visible(&mut c)?;
    if missing.contains(&"frr") {
        // The package may start its service in the root namespace; the labs
        // run their own zebra and bgpd in theirs, and the host's stays untouched.
        let _ = sh::run(&mut sh::cmd("/usr/lib/frr/frrinit.sh", &["stop"]));
    }
    Ok(())
}

fn bpffs() -> Result<()> {
    let fs = sh::run(&mut sh::cmd("stat", &["-f", "-c", "%T", "/sys/fs/bpf"])).unwrap_or_default();
    if fs.trim() == "bpf_fs" {
        say("bpffs", "mounted at /sys/fs/bpf");
        return Ok(());
    }
    sh::run(&mut sh::cmd("mount", &["-t", "bpf", "bpf", "/sys/fs/bpf"])).context("mounting bpffs at /sys/fs/bpf")?;
    say("bpffs", "mounted it at /sys/fs/bpf");
    Ok(())
}
