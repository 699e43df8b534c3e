//! Structure-aware SPA fuzzing: an `arbitrary` request is sealed with a real key, optionally
//! mutated after sealing, and verified.
//!
//! Checks:
//!
//! - the typed encoder refuses what the wire cannot carry (`PortSpec::new` for protocol
//!   numbers other than 6/17 and port 0, `PortList::new` for 0 or more than 16 ports) by
//!   returning `None`, never by panicking; such requests are then put on the wire by hand;
//! - `Request::encode_body` equals an independent encoder written from PROTOCOL.md §5, and
//!   `wire::seal` equals an independent sealer written from §6, byte for byte;
//! - `Request::decode_body` refuses exactly the bodies that break §5, with the first broken
//!   rule, and what it accepts re-encodes to the same bytes;
//! - an unmutated packet gets exactly the outcome the rules of §7 give (unknown key, malformed
//!   body, wrong server, stale/future with the right age, address mismatch, an address that
//!   cannot be admitted, the first port not allowed), and when accepted, exactly the fields that were sealed, the resolved address
//!   and the key's door; a second verify is `Replay`;
//! - any change to the sealed bytes (bit flips, byte writes, truncation, extension, another
//!   key's id) is rejected by steps 1–3 with the documented reason;
//! - a reject never touches the replay cache.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use knock_fuzz::{admissible, canonical, named_key, RawBody, Sealer, NOW, PACKET, WINDOW};
use knock_keys::{DerivedKeys, MasterKey};
use knock_shared::replay::ReplayCache;
use knock_shared::types::{PortSpec, Proto};
use knock_shared::verify::{KeyPolicy, Reject, Verifier};
use knock_shared::wire::{seal, Action, Admit, KeyState, PortList, Request, ServerId};
use libfuzzer_sys::fuzz_target;

/// Ports both registered keys may open.
const POLICY: [(Proto, u16); 7] = [
    (Proto::Tcp, 22),
    (Proto::Udp, 53),
    (Proto::Tcp, 443),
    (Proto::Tcp, 2222),
    (Proto::Udp, 60000),
    (Proto::Tcp, 65535),
    (Proto::Udp, 1),
];

