//! `ip rule` as the agent holds it and compiles it for the fast path
//! (`common::policy`).
//!
//! The kernel's rule list per family, in its order (priority, then age),
//! compiles into a [`RuleList`]: what the program can evaluate exactly
//! (priority order, iif, from, to, dscp, ipproto, ports, not, goto, nop,
//! blackhole/unreachable/prohibit, `suppress_prefixlength` on the main
//! view), and [`RuleAction::Kernel`] for the rest: a selector it cannot
//! evaluate (fwmark, uidrange, oif, l3mdev, tun_id, a newer attribute), a
//! lookup in a table the fast path does not hold. A table known to be empty
//! is a no-op (the kernel goes on past a lookup that finds nothing).

use common::policy::{address_words, mask_words, PolicyRule, RuleAction, RuleList, MAX_RULES};
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};

/// `RT_TABLE_MAIN`, `RT_TABLE_LOCAL`, `RT_TABLE_DEFAULT`.
pub const TABLE_MAIN: u32 = 254;
pub const TABLE_LOCAL: u32 = 255;
pub const TABLE_DEFAULT: u32 = 253;

/// What a rule does (`FR_ACT_*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelAction {
    Table(u32),
    Goto(u32),
    Nop,
    Blackhole,
    Unreachable,
    Prohibit,
    /// An action this agent does not know.
    Other(u8),
}

/// One kernel rule, as RTM_NEWRULE describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelRule {
    pub ipv6: bool,
    pub priority: u32,
    pub src: Option<IpNet>,
    pub dst: Option<IpNet>,
    pub iif: Option<String>,
    /// The TOS byte of the rule header (its DSCP bits), 0: any.
    pub tos: u8,
    pub ip_proto: Option<u8>,
    pub sport: Option<(u16, u16)>,
    pub dport: Option<(u16, u16)>,
    pub invert: bool,
    /// `suppress_prefixlength`, when set.
    pub suppress_prefixlen: Option<u32>,
    pub action: KernelAction,
    /// The selectors present that the fast path cannot evaluate, by name
    /// (`fwmark`, `uidrange`, `oif`, `l3mdev`, ...): the rule is the kernel's.
    pub unevaluable: Vec<String>,
}

impl KernelRule {
    /// A rule with no selector: matches every packet.
    fn unconditional(&self) -> bool {
        self.src.is_none()
            && self.dst.is_none()
            && self.iif.is_none()
            && self.tos == 0
            && self.ip_proto.is_none()
            && self.sport.is_none()
            && self.dport.is_none()
            && !self.invert
            && self.unevaluable.is_empty()
    }

    /// The local table's rule, as the kernel starts with it.
    fn is_local_lookup(&self) -> bool {
        self.action == KernelAction::Table(TABLE_LOCAL) && self.unconditional() && self.suppress_prefixlen.is_none()
    }

    /// `ip rule`'s words for it (`show rules`).
    pub fn describe(&self) -> String {
        let mut s = String::new();
        if self.invert {
            s.push_str("not ");
        }
        s.push_str(&format!("from {}", self.src.map_or("all".to_string(), |p| p.to_string())));
        if let Some(d) = self.dst {
            s.push_str(&format!(" to {d}"));
        }
        if self.tos != 0 {
            s.push_str(&format!(" tos {:#04x}", self.tos));
        }
        if let Some(i) = &self.iif {
            s.push_str(&format!(" iif {i}"));
        }
        if let Some(p) = self.ip_proto {
            s.push_str(&format!(" ipproto {p}"));
        }
        for (name, range) in [("sport", self.sport), ("dport", self.dport)] {
            match range {
                Some((a, b)) if a == b => s.push_str(&format!(" {name} {a}")),
                Some((a, b)) => s.push_str(&format!(" {name} {a}-{b}")),
                None => {}
            }
        }
        for u in &self.unevaluable {
            s.push_str(&format!(" {u}"));
        }
        match &self.action {
            KernelAction::Table(t) => s.push_str(&format!(" lookup {}", table_name(*t))),
            KernelAction::Goto(t) => s.push_str(&format!(" goto {t}")),
            KernelAction::Nop => s.push_str(" nop"),
            KernelAction::Blackhole => s.push_str(" blackhole"),
            KernelAction::Unreachable => s.push_str(" unreachable"),
            KernelAction::Prohibit => s.push_str(" prohibit"),
            KernelAction::Other(a) => s.push_str(&format!(" action {a}")),
        }
        if let Some(n) = self.suppress_prefixlen {
            s.push_str(&format!(" suppress_prefixlength {n}"));
        }
        s
    }
}

