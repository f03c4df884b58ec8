//! Kernel nexthop objects (`ip nexthop`): each gets one fast-path entry of
//! its own, a private `NEXTHOPS` id for a single nexthop or a private
//! `NH_GROUPS` id for a group, and every route through the object points at
//! it. So `ip nexthop replace` is one publish (the entry's fresh slot and
//! index word), however many routes use the object: the routes' entries do
//! not change. Only a change of what the object is (a nexthop becoming a
//! blackhole, say) rewrites the routes through it.

use super::{MapSink, NextHopKey, Rib};
use crate::rib::types::{NexthopKind, NexthopObject};
use crate::rib::RibError;
use common::RouteKind;
use ipnet::IpNet;
use std::{sync::Arc, time::Instant};

/// What a route through an object publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// A private `NEXTHOPS` id.
    Nexthop(u32),
    /// A private `NH_GROUPS` id.
    Group(u32),
    Blackhole,
    /// The kernel's to forward: an encap, an unknown object, a group with a
    /// member the fast path cannot carry.
    Kernel,
}

impl Resolved {
    /// The route's kind, next hop or group id, and whether it is a group.
    pub fn entry(self) -> (RouteKind, u32, bool) {
        match self {
            Resolved::Nexthop(id) => (RouteKind::Unicast, id, false),
            Resolved::Group(id) => (RouteKind::Unicast, id, true),
            Resolved::Blackhole => (RouteKind::Blackhole, 0, false),
            Resolved::Kernel => (RouteKind::Kernel, 0, false),
        }
    }

    /// Whether routes through two objects publish the same kind of entry
    /// (then a change between them needs no route rewritten).
    fn same_shape(self, other: Resolved) -> bool {
        matches!((self, other), (Resolved::Nexthop(_), Resolved::Nexthop(_)) | (Resolved::Group(_), Resolved::Group(_))) || self == other
    }
}

#[derive(Debug, Clone)]
pub struct ObjectState {
    pub object: Arc<NexthopObject>,
    /// The object's own entry; it holds one reference to it.
    pub resolved: Resolved,
}

impl<S: MapSink> Rib<S> {
    /// The kernel nexthop object `id`, as the RIB holds it.
    pub fn nexthop_object(&self, id: u32) -> Option<&ObjectState> {
        self.objects.get(&id)
    }

    pub fn nexthop_objects(&self) -> impl Iterator<Item = &ObjectState> {
        self.objects.values()
    }

