//! `ip rule` from the kernel: RTM_NEWRULE / RTM_DELRULE (dumped and
//! subscribed, IPv4 and IPv6) decoded into the RIB's [`KernelRule`]. What
//! the fast path cannot evaluate is named in `unevaluable`, never dropped:
//! a rule with a selector this decoder does not know stays the kernel's.

use crate::rib::policy::{KernelAction, KernelRule};
use ipnet::IpNet;
use netlink_packet_route::{
    rule::{RuleAction, RuleAttribute, RuleFlags, RuleMessage},
    AddressFamily,
};
use rtnetlink::packet_core::Nla as _;
use std::net::IpAddr;

/// The rule a message describes; `None` for a family other than IPv4/IPv6.
pub fn kernel_rule(msg: &RuleMessage) -> Option<KernelRule> {
    let h = &msg.header;
    let ipv6 = match h.family {
        AddressFamily::Inet => false,
        AddressFamily::Inet6 => true,
        _ => return None,
    };
    let mut rule = KernelRule {
        ipv6,
        priority: 0,
        src: None,
        dst: None,
        iif: None,
        tos: h.tos,
        ip_proto: None,
        sport: None,
        dport: None,
        invert: h.flags.contains(RuleFlags::Invert),
        suppress_prefixlen: None,
        action: KernelAction::Nop,
        unevaluable: Vec::new(),
    };
    let (mut table, mut goto, mut mark, mut mask) = (h.table as u32, None, None, None);
    for attr in &msg.attributes {
        match attr {
            RuleAttribute::Destination(a) => rule.dst = prefix(*a, h.dst_len),
            RuleAttribute::Source(a) => rule.src = prefix(*a, h.src_len),
            RuleAttribute::Iifname(n) => rule.iif = Some(n.clone()),
            RuleAttribute::Goto(t) => goto = Some(*t),
            RuleAttribute::Priority(p) => rule.priority = *p,
            RuleAttribute::FwMark(m) => mark = Some(*m),
            RuleAttribute::FwMask(m) => mask = Some(*m),
            RuleAttribute::Table(t) => table = *t,
            // The kernel sends -1 for none.
            RuleAttribute::SuppressPrefixLen(n) => rule.suppress_prefixlen = (*n <= 128).then_some(*n),
            RuleAttribute::IpProtocol(p) => rule.ip_proto = Some(u8::from(*p)),
            RuleAttribute::SourcePortRange(r) => rule.sport = Some((r.start, r.end)),
            RuleAttribute::DestinationPortRange(r) => rule.dport = Some((r.start, r.end)),
            // Who installed it, and the realm it tags routes with: no selector.
            RuleAttribute::Protocol(_) | RuleAttribute::Realm(_) => {}
            RuleAttribute::L3MDev(false) => {}
            RuleAttribute::L3MDev(true) => rule.unevaluable.push("l3mdev".into()),
            RuleAttribute::Oifname(n) => rule.unevaluable.push(format!("oif {n}")),
            RuleAttribute::TunId(id) => rule.unevaluable.push(format!("tun_id {id}")),
            RuleAttribute::SuppressIfGroup(g) => rule.unevaluable.push(format!("suppress_ifgroup {g}")),
            RuleAttribute::UidRange(r) => rule.unevaluable.push(format!("uidrange {}-{}", r.start, r.end)),
            // FRA_SPORT_MASK / FRA_DPORT_MASK: an exact port (range) sends its full mask.
            RuleAttribute::Other(nla) if [FRA_SPORT_MASK, FRA_DPORT_MASK].contains(&nla.kind()) && nla_u16(nla) == Some(u16::MAX) => {}
            RuleAttribute::Other(nla) => rule.unevaluable.push(format!("attribute {}", nla.kind())),
            other => rule.unevaluable.push(format!("{other:?}")),
        }
    }
    if mark.is_some() || mask.is_some() {
        rule.unevaluable.push(format!("fwmark {:#x}/{:#x}", mark.unwrap_or(0), mask.unwrap_or(u32::MAX)));
    }
    rule.action = match h.action {
        RuleAction::ToTable => KernelAction::Table(table),
        RuleAction::Goto => match goto {
            Some(t) => KernelAction::Goto(t),
            None => KernelAction::Other(2),
        },
        RuleAction::Nop => KernelAction::Nop,
        RuleAction::Blackhole => KernelAction::Blackhole,
        RuleAction::Unreachable => KernelAction::Unreachable,
        RuleAction::Prohibit => KernelAction::Prohibit,
        other => KernelAction::Other(u8::from(other)),
    };
    Some(rule)
}