pub fn table_name(t: u32) -> String {
    match t {
        TABLE_MAIN => "main".into(),
        TABLE_LOCAL => "local".into(),
        TABLE_DEFAULT => "default".into(),
        t => t.to_string(),
    }
}

/// How the fast path carries one rule (`show rules`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Evaluated in the fast path.
    FastPath,
    /// The local table: answered by the main view's local entries, first.
    LocalEntries,
    /// Matching packets go to the kernel, for this reason.
    Kernel(String),
    /// A no-op for this reason (an empty table, an unresolved goto).
    NoOp(String),
}

/// What the agent knows of the tables rules may name.
#[derive(Clone, Debug)]
pub enum TableCensus {
    /// The kernel's routes are mirrored: the routes of each table not
    /// carried as the main view, by (table, prefix, priority, device).
    Known(BTreeMap<u32, BTreeSet<(IpNet, u32, Option<u32>)>>),
    /// Routes come from elsewhere (FPM, the config file): other tables are
    /// unknown, and taken as holding routes, except the default table, which
    /// Linux leaves empty.
    Unknown,
}

impl TableCensus {
    fn empty(&self, table: u32, ipv6: bool) -> bool {
        match self {
            TableCensus::Known(t) => t.get(&table).is_none_or(|routes| !routes.iter().any(|(p, _, _)| p.addr().is_ipv6() == ipv6)),
            TableCensus::Unknown => table == TABLE_DEFAULT,
        }
    }

    /// Whether `table` holds an IPv4 route, and an IPv6 one (unknown: both).
    pub fn holds(&self, table: u32) -> (bool, bool) {
        match self {
            TableCensus::Known(t) => t.get(&table).map_or((false, false), |routes| {
                (routes.iter().any(|(p, _, _)| p.addr().is_ipv4()), routes.iter().any(|(p, _, _)| p.addr().is_ipv6()))
            }),
            TableCensus::Unknown => (true, true),
        }
    }

    /// A route of a table not carried appeared or went (`present`).
    pub fn note(&mut self, table: u32, prefix: IpNet, priority: u32, dev: Option<u32>, present: bool) {
        let TableCensus::Known(tables) = self else { return };
        let routes = tables.entry(table).or_default();
        let key = (prefix, priority, dev);
        if present {
            routes.insert(key);
        } else {
            routes.remove(&key);
            if routes.is_empty() {
                tables.remove(&table);
            }
        }
    }
}

/// The interface a rule's `iif` names, as the fast path sees frames arrive:
/// (ifindex, VLAN id) of the port.
pub type IngressOf<'a> = &'a dyn Fn(&str) -> Option<(u32, u32)>;

/// A family's rules, compiled, with each rule's disposition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compiled {
    /// `None`: the rules are the defaults (the fast path reads no rule).
    pub list: Option<RuleList>,
    pub dispositions: Vec<Disposition>,
}

/// Compiles one family's rules (in the kernel's order). `merged`: the
/// tables the main view holds (`--table`: main alone, or main and others
/// merged into it). With the kernel's routes mirrored (`TableCensus::Known`)
/// every other table is held apart, and a rule's lookup of it evaluated.
pub fn compile(rules: &[KernelRule], census: &TableCensus, merged: &[u32], ingress_of: IngressOf) -> Compiled {
    // The kernel's defaults leave the main view to decide, whatever
    // `--table` merged into it (that merge is cowroute's own, documented).
    let as_main = compile_list(rules, census, &[TABLE_MAIN], ingress_of);
    if merged == [TABLE_MAIN] || as_main.list.is_none() {
        return as_main;
    }
    compile_list(rules, census, merged, ingress_of)
}

