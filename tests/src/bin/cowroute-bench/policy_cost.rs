//! Per-packet cost of `ip rule` in the fast path (BPF_PROG_TEST_RUN, as
//! `program_cost`): the IPv4 probe through 0 (the kernel's defaults: no
//! list), 1, 4 and 15 rules that do not match it before `lookup main`, or
//! before `lookup 100` (a table held apart, `TABLE_ROUTES_V4`, whose route
//! the probe takes), paired per round against no rules.

use crate::program_cost::{forward_ns, load, lookup_ns};
use crate::stats::{summarize, Summary};
use anyhow::{Context, Result};
use common::{
    policy::{address_words, mask_words, policy_slot, PolicyRule, PolicySelect, RuleAction, RuleList, MAX_RULES},
    MetricsRef, RouteEntry, RouteKind,
};

#[derive(Debug, Clone, serde::Serialize)]
pub struct PolicyCostRow {
    /// Rules walked before the one that decides.
    pub rules: usize,
    /// What decides: "defaults" (no list), "lookup main", "lookup 100".
    pub decided_by: &'static str,
    pub lookup_ns: Summary,
    pub forward_ns: Summary,
    /// Lookup path against no rules, paired per round.
    pub lookup_vs_no_rules: Summary,
}

/// What one case walks: `n` rules that do not match, then a lookup of
/// main or (`table`) of table 100.
#[derive(Clone, Copy)]
struct Case {
    n: usize,
    table: bool,
}

const TABLE: u32 = 100;

/// `n` rules `from 192.0.2.0/24 blackhole` (the probe comes from 10.1.0.2),
/// then `lookup main` or `lookup 100`.
fn list(c: Case) -> RuleList {
    let mut l = RuleList { count: c.n as u32 + 1, ..Default::default() };
    let (mask, src) = (mask_words(24), address_words(&[192, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
    for r in l.rules.iter_mut().take(c.n) {
        *r = PolicyRule {
            src,
            src_mask: mask,
            action: RuleAction::Blackhole as u8,
            suppress_prefixlen: PolicyRule::NO_SUPPRESS,
            ..Default::default()
        };
    }
    let (action, table) = if c.table { (RuleAction::LookupTable, TABLE) } else { (RuleAction::LookupMain, 0) };
    l.rules[c.n] = PolicyRule { action: action as u8, table, suppress_prefixlen: PolicyRule::NO_SUPPRESS, ..Default::default() };
    l
}

fn publish(fp: &mut cowroute_tests::FastPath, c: Option<Case>) -> Result<()> {
    if let Some(c) = c {
        let mut lists: aya::maps::Array<_, RuleList> = fp.dp.ebpf.map_mut(common::maps::POLICY).context("POLICY")?.try_into()?;
        lists.set(policy_slot(false, 0), list(c), 0)?;
    }
    let mut select: aya::maps::Array<_, PolicySelect> =
        fp.dp.ebpf.map_mut(common::maps::POLICY_SELECT).context("POLICY_SELECT")?.try_into()?;
    select.set(0, PolicySelect { bank: c.map_or(0, |_| 1) }, 0)?;
    Ok(())
}

pub fn measure(repeat: u32, runs: usize, progress: &dyn Fn(&str)) -> Result<Vec<PolicyCostRow>> {
    let mut t = load("ipv4", &[], progress)?;
    // Table 100 holds the probe's route too (the same entry as main's).
    let probe: ipnet::IpNet = "10.2.0.0/24".parse()?;
    let entry = RouteEntry::new(RouteKind::Unicast, 1, MetricsRef::read_only(1), 1);
    t.fp.maps.put_table_route(TABLE, &probe, &entry)?;
    let case = |n, table| Some(Case { n, table });
    let cases = [None, case(1, false), case(4, false), case(MAX_RULES - 1, false), case(0, true), case(3, true), case(MAX_RULES - 2, true)];
    let mut lookup: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut forward: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for round in 0..runs {
        progress(&format!("policy cost: round {}/{runs}", round + 1));
        for (i, c) in cases.iter().enumerate() {
            publish(&mut t.fp, *c)?;
            lookup[i].push(lookup_ns(&mut t.fp, &t.frame, repeat)?);
            forward[i].push(forward_ns(&mut t.fp, &t.frame)?);
        }
    }
    publish(&mut t.fp, None)?;
    Ok(cases
        .iter()
        .enumerate()
        .map(|(i, c)| PolicyCostRow {
            rules: c.map_or(0, |c| c.n),
            decided_by: match c {
                None => "defaults",
                Some(Case { table: false, .. }) => "lookup main",
                Some(Case { table: true, .. }) => "lookup 100",
            },
            lookup_ns: summarize(lookup[i].clone()),
            forward_ns: summarize(forward[i].clone()),
            lookup_vs_no_rules: summarize(lookup[i].iter().zip(&lookup[0]).map(|(a, b)| a / b).collect()),
        })
        .collect())
}
