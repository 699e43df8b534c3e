//! Public-key mode (packet version 2, docs/PROTOCOL.md part II): the client's Ed25519 signing
//! key, the public half a server's door holds (`PublicKeys = NAME:BASE64`), and the server's
//! own X25519 key (`[options] ServerKey = FILE`).
//!
//! The server holds no secret of a client: a door's line is the client's Ed25519 public key
//! and its pre-check key, which lets a packet through to the signature check but can never
//! sign one. Ed25519 and HMAC come from ring; X25519 with a static secret from x25519-dalek
//! (ring's X25519 keys are ephemeral only), whose `StaticSecret` is wiped on drop.
//!
//! Key files (the same rules as a shared-secret keyfile: UTF-8, `#` comments, `key = value`
//! once each, mode 0600):
//!
//! ```text
//! # knock-spa public-key client key (key id 0123456789abcdef): keep this file secret, mode 0600
//! name = alice
//! kind = public-key
//! secret = BASE64 of the 32-byte Ed25519 seed
//! ```
//!
//! ```text
//! # knock-spad server key (public key BASE64): keep this file secret, mode 0600
//! kind = server-key
//! secret = BASE64 of the 32-byte X25519 secret
//! ```

use std::fmt;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::signature::{self, KeyPair as _};
use ring::{digest, hmac};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::{
    concat, load_with, save_text, valid_name, KeyError, KeyId, NamedKey, ParseProblem, KEY_ID_LEN,
    KIND_SHARED,
};

/// Length of an Ed25519 seed, an Ed25519 public key, an X25519 key.
pub const KEY_LEN: usize = 32;
/// Length of the pre-check key.
pub const PRECHECK_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Length of the XChaCha20-Poly1305 nonce of a body key.
pub const BODY_NONCE_LEN: usize = 24;
/// Length of a door's public key line's value once decoded: public key ‖ pre-check key.
pub const PUBLIC_LINE_LEN: usize = KEY_LEN + PRECHECK_KEY_LEN;
/// Seconds per key-id epoch: a client's key id on the wire changes every epoch.
pub const EPOCH_SECS: u64 = 3600;

/// `kind` of a client's public-key keyfile.
pub const KIND_PUBLIC: &str = "public-key";
/// `kind` of the server's key file.
pub const KIND_SERVER: &str = "server-key";

/// HKDF-SHA256 salt of every version-2 derivation.
pub const V2_HKDF_SALT: &[u8] = b"knock-spa v2 hkdf salt";
/// HKDF info of the pre-check key (from the seed).
pub const LABEL_PRECHECK: &[u8] = b"knock-spa v2 pre-check key";
/// HMAC message prefix of a key id for one epoch.
pub const LABEL_EPOCH_ID: &[u8] = b"knock-spa v2 key id";
/// SHA-256 prefix of the display id (never on the wire).
pub const LABEL_DISPLAY_ID: &[u8] = b"knock-spa v2 public key id\0";
/// HKDF info prefix of the body key.
pub const LABEL_BODY_KEY: &[u8] = b"knock-spa v2 body key";
/// HKDF info prefix of the body nonce.
pub const LABEL_BODY_NONCE: &[u8] = b"knock-spa v2 body nonce";

/// The key-id epoch of a Unix time.
pub fn epoch(unix_secs: u64) -> u64 {
    unix_secs / EPOCH_SECS
}

/// HKDF-Extract with the version-2 salt.
fn extract(ikm: &[u8]) -> hmac::Key {
    let prk = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, V2_HKDF_SALT), ikm);
    hmac::Key::new(hmac::HMAC_SHA256, prk.as_ref())
}

/// One block of HKDF-Expand: the first `out.len()` (≤ 32) bytes of HMAC(PRK, info ‖ 0x01).
fn expand1(prk: &hmac::Key, info: &[&[u8]], out: &mut [u8]) {
    let mut ctx = hmac::Context::with_key(prk);
    for part in info {
        ctx.update(part);
    }
    ctx.update(&[1]);
    let t = ctx.sign();
    out.copy_from_slice(&t.as_ref()[..out.len()]);
}

