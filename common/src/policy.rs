//! Policy routing (`ip rule`) as the fast path evaluates it: the kernel's
//! `fib_rules_lookup` over a rule list the agent compiled from the kernel's
//! rules (the agent's `fib/rules.rs` and `rib/policy.rs`).
//!
//! The agent compiles what it cannot carry into [`RuleAction::Kernel`]: a
//! selector the program cannot evaluate (fwmark, uidrange, l3mdev, ...), a
//! lookup in a table it does not hold. Such a rule sends the frames it may
//! match to the kernel; every other frame stays on the fast path. The local
//! table's rule (`0: from all lookup local`) is not in the list: the main
//! view's entries from the local table answer first (the agent requires
//! that rule to stand first and unconditional, or compiles a list that sends
//! everything to the kernel).

/// Rules one list holds: the program walks at most this many.
pub const MAX_RULES: usize = 16;

/// What a matching rule does (`FR_ACT_*`, after the agent's compile).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleAction {
    /// Look up the main view (table main, with the local table's entries
    /// answered before any rule); no route: on to the next rule.
    LookupMain = 0,
    /// Jump forward to the rule at `target` (`FR_ACT_GOTO`).
    Goto = 1,
    /// Nothing (`FR_ACT_NOP`, a lookup in a table known to be empty, an
    /// unresolved goto).
    Nop = 2,
    /// Drop (`FR_ACT_BLACKHOLE`: -EINVAL, no ICMP).
    Blackhole = 3,
    /// As no route (`FR_ACT_UNREACHABLE`: -ENETUNREACH, net unreachable).
    Unreachable = 4,
    /// `FR_ACT_PROHIBIT`: -EACCES, administratively prohibited.
    Prohibit = 5,
    /// The kernel's: a table the fast path does not hold, or a selector it
    /// cannot evaluate.
    Kernel = 6,
    /// Look up table `table` (`TABLE_ROUTES_V4`/`_V6`); no route: on to
    /// the next rule.
    LookupTable = 7,
}

/// One compiled rule: its selectors (zero: any) and its action. Addresses
/// are the header's bytes as native words, masked by the prefix length,
/// so a match is three operations a word whatever the byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyRule {
    pub src: [u32; 4],
    pub src_mask: [u32; 4],
    pub dst: [u32; 4],
    pub dst_mask: [u32; 4],
    /// `iif`: the ingress interface (a VLAN sub-interface as parent and
    /// VID), or [`PolicyRule::ANY_IIF`].
    pub iif: u32,
    pub iif_vid: u32,
    /// `LookupTable`'s table id (the kernel's).
    pub table: u32,
    pub sport: [u16; 2],
    pub dport: [u16; 2],
    /// `Goto`'s target: the index of the rule at its priority (the kernel
    /// jumps only to a rule of exactly that priority; none: a `Nop`).
    pub target: u8,
    /// `suppress_prefixlength`: a main-view route of this length or shorter
    /// is ignored (on to the next rule); 255: none.
    pub suppress_prefixlen: u8,
    /// The DSCP (the TOS byte's upper six bits, as the byte), 0: any.
    pub dscp: u8,
    /// `ipproto`, 0: any.
    pub ip_proto: u8,
    /// A [`RuleAction`].
    pub action: u8,
    /// [`PolicyRule::INVERT`], [`PolicyRule::PORTS`].
    pub flags: u8,
    pub _pad: u16,
}

const _: () = assert!(core::mem::size_of::<PolicyRule>() == 92);

impl PolicyRule {
    /// `not`: the action applies when the selectors do not match.
    pub const INVERT: u8 = 0x1;
    /// The rule has a `sport` or `dport` range.
    pub const PORTS: u8 = 0x2;
    pub const ANY_IIF: u32 = 0;
    /// No interface is called by the rule's `iif` name (yet): it matches none.
    pub const NO_IIF: u32 = u32::MAX;
    pub const NO_SUPPRESS: u8 = 255;

    pub const fn action(&self) -> RuleAction {
        match self.action {
            0 => RuleAction::LookupMain,
            1 => RuleAction::Goto,
            2 => RuleAction::Nop,
            3 => RuleAction::Blackhole,
            4 => RuleAction::Unreachable,
            5 => RuleAction::Prohibit,
            7 => RuleAction::LookupTable,
            _ => RuleAction::Kernel,
        }
    }

