//! Raw bytes → `Verifier::verify`, with the key of the protocol test vectors registered.
//!
//! The input is one UDP payload, verified at a fixed time from each of a few sources (a
//! fresh replay cache each time). Checks:
//!
//! - the first four steps of PROTOCOL.md §7 give exactly the documented reject: bad version,
//!   bad length, unknown key, bad HMAC (computed here independently);
//! - a packet with a correct HMAC (the input's, or one recomputed here) never gets one of those
//!   four; if its AEAD tag does not open (checked independently) it is `BadAead`, and a body
//!   that breaks §5 is `Malformed` with the first broken rule;
//! - a reject leaves the replay cache empty;
//! - an accepted packet re-encodes to the same bytes (re-sealing the decoded request with the
//!   packet's nonce and its recovered padding, with `wire::seal` and with the independent
//!   sealer), its request is within the window, bound to our server, asks only for allowed
//!   ports and the source's address; the cache holds exactly its SHA-256; and a second
//!   verify of the same bytes, from any source and at any time, is `Reject::Replay`.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use knock_fuzz::{
    admissible, canonical, named_key, sha256, vector_master, RawBody, Sealer, HEADER, MACED, NOW,
    PACKET, PADDING_AT, SERVER_NAME, WINDOW,
};
use knock_shared::replay::ReplayCache;
use knock_shared::types::PortSpec;
use knock_shared::verify::{KeyPolicy, Reject, RejectKind, Verifier};
use knock_shared::wire::{seal, Admit, KeyState, Request, ServerId, PADDING_LEN};
use libfuzzer_sys::fuzz_target;

const DOOR: usize = 7;

/// Sources the packet is verified from: those of the three vectors, and a mapped IPv4.
const SOURCES: [IpAddr; 4] = [
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10)),
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, 20)),
    IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0xc000, 0x020a)),
];

struct Fixture {
    verifier: Verifier,
    state: KeyState,
    sealer: Sealer,
    policy: Vec<PortSpec>,
    server: ServerId,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let key = named_key("vector", vector_master());
        let policy: Vec<PortSpec> = ["22/tcp", "53/udp", "2222/tcp"]
            .iter()
            .map(|p| p.parse().expect("port"))
            .collect();
        let server = ServerId::from_name(SERVER_NAME);
        let mut verifier = Verifier::new(vec![server], WINDOW);
        verifier
            .add_key(
                &key,
                KeyPolicy {
                    ports: policy.clone(),
                    allow_nat: false,
                },
                DOOR,
            )
            .expect("one key");
        let derived = key.derive();
        Fixture {
            verifier,
            state: KeyState::new(&derived),
            sealer: Sealer::new(&derived),
            policy,
            server,
        }
    })
}

/// Which of steps 1–3 rejects `data`, by the rules of PROTOCOL.md §7, or `None` if it passes
/// them.
fn early_reject(f: &Fixture, data: &[u8]) -> Option<Reject> {
    // Version 2 (PROTOCOL.md §17) has its own length; this verifier holds no public key.
    if data.first() == Some(&0x02) {
        return Some(if data.len() == knock_shared::wire2::PACKET2_LEN {
            Reject::UnknownKey
        } else {
            Reject::BadLength
        });
    }
    if data.first() != Some(&0x01) {
        return Some(Reject::BadVersion);
    }
    if data.len() != PACKET {
        return Some(Reject::BadLength);
    }
    if data[1..9] != f.sealer.id() {
        return Some(Reject::UnknownKey);
    }
    if f.sealer.hmac(&data[..MACED]) != data[MACED..] {
        return Some(Reject::BadHmac);
    }
    None
}

/// Checks a packet that passed steps 1–3; returns whether it was accepted.
fn check_authentic(f: &Fixture, src: IpAddr, packet: &[u8; PACKET]) -> bool {
    let mut cache = ReplayCache::new(4);
    let result = f.verifier.verify(NOW, src, packet, &mut cache);
    let expected_body = f.sealer.open(packet).map(|b| RawBody::decode(&b).check());
    match &result {
        Err(r) => {
            assert!(cache.is_empty(), "reject {r:?} touched the cache");
            assert!(
                !matches!(
                    r,
                    Reject::BadVersion | Reject::BadLength | Reject::UnknownKey | Reject::BadHmac
                ),
                "authentic packet rejected as {r:?}"
            );
            assert_eq!(RejectKind::ALL[r.kind().index()], r.kind());
            assert!(!r.to_string().is_empty());
            match expected_body {
                None => assert_eq!(r, &Reject::BadAead, "tag does not open"),
                Some(Err(e)) => assert_eq!(r, &Reject::Malformed(e)),
                Some(Ok(())) => assert!(
                    !matches!(r, Reject::BadAead | Reject::Malformed(_)),
                    "valid body rejected as {r:?}"
                ),
            }
            false
        }
        Ok(acc) => {
            assert_eq!(expected_body, Some(Ok(())), "accepted an invalid body");
            check_accepted(f, src, packet, acc, &mut cache);
            true
        }
    }
}

