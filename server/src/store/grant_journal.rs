//! The grants journal: one record per change to the open grants, so that opening, extending
//! or closing one grant costs one short in-place write and one data sync, however many
//! grants are open.
//!
//! The state is a snapshot (the slots of [`grants`](super::grants), numbered by their `seq`)
//! plus `grants.journal`, the changes since that snapshot. Each change is one line,
//!
//! ```text
//! g1 <sha256 hex of the rest> <base> <n> <JSON of a GrantChange>
//! ```
//!
//! where `base` is the `seq` of the snapshot the change applies to and `n` counts from 0 in
//! that base. Lines are written in place at the journal's end, each followed by one
//! `fdatasync`; the file grows in [`CHUNK`]s, so a write rarely changes its size. When the
//! journal holds more changes than [`compact_after`] allows, the whole state is written as a
//! new snapshot (`seq` one higher) and the journal starts over at offset 0 with that base:
//! lines of older bases left behind are ignored, so compaction needs no truncation and a crash
//! at any point leaves either the old snapshot with its full journal or the new snapshot.
//! The amortized cost per change stays O(1): a compaction writes `n` grants after at least
//! `2n` changes.
//!
//! Loading reads the snapshot, then applies the lines of its base in order. A line that fails
//! its checksum is ignored and reported: torn by a crash mid-write, its change had not been
//! acted on (a record is durable before its command runs); otherwise it is damage. A missing
//! number is reported too. Lines of a base above the snapshot's (their snapshot was damaged
//! since) are applied as well, with a warning.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::FileExt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::dir::{hex, open_in_place, StateDir, StateError};
use super::grants::GrantRecord;

/// The journal's name in the state directory.
pub(super) const JOURNAL: &str = "grants.journal";
/// The journal grows by this much at a time.
pub const CHUNK: u64 = 64 * 1024;
/// Changes a journal may always hold before compaction, whatever the number of grants.
pub const COMPACT_MIN: u64 = 512;
const MAGIC: &str = "g1";

/// Changes the journal may hold with `live` grants open before it is compacted.
pub fn compact_after(live: usize) -> u64 {
    COMPACT_MIN.max(2 * live as u64)
}

/// One change to the open grants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GrantChange {
    /// A grant was recorded (before its start command runs).
    Open(GrantRecord),
    /// A grant's end moved.
    Extend {
        /// The grant.
        id: u64,
        /// Its new end, in Unix seconds.
        expires: u64,
    },
    /// A grant was forgotten (its stop command succeeded, or its start command failed).
    Close {
        /// The grant.
        id: u64,
    },
}

/// The writer of the grants state: the grant keeper owns the one there is.
#[derive(Debug)]
pub struct GrantLog {
    store: StateDir,
    file: Option<fs::File>,
    /// The snapshot the journal's lines apply to.
    base: u64,
    /// The `seq` the next snapshot gets: above every snapshot and base seen.
    next_seq: u64,
    /// The next line's number in `base`.
    next_n: u64,
    /// Where the next line goes.
    offset: u64,
    /// The journal file's size.
    allocated: u64,
    next_id: u64,
    written: u64,
    /// The journal cannot be appended to until a snapshot is written (the one at start
    /// failed, and the lines it would have superseded must not be overwritten).
    broken: bool,
}

/// What [`StateDir::open_grants`] found.
#[derive(Debug)]
pub struct OpenedGrants {
    /// The writer, positioned after the state it read.
    pub log: GrantLog,
    /// The open grants, each with its unique id.
    pub records: Vec<GrantRecord>,
    /// What was damaged, lost or could not be read, for the log (as errors).
    pub problems: Vec<String>,
}

impl StateDir {
    /// Whether any grants file exists (the daemon ran here before).
    pub fn has_grants(&self) -> bool {
        super::grants::GRANT_SLOTS
            .iter()
            .chain([&super::grants::GRANTS, &JOURNAL])
            .any(|n| self.path(n).exists())
    }

