//! IPv4 options of a packet in transit, processed as the kernel's receive
//! and forward paths do: `ip_options_compile` (with a route: validation,
//! record route and timestamps written, a bad option answered with a
//! Parameter Problem pointing at it), `ip_rcv_options` (source routes
//! dropped unless `accept_source_route` is set for `all` and the ingress
//! device; accepted: `ip_options_rcv_srr` for a destination that is not
//! ours), and `ip_forward_options` (the record-route slot rewritten with the
//! egress address, the header checksum recomputed). A router alert is for
//! `ip_ra_chain` sockets, of which the agent has none: forwarded.

use common::checksum;
use std::net::Ipv4Addr;

const IPOPT_END: u8 = 0;
const IPOPT_NOOP: u8 = 1;
const IPOPT_RR: u8 = 7;
const IPOPT_TIMESTAMP: u8 = 68;
const IPOPT_LSRR: u8 = 131;
const IPOPT_SSRR: u8 = 137;
const IPOPT_RA: u8 = 148;
const IPOPT_TS_TSONLY: u8 = 0;
const IPOPT_TS_TSANDADDR: u8 = 1;
const IPOPT_TS_PRESPEC: u8 = 3;

/// What the router knows of the packet's way through it.
pub struct Context<'a> {
    /// `spec_dst`: the router's address toward the source (the ingress
    /// device's), which `ip_options_compile` records.
    pub ingress: Ipv4Addr,
    /// `ip_rt_get_source`: the egress device's address, which
    /// `ip_forward_options` records in the record route.
    pub egress: Ipv4Addr,
    /// `IN_DEV_SOURCE_ROUTE`: `accept_source_route` of `all` and of the
    /// ingress device.
    pub accept_source_route: bool,
    /// Milliseconds since midnight UTC, for timestamps.
    pub now_ms: u32,
    /// Is the address one of the router's (`inet_addr_type` says RTN_LOCAL)?
    pub is_local: &'a dyn Fn(Ipv4Addr) -> bool,
}

/// What becomes of the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Forward it (its options updated).
    Forward,
    /// ICMP Parameter Problem, pointing at byte `pointer` of the header.
    ParameterProblem { pointer: u8 },
    /// A source route the settings refuse: dropped without an error.
    SourceRouteRefused,
}

/// What `ip_options_compile` notes for the forward path.
#[derive(Default)]
struct Compiled {
    /// Offset of the record-route option, when an address is due.
    rr_needaddr: Option<usize>,
    /// A source route, and whether it is strict.
    srr: Option<bool>,
}

/// Processes the options of the IPv4 packet `ip` (its header checksum
/// checked) in place, as a router forwarding it does.
pub fn forward_options(ip: &mut [u8], ctx: &Context) -> Outcome {
    let ihl = ((ip[0] & 0x0f) as usize * 4).min(ip.len());
    let compiled = match compile(ip, ihl, ctx) {
        Ok(c) => c,
        Err(pointer) => return Outcome::ParameterProblem { pointer: pointer as u8 },
    };
    match compiled.srr {
        Some(_) if !ctx.accept_source_route => return Outcome::SourceRouteRefused,
        // `ip_options_rcv_srr`, the destination not ours: a strict route
        // cannot be followed; a loose one is forwarded as it is.
        Some(true) => return Outcome::ParameterProblem { pointer: 16 },
        _ => {}
    }
    if let Some(rr) = compiled.rr_needaddr {
        let slot = rr + ip[rr + 2] as usize - 5;
        ip[slot..slot + 4].copy_from_slice(&ctx.egress.octets());
    }
    ip[10..12].copy_from_slice(&[0, 0]);
    let c = checksum::checksum(&ip[..ihl]).to_be_bytes();
    ip[10..12].copy_from_slice(&c);
    Outcome::Forward
}

