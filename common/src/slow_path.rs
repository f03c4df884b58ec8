//! The hand-over of exception frames from the fast path to the agent's slow
//! path over AF_XDP: the `SLOW_PATH` XSKMAP's keys, and the small header the
//! program puts in front of each frame to say why it came.

use crate::Reason;

/// RX queues per interface the slow path can serve: queues 0 to 15 of an
/// interface get a socket each; an exception on a higher queue goes to the
/// kernel, counted as [`Unserved::QueueBeyondSlots`].
pub const MAX_QUEUES: u32 = 16;

/// Interfaces the slow path can serve at once: each takes one slot of
/// [`MAX_QUEUES`] keys in `SLOW_PATH`.
pub const IFACE_SLOTS: u32 = crate::capacity::SLOW_PATH / MAX_QUEUES;

/// Where the socket of `queue` of the interface in `slot` sits in
/// `SLOW_PATH`: distinct (slot, queue) pairs never share a key, and a queue
/// past [`MAX_QUEUES`] (or a slot past [`IFACE_SLOTS`]) has none.
#[inline(always)]
pub const fn socket_key(slot: u32, queue: u32) -> Option<u32> {
    if slot >= IFACE_SLOTS || queue >= MAX_QUEUES {
        return None;
    }
    Some(slot * MAX_QUEUES + queue)
}

/// What the slow path serves on one interface (`SLOW_PATH_IFACES`, keyed by
/// ifindex; the agent assigns the slots, so interfaces never alias).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlowPathIface {
    /// The interface's slot: its sockets are at `socket_key(slot, queue)`.
    pub slot: u32,
    /// The longest frame, [`SlowPathHeader`] included, that its sockets'
    /// UMEM frames take (the frame size less the kernel's XDP headroom).
    pub max_frame: u32,
}

const _: () = assert!(core::mem::size_of::<SlowPathIface>() == 8);

/// Why an exception for the agent went to the kernel instead (the
/// `UNSERVED` per-CPU counters; the frame is counted under its verdict
/// reason in `COUNTERS` too). Never silently lost: the stack gets it.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unserved {
    /// The ingress interface has no slow path (`--slow-path kernel`, or its
    /// sockets could not be opened).
    NoInterface = 0,
    /// The RX queue is at or above [`MAX_QUEUES`].
    QueueBeyondSlots = 1,
    /// No socket is bound on the queue (an inactive queue, a socket gone).
    NoSocket = 2,
    /// The frame is longer than the sockets' UMEM frames take.
    TooLong = 3,
    /// No headroom for the [`SlowPathHeader`].
    NoHeadroom = 4,
}

/// Number of [`Unserved`] causes: the size of the `UNSERVED` array.
pub const NUM_UNSERVED: u32 = 5;

impl Unserved {
    pub const ALL: [Unserved; NUM_UNSERVED as usize] =
        [Unserved::NoInterface, Unserved::QueueBeyondSlots, Unserved::NoSocket, Unserved::TooLong, Unserved::NoHeadroom];

    pub const fn name(self) -> &'static str {
        match self {
            Unserved::NoInterface => "no_interface",
            Unserved::QueueBeyondSlots => "queue_beyond_slots",
            Unserved::NoSocket => "no_socket",
            Unserved::TooLong => "too_long",
            Unserved::NoHeadroom => "no_headroom",
        }
    }
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
    fn keys_stay_in_the_map_never_alias_and_the_header_round_trips() {
        let mut seen = std::collections::BTreeSet::new();
        for slot in 0..IFACE_SLOTS {
            for queue in 0..MAX_QUEUES {
                let key = socket_key(slot, queue).expect("a key");
                assert!(key < crate::capacity::SLOW_PATH);
                assert!(seen.insert(key), "slot {slot} queue {queue} aliases key {key}");
            }
        }
        assert_eq!(socket_key(0, MAX_QUEUES), None);
        assert_eq!(socket_key(2, 31), None);
        assert_eq!(socket_key(IFACE_SLOTS, 0), None);
        assert_eq!(socket_key(u32::MAX, u32::MAX), None);
        for (i, u) in Unserved::ALL.iter().enumerate() {
            assert_eq!(*u as usize, i);
        }
        let h = SlowPathHeader::new(Reason::TooBig, 1300);
        let bytes: [u8; 8] = unsafe { core::mem::transmute(h) };
        let mut frame = bytes.to_vec();
        frame.extend_from_slice(&[0xee; 14]);
        let (parsed, rest) = SlowPathHeader::parse(&frame).unwrap();
        assert_eq!((parsed, parsed.reason(), rest.len()), (h, Some(Reason::TooBig), 14));
        assert!(SlowPathHeader::parse(&frame[1..]).is_none());
    }
}
