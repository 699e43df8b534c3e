//! The server-side SPA verifier.
//!
//! [`Verifier::verify`] takes `(now, source, bytes)` and a replay cache and returns either an
//! [`Accepted`] request or the one [`Reject`] reason. Checks run cheapest first, so a packet
//! without a key costs at most one length/version check, one key lookup and one HMAC:
//!
//! 1. version byte and exact length ([`Reject::BadVersion`], [`Reject::BadLength`]);
//! 2. key id lookup, O(1) ([`Reject::UnknownKey`]);
//! 3. HMAC-SHA256 over bytes 0..177, constant-time compare ([`Reject::BadHmac`]);
//! 4. replay cache ([`Reject::Replay`]): the packet is authentic, so one SHA-256 and one hash
//!    lookup tell whether it is a copy of one accepted before; done before decryption so a
//!    flood of captured packets costs no more than a flood of forgeries;
//! 5. XChaCha20-Poly1305 decryption with the header as associated data ([`Reject::BadAead`]);
//! 6. body decoding ([`Reject::Malformed`]) and the server identity ([`Reject::WrongServer`]);
//! 7. timestamp window ([`Reject::Stale`], [`Reject::Future`]);
//! 8. policy: source mode only for keys with Allow_NAT ([`Reject::SourceModeNotAllowed`]),
//!    admitted address vs. source ([`Reject::AddressMismatch`]), an address that can be
//!    admitted ([`Reject::Unadmissible`]), ports ([`Reject::PortNotAllowed`]);
//! 9. the digest is remembered ([`Reject::ReplayCacheFull`] if it cannot be).
//!
//! A version-2 packet (public-key mode, [`crate::wire2`]) has its own steps 1 to 6: exact
//! length, key id for the epoch (one lookup in a map of every key's ids for the epochs around
//! now), the pre-check HMAC ([`Reject::BadPrecheck`]), the replay cache, the client's Ed25519
//! signature ([`Reject::BadSignature`]), the X25519 exchange and the AEAD; then the same
//! checks from step 6 on. A packet without the pre-check key costs one lookup and one HMAC.
//!
//! Nothing is written to the replay cache before step 9, so an attacker without a key cannot
//! fill it. No I/O, no clock, no allocation on the reject path.

use std::collections::HashMap;
use std::net::IpAddr;

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use hmac::Mac;
use knock_keys::public::{epoch, ClientPublic, ServerPublic, ServerSecret, KEY_LEN};
use knock_keys::{KeyId, NamedKey, KEY_ID_LEN};
use std::sync::Mutex;

use crate::replay::{Digest, InsertError, ReplayCache};
use crate::types::{admissible, canonical, PortSpec};
use crate::wire::{
    packet_digest, Action, Admit, BodyError, KeyState, Request, ServerId, BODY_LEN, HEADER_LEN,
    KEY_ID_OFFSET, MACED_LEN, NONCE_OFFSET, PACKET_LEN, VERSION,
};
use crate::wire2::{
    body_aead, precheck_mac, signed_message, EPHEMERAL_OFFSET, HEADER2_LEN, KEY_ID2_OFFSET,
    PACKET2_LEN, PRECHECK_OFFSET, SIGNATURE_OFFSET, VERSION_2,
};

/// Default timestamp window, seconds either side of the server's clock.
pub const DEFAULT_WINDOW: u64 = 60;

/// Why a packet was refused. Every variant is a distinct log reason and counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Reject {
    /// The first byte is not a version this server speaks.
    #[error("bad version")]
    BadVersion,
    /// The length is not the one version 1 packets have.
    #[error("bad length")]
    BadLength,
    /// No configured key has this key id.
    #[error("unknown key")]
    UnknownKey,
    /// The HMAC does not match (corrupt, forged, or a different key with a colliding id).
    #[error("bad hmac")]
    BadHmac,
    /// A version-2 packet's pre-check does not match (corrupt or forged: it takes the
    /// client's pre-check key, which only the client and the server's door hold).
    #[error("bad precheck")]
    BadPrecheck,
    /// A version-2 packet passed the pre-check but its signature is not the client's (a
    /// forgery by someone holding the pre-check key: a copy of the server's configuration).
    #[error("bad signature")]
    BadSignature,
    /// The HMAC matched but the AEAD tag did not (only a key holder can cause this).
    #[error("bad aead")]
    BadAead,
    /// The decrypted body is malformed.
    #[error("malformed body: {0}")]
    Malformed(BodyError),
    /// The packet is bound to another server identity.
    #[error("wrong server identity")]
    WrongServer,
    /// The timestamp is older than the window allows.
    #[error("stale timestamp ({age} s old; client clock behind or packet delayed)")]
    Stale {
        /// How many seconds older than now.
        age: u64,
    },
    /// The timestamp is further in the future than the window allows.
    #[error("timestamp in the future ({ahead} s ahead; client clock ahead)")]
    Future {
        /// How many seconds ahead of now.
        ahead: u64,
    },
    /// This exact packet was accepted before.
    #[error("replay")]
    Replay,
    /// The packet asks to admit an address other than its source, and the key may not.
    #[error("address mismatch (packet asks for another address than its source)")]
    AddressMismatch,
    /// The packet asks to admit whatever address it comes from (source mode), and the key
    /// may not: only a key with `Allow_NAT` may, because a copy raced to the server from
    /// another address would admit that address.
    #[error(
        "source mode not allowed (the packet asks to admit its source; the key has no Allow_NAT)"
    )]
    SourceModeNotAllowed,
    /// The address to admit (requested, or the source) is one no rule should be made for:
    /// unspecified, multicast or broadcast ([`crate::types::admissible`]).
    #[error("address {0} cannot be admitted (unspecified, multicast or broadcast)")]
    Unadmissible(IpAddr),
    /// A requested port is not allowed for this key.
    #[error("port {0} not allowed for this key")]
    PortNotAllowed(PortSpec),
    /// The replay cache is full of live entries; refusing is the safe choice.
    #[error("replay cache full")]
    ReplayCacheFull,
}

