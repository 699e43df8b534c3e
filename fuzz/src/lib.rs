//! Helpers shared by the fuzz targets in `fuzz_targets/` and by `examples/gen_corpus.rs`.
//!
//! The reference code here is written from docs/PROTOCOL.md, not from `knock_shared::wire`:
//! an independent sealer (§6) and an independent body encoder/checker (§5), so that the
//! targets compare the real code against the specification instead of against itself; for
//! version 2 (part II), the key id per epoch and the pre-check MAC.

use std::net::IpAddr;

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{KeyInit, Tag, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use knock_keys::public::{ServerPublic, ServerSecret, SigningKey};
use knock_keys::{DerivedKeys, MasterKey, NamedKey};
use knock_shared::types::PortSpec;
use knock_shared::verify::{KeyPolicy, Reject, Verifier};
use knock_shared::wire::{BodyError, ServerId};
use sha2::{Digest, Sha256};

/// Server time used by the targets: within the window of all three protocol vectors
/// (docs/PROTOCOL.md §10, timestamps 1767225600..=1767225602).
pub const NOW: u64 = 1_767_225_601;
/// The verifier's timestamp window in seconds (the default).
pub const WINDOW: u64 = 60;
/// The server name of the protocol vectors.
pub const SERVER_NAME: &str = "gateway.example";

/// Packet layout (docs/PROTOCOL.md §4), written out again on purpose.
pub const PACKET: usize = 209;
/// Bytes 0..33: version, key id, nonce (the AEAD's associated data).
pub const HEADER: usize = 33;
/// Bytes 0..177 are covered by the HMAC.
pub const MACED: usize = 177;
/// Body plaintext length.
pub const BODY: usize = 128;
/// Offset of the padding in the body.
pub const PADDING_AT: usize = 95;

/// Version-2 packet layout (docs/PROTOCOL.md part II), written out again on purpose.
pub const PACKET2: usize = 265;
/// Bytes 0..41: version, key id, ephemeral key (the AEAD's associated data).
pub const HEADER2: usize = 41;
/// Offset of the Ed25519 signature; bytes 0..185 are signed.
pub const SIGNED2: usize = 185;
/// Offset of the pre-check; bytes 0..249 are covered by it.
pub const PRECHECKED2: usize = 249;
/// Seconds in a key-id epoch.
pub const EPOCH: u64 = 3600;

/// The Ed25519 seed of the version-2 vectors: bytes 00 01 .. 1f.
pub fn vector2_seed() -> [u8; 32] {
    std::array::from_fn(|i| i as u8)
}

/// The server's X25519 secret of the version-2 vectors: bytes 20 21 .. 3f.
pub fn vector2_server_secret() -> [u8; 32] {
    std::array::from_fn(|i| 0x20 + i as u8)
}

/// The ephemeral secret of version-2 vector `k` (1..=3): byte j = (0x40·k + j) mod 256.
pub fn vector2_ephemeral(k: u8) -> [u8; 32] {
    std::array::from_fn(|j| (0x40u8.wrapping_mul(k)).wrapping_add(j as u8))
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// kid(e) = HMAC(pre-check key, "knock-spa v2 key id" ‖ u64be(e))[0..8].
pub fn v2_key_id(precheck_key: &[u8], epoch: u64) -> [u8; 8] {
    let full = hmac_sha256(
        precheck_key,
        &[b"knock-spa v2 key id", &epoch.to_be_bytes()],
    );
    let mut id = [0u8; 8];
    id.copy_from_slice(&full[..8]);
    id
}

/// The pre-check field: HMAC(pre-check key, bytes 0..249)[0..16].
pub fn v2_precheck(precheck_key: &[u8], covered: &[u8]) -> [u8; 16] {
    let full = hmac_sha256(precheck_key, &[covered]);
    let mut pre = [0u8; 16];
    pre.copy_from_slice(&full[..16]);
    pre
}

/// A verifier as a server with both kinds of keys has it: the X25519 key of the version-2
/// vectors, their client's public key (door [`V2Fixture::PUBLIC_DOOR`]) and the shared key
/// of the version-1 vectors (door [`V2Fixture::SHARED_DOOR`]), both allowed the same ports;
/// with the reference for what the verifier must answer (docs/PROTOCOL.md part II).
pub struct V2Fixture {
    /// The verifier under test.
    pub verifier: Verifier,
    /// The client's signing key (seed 00..1f).
    pub client: SigningKey,
    /// The server's public key (from secret 20..3f).
    pub server: ServerPublic,
    /// The version-1 key, for the packets that go to the version-1 path.
    pub v1: Sealer,
    /// The ports both keys may open.
    pub policy: Vec<PortSpec>,
    /// The server identity.
    pub server_id: ServerId,
}

impl V2Fixture {
    /// The door of the public key.
    pub const PUBLIC_DOOR: usize = 2;
    /// The door of the shared key.
    pub const SHARED_DOOR: usize = 1;

    /// Builds the verifier.
    pub fn new() -> Self {
        let policy: Vec<PortSpec> = ["22/tcp", "53/udp", "2222/tcp"]
            .iter()
            .map(|p| p.parse().expect("port"))
            .collect();
        let server_id = ServerId::from_name(SERVER_NAME);
        let secret = ServerSecret::from_bytes(vector2_server_secret());
        let server = secret.public();
        let client = SigningKey::from_seed("vector2", vector2_seed()).expect("name");
        let shared = named_key("vector", vector_master());
        let mut verifier = Verifier::new(vec![server_id], WINDOW);
        verifier.set_server_key(secret);
        let pol = || KeyPolicy {
            ports: policy.clone(),
            allow_nat: false,
        };
        verifier
            .add_public_key(client.public(), pol(), Self::PUBLIC_DOOR)
            .expect("one public key");
        verifier
            .add_key(&shared, pol(), Self::SHARED_DOOR)
            .expect("one shared key");
        Self {
            verifier,
            client,
            server,
            v1: Sealer::new(&shared.derive()),
            policy,
            server_id,
        }
    }

    /// The pre-check key of the client.
    pub fn precheck_key(&self) -> &[u8] {
        self.client.public().precheck_key()
    }

    /// Whether `id` is the client's key id for an epoch the server looks up at `now`
    /// (E-1, E, E+1).
    pub fn known_id(&self, now: u64, id: &[u8]) -> bool {
        let e = now / EPOCH;
        [e.saturating_sub(1), e, e.saturating_add(1)]
            .iter()
            .any(|&k| v2_key_id(self.precheck_key(), k) == id)
    }

    /// Which of the steps before the signature rejects `data` at `now`, by the rules of
    /// PROTOCOL.md (§7 steps 1-3 for version 1, part II steps 1-3 for version 2), or `None`
    /// if it passes them.
    pub fn early_reject(&self, now: u64, data: &[u8]) -> Option<Reject> {
        match data.first() {
            Some(0x01) => {
                if data.len() != PACKET {
                    Some(Reject::BadLength)
                } else if data[1..9] != self.v1.id() {
                    Some(Reject::UnknownKey)
                } else if self.v1.hmac(&data[..MACED]) != data[MACED..] {
                    Some(Reject::BadHmac)
                } else {
                    None
                }
            }
            Some(0x02) => {
                if data.len() != PACKET2 {
                    Some(Reject::BadLength)
                } else if !self.known_id(now, &data[1..9]) {
                    Some(Reject::UnknownKey)
                } else if v2_precheck(self.precheck_key(), &data[..PRECHECKED2])
                    != data[PRECHECKED2..]
                {
                    Some(Reject::BadPrecheck)
                } else {
                    None
                }
            }
            _ => Some(Reject::BadVersion),
        }
    }

    /// The message a version-2 packet's signature is over: "knock-spa v2 signature" ‖ X ‖
    /// bytes 0..185.
    pub fn signed_message(&self, packet: &[u8]) -> Vec<u8> {
        let mut m = b"knock-spa v2 signature".to_vec();
        m.extend_from_slice(&self.server.0);
        m.extend_from_slice(&packet[..SIGNED2]);
        m
    }

    /// Whether a 265-byte packet carries the client's signature.
    pub fn signature_ok(&self, packet: &[u8]) -> bool {
        self.client
            .public()
            .verify(&self.signed_message(packet), &packet[SIGNED2..PRECHECKED2])
    }

    /// Writes a right pre-check over a 265-byte packet (what a holder of the door's pre-check
    /// key, e.g. a thief of the server's files, can do).
    pub fn fix_precheck(&self, packet: &mut [u8]) {
        let pre = v2_precheck(self.precheck_key(), &packet[..PRECHECKED2]);
        packet[PRECHECKED2..].copy_from_slice(&pre);
    }

    /// Signs a 265-byte packet again and writes its pre-check (what the client can do).
    pub fn resign(&self, packet: &mut [u8]) {
        let sig = self.client.sign(&self.signed_message(packet));
        packet[SIGNED2..PRECHECKED2].copy_from_slice(&sig);
        self.fix_precheck(packet);
    }
}

impl Default for V2Fixture {
    fn default() -> Self {
        Self::new()
    }
}

/// The master secret of the protocol vectors: bytes 00 01 .. 1f.
pub fn vector_master() -> MasterKey {
    let mut m = [0u8; 32];
    for (i, b) in m.iter_mut().enumerate() {
        *b = i as u8;
    }
    MasterKey::from_bytes(m)
}

/// A named key with a fixed secret.
pub fn named_key(name: &str, master: MasterKey) -> NamedKey {
    NamedKey::new(name, master).expect("fixture key names are valid")
}

/// IPv4-mapped IPv6 addresses become IPv4 (PROTOCOL.md §7, address policy).
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.octets() {
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d] => {
                IpAddr::V4([a, b, c, d].into())
            }
            _ => ip,
        },
        v4 => v4,
    }
}

