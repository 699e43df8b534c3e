//! Structure-aware version-2 fuzzing: an `arbitrary` request is sealed with `wire2::seal2`
//! (the keys of `V2Fixture`), mutated, and verified at an `arbitrary` server time.
//!
//! Checks:
//!
//! - `seal2` writes version 0x02, the key id of the timestamp's epoch and the pre-check
//!   (both computed here from docs/PROTOCOL.md part II), and a signature `ClientPublic::verify`
//!   accepts;
//! - the unmutated packet gets exactly the outcome the rules give: unknown key when the
//!   timestamp's epoch is not one of E-1, E, E+1 around the server's clock, stale or future
//!   with the right age, otherwise accepted with exactly the sealed request, the public key's
//!   door and the packet's SHA-256 in the cache; a second verify is `Replay`;
//! - a mutated packet (bit flips, byte writes, truncation, extension, another version byte,
//!   the key id of another epoch or of the shared key) is refused with the reject of the
//!   region it changed: byte 0 → bad version, unless it became 0x01 (bad length); a change in
//!   bytes 1..9 → unknown key, unless it wrote another id the server knows (bad pre-check);
//!   any other byte → bad pre-check; another length → bad length; and equally by the
//!   content reference of `V2Fixture::early_reject`;
//! - with the pre-check rewritten after the change (a holder of the door's pre-check key,
//!   e.g. a thief of the server's files): `BadSignature` for any change before byte 249;
//! - signed again as well (the client itself): `BadAead` for any change before byte 185;
//! - a reject never touches the replay cache.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use knock_fuzz::{
    sha256, v2_key_id, v2_precheck, V2Fixture, EPOCH, NOW, PACKET2, PRECHECKED2, SIGNED2, WINDOW,
};
use knock_shared::replay::ReplayCache;
use knock_shared::verify::{Accepted, Reject};
use knock_shared::wire::{Action, Admit, PortList, Request};
use knock_shared::wire2::seal2;
use libfuzzer_sys::fuzz_target;

const SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Stamp {
    /// Seconds relative to the server's clock (up to about 9 epochs either way).
    Offset(i16),
    Raw(u64),
}

#[derive(Arbitrary, Debug, Clone)]
enum Mutation {
    FlipBit(u16),
    Xor {
        at: u16,
        value: u8,
    },
    Set {
        at: u16,
        value: u8,
    },
    Truncate(u16),
    Append(Vec<u8>),
    Version(u8),
    /// Writes the client's key id for the epoch E + k (k in -2..=2) over bytes 1..9.
    EpochId(i8),
    /// Writes the shared key's (version-1) id over bytes 1..9.
    SharedKeyId,
}

/// Who rewrites the packet after the mutations.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    Nobody,
    /// Rewrites the pre-check.
    Precheck,
    /// Signs again and rewrites the pre-check.
    Client,
}

#[derive(Arbitrary, Debug, Clone)]
struct Input {
    /// Server time: NOW plus this many seconds.
    clock: i16,
    stamp: Stamp,
    close: bool,
    duration: u32,
    /// Indices into the policy; 1 to 16 of them are requested.
    ports: Vec<u8>,
    ephemeral: [u8; 32],
    padding: [u8; 33],
    mutations: Vec<Mutation>,
    holder: Holder,
}

fn fixture() -> &'static V2Fixture {
    static F: OnceLock<V2Fixture> = OnceLock::new();
    F.get_or_init(V2Fixture::new)
}

fn request(f: &V2Fixture, now: u64, input: &Input) -> Request {
    let timestamp = match input.stamp {
        Stamp::Offset(d) => now.saturating_add_signed(i64::from(d)),
        Stamp::Raw(t) => t,
    };
    let mut ports: Vec<_> = input
        .ports
        .iter()
        .take(16)
        .map(|&i| f.policy[usize::from(i) % f.policy.len()])
        .collect();
    if ports.is_empty() {
        ports.push(f.policy[0]);
    }
    Request {
        timestamp,
        action: if input.close {
            Action::Close
        } else {
            Action::Open
        },
        admit: Admit::Addr(SOURCE),
        duration: input.duration,
        server: f.server_id,
        ports: PortList::new(&ports).expect("1 to 16 ports"),
    }
}

/// The outcome for the unmutated packet: `None` when it must be accepted.
fn expected_sealed(f: &V2Fixture, now: u64, req: &Request) -> Option<Reject> {
    let t = req.timestamp;
    if !f.known_id(now, &v2_key_id(f.precheck_key(), t / EPOCH)[..]) {
        return Some(Reject::UnknownKey);
    }
    if t.saturating_add(WINDOW) < now {
        return Some(Reject::Stale { age: now - t });
    }
    if t > now.saturating_add(WINDOW) {
        return Some(Reject::Future { ahead: t - now });
    }
    None
}

/// The reject by the region the mutations changed, for a packet no key holder rewrote.
fn expected_by_region(f: &V2Fixture, now: u64, sealed: &[u8], p: &[u8]) -> Option<Reject> {
    match p.first() {
        None => Some(Reject::BadVersion),
        Some(&b) if b != sealed[0] => {
            if b == 0x01 && p.len() != 209 {
                Some(Reject::BadLength)
            } else if b == 0x01 {
                // A 209-byte version-1 packet: steps 1-3 of version 1 judge it.
                f.early_reject(now, p)
            } else {
                Some(Reject::BadVersion)
            }
        }
        Some(_) if p.len() != PACKET2 => Some(Reject::BadLength),
        Some(_) if p[1..9] != sealed[1..9] && !f.known_id(now, &p[1..9]) => {
            Some(Reject::UnknownKey)
        }
        Some(_) if p != sealed => Some(Reject::BadPrecheck),
        Some(_) => None,
    }
}