fn compile_list(rules: &[KernelRule], census: &TableCensus, merged: &[u32], ingress_of: IngressOf) -> Compiled {
    let mut dispositions = Vec::with_capacity(rules.len());
    // The local table's rule must come first and match everything: then
    // the main view's local entries answering first is exactly it.
    let Some(first) = rules.first().filter(|r| r.is_local_lookup()) else {
        let why = "the local table's rule is not first and unconditional: every packet is the kernel's";
        let mut list = RuleList { count: 1, ..Default::default() };
        list.rules[0] = PolicyRule { action: RuleAction::Kernel as u8, suppress_prefixlen: PolicyRule::NO_SUPPRESS, ..Default::default() };
        dispositions.extend(rules.iter().map(|_| Disposition::Kernel(why.into())));
        return Compiled { list: Some(list), dispositions };
    };
    dispositions.push(Disposition::LocalEntries);
    let ipv6 = first.ipv6;
    let rest = &rules[1..];
    let mut list = RuleList { flags: if ipv6 { RuleList::IPV6 } else { 0 }, ..Default::default() };
    // Sixteen slots: with more rules than that, the last is the kernel's
    // from there on.
    let room = if rest.len() > MAX_RULES { MAX_RULES - 1 } else { MAX_RULES };
    for (i, rule) in rest.iter().enumerate() {
        if i == room {
            list.rules[i] =
                PolicyRule { action: RuleAction::Kernel as u8, suppress_prefixlen: PolicyRule::NO_SUPPRESS, ..Default::default() };
            list.count = i as u32 + 1;
            dispositions.extend(rest[i..].iter().map(|_| Disposition::Kernel(format!("beyond the fast path's {room} rules"))));
            break;
        }
        let (compiled, disposition) = compile_rule(rule, rest, census, merged, ingress_of);
        dispositions.push(disposition);
        list.rules[i] = compiled;
        list.count = i as u32 + 1;
        if compiled.flags & PolicyRule::PORTS != 0 {
            list.flags |= RuleList::PORTS;
        }
    }
    let rules = &list.rules[..list.count as usize];
    let plain_main = |r: &PolicyRule| {
        *r == PolicyRule { action: RuleAction::LookupMain as u8, suppress_prefixlen: PolicyRule::NO_SUPPRESS, ..Default::default() }
    };
    let default = rules.first().is_some_and(plain_main) && rules[1..].iter().all(|r| r.action() == RuleAction::Nop);
    Compiled { list: (!default).then_some(list), dispositions }
}

fn compile_rule(
    rule: &KernelRule,
    all: &[KernelRule],
    census: &TableCensus,
    merged: &[u32],
    ingress_of: IngressOf,
) -> (PolicyRule, Disposition) {
    let main_only = merged == [TABLE_MAIN];
    let (mut r, port_zero) = selectors(rule, ingress_of);
    if !rule.unevaluable.is_empty() || port_zero {
        // The evaluable selectors stay: only what they leave may be the
        // kernel's. But `not` over an unevaluable selector may match anything.
        if rule.invert {
            r = PolicyRule { suppress_prefixlen: PolicyRule::NO_SUPPRESS, ..Default::default() };
        }
        r.action = RuleAction::Kernel as u8;
        let what = if rule.unevaluable.is_empty() { "port 0".to_string() } else { rule.unevaluable.join(", ") };
        return (r, Disposition::Kernel(format!("{what} not evaluated in the fast path")));
    }
    let (action, disposition) = match &rule.action {
        KernelAction::Table(TABLE_MAIN) if !main_only => (
            RuleAction::Kernel,
            Disposition::Kernel("the main view merges other tables (--table): table main alone is the kernel's".into()),
        ),
        KernelAction::Table(TABLE_MAIN) => {
            r.suppress_prefixlen = suppress(rule);
            (RuleAction::LookupMain, Disposition::FastPath)
        }
        // The local table had no route for the packet at the first rule.
        KernelAction::Table(TABLE_LOCAL) => (RuleAction::Nop, Disposition::NoOp("the local table answered first".into())),
        KernelAction::Table(t) if merged.contains(t) => (
            RuleAction::Kernel,
            Disposition::Kernel(format!("table {} is merged into the main view (--table): the kernel's alone", table_name(*t))),
        ),
        KernelAction::Table(t) if census.empty(*t, rule.ipv6) => {
            (RuleAction::Nop, Disposition::NoOp(format!("table {} is empty", table_name(*t))))
        }
        KernelAction::Table(t) if matches!(census, TableCensus::Known(_)) => {
            (r.table, r.suppress_prefixlen) = (*t, suppress(rule));
            (RuleAction::LookupTable, Disposition::FastPath)
        }
        KernelAction::Table(t) => (
            RuleAction::Kernel,
            Disposition::Kernel(format!("table {} is not held by the fast path (routes not from the kernel)", table_name(*t))),
        ),
        KernelAction::Goto(target) => match all.iter().position(|x| x.priority == *target) {
            // The kernel's goto only jumps forward; beyond the list's room
            // lands on its last rule, the kernel's.
            Some(index) => {
                r.target = index.min(MAX_RULES - 1) as u8;
                (RuleAction::Goto, Disposition::FastPath)
            }
            _ => (RuleAction::Nop, Disposition::NoOp(format!("no rule at priority {target}: an unresolved goto"))),
        },
        KernelAction::Nop => (RuleAction::Nop, Disposition::FastPath),
        KernelAction::Blackhole => (RuleAction::Blackhole, Disposition::FastPath),
        KernelAction::Unreachable => (RuleAction::Unreachable, Disposition::FastPath),
        KernelAction::Prohibit => (RuleAction::Prohibit, Disposition::FastPath),
        KernelAction::Other(a) => (RuleAction::Kernel, Disposition::Kernel(format!("action {a} unknown to the agent"))),
    };
    r.action = action as u8;
    (r, disposition)
}