/// Whether an address may be admitted (PROTOCOL.md §7, step 8b), from its octets: not
/// unspecified, multicast, the IPv4 limited broadcast or IPv6 link-local (`fe80::/10`), judged
/// after [`canonical`].
pub fn admissible(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(a) => {
            let o = a.octets();
            o != [0; 4] && !(224..=239).contains(&o[0]) && o != [255; 4]
        }
        IpAddr::V6(a) => {
            let o = a.octets();
            o != [0; 16] && o[0] != 0xff && !(o[0] == 0xfe && o[1] & 0xc0 == 0x80)
        }
    }
}

/// SHA-256 of a packet: the replay-cache key (PROTOCOL.md §8).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Sealing from PROTOCOL.md §6, using the primitives directly (not `knock_shared::wire`).
#[derive(Clone)]
pub struct Sealer {
    id: [u8; 8],
    aead: XChaCha20Poly1305,
    mac: Hmac<Sha256>,
}

impl Sealer {
    /// A sealer for the keys derived from one master secret.
    pub fn new(keys: &DerivedKeys) -> Self {
        Self {
            id: keys.id().0,
            aead: XChaCha20Poly1305::new(keys.enc_key().into()),
            mac: <Hmac<Sha256> as Mac>::new_from_slice(keys.mac_key())
                .expect("HMAC takes keys of any length"),
        }
    }

