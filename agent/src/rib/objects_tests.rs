//! Kernel nexthop objects in the RIB, against in-memory maps: one entry per
//! object, routes pointing at it, a replace rewriting that entry only.

use super::*;
use crate::{
    dataplane::map_writer::memory::MemoryMaps,
    rib::types::{NexthopKind, NexthopObject},
};

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

fn rib() -> (Rib<MemoryMaps>, Instant) {
    let now = Instant::now();
    let caps = Capacities { metrics_ro: 64, metrics_rw: 8, nexthops: 64, nexthop_groups: 16 };
    let mut rib = Rib::new(MemoryMaps::default(), caps, Duration::from_secs(0));
    for (index, mac) in [(2, MAC_A), (3, MAC_B)] {
        let link = Link { index, name: format!("if{index}"), mac, mtu: 1500, up: true, vlan: None, rx_queues: 1 };
        rib.apply(Event::Link(link), now).unwrap();
    }
    (rib, now)
}

fn single(id: u32, dev: u32, via: &str) -> Arc<NexthopObject> {
    Arc::new(NexthopObject { id, kind: NexthopKind::Single { dev, via: Some(via.parse().unwrap()) }, protocol: 0 })
}

fn group(id: u32, members: &[(u32, u32)]) -> Arc<NexthopObject> {
    Arc::new(NexthopObject { id, kind: NexthopKind::Group { members: members.to_vec(), resilient: None }, protocol: 0 })
}

fn through(prefix: &str, nhid: u32) -> RouteInput {
    RouteInput::via_object(prefix.parse().unwrap(), nhid, RouteMetrics::DEFAULT)
}

fn entry(rib: &Rib<MemoryMaps>, prefix: &str) -> RouteEntry {
    rib.sink().routes[&prefix.parse::<IpNet>().unwrap()]
}

#[test]
fn a_replace_of_a_nexthop_object_rewrites_its_one_entry_and_no_route() {
    let (mut rib, now) = rib();
    rib.set_nexthop_object(single(7, 2, "10.1.0.9"), now).unwrap();
    rib.apply(Event::Neighbour { index: 3, addr: "10.2.0.9".parse().unwrap(), mac: Some([2, 0, 0, 0, 0, 0x99]) }, now).unwrap();
    for i in 0..100 {
        rib.set_route(through(&format!("10.{i}.0.0/16"), 7), now).unwrap();
    }
    let id = entry(&rib, "10.0.0.0/16").nexthop;
    assert!((0..100).all(|i| entry(&rib, &format!("10.{i}.0.0/16")).nexthop == id), "every route, one entry");
    assert!(!entry(&rib, "10.0.0.0/16").is_multipath());
    assert_eq!(rib.sink().nexthops[&id].ifindex, 2);
    let writes = rib.sink().route_writes;
    rib.set_nexthop_object(single(7, 3, "10.2.0.9"), now).unwrap();
    assert_eq!(rib.sink().route_writes, writes, "ip nexthop replace writes no route");
    let nh = rib.sink().nexthops[&id];
    assert_eq!((nh.ifindex, nh.dmac, nh.is_usable()), (3, [2, 0, 0, 0, 0, 0x99], true), "the object's entry, rewritten");
    assert_eq!(rib.summary().nexthops, 1);
}

#[test]
fn group_objects_follow_their_members_and_shrink_in_place() {
    let (mut rib, now) = rib();
    for (addr, index) in [("10.1.0.9", 2), ("10.2.0.9", 3)] {
        rib.apply(Event::Neighbour { index, addr: addr.parse().unwrap(), mac: Some(MAC_A) }, now).unwrap();
    }
    rib.set_nexthop_object(single(1, 2, "10.1.0.9"), now).unwrap();
    rib.set_nexthop_object(single(2, 3, "10.2.0.9"), now).unwrap();
    rib.set_nexthop_object(group(10, &[(1, 1), (2, 3)]), now).unwrap();
    rib.set_route(through("10.8.0.0/16", 10), now).unwrap();
    rib.set_route(through("10.9.0.0/16", 1), now).unwrap();
    let e = entry(&rib, "10.8.0.0/16");
    assert!(e.is_multipath());
    let legs = |rib: &Rib<MemoryMaps>| {
        let mut c = BTreeMap::new();
        for b in rib.sink().groups[&e.nexthop].buckets {
            *c.entry(b).or_insert(0) += 1;
        }
        c
    };
    let (nh1, nh2) = (entry(&rib, "10.9.0.0/16").nexthop, rib.nexthop_object(2).map(|o| o.resolved.entry().1).unwrap());
    assert_eq!(legs(&rib), BTreeMap::from([(nh1, 16), (nh2, 48)]), "weights 1:3");
    let writes = rib.sink().route_writes;
    // A member's replace rewrites the member only; the group's buckets stay.
    rib.set_nexthop_object(single(1, 3, "10.2.0.9"), now).unwrap();
    assert_eq!(rib.sink().nexthops[&nh1].ifindex, 3);
    assert_eq!(legs(&rib), BTreeMap::from([(nh1, 16), (nh2, 48)]));
    // The group loses member 2 (as the kernel does when 2 is deleted).
    rib.set_nexthop_object(group(10, &[(1, 1)]), now).unwrap();
    rib.delete_nexthop_object(2, now).unwrap();
    assert_eq!(legs(&rib), BTreeMap::from([(nh1, 64)]));
    assert_eq!(rib.sink().route_writes, writes, "no route rewritten");
    assert_eq!(rib.summary().nexthops, 1, "member 2's next hop is freed");
}

