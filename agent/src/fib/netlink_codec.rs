//! The subscription's netlink codec: netlink-proto's own, except that a
//! message it cannot decode is not dropped with a log line (netlink-proto's
//! `NetlinkCodec` does that, and the change it carried is lost without a
//! trace) but counted and handed on as an overrun marker, so the mirror
//! resyncs from a full dump as after ENOBUFS.

use rtnetlink::{
    packet_core::{
        NetlinkBuffer, NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable, NLMSG_OVERRUN,
    },
    proto::{NetlinkCodec, NetlinkMessageCodec},
};
use std::{
    fmt::Debug,
    io,
    sync::atomic::{AtomicU64, Ordering},
};

/// The payload of the overrun message that stands for an undecodable one
/// (netlink-proto's own overrun, for ENOBUFS, has an empty payload).
pub const UNDECODABLE_MARKER: &[u8] = b"cowroute: undecodable netlink message";

/// Messages the codec could not decode, since the process started.
static UNDECODABLE: AtomicU64 = AtomicU64::new(0);

/// Messages [`ResyncingCodec`] (or a dump) could not decode so far.
pub fn undecodable() -> u64 {
    UNDECODABLE.load(Ordering::Relaxed)
}

/// Does `payload` stand for a message that could not be decoded?
pub fn is_undecodable_marker(payload: &NetlinkPayload<impl Debug>) -> bool {
    matches!(payload, NetlinkPayload::Overrun(p) if p == UNDECODABLE_MARKER)
}

/// netlink-proto's codec, with undecodable messages turned into overruns.
pub struct ResyncingCodec;

/// One more message that could not be decoded (a dump's, say, which goes on without it).
pub fn count_undecodable() {
    UNDECODABLE.fetch_add(1, Ordering::Relaxed);
}

fn marker<T>() -> NetlinkMessage<T> {
    count_undecodable();
    let mut header = NetlinkHeader::default();
    header.message_type = NLMSG_OVERRUN;
    header.length = (std::mem::size_of::<NetlinkHeader>() + UNDECODABLE_MARKER.len()) as u32;
    NetlinkMessage::new(header, NetlinkPayload::Overrun(UNDECODABLE_MARKER.to_vec()))
}

impl NetlinkMessageCodec for ResyncingCodec {
    /// As `NetlinkCodec::decode`, one message at a time from a datagram,
    /// except on a decode error: a bad message (its attributes, its type's
    /// body) yields the marker and decoding goes on with the next one; a
    /// datagram whose framing is broken (a length field beyond it, or too
    /// short) is dropped whole, as netlink-proto does, and yields the marker.
    fn decode<T>(src: &mut bytes::BytesMut) -> io::Result<Option<NetlinkMessage<T>>>
    where
        T: NetlinkDeserializable + Debug,
    {
        if src.is_empty() {
            return Ok(None);
        }
        let len = match NetlinkBuffer::new_checked(src.as_ref()) {
            Ok(buf) => buf.length() as usize,
            Err(e) => {
                tracing::warn!(error = %e, bytes = src.len(), "netlink: a datagram with broken framing; resyncing");
                src.clear();
                return Ok(Some(marker()));
            }
        };
        let bytes = src.split_to(len);
        match NetlinkMessage::<T>::deserialize(&bytes) {
            Ok(msg) => Ok(Some(msg)),
            Err(e) => {
                let kind = NetlinkBuffer::new(&bytes[..]).message_type();
                tracing::warn!(error = %e, message_type = kind, bytes = len, "netlink: an undecodable message; resyncing");
                Ok(Some(marker()))
            }
        }
    }

    fn encode<T>(msg: NetlinkMessage<T>, buf: &mut bytes::BytesMut) -> io::Result<()>
    where
        T: NetlinkSerializable + Debug,
    {
        NetlinkCodec::encode(msg, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fib::{
        netlink_mirror::{self, Event},
        nexthop_msg::MirrorMessage,
    };
    use netlink_packet_route::{
        route::{RouteAddress, RouteAttribute, RouteMessage, RouteType},
        AddressFamily, RouteNetlinkMessage,
    };

    /// An RTM_NEWROUTE for 10.9.0.0/24 via ifindex 2, as the kernel sends it.
    fn new_route() -> Vec<u8> {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.destination_prefix_length = 24;
        m.header.table = 254;
        m.header.kind = RouteType::Unicast;
        m.attributes = vec![RouteAttribute::Destination(RouteAddress::Inet("10.9.0.0".parse().unwrap())), RouteAttribute::Oif(2)];
        let mut msg = NetlinkMessage::from(RouteNetlinkMessage::NewRoute(m));
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        buf
    }

    fn decode(src: &mut bytes::BytesMut) -> Option<NetlinkMessage<MirrorMessage>> {
        ResyncingCodec::decode::<MirrorMessage>(src).unwrap()
    }

    /// The one test that decodes bad bytes (the counter is the process's).
    #[test]
    fn an_undecodable_route_message_is_counted_and_asks_for_a_resync_and_the_next_one_still_decodes() {
        let good = new_route();
        // The message's first attribute (RTA_DST, after the 16-byte netlink
        // header and the 12-byte rtmsg) claims 3 bytes: less than its own
        // 4-byte header, so its attributes cannot be parsed.
        let mut bad = good.clone();
        assert_eq!(u16::from_ne_bytes([bad[28], bad[29]]), 8, "RTA_DST's length");
        bad[28..30].copy_from_slice(&3u16.to_ne_bytes());
        assert!(NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bad).is_err(), "netlink-proto's codec would drop it");
        let before = undecodable();
        // One datagram: a good message, the bad one, a good one.
        let mut src = bytes::BytesMut::from([good.clone(), bad, good].concat().as_slice());
        let first = decode(&mut src).expect("a message");
        assert!(matches!(netlink_mirror::events(first).as_slice(), [Event::Route { present: true, .. }]));
        // The mirror's message type keeps what it cannot read (the codec
        // only sees framing): an undecodable event all the same.
        let second = decode(&mut src).expect("the undecodable message");
        assert!(matches!(second.payload, NetlinkPayload::InnerMessage(MirrorMessage::Undecodable { message_type: 24, .. })));
        assert_eq!(netlink_mirror::events(second), vec![Event::Undecodable]);
        assert!(Event::Undecodable.needs_resync() && Event::Overrun.needs_resync());
        assert_eq!(undecodable(), before, "framed fine: the daemon counts it");
        let third = decode(&mut src).expect("decoding goes on");
        assert!(matches!(netlink_mirror::events(third).as_slice(), [Event::Route { present: true, .. }]));
        assert!(decode(&mut src).is_none());
        // A datagram whose length field runs past its end: dropped whole, a resync.
        let mut cut = bytes::BytesMut::from(&new_route()[..20]);
        assert_eq!(netlink_mirror::events(decode(&mut cut).expect("the marker")), vec![Event::Undecodable]);
        assert!(cut.is_empty());
        assert_eq!(undecodable(), before + 1, "counted by the codec");
        // netlink-proto's own overrun (ENOBUFS) stays an overrun.
        let mut header = NetlinkHeader::default();
        header.message_type = NLMSG_OVERRUN;
        let enobufs = NetlinkMessage::<MirrorMessage>::new(header, NetlinkPayload::Overrun(Vec::new()));
        assert_eq!(netlink_mirror::events(enobufs), vec![Event::Overrun]);
    }
}
