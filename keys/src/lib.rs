//! Keyfiles for knock-spa: one client key per file, a name and a 32-byte random master
//! secret in base64.
//!
//! This crate owns every secret byte the project handles. It generates master secrets from the
//! OS CSPRNG (ring), reads and writes the keyfile text format, refuses keyfiles that group or
//! others can read (as ssh does), and derives the per-purpose keys with HKDF-SHA256. Secrets
//! live in types that zeroize on drop and whose `Debug` prints only the public key id.
//!
//! It must not log, print or put secret bytes in an error message.
//!
//! Keyfile format (UTF-8 text, `#` comments, blank lines ignored, every key once):
//!
//! ```text
//! # knock-spa key: keep this file secret (mode 0600)
//! name = alice
//! secret = 7Pq0...base64 of 32 bytes...=
//! ```
#![forbid(unsafe_code)]

pub mod atomic;
pub mod private;
pub mod public;

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::hkdf;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Length of the master secret in a keyfile.
pub const MASTER_LEN: usize = 32;
/// Length of the derived encryption key (XChaCha20-Poly1305).
pub const ENC_KEY_LEN: usize = 32;
/// Length of the derived MAC key (HMAC-SHA256, one block of SHA-256 would allow 64; 32 is the
/// hash output size and what RFC 2104 recommends as the minimum).
pub const MAC_KEY_LEN: usize = 32;
/// Length of the public key id carried in every packet.
pub const KEY_ID_LEN: usize = 8;
/// Longest key name accepted.
pub const MAX_NAME_LEN: usize = 64;

/// HKDF-SHA256 salt shared by every derivation (a fixed, public domain separator).
pub const HKDF_SALT: &[u8] = b"knock-spa v1 hkdf salt";
/// HKDF info label of the encryption key.
pub const LABEL_ENC: &[u8] = b"knock-spa v1 encryption key";
/// HKDF info label of the MAC key.
pub const LABEL_MAC: &[u8] = b"knock-spa v1 authentication key";
/// HKDF info label of the public key id.
pub const LABEL_KEY_ID: &[u8] = b"knock-spa v1 key id";

/// Errors from reading, parsing or writing keys. Never carries secret bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The keyfile is readable or writable by group or others.
    #[error(
        "{path}: permissions {mode:04o} are too open: a keyfile must not be accessible by \
         group or others (run: chmod 600 {path})"
    )]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The path names something other than a regular file.
    #[error("{path}: not a regular file")]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// The file exists and `force` was not given.
    #[error("{path}: already exists (use --force to overwrite)")]
    Exists {
        /// The path.
        path: PathBuf,
    },
    /// A line of the keyfile could not be parsed.
    #[error("line {line}: {what}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        what: ParseProblem,
    },
    /// A parse error in a named file.
    #[error("{path}:{line}: {what}")]
    ParseIn {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        what: ParseProblem,
    },
    /// The OS random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}

