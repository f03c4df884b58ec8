//! Per-packet cost of `ip rule` in the fast path (BPF_PROG_TEST_RUN, as
//! `program_cost`): the IPv4 probe through 0 (the kernel's defaults: no
//! list), 1, 4 and 15 rules that do not match it before `lookup main`,
//! paired per round against no rules.

use crate::program_cost::{forward_ns, load, lookup_ns};
use crate::stats::{summarize, Summary};
use anyhow::{Context, Result};
use common::policy::{address_words, mask_words, policy_slot, PolicyRule, PolicySelect, RuleAction, RuleList, MAX_RULES};

#[derive(Debug, Clone, serde::Serialize)]
pub struct PolicyCostRow {
    /// Rules walked before the one that decides (`lookup main`).
    pub rules: usize,
    pub lookup_ns: Summary,
    pub forward_ns: Summary,
    /// Lookup path against no rules, paired per round.
    pub lookup_vs_no_rules: Summary,
}

/// `n` rules `from 192.0.2.0/24 blackhole` (the probe comes from 10.1.0.2),
/// then `lookup main`.
fn list(n: usize) -> RuleList {
    let mut l = RuleList { count: n as u32 + 1, ..Default::default() };
    let (mask, src) = (mask_words(24), address_words(&[192, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
    for r in l.rules.iter_mut().take(n) {
        *r = PolicyRule {
            src,
            src_mask: mask,
            action: RuleAction::Blackhole as u8,
            suppress_prefixlen: PolicyRule::NO_SUPPRESS,
            ..Default::default()
        };
    }
    l.rules[n] = PolicyRule { action: RuleAction::LookupMain as u8, suppress_prefixlen: PolicyRule::NO_SUPPRESS, ..Default::default() };
    l
}

fn publish(fp: &mut cowroute_tests::FastPath, n: Option<usize>) -> Result<()> {
    if let Some(n) = n {
        let mut lists: aya::maps::Array<_, RuleList> = fp.dp.ebpf.map_mut(common::maps::POLICY).context("POLICY")?.try_into()?;
        lists.set(policy_slot(false, 0), list(n), 0)?;
    }
    let mut select: aya::maps::Array<_, PolicySelect> =
        fp.dp.ebpf.map_mut(common::maps::POLICY_SELECT).context("POLICY_SELECT")?.try_into()?;
    select.set(0, PolicySelect { bank: n.map_or(0, |_| 1) }, 0)?;
    Ok(())
}

pub fn measure(repeat: u32, runs: usize, progress: &dyn Fn(&str)) -> Result<Vec<PolicyCostRow>> {
    let mut t = load("ipv4", &[], progress)?;
    let counts = [None, Some(1), Some(4), Some(MAX_RULES - 1)];
    let mut lookup: Vec<Vec<f64>> = vec![Vec::new(); counts.len()];
    let mut forward: Vec<Vec<f64>> = vec![Vec::new(); counts.len()];
    for round in 0..runs {
        progress(&format!("policy cost: round {}/{runs}", round + 1));
        for (i, n) in counts.iter().enumerate() {
            publish(&mut t.fp, *n)?;
            lookup[i].push(lookup_ns(&mut t.fp, &t.frame, repeat)?);
            forward[i].push(forward_ns(&mut t.fp, &t.frame)?);
        }
    }
    publish(&mut t.fp, None)?;
    Ok(counts
        .iter()
        .enumerate()
        .map(|(i, n)| PolicyCostRow {
            rules: n.unwrap_or(0),
            lookup_ns: summarize(lookup[i].clone()),
            forward_ns: summarize(forward[i].clone()),
            lookup_vs_no_rules: summarize(lookup[i].iter().zip(&lookup[0]).map(|(a, b)| a / b).collect()),
        })
        .collect())
}