/// The counter class of a [`Reject`], for summaries (`unknown key 9123, bad hmac 4`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RejectKind {
    /// [`Reject::BadVersion`] and [`Reject::BadLength`].
    Malformed,
    /// [`Reject::UnknownKey`].
    UnknownKey,
    /// [`Reject::BadHmac`].
    BadHmac,
    /// [`Reject::BadPrecheck`].
    BadPrecheck,
    /// [`Reject::BadSignature`].
    BadSignature,
    /// [`Reject::BadAead`] and [`Reject::Malformed`].
    BadBody,
    /// [`Reject::WrongServer`].
    WrongServer,
    /// [`Reject::Stale`] and [`Reject::Future`].
    Clock,
    /// [`Reject::Replay`].
    Replay,
    /// [`Reject::AddressMismatch`] and [`Reject::Unadmissible`].
    Address,
    /// [`Reject::SourceModeNotAllowed`].
    SourceMode,
    /// [`Reject::PortNotAllowed`].
    Port,
    /// [`Reject::ReplayCacheFull`].
    CacheFull,
}

impl RejectKind {
    /// Every kind, in summary order.
    pub const ALL: [RejectKind; 13] = [
        RejectKind::Malformed,
        RejectKind::UnknownKey,
        RejectKind::BadHmac,
        RejectKind::BadPrecheck,
        RejectKind::BadSignature,
        RejectKind::BadBody,
        RejectKind::WrongServer,
        RejectKind::Clock,
        RejectKind::Replay,
        RejectKind::Address,
        RejectKind::SourceMode,
        RejectKind::Port,
        RejectKind::CacheFull,
    ];

    /// A short label for logs and status output.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectKind::Malformed => "malformed",
            RejectKind::UnknownKey => "unknown key",
            RejectKind::BadHmac => "bad hmac",
            RejectKind::BadPrecheck => "bad precheck",
            RejectKind::BadSignature => "bad signature",
            RejectKind::BadBody => "bad body",
            RejectKind::WrongServer => "wrong server",
            RejectKind::Clock => "clock",
            RejectKind::Replay => "replay",
            RejectKind::Address => "address",
            RejectKind::SourceMode => "source mode",
            RejectKind::Port => "port not allowed",
            RejectKind::CacheFull => "replay cache full",
        }
    }

    /// Position in [`RejectKind::ALL`], for array-indexed counters.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl Reject {
    /// The counter class.
    pub fn kind(&self) -> RejectKind {
        match self {
            Reject::BadVersion | Reject::BadLength => RejectKind::Malformed,
            Reject::UnknownKey => RejectKind::UnknownKey,
            Reject::BadHmac => RejectKind::BadHmac,
            Reject::BadPrecheck => RejectKind::BadPrecheck,
            Reject::BadSignature => RejectKind::BadSignature,
            Reject::BadAead | Reject::Malformed(_) => RejectKind::BadBody,
            Reject::WrongServer => RejectKind::WrongServer,
            Reject::Stale { .. } | Reject::Future { .. } => RejectKind::Clock,
            Reject::Replay => RejectKind::Replay,
            Reject::AddressMismatch | Reject::Unadmissible(_) => RejectKind::Address,
            Reject::SourceModeNotAllowed => RejectKind::SourceMode,
            Reject::PortNotAllowed(_) => RejectKind::Port,
            Reject::ReplayCacheFull => RejectKind::CacheFull,
        }
    }
}

/// What a key may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPolicy {
    /// Ports the key may open; a request naming any other port is refused whole.
    pub ports: Vec<PortSpec>,
    /// Whether the key may ask to admit an address other than the packet's source (clients
    /// behind NAT that know their public address).
    pub allow_nat: bool,
}

/// Handle to a configured key, valid for the verifier that returned it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyIndex(usize);

/// Why a key could not be added.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddKeyError {
    /// Another key has the same id (the same secret configured twice, or an 8-byte id
    /// collision, about one in 2^64 per pair).
    #[error("key `{name}` has the same key id as key `{other}`")]
    DuplicateId {
        /// The key being added.
        name: String,
        /// The key already present.
        other: String,
    },
}

/// One key the verifier accepts: its name, what checks its packets, policy and door.
#[derive(Debug)]
struct KeyEntry {
    name: String,
    cred: Credential,
    policy: KeyPolicy,
    door: usize,
}

/// How a key's packets are checked.
#[derive(Debug)]
enum Credential {
    /// A shared secret: version-1 packets.
    Shared(KeyState),
    /// A client's public key: version-2 packets.
    Public(ClientPublic),
}

impl Credential {
    fn id(&self) -> KeyId {
        match self {
            Credential::Shared(s) => s.id(),
            Credential::Public(p) => p.id(),
        }
    }
}

/// The key ids version-2 packets carry in the epochs around the server's clock: one map from
/// the id of every public key in epochs E-1, E and E+1 to the key, so that a packet costs one
/// lookup whichever of them its client's clock was in. Rebuilt when the epoch moves.
#[derive(Debug, Default)]
struct EpochIds {
    epoch: Option<u64>,
    ids: HashMap<KeyId, usize>,
}

/// A verified request: exists only as the result of [`Verifier::verify`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepted {
    key: KeyIndex,
    door: usize,
    request: Request,
    addr: IpAddr,
    digest: Digest,
    expiry: u64,
}

