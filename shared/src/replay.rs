//! The replay cache: digests of accepted packets, each kept until its packet could no longer
//! pass the timestamp check.
//!
//! Rule (docs/PROTOCOL.md, "Replay"): a packet with timestamp `t` accepted at server time
//! `now` is remembered until `max(t, now) + window`. Past that instant its timestamp is
//! outside the window for as long as the clock does not go backwards, and if the clock does
//! go backwards the entry simply lives longer (expiry is compared with the new, smaller
//! `now`), so a backwards jump never re-admits a replay.
//!
//! The cache is bounded: when it is full and nothing has expired, inserting fails and the
//! verifier refuses the packet (fail closed) rather than forgetting a live entry. Only
//! authenticated packets are ever inserted, so filling it takes a key.
//!
//! No I/O here: [`ReplayCache::encode`] and [`ReplayCache::decode`] turn the cache into bytes
//! and back (a snapshot the server writes atomically); [`journal_record`] and
//! [`decode_journal`] are the append-only journal the server adds one accepted packet to at a
//! time between snapshots, so an accept costs one 48-byte append and one `fdatasync`, not a
//! rewrite of the whole cache.

use std::collections::{BTreeSet, HashMap};

use sha2::{Digest as _, Sha256};

/// A packet digest (SHA-256 of the whole packet).
pub type Digest = [u8; 32];

/// Default number of entries.
pub const DEFAULT_CAPACITY: usize = 65_536;

/// Magic and format version at the start of the serialised cache (version 2: with the
/// high-water time).
pub const MAGIC: &[u8; 8] = b"KSPARC02";
/// The first format, without the high-water time: still read.
pub const MAGIC_V1: &[u8; 8] = b"KSPARC01";
const ENTRY_LEN: usize = 32 + 8;
const HEADER_LEN_V1: usize = 8 + 8;
const HEADER_LEN: usize = 8 + 8 + 8;
const CHECKSUM_LEN: usize = 32;

/// Magic and format version at the start of a replay journal.
pub const JOURNAL_MAGIC: &[u8; 8] = b"KSPARJ01";
/// Bytes of one journal record: digest, expiry (u64, big-endian), then the first 8 bytes of
/// SHA-256 over those 40 bytes.
pub const JOURNAL_RECORD_LEN: usize = ENTRY_LEN + 8;

/// Why an entry was not inserted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InsertError {
    /// The digest is present already.
    #[error("already present")]
    Present,
    /// Capacity reached and no entry has expired.
    #[error("replay cache full")]
    Full,
}

/// Why serialised bytes were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Wrong magic or format version.
    #[error("not a knock-spa replay cache (bad magic)")]
    Magic,
    /// Length does not match the entry count.
    #[error("truncated or over-long")]
    Length,
    /// The trailing SHA-256 does not match.
    #[error("checksum mismatch (corrupt)")]
    Checksum,
    /// More entries than the capacity allows.
    #[error("more entries than the configured capacity")]
    TooMany,
    /// The same digest twice.
    #[error("duplicate entry")]
    Duplicate,
    /// A journal record before the last one fails its check.
    #[error("journal record {0} is corrupt")]
    Record(usize),
}

/// One journal record for `digest`, kept until `expiry`.
pub fn journal_record(digest: &Digest, expiry: u64) -> [u8; JOURNAL_RECORD_LEN] {
    let mut rec = [0u8; JOURNAL_RECORD_LEN];
    rec[..32].copy_from_slice(digest);
    rec[32..ENTRY_LEN].copy_from_slice(&expiry.to_be_bytes());
    let sum = Sha256::digest(&rec[..ENTRY_LEN]);
    rec[ENTRY_LEN..].copy_from_slice(&sum[..8]);
    rec
}

/// What a journal file held.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Journal {
    /// The records, in the order they were appended: (digest, expiry).
    pub entries: Vec<(Digest, u64)>,
    /// Whether the file ended in an incomplete or failing record, which was dropped.
    pub torn_tail: bool,
}

