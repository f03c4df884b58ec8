//! The control socket: the CLI asks the running agent (the one owner of the
//! maps) to change metrics. A Unix stream socket, mode 0600, one JSON request
//! per line and one JSON response per line.

use anyhow::{anyhow, bail, Context as _, Result};
use common::Rtax;
use serde::{Deserialize, Serialize};
use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::IpAddr,
    os::unix::{fs::PermissionsExt as _, net::UnixStream},
    path::Path,
    time::{Duration, Instant},
};
use tokio::sync::{mpsc, oneshot};

pub const DEFAULT_SOCKET: &str = "/run/cowroute/control.sock";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    MetricsSet {
        dest: String,
        metric: String,
        value: u64,
        expires: Option<u64>,
    },
    MetricsReset {
        dest: String,
    },
    MetricsShow {
        dest: Option<String>,
    },
    Stats,
    /// Fault injection for the crash tests (`panic`): refused unless the
    /// agent runs with COWROUTE_FAULT_INJECTION=1 in its environment.
    Fault {
        what: String,
    },
}

/// The environment switch that lets [`Request::Fault`] through.
pub const FAULT_INJECTION_ENV: &str = "COWROUTE_FAULT_INJECTION";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub data: Option<serde_json::Value>,
}

impl Response {
    pub fn ok(data: serde_json::Value) -> Response {
        Response { ok: true, error: None, data: Some(data) }
    }
    pub fn error(e: impl std::fmt::Display) -> Response {
        Response { ok: false, error: Some(e.to_string()), data: None }
    }
}

/// A destination: an IPv4 or IPv6 address.
pub fn parse_dest(s: &str) -> Result<IpAddr> {
    s.parse().map_err(|_| anyhow!("{s:?} is not an IPv4 or IPv6 address"))
}

/// A metric by its `ip route` name, and a value in the kernel's range.
pub fn parse_metric_value(name: &str, value: u64) -> Result<(Rtax, u32)> {
    let names: Vec<&str> = Rtax::ALL.iter().map(|m| m.name()).collect();
    let m = Rtax::from_name(name).ok_or_else(|| anyhow!("unknown metric {name:?} (one of: {})", names.join(", ")))?;
    if value > m.max_value() as u64 {
        bail!("{value} is out of range for {name} (at most {})", m.max_value());
    }
    Ok((m, value as u32))
}

pub use crate::rib::cow::MAX_EXPIRES_SECS;

/// When an override set at `now` expires: after `secs` (or `default`), never
/// for 0. A lifetime beyond [`MAX_EXPIRES_SECS`] is refused, never wrapped.
pub fn parse_expires(secs: Option<u64>, default: Duration, now: Instant) -> Result<Option<Instant>> {
    let d = secs.map(Duration::from_secs).unwrap_or(default);
    if d.as_secs() > MAX_EXPIRES_SECS {
        bail!("--expires {} is too long (at most {MAX_EXPIRES_SECS} seconds; 0 means until reset)", d.as_secs());
    }
    if d.is_zero() {
        return Ok(None);
    }
    now.checked_add(d).map(Some).ok_or_else(|| anyhow!("--expires {}: beyond this clock's range", d.as_secs()))
}

/// A request and where its answer goes, for the daemon's one writer.
pub type Call = (Request, oneshot::Sender<Response>);

/// Serves the bound socket: each request is handed to the daemon's loop over
/// `calls`, and its answer written back.
pub async fn serve(listener: tokio::net::UnixListener, calls: mpsc::Sender<Call>) -> Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let calls = calls.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, calls).await {
                tracing::debug!(error = %e, "control connection");
            }
        });
    }
}