    /// Reads the open grants (the newest snapshot and its journal) and returns the one writer
    /// of their state. Nothing here fails: what cannot be read is in
    /// [`OpenedGrants::problems`] (and fails closed: what is not known is not re-opened), and
    /// a journal that cannot be opened makes every later [`GrantLog::record`] fail, so no
    /// grant opens unrecorded.
    pub fn open_grants(&self) -> OpenedGrants {
        let mut problems = Vec::new();
        let snapshot = match self.load_grants_slots() {
            Ok(s) => s,
            Err(e) => {
                problems.push(format!(
                    "{e}; rules it listed (if any) must be checked by hand"
                ));
                super::grants::LoadedGrants::default()
            }
        };
        problems.extend(snapshot.warning);
        let base = snapshot.seq;
        let mut renumber = false;
        let mut state = BTreeMap::new();
        for rec in snapshot.records {
            if rec.id == 0 || state.contains_key(&rec.id) {
                renumber = true;
            }
            let key = if renumber { 0 } else { rec.id };
            state.entry(key).or_insert_with(Vec::new).push(rec);
        }
        let mut state: BTreeMap<u64, GrantRecord> = if renumber {
            state
                .into_values()
                .flatten()
                .enumerate()
                .map(|(i, mut r)| {
                    r.id = i as u64 + 1;
                    (r.id, r)
                })
                .collect()
        } else {
            state
                .into_iter()
                .filter_map(|(id, mut v)| Some((id, v.pop()?)))
                .collect()
        };

        let mut lines = Vec::new();
        let mut allocated = 0;
        match self.read(JOURNAL) {
            Ok(Some(bytes)) => {
                allocated = bytes.len() as u64;
                let (parsed, damaged) = parse_journal(&bytes);
                if damaged > 0 {
                    problems.push(format!(
                        "{}: {damaged} damaged line(s) ignored (a crash while one was written \
                         leaves one, whose change was not acted on; otherwise the rules they \
                         recorded may need checking by hand)",
                        self.path(JOURNAL).display()
                    ));
                }
                lines = parsed;
            }
            Ok(None) => {}
            Err(e) => problems.push(format!(
                "{e}; the grants it recorded (if any) must be checked by hand"
            )),
        }
        let max_base = lines.iter().map(|l| l.base).max().unwrap_or(0);
        // The lines of this snapshot, and of later snapshots that were damaged since, in order.
        lines.retain(|l| l.base >= base);
        lines.sort_by_key(|l| (l.base, l.n));
        if lines.iter().any(|l| l.base > base) {
            problems.push(format!(
                "{}: holds changes made after a snapshot newer than the one read (it was \
                 damaged); applied them, but the rules opened or closed in between may need \
                 checking by hand",
                self.path(JOURNAL).display()
            ));
        }
        let replayed = !lines.is_empty();
        for (expect, line) in lines.iter().filter(|l| l.base == base).enumerate() {
            if line.n != expect as u64 {
                problems.push(format!(
                    "{}: change {expect} of save {base} is missing; the rules opened or \
                     closed around it may need checking by hand",
                    self.path(JOURNAL).display()
                ));
                break;
            }
        }
        for line in lines {
            match line.change {
                GrantChange::Open(rec) => {
                    state.insert(rec.id, rec);
                }
                GrantChange::Extend { id, expires } => {
                    if let Some(r) = state.get_mut(&id) {
                        r.expires = expires;
                    }
                }
                GrantChange::Close { id } => {
                    state.remove(&id);
                }
            }
        }
        let next_id = state.keys().next_back().map_or(1, |id| id + 1);
        let records: Vec<GrantRecord> = state.into_values().collect();
        let mut log = GrantLog {
            store: self.clone(),
            file: None,
            base,
            next_seq: base.max(max_base) + 1,
            next_n: 0,
            offset: 0,
            allocated,
            next_id,
            written: 0,
            broken: false,
        };
        // Start from a snapshot of what was read: the journal then holds only this run's
        // changes, and ids are unique from here on.
        let legacy = base == 0 && self.path(super::grants::GRANTS).exists();
        if replayed || renumber || legacy {
            if let Err(e) = log.compact(&records) {
                problems.push(format!(
                    "cannot write the grants snapshot: {e}; no grant opens until it can be \
                     written"
                ));
                log.broken = true;
            }
        }
        OpenedGrants {
            log,
            records,
            problems,
        }
    }
}

