//! Running commands, with the command line in every error.

use anyhow::{bail, Context as _, Result};
use std::process::{Command, Output, Stdio};

pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd`, failing with its stderr unless it exits 0. Returns stdout.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = output(cmd)?;
    if !out.status.success() {
        bail!("`{}` failed ({}): {}", describe(cmd), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn output(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null()).output().with_context(|| format!("running `{}`", describe(cmd)))
}

/// Runs with inherited stdout/stderr (long builds the user should see).
pub fn run_visible(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running `{}`", describe(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", describe(cmd));
    }
    Ok(())
}

/// `cmd args...` as a Command.
pub fn cmd(program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
}

/// `ip args...` (iproute2).
pub fn ip(args: &[&str]) -> Result<String> {
    run(&mut cmd("ip", args))
}

/// `ip netns exec NS program args...`
pub fn in_ns(ns: &str, program: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, program]).args(args);
    c
}
