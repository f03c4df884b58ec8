//! The FPM frame parser and feed against frames as zebra builds them.

use super::*;

fn new_route(prefix: &str, gw: &str) -> Vec<u8> {
    route_message(prefix.parse().unwrap(), gw.parse().unwrap(), 2, true)
}

fn del_route(prefix: &str, gw: &str) -> Vec<u8> {
    route_message(prefix.parse().unwrap(), gw.parse().unwrap(), 2, false)
}

/// An FPM frame around netlink messages.
fn fpm_frame(messages: &[Vec<u8>]) -> Vec<u8> {
    frame_of(messages)
}

fn frames_of(bytes: &[u8]) -> Result<Vec<Frame>, FpmError> {
    let mut d = FpmDecoder::default();
    d.push(bytes);
    let mut out = Vec::new();
    while let Some(f) = d.next_frame()? {
        out.push(parse_frame(&f)?);
    }
    Ok(out)
}

#[test]
fn frames_split_anywhere_decode_the_same() {
    let stream: Vec<u8> = [fpm_frame(&[new_route("10.1.0.0/16", "10.2.0.9")]), fpm_frame(&[new_route("10.3.0.0/16", "10.2.0.9")])].concat();
    let whole = frames_of(&stream).unwrap();
    assert_eq!(whole.len(), 2);
    for cut in 1..stream.len() {
        let mut d = FpmDecoder::default();
        let mut got = Vec::new();
        for part in [&stream[..cut], &stream[cut..]] {
            d.push(part);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(parse_frame(&f).unwrap());
            }
        }
        assert_eq!(got, whole, "cut at {cut}");
    }
}

#[test]
fn bad_frames_are_refused_with_a_reason() {
    let good = fpm_frame(&[new_route("10.1.0.0/16", "10.2.0.9")]);
    let mut v = good.clone();
    v[0] = 2;
    assert_eq!(frames_of(&v), Err(FpmError::Version(2)));
    let mut t = good.clone();
    t[1] = 2;
    assert_eq!(frames_of(&t), Err(FpmError::MessageType(2)));
    assert_eq!(frames_of(&[1, 1, 0, 8, 0, 0, 0, 0]), Err(FpmError::Length(8)));
    assert_eq!(frames_of(&[1, 1, 0xff, 0xff]), Err(FpmError::Length(65535)));
    // A netlink message whose length claims more than the frame holds.
    let mut n = good.clone();
    n[4] = 0xf0;
    assert!(matches!(frames_of(&n), Err(FpmError::Netlink(_))), "{:?}", frames_of(&n));
    // An attribute that runs past its message.
    let mut a = good;
    let last = a.len() - 8;
    a[last] = 0x40;
    assert!(matches!(frames_of(&a), Err(FpmError::Netlink(_))));
}

#[test]
fn an_update_as_delete_then_add_is_one_replace() {
    let mut fpm = FpmRoutes::new([254]);
    let f = frames_of(&fpm_frame(&[new_route("10.1.0.0/16", "10.2.0.9")])).unwrap().remove(0);
    assert!(matches!(fpm.frame(f).as_slice(), [RouteChange::Set(_)]));
    let update = frames_of(&fpm_frame(&[del_route("10.1.0.0/16", "10.2.0.9"), new_route("10.1.0.0/16", "10.2.0.7")])).unwrap().remove(0);
    let changes = fpm.frame(update);
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert!(matches!(&changes[0], RouteChange::Set(r) if r.via == Some("10.2.0.7".parse().unwrap())), "no delete: no gap");
}

#[test]
fn after_a_reconnect_what_zebra_does_not_resend_is_swept() {
    let mut fpm = FpmRoutes::new([254]);
    fpm.connected();
    for p in ["10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/16"] {
        fpm.frame(frames_of(&fpm_frame(&[new_route(p, "10.2.0.9")])).unwrap().remove(0));
    }
    assert!(!fpm.sweep_pending(), "a first connection has nothing stale");
    fpm.closed();
    fpm.connected();
    assert!(fpm.sweep_pending());
    // A restarted zebra deletes its predecessor's routes first: they stay
    // (stale) until the sweep.
    let deletes = fpm_frame(&["10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/16"].map(|p| del_route(p, "10.2.0.9")));
    assert_eq!(fpm.frame(frames_of(&deletes).unwrap().remove(0)), vec![], "stale routes stay until the sweep");
    // zebra resends two of the three, one of them changed.
    assert_eq!(fpm.frame(frames_of(&fpm_frame(&[new_route("10.1.0.0/16", "10.2.0.9")])).unwrap().remove(0)), vec![], "unchanged");
    assert_eq!(fpm.frame(frames_of(&fpm_frame(&[new_route("10.3.0.0/16", "10.2.0.8")])).unwrap().remove(0)).len(), 1);
    assert_eq!(fpm.sweep(), vec![RouteChange::Delete("10.2.0.0/16".parse().unwrap())]);
    assert_eq!(fpm.stats.swept, 1);
    assert!(fpm.sweep().is_empty());
    // Once swept, a delete is a delete again.
    assert_eq!(
        fpm.frame(frames_of(&fpm_frame(&[del_route("10.1.0.0/16", "10.2.0.9")])).unwrap().remove(0)),
        vec![RouteChange::Delete("10.1.0.0/16".parse().unwrap())]
    );
}

proptest::proptest! {
    /// Any bytes, in any cut: frames or a refusal, never a panic.
    #[test]
    fn any_stream_decodes_or_is_refused(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400), cut in 0usize..400) {
        let mut d = FpmDecoder::default();
        let cut = cut.min(bytes.len());
        for part in [&bytes[..cut], &bytes[cut..]] {
            d.push(part);
            while let Ok(Some(f)) = d.next_frame() {
                let _ = parse_frame(&f);
            }
        }
    }

    /// Genuine frames with one byte flipped: applied or refused, never a panic.
    #[test]
    fn flipped_frames_decode_or_are_refused(i in 0usize..200, bit in 0u8..8) {
        let f = fpm_frame(&[del_route("10.1.0.0/16", "10.2.0.9"), new_route("10.1.0.0/16", "10.2.0.7")]);
        let mut f = f.clone();
        let i = i % f.len();
        f[i] ^= 1 << bit;
        if let Ok(frames) = frames_of(&f) {
            let mut fpm = FpmRoutes::new([254]);
            for fr in frames {
                let _ = fpm.frame(fr);
            }
        }
    }
}
