//! Route metrics (the kernel's RTAX set) and the tagged reference to them.

/// Number of RTAX metrics (`RTAX_MAX` in `include/uapi/linux/rtnetlink.h`).
pub const RTAX_MAX: usize = 17;

/// One RTAX metric. The discriminant is the kernel's `RTAX_*` number; the
/// value lives at index `rtax - 1` of [`RouteMetrics::as_array`].
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rtax {
    Lock = 1,
    Mtu = 2,
    Window = 3,
    Rtt = 4,
    Rttvar = 5,
    Ssthresh = 6,
    Cwnd = 7,
    Advmss = 8,
    Reordering = 9,
    Hoplimit = 10,
    Initcwnd = 11,
    Features = 12,
    RtoMin = 13,
    Initrwnd = 14,
    Quickack = 15,
    CcAlgo = 16,
    FastopenNoCookie = 17,
}

impl Rtax {
    pub const ALL: [Rtax; RTAX_MAX] = [
        Rtax::Lock,
        Rtax::Mtu,
        Rtax::Window,
        Rtax::Rtt,
        Rtax::Rttvar,
        Rtax::Ssthresh,
        Rtax::Cwnd,
        Rtax::Advmss,
        Rtax::Reordering,
        Rtax::Hoplimit,
        Rtax::Initcwnd,
        Rtax::Features,
        Rtax::RtoMin,
        Rtax::Initrwnd,
        Rtax::Quickack,
        Rtax::CcAlgo,
        Rtax::FastopenNoCookie,
    ];

    /// The kernel's number for this metric (`RTAX_MTU` = 2, ...).
    pub const fn number(self) -> u16 {
        self as u16
    }

    /// Where this metric sits in every `[_; RTAX_MAX]` array: `RTAX_x - 1`
    /// (the kernel's `dst_metric_raw` indexes `metrics[RTAX_x - 1]` too).
    /// The one place that turns a metric into an index.
    pub const fn index(self) -> usize {
        self as usize - 1
    }

    pub fn from_number(n: u16) -> Option<Rtax> {
        Rtax::ALL.get((n as usize).checked_sub(1)?).copied()
    }

    /// The name `ip route` uses for the metric.
    pub const fn name(self) -> &'static str {
        match self {
            Rtax::Lock => "lock",
            Rtax::Mtu => "mtu",
            Rtax::Window => "window",
            Rtax::Rtt => "rtt",
            Rtax::Rttvar => "rttvar",
            Rtax::Ssthresh => "ssthresh",
            Rtax::Cwnd => "cwnd",
            Rtax::Advmss => "advmss",
            Rtax::Reordering => "reordering",
            Rtax::Hoplimit => "hoplimit",
            Rtax::Initcwnd => "initcwnd",
            Rtax::Features => "features",
            Rtax::RtoMin => "rto_min",
            Rtax::Initrwnd => "initrwnd",
            Rtax::Quickack => "quickack",
            Rtax::CcAlgo => "cc_algo",
            Rtax::FastopenNoCookie => "fastopen_no_cookie",
        }
    }

    pub fn from_name(name: &str) -> Option<Rtax> {
        Rtax::ALL.iter().copied().find(|m| m.name() == name)
    }

    /// The largest value the kernel accepts for this metric, where it limits one
    /// (`ip_metrics_convert`: MTU at most 65535 - 15, ADVMSS at most 65535 - 40,
    /// HOPLIMIT at most 255).
    pub const fn max_value(self) -> u32 {
        match self {
            Rtax::Mtu => 65520,
            Rtax::Advmss => 65495,
            Rtax::Hoplimit => 255,
            Rtax::Lock => (1u32 << (RTAX_MAX as u32 + 1)) - 2,
            _ => u32::MAX,
        }
    }

    /// This metric's bit in the `RTAX_LOCK` mask (`1 << RTAX_x`, as in the kernel).
    pub const fn lock_bit(self) -> u32 {
        1u32 << (self as u16)
    }
}

