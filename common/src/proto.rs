//! Protocol numbers both sides use, named as in the kernel's headers
//! (`if_ether.h`, `in.h`, `tcp.h`), and where the IP header of an
//! Ethernet frame starts.

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
/// An 802.1Q tag: TPID and TCI.
pub const VLAN_HLEN: usize = 4;

/// An IPv4 header without options; an IPv6 header.
pub const IPV4_HLEN: usize = 20;
pub const IPV6_HLEN: usize = 40;
/// IPv4 `frag_off`: don't fragment, more fragments, the offset (in 8 bytes).
pub const IP_DF: u16 = 0x4000;
pub const IP_MF: u16 = 0x2000;
pub const IP_OFFSET: u16 = 0x1fff;

pub const IPV6_NEXTHDR_HOP: u8 = 0;
pub const IPV6_NEXTHDR_ROUTING: u8 = 43;
pub const IPV6_NEXTHDR_FRAGMENT: u8 = 44;
pub const IPV6_NEXTHDR_DEST: u8 = 60;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_SCTP: u8 = 132;

pub const TCP_HLEN: usize = 20;
pub const TCP_FLAG_SYN: u8 = 0x02;
pub const TCPOPT_EOL: u8 = 0;
pub const TCPOPT_NOP: u8 = 1;
pub const TCPOPT_MSS: u8 = 2;
pub const TCPOLEN_MSS: usize = 4;

/// The EtherType of `frame` and where its payload (the IP header) starts,
/// behind at most one 802.1Q tag.
pub fn ethernet_payload(frame: &[u8]) -> Option<(u16, usize)> {
    let outer = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    if outer != ETH_P_8021Q {
        return Some((outer, ETH_HLEN));
    }
    let inner = u16::from_be_bytes([*frame.get(16)?, *frame.get(17)?]);
    Some((inner, ETH_HLEN + VLAN_HLEN))
}

/// The length of the IPv6 packet whose header starts `ip` (`ip.len()`: all
/// the frame holds from there), as `ip6_rcv_core` takes it: the payload
/// length plus the header, except that payload length 0 behind a hop-by-hop
/// header is a jumbogram candidate, which is all there is (its options
/// decide: `ipv6_hop_jumbo`). At least `IPV6_HLEN` of `ip` is read.
pub fn ipv6_packet_len(ip: &[u8]) -> usize {
    let payload = u16::from_be_bytes([ip[4], ip[5]]) as usize;
    if payload == 0 && ip[6] == IPV6_NEXTHDR_HOP {
        return ip.len();
    }
    IPV6_HLEN + payload
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_packet_is_its_payload_length_unless_a_jumbogram_candidate() {
        let mut ip = [0u8; 60];
        ip[4..7].copy_from_slice(&[0, 8, IPPROTO_UDP]);
        assert_eq!(ipv6_packet_len(&ip), 48);
        ip[4..7].copy_from_slice(&[0, 0, IPPROTO_UDP]);
        assert_eq!(ipv6_packet_len(&ip), 40);
        ip[6] = IPV6_NEXTHDR_HOP;
        assert_eq!(ipv6_packet_len(&ip), 60, "payload length 0 behind hop-by-hop: all of it");
    }

    #[test]
    fn payload_behind_one_tag_or_none() {
        let mut f = [0u8; 18];
        f[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
        assert_eq!(ethernet_payload(&f), Some((ETH_P_IPV6, 14)));
        f[12..16].copy_from_slice(&[0x81, 0, 0, 7]);
        f[16..18].copy_from_slice(&ETH_P_IP.to_be_bytes());
        assert_eq!(ethernet_payload(&f), Some((ETH_P_IP, 18)));
        assert_eq!(ethernet_payload(&f[..16]), None);
        assert_eq!(ethernet_payload(&f[..13]), None);
    }
}