fn decode32(text: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, ParseProblem> {
    let decoded = Zeroizing::new(
        B64.decode(text.trim().as_bytes())
            .map_err(|_| ParseProblem::BadBase64)?,
    );
    if decoded.len() != KEY_LEN {
        return Err(ParseProblem::BadLength(decoded.len()));
    }
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    out.copy_from_slice(&decoded);
    Ok(out)
}

fn random32() -> Result<Zeroizing<[u8; KEY_LEN]>, KeyError> {
    let rng = ring::rand::SystemRandom::new();
    let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
    ring::rand::SecureRandom::fill(&rng, &mut bytes[..]).map_err(|_| KeyError::Random)?;
    Ok(bytes)
}

/// The settings of a key file, each once: `(line, value)` per allowed name.
pub(crate) struct Settings<'a> {
    values: Vec<(&'static str, usize, &'a str)>,
    last_line: usize,
}

impl<'a> Settings<'a> {
    pub(crate) fn parse(text: &'a str, allowed: &[&'static str]) -> Result<Self, KeyError> {
        let mut values: Vec<(&'static str, usize, &'a str)> = Vec::new();
        let mut last_line = 0;
        for (idx, raw) in text.lines().enumerate() {
            let line = idx + 1;
            last_line = line;
            let err = |what| KeyError::Parse { line, what };
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let (k, v) = trimmed.split_once('=').ok_or(err(ParseProblem::Syntax))?;
            let (k, v) = (k.trim(), v.trim());
            let lower = k.to_ascii_lowercase();
            let name = allowed
                .iter()
                .find(|a| **a == lower)
                .ok_or_else(|| err(ParseProblem::UnknownSetting(k.to_owned())))?;
            if values.iter().any(|(n, _, _)| n == name) {
                return Err(err(ParseProblem::Duplicate(name)));
            }
            values.push((name, line, v));
        }
        Ok(Self {
            values,
            last_line: last_line.max(1),
        })
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.values.iter().any(|(n, _, _)| *n == name)
    }

    pub(crate) fn get(&self, name: &'static str) -> Result<(usize, &'a str), KeyError> {
        self.values
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, line, v)| (*line, *v))
            .ok_or(KeyError::Parse {
                line: self.last_line,
                what: ParseProblem::Missing(name),
            })
    }

    pub(crate) fn kind(&self, want: &str) -> Result<(), KeyError> {
        let (line, kind) = self.get("kind")?;
        if kind == want {
            Ok(())
        } else {
            Err(KeyError::Parse {
                line,
                what: ParseProblem::WrongKind(kind.to_owned()),
            })
        }
    }
}

/// A client's public-key keyfile: a name and an Ed25519 seed. The seed is wiped on drop;
/// `Debug` shows the name and the display id only.
#[derive(Clone)]
pub struct SigningKey {
    seed: Zeroizing<[u8; KEY_LEN]>,
    public: ClientPublic,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({}, {})", self.public.name, self.public.id)
    }
}

impl SigningKey {
    /// The key for a seed (tests, vectors): derives the public key and the pre-check key.
    pub fn from_seed(name: &str, seed: [u8; KEY_LEN]) -> Result<Self, ParseProblem> {
        let seed = Zeroizing::new(seed);
        Self::from_seed_ref(name, &seed)
    }

