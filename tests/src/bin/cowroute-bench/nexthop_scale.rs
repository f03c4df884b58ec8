//! Kernel nexthop objects at scale: 1,000 single objects over 200 gateways
//! and 64 groups of 4 (object 1 in every group) in a lab router's kernel,
//! then a full table through them (`route add PREFIX nhid ID`, half through
//! singles, half through groups) while the agent runs (`--source kernel`,
//! nexthop_compat_mode 0). Records how long until the maps hold every
//! route, a cold start against the table, and what `ip nexthop replace id 1`
//! costs: object 1 is under N/2 + N/2000 routes, and each object is one
//! fast-path entry, so the replace is one publish. Its entry is read
//! straight from the pinned maps (as the fast path reads it) in a tight
//! loop; compat mode 1 (a RTM_NEWROUTE per affected route) is measured too.

use crate::{
    fib_scale::{get, stats, status_mib, timed_batch, ScaleLab},
    stats::{summarize, Summary},
};
use anyhow::{ensure, Context as _, Result};
use common::{NextHop, NextHopGroup, RouteEntry};
use cowroute::{
    dataplane::map_writer::PublishedReader,
    operator::{
        control::{Client, Request},
        show::{Dir24Reader, NexthopObjectRow},
    },
};
use cowroute_tests::{kernel_table, synthetic};
use std::{
    net::{IpAddr, Ipv4Addr},
    path::Path,
    time::{Duration, Instant},
};
use xtask::{lab::Lab, sh};

/// Single nexthop objects: ids 1..=SINGLES.
const SINGLES: u32 = 1_000;
/// Group objects: ids GROUP_BASE+1..=GROUP_BASE+GROUPS, each of object 1 and 3 others.
const GROUPS: u32 = 64;
const GROUP_BASE: u32 = 2_000;
const GATEWAYS: u8 = 200;
/// Replaces of object 1 under compat mode 0, alternating between two gateways.
const REPLACES: usize = 5;
/// A settle longer than this with compat mode 1 is reported as too slow.
const COMPAT1_LIMIT: Duration = Duration::from_secs(60);

/// One `ip nexthop replace id 1 ...`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplaceSample {
    pub compat_mode: u8,
    pub gateway: String,
    /// The `ip` command's run time (the kernel's work, plus ip's own start).
    pub kernel_ms: f64,
    /// From issuing the command until object 1's NEXTHOPS entry (index word,
    /// then slot) held the new gateway's MAC.
    pub entry_ms: f64,
    /// Until the agent's netlink event count last moved (nothing more for 500 ms).
    pub settled_ms: f64,
    /// Netlink events the agent applied for it.
    pub events: u64,
    pub overruns: u64,
    pub routes_before: u64,
    pub routes_after: u64,
    /// NEXTHOPS ids whose slot changed (a publish each): 1 is one publish.
    pub nexthops_republished: usize,
    /// Of those, the ids other than object 1's (the lab's own next hops,
    /// changed by something else meanwhile: a neighbour's state).
    pub other_nexthop_ids: Vec<u32>,
    /// NH_GROUPS ids whose slot changed: the groups name object 1's id, not its contents.
    pub groups_republished: usize,
    /// A route straight through object 1 and one through a group kept their
    /// DIR-24 entry slot (an entry that changes moves to a fresh slot).
    pub route_entries_kept: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct NexthopScaleFigures {
    pub routes: usize,
    pub singles: u32,
    pub groups: u32,
    pub gateways: u8,
    /// The objects' `ip -batch` start until the agent carried all of them.
    pub objects_seconds: f64,
    /// `ip -batch` of the routes, kernel side.
    pub kernel_insert_seconds: f64,
    /// From the batch's start until the maps held every route.
    pub mirrored_seconds: f64,
    pub mirrored_routes_per_second: f64,
    pub overruns: u64,
    /// The agent's own memory (`RssAnon`) with every route, and its growth
    /// over the load per route.
    pub agent_private_mib: f64,
    pub agent_private_bytes_per_route: f64,
    /// A new agent against the full table: exec to "ready".
    pub startup_seconds: f64,
    pub startup_routes_per_second: f64,
    /// Routes the new agent's stats showed once ready (beyond the lab's own).
    pub startup_routes: u64,
    pub startup_agent_private_mib: f64,
    /// Routes through object 1: straight, and through the 64 groups.
    pub object1_direct_routes: usize,
    pub object1_group_routes: usize,
    /// `ip -n RTR nexthop get id 1`: the floor of any `ip` command's time here.
    pub ip_floor_ms: Summary,
    pub replace_kernel_ms: Summary,
    pub replace_entry_ms: Summary,
    pub replace_settled_ms: Summary,
    pub replaces: Vec<ReplaceSample>,
    /// The same replace once with nexthop_compat_mode 1.
    pub compat1: ReplaceSample,
    /// Whether compat mode 1 took longer than 60 s to settle.
    pub compat1_over_limit: bool,
}