    /// The public key id.
    pub fn id(&self) -> [u8; 8] {
        self.id
    }

    /// HMAC-SHA256 of `data` with the MAC key.
    pub fn hmac(&self, data: &[u8]) -> [u8; 32] {
        let mut m = self.mac.clone();
        m.update(data);
        m.finalize().into_bytes().into()
    }

    /// Seals any 128 body bytes (valid or not) into a packet.
    pub fn seal_body(&self, body: &[u8; BODY], nonce: &[u8; 24]) -> [u8; PACKET] {
        let mut p = [0u8; PACKET];
        p[0] = 0x01;
        p[1..9].copy_from_slice(&self.id);
        p[9..HEADER].copy_from_slice(nonce);
        let mut ct = *body;
        let (header, rest) = p.split_at_mut(HEADER);
        let tag = self
            .aead
            .encrypt_in_place_detached(XNonce::from_slice(nonce), header, &mut ct)
            .expect("128 bytes is within the AEAD's limit");
        rest[..BODY].copy_from_slice(&ct);
        rest[BODY..BODY + 16].copy_from_slice(&tag);
        let mac = self.hmac(&p[..MACED]);
        p[MACED..].copy_from_slice(&mac);
        p
    }

    /// Opens the body of a packet (bytes 33..161 with tag 161..177), if the tag is right.
    pub fn open(&self, packet: &[u8; PACKET]) -> Option<[u8; BODY]> {
        let mut body = [0u8; BODY];
        body.copy_from_slice(&packet[HEADER..HEADER + BODY]);
        let (header, rest) = packet.split_at(HEADER);
        self.aead
            .decrypt_in_place_detached(
                XNonce::from_slice(&header[9..]),
                header,
                &mut body,
                Tag::from_slice(&rest[BODY..BODY + 16]),
            )
            .ok()
            .map(|()| body)
    }
}

