use super::*;

fn rule(priority: u32, action: KernelAction) -> KernelRule {
    KernelRule {
        ipv6: false,
        priority,
        src: None,
        dst: None,
        iif: None,
        tos: 0,
        ip_proto: None,
        sport: None,
        dport: None,
        invert: false,
        suppress_prefixlen: None,
        action,
        unevaluable: Vec::new(),
    }
}

fn defaults() -> Vec<KernelRule> {
    vec![
        rule(0, KernelAction::Table(TABLE_LOCAL)),
        rule(32766, KernelAction::Table(TABLE_MAIN)),
        rule(32767, KernelAction::Table(TABLE_DEFAULT)),
    ]
}

fn empty() -> TableCensus {
    TableCensus::Known(BTreeMap::new())
}

fn no_links(_: &str) -> Option<(u32, u32)> {
    None
}

const MAIN: [u32; 1] = [TABLE_MAIN];
const MERGED: [u32; 2] = [TABLE_MAIN, 1000];

#[test]
fn the_kernels_defaults_compile_to_no_list() {
    let c = compile(&defaults(), &empty(), &MAIN, &no_links);
    assert_eq!(c.list, None);
    assert_eq!(c.dispositions[0], Disposition::LocalEntries);
    assert_eq!(c.dispositions[2], Disposition::NoOp("table default is empty".into()));
}

#[test]
fn a_default_table_with_routes_sends_main_misses_to_the_kernel() {
    let mut census = empty();
    census.note(TABLE_DEFAULT, "0.0.0.0/0".parse().unwrap(), 0, Some(2), true);
    let c = compile(&defaults(), &census, &MAIN, &no_links);
    let list = c.list.expect("active");
    assert_eq!((list.count, list.rules[1].action(), list.rules[1].table), (2, RuleAction::LookupTable, TABLE_DEFAULT));
    // An IPv6 route in it leaves IPv4's table empty.
    let mut census = empty();
    census.note(TABLE_DEFAULT, "::/0".parse().unwrap(), 0, Some(2), true);
    assert_eq!(compile(&defaults(), &census, &MAIN, &no_links).list, None);
    census.note(TABLE_DEFAULT, "::/0".parse().unwrap(), 0, Some(2), false);
    assert!(matches!(census, TableCensus::Known(ref t) if t.is_empty()));
}

#[test]
fn selectors_compile_to_masked_words_and_the_iif_to_its_port() {
    let mut rules = defaults();
    let mut r = rule(100, KernelAction::Prohibit);
    r.src = Some("10.1.2.3/16".parse().unwrap());
    r.iif = Some("eth1.100".into());
    r.tos = 0x10;
    r.dport = Some((22, 22));
    insert(&mut rules, r);
    let ports = |name: &str| (name == "eth1.100").then_some((3, 100));
    let list = compile(&rules, &empty(), &MAIN, &ports).list.expect("active");
    let p = list.rules[0];
    assert_eq!(p.action(), RuleAction::Prohibit);
    assert_eq!(p.src[0], u32::from_ne_bytes([10, 1, 0, 0]));
    assert_eq!(p.src_mask[0], u32::from_ne_bytes([255, 255, 0, 0]));
    assert_eq!((p.iif, p.iif_vid, p.dscp, p.dport), (3, 100, 0x10, [22, 22]));
    assert_ne!(list.flags & RuleList::PORTS, 0);
    // An iif no interface has: it matches nothing.
    let list = compile(&rules, &empty(), &MAIN, &no_links).list.unwrap();
    assert_eq!(list.rules[0].iif, PolicyRule::NO_IIF);
}

#[test]
fn what_the_fast_path_cannot_evaluate_is_the_kernels() {
    let mut rules = defaults();
    let mut fwmark = rule(10, KernelAction::Table(100));
    fwmark.unevaluable = vec!["fwmark 0x1".into()];
    fwmark.src = Some("10.0.0.0/8".parse().unwrap());
    insert(&mut rules, fwmark);
    insert(&mut rules, rule(20, KernelAction::Table(100)));
    let mut census = empty();
    census.note(100, "0.0.0.0/0".parse().unwrap(), 0, Some(3), true);
    let c = compile(&rules, &census, &MAIN, &no_links);
    let list = c.list.unwrap();
    assert_eq!(list.rules[0].action(), RuleAction::Kernel);
    assert_eq!(list.rules[0].src_mask[0], u32::from_ne_bytes([255, 0, 0, 0]), "only 10/8 may be the kernel's");
    assert_eq!((list.rules[1].action(), list.rules[1].table), (RuleAction::LookupTable, 100), "table 100 has routes: held apart");
    assert_eq!(c.dispositions[2], Disposition::FastPath);
    // Empty, table 100 is a no-op.
    let list = compile(&rules, &empty(), &MAIN, &no_links).list.unwrap();
    assert_eq!(list.rules[1].action(), RuleAction::Nop);
}

