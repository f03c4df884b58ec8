//! The XDP program under BPF_PROG_TEST_RUN: exact output bytes and the
//! verdict reason of every case.

use common::{MetricsRef, NextHop, Reason, RouteEntry, RouteKind, RouteMetrics, Rtax};
use cowroute_tests::*;
use ipnet::IpNet;
use proptest::prelude::*;

const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
const RTR_IN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const RTR_OUT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x21];
const GW_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x22];
/// The egress port: loopback of the test's namespace. test_run reports the
/// redirect without transmitting, so the device is never used.
const PORT: u32 = 1;
const SRC4: [u8; 4] = [10, 1, 0, 2];
const SRC6: [u8; 16] = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

fn v6(last: u8, net: u8) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = 0xfd;
    a[3] = net;
    a[15] = last;
    a
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn route(fp: &mut FastPath, prefix: &str, kind: RouteKind, nexthop: u32, metrics: MetricsRef) {
    let mut e = RouteEntry::new(kind, nexthop, metrics, 7);
    if net(prefix).prefix_len() == net(prefix).max_prefix_len() {
        e.flags = RouteEntry::HOST;
    }
    fp.maps.put_route(&net(prefix), &e).unwrap();
}

fn fixture() -> FastPath {
    let mut fp = FastPath::load();
    fp.maps.add_port(PORT).expect("loopback in EGRESS_PORTS");
    // Test runs arrive on loopback: untagged, and on a VLAN 100 sub-interface.
    fp.accept_on(PORT, 0, RTR_IN_MAC);
    fp.accept_on(PORT, 100, RTR_IN_MAC);
    let nh = NextHop { ifindex: PORT, mtu: 1500, dmac: GW_MAC, smac: RTR_OUT_MAC, vlan: 0, flags: NextHop::USABLE };
    fp.maps.put_nexthop(1, &nh).unwrap();
    fp.maps.put_nexthop(2, &NextHop { vlan: 200, ..nh }).unwrap();
    fp.maps.put_nexthop(3, &NextHop { flags: NextHop::LINK_UP, ..nh }).unwrap();
    fp.maps.put_nexthop(4, &NextHop { flags: NextHop::RESOLVED, ..nh }).unwrap();
    let mut ro = RouteMetrics::DEFAULT;
    ro.set(Rtax::Mtu, 1400);
    ro.set(Rtax::Advmss, 1360);
    fp.maps.put_ro_metrics(1, &ro).unwrap();
    let mut rw = ro;
    rw.set(Rtax::Mtu, 1300);
    fp.maps.put_rw_metrics(5, &rw).unwrap();

    route(&mut fp, "10.2.0.0/24", RouteKind::Unicast, 1, MetricsRef::DEFAULT);
    route(&mut fp, "10.3.0.0/24", RouteKind::Unicast, 1, MetricsRef::read_only(1));
    route(&mut fp, "10.3.0.9/32", RouteKind::Unicast, 1, MetricsRef::private(5));
    route(&mut fp, "10.4.0.0/24", RouteKind::Unicast, 2, MetricsRef::DEFAULT);
    route(&mut fp, "10.5.0.0/24", RouteKind::Unicast, 3, MetricsRef::DEFAULT);
    route(&mut fp, "10.6.0.0/24", RouteKind::Unicast, 4, MetricsRef::DEFAULT);
    route(&mut fp, "10.7.0.0/24", RouteKind::Unicast, 99, MetricsRef::DEFAULT);
    route(&mut fp, "10.10.0.0/24", RouteKind::Unicast, 1_000_000, MetricsRef::DEFAULT);
    route(&mut fp, "10.8.0.0/24", RouteKind::Unicast, 1, MetricsRef::read_only(1_000_000));
    route(&mut fp, "10.11.0.0/24", RouteKind::Unicast, 1, MetricsRef::private(1_000_000));
    route(&mut fp, "192.0.2.0/24", RouteKind::Blackhole, 0, MetricsRef::DEFAULT);
    route(&mut fp, "198.51.100.0/24", RouteKind::Unreachable, 0, MetricsRef::DEFAULT);
    route(&mut fp, "203.0.113.0/24", RouteKind::Prohibit, 0, MetricsRef::DEFAULT);
    route(&mut fp, "10.9.0.1/32", RouteKind::Local, 0, MetricsRef::DEFAULT);
    route(&mut fp, "fd00:2::/64", RouteKind::Unicast, 1, MetricsRef::DEFAULT);
    route(&mut fp, "fd00:3::/64", RouteKind::Unicast, 1, MetricsRef::read_only(1));
    route(&mut fp, "fd00:4::/64", RouteKind::Unicast, 2, MetricsRef::DEFAULT);
    route(&mut fp, "fe80::1/128", RouteKind::Local, 0, MetricsRef::DEFAULT);
    fp
}

fn frame4(dst: [u8; 4], ttl: u8, len: usize) -> Vec<u8> {
    eth(RTR_IN_MAC, HOST_MAC, None, ETH_P_IP, &ipv4_udp(SRC4, dst, ttl, len))
}

fn frame6(dst: [u8; 16], hop: u8, payload: usize) -> Vec<u8> {
    eth(RTR_IN_MAC, HOST_MAC, None, ETH_P_IPV6, &ipv6_udp(SRC6, dst, hop, payload))
}

fn assert_forwarded(o: &Outcome, expected: &[u8]) {
    assert_eq!((o.action, o.reason), (XDP_REDIRECT, Reason::Forwarded), "{o:?}");
    assert_eq!(o.frame, expected, "output bytes");
}

#[test]
fn ipv4_is_forwarded_with_new_macs_ttl_minus_one_and_valid_checksum() {
    let mut fp = fixture();
    for ttl in [2u8, 64, 255] {
        let o = fp.run(&frame4([10, 2, 0, 2], ttl, 100)).unwrap();
        let expected = eth(GW_MAC, RTR_OUT_MAC, None, ETH_P_IP, &ipv4_udp(SRC4, [10, 2, 0, 2], ttl - 1, 100));
        assert_forwarded(&o, &expected);
        assert!(common::checksum::verifies(&o.frame[14..34]), "IPv4 header checksum");
    }
}