    /// The devices a route through object `nhid` leaves by.
    pub(super) fn object_devices(&self, nhid: u32) -> Vec<u32> {
        let Some(o) = self.objects.get(&nhid) else { return Vec::new() };
        match &o.object.kind {
            NexthopKind::Single { dev, .. } => vec![*dev],
            NexthopKind::Group { members, .. } => members
                .iter()
                .filter_map(|(m, _)| match self.objects.get(m)?.object.kind {
                    NexthopKind::Single { dev, .. } => Some(dev),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// What a route through object `nhid` publishes, with one reference
    /// taken for the route.
    pub(super) fn acquire_object(&mut self, nhid: u32) -> Resolved {
        let resolved = self.objects.get(&nhid).map_or(Resolved::Kernel, |o| o.resolved);
        match resolved {
            Resolved::Nexthop(id) => self.nexthops.retain(id),
            Resolved::Group(id) => self.groups.retain(id),
            Resolved::Blackhole | Resolved::Kernel => {}
        }
        resolved
    }

    /// Drops a reference to what `resolved` names.
    pub(super) fn release_resolved(&mut self, resolved: Resolved, now: Instant) {
        match resolved {
            Resolved::Nexthop(id) => self.nexthops.release(id, now),
            Resolved::Group(id) => self.release_group(id, now),
            Resolved::Blackhole | Resolved::Kernel => {}
        }
    }

    /// Adds or replaces a nexthop object. A change of its gateway, device
    /// or members rewrites its one entry in place (the publish rule: fresh
    /// slot, then the index word); routes are rewritten only when what they
    /// publish changes kind.
    pub fn set_nexthop_object(&mut self, object: Arc<NexthopObject>, now: Instant) -> Result<(), RibError> {
        let (id, single) = (object.id, !matches!(object.kind, NexthopKind::Group { .. }));
        self.apply_object(object, false, now)?;
        if single {
            self.refresh_groups_with(id, now)?;
        }
        Ok(())
    }

    /// The groups with member `member` again: a member that appeared after
    /// its group, or changed kind, changes what the group can carry.
    fn refresh_groups_with(&mut self, member: u32, now: Instant) -> Result<(), RibError> {
        let groups: Vec<Arc<NexthopObject>> = self
            .objects
            .values()
            .filter(|o| matches!(&o.object.kind, NexthopKind::Group { members, .. } if members.iter().any(|(m, _)| *m == member)))
            .map(|o| o.object.clone())
            .collect();
        for g in groups {
            self.apply_object(g, true, now)?;
        }
        Ok(())
    }

    /// Sets `object`; `again`: even when it is what the RIB holds (its
    /// members changed under it).
    fn apply_object(&mut self, object: Arc<NexthopObject>, again: bool, now: Instant) -> Result<(), RibError> {
        let old = self.objects.get(&object.id).cloned();
        if !again && old.as_ref().is_some_and(|o| o.object == object) {
            return Ok(());
        }
        let wanted = self.object_shape(&object);
        if let Some(old) = old.as_ref().filter(|o| o.resolved.same_shape(wanted)) {
            // In place: the same entry, new contents.
            match (old.resolved, &object.kind) {
                (Resolved::Nexthop(id), NexthopKind::Single { dev, via }) => {
                    self.nexthops.rekey(id, NextHopKey { ifindex: *dev, gateway: *via });
                    self.objects.insert(object.id, ObjectState { object, resolved: old.resolved });
                    return self.write_nexthop(id);
                }
                (Resolved::Group(id), NexthopKind::Group { .. }) => {
                    let legs = self.member_legs(&object).expect("shape says the members are carried");
                    legs.iter().for_each(|(nh, _)| self.nexthops.retain(*nh));
                    let before = self.groups.set_legs(id, legs);
                    self.objects.insert(object.id, ObjectState { object, resolved: old.resolved });
                    let written = self.write_group(id);
                    before.iter().for_each(|(nh, _)| self.nexthops.release(*nh, now));
                    return written;
                }
                _ => {
                    self.objects.insert(object.id, ObjectState { object, resolved: old.resolved });
                    return Ok(());
                }
            }
        }
        let resolved = self.install_object(&object, wanted, now)?;
        let id = object.id;
        self.objects.insert(id, ObjectState { object, resolved });
        // What routes through it publish changed kind: rewrite them.
        self.rewrite_routes_through(id, now)?;
        if let Some(old) = old {
            self.release_resolved(old.resolved, now);
        }
        Ok(())
    }

    /// Removes nexthop object `id`. The kernel removed the routes through it
    /// (the feed deletes them first); any left go to the kernel.
    pub fn delete_nexthop_object(&mut self, id: u32, now: Instant) -> Result<(), RibError> {
        let Some(old) = self.objects.remove(&id) else { return Ok(()) };
        let rewritten = self.rewrite_routes_through(id, now);
        self.release_resolved(old.resolved, now);
        rewritten?;
        self.refresh_groups_with(id, now)
    }

    /// The kind of entry `object` gets (with placeholder ids).
    fn object_shape(&self, object: &NexthopObject) -> Resolved {
        match &object.kind {
            NexthopKind::Single { .. } => Resolved::Nexthop(0),
            NexthopKind::Blackhole => Resolved::Blackhole,
            NexthopKind::KernelOnly(_) => Resolved::Kernel,
            NexthopKind::Group { members, .. } => {
                let member = |m: &u32| self.objects.get(m).map(|o| o.resolved);
                // The kernel allows a blackhole only as a group's one member.
                if members.len() == 1 && member(&members[0].0) == Some(Resolved::Blackhole) {
                    Resolved::Blackhole
                } else if self.member_legs(object).is_some() {
                    Resolved::Group(0)
                } else {
                    Resolved::Kernel
                }
            }
        }
    }

    /// A group object's legs (its members' next hop ids, weights), when
    /// every member is a single nexthop the RIB holds.
    fn member_legs(&self, object: &NexthopObject) -> Option<Vec<(u32, u32)>> {
        let NexthopKind::Group { members, .. } = &object.kind else { return None };
        members
            .iter()
            .map(|(m, w)| match self.objects.get(m)?.resolved {
                Resolved::Nexthop(id) => Some((id, *w)),
                _ => None,
            })
            .collect()
    }

    /// A fresh entry for `object` of kind `shape`, written.
    fn install_object(&mut self, object: &NexthopObject, shape: Resolved, now: Instant) -> Result<Resolved, RibError> {
        Ok(match (shape, &object.kind) {
            (Resolved::Nexthop(_), NexthopKind::Single { dev, via }) => {
                let id = self.nexthops.acquire_private(NextHopKey { ifindex: *dev, gateway: *via }, now)?;
                if let Err(e) = self.write_nexthop(id) {
                    self.nexthops.release(id, now);
                    return Err(e);
                }
                Resolved::Nexthop(id)
            }
            (Resolved::Group(_), NexthopKind::Group { .. }) => {
                let legs = self.member_legs(object).expect("shape says the members are carried");
                legs.iter().for_each(|(nh, _)| self.nexthops.retain(*nh));
                let id = match self.groups.acquire_private(legs.clone(), now) {
                    Ok(id) => id,
                    Err(e) => {
                        legs.iter().for_each(|(nh, _)| self.nexthops.release(*nh, now));
                        return Err(e);
                    }
                };
                if let Err(e) = self.write_group(id) {
                    self.release_group(id, now);
                    return Err(e);
                }
                Resolved::Group(id)
            }
            (shape, _) => shape,
        })
    }

    /// Sets every route through object `nhid` again (what it publishes
    /// changed kind). A scan, only when routes name it: an object changing
    /// kind, or appearing after the routes that name it, is rare.
    fn rewrite_routes_through(&mut self, nhid: u32, now: Instant) -> Result<(), RibError> {
        if !self.object_routes.contains_key(&nhid) {
            return Ok(());
        }
        let through: Vec<IpNet> = self.routes.iter().filter(|(_, r)| r.attrs.nhid == Some(nhid)).map(|(p, _)| p).collect();
        for prefix in through {
            let input = self.routes[&prefix].input(prefix);
            self.set_route(input, now)?;
        }
        self.rewrite_table_routes_through(nhid, now)
    }
}
