//! The bench's yardstick, not part of cowroute: a minimal IPv4 and IPv6
//! forwarder on the kernel's own FIB (`bpf_fib_lookup`), as small as
//! forwarding gets. The bench runs it in the same lab as cowroute to tell
//! the cost of the lab (generator, veth) from the cost of cowroute's program.

use aya_ebpf::{
    bindings::{bpf_fib_lookup as FibLookup, BPF_FIB_LKUP_RET_SUCCESS},
    helpers::{bpf_fib_lookup, bpf_redirect},
    programs::XdpContext,
};
use common::checksum;
use cowroute_ebpf::packet::{ptr_at, ptr_at_mut};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// Forwards an IP frame the kernel's FIB knows a neighbour for; `None`:
/// the stack's.
#[inline(always)]
pub fn forward(ctx: &XdpContext) -> Option<u32> {
    let eth: *mut EthHdr = ptr_at_mut(ctx, 0)?;
    let ether_type = unsafe { (*eth).ether_type };
    let mut p: FibLookup = unsafe { core::mem::zeroed() };
    p.ifindex = ctx.ingress_ifindex() as u32;
    if ether_type == common::proto::ETH_P_IP.to_be() {
        let ip: *mut Ipv4Hdr = ptr_at_mut(ctx, EthHdr::LEN)?;
        let (ttl, tot_len, src, dst) = unsafe { ((*ip).ttl, u16::from_be_bytes((*ip).tot_len), (*ip).src_addr, (*ip).dst_addr) };
        if ttl <= 1 {
            return None;
        }
        p.family = AF_INET;
        p.l4_protocol = unsafe { *(ip as *const u8).add(9) };
        p.__bindgen_anon_1.tot_len = tot_len;
        p.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(src);
        p.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(dst);
        lookup(ctx, &mut p)?;
        unsafe {
            let old = u16::from_be_bytes([(*ip).ttl, *(ip as *const u8).add(9)]);
            (*ip).ttl -= 1;
            let check = u16::from_be_bytes((*ip).check);
            (*ip).check = checksum::replace_u16(check, old, old - 0x0100).to_be_bytes();
        }
    } else if ether_type == common::proto::ETH_P_IPV6.to_be() {
        let ip: *mut Ipv6Hdr = ptr_at_mut(ctx, EthHdr::LEN)?;
        let hop_limit = unsafe { (*ip).hop_limit };
        if hop_limit <= 1 {
            return None;
        }
        p.family = AF_INET6;
        unsafe {
            p.l4_protocol = (*ip).next_hdr as u8;
            p.__bindgen_anon_1.tot_len = u16::from_be_bytes((*ip).payload_len) + Ipv6Hdr::LEN as u16;
            p.__bindgen_anon_3.ipv6_src = core::mem::transmute::<[u8; 16], [u32; 4]>((*ip).src_addr);
            p.__bindgen_anon_4.ipv6_dst = core::mem::transmute::<[u8; 16], [u32; 4]>((*ip).dst_addr);
        }
        lookup(ctx, &mut p)?;
        unsafe { (*ip).hop_limit -= 1 };
    } else {
        return None;
    }
    let eth: *mut EthHdr = ptr_at_mut(ctx, 0)?;
    unsafe {
        (*eth).dst_addr = p.dmac;
        (*eth).src_addr = p.smac;
    }
    let _ = ptr_at::<u8>(ctx, 0)?;
    Some(unsafe { bpf_redirect(p.ifindex, 0) } as u32)
}

/// The kernel's FIB and neighbour lookup; `None` unless both answered.
#[inline(always)]
fn lookup(ctx: &XdpContext, p: &mut FibLookup) -> Option<()> {
    let rc = unsafe { bpf_fib_lookup(ctx.ctx as *mut _, p, core::mem::size_of::<FibLookup>() as i32, 0) };
    (rc == BPF_FIB_LKUP_RET_SUCCESS as i64).then_some(())
}
