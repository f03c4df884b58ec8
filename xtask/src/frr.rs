//! FRR (zebra, bgpd) and ExaBGP in lab namespaces: the routing stack an
//! operator runs cowroute under, and a BGP speaker to feed it. Debian's
//! packages (`frr`, `exabgp`: `cargo xtask setup` installs them). Each
//! instance lives in its own directory (config, sockets, pid files, logs)
//! and is stopped when dropped.

use crate::sh;
use anyhow::{bail, Context, Result};
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

const FRR_DAEMONS: &str = "/usr/lib/frr";

/// The uid and gid FRR's daemons drop to (they must own the run directory).
fn frr_ids() -> Result<(u32, u32)> {
    let id = |flag: &str| -> Result<u32> {
        let out =
            sh::run(&mut sh::cmd("id", &[flag, "frr"])).context("the frr user (is Debian's frr package installed? cargo xtask setup)")?;
        Ok(out.trim().parse()?)
    };
    Ok((id("-u")?, id("-g")?))
}

/// zebra and bgpd in one namespace.
pub struct Frr {
    pub dir: PathBuf,
    pub ns: String,
    daemons: Vec<&'static str>,
}

impl Frr {
    /// Starts zebra (with `zebra_args`, e.g. `-M dplane_fpm_nl`) and bgpd in
    /// `ns`, configured with `zebra_conf` and `bgpd_conf`, in `dir`.
    pub fn start(ns: &str, dir: &Path, zebra_conf: &str, zebra_args: &[&str], bgpd_conf: &str) -> Result<Frr> {
        if !Path::new(FRR_DAEMONS).join("zebra").exists() {
            bail!("FRR is not installed ({FRR_DAEMONS}/zebra missing): run `cargo xtask setup`");
        }
        std::fs::create_dir_all(dir)?;
        let (uid, gid) = frr_ids()?;
        let mut frr = Frr { dir: dir.to_path_buf(), ns: ns.to_string(), daemons: Vec::new() };
        for (name, conf) in [("zebra", zebra_conf), ("bgpd", bgpd_conf)] {
            let (cfg, log) = (dir.join(format!("{name}.conf")), dir.join(format!("{name}.log")));
            std::fs::write(&cfg, conf)?;
            std::fs::write(&log, "")?;
            for p in [&cfg, &log] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid))?;
            }
        }
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
        let zebra_extra: Vec<&str> = zebra_args.to_vec();
        for (name, extra) in [("zebra", zebra_extra), ("bgpd", vec!["-p", "179"])] {
            let d = dir.display();
            let mut args: Vec<String> = vec![
                "-d".into(),
                "-N".into(),
                ns.into(),
                "-f".into(),
                format!("{d}/{name}.conf"),
                "-i".into(),
                format!("{d}/{name}.pid"),
                "-z".into(),
                format!("{d}/zserv.api"),
                "--vty_socket".into(),
                d.to_string(),
                "--log".into(),
                format!("file:{d}/{name}.log"),
            ];
            args.extend(extra.iter().map(|s| s.to_string()));
            let argv: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
            sh::run(&mut sh::in_ns(ns, &format!("{FRR_DAEMONS}/{name}"), &argv)).with_context(|| format!("starting {name} in {ns}"))?;
            frr.daemons.push(name);
            // bgpd connects to zebra's socket: wait for it.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !dir.join(format!("{name}.vty")).exists() {
                if Instant::now() > deadline {
                    bail!("{name} did not start in {ns}: {}", std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(frr)
    }

    /// `vtysh -c CMD` against this instance.
    pub fn vtysh(&self, cmd: &str) -> Result<String> {
        let vty = self.dir.display().to_string();
        sh::run(&mut sh::in_ns(&self.ns, "vtysh", &["-N", &self.ns, "--vty_socket", &vty, "-c", cmd]))
    }

    fn pid(&self, daemon: &str) -> Option<i32> {
        std::fs::read_to_string(self.dir.join(format!("{daemon}.pid"))).ok()?.trim().parse().ok()
    }

    /// Stops `daemon` (SIGKILL: as a crash would) and returns once it is gone.
    pub fn kill(&mut self, daemon: &str) {
        if let Some(pid) = self.pid(daemon) {
            unsafe { libc::kill(pid, libc::SIGKILL) };
            wait_gone(pid);
        }
        self.daemons.retain(|d| *d != daemon);
    }

    /// A daemon's log, for a failing test's message.
    pub fn log(&self, daemon: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{daemon}.log"))).unwrap_or_default()
    }
}

fn wait_gone(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while unsafe { libc::kill(pid, 0) } == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        // bgpd first, so zebra need not tell it; SIGTERM lets zebra remove its routes.
        for daemon in self.daemons.clone().iter().rev() {
            if let Some(pid) = self.pid(daemon) {
                unsafe { libc::kill(pid, libc::SIGTERM) };
                wait_gone(pid);
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// One BGP session ExaBGP holds: the peer's address and ours.
#[derive(Debug, Clone)]
pub struct Session {
    pub peer: String,
    pub local: String,
    pub ipv6: bool,
}

/// ExaBGP in a namespace: announces `first` (API commands such as
/// `neighbor 10.2.0.1 announce route 10.9.0.0/24 next-hop 10.2.0.2`) at
/// once, and `then` when [`ExaBgp::go_on`] is called.
pub struct ExaBgp {
    child: Child,
    trigger: PathBuf,
    pub dir: PathBuf,
}

/// The API process: prints the first batch, then the second once the
/// trigger file appears (ExaBGP reads its stdout).
const ANNOUNCER: &str = r#"import os, sys, time
dir = sys.argv[1]
def emit(name):
    with open(os.path.join(dir, name)) as f:
        for line in f:
            sys.stdout.write(line)
    sys.stdout.flush()
emit("first.txt")
while not os.path.exists(os.path.join(dir, "go")):
    time.sleep(0.05)
emit("then.txt")
open(os.path.join(dir, "done"), "w").close()
while True:
    time.sleep(1)
"#;

impl ExaBgp {
    pub fn start(
        ns: &str,
        dir: &Path,
        local_as: u32,
        peer_as: u32,
        sessions: &[Session],
        first: &[String],
        then: &[String],
    ) -> Result<ExaBgp> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("announce.py"), ANNOUNCER)?;
        std::fs::write(dir.join("first.txt"), first.iter().map(|l| format!("{l}\n")).collect::<String>())?;
        std::fs::write(dir.join("then.txt"), then.iter().map(|l| format!("{l}\n")).collect::<String>())?;
        let d = dir.display();
        let router_id = sessions.iter().find(|s| !s.ipv6).map_or("192.0.2.1", |s| s.local.as_str());
        let mut conf = format!(
            "process announcer {{\n  run /usr/bin/python3 {d}/announce.py {d};\n  encoder text;\n}}\n\
             template {{\n  neighbor base {{\n    local-as {local_as};\n    peer-as {peer_as};\n    router-id {router_id};\n    \
             api {{ processes [ announcer ]; }}\n  }}\n}}\n"
        );
        for s in sessions {
            let family = if s.ipv6 { "ipv6 unicast" } else { "ipv4 unicast" };
            conf += &format!("neighbor {} {{ inherit base; local-address {}; family {{ {family}; }} }}\n", s.peer, s.local);
        }
        std::fs::write(dir.join("exabgp.conf"), conf)?;
        let log = std::fs::File::create(dir.join("exabgp.out"))?;
        use std::os::unix::process::CommandExt;
        let child = Command::new("ip")
            // Its own process group: the announcer it runs is stopped with it.
            .process_group(0)
            .args(["netns", "exec", ns, "exabgp"])
            .arg(dir.join("exabgp.conf"))
            .env("exabgp.daemon.user", "root")
            .env("exabgp.api.cli", "false")
            // No "done" per command back to the announcer, which never reads
            // them: 13,000 of them fill the pipe and ExaBGP stops.
            .env("exabgp.api.ack", "false")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting exabgp (is Debian's exabgp package installed? cargo xtask setup)")?;
        Ok(ExaBgp { child, trigger: dir.join("go"), dir: dir.to_path_buf() })
    }

    /// Sends the second batch; returns once the announcer has printed it.
    pub fn go_on(&self) -> Result<()> {
        std::fs::write(&self.trigger, "")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.dir.join("done").exists() {
            if Instant::now() > deadline {
                bail!("exabgp's announcer did not send the second batch");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(self.dir.join("exabgp.out")).unwrap_or_default()
    }
}

impl Drop for ExaBgp {
    fn drop(&mut self) {
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}
