//! A running `cowroute run`: started, waited for until it logs "ready",
//! stopped with SIGTERM on drop. Its log is kept for failure messages.

use anyhow::{anyhow, bail, Context as _, Result};
use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

pub struct AgentProc {
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    lines: mpsc::Receiver<String>,
    pub pin_dir: PathBuf,
    /// The agent's control socket: `/run/cowroute/<pin dir name>.sock`.
    pub control_socket: PathBuf,
}

/// The agent binary: `$COWROUTE_BIN`, else `target/{debug,release}/cowroute`.
pub fn cowroute_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("COWROUTE_BIN") {
        return Ok(PathBuf::from(p));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    for profile in ["debug", "release"] {
        let p = root.join("target").join(profile).join("cowroute");
        if p.exists() {
            return Ok(p);
        }
    }
    bail!("the cowroute binary is not built: run `cargo build -p cowroute` (cargo xtask test does) or set COWROUTE_BIN")
}

impl AgentProc {
    /// Starts `cowroute --netns NS --pin-dir PIN run ARGS...` and waits for "ready".
    pub fn start(netns: &str, pin_dir: &Path, run_args: &[String], echo: bool) -> Result<AgentProc> {
        Self::start_within(netns, pin_dir, run_args, echo, Duration::from_secs(30))
    }

    /// As [`AgentProc::start`], waiting up to `ready_within` for "ready".
    pub fn start_within(netns: &str, pin_dir: &Path, run_args: &[String], echo: bool, ready_within: Duration) -> Result<AgentProc> {
        Self::start_under(&[], netns, pin_dir, run_args, echo, ready_within)
    }

    /// As [`AgentProc::start_within`], run by `wrapper` (a command and its
    /// arguments, e.g. `setpriv --bounding-set ... --`) when it is not empty.
    pub fn start_under(
        wrapper: &[String],
        netns: &str,
        pin_dir: &Path,
        run_args: &[String],
        echo: bool,
        ready_within: Duration,
    ) -> Result<AgentProc> {
        let bin = cowroute_bin()?;
        let name = pin_dir.file_name().map_or("cowroute".into(), |n| n.to_string_lossy().into_owned());
        let control_socket = PathBuf::from(format!("/run/cowroute/{name}.sock"));
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.args(["--netns", netns, "--pin-dir"]).arg(pin_dir).arg("--control-socket").arg(&control_socket);
        cmd.arg("run").args(run_args);
        cmd.env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info,netlink_proto=error".into()));
        cmd.env("NO_COLOR", "1");
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("starting {}", bin.display()))?;
        let stderr = child.stderr.take().expect("piped");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, lines) = mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if echo {
                    eprintln!("  agent| {line}");
                }
                log2.lock().unwrap().push_str(&line);
                log2.lock().unwrap().push('\n');
                let _ = tx.send(line);
            }
        });
        let mut agent = AgentProc { child: Some(child), log, lines, pin_dir: pin_dir.to_owned(), control_socket };
        agent.wait_for_line("ready", ready_within)?;
        Ok(agent)
    }

    /// Waits for a log line containing `needle`.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Ok(line),
                Ok(_) => {}
                Err(_) => {
                    let status = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
                    bail!("agent did not log {needle:?} within {timeout:?} (exit status: {status:?}); log:\n{}", self.log())
                }
            }
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Waits up to `within` for the agent to end by itself (a crash).
    pub fn wait_exit(&mut self, within: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut().ok_or_else(|| anyhow!("agent already stopped"))?;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("the agent still runs after {within:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash would end it: nothing is cleaned up.
    pub fn kill(&mut self) -> Result<()> {
        let mut child = self.child.take().ok_or_else(|| anyhow!("agent already stopped"))?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// SIGTERM, then wait up to 10 s (SIGKILL after that). Returns the exit code.
    pub fn stop(&mut self) -> Result<i32> {
        let mut child = self.child.take().ok_or_else(|| anyhow!("agent already stopped"))?;
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status.code().unwrap_or(-1));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("agent ignored SIGTERM for 10 s; killed. Log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        // A failing test shows what the agent logged.
        if std::thread::panicking() {
            eprintln!("---- agent log ----\n{}", self.log());
        }
        if self.child.is_some() {
            let _ = self.stop();
        }
    }
}
