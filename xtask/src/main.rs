//! `cargo xtask`: setup, build, run (the lab demo or host NICs), test, lab.

mod demo;
mod setup;

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};
use std::{path::PathBuf, process::Command};
use xtask::{lab::Lab, sh};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing: nightly rust-src, bpf-linker, Debian packages; mount bpffs.
    Setup,
    /// Build the agent and its XDP program.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Without --iface: build a veth lab, forward traffic through it with
    /// XDP alone, print what happened, tear it down. With --iface: run the
    /// agent on host NICs.
    Run {
        /// Host interfaces to attach to (needs --config).
        #[arg(long = "iface")]
        ifaces: Vec<String>,
        #[arg(long)]
        config: Option<PathBuf>,
        /// native | generic | auto
        #[arg(long, default_value = "auto")]
        xdp_mode: String,
    },
    /// cargo fmt --check, clippy -D warnings, then unit tests, BPF_PROG_TEST_RUN
    /// cases and the veth-namespace labs (root).
    Test {
        /// Extra arguments for `cargo test` (a filter, --nocapture, ...).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Measure: program cost, lab throughput against kernel forwarding, COW
    /// latency, metrics memory. Writes target/bench/{report.md,bench.json,*.svg}.
    Bench {
        /// Smaller tables, fewer and shorter runs (under 2 minutes).
        #[arg(long)]
        quick: bool,
        /// One section alone, printed, no report.
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(xtask::BENCH_SECTIONS))]
        only: Option<String>,
    },
    /// Bring the lab up or down by hand.
    Lab {
        #[command(subcommand)]
        action: LabAction,
    },
}

#[derive(Subcommand)]
enum LabAction {
    Up {
        #[arg(long, default_value = "lab")]
        tag: String,
    },
    Down {
        #[arg(long, default_value = "lab")]
        tag: String,
    },
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn require_root(what: &str) -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("{what} needs root (namespaces, XDP, BPF maps): run it as root");
    }
    Ok(())
}

fn cargo(args: &[&str]) -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.args(args).current_dir(setup::workspace_root());
    c
}

pub fn build(release: bool) -> Result<PathBuf> {
    let mut args = vec!["build", "-p", "cowroute", "--bins"];
    if release {
        args.push("--release");
    }
    sh::run_visible(&mut cargo(&args))?;
    Ok(setup::workspace_root().join("target").join(if release { "release" } else { "debug" }).join("cowroute"))
}

fn real_main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Setup => setup::setup(),
        Cmd::Build { release } => {
            setup::setup()?;
            build(release).map(|p| println!("built {}", p.display()))
        }
        Cmd::Run { ifaces, config, xdp_mode } => {
            require_root("cargo xtask run")?;
            setup::setup()?;
            let bin = build(true)?;
            if ifaces.is_empty() {
                return demo::run(&bin, &xdp_mode);
            }
            let Some(config) = config else {
                bail!("--iface needs --config FILE (the route list; see README.md)");
            };
            if ifaces.iter().any(|i| i == "eth0") {
                bail!("refusing to attach to eth0: it is this machine's own link");
            }
            let mut c = Command::new(&bin);
            c.arg("run").arg("--config").arg(config).args(["--xdp-mode", &xdp_mode]);
            for i in &ifaces {
                c.args(["--iface", i]);
            }
            sh::run_visible(&mut c)
        }
        Cmd::Test { args } => {
            require_root("cargo xtask test")?;
            setup::setup()?;
            // Style and lints first: a red one fails in seconds, not after the labs.
            sh::run_visible(&mut cargo(&["fmt", "--all", "--", "--check"])).context("cargo fmt --check: run `cargo fmt --all`")?;
            sh::run_visible(&mut cargo(&["clippy", "--all-targets", "--", "-D", "warnings"])).context("cargo clippy -D warnings")?;
            let bin = build(false)?;
            let mut c = cargo(&["test"]);
            c.args(&args).env("COWROUTE_BIN", &bin);
            sh::run_visible(&mut c)
        }
        Cmd::Bench { quick, only } => {
            require_root("cargo xtask bench")?;
            setup::setup()?;
            let bin = build(true)?;
            sh::run_visible(&mut cargo(&["build", "--release", "-p", "cowroute-tests", "--bin", "cowroute-bench"]))?;
            let bench = setup::workspace_root().join("target/release/cowroute-bench");
            let mut c = Command::new(bench);
            c.args(["--out", &setup::workspace_root().join("target/bench").display().to_string()]).env("COWROUTE_BIN", &bin);
            if quick {
                c.arg("--quick");
            }
            if let Some(section) = only {
                c.args(["--only", &section]);
            }
            sh::run_visible(&mut c)
        }
        Cmd::Lab { action } => {
            require_root("cargo xtask lab")?;
            match action {
                LabAction::Up { tag } => {
                    let lab = Lab::up(&tag)?;
                    println!("lab {tag} is up: namespaces {}, {}, {}", lab.gen, lab.rtr, lab.sink);
                    println!("router config for cowroute:\n{}", lab.router_config());
                    std::mem::forget(lab);
                    Ok(())
                }
                LabAction::Down { tag } => {
                    Lab::named(&tag)?.down()?;
                    println!("lab {tag} is down");
                    Ok(())
                }
            }
        }
    }
}
