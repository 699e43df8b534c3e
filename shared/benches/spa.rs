//! Criterion benchmarks of the SPA core: the costs an attacker and a user impose on the
//! daemon. Figures go into docs/BENCHMARKS.md (`cargo bench -p knock-shared --bench spa`).

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, Criterion};
use knock_keys::{MasterKey, NamedKey};
use knock_shared::replay::ReplayCache;
use knock_shared::types::PortSpec;
use knock_shared::verify::{KeyPolicy, Verifier};
use knock_shared::wire::{
    seal, Action, Admit, KeyState, PortList, Request, ServerId, NONCE_LEN, PACKET_LEN, PADDING_LEN,
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

fn bench(c: &mut Criterion) {
    let (v, key, req, src) = setup();
    let state = KeyState::new(&key.derive());
    let nonce = [7u8; NONCE_LEN];
    let pad = [0u8; PADDING_LEN];

    c.bench_function("encode (seal)", |b| {
        b.iter(|| seal(black_box(&state), black_box(&req), &nonce, &pad))
    });

    let packet = seal(&state, &req, &nonce, &pad);
    c.bench_function("verify valid packet", |b| {
        b.iter_batched_ref(
            || ReplayCache::new(16),
            |cache| {
                v.verify(NOW, src, black_box(&packet), cache)
                    .expect("valid")
            },
            criterion::BatchSize::SmallInput,
        )
    });

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
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let garbage: Vec<[u8; PACKET_LEN]> = (0..256)
        .map(|_| {
            let mut p = [0u8; PACKET_LEN];
            for b in p.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            p
        })
        .collect();
    let mut i = 0;
    c.bench_function("decode random bytes", |b| {
        b.iter(|| {
            i = (i + 1) % garbage.len();
            v.verify(NOW, src, black_box(&garbage[i]), &mut cache)
                .is_err()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