    fn from_seed_ref(name: &str, seed: &[u8; KEY_LEN]) -> Result<Self, ParseProblem> {
        if !valid_name(name) {
            return Err(ParseProblem::BadName(name.to_owned()));
        }
        let pair = signature::Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|_| ParseProblem::BadKey)?;
        let mut verify = [0u8; KEY_LEN];
        verify.copy_from_slice(pair.public_key().as_ref());
        let mut precheck = Zeroizing::new([0u8; PRECHECK_KEY_LEN]);
        expand1(&extract(seed), &[LABEL_PRECHECK], &mut precheck[..]);
        Ok(Self {
            seed: Zeroizing::new(*seed),
            public: ClientPublic::from_parts(name, verify, *precheck),
        })
    }

    /// A new key from the OS CSPRNG.
    pub fn generate(name: &str) -> Result<Self, KeyError> {
        let seed = random32()?;
        Self::from_seed_ref(name, &seed).map_err(|what| KeyError::Parse { line: 1, what })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.public.name
    }

    /// What a server's door holds for this key.
    pub fn public(&self) -> &ClientPublic {
        &self.public
    }

    /// An Ed25519 signature of `msg` (RFC 8032, deterministic). ring's key pair is built for
    /// this one signature from the seed, which stays in wiped memory; ring does not wipe its
    /// own copy of the expanded secret when the pair is dropped.
    pub fn sign(&self, msg: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut out = [0u8; SIGNATURE_LEN];
        // The seed was accepted by `from_seed_unchecked` when this key was made, and that
        // call fails only for a seed of the wrong length, which the type rules out.
        if let Ok(pair) = signature::Ed25519KeyPair::from_seed_unchecked(&self.seed[..]) {
            out.copy_from_slice(pair.sign(msg).as_ref());
        }
        out
    }

    /// The keyfile text.
    pub fn to_keyfile_text(&self) -> Zeroizing<String> {
        let secret = Zeroizing::new(B64.encode(&self.seed[..]));
        let id = self.public.id.to_string();
        concat(&[
            "# knock-spa public-key client key (key id ",
            &id,
            "): keep this file secret, mode 0600\nname = ",
            &self.public.name,
            "\nkind = ",
            KIND_PUBLIC,
            "\nsecret = ",
            &secret,
            "\n",
        ])
    }

    /// Parses keyfile text (`kind = public-key` required). Errors carry 1-based lines.
    pub fn parse_str(text: &str) -> Result<Self, KeyError> {
        let s = Settings::parse(text, &["name", "kind", "secret"])?;
        s.kind(KIND_PUBLIC)?;
        let (line, name) = s.get("name")?;
        if !valid_name(name) {
            return Err(KeyError::Parse {
                line,
                what: ParseProblem::BadName(name.to_owned()),
            });
        }
        let (line, secret) = s.get("secret")?;
        let seed = decode32(secret).map_err(|what| KeyError::Parse { line, what })?;
        Self::from_seed_ref(name, &seed).map_err(|what| KeyError::Parse { line, what })
    }

    /// Loads a keyfile, refusing one that group or others can access.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        load_with(path, Self::parse_str)
    }

    /// Writes the keyfile, mode 0600; never replaces a file without `force`.
    pub fn save(&self, path: &Path, force: bool) -> Result<(), KeyError> {
        save_text(path, &self.to_keyfile_text(), force)
    }
}

/// What a server's door holds for one public-key client: the name, the Ed25519 public key
/// and the pre-check key. The pre-check key opens nothing (it cannot sign), but whoever has
/// it can make the server check a signature, so it is wiped on drop and not shown by `Debug`.
#[derive(Clone)]
pub struct ClientPublic {
    name: String,
    verify: [u8; KEY_LEN],
    precheck: Zeroizing<[u8; PRECHECK_KEY_LEN]>,
    id: KeyId,
}

impl fmt::Debug for ClientPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientPublic({}, {})", self.name, self.id)
    }
}