/// IPv4 routes up to /24 are found through the DIR-24 index, longer ones
/// through the trie, which also decides inside a block holding one; every
/// change reaches the packets.
#[test]
fn ipv4_dir24_index_and_trie_agree_through_route_changes() {
    let mut fp = fixture();
    let s = fp.maps.dir24_stats();
    assert_eq!((s.indexed, s.blocks_to_trie), (12, 2), "the fixture's ≤/24 routes; its two /32s: {s:?}");
    let tagged = |fp: &mut FastPath, dst: [u8; 4]| -> Option<bool> {
        let o = fp.run(&frame4(dst, 64, 100)).unwrap();
        (o.reason == Reason::Forwarded).then(|| o.frame[12..16] == [0x81, 0, 0, 200])
    };
    // Next hop 2 tags VLAN 200, next hop 1 does not.
    route(&mut fp, "10.20.0.0/16", RouteKind::Unicast, 2, MetricsRef::DEFAULT);
    assert_eq!((tagged(&mut fp, [10, 20, 5, 5]), tagged(&mut fp, [10, 20, 255, 1])), (Some(true), Some(true)));
    route(&mut fp, "10.20.5.128/25", RouteKind::Unicast, 1, MetricsRef::DEFAULT);
    assert_eq!(
        (tagged(&mut fp, [10, 20, 5, 5]), tagged(&mut fp, [10, 20, 5, 200])),
        (Some(true), Some(false)),
        "the trie inside 10.20.5.0/24"
    );
    route(&mut fp, "10.20.6.0/24", RouteKind::Unicast, 1, MetricsRef::DEFAULT);
    assert_eq!((tagged(&mut fp, [10, 20, 6, 1]), tagged(&mut fp, [10, 20, 7, 1])), (Some(false), Some(true)));
    fp.maps.delete_route(&net("10.20.5.128/25")).unwrap();
    assert_eq!(tagged(&mut fp, [10, 20, 5, 200]), Some(true), "the /16 again");
    fp.maps.delete_route(&net("10.20.6.0/24")).unwrap();
    assert_eq!(tagged(&mut fp, [10, 20, 6, 1]), Some(true), "the /16 again");
    route(&mut fp, "10.20.0.0/16", RouteKind::Unicast, 1, MetricsRef::DEFAULT);
    assert_eq!(tagged(&mut fp, [10, 20, 6, 1]), Some(false), "a replaced entry reaches its blocks");
    fp.maps.delete_route(&net("10.20.0.0/16")).unwrap();
    assert_eq!(fp.run(&frame4([10, 20, 6, 1], 64, 100)).unwrap().reason, Reason::NoRoute);
    assert_eq!(fp.maps.dir24_stats(), s, "back where it started");
}

#[test]
fn ipv6_is_forwarded_with_hop_limit_minus_one() {
    let mut fp = fixture();
    let o = fp.run(&frame6(v6(2, 2), 64, 100)).unwrap();
    let expected = eth(GW_MAC, RTR_OUT_MAC, None, ETH_P_IPV6, &ipv6_udp(SRC6, v6(2, 2), 63, 100));
    assert_forwarded(&o, &expected);
}

#[test]
fn ttl_or_hop_limit_one_leaves_for_the_stack_unchanged() {
    let mut fp = fixture();
    let f = frame4([10, 2, 0, 2], 1, 100);
    let o = fp.run(&f).unwrap();
    assert_eq!((o.action, o.reason), (XDP_PASS, Reason::TtlExceeded));
    assert_eq!(o.frame, f);
    let o = fp.run(&frame6(v6(2, 2), 1, 100)).unwrap();
    assert_eq!((o.action, o.reason), (XDP_PASS, Reason::TtlExceeded));
    let o = fp.run(&frame4([10, 2, 0, 2], 0, 100)).unwrap();
    assert_eq!((o.action, o.reason), (XDP_PASS, Reason::TtlExceeded));
}

/// The kernel's order: TTL, then MTU, then the neighbour. Towards a next hop
/// whose neighbour is unresolved (link up), a TTL-1 packet gets Time
/// Exceeded and a too-big DF one Fragmentation Needed / Packet Too Big; it is
/// not handed over to wait for the neighbour.
#[test]
fn ttl_and_mtu_are_checked_before_the_neighbour() {
    let mut fp = fixture();
    route(&mut fp, "fd00:5::/64", RouteKind::Unicast, 3, MetricsRef::DEFAULT);
    let cases = [
        (frame4([10, 5, 0, 1], 1, 100), Reason::TtlExceeded),
        (frame4([10, 5, 0, 1], 1, 1501), Reason::TtlExceeded),
        (frame4([10, 5, 0, 1], 64, 1501), Reason::TooBig),
        (frame4([10, 5, 0, 1], 64, 1500), Reason::NoNeighbour),
        (frame6(v6(1, 5), 1, 100), Reason::TtlExceeded),
        (frame6(v6(1, 5), 64, 1461), Reason::TooBig),
        (frame6(v6(1, 5), 64, 1460), Reason::NoNeighbour),
    ];
    for (f, reason) in cases {
        let o = fp.run(&f).unwrap();
        assert_eq!((o.action, o.reason), (XDP_PASS, reason));
        assert_eq!(o.frame, f, "{reason:?}: left unchanged");
    }
}

#[test]
fn no_route_passes() {
    let mut fp = fixture();
    let o = fp.run(&frame4([172, 16, 0, 1], 64, 100)).unwrap();
    assert_eq!((o.action, o.reason), (XDP_PASS, Reason::NoRoute));
    let o = fp.run(&frame6(v6(1, 9), 64, 100)).unwrap();
    assert_eq!((o.action, o.reason), (XDP_PASS, Reason::NoRoute));
}