impl GrantLog {
    /// A new grant's id.
    pub fn new_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Bytes this writer has written (journal lines and snapshots): what a change costs.
    #[cfg(test)]
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Whether the caller should [`compact`](Self::compact) before the next change: the
    /// journal holds more changes than `live` open grants justify, or it cannot be written
    /// until a snapshot is.
    pub fn wants_compaction(&self, live: usize) -> bool {
        self.broken || self.next_n >= compact_after(live)
    }

    /// Makes `change` durable: one line written in place, one data sync.
    pub fn record(&mut self, change: &GrantChange) -> Result<(), StateError> {
        let path = self.store.path(JOURNAL);
        let io = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        if self.broken {
            return Err(io(std::io::Error::other(
                "the grants snapshot could not be written; nothing is recorded until it is",
            )));
        }
        let json = serde_json::to_string(change).map_err(|e| io(std::io::Error::other(e)))?;
        let rest = format!("{} {} {json}", self.base, self.next_n);
        let line = format!("{MAGIC} {} {rest}\n", hex(&Sha256::digest(rest.as_bytes())));
        if self.file.is_none() {
            let existed = path.exists();
            let f = open_in_place(&path).map_err(io)?;
            self.allocated = f.metadata().map_err(io)?.len();
            if !existed {
                fs::File::open(self.store.dir())
                    .and_then(|d| d.sync_all())
                    .map_err(io)?;
            }
            self.file = Some(f);
        }
        let Some(f) = &self.file else {
            return Err(io(std::io::Error::other("journal not open")));
        };
        let end = self.offset + line.len() as u64;
        if end > self.allocated {
            let size = end.div_ceil(CHUNK) * CHUNK;
            f.set_len(size).map_err(io)?;
            self.allocated = size;
        }
        f.write_all_at(line.as_bytes(), self.offset).map_err(io)?;
        f.sync_data().map_err(io)?;
        self.offset = end;
        self.next_n += 1;
        self.written += line.len() as u64;
        Ok(())
    }

    /// Writes `records` (the whole state) as the next snapshot and starts the journal over.
    pub fn compact(&mut self, records: &[GrantRecord]) -> Result<(), StateError> {
        let seq = self.next_seq;
        self.store.write_grants_slot(seq, records)?;
        self.next_seq += 1;
        self.broken = false;
        self.base = seq;
        self.next_n = 0;
        self.offset = 0;
        self.written += serde_json::to_vec_pretty(records).map_or(0, |v| v.len() as u64);
        Ok(())
    }
}

/// A journal line that passed its checksum.
#[derive(Debug)]
struct Line {
    base: u64,
    n: u64,
    change: GrantChange,
}

/// The valid lines of a journal, and how many lines that begin like one failed their
/// checksum or did not parse. The rest is passed over in silence: the zeros of the journal's
/// unwritten space, and the rest of an older base's line that a shorter newer one overwrote.
fn parse_journal(bytes: &[u8]) -> (Vec<Line>, usize) {
    let mut lines = Vec::new();
    let mut damaged = 0;
    for raw in bytes.split(|&b| b == b'\n') {
        let Some(start) = raw.iter().position(|&b| b != 0) else {
            continue;
        };
        let raw = &raw[start..];
        match parse_line(raw) {
            Some(line) => lines.push(line),
            None if raw.starts_with(MAGIC.as_bytes()) && raw.get(MAGIC.len()) == Some(&b' ') => {
                damaged += 1
            }
            None => {}
        }
    }
    (lines, damaged)
}

