//! The control socket: the CLI asks the running agent (the one owner of the
//! maps) to change metrics. A Unix stream socket, mode 0600, one JSON request
//! per line and one JSON response per line.

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
    /// The kernel nexthop objects the agent carries (`show nexthop-objects`).
    NexthopObjects,
    /// The kernel's `ip rule` list and how the fast path carries each (`show rules`).
    Rules,
    /// Fault injection for the crash tests (`panic`): refused unless the
    /// agent runs with COWROUTE_FAULT_INJECTION=1 in its environment.
    Fault {
        what: String,
    },
}

/// The environment switch for fault injection: a comma list of faults,
/// [`FAULT_REQUESTS`] letting [`Request::Fault`] through.
pub const FAULT_INJECTION_ENV: &str = "COWROUTE_FAULT_INJECTION";

/// In [`FAULT_INJECTION_ENV`]: the control socket's `fault` requests.
pub const FAULT_REQUESTS: &str = "1";

/// A cold start's first trie batch call is refused (the kernel's EINVAL),
/// to test that its routes are written one by one instead.
pub const FAULT_REFUSE_TRIE_BATCH: &str = "refuse-trie-batch";

/// A [`Request::Fault`]: the next batch of IPv4 trie writes queued in a
/// turn (once a program reads the maps) is refused, its routes one by one
/// too, to test that they are owed and written again.
pub const FAULT_REFUSE_TRIE_TURN: &str = "refuse-trie-turn";

/// Whether the agent's environment turns on `fault` ([`FAULT_INJECTION_ENV`]).
pub fn fault_injected(fault: &str) -> bool {
    std::env::var(FAULT_INJECTION_ENV).is_ok_and(|list| list.split(',').any(|f| f.trim() == fault))
}

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

/// What the control protocol refuses or fails with: a request's fields
/// (parse), its size and pace (limits), who may ask (access), and the
/// socket itself. Rendered to the client as its message.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0:?} is not an IPv4 or IPv6 address")]
    BadAddress(String),
    #[error("unknown metric {0:?} (one of: {names})", names = metric_names())]
    UnknownMetric(String),
    #[error("{value} is out of range for {metric} (at most {max})")]
    OutOfRange { metric: String, value: u64, max: u32 },
    #[error("--expires {0} is too long (at most {MAX_EXPIRES_SECS} seconds; 0 means until reset)")]
    ExpiresTooLong(u64),
    #[error("--expires {0}: beyond this clock's range")]
    ExpiresBeyondClock(u64),
    /// A request line longer than [`MAX_REQUEST_BYTES`].
    #[error("a request longer than {MAX_REQUEST_BYTES} bytes")]
    TooLong,
    /// No complete request within [`IDLE_TIMEOUT`].
    #[error("idle for {IDLE_TIMEOUT:?}: closed")]
    Idle,
    #[error("bad group name {0:?}")]
    BadGroupName(String),
    #[error("--control-group {0:?}: no such group")]
    NoSuchGroup(String),
    #[error("another agent is listening on {}", .0.display())]
    InUse(std::path::PathBuf),
    /// Setting the socket up (its directory, file, mode, group).
    #[error("{what}")]
    Socket {
        what: String,
        #[source]
        error: std::io::Error,
    },
    #[error("no agent running: cannot connect to the control socket {} ({error})", .path.display())]
    NoAgent { path: std::path::PathBuf, error: std::io::Error },
    #[error("the agent closed the control connection")]
    Closed,
    #[error("agent stopping")]
    Stopping,
    #[error("bad response from the agent")]
    BadResponse(#[source] serde_json::Error),
    /// The agent refused the request: its message.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

fn metric_names() -> String {
    Rtax::ALL.iter().map(|m| m.name()).collect::<Vec<_>>().join(", ")
}

fn socket_error(what: String) -> impl FnOnce(std::io::Error) -> ControlError {
    move |error| ControlError::Socket { what, error }
}

/// A destination: an IPv4 or IPv6 address.
pub fn parse_dest(s: &str) -> Result<IpAddr, ControlError> {
    s.parse().map_err(|_| ControlError::BadAddress(s.to_string()))
}

/// A metric by its `ip route` name, and a value in the kernel's range.
pub fn parse_metric_value(name: &str, value: u64) -> Result<(Rtax, u32), ControlError> {
    let m = Rtax::from_name(name).ok_or_else(|| ControlError::UnknownMetric(name.to_string()))?;
    if value > m.max_value() as u64 {
        return Err(ControlError::OutOfRange { metric: name.to_string(), value, max: m.max_value() });
    }
    Ok((m, value as u32))
}

pub use crate::rib::cow::MAX_EXPIRES_SECS;

/// When an override set at `now` expires: after `secs` (or `default`), never
/// for 0. A lifetime beyond [`MAX_EXPIRES_SECS`] is refused, never wrapped.
pub fn parse_expires(secs: Option<u64>, default: Duration, now: Instant) -> Result<Option<Instant>, ControlError> {
    let d = secs.map(Duration::from_secs).unwrap_or(default);
    if d.as_secs() > MAX_EXPIRES_SECS {
        return Err(ControlError::ExpiresTooLong(d.as_secs()));
    }
    if d.is_zero() {
        return Ok(None);
    }
    now.checked_add(d).map(Some).ok_or(ControlError::ExpiresBeyondClock(d.as_secs()))
}

/// A request and where its answer goes, for the daemon's one writer.
pub type Call = (Request, oneshot::Sender<Response>);

/// A request line longer than this is refused and its connection closed.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// A connection with no complete request for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once; more are closed as they come.
pub const MAX_CONNECTIONS: usize = 64;

/// Who may talk to the agent: root, the agent's own user, and the members of
/// `group` when one is configured (`--control-group`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Access {
    pub group: Option<u32>,
}

