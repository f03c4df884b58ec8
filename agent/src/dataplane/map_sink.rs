//! The RIB's door to the maps ([`MapSink`]), and an in-memory sink for
//! unit tests.

use crate::dataplane::{map_error::MapError, map_writer::MapWriter};
use common::{
    ingress::{IngressKey, IngressPort},
    NextHop, NextHopGroup, PrivateMeta, RouteEntry, RouteMetrics,
};
use ipnet::IpNet;
use std::net::IpAddr;

/// The RIB's view of the maps: every write it makes goes through one of
/// these, to the real maps ([`MapWriter`]) or to memory in unit tests.
pub trait MapSink {
    /// The sink's own indexes rebuilt with full B-tree nodes, once a bulk
    /// load has settled (`daemon::compaction`); nothing to do by default.
    fn compact_indexes(&mut self) {}
    fn put_route(&mut self, prefix: &IpNet, entry: &RouteEntry) -> Result<(), MapError>;
    fn delete_route(&mut self, prefix: &IpNet) -> Result<(), MapError>;
    /// A route of a table rules look up (`TABLE_ROUTES_V4`/`_V6`).
    fn put_table_route(&mut self, table: u32, prefix: &IpNet, entry: &RouteEntry) -> Result<(), MapError>;
    /// Removes one, whether or not it was there.
    fn delete_table_route(&mut self, table: u32, prefix: &IpNet) -> Result<(), MapError>;
    fn put_nexthop(&mut self, id: u32, nh: &NextHop) -> Result<(), MapError>;
    fn put_group(&mut self, id: u32, group: &NextHopGroup) -> Result<(), MapError>;
    fn put_ro_metrics(&mut self, slot: u32, m: &RouteMetrics) -> Result<(), MapError>;
    fn put_rw_metrics(&mut self, slot: u32, m: &RouteMetrics) -> Result<(), MapError>;
    fn add_port(&mut self, ifindex: u32) -> Result<(), MapError>;
    fn remove_port(&mut self, ifindex: u32) -> Result<(), MapError>;
    fn put_private_meta(&mut self, dest: IpAddr, meta: &PrivateMeta) -> Result<(), MapError>;
    fn delete_private_meta(&mut self, dest: IpAddr) -> Result<(), MapError>;
    fn put_ingress_port(&mut self, key: IngressKey, port: &IngressPort) -> Result<(), MapError>;
    fn delete_ingress_port(&mut self, key: IngressKey) -> Result<(), MapError>;
    /// A load no program reads yet begins: route writes may be queued and
    /// made in batches until [`MapSink::end_bulk`].
    fn begin_bulk(&mut self) {}
    /// Every queued route write made, or the error that stopped one.
    fn end_bulk(&mut self) -> Result<(), MapError> {
        Ok(())
    }
    /// A turn of the daemon of about `changes` begins: route writes may be
    /// queued, and land after [`MapSink::end_turn`].
    fn begin_turn(&mut self, _changes: usize) {}
    fn end_turn(&mut self) {}
    /// Each second: the queued route writes landed, those the kernel
    /// refused written again.
    fn retry_owed_routes(&mut self) {}
}

/// The RIB's writes other than routes wait, outside a turn, for the
/// route writes turns queued (see [`crate::dataplane::trie_queue`]).
impl MapSink for MapWriter {
    fn compact_indexes(&mut self) {
        self.compact();
    }

    fn begin_bulk(&mut self) {
        MapWriter::begin_bulk(self)
    }
    fn end_bulk(&mut self) -> Result<(), MapError> {
        MapWriter::end_bulk(self)
    }
    fn begin_turn(&mut self, changes: usize) {
        MapWriter::begin_turn(self, changes)
    }
    fn end_turn(&mut self) {
        MapWriter::end_turn(self)
    }
    fn retry_owed_routes(&mut self) {
        MapWriter::retry_owed_routes(self)
    }
    fn put_route(&mut self, prefix: &IpNet, entry: &RouteEntry) -> Result<(), MapError> {
        MapWriter::put_route(self, prefix, entry)
    }
    fn delete_route(&mut self, prefix: &IpNet) -> Result<(), MapError> {
        MapWriter::delete_route(self, prefix)
    }
    fn put_table_route(&mut self, table: u32, prefix: &IpNet, entry: &RouteEntry) -> Result<(), MapError> {
        MapWriter::put_table_route(self.settle_routes(), table, prefix, entry)
    }
    fn delete_table_route(&mut self, table: u32, prefix: &IpNet) -> Result<(), MapError> {
        MapWriter::delete_table_route(self.settle_routes(), table, prefix)
    }
    fn put_nexthop(&mut self, id: u32, nh: &NextHop) -> Result<(), MapError> {
        MapWriter::put_nexthop(self.settle_routes(), id, nh)
    }
    fn put_group(&mut self, id: u32, group: &NextHopGroup) -> Result<(), MapError> {
        MapWriter::put_group(self.settle_routes(), id, group)
    }
    fn put_ro_metrics(&mut self, slot: u32, m: &RouteMetrics) -> Result<(), MapError> {
        MapWriter::put_ro_metrics(self.settle_routes(), slot, m)
    }
    fn put_rw_metrics(&mut self, slot: u32, m: &RouteMetrics) -> Result<(), MapError> {
        MapWriter::put_rw_metrics(self.settle_routes(), slot, m)
    }
    fn add_port(&mut self, ifindex: u32) -> Result<(), MapError> {
        MapWriter::add_port(self.settle_routes(), ifindex)
    }
    fn remove_port(&mut self, ifindex: u32) -> Result<(), MapError> {
        MapWriter::remove_port(self.settle_routes(), ifindex)
    }
    fn put_private_meta(&mut self, dest: IpAddr, meta: &PrivateMeta) -> Result<(), MapError> {
        MapWriter::put_private_meta(self.settle_routes(), dest, meta)
    }
    fn delete_private_meta(&mut self, dest: IpAddr) -> Result<(), MapError> {
        MapWriter::delete_private_meta(self.settle_routes(), dest)
    }
    fn put_ingress_port(&mut self, key: IngressKey, port: &IngressPort) -> Result<(), MapError> {
        MapWriter::put_ingress_port(self.settle_routes(), key, port)
    }
    fn delete_ingress_port(&mut self, key: IngressKey) -> Result<(), MapError> {
        MapWriter::delete_ingress_port(self.settle_routes(), key)
    }
}