/// A route's metrics, `u32 vals[RTAX_MAX]` in the kernel, with one named field
/// per metric so that `bpftool` prints names. Zero means "not set".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RouteMetrics {
    /// Bit mask (`1 << RTAX_x`) of metrics that learning must not change.
    pub lock: u32,
    pub mtu: u32,
    pub window: u32,
    pub rtt: u32,
    pub rttvar: u32,
    pub ssthresh: u32,
    pub cwnd: u32,
    pub advmss: u32,
    pub reordering: u32,
    pub hoplimit: u32,
    pub initcwnd: u32,
    pub features: u32,
    pub rto_min: u32,
    pub initrwnd: u32,
    pub quickack: u32,
    pub cc_algo: u32,
    pub fastopen_no_cookie: u32,
}

const _: () = assert!(core::mem::size_of::<RouteMetrics>() == 4 * RTAX_MAX);

impl RouteMetrics {
    /// The shared all-zero place-holder (the kernel's `dst_default_metrics`).
    pub const DEFAULT: RouteMetrics = RouteMetrics::from_array([0; RTAX_MAX]);

    pub const fn from_array(vals: [u32; RTAX_MAX]) -> RouteMetrics {
        // SAFETY: repr(C) struct of RTAX_MAX u32 fields has the layout of the array.
        unsafe { core::mem::transmute(vals) }
    }

    pub const fn as_array(&self) -> &[u32; RTAX_MAX] {
        // SAFETY: as in `from_array`.
        unsafe { &*(self as *const RouteMetrics as *const [u32; RTAX_MAX]) }
    }

    pub fn as_array_mut(&mut self) -> &mut [u32; RTAX_MAX] {
        // SAFETY: as in `from_array`.
        unsafe { &mut *(self as *mut RouteMetrics as *mut [u32; RTAX_MAX]) }
    }

    pub fn get(&self, m: Rtax) -> u32 {
        self.as_array()[m.index()]
    }

    pub fn set(&mut self, m: Rtax, value: u32) {
        self.as_array_mut()[m.index()] = value;
    }

    /// `dst_metric_locked`: learning must leave metric `m` alone.
    pub fn is_locked(&self, m: Rtax) -> bool {
        self.lock & m.lock_bit() != 0
    }

    pub fn is_default(&self) -> bool {
        *self == RouteMetrics::DEFAULT
    }
}

/// What the agent knows of a destination's private copy beyond its values:
/// which metrics are overridden, by whom, until when (`PRIVATE_META`, keyed
/// by the destination's 16 bytes, IPv4 mapped). The program never reads it;
/// a restarted agent does, to keep the copies.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrivateMeta {
    /// `1 << RTAX_x` of the overridden metrics.
    pub overridden: u32,
    /// Of those, the learned ones; the others are the operator's.
    pub learned: u32,
    /// Per metric: when the override expires, seconds since the Unix epoch; 0: never.
    pub expires: [u64; RTAX_MAX],
}

const _: () = assert!(core::mem::size_of::<PrivateMeta>() == 8 + 8 * RTAX_MAX);

impl PrivateMeta {
    pub const EMPTY: PrivateMeta = PrivateMeta { overridden: 0, learned: 0, expires: [0; RTAX_MAX] };

    /// When `m`'s override expires (seconds since the epoch), 0: never.
    pub fn expiry(&self, m: Rtax) -> u64 {
        self.expires[m.index()]
    }

    pub fn set_expiry(&mut self, m: Rtax, at_secs: u64) {
        self.expires[m.index()] = at_secs;
    }
}

/// A tagged reference to a route's metrics (the seed's `_metrics` word).
///
/// Bit 0 is the READ_ONLY tag; the other bits are the slot. Tag set: the slot
/// is in `METRICS_RO` (shared, interned). Tag clear: the slot is in
/// `METRICS_RW` (one destination's private copy).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MetricsRef {
    /// `slot << 1 | READ_ONLY?`
    pub tagged: u32,
}

impl MetricsRef {
    /// The READ_ONLY tag (the kernel's `DST_METRICS_READ_ONLY`).
    pub const READ_ONLY: u32 = 0x1;
    /// RO slot 0: the all-zero default metrics every route without metrics shares.
    pub const DEFAULT: MetricsRef = MetricsRef::read_only(0);
    /// The largest slot a reference can name.
    pub const MAX_SLOT: u32 = u32::MAX >> 1;

