//! A map keyed by prefix, each family apart, its key packed into a few
//! bytes: what the RIB and the feeds hold a full table in.
//!
//! An `IpNet` key is 18 bytes and compares as an enum; an IPv4 prefix packs
//! into one `u64` (address, then length) and an IPv6 one into 17 bytes, so a
//! B-tree node holds its keys in two cache lines instead of four, and a
//! million routes cost their values and little more. The order is
//! `IpNet`'s: IPv4 first, then by address, then by length.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::{collections::BTreeMap, net::Ipv6Addr};

type V6Key = [u8; 17];

fn v4_key(p: &Ipv4Net) -> u64 {
    (u64::from(u32::from(p.addr())) << 8) | u64::from(p.prefix_len())
}

fn v4_prefix(k: u64) -> IpNet {
    IpNet::V4(Ipv4Net::new(((k >> 8) as u32).into(), k as u8).expect("a packed length"))
}

fn v6_key(p: &Ipv6Net) -> V6Key {
    let mut k = [0; 17];
    k[..16].copy_from_slice(&p.addr().octets());
    k[16] = p.prefix_len();
    k
}

fn v6_prefix(k: &V6Key) -> IpNet {
    let addr: [u8; 16] = k[..16].try_into().expect("sixteen bytes");
    IpNet::V6(Ipv6Net::new(Ipv6Addr::from(addr), k[16]).expect("a packed length"))
}

/// `map` rebuilt from its sorted contents: every node full (see
/// [`PrefixMap::compact`]).
pub fn compact<K: Ord, V>(map: &mut BTreeMap<K, V>) {
    *map = std::mem::take(map).into_iter().collect();
}

#[derive(Debug, Clone)]
pub struct PrefixMap<V> {
    v4: BTreeMap<u64, V>,
    v6: BTreeMap<V6Key, V>,
}

impl<V> Default for PrefixMap<V> {
    fn default() -> Self {
        PrefixMap { v4: BTreeMap::new(), v6: BTreeMap::new() }
    }
}

impl<V> PrefixMap<V> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, p: &IpNet) -> Option<&V> {
        match p {
            IpNet::V4(p) => self.v4.get(&v4_key(p)),
            IpNet::V6(p) => self.v6.get(&v6_key(p)),
        }
    }

    pub fn get_mut(&mut self, p: &IpNet) -> Option<&mut V> {
        match p {
            IpNet::V4(p) => self.v4.get_mut(&v4_key(p)),
            IpNet::V6(p) => self.v6.get_mut(&v6_key(p)),
        }
    }

    pub fn contains_key(&self, p: &IpNet) -> bool {
        self.get(p).is_some()
    }

    pub fn insert(&mut self, p: IpNet, v: V) -> Option<V> {
        match p {
            IpNet::V4(p) => self.v4.insert(v4_key(&p), v),
            IpNet::V6(p) => self.v6.insert(v6_key(&p), v),
        }
    }

    pub fn remove(&mut self, p: &IpNet) -> Option<V> {
        match p {
            IpNet::V4(p) => self.v4.remove(&v4_key(p)),
            IpNet::V6(p) => self.v6.remove(&v6_key(p)),
        }
    }

    /// `p`'s value, made with `default` when it has none.
    pub fn get_or_insert_with(&mut self, p: IpNet, default: impl FnOnce() -> V) -> &mut V {
        match p {
            IpNet::V4(p) => self.v4.entry(v4_key(&p)).or_insert_with(default),
            IpNet::V6(p) => self.v6.entry(v6_key(&p)).or_insert_with(default),
        }
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (IpNet, &V)> + '_ {
        self.v4.iter().map(|(k, v)| (v4_prefix(*k), v)).chain(self.v6.iter().map(|(k, v)| (v6_prefix(k), v)))
    }

    pub fn keys(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.iter().map(|(p, _)| p)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.v4.values().chain(self.v6.values())
    }

    /// Rebuilt with full nodes. A B-tree filled in key order (a dump, a
    /// replay) splits each node as it fills and leaves it half full; built
    /// from its sorted contents at once, each node is full.
    pub fn compact(&mut self) {
        compact(&mut self.v4);
        compact(&mut self.v6);
    }

    pub fn retain(&mut self, mut keep: impl FnMut(IpNet, &mut V) -> bool) {
        self.v4.retain(|k, v| keep(v4_prefix(*k), v));
        self.v6.retain(|k, v| keep(v6_prefix(k), v));
    }
}

impl<V> std::ops::Index<&IpNet> for PrefixMap<V> {
    type Output = V;
    fn index(&self, p: &IpNet) -> &V {
        self.get(p).expect("a prefix the map holds")
    }
}

impl<V> FromIterator<(IpNet, V)> for PrefixMap<V> {
    fn from_iter<I: IntoIterator<Item = (IpNet, V)>>(iter: I) -> Self {
        let mut m = PrefixMap::new();
        for (p, v) in iter {
            m.insert(p, v);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn prefix() -> impl Strategy<Value = IpNet> {
        prop_oneof![
            (any::<u32>(), 0u8..=32).prop_map(|(a, l)| IpNet::V4(Ipv4Net::new(a.into(), l).unwrap()).trunc()),
            (any::<u128>(), 0u8..=128).prop_map(|(a, l)| IpNet::V6(Ipv6Net::new(a.into(), l).unwrap()).trunc()),
        ]
    }

    proptest! {
        /// Inserts and removes as a `BTreeMap<IpNet, _>` would take them,
        /// with the same contents in the same order.
        #[test]
        fn it_is_a_btreemap_of_prefixes(ops in prop::collection::vec((prefix(), any::<bool>(), any::<u16>()), 1..200)) {
            let mut model: BTreeMap<IpNet, u16> = BTreeMap::new();
            let mut map = PrefixMap::new();
            for (p, insert, v) in ops {
                if insert {
                    prop_assert_eq!(map.insert(p, v), model.insert(p, v));
                } else {
                    prop_assert_eq!(map.remove(&p), model.remove(&p));
                }
                prop_assert_eq!(map.get(&p), model.get(&p));
            }
            prop_assert_eq!(map.len(), model.len());
            let listed: Vec<(IpNet, u16)> = map.iter().map(|(p, v)| (p, *v)).collect();
            // Rebuilt with full nodes, it holds the same, and still takes inserts.
            map.compact();
            prop_assert_eq!(map.iter().map(|(p, v)| (p, *v)).collect::<Vec<_>>(), listed.clone());
            for (p, v) in &listed {
                prop_assert_eq!(map.get(p), Some(v));
            }
            map.insert("192.0.2.0/24".parse().unwrap(), 7);
            prop_assert_eq!(map.get(&"192.0.2.0/24".parse().unwrap()), Some(&7));
            map.remove(&"192.0.2.0/24".parse().unwrap());
            prop_assert_eq!(listed, model.into_iter().collect::<Vec<_>>());
        }
    }
}
