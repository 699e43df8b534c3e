//! Bytes → the replay cache's state files: `ReplayCache::decode` (the snapshot, `replay.bin`)
//! and `decode_journal` (`replay.journal`), then `ReplayCache::restore` of the journal's
//! records, as the daemon loads them at start.
//!
//! Checks:
//!
//! - a decoded snapshot re-encodes to bytes that decode to the same entries, and encoding is
//!   then stable (`encode ∘ decode ∘ encode = encode`);
//! - a decoded journal is its input: the magic and one `journal_record` per entry give back the
//!   input exactly, or, with a torn tail, all of the input but its last (incomplete or failing)
//!   record, which is at most one record long;
//! - restoring the records never panics, keeps at most the capacity, and every live record
//!   (expiry at or after `now`) that fits is in the cache afterwards.
#![no_main]

use knock_shared::replay::{
    decode_journal, journal_record, InsertError, ReplayCache, JOURNAL_MAGIC, JOURNAL_RECORD_LEN,
};
use libfuzzer_sys::fuzz_target;

const CAPACITY: usize = 64;
const NOW: u64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    if let Ok(cache) = ReplayCache::decode(data, CAPACITY) {
        let bytes = cache.encode();
        let again = ReplayCache::decode(&bytes, CAPACITY).expect("re-encoded snapshot decodes");
        assert_eq!(again.len(), cache.len());
        assert_eq!(again.encode(), bytes, "encoding is stable");
    }

    let Ok(journal) = decode_journal(data) else {
        return;
    };
    let mut rebuilt = Vec::with_capacity(data.len());
    if data.len() >= JOURNAL_MAGIC.len() {
        rebuilt.extend_from_slice(JOURNAL_MAGIC);
    }
    for (digest, expiry) in &journal.entries {
        rebuilt.extend_from_slice(&journal_record(digest, *expiry));
    }
    if journal.torn_tail {
        assert!(
            data.starts_with(&rebuilt),
            "the entries are the input's prefix"
        );
        let tail = data.len() - rebuilt.len();
        assert!(
            (1..=JOURNAL_RECORD_LEN).contains(&tail) || data.len() < JOURNAL_MAGIC.len(),
            "a torn tail is one record at most ({tail} bytes)"
        );
    } else {
        assert_eq!(
            rebuilt, data,
            "a journal without a torn tail is its records exactly"
        );
    }

    let mut cache = ReplayCache::new(CAPACITY);
    let mut full = false;
    for (digest, expiry) in &journal.entries {
        match cache.restore(NOW, *digest, *expiry) {
            Ok(()) => {
                if *expiry >= NOW {
                    assert!(cache.contains(digest), "a live record is restored");
                }
            }
            Err(InsertError::Full) => full = true,
            Err(e) => panic!("restore: {e}"),
        }
        assert!(cache.len() <= CAPACITY);
    }
    if !full {
        let live = journal.entries.iter().filter(|(_, e)| *e >= NOW);
        for (digest, _) in live {
            assert!(cache.contains(digest), "every live record stays");
        }
    }
});