/// Port masks (Linux 6.13): a range selector's bits that count.
const FRA_SPORT_MASK: u16 = 28;
const FRA_DPORT_MASK: u16 = 29;

fn nla_u16(nla: &impl rtnetlink::packet_core::Nla) -> Option<u16> {
    let mut buf = vec![0u8; nla.value_len()];
    nla.emit_value(&mut buf);
    Some(u16::from_ne_bytes(buf.get(..2)?.try_into().ok()?))
}

fn prefix(addr: IpAddr, len: u8) -> Option<IpNet> {
    IpNet::new(addr, len).ok().map(|p| p.trunc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::rule::RulePortRange;
    use rtnetlink::packet_core::{Emitable, Parseable};

    /// Through the wire format and back, as the kernel's message arrives.
    fn decoded(msg: &RuleMessage) -> KernelRule {
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.emit(&mut buf);
        let parsed = RuleMessage::parse(&buf[..]).expect("parses");
        kernel_rule(&parsed).expect("a rule")
    }

    fn msg(action: RuleAction, attributes: Vec<RuleAttribute>) -> RuleMessage {
        let mut m = RuleMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.action = action;
        m.attributes = attributes;
        m
    }

    #[test]
    fn a_source_rule_decodes_with_its_table_and_priority() {
        let mut m = msg(
            RuleAction::ToTable,
            vec![
                RuleAttribute::Priority(100),
                RuleAttribute::Source("10.1.0.0".parse().unwrap()),
                RuleAttribute::Table(1000),
                RuleAttribute::Iifname("veth1".into()),
                RuleAttribute::DestinationPortRange(RulePortRange { start: 53, end: 53 }),
            ],
        );
        m.header.src_len = 16;
        m.header.tos = 0x10;
        let r = decoded(&m);
        assert_eq!(r.priority, 100);
        assert_eq!(r.src, Some("10.1.0.0/16".parse().unwrap()));
        assert_eq!(r.iif.as_deref(), Some("veth1"));
        assert_eq!((r.tos, r.dport, r.action.clone()), (0x10, Some((53, 53)), KernelAction::Table(1000)));
        assert!(r.unevaluable.is_empty());
        assert_eq!(r.describe(), "from 10.1.0.0/16 tos 0x10 iif veth1 dport 53 lookup 1000");
    }

    #[test]
    fn fwmark_uidrange_and_oif_are_named_unevaluable() {
        let r = decoded(&msg(
            RuleAction::ToTable,
            vec![RuleAttribute::FwMark(1), RuleAttribute::Oifname("eth9".into()), RuleAttribute::Table(100)],
        ));
        assert_eq!(r.unevaluable, vec!["oif eth9".to_string(), "fwmark 0x1/0xffffffff".to_string()]);
        let mut m = msg(RuleAction::Goto, vec![RuleAttribute::Goto(200)]);
        m.header.flags = RuleFlags::Invert;
        let r = decoded(&m);
        assert_eq!((r.action, r.invert), (KernelAction::Goto(200), true));
        assert_eq!(kernel_rule(&RuleMessage::default()), None, "no family");
        // As the kernel dumps its own: suppress_prefixlength -1 is none.
        let r = decoded(&msg(RuleAction::ToTable, vec![RuleAttribute::Table(255), RuleAttribute::SuppressPrefixLen(u32::MAX)]));
        assert_eq!((r.suppress_prefixlen, r.action), (None, KernelAction::Table(255)));
    }

    proptest::proptest! {
        /// Any bytes the kernel (or anyone on the socket) could send as a
        /// rule message: parsed or refused, decoded and compiled, never a panic.
        #[test]
        fn any_rule_message_decodes_and_compiles_without_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            if let Ok(m) = RuleMessage::parse(&bytes[..]) {
                if let Some(r) = kernel_rule(&m) {
                    let local = KernelRule { priority: 0, action: KernelAction::Table(crate::rib::policy::TABLE_LOCAL), ..r.clone() };
                    let local = KernelRule { src: None, dst: None, iif: None, tos: 0, ip_proto: None, sport: None, dport: None, invert: false, suppress_prefixlen: None, unevaluable: Vec::new(), ..local };
                    let census = crate::rib::policy::TableCensus::Unknown;
                    let c = crate::rib::policy::compile(&[local, r.clone()], &census, &[crate::rib::policy::TABLE_MAIN], &|_| Some((2, 0)));
                    proptest::prop_assert_eq!(c.dispositions.len(), 2);
                    let _ = r.describe();
                }
            }
        }
    }
}
