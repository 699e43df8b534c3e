//! Criterion benchmarks of the SPA core: the costs an attacker and a user impose on the
//! daemon. Figures go into docs/BENCHMARKS.md (`cargo bench -p knock-shared --bench spa`;
//! `-- v2` for the version-2 ones only).

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, Criterion};
use knock_keys::public::{ServerPublic, ServerSecret, SigningKey};
use knock_keys::{MasterKey, NamedKey};
use knock_shared::replay::ReplayCache;
use knock_shared::types::PortSpec;
use knock_shared::verify::{KeyPolicy, Reject, Verifier};
use knock_shared::wire::{
    seal, Action, Admit, KeyState, PortList, Request, ServerId, NONCE_LEN, PACKET_LEN, PADDING_LEN,
};
use knock_shared::wire2::{
    precheck, seal2, PACKET2_LEN, PRECHECK_OFFSET, SIGNATURE_OFFSET, VERSION_2,
};

const NOW: u64 = 1_800_000_000;

fn setup() -> (Verifier, NamedKey, Request, IpAddr) {
    let key = NamedKey::new("bench", MasterKey::from_bytes([9; 32])).expect("name");
    let port: PortSpec = "22/tcp".parse().expect("port");
    // 100 keys, as a server with many clients would have.
    let mut v = Verifier::new(vec![ServerId::from_name("srv")], 60);
    for i in 0..100u8 {
        let k = NamedKey::new(
            &format!("k{i}"),
            MasterKey::from_bytes([i.wrapping_add(100); 32]),
        )
        .expect("name");
        let policy = KeyPolicy {
            ports: vec![port],
            allow_nat: false,
        };
        v.add_key(&k, policy, 0).expect("add");
    }
    v.add_key(
        &key,
        KeyPolicy {
            ports: vec![port],
            allow_nat: false,
        },
        0,
    )
    .expect("add");
    let src: IpAddr = "192.0.2.1".parse().expect("ip");
    let req = Request {
        timestamp: NOW,
        action: Action::Open,
        admit: Admit::Addr(src),
        duration: 0,
        server: ServerId::from_name("srv"),
        ports: PortList::new(&[port]).expect("ports"),
    };
    (v, key, req, src)
}

/// A version-2 verifier: the server's X25519 key, 100 other clients' public keys (300 ids in
/// the epoch map) and the bench client's; returns the client's key and the server's public key.
fn setup_v2(req: &Request) -> (Verifier, SigningKey, ServerPublic) {
    let server = ServerSecret::from_bytes([0x42; 32]);
    let server_public = server.public();
    let mut v = Verifier::new(vec![req.server], 60);
    v.set_server_key(server);
    let policy = || KeyPolicy {
        ports: req.ports.iter().collect(),
        allow_nat: false,
    };
    for i in 0..100u8 {
        let k = SigningKey::from_seed(&format!("p{i}"), [i.wrapping_add(100); 32]).expect("name");
        v.add_public_key(k.public(), policy(), 0).expect("add");
    }
    let key = SigningKey::from_seed("bench2", [9; 32]).expect("name");
    v.add_public_key(key.public(), policy(), 0).expect("add");
    (v, key, server_public)
}

/// Full verification of one valid packet, with a fresh replay cache for every iteration so
/// that each one is verified in full.
fn bench_accept(c: &mut Criterion, name: &str, v: &Verifier, src: IpAddr, packet: &[u8]) {
    c.bench_function(name, |b| {
        b.iter_batched_ref(
            || ReplayCache::new(16),
            |cache| v.verify(NOW, src, black_box(packet), cache).expect("valid"),
            criterion::BatchSize::SmallInput,
        )
    });
}

/// 256 pseudo-random packets of `len` bytes (xorshift64, fixed seed).
fn garbage<const N: usize>() -> Vec<[u8; N]> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..256)
        .map(|_| {
            let mut p = [0u8; N];
            for b in p.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            p
        })
        .collect()
}

