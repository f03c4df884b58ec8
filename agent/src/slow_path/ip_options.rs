//! IPv4 options of a packet in transit, processed as the kernel's receive
//! and forward paths do: `ip_options_compile` (with a route: validation,
//! record route and timestamps written, a bad option answered with a
//! Parameter Problem pointing at it), `ip_rcv_options` (source routes
//! dropped unless `accept_source_route` is set for `all` and the ingress
//! device; accepted: `ip_options_rcv_srr` for a destination that is not
//! ours), and `ip_forward_options` (the record-route slot rewritten with the
//! egress address, the header checksum recomputed). A router alert is for
//! `ip_ra_chain` sockets, of which the agent has none: forwarded. And, for
//! the ICMP errors about such a packet, `__ip_options_echo` with
//! `ip_options_build`: the reply's own record route and timestamp.

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

/// What `ip_options_compile` notes (the kernel's `struct ip_options`, the
/// parts a router uses): where the options are and what they still need.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Compiled {
    /// Offset of the record-route option, and whether an address is due.
    rr: Option<(usize, bool)>,
    /// Offset of the timestamp option, and whether it took an address, a time.
    ts: Option<(usize, bool, bool)>,
    /// A source route, and whether it is strict.
    srr: Option<bool>,
}

/// `ip_options_compile` on receipt of the IPv4 packet `ip` (its header
/// checksum checked), in place, the checksum left as it came. A bad option
/// stops it where the kernel stops: what was compiled before it is what
/// the Parameter Problem echoes.
pub fn receive_options(ip: &mut [u8], ctx: &Context) -> Compiled {
    let ihl = ((ip[0] & 0x0f) as usize * 4).min(ip.len());
    compile(ip, ihl, ctx).unwrap_or_else(|(_, so_far)| so_far)
}

/// Processes the options of the IPv4 packet `ip` (its header checksum
/// checked) in place, as a router forwarding it does.
pub fn forward_options(ip: &mut [u8], ctx: &Context) -> Outcome {
    let ihl = ((ip[0] & 0x0f) as usize * 4).min(ip.len());
    let compiled = match compile(ip, ihl, ctx) {
        Ok(c) => c,
        Err((pointer, _)) => return Outcome::ParameterProblem { pointer: pointer as u8 },
    };
    match compiled.srr {
        Some(_) if !ctx.accept_source_route => return Outcome::SourceRouteRefused,
        // `ip_options_rcv_srr`, the destination not ours: a strict route
        // cannot be followed; a loose one is forwarded as it is.
        Some(true) => return Outcome::ParameterProblem { pointer: 16 },
        _ => {}
    }
    if let Some((rr, true)) = compiled.rr {
        let slot = rr + ip[rr + 2] as usize - 5;
        ip[slot..slot + 4].copy_from_slice(&ctx.egress.octets());
    }
    ip[10..12].copy_from_slice(&[0, 0]);
    let c = checksum::checksum(&ip[..ihl]).to_be_bytes();
    ip[10..12].copy_from_slice(&c);
    Outcome::Forward
}

/// `ip_options_compile` with a route: `Err` is the offset of the offending
/// byte and what was compiled before it. It writes as it goes, as the
/// kernel does.
fn compile(ip: &mut [u8], ihl: usize, ctx: &Context) -> Result<Compiled, (usize, Compiled)> {
    let mut c = Compiled::default();
    match compile_into(ip, ihl, ctx, &mut c) {
        Ok(()) => Ok(c),
        Err(pointer) => Err((pointer, c)),
    }
}

fn compile_into(ip: &mut [u8], ihl: usize, ctx: &Context, c: &mut Compiled) -> Result<(), usize> {
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
                let needaddr = ptr <= optlen;
                if needaddr {
                    if ptr + 3 > optlen {
                        return Err(o + 2);
                    }
                    ip[o + ptr - 1..o + ptr + 3].copy_from_slice(&ctx.ingress.octets());
                    ip[o + 2] += 4;
                }
                c.rr = Some((o, needaddr));
                rr_seen = true;
            }
            IPOPT_TIMESTAMP => {
                if ts_seen {
                    return Err(o);
                }
                c.ts = Some(timestamp(ip, o, optlen, ctx)?);
                ts_seen = true;
            }
            IPOPT_RA if optlen < 4 => return Err(o + 1),
            // Router alert, security, stream id, unknown: accepted as they are.
            _ => {}
        }
        o += optlen;
    }
    Ok(())
}