/// What is wrong with a keyfile or an inline key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseProblem {
    /// A line is neither a comment nor `key = value`.
    #[error("expected `name = value`")]
    Syntax,
    /// A key other than `name`, `kind` or `secret`.
    #[error("unknown setting `{0}` (expected `name`, `kind` or `secret`)")]
    UnknownSetting(String),
    /// A setting given twice.
    #[error("`{0}` given twice")]
    Duplicate(&'static str),
    /// A required setting is missing.
    #[error("missing `{0}`")]
    Missing(&'static str),
    /// The name is empty, too long, or has characters outside `[A-Za-z0-9._@-]`.
    #[error("invalid key name `{0}`: use 1 to 64 of A-Z a-z 0-9 . _ @ -")]
    BadName(String),
    /// The secret is not valid base64.
    #[error("the secret is not valid base64")]
    BadBase64,
    /// The secret decodes to the wrong number of bytes.
    #[error("the secret is {0} bytes, expected 32")]
    BadLength(usize),
    /// An inline key is not `NAME:BASE64`.
    #[error("expected NAME:BASE64")]
    InlineSyntax,
    /// A door's public key line decodes to the wrong number of bytes.
    #[error("the public key is {0} bytes, expected 64 (`knock-spa keygen --public-key` prints the line)")]
    BadPublicLength(usize),
    /// The file is a key of another kind than the reader expects (`kind = ...`).
    #[error("`kind = {0}` is not the kind of key expected here")]
    WrongKind(String),
    /// A public key or a secret is not a valid key (a low-order X25519 point).
    #[error("not a usable key")]
    BadKey,
}

/// `kind` of a shared-secret (version 1) keyfile; the line is optional there.
pub const KIND_SHARED: &str = "shared-secret";

/// A 32-byte master secret. Zeroized on drop; `Debug` never shows it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey([u8; MASTER_LEN]);

impl MasterKey {
    /// Wraps raw bytes (tests, vectors).
    pub fn from_bytes(bytes: [u8; MASTER_LEN]) -> Self {
        Self(bytes)
    }

    /// Draws a new master secret from the OS CSPRNG.
    pub fn generate() -> Result<Self, KeyError> {
        let rng = ring::rand::SystemRandom::new();
        let mut bytes = [0u8; MASTER_LEN];
        ring::rand::SecureRandom::fill(&rng, &mut bytes).map_err(|_| KeyError::Random)?;
        Ok(Self(bytes))
    }

    /// The secret as base64 (for writing a keyfile or a server line).
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(B64.encode(self.0))
    }

    /// Parses base64 of exactly 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, ParseProblem> {
        let decoded = Zeroizing::new(
            B64.decode(text.trim().as_bytes())
                .map_err(|_| ParseProblem::BadBase64)?,
        );
        if decoded.len() != MASTER_LEN {
            return Err(ParseProblem::BadLength(decoded.len()));
        }
        // Straight into the key (wiped on drop), not through a local array first.
        let mut key = Self([0u8; MASTER_LEN]);
        key.0.copy_from_slice(&decoded);
        Ok(key)
    }

    /// Derives the encryption key, MAC key and key id (HKDF-SHA256, RFC 5869).
    pub fn derive(&self) -> DerivedKeys {
        // RFC 5869 §2.2: PRK = HMAC-Hash(salt, IKM).
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(&self.0);
        let mut out = DerivedKeys {
            enc: [0; ENC_KEY_LEN],
            mac: [0; MAC_KEY_LEN],
            id: KeyId([0; KEY_ID_LEN]),
        };
        // RFC 5869 §2.3: OKM = T(1) | T(2) | ... with T(i) = HMAC(PRK, T(i-1) | info | i).
        expand(&prk, LABEL_ENC, &mut out.enc);
        expand(&prk, LABEL_MAC, &mut out.mac);
        expand(&prk, LABEL_KEY_ID, &mut out.id.0);
        out
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({})", self.derive().id)
    }
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn expand(prk: &hkdf::Prk, info: &[u8], out: &mut [u8]) {
    let infos = [info];
    // Both calls fail only when the requested length exceeds 255 * 32 bytes; every caller
    // asks for at most 32.
    prk.expand(&infos, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .expect("HKDF output length is at most 32 bytes");
}

/// The public 8-byte key id carried in packets; not secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; KEY_ID_LEN]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// Keys derived from a master secret. Zeroized on drop; `Debug` shows only the id.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DerivedKeys {
    enc: [u8; ENC_KEY_LEN],
    mac: [u8; MAC_KEY_LEN],
    #[zeroize(skip)]
    id: KeyId,
}

impl DerivedKeys {
    /// The XChaCha20-Poly1305 key.
    pub fn enc_key(&self) -> &[u8; ENC_KEY_LEN] {
        &self.enc
    }
    /// The HMAC-SHA256 key.
    pub fn mac_key(&self) -> &[u8; MAC_KEY_LEN] {
        &self.mac
    }
    /// The public key id.
    pub fn id(&self) -> KeyId {
        self.id
    }
}

impl fmt::Debug for DerivedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DerivedKeys({})", self.id)
    }
}

/// `parts` joined into one string allocated once at its final size and wiped on drop. Text
/// that holds a secret must be built this way: `format!` or `push_str` into a string grow it
/// by reallocation, and each move leaves a copy of what was there in freed memory.
pub fn concat(parts: &[&str]) -> Zeroizing<String> {
    let mut s = Zeroizing::new(String::with_capacity(parts.iter().map(|p| p.len()).sum()));
    for p in parts {
        s.push_str(p);
    }
    s
}

/// A named client key: what one keyfile holds.
#[derive(Clone, Debug)]
pub struct NamedKey {
    name: String,
    master: MasterKey,
}

/// Checks a key name: 1 to 64 of `[A-Za-z0-9._@-]`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

impl NamedKey {
    /// Builds a key from a name and a master secret.
    pub fn new(name: &str, master: MasterKey) -> Result<Self, ParseProblem> {
        if !valid_name(name) {
            return Err(ParseProblem::BadName(name.to_owned()));
        }
        Ok(Self {
            name: name.to_owned(),
            master,
        })
    }

