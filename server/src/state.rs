//! The state directory: open grants and the replay cache, persisted so that a restart or a
//! crash neither re-admits a replayed packet nor leaves a port open forever.
//!
//! Files:
//!
//! - `replay.bin`: a snapshot of the replay cache, [`ReplayCache::encode`] bytes (magic,
//!   entries, SHA-256 checksum), written atomically (temporary file, fsync, rename, fsync of
//!   the directory) at start, at exit, and when the journal has grown to
//!   [`JOURNAL_COMPACT_AFTER`] records.
//! - `replay.journal`: the packets accepted since that snapshot, one
//!   [`knock_shared::replay::journal_record`] each, appended and `fdatasync`ed before the
//!   packet is acted on. Loading reads the snapshot, then the journal. Compaction writes a
//!   new snapshot first and empties the journal after, so a crash in between leaves entries
//!   in both, which is harmless.
//! - `replay.not-before`: `knock-spa-not-before v1 <unix seconds>`, written atomically when the
//!   daemon starts without a trustworthy replay cache: packets stamped before that instant are
//!   refused, by this run and by every later one (a restart soon after must not forget it).
//! - `grants.0` and `grants.1`: the open grants, double-buffered. Each save writes the whole
//!   list, as `knock-spa-grants v2 <seq> <length> <sha256 hex>`, a newline, a JSON array of
//!   [`GrantRecord`]s of that length (then padding), into the slot that does *not* hold the
//!   newest state (`seq` even: `grants.0`, odd: `grants.1`), in place, followed by one
//!   `fdatasync`. No rename and no directory fsync (but when a slot file is first created), so
//!   a save costs one data sync. A crash mid-save damages only the slot being written; the
//!   other still holds the state before the change, whose rule was not touched yet (the
//!   record is durable before the firewall command runs). Loading takes the valid slot with
//!   the higher `seq`.
//! - `grants.json` (versions before the slots): `knock-spa-grants v1 <sha256 hex>`, a newline,
//!   the JSON array. Read when no slot exists; removed after the first slot is written.
//!
//! A file that fails its checksum or does not parse is reported, renamed to
//! `NAME.corrupt-<unix time>` for inspection, and treated fail-closed by the caller: a lost
//! replay cache makes the daemon refuse every packet stamped before it started; lost grants
//! open nothing. A journal whose last record is incomplete (normally an append a crash cut
//! short, whose packet was never acted on) loads without it, and is treated fail-closed too.

use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use knock_shared::replay::{
    decode_journal, journal_record, Digest as PacketDigest, ReplayCache, JOURNAL_MAGIC,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const GRANTS: &str = "grants.json";
const GRANT_SLOTS: [&str; 2] = ["grants.0", "grants.1"];
const GRANTS_MAGIC_V2: &str = "knock-spa-grants v2";
/// Slots are padded to a multiple of this, so that a save rarely changes the file's size
/// (which would make the data sync a metadata commit too).
const GRANTS_PAD: usize = 4096;
const REPLAY: &str = "replay.bin";
const JOURNAL: &str = "replay.journal";
const NOT_BEFORE: &str = "replay.not-before";
const NOT_BEFORE_MAGIC: &str = "knock-spa-not-before v1";

/// Journal records after which the next accept also writes a snapshot and empties the
/// journal (a snapshot of a full default cache is about 2.6 MB).
pub const JOURNAL_COMPACT_AFTER: usize = 4096;
const GRANTS_MAGIC_V1: &str = "knock-spa-grants v1";

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
    /// The `seq` of the next grants save; 0 until the slots were read.
    grants_seq: Arc<AtomicU64>,
}

/// What [`Store::load_grants`] found.
#[derive(Debug, Default)]
pub struct LoadedGrants {
    /// The open grants of the newest valid state.
    pub records: Vec<GrantRecord>,
    /// Set when a slot was damaged but the other was valid: what happened, for the log.
    pub warning: Option<String>,
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
            grants_seq: Arc::new(AtomicU64::new(0)),
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

    /// Whether any grants file exists (the daemon ran here before).
    pub fn has_grants(&self) -> bool {
        GRANT_SLOTS
            .iter()
            .chain([&GRANTS])
            .any(|n| self.path(n).exists())
    }

