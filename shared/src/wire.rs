//! The SPA packet: byte layout, sealing, and the body codec.
//!
//! One UDP payload of exactly [`PACKET_LEN`] bytes (version 1). All integers big-endian.
//!
//! | offset | len | field |
//! |-------:|----:|-------|
//! | 0   | 1   | version, `0x01` |
//! | 1   | 8   | key id (HKDF-derived from the master secret, public) |
//! | 9   | 24  | nonce (random, XChaCha20) |
//! | 33  | 128 | body ciphertext (XChaCha20-Poly1305, associated data = bytes 0..33) |
//! | 161 | 16  | Poly1305 tag |
//! | 177 | 32  | HMAC-SHA256(mac key, bytes 0..177) |
//!
//! Body plaintext (128 bytes):
//!
//! | offset | len | field |
//! |-------:|----:|-------|
//! | 0   | 8  | timestamp, Unix seconds |
//! | 8   | 1  | action: 1 open, 2 close |
//! | 9   | 1  | address kind: 0 = the packet's source, 4 = IPv4, 6 = IPv6 |
//! | 10  | 16 | address: IPv4 in the first 4 bytes, the rest zero; all zero for kind 0 |
//! | 26  | 4  | requested open time in seconds, 0 = the server's default |
//! | 30  | 16 | server identity: first 16 bytes of SHA-256(`"knock-spa v1 server id\0"` ‖ name) |
//! | 46  | 1  | port count, 1..=16 |
//! | 47  | 48 | 16 slots of (IP protocol number u8, port u16); unused slots all zero |
//! | 95  | 33 | random padding (not checked) |
//!
//! Everything in `docs/PROTOCOL.md`, with test vectors; this module must agree with it.
//! This module does no I/O and draws no randomness: the nonce and the padding are passed in.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use knock_keys::{DerivedKeys, KEY_ID_LEN, MAC_KEY_LEN};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::types::{PortSpec, Proto};

/// The protocol version this code speaks; the first byte of every packet.
pub const VERSION: u8 = 0x01;
/// Version byte.
pub const VERSION_LEN: usize = 1;
/// XChaCha20 nonce: 24 bytes, random per packet (large enough that random nonces never repeat).
pub const NONCE_LEN: usize = 24;
/// Header = version ‖ key id ‖ nonce; the AEAD's associated data.
pub const HEADER_LEN: usize = VERSION_LEN + KEY_ID_LEN + NONCE_LEN;
/// Plaintext body length (fixed, so the packet length says nothing about the request).
pub const BODY_LEN: usize = 128;
/// Poly1305 tag.
pub const AEAD_TAG_LEN: usize = 16;
/// HMAC-SHA256 output, untruncated.
pub const MAC_LEN: usize = 32;
/// Bytes covered by the HMAC.
pub const MACED_LEN: usize = HEADER_LEN + BODY_LEN + AEAD_TAG_LEN;
/// Total packet length for version 1.
pub const PACKET_LEN: usize = MACED_LEN + MAC_LEN;

/// Offset of the key id.
pub const KEY_ID_OFFSET: usize = VERSION_LEN;
/// Offset of the nonce.
pub const NONCE_OFFSET: usize = KEY_ID_OFFSET + KEY_ID_LEN;

/// Most proto/port pairs one request may name.
pub const MAX_PORTS: usize = 16;
/// Length of a server identity digest.
pub const SERVER_ID_LEN: usize = 16;
/// Random padding at the end of the body.
pub const PADDING_LEN: usize = BODY_LEN - PADDING_OFFSET;

const TS_OFFSET: usize = 0;
const ACTION_OFFSET: usize = 8;
const ADDR_KIND_OFFSET: usize = 9;
const ADDR_OFFSET: usize = 10;
const DURATION_OFFSET: usize = 26;
const SERVER_OFFSET: usize = 30;
const COUNT_OFFSET: usize = 46;
const PORTS_OFFSET: usize = 47;
const PORT_SLOT_LEN: usize = 3;
const PADDING_OFFSET: usize = PORTS_OFFSET + MAX_PORTS * PORT_SLOT_LEN;

/// Domain separator of the server identity digest.
pub const SERVER_ID_LABEL: &[u8] = b"knock-spa v1 server id\0";

/// What the client asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Open the ports for the address.
    Open,
    /// Close them now.
    Close,
}

impl Action {
    fn to_byte(self) -> u8 {
        match self {
            Action::Open => 1,
            Action::Close => 2,
        }
    }
    /// `"open"` or `"close"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Open => "open",
            Action::Close => "close",
        }
    }
}

/// The address the server should admit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Admit {
    /// Whatever source address the packet arrives from (for clients that do not know their
    /// public address; see the threat model in docs/PROTOCOL.md).
    Source,
    /// This address.
    Addr(IpAddr),
}