    /// `fib_rule_match` and the family's `match` for `flow`, or (`reverse`)
    /// for the flow `fib_validate_source` looks up: the reverse one, from the
    /// loopback device (`flowi4_iif = LOOPBACK_IFINDEX`). `Some(matched)`,
    /// or `None` when the frame's protocol or ports decide and are not known.
    #[inline(always)]
    pub fn matches(&self, flow: &FlowKeys, reverse: bool) -> Option<bool> {
        let (iif, vid, src, dst) = match reverse {
            false => (flow.iif, flow.iif_vid, &flow.src, &flow.dst),
            true => (LOOPBACK_IFINDEX, 0, &flow.dst, &flow.src),
        };
        let mut hit = (self.iif == PolicyRule::ANY_IIF || (self.iif == iif && self.iif_vid == vid))
            && prefix_matches(&self.src, &self.src_mask, src)
            && prefix_matches(&self.dst, &self.dst_mask, dst)
            && (self.dscp == 0 || self.dscp == flow.dscp);
        if hit && self.ip_proto != 0 {
            if !flow.l4_known {
                return None;
            }
            hit = self.ip_proto == flow.ip_proto;
        }
        if hit && self.flags & PolicyRule::PORTS != 0 {
            if !flow.ports_known {
                return None;
            }
            let (sport, dport) = if reverse { (flow.dport, flow.sport) } else { (flow.sport, flow.dport) };
            hit = in_range(self.sport, sport) && in_range(self.dport, dport);
        }
        Some(hit != (self.flags & PolicyRule::INVERT != 0))
    }
}

/// A port range selector, `[0, 0]` when absent (then any port).
#[inline(always)]
fn in_range(range: [u16; 2], port: u16) -> bool {
    range == [0, 0] || (range[0] <= port && port <= range[1])
}

#[inline(always)]
fn prefix_matches(addr: &[u32; 4], mask: &[u32; 4], key: &[u32; 4]) -> bool {
    (key[0] ^ addr[0]) & mask[0] == 0
        && (key[1] ^ addr[1]) & mask[1] == 0
        && (key[2] ^ addr[2]) & mask[2] == 0
        && (key[3] ^ addr[3]) & mask[3] == 0
}

/// An address's bytes (IPv4 in the first four) as the words rules compare.
#[inline(always)]
pub const fn address_words(bytes: &[u8; 16]) -> [u32; 4] {
    let b = bytes;
    [
        u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
        u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
        u32::from_ne_bytes([b[12], b[13], b[14], b[15]]),
    ]
}

/// The words of a `len`-bit prefix mask.
pub const fn mask_words(len: u8) -> [u32; 4] {
    let mut bytes = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        let bits = len as i32 - 8 * i as i32;
        bytes[i] = if bits >= 8 {
            0xff
        } else if bits <= 0 {
            0
        } else {
            0xffu8 << (8 - bits)
        };
        i += 1;
    }
    address_words(&bytes)
}

/// What the rules are asked about a frame (the kernel's `flowi`). Plain
/// data: the program keeps it in a per-CPU scratch map, not on its stack.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowKeys {
    pub iif: u32,
    pub iif_vid: u32,
    pub src: [u32; 4],
    pub dst: [u32; 4],
    /// When `ports_known`.
    pub sport: u16,
    pub dport: u16,
    pub dscp: u8,
    /// The transport protocol, when `l4_known`.
    pub ip_proto: u8,
    /// `ip_proto` is the one the kernel's flow dissector finds (false for an
    /// IPv6 packet behind extension headers: a rule with `ipproto` or ports
    /// sends it to the kernel).
    pub l4_known: bool,
    /// The frame has ports where the kernel's flow dissector finds them
    /// (TCP, UDP, SCTP, not a fragment); if not, a rule with ports sends it
    /// to the kernel.
    pub ports_known: bool,
}

const _: () = assert!(core::mem::size_of::<FlowKeys>() == 48);

/// The loopback device's ifindex in every namespace.
pub const LOOPBACK_IFINDEX: u32 = 1;

/// A lookup's route for the flow's destination (the main view's, or a
/// table's), as the rules see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MainHit {
    /// Its prefix length (`suppress_prefixlength` compares it).
    pub prefix_len: u8,
    /// A blackhole, unreachable or prohibit route: IPv4's lookup fails
    /// with its error, which no `suppress_prefixlength` ignores.
    pub error: bool,
}

/// Where the rules send a frame.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// The main view's route.
    Main = 0,
    /// No rule gave a route (-ESRCH, -ENETUNREACH), or an unreachable rule.
    NoRoute = 1,
    Blackhole = 2,
    Prohibit = 3,
    /// The kernel's to route.
    Kernel = 4,
    /// The route a rule's table lookup found (the program keeps it for the
    /// caller: `policy::chosen_route`).
    Table = 5,
}