/// `inet_addr_type` is not RTN_UNICAST: one of ours, or no one's.
fn not_unicast(a: [u8; 4], ctx: &Context) -> bool {
    let a = Ipv4Addr::from(a);
    a.is_unspecified() || a.is_broadcast() || a.is_multicast() || (ctx.is_local)(a)
}

/// The four bytes at `at`.
fn addr_at(b: &[u8], at: usize) -> [u8; 4] {
    [b[at], b[at + 1], b[at + 2], b[at + 3]]
}

/// The timestamp option at `o`: a time (and an address) in the next free
/// slot, or the overflow count one higher when none is free. `Ok`: the
/// option's offset, and whether it took an address, a time.
fn timestamp(ip: &mut [u8], o: usize, optlen: usize, ctx: &Context) -> Result<(usize, bool, bool), usize> {
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
        return Ok((o, false, false));
    }
    if ptr + 3 > optlen {
        return Err(o + 2);
    }
    let slot = o + ptr - 1;
    let (time_at, needaddr) = match ip[o + 3] & 0x0f {
        IPOPT_TS_TSONLY => {
            ip[o + 2] += 4;
            (slot, false)
        }
        flag @ (IPOPT_TS_TSANDADDR | IPOPT_TS_PRESPEC) => {
            if ptr + 7 > optlen {
                return Err(o + 2);
            }
            if flag == IPOPT_TS_TSANDADDR {
                ip[slot..slot + 4].copy_from_slice(&ctx.ingress.octets());
            } else if !not_unicast(addr_at(ip, slot), ctx) {
                // Someone else's turn.
                return Ok((o, false, false));
            }
            ip[o + 2] += 8;
            (slot + 4, flag == IPOPT_TS_TSANDADDR)
        }
        _ => return Ok((o, false, false)),
    };
    ip[time_at..time_at + 4].copy_from_slice(&ctx.now_ms.to_be_bytes());
    Ok((o, needaddr, true))
}