/// A server identity: a digest of the name client and server agree on.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServerId(pub [u8; SERVER_ID_LEN]);

impl ServerId {
    /// The identity for a name (case-insensitive: the name is lower-cased first).
    pub fn from_name(name: &str) -> Self {
        let mut h = Sha256::new();
        h.update(SERVER_ID_LABEL);
        h.update(name.trim().to_ascii_lowercase().as_bytes());
        let digest = h.finalize();
        let mut id = [0u8; SERVER_ID_LEN];
        id.copy_from_slice(&digest[..SERVER_ID_LEN]);
        ServerId(id)
    }
}

impl std::fmt::Debug for ServerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerId(")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// 1..=16 proto/port pairs, stored inline (no allocation on the verify path).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortList {
    len: u8,
    items: [Option<PortSpec>; MAX_PORTS],
}

impl PortList {
    /// Builds a list; `None` when empty or longer than [`MAX_PORTS`].
    pub fn new(ports: &[PortSpec]) -> Option<Self> {
        if ports.is_empty() || ports.len() > MAX_PORTS {
            return None;
        }
        let mut items = [None; MAX_PORTS];
        for (slot, p) in items.iter_mut().zip(ports) {
            *slot = Some(*p);
        }
        Some(Self {
            len: ports.len() as u8,
            items,
        })
    }

    /// The ports, in request order.
    pub fn iter(&self) -> impl Iterator<Item = PortSpec> + '_ {
        self.items[..usize::from(self.len)]
            .iter()
            .flatten()
            .copied()
    }

    /// How many.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Never true for a list built by [`PortList::new`]; here for clippy's sake.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::fmt::Debug for PortList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl std::fmt::Display for PortList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, p) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// A decoded SPA request (the plaintext body minus padding).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Request {
    /// Unix seconds when the client built the packet.
    pub timestamp: u64,
    /// Open or close.
    pub action: Action,
    /// The address to admit.
    pub admit: Admit,
    /// Requested open time in seconds; 0 asks for the server's default. The server caps it.
    pub duration: u32,
    /// The server the packet is meant for.
    pub server: ServerId,
    /// The ports.
    pub ports: PortList,
}

/// Why a decrypted body was refused. Only a key holder can produce these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// Action byte other than 1 or 2.
    #[error("unknown action")]
    Action,
    /// Address kind other than 0, 4, 6, or non-zero bytes where zeros are required.
    #[error("malformed address")]
    Address,
    /// Port count 0 or above 16.
    #[error("bad port count")]
    PortCount,
    /// A used slot with an unknown protocol or port 0, or an unused slot not all zero.
    #[error("malformed port entry")]
    PortEntry,
}

impl Request {
    /// Encodes the body plaintext with the given padding.
    pub fn encode_body(&self, padding: &[u8; PADDING_LEN]) -> [u8; BODY_LEN] {
        let mut b = [0u8; BODY_LEN];
        b[TS_OFFSET..TS_OFFSET + 8].copy_from_slice(&self.timestamp.to_be_bytes());
        b[ACTION_OFFSET] = self.action.to_byte();
        let addr = &mut b[ADDR_OFFSET..ADDR_OFFSET + 16];
        b[ADDR_KIND_OFFSET] = match self.admit {
            Admit::Source => 0,
            Admit::Addr(IpAddr::V4(a)) => {
                addr[..4].copy_from_slice(&a.octets());
                4
            }
            Admit::Addr(IpAddr::V6(a)) => {
                addr.copy_from_slice(&a.octets());
                6
            }
        };
        b[DURATION_OFFSET..DURATION_OFFSET + 4].copy_from_slice(&self.duration.to_be_bytes());
        b[SERVER_OFFSET..SERVER_OFFSET + SERVER_ID_LEN].copy_from_slice(&self.server.0);
        b[COUNT_OFFSET] = self.ports.len;
        for (i, p) in self.ports.iter().enumerate() {
            let at = PORTS_OFFSET + i * PORT_SLOT_LEN;
            b[at] = p.proto.number();
            b[at + 1..at + 3].copy_from_slice(&p.port.get().to_be_bytes());
        }
        b[PADDING_OFFSET..].copy_from_slice(padding);
        b
    }