fn mutate(f: &V2Fixture, now: u64, p: &mut Vec<u8>, m: &Mutation) {
    let len = p.len();
    match *m {
        Mutation::FlipBit(bit) if len > 0 => {
            let bit = usize::from(bit) % (len * 8);
            p[bit / 8] ^= 1 << (bit % 8);
        }
        Mutation::Xor { at, value } if len > 0 => p[usize::from(at) % len] ^= value,
        Mutation::Set { at, value } if len > 0 => p[usize::from(at) % len] = value,
        Mutation::Truncate(n) => p.truncate(usize::from(n) % (len + 1)),
        Mutation::Append(ref extra) => p.extend_from_slice(extra),
        Mutation::Version(v) if len > 0 => p[0] = v,
        Mutation::EpochId(k) if len >= 9 => {
            let e = (now / EPOCH).saturating_add_signed(i64::from(k.clamp(-2, 2)));
            p[1..9].copy_from_slice(&v2_key_id(f.precheck_key(), e));
        }
        Mutation::SharedKeyId if len >= 9 => p[1..9].copy_from_slice(&f.v1.id()),
        _ => {}
    }
}

fn check_accepted(
    f: &V2Fixture,
    now: u64,
    req: &Request,
    p: &[u8],
    acc: &Accepted,
    cache: &mut ReplayCache,
) {
    assert_eq!(acc.request(), req, "accepted another request");
    assert_eq!(acc.door(), V2Fixture::PUBLIC_DOOR);
    assert!(f.verifier.is_public_key(acc.key()));
    assert_eq!(acc.addr(), SOURCE);
    let digest = sha256(p);
    assert_eq!(acc.digest(), &digest);
    assert_eq!(cache.len(), 1);
    assert!(cache.contains(&digest));
    assert_eq!(
        f.verifier.verify(now, SOURCE, p, cache),
        Err(Reject::Replay)
    );
    assert_eq!(cache.len(), 1);
}

/// Verifies `p` with a fresh cache and checks it gets `expected` (`None`: accepted).
fn verify_expect(
    f: &V2Fixture,
    now: u64,
    req: &Request,
    p: &[u8],
    expected: Option<Reject>,
    what: &str,
) {
    let mut cache = ReplayCache::new(4);
    match (f.verifier.verify(now, SOURCE, p, &mut cache), expected) {
        (Ok(acc), None) => check_accepted(f, now, req, p, &acc, &mut cache),
        (Err(r), Some(e)) => {
            assert_eq!(r, e, "{what}");
            assert!(cache.is_empty(), "reject {r:?} touched the cache");
        }
        (got, want) => panic!("{what}: got {got:?}, expected {want:?}"),
    }
}

fuzz_target!(|input: Input| {
    let f = fixture();
    let now = NOW.saturating_add_signed(i64::from(input.clock));
    let req = request(f, now, &input);
    let sealed = seal2(&f.client, &f.server, &req, input.ephemeral, &input.padding)
        .expect("the server key is not a low-order point");
    assert_eq!(sealed[0], 0x02);
    assert_eq!(
        sealed[1..9],
        v2_key_id(f.precheck_key(), req.timestamp / EPOCH)
    );
    assert_eq!(
        sealed[PRECHECKED2..],
        v2_precheck(f.precheck_key(), &sealed[..PRECHECKED2])
    );
    assert!(f.signature_ok(&sealed), "seal2's signature does not verify");
    let expected = expected_sealed(f, now, &req);
    verify_expect(f, now, &req, &sealed, expected.clone(), "sealed packet");

    if input.mutations.is_empty() {
        return;
    }
    let mut p = sealed.to_vec();
    for m in &input.mutations {
        mutate(f, now, &mut p, m);
    }
    let rewritable = p.len() == PACKET2 && p[0] == 0x02 && f.known_id(now, &p[1..9]);
    let want = match input.holder {
        Holder::Precheck if rewritable => {
            f.fix_precheck(&mut p);
            if p == sealed {
                expected
            } else {
                assert!(
                    !f.signature_ok(&p),
                    "a changed packet still carries a valid signature"
                );
                Some(Reject::BadSignature)
            }
        }
        Holder::Client if rewritable => {
            f.resign(&mut p);
            if p == sealed {
                expected
            } else {
                assert_ne!(p[..SIGNED2], sealed[..SIGNED2]);
                Some(Reject::BadAead)
            }
        }
        _ => {
            let by_region = expected_by_region(f, now, &sealed, &p);
            let by_content = f.early_reject(now, &p);
            if p == sealed {
                assert_eq!(by_region, None);
                expected
            } else {
                // The region rule is about a packet that passed steps 1-3 before the change.
                if expected != Some(Reject::UnknownKey) {
                    assert_eq!(by_region, by_content, "the two references disagree");
                }
                assert!(
                    by_content.is_some(),
                    "a changed packet passed the pre-check"
                );
                by_content
            }
        }
    };
    verify_expect(f, now, &req, &p, want, "mutated packet");
});