#[test]
fn route_mtu_from_shared_metrics_else_device_mtu() {
    let mut fp = fixture();
    // 10.3.0.0/24 reads RTAX_MTU 1400 from METRICS_RO slot 1.
    assert_eq!(fp.run(&frame4([10, 3, 0, 2], 64, 1400)).unwrap().reason, Reason::Forwarded);
    let o = fp.run(&frame4([10, 3, 0, 2], 64, 1401)).unwrap();
    assert_eq!((o.action, o.reason), (XDP_PASS, Reason::TooBig));
    // 10.2.0.0/24 has no RTAX_MTU: the egress device's 1500 applies.
    assert_eq!(fp.run(&frame4([10, 2, 0, 2], 64, 1500)).unwrap().reason, Reason::Forwarded);
    assert_eq!(fp.run(&frame4([10, 2, 0, 2], 64, 1501)).unwrap().reason, Reason::TooBig);
    // IPv6 counts the 40-byte header: 1400 fits, 1401 does not.
    assert_eq!(fp.run(&frame6(v6(2, 3), 64, 1360)).unwrap().reason, Reason::Forwarded);
    assert_eq!(fp.run(&frame6(v6(2, 3), 64, 1361)).unwrap().reason, Reason::TooBig);
}

#[test]
fn private_metrics_apply_to_their_destination_only() {
    let mut fp = fixture();
    // 10.3.0.9/32 reads METRICS_RW slot 5 (MTU 1300) through a tag-clear reference.
    assert_eq!(fp.run(&frame4([10, 3, 0, 9], 64, 1300)).unwrap().reason, Reason::Forwarded);
    assert_eq!(fp.run(&frame4([10, 3, 0, 9], 64, 1350)).unwrap().reason, Reason::TooBig);
    // Its neighbours under the same /24 keep the shared 1400.
    assert_eq!(fp.run(&frame4([10, 3, 0, 8], 64, 1350)).unwrap().reason, Reason::Forwarded);
}

#[test]
fn vlan_tags_are_removed_pushed_or_rewritten_as_the_next_hop_needs() {
    let mut fp = fixture();
    // Tagged in (VLAN 100), untagged next hop: the tag is removed.
    let o = fp.run(&eth(RTR_IN_MAC, HOST_MAC, Some(100), ETH_P_IP, &ipv4_udp(SRC4, [10, 2, 0, 2], 64, 100))).unwrap();
    assert_forwarded(&o, &eth(GW_MAC, RTR_OUT_MAC, None, ETH_P_IP, &ipv4_udp(SRC4, [10, 2, 0, 2], 63, 100)));
    // Untagged in, next hop on VLAN 200: the tag is pushed.
    let o = fp.run(&frame4([10, 4, 0, 2], 64, 100)).unwrap();
    assert_forwarded(&o, &eth(GW_MAC, RTR_OUT_MAC, Some(200), ETH_P_IP, &ipv4_udp(SRC4, [10, 4, 0, 2], 63, 100)));
    // Tagged in, tagged out: the VLAN id is rewritten.
    let o = fp.run(&eth(RTR_IN_MAC, HOST_MAC, Some(100), ETH_P_IPV6, &ipv6_udp(SRC6, v6(5, 4), 9, 64))).unwrap();
    assert_forwarded(&o, &eth(GW_MAC, RTR_OUT_MAC, Some(200), ETH_P_IPV6, &ipv6_udp(SRC6, v6(5, 4), 8, 64)));
    // Two tags (QinQ): not ours.
    let inner = eth(RTR_IN_MAC, HOST_MAC, Some(100), ETH_P_IP, &ipv4_udp(SRC4, [10, 2, 0, 2], 64, 100));
    let mut qinq = eth(RTR_IN_MAC, HOST_MAC, Some(300), 0x8100, &inner[14..]);
    assert_eq!(fp.run_not_forwarded(&qinq).reason, Reason::VlanStacked);
    qinq[12..14].copy_from_slice(&0x88a8u16.to_be_bytes());
    assert_eq!(fp.run_not_forwarded(&qinq).reason, Reason::VlanStacked);
}

#[test]
fn route_types_and_unusable_next_hops() {
    let mut fp = fixture();
    let cases: [([u8; 4], u32, Reason); 10] = [
        ([192, 0, 2, 1], XDP_DROP, Reason::Blackhole),
        ([198, 51, 100, 1], XDP_PASS, Reason::Unreachable),
        ([203, 0, 113, 1], XDP_PASS, Reason::Prohibit),
        ([10, 9, 0, 1], XDP_PASS, Reason::Local),
        ([10, 5, 0, 1], XDP_PASS, Reason::NoNeighbour),
        ([10, 6, 0, 1], XDP_PASS, Reason::NoNeighbour),
        // Next hop 99 was never published: its index word is 0.
        ([10, 7, 0, 1], XDP_PASS, Reason::BadReference),
        ([10, 10, 0, 1], XDP_PASS, Reason::BadReference),
        ([10, 11, 0, 1], XDP_PASS, Reason::BadReference),
        ([10, 8, 0, 1], XDP_PASS, Reason::BadReference),
    ];
    for (dst, action, reason) in cases {
        let f = frame4(dst, 64, 100);
        let o = fp.run(&f).unwrap();
        assert_eq!((o.action, o.reason), (action, reason), "{dst:?}");
        assert_eq!(o.frame, f, "{dst:?}: frame left unchanged");
    }
}