    /// Generates a fresh key with this name.
    pub fn generate(name: &str) -> Result<Self, KeyError> {
        let master = MasterKey::generate()?;
        Self::new(name, master).map_err(|what| KeyError::Parse { line: 0, what })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The master secret.
    pub fn master(&self) -> &MasterKey {
        &self.master
    }

    /// Derives the working keys.
    pub fn derive(&self) -> DerivedKeys {
        self.master.derive()
    }

    /// The keyfile text for this key.
    pub fn to_keyfile_text(&self) -> Zeroizing<String> {
        let secret = self.master.to_base64();
        concat(&[
            "# knock-spa key (key id ",
            &self.derive().id().to_string(),
            "): keep this file secret, mode 0600\nname = ",
            &self.name,
            "\nsecret = ",
            &secret,
            "\n",
        ])
    }

    /// The `NAME:BASE64` form used inline in the server configuration.
    pub fn to_inline(&self) -> Zeroizing<String> {
        let secret = self.master.to_base64();
        concat(&[&self.name, ":", &secret])
    }

    /// Parses the inline `NAME:BASE64` form.
    pub fn from_inline(text: &str) -> Result<Self, ParseProblem> {
        let (name, secret) = text
            .trim()
            .split_once(':')
            .ok_or(ParseProblem::InlineSyntax)?;
        let master = MasterKey::from_base64(secret)?;
        Self::new(name.trim(), master)
    }

    /// Parses keyfile text. Errors carry 1-based line numbers.
    pub fn parse_str(text: &str) -> Result<Self, KeyError> {
        let s = public::Settings::parse(text, &["name", "kind", "secret"])?;
        // A shared-secret keyfile may say what it is; any other kind is another reader's.
        if s.has("kind") {
            s.kind(KIND_SHARED)?;
        }
        let (line, name) = s.get("name")?;
        if !valid_name(name) {
            return Err(KeyError::Parse {
                line,
                what: ParseProblem::BadName(name.to_owned()),
            });
        }
        let (line, secret) = s.get("secret")?;
        let master =
            MasterKey::from_base64(secret).map_err(|what| KeyError::Parse { line, what })?;
        Ok(Self {
            name: name.to_owned(),
            master,
        })
    }

    /// Loads a keyfile, refusing one that group or others can access. The file is opened
    /// once; its mode is checked on that descriptor and read from it ([`private`]).
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        load_with(path, Self::parse_str)
    }

    /// Writes the keyfile with mode 0600, creating the parent directory (mode 0700) if
    /// needed. Without `force`, refuses to replace an existing file; with it, replaces it
    /// atomically (write to a temporary file in the same directory, fsync, rename).
    pub fn save(&self, path: &Path, force: bool) -> Result<(), KeyError> {
        save_text(path, &self.to_keyfile_text(), force)
    }
}

/// Reads a file that holds a secret ([`private`]: opened once, mode checked on that
/// descriptor, refused when group or others may access it) and parses its text with
/// `parse`, whose line-numbered errors are given the path.
pub(crate) fn load_with<T>(
    path: &Path,
    parse: impl FnOnce(&str) -> Result<T, KeyError>,
) -> Result<T, KeyError> {
    let opened = private::open(path).map_err(|e| match e {
        private::ReadError::NotRegular => KeyError::NotAFile {
            path: path.to_owned(),
        },
        private::ReadError::Io(source) => KeyError::Io {
            path: path.to_owned(),
            source,
        },
    })?;
    if let Some(private::Exposure::TooOpen { mode }) = opened.too_open() {
        return Err(KeyError::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    let bytes = opened.read().map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })?;
    let text = std::str::from_utf8(&bytes).map_err(|_| KeyError::ParseIn {
        path: path.to_owned(),
        line: 1,
        what: ParseProblem::Syntax,
    })?;
    parse(text).map_err(|e| match e {
        KeyError::Parse { line, what } => KeyError::ParseIn {
            path: path.to_owned(),
            line,
            what,
        },
        other => other,
    })
}