const FIXED_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const FIXED_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Clock {
    Fixed,
    Raw(u64),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Stamp {
    /// Seconds relative to the server's clock.
    Offset(i16),
    Raw(u64),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum AdmitIn {
    Source,
    /// The packet's own source address.
    SameAsSource,
    /// The source's IPv4 address as `::ffff:a.b.c.d` (kind 6).
    MappedSource,
    V4([u8; 4]),
    V6([u8; 16]),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum SourceIn {
    Fixed4,
    Fixed6,
    /// The fixed IPv4 source, seen as an IPv4-mapped IPv6 address.
    Mapped,
    V4([u8; 4]),
    V6([u8; 16]),
}

#[derive(Arbitrary, Debug, Clone)]
enum ServerIn {
    Ours,
    /// Our second identity.
    Alias,
    /// Our name in another case with blanks around it (the same identity).
    OursShouted,
    Other(String),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum PortIn {
    Allowed(u8),
    Raw { proto: u8, port: u16 },
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum KeyIn {
    /// Registered, `allow_nat = false`.
    Strict,
    /// Registered, `allow_nat = true`.
    Nat,
    /// Not registered.
    Unknown,
}

#[derive(Arbitrary, Debug, Clone)]
enum BodyIn {
    /// The request's encoding.
    Encoded,
    /// The encoding with one byte overwritten before sealing (only a key holder can do this).
    Patched { at: u8, value: u8 },
    /// Any 128 bytes.
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug, Clone)]
enum Mutation {
    FlipBit(u16),
    Xor {
        at: u8,
        value: u8,
    },
    Set {
        at: u8,
        value: u8,
    },
    Truncate(u8),
    Append(Vec<u8>),
    /// Writes a registered key's id (0: strict, 1: nat) over bytes 1..9.
    OtherKeyId(bool),
}

#[derive(Arbitrary, Debug, Clone)]
struct Input {
    now: Clock,
    timestamp: Stamp,
    close: bool,
    admit: AdmitIn,
    duration: u32,
    server: ServerIn,
    ports: Vec<PortIn>,
    nonce: [u8; 24],
    padding: [u8; 33],
    source: SourceIn,
    key: KeyIn,
    body: BodyIn,
    mutations: Vec<Mutation>,
}

struct KeyFixture {
    state: KeyState,
    sealer: Sealer,
    door: usize,
    name: &'static str,
    allow_nat: bool,
}

struct Fixture {
    verifier: Verifier,
    servers: Vec<ServerId>,
    keys: [KeyFixture; 3],
    policy: Vec<PortSpec>,
}

fn key_fixture(name: &'static str, byte: u8, door: usize, allow_nat: bool) -> KeyFixture {
    let derived: DerivedKeys = MasterKey::from_bytes([byte; 32]).derive();
    KeyFixture {
        state: KeyState::new(&derived),
        sealer: Sealer::new(&derived),
        door,
        name,
        allow_nat,
    }
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let servers = vec![
            ServerId::from_name("gateway.example"),
            ServerId::from_name("gw"),
        ];
        let policy: Vec<PortSpec> = POLICY
            .iter()
            .map(|&(proto, port)| PortSpec::new(proto, port).expect("non-zero"))
            .collect();
        let mut verifier = Verifier::new(servers.clone(), WINDOW);
        let keys = [
            key_fixture("strict", 0x11, 1, false),
            key_fixture("nat", 0x22, 2, true),
            key_fixture("unknown", 0x33, 3, false),
        ];
        for k in &keys[..2] {
            let byte = if k.allow_nat { 0x22 } else { 0x11 };
            let named = named_key(k.name, MasterKey::from_bytes([byte; 32]));
            let idx = verifier
                .add_key(
                    &named,
                    KeyPolicy {
                        ports: policy.clone(),
                        allow_nat: k.allow_nat,
                    },
                    k.door,
                )
                .expect("distinct keys");
            assert_eq!(verifier.key_name(idx), k.name);
        }
        Fixture {
            verifier,
            servers,
            keys,
            policy,
        }
    })
}

fn source(s: SourceIn) -> IpAddr {
    match s {
        SourceIn::Fixed4 => FIXED_V4.into(),
        SourceIn::Fixed6 => FIXED_V6.into(),
        SourceIn::Mapped => FIXED_V4.to_ipv6_mapped().into(),
        SourceIn::V4(b) => Ipv4Addr::from(b).into(),
        SourceIn::V6(b) => Ipv6Addr::from(b).into(),
    }
}

fn admit(a: AdmitIn, src: IpAddr) -> Admit {
    match a {
        AdmitIn::Source => Admit::Source,
        AdmitIn::SameAsSource => Admit::Addr(src),
        AdmitIn::MappedSource => match canonical(src) {
            IpAddr::V4(v4) => Admit::Addr(v4.to_ipv6_mapped().into()),
            v6 => Admit::Addr(v6),
        },
        AdmitIn::V4(b) => Admit::Addr(Ipv4Addr::from(b).into()),
        AdmitIn::V6(b) => Admit::Addr(Ipv6Addr::from(b).into()),
    }
}

/// The body fields of PROTOCOL.md §5 for the input, valid or not.
fn raw_body(
    input: &Input,
    timestamp: u64,
    admit: Admit,
    server: ServerId,
    ports: &[(u8, u16)],
) -> RawBody {
    let (addr_kind, addr) = match admit {
        Admit::Source => (0, [0; 16]),
        Admit::Addr(IpAddr::V4(a)) => {
            let mut addr = [0; 16];
            addr[..4].copy_from_slice(&a.octets());
            (4, addr)
        }
        Admit::Addr(IpAddr::V6(a)) => (6, a.octets()),
    };
    let mut slots = [(0, 0); 16];
    for (slot, p) in slots.iter_mut().zip(ports) {
        *slot = *p;
    }
    RawBody {
        timestamp,
        action: if input.close { 2 } else { 1 },
        addr_kind,
        addr,
        duration: input.duration,
        server: server.0,
        count: u8::try_from(ports.len()).unwrap_or(u8::MAX),
        slots,
        padding: input.padding,
    }
}

/// What §7 says the verifier must answer for an authentic, unmutated packet.
fn model(
    f: &Fixture,
    key: &KeyFixture,
    now: u64,
    src: IpAddr,
    body: &[u8; 128],
) -> Result<(Request, IpAddr), Reject> {
    let raw = RawBody::decode(body);
    raw.check().map_err(Reject::Malformed)?;
    let request = Request::decode_body(body).expect("a body that follows §5 decodes");
    assert_eq!(&request.encode_body(&raw.padding), body, "canonical form");
    if !f.servers.contains(&request.server) {
        return Err(Reject::WrongServer);
    }
    let t = request.timestamp;
    if t < now.saturating_sub(WINDOW) {
        return Err(Reject::Stale { age: now - t });
    }
    if t > now.saturating_add(WINDOW) {
        return Err(Reject::Future { ahead: t - now });
    }
    let addr = match request.admit {
        Admit::Source if !key.allow_nat => return Err(Reject::SourceModeNotAllowed),
        Admit::Source => canonical(src),
        Admit::Addr(a) => {
            if canonical(a) != canonical(src) && !key.allow_nat {
                return Err(Reject::AddressMismatch);
            }
            canonical(a)
        }
    };
    if !admissible(addr) {
        return Err(Reject::Unadmissible(addr));
    }
    if let Some(p) = request.ports.iter().find(|p| !f.policy.contains(p)) {
        return Err(Reject::PortNotAllowed(p));
    }
    Ok((request, addr))
}

fn mutate(packet: &[u8], mutations: &[Mutation], f: &Fixture) -> Vec<u8> {
    let mut q = packet.to_vec();
    for m in mutations.iter().take(8) {
        match m {
            Mutation::FlipBit(bit) if !q.is_empty() => {
                let bit = usize::from(*bit) % (q.len() * 8);
                q[bit / 8] ^= 1 << (bit % 8);
            }
            Mutation::Xor { at, value } if !q.is_empty() => {
                let at = usize::from(*at) % q.len();
                q[at] ^= value;
            }
            Mutation::Set { at, value } if !q.is_empty() => {
                let at = usize::from(*at) % q.len();
                q[at] = *value;
            }
            Mutation::Truncate(len) => q.truncate(usize::from(*len)),
            Mutation::Append(bytes) => q.extend(bytes.iter().take(64)),
            Mutation::OtherKeyId(nat) if q.len() >= 9 => {
                let id = f.keys[usize::from(*nat)].sealer.id();
                q[1..9].copy_from_slice(&id);
            }
            _ => {}
        }
    }
    q
}

fuzz_target!(|input: Input| {
    let f = fixture();
    let key = &f.keys[match input.key {
        KeyIn::Strict => 0,
        KeyIn::Nat => 1,
        KeyIn::Unknown => 2,
    }];
    let now = match input.now {
        Clock::Fixed => NOW,
        Clock::Raw(t) => t,
    };
    let timestamp = match input.timestamp {
        Stamp::Offset(d) => now.saturating_add_signed(i64::from(d)),
        Stamp::Raw(t) => t,
    };
    let src = source(input.source);
    let admit = admit(input.admit, src);
    let server = match &input.server {
        ServerIn::Ours => f.servers[0],
        ServerIn::Alias => f.servers[1],
        ServerIn::OursShouted => ServerId::from_name(" \tGATEWAY.Example \n"),
        ServerIn::Other(name) => ServerId::from_name(name),
    };

    // The typed encoder: invalid values are refused with None, never a panic.
    let mut wire_ports: Vec<(u8, u16)> = Vec::new();
    let mut specs: Vec<PortSpec> = Vec::new();
    let mut all_valid = true;
    for p in input.ports.iter().take(20) {
        let (proto, port) = match *p {
            PortIn::Allowed(i) => {
                let (proto, port) = POLICY[usize::from(i) % POLICY.len()];
                (proto.number(), port)
            }
            PortIn::Raw { proto, port } => (proto, port),
        };
        wire_ports.push((proto, port));
        match Proto::from_number(proto) {
            None => {
                assert!(proto != 6 && proto != 17, "Proto::from_number({proto})");
                all_valid = false;
            }
            Some(pr) => {
                assert_eq!(pr.number(), proto);
                match PortSpec::new(pr, port) {
                    Some(spec) => {
                        assert_eq!(spec.port.get(), port);
                        specs.push(spec);
                    }
                    None => {
                        assert_eq!(port, 0, "PortSpec::new refused port {port}");
                        all_valid = false;
                    }
                }
            }
        }
    }
    let list = PortList::new(&specs);
    assert_eq!(
        list.is_some(),
        (1..=16).contains(&specs.len()),
        "PortList::new with {} ports",
        specs.len()
    );
    let request = match list {
        Some(ports) if all_valid => {
            assert_eq!(ports.len(), specs.len());
            assert!(ports.iter().eq(specs.iter().copied()));
            Some(Request {
                timestamp,
                action: if input.close {
                    Action::Close
                } else {
                    Action::Open
                },
                admit,
                duration: input.duration,
                server,
                ports,
            })
        }
        _ => None,
    };

    // The body: the request's encoding (checked against the reference), or bytes that the
    // typed encoder cannot produce.
    let reference = raw_body(&input, timestamp, admit, server, &wire_ports).encode();
    if let Some(r) = &request {
        assert_eq!(
            r.encode_body(&input.padding),
            reference,
            "encode_body vs §5"
        );
    }
    let body: [u8; 128] = match &input.body {
        BodyIn::Encoded => reference,
        BodyIn::Patched { at, value } => {
            let mut b = reference;
            b[usize::from(*at) % 128] = *value;
            b
        }
        BodyIn::Raw(bytes) => {
            let mut b = [0u8; 128];
            for (d, s) in b.iter_mut().zip(bytes) {
                *d = *s;
            }
            b
        }
    };
    let spec_verdict = RawBody::decode(&body).check();
    match Request::decode_body(&body) {
        Ok(r) => {
            assert_eq!(
                spec_verdict,
                Ok(()),
                "decode_body accepted a body §5 refuses"
            );
            assert_eq!(r.encode_body(&RawBody::decode(&body).padding), body);
            if matches!(input.body, BodyIn::Encoded) {
                assert_eq!(Some(r), request, "decode(encode(request)) == request");
            }
        }
        Err(e) => assert_eq!(spec_verdict, Err(e), "decode_body's first error"),
    }

    let packet = key.sealer.seal_body(&body, &input.nonce);
    if let (Some(r), BodyIn::Encoded) = (&request, &input.body) {
        assert_eq!(
            seal(&key.state, r, &input.nonce, &input.padding),
            packet,
            "wire::seal vs the independent sealer"
        );
    }

    let mutated = mutate(&packet, &input.mutations, f);
    let mut cache = ReplayCache::new(8);
    let result = f.verifier.verify(now, src, &mutated, &mut cache);

    if mutated != packet {
        let registered = [f.keys[0].sealer.id(), f.keys[1].sealer.id()];
        // A first byte of 0x02 is version 2 (PROTOCOL.md §17), with its own length; this
        // verifier holds no public key.
        let want = if mutated.first() == Some(&0x02) {
            if mutated.len() == knock_shared::wire2::PACKET2_LEN {
                Reject::UnknownKey
            } else {
                Reject::BadLength
            }
        } else if mutated.first() != Some(&0x01) {
            Reject::BadVersion
        } else if mutated.len() != PACKET {
            Reject::BadLength
        } else if !registered.iter().any(|id| mutated[1..9] == *id) {
            Reject::UnknownKey
        } else {
            Reject::BadHmac
        };
        assert_eq!(result.map(|_| ()), Err(want), "mutated packet");
        assert!(cache.is_empty());
        return;
    }

    let expected = if input.key == KeyIn::Unknown {
        Err(Reject::UnknownKey)
    } else {
        model(f, key, now, src, &body)
    };
    match (&result, &expected) {
        (Ok(acc), Ok((req, addr))) => {
            assert_eq!(acc.request(), req);
            if let (Some(sealed), BodyIn::Encoded) = (&request, &input.body) {
                assert_eq!(acc.request(), sealed, "accepted fields == sealed fields");
            }
            assert_eq!(acc.addr(), *addr);
            assert_eq!(acc.door(), key.door);
            assert_eq!(f.verifier.key_name(acc.key()), key.name);
            assert_eq!(acc.digest(), &knock_fuzz::sha256(&packet));
            assert_eq!(cache.len(), 1);
            assert_eq!(
                f.verifier.verify(now, src, &packet, &mut cache).map(|_| ()),
                Err(Reject::Replay)
            );
        }
        (Err(got), Err(want)) => {
            assert_eq!(got, want);
            assert!(cache.is_empty(), "reject {got:?} touched the cache");
            // Rejects are stateless: the same answer again.
            assert_eq!(
                f.verifier.verify(now, src, &packet, &mut cache).map(|_| ()),
                Err(*want)
            );
        }
        _ => panic!("verify gave {result:?}, the rules give {expected:?}"),
    }
});