#[test]
fn multicast_link_local_options_and_non_ip_are_left_to_the_stack() {
    let mut fp = fixture();
    assert_eq!(fp.run_not_forwarded(&frame4([224, 0, 0, 5], 64, 100)).reason, Reason::Multicast);
    assert_eq!(fp.run_not_forwarded(&frame4([255, 255, 255, 255], 64, 100)).reason, Reason::Multicast);
    let mut bcast = frame4([10, 2, 0, 2], 64, 100);
    bcast[..6].copy_from_slice(&[0xff; 6]);
    assert_eq!(fp.run_not_forwarded(&bcast).reason, Reason::Multicast);
    let mut mc6 = v6(1, 0);
    mc6[0] = 0xff;
    assert_eq!(fp.run_not_forwarded(&frame6(mc6, 64, 64)).reason, Reason::Multicast);
    let mut ll = v6(1, 0);
    ll[0] = 0xfe;
    ll[1] = 0x80;
    // Link-local: the router's own address is the stack's; another's goes
    // back out of its link, which the agent does (`ip6_forward`).
    assert_eq!(fp.run_not_forwarded(&frame6(ll, 64, 64)).reason, Reason::LinkLocal);
    ll[15] = 9;
    let o = fp.run_not_forwarded(&frame6(ll, 64, 64));
    assert_eq!((o.action, o.reason), (XDP_PASS, Reason::LinkLocalTransit));
    // IPv4 options (IHL 6) and an IPv6 hop-by-hop header.
    let mut opt = ipv4_udp(SRC4, [10, 2, 0, 2], 64, 100);
    opt.insert(20, 0);
    opt.insert(20, 0);
    opt.insert(20, 0);
    opt.insert(20, 1);
    opt.truncate(100);
    opt[0] = 0x46;
    fix_ipv4_checksum(&mut opt);
    assert_eq!(fp.run_not_forwarded(&eth(RTR_IN_MAC, HOST_MAC, None, ETH_P_IP, &opt)).reason, Reason::IpOptions);
    let mut hbh = ipv6_udp(SRC6, v6(2, 2), 64, 64);
    hbh[6] = 0;
    assert_eq!(fp.run_not_forwarded(&eth(RTR_IN_MAC, HOST_MAC, None, ETH_P_IPV6, &hbh)).reason, Reason::IpOptions);
    let arp = eth([0xff; 6], HOST_MAC, None, 0x0806, &[0u8; 28]);
    assert_eq!(fp.run_not_forwarded(&arp).reason, Reason::NotIp);
}

#[test]
fn malformed_frames_are_never_forwarded() {
    let mut fp = fixture();
    // Shorter than an Ethernet header: the kernel refuses to run XDP on it at
    // all (EINVAL), which is the guarantee we rely on; a driver never hands
    // XDP such a frame either.
    for len in [0usize, 13] {
        let f = vec![0u8; len];
        match fp.run(&f) {
            Err(_) => {}
            Ok(o) => assert_ne!(o.action, XDP_REDIRECT, "{len}-byte frame"),
        }
    }
    let good = frame4([10, 2, 0, 2], 64, 100);
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("cut IP header", good[..14 + 10].to_vec()),
        ("Ethernet header only", good[..14].to_vec()),
        ("cut VLAN header", eth(RTR_IN_MAC, HOST_MAC, None, 0x8100, &[0, 100])),
        ("cut IPv6 header", frame6(v6(2, 2), 64, 64)[..14 + 39].to_vec()),
    ];
    let mut ihl = good.clone();
    ihl[14] = 0x44;
    fix_ipv4_checksum(&mut ihl[14..]);
    cases.push(("IHL 4", ihl));
    let mut version = good.clone();
    version[14] = 0x65;
    cases.push(("version 6 in an IPv4 frame", version));
    let mut v6_version = frame6(v6(2, 2), 64, 64);
    v6_version[14] = 0x40;
    cases.push(("version 4 in an IPv6 frame", v6_version));
    let mut long = good.clone();
    long[16..18].copy_from_slice(&200u16.to_be_bytes());
    fix_ipv4_checksum(&mut long[14..]);
    cases.push(("total length beyond the frame", long));
    let mut short_total = good.clone();
    short_total[16..18].copy_from_slice(&19u16.to_be_bytes());
    fix_ipv4_checksum(&mut short_total[14..]);
    cases.push(("total length below the header", short_total));
    let mut long6 = frame6(v6(2, 2), 64, 64);
    long6[18..20].copy_from_slice(&65u16.to_be_bytes());
    cases.push(("payload length beyond the frame", long6));
    let mut bad_sum = good.clone();
    bad_sum[24] ^= 0xff;
    cases.push(("bad header checksum", bad_sum));
    for (name, f) in cases {
        let o = fp.run_not_forwarded(&f);
        assert_eq!((o.action, o.reason), (XDP_PASS, Reason::Malformed), "{name}");
        assert_eq!(o.frame, f, "{name}: frame left unchanged");
    }
}