/// The object route `i` of the table goes through: even ones through the
/// singles in turn, odd ones through the groups in turn.
fn route_object(i: usize) -> u32 {
    if i.is_multiple_of(2) {
        1 + (i / 2) as u32 % SINGLES
    } else {
        GROUP_BASE + 1 + (i / 2) as u32 % GROUPS
    }
}

/// Group `g`'s members: object 1 and three others.
fn group_members(g: u32) -> [u32; 4] {
    [1, 2 + 3 * g, 3 + 3 * g, 4 + 3 * g]
}

fn compat_mode(lab: &Lab, mode: u8) -> Result<()> {
    sh::run(&mut sh::in_ns(&lab.rtr, "sysctl", &["-qw", &format!("net.ipv4.nexthop_compat_mode={mode}")]))?;
    Ok(())
}

fn objects(c: &mut Client) -> Result<Vec<NexthopObjectRow>> {
    Ok(serde_json::from_value(c.call(&Request::NexthopObjects).context("nexthop objects")?)?)
}

/// Runs `f` on a thread with a progress line every second until it returns.
fn ticking<T: Send>(progress: &dyn Fn(&str), what: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        let h = s.spawn(f);
        let start = Instant::now();
        let mut next = 1;
        while !h.is_finished() {
            std::thread::sleep(Duration::from_millis(20));
            if start.elapsed() >= Duration::from_secs(next) {
                progress(&format!("  {what} ({next} s)"));
                next += 1;
            }
        }
        h.join().expect("the step's thread panicked")
    })
}

/// The pinned maps as the fast path reads them.
struct Maps {
    nexthops: PublishedReader<NextHop>,
    groups: PublishedReader<NextHopGroup>,
    dir24: Dir24Reader,
}

impl Maps {
    fn open(pin_dir: &Path) -> Result<Maps> {
        Ok(Maps {
            nexthops: PublishedReader::nexthops(pin_dir)?,
            groups: PublishedReader::groups(pin_dir)?,
            dir24: Dir24Reader::open(pin_dir)?,
        })
    }

    /// Every published id's slot: (NEXTHOPS, NH_GROUPS).
    fn slots(&self) -> Result<(Slots, Slots)> {
        Ok((
            self.nexthops.all()?.into_iter().map(|(id, slot, _)| (id, slot)).collect(),
            self.groups.all()?.into_iter().map(|(id, slot, _)| (id, slot)).collect(),
        ))
    }
}

/// Published ids and their slots.
type Slots = std::collections::BTreeMap<u32, u32>;

/// Ids in `a` or `b` whose slot differs (or that only one has).
fn changed(a: &Slots, b: &Slots) -> Vec<u32> {
    let ids: std::collections::BTreeSet<u32> = a.keys().chain(b.keys()).copied().collect();
    ids.into_iter().filter(|id| a.get(id) != b.get(id)).collect()
}

