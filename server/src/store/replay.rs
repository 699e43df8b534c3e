//! The replay cache, persisted in the state directory so that a restart or a crash never
//! re-admits a replayed packet.
//!
//! Files:
//!
//! - `replay.bin`: a snapshot of the replay cache, [`ReplayCache::encode`] bytes (magic,
//!   entries, SHA-256 checksum), written atomically (temporary file, fsync, rename, fsync of
//!   the directory) at start, at exit, and when the journal has grown to
//!   [`JOURNAL_COMPACT_AFTER`] records.
//! - `replay.journal`: the packets accepted since that snapshot, one
//!   [`knock_shared::replay::journal_record`] each, appended and `fdatasync`ed before the
//!   packet is acted on.
//! - `replay.journal.prev`: during a compaction, the journal moved aside. Compaction keeps the
//!   packet thread free of large writes: when the journal has [`JOURNAL_COMPACT_AFTER`]
//!   records, the packet thread renames it to `replay.journal.prev`, starts an empty journal,
//!   and hands a copy of the cache to the [`SnapshotWriter`] thread, which writes the snapshot
//!   and then removes `replay.journal.prev`. Loading reads the snapshot, then
//!   `replay.journal.prev`, then the journal; a crash at any step leaves every record in at
//!   least one of them (duplicates are harmless).
//! - `replay.not-before`: `knock-spa-not-before v1 <unix seconds>`, written atomically when the
//!   daemon starts without a trustworthy replay cache: packets stamped before that instant are
//!   refused, by this run and by every later one (a restart soon after must not forget it).
//!
//! A journal whose last record is incomplete (normally an append a crash cut short, whose
//! packet was never acted on) loads without it, and is treated fail-closed too.

use std::fs;
use std::io::{self, Write};
use std::path::PathBuf;

use knock_shared::replay::{
    decode_journal, journal_record, Digest as PacketDigest, ReplayCache, JOURNAL_MAGIC,
};

use super::dir::{open_in_place, StateDir, StateError};

const REPLAY: &str = "replay.bin";
const JOURNAL: &str = "replay.journal";
const JOURNAL_PREV: &str = "replay.journal.prev";
const NOT_BEFORE: &str = "replay.not-before";
const NOT_BEFORE_MAGIC: &str = "knock-spa-not-before v1";

/// Journal records after which the next accept also writes a snapshot and empties the
/// journal (a snapshot of a full default cache is about 2.6 MB).
pub const JOURNAL_COMPACT_AFTER: usize = 4096;

impl StateDir {
    /// Writes a snapshot of the whole replay cache, then empties the journal and removes a
    /// journal moved aside (the snapshot holds their records). Only while no
    /// [`SnapshotWriter`] runs: at start and at exit.
    pub fn save_replay(
        &self,
        cache: &ReplayCache,
        journal: &mut ReplayJournal,
    ) -> Result<(), StateError> {
        self.write_atomic(REPLAY, &cache.encode())?;
        journal.clear()?;
        self.remove(JOURNAL_PREV)
    }

    /// The packet thread's half of a compaction: moves the journal aside and starts an empty
    /// one. `Ok(false)`, changing nothing, while a journal moved aside earlier is still there
    /// (its snapshot failed): the caller then asks for a snapshot all the same, which covers
    /// both journals. On an error the journal goes on appending where it did (maybe to the
    /// journal aside, which then is not removed before a later rotation succeeds).
    pub fn rotate_journal(&self, journal: &mut ReplayJournal) -> Result<bool, StateError> {
        let prev = self.path(JOURNAL_PREV);
        // After a rotation that moved the journal but could not start the new one, the
        // descriptor still appends to the journal aside: start the new one now.
        if journal.path != prev {
            if prev.exists() {
                return Ok(false);
            }
            self.rename_within(JOURNAL, JOURNAL_PREV)?;
            // From here the old descriptor writes into the journal moved aside: both files
            // are loaded, so nothing is lost if what follows fails.
            journal.path = prev;
        }
        let path = self.path(JOURNAL);
        let io = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        let mut file = open_in_place(&path).map_err(io)?;
        file.write_all(JOURNAL_MAGIC).map_err(io)?;
        file.sync_data().map_err(io)?;
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        *journal = ReplayJournal {
            file,
            path,
            len: JOURNAL_MAGIC.len() as u64,
            records: 0,
        };
        Ok(true)
    }

