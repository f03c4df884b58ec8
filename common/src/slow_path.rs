//! The hand-over of exception frames from the fast path to the agent's slow
//! path over AF_XDP: the `SLOW_PATH` XSKMAP's keys, and the small header the
//! program puts in front of each frame to say why it came.

use crate::Reason;

/// RX queues per interface the slow path can serve.
pub const MAX_QUEUES: u32 = 16;

/// Where the socket of (`ifindex`, `queue`) sits in `SLOW_PATH`. Interfaces
/// share the map by ifindex (modulo its size, which the agent checks).
#[inline(always)]
pub const fn socket_key(ifindex: u32, queue: u32) -> u32 {
    (ifindex % (crate::capacity::SLOW_PATH / MAX_QUEUES)) * MAX_QUEUES + queue % MAX_QUEUES
}

/// Put in front of the Ethernet header of every frame handed to the agent.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlowPathHeader {
    /// [`SlowPathHeader::MAGIC`]: the frame came from this program.
    pub magic: [u8; 2],
    /// A [`Reason`].
    pub reason: u8,
    pub _pad: u8,
    /// For `TooBig`: the MTU the packet exceeded (the destination's, else
    /// the route's, else the device's). For `NoNeighbour`: the next hop.
    pub detail: u32,
}

const _: () = assert!(core::mem::size_of::<SlowPathHeader>() == 8);

impl SlowPathHeader {
    pub const MAGIC: [u8; 2] = *b"CR";
    pub const LEN: usize = core::mem::size_of::<SlowPathHeader>();

    pub const fn new(reason: Reason, detail: u32) -> SlowPathHeader {
        SlowPathHeader { magic: Self::MAGIC, reason: reason as u8, _pad: 0, detail }
    }

    /// Reads the header at the start of `frame`; the rest is the original frame.
    pub fn parse(frame: &[u8]) -> Option<(SlowPathHeader, &[u8])> {
        if frame.len() < Self::LEN || frame[..2] != Self::MAGIC {
            return None;
        }
        let detail = u32::from_ne_bytes([frame[4], frame[5], frame[6], frame[7]]);
        Some((SlowPathHeader { magic: Self::MAGIC, reason: frame[2], _pad: 0, detail }, &frame[Self::LEN..]))
    }

    pub fn reason(&self) -> Option<Reason> {
        Reason::from_u8(self.reason)
    }
}

/// Bytes of a reported packet the fast path copies: a whole ICMPv6 Packet
/// Too Big (RFC 4443 quotes up to the minimum MTU, 1280) and a whole ICMPv4
/// error (RFC 1812 4.3.2.3: up to 576), so that the agent can verify the
/// ICMP checksum over the whole message.
pub const PMTU_COPY: usize = 1280;

/// A Fragmentation Needed / Packet Too Big the fast path forwarded
/// (`PMTU_EVENTS`): the whole IP packet carrying it (up to [`PMTU_COPY`]
/// bytes) and the interface it arrived on. The agent validates it (checksum,
/// quoted header, the flow's path through this router) before it learns.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PmtuEvent {
    /// 4 or 6.
    pub family: u8,
    pub _pad: [u8; 3],
    /// The interface the report arrived on.
    pub ingress: u32,
    /// The IP packet's length by its header (IPv4 total length, IPv6 40 +
    /// payload length).
    pub len: u32,
    /// Bytes of it in `packet`: `min(len, PMTU_COPY)`.
    pub copied: u32,
    /// The IP packet, from its IP header on, as forwarded (TTL decremented).
    pub packet: [u8; PMTU_COPY],
}

const _: () = assert!(core::mem::size_of::<PmtuEvent>() == 16 + PMTU_COPY);

impl PmtuEvent {
    /// The event for `packet` (an IP packet) arriving on `ingress`.
    pub fn from_packet(family: u8, ingress: u32, packet: &[u8]) -> PmtuEvent {
        let copied = packet.len().min(PMTU_COPY);
        let mut e = PmtuEvent { family, _pad: [0; 3], ingress, len: packet.len() as u32, copied: copied as u32, packet: [0; PMTU_COPY] };
        e.packet[..copied].copy_from_slice(&packet[..copied]);
        e
    }

    /// The copied bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.packet[..(self.copied as usize).min(PMTU_COPY)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_in_the_map_and_the_header_round_trips() {
        assert!(socket_key(u32::MAX, u32::MAX) < crate::capacity::SLOW_PATH);
        assert_ne!(socket_key(2, 0), socket_key(3, 0));
        assert_ne!(socket_key(2, 0), socket_key(2, 1));
        let h = SlowPathHeader::new(Reason::TooBig, 1300);
        let bytes: [u8; 8] = unsafe { core::mem::transmute(h) };
        let mut frame = bytes.to_vec();
        frame.extend_from_slice(&[0xee; 14]);
        let (parsed, rest) = SlowPathHeader::parse(&frame).unwrap();
        assert_eq!((parsed, parsed.reason(), rest.len()), (h, Some(Reason::TooBig), 14));
        assert!(SlowPathHeader::parse(&frame[1..]).is_none());
    }
}