fn check_accepted(
    f: &Fixture,
    src: IpAddr,
    packet: &[u8; PACKET],
    acc: &knock_shared::verify::Accepted,
    cache: &mut ReplayCache,
) {
    let v = &f.verifier;
    let digest = sha256(packet);
    assert_eq!(acc.digest(), &digest);
    assert_eq!(cache.len(), 1);
    assert!(cache.contains(&digest));
    assert_eq!(acc.door(), DOOR);
    assert_eq!(v.key_name(acc.key()), "vector");

    let req: &Request = acc.request();
    assert_eq!(req.server, f.server);
    assert!(
        NOW - WINDOW <= req.timestamp && req.timestamp <= NOW + WINDOW,
        "accepted timestamp {} outside the window",
        req.timestamp
    );
    for p in req.ports.iter() {
        assert!(f.policy.contains(&p), "accepted port {p} not in the policy");
    }
    assert!((1..=16).contains(&req.ports.len()));
    assert!(
        admissible(acc.addr()),
        "accepted {} for admission",
        acc.addr()
    );
    match req.admit {
        Admit::Source => assert_eq!(acc.addr(), canonical(src)),
        Admit::Addr(a) => {
            assert_eq!(canonical(a), canonical(src), "address mismatch accepted");
            assert_eq!(acc.addr(), canonical(a));
        }
    }

    // Re-encode: XChaCha20 is a stream cipher, so sealing with zero padding reveals the key
    // stream over the padding, and with it the packet's padding.
    let mut nonce = [0u8; 24];
    nonce.copy_from_slice(&packet[9..HEADER]);
    let zero = seal(&f.state, req, &nonce, &[0; PADDING_LEN]);
    assert_eq!(
        zero[..HEADER + PADDING_AT],
        packet[..HEADER + PADDING_AT],
        "the accepted body is not in canonical form"
    );
    let mut padding = [0u8; PADDING_LEN];
    for (i, b) in padding.iter_mut().enumerate() {
        let at = HEADER + PADDING_AT + i;
        *b = packet[at] ^ zero[at];
    }
    let body = req.encode_body(&padding);
    assert_eq!(Request::decode_body(&body).as_ref(), Ok(req));
    assert_eq!(&seal(&f.state, req, &nonce, &padding), packet, "re-seal");
    assert_eq!(
        &f.sealer.seal_body(&body, &nonce),
        packet,
        "independent re-seal"
    );
    assert_eq!(f.sealer.open(packet), Some(body));

    // The same bytes again: a replay, whatever the source and the time.
    for again in SOURCES {
        for now in [NOW, NOW + WINDOW, NOW - 3600, u64::MAX] {
            assert_eq!(
                v.verify(now, again, packet, cache),
                Err(Reject::Replay),
                "second verify from {again} at {now}"
            );
        }
    }
    assert_eq!(cache.len(), 1);
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let early = early_reject(f, data);
    for src in SOURCES {
        let mut cache = ReplayCache::new(4);
        let result = f.verifier.verify(NOW, src, data, &mut cache);
        match early {
            Some(r) => {
                assert_eq!(result, Err(r), "steps 1-3");
                assert!(cache.is_empty());
            }
            None => {
                let packet: &[u8; PACKET] = data.try_into().expect("length checked");
                check_authentic(f, src, packet);
            }
        }
    }
    // Reach the later steps with the fuzzer's bytes: the same packet with its HMAC
    // recomputed (only a key holder could send it; it must still pass steps 1-3).
    if data.len() == PACKET && data[0] == 0x01 && data[1..9] == f.sealer.id() {
        let mut packet = [0u8; PACKET];
        packet.copy_from_slice(data);
        let mac = f.sealer.hmac(&packet[..MACED]);
        packet[MACED..].copy_from_slice(&mac);
        assert_eq!(early_reject(f, &packet), None);
        check_authentic(f, SOURCES[0], &packet);
    }
});