/// `suppress_prefixlength` as the program compares it.
fn suppress(rule: &KernelRule) -> u8 {
    rule.suppress_prefixlen.map_or(PolicyRule::NO_SUPPRESS, |n| n.min(254) as u8)
}

/// The rule's evaluable selectors, compiled (action unset), and whether it
/// names port 0 (which the program reads as "any port": the kernel's).
fn selectors(rule: &KernelRule, ingress_of: IngressOf) -> (PolicyRule, bool) {
    let mut r = PolicyRule { suppress_prefixlen: PolicyRule::NO_SUPPRESS, ..Default::default() };
    if let Some(p) = rule.src {
        (r.src, r.src_mask) = prefix_words(&p);
    }
    if let Some(p) = rule.dst {
        (r.dst, r.dst_mask) = prefix_words(&p);
    }
    if let Some(name) = &rule.iif {
        (r.iif, r.iif_vid) = ingress_of(name).unwrap_or((PolicyRule::NO_IIF, 0));
    }
    r.dscp = rule.tos & 0xfc;
    r.ip_proto = rule.ip_proto.unwrap_or(0);
    if rule.sport.is_some() || rule.dport.is_some() {
        r.flags |= PolicyRule::PORTS;
        r.sport = rule.sport.map_or([0, 0], |(a, b)| [a, b]);
        r.dport = rule.dport.map_or([0, 0], |(a, b)| [a, b]);
    }
    // [0, 0] means "any" to the program; a rule for port 0 alone is the kernel's.
    let port_zero = r.sport == [0, 0] && rule.sport.is_some() || r.dport == [0, 0] && rule.dport.is_some();
    if port_zero {
        r.flags &= !PolicyRule::PORTS;
    }
    if rule.invert {
        r.flags |= PolicyRule::INVERT;
    }
    (r, port_zero)
}

fn prefix_words(p: &IpNet) -> ([u32; 4], [u32; 4]) {
    let mut bytes = [0u8; 16];
    match p.addr() {
        std::net::IpAddr::V4(a) => bytes[..4].copy_from_slice(&a.octets()),
        std::net::IpAddr::V6(a) => bytes = a.octets(),
    }
    let mask = mask_words(p.prefix_len());
    let words = address_words(&bytes);
    ([words[0] & mask[0], words[1] & mask[1], words[2] & mask[2], words[3] & mask[3]], mask)
}

/// Inserts `rule` where the kernel does: after every rule of its priority or lower.
pub fn insert(rules: &mut Vec<KernelRule>, rule: KernelRule) {
    let at = rules.iter().position(|r| r.priority > rule.priority).unwrap_or(rules.len());
    rules.insert(at, rule);
}

/// Removes the first rule equal to `rule` (RTM_DELRULE describes it whole).
pub fn remove(rules: &mut Vec<KernelRule>, rule: &KernelRule) -> bool {
    match rules.iter().position(|r| r == rule) {
        Some(i) => {
            rules.remove(i);
            true
        }
        None => false,
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