#[test]
fn a_change_of_kind_rewrites_the_routes_and_unknown_objects_go_to_the_kernel() {
    let (mut rib, now) = rib();
    rib.set_route(through("10.8.0.0/16", 5), now).unwrap();
    assert_eq!(entry(&rib, "10.8.0.0/16").kind(), Some(RouteKind::Kernel), "no such object yet: the kernel's");
    rib.set_nexthop_object(Arc::new(NexthopObject { id: 5, kind: NexthopKind::Blackhole, protocol: 0 }), now).unwrap();
    assert_eq!(entry(&rib, "10.8.0.0/16").kind(), Some(RouteKind::Blackhole));
    rib.set_nexthop_object(single(5, 2, "10.1.0.9"), now).unwrap();
    let e = entry(&rib, "10.8.0.0/16");
    assert_eq!((e.kind(), rib.sink().nexthops[&e.nexthop].ifindex), (Some(RouteKind::Unicast), 2));
    rib.set_nexthop_object(Arc::new(NexthopObject { id: 5, kind: NexthopKind::KernelOnly("encap (lwtunnel)"), protocol: 0 }), now).unwrap();
    assert_eq!(entry(&rib, "10.8.0.0/16").kind(), Some(RouteKind::Kernel));
    rib.delete_route(&"10.8.0.0/16".parse().unwrap(), now).unwrap();
    rib.delete_nexthop_object(5, now).unwrap();
    rib.reap(now + Duration::from_secs(1));
    assert_eq!((rib.summary().nexthops, rib.summary().nexthop_groups), (0, 0), "nothing held");
}

#[test]
fn objects_and_routes_release_everything_they_hold() {
    let (mut rib, now) = rib();
    rib.set_nexthop_object(single(1, 2, "10.1.0.9"), now).unwrap();
    rib.set_nexthop_object(single(2, 3, "10.2.0.9"), now).unwrap();
    rib.set_nexthop_object(group(10, &[(1, 1), (2, 1)]), now).unwrap();
    rib.set_route(through("10.8.0.0/16", 10), now).unwrap();
    rib.set_route(through("10.9.0.0/16", 2), now).unwrap();
    // Replaced with the group's members reversed, then everything removed.
    rib.set_nexthop_object(group(10, &[(2, 1), (1, 1)]), now).unwrap();
    for p in ["10.8.0.0/16", "10.9.0.0/16"] {
        rib.delete_route(&p.parse().unwrap(), now).unwrap();
    }
    for id in [10, 1, 2] {
        rib.delete_nexthop_object(id, now).unwrap();
    }
    assert_eq!((rib.summary().nexthops, rib.summary().nexthop_groups), (0, 0));
    assert!(rib.nexthop_objects().next().is_none());
}

/// A group set before its members (ids in the other order, a replay) is
/// the kernel's until they come; then it is carried, and its routes follow.
/// A member changing kind takes its group with it.
#[test]
fn a_group_follows_members_that_come_late_or_change_kind() {
    let (mut rib, now) = rib();
    rib.set_nexthop_object(group(1, &[(20, 1), (21, 1)]), now).unwrap();
    rib.set_route(through("10.8.0.0/16", 1), now).unwrap();
    assert_eq!(entry(&rib, "10.8.0.0/16").kind(), Some(RouteKind::Kernel));
    rib.set_nexthop_object(single(20, 2, "10.1.0.9"), now).unwrap();
    assert_eq!(entry(&rib, "10.8.0.0/16").kind(), Some(RouteKind::Kernel), "one member still missing");
    rib.set_nexthop_object(single(21, 3, "10.2.0.9"), now).unwrap();
    let e = entry(&rib, "10.8.0.0/16");
    assert!(e.kind() == Some(RouteKind::Unicast) && e.is_multipath(), "{e:?}");
    rib.set_nexthop_object(Arc::new(NexthopObject { id: 21, kind: NexthopKind::KernelOnly("encap (lwtunnel)"), protocol: 0 }), now)
        .unwrap();
    assert_eq!(entry(&rib, "10.8.0.0/16").kind(), Some(RouteKind::Kernel), "a member the fast path cannot carry");
    rib.delete_route(&"10.8.0.0/16".parse().unwrap(), now).unwrap();
    for id in [1, 20, 21] {
        rib.delete_nexthop_object(id, now).unwrap();
    }
    assert_eq!((rib.summary().nexthops, rib.summary().nexthop_groups), (0, 0), "nothing held");
}