/// The socket's file: removed when this is dropped, whatever way the agent
/// exits.
pub struct SocketFile(std::path::PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Binds the control socket (mode 0600), replacing a stale one; refuses when
/// another agent is listening there.
pub fn bind(path: &Path) -> Result<(tokio::net::UnixListener, SocketFile)> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            bail!("another agent is listening on {}", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing the stale socket {}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    let file = SocketFile(path.to_owned());
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok((listener, file))
}

async fn connection(stream: tokio::net::UnixStream, calls: mpsc::Sender<Call>) -> Result<()> {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
    let (read, mut write) = stream.into_split();
    let mut lines = tokio::io::BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        let response = match serde_json::from_str::<Request>(&line) {
            Ok(req) => {
                let (tx, rx) = oneshot::channel();
                calls.send((req, tx)).await.map_err(|_| anyhow!("agent stopping"))?;
                rx.await.unwrap_or_else(|_| Response::error("agent stopping"))
            }
            Err(e) => Response::error(format!("bad request: {e}")),
        };
        let mut out = serde_json::to_vec(&response)?;
        out.push(b'\n');
        write.write_all(&out).await?;
    }
    Ok(())
}

/// A blocking client: the CLI, tests and benches.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    pub fn connect(path: &Path) -> Result<Client> {
        let stream = UnixStream::connect(path)
            .map_err(|e| anyhow!("no agent running: cannot connect to the control socket {} ({e})", path.display()))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Client { reader: BufReader::new(stream.try_clone()?), writer: stream })
    }

    /// Sends one request; an error response becomes an error.
    pub fn call(&mut self, req: &Request) -> Result<serde_json::Value> {
        let mut line = serde_json::to_vec(req)?;
        line.push(b'\n');
        self.writer.write_all(&line)?;
        let mut answer = String::new();
        if self.reader.read_line(&mut answer)? == 0 {
            bail!("the agent closed the control connection");
        }
        let r: Response = serde_json::from_str(&answer).context("bad response from the agent")?;
        match (r.ok, r.error) {
            (true, _) => Ok(r.data.unwrap_or(serde_json::Value::Null)),
            (false, e) => Err(anyhow!(e.unwrap_or_else(|| "request failed".into()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_stable_wire_form() {
        let r = Request::MetricsSet { dest: "10.2.0.2".into(), metric: "mtu".into(), value: 1300, expires: Some(60) };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, r#"{"op":"metrics_set","dest":"10.2.0.2","metric":"mtu","value":1300,"expires":60}"#);
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
    }

    #[test]
    fn input_is_checked_against_the_kernel_ranges() {
        assert!(parse_dest("10.0.0.1").is_ok());
        assert!(parse_dest("2001:db8::1").is_ok());
        assert!(parse_dest("10.0.0.0/24").unwrap_err().to_string().contains("not an IPv4 or IPv6 address"));
        assert_eq!(parse_metric_value("mtu", 65520).unwrap(), (Rtax::Mtu, 65520));
        assert!(parse_metric_value("mtu", 65521).unwrap_err().to_string().contains("at most 65520"));
        assert!(parse_metric_value("advmss", 65496).unwrap_err().to_string().contains("at most 65495"));
        assert!(parse_metric_value("hoplimit", 256).unwrap_err().to_string().contains("at most 255"));
        assert!(parse_metric_value("mtux", 1).unwrap_err().to_string().contains("unknown metric \"mtux\""));
        assert!(parse_metric_value("rtt", 1 << 33).is_err());
    }

    #[test]
    fn expiries_are_bounded_never_overflowed() {
        let now = Instant::now();
        let default = Duration::from_secs(600);
        assert_eq!(parse_expires(None, default, now).unwrap(), Some(now + default));
        assert_eq!(parse_expires(Some(0), default, now).unwrap(), None);
        assert_eq!(parse_expires(Some(MAX_EXPIRES_SECS), default, now).unwrap(), Some(now + Duration::from_secs(MAX_EXPIRES_SECS)));
        for secs in [MAX_EXPIRES_SECS + 1, u64::MAX / 2, u64::MAX] {
            let e = parse_expires(Some(secs), default, now).unwrap_err().to_string();
            assert!(e.contains("too long"), "{e}");
        }
    }
}