/// An address whose DIR-24 entry is a route of `table` through object
/// `object` (entry next hop `entry_id`), and that entry's slot.
fn probe(maps: &Maps, table: &[ipnet::IpNet], object: u32, entry_id: u32, group: bool) -> Result<(Ipv4Addr, u32)> {
    for (_, p) in table.iter().enumerate().filter(|(i, _)| route_object(*i) == object).take(200) {
        let IpAddr::V4(addr) = p.addr() else { continue };
        if let Some((e, slot)) = maps.dir24.answer(addr)? {
            if e.nexthop == entry_id && (e.flags & RouteEntry::MULTIPATH != 0) == group {
                return Ok((addr, slot));
            }
        }
    }
    anyhow::bail!("no route of the table through object {object} found in the DIR-24 index")
}

/// What a replace is measured against.
struct Target<'a> {
    lab: &'a Lab,
    maps: &'a Maps,
    /// Object 1's NEXTHOPS id.
    entry: u32,
    probes: &'a [(Ipv4Addr, u32)],
}

/// `ip nexthop replace id 1 via GW`, timed from the command's issue: the
/// command, object 1's entry in the maps, and the agent's events settling.
fn replace(t: &Target, client: &mut Client, gw: &kernel_table::Gateway, compat: u8, progress: &dyn Fn(&str)) -> Result<ReplaceSample> {
    let before = stats(client)?;
    let slots_before = t.maps.slots()?;
    let (rtr, dev) = (t.lab.rtr.clone(), t.lab.rtr_sink_if.clone());
    let addr = gw.addr.clone();
    let start = Instant::now();
    let ip = std::thread::spawn(move || -> Result<Duration> {
        sh::ip(&["-n", &rtr, "nexthop", "replace", "id", "1", "via", &addr, "dev", &dev])?;
        Ok(start.elapsed())
    });
    // The command's run time, once it has ended (a failure ends the step).
    let (mut ip, mut kernel) = (Some(ip), None);
    let mut ended = |kernel: &mut Option<Duration>| -> Result<()> {
        if let Some(done) = ip.take_if(|k| k.is_finished()) {
            *kernel = Some(done.join().map_err(|_| anyhow::anyhow!("the ip thread panicked"))??);
        }
        Ok(())
    };
    // Object 1's entry as the fast path reads it, polled about every 50 µs.
    let entry = loop {
        if t.maps.nexthops.get(t.entry)?.is_some_and(|(_, nh)| nh.dmac == gw.mac) {
            break start.elapsed();
        }
        ended(&mut kernel)?;
        ensure!(start.elapsed() < Duration::from_secs(600), "object 1's entry did not change in 600 s");
        if kernel.is_some() && start.elapsed() > Duration::from_secs(30) {
            anyhow::bail!("ip nexthop replace is done but object 1's entry never changed: {:?}", t.maps.nexthops.get(t.entry)?);
        }
        std::thread::sleep(Duration::from_micros(20));
    };
    // The command's end, and the agent's events until nothing more comes
    // for 500 ms after it.
    let events0 = get(&before, &["netlink", "events"]);
    let (mut last, mut last_at, mut tick) = (events0, start.elapsed(), Instant::now());
    let after = loop {
        ended(&mut kernel)?;
        let s = stats(client)?;
        let events = get(&s, &["netlink", "events"]);
        if events != last {
            (last, last_at) = (events, start.elapsed());
        } else if kernel.is_some() && start.elapsed() - last_at > Duration::from_millis(500) {
            break s;
        }
        if tick.elapsed() >= Duration::from_secs(1) {
            let state = if kernel.is_some() { "done" } else { "running" };
            progress(&format!(
                "  replace (compat {compat}): ip {state}, {} events applied ({:.1} s)",
                events - events0,
                start.elapsed().as_secs_f64()
            ));
            tick = Instant::now();
        }
        ensure!(start.elapsed() < Duration::from_secs(600), "the replace and the agent's events did not settle in 600 s");
        std::thread::sleep(Duration::from_millis(20));
    };
    let kernel = kernel.expect("the loop ends after the command");
    let slots_after = t.maps.slots()?;
    let nexthops = changed(&slots_before.0, &slots_after.0);
    let kept = t.probes.iter().map(|(a, slot)| Ok(t.maps.dir24.answer(*a)?.map(|(_, s)| s) == Some(*slot))).collect::<Result<Vec<_>>>()?;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Ok(ReplaceSample {
        compat_mode: compat,
        gateway: gw.addr.clone(),
        kernel_ms: ms(kernel),
        entry_ms: ms(entry),
        settled_ms: ms(last_at),
        events: last - events0,
        overruns: get(&after, &["netlink", "overruns"]) - get(&before, &["netlink", "overruns"]),
        routes_before: get(&before, &["routes"]),
        routes_after: get(&after, &["routes"]),
        nexthops_republished: nexthops.len(),
        other_nexthop_ids: nexthops.into_iter().filter(|id| *id != t.entry).collect(),
        groups_republished: changed(&slots_before.1, &slots_after.1).len(),
        route_entries_kept: kept.iter().all(|k| *k),
    })
}