/// The fields of a body as PROTOCOL.md §5 lays them out, without validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawBody {
    /// Unix seconds.
    pub timestamp: u64,
    /// 1 open, 2 close, anything else invalid.
    pub action: u8,
    /// 0, 4 or 6 valid.
    pub addr_kind: u8,
    /// The 16 address bytes.
    pub addr: [u8; 16],
    /// Requested open time.
    pub duration: u32,
    /// Server identity.
    pub server: [u8; 16],
    /// Port count byte.
    pub count: u8,
    /// The 16 slots: (protocol number, port).
    pub slots: [(u8, u16); 16],
    /// 33 bytes of padding.
    pub padding: [u8; 33],
}

impl RawBody {
    /// The 128 body bytes.
    pub fn encode(&self) -> [u8; BODY] {
        let mut b = [0u8; BODY];
        b[0..8].copy_from_slice(&self.timestamp.to_be_bytes());
        b[8] = self.action;
        b[9] = self.addr_kind;
        b[10..26].copy_from_slice(&self.addr);
        b[26..30].copy_from_slice(&self.duration.to_be_bytes());
        b[30..46].copy_from_slice(&self.server);
        b[46] = self.count;
        for (i, (proto, port)) in self.slots.iter().enumerate() {
            let at = 47 + 3 * i;
            b[at] = *proto;
            b[at + 1..at + 3].copy_from_slice(&port.to_be_bytes());
        }
        b[PADDING_AT..].copy_from_slice(&self.padding);
        b
    }

    /// Splits 128 body bytes into fields.
    pub fn decode(b: &[u8; BODY]) -> Self {
        let mut slots = [(0u8, 0u16); 16];
        for (i, slot) in slots.iter_mut().enumerate() {
            let at = 47 + 3 * i;
            *slot = (b[at], u16::from_be_bytes([b[at + 1], b[at + 2]]));
        }
        let mut addr = [0u8; 16];
        addr.copy_from_slice(&b[10..26]);
        let mut server = [0u8; 16];
        server.copy_from_slice(&b[30..46]);
        let mut padding = [0u8; 33];
        padding.copy_from_slice(&b[PADDING_AT..]);
        Self {
            timestamp: u64::from_be_bytes(b[0..8].try_into().expect("8 bytes")),
            action: b[8],
            addr_kind: b[9],
            addr,
            duration: u32::from_be_bytes(b[26..30].try_into().expect("4 bytes")),
            server,
            count: b[46],
            slots,
            padding,
        }
    }

    /// The first rule of PROTOCOL.md §5 the body breaks, checked in the documented order:
    /// action, address, count, then slots 0..15.
    pub fn check(&self) -> Result<(), BodyError> {
        if !matches!(self.action, 1 | 2) {
            return Err(BodyError::Action);
        }
        let addr_ok = match self.addr_kind {
            0 => self.addr == [0; 16],
            4 => self.addr[4..] == [0; 12],
            6 => true,
            _ => false,
        };
        if !addr_ok {
            return Err(BodyError::Address);
        }
        let n = usize::from(self.count);
        if n == 0 || n > 16 {
            return Err(BodyError::PortCount);
        }
        for (i, &(proto, port)) in self.slots.iter().enumerate() {
            let ok = if i < n {
                matches!(proto, 6 | 17) && port != 0
            } else {
                proto == 0 && port == 0
            };
            if !ok {
                return Err(BodyError::PortEntry);
            }
        }
        Ok(())
    }
}

/// Decodes lower- or upper-case hex with an even number of digits.
pub fn unhex(s: &str) -> Vec<u8> {
    let s: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(s.len().is_multiple_of(2), "odd number of hex digits");
    s.chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).expect("ASCII");
            u8::from_str_radix(text, 16).expect("hex digit")
        })
        .collect()
}