#[cfg(test)]
pub mod memory {
    //! An in-memory map set for unit tests.
    use super::{MapError, MapSink};
    use common::{
        ingress::{IngressKey, IngressPort},
        maps, NextHop, NextHopGroup, PrivateMeta, RouteEntry, RouteMetrics,
    };
    use ipnet::IpNet;
    use std::{
        collections::{BTreeMap, BTreeSet},
        net::IpAddr,
    };

    #[derive(Default, Debug)]
    pub struct MemoryMaps {
        pub routes: BTreeMap<IpNet, RouteEntry>,
        pub table_routes: BTreeMap<(u32, IpNet), RouteEntry>,
        pub nexthops: BTreeMap<u32, NextHop>,
        pub groups: BTreeMap<u32, NextHopGroup>,
        pub private_meta: BTreeMap<IpAddr, PrivateMeta>,
        pub metrics_ro: BTreeMap<u32, RouteMetrics>,
        pub metrics_rw: BTreeMap<u32, RouteMetrics>,
        pub ports: BTreeSet<u32>,
        pub ingress_ports: BTreeMap<IngressKey, IngressPort>,
        /// Route entries written, all told (a nexthop replace writes none).
        pub route_writes: usize,
        /// Routes the tries hold at most (`None`: no limit), to test a full map.
        pub route_capacity: Option<usize>,
    }

    impl MapSink for MemoryMaps {
        fn put_route(&mut self, prefix: &IpNet, entry: &RouteEntry) -> Result<(), MapError> {
            let map = if prefix.addr().is_ipv4() { maps::ROUTES_V4 } else { maps::ROUTES_V6 };
            match self.route_capacity {
                Some(n) if self.routes.len() >= n && !self.routes.contains_key(prefix) => {
                    return Err(MapError::Full { map, capacity: n as u32 })
                }
                _ => {}
            }
            self.routes.insert(*prefix, *entry);
            self.route_writes += 1;
            Ok(())
        }
        fn delete_route(&mut self, prefix: &IpNet) -> Result<(), MapError> {
            let map = if prefix.addr().is_ipv4() { maps::ROUTES_V4 } else { maps::ROUTES_V6 };
            let error = Box::new(aya::maps::MapError::KeyNotFound);
            self.routes.remove(prefix).map(|_| ()).ok_or(MapError::Update {
                map,
                key: prefix.to_string(),
                what: "no such route".into(),
                error,
            })
        }
        fn put_table_route(&mut self, table: u32, prefix: &IpNet, entry: &RouteEntry) -> Result<(), MapError> {
            self.table_routes.insert((table, *prefix), *entry);
            Ok(())
        }
        fn delete_table_route(&mut self, table: u32, prefix: &IpNet) -> Result<(), MapError> {
            self.table_routes.remove(&(table, *prefix));
            Ok(())
        }
        fn put_nexthop(&mut self, id: u32, nh: &NextHop) -> Result<(), MapError> {
            self.nexthops.insert(id, *nh);
            Ok(())
        }
        fn put_group(&mut self, id: u32, group: &NextHopGroup) -> Result<(), MapError> {
            self.groups.insert(id, *group);
            Ok(())
        }
        fn put_ro_metrics(&mut self, slot: u32, m: &RouteMetrics) -> Result<(), MapError> {
            self.metrics_ro.insert(slot, *m);
            Ok(())
        }
        fn put_rw_metrics(&mut self, slot: u32, m: &RouteMetrics) -> Result<(), MapError> {
            self.metrics_rw.insert(slot, *m);
            Ok(())
        }
        fn add_port(&mut self, ifindex: u32) -> Result<(), MapError> {
            self.ports.insert(ifindex);
            Ok(())
        }
        fn remove_port(&mut self, ifindex: u32) -> Result<(), MapError> {
            self.ports.remove(&ifindex);
            Ok(())
        }
        fn put_private_meta(&mut self, dest: IpAddr, meta: &PrivateMeta) -> Result<(), MapError> {
            self.private_meta.insert(dest, *meta);
            Ok(())
        }
        fn delete_private_meta(&mut self, dest: IpAddr) -> Result<(), MapError> {
            self.private_meta.remove(&dest);
            Ok(())
        }
        fn put_ingress_port(&mut self, key: IngressKey, port: &IngressPort) -> Result<(), MapError> {
            self.ingress_ports.insert(key, *port);
            Ok(())
        }
        fn delete_ingress_port(&mut self, key: IngressKey) -> Result<(), MapError> {
            self.ingress_ports.remove(&key);
            Ok(())
        }
    }
}