impl Access {
    /// The peer's credentials (SO_PEERCRED), its supplementary groups read
    /// from /proc: may it ask?
    fn admits(&self, cred: &tokio::net::unix::UCred) -> bool {
        if cred.uid() == 0 || cred.uid() == unsafe { libc::geteuid() } {
            return true;
        }
        let Some(group) = self.group else { return false };
        cred.gid() == group || cred.pid().is_some_and(|pid| supplementary_groups(pid).contains(&group))
    }
}

fn supplementary_groups(pid: i32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map_or(Vec::new(), |g| g.split_whitespace().filter_map(|x| x.parse().ok()).collect())
}

/// A group by name, for `--control-group`.
pub fn group_id(name: &str) -> Result<u32, ControlError> {
    let c = std::ffi::CString::new(name).map_err(|_| ControlError::BadGroupName(name.to_string()))?;
    // SAFETY: getgrnam returns a pointer into static storage or null; read at once.
    let g = unsafe { libc::getgrnam(c.as_ptr()) };
    if g.is_null() {
        return Err(ControlError::NoSuchGroup(name.to_string()));
    }
    Ok(unsafe { (*g).gr_gid })
}

/// Serves the bound socket: each request is handed to the daemon's loop over
/// `calls`, and its answer written back. A slow, idle, flooding or
/// unauthorised client costs a connection slot at most; an accept error is
/// waited out, never the end of the control socket.
pub async fn serve(listener: tokio::net::UnixListener, access: Access, calls: mpsc::Sender<Call>) -> Result<(), ControlError> {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and friends: back off, then take connections again.
                tracing::warn!(error = %e, "control socket: accept failed; retrying in 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("control socket: {MAX_CONNECTIONS} connections open; closing a new one");
            continue;
        };
        match stream.peer_cred() {
            Ok(cred) if access.admits(&cred) => {}
            other => {
                tracing::warn!(peer = ?other.ok(), "control socket: a peer without access (root, the agent's user or --control-group) refused");
                continue;
            }
        }
        let calls = calls.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, calls).await {
                tracing::debug!(error = %e, "control connection");
            }
            drop(slot);
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

/// Binds the control socket, replacing a stale one; refuses when another
/// agent is listening there. The socket is created 0600 (0660 and owned by
/// `access.group` when set) with no window in between: the umask is set
/// before bind.
pub fn bind(path: &Path, access: Access) -> Result<(tokio::net::UnixListener, SocketFile), ControlError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(socket_error(format!("creating {}", dir.display())))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(ControlError::InUse(path.to_owned()));
        }
        std::fs::remove_file(path).map_err(socket_error(format!("removing the stale socket {}", path.display())))?;
    }
    let mode = if access.group.is_some() { 0o660 } else { 0o600 };
    // SAFETY: umask only swaps the process's file mode mask.
    let old = unsafe { libc::umask(0o777 & !mode) };
    let bound = tokio::net::UnixListener::bind(path);
    unsafe { libc::umask(old) };
    let listener = bound.map_err(socket_error(format!("binding {}", path.display())))?;
    let file = SocketFile(path.to_owned());
    if let Some(gid) = access.group {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(socket_error(format!("giving {} to group {gid}", path.display())))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok((listener, file))
}