impl Accepted {
    /// The key that signed it.
    pub fn key(&self) -> KeyIndex {
        self.key
    }
    /// The door tag given with the key to [`Verifier::add_key`].
    pub fn door(&self) -> usize {
        self.door
    }
    /// The request.
    pub fn request(&self) -> &Request {
        &self.request
    }
    /// Open or close.
    pub fn action(&self) -> Action {
        self.request.action
    }
    /// The address to admit, resolved (the source for [`Admit::Source`]).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }
    /// The packet digest now in the replay cache.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }
    /// Until when (Unix seconds) the replay cache keeps the digest.
    pub fn expiry(&self) -> u64 {
        self.expiry
    }
}

/// The set of keys a server accepts, its identities, and its timestamp window.
#[derive(Debug)]
pub struct Verifier {
    entries: Vec<KeyEntry>,
    by_id: HashMap<KeyId, usize>,
    servers: Vec<ServerId>,
    window: u64,
    server_key: Option<ServerSecret>,
    /// Behind a lock so that `verify` can take `&self` (the daemon shares one verifier per
    /// configuration); only the packet thread ever takes it, so it is never contended.
    epoch_ids: Mutex<EpochIds>,
}

impl Verifier {
    /// A verifier answering to `servers` (at least one identity) with a timestamp window of
    /// `window` seconds either side.
    pub fn new(servers: Vec<ServerId>, window: u64) -> Self {
        Self {
            entries: Vec::new(),
            by_id: HashMap::new(),
            servers,
            window,
            server_key: None,
            epoch_ids: Mutex::new(EpochIds::default()),
        }
    }

    /// Sets the server's X25519 key, which version-2 packets are sealed to.
    pub fn set_server_key(&mut self, key: ServerSecret) {
        self.server_key = Some(key);
    }

    /// The server's public key, when it has one.
    pub fn server_public(&self) -> Option<ServerPublic> {
        self.server_key.as_ref().map(|k| k.public())
    }

