//! The TOML config: interfaces, the agent's settings, and (`--source
//! config`) routes with their metrics and neighbours. Every error names the
//! file, line and field. A setting given on the command line wins over the
//! file's. SIGHUP reloads it (see `daemon`).
//!
//! ```toml
//! interfaces = ["eth1", "eth2"]
//! source = "kernel"             # kernel | config | fpm
//! tables = [254, 1000]          # kernel tables to mirror
//! xdp_mode = "auto"             # auto | native | generic
//! metrics_rw_slots = 65536      # the private metrics pool
//! slow_path = "afxdp"           # afxdp | kernel
//! icmp_ratelimit_ms = 1000      # per destination: a burst of 6, then one per this
//! icmp_msgs_per_sec = 1000      # all destinations: this many a second,
//! icmp_msgs_burst = 50          # in bursts of at most this
//! pmtu_learning = "on"          # on | off: path MTU from Frag Needed / Packet Too Big
//! pmtu_max_learned = 32768      # destinations with a learned copy (below metrics_rw_slots)
//!
//! [[route]]
//! prefix = "10.2.0.0/24"       # required
//! dev = "eth2"                  # egress device (required for unicast)
//! via = "10.2.0.254"            # gateway; omitted: a connected route
//! type = "unicast"              # unicast | blackhole | unreachable | prohibit | local
//! mtu = 1400                    # any RTAX metric by its `ip route` name
//! advmss = 1360
//! lock = ["mtu"]                # metrics learning must not change
//!
//! [[neighbour]]
//! address = "10.2.0.2"
//! dev = "eth2"
//! lladdr = "02:00:00:00:00:02"  # omitted: the agent has the kernel resolve it
//! ```

use common::{RouteKind, RouteMetrics, Rtax};
use ipnet::IpNet;
use std::{
    collections::BTreeMap,
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
};
use toml::{Spanned, Value};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    pub interfaces: Vec<String>,
    pub settings: Settings,
    pub routes: Vec<RouteSpec>,
    pub neighbours: Vec<NeighbourSpec>,
}

/// The agent's settings as the file gives them (`None`: not given).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Settings {
    pub source: Option<crate::fib::source::RouteSource>,
    pub tables: Option<Vec<u32>>,
    pub xdp_mode: Option<crate::dataplane::ModeChoice>,
    pub metrics_rw_slots: Option<u32>,
    pub slow_path: Option<crate::slow_path::SlowPathMode>,
    pub icmp_ratelimit_ms: Option<u32>,
    pub icmp_msgs_per_sec: Option<u32>,
    pub icmp_msgs_burst: Option<u32>,
    pub pmtu_learning: Option<crate::slow_path::pmtu::PmtuLearning>,
    pub pmtu_max_learned: Option<u32>,
}

/// Where in the file something was written, for later errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line(pub usize);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub prefix: IpNet,
    pub kind: RouteKind,
    pub via: Option<IpAddr>,
    pub dev: Option<String>,
    pub metrics: RouteMetrics,
    pub line: Line,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighbourSpec {
    pub address: IpAddr,
    pub dev: String,
    pub lladdr: Option<[u8; 6]>,
    pub line: Line,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}: {}", self.file.display(), self.line, self.column, self.field, self.message)
    }
}

impl std::error::Error for ConfigError {}

type Table = BTreeMap<Spanned<String>, Spanned<Value>>;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    interfaces: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    source: Option<Spanned<String>>,
    #[serde(default)]
    tables: Option<Spanned<Vec<i64>>>,
    #[serde(default)]
    xdp_mode: Option<Spanned<String>>,
    #[serde(default)]
    metrics_rw_slots: Option<Spanned<i64>>,
    #[serde(default)]
    slow_path: Option<Spanned<String>>,
    #[serde(default)]
    icmp_ratelimit_ms: Option<Spanned<i64>>,
    #[serde(default)]
    icmp_msgs_per_sec: Option<Spanned<i64>>,
    #[serde(default)]
    icmp_msgs_burst: Option<Spanned<i64>>,
    #[serde(default)]
    pmtu_learning: Option<Spanned<String>>,
    #[serde(default)]
    pmtu_max_learned: Option<Spanned<i64>>,
    #[serde(default)]
    route: Vec<Spanned<Table>>,
    #[serde(default)]
    neighbour: Vec<Spanned<Table>>,
}