#[test]
fn a_table_not_held_apart_is_the_kernels() {
    let mut rules = defaults();
    let mut t = rule(20, KernelAction::Table(100));
    t.suppress_prefixlen = Some(0);
    insert(&mut rules, t);
    insert(&mut rules, rule(30, KernelAction::Table(1000)));
    // Routes from FPM or the file: other tables are not held.
    let c = compile(&rules, &TableCensus::Unknown, &MAIN, &no_links);
    assert_eq!(c.list.unwrap().rules[0].action(), RuleAction::Kernel);
    assert!(matches!(&c.dispositions[1], Disposition::Kernel(w) if w.contains("not held")));
    let mut census = empty();
    census.note(100, "0.0.0.0/0".parse().unwrap(), 0, Some(3), true);
    let list = compile(&rules, &census, &MAIN, &no_links).list.unwrap();
    assert_eq!((list.rules[0].action(), list.rules[0].suppress_prefixlen), (RuleAction::LookupTable, 0));
    // Table 1000 merged into the main view (--table 254 --table 1000).
    let c = compile(&rules, &census, &MERGED, &no_links);
    assert_eq!(c.list.unwrap().rules[1].action(), RuleAction::Kernel);
    assert!(matches!(&c.dispositions[2], Disposition::Kernel(w) if w.contains("merged")));
}

#[test]
fn goto_targets_the_first_rule_of_its_priority_or_is_a_no_op() {
    let mut rules = defaults();
    insert(&mut rules, rule(10, KernelAction::Goto(30)));
    insert(&mut rules, rule(20, KernelAction::Blackhole));
    insert(&mut rules, rule(30, KernelAction::Prohibit));
    insert(&mut rules, rule(40, KernelAction::Goto(35)));
    let list = compile(&rules, &empty(), &MAIN, &no_links).list.unwrap();
    assert_eq!((list.rules[0].action(), list.rules[0].target), (RuleAction::Goto, 2));
    assert_eq!(list.rules[3].action(), RuleAction::Nop, "no rule at 35");
}

#[test]
fn a_moved_local_rule_or_too_many_rules_go_to_the_kernel() {
    let mut rules = defaults();
    rules[0].src = Some("10.0.0.0/8".parse().unwrap());
    let c = compile(&rules, &empty(), &MAIN, &no_links);
    let list = c.list.unwrap();
    assert_eq!((list.count, list.rules[0].action()), (1, RuleAction::Kernel));
    assert!(c.dispositions.iter().all(|d| matches!(d, Disposition::Kernel(_))));
    let mut rules = defaults();
    for p in 1..=20 {
        insert(&mut rules, rule(p, KernelAction::Blackhole));
    }
    let c = compile(&rules, &empty(), &MAIN, &no_links);
    let list = c.list.unwrap();
    assert_eq!(list.count as usize, MAX_RULES);
    assert_eq!(list.rules[MAX_RULES - 1].action(), RuleAction::Kernel);
    assert_eq!(c.dispositions.len(), rules.len());
    let beyond = Disposition::Kernel(format!("beyond the fast path's {} rules", MAX_RULES - 1));
    assert_eq!(c.dispositions[MAX_RULES - 1], Disposition::FastPath, "the 15th after local");
    assert!(c.dispositions[MAX_RULES..21].iter().all(|d| *d == beyond), "{:?}", c.dispositions);
    // Sixteen fit exactly.
    let mut rules = defaults();
    for p in 1..=(MAX_RULES as u32 - 2) {
        insert(&mut rules, rule(p, KernelAction::Blackhole));
    }
    let c = compile(&rules, &empty(), &MAIN, &no_links);
    assert_eq!(c.list.unwrap().count as usize, MAX_RULES);
    assert!(!c.dispositions.iter().any(|d| matches!(d, Disposition::Kernel(_))), "{:?}", c.dispositions);
}

#[test]
fn main_merged_with_other_tables_is_not_table_main() {
    let mut rules = defaults();
    insert(&mut rules, rule(100, KernelAction::Blackhole));
    let list = compile(&rules, &empty(), &MERGED, &no_links).list.unwrap();
    assert_eq!(list.rules[1].action(), RuleAction::Kernel);
    // The defaults stay the defaults: the merged view decides.
    assert_eq!(compile(&defaults(), &empty(), &MERGED, &no_links).list, None);
}

#[test]
fn rules_of_one_priority_keep_their_age_and_delete_by_value() {
    let mut rules = defaults();
    insert(&mut rules, rule(100, KernelAction::Blackhole));
    insert(&mut rules, rule(100, KernelAction::Prohibit));
    assert_eq!(rules[1].action, KernelAction::Blackhole);
    assert_eq!(rules[2].action, KernelAction::Prohibit);
    assert!(remove(&mut rules, &rule(100, KernelAction::Prohibit)));
    assert!(!remove(&mut rules, &rule(100, KernelAction::Prohibit)));
    assert_eq!(rules.len(), 4);
}

#[test]
fn a_rule_for_port_0_is_the_kernels_with_its_other_selectors() {
    let mut rules = defaults();
    let mut r = rule(10, KernelAction::Blackhole);
    r.src = Some("10.0.0.0/8".parse().unwrap());
    r.dport = Some((0, 0));
    insert(&mut rules, r);
    let c = compile(&rules, &empty(), &MAIN, &no_links);
    let p = c.list.unwrap().rules[0];
    assert_eq!((p.action(), p.flags & PolicyRule::PORTS), (RuleAction::Kernel, 0));
    assert_eq!(p.src_mask[0], u32::from_ne_bytes([255, 0, 0, 0]), "only 10/8 may be the kernel's");
    assert!(matches!(&c.dispositions[1], Disposition::Kernel(w) if w.contains("port 0")));
}