impl Choice {
    pub const fn from_u32(v: u32) -> Choice {
        match v {
            0 => Choice::Main,
            1 => Choice::NoRoute,
            2 => Choice::Blackhole,
            3 => Choice::Prohibit,
            5 => Choice::Table,
            _ => Choice::Kernel,
        }
    }
}

impl MainHit {
    /// As one word (a BPF function's argument): 0 none, else 0x100 | the
    /// length, 0x200 for an error route.
    pub const fn pack(hit: Option<MainHit>) -> u32 {
        match hit {
            None => 0,
            Some(h) => 0x100 | h.prefix_len as u32 | if h.error { 0x200 } else { 0 },
        }
    }

    pub const fn unpack(word: u32) -> Option<MainHit> {
        if word & 0x100 == 0 {
            return None;
        }
        Some(MainHit { prefix_len: word as u8, error: word & 0x200 != 0 })
    }
}

/// A family's compiled rules, in priority order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleList {
    pub count: u32,
    /// [`RuleList::IPV6`].
    pub flags: u32,
    pub rules: [PolicyRule; MAX_RULES],
}

const _: () = assert!(core::mem::size_of::<RuleList>() == 8 + 92 * MAX_RULES);

impl Default for RuleList {
    fn default() -> Self {
        RuleList { count: 0, flags: 0, rules: [PolicyRule::default(); MAX_RULES] }
    }
}

impl RuleList {
    /// IPv6's semantics: `suppress_prefixlength` applies to any route found.
    pub const IPV6: u32 = 0x1;
    /// A rule reads ports: the program finds them (else it need not).
    pub const PORTS: u32 = 0x2;

    /// `fib_rules_lookup`: the rules in order (see [`RuleList::step`]),
    /// tables other than main having no route.
    pub fn lookup(&self, flow: &FlowKeys, main: Option<MainHit>) -> Choice {
        self.lookup_flow(flow, false, main, &|_| None)
    }

    /// The lookup `fib_validate_source` makes for `flow`'s source (see
    /// [`PolicyRule::matches`]); `main`: the main view's route to the source.
    pub fn lookup_reverse(&self, flow: &FlowKeys, main: Option<MainHit>) -> Choice {
        self.lookup_flow(flow, true, main, &|_| None)
    }

    /// [`RuleList::lookup`] or (`reverse`) [`RuleList::lookup_reverse`]:
    /// [`RuleList::step`] until one decides; `table`: what a table's lookup finds.
    pub fn lookup_flow(&self, flow: &FlowKeys, reverse: bool, main: Option<MainHit>, table: &dyn Fn(u32) -> Option<MainHit>) -> Choice {
        let mut next = 0;
        for _ in 0..MAX_RULES {
            if let Some(choice) = self.step(flow, reverse, main, &mut next, table) {
                return choice;
            }
        }
        Choice::NoRoute
    }

    /// One step of `fib_rules_lookup`: rule `next` (then `next` moves on).
    /// `Some` once the walk is decided. A lookup that finds no route (or one
    /// suppressed) goes on to the next rule; a goto jumps forward (the
    /// kernel refuses a backward one), so [`MAX_RULES`] steps always decide.
    /// One step, not a loop: the program runs it under `bpf_loop`, which
    /// the verifier checks once rather than once per iteration and path.
    /// `table`: the route a table's lookup finds (the program keeps it).
    #[inline(always)]
    pub fn step(
        &self,
        flow: &FlowKeys,
        reverse: bool,
        main: Option<MainHit>,
        next: &mut u32,
        table: impl FnOnce(u32) -> Option<MainHit>,
    ) -> Option<Choice> {
        let count = if (self.count as usize) < MAX_RULES { self.count } else { MAX_RULES as u32 };
        if *next >= count {
            return Some(Choice::NoRoute);
        }
        let rule = &self.rules[*next as usize & (MAX_RULES - 1)];
        *next += 1;
        match rule.matches(flow, reverse) {
            None => return Some(Choice::Kernel),
            Some(false) => return None,
            Some(true) => {}
        }
        match rule.action() {
            RuleAction::LookupMain => self.found(rule, main?, Choice::Main),
            RuleAction::LookupTable => self.found(rule, table(rule.table)?, Choice::Table),
            RuleAction::Goto => {
                if rule.target as u32 >= *next {
                    *next = rule.target as u32;
                }
                None
            }
            RuleAction::Nop => None,
            RuleAction::Blackhole => Some(Choice::Blackhole),
            RuleAction::Unreachable => Some(Choice::NoRoute),
            RuleAction::Prohibit => Some(Choice::Prohibit),
            RuleAction::Kernel => Some(Choice::Kernel),
        }
    }