    /// The [`SnapshotWriter`]'s half: writes `cache` (a copy taken at or after the rotation)
    /// as the snapshot, then removes the journal moved aside.
    fn finish_compaction(&self, cache: &ReplayCache) -> Result<(), StateError> {
        self.write_atomic(REPLAY, &cache.encode())?;
        self.remove(JOURNAL_PREV)
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
        let prev = self.read(JOURNAL_PREV)?;
        let journal = self.read(JOURNAL)?;
        if snapshot.is_none() && journal.is_none() && prev.is_none() {
            return Ok(None);
        }
        let mut cache = match snapshot {
            Some(bytes) => ReplayCache::decode(&bytes, capacity)
                .map_err(|e| self.move_aside(REPLAY, e.to_string()))?,
            None => ReplayCache::new(capacity),
        };
        let mut tail_lost = false;
        for (name, bytes) in [(JOURNAL_PREV, prev), (JOURNAL, journal)] {
            let Some(bytes) = bytes else {
                continue;
            };
            let j = decode_journal(&bytes).map_err(|e| self.move_aside(name, e.to_string()))?;
            tail_lost |= j.torn_tail;
            for (digest, expiry) in j.entries {
                if let Err(e) = cache.restore(now, digest, expiry) {
                    return Err(self.move_aside(name, format!("restoring its records: {e}")));
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

/// The replay state the packet loop starts with.
#[derive(Debug)]
pub struct ReplayState {
    /// The persisted cache (empty if it was lost).
    pub cache: ReplayCache,
    /// Packets stamped before this are refused: non-zero when the cache was lost.
    pub not_before: u64,
    /// The open journal, started afresh from `cache` ([`StateDir::open_journal`]).
    pub journal: ReplayJournal,
}

/// What [`StateDir::load_replay`] found.
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

/// The thread that writes replay snapshots, so that the packet thread never waits for a
/// large write: it takes one copy of the cache at a time ([`request`](Self::request)).
#[derive(Debug)]
pub struct SnapshotWriter {
    tx: Option<std::sync::mpsc::SyncSender<ReplayCache>>,
    busy: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl SnapshotWriter {
    /// Starts the thread for `store`; `failed` is called with each error (for the log).
    pub fn spawn(
        store: StateDir,
        failed: impl Fn(&StateError) + Send + 'static,
    ) -> io::Result<Self> {
        use std::sync::atomic::Ordering;
        let (tx, rx) = std::sync::mpsc::sync_channel::<ReplayCache>(1);
        let busy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = busy.clone();
        let handle = std::thread::Builder::new()
            .name("snapshots".into())
            .spawn(move || {
                for cache in rx {
                    if let Err(e) = store.finish_compaction(&cache) {
                        failed(&e);
                    }
                    flag.store(false, Ordering::Release);
                }
            })?;
        Ok(Self {
            tx: Some(tx),
            busy,
            handle: Some(handle),
        })
    }

    /// Whether a snapshot is being written.
    pub fn busy(&self) -> bool {
        self.busy.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Hands over a copy of the cache to write (call when not [`busy`](Self::busy)).
    pub fn request(&self, cache: ReplayCache) {
        if let Some(tx) = &self.tx {
            self.busy.store(true, std::sync::atomic::Ordering::Release);
            if tx.try_send(cache).is_err() {
                self.busy.store(false, std::sync::atomic::Ordering::Release);
            }
        }
    }

    /// Waits for the snapshot under way and ends the thread.
    pub fn finish(&mut self) {
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_round_trip_and_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateDir::open(dir.path()).expect("open");
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
        let store = StateDir::open(dir.path()).expect("open");
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
        let store = StateDir::open(dir.path()).expect("open");
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

    /// Compaction off the packet thread: the journal moved aside, a new one started, the
    /// snapshot written by the snapshot thread; a crash at every step loses no record.
    #[test]
    fn compaction_rotates_the_journal_and_the_writer_snapshots() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateDir::open(dir.path()).expect("open");
        let prev = dir.path().join(JOURNAL_PREV);
        let mut cache = ReplayCache::new(10);
        let mut journal = store.open_journal(&cache).expect("journal");
        for b in [1u8, 2] {
            cache.insert(0, [b; 32], 100).expect("insert");
            journal.append(&[b; 32], 100).expect("append");
        }
        // The packet thread's half: a new journal, the old one aside.
        assert!(store.rotate_journal(&mut journal).expect("rotate"));
        assert_eq!(journal.records(), 0);
        assert!(prev.exists());
        cache.insert(0, [3; 32], 100).expect("insert");
        journal
            .append(&[3; 32], 100)
            .expect("append into the new journal");
        // A crash now (no snapshot yet): the old journal and the new one are both read.
        let back = store.load_replay(10, 10).expect("load").expect("some");
        assert!((1..=3u8).all(|b| back.cache.contains(&[b; 32])));
        // A second rotation waits for the first to be snapshotted.
        assert!(!store
            .rotate_journal(&mut journal)
            .expect("no second rotation"));
        assert_eq!(journal.records(), 1, "nothing changed");
        // The writer's half.
        let mut writer = SnapshotWriter::spawn(store.clone(), |e| panic!("{e}")).expect("spawn");
        writer.request(cache.clone());
        writer.finish();
        assert!(!writer.busy());
        assert!(
            !prev.exists(),
            "the journal aside is gone once the snapshot is written"
        );
        let back = store.load_replay(10, 10).expect("load").expect("some");
        assert_eq!(back.cache.len(), 3);
        // At exit (no writer running): the last snapshot removes any journal aside too.
        assert!(store.rotate_journal(&mut journal).expect("rotate"));
        store.save_replay(&cache, &mut journal).expect("save");
        assert!(!prev.exists());
        assert_eq!(journal.records(), 0);
    }
}