fn bench_v2(c: &mut Criterion) {
    let (_, _, req, src) = setup();
    let (v, key, server) = setup_v2(&req);
    let eph = [7u8; 32];
    let pad = [0u8; PADDING_LEN];

    c.bench_function("v2 encode (seal2)", |b| {
        b.iter(|| seal2(black_box(&key), &server, black_box(&req), eph, &pad))
    });

    let packet = seal2(&key, &server, &req, eph, &pad).expect("server key is not low-order");
    bench_accept(c, "v2 verify valid packet", &v, src, &packet);

    let mut cache = ReplayCache::new(16);
    // Each reject is checked once first, so that every figure measures the step it names.
    let expect = |p: &[u8; PACKET2_LEN], r: Reject| {
        let mut fresh = ReplayCache::new(16);
        assert_eq!(v.verify(NOW, src, p, &mut fresh).err(), Some(r));
        assert!(fresh.is_empty(), "a reject touched the cache");
    };
    let mut i = 0;
    let random: Vec<[u8; PACKET2_LEN]> = garbage::<PACKET2_LEN>()
        .into_iter()
        .map(|mut p| {
            p[0] = VERSION_2;
            p
        })
        .collect();
    for p in &random {
        expect(p, Reject::UnknownKey);
    }
    c.bench_function("v2 reject random bytes (version 2, right length)", |b| {
        b.iter(|| {
            i = (i + 1) % random.len();
            v.verify(NOW, src, black_box(&random[i]), &mut cache)
                .is_err()
        })
    });

    let mut unknown = packet;
    unknown[1] ^= 0xff;
    expect(&unknown, Reject::UnknownKey);
    c.bench_function("v2 reject unknown key id", |b| {
        b.iter(|| v.verify(NOW, src, black_box(&unknown), &mut cache).is_err())
    });

    let mut bad_pre = packet;
    bad_pre[PACKET2_LEN - 1] ^= 1;
    expect(&bad_pre, Reject::BadPrecheck);
    c.bench_function("v2 reject bad pre-check", |b| {
        b.iter(|| v.verify(NOW, src, black_box(&bad_pre), &mut cache).is_err())
    });

    // What a holder of the door's pre-check key (a thief of the server's files) can send: a
    // right pre-check over a wrong signature, which costs the server one Ed25519 verify.
    let mut bad_sig = packet;
    bad_sig[SIGNATURE_OFFSET] ^= 1;
    let pre = precheck(key.public().precheck_key(), &bad_sig[..PRECHECK_OFFSET]);
    bad_sig[PRECHECK_OFFSET..].copy_from_slice(&pre);
    expect(&bad_sig, Reject::BadSignature);
    c.bench_function("v2 reject bad signature (right pre-check)", |b| {
        b.iter(|| v.verify(NOW, src, black_box(&bad_sig), &mut cache).is_err())
    });
}

fn bench(c: &mut Criterion) {
    let (v, key, req, src) = setup();
    let state = KeyState::new(&key.derive());
    let nonce = [7u8; NONCE_LEN];
    let pad = [0u8; PADDING_LEN];

    c.bench_function("encode (seal)", |b| {
        b.iter(|| seal(black_box(&state), black_box(&req), &nonce, &pad))
    });

    let packet = seal(&state, &req, &nonce, &pad);
    bench_accept(c, "verify valid packet", &v, src, &packet);

    let mut cache = ReplayCache::new(16);
    let mut unknown = packet;
    unknown[1] ^= 0xff;
    c.bench_function("reject unknown key id", |b| {
        b.iter(|| v.verify(NOW, src, black_box(&unknown), &mut cache).is_err())
    });

    let mut bad_hmac = packet;
    bad_hmac[PACKET_LEN - 1] ^= 1;
    c.bench_function("reject bad hmac", |b| {
        b.iter(|| {
            v.verify(NOW, src, black_box(&bad_hmac), &mut cache)
                .is_err()
        })
    });

    let mut replay_cache = ReplayCache::new(16);
    v.verify(NOW, src, &packet, &mut replay_cache)
        .expect("valid");
    c.bench_function("reject replay", |b| {
        b.iter(|| {
            v.verify(NOW, src, black_box(&packet), &mut replay_cache)
                .is_err()
        })
    });

    // Random bytes of the right length: most fail at the version byte or the key id.
    let garbage = garbage::<PACKET_LEN>();
    let mut i = 0;
    c.bench_function("decode random bytes", |b| {
        b.iter(|| {
            i = (i + 1) % garbage.len();
            v.verify(NOW, src, black_box(&garbage[i]), &mut cache)
                .is_err()
        })
    });
}

criterion_group!(benches, bench, bench_v2);
criterion_main!(benches);