impl ClientPublic {
    fn from_parts(name: &str, verify: [u8; KEY_LEN], precheck: [u8; PRECHECK_KEY_LEN]) -> Self {
        let mut h = digest::Context::new(&digest::SHA256);
        h.update(LABEL_DISPLAY_ID);
        h.update(&verify);
        let d = h.finish();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&d.as_ref()[..KEY_ID_LEN]);
        Self {
            name: name.to_owned(),
            verify,
            precheck: Zeroizing::new(precheck),
            id: KeyId(id),
        }
    }

    /// Parses a door's `NAME:BASE64` (base64 of the public key ‖ the pre-check key).
    pub fn from_inline(text: &str) -> Result<Self, ParseProblem> {
        let (name, value) = text.split_once(':').ok_or(ParseProblem::InlineSyntax)?;
        let name = name.trim();
        if !valid_name(name) {
            return Err(ParseProblem::BadName(name.to_owned()));
        }
        let decoded = Zeroizing::new(
            B64.decode(value.trim().as_bytes())
                .map_err(|_| ParseProblem::BadBase64)?,
        );
        if decoded.len() != PUBLIC_LINE_LEN {
            return Err(ParseProblem::BadPublicLength(decoded.len()));
        }
        let mut verify = [0u8; KEY_LEN];
        verify.copy_from_slice(&decoded[..KEY_LEN]);
        let mut precheck = Zeroizing::new([0u8; PRECHECK_KEY_LEN]);
        precheck.copy_from_slice(&decoded[KEY_LEN..]);
        Ok(Self::from_parts(name, verify, *precheck))
    }

    /// `NAME:BASE64`, as `PublicKeys =` takes it.
    pub fn to_inline(&self) -> String {
        let mut both = Zeroizing::new([0u8; PUBLIC_LINE_LEN]);
        both[..KEY_LEN].copy_from_slice(&self.verify);
        both[KEY_LEN..].copy_from_slice(&self.precheck[..]);
        format!("{}:{}", self.name, B64.encode(&both[..]))
    }

    /// The client's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Ed25519 public key.
    pub fn verify_key(&self) -> &[u8; KEY_LEN] {
        &self.verify
    }

    /// The pre-check key (HMAC-SHA256).
    pub fn precheck_key(&self) -> &[u8; PRECHECK_KEY_LEN] {
        &self.precheck
    }

    /// The display id: SHA-256 of the label and the public key, first 8 bytes. Never sent:
    /// packets carry [`ClientPublic::epoch_id`].
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The key id packets carry during `epoch` (a different one every [`EPOCH_SECS`], which
    /// nobody without the pre-check key can link to the last).
    pub fn epoch_id(&self, epoch: u64) -> KeyId {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.precheck[..]);
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(LABEL_EPOCH_ID);
        ctx.update(&epoch.to_be_bytes());
        let t = ctx.sign();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&t.as_ref()[..KEY_ID_LEN]);
        KeyId(id)
    }

    /// Whether `sig` is this key's Ed25519 signature of `msg` (ring's strict verifier).
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        signature::UnparsedPublicKey::new(&signature::ED25519, &self.verify)
            .verify(msg, sig)
            .is_ok()
    }
}

/// The key that seals or opens one packet's body: XChaCha20-Poly1305 key and nonce,
/// derived from one X25519 exchange. Wiped on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct BodyKey {
    key: [u8; KEY_LEN],
    nonce: [u8; BODY_NONCE_LEN],
}

impl fmt::Debug for BodyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BodyKey(..)")
    }
}

impl BodyKey {
    /// The AEAD key.
    pub fn key(&self) -> &[u8; KEY_LEN] {
        &self.key
    }
    /// The AEAD nonce.
    pub fn nonce(&self) -> &[u8; BODY_NONCE_LEN] {
        &self.nonce
    }

    /// HKDF from the shared secret, bound to both exchange keys and the client's key;
    /// `None` for an all-zero shared secret (a low-order point).
    fn derive(
        shared: &x25519_dalek::SharedSecret,
        ephemeral: &[u8; KEY_LEN],
        server: &[u8; KEY_LEN],
        client: &[u8; KEY_LEN],
    ) -> Option<Self> {
        if !shared.was_contributory() {
            return None;
        }
        let prk = extract(shared.as_bytes());
        let mut out = BodyKey {
            key: [0; KEY_LEN],
            nonce: [0; BODY_NONCE_LEN],
        };
        expand1(
            &prk,
            &[LABEL_BODY_KEY, ephemeral, server, client],
            &mut out.key,
        );
        expand1(
            &prk,
            &[LABEL_BODY_NONCE, ephemeral, server, client],
            &mut out.nonce,
        );
        Some(out)
    }
}