/// The options of an ICMP error about the IPv4 packet `ip` (as
/// [`receive_options`] left it, having found `opt`), sent from
/// `ctx.ingress`: `__ip_options_echo` (the record route and timestamp
/// copied, their pointers moved on where the packet's had room) with
/// `ip_options_build` (the reply's address and time in those slots), padded
/// with EOL. `None` where the kernel's echo fails (a slot cut short): it
/// sends no error then. Source routes are not echoed (the agent's errors go
/// to the source; `accept_source_route` is off by default).
pub fn echo_options(ip: &[u8], opt: &Compiled, ctx: &Context) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    if let Some((rr, needaddr)) = opt.rr {
        let (optlen, soffset) = (ip[rr + 1] as usize, ip[rr + 2] as usize);
        let at = out.len();
        out.extend_from_slice(&ip[rr..rr + optlen]);
        if needaddr && soffset <= optlen {
            if soffset + 3 > optlen {
                return None;
            }
            out[at + 2] = (soffset + 4) as u8;
            out[at + soffset - 1..at + soffset + 3].copy_from_slice(&ctx.ingress.octets());
        }
    }
    if let Some((ts, needaddr, needtime)) = opt.ts {
        let (optlen, mut soffset) = (ip[ts + 1] as usize, ip[ts + 2] as usize);
        let at = out.len();
        out.extend_from_slice(&ip[ts..ts + optlen]);
        if soffset <= optlen {
            let mut time_at = None;
            if needaddr {
                if soffset + 3 > optlen {
                    return None;
                }
                out[at + soffset - 1..at + soffset + 3].copy_from_slice(&ctx.ingress.octets());
                soffset += 4;
            }
            if needtime {
                if soffset + 3 > optlen {
                    return None;
                }
                if out[at + 3] & 0x0f != IPOPT_TS_PRESPEC {
                    time_at = Some(soffset - 1);
                    soffset += 4;
                } else if soffset + 7 <= optlen && not_unicast(addr_at(&out, at + soffset - 1), ctx) {
                    time_at = Some(soffset + 3);
                    soffset += 8;
                }
            }
            out[at + 2] = soffset as u8;
            if let Some(t) = time_at {
                out[at + t..at + t + 4].copy_from_slice(&ctx.now_ms.to_be_bytes());
            }
        }
    }
    while !out.len().is_multiple_of(4) {
        out.push(IPOPT_END);
    }
    Some(out)
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

    /// Receipt (the slot recorded with the address toward the source, as
    /// `spec_dst`), then the error's echo, as the kernel's ICMP errors show.
    fn echo(opts: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
        let c = ctx(false);
        let mut ip = packet(opts);
        let opt = receive_options(&mut ip, &c);
        let ihl = (ip[0] & 0x0f) as usize * 4;
        let echoed = echo_options(&ip, &opt, &c);
        (ip[20..ihl].to_vec(), echoed)
    }

    #[test]
    fn an_error_echoes_record_route_and_timestamp_with_its_own_address_and_time() {
        let (received, echoed) = echo(&[IPOPT_RR, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0, IPOPT_NOOP]);
        assert_eq!(received, [7, 11, 8, 10, 1, 0, 1, 0, 0, 0, 0, 1], "the receive path records the ingress");
        assert_eq!(echoed.unwrap(), [7, 11, 12, 10, 1, 0, 1, 10, 1, 0, 1, 0], "the reply records itself, padded with EOL");
        assert_eq!(echo(&[IPOPT_RR, 7, 8, 9, 9, 9, 9, 0]).1.unwrap(), [7, 7, 8, 9, 9, 9, 9, 0], "full on arrival: as it is");
        let (received, echoed) = echo(&[IPOPT_TIMESTAMP, 12, 5, IPOPT_TS_TSONLY, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(received, [68, 12, 9, 0, 1, 2, 3, 4, 0, 0, 0, 0]);
        assert_eq!(echoed.unwrap(), [68, 12, 13, 0, 1, 2, 3, 4, 1, 2, 3, 4]);
        assert_eq!(echo(&[IPOPT_TIMESTAMP, 8, 5, 0, 0, 0, 0, 0]).1.unwrap(), [68, 8, 9, 0, 1, 2, 3, 4], "no room left: as it is");
        let mut ts_addr = vec![IPOPT_TIMESTAMP, 20, 5, IPOPT_TS_TSANDADDR];
        ts_addr.extend([0; 16]);
        let (_, echoed) = echo(&ts_addr);
        assert_eq!(echoed.unwrap(), [68, 20, 21, 1, 10, 1, 0, 1, 1, 2, 3, 4, 10, 1, 0, 1, 1, 2, 3, 4]);
        // Prespecified: ours (IN) stamped on receipt, the next one (OUT,
        // also ours) by the reply; someone else's not.
        let prespec = [IPOPT_TIMESTAMP, 20, 5, IPOPT_TS_PRESPEC, 10, 1, 0, 1, 0, 0, 0, 0, 10, 2, 0, 1, 0, 0, 0, 0];
        assert_eq!(echo(&prespec).1.unwrap(), [68, 20, 21, 3, 10, 1, 0, 1, 1, 2, 3, 4, 10, 2, 0, 1, 1, 2, 3, 4]);
        let other = [IPOPT_TIMESTAMP, 20, 5, IPOPT_TS_PRESPEC, 10, 1, 0, 1, 0, 0, 0, 0, 10, 9, 0, 1, 0, 0, 0, 0];
        assert_eq!(echo(&other).1.unwrap()[..4], [68, 20, 13, 3]);
        // Both, in the kernel's order (RR first), whatever the packet's.
        let (_, echoed) = echo(&[IPOPT_TIMESTAMP, 8, 5, 0, 0, 0, 0, 0, IPOPT_RR, 7, 4, 0, 0, 0, 0, IPOPT_END]);
        assert_eq!(echoed.unwrap(), [7, 7, 8, 10, 1, 0, 1, 68, 8, 9, 0, 1, 2, 3, 4, 0]);
        assert_eq!(echo(&[IPOPT_RA, 4, 0, 0, IPOPT_NOOP]).1.unwrap(), [0u8; 0], "nothing else is echoed");
    }

    #[test]
    fn an_echo_whose_next_slot_is_cut_short_fails_and_a_bad_option_keeps_what_came_before() {
        // RR of 9 bytes: a slot after receipt's, but cut short.
        assert_eq!(echo(&[IPOPT_RR, 9, 4, 0, 0, 0, 0, 0, 0]).1, None);
        // A record route, then a bad option: the Parameter Problem echoes the former.
        let (received, echoed) = echo(&[IPOPT_RR, 7, 4, 0, 0, 0, 0, IPOPT_RA, 2, 0, 0, 0]);
        assert_eq!(received[..7], [7, 7, 8, 10, 1, 0, 1]);
        assert_eq!(echoed.unwrap(), [7, 7, 8, 10, 1, 0, 1, 0]);
        assert_eq!(echo(&[IPOPT_RA, 2, 0, 0, IPOPT_RR, 7, 4, 0, 0, 0, 0, 0]).1.unwrap(), [0u8; 0], "after it: never compiled");
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