/// Reads one request line of at most [`MAX_REQUEST_BYTES`] within
/// [`IDLE_TIMEOUT`]: `None` at the end of the stream.
async fn read_request<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> Result<Option<Vec<u8>>, ControlError> {
    use tokio::io::AsyncBufReadExt as _;
    use tokio::io::AsyncReadExt as _;
    let mut line = Vec::new();
    let read = tokio::time::timeout(IDLE_TIMEOUT, reader.take(MAX_REQUEST_BYTES as u64 + 1).read_until(b'\n', &mut line))
        .await
        .map_err(|_| ControlError::Idle)??;
    if read == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') && line.len() > MAX_REQUEST_BYTES {
        return Err(ControlError::TooLong);
    }
    Ok(Some(line))
}

async fn connection(stream: tokio::net::UnixStream, calls: mpsc::Sender<Call>) -> Result<(), ControlError> {
    use tokio::io::AsyncWriteExt as _;
    let (read, mut write) = stream.into_split();
    let mut reader = tokio::io::BufReader::new(read);
    loop {
        let line = match read_request(&mut reader).await {
            Ok(Some(line)) => line,
            Ok(None) => return Ok(()),
            Err(e) => {
                // Said to the client, then the connection ends.
                let mut out = serde_json::to_vec(&Response::error(format!("bad request: {e}")))?;
                out.push(b'\n');
                let _ = write.write_all(&out).await;
                return Err(e);
            }
        };
        let response = match serde_json::from_slice::<Request>(&line) {
            Ok(req) => {
                let (tx, rx) = oneshot::channel();
                calls.send((req, tx)).await.map_err(|_| ControlError::Stopping)?;
                rx.await.unwrap_or_else(|_| Response::error("agent stopping"))
            }
            Err(e) => Response::error(format!("bad request: {e}")),
        };
        let mut out = serde_json::to_vec(&response)?;
        out.push(b'\n');
        write.write_all(&out).await?;
    }
}

/// A blocking client: the CLI, tests and benches.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    pub fn connect(path: &Path) -> Result<Client, ControlError> {
        let stream = UnixStream::connect(path).map_err(|error| ControlError::NoAgent { path: path.to_owned(), error })?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Client { reader: BufReader::new(stream.try_clone()?), writer: stream })
    }

    /// Sends one request; an error response becomes an error.
    pub fn call(&mut self, req: &Request) -> Result<serde_json::Value, ControlError> {
        let mut line = serde_json::to_vec(req)?;
        line.push(b'\n');
        self.writer.write_all(&line)?;
        let mut answer = String::new();
        if self.reader.read_line(&mut answer)? == 0 {
            return Err(ControlError::Closed);
        }
        let r: Response = serde_json::from_str(&answer).map_err(ControlError::BadResponse)?;
        match (r.ok, r.error) {
            (true, _) => Ok(r.data.unwrap_or(serde_json::Value::Null)),
            (false, e) => Err(ControlError::Refused(e.unwrap_or_else(|| "request failed".into()))),
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
        assert!(matches!(parse_dest("sink"), Err(ControlError::BadAddress(s)) if s == "sink"));
        assert!(matches!(parse_metric_value("mtu", 65521), Err(ControlError::OutOfRange { value: 65521, max: 65520, .. })));
        assert!(matches!(parse_metric_value("mtux", 1), Err(ControlError::UnknownMetric(_))));
    }

    #[tokio::test]
    async fn a_request_line_beyond_the_limit_is_refused_as_too_long() {
        let mut long = vec![b'x'; MAX_REQUEST_BYTES + 10];
        long.push(b'\n');
        let e = read_request(&mut &long[..]).await.unwrap_err();
        assert!(matches!(e, ControlError::TooLong), "{e:?}");
        assert_eq!(e.to_string(), format!("a request longer than {MAX_REQUEST_BYTES} bytes"));
        let line = read_request(&mut &b"{\"op\":\"stats\"}\n"[..]).await.unwrap();
        assert_eq!(line.as_deref(), Some(&b"{\"op\":\"stats\"}\n"[..]));
    }

    #[test]
    fn expiries_are_bounded_never_overflowed() {
        let now = Instant::now();
        let default = Duration::from_secs(600);
        assert_eq!(parse_expires(None, default, now).unwrap(), Some(now + default));
        assert_eq!(parse_expires(Some(0), default, now).unwrap(), None);
        assert_eq!(parse_expires(Some(MAX_EXPIRES_SECS), default, now).unwrap(), Some(now + Duration::from_secs(MAX_EXPIRES_SECS)));
        for secs in [MAX_EXPIRES_SECS + 1, u64::MAX / 2, u64::MAX] {
            let e = parse_expires(Some(secs), default, now).unwrap_err();
            assert!(matches!(e, ControlError::ExpiresTooLong(s) if s == secs), "{e:?}");
            assert!(e.to_string().contains("too long"), "{e}");
        }
    }
}
