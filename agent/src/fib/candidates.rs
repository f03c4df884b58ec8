//! The routes the kernel holds for one prefix (several tables' worth of
//! priorities and devices), and which of them it prefers.

use crate::rib::{types::RouteAttrs, RouteInput};
use ipnet::IpNet;
use std::sync::Arc;

/// Which of a prefix's routes the kernel prefers: lowest priority, then
/// device. IPv6 keeps one route per device for a prefix (`fe80::/64` on
/// every link). Among equals, one only the kernel can carry (a TOS key, an
/// encap) comes first: its packets go to the kernel rather than risk the
/// wrong route.
pub(super) type Rank = (u32, bool, Option<u32>);

pub(super) fn rank(priority: u32, attrs: &RouteAttrs) -> Rank {
    (priority, attrs.kind != common::RouteKind::Kernel, attrs.dev)
}

/// A route message that names no device, leg or nexthop object.
pub(super) fn names_no_nexthop(r: &RouteAttrs) -> bool {
    r.dev.is_none() && r.via.is_none() && r.multipath.is_empty() && r.nhid.is_none()
}

/// One candidate: its priority and what it says (interned: the prefix is
/// the table's key). Its rank follows from both.
type Candidate = (u32, Arc<RouteAttrs>);

fn rank_of((priority, attrs): &Candidate) -> Rank {
    rank(*priority, attrs)
}

/// The routes to one prefix, best first. Nearly always exactly one, held
/// inline (no allocation of its own, nor for none: the map's slot is all a prefix costs,
/// sixteen bytes beside its key); a map per prefix would cost a B-tree node
/// of eleven slots for each of a full table's million prefixes (2 KiB a
/// route).
#[derive(Debug, Default)]
pub(super) enum Candidates {
    #[default]
    None,
    One(Arc<RouteAttrs>, u32),
    /// Several (sorted by rank); behind one thin pointer, so that the enum
    /// stays sixteen bytes.
    #[allow(clippy::box_collection)]
    Many(Box<Vec<Candidate>>),
}

impl Candidates {
    pub(super) fn as_slice(&self) -> Vec<(Rank, &Arc<RouteAttrs>)> {
        match self {
            Candidates::None => Vec::new(),
            Candidates::One(r, priority) => vec![(rank(*priority, r), r)],
            Candidates::Many(v) => v.iter().map(|c| (rank_of(c), &c.1)).collect(),
        }
    }

    /// Changes the candidates as a vector (the rare case of several).
    fn edit<T>(&mut self, f: impl FnOnce(&mut Vec<Candidate>) -> T) -> T {
        let mut v: Vec<Candidate> = match std::mem::take(self) {
            Candidates::None => Vec::new(),
            Candidates::One(r, priority) => vec![(priority, r)],
            Candidates::Many(v) => *v,
        };
        let out = f(&mut v);
        *self = match v.len() {
            0 => Candidates::None,
            1 => {
                let (priority, r) = v.pop().expect("one");
                Candidates::One(r, priority)
            }
            _ => Candidates::Many(Box::new(v)),
        };
        out
    }

    pub(super) fn insert(&mut self, priority: u32, route: Arc<RouteAttrs>) {
        let new = rank(priority, &route);
        match self {
            Candidates::None => *self = Candidates::One(route, priority),
            Candidates::One(r, p) if rank(*p, r) == new => *r = route,
            _ => self.edit(|v| match v.binary_search_by_key(&new, rank_of) {
                Ok(i) => v[i].1 = route,
                Err(i) => v.insert(i, (priority, route)),
            }),
        }
    }

    /// `ip route replace`: the kernel's route of this priority is gone.
    pub(super) fn remove_priority(&mut self, priority: u32) {
        self.retain(|(p, _, _), _| p != priority);
    }

    /// Keeps the candidates `keep` says yes to.
    pub(super) fn retain(&mut self, keep: impl Fn(Rank, &RouteAttrs) -> bool) {
        let all = match self {
            Candidates::None => true,
            Candidates::One(r, priority) => keep(rank(*priority, r), r),
            Candidates::Many(v) => v.iter().all(|c| keep(rank_of(c), &c.1)),
        };
        if all {
            return;
        }
        self.edit(|v| v.retain(|c| keep(rank_of(c), &c.1)));
    }

    /// Whether there was one of that rank.
    pub(super) fn remove(&mut self, which: Rank) -> bool {
        match self {
            Candidates::None => return false,
            Candidates::One(r, priority) => {
                let found = rank(*priority, r) == which;
                if found {
                    *self = Candidates::None;
                }
                return found;
            }
            Candidates::Many(_) => {}
        }
        self.edit(|v| match v.binary_search_by_key(&which, rank_of) {
            Ok(i) => {
                v.remove(i);
                true
            }
            Err(_) => false,
        })
    }

    pub(super) fn best(&self) -> Option<&Arc<RouteAttrs>> {
        match self {
            Candidates::None => None,
            Candidates::One(r, _) => Some(r),
            Candidates::Many(v) => v.first().map(|(_, r)| r),
        }
    }

    /// The best as a route to `prefix`.
    pub(super) fn best_route(&self, prefix: IpNet) -> Option<RouteInput> {
        self.best().map(|a| RouteInput::from_attrs(prefix, a.clone()))
    }

    pub(super) fn is_empty(&self) -> bool {
        matches!(self, Candidates::None)
    }

    /// The nexthop objects its routes name.
    pub(super) fn nhids(&self) -> impl Iterator<Item = u32> + '_ {
        let (one, many) = match self {
            Candidates::None => (None, &[][..]),
            Candidates::One(r, _) => (r.nhid, &[][..]),
            Candidates::Many(v) => (None, &v[..]),
        };
        one.into_iter().chain(many.iter().filter_map(|(_, r)| r.nhid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::{RouteKind, RouteMetrics};

    #[test]
    fn a_prefix_costs_its_key_and_sixteen_bytes() {
        assert_eq!(std::mem::size_of::<Candidates>(), 16);
    }

    /// None, one, several and back, best first all the way, with nothing
    /// allocated for none or one.
    #[test]
    fn candidates_go_from_none_to_several_and_back() {
        let on = |dev: u32| {
            RouteInput::new("10.0.0.0/8".parse().unwrap(), RouteKind::Unicast, Some(dev), None, RouteMetrics::DEFAULT).attrs().clone()
        };
        let mut c = Candidates::default();
        assert!(c.is_empty() && c.best().is_none());
        c.insert(20, on(2));
        assert!(matches!(c, Candidates::One(_, 20)));
        c.insert(10, on(3));
        c.insert(30, on(4));
        assert!(matches!(&c, Candidates::Many(v) if v.len() == 3));
        assert_eq!(c.best().unwrap().dev, Some(3), "the lowest priority first");
        c.insert(10, on(3));
        assert_eq!(c.as_slice().len(), 3, "the same rank replaces");
        assert!(c.remove(rank(10, &on(3))) && !c.remove(rank(10, &on(3))));
        assert_eq!(c.best().unwrap().dev, Some(2));
        c.remove_priority(30);
        assert!(matches!(c, Candidates::One(_, 20)), "back to one, inline");
        c.remove_priority(20);
        assert!(c.is_empty() && matches!(c, Candidates::None));
    }
}
