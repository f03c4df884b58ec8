//! The ingress ports: every interface frames may arrive on, as the fast
//! path's `INGRESS_PORTS` holds it (its MAC, and for a VLAN sub-interface
//! its parent and tag), with the sysctls `fib_validate_source` reads.
//! Published only once its sysctls are known: until then the fast path
//! leaves its frames to the kernel, which knows them.

use super::{Rib, RibError};
use crate::dataplane::map_sink::MapSink;
use crate::rib::types::{Link, PortSysctls};
use common::ingress::{IngressKey, IngressPort};
use std::collections::{BTreeMap, HashMap};

/// The ports the links and their known sysctls call for.
fn wanted(links: &HashMap<u32, Link>, sysctls: &BTreeMap<u32, PortSysctls>) -> BTreeMap<IngressKey, IngressPort> {
    let mut ports = BTreeMap::new();
    for link in links.values() {
        let Some(s) = sysctls.get(&link.index) else { continue };
        let (key, lower_mac) = match link.vlan {
            // VLAN 0 is the parent's own (priority-tagged frames).
            Some((_, 0)) => continue,
            Some((parent, vid)) => (IngressKey { ifindex: parent, vid: vid as u32 }, links.get(&parent).map_or(link.mac, |p| p.mac)),
            None => (IngressKey { ifindex: link.index, vid: 0 }, link.mac),
        };
        ports.insert(
            key,
            IngressPort { mac: link.mac, lower_mac, rp_filter: s.rp_filter.min(2), flags: s.flags() | IngressPort::PRESENT, _pad: 0 },
        );
    }
    ports
}

impl<S: MapSink> Rib<S> {
    /// The kernel's sysctls for link `index` now; its port follows.
    pub fn set_port_sysctls(&mut self, index: u32, sysctls: PortSysctls) -> Result<(), RibError> {
        if self.port_sysctls.insert(index, sysctls) == Some(sysctls) {
            return Ok(());
        }
        self.publish_ingress_ports()
    }

    /// The ingress ports as published.
    pub fn ingress_ports(&self) -> &BTreeMap<IngressKey, IngressPort> {
        &self.ingress_ports
    }

    /// Brings `INGRESS_PORTS` in line with the links: gone ones deleted,
    /// changed ones replaced (each element whole).
    /// An earlier agent's ports stay until the adoption sweep: until then
    /// their links may just not have been seen yet.
    pub(super) fn publish_ingress_ports(&mut self) -> Result<(), RibError> {
        let wanted = wanted(&self.links, &self.port_sysctls);
        let adopted = &self.adopted_ingress;
        let stale: Vec<IngressKey> =
            self.ingress_ports.keys().filter(|k| !wanted.contains_key(k) && !adopted.contains(k)).copied().collect();
        for key in stale {
            self.sink.delete_ingress_port(key)?;
            self.ingress_ports.remove(&key);
        }
        for (key, port) in wanted {
            if self.ingress_ports.get(&key) != Some(&port) {
                self.sink.put_ingress_port(key, &port)?;
                self.ingress_ports.insert(key, port);
            }
        }
        Ok(())
    }
}

impl<S: MapSink> Rib<S> {
    /// The earlier agent's ports: kept (and replaced as links are seen)
    /// until [`Rib::sweep_adopted_ingress`].
    pub(super) fn adopt_ingress_ports(&mut self, keys: Vec<IngressKey>) {
        for key in keys {
            self.ingress_ports.insert(key, IngressPort::default());
            self.adopted_ingress.insert(key);
        }
    }

    /// After the first full programming: an earlier port no link calls for goes.
    pub(super) fn sweep_adopted_ingress(&mut self) -> Result<(), RibError> {
        self.adopted_ingress.clear();
        self.publish_ingress_ports()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{dataplane::map_sink::memory::MemoryMaps, rib::types::Event};
    use std::time::{Duration, Instant};

    fn link(index: u32, mac: u8, vlan: Option<(u32, u16)>) -> Link {
        Link { index, name: format!("if{index}"), mac: [2, 0, 0, 0, 0, mac], mtu: 1500, up: true, vlan, rx_queues: 1 }
    }

    #[test]
    fn ports_follow_links_and_sysctls_and_vlans_key_on_their_parent() {
        let now = Instant::now();
        let mut rib = Rib::new(MemoryMaps::default(), Default::default(), Duration::from_secs(1));
        rib.apply(Event::Link(link(2, 0x22, None)), now).unwrap();
        rib.apply(Event::Link(link(5, 0x55, Some((2, 100)))), now).unwrap();
        assert!(rib.sink().ingress_ports.is_empty(), "nothing before the sysctls are known");
        rib.set_port_sysctls(2, PortSysctls { rp_filter: 1, ..Default::default() }).unwrap();
        rib.set_port_sysctls(5, PortSysctls { accept_local: true, rp_filter: 7, ..Default::default() }).unwrap();
        let ports = &rib.sink().ingress_ports;
        let parent = ports[&IngressKey { ifindex: 2, vid: 0 }];
        assert_eq!(
            (parent.mac, parent.lower_mac, parent.rp_filter, parent.flags),
            ([2, 0, 0, 0, 0, 0x22], [2, 0, 0, 0, 0, 0x22], 1, IngressPort::PRESENT)
        );
        let vlan = ports[&IngressKey { ifindex: 2, vid: 100 }];
        assert_eq!(
            (vlan.mac, vlan.lower_mac, vlan.rp_filter, vlan.flags),
            ([2, 0, 0, 0, 0, 0x55], [2, 0, 0, 0, 0, 0x22], 2, 1 | IngressPort::PRESENT)
        );
        assert_eq!(ports.len(), 2);

        rib.set_port_sysctls(2, PortSysctls { rp_filter: 2, send_redirects: true, ..Default::default() }).unwrap();
        assert_eq!(rib.sink().ingress_ports[&IngressKey { ifindex: 2, vid: 0 }].flags, IngressPort::SEND_REDIRECTS | IngressPort::PRESENT);
        rib.apply(Event::LinkGone(5), now).unwrap();
        assert_eq!(rib.sink().ingress_ports.keys().copied().collect::<Vec<_>>(), vec![IngressKey { ifindex: 2, vid: 0 }]);
        assert_eq!(rib.ingress_ports(), &rib.sink().ingress_ports);
    }

    #[test]
    fn an_earlier_agents_ports_stay_until_the_sweep() {
        let now = Instant::now();
        let mut maps = MemoryMaps::default();
        let old = IngressKey { ifindex: 9, vid: 0 };
        maps.ingress_ports.insert(old, IngressPort { rp_filter: 1, ..Default::default() });
        let mut rib = Rib::new(maps, Default::default(), Duration::from_secs(1));
        rib.adopt_ingress_ports(vec![old]);
        rib.set_port_sysctls(2, PortSysctls::default()).unwrap();
        rib.apply(Event::Link(link(2, 0x22, None)), now).unwrap();
        assert_eq!(rib.sink().ingress_ports.len(), 2, "the earlier port still judges its frames");
        rib.sweep_adopted_ingress().unwrap();
        assert_eq!(rib.sink().ingress_ports.keys().copied().collect::<Vec<_>>(), vec![IngressKey { ifindex: 2, vid: 0 }]);
    }
}
