//! `TABLE_ROUTES_V4` / `TABLE_ROUTES_V6`: the routes of the tables `ip rule`
//! looks up (not main), every table in one LPM trie per family, each prefix
//! behind its table's id. The publish rule as for `ROUTES_V4`: an update
//! replaces the whole element, so a reader sees the old entry or the new one.

use crate::dataplane::{
    map_error::{access, is_absent, update, MapError},
    map_writer::{open_pinned, take},
};
use aya::{
    maps::{lpm_trie::Key, LpmTrie, MapData},
    Ebpf,
};
use common::{
    maps,
    route::{TableV4KeyData, TableV6KeyData, TABLE_KEY_BITS},
    RouteEntry,
};
use ipnet::IpNet;

pub struct TableRoutes {
    v4: LpmTrie<MapData, TableV4KeyData, RouteEntry>,
    v6: LpmTrie<MapData, TableV6KeyData, RouteEntry>,
}

/// `prefix` of `table` as the trie's key.
pub fn v4_key(table: u32, prefix: &ipnet::Ipv4Net) -> Key<TableV4KeyData> {
    let data = TableV4KeyData { table: table.to_be_bytes(), addr: prefix.trunc().addr().octets() };
    Key::new(TABLE_KEY_BITS + prefix.prefix_len() as u32, data)
}

pub fn v6_key(table: u32, prefix: &ipnet::Ipv6Net) -> Key<TableV6KeyData> {
    let data = TableV6KeyData { table: table.to_be_bytes(), addr: prefix.trunc().addr().octets() };
    Key::new(TABLE_KEY_BITS + prefix.prefix_len() as u32, data)
}

impl TableRoutes {
    pub fn take(ebpf: &mut Ebpf) -> Result<TableRoutes, MapError> {
        Ok(TableRoutes { v4: take(ebpf, maps::TABLE_ROUTES_V4)?, v6: take(ebpf, maps::TABLE_ROUTES_V6)? })
    }

    /// The pinned tries (`show routes --table N`).
    pub fn open_pinned(dir: &std::path::Path) -> Result<TableRoutes, MapError> {
        Ok(TableRoutes { v4: open_pinned(dir, maps::TABLE_ROUTES_V4)?, v6: open_pinned(dir, maps::TABLE_ROUTES_V6)? })
    }

    /// Table `table`'s longest match for `addr`, as the program finds it:
    /// the route's prefix (from the entry's length) and its entry.
    pub fn lookup(&self, table: u32, addr: std::net::IpAddr) -> Option<(IpNet, RouteEntry)> {
        let e = match addr {
            std::net::IpAddr::V4(a) => self.v4.get(&v4_key(table, &ipnet::Ipv4Net::new(a, 32).ok()?), 0).ok()?,
            std::net::IpAddr::V6(a) => self.v6.get(&v6_key(table, &ipnet::Ipv6Net::new(a, 128).ok()?), 0).ok()?,
        };
        Some((IpNet::new(addr, e.prefix_len).ok()?.trunc(), e))
    }

    pub fn put(&mut self, table: u32, prefix: &IpNet, entry: &RouteEntry) -> Result<(), MapError> {
        let (result, map) = match prefix {
            IpNet::V4(p) => (self.v4.insert(&v4_key(table, p), entry, 0), maps::TABLE_ROUTES_V4),
            IpNet::V6(p) => (self.v6.insert(&v6_key(table, p), entry, 0), maps::TABLE_ROUTES_V6),
        };
        update(result, map, prefix, || format!("writing route {prefix} of table {table}"))
    }

    /// Removes the entry; `Ok(false)` when there was none.
    pub fn delete(&mut self, table: u32, prefix: &IpNet) -> Result<bool, MapError> {
        let (result, map) = match prefix {
            IpNet::V4(p) => (self.v4.remove(&v4_key(table, p)), maps::TABLE_ROUTES_V4),
            IpNet::V6(p) => (self.v6.remove(&v6_key(table, p)), maps::TABLE_ROUTES_V6),
        };
        match result {
            Err(e) if is_absent(&e) => Ok(false),
            r => update(r, map, prefix, || format!("deleting route {prefix} of table {table}")).map(|_| true),
        }
    }

    /// Every entry of both tries: (table, prefix, entry).
    pub fn entries(&self) -> Result<Vec<(u32, IpNet, RouteEntry)>, MapError> {
        let mut all = Vec::new();
        let layout = |map: &'static str, len: u32| MapError::Layout {
            path: map.into(),
            detail: format!("{map} holds a key of prefix length {len}: a map of another layout"),
        };
        for item in self.v4.iter() {
            let (k, e) = access(item, maps::TABLE_ROUTES_V4, || "reading TABLE_ROUTES_V4".into())?;
            let len = k.prefix_len().checked_sub(TABLE_KEY_BITS).ok_or_else(|| layout(maps::TABLE_ROUTES_V4, k.prefix_len()))?;
            let d = k.data();
            let p = IpNet::new(std::net::Ipv4Addr::from(d.addr).into(), len as u8).map_err(|_| layout(maps::TABLE_ROUTES_V4, len))?;
            all.push((u32::from_be_bytes(d.table), p, e));
        }
        for item in self.v6.iter() {
            let (k, e) = access(item, maps::TABLE_ROUTES_V6, || "reading TABLE_ROUTES_V6".into())?;
            let len = k.prefix_len().checked_sub(TABLE_KEY_BITS).ok_or_else(|| layout(maps::TABLE_ROUTES_V6, k.prefix_len()))?;
            let d = k.data();
            let p = IpNet::new(std::net::Ipv6Addr::from(d.addr).into(), len as u8).map_err(|_| layout(maps::TABLE_ROUTES_V6, len))?;
            all.push((u32::from_be_bytes(d.table), p, e));
        }
        Ok(all)
    }
}
