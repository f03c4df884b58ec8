//! `LOCAL_V4`: the router's own IPv4 addresses, a small hash the fast path
//! asks instead of a second route lookup when `rp_filter` is off and only
//! "is the source one of ours?" matters (the kernel's
//! `inet_lookup_ifaddr_rcu`). It follows the route entries flagged
//! `RouteEntry::ADDRESS` as the map writer publishes them.

use crate::dataplane::map_error::{update, MapError};
use aya::maps::{HashMap, MapData};
use common::{maps, route::LocalAddress, RouteEntry};
use ipnet::IpNet;
use std::collections::HashSet;

pub struct LocalAddrsV4 {
    map: HashMap<MapData, [u8; 4], LocalAddress>,
    /// What `map` holds: only these are ever removed (a /32 that never was
    /// an address costs no syscall).
    published: HashSet<[u8; 4]>,
}

fn host_v4(prefix: &IpNet) -> Option<[u8; 4]> {
    match prefix {
        IpNet::V4(p) if p.prefix_len() == 32 => Some(p.addr().octets()),
        _ => None,
    }
}

impl LocalAddrsV4 {
    pub fn new(map: HashMap<MapData, [u8; 4], LocalAddress>) -> LocalAddrsV4 {
        LocalAddrsV4 { map, published: HashSet::new() }
    }

    /// An earlier agent's: kept until this agent's entries say otherwise.
    pub fn adopt(&mut self) {
        self.published = self.map.keys().filter_map(Result::ok).collect();
    }

    /// `entry` now stands at `prefix`: an address joins, anything else at
    /// an address's /32 makes it leave.
    pub fn put(&mut self, prefix: &IpNet, entry: &RouteEntry) -> Result<(), MapError> {
        let Some(a) = host_v4(prefix) else { return Ok(()) };
        if entry.flags & RouteEntry::ADDRESS != 0 {
            if self.published.insert(a) {
                let result = self.map.insert(a, LocalAddress { local: 1 }, 0);
                update(result, maps::LOCAL_V4, prefix, || format!("recording {prefix} as one of the router's addresses"))?;
            }
            return Ok(());
        }
        self.delete(prefix)
    }

    pub fn delete(&mut self, prefix: &IpNet) -> Result<(), MapError> {
        let Some(a) = host_v4(prefix) else { return Ok(()) };
        if self.published.remove(&a) {
            let result = self.map.remove(&a).or_else(|e| if matches!(e, aya::maps::MapError::KeyNotFound) { Ok(()) } else { Err(e) });
            update(result, maps::LOCAL_V4, prefix, || format!("forgetting {prefix} as one of the router's addresses"))?;
        }
        Ok(())
    }
}
