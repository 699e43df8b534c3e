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
//! Nothing is written to the replay cache before step 9, so an attacker without a key cannot
//! fill it. No I/O, no clock, no allocation on the reject path.

use std::collections::HashMap;
use std::net::IpAddr;

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{Tag, XNonce};
use hmac::Mac;
use knock_keys::{KeyId, NamedKey, KEY_ID_LEN};

use crate::replay::{Digest, InsertError, ReplayCache};
use crate::types::{admissible, canonical, PortSpec};
use crate::wire::{
    packet_digest, Action, Admit, BodyError, KeyState, Request, ServerId, BODY_LEN, HEADER_LEN,
    KEY_ID_OFFSET, MACED_LEN, NONCE_OFFSET, PACKET_LEN, VERSION,
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
    pub const ALL: [RejectKind; 11] = [
        RejectKind::Malformed,
        RejectKind::UnknownKey,
        RejectKind::BadHmac,
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

/// One key the verifier accepts: its name, derived keys, policy and door.
#[derive(Debug)]
struct KeyEntry {
    name: String,
    state: KeyState,
    policy: KeyPolicy,
    door: usize,
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
        }
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
            state,
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

    /// The public id of a key.
    pub fn key_id(&self, key: KeyIndex) -> Option<KeyId> {
        self.entries.get(key.0).map(|s| s.state.id())
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
        // 3. HMAC over bytes 0..177; `verify_slice` compares in constant time.
        let (maced, tag) = packet.split_at(MACED_LEN);
        let mut mac = entry.state.mac();
        mac.update(maced);
        mac.verify_slice(tag).map_err(|_| Reject::BadHmac)?;
        // 4. Replay.
        let digest = packet_digest(packet);
        if cache.contains(&digest) {
            return Err(Reject::Replay);
        }
        // 5. AEAD, header as associated data.
        let (header, sealed) = maced.split_at(HEADER_LEN);
        let (ciphertext, aead_tag) = sealed.split_at(BODY_LEN);
        let mut body = [0u8; BODY_LEN];
        body.copy_from_slice(ciphertext);
        let opened = entry.state.aead.decrypt_in_place_detached(
            XNonce::from_slice(&header[NONCE_OFFSET..]),
            header,
            &mut body,
            Tag::from_slice(aead_tag),
        );
        if opened.is_err() {
            return Err(Reject::BadAead);
        }
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
        p[0] = 2;
        assert_eq!(check(&p, src(), &mut cache), Err(Reject::BadVersion));
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
}