struct Ctx<'a> {
    file: &'a Path,
    src: &'a str,
}

impl Ctx<'_> {
    fn err(&self, offset: usize, field: &str, message: impl Into<String>) -> ConfigError {
        let before = &self.src[..offset.min(self.src.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        ConfigError { file: self.file.to_owned(), line, column, field: field.into(), message: message.into() }
    }

    fn line(&self, offset: usize) -> Line {
        Line(self.src[..offset.min(self.src.len())].matches('\n').count() + 1)
    }
}

const ROUTE_FIELDS: &str = "prefix, dev, via, type, lock, or a metric (mtu, advmss, hoplimit, window, rtt, rttvar, ssthresh, cwnd, reordering, initcwnd, features, rto_min, initrwnd, quickack, cc_algo, fastopen_no_cookie)";

pub fn load(file: &Path) -> Result<Config, ConfigError> {
    let src = std::fs::read_to_string(file).map_err(|e| ConfigError {
        file: file.to_owned(),
        line: 0,
        column: 0,
        field: "file".into(),
        message: format!("cannot read: {e}"),
    })?;
    parse(file, &src)
}

pub fn parse(file: &Path, src: &str) -> Result<Config, ConfigError> {
    let ctx = Ctx { file, src };
    let raw: RawConfig = toml::from_str(src).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        let msg = e.message().to_string();
        let field = msg.split('`').nth(1).filter(|_| msg.starts_with("unknown field")).unwrap_or("syntax").to_string();
        ctx.err(offset, &field, msg)
    })?;
    let interfaces = raw.interfaces.clone().map(|i| i.into_inner()).unwrap_or_default();
    let settings = parse_settings(&ctx, &raw)?;
    let routes = raw.route.iter().map(|t| parse_route(&ctx, t)).collect::<Result<Vec<_>, _>>()?;
    let neighbours = raw.neighbour.iter().map(|t| parse_neighbour(&ctx, t)).collect::<Result<Vec<_>, _>>()?;
    for (i, r) in routes.iter().enumerate() {
        if let Some(first) = routes[..i].iter().find(|o| o.prefix == r.prefix) {
            let at = raw.route[i].span().start;
            return Err(ctx.err(at, "prefix", format!("{} is already defined at line {}", r.prefix, first.line.0)));
        }
    }
    Ok(Config { interfaces, settings, routes, neighbours })
}

/// A clap value enum from its name, or an error listing the names.
fn choice<T: clap::ValueEnum>(ctx: &Ctx, key: &str, v: &Spanned<String>) -> Result<T, ConfigError> {
    T::from_str(v.get_ref(), false).map_err(|_| {
        let names: Vec<String> =
            T::value_variants().iter().filter_map(|x| x.to_possible_value()).map(|p| p.get_name().to_string()).collect();
        ctx.err(v.span().start, key, format!("unknown value {:?} (one of: {})", v.get_ref(), names.join(", ")))
    })
}

fn parse_settings(ctx: &Ctx, raw: &RawConfig) -> Result<Settings, ConfigError> {
    let source = raw.source.as_ref().map(|v| choice(ctx, "source", v)).transpose()?;
    let xdp_mode = raw.xdp_mode.as_ref().map(|v| choice(ctx, "xdp_mode", v)).transpose()?;
    let tables = match &raw.tables {
        Some(t) => {
            let at = t.span().start;
            if t.get_ref().is_empty() {
                return Err(ctx.err(at, "tables", "empty: name at least one table (254 is main)"));
            }
            Some(
                t.get_ref()
                    .iter()
                    .map(|n| {
                        u32::try_from(*n)
                            .ok()
                            .filter(|n| *n != 0)
                            .ok_or_else(|| ctx.err(at, "tables", format!("{n} is not a routing table id (1 to 4294967295)")))
                    })
                    .collect::<Result<Vec<u32>, _>>()?,
            )
        }
        None => None,
    };
    let number = |v: &Option<Spanned<i64>>, key: &str, min: u32| -> Result<Option<u32>, ConfigError> {
        v.as_ref()
            .map(|v| {
                u32::try_from(*v.get_ref())
                    .ok()
                    .filter(|n| *n >= min)
                    .ok_or_else(|| ctx.err(v.span().start, key, format!("{} is out of range ({min} to 4294967295)", v.get_ref())))
            })
            .transpose()
    };
    Ok(Settings {
        source,
        tables,
        xdp_mode,
        metrics_rw_slots: number(&raw.metrics_rw_slots, "metrics_rw_slots", 1)?,
        slow_path: raw.slow_path.as_ref().map(|v| choice(ctx, "slow_path", v)).transpose()?,
        icmp_ratelimit_ms: number(&raw.icmp_ratelimit_ms, "icmp_ratelimit_ms", 0)?,
        icmp_msgs_per_sec: number(&raw.icmp_msgs_per_sec, "icmp_msgs_per_sec", 0)?,
        icmp_msgs_burst: number(&raw.icmp_msgs_burst, "icmp_msgs_burst", 1)?,
        pmtu_learning: raw.pmtu_learning.as_ref().map(|v| choice(ctx, "pmtu_learning", v)).transpose()?,
        pmtu_max_learned: number(&raw.pmtu_max_learned, "pmtu_max_learned", 0)?,
    })
}

