//! `cowroute show rules`: the kernel's `ip rule` list as the agent mirrors
//! it, each rule with how the fast path carries it.

use crate::operator::control::Request;
use crate::rib::policy::{Disposition, KernelRule};
use anyhow::Result;
use std::path::Path;

/// One rule, as `show rules` prints it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RuleRow {
    /// `inet` or `inet6`.
    pub family: String,
    pub priority: u32,
    /// As `ip rule` says it.
    pub rule: String,
    /// `fast_path`, `local_entries`, `kernel` or `no_op`.
    pub carried: String,
    /// Why a rule is the kernel's or does nothing.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub why: Option<String>,
}

/// The rows of `rules` (with each one's disposition, once compiled).
pub fn rule_rows<'a>(rules: impl IntoIterator<Item = (&'a KernelRule, Option<&'a Disposition>)>) -> Vec<RuleRow> {
    rules
        .into_iter()
        .map(|(r, d)| {
            let (carried, why) = match d {
                Some(Disposition::FastPath) => ("fast_path", None),
                Some(Disposition::LocalEntries) => ("local_entries", None),
                Some(Disposition::Kernel(why)) => ("kernel", Some(why.clone())),
                Some(Disposition::NoOp(why)) => ("no_op", Some(why.clone())),
                None => ("kernel", Some("not compiled yet".to_string())),
            };
            RuleRow {
                family: if r.ipv6 { "inet6" } else { "inet" }.into(),
                priority: r.priority,
                rule: r.describe(),
                carried: carried.into(),
                why,
            }
        })
        .collect()
}

pub fn print_rules(socket: &Path, json: bool) -> Result<()> {
    let answer = crate::operator::control::Client::connect(socket)
        .and_then(|mut c| c.call(&Request::Rules))
        .map_err(|e| anyhow::anyhow!("no agent answering on {} ({e:#}): the rules are the running agent's", socket.display()))?;
    let rows: Vec<RuleRow> = serde_json::from_value(answer)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!("{:<6} {:>8}  {:<48} carried", "family", "priority", "rule");
    for r in &rows {
        let why = r.why.as_ref().map_or(String::new(), |w| format!(" ({w})"));
        println!("{:<6} {:>8}  {:<48} {}{why}", r.family, r.priority, r.rule, r.carried);
    }
    Ok(())
}