    /// A lookup found `hit`: `choice`, unless `suppress_prefixlength`
    /// ignores it (`fib4_rule_suppress`: never an IPv4 error route, which
    /// `fib_table_lookup` returns as its error; IPv6 any).
    #[inline(always)]
    fn found(&self, rule: &PolicyRule, hit: MainHit, choice: Choice) -> Option<Choice> {
        let suppressible = self.flags & RuleList::IPV6 != 0 || !hit.error;
        if suppressible && rule.suppress_prefixlen != PolicyRule::NO_SUPPRESS && hit.prefix_len <= rule.suppress_prefixlen {
            return None;
        }
        Some(choice)
    }
}

/// Which bank of the `POLICY` map a family reads: 0 when its rules are the
/// kernel's defaults (no rule to evaluate: the main view decides, as before
/// any rule existed), else 1 + the bank. The agent writes the bank not in
/// use, then switches this word.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicySelect {
    pub bank: u32,
}

/// `POLICY`'s element for a family and bank.
pub const fn policy_slot(ipv6: bool, bank: u32) -> u32 {
    (ipv6 as u32) * 2 + (bank & 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: [u8; 4]) -> [u32; 4] {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&a);
        address_words(&b)
    }

    fn rule(action: RuleAction) -> PolicyRule {
        PolicyRule { action: action as u8, suppress_prefixlen: PolicyRule::NO_SUPPRESS, ..Default::default() }
    }

    fn from(a: [u8; 4], len: u8, action: RuleAction) -> PolicyRule {
        let mask = mask_words(len);
        let w = v4(a);
        PolicyRule { src: [w[0] & mask[0], 0, 0, 0], src_mask: mask, ..rule(action) }
    }

    fn list(rules: &[PolicyRule]) -> RuleList {
        let mut l = RuleList { count: rules.len() as u32, ..Default::default() };
        l.rules[..rules.len()].copy_from_slice(rules);
        l
    }

    fn flow(src: [u8; 4]) -> FlowKeys {
        FlowKeys { src: v4(src), dst: v4([192, 0, 2, 1]), l4_known: true, ..Default::default() }
    }

    const HIT: Option<MainHit> = Some(MainHit { prefix_len: 24, error: false });

    #[test]
    fn masks_cover_exactly_the_prefix() {
        assert_eq!(mask_words(0), [0; 4]);
        assert_eq!(mask_words(128), [u32::MAX; 4]);
        assert_eq!(mask_words(12)[0], u32::from_ne_bytes([0xff, 0xf0, 0, 0]));
        assert_eq!(mask_words(33)[1], u32::from_ne_bytes([0x80, 0, 0, 0]));
    }

    #[test]
    fn the_first_matching_rule_decides_and_a_miss_goes_on() {
        let l = list(&[from([10, 0, 0, 0], 8, RuleAction::Prohibit), rule(RuleAction::LookupMain)]);
        assert_eq!(l.lookup(&flow([10, 1, 2, 3]), HIT), Choice::Prohibit);
        assert_eq!(l.lookup(&flow([11, 1, 2, 3]), HIT), Choice::Main);
        assert_eq!(l.lookup(&flow([11, 1, 2, 3]), None), Choice::NoRoute, "main has none: -ESRCH");
    }

    #[test]
    fn not_inverts_and_goto_jumps_forward_only() {
        let mut inv = from([10, 0, 0, 0], 8, RuleAction::Blackhole);
        inv.flags |= PolicyRule::INVERT;
        let l = list(&[inv, rule(RuleAction::LookupMain)]);
        assert_eq!(l.lookup(&flow([11, 0, 0, 1]), HIT), Choice::Blackhole);
        assert_eq!(l.lookup(&flow([10, 0, 0, 1]), HIT), Choice::Main);
        let mut goto = rule(RuleAction::Goto);
        goto.target = 2;
        let mut back = rule(RuleAction::Goto);
        back.target = 0;
        let l = list(&[goto, rule(RuleAction::Blackhole), back, rule(RuleAction::Prohibit)]);
        assert_eq!(l.lookup(&flow([1, 1, 1, 1]), HIT), Choice::Prohibit, "skips 1; 2's backward jump is ignored");
    }

    #[test]
    fn suppress_prefixlength_ignores_short_routes_but_not_ipv4_errors() {
        let mut suppress = rule(RuleAction::LookupMain);
        suppress.suppress_prefixlen = 0;
        let l = list(&[suppress, rule(RuleAction::Prohibit)]);
        let default = Some(MainHit { prefix_len: 0, error: false });
        assert_eq!(l.lookup(&flow([1, 1, 1, 1]), default), Choice::Prohibit, "the default route is suppressed");
        assert_eq!(l.lookup(&flow([1, 1, 1, 1]), HIT), Choice::Main);
        let error = Some(MainHit { prefix_len: 0, error: true });
        assert_eq!(l.lookup(&flow([1, 1, 1, 1]), error), Choice::Main, "IPv4: an error route is final");
        let v6 = RuleList { flags: RuleList::IPV6, ..l };
        assert_eq!(v6.lookup(&flow([1, 1, 1, 1]), error), Choice::Prohibit, "IPv6: any route is suppressed");
    }

    #[test]
    fn ports_unknown_send_the_frame_to_the_kernel_only_when_a_rule_reads_them() {
        let mut ssh = rule(RuleAction::Blackhole);
        ssh.flags = PolicyRule::PORTS;
        ssh.dport = [22, 22];
        let l = list(&[ssh, rule(RuleAction::LookupMain)]);
        let mut f = flow([1, 1, 1, 1]);
        assert_eq!(l.lookup(&f, HIT), Choice::Kernel);
        (f.sport, f.dport, f.ports_known) = (40000, 22, true);
        assert_eq!(l.lookup(&f, HIT), Choice::Blackhole);
        assert_eq!(l.lookup_reverse(&f, HIT), Choice::Main, "the reverse flow's dport is 40000");
        (f.sport, f.dport) = (22, 40000);
        assert_eq!(l.lookup_reverse(&f, HIT), Choice::Blackhole);
        f.dport = 80;
        assert_eq!(l.lookup(&f, HIT), Choice::Main);
        let l = list(&[rule(RuleAction::LookupMain), ssh]);
        assert_eq!(l.lookup(&flow([1, 1, 1, 1]), HIT), Choice::Main, "decided before the port rule");
    }

    #[test]
    fn iif_matches_the_interface_and_vlan() {
        let mut r = rule(RuleAction::Blackhole);
        (r.iif, r.iif_vid) = (3, 100);
        let l = list(&[r, rule(RuleAction::LookupMain)]);
        let mut f = flow([1, 1, 1, 1]);
        (f.iif, f.iif_vid) = (3, 100);
        assert_eq!(l.lookup(&f, HIT), Choice::Blackhole);
        assert_eq!(l.lookup_reverse(&f, HIT), Choice::Main, "the reverse flow comes from lo");
        f.iif_vid = 0;
        assert_eq!(l.lookup(&f, HIT), Choice::Main);
    }

    #[test]
    fn a_table_lookup_answers_or_goes_on_and_is_suppressed_like_main() {
        let mut t100 = from([10, 0, 0, 0], 8, RuleAction::LookupTable);
        (t100.table, t100.suppress_prefixlen) = (100, 0);
        let l = list(&[t100, rule(RuleAction::LookupMain)]);
        let tables = |t: u32| (t == 100).then_some(MainHit { prefix_len: 16, error: false });
        assert_eq!(l.lookup_flow(&flow([10, 1, 1, 1]), false, HIT, &tables), Choice::Table);
        assert_eq!(l.lookup_flow(&flow([11, 1, 1, 1]), false, HIT, &tables), Choice::Main, "not from 10/8");
        assert_eq!(l.lookup_flow(&flow([10, 1, 1, 1]), false, HIT, &|_| None), Choice::Main, "table 100 has no route: on");
        let default = |_| Some(MainHit { prefix_len: 0, error: false });
        assert_eq!(l.lookup_flow(&flow([10, 1, 1, 1]), false, None, &default), Choice::NoRoute, "its default suppressed, main has none");
        let error = |_| Some(MainHit { prefix_len: 0, error: true });
        assert_eq!(l.lookup_flow(&flow([10, 1, 1, 1]), false, HIT, &error), Choice::Table, "an IPv4 error route is final");
    }

    #[test]
    fn the_reverse_flow_swaps_source_and_destination() {
        let l = list(&[from([192, 0, 2, 0], 24, RuleAction::Prohibit), rule(RuleAction::LookupMain)]);
        let f = flow([10, 1, 1, 1]);
        assert_eq!(l.lookup(&f, HIT), Choice::Main);
        assert_eq!(l.lookup_reverse(&f, HIT), Choice::Prohibit, "from the destination, 192.0.2.1");
    }
}