fn string<'a>(ctx: &Ctx, key: &str, v: &'a Spanned<Value>) -> Result<&'a str, ConfigError> {
    v.get_ref().as_str().ok_or_else(|| ctx.err(v.span().start, key, "expected a string"))
}

fn parse_route(ctx: &Ctx, table: &Spanned<Table>) -> Result<RouteSpec, ConfigError> {
    let start = table.span().start;
    let mut prefix = None;
    let mut via = None;
    let mut dev = None;
    let mut kind = RouteKind::Unicast;
    let mut metrics = RouteMetrics::DEFAULT;
    for (k, v) in table.get_ref() {
        let key = k.get_ref().as_str();
        let at = v.span().start;
        match key {
            "prefix" => {
                let s = string(ctx, key, v)?;
                let p: IpNet = s
                    .parse()
                    .map_err(|_| ctx.err(at, key, format!("{s:?} is not an IPv4 or IPv6 prefix (like 10.0.0.0/8 or 2001:db8::/32)")))?;
                if p.trunc() != p {
                    return Err(ctx.err(at, key, format!("{s} has host bits set (did you mean {}?)", p.trunc())));
                }
                prefix = Some(p);
            }
            "via" => {
                let s = string(ctx, key, v)?;
                via = Some((s.parse::<IpAddr>().map_err(|_| ctx.err(at, key, format!("{s:?} is not an IP address")))?, at));
            }
            "dev" => dev = Some(string(ctx, key, v)?.to_string()),
            "type" => {
                let s = string(ctx, key, v)?;
                kind = match s {
                    "unicast" => RouteKind::Unicast,
                    "blackhole" => RouteKind::Blackhole,
                    "unreachable" => RouteKind::Unreachable,
                    "prohibit" => RouteKind::Prohibit,
                    "local" => RouteKind::Local,
                    _ => {
                        return Err(ctx.err(
                            at,
                            key,
                            format!("unknown route type {s:?} (unicast, blackhole, unreachable, prohibit, local)"),
                        ))
                    }
                };
            }
            "lock" => {
                let list = v.get_ref().as_array().ok_or_else(|| ctx.err(at, key, "expected a list of metric names, like [\"mtu\"]"))?;
                for item in list {
                    let name = item.as_str().ok_or_else(|| ctx.err(at, key, "expected metric names as strings"))?;
                    let m = Rtax::from_name(name)
                        .filter(|m| *m != Rtax::Lock)
                        .ok_or_else(|| ctx.err(at, key, format!("unknown metric {name:?}")))?;
                    metrics.lock |= m.lock_bit();
                }
            }
            _ => {
                let m = Rtax::from_name(key)
                    .filter(|m| *m != Rtax::Lock)
                    .ok_or_else(|| ctx.err(k.span().start, key, format!("unknown field (expected {ROUTE_FIELDS})")))?;
                let n = v.get_ref().as_integer().ok_or_else(|| ctx.err(at, key, "expected a whole number"))?;
                if n < 0 || n as u64 > m.max_value() as u64 {
                    return Err(ctx.err(at, key, format!("{n} is out of range (0 to {})", m.max_value())));
                }
                metrics.set(m, n as u32);
            }
        }
    }
    let prefix = prefix.ok_or_else(|| ctx.err(start, "prefix", "missing (every [[route]] needs a prefix)"))?;
    if let Some((gw, at)) = via {
        if gw.is_ipv4() != matches!(prefix, IpNet::V4(_)) {
            return Err(ctx.err(at, "via", format!("gateway {gw} is not of the same family as {prefix}")));
        }
    }
    let min_mtu = if matches!(prefix, IpNet::V4(_)) { 68 } else { 1280 };
    if metrics.mtu != 0 && metrics.mtu < min_mtu {
        let at = table.get_ref().iter().find(|(k, _)| k.get_ref() == "mtu").map_or(start, |(_, v)| v.span().start);
        return Err(ctx.err(at, "mtu", format!("{} is below the minimum of {min_mtu} for this family", metrics.mtu)));
    }
    match kind {
        RouteKind::Unicast if dev.is_none() => {
            return Err(ctx.err(start, "dev", format!("missing: unicast route {prefix} needs an egress device")));
        }
        RouteKind::Blackhole | RouteKind::Unreachable | RouteKind::Prohibit if via.is_some() => {
            return Err(ctx.err(start, "via", format!("a {} route has no gateway", kind.name())));
        }
        _ => {}
    }
    Ok(RouteSpec { prefix, kind, via: via.map(|(g, _)| g), dev, metrics, line: ctx.line(start) })
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in mac.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

fn parse_neighbour(ctx: &Ctx, table: &Spanned<Table>) -> Result<NeighbourSpec, ConfigError> {
    let start = table.span().start;
    let (mut address, mut dev, mut lladdr) = (None, None, None);
    for (k, v) in table.get_ref() {
        let key = k.get_ref().as_str();
        let at = v.span().start;
        let s = string(ctx, key, v)?;
        match key {
            "address" => address = Some(s.parse::<IpAddr>().map_err(|_| ctx.err(at, key, format!("{s:?} is not an IP address")))?),
            "dev" => dev = Some(s.to_string()),
            "lladdr" => {
                lladdr = Some(parse_mac(s).ok_or_else(|| ctx.err(at, key, format!("{s:?} is not a MAC address (like 02:00:00:00:00:01)")))?)
            }
            _ => return Err(ctx.err(k.span().start, key, "unknown field (expected address, dev, lladdr)")),
        }
    }
    Ok(NeighbourSpec {
        address: address.ok_or_else(|| ctx.err(start, "address", "missing"))?,
        dev: dev.ok_or_else(|| ctx.err(start, "dev", "missing"))?,
        lladdr,
        line: ctx.line(start),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(src: &str) -> Result<Config, ConfigError> {
        parse(Path::new("lab.toml"), src)
    }

    #[test]
    fn settings_are_read_and_checked() {
        let c = p("source = \"config\"\ntables = [254, 1000]\nxdp_mode = \"generic\"\nmetrics_rw_slots = 1024\n").unwrap();
        assert_eq!(c.settings.source, Some(crate::fib::source::RouteSource::Config));
        assert_eq!(c.settings.tables, Some(vec![254, 1000]));
        assert_eq!(c.settings.xdp_mode, Some(crate::dataplane::ModeChoice::Generic));
        assert_eq!(c.settings.metrics_rw_slots, Some(1024));
        assert_eq!(p("").unwrap().settings, Settings::default());
        let e = |src: &str| p(src).unwrap_err().to_string();
        assert_eq!(e("source = \"bgp\"\n"), "lab.toml:1:10: source: unknown value \"bgp\" (one of: kernel, config, fpm)");
        assert_eq!(e("\ntables = [254, -1]\n"), "lab.toml:2:10: tables: -1 is not a routing table id (1 to 4294967295)");
        assert_eq!(e("tables = []\n"), "lab.toml:1:10: tables: empty: name at least one table (254 is main)");
        assert_eq!(e("xdp_mode = \"turbo\"\n"), "lab.toml:1:12: xdp_mode: unknown value \"turbo\" (one of: auto, native, generic)");
        assert_eq!(e("metrics_rw_slots = 0\n"), "lab.toml:1:20: metrics_rw_slots: 0 is out of range (1 to 4294967295)");
    }

    #[test]
    fn parses_routes_metrics_locks_and_neighbours() {
        let c = p(r#"
interfaces = ["a", "b"]
[[route]]
prefix = "10.2.0.0/24"
dev = "b"
mtu = 1400
advmss = 1360
lock = ["mtu"]
[[route]]
prefix = "2001:db8::/32"
via = "fd00:2::2"
dev = "b"
[[route]]
prefix = "192.0.2.0/24"
type = "blackhole"
[[neighbour]]
address = "10.2.0.2"
dev = "b"
lladdr = "02:00:00:00:00:02"
"#)
        .unwrap();
        assert_eq!(c.interfaces, ["a", "b"]);
        assert_eq!(c.routes.len(), 3);
        let r = &c.routes[0];
        assert_eq!(r.metrics.mtu, 1400);
        assert_eq!(r.metrics.advmss, 1360);
        assert_eq!(r.metrics.lock, 1 << 2);
        assert_eq!(r.line, Line(3));
        assert_eq!(c.routes[1].via, Some("fd00:2::2".parse().unwrap()));
        assert_eq!(c.routes[2].kind, RouteKind::Blackhole);
        assert_eq!(c.neighbours[0].lladdr, Some([2, 0, 0, 0, 0, 2]));
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let e = p("[[route]]\nprefix = \"10.0.0.0/8\"\ndev = \"x\"\nmtux = 3\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (4, "mtux"));
        assert!(e.to_string().starts_with("lab.toml:4:1: mtux: unknown field"), "{e}");

        let e = p("[[route]]\nprefix = \"10.0.0.300/8\"\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (2, "prefix"));

        let e = p("[[route]]\nprefix = \"10.1.0.0/8\"\ndev=\"x\"\n").unwrap_err();
        assert!(e.message.contains("host bits"), "{e}");

        let e = p("[[route]]\nprefix = \"10.0.0.0/8\"\ndev = \"x\"\nmtu = 70000\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (4, "mtu"));
        assert!(e.message.contains("out of range"), "{e}");

        let e = p("[[route]]\nprefix = \"10.0.0.0/8\"\ndev = \"x\"\nvia = \"fd00::1\"\n").unwrap_err();
        assert_eq!(e.field, "via");

        let e = p("[[route]]\nprefix = \"10.0.0.0/8\"\n").unwrap_err();
        assert_eq!(e.field, "dev");

        let e = p("[[route]]\nprefix = \"10.0.0.0/8\"\ndev = \"x\"\n[[route]]\nprefix = \"10.0.0.0/8\"\ndev = \"y\"\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (4, "prefix"));

        let e = p("routes = 1\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (1, "routes"));

        let e = p("[[route]\n").unwrap_err();
        assert_eq!(e.field, "syntax");

        let e = p("[[neighbour]]\naddress = \"10.0.0.1\"\ndev = \"x\"\nlladdr = \"zz\"\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (4, "lladdr"));

        let e = p("[[route]]\nprefix = \"2001:db8::/32\"\ndev = \"x\"\nmtu = 1000\n").unwrap_err();
        assert!(e.message.contains("minimum of 1280"), "{e}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 1024, ..Default::default() })]

        /// Any file, garbage or a valid one cut and mutated anywhere, is
        /// parsed or refused with a message; never a panic.
        #[test]
        fn any_config_text_is_parsed_or_refused(
            garbage in ".{0,400}",
            cut in 0usize..2000,
            at in 0usize..2000,
            insert in ".{0,8}",
        ) {
            let _ = parse(Path::new("fuzz.toml"), &garbage);
            let valid = "interfaces = [\"eth1\"]\nsource = \"config\"\ntables = [254]\nmetrics_rw_slots = 64\n[[route]]\nprefix = \"10.0.0.0/8\"\ndev = \"eth1\"\nvia = \"10.0.0.1\"\nmtu = 1400\nlock = [\"mtu\"]\n[[neighbour]]\naddress = \"10.0.0.1\"\ndev = \"eth1\"\nlladdr = \"02:00:00:00:00:01\"\n";
            let mut text: String = valid.chars().take(cut.min(valid.len())).collect();
            let at = at.min(text.chars().count());
            let byte = text.char_indices().nth(at).map_or(text.len(), |(b, _)| b);
            text.insert_str(byte, &insert);
            if let Err(e) = parse(Path::new("fuzz.toml"), &text) {
                proptest::prop_assert!(e.to_string().contains("fuzz.toml"), "{}", e);
            }
        }
    }
}
