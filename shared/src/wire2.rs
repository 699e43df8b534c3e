//! The version-2 SPA packet (public-key mode): byte layout and sealing.
//!
//! One UDP payload of exactly [`PACKET2_LEN`] bytes. The body is version 1's 128-byte body
//! ([`Request::encode_body`]), encrypted to the server's X25519 key and signed with the
//! client's Ed25519 key; docs/PROTOCOL.md part II has every derivation and the vectors.
//!
//! | offset | len | field |
//! |-------:|----:|-------|
//! | 0   | 1   | version, `0x02` |
//! | 1   | 8   | key id for the epoch of the body's timestamp ([`knock_keys::public::ClientPublic::epoch_id`]) |
//! | 9   | 32  | ephemeral X25519 public key |
//! | 41  | 128 | body ciphertext (XChaCha20-Poly1305, associated data = bytes 0..41) |
//! | 169 | 16  | Poly1305 tag |
//! | 185 | 64  | Ed25519 signature of [`SIGNATURE_LABEL`] ‖ server public key ‖ bytes 0..185 |
//! | 249 | 16  | pre-check: HMAC-SHA256(pre-check key, bytes 0..249), first 16 bytes |
//!
//! No I/O and no randomness: the ephemeral secret and the padding are passed in.

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use knock_keys::public::{epoch, BodyKey, ServerPublic, SigningKey, KEY_LEN, SIGNATURE_LEN};
use sha2::Sha256;

use crate::wire::{Request, AEAD_TAG_LEN, BODY_LEN, PADDING_LEN};

/// The version byte of public-key packets.
pub const VERSION_2: u8 = 0x02;
/// Offset of the key id.
pub const KEY_ID2_OFFSET: usize = 1;
/// Offset of the ephemeral public key.
pub const EPHEMERAL_OFFSET: usize = 9;
/// Header = version ‖ key id ‖ ephemeral key; the AEAD's associated data.
pub const HEADER2_LEN: usize = EPHEMERAL_OFFSET + KEY_LEN;
/// Offset of the signature; everything before it is signed.
pub const SIGNATURE_OFFSET: usize = HEADER2_LEN + BODY_LEN + AEAD_TAG_LEN;
/// Offset of the pre-check; everything before it is covered by it.
pub const PRECHECK_OFFSET: usize = SIGNATURE_OFFSET + SIGNATURE_LEN;
/// Length of the truncated pre-check MAC.
pub const PRECHECK_LEN: usize = 16;
/// Total packet length for version 2.
pub const PACKET2_LEN: usize = PRECHECK_OFFSET + PRECHECK_LEN;
/// Domain separator of the signed message.
pub const SIGNATURE_LABEL: &[u8] = b"knock-spa v2 signature";
/// Length of the signed message: label, server public key, bytes 0..185.
pub const SIGNED_LEN: usize = SIGNATURE_LABEL.len() + KEY_LEN + SIGNATURE_OFFSET;

/// The message the client signs: the label, the server's public key, and the packet up to
/// the signature (header, ciphertext, tag).
pub fn signed_message(server: &ServerPublic, packet: &[u8]) -> [u8; SIGNED_LEN] {
    let mut m = [0u8; SIGNED_LEN];
    let (label, rest) = m.split_at_mut(SIGNATURE_LABEL.len());
    label.copy_from_slice(SIGNATURE_LABEL);
    let (key, body) = rest.split_at_mut(KEY_LEN);
    key.copy_from_slice(&server.0);
    body.copy_from_slice(&packet[..SIGNATURE_OFFSET]);
    m
}

/// The keyed pre-check MAC over a packet's first 249 bytes (the verifier compares its first
/// 16 bytes in constant time).
pub fn precheck_mac(key: &[u8], covered: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(covered);
    mac
}

/// The pre-check field for a packet's first 249 bytes (what a client writes).
pub fn precheck(key: &[u8], covered: &[u8]) -> [u8; PRECHECK_LEN] {
    let full = precheck_mac(key, covered).finalize().into_bytes();
    let mut out = [0u8; PRECHECK_LEN];
    out.copy_from_slice(&full[..PRECHECK_LEN]);
    out
}

/// The AEAD keyed with a body key.
pub(crate) fn body_aead(key: &BodyKey) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(key.key().into())
}

/// Seals a request for `server` with the client's signing key. Deterministic for a given
/// ephemeral secret and padding, which the caller draws from a CSPRNG. `None` only when the
/// server key is a low-order point ([`ServerPublic::from_base64`] refuses those).
pub fn seal2(
    key: &SigningKey,
    server: &ServerPublic,
    request: &Request,
    ephemeral_secret: [u8; KEY_LEN],
    padding: &[u8; PADDING_LEN],
) -> Option<[u8; PACKET2_LEN]> {
    let client = key.public();
    let (ephemeral, body_key) = server.seal_key(ephemeral_secret, client.verify_key())?;
    let mut p = [0u8; PACKET2_LEN];
    p[0] = VERSION_2;
    p[KEY_ID2_OFFSET..EPHEMERAL_OFFSET]
        .copy_from_slice(&client.epoch_id(epoch(request.timestamp)).0);
    p[EPHEMERAL_OFFSET..HEADER2_LEN].copy_from_slice(&ephemeral);
    let mut body = request.encode_body(padding);
    let (header, rest) = p.split_at_mut(HEADER2_LEN);
    let tag = body_aead(&body_key)
        .encrypt_in_place_detached(XNonce::from_slice(body_key.nonce()), header, &mut body)
        .expect("a 128-byte message is far below the AEAD's length limit");
    rest[..BODY_LEN].copy_from_slice(&body);
    rest[BODY_LEN..BODY_LEN + AEAD_TAG_LEN].copy_from_slice(&tag);
    zeroize::Zeroize::zeroize(&mut body);
    let sig = key.sign(&signed_message(server, &p));
    p[SIGNATURE_OFFSET..PRECHECK_OFFSET].copy_from_slice(&sig);
    let pre = precheck(client.precheck_key(), &p[..PRECHECK_OFFSET]);
    p[PRECHECK_OFFSET..].copy_from_slice(&pre);
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_constants() {
        assert_eq!(HEADER2_LEN, 41);
        assert_eq!(SIGNATURE_OFFSET, 185);
        assert_eq!(PRECHECK_OFFSET, 249);
        assert_eq!(PACKET2_LEN, 265);
        assert_eq!(SIGNED_LEN, 22 + 32 + 185);
    }
}
