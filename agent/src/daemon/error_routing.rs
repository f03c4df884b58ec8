//! ICMP errors leave as `icmp_send` sends them: routed to their
//! destination (the source of the packet they are about) by the RIB,
//! through the rules (`ip rule`) as the kernel's own packets are, from
//! the egress interface's address (IPv4; IPv6 the ingress's), to the
//! route's neighbour; none when
//! there is no route back, nothing on the wire when the route back is the
//! router itself; held for a neighbour not yet resolved, as the kernel
//! queues it on the neighbour entry.

use super::Daemon;
use crate::{
    rib::lookup::{ErrorFlow, ErrorRoute},
    slow_path::{egress::relink, icmp::ErrorKind, neighbour_queue::Held, AdmittedError},
};
use common::proto::{self, ETH_P_IP, ETH_P_IPV6};
use std::{net::IpAddr, sync::atomic::Ordering, time::Instant};

impl Daemon {
    /// The ICMP error `kind` about `about` (a frame as it arrived), if the
    /// rules and rate limits allow one, routed.
    pub(super) fn send_error(&mut self, about: Held, kind: ErrorKind, now: Instant) {
        if let Some(reply) = self.slow.admit_error(about.ingress, about.arrived(), kind) {
            self.route_error(AdmittedError { about, kind, reply }, now);
        }
    }

    /// Routes and sends an admitted error; what cannot go is counted.
    pub(super) fn route_error(&mut self, error: AdmittedError, now: Instant) {
        let slow = self.slow.clone();
        let AdmittedError { about, kind, reply } = error;
        let flow = error_flow(&reply.frame, about.arrived());
        let rules = self.policy.list(reply.to.is_ipv6());
        let (ifindex, neighbour) = match self.rib.error_route_ruled(reply.to, about.ingress, &flow, rules) {
            ErrorRoute::Via { ifindex, neighbour } => (ifindex, Some(neighbour)),
            ErrorRoute::LinkBroadcast { ifindex } => (ifindex, None),
            ErrorRoute::ToSelf | ErrorRoute::NoRoute | ErrorRoute::RuleKernel => {
                slow.stats.no_route_back.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        // IPv4: from the egress interface's address (`ip_route_output`'s
        // choice when icmp_send leaves the source open); IPv6: the ingress
        // interface's, as the reply was built (icmp6_send selects the source
        // on the input device).
        let frame = match (reply.to, ifindex == about.ingress) {
            (std::net::IpAddr::V4(_), false) => slow.error_from(ifindex, about.arrived(), kind).map_or(reply.frame, |r| r.frame),
            _ => reply.frame,
        };
        let nexthop = match neighbour {
            Some(neighbour) => self.rib.usable_nexthop(ifindex, neighbour),
            None => self.rib.link_broadcast_nexthop(ifindex),
        };
        match nexthop {
            Some(nh) => {
                let sent = relink(&frame, &nh).is_some_and(|f| self.egress.as_ref().is_some_and(|e| e.send(nh.ifindex, &f)));
                let counter = if sent { &slow.stats.icmp_sent } else { &slow.stats.send_failed };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            None => match neighbour {
                Some(neighbour) => {
                    self.hold_at((ifindex, neighbour), Held { ingress: about.ingress, frame, originated: true, arrived: None }, now)
                }
                // The link is down: nowhere to send it.
                None => {
                    slow.stats.send_failed.fetch_add(1, Ordering::Relaxed);
                }
            },
        }
    }
}

/// What the rules see of an error's flow besides its destination: its TOS
/// byte as built (`icmp_send`: the packet's TOS bits, precedence internet
/// control); IPv4 leaves the source open for the route lookup, IPv6 sets
/// it first when the packet was to one of the router's own addresses
/// (`icmp6_send`), which the reply then comes from.
fn error_flow(reply: &[u8], about: &[u8]) -> ErrorFlow {
    let ip = |f: &[u8]| proto::ethernet_payload(f).and_then(|(t, at)| Some((t, f.get(at..)?.to_vec())));
    match (ip(reply), ip(about)) {
        (Some((ETH_P_IP, r)), _) if r.len() >= 20 => ErrorFlow { src: None, dscp: r[1] },
        (Some((ETH_P_IPV6, r)), Some((ETH_P_IPV6, a))) if r.len() >= 40 && a.len() >= 40 => {
            let own = r[8..24] == a[24..40];
            let src: [u8; 16] = r[8..24].try_into().expect("16 bytes");
            ErrorFlow { src: own.then(|| IpAddr::from(src)), dscp: (r[0] << 4) | (r[1] >> 4) }
        }
        _ => ErrorFlow { src: None, dscp: 0 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flow_is_the_replys_tos_and_ipv6s_own_source() {
        let mut v4 = vec![0u8; 34];
        v4[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
        v4[15] = 0xc4;
        assert_eq!(error_flow(&v4, &v4), ErrorFlow { src: None, dscp: 0xc4 });
        let (mut reply, mut about) = (vec![0u8; 54], vec![0u8; 54]);
        for f in [&mut reply, &mut about] {
            f[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
        }
        reply[14..16].copy_from_slice(&[0x6b, 0x80]); // traffic class 0xb8
        reply[22..38].fill(7); // the reply's source
        assert_eq!(error_flow(&reply, &about), ErrorFlow { src: None, dscp: 0xb8 }, "not to the router: source open");
        about[38..54].fill(7); // the packet was to it
        assert_eq!(error_flow(&reply, &about).src, Some(IpAddr::from([7u8; 16])));
    }

    proptest::proptest! {
        /// Any bytes as the reply and the packet: a flow, never a panic.
        #[test]
        fn any_frames_give_a_flow(
            reply in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
            about in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
        ) {
            let _ = error_flow(&reply, &about);
        }
    }
}