/// `ip_options_compile` with a route: `Err` is the offset of the offending
/// byte. It writes as it goes, as the kernel does.
fn compile(ip: &mut [u8], ihl: usize, ctx: &Context) -> Result<Compiled, usize> {
    let mut c = Compiled::default();
    let (mut rr_seen, mut ts_seen) = (false, false);
    let mut o = 20;
    while o < ihl {
        match ip[o] {
            IPOPT_END => {
                ip[o + 1..ihl].fill(IPOPT_END);
                break;
            }
            IPOPT_NOOP => {
                o += 1;
                continue;
            }
            _ => {}
        }
        let left = ihl - o;
        let optlen = if left < 2 { 0 } else { ip[o + 1] as usize };
        if optlen < 2 || optlen > left {
            return Err(o);
        }
        match ip[o] {
            kind @ (IPOPT_SSRR | IPOPT_LSRR) => {
                if optlen < 3 {
                    return Err(o + 1);
                }
                if ip[o + 2] < 4 {
                    return Err(o + 2);
                }
                if c.srr.is_some() {
                    return Err(o);
                }
                c.srr = Some(kind == IPOPT_SSRR);
            }
            IPOPT_RR => {
                if rr_seen {
                    return Err(o);
                }
                if optlen < 3 {
                    return Err(o + 1);
                }
                let ptr = ip[o + 2] as usize;
                if ptr < 4 {
                    return Err(o + 2);
                }
                if ptr <= optlen {
                    if ptr + 3 > optlen {
                        return Err(o + 2);
                    }
                    ip[o + ptr - 1..o + ptr + 3].copy_from_slice(&ctx.ingress.octets());
                    ip[o + 2] += 4;
                    c.rr_needaddr = Some(o);
                }
                rr_seen = true;
            }
            IPOPT_TIMESTAMP => {
                if ts_seen {
                    return Err(o);
                }
                timestamp(ip, o, optlen, ctx)?;
                ts_seen = true;
            }
            IPOPT_RA if optlen < 4 => return Err(o + 1),
            // Router alert, security, stream id, unknown: accepted as they are.
            _ => {}
        }
        o += optlen;
    }
    Ok(c)
}

/// The timestamp option at `o`: a time (and an address) in the next free
/// slot, or the overflow count one higher when none is free.
fn timestamp(ip: &mut [u8], o: usize, optlen: usize, ctx: &Context) -> Result<(), usize> {
    if optlen < 4 {
        return Err(o + 1);
    }
    let ptr = ip[o + 2] as usize;
    if ptr < 5 {
        return Err(o + 2);
    }
    if ptr > optlen {
        let overflow = ip[o + 3] >> 4;
        if overflow == 15 {
            return Err(o + 3);
        }
        ip[o + 3] = (ip[o + 3] & 0x0f) | ((overflow + 1) << 4);
        return Ok(());
    }
    if ptr + 3 > optlen {
        return Err(o + 2);
    }
    let slot = o + ptr - 1;
    let time_at = match ip[o + 3] & 0x0f {
        IPOPT_TS_TSONLY => {
            ip[o + 2] += 4;
            slot
        }
        flag @ (IPOPT_TS_TSANDADDR | IPOPT_TS_PRESPEC) => {
            if ptr + 7 > optlen {
                return Err(o + 2);
            }
            if flag == IPOPT_TS_TSANDADDR {
                ip[slot..slot + 4].copy_from_slice(&ctx.ingress.octets());
            } else {
                let named = Ipv4Addr::new(ip[slot], ip[slot + 1], ip[slot + 2], ip[slot + 3]);
                // `inet_addr_type` RTN_UNICAST: someone else's turn.
                let broadcast = named.is_unspecified() || named.is_broadcast() || named.is_multicast();
                if !(ctx.is_local)(named) && !broadcast {
                    return Ok(());
                }
            }
            ip[o + 2] += 8;
            slot + 4
        }
        _ => return Ok(()),
    };
    ip[time_at..time_at + 4].copy_from_slice(&ctx.now_ms.to_be_bytes());
    Ok(())
}