#[test]
fn ethernet_padding_and_trailers_beyond_the_ip_packet_are_trimmed_as_linux_trims_them() {
    let mut fp = fixture();
    for trailer in [&[0u8; 18][..], &[0xa5; 1], &[0x5a; 200]] {
        let mut f = frame4([10, 2, 0, 2], 64, 28);
        f.extend_from_slice(trailer);
        let o = fp.run(&f).unwrap();
        assert_forwarded(&o, &eth(GW_MAC, RTR_OUT_MAC, None, ETH_P_IP, &ipv4_udp(SRC4, [10, 2, 0, 2], 63, 28)));
        let mut f = frame6(v6(2, 2), 64, 8);
        f.extend_from_slice(trailer);
        let o = fp.run(&f).unwrap();
        assert_forwarded(&o, &eth(GW_MAC, RTR_OUT_MAC, None, ETH_P_IPV6, &ipv6_udp(SRC6, v6(2, 2), 63, 8)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Corrupting any bytes of a good frame never makes the program forward
    /// something it should not: whatever is redirected had a valid header,
    /// a routable destination and a TTL above one, and leaves with TTL - 1
    /// and a valid checksum.
    #[test]
    fn corrupted_frames_are_never_misforwarded(
        flips in proptest::collection::vec((0usize..60, any::<u8>()), 1..6),
        cut in 14usize..=114,
    ) {
        thread_local!(static FP: std::cell::RefCell<FastPath> = std::cell::RefCell::new(fixture()));
        let mut f = frame4([10, 2, 0, 2], 64, 100);
        for (i, b) in flips {
            f[i] ^= b;
        }
        f.truncate(cut);
        let o = FP.with(|fp| fp.borrow_mut().run(&f)).unwrap();
        if o.action == XDP_REDIRECT {
            let ip = &f[14..];
            prop_assert_eq!(ip[0], 0x45);
            prop_assert!(common::checksum::verifies(&ip[..20]));
            prop_assert!(ip[8] > 1);
            prop_assert!(u16::from_be_bytes([ip[2], ip[3]]) as usize <= f.len() - 14);
            prop_assert_eq!(o.frame[14 + 8], ip[8] - 1);
            prop_assert!(common::checksum::verifies(&o.frame[14..34]));
            prop_assert_eq!(&o.frame[..12], &[GW_MAC, RTR_OUT_MAC].concat()[..]);
        } else {
            prop_assert_eq!(&o.frame, &f);
        }
    }
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// A TCP segment from SRC4 to `dst` as a frame, and as rtr should forward it
/// when the MSS option (if any) becomes `mss_out`.
fn syn4(dst: [u8; 4], flags: u8, opts: &[u8], opts_out: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let input = eth(RTR_IN_MAC, HOST_MAC, None, ETH_P_IP, &ipv4_with(SRC4, dst, 64, 6, &tcp(&SRC4, &dst, flags, opts)));
    let output = eth(GW_MAC, RTR_OUT_MAC, None, ETH_P_IP, &ipv4_with(SRC4, dst, 63, 6, &tcp(&SRC4, &dst, flags, opts_out)));
    (input, output)
}

#[test]
fn syn_mss_is_clamped_to_the_route_advmss_with_a_valid_checksum() {
    let mut fp = fixture();
    // 10.3.0.0/24 reads ADVMSS 1360 from its shared metrics.
    let sack_ts = [4u8, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7];
    let cases: Vec<(&str, u8, Vec<u8>, Vec<u8>)> = vec![
        ("SYN, MSS first", SYN, [&mss_option(1460)[..], &sack_ts].concat(), [&mss_option(1360)[..], &sack_ts].concat()),
        ("SYN+ACK", SYN | ACK, mss_option(1460).to_vec(), mss_option(1360).to_vec()),
        ("SYN, MSS after NOPs", SYN, [&[1u8, 1][..], &mss_option(8960)].concat(), [&[1u8, 1][..], &mss_option(1360)].concat()),
        ("SYN, MSS already smaller", SYN, mss_option(1200).to_vec(), mss_option(1200).to_vec()),
        ("SYN without MSS", SYN, vec![1, 1, 1, 0], vec![1, 1, 1, 0]),
        ("not a SYN", ACK, mss_option(1460).to_vec(), mss_option(1460).to_vec()),
    ];
    for (name, flags, opts, opts_out) in cases {
        let (input, expected) = syn4([10, 3, 0, 8], flags, &opts, &opts_out);
        let o = fp.run(&input).unwrap();
        assert_eq!((o.action, o.reason), (XDP_REDIRECT, Reason::Forwarded), "{name}");
        assert_eq!(o.frame, expected, "{name}: exact bytes");
        assert!(l4_checksum_ok(&SRC4, &[10, 3, 0, 8], 6, &o.frame[34..]), "{name}: TCP checksum");
    }
    // A route without ADVMSS leaves SYNs alone.
    let (input, expected) = syn4([10, 2, 0, 8], SYN, &mss_option(1460), &mss_option(1460));
    assert_eq!(fp.run(&input).unwrap().frame, expected);
    // A malformed option list is left alone, not walked past the header.
    let (input, expected) = syn4([10, 3, 0, 8], SYN, &[8, 0, 0, 0, 2, 4, 5, 180], &[8, 0, 0, 0, 2, 4, 5, 180]);
    assert_eq!(fp.run(&input).unwrap().frame, expected);
}

#[test]
fn ipv6_syn_mss_is_clamped_and_private_advmss_applies() {
    let mut fp = fixture();
    let (src, dst) = (SRC6, v6(8, 3));
    let input = eth(RTR_IN_MAC, HOST_MAC, None, ETH_P_IPV6, &ipv6_with(src, dst, 64, 6, &tcp(&src, &dst, SYN, &mss_option(1440))));
    let expected = eth(GW_MAC, RTR_OUT_MAC, None, ETH_P_IPV6, &ipv6_with(src, dst, 63, 6, &tcp(&src, &dst, SYN, &mss_option(1360))));
    let o = fp.run(&input).unwrap();
    assert_eq!(o.frame, expected);
    assert!(l4_checksum_ok(&src, &dst, 6, &o.frame[54..]));
    // A destination's private copy with its own ADVMSS: 10.3.0.9 reads RW slot 5.
    let mut private = RouteMetrics::DEFAULT;
    private.set(Rtax::Mtu, 1300);
    private.set(Rtax::Advmss, 1260);
    fp.maps.put_rw_metrics(5, &private).unwrap();
    let (input, expected) = syn4([10, 3, 0, 9], SYN, &mss_option(1460), &mss_option(1260));
    assert_eq!(fp.run(&input).unwrap().frame, expected);
}

/// An ECMP route: each flow takes the leg its 5-tuple's hash picks (the
/// bucket the agent gave that leg), ports included, and keeps it; a group
/// id unpublished or outside the index is a bad reference, never a forward.
#[test]
fn multipath_routes_pick_the_leg_of_the_flows_hash() {
    use common::{flow_hash::flow_hash_v4, NextHopGroup};
    let mut fp = fixture();
    let leg_mac = |leg: u32| [0x02, 0, 0, 0, 0x4c, leg as u8];
    for leg in [10u32, 11] {
        let nh = NextHop { ifindex: PORT, mtu: 1500, dmac: leg_mac(leg), smac: RTR_OUT_MAC, vlan: 0, flags: NextHop::USABLE };
        fp.maps.put_nexthop(leg, &nh).unwrap();
    }
    let mut group = NextHopGroup::EMPTY;
    for (i, b) in group.buckets.iter_mut().enumerate() {
        *b = if i % 3 == 0 { 10 } else { 11 };
    }
    fp.maps.put_group(1, &group).unwrap();
    let mut e = RouteEntry::new(RouteKind::Unicast, 1, MetricsRef::DEFAULT, 7);
    e.flags = RouteEntry::MULTIPATH;
    fp.maps.put_route(&net("10.12.0.0/24"), &e).unwrap();
    let dst = [10, 12, 0, 1];
    let mut legs_seen = std::collections::BTreeMap::new();
    for sport in 0..256u16 {
        let mut udp = [0u8; 8];
        udp[..2].copy_from_slice(&(1024 + sport).to_be_bytes());
        udp[2..4].copy_from_slice(&7000u16.to_be_bytes());
        udp[4..6].copy_from_slice(&8u16.to_be_bytes());
        let f = eth(RTR_IN_MAC, HOST_MAC, None, ETH_P_IP, &ipv4_with(SRC4, dst, 64, 17, &udp));
        let ports = [udp[0], udp[1], udp[2], udp[3]];
        let expected = group.leg(flow_hash_v4(SRC4, dst, 17, ports));
        for _ in 0..2 {
            let o = fp.run(&f).unwrap();
            assert_eq!((o.action, o.reason), (XDP_REDIRECT, Reason::Forwarded));
            assert_eq!(o.frame[..6], leg_mac(expected), "flow {sport} on its hash's leg, every time");
        }
        *legs_seen.entry(expected).or_insert(0) += 1;
    }
    assert_eq!(legs_seen.len(), 2, "256 flows use both legs: {legs_seen:?}");
    assert!(legs_seen[&10] > 40 && legs_seen[&11] > 120, "about 1/3 and 2/3: {legs_seen:?}");
    // A group id never published (its index word is 0), and one beyond the index.
    for id in [2, common::capacity::NH_GROUPS] {
        e.nexthop = id;
        fp.maps.put_route(&net("10.13.0.0/24"), &e).unwrap();
        assert_eq!(fp.run(&frame4([10, 13, 0, 1], 64, 100)).unwrap().reason, Reason::BadReference, "group {id}");
    }
}

/// The program's aya-log lines run only with `--bpf-debug-log`: the log
/// level is a load-time constant, so without it the verifier prunes the
/// logging code and the program the kernel runs is smaller.
#[test]
fn debug_log_lines_are_pruned_unless_asked_for() {
    require_root();
    let size = |debug: bool| {
        let dp =
            cowroute::dataplane::DataPlane::load(&cowroute::dataplane::LoadOptions { bpf_debug_log: debug, ..Default::default() }).unwrap();
        let prog: &aya::programs::Xdp = dp.ebpf.program(cowroute::dataplane::PROG_FORWARD).unwrap().try_into().unwrap();
        prog.info().unwrap().size_translated().expect("translated size")
    };
    let (quiet, verbose) = (size(false), size(true));
    eprintln!("translated program: {quiet} bytes, {verbose} with --bpf-debug-log");
    assert!(quiet < verbose, "without --bpf-debug-log the program is smaller: {quiet} vs {verbose} bytes");
}

/// A republished next hop moves to a fresh slot at one switch: packets use
/// the new value at once, and the old slot keeps its contents whole for
/// programs that read the old word just before.
#[test]
fn a_republished_next_hop_takes_a_fresh_slot_and_leaves_the_old_one_intact() {
    let mut fp = fixture();
    let (old_slot, old) = fp.maps.nexthops().get(1).unwrap().expect("next hop 1 is published");
    let new = NextHop { dmac: [0x02, 0, 0, 0, 0, 0x33], smac: [0x02, 0, 0, 0, 0, 0x34], ..old };
    fp.maps.put_nexthop(1, &new).unwrap();
    let (slot, now) = fp.maps.nexthops().get(1).unwrap().unwrap();
    assert_ne!(slot, old_slot, "never rewritten in place");
    assert_eq!((now, fp.maps.nexthops().read_slot(old_slot).unwrap()), (new, old), "the old slot is intact right after the switch");
    let o = fp.run(&frame4([10, 2, 0, 2], 64, 100)).unwrap();
    assert_eq!((o.reason, &o.frame[..12]), (Reason::Forwarded, &[new.dmac, new.smac].concat()[..]), "the new next hop at once");
}

/// A next hop rewritten over and over while frames go through it (from
/// another thread, so on the other CPU when it is free): every frame leaves
/// with one of the two consistent (dst MAC, src MAC) pairs, never half of
/// each, though the program reads the next hop's fields one by one.
#[test]
fn a_next_hop_rewritten_under_traffic_is_never_seen_half_written() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    const FRAMES: usize = 300_000;
    let mut fp = fixture();
    // Slots come back quickly: the writer publishes as fast as it can.
    fp.maps.set_grace(std::time::Duration::from_millis(20));
    let a = NextHop {
        ifindex: PORT,
        mtu: 1500,
        dmac: [0x02, 0xa1, 0xa1, 0xa1, 0xa1, 0xa1],
        smac: [0x02, 0xa2, 0xa2, 0xa2, 0xa2, 0xa2],
        vlan: 0,
        flags: NextHop::USABLE,
    };
    let b = NextHop { dmac: [0x02, 0xb1, 0xb1, 0xb1, 0xb1, 0xb1], smac: [0x02, 0xb2, 0xb2, 0xb2, 0xb2, 0xb2], ..a };
    fp.maps.put_nexthop(5, &a).unwrap();
    route(&mut fp, "10.30.0.0/24", RouteKind::Unicast, 5, MetricsRef::DEFAULT);
    let frame = frame4([10, 30, 0, 1], 64, 100);
    let (stop, publishes) = (AtomicBool::new(false), AtomicU64::new(0));
    let (maps, dp) = (&mut fp.maps, &mut fp.dp);
    let (seen, wrong) = std::thread::scope(|s| {
        s.spawn(|| {
            for n in 0u64.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                maps.put_nexthop(5, if n % 2 == 0 { &b } else { &a }).unwrap();
                publishes.store(n + 1, Ordering::Relaxed);
            }
        });
        // No assertion in here: the writer must be stopped whatever happens.
        let (mut seen, mut wrong) = (std::collections::BTreeMap::new(), None);
        for _ in 0..FRAMES {
            let out = test_run(dp, &frame).map(|(action, out)| (action == XDP_REDIRECT).then_some(out));
            let Ok(Some(out)) = out else {
                wrong = Some(format!("not forwarded: {out:?}"));
                break;
            };
            let pair = (<[u8; 6]>::try_from(&out[..6]).unwrap(), <[u8; 6]>::try_from(&out[6..12]).unwrap());
            if pair != (a.dmac, a.smac) && pair != (b.dmac, b.smac) {
                wrong = Some(format!("a torn next hop: dst {:x?} src {:x?}", pair.0, pair.1));
                break;
            }
            *seen.entry(pair.0).or_insert(0u64) += 1;
        }
        stop.store(true, Ordering::Relaxed);
        (seen, wrong)
    });
    assert_eq!(wrong, None);
    let n = publishes.load(Ordering::Relaxed);
    eprintln!("{FRAMES} frames during {n} publishes: {seen:x?}");
    assert!(seen.len() == 2 && n > 1_000, "frames went through both values while the next hop changed: {n} publishes, {seen:x?}");
}

fn udp4(src: [u8; 4], dst: [u8; 4], ttl: u8) -> Vec<u8> {
    eth(RTR_IN_MAC, HOST_MAC, None, ETH_P_IP, &ipv4_udp(src, dst, ttl, 100))
}

fn udp6(src: [u8; 16], dst: [u8; 16], hop: u8) -> Vec<u8> {
    eth(RTR_IN_MAC, HOST_MAC, None, ETH_P_IPV6, &ipv6_udp(src, dst, hop, 64))
}

fn addr6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>().unwrap().octets()
}

/// Layer 2 as the kernel sees it: another host's MAC, a VLAN with no
/// sub-interface and an interface not yet known go to the stack; a
/// priority tag (VID 0) is the parent's.
#[test]
fn frames_for_other_hosts_unknown_vlans_and_unknown_ports_are_not_routed() {
    let mut fp = fixture();
    let ip = ipv4_udp(SRC4, [10, 2, 0, 2], 64, 100);
    let other = eth([0x02, 0, 0, 0, 0, 0x99], HOST_MAC, None, ETH_P_IP, &ip);
    assert_eq!(fp.run_not_forwarded(&other).reason, Reason::OtherHost);
    let v6 = eth([0x02, 0, 0, 0, 0, 0x99], HOST_MAC, None, ETH_P_IPV6, &ipv6_udp(SRC6, v6(2, 2), 64, 64));
    assert_eq!(fp.run_not_forwarded(&v6).reason, Reason::OtherHost);
    let o = fp.run_not_forwarded(&eth(RTR_IN_MAC, HOST_MAC, Some(300), ETH_P_IP, &ip));
    assert_eq!((o.action, o.reason), (XDP_PASS, Reason::VlanUnknown));
    // Priority-tagged: routed on the parent, the tag gone on egress.
    let o = fp.run(&eth(RTR_IN_MAC, HOST_MAC, Some(0x2000), ETH_P_IP, &ip)).unwrap();
    assert_forwarded(&o, &eth(GW_MAC, RTR_OUT_MAC, None, ETH_P_IP, &ipv4_udp(SRC4, [10, 2, 0, 2], 63, 100)));
    // A VLAN sub-interface with its own MAC also takes its parent's.
    let own = common::ingress::IngressPort { mac: [0x02, 0, 0, 0, 0, 0x77], lower_mac: RTR_IN_MAC, ..Default::default() };
    fp.set_port(PORT, 100, own);
    assert_eq!(fp.run(&eth([0x02, 0, 0, 0, 0, 0x77], HOST_MAC, Some(100), ETH_P_IP, &ip)).unwrap().reason, Reason::Forwarded);
    assert_eq!(fp.run(&eth(RTR_IN_MAC, HOST_MAC, Some(100), ETH_P_IP, &ip)).unwrap().reason, Reason::Forwarded);
    fp.maps.delete_ingress_port(common::ingress::IngressKey { ifindex: PORT, vid: 0 }).unwrap();
    let o = fp.run_not_forwarded(&eth(RTR_IN_MAC, HOST_MAC, None, ETH_P_IP, &ip));
    assert_eq!((o.action, o.reason), (XDP_PASS, Reason::PortUnknown));
}

/// `ip_route_input_slow`'s and `ip6_rcv_core`'s martians: dropped, each
/// under its own reason; `route_localnet` lets 127/8 through.
#[test]
fn martian_sources_and_destinations_are_dropped_each_with_its_reason() {
    let mut fp = fixture();
    let far = [10, 2, 0, 2];
    let cases4 = [
        ([224, 0, 0, 5], far, Reason::SourceGroup),
        ([255, 255, 255, 255], far, Reason::SourceGroup),
        ([0, 0, 0, 0], far, Reason::SourceZero),
        (SRC4, [0, 0, 0, 0], Reason::DestinationZero),
        (SRC4, [127, 0, 0, 1], Reason::DestinationLoopback),
        ([127, 0, 0, 1], far, Reason::SourceLoopback),
    ];
    for (src, dst, reason) in cases4 {
        let o = fp.run_not_forwarded(&udp4(src, dst, 64));
        assert_eq!((o.action, o.reason), (XDP_DROP, reason), "{src:?} -> {dst:?}");
    }
    // Class E and the rest of 0/8 are routable to Linux.
    assert_eq!(fp.run(&udp4([240, 0, 0, 1], far, 64)).unwrap().reason, Reason::Forwarded);
    assert_eq!(fp.run(&udp4([0, 1, 2, 3], far, 64)).unwrap().reason, Reason::Forwarded);
    fp.set_port(PORT, 0, common::ingress::IngressPort { flags: common::ingress::IngressPort::ROUTE_LOCALNET, ..port_in() });
    assert_eq!(fp.run(&udp4([127, 0, 0, 1], far, 64)).unwrap().reason, Reason::Forwarded, "route_localnet");
    let o = fp.run_not_forwarded(&udp4(SRC4, [127, 0, 0, 1], 64));
    assert_eq!((o.action, o.reason), (XDP_PASS, Reason::Local), "route_localnet: 127/8 is the stack's");

    let dst = v6(2, 2);
    let cases6 = [
        (SRC6, addr6("::1"), Reason::DestinationLoopback),
        (addr6("::1"), dst, Reason::SourceLoopback),
        (addr6("ff02::1"), dst, Reason::SourceGroup),
        (addr6("::"), dst, Reason::SourceZero),
    ];
    for (src, dst, reason) in cases6 {
        let o = fp.run_not_forwarded(&udp6(src, dst, 64));
        assert_eq!((o.action, o.reason), (XDP_DROP, reason), "{src:?} -> {dst:?}");
    }
    // A link-local source beyond its link: Destination Unreachable from the
    // agent (beyond scope), unless the hop limit runs out first.
    let o = fp.run_not_forwarded(&udp6(addr6("fe80::2"), dst, 64));
    assert_eq!((o.action, o.reason), (XDP_PASS, Reason::LinkLocal));
    assert_eq!(fp.run_not_forwarded(&udp6(addr6("fe80::2"), dst, 1)).reason, Reason::TtlExceeded);
    assert_eq!(fp.run_not_forwarded(&udp6(SRC6, addr6("fe80::1"), 64)).reason, Reason::LinkLocal);
    assert_eq!(fp.run_not_forwarded(&udp6(SRC6, addr6("fe80::2"), 64)).reason, Reason::LinkLocalTransit);
}

fn port_in() -> common::ingress::IngressPort {
    common::ingress::IngressPort { mac: RTR_IN_MAC, lower_mac: RTR_IN_MAC, ..Default::default() }
}

/// `fib_validate_source`: one of our addresses as source is refused unless
/// `accept_local`; strict `rp_filter` wants the route back through the
/// ingress interface (and VLAN), loose just a route.
#[test]
fn sources_are_validated_as_rp_filter_and_accept_local_say() {
    use common::ingress::IngressPort;
    let mut fp = fixture();
    let mut own = RouteEntry::new(RouteKind::Local, 0, MetricsRef::DEFAULT, 0);
    own.flags = RouteEntry::HOST | RouteEntry::ADDRESS;
    fp.maps.put_route(&net("10.9.0.2/32"), &own).unwrap();
    let far = [10, 2, 0, 2];
    let verdict = |fp: &mut FastPath, src: [u8; 4]| fp.run(&udp4(src, far, 64)).unwrap().reason;
    assert_eq!(verdict(&mut fp, [10, 9, 0, 2]), Reason::SourceLocal);
    assert_eq!(verdict(&mut fp, [10, 9, 0, 1]), Reason::Forwarded, "a local route that is no address (rp_filter off)");
    assert_eq!(verdict(&mut fp, [172, 16, 0, 1]), Reason::Forwarded, "no route back: fine without rp_filter");
    fp.set_port(PORT, 0, IngressPort { flags: IngressPort::ACCEPT_LOCAL, ..port_in() });
    assert_eq!(verdict(&mut fp, [10, 9, 0, 2]), Reason::Forwarded, "accept_local");

    // Strict: 10.3.0.0/24 leaves by the ingress port untagged (valid),
    // 10.4.0.0/24 by VLAN 200 on it (another interface), 172.16/12 nowhere.
    fp.set_port(PORT, 0, IngressPort { rp_filter: 1, ..port_in() });
    assert_eq!(verdict(&mut fp, [10, 3, 0, 7]), Reason::Forwarded);
    assert_eq!(verdict(&mut fp, [10, 4, 0, 7]), Reason::SourceReversePath);
    assert_eq!(verdict(&mut fp, [172, 16, 0, 1]), Reason::SourceReversePath);
    assert_eq!(verdict(&mut fp, [192, 0, 2, 1]), Reason::SourceReversePath, "a blackhole route back is no route");
    assert_eq!(verdict(&mut fp, [10, 9, 0, 2]), Reason::SourceLocal);
    let o = fp.run(&udp4([10, 4, 0, 7], far, 1)).unwrap();
    assert_eq!((o.action, o.reason), (XDP_DROP, Reason::SourceReversePath), "validation comes before the TTL");
    // Loose: any route back will do.
    fp.set_port(PORT, 0, IngressPort { rp_filter: 2, ..port_in() });
    assert_eq!(verdict(&mut fp, [10, 4, 0, 7]), Reason::Forwarded);
    assert_eq!(verdict(&mut fp, [172, 16, 0, 1]), Reason::SourceReversePath);
    // IPv4 options are validated before they go to the agent.
    let mut ip = ipv4_udp([172, 16, 0, 1], far, 64, 100);
    ip.splice(20..20, [1, 1, 1, 0]);
    ip[0] = 0x46;
    ip[2..4].copy_from_slice(&104u16.to_be_bytes());
    fix_ipv4_checksum(&mut ip);
    assert_eq!(fp.run(&eth(RTR_IN_MAC, HOST_MAC, None, ETH_P_IP, &ip)).unwrap().reason, Reason::SourceReversePath);
}

/// The verifier inlines an array lookup (a bounds check and an index) only
/// where one call site sees one map; where LLVM sinks the lookups of two
/// maps into one call, the program pays the generic helper instead. The
/// forwarding path has none of those: the one generic lookup left is the
/// reverse-path function's (`route_lookup_v4_compact`, which saves a stack
/// slot under its callers' stack limit).
#[test]
fn the_forwarding_paths_array_lookups_are_inlined() {
    let mut fp = FastPath::load();
    let prog: &mut aya::programs::Xdp = fp.dp.ebpf.program_mut(cowroute::dataplane::PROG_FORWARD).unwrap().try_into().unwrap();
    let id = prog.info().unwrap().id();
    let out = std::process::Command::new("bpftool").args(["prog", "dump", "xlated", "id", &id.to_string()]).output().expect("bpftool");
    assert!(out.status.success(), "bpftool: {}", String::from_utf8_lossy(&out.stderr));
    let xlated = String::from_utf8_lossy(&out.stdout);
    let generic: Vec<&str> = xlated.lines().filter(|l| l.contains("call bpf_map_lookup_elem")).collect();
    // Inlined lookups exist at all (so the dump is what we think it is).
    assert!(xlated.lines().count() > 1000, "a short dump: {xlated}");
    assert_eq!(generic.len(), 1, "generic (not inlined) map lookups: {generic:?}");
}
