//! Property tests of the SPA core: round trips, tamper rejection, and no panics on any input.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use knock_keys::{MasterKey, NamedKey};
use knock_shared::replay::ReplayCache;
use knock_shared::types::{PortSpec, Proto};
use knock_shared::verify::{KeyPolicy, Reject, Verifier};
use knock_shared::wire::{
    seal, Action, Admit, KeyState, PortList, Request, ServerId, NONCE_LEN, PACKET_LEN, PADDING_LEN,
};
use proptest::prelude::*;

const NOW: u64 = 1_800_000_000;

fn key() -> NamedKey {
    NamedKey::new("prop", MasterKey::from_bytes([0x33; 32])).expect("name")
}

fn all_ports() -> Vec<PortSpec> {
    // Every port of both protocols would be 131070 entries; a policy of the ports the
    // strategy below draws from keeps the test fast.
    (1..=64u16)
        .flat_map(|p| [PortSpec::new(Proto::Tcp, p), PortSpec::new(Proto::Udp, p)])
        .flatten()
        .collect()
}

fn verifier(allow_nat: bool) -> Verifier {
    let mut v = Verifier::new(vec![ServerId::from_name("srv")], 60);
    v.add_key(
        &key(),
        KeyPolicy {
            ports: all_ports(),
            allow_nat,
        },
        7,
    )
    .expect("add");
    v
}

fn arb_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        any::<[u8; 16]>()
            .prop_filter("not v4-mapped", |b| Ipv6Addr::from(*b)
                .to_ipv4_mapped()
                .is_none())
            .prop_map(|b| IpAddr::V6(Ipv6Addr::from(b))),
    ]
}

fn arb_request() -> impl Strategy<Value = Request> {
    (
        NOW - 60..=NOW + 60,
        any::<bool>(),
        proptest::option::of(arb_ip()),
        any::<u32>(),
        proptest::collection::vec((any::<bool>(), 1..=64u16), 1..=16),
    )
        .prop_map(|(ts, open, addr, duration, ports)| {
            let ports: Vec<PortSpec> = ports
                .into_iter()
                .filter_map(|(tcp, p)| PortSpec::new(if tcp { Proto::Tcp } else { Proto::Udp }, p))
                .collect();
            Request {
                timestamp: ts,
                action: if open { Action::Open } else { Action::Close },
                admit: addr.map_or(Admit::Source, Admit::Addr),
                duration,
                server: ServerId::from_name("srv"),
                ports: PortList::new(&ports).expect("1..=16"),
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn seal_then_verify_round_trips(
        r in arb_request(),
        nonce in any::<[u8; NONCE_LEN]>(),
        pad in any::<[u8; PADDING_LEN]>(),
        source in arb_ip(),
    ) {
        let v = verifier(true);
        let p = seal(&KeyState::new(&key().derive()), &r, &nonce, &pad);
        let mut cache = ReplayCache::new(4);
        let want = match r.admit { Admit::Source => source, Admit::Addr(a) => a };
        if !knock_shared::types::admissible(want) {
            // Authentic, but no rule is made for "any", multicast or broadcast.
            prop_assert_eq!(v.verify(NOW, source, &p, &mut cache), Err(Reject::Unadmissible(want)));
            prop_assert!(cache.is_empty());
            return Ok(());
        }
        let ok = v.verify(NOW, source, &p, &mut cache).expect("valid packet verifies");
        prop_assert_eq!(ok.request(), &r);
        prop_assert_eq!(ok.door(), 7);
        prop_assert_eq!(ok.addr(), want);
        prop_assert_eq!(v.verify(NOW, source, &p, &mut cache), Err(Reject::Replay));
    }

    #[test]
    fn any_single_bit_flip_is_rejected(
        r in arb_request(),
        nonce in any::<[u8; NONCE_LEN]>(),
        bit in 0..PACKET_LEN * 8,
    ) {
        let v = verifier(true);
        let mut p = seal(&KeyState::new(&key().derive()), &r, &nonce, &[0; PADDING_LEN]);
        p[bit / 8] ^= 1 << (bit % 8);
        let mut cache = ReplayCache::new(4);
        prop_assert!(v.verify(NOW, IpAddr::V4(Ipv4Addr::LOCALHOST), &p, &mut cache).is_err());
        prop_assert!(cache.is_empty());
    }

    #[test]
    fn any_truncation_or_extension_is_rejected(
        r in arb_request(),
        cut in 0..PACKET_LEN,
        extra in proptest::collection::vec(any::<u8>(), 1..64),
    ) {
        let v = verifier(true);
        let p = seal(&KeyState::new(&key().derive()), &r, &[1; NONCE_LEN], &[0; PADDING_LEN]);
        let mut cache = ReplayCache::new(4);
        let src = IpAddr::V4(Ipv4Addr::LOCALHOST);
        prop_assert!(v.verify(NOW, src, &p[..cut], &mut cache).is_err());
        let mut long = p.to_vec();
        long.extend_from_slice(&extra);
        prop_assert_eq!(v.verify(NOW, src, &long, &mut cache), Err(Reject::BadLength));
    }

    #[test]
    fn random_bytes_never_panic_nor_pass(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let v = verifier(true);
        let mut cache = ReplayCache::new(4);
        prop_assert!(v.verify(NOW, IpAddr::V4(Ipv4Addr::LOCALHOST), &bytes, &mut cache).is_err());
    }

    #[test]
    fn random_bytes_with_a_real_key_id_fail_at_the_hmac(mut bytes in any::<[u8; PACKET_LEN]>().prop_map(|b| b.to_vec())) {
        let v = verifier(true);
        bytes[0] = 1;
        bytes[1..9].copy_from_slice(&key().derive().id().0);
        let mut cache = ReplayCache::new(4);
        prop_assert_eq!(
            v.verify(NOW, IpAddr::V4(Ipv4Addr::LOCALHOST), &bytes, &mut cache),
            Err(Reject::BadHmac)
        );
    }

    #[test]
    fn body_codec_round_trips(r in arb_request(), pad in any::<[u8; PADDING_LEN]>()) {
        prop_assert_eq!(Request::decode_body(&r.encode_body(&pad)), Ok(r));
    }

    #[test]
    fn body_decoder_never_panics(b in any::<[u8; 128]>()) {
        let _ = Request::decode_body(&b);
    }
}