    /// Saves the open grants (see the module docs): one in-place write and one data sync.
    pub fn save_grants(&self, grants: &[GrantRecord]) -> Result<(), StateError> {
        let mut seq = self.grants_seq.load(Ordering::Relaxed);
        if seq == 0 {
            seq = self.newest_grants_seq() + 1;
        }
        let name = GRANT_SLOTS[usize::from(seq % 2 == 1)];
        let path = self.path(name);
        let io = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        let body = serde_json::to_vec_pretty(grants).map_err(|e| io(io::Error::other(e)))?;
        let sum = hex(&Sha256::digest(&body));
        let mut out = format!("{GRANTS_MAGIC_V2} {seq} {} {sum}\n", body.len()).into_bytes();
        out.extend_from_slice(&body);
        out.push(b'\n');
        let padded = out.len().div_ceil(GRANTS_PAD) * GRANTS_PAD;
        out.resize(padded, b' ');
        let existed = path.exists();
        let f = open_in_place(&path).map_err(io)?;
        f.write_all_at(&out, 0).map_err(io)?;
        f.sync_data().map_err(io)?;
        if !existed {
            fs::File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        self.grants_seq.store(seq + 1, Ordering::Relaxed);
        // The pre-slot file is superseded now (best effort: the slots win over it anyway).
        let legacy = self.path(GRANTS);
        if legacy.exists() && fs::remove_file(&legacy).is_ok() {
            let _ = fs::File::open(&self.dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }

    /// The highest `seq` among the valid slots (0 if none).
    fn newest_grants_seq(&self) -> u64 {
        GRANT_SLOTS
            .iter()
            .filter_map(|n| fs::read(self.path(n)).ok())
            .filter_map(|b| parse_grants_v2(&b).ok())
            .map(|(seq, _)| seq)
            .max()
            .unwrap_or(0)
    }

    /// Loads the open grants: the valid slot with the higher `seq`; the pre-slot
    /// `grants.json` when no slot exists; none when nothing exists. A damaged slot is moved
    /// aside; if the other is valid it is used, with [`LoadedGrants::warning`] set; if none
    /// is valid, that is an error (nothing is known about the open rules).
    pub fn load_grants(&self) -> Result<LoadedGrants, StateError> {
        let mut newest: Option<(u64, Vec<GrantRecord>)> = None;
        let mut bad = Vec::new();
        for name in GRANT_SLOTS {
            let Some(bytes) = self.read(name)? else {
                continue;
            };
            match parse_grants_v2(&bytes) {
                Ok((seq, records)) => {
                    if newest.as_ref().is_none_or(|(s, _)| seq > *s) {
                        newest = Some((seq, records));
                    }
                }
                Err(why) => bad.push(self.move_aside(name, why)),
            }
        }
        self.grants_seq.store(
            newest.as_ref().map_or(0, |(s, _)| *s) + 1,
            Ordering::Relaxed,
        );
        // Both slots damaged: one error that names both.
        let mut bad = bad.into_iter();
        let bad = match (bad.next(), bad.next()) {
            (Some(StateError::Corrupt { path, why, moved }), Some(other)) => {
                Some(StateError::Corrupt {
                    path,
                    why: format!("{why}; and {other}"),
                    moved,
                })
            }
            (first, _) => first,
        };
        match (newest, bad) {
            (Some((_, records)), None) => Ok(LoadedGrants {
                records,
                warning: None,
            }),
            (Some((seq, records)), Some(e)) => Ok(LoadedGrants {
                records,
                warning: Some(format!(
                    "{e}; using the other slot (save {seq}). After a crash during a save that \
                     is the state before the change, and nothing is lost; otherwise the last \
                     rule opened or closed may need checking by hand"
                )),
            }),
            (None, Some(e)) => Err(e),
            (None, None) => {
                let Some(bytes) = self.read(GRANTS)? else {
                    return Ok(LoadedGrants::default());
                };
                match parse_grants(&bytes) {
                    Ok(records) => Ok(LoadedGrants {
                        records,
                        warning: None,
                    }),
                    Err(why) => Err(self.move_aside(GRANTS, why)),
                }
            }
        }
    }

    /// Writes a snapshot of the whole replay cache, then empties the journal (whose records
    /// the snapshot holds).
    pub fn save_replay(
        &self,
        cache: &ReplayCache,
        journal: &mut ReplayJournal,
    ) -> Result<(), StateError> {
        self.write_atomic(REPLAY, &cache.encode())?;
        journal.clear()
    }

    /// Loads the replay cache: the snapshot, then the journal's records (entries expired at
    /// `now` are dropped). `Ok(None)` if neither file exists yet. Damage is an error, and the
    /// damaged file is moved aside. A journal whose last record is incomplete (a crash cut
    /// an append short, or the file was damaged there) loads without that record and is
    /// flagged [`LoadedReplay::tail_lost`]: the caller must then treat the cache as lost
    /// for packets stamped before now, because nothing tells a cut-short append (never acted
    /// on) from a damaged record (acted on).
    pub fn load_replay(
        &self,
        capacity: usize,
        now: u64,
    ) -> Result<Option<LoadedReplay>, StateError> {
        let snapshot = self.read(REPLAY)?;
        let journal = self.read(JOURNAL)?;
        if snapshot.is_none() && journal.is_none() {
            return Ok(None);
        }
        let mut cache = match snapshot {
            Some(bytes) => ReplayCache::decode(&bytes, capacity)
                .map_err(|e| self.move_aside(REPLAY, e.to_string()))?,
            None => ReplayCache::new(capacity),
        };
        let mut tail_lost = false;
        if let Some(bytes) = journal {
            let j = decode_journal(&bytes).map_err(|e| self.move_aside(JOURNAL, e.to_string()))?;
            tail_lost = j.torn_tail;
            for (digest, expiry) in j.entries {
                if let Err(e) = cache.restore(now, digest, expiry) {
                    return Err(self.move_aside(JOURNAL, format!("restoring its records: {e}")));
                }
            }
        }
        Ok(Some(LoadedReplay { cache, tail_lost }))
    }

    /// The persisted "refuse packets stamped before" instant: 0 when none was ever written. A
    /// damaged file is moved aside and reported, and `fallback` (the caller's now) is used:
    /// fail closed.
    pub fn load_not_before(&self, fallback: u64) -> Result<u64, (u64, StateError)> {
        let Some(bytes) = self.read(NOT_BEFORE).map_err(|e| (fallback, e))? else {
            return Ok(0);
        };
        let parsed = std::str::from_utf8(&bytes)
            .ok()
            .and_then(|t| t.trim_end().strip_prefix(NOT_BEFORE_MAGIC))
            .and_then(|t| t.trim().parse::<u64>().ok());
        parsed.ok_or_else(|| {
            (
                fallback,
                self.move_aside(NOT_BEFORE, "not `knock-spa-not-before v1 SECONDS`".into()),
            )
        })
    }

    /// Persists the "refuse packets stamped before" instant (see the module docs).
    pub fn save_not_before(&self, t: u64) -> Result<(), StateError> {
        self.write_atomic(NOT_BEFORE, format!("{NOT_BEFORE_MAGIC} {t}\n").as_bytes())
    }

    /// Opens the replay journal for appending, creating it when missing, and starts it
    /// afresh: writes `cache` as the snapshot, then empties the journal. `cache` must be what
    /// [`load_replay`](Self::load_replay) returned (it holds the journal's records), or a new
    /// cache when there was nothing to load.
    pub fn open_journal(&self, cache: &ReplayCache) -> Result<ReplayJournal, StateError> {
        let path = self.path(JOURNAL);
        let io = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        let file = open_in_place(&path).map_err(io)?;
        let mut journal = ReplayJournal {
            file,
            path: path.clone(),
            len: 0,
            records: 0,
        };
        self.save_replay(cache, &mut journal)?;
        // The journal may be new: make its directory entry durable too.
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        Ok(journal)
    }
}

/// What [`Store::load_replay`] found.
#[derive(Debug)]
pub struct LoadedReplay {
    /// The cache: snapshot and journal.
    pub cache: ReplayCache,
    /// The journal ended in an incomplete record, which was dropped.
    pub tail_lost: bool,
}

/// The open replay journal (see the module docs).
#[derive(Debug)]
pub struct ReplayJournal {
    file: fs::File,
    path: PathBuf,
    /// Bytes known to be good on disk.
    len: u64,
    records: usize,
}

impl ReplayJournal {
    /// Appends one record and waits until it is on disk (`fdatasync`). On failure the file is
    /// cut back to its last good length, so that a later append does not follow a torn
    /// record.
    pub fn append(&mut self, digest: &PacketDigest, expiry: u64) -> Result<(), StateError> {
        let rec = journal_record(digest, expiry);
        let write = |f: &mut fs::File| -> io::Result<()> {
            f.write_all(&rec)?;
            f.sync_data()
        };
        match write(&mut self.file) {
            Ok(()) => {
                self.len += rec.len() as u64;
                self.records += 1;
                Ok(())
            }
            Err(source) => {
                let _ = self.file.set_len(self.len);
                let _ = io::Seek::seek(&mut self.file, io::SeekFrom::Start(self.len));
                Err(StateError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }

    /// Records appended since the last snapshot.
    pub fn records(&self) -> usize {
        self.records
    }

    /// Cuts the journal back to its magic, durably.
    fn clear(&mut self) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: self.path.clone(),
            source,
        };
        self.file.set_len(0).map_err(io)?;
        io::Seek::seek(&mut self.file, io::SeekFrom::Start(0)).map_err(io)?;
        self.file.write_all(JOURNAL_MAGIC).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        self.len = JOURNAL_MAGIC.len() as u64;
        self.records = 0;
        Ok(())
    }
}

fn parse_grants(bytes: &[u8]) -> Result<Vec<GrantRecord>, String> {
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no header line")?;
    let header = std::str::from_utf8(&bytes[..nl]).map_err(|_| "header not UTF-8")?;
    let sum = header
        .strip_prefix(GRANTS_MAGIC_V1)
        .map(str::trim)
        .ok_or("bad header")?;
    let body = &bytes[nl + 1..];
    if hex(&Sha256::digest(body)) != sum {
        return Err("checksum mismatch".into());
    }
    serde_json::from_slice(body).map_err(|e| format!("bad JSON: {e}"))
}

/// Opens (creating, mode 0600) a state file to be written in place: read and write, never
/// truncated on open.
fn open_in_place(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

/// Parses a grants slot: `(seq, records)`.
fn parse_grants_v2(bytes: &[u8]) -> Result<(u64, Vec<GrantRecord>), String> {
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no header line")?;
    let header = std::str::from_utf8(&bytes[..nl]).map_err(|_| "header not UTF-8")?;
    let mut words = header
        .strip_prefix(GRANTS_MAGIC_V2)
        .ok_or("bad header")?
        .split_whitespace();
    let (Some(seq), Some(len), Some(sum), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Err("bad header".into());
    };
    let seq: u64 = seq.parse().map_err(|_| "bad header")?;
    let len: usize = len.parse().map_err(|_| "bad header")?;
    let body = nl
        .checked_add(1)
        .and_then(|start| bytes.get(start..start.checked_add(len)?))
        .ok_or("shorter than its header says")?;
    if hex(&Sha256::digest(body)) != sum {
        return Err("checksum mismatch".into());
    }
    let records = serde_json::from_slice(body).map_err(|e| format!("bad JSON: {e}"))?;
    Ok((seq, records))
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
        let loaded = store.load_grants().expect("empty");
        assert_eq!(loaded.records, vec![]);
        assert!(!store.has_grants());
        store.save_grants(&[record()]).expect("save");
        assert!(store.has_grants());
        assert_eq!(store.load_grants().expect("load").records, vec![record()]);

        // Only one slot exists so far: any damage to it is an error, and it is moved aside.
        let path = store.dir().join(GRANT_SLOTS[1]);
        let good = fs::read(&path).expect("read");
        assert_eq!(good.len() % GRANTS_PAD, 0, "padded");
        // Cut inside the header, inside the JSON, just before its closing bracket.
        let end = good.iter().rposition(|&b| b == b']').expect("JSON array");
        for cut in [0, 10, 100, end] {
            fs::write(&path, &good[..cut]).expect("write");
            let err = store.load_grants().unwrap_err();
            assert!(
                matches!(err, StateError::Corrupt { .. }),
                "cut {cut}: {err}"
            );
            assert!(!path.exists(), "moved aside");
        }
        let mut garbled = good.clone();
        garbled[150] ^= 0x20;
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

    /// Saves alternate between the slots; the newest valid one wins; a damaged newest slot
    /// (a crash mid-save) falls back to the state before the change, with a warning; the
    /// padding of a longer earlier state does not confuse a shorter later one.
    #[test]
    fn grants_slots_alternate_and_survive_a_torn_save() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let mut two = vec![record(), record()];
        two[1].addr = "192.0.2.8".parse().expect("ip");
        let mut big = Vec::new();
        for i in 0..40u8 {
            let mut r = record();
            r.addr = std::net::IpAddr::from([192, 0, 2, i]);
            big.push(r);
        }
        store.save_grants(&big).expect("save 1"); // grants.1
        store.save_grants(&[record()]).expect("save 2"); // grants.0
        store.save_grants(&two).expect("save 3"); // grants.1, over the longer save 1
        let slot0 = fs::read(dir.path().join(GRANT_SLOTS[0])).expect("read");
        let slot1 = fs::read(dir.path().join(GRANT_SLOTS[1])).expect("read");
        assert!(slot0.starts_with(b"knock-spa-grants v2 2 "));
        assert!(slot1.starts_with(b"knock-spa-grants v2 3 "));
        assert!(
            slot1.len() > GRANTS_PAD,
            "never shrunk: still the size of save 1"
        );

        // A fresh Store (a restart) reads the newest and continues the sequence.
        let again = Store::open(dir.path()).expect("open");
        let loaded = again.load_grants().expect("load");
        assert_eq!(loaded.records, two);
        assert!(loaded.warning.is_none());
        again.save_grants(&[]).expect("save 4"); // grants.0
        assert!(fs::read(dir.path().join(GRANT_SLOTS[0]))
            .expect("read")
            .starts_with(b"knock-spa-grants v2 4 "));
        assert_eq!(again.load_grants().expect("load").records, vec![]);

        // Both slots damaged (in a copy of the directory): one error naming both.
        let both = tempfile::tempdir().expect("tempdir");
        for n in GRANT_SLOTS {
            let mut b = fs::read(dir.path().join(n)).expect("read");
            b[40] ^= 0x01;
            fs::write(both.path().join(n), b).expect("write");
        }
        let err = Store::open(both.path())
            .expect("open")
            .load_grants()
            .expect_err("both damaged");
        let text = err.to_string();
        assert!(
            text.contains("grants.0: corrupt") && text.contains("grants.1: corrupt"),
            "{text}"
        );

        // Save 5 torn (grants.1 half written): the state of save 4 is used, with a warning;
        // the torn slot is moved aside, and the next save goes to it again.
        let mut torn = fs::read(dir.path().join(GRANT_SLOTS[1])).expect("read");
        torn[60] ^= 0x01;
        fs::write(dir.path().join(GRANT_SLOTS[1]), &torn).expect("write");
        let restarted = Store::open(dir.path()).expect("open");
        let loaded = restarted.load_grants().expect("load");
        assert_eq!(loaded.records, vec![]);
        let warning = loaded.warning.expect("warned");
        assert!(warning.contains("grants.1: corrupt"), "{warning}");
        restarted.save_grants(&[record()]).expect("save 5");
        assert!(fs::read(dir.path().join(GRANT_SLOTS[1]))
            .expect("read")
            .starts_with(b"knock-spa-grants v2 5 "));
        assert_eq!(
            restarted.load_grants().expect("load").records,
            vec![record()]
        );
    }

    /// A state directory from before the slots: its grants.json is read, and removed once
    /// the first slot is written.
    #[test]
    fn grants_json_of_earlier_versions_is_read_then_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let body = serde_json::to_vec_pretty(&[record()]).expect("json");
        let mut v1 = format!("{GRANTS_MAGIC_V1} {}\n", hex(&Sha256::digest(&body))).into_bytes();
        v1.extend_from_slice(&body);
        fs::write(dir.path().join(GRANTS), &v1).expect("write");
        assert!(store.has_grants());
        assert_eq!(store.load_grants().expect("load").records, vec![record()]);
        store.save_grants(&[]).expect("save");
        assert!(!dir.path().join(GRANTS).exists(), "superseded");
        assert_eq!(store.load_grants().expect("load").records, vec![]);
        // Damaged, it is an error as before.
        let other = tempfile::tempdir().expect("tempdir");
        let store = Store::open(other.path()).expect("open");
        v1[30] ^= 0x01;
        fs::write(other.path().join(GRANTS), &v1).expect("write");
        assert!(matches!(
            store.load_grants(),
            Err(StateError::Corrupt { .. })
        ));
    }

    #[test]
    fn replay_round_trip_and_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        assert!(store.load_replay(10, 0).expect("none").is_none());
        let mut c = ReplayCache::new(10);
        c.insert(0, [1; 32], 50).expect("insert");
        store.open_journal(&c).expect("journal");
        let back = store.load_replay(10, 0).expect("load").expect("some");
        assert!(back.cache.contains(&[1; 32]));
        assert!(!back.tail_lost);
        fs::write(dir.path().join(REPLAY), b"KSPARC01trunc").expect("write");
        assert!(matches!(
            store.load_replay(10, 0),
            Err(StateError::Corrupt { .. })
        ));
        assert!(!dir.path().join(REPLAY).exists(), "moved aside");
    }

    #[test]
    fn not_before_round_trip_and_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        assert_eq!(store.load_not_before(99).expect("none"), 0);
        store.save_not_before(1_700_000_000).expect("save");
        assert_eq!(store.load_not_before(99).expect("load"), 1_700_000_000);
        fs::write(
            dir.path().join(NOT_BEFORE),
            b"knock-spa-not-before v1 12x\n",
        )
        .expect("write");
        let (fallback, e) = store.load_not_before(99).expect_err("damaged");
        assert_eq!(fallback, 99);
        assert!(matches!(e, StateError::Corrupt { .. }));
        assert!(!dir.path().join(NOT_BEFORE).exists(), "moved aside");
    }

    /// The journal: appends survive without a snapshot (a crash), a snapshot empties it, an
    /// incomplete last record is flagged, damage before it is corruption.
    #[test]
    fn replay_journal_appends_snapshots_and_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let journal_path = dir.path().join(JOURNAL);
        let mut cache = ReplayCache::new(10);
        cache.insert(0, [1; 32], 50).expect("insert");
        let mut journal = store.open_journal(&cache).expect("journal");
        assert_eq!(fs::read(&journal_path).expect("read"), JOURNAL_MAGIC);

        // Two accepts, then "kill -9": no snapshot. Both are back, with the snapshot's entry;
        // one already expired at load time is not.
        journal.append(&[2; 32], 60).expect("append");
        journal.append(&[3; 32], 5).expect("append");
        assert_eq!(journal.records(), 2);
        let back = store.load_replay(10, 10).expect("load").expect("some");
        assert!(!back.tail_lost);
        assert!(back.cache.contains(&[1; 32]) && back.cache.contains(&[2; 32]));
        assert!(!back.cache.contains(&[3; 32]), "expired before the restart");

        // A snapshot holds everything and empties the journal.
        let mut all = back.cache;
        store.save_replay(&all, &mut journal).expect("snapshot");
        assert_eq!(journal.records(), 0);
        assert_eq!(fs::read(&journal_path).expect("read"), JOURNAL_MAGIC);
        let back = store.load_replay(10, 10).expect("load").expect("some");
        assert_eq!(back.cache.len(), 2);

        // Appending continues after a snapshot.
        all.insert(10, [4; 32], 70).expect("insert");
        journal.append(&[4; 32], 70).expect("append");
        journal.append(&[5; 32], 70).expect("append");
        let bytes = fs::read(&journal_path).expect("read");
        assert_eq!(bytes.len(), 8 + 2 * 48);

        // An incomplete last record: loads without it, flagged.
        fs::write(&journal_path, &bytes[..bytes.len() - 7]).expect("write");
        let back = store.load_replay(10, 10).expect("load").expect("some");
        assert!(back.tail_lost);
        assert!(back.cache.contains(&[4; 32]) && !back.cache.contains(&[5; 32]));

        // Damage in an earlier record: corrupt, moved aside.
        let mut garbled = bytes.clone();
        garbled[8 + 3] ^= 0x20;
        fs::write(&journal_path, &garbled).expect("write");
        assert!(matches!(
            store.load_replay(10, 10),
            Err(StateError::Corrupt { .. })
        ));
        assert!(!journal_path.exists(), "moved aside");

        // A journal alone (the snapshot gone): still a cache.
        fs::remove_file(dir.path().join(REPLAY)).expect("rm");
        fs::write(&journal_path, &bytes).expect("write");
        let back = store.load_replay(10, 10).expect("load").expect("some");
        assert!(back.cache.contains(&[4; 32]) && back.cache.contains(&[5; 32]));
    }
}