    /// Decodes a body plaintext. Strict: every reserved byte must be zero, so one request has
    /// exactly one encoding (up to padding).
    pub fn decode_body(b: &[u8; BODY_LEN]) -> Result<Self, BodyError> {
        let timestamp = u64::from_be_bytes(array(&b[TS_OFFSET..]));
        let action = match b[ACTION_OFFSET] {
            1 => Action::Open,
            2 => Action::Close,
            _ => return Err(BodyError::Action),
        };
        let addr: [u8; 16] = array(&b[ADDR_OFFSET..]);
        let admit = match b[ADDR_KIND_OFFSET] {
            0 if addr == [0; 16] => Admit::Source,
            4 if addr[4..] == [0; 12] => Admit::Addr(IpAddr::V4(Ipv4Addr::new(
                addr[0], addr[1], addr[2], addr[3],
            ))),
            6 => Admit::Addr(IpAddr::V6(Ipv6Addr::from(addr))),
            _ => return Err(BodyError::Address),
        };
        let duration = u32::from_be_bytes(array(&b[DURATION_OFFSET..]));
        let server = ServerId(array(&b[SERVER_OFFSET..]));
        let count = usize::from(b[COUNT_OFFSET]);
        if count == 0 || count > MAX_PORTS {
            return Err(BodyError::PortCount);
        }
        let mut items = [None; MAX_PORTS];
        for (i, item) in items.iter_mut().enumerate() {
            let at = PORTS_OFFSET + i * PORT_SLOT_LEN;
            let slot: [u8; PORT_SLOT_LEN] = array(&b[at..]);
            if i < count {
                let proto = Proto::from_number(slot[0]).ok_or(BodyError::PortEntry)?;
                let port = u16::from_be_bytes([slot[1], slot[2]]);
                *item = Some(PortSpec::new(proto, port).ok_or(BodyError::PortEntry)?);
            } else if slot != [0; PORT_SLOT_LEN] {
                return Err(BodyError::PortEntry);
            }
        }
        Ok(Request {
            timestamp,
            action,
            admit,
            duration,
            server,
            ports: PortList {
                len: count as u8,
                items,
            },
        })
    }
}

/// The first `N` bytes of `b` as an array. Callers pass slices that start at a constant
/// offset inside a fixed-size buffer with at least `N` bytes left (checked by the layout
/// constants above), so the conversion cannot fail.
fn array<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[..N]);
    out
}

/// The per-key crypto state: a keyed AEAD and the MAC key, both wiped on drop.
///
/// The AEAD (`chacha20poly1305`) zeroizes its key when dropped. An `hmac::Hmac<Sha256>` keyed
/// once would hold the two SHA-256 states after `key ^ ipad` and `key ^ opad`, which are as
/// good as the key, and hmac 0.12 has no way to wipe them (no `zeroize` feature, private
/// fields; this crate has no `unsafe`). So the MAC key is kept as bytes, wiped on drop, and
/// each MAC is keyed from them ([`KeyState::mac`]): two SHA-256 blocks more per HMAC, and the
/// keyed state lives only for the one packet.
#[derive(Clone)]
pub struct KeyState {
    pub(crate) id: knock_keys::KeyId,
    pub(crate) aead: XChaCha20Poly1305,
    mac_key: Zeroizing<[u8; MAC_KEY_LEN]>,
}

impl std::fmt::Debug for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyState({})", self.id)
    }
}

impl KeyState {
    /// Keys the AEAD and keeps the MAC key, from derived keys.
    pub fn new(keys: &DerivedKeys) -> Self {
        Self {
            id: keys.id(),
            aead: XChaCha20Poly1305::new(keys.enc_key().into()),
            mac_key: Zeroizing::new(*keys.mac_key()),
        }
    }

    /// A fresh HMAC-SHA256 keyed with the MAC key, for one packet.
    pub(crate) fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as Mac>::new_from_slice(self.mac_key.as_slice())
            .expect("HMAC accepts keys of any length")
    }

    /// The public key id.
    pub fn id(&self) -> knock_keys::KeyId {
        self.id
    }
}

/// Seals a request into a packet. Deterministic for a given nonce and padding, which the
/// caller draws from a CSPRNG (tests pass fixed values to reproduce the vectors).
pub fn seal(
    key: &KeyState,
    request: &Request,
    nonce: &[u8; NONCE_LEN],
    padding: &[u8; PADDING_LEN],
) -> [u8; PACKET_LEN] {
    let mut p = [0u8; PACKET_LEN];
    p[0] = VERSION;
    p[KEY_ID_OFFSET..NONCE_OFFSET].copy_from_slice(&key.id.0);
    p[NONCE_OFFSET..HEADER_LEN].copy_from_slice(nonce);
    let mut body = request.encode_body(padding);
    let (header, rest) = p.split_at_mut(HEADER_LEN);
    // XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha-03 §2): 24-byte nonce, AAD = header.
    let tag = key
        .aead
        .encrypt_in_place_detached(XNonce::from_slice(nonce), header, &mut body)
        .expect("a 128-byte message is far below the AEAD's length limit");
    rest[..BODY_LEN].copy_from_slice(&body);
    rest[BODY_LEN..BODY_LEN + AEAD_TAG_LEN].copy_from_slice(&tag);
    zeroize::Zeroize::zeroize(&mut body);
    // RFC 2104: HMAC-SHA256 over everything before the MAC field.
    let mut mac = key.mac();
    mac.update(&p[..MACED_LEN]);
    let out = mac.finalize().into_bytes();
    p[MACED_LEN..].copy_from_slice(&out);
    p
}

