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

/// One FRR daemon of an instance: its name, config and extra arguments.
#[derive(Debug, Clone)]
pub struct Daemon {
    pub name: &'static str,
    pub conf: String,
    pub args: Vec<String>,
    /// Whether it holds CAP_NET_ADMIN over its namespace (see
    /// [`Daemon::without_net_admin`]).
    pub net_admin: bool,
}

impl Daemon {
    pub fn new(name: &'static str, conf: &str, args: &[&str]) -> Daemon {
        Daemon { name, conf: conf.to_string(), args: args.iter().map(|a| a.to_string()).collect(), net_admin: true }
    }

    /// This daemon run in a user namespace of its own (every id mapped to
    /// itself): root there, but without CAP_NET_ADMIN over the network
    /// namespace, which the host's user namespace owns. It still reads the
    /// kernel (dumps, events), but every change it asks of rtnetlink fails
    /// with EPERM: a zebra run so keeps no route of its own in the kernel.
    /// (Debian's FRR 8.4 has no switch to keep its kernel dataplane from
    /// installing what it sends over FPM.)
    pub fn without_net_admin(self) -> Daemon {
        Daemon { net_admin: false, ..self }
    }
}

/// `python3 -c USERNS_EXEC PROGRAM ARGS...`: PROGRAM in a new user
/// namespace with the identity map. A process cannot map ids it has no
/// capability for in the parent namespace once it has left it, so a forked
/// helper, still in the parent, writes the maps; then PROGRAM is exec'd.
/// (util-linux's `unshare --map-users` needs newuidmap and /etc/subuid.)
const USERNS_EXEC: &str = r#"import ctypes, os, sys
CLONE_NEWUSER = 0x10000000
parent = os.getpid()
r, w = os.pipe()
if os.fork() == 0:
    os.close(w)
    if os.read(r, 1) != b"x":
        os._exit(1)
    for f in ("uid_map", "gid_map"):
        with open(f"/proc/{parent}/{f}", "w") as m:
            m.write("0 0 4294967295\n")
    os._exit(0)
os.close(r)
if ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWUSER) != 0:
    sys.exit(f"unshare(CLONE_NEWUSER): {os.strerror(ctypes.get_errno())}")
os.write(w, b"x")
if os.wait()[1] != 0:
    sys.exit("could not write the new user namespace's id maps")
os.execv(sys.argv[1], sys.argv[1:])
"#;

/// FRR daemons (zebra first) in one namespace.
pub struct Frr {
    pub dir: PathBuf,
    pub ns: String,
    specs: Vec<Daemon>,
    running: Vec<&'static str>,
}

impl Frr {
    /// Starts `daemons` in order (zebra first: the others connect to it) in
    /// `ns`, each with its config, in `dir`.
    pub fn start(ns: &str, dir: &Path, daemons: &[Daemon]) -> Result<Frr> {
        let mut frr = Frr::new(ns, dir, daemons)?;
        for d in daemons {
            frr.start_daemon(d.name)?;
        }
        Ok(frr)
    }

    /// An instance of `daemons` in `ns` with its configs written in `dir`,
    /// none started yet ([`Frr::start_daemon`] each, zebra first).
    pub fn new(ns: &str, dir: &Path, daemons: &[Daemon]) -> Result<Frr> {
        if !Path::new(FRR_DAEMONS).join("zebra").exists() {
            bail!("FRR is not installed ({FRR_DAEMONS}/zebra missing): run `cargo xtask setup`");
        }
        std::fs::create_dir_all(dir)?;
        let (uid, gid) = frr_ids()?;
        for d in daemons {
            let (cfg, log) = (dir.join(format!("{}.conf", d.name)), dir.join(format!("{}.log", d.name)));
            std::fs::write(&cfg, &d.conf)?;
            std::fs::write(&log, "")?;
            for p in [&cfg, &log] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid))?;
            }
        }
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
        Ok(Frr { dir: dir.to_path_buf(), ns: ns.to_string(), specs: daemons.to_vec(), running: Vec::new() })
    }

    /// Starts (again) daemon `name` of this instance; returns once its vty is up.
    pub fn start_daemon(&mut self, name: &str) -> Result<()> {
        let spec = self.specs.iter().find(|d| d.name == name).cloned().with_context(|| format!("no FRR daemon {name} here"))?;
        let d = self.dir.display();
        let vty = self.dir.join(format!("{name}.vty"));
        let _ = std::fs::remove_file(&vty);
        let mut args: Vec<String> = [
            "-d",
            "-N",
            &self.ns,
            "-f",
            &format!("{d}/{name}.conf"),
            "-i",
            &format!("{d}/{name}.pid"),
            "-z",
            &format!("{d}/zserv.api"),
            "--vty_socket",
            &d.to_string(),
            "--log",
            &format!("file:{d}/{name}.log"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(spec.args.iter().cloned());
        let program = format!("{FRR_DAEMONS}/{name}");
        let mut argv: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let mut start = if spec.net_admin {
            sh::in_ns(&self.ns, &program, &argv)
        } else {
            argv.splice(0..0, ["-c", USERNS_EXEC, &program]);
            sh::in_ns(&self.ns, "python3", &argv)
        };
        sh::run(&mut start).with_context(|| format!("starting {name} in {}", self.ns))?;
        self.running.push(spec.name);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !vty.exists() {
            if Instant::now() > deadline {
                bail!("{name} did not start in {}: {}", self.ns, self.log(name));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// `vtysh -c CMD` against this instance. (Not `-N`: vtysh would look
    /// for the daemons' sockets in a pathspace below `--vty_socket`.)
    pub fn vtysh(&self, cmd: &str) -> Result<String> {
        let vty = self.dir.display().to_string();
        sh::run(&mut sh::in_ns(&self.ns, "vtysh", &["--vty_socket", &vty, "-c", cmd]))
    }

    /// `configure terminal` then each of `lines`, against this instance.
    pub fn configure(&self, lines: &[&str]) -> Result<String> {
        let vty = self.dir.display().to_string();
        let mut argv = vec!["--vty_socket", vty.as_str(), "-c", "configure terminal"];
        for l in lines {
            argv.extend(["-c", l]);
        }
        sh::run(&mut sh::in_ns(&self.ns, "vtysh", &argv))
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
        self.running.retain(|d| *d != daemon);
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
        for daemon in self.running.clone().iter().rev() {
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
# Gone with ExaBGP: it runs this in a session of its own, beyond its group.
parent = os.getppid()
def alive():
    if os.getppid() != parent:
        os._exit(0)
def emit(name):
    with open(os.path.join(dir, name)) as f:
        for line in f:
            sys.stdout.write(line)
    sys.stdout.flush()
emit("first.txt")
while not os.path.exists(os.path.join(dir, "go")):
    alive()
    time.sleep(0.05)
emit("then.txt")
open(os.path.join(dir, "done"), "w").close()
while True:
    alive()
    time.sleep(0.2)
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