/// `IN_DEV_SOURCE_ROUTE` for the ingress device `ifname`: its
/// `accept_source_route` and `all`'s, both set (the kernel's default: `all`
/// 0, so source routes are dropped).
pub fn accept_source_route(ifname: Option<&str>) -> bool {
    let read = |dev: &str| {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{dev}/accept_source_route"))
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .is_some_and(|v| v > 0)
    };
    ifname.is_some_and(|name| read("all") && read(name))
}

/// Milliseconds since midnight UTC (RFC 791's timestamp).
pub fn ms_since_midnight() -> u32 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    ((now.as_secs() % 86_400) * 1000 + u64::from(now.subsec_millis())) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    const IN: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
    const OUT: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);

    fn ctx(accept: bool) -> Context<'static> {
        Context { ingress: IN, egress: OUT, accept_source_route: accept, now_ms: 0x0102_0304, is_local: &|a| a == IN || a == OUT }
    }

    /// A 20-byte header plus `opts` (padded to 4 bytes with EOL) and 8 payload bytes.
    fn packet(opts: &[u8]) -> Vec<u8> {
        let mut o = opts.to_vec();
        while !o.len().is_multiple_of(4) {
            o.push(0);
        }
        let ihl = 20 + o.len();
        let mut ip = vec![0x40 | (ihl / 4) as u8, 0, 0, 0, 0, 1, 0, 0, 64, 17, 0, 0, 10, 1, 0, 2, 10, 2, 0, 2];
        ip.extend_from_slice(&o);
        ip.extend_from_slice(&[0xaa; 8]);
        let len = ip.len() as u16;
        ip[2..4].copy_from_slice(&len.to_be_bytes());
        let c = checksum::checksum(&ip[..ihl]).to_be_bytes();
        ip[10..12].copy_from_slice(&c);
        ip
    }

    fn run(opts: &[u8], accept: bool) -> (Outcome, Vec<u8>) {
        let mut ip = packet(opts);
        let out = forward_options(&mut ip, &ctx(accept));
        (out, ip)
    }

    #[test]
    fn record_route_gets_the_egress_address_and_the_pointer_moves_on() {
        let (out, ip) = run(&[IPOPT_RR, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0, IPOPT_NOOP], false);
        assert_eq!(out, Outcome::Forward);
        assert_eq!(&ip[20..32], &[7, 11, 8, 10, 2, 0, 1, 0, 0, 0, 0, 1]);
        assert!(checksum::verifies(&ip[..32]));
        // Full: unchanged.
        let (out, ip) = run(&[IPOPT_RR, 7, 8, 9, 9, 9, 9, 0], false);
        assert_eq!((out, &ip[20..28]), (Outcome::Forward, &[7u8, 7, 8, 9, 9, 9, 9, 0][..]));
    }

    #[test]
    fn timestamps_record_the_time_and_the_ingress_address_or_count_an_overflow() {
        let (out, ip) = run(&[IPOPT_TIMESTAMP, 12, 5, IPOPT_TS_TSONLY, 0, 0, 0, 0, 0, 0, 0, 0], false);
        assert_eq!(out, Outcome::Forward);
        assert_eq!(&ip[20..32], &[68, 12, 9, 0, 1, 2, 3, 4, 0, 0, 0, 0]);
        let (_, ip) = run(&[IPOPT_TIMESTAMP, 12, 5, IPOPT_TS_TSANDADDR, 0, 0, 0, 0, 0, 0, 0, 0], false);
        assert_eq!(&ip[20..32], &[68, 12, 13, 1, 10, 1, 0, 1, 1, 2, 3, 4]);
        // Prespecified: only our own address gets a time.
        let (_, ip) = run(&[IPOPT_TIMESTAMP, 20, 5, IPOPT_TS_PRESPEC, 10, 9, 9, 9, 0, 0, 0, 0, 10, 2, 0, 1, 0, 0, 0, 0], false);
        assert_eq!(&ip[20..24], &[68, 20, 5, 3], "someone else's address: untouched");
        let (_, ip) = run(&[IPOPT_TIMESTAMP, 12, 5, IPOPT_TS_PRESPEC, 10, 2, 0, 1, 0, 0, 0, 0], false);
        assert_eq!(&ip[20..32], &[68, 12, 13, 3, 10, 2, 0, 1, 1, 2, 3, 4]);
        let (out, ip) = run(&[IPOPT_TIMESTAMP, 8, 9, 0x20, 0, 0, 0, 0], false);
        assert_eq!((out, ip[23]), (Outcome::Forward, 0x30), "overflow 2 -> 3");
        assert_eq!(run(&[IPOPT_TIMESTAMP, 8, 9, 0xf0, 0, 0, 0, 0], false).0, Outcome::ParameterProblem { pointer: 23 });
    }

    #[test]
    fn bad_options_point_where_ip_options_compile_does() {
        assert_eq!(run(&[IPOPT_RR, 1, 4, 0], false).0, Outcome::ParameterProblem { pointer: 20 }, "length < 2");
        assert_eq!(run(&[IPOPT_RR, 9, 4, 0], false).0, Outcome::ParameterProblem { pointer: 20 }, "longer than the header");
        assert_eq!(run(&[IPOPT_RR, 7, 3, 0, 0, 0, 0, 0], false).0, Outcome::ParameterProblem { pointer: 22 }, "pointer < 4");
        assert_eq!(run(&[IPOPT_RR, 7, 6, 0, 0, 0, 0, 0], false).0, Outcome::ParameterProblem { pointer: 22 }, "slot past the end");
        assert_eq!(run(&[IPOPT_RR, 3, 8, IPOPT_RR, 3, 8, 0, 0], false).0, Outcome::ParameterProblem { pointer: 23 }, "two RRs");
        assert_eq!(run(&[IPOPT_RA, 2, 0, 0], false).0, Outcome::ParameterProblem { pointer: 21 }, "short router alert");
        assert_eq!(run(&[IPOPT_TIMESTAMP, 3, 5, 0], false).0, Outcome::ParameterProblem { pointer: 21 });
        assert_eq!(run(&[IPOPT_NOOP, IPOPT_NOOP, IPOPT_NOOP, 0x44], false).0, Outcome::ParameterProblem { pointer: 23 }, "no length byte");
    }

    #[test]
    fn router_alert_nop_and_eol_are_forwarded_and_bytes_after_eol_zeroed() {
        let (out, ip) = run(&[IPOPT_RA, 4, 0, 0], false);
        assert_eq!((out, &ip[20..24]), (Outcome::Forward, &[148u8, 4, 0, 0][..]));
        let (out, ip) = run(&[IPOPT_NOOP, IPOPT_END, 7, 9], false);
        assert_eq!((out, &ip[20..24]), (Outcome::Forward, &[1u8, 0, 0, 0][..]));
        assert!(checksum::verifies(&ip[..24]));
    }

    #[test]
    fn source_routes_are_refused_unless_accepted_and_a_strict_one_cannot_be_followed() {
        let lsrr = [IPOPT_LSRR, 7, 4, 10, 3, 0, 1, 0];
        let ssrr = [IPOPT_SSRR, 7, 4, 10, 3, 0, 1, 0];
        assert_eq!(run(&lsrr, false).0, Outcome::SourceRouteRefused);
        assert_eq!(run(&ssrr, false).0, Outcome::SourceRouteRefused);
        let (out, ip) = run(&lsrr, true);
        assert_eq!((out, &ip[20..28]), (Outcome::Forward, &lsrr[..]), "a loose route toward someone else: as it is");
        assert_eq!(run(&ssrr, true).0, Outcome::ParameterProblem { pointer: 16 });
        assert_eq!(
            run(&[IPOPT_LSRR, 7, 3, 0, 0, 0, 0, 0], false).0,
            Outcome::ParameterProblem { pointer: 22 },
            "checked before the setting"
        );
    }
}
