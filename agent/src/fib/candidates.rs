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
/// inline (no allocation of its own: the map's slot is all a prefix costs,
/// sixteen bytes beside its key); a map per prefix would cost a B-tree node
/// of eleven slots for each of a full table's million prefixes (2 KiB a
/// route).
#[derive(Debug)]
pub(super) enum Candidates {
    One(Arc<RouteAttrs>, u32),
    /// None, or several (sorted by rank); behind one thin pointer, so that
    /// the enum stays sixteen bytes.
    #[allow(clippy::box_collection)]
    Many(Box<Vec<Candidate>>),
}

impl Default for Candidates {
    fn default() -> Self {
        Candidates::Many(Box::default())
    }
}

impl Candidates {
    pub(super) fn as_slice(&self) -> Vec<(Rank, &Arc<RouteAttrs>)> {
        match self {
            Candidates::One(r, priority) => vec![(rank(*priority, r), r)],
            Candidates::Many(v) => v.iter().map(|c| (rank_of(c), &c.1)).collect(),
        }
    }

    /// Changes the candidates as a vector (the rare case of several).
    fn edit<T>(&mut self, f: impl FnOnce(&mut Vec<Candidate>) -> T) -> T {
        let mut v: Vec<Candidate> = match std::mem::take(self) {
            Candidates::One(r, priority) => vec![(priority, r)],
            Candidates::Many(v) => *v,
        };
        let out = f(&mut v);
        *self = if v.len() == 1 {
            let (priority, r) = v.pop().expect("one");
            Candidates::One(r, priority)
        } else {
            Candidates::Many(Box::new(v))
        };
        out
    }

    pub(super) fn insert(&mut self, priority: u32, route: Arc<RouteAttrs>) {
        let new = rank(priority, &route);
        match self {
            Candidates::Many(v) if v.is_empty() => *self = Candidates::One(route, priority),
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
        if let Candidates::One(r, priority) = self {
            let found = rank(*priority, r) == which;
            if found {
                *self = Candidates::default();
            }
            return found;
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
            Candidates::One(r, _) => Some(r),
            Candidates::Many(v) => v.first().map(|(_, r)| r),
        }
    }

    /// The best as a route to `prefix`.
    pub(super) fn best_route(&self, prefix: IpNet) -> Option<RouteInput> {
        self.best().map(|a| RouteInput::from_attrs(prefix, a.clone()))
    }

    pub(super) fn is_empty(&self) -> bool {
        matches!(self, Candidates::Many(v) if v.is_empty())
    }

    /// The nexthop objects its routes name.
    pub(super) fn nhids(&self) -> impl Iterator<Item = u32> + '_ {
        let (one, many) = match self {
            Candidates::One(r, _) => (r.nhid, &[][..]),
            Candidates::Many(v) => (None, &v[..]),
        };
        one.into_iter().chain(many.iter().filter_map(|(_, r)| r.nhid))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_prefix_costs_its_key_and_sixteen_bytes() {
        assert_eq!(std::mem::size_of::<super::Candidates>(), 16);
    }
}