/// Parses a journal: [`JOURNAL_MAGIC`], then [`journal_record`]s.
///
/// A bad *last* record (short, or failing its check) is an append that a crash cut short. It
/// is dropped and reported in [`Journal::torn_tail`]: the server acts on a packet only after
/// its record is on disk, so that packet was never acted on. A bad record *before* the last
/// cannot come from a crash and is refused as corruption ([`DecodeError::Record`]), as is a
/// wrong magic. An empty file (created, crash before the magic reached the disk) is an empty
/// journal with a torn tail.
pub fn decode_journal(bytes: &[u8]) -> Result<Journal, DecodeError> {
    let mut out = Journal::default();
    if bytes.len() < JOURNAL_MAGIC.len() {
        if JOURNAL_MAGIC.starts_with(bytes) {
            out.torn_tail = true;
            return Ok(out);
        }
        return Err(DecodeError::Magic);
    }
    if &bytes[..JOURNAL_MAGIC.len()] != JOURNAL_MAGIC {
        return Err(DecodeError::Magic);
    }
    let body = &bytes[JOURNAL_MAGIC.len()..];
    let records = body.chunks(JOURNAL_RECORD_LEN);
    let n = records.len();
    for (i, rec) in records.enumerate() {
        let good = rec.len() == JOURNAL_RECORD_LEN
            && Sha256::digest(&rec[..ENTRY_LEN])[..8] == rec[ENTRY_LEN..];
        if !good {
            if i + 1 == n {
                out.torn_tail = true;
                break;
            }
            return Err(DecodeError::Record(i));
        }
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&rec[..32]);
        let mut expiry = [0u8; 8];
        expiry.copy_from_slice(&rec[32..ENTRY_LEN]);
        out.entries.push((digest, u64::from_be_bytes(expiry)));
    }
    Ok(out)
}

/// Digest → expiry (Unix seconds), with time-ordered eviction.
#[derive(Clone, Debug)]
pub struct ReplayCache {
    map: HashMap<Digest, u64>,
    by_expiry: BTreeSet<(u64, Digest)>,
    capacity: usize,
    /// The latest server time the cache was used at: its clock never goes back from here
    /// (see [`observe`](Self::observe)).
    high_water: u64,
}