    /// How many keys are public keys (version-2 packets).
    pub fn public_key_count(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| matches!(e.cred, Credential::Public(_)))
            .count()
    }

    /// Adds a client's public key with its policy and door tag. Its id for display is
    /// [`ClientPublic::id`]; two keys with the same Ed25519 key are refused.
    pub fn add_public_key(
        &mut self,
        key: &ClientPublic,
        policy: KeyPolicy,
        door: usize,
    ) -> Result<KeyIndex, AddKeyError> {
        if let Some(other) = self.entries.iter().find(|e| match &e.cred {
            Credential::Public(p) => p.verify_key() == key.verify_key(),
            Credential::Shared(_) => false,
        }) {
            return Err(AddKeyError::DuplicateId {
                name: key.name().to_owned(),
                other: other.name.clone(),
            });
        }
        let idx = self.entries.len();
        self.entries.push(KeyEntry {
            name: key.name().to_owned(),
            cred: Credential::Public(key.clone()),
            policy,
            door,
        });
        // The epoch map no longer covers every key.
        self.epoch_ids = Mutex::new(EpochIds::default());
        Ok(KeyIndex(idx))
    }

    /// The timestamp window in seconds.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// Adds a key with its policy and an opaque door tag returned in [`Accepted::door`].
    pub fn add_key(
        &mut self,
        key: &NamedKey,
        policy: KeyPolicy,
        door: usize,
    ) -> Result<KeyIndex, AddKeyError> {
        let state = KeyState::new(&key.derive());
        if let Some(&other) = self.by_id.get(&state.id()) {
            return Err(AddKeyError::DuplicateId {
                name: key.name().to_owned(),
                other: self.entries[other].name.clone(),
            });
        }
        let idx = self.entries.len();
        self.by_id.insert(state.id(), idx);
        self.entries.push(KeyEntry {
            name: key.name().to_owned(),
            cred: Credential::Shared(state),
            policy,
            door,
        });
        Ok(KeyIndex(idx))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no key is configured.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every key: its name and the index of its door.
    pub fn keys(&self) -> impl Iterator<Item = (&str, usize)> + '_ {
        self.entries.iter().map(|e| (e.name.as_str(), e.door))
    }

    /// The name of a key.
    pub fn key_name(&self, key: KeyIndex) -> &str {
        self.entries.get(key.0).map_or("?", |s| s.name.as_str())
    }

    /// Whether a key is a public key (version 2) rather than a shared secret.
    pub fn is_public_key(&self, key: KeyIndex) -> bool {
        self.entries
            .get(key.0)
            .is_some_and(|e| matches!(e.cred, Credential::Public(_)))
    }

    /// The public id of a key (for a public key, its display id, never sent).
    pub fn key_id(&self, key: KeyIndex) -> Option<KeyId> {
        self.entries.get(key.0).map(|s| s.cred.id())
    }

    /// The policy of a key.
    pub fn policy(&self, key: KeyIndex) -> Option<&KeyPolicy> {
        self.entries.get(key.0).map(|s| &s.policy)
    }

    /// Verifies one packet that arrived from `source` at server time `now` (Unix seconds).
    pub fn verify(
        &self,
        now: u64,
        source: IpAddr,
        packet: &[u8],
        cache: &mut ReplayCache,
    ) -> Result<Accepted, Reject> {
        // 1. Version and exact length together.
        match packet.first() {
            Some(&VERSION) => {}
            Some(&VERSION_2) => return self.verify_v2(now, source, packet, cache),
            _ => return Err(Reject::BadVersion),
        }
        if packet.len() != PACKET_LEN {
            return Err(Reject::BadLength);
        }
        // 2. Key lookup.
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&packet[KEY_ID_OFFSET..NONCE_OFFSET]);
        let idx = *self.by_id.get(&KeyId(id)).ok_or(Reject::UnknownKey)?;
        let entry = &self.entries[idx];
        let Credential::Shared(state) = &entry.cred else {
            return Err(Reject::UnknownKey);
        };
        // 3. HMAC over bytes 0..177; `verify_slice` compares in constant time.
        let (maced, tag) = packet.split_at(MACED_LEN);
        let mut mac = state.mac();
        mac.update(maced);
        mac.verify_slice(tag).map_err(|_| Reject::BadHmac)?;
        // 4. Replay.
        let digest = packet_digest(packet);
        if cache.contains(&digest) {
            return Err(Reject::Replay);
        }
        // 5. AEAD, header as associated data.
        let (header, sealed) = maced.split_at(HEADER_LEN);
        let body = open_body(&state.aead, &header[NONCE_OFFSET..], header, sealed)?;
        self.finish(now, source, body, idx, digest, cache)
    }

    /// Steps 2 to 6 of a version-2 packet (docs/PROTOCOL.md part II), then the checks both
    /// versions share.
    fn verify_v2(
        &self,
        now: u64,
        source: IpAddr,
        packet: &[u8],
        cache: &mut ReplayCache,
    ) -> Result<Accepted, Reject> {
        if packet.len() != PACKET2_LEN {
            return Err(Reject::BadLength);
        }
        // 2. Key lookup: one map holds every key's ids for the epochs around now.
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&packet[KEY_ID2_OFFSET..EPHEMERAL_OFFSET]);
        let idx = self
            .epoch_lookup(now, KeyId(id))
            .ok_or(Reject::UnknownKey)?;
        let Credential::Public(client) = &self.entries[idx].cred else {
            return Err(Reject::UnknownKey);
        };
        let server = self.server_key.as_ref().ok_or(Reject::UnknownKey)?;
        // 3. Pre-check: one HMAC, constant-time compare of its first 16 bytes.
        let (covered, pre) = packet.split_at(PRECHECK_OFFSET);
        precheck_mac(client.precheck_key(), covered)
            .verify_truncated_left(pre)
            .map_err(|_| Reject::BadPrecheck)?;
        // 4. Replay, before the expensive checks: a flood of copies costs what one costs.
        let digest = packet_digest(packet);
        if cache.contains(&digest) {
            return Err(Reject::Replay);
        }
        // 5. The client's signature over the header, the ciphertext and the server's key.
        let signed = signed_message(&server.public(), packet);
        if !client.verify(&signed, &packet[SIGNATURE_OFFSET..PRECHECK_OFFSET]) {
            return Err(Reject::BadSignature);
        }
        // 6. The exchange with the ephemeral key, then the AEAD with the header as AAD.
        let mut ephemeral = [0u8; KEY_LEN];
        ephemeral.copy_from_slice(&packet[EPHEMERAL_OFFSET..HEADER2_LEN]);
        let body_key = server
            .open_key(&ephemeral, client.verify_key())
            .ok_or(Reject::BadAead)?;
        let (header, sealed) = packet[..SIGNATURE_OFFSET].split_at(HEADER2_LEN);
        let body = open_body(&body_aead(&body_key), body_key.nonce(), header, sealed)?;
        self.finish(now, source, body, idx, digest, cache)
    }

    /// The key a version-2 key id names, in the epochs E-1, E, E+1 around `now`.
    fn epoch_lookup(&self, now: u64, id: KeyId) -> Option<usize> {
        let e = epoch(now);
        let mut map = match self.epoch_ids.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        if map.epoch != Some(e) {
            map.ids.clear();
            for (idx, entry) in self.entries.iter().enumerate() {
                if let Credential::Public(p) = &entry.cred {
                    for k in [e.saturating_sub(1), e, e.saturating_add(1)] {
                        // An 8-byte collision (about 2^-64 per pair and epoch) keeps the
                        // first key; the other's packets are refused for that epoch.
                        map.ids.entry(p.epoch_id(k)).or_insert(idx);
                    }
                }
            }
            map.epoch = Some(e);
        }
        map.ids.get(&id).copied()
    }

    /// The checks after decryption, the same for both versions: body, server identity,
    /// clock, policy, and the replay cache insert.
    fn finish(
        &self,
        now: u64,
        source: IpAddr,
        mut body: [u8; BODY_LEN],
        idx: usize,
        digest: Digest,
        cache: &mut ReplayCache,
    ) -> Result<Accepted, Reject> {
        let entry = &self.entries[idx];
        // 6. Body and server identity.
        let decoded = Request::decode_body(&body);
        zeroize::Zeroize::zeroize(&mut body);
        let request = decoded.map_err(Reject::Malformed)?;
        if !self.servers.contains(&request.server) {
            return Err(Reject::WrongServer);
        }
        // 7. Clock: judged by the cache's high-water time, never earlier than a time it has
        // already purged entries at (a clock stepped forward, then back).
        let now = cache.observe(now);
        let t = request.timestamp;
        if t.saturating_add(self.window) < now {
            return Err(Reject::Stale { age: now - t });
        }
        if t > now.saturating_add(self.window) {
            return Err(Reject::Future { ahead: t - now });
        }
        // 8. Policy.
        let source = canonical(source);
        let addr = match request.admit {
            Admit::Source if !entry.policy.allow_nat => return Err(Reject::SourceModeNotAllowed),
            Admit::Source => source,
            Admit::Addr(a) => {
                let a = canonical(a);
                if a != source && !entry.policy.allow_nat {
                    return Err(Reject::AddressMismatch);
                }
                a
            }
        };
        if !admissible(addr) {
            return Err(Reject::Unadmissible(addr));
        }
        if let Some(p) = request
            .ports
            .iter()
            .find(|p| !entry.policy.ports.contains(p))
        {
            return Err(Reject::PortNotAllowed(p));
        }
        // 9. Remember it: until the packet's timestamp has left the window, measured from the
        // later of its timestamp and now (docs/PROTOCOL.md, "Replay").
        let expiry = t.max(now).saturating_add(self.window);
        match cache.insert(now, digest, expiry) {
            Ok(()) => {}
            Err(InsertError::Present) => return Err(Reject::Replay),
            Err(InsertError::Full) => return Err(Reject::ReplayCacheFull),
        }
        Ok(Accepted {
            key: KeyIndex(idx),
            door: entry.door,
            request,
            addr,
            digest,
            expiry,
        })
    }
}