/// The server's X25519 public key, which clients seal to (`--server-key`, `server_key`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServerPublic(pub [u8; KEY_LEN]);

impl fmt::Debug for ServerPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerPublic({})", self.to_base64())
    }
}

impl ServerPublic {
    /// Parses base64 of 32 bytes, refusing a low-order point (no key could be agreed with it).
    pub fn from_base64(text: &str) -> Result<Self, ParseProblem> {
        let bytes = *decode32(text)?;
        let probe = x25519_dalek::StaticSecret::from([0x55; KEY_LEN]);
        if !probe
            .diffie_hellman(&x25519_dalek::PublicKey::from(bytes))
            .was_contributory()
        {
            return Err(ParseProblem::BadKey);
        }
        Ok(Self(bytes))
    }

    /// The key in base64.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }

    /// The client side of one packet: the ephemeral public key and the body key, from the
    /// ephemeral secret the caller drew from its CSPRNG. `None` only for a low-order server
    /// key, which [`ServerPublic::from_base64`] refuses.
    pub fn seal_key(
        &self,
        ephemeral_secret: [u8; KEY_LEN],
        client: &[u8; KEY_LEN],
    ) -> Option<([u8; KEY_LEN], BodyKey)> {
        let secret = x25519_dalek::StaticSecret::from(ephemeral_secret);
        let ephemeral = x25519_dalek::PublicKey::from(&secret).to_bytes();
        let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(self.0));
        BodyKey::derive(&shared, &ephemeral, &self.0, client).map(|k| (ephemeral, k))
    }
}

/// The server's X25519 key (`ServerKey = FILE`). The secret is wiped on drop.
#[derive(Clone)]
pub struct ServerSecret {
    secret: x25519_dalek::StaticSecret,
    public: ServerPublic,
}

impl fmt::Debug for ServerSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerSecret({})", self.public.to_base64())
    }
}

impl ServerSecret {
    /// The key for raw secret bytes (tests, vectors).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        let secret = x25519_dalek::StaticSecret::from(bytes);
        let public = ServerPublic(x25519_dalek::PublicKey::from(&secret).to_bytes());
        Self { secret, public }
    }

    /// A new key from the OS CSPRNG.
    pub fn generate() -> Result<Self, KeyError> {
        Ok(Self::from_bytes(*random32()?))
    }

    /// The public key clients seal to.
    pub fn public(&self) -> ServerPublic {
        self.public
    }

    /// The server side of one packet: the body key for its ephemeral key and the client's
    /// public key; `None` when the ephemeral key is a low-order point.
    pub fn open_key(&self, ephemeral: &[u8; KEY_LEN], client: &[u8; KEY_LEN]) -> Option<BodyKey> {
        let shared = self
            .secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(*ephemeral));
        BodyKey::derive(&shared, ephemeral, &self.public.0, client)
    }

    /// The key file text.
    pub fn to_keyfile_text(&self) -> Zeroizing<String> {
        let secret = Zeroizing::new(B64.encode(self.secret.as_bytes()));
        let public = self.public.to_base64();
        concat(&[
            "# knock-spad server key (public key ",
            &public,
            "): keep this file secret, mode 0600\nkind = ",
            KIND_SERVER,
            "\nsecret = ",
            &secret,
            "\n",
        ])
    }

    /// Parses key file text (`kind = server-key`).
    pub fn parse_str(text: &str) -> Result<Self, KeyError> {
        let s = Settings::parse(text, &["kind", "secret"])?;
        s.kind(KIND_SERVER)?;
        let (line, secret) = s.get("secret")?;
        let bytes = decode32(secret).map_err(|what| KeyError::Parse { line, what })?;
        Ok(Self::from_bytes(*bytes))
    }

    /// Loads a key file, refusing one that group or others can access.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        load_with(path, Self::parse_str)
    }

    /// Writes the key file, mode 0600; never replaces a file without `force`.
    pub fn save(&self, path: &Path, force: bool) -> Result<(), KeyError> {
        save_text(path, &self.to_keyfile_text(), force)
    }
}