/// Writes `text` as a file that holds a secret: mode 0600, the parent directory created
/// with mode 0700 if missing; without `force` an existing file is never replaced, with it
/// the replacement is atomic.
pub(crate) fn save_text(path: &Path, text: &str, force: bool) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(io)?;
        }
    }
    match fs::symlink_metadata(path) {
        Ok(_) if !force => {
            return Err(KeyError::Exists {
                path: path.to_owned(),
            });
        }
        Ok(meta) if meta.is_dir() => {
            return Err(KeyError::NotAFile {
                path: path.to_owned(),
            })
        }
        _ => {}
    }
    let opts = atomic::Options {
        // Never overwrite without force: a hard link fails if the target appeared
        // meanwhile.
        replace: if force {
            atomic::Replace::Always
        } else {
            atomic::Replace::Never
        },
        ..atomic::Options::PRIVATE
    };
    atomic::write(path, text.as_bytes(), &opts).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            KeyError::Exists {
                path: path.to_owned(),
            }
        } else {
            io(e)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn sample() -> NamedKey {
        NamedKey::new("alice", MasterKey::from_bytes([7; 32])).expect("valid name")
    }

    #[test]
    fn kdf_known_answers() {
        // Master = 00 01 02 .. 1f; the same values stand in docs/PROTOCOL.md.
        let mut m = [0u8; 32];
        for (i, b) in m.iter_mut().enumerate() {
            *b = i as u8;
        }
        let d = MasterKey::from_bytes(m).derive();
        assert_eq!(hex(d.enc_key()), KAT_ENC);
        assert_eq!(hex(d.mac_key()), KAT_MAC);
        assert_eq!(hex(&d.id().0), KAT_ID);
    }

    const KAT_ENC: &str = "a425cb94508135bf5349a6d0b55caefbade8628d66f566cd623fffe66d6685c4";
    const KAT_MAC: &str = "d72ae03651caf382f77d63d721ef36ca59b7bf85932fb85ac79ac24a845f34b2";
    const KAT_ID: &str = "e5097e9248bac751";

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn keyfile_round_trip() {
        let k = sample();
        let text = k.to_keyfile_text();
        let back = NamedKey::parse_str(&text).expect("parses");
        assert_eq!(back.name(), "alice");
        assert_eq!(back.derive().id(), k.derive().id());
    }

    #[test]
    fn secret_text_is_allocated_once_at_its_final_size() {
        let s = concat(&["ab", "", "cde"]);
        assert_eq!((s.as_str(), s.capacity()), ("abcde", 5));
        let k = sample();
        for text in [k.to_inline(), k.to_keyfile_text()] {
            assert_eq!(text.capacity(), text.len(), "{:?}", text.len());
        }
    }

    #[test]
    fn inline_round_trip() {
        let k = sample();
        let back = NamedKey::from_inline(&k.to_inline()).expect("parses");
        assert_eq!(back.derive().id(), k.derive().id());
        assert_eq!(
            NamedKey::from_inline("nocolon").unwrap_err(),
            ParseProblem::InlineSyntax
        );
    }

    #[test]
    fn debug_never_shows_secret() {
        let k = sample();
        let secret = k.master().to_base64();
        let dbg = format!("{k:?} {:?} {:?}", k.master(), k.derive());
        assert!(!dbg.contains(secret.as_str()));
        assert!(!dbg.contains("7, 7, 7"));
        assert!(dbg.contains(&k.derive().id().to_string()));
    }

    #[test]
    fn parse_errors_have_lines() {
        let cases: &[(&str, usize, ParseProblem)] = &[
            ("name = a\nbogus\n", 2, ParseProblem::Syntax),
            (
                "name = a\ncolour = red\n",
                2,
                ParseProblem::UnknownSetting("colour".into()),
            ),
            ("name = a\nname = b\n", 2, ParseProblem::Duplicate("name")),
            ("name = a b\n", 1, ParseProblem::BadName("a b".into())),
            ("name = a\nsecret = !!!\n", 2, ParseProblem::BadBase64),
            ("name = a\nsecret = AAAA\n", 2, ParseProblem::BadLength(3)),
            ("# only\nname = a\n", 2, ParseProblem::Missing("secret")),
        ];
        for (text, want_line, want) in cases {
            match NamedKey::parse_str(text) {
                Err(KeyError::Parse { line, what }) => {
                    assert_eq!((line, &what), (*want_line, want), "{text:?}")
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn save_load_permissions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/key");
        let k = sample();
        k.save(&path, false).expect("save");
        let mode = fs::metadata(&path).expect("meta").mode() & 0o777;
        assert_eq!(mode, 0o600);
        let parent_mode = fs::metadata(path.parent().expect("parent"))
            .expect("meta")
            .mode();
        assert_eq!(parent_mode & 0o777, 0o700);
        assert!(matches!(k.save(&path, false), Err(KeyError::Exists { .. })));
        k.save(&path, true).expect("forced save");
        let loaded = NamedKey::load(&path).expect("load");
        assert_eq!(loaded.derive().id(), k.derive().id());

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = NamedKey::load(&path).unwrap_err();
        assert!(matches!(err, KeyError::TooOpen { mode: 0o644, .. }));
        assert!(err.to_string().contains("chmod 600"), "{err}");

        assert!(matches!(
            NamedKey::load(dir.path()),
            Err(KeyError::NotAFile { .. })
        ));
        assert!(matches!(
            NamedKey::load(&dir.path().join("missing")),
            Err(KeyError::Io { .. })
        ));
    }

    #[test]
    fn generated_keys_differ() {
        let a = NamedKey::generate("a").expect("gen");
        let b = NamedKey::generate("a").expect("gen");
        assert_ne!(a.derive().id(), b.derive().id());
    }
}
