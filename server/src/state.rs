//! The state directory: open grants and the replay cache, persisted so that a restart or a
//! crash neither re-admits a replayed packet nor leaves a port open forever.
//!
//! Files (all written atomically: temporary file, fsync, rename, fsync of the directory):
//!
//! - `replay.bin`: [`ReplayCache::encode`] bytes (magic, entries, SHA-256 checksum).
//! - `grants.json`: first line `knock-spa-grants v1 <sha256 hex of the rest>`, then a JSON
//!   array of [`GrantRecord`]s.
//!
//! A file that fails its checksum or does not parse is reported, renamed to
//! `NAME.corrupt-<unix time>` for inspection, and treated fail-closed by the caller: a lost
//! replay cache makes the daemon refuse every packet stamped before it started; lost grants
//! open nothing.

use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use knock_shared::replay::ReplayCache;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const GRANTS: &str = "grants.json";
const REPLAY: &str = "replay.bin";
const GRANTS_MAGIC: &str = "knock-spa-grants v1";

/// One rule the daemon opened (or is about to open) and must close.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRecord {
    /// Door name.
    pub door: String,
    /// Key name for SPA grants; empty for knock sequences.
    pub key: String,
    /// The admitted address.
    pub addr: IpAddr,
    /// `22/tcp` for SPA grants; empty for knock sequences.
    pub port: String,
    /// Unix seconds when it was opened.
    pub opened: u64,
    /// Unix seconds when it must be closed.
    pub expires: u64,
    /// The rendered stop command, kept so a changed configuration cannot orphan the rule.
    pub stop: Vec<String>,
}

/// Why state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// File system error.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file is corrupt; it was moved aside.
    #[error("{path}: corrupt ({why}); moved to {moved}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
        /// Where it went.
        moved: String,
    },
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens (creating, mode 0700) the state directory.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| StateError::Io {
                    path: dir.to_owned(),
                    source,
                })?;
        }
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes `bytes` to `name` atomically.
    fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<(), StateError> {
        let path = self.path(name);
        let tmp = self.path(&format!(".{name}.tmp"));
        let io = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        let write = || -> io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            // Make the rename itself durable.
            fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(io)
    }

    fn move_aside(&self, name: &str, why: String) -> StateError {
        let path = self.path(name);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let moved = format!("{name}.corrupt-{now}");
        let _ = fs::rename(&path, self.path(&moved));
        StateError::Corrupt { path, why, moved }
    }

    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, StateError> {
        let path = self.path(name);
        match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Io { path, source }),
        }
    }

    /// Saves the open grants.
    pub fn save_grants(&self, grants: &[GrantRecord]) -> Result<(), StateError> {
        let body = serde_json::to_vec_pretty(grants).map_err(|e| StateError::Io {
            path: self.path(GRANTS),
            source: io::Error::other(e),
        })?;
        let sum = hex(&Sha256::digest(&body));
        let mut out = format!("{GRANTS_MAGIC} {sum}\n").into_bytes();
        out.extend_from_slice(&body);
        self.write_atomic(GRANTS, &out)
    }

    /// Loads the open grants; none if the file does not exist.
    pub fn load_grants(&self) -> Result<Vec<GrantRecord>, StateError> {
        let Some(bytes) = self.read(GRANTS)? else {
            return Ok(Vec::new());
        };
        match parse_grants(&bytes) {
            Ok(g) => Ok(g),
            Err(why) => Err(self.move_aside(GRANTS, why)),
        }
    }

    /// Saves the replay cache.
    pub fn save_replay(&self, cache: &ReplayCache) -> Result<(), StateError> {
        self.write_atomic(REPLAY, &cache.encode())
    }

    /// Loads the replay cache; `Ok(None)` if there is none yet.
    pub fn load_replay(&self, capacity: usize) -> Result<Option<ReplayCache>, StateError> {
        let Some(bytes) = self.read(REPLAY)? else {
            return Ok(None);
        };
        ReplayCache::decode(&bytes, capacity)
            .map(Some)
            .map_err(|e| self.move_aside(REPLAY, e.to_string()))
    }
}

fn parse_grants(bytes: &[u8]) -> Result<Vec<GrantRecord>, String> {
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no header line")?;
    let header = std::str::from_utf8(&bytes[..nl]).map_err(|_| "header not UTF-8")?;
    let sum = header
        .strip_prefix(GRANTS_MAGIC)
        .map(str::trim)
        .ok_or("bad header")?;
    let body = &bytes[nl + 1..];
    if hex(&Sha256::digest(body)) != sum {
        return Err("checksum mismatch".into());
    }
    serde_json::from_slice(body).map_err(|e| format!("bad JSON: {e}"))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> GrantRecord {
        GrantRecord {
            door: "ssh".into(),
            key: "alice".into(),
            addr: "192.0.2.1".parse().expect("ip"),
            port: "22/tcp".into(),
            opened: 100,
            expires: 130,
            stop: vec!["/sbin/iptables".into(), "-D".into(), "INPUT".into()],
        }
    }

    #[test]
    fn grants_round_trip_and_corruption_is_detected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("state")).expect("open");
        assert_eq!(store.load_grants().expect("empty"), vec![]);
        store.save_grants(&[record()]).expect("save");
        assert_eq!(store.load_grants().expect("load"), vec![record()]);

        let path = store.dir().join(GRANTS);
        let good = fs::read(&path).expect("read");
        for cut in [0, 10, good.len() / 2, good.len() - 1] {
            fs::write(&path, &good[..cut]).expect("write");
            let err = store.load_grants().unwrap_err();
            assert!(
                matches!(err, StateError::Corrupt { .. }),
                "cut {cut}: {err}"
            );
            assert!(!path.exists(), "moved aside");
        }
        let mut garbled = good.clone();
        let i = garbled.len() - 5;
        garbled[i] ^= 0x20;
        fs::write(&path, &garbled).expect("write");
        assert!(matches!(
            store.load_grants(),
            Err(StateError::Corrupt { .. })
        ));
        let aside = fs::read_dir(store.dir())
            .expect("ls")
            .filter(|e| {
                e.as_ref()
                    .map(|e| e.file_name().to_string_lossy().contains("corrupt"))
                    .unwrap_or(false)
            })
            .count();
        assert!(aside >= 1);
    }

    #[test]
    fn replay_round_trip_and_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        assert!(store.load_replay(10).expect("none").is_none());
        let mut c = ReplayCache::new(10);
        c.insert(0, [1; 32], 50).expect("insert");
        store.save_replay(&c).expect("save");
        let back = store.load_replay(10).expect("load").expect("some");
        assert!(back.contains(&[1; 32]));
        fs::write(dir.path().join(REPLAY), b"KSPARC01trunc").expect("write");
        assert!(matches!(
            store.load_replay(10),
            Err(StateError::Corrupt { .. })
        ));
    }
}