pub fn measure(routes: usize, progress: &dyn Fn(&str)) -> Result<NexthopScaleFigures> {
    let scale = ScaleLab::up('n')?;
    let (lab, pin_dir) = (&scale.lab, &scale.pin_dir);
    compat_mode(lab, 0)?;
    let agent = scale.agent(Duration::from_secs(30))?;
    let mut client = Client::connect(&agent.control_socket)?;
    let gateways = kernel_table::gateways(lab, GATEWAYS)?;

    progress(&format!("  {SINGLES} single nexthop objects over {GATEWAYS} gateways, {GROUPS} groups of 4 (object 1 in each)"));
    let dev = &lab.rtr_sink_if;
    let mut cmds = String::new();
    for id in 1..=SINGLES {
        cmds += &format!("nexthop add id {id} via {} dev {dev}\n", gateways[(id as usize - 1) % gateways.len()].addr);
    }
    for g in 0..GROUPS {
        let m = group_members(g).map(|m| m.to_string()).join("/");
        cmds += &format!("nexthop add id {} group {m}\n", GROUP_BASE + 1 + g);
    }
    let started = Instant::now();
    kernel_table::batch_lines(lab, &cmds)?;
    while objects(&mut client)?.len() < (SINGLES + GROUPS) as usize {
        ensure!(started.elapsed() < Duration::from_secs(60), "the agent did not carry every nexthop object in 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let objects_seconds = started.elapsed().as_secs_f64();

    let base = stats(&mut client)?;
    let (base_routes, base_overruns) = (get(&base, &["routes"]), get(&base, &["netlink", "overruns"]));
    let private0 = status_mib(agent.pid(), "RssAnon");
    progress(&format!("  generating {routes} routes (Internet-like prefix lengths), half through singles, half through groups"));
    let table = synthetic::v4_kernel_table(routes, 23);
    let mut cmds = String::with_capacity(routes * 40);
    for (i, p) in table.iter().enumerate() {
        cmds += &format!("route add {p} nhid {}\n", route_object(i));
    }
    let want = base_routes + routes as u64;
    let (kernel_insert, mirrored) =
        timed_batch(lab, &mut client, &format!("add {routes} nhid"), cmds, &|s| get(s, &["routes"]) >= want, progress)?;
    let private = status_mib(agent.pid(), "RssAnon");
    let overruns = get(&stats(&mut client)?, &["netlink", "overruns"]) - base_overruns;

    // Cold start: SIGTERM (the agent detaches and unpins), then a new agent
    // against the full table.
    drop(client);
    drop(agent);
    progress(&format!("  cold start: a new agent against the {routes}-route table"));
    let started = Instant::now();
    let agent = ticking(progress, "cold start: waiting for ready", || scale.agent(Duration::from_secs(300)))?;
    let startup = started.elapsed().as_secs_f64();
    let mut client = Client::connect(&agent.control_socket)?;
    let startup_routes = get(&stats(&mut client)?, &["routes"]);
    ensure!(startup_routes >= want, "the new agent is ready with {startup_routes} routes, not {want}");
    let startup_private = status_mib(agent.pid(), "RssAnon");

    // The replace: object 1's entry, and a route straight through it and
    // one through a group, whose entries must stay where they are.
    let objs = objects(&mut client)?;
    let entry_of = |id: u32| objs.iter().find(|o| o.id == id);
    let entry = entry_of(1).and_then(|o| o.nexthop).context("object 1 has no NEXTHOPS entry")?;
    let group = entry_of(GROUP_BASE + 1).and_then(|o| o.group).context("the first group object has no NH_GROUPS entry")?;
    let maps = Maps::open(pin_dir)?;
    let probes = [probe(&maps, &table, 1, entry, false)?, probe(&maps, &table, GROUP_BASE + 1, group, true)?];
    let target = Target { lab, maps: &maps, entry, probes: &probes };
    let floor = (0..5)
        .map(|_| {
            let t = Instant::now();
            sh::ip(&["-n", &lab.rtr, "nexthop", "get", "id", "1"])?;
            Ok(t.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<Result<Vec<_>>>()?;
    let (a, b) = (&gateways[gateways.len() - 1], &gateways[0]);
    let mut replaces = Vec::new();
    for n in 0..REPLACES {
        let gw = if n.is_multiple_of(2) { a } else { b };
        let r = replace(&target, &mut client, gw, 0, progress)?;
        progress(&format!(
            "  replace {}/{REPLACES} (compat 0, via {}): ip {:.2} ms, entry {:.2} ms, {} events, {} NEXTHOPS / {} NH_GROUPS entries republished, route entries kept: {}",
            n + 1,
            r.gateway,
            r.kernel_ms,
            r.entry_ms,
            r.events,
            r.nexthops_republished,
            r.groups_republished,
            r.route_entries_kept
        ));
        ensure!(r.routes_after == r.routes_before, "the replace changed the agent's route count: {r:?}");
        replaces.push(r);
    }
    compat_mode(lab, 1)?;
    let gw = if REPLACES.is_multiple_of(2) { a } else { b };
    progress("  replace with nexthop_compat_mode=1 (a RTM_NEWROUTE per route through object 1)");
    let compat1 = replace(&target, &mut client, gw, 1, progress)?;
    progress(&format!(
        "  replace (compat 1, via {}): ip {:.1} ms, entry {:.2} ms, settled {:.0} ms, {} events, {} overruns",
        compat1.gateway, compat1.kernel_ms, compat1.entry_ms, compat1.settled_ms, compat1.events, compat1.overruns
    ));
    ensure!(compat1.routes_after == compat1.routes_before, "the compat-1 replace changed the agent's route count: {compat1:?}");
    drop(maps);
    drop(client);
    drop(agent);
    scale.down()?;
    let summary = |f: fn(&ReplaceSample) -> f64| summarize(replaces.iter().map(f).collect());
    Ok(NexthopScaleFigures {
        routes,
        singles: SINGLES,
        groups: GROUPS,
        gateways: GATEWAYS,
        objects_seconds,
        kernel_insert_seconds: kernel_insert,
        mirrored_seconds: mirrored,
        mirrored_routes_per_second: routes as f64 / mirrored,
        overruns,
        agent_private_mib: private,
        agent_private_bytes_per_route: (private - private0) * 1048576.0 / routes as f64,
        startup_seconds: startup,
        startup_routes_per_second: routes as f64 / startup,
        startup_routes: startup_routes - base_routes,
        startup_agent_private_mib: startup_private,
        object1_direct_routes: (0..routes).filter(|i| route_object(*i) == 1).count(),
        object1_group_routes: (0..routes).filter(|i| route_object(*i) > GROUP_BASE).count(),
        ip_floor_ms: summarize(floor),
        replace_kernel_ms: summary(|r| r.kernel_ms),
        replace_entry_ms: summary(|r| r.entry_ms),
        replace_settled_ms: summary(|r| r.settled_ms),
        compat1_over_limit: compat1.settled_ms > COMPAT1_LIMIT.as_secs_f64() * 1e3,
        replaces,
        compat1,
    })
}