impl ReplayCache {
    /// An empty cache holding at most `capacity` entries (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            map: HashMap::new(),
            by_expiry: BTreeSet::new(),
            capacity: capacity.max(1),
            high_water: 0,
        }
    }

    /// The time to judge by at server time `now`: the latest time the cache has seen, so that
    /// a clock stepped forward (which expires and purges entries) and then back cannot bring
    /// a captured packet back inside its window with its entry gone. Until the real clock
    /// catches up, packets are judged against the high-water time (fresh ones may be refused
    /// as stale: safe, and over when the clock is right again).
    pub fn observe(&mut self, now: u64) -> u64 {
        self.high_water = self.high_water.max(now);
        self.high_water
    }

    /// The latest time the cache was used at (persisted with it).
    pub fn high_water(&self) -> u64 {
        self.high_water
    }

    /// Whether the digest is remembered.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.map.contains_key(digest)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Drops entries whose expiry is before `now` (or the high-water time). Returns how many.
    pub fn purge(&mut self, now: u64) -> usize {
        let now = self.observe(now);
        let mut n = 0;
        while let Some(&(expiry, digest)) = self.by_expiry.first() {
            if expiry >= now {
                break;
            }
            self.by_expiry.pop_first();
            self.map.remove(&digest);
            n += 1;
        }
        n
    }

    /// Remembers `digest` until `expiry`, first dropping what has expired at `now`.
    pub fn insert(&mut self, now: u64, digest: Digest, expiry: u64) -> Result<(), InsertError> {
        if self.map.contains_key(&digest) {
            return Err(InsertError::Present);
        }
        self.purge(now);
        if self.map.len() >= self.capacity {
            return Err(InsertError::Full);
        }
        self.map.insert(digest, expiry);
        self.by_expiry.insert((expiry, digest));
        Ok(())
    }

    /// Puts back an entry read from a journal: an expired one (`expiry < now`) is skipped,
    /// one already present keeps the later of the two expiries (a snapshot and the journal
    /// may both hold it after a crash during compaction), anything else is inserted as by
    /// [`insert`](Self::insert).
    ///
    /// # Errors
    /// [`InsertError::Full`] when the live entries exceed the capacity (the configured
    /// `ReplayCacheSize` shrank); the caller must not trust the cache then.
    pub fn restore(&mut self, now: u64, digest: Digest, expiry: u64) -> Result<(), InsertError> {
        let now = self.observe(now);
        if expiry < now {
            return Ok(());
        }
        if let Some(old) = self.map.get_mut(&digest) {
            if expiry > *old {
                self.by_expiry.remove(&(*old, digest));
                *old = expiry;
                self.by_expiry.insert((expiry, digest));
            }
            return Ok(());
        }
        self.insert(now, digest, expiry)
    }

    /// Serialises: magic, entry count (u64), high-water time (u64), entries (digest, expiry
    /// u64) in expiry order, then SHA-256 of everything before it.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.len() * ENTRY_LEN + CHECKSUM_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.len() as u64).to_be_bytes());
        out.extend_from_slice(&self.high_water.to_be_bytes());
        for (expiry, digest) in &self.by_expiry {
            out.extend_from_slice(digest);
            out.extend_from_slice(&expiry.to_be_bytes());
        }
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        out
    }

    /// Parses what [`encode`](Self::encode) wrote, or the first format ([`MAGIC_V1`], no
    /// high-water time). Anything truncated, garbled or over capacity is refused whole.
    pub fn decode(bytes: &[u8], capacity: usize) -> Result<Self, DecodeError> {
        let header = match bytes.get(..8) {
            Some(m) if m == MAGIC => HEADER_LEN,
            Some(m) if m == MAGIC_V1 => HEADER_LEN_V1,
            _ => return Err(DecodeError::Magic),
        };
        if bytes.len() < header + CHECKSUM_LEN {
            return Err(DecodeError::Length);
        }
        let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        let word = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&body[at..at + 8]);
            u64::from_be_bytes(w)
        };
        let count = word(8);
        let high_water = if header == HEADER_LEN { word(16) } else { 0 };
        let entries = &body[header..];
        if entries.len() % ENTRY_LEN != 0 || (entries.len() / ENTRY_LEN) as u64 != count {
            return Err(DecodeError::Length);
        }
        if Sha256::digest(body).as_slice() != sum {
            return Err(DecodeError::Checksum);
        }
        let mut cache = Self::new(capacity);
        cache.high_water = high_water;
        if entries.len() / ENTRY_LEN > cache.capacity {
            return Err(DecodeError::TooMany);
        }
        for chunk in entries.chunks_exact(ENTRY_LEN) {
            let mut digest = [0u8; 32];
            digest.copy_from_slice(&chunk[..32]);
            let mut expiry = [0u8; 8];
            expiry.copy_from_slice(&chunk[32..]);
            let expiry = u64::from_be_bytes(expiry);
            if cache.map.insert(digest, expiry).is_some() {
                return Err(DecodeError::Duplicate);
            }
            cache.by_expiry.insert((expiry, digest));
        }
        Ok(cache)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal(records: &[(Digest, u64)]) -> Vec<u8> {
        let mut out = JOURNAL_MAGIC.to_vec();
        for (d, e) in records {
            out.extend_from_slice(&journal_record(d, *e));
        }
        out
    }

    #[test]
    fn journal_round_trip() {
        let bytes = journal(&[(d(1), 100), (d(2), 200), (d(1), 300)]);
        assert_eq!(bytes.len(), 8 + 3 * JOURNAL_RECORD_LEN);
        let j = decode_journal(&bytes).expect("valid");
        assert_eq!(j.entries, vec![(d(1), 100), (d(2), 200), (d(1), 300)]);
        assert!(!j.torn_tail);
        assert_eq!(decode_journal(JOURNAL_MAGIC), Ok(Journal::default()));
    }

    #[test]
    fn journal_torn_tail_is_dropped_but_damage_before_it_is_corruption() {
        let bytes = journal(&[(d(1), 100), (d(2), 200)]);
        // Every truncation: the complete records before the cut survive, the cut one is a
        // torn tail; nothing is an error.
        for cut in 0..bytes.len() {
            let j = decode_journal(&bytes[..cut]).expect("a truncation is a torn tail");
            let whole = cut.saturating_sub(8) / JOURNAL_RECORD_LEN;
            assert_eq!(j.entries.len(), whole, "cut {cut}");
            let on_boundary = cut >= 8 && (cut - 8) % JOURNAL_RECORD_LEN == 0;
            assert_eq!(j.torn_tail, !on_boundary, "cut {cut}");
        }
        // Every single-bit flip: in the magic, refused; in the last record, a torn tail (the
        // record is dropped); in an earlier record, refused.
        for byte in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[byte] ^= 1 << bit;
                let r = decode_journal(&b);
                if byte < 8 {
                    assert_eq!(r, Err(DecodeError::Magic), "byte {byte}");
                } else if byte < 8 + JOURNAL_RECORD_LEN {
                    assert_eq!(r, Err(DecodeError::Record(0)), "byte {byte}");
                } else {
                    let j = r.expect("last record damaged: torn tail");
                    assert_eq!(j.entries, vec![(d(1), 100)]);
                    assert!(j.torn_tail);
                }
            }
        }
        assert_eq!(decode_journal(b"garbage!"), Err(DecodeError::Magic));
        assert_eq!(decode_journal(b"xx"), Err(DecodeError::Magic));
    }

    #[test]
    fn restore_keeps_the_later_expiry_and_skips_the_expired() {
        let mut c = ReplayCache::new(2);
        assert_eq!(c.restore(100, d(1), 150), Ok(()));
        assert_eq!(c.restore(100, d(1), 120), Ok(()));
        assert_eq!(c.restore(100, d(1), 180), Ok(()));
        assert_eq!(c.restore(100, d(2), 99), Ok(()), "expired: skipped");
        assert_eq!(c.len(), 1);
        // Only the later expiry is left: the entry outlives 150 and goes after 180.
        c.purge(170);
        assert!(c.contains(&d(1)));
        c.purge(181);
        assert!(!c.contains(&d(1)));
        assert_eq!(c.restore(100, d(3), 200), Ok(()));
        assert_eq!(c.restore(100, d(4), 200), Ok(()));
        assert_eq!(c.restore(100, d(5), 200), Err(InsertError::Full));
    }

    fn d(n: u8) -> Digest {
        [n; 32]
    }

    // Numbered cases in the style of the kernel's replay-window self-test.
    #[test]
    fn numbered_cases() {
        let mut c = ReplayCache::new(3);
        // 1: fresh insert succeeds.
        assert_eq!(c.insert(100, d(1), 160), Ok(()));
        // 2: the same digest again is a replay.
        assert_eq!(c.insert(100, d(1), 160), Err(InsertError::Present));
        assert!(c.contains(&d(1)));
        // 3, 4: fill to capacity.
        assert_eq!(c.insert(101, d(2), 150), Ok(()));
        assert_eq!(c.insert(102, d(3), 170), Ok(()));
        // 5: full, nothing expired: fail closed.
        assert_eq!(c.insert(103, d(4), 170), Err(InsertError::Full));
        // 6: entries live through their expiry second itself.
        assert_eq!(c.insert(150, d(4), 200), Err(InsertError::Full));
        // 7: one second later d(2) (expiry 150) is dropped, making room.
        assert_eq!(c.insert(151, d(4), 200), Ok(()));
        assert!(!c.contains(&d(2)));
        // 8: a clock jump backwards keeps every entry.
        assert_eq!(c.purge(10), 0);
        assert_eq!(c.len(), 3);
        // 9: purge in expiry order.
        assert_eq!(c.purge(165), 1);
        assert!(!c.contains(&d(1)) && c.contains(&d(3)) && c.contains(&d(4)));
        // 10: purge everything.
        assert_eq!(c.purge(u64::MAX), 2);
        assert!(c.is_empty());
    }

    #[test]
    fn encode_decode_round_trip() {
        let mut c = ReplayCache::new(10);
        for i in 0..5u8 {
            c.insert(0, d(i), 100 + u64::from(i)).expect("room");
        }
        let bytes = c.encode();
        let back = ReplayCache::decode(&bytes, 10).expect("decodes");
        assert_eq!(back.len(), 5);
        for i in 0..5u8 {
            assert!(back.contains(&d(i)));
        }
        assert_eq!(back.encode(), bytes);
        assert_eq!(
            ReplayCache::decode(&bytes, 4).unwrap_err(),
            DecodeError::TooMany
        );
    }

    #[test]
    fn the_empty_cache_encodes_as_documented() {
        // docs/PROTOCOL.md, "Persistence".
        let hex: String = ReplayCache::new(4)
            .encode()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "4b53504152433032000000000000000000000000000000005688d9d85f98ff9b1f8eb139a2362b76b5ff09c71b0fbbbd23585209d7c1d5eb"
        );
        let mut c = ReplayCache::new(4);
        assert_eq!(c.observe(100), 100);
        assert_eq!(c.observe(50), 100, "never back");
        let back = ReplayCache::decode(&c.encode(), 4).expect("decode");
        assert_eq!(back.high_water(), 100);
    }

    #[test]
    fn decode_refuses_every_truncation_and_flip() {
        let mut c = ReplayCache::new(10);
        c.insert(0, d(9), 5).expect("room");
        c.insert(0, d(8), 6).expect("room");
        let bytes = c.encode();
        for n in 0..bytes.len() {
            assert!(
                ReplayCache::decode(&bytes[..n], 10).is_err(),
                "truncated to {n}"
            );
        }
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(ReplayCache::decode(&b, 10).is_err(), "bit {i}");
        }
        assert_eq!(
            ReplayCache::decode(b"garbage", 10).unwrap_err(),
            DecodeError::Magic
        );
    }
}
