//! The RIB's door to the maps ([`MapSink`]), and an in-memory sink for
//! unit tests.

use crate::dataplane::map_writer::MapWriter;
use anyhow::Result;
use common::{NextHop, NextHopGroup, PrivateMeta, RouteEntry, RouteMetrics};
use ipnet::IpNet;
use std::net::IpAddr;

/// The RIB's view of the maps: every write it makes goes through one of
/// these, to the real maps ([`MapWriter`]) or to memory in unit tests.
pub trait MapSink {
    fn put_route(&mut self, prefix: &IpNet, entry: &RouteEntry) -> Result<()>;
    fn delete_route(&mut self, prefix: &IpNet) -> Result<()>;
    fn put_nexthop(&mut self, id: u32, nh: &NextHop) -> Result<()>;
    fn put_group(&mut self, id: u32, group: &NextHopGroup) -> Result<()>;
    fn put_ro_metrics(&mut self, slot: u32, m: &RouteMetrics) -> Result<()>;
    fn put_rw_metrics(&mut self, slot: u32, m: &RouteMetrics) -> Result<()>;
    fn add_port(&mut self, ifindex: u32) -> Result<()>;
    fn remove_port(&mut self, ifindex: u32) -> Result<()>;
    fn put_private_meta(&mut self, dest: IpAddr, meta: &PrivateMeta) -> Result<()>;
    fn delete_private_meta(&mut self, dest: IpAddr) -> Result<()>;
}

impl MapSink for MapWriter {
    fn put_route(&mut self, prefix: &IpNet, entry: &RouteEntry) -> Result<()> {
        MapWriter::put_route(self, prefix, entry)
    }
    fn delete_route(&mut self, prefix: &IpNet) -> Result<()> {
        MapWriter::delete_route(self, prefix)
    }
    fn put_nexthop(&mut self, id: u32, nh: &NextHop) -> Result<()> {
        MapWriter::put_nexthop(self, id, nh)
    }
    fn put_group(&mut self, id: u32, group: &NextHopGroup) -> Result<()> {
        MapWriter::put_group(self, id, group)
    }
    fn put_ro_metrics(&mut self, slot: u32, m: &RouteMetrics) -> Result<()> {
        MapWriter::put_ro_metrics(self, slot, m)
    }
    fn put_rw_metrics(&mut self, slot: u32, m: &RouteMetrics) -> Result<()> {
        MapWriter::put_rw_metrics(self, slot, m)
    }
    fn add_port(&mut self, ifindex: u32) -> Result<()> {
        MapWriter::add_port(self, ifindex)
    }
    fn remove_port(&mut self, ifindex: u32) -> Result<()> {
        MapWriter::remove_port(self, ifindex)
    }
    fn put_private_meta(&mut self, dest: IpAddr, meta: &PrivateMeta) -> Result<()> {
        MapWriter::put_private_meta(self, dest, meta)
    }
    fn delete_private_meta(&mut self, dest: IpAddr) -> Result<()> {
        MapWriter::delete_private_meta(self, dest)
    }
}

#[cfg(test)]
pub mod memory {
    //! An in-memory map set for unit tests.
    use super::MapSink;
    use anyhow::Result;
    use common::{NextHop, NextHopGroup, PrivateMeta, RouteEntry, RouteMetrics};
    use ipnet::IpNet;
    use std::{
        collections::{BTreeMap, BTreeSet},
        net::IpAddr,
    };

    #[derive(Default, Debug)]
    pub struct MemoryMaps {
        pub routes: BTreeMap<IpNet, RouteEntry>,
        pub nexthops: BTreeMap<u32, NextHop>,
        pub groups: BTreeMap<u32, NextHopGroup>,
        pub private_meta: BTreeMap<IpAddr, PrivateMeta>,
        pub metrics_ro: BTreeMap<u32, RouteMetrics>,
        pub metrics_rw: BTreeMap<u32, RouteMetrics>,
        pub ports: BTreeSet<u32>,
        /// Route entries written, all told (a nexthop replace writes none).
        pub route_writes: usize,
    }

    impl MapSink for MemoryMaps {
        fn put_route(&mut self, prefix: &IpNet, entry: &RouteEntry) -> Result<()> {
            self.routes.insert(*prefix, *entry);
            self.route_writes += 1;
            Ok(())
        }
        fn delete_route(&mut self, prefix: &IpNet) -> Result<()> {
            self.routes.remove(prefix).map(|_| ()).ok_or_else(|| anyhow::anyhow!("no such route"))
        }
        fn put_nexthop(&mut self, id: u32, nh: &NextHop) -> Result<()> {
            self.nexthops.insert(id, *nh);
            Ok(())
        }
        fn put_group(&mut self, id: u32, group: &NextHopGroup) -> Result<()> {
            self.groups.insert(id, *group);
            Ok(())
        }
        fn put_ro_metrics(&mut self, slot: u32, m: &RouteMetrics) -> Result<()> {
            self.metrics_ro.insert(slot, *m);
            Ok(())
        }
        fn put_rw_metrics(&mut self, slot: u32, m: &RouteMetrics) -> Result<()> {
            self.metrics_rw.insert(slot, *m);
            Ok(())
        }
        fn add_port(&mut self, ifindex: u32) -> Result<()> {
            self.ports.insert(ifindex);
            Ok(())
        }
        fn remove_port(&mut self, ifindex: u32) -> Result<()> {
            self.ports.remove(&ifindex);
            Ok(())
        }
        fn put_private_meta(&mut self, dest: IpAddr, meta: &PrivateMeta) -> Result<()> {
            self.private_meta.insert(dest, *meta);
            Ok(())
        }
        fn delete_private_meta(&mut self, dest: IpAddr) -> Result<()> {
            self.private_meta.remove(&dest);
            Ok(())
        }
    }
}