    pub const fn read_only(slot: u32) -> MetricsRef {
        MetricsRef { tagged: (slot << 1) | Self::READ_ONLY }
    }

    pub const fn private(slot: u32) -> MetricsRef {
        MetricsRef { tagged: slot << 1 }
    }

    pub const fn is_read_only(self) -> bool {
        self.tagged & Self::READ_ONLY != 0
    }

    pub const fn slot(self) -> u32 {
        self.tagged >> 1
    }
}

/// `ro:N` for a shared slot, `rw:N` for a private one.
impl core::fmt::Display for MetricsRef {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let pool = if self.is_read_only() { "ro" } else { "rw" };
        write!(f, "{pool}:{}", self.slot())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_a_plain_68_byte_array_in_rtax_order() {
        assert_eq!(core::mem::size_of::<RouteMetrics>(), 68);
        let mut m = RouteMetrics::DEFAULT;
        m.set(Rtax::Mtu, 1400);
        m.set(Rtax::Advmss, 1360);
        m.set(Rtax::FastopenNoCookie, 1);
        assert_eq!(m.mtu, 1400);
        assert_eq!(m.advmss, 1360);
        assert_eq!(m.fastopen_no_cookie, 1);
        assert_eq!(m.as_array()[1], 1400, "vals[RTAX_MTU - 1]");
        assert_eq!(m.as_array()[7], 1360, "vals[RTAX_ADVMSS - 1]");
        assert_eq!(RouteMetrics::from_array(*m.as_array()), m);
    }

    #[test]
    fn rtax_numbers_and_names_round_trip() {
        for (i, m) in Rtax::ALL.iter().enumerate() {
            assert_eq!(m.number() as usize, i + 1);
            assert_eq!(Rtax::from_number(m.number()), Some(*m));
            assert_eq!(Rtax::from_name(m.name()), Some(*m));
        }
        assert_eq!(Rtax::from_number(0), None);
        assert_eq!(Rtax::from_number(18), None);
        assert_eq!(Rtax::from_name("bogus"), None);
        assert_eq!(Rtax::Mtu.number(), 2);
        assert_eq!(Rtax::Hoplimit.number(), 10);
    }

    #[test]
    fn lock_mask_uses_kernel_bit_positions() {
        let mut m = RouteMetrics::DEFAULT;
        m.lock = Rtax::Mtu.lock_bit();
        assert_eq!(m.lock, 0b100, "ip route ... mtu lock sets 1 << RTAX_MTU");
        assert!(m.is_locked(Rtax::Mtu));
        assert!(!m.is_locked(Rtax::Advmss));
    }

    #[test]
    fn kernel_value_limits() {
        assert_eq!(Rtax::Mtu.max_value(), 65520);
        assert_eq!(Rtax::Advmss.max_value(), 65495);
        assert_eq!(Rtax::Hoplimit.max_value(), 255);
    }

    #[test]
    fn metrics_ref_tag_encoding() {
        assert_eq!(MetricsRef::DEFAULT, MetricsRef { tagged: 1 });
        assert!(MetricsRef::DEFAULT.is_read_only());
        assert_eq!(MetricsRef::DEFAULT.slot(), 0);
        let ro = MetricsRef::read_only(7);
        assert_eq!(ro.tagged, 15);
        assert!(ro.is_read_only());
        assert_eq!(ro.slot(), 7);
        let rw = MetricsRef::private(7);
        assert_eq!(rw.tagged, 14);
        assert!(!rw.is_read_only());
        assert_eq!(rw.slot(), 7);
        assert_eq!(std::format!("{ro} {rw} {}", MetricsRef::DEFAULT), "ro:7 rw:7 ro:0");
        let top = MetricsRef::private(MetricsRef::MAX_SLOT);
        assert_eq!(top.slot(), MetricsRef::MAX_SLOT);
        assert!(!top.is_read_only());
    }
}