/// Decrypts a body (ciphertext ‖ tag) with the header as associated data.
fn open_body(
    aead: &XChaCha20Poly1305,
    nonce: &[u8],
    header: &[u8],
    sealed: &[u8],
) -> Result<[u8; BODY_LEN], Reject> {
    let (ciphertext, aead_tag) = sealed.split_at(BODY_LEN);
    let mut body = [0u8; BODY_LEN];
    body.copy_from_slice(ciphertext);
    aead.decrypt_in_place_detached(
        XNonce::from_slice(nonce),
        header,
        &mut body,
        Tag::from_slice(aead_tag),
    )
    .map_err(|_| Reject::BadAead)?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{seal, PortList, NONCE_LEN, PADDING_LEN};
    use knock_keys::MasterKey;

    const NOW: u64 = 1_800_000_000;

    fn key(n: u8, name: &str) -> NamedKey {
        NamedKey::new(name, MasterKey::from_bytes([n; 32])).expect("valid name")
    }

    fn verifier() -> Verifier {
        let mut v = Verifier::new(vec![ServerId::from_name("srv")], DEFAULT_WINDOW);
        let policy = KeyPolicy {
            ports: vec![
                "22/tcp".parse().expect("port"),
                "53/udp".parse().expect("port"),
            ],
            allow_nat: false,
        };
        v.add_key(&key(1, "alice"), policy.clone(), 0).expect("add");
        v.add_key(
            &key(2, "nat"),
            KeyPolicy {
                allow_nat: true,
                ..policy
            },
            1,
        )
        .expect("add");
        v
    }

    fn request(admit: Admit, ports: &[&str], ts: u64) -> Request {
        let ports: Vec<PortSpec> = ports.iter().map(|p| p.parse().expect("port")).collect();
        Request {
            timestamp: ts,
            action: Action::Open,
            admit,
            duration: 0,
            server: ServerId::from_name("srv"),
            ports: PortList::new(&ports).expect("ports"),
        }
    }

    fn packet(k: &NamedKey, r: &Request, nonce: u8) -> [u8; PACKET_LEN] {
        seal(
            &KeyState::new(&k.derive()),
            r,
            &[nonce; NONCE_LEN],
            &[0x5a; PADDING_LEN],
        )
    }

    const SRC: &str = "192.0.2.10";

    fn src() -> IpAddr {
        SRC.parse().expect("ip")
    }

    #[test]
    fn accepts_valid_packet_and_then_rejects_its_replay() {
        let v = verifier();
        let mut cache = ReplayCache::new(16);
        let r = request(Admit::Addr(src()), &["22/tcp"], NOW);
        let p = packet(&key(1, "alice"), &r, 1);
        let ok = v.verify(NOW, src(), &p, &mut cache).expect("accepted");
        assert_eq!(v.key_name(ok.key()), "alice");
        assert_eq!(ok.door(), 0);
        assert_eq!(ok.addr(), src());
        assert_eq!(ok.request(), &r);
        assert_eq!(v.verify(NOW, src(), &p, &mut cache), Err(Reject::Replay));
        // Replayed from elsewhere: still a replay (the cache is checked before the address).
        let other: IpAddr = "198.51.100.1".parse().expect("ip");
        assert_eq!(
            v.verify(NOW + 1, other, &p, &mut cache),
            Err(Reject::Replay)
        );
    }

    /// Source mode ("admit whatever address this comes from") is for keys with Allow_NAT
    /// only: for any other key, a copy raced to the server from the attacker's address would
    /// admit the attacker. Refused, and not cached, so the key's next packet still works.
    #[test]
    fn source_mode_admits_the_source_only_for_keys_allowed_nat() {
        let v = verifier();
        let mut cache = ReplayCache::new(16);
        let v6: IpAddr = "2001:db8::1".parse().expect("ip");
        let p = packet(&key(1, "alice"), &request(Admit::Source, &["22"], NOW), 2);
        assert_eq!(
            v.verify(NOW, v6, &p, &mut cache),
            Err(Reject::SourceModeNotAllowed)
        );
        assert_eq!(Reject::SourceModeNotAllowed.kind(), RejectKind::SourceMode);
        assert!(cache.is_empty());
        let p = packet(&key(2, "nat"), &request(Admit::Source, &["22"], NOW), 2);
        assert_eq!(v.verify(NOW, v6, &p, &mut cache).expect("ok").addr(), v6);
    }

    #[test]
    fn ipv4_mapped_source_matches_ipv4_request() {
        let v = verifier();
        let mut cache = ReplayCache::new(16);
        let p = packet(
            &key(1, "alice"),
            &request(Admit::Addr(src()), &["22"], NOW),
            3,
        );
        let mapped: IpAddr = format!("::ffff:{SRC}").parse().expect("ip");
        assert_eq!(
            v.verify(NOW, mapped, &p, &mut cache).expect("ok").addr(),
            src()
        );
    }

    #[test]
    fn every_reject_reason() {
        let v = verifier();
        let alice = key(1, "alice");
        let good = request(Admit::Addr(src()), &["22/tcp"], NOW);
        let mut cache = ReplayCache::new(16);
        let check = |p: &[u8], src: IpAddr, cache: &mut ReplayCache| v.verify(NOW, src, p, cache);

        assert_eq!(check(&[], src(), &mut cache), Err(Reject::BadVersion));
        let mut p = packet(&alice, &good, 1);
        p[0] = 3;
        assert_eq!(check(&p, src(), &mut cache), Err(Reject::BadVersion));
        // A version-1 packet relabelled as version 2 has the wrong length for it.
        p[0] = 2;
        assert_eq!(check(&p, src(), &mut cache), Err(Reject::BadLength));
        let p = packet(&alice, &good, 1);
        assert_eq!(check(&p[..208], src(), &mut cache), Err(Reject::BadLength));
        let mut long = p.to_vec();
        long.push(0);
        assert_eq!(check(&long, src(), &mut cache), Err(Reject::BadLength));

        let p = packet(&key(9, "mallory"), &good, 1);
        assert_eq!(check(&p, src(), &mut cache), Err(Reject::UnknownKey));

        let mut p = packet(&alice, &good, 1);
        p[100] ^= 1;
        assert_eq!(check(&p, src(), &mut cache), Err(Reject::BadHmac));

        // Right HMAC key, wrong encryption key: only a holder of the MAC key can do this.
        let mut forged = KeyState::new(&alice.derive());
        forged.aead = KeyState::new(&key(9, "x").derive()).aead;
        let p = seal(&forged, &good, &[1; NONCE_LEN], &[0; PADDING_LEN]);
        assert_eq!(check(&p, src(), &mut cache), Err(Reject::BadAead));

        let mut other_server = good;
        other_server.server = ServerId::from_name("other-host");
        let p = packet(&alice, &other_server, 1);
        assert_eq!(check(&p, src(), &mut cache), Err(Reject::WrongServer));

        let p = packet(&alice, &request(Admit::Addr(src()), &["22"], NOW - 61), 1);
        assert_eq!(check(&p, src(), &mut cache), Err(Reject::Stale { age: 61 }));
        let p = packet(&alice, &request(Admit::Addr(src()), &["22"], NOW + 61), 1);
        assert_eq!(
            check(&p, src(), &mut cache),
            Err(Reject::Future { ahead: 61 })
        );
        // The window's edges are inside.
        let p = packet(&alice, &request(Admit::Addr(src()), &["22"], NOW - 60), 4);
        assert!(check(&p, src(), &mut cache).is_ok());
        let p = packet(&alice, &request(Admit::Addr(src()), &["22"], NOW + 60), 5);
        assert!(check(&p, src(), &mut cache).is_ok());

        let elsewhere: IpAddr = "198.51.100.7".parse().expect("ip");
        let p = packet(&alice, &request(Admit::Addr(elsewhere), &["22"], NOW), 6);
        assert_eq!(check(&p, src(), &mut cache), Err(Reject::AddressMismatch));
        let p = packet(
            &key(2, "nat"),
            &request(Admit::Addr(elsewhere), &["22"], NOW),
            6,
        );
        assert_eq!(
            check(&p, src(), &mut cache).expect("nat ok").addr(),
            elsewhere
        );
        // Even a key allowed NAT cannot have a rule made for "any", multicast or broadcast;
        // nor can a packet whose own source is one of them. The cache is untouched.
        for (n, bad) in [
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "ff02::1",
            "255.255.255.255",
            "::ffff:0.0.0.0",
        ]
        .into_iter()
        .enumerate()
        {
            let bad: IpAddr = bad.parse().expect("ip");
            let entries = cache.len();
            let p = packet(
                &key(2, "nat"),
                &request(Admit::Addr(bad), &["22"], NOW),
                20 + n as u8,
            );
            assert!(
                matches!(check(&p, src(), &mut cache), Err(Reject::Unadmissible(_))),
                "{bad}"
            );
            let p = packet(
                &key(2, "nat"),
                &request(Admit::Source, &["22"], NOW),
                40 + n as u8,
            );
            assert!(
                matches!(check(&p, bad, &mut cache), Err(Reject::Unadmissible(_))),
                "source {bad}"
            );
            assert_eq!(cache.len(), entries);
        }

        let p = packet(&alice, &request(Admit::Addr(src()), &["22", "80"], NOW), 7);
        assert_eq!(
            check(&p, src(), &mut cache),
            Err(Reject::PortNotAllowed("80/tcp".parse().expect("port")))
        );
        let p = packet(&alice, &request(Admit::Addr(src()), &["53/tcp"], NOW), 7);
        assert_eq!(
            check(&p, src(), &mut cache),
            Err(Reject::PortNotAllowed("53/tcp".parse().expect("port")))
        );

        let mut tiny = ReplayCache::new(1);
        let p = packet(&alice, &good, 10);
        assert!(check(&p, src(), &mut tiny).is_ok());
        let p = packet(&alice, &good, 11);
        assert_eq!(check(&p, src(), &mut tiny), Err(Reject::ReplayCacheFull));
    }

    #[test]
    fn rejects_do_not_touch_the_cache() {
        let v = verifier();
        let mut cache = ReplayCache::new(16);
        let alice = key(1, "alice");
        let bad_port = packet(&alice, &request(Admit::Addr(src()), &["80"], NOW), 1);
        assert!(v.verify(NOW, src(), &bad_port, &mut cache).is_err());
        let stale = packet(&alice, &request(Admit::Addr(src()), &["22"], 0), 1);
        assert!(v.verify(NOW, src(), &stale, &mut cache).is_err());
        assert!(cache.is_empty());
    }

    /// Regression: a forward clock step purged live entries, and a step back then let a
    /// captured packet in again.
    #[test]
    fn a_forward_then_backward_clock_step_does_not_readmit() {
        let v = verifier();
        let mut cache = ReplayCache::new(16);
        let alice = key(1, "alice");
        let captured = packet(&alice, &request(Admit::Addr(src()), &["22"], NOW), 1);
        assert!(v.verify(NOW, src(), &captured, &mut cache).is_ok());
        // The clock jumps a day ahead; a packet accepted then purges the captured one's entry.
        let later = packet(
            &alice,
            &request(Admit::Addr(src()), &["22"], NOW + 86_400),
            2,
        );
        assert!(v.verify(NOW + 86_400, src(), &later, &mut cache).is_ok());
        assert!(!cache.contains(&packet_digest(&captured)), "purged");
        // Back to the right time: the captured packet is judged by the high-water time.
        assert_eq!(
            v.verify(NOW + 5, src(), &captured, &mut cache),
            Err(Reject::Stale { age: 86_400 })
        );
        // And so after a restart: the high-water time is in the snapshot.
        let mut reloaded = ReplayCache::decode(&cache.encode(), 16).expect("decode");
        assert_eq!(reloaded.high_water(), NOW + 86_400);
        assert_eq!(
            v.verify(NOW + 5, src(), &captured, &mut reloaded),
            Err(Reject::Stale { age: 86_400 })
        );
        // A snapshot of the first format has no high-water time: it decodes, at 0.
        let mut v1 = cache.encode();
        v1.drain(16..24);
        v1[..8].copy_from_slice(crate::replay::MAGIC_V1);
        let n = v1.len() - 32;
        let sum = {
            use sha2::Digest as _;
            sha2::Sha256::digest(&v1[..n])
        };
        v1[n..].copy_from_slice(&sum);
        let old = ReplayCache::decode(&v1, 16).expect("a v1 snapshot");
        assert_eq!((old.len(), old.high_water()), (1, 0));
    }

    #[test]
    fn clock_jump_backwards_does_not_readmit() {
        let v = verifier();
        let mut cache = ReplayCache::new(16);
        let p = packet(
            &key(1, "alice"),
            &request(Admit::Addr(src()), &["22"], NOW),
            1,
        );
        assert!(v.verify(NOW, src(), &p, &mut cache).is_ok());
        // A jump backwards within the window: the entry is still there.
        for now in [NOW - 30, NOW, NOW + 60] {
            assert_eq!(
                v.verify(now, src(), &p, &mut cache),
                Err(Reject::Replay),
                "{now}"
            );
        }
        // A jump backwards past the window: the entry (expiry compared with the smaller clock)
        // is still there, and the replay check comes before the clock check.
        assert_eq!(
            v.verify(NOW - 3600, src(), &p, &mut cache),
            Err(Reject::Replay)
        );
        assert_eq!(cache.purge(NOW - 3600), 0);
        assert_eq!(v.verify(NOW, src(), &p, &mut cache), Err(Reject::Replay));
        // Once the entry expires and is purged, the packet is stale anyway.
        assert_eq!(cache.purge(NOW + 61), 1);
        assert_eq!(
            v.verify(NOW + 61, src(), &p, &mut cache),
            Err(Reject::Stale { age: 61 })
        );
    }

    #[test]
    fn duplicate_key_ids_are_refused() {
        let mut v = verifier();
        let err = v
            .add_key(
                &key(1, "alice2"),
                KeyPolicy {
                    ports: vec![],
                    allow_nat: false,
                },
                0,
            )
            .unwrap_err();
        assert!(err.to_string().contains("alice"), "{err}");
    }

    #[test]
    fn every_bit_flip_and_truncation_of_a_valid_packet_is_rejected() {
        let v = verifier();
        let p = packet(
            &key(1, "alice"),
            &request(Admit::Addr(src()), &["22"], NOW),
            1,
        );
        for bit in 0..PACKET_LEN * 8 {
            let mut q = p;
            q[bit / 8] ^= 1 << (bit % 8);
            let mut cache = ReplayCache::new(4);
            assert!(v.verify(NOW, src(), &q, &mut cache).is_err(), "bit {bit}");
            assert!(cache.is_empty());
        }
        for n in 0..PACKET_LEN {
            let mut cache = ReplayCache::new(4);
            assert!(
                v.verify(NOW, src(), &p[..n], &mut cache).is_err(),
                "len {n}"
            );
        }
        let mut cache = ReplayCache::new(4);
        assert!(v.verify(NOW, src(), &p, &mut cache).is_ok());
    }

    mod v2 {
        use super::*;
        use crate::wire2::{precheck, seal2, PACKET2_LEN, PRECHECK_OFFSET, SIGNATURE_OFFSET};
        use knock_keys::public::{ServerSecret, SigningKey, EPOCH_SECS};

        fn signing(n: u8) -> SigningKey {
            SigningKey::from_seed("carol", [n; 32]).expect("key")
        }

        fn server() -> ServerSecret {
            ServerSecret::from_bytes([0x20; 32])
        }

        /// A verifier with shared-secret alice and public-key carol, 22/tcp each.
        fn verifier2() -> Verifier {
            let mut v = verifier();
            v.set_server_key(server());
            let policy = KeyPolicy {
                ports: vec!["22/tcp".parse().expect("port")],
                allow_nat: false,
            };
            v.add_public_key(signing(3).public(), policy, 2)
                .expect("add");
            v
        }

        fn packet2(k: &SigningKey, r: &Request, eph: u8) -> [u8; PACKET2_LEN] {
            seal2(k, &server().public(), r, [eph; 32], &[0x5a; PADDING_LEN]).expect("seal")
        }

        #[test]
        fn accepts_a_public_key_packet_once() {
            let v = verifier2();
            let mut cache = ReplayCache::new(16);
            let r = request(Admit::Addr(src()), &["22/tcp"], NOW);
            let p = packet2(&signing(3), &r, 1);
            let a = v.verify(NOW, src(), &p, &mut cache).expect("accepted");
            assert_eq!(v.key_name(a.key()), "carol");
            assert!(v.is_public_key(a.key()));
            assert_eq!(a.door(), 2);
            assert_eq!(*a.request(), r);
            assert_eq!(v.verify(NOW, src(), &p, &mut cache), Err(Reject::Replay));
            // Version 1 still works beside it.
            let p1 = packet(&key(1, "alice"), &r, 1);
            assert!(v.verify(NOW, src(), &p1, &mut cache).is_ok());
        }

        #[test]
        fn the_key_id_follows_the_clients_epoch_within_one_either_side() {
            let v = verifier2();
            let mut cache = ReplayCache::new(16);
            // A client just over the hour boundary, a server just before it.
            let boundary = (NOW / EPOCH_SECS + 1) * EPOCH_SECS;
            let r = request(Admit::Addr(src()), &["22/tcp"], boundary + 5);
            let p = packet2(&signing(3), &r, 1);
            assert!(v.verify(boundary - 5, src(), &p, &mut cache).is_ok());
            // Two epochs away the id is unknown (the clock check would refuse it anyway).
            let r = request(Admit::Addr(src()), &["22/tcp"], boundary + 2 * EPOCH_SECS);
            let p = packet2(&signing(3), &r, 2);
            assert_eq!(
                v.verify(boundary - 5, src(), &p, &mut cache),
                Err(Reject::UnknownKey)
            );
        }

        #[test]
        fn every_v2_reject() {
            let v = verifier2();
            let mut cache = ReplayCache::new(16);
            let r = request(Admit::Addr(src()), &["22/tcp"], NOW);
            let good = packet2(&signing(3), &r, 1);
            let mut check = |p: &[u8]| v.verify(NOW, src(), p, &mut cache);
            assert_eq!(check(&good[..PACKET2_LEN - 1]), Err(Reject::BadLength));
            // Unknown: a key the server does not have.
            assert_eq!(check(&packet2(&signing(4), &r, 1)), Err(Reject::UnknownKey));
            // Any flipped bit before the pre-check field, or in it, fails the pre-check.
            for i in [0usize, 1, 9, 41, 170, 200, PRECHECK_OFFSET, PACKET2_LEN - 1] {
                let mut p = good;
                p[i] ^= 0x01;
                let want = if i == 0 {
                    Err(Reject::BadVersion)
                } else if (1..9).contains(&i) {
                    Err(Reject::UnknownKey)
                } else {
                    Err(Reject::BadPrecheck)
                };
                assert_eq!(check(&p), want, "byte {i}");
            }
            // Another key under the same name, whose pre-check key a thief of the server's
            // files would know: the pre-check passes, the signature does not.
            let thief = signing(4);
            let mut forged = packet2(&thief, &r, 1);
            forged[1..9].copy_from_slice(&good[1..9]);
            let pre = precheck_mac(
                signing(3).public().precheck_key(),
                &forged[..PRECHECK_OFFSET],
            )
            .finalize()
            .into_bytes();
            forged[PRECHECK_OFFSET..].copy_from_slice(&pre[..16]);
            assert_eq!(check(&forged), Err(Reject::BadSignature));
            // A changed signature with a recomputed pre-check.
            let mut p = good;
            p[SIGNATURE_OFFSET] ^= 1;
            let pre = precheck(signing(3).public().precheck_key(), &p[..PRECHECK_OFFSET]);
            p[PRECHECK_OFFSET..].copy_from_slice(&pre);
            assert_eq!(check(&p), Err(Reject::BadSignature));
            // The server checks every other rule as for version 1.
            let p = packet2(
                &signing(3),
                &request(Admit::Addr(src()), &["53/udp"], NOW),
                2,
            );
            assert!(matches!(check(&p), Err(Reject::PortNotAllowed(_))));
            let p = packet2(
                &signing(3),
                &request(Admit::Addr(src()), &["22/tcp"], NOW - 61),
                3,
            );
            assert!(matches!(check(&p), Err(Reject::Stale { .. })));
            let mut other = r;
            other.server = ServerId::from_name("elsewhere");
            assert_eq!(
                check(&packet2(&signing(3), &other, 4)),
                Err(Reject::WrongServer)
            );
            // Nothing above was remembered: the good packet still passes, once.
            assert!(check(&good).is_ok());
            assert_eq!(check(&good), Err(Reject::Replay));
        }

        #[test]
        fn a_packet_sealed_to_another_server_key_is_refused_by_the_signature() {
            let v = verifier2();
            let mut cache = ReplayCache::new(16);
            let r = request(Admit::Addr(src()), &["22/tcp"], NOW);
            let other = ServerSecret::from_bytes([0x21; 32]).public();
            let p = seal2(&signing(3), &other, &r, [1; 32], &[0; PADDING_LEN]).expect("seal");
            assert_eq!(
                v.verify(NOW, src(), &p, &mut cache),
                Err(Reject::BadSignature)
            );
        }

        #[test]
        fn without_a_server_key_public_key_packets_are_unknown() {
            let mut v = verifier();
            let policy = KeyPolicy {
                ports: vec!["22/tcp".parse().expect("port")],
                allow_nat: false,
            };
            v.add_public_key(signing(3).public(), policy.clone(), 0)
                .expect("add");
            assert!(v.add_public_key(signing(3).public(), policy, 0).is_err());
            let mut cache = ReplayCache::new(16);
            let p = packet2(
                &signing(3),
                &request(Admit::Addr(src()), &["22/tcp"], NOW),
                1,
            );
            assert_eq!(
                v.verify(NOW, src(), &p, &mut cache),
                Err(Reject::UnknownKey)
            );
        }
    }
}