/// A client keyfile of either kind.
#[derive(Clone, Debug)]
pub enum ClientKey {
    /// A shared secret (packet version 1).
    Shared(NamedKey),
    /// A signing key (packet version 2).
    Public(SigningKey),
}

impl ClientKey {
    /// Parses keyfile text of either kind, told apart by its `kind` line (none: shared).
    pub fn parse_str(text: &str) -> Result<Self, KeyError> {
        let public = text.lines().any(|l| {
            l.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("kind") && v.trim() == KIND_PUBLIC
            })
        });
        if public {
            SigningKey::parse_str(text).map(ClientKey::Public)
        } else {
            NamedKey::parse_str(text).map(ClientKey::Shared)
        }
    }

    /// Loads a keyfile of either kind, refusing one that group or others can access.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        load_with(path, Self::parse_str)
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        match self {
            ClientKey::Shared(k) => k.name(),
            ClientKey::Public(k) => k.name(),
        }
    }

    /// The public id shown to people (the packet key id for a shared secret, the display id
    /// for a signing key).
    pub fn id(&self) -> KeyId {
        match self {
            ClientKey::Shared(k) => k.derive().id(),
            ClientKey::Public(k) => k.public().id(),
        }
    }

    /// `"shared-secret"` or `"public-key"`.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientKey::Shared(_) => KIND_SHARED,
            ClientKey::Public(_) => KIND_PUBLIC,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(start: u8) -> [u8; 32] {
        let mut b = [0u8; 32];
        for (i, x) in b.iter_mut().enumerate() {
            *x = start.wrapping_add(i as u8);
        }
        b
    }

    /// Seed 00 01 … 1f, server secret 20 21 … 3f: the values of docs/PROTOCOL.md part II
    /// (and of scripts/spa_reference.py).
    #[test]
    fn v2_known_answers() {
        let k = SigningKey::from_seed("a", seq(0)).expect("key");
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(hex(k.public().verify_key()), KAT2_A);
        assert_eq!(hex(k.public().precheck_key()), KAT2_P);
        assert_eq!(k.public().id().to_string(), KAT2_ID);
        assert_eq!(
            k.public().epoch_id(epoch(1_767_225_600)).to_string(),
            KAT2_KID
        );
        assert_eq!(hex(&ServerSecret::from_bytes(seq(0x20)).public().0), KAT2_X);
    }

    const KAT2_A: &str = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8";
    const KAT2_P: &str = "3cdad11b606942cce3d66d52d2ad22abc93811b50cb3fcd69187c56415e254d6";
    const KAT2_ID: &str = "24b133da68d7bf89";
    const KAT2_KID: &str = "84a3cbdc3f780c88";
    const KAT2_X: &str = "358072d6365880d1aeea329adf9121383851ed21a28e3b75e965d0d2cd166254";

    #[test]
    fn keyfile_round_trips_and_names_its_kind() {
        let k = SigningKey::from_seed("alice", seq(0)).expect("key");
        let text = k.to_keyfile_text();
        assert!(text.contains("kind = public-key"));
        let back = SigningKey::parse_str(&text).expect("parse");
        assert_eq!(back.public().to_inline(), k.public().to_inline());
        match ClientKey::parse_str(&text).expect("either") {
            ClientKey::Public(p) => assert_eq!(p.name(), "alice"),
            other => panic!("expected a public key, got {other:?}"),
        }
        // A shared-secret reader refuses it, naming the kind.
        let err = NamedKey::parse_str(&text).expect_err("not shared");
        assert!(err.to_string().contains("kind = public-key"), "{err}");
        // And the public-key reader refuses a shared-secret file.
        let shared = NamedKey::new("bob", crate::MasterKey::from_bytes([1; 32]))
            .expect("key")
            .to_keyfile_text();
        assert!(SigningKey::parse_str(&shared).is_err());
        assert!(matches!(
            ClientKey::parse_str(&shared),
            Ok(ClientKey::Shared(_))
        ));
    }

    #[test]
    fn the_door_line_round_trips_and_holds_no_seed() {
        let k = SigningKey::from_seed("alice", seq(0)).expect("key");
        let line = k.public().to_inline();
        let back = ClientPublic::from_inline(&line).expect("parse");
        assert_eq!(back.verify_key(), k.public().verify_key());
        assert_eq!(back.precheck_key(), k.public().precheck_key());
        let seed_b64 = B64.encode(seq(0));
        assert!(!line.contains(&seed_b64));
        assert!(ClientPublic::from_inline("alice:AAAA").is_err());
        assert!(ClientPublic::from_inline("bad name:AAAA").is_err());
    }

    #[test]
    fn signatures_verify_only_with_the_signers_key() {
        let a = SigningKey::from_seed("a", seq(0)).expect("key");
        let b = SigningKey::from_seed("a", seq(1)).expect("key");
        let sig = a.sign(b"msg");
        assert!(a.public().verify(b"msg", &sig));
        assert!(!a.public().verify(b"msh", &sig));
        assert!(!b.public().verify(b"msg", &sig));
    }

    #[test]
    fn both_sides_agree_on_the_body_key_and_refuse_low_order_points() {
        let server = ServerSecret::from_bytes(seq(0x20));
        let client = [7u8; 32];
        let (eph, sealed) = server.public().seal_key(seq(0x40), &client).expect("seal");
        let opened = server.open_key(&eph, &client).expect("open");
        assert_eq!(sealed.key(), opened.key());
        assert_eq!(sealed.nonce(), opened.nonce());
        // Bound to the client's key.
        let other = server.open_key(&eph, &[8u8; 32]).expect("open");
        assert_ne!(other.key(), sealed.key());
        // The identity point and a point of order 8 give an all-zero secret.
        assert!(server.open_key(&[0; 32], &client).is_none());
        let mut one = [0u8; 32];
        one[0] = 1;
        assert!(server.open_key(&one, &client).is_none());
        assert!(ServerPublic::from_base64(&B64.encode([0u8; 32])).is_err());
        assert!(ServerPublic::from_base64(&server.public().to_base64()).is_ok());
    }

    #[test]
    fn server_key_file_round_trips() {
        let s = ServerSecret::from_bytes(seq(0x20));
        let text = s.to_keyfile_text();
        assert!(text.contains(&s.public().to_base64()));
        let back = ServerSecret::parse_str(&text).expect("parse");
        assert_eq!(back.public(), s.public());
        let err = ServerSecret::parse_str("kind = public-key\nsecret = x\n").expect_err("kind");
        assert!(err.to_string().contains("line 1"), "{err}");
        let err = ServerSecret::parse_str("kind = server-key\n").expect_err("secret");
        assert!(err.to_string().contains("missing `secret`"), "{err}");
    }

    #[test]
    fn epoch_ids_change_every_epoch() {
        let k = SigningKey::from_seed("a", seq(0)).expect("key");
        let p = k.public();
        assert_ne!(p.epoch_id(1), p.epoch_id(2));
        assert_eq!(p.epoch_id(5), p.epoch_id(5));
        assert_eq!(epoch(3599), 0);
        assert_eq!(epoch(3600), 1);
    }

    #[test]
    fn debug_shows_no_secret() {
        let k = SigningKey::from_seed("alice", seq(0)).expect("key");
        let d = format!("{k:?} {:?}", k.public());
        assert!(!d.contains(&B64.encode(seq(0))));
        assert!(d.contains("alice"));
        let s = ServerSecret::from_bytes(seq(0x20));
        assert!(!format!("{s:?}").contains(&B64.encode(seq(0x20))));
    }
}
