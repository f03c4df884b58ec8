//! The `POLICY` and `POLICY_SELECT` maps: each family's compiled rule list,
//! copy then switch. The agent writes the bank the program does not read,
//! then switches the family's word to it: a reader sees the old list or the
//! new one, whole.

use crate::dataplane::{
    map_error::{access, MapError},
    map_writer::open_pinned,
};
use aya::maps::{Array, MapData};
use common::{
    maps,
    policy::{policy_slot, PolicySelect, RuleList},
};
use std::path::Path;

pub struct PolicyMaps {
    lists: Array<MapData, RuleList>,
    select: Array<MapData, PolicySelect>,
}

impl PolicyMaps {
    pub fn open(pin_dir: &Path) -> Result<PolicyMaps, MapError> {
        Ok(PolicyMaps { lists: open_pinned(pin_dir, maps::POLICY)?, select: open_pinned(pin_dir, maps::POLICY_SELECT)? })
    }

    /// What the program reads for a family now: `None` (the defaults), or the list.
    pub fn published(&self, ipv6: bool) -> Result<Option<RuleList>, MapError> {
        match self.bank(ipv6)? {
            0 => Ok(None),
            b => access(self.lists.get(&policy_slot(ipv6, b - 1), 0), maps::POLICY, || "reading a rule list".into()).map(Some),
        }
    }

    fn bank(&self, ipv6: bool) -> Result<u32, MapError> {
        access(self.select.get(&(ipv6 as u32), 0), maps::POLICY_SELECT, || "reading the bank in use".into()).map(|s| s.bank)
    }

    /// Makes the program read `list` for the family (`None`: no rules to
    /// evaluate). An unchanged list is not rewritten.
    pub fn publish(&mut self, ipv6: bool, list: Option<&RuleList>) -> Result<(), MapError> {
        if self.published(ipv6)?.as_ref() == list {
            return Ok(());
        }
        let bank = match list {
            None => 0,
            Some(list) => {
                // The bank not in use: 1 + (0 or 1).
                let next = match self.bank(ipv6)? {
                    1 => 2,
                    _ => 1,
                };
                let slot = policy_slot(ipv6, next - 1);
                access(self.lists.set(slot, list, 0), maps::POLICY, || format!("writing rule list {slot}"))?;
                next
            }
        };
        access(self.select.set(ipv6 as u32, PolicySelect { bank }, 0), maps::POLICY_SELECT, || "switching the bank in use".into())
    }
}
