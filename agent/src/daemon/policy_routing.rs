//! The daemon's `ip rule` state: the kernel's rules per family, what the
//! tables they name hold, and the compiled lists in `POLICY` (recompiled
//! when a rule, a link an `iif` names, or a table's emptiness changes).

use super::Daemon;
use crate::{
    dataplane::policy_maps::PolicyMaps,
    rib::policy::{self, Compiled, KernelRule, TableCensus, TABLE_LOCAL},
    rib::types::KernelRoute,
};
use std::collections::BTreeMap;

pub(super) struct PolicyRouting {
    /// IPv4's rules and IPv6's, each in the kernel's order.
    rules: [Vec<KernelRule>; 2],
    census: TableCensus,
    /// The tables the main view holds (`--table`).
    mirrored: Vec<u32>,
    maps: PolicyMaps,
    compiled: [Option<Compiled>; 2],
    dirty: bool,
    /// Rule lists that could not be written.
    pub errors: u64,
}

impl PolicyRouting {
    /// `kernel_routes`: the kernel's routes are mirrored (so other tables'
    /// contents are known).
    pub fn new(maps: PolicyMaps, kernel_routes: bool, mirrored: &[u32]) -> PolicyRouting {
        PolicyRouting {
            rules: [Vec::new(), Vec::new()],
            census: if kernel_routes { TableCensus::Known(BTreeMap::new()) } else { TableCensus::Unknown },
            mirrored: mirrored.to_vec(),
            maps,
            compiled: [None, None],
            dirty: true,
            errors: 0,
        }
    }

    /// Starts over from a dump: its rules (in the kernel's order) and routes.
    pub fn reset(&mut self, rules: Vec<KernelRule>, routes: &[KernelRoute], mirrored: &[u32]) {
        self.mirrored = mirrored.to_vec();
        self.rules = [Vec::new(), Vec::new()];
        for rule in rules {
            let family = rule.ipv6 as usize;
            self.rules[family].push(rule);
        }
        if let TableCensus::Known(t) = &mut self.census {
            t.clear();
        }
        for r in routes {
            self.route(r, true);
        }
        self.dirty = true;
    }

    pub fn rule(&mut self, rule: KernelRule, present: bool) {
        let rules = &mut self.rules[rule.ipv6 as usize];
        if present {
            policy::insert(rules, rule);
        } else {
            policy::remove(rules, &rule);
        }
        self.dirty = true;
    }

    /// A route of the kernel's: counted when its table is not the main view's.
    pub fn route(&mut self, route: &KernelRoute, present: bool) {
        if self.mirrored.contains(&route.table) || route.table == TABLE_LOCAL {
            return;
        }
        let before = self.census.holds(route.table);
        self.census.note(route.table, route.route.prefix, route.priority, route.route.dev, present);
        if self.census.holds(route.table) != before {
            self.dirty = true;
        }
    }

    /// The family's compiled list in use (`None`: the kernel's defaults).
    pub fn list(&self, ipv6: bool) -> Option<&common::policy::RuleList> {
        self.compiled[ipv6 as usize].as_ref()?.list.as_ref()
    }

    /// A link appeared, changed or went: an `iif` may name it.
    pub fn links_changed(&mut self) {
        if self.rules.iter().any(|rules| rules.iter().any(|r| r.iif.is_some())) {
            self.dirty = true;
        }
    }

    /// The kernel's rules and how the fast path carries each (`show rules`).
    pub fn view(&self) -> Vec<(&KernelRule, Option<&policy::Disposition>)> {
        let mut out = Vec::new();
        for family in 0..2 {
            let dispositions = self.compiled[family].as_ref().map(|c| &c.dispositions);
            for (i, rule) in self.rules[family].iter().enumerate() {
                out.push((rule, dispositions.and_then(|d| d.get(i))));
            }
        }
        out
    }
}

impl Daemon {
    /// Recompiles and publishes the rules if anything they depend on changed.
    pub(super) fn publish_policy(&mut self) {
        if !self.policy.dirty {
            return;
        }
        self.policy.dirty = false;
        let links = self.rib.link_indexes();
        let rib = &self.rib;
        let ingress_of = |name: &str| {
            let index = *links.get(name)?;
            Some(match rib.link(index).and_then(|l| l.vlan) {
                Some((parent, vid)) => (parent, vid as u32),
                None => (index, 0),
            })
        };
        for family in 0..2 {
            let compiled = policy::compile(&self.policy.rules[family], &self.policy.census, &self.policy.mirrored, &ingress_of);
            if let Err(e) = self.policy.maps.publish(family == 1, compiled.list.as_ref()) {
                self.policy.errors += 1;
                tracing::error!(ipv6 = family == 1, error = %crate::error_chain(&e), "publishing the rule list");
                self.policy.dirty = true;
            } else if self.policy.compiled[family].as_ref().map(|c| &c.list) != Some(&compiled.list) {
                tracing::info!(
                    ipv6 = family == 1,
                    rules = self.policy.rules[family].len(),
                    evaluated = compiled.list.map_or(0, |l| l.count),
                    "rule list published"
                );
            }
            self.policy.compiled[family] = Some(compiled);
        }
    }
}
