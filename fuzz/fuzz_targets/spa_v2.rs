//! Raw bytes → `Verifier::verify`, with a verifier that holds one public key, the server's
//! X25519 key and one shared key (`V2Fixture`: the keys of the protocol vectors).
//!
//! The input is one UDP payload, verified at a fixed time with a fresh replay cache. Checks:
//!
//! - the steps before the signature give exactly the documented reject (docs/PROTOCOL.md
//!   part II, computed here independently): bad version (a first byte other than 0x01 and
//!   0x02), bad length, unknown key (an id that is not the client's for the epochs around
//!   now), bad pre-check;
//! - a packet that passes them is `BadSignature` exactly when the client's Ed25519 signature
//!   over "knock-spa v2 signature" ‖ server key ‖ bytes 0..185 does not verify
//!   (`ClientPublic::verify`, on the message built here);
//! - anything accepted is such a signed packet: its request is bound to our server, within
//!   the window, asks for allowed ports and the source's address, comes from the public
//!   key's door; the cache holds exactly its SHA-256, and a second verify is `Replay`;
//! - a reject leaves the replay cache empty;
//! - to reach the signature check with the fuzzer's bytes, a 265-byte version-2 input is
//!   also verified with the current epoch's key id and a recomputed pre-check (what a thief
//!   of the server's files could send): then it is never refused before the signature.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;

use knock_fuzz::{sha256, v2_key_id, V2Fixture, EPOCH, NOW, PACKET2, WINDOW};
use knock_shared::replay::ReplayCache;
use knock_shared::verify::Reject;
use knock_shared::wire::Admit;
use libfuzzer_sys::fuzz_target;

const SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));

fn fixture() -> &'static V2Fixture {
    static F: OnceLock<V2Fixture> = OnceLock::new();
    F.get_or_init(V2Fixture::new)
}

/// Verifies `data` and checks the verdict; returns whether it was accepted.
fn check(f: &V2Fixture, data: &[u8]) -> bool {
    let mut cache = ReplayCache::new(4);
    let result = f.verifier.verify(NOW, SOURCE, data, &mut cache);
    if let Err(r) = &result {
        assert!(cache.is_empty(), "reject {r:?} touched the cache");
    }
    match f.early_reject(NOW, data) {
        Some(r) => {
            assert_eq!(result.as_ref().err(), Some(&r), "steps 1-3");
            return false;
        }
        None if data[0] == 0x01 => {
            // A right version-1 HMAC: only the vector key's holder can make one.
            if let Err(r) = &result {
                assert!(
                    !matches!(
                        r,
                        Reject::BadVersion
                            | Reject::BadLength
                            | Reject::UnknownKey
                            | Reject::BadHmac
                    ),
                    "authentic version-1 packet rejected as {r:?}"
                );
            }
            return result.is_ok();
        }
        None => {}
    }
    let signed = f.signature_ok(data);
    let acc = match result {
        Err(Reject::BadSignature) => {
            assert!(!signed, "a valid signature refused");
            return false;
        }
        Err(r) => {
            assert!(signed, "{r:?} for a packet whose signature does not verify");
            assert!(
                !matches!(
                    r,
                    Reject::BadVersion
                        | Reject::BadLength
                        | Reject::UnknownKey
                        | Reject::BadPrecheck
                        | Reject::BadHmac
                ),
                "a packet past the pre-check refused as {r:?}"
            );
            return false;
        }
        Ok(acc) => acc,
    };
    assert!(signed, "accepted a packet whose signature does not verify");
    let packet: &[u8; PACKET2] = data.try_into().expect("length checked");
    assert_eq!(acc.door(), V2Fixture::PUBLIC_DOOR);
    assert!(f.verifier.is_public_key(acc.key()));
    assert_eq!(f.verifier.key_name(acc.key()), "vector2");
    let digest = sha256(packet);
    assert_eq!(acc.digest(), &digest);
    assert_eq!(cache.len(), 1);
    assert!(cache.contains(&digest));
    let req = acc.request();
    assert_eq!(req.server, f.server_id);
    assert!(
        NOW - WINDOW <= req.timestamp && req.timestamp <= NOW + WINDOW,
        "accepted timestamp {} outside the window",
        req.timestamp
    );
    assert!(req.ports.iter().all(|p| f.policy.contains(&p)));
    assert_eq!(req.admit, Admit::Addr(SOURCE));
    assert_eq!(acc.addr(), SOURCE);
    assert_eq!(
        f.verifier.verify(NOW, SOURCE, packet, &mut cache),
        Err(Reject::Replay),
        "second verify"
    );
    true
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    check(f, data);
    if data.len() == PACKET2 && data[0] == 0x02 {
        let mut p = [0u8; PACKET2];
        p.copy_from_slice(data);
        p[1..9].copy_from_slice(&v2_key_id(f.precheck_key(), NOW / EPOCH));
        f.fix_precheck(&mut p);
        assert_eq!(f.early_reject(NOW, &p), None);
        check(f, &p);
    }
});
