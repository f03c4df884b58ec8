//! The kernel's nexthop objects as cowroute carries them, with what the
//! kernel does to them without saying so (net/ipv4/nexthop.c):
//! - a device going down (or losing carrier, or going away) removes every
//!   single nexthop on it (`nexthop_flush_dev`), with no RTM_DELNEXTHOP;
//! - a removed nexthop leaves every group it was in, and a group left
//!   empty is removed too (`remove_nh_grp_entry`);
//! - the routes through a removed object are removed with it, with no
//!   RTM_DELROUTE when nexthop_compat_mode is 0 (the caller does that).

use crate::rib::types::{NexthopKind, NexthopObject};
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

/// What a nexthop event did to the objects: the ones now set (new or
/// changed), and the ones gone (asked for, or removed with them).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NexthopDelta {
    pub set: Vec<Arc<NexthopObject>>,
    pub removed: BTreeSet<u32>,
}

impl NexthopDelta {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.removed.is_empty()
    }
}

#[derive(Debug, Default)]
pub struct KernelNexthops {
    objects: BTreeMap<u32, Arc<NexthopObject>>,
}

impl KernelNexthops {
    pub fn get(&self, id: u32) -> Option<&Arc<NexthopObject>> {
        self.objects.get(&id)
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    pub fn objects(&self) -> impl Iterator<Item = &Arc<NexthopObject>> {
        self.objects.values()
    }

    /// An RTM_NEWNEXTHOP (`present`) or RTM_DELNEXTHOP.
    pub fn apply(&mut self, object: NexthopObject, present: bool) -> NexthopDelta {
        let mut delta = NexthopDelta::default();
        if present {
            if self.objects.get(&object.id).map(|o| o.as_ref()) != Some(&object) {
                let object = Arc::new(object);
                self.objects.insert(object.id, object.clone());
                delta.set.push(object);
            }
        } else {
            self.remove(object.id, &mut delta);
        }
        delta
    }

    /// Device `ifindex` went down, lost carrier or went away.
    pub fn flush_dev(&mut self, ifindex: u32) -> NexthopDelta {
        let mut delta = NexthopDelta::default();
        let on_dev: Vec<u32> =
            self.objects.values().filter(|o| matches!(o.kind, NexthopKind::Single { dev, .. } if dev == ifindex)).map(|o| o.id).collect();
        for id in on_dev {
            self.remove(id, &mut delta);
        }
        delta
    }

    /// Replaces every object with those of a fresh dump.
    pub fn resync(&mut self, dump: impl IntoIterator<Item = NexthopObject>) -> NexthopDelta {
        let dump: BTreeMap<u32, NexthopObject> = dump.into_iter().map(|o| (o.id, o)).collect();
        let mut delta = NexthopDelta::default();
        for id in self.objects.keys().filter(|id| !dump.contains_key(id)).copied().collect::<Vec<_>>() {
            self.objects.remove(&id);
            delta.removed.insert(id);
        }
        // Singles before groups: a group's members are there when it comes.
        let (groups, singles): (Vec<_>, Vec<_>) = dump.into_values().partition(|o| matches!(o.kind, NexthopKind::Group { .. }));
        for object in singles.into_iter().chain(groups) {
            let d = self.apply(object, true);
            delta.set.extend(d.set);
        }
        delta
    }

    /// Removes `id`, takes it out of every group, and removes the groups it
    /// leaves empty.
    fn remove(&mut self, id: u32, delta: &mut NexthopDelta) {
        if self.objects.remove(&id).is_none() {
            return;
        }
        delta.removed.insert(id);
        delta.set.retain(|o| o.id != id);
        let groups: Vec<Arc<NexthopObject>> = self
            .objects
            .values()
            .filter(|o| matches!(&o.kind, NexthopKind::Group { members, .. } if members.iter().any(|(m, _)| *m == id)))
            .cloned()
            .collect();
        for group in groups {
            let NexthopKind::Group { members, resilient } = &group.kind else { continue };
            let left: Vec<(u32, u32)> = members.iter().copied().filter(|(m, _)| *m != id).collect();
            if left.is_empty() {
                self.remove(group.id, delta);
            } else {
                let shrunk =
                    Arc::new(NexthopObject { kind: NexthopKind::Group { members: left, resilient: *resilient }, ..(*group).clone() });
                self.objects.insert(group.id, shrunk.clone());
                delta.set.retain(|o| o.id != group.id);
                delta.set.push(shrunk);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(id: u32, dev: u32) -> NexthopObject {
        NexthopObject { id, kind: NexthopKind::Single { dev, via: Some(format!("10.0.{dev}.2").parse().unwrap()) }, protocol: 0 }
    }

    fn group(id: u32, members: &[u32]) -> NexthopObject {
        NexthopObject { id, kind: NexthopKind::Group { members: members.iter().map(|m| (*m, 1)).collect(), resilient: None }, protocol: 0 }
    }

    /// What `ip -d monitor nexthop` shows the kernel doing (6.18): a device
    /// down removes its nexthops silently, and the groups shrink.
    #[test]
    fn a_device_down_removes_its_nexthops_and_shrinks_their_groups() {
        let mut k = KernelNexthops::default();
        for o in [single(1, 2), single(2, 3), single(3, 3), group(10, &[1, 2]), group(11, &[2, 3])] {
            assert_eq!(k.apply(o, true).set.len(), 1);
        }
        assert!(k.apply(single(1, 2), true).is_empty(), "the same object again changes nothing");
        let d = k.flush_dev(3);
        assert_eq!(d.removed, BTreeSet::from([2, 3, 11]), "group 11 left empty goes too");
        assert_eq!(d.set, vec![Arc::new(group(10, &[1]))]);
        let d = k.apply(single(1, 2), false);
        assert_eq!(d.removed, BTreeSet::from([1, 10]));
        assert!(d.set.is_empty());
        assert!(k.is_empty());
    }

    #[test]
    fn resync_yields_what_the_dump_changed() {
        let mut k = KernelNexthops::default();
        k.apply(single(1, 2), true);
        k.apply(single(2, 2), true);
        let d = k.resync([single(1, 2), single(2, 4), single(5, 2)]);
        assert!(d.removed.is_empty());
        assert_eq!(d.set.iter().map(|o| o.id).collect::<Vec<_>>(), vec![2, 5]);
        let d = k.resync([single(5, 2)]);
        assert_eq!(d.removed, BTreeSet::from([1, 2]));
    }
}