/// The replay-cache digest of a packet: SHA-256 of all its bytes.
pub fn packet_digest(packet: &[u8]) -> [u8; 32] {
    Sha256::digest(packet).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_material_of_a_key_state_is_wiped_on_drop() {
        fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>(_: &T) {}
        let k = KeyState::new(&knock_keys::MasterKey::from_bytes([3; 32]).derive());
        wiped_on_drop(&k.aead);
        wiped_on_drop(&k.mac_key);
    }

    fn ports(list: &[&str]) -> PortList {
        let v: Vec<PortSpec> = list.iter().map(|s| s.parse().expect("port")).collect();
        PortList::new(&v).expect("1..=16 ports")
    }

    #[test]
    fn layout_constants() {
        assert_eq!(HEADER_LEN, 33);
        assert_eq!(MACED_LEN, 177);
        assert_eq!(PACKET_LEN, 209);
        assert_eq!(PADDING_OFFSET, 95);
        assert_eq!(PADDING_LEN, 33);
    }

    #[test]
    fn body_round_trip_all_address_kinds() {
        for admit in [
            Admit::Source,
            Admit::Addr("192.0.2.7".parse().expect("ip")),
            Admit::Addr("2001:db8::7".parse().expect("ip")),
        ] {
            let r = Request {
                timestamp: 1_700_000_000,
                action: Action::Close,
                admit,
                duration: 3600,
                server: ServerId::from_name("host"),
                ports: ports(&["22/tcp", "53/udp"]),
            };
            let body = r.encode_body(&[0xaa; PADDING_LEN]);
            assert_eq!(Request::decode_body(&body), Ok(r));
        }
    }

    #[test]
    fn body_rejects_non_canonical() {
        let r = Request {
            timestamp: 1,
            action: Action::Open,
            admit: Admit::Addr("192.0.2.7".parse().expect("ip")),
            duration: 0,
            server: ServerId::from_name("h"),
            ports: ports(&["22"]),
        };
        let good = r.encode_body(&[0; PADDING_LEN]);
        let mut b = good;
        b[ACTION_OFFSET] = 3;
        assert_eq!(Request::decode_body(&b), Err(BodyError::Action));
        let mut b = good;
        b[ADDR_OFFSET + 5] = 1;
        assert_eq!(Request::decode_body(&b), Err(BodyError::Address));
        let mut b = good;
        b[ADDR_KIND_OFFSET] = 5;
        assert_eq!(Request::decode_body(&b), Err(BodyError::Address));
        let mut b = good;
        b[COUNT_OFFSET] = 0;
        assert_eq!(Request::decode_body(&b), Err(BodyError::PortCount));
        let mut b = good;
        b[COUNT_OFFSET] = 17;
        assert_eq!(Request::decode_body(&b), Err(BodyError::PortCount));
        let mut b = good;
        b[PORTS_OFFSET] = 1; // ICMP
        assert_eq!(Request::decode_body(&b), Err(BodyError::PortEntry));
        let mut b = good;
        b[PORTS_OFFSET + 1] = 0;
        b[PORTS_OFFSET + 2] = 0; // port 0
        assert_eq!(Request::decode_body(&b), Err(BodyError::PortEntry));
        let mut b = good;
        b[PORTS_OFFSET + PORT_SLOT_LEN] = 6; // unused slot not zero
        assert_eq!(Request::decode_body(&b), Err(BodyError::PortEntry));
        let mut b = good;
        b[BODY_LEN - 1] ^= 0xff; // padding is free
        assert!(Request::decode_body(&b).is_ok());
    }

    #[test]
    fn port_list_bounds() {
        let p: PortSpec = "22".parse().expect("port");
        assert!(PortList::new(&[]).is_none());
        assert!(PortList::new(&[p; 16]).is_some());
        assert!(PortList::new(&[p; 17]).is_none());
        assert_eq!(ports(&["22/tcp", "53/udp"]).to_string(), "22/tcp,53/udp");
    }

    #[test]
    fn server_id_is_case_insensitive() {
        assert_eq!(
            ServerId::from_name("Host.Example"),
            ServerId::from_name("host.example")
        );
        assert_ne!(ServerId::from_name("a"), ServerId::from_name("b"));
    }
}
