//! Helpers shared by the fuzz targets in `fuzz_targets/` and by `examples/gen_corpus.rs`.
//!
//! The reference code here is written from docs/PROTOCOL.md, not from `knock_shared::wire`:
//! an independent sealer (§6) and an independent body encoder/checker (§5), so that the
//! targets compare the real code against the specification instead of against itself.

use std::net::IpAddr;

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{KeyInit, Tag, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use knock_keys::{DerivedKeys, MasterKey, NamedKey};
use knock_shared::wire::BodyError;
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