fn parse_line(raw: &[u8]) -> Option<Line> {
    let text = std::str::from_utf8(raw).ok()?;
    let rest = text.strip_prefix(MAGIC)?.strip_prefix(' ')?;
    let (sum, rest) = rest.split_once(' ')?;
    if hex(&Sha256::digest(rest.as_bytes())) != sum {
        return None;
    }
    let (base, rest) = rest.split_once(' ')?;
    let (n, json) = rest.split_once(' ')?;
    Some(Line {
        base: base.parse().ok()?,
        n: n.parse().ok()?,
        change: serde_json::from_str(json).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(id: u64, last: u8) -> GrantRecord {
        GrantRecord {
            door: "ssh".into(),
            key: "alice".into(),
            addr: std::net::IpAddr::from([192, 0, 2, last]),
            prefix: None,
            port: "22/tcp".into(),
            opened: 100,
            expires: 130,
            stop: vec!["/sbin/iptables".into(), "-D".into(), "INPUT".into()],
            nft: false,
            id,
        }
    }

    fn open(dir: &std::path::Path) -> OpenedGrants {
        StateDir::open(dir).expect("open").open_grants()
    }

    /// Opens, extensions and closes survive a restart; the restart folds them into a
    /// snapshot, and ids go on from the highest.
    #[test]
    fn changes_survive_a_restart_and_ids_stay_unique() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut first = open(dir.path());
        assert!(first.records.is_empty() && first.problems.is_empty());
        let ids: Vec<u64> = (0..3).map(|_| first.log.new_id()).collect();
        assert_eq!(ids, [1, 2, 3]);
        for (i, &id) in ids.iter().enumerate() {
            first
                .log
                .record(&GrantChange::Open(grant(id, i as u8)))
                .expect("open");
        }
        first
            .log
            .record(&GrantChange::Extend {
                id: 2,
                expires: 999,
            })
            .expect("extend");
        first
            .log
            .record(&GrantChange::Close { id: 1 })
            .expect("close");
        drop(first);

        let mut again = open(dir.path());
        assert!(again.problems.is_empty(), "{:?}", again.problems);
        let mut two = grant(2, 1);
        two.expires = 999;
        assert_eq!(again.records, vec![two.clone(), grant(3, 2)]);
        assert_eq!(again.log.new_id(), 4);
        // Folded into a snapshot at the restart: the journal's lines are of an older base now.
        let slot = StateDir::open(dir.path())
            .expect("open")
            .load_grants_slots()
            .expect("slot");
        assert_eq!(slot.records, vec![two, grant(3, 2)]);
        again
            .log
            .record(&GrantChange::Close { id: 3 })
            .expect("close");
        drop(again);
        let third = open(dir.path());
        assert_eq!(third.records.len(), 1);
        assert!(third.problems.is_empty(), "{:?}", third.problems);
    }

    /// What one change costs does not depend on the number of open grants.
    #[test]
    fn a_change_costs_the_same_with_one_grant_or_four_thousand() {
        let cost = |open_before: u64| {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut g = open(dir.path());
            let all: Vec<GrantRecord> = (1..=open_before).map(|id| grant(id, 7)).collect();
            g.log.compact(&all).expect("snapshot");
            for _ in 0..open_before {
                g.log.new_id();
            }
            let before = g.log.written();
            let id = g.log.new_id();
            g.log
                .record(&GrantChange::Open(grant(id, 9)))
                .expect("open");
            g.log
                .record(&GrantChange::Extend { id, expires: 500 })
                .expect("extend");
            g.log.record(&GrantChange::Close { id }).expect("close");
            g.log.written() - before
        };
        let one = cost(1);
        let many = cost(4096);
        assert!(one < 1024, "three changes took {one} bytes");
        // The id's digits may differ, nothing else.
        assert!(
            many <= one + 12,
            "{many} bytes with 4096 grants, {one} with 1"
        );
        // And compaction is due only after a number of changes proportional to the grants.
        assert_eq!(compact_after(0), COMPACT_MIN);
        assert_eq!(compact_after(4096), 8192);
    }

    /// A line torn by a crash mid-write is ignored (its change was not acted on) and
    /// reported; so is a damaged line in the middle, and the gap it leaves.
    #[test]
    fn a_torn_last_line_is_ignored_and_a_damaged_middle_one_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut g = open(dir.path());
        for id in 1..=3 {
            g.log.new_id();
            g.log
                .record(&GrantChange::Open(grant(id, id as u8)))
                .expect("open");
        }
        drop(g);
        let path = dir.path().join(JOURNAL);
        let good = fs::read(&path).expect("read");
        assert_eq!(
            good.len() as u64,
            CHUNK,
            "grown by a chunk, zeros after the lines"
        );
        let ends: Vec<usize> = good
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'\n')
            .map(|(i, _)| i)
            .collect();
        assert_eq!(ends.len(), 3);

        // Torn: the third line half written (the rest still zeros).
        let copy = tempfile::tempdir().expect("tempdir");
        let mut torn = good.clone();
        for b in &mut torn[ends[1] + 40..=ends[2]] {
            *b = 0;
        }
        fs::write(copy.path().join(JOURNAL), &torn).expect("write");
        let g = open(copy.path());
        assert_eq!(g.records, vec![grant(1, 1), grant(2, 2)]);
        assert_eq!(g.problems.len(), 1, "{:?}", g.problems);
        assert!(g.problems[0].contains("1 damaged line(s) ignored"));

        // Damaged in the middle: the second line's checksum fails.
        let copy = tempfile::tempdir().expect("tempdir");
        let mut bad = good.clone();
        bad[ends[0] + 10] ^= 0x01;
        fs::write(copy.path().join(JOURNAL), &bad).expect("write");
        let g = open(copy.path());
        assert_eq!(g.records, vec![grant(1, 1), grant(3, 3)]);
        assert!(
            g.problems
                .iter()
                .any(|p| p.contains("change 1 of save 0 is missing")),
            "{:?}",
            g.problems
        );
        assert!(g.problems.iter().any(|p| p.contains("1 damaged line(s)")));
    }

    /// Compaction writes the next snapshot and starts the journal over from its start: the
    /// longer lines of the old base left behind are ignored, and so is the rest of a line
    /// that a shorter new one overwrote.
    #[test]
    fn compaction_starts_over_and_leftovers_are_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut g = open(dir.path());
        let mut live = Vec::new();
        for id in 1..=20 {
            g.log.new_id();
            let mut r = grant(id, id as u8);
            r.stop
                .push("a-long-argument-to-make-the-old-lines-long".into());
            g.log.record(&GrantChange::Open(r.clone())).expect("open");
            live.push(r);
        }
        g.log.compact(&live).expect("compact");
        // Short lines now, over the long ones.
        for r in &live[..19] {
            g.log
                .record(&GrantChange::Close { id: r.id })
                .expect("close");
        }
        drop(g);
        let again = open(dir.path());
        assert!(again.problems.is_empty(), "{:?}", again.problems);
        assert_eq!(again.records, vec![live[19].clone()]);
    }

    /// A crash while the compaction's snapshot is written: the slot is torn, and the state
    /// is the older snapshot plus the journal, which was not touched yet.
    #[test]
    fn a_torn_compaction_falls_back_on_the_old_snapshot_and_its_journal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut g = open(dir.path());
        g.log.compact(&[]).expect("snapshot 1");
        for id in 1..=2 {
            g.log.new_id();
            g.log
                .record(&GrantChange::Open(grant(id, id as u8)))
                .expect("open");
        }
        g.log
            .compact(&[grant(1, 1), grant(2, 2)])
            .expect("snapshot 2");
        drop(g);
        // Snapshot 2 went to grants.0: tear it.
        let slot = dir.path().join("grants.0");
        let mut b = fs::read(&slot).expect("read");
        b[60] ^= 0x01;
        fs::write(&slot, &b).expect("write");
        let again = open(dir.path());
        assert_eq!(again.records, vec![grant(1, 1), grant(2, 2)]);
        assert!(
            again
                .problems
                .iter()
                .any(|p| p.contains("grants.0: corrupt")),
            "{:?}",
            again.problems
        );
    }

    /// Records of versions before the journal have no id: they are numbered when read.
    #[test]
    fn records_without_ids_are_numbered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateDir::open(dir.path()).expect("open");
        store
            .write_grants_slot(7, &[grant(0, 1), grant(0, 2)])
            .expect("slot");
        let mut g = store.open_grants();
        assert_eq!(
            g.records.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(g.log.new_id(), 3);
        let slot = store.load_grants_slots().expect("slot");
        assert_eq!(slot.seq, 8, "written again, numbered");
        assert_eq!(slot.records, g.records);
    }
}
