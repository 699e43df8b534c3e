//! Snapshots of the open grants, persisted in the state directory so that a restart or a
//! crash never leaves a port open forever. The changes since the newest snapshot are in the
//! [journal](super::grant_journal), whose [`GrantLog`](super::GrantLog) is the one writer of
//! both.
//!
//! - `grants.0` and `grants.1`: snapshots, double-buffered. Each writes the whole list, as
//!   `knock-spa-grants v2 <seq> <length> <sha256 hex>`, a newline, a JSON array of
//!   [`GrantRecord`]s of that length (then padding), into the slot of `seq`'s parity (even:
//!   `grants.0`, odd: `grants.1`), so never over the newest snapshot, in place, followed by
//!   one `fdatasync`. No rename and no directory fsync (but when a slot file is first
//!   created). A crash mid-write damages only the slot being written; the other still holds
//!   the snapshot before, and the journal still holds the changes since it. Loading takes
//!   the valid slot with the higher `seq`.
//! - `grants.json` (versions before the slots): `knock-spa-grants v1 <sha256 hex>`, a newline,
//!   the JSON array. Read when no slot exists; removed after the first slot is written.

use std::fs;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::FileExt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::dir::{hex, open_in_place, StateDir, StateError};

pub(super) const GRANTS: &str = "grants.json";
pub(super) const GRANT_SLOTS: [&str; 2] = ["grants.0", "grants.1"];
const GRANTS_MAGIC_V2: &str = "knock-spa-grants v2";
/// Slots are padded to a multiple of this, so that a save rarely changes the file's size
/// (which would make the data sync a metadata commit too).
const GRANTS_PAD: usize = 4096;
const GRANTS_MAGIC_V1: &str = "knock-spa-grants v1";

/// One rule the daemon opened (or is about to open) and must close.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRecord {
    /// Door name.
    pub door: String,
    /// Key name for SPA grants; empty for knock sequences.
    pub key: String,
    /// The admitted address (with `prefix`: the network's first address).
    pub addr: IpAddr,
    /// With a door's `Admit_Prefix`: the prefix length of the admitted network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<u8>,
    /// `22/tcp` for SPA grants; empty for knock sequences.
    pub port: String,
    /// Unix seconds when it was opened.
    pub opened: u64,
    /// Unix seconds when it must be closed.
    pub expires: u64,
    /// The rendered stop command, kept so a changed configuration cannot orphan the rule.
    /// Empty for an nftables grant.
    pub stop: Vec<String>,
    /// An nftables grant (`Firewall = nftables`): its rule is the element `addr . port` of
    /// the table's admitted set, with a kernel timeout; closing deletes it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nft: bool,
    /// The grant's number, unique in this state directory: what the journal's records name.
    /// (0 in files of versions before the journal; renumbered when read.)
    #[serde(default)]
    pub id: u64,
}

/// What [`StateDir::load_grants_slots`] found.
#[derive(Debug, Default)]
pub(super) struct LoadedGrants {
    /// The open grants of the newest valid snapshot.
    pub records: Vec<GrantRecord>,
    /// Its `seq` (0: none, or the pre-slot file).
    pub seq: u64,
    /// Set when a slot was damaged but the other was valid: what happened, for the log.
    pub warning: Option<String>,
}

impl GrantRecord {
    /// The grant, for the operator: `DOOR ADDR[/LEN] [PORT] [(key NAME)]`.
    pub fn describe(&self) -> String {
        let port = if self.port.is_empty() {
            String::new()
        } else {
            format!(" {}", self.port)
        };
        let key = if self.key.is_empty() {
            String::new()
        } else {
            format!(" (key {})", self.key)
        };
        format!("{} {}{port}{key}", self.door, self.admitted())
    }

    /// What it admits: one address, or a network.
    pub fn admitted(&self) -> knock_shared::types::Admitted {
        match self.prefix {
            Some(len) => knock_shared::types::Admitted::network(self.addr, len),
            None => knock_shared::types::Admitted::host(self.addr),
        }
    }
}

impl StateDir {
    /// Writes the snapshot `seq` of the open grants (see the module docs): one in-place write
    /// into the slot of `seq`'s parity and one data sync.
    pub(super) fn write_grants_slot(
        &self,
        seq: u64,
        grants: &[GrantRecord],
    ) -> Result<(), StateError> {
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
        // The pre-slot file is superseded now (best effort: the slots win over it anyway).
        let legacy = self.path(GRANTS);
        if legacy.exists() && fs::remove_file(&legacy).is_ok() {
            let _ = fs::File::open(&self.dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }

    /// Loads the newest snapshot of the open grants: the valid slot with the higher `seq`;
    /// the pre-slot `grants.json` when no slot exists (`seq` 0); none when nothing exists. A
    /// damaged slot is moved aside; if the other is valid it is used, with
    /// [`LoadedGrants::warning`] set; if none is valid, that is an error (nothing is known
    /// about the open rules but what the journal says).
    pub(super) fn load_grants_slots(&self) -> Result<LoadedGrants, StateError> {
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
            (Some((seq, records)), None) => Ok(LoadedGrants {
                records,
                seq,
                warning: None,
            }),
            (Some((seq, records)), Some(e)) => Ok(LoadedGrants {
                records,
                seq,
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
                        seq: 0,
                        warning: None,
                    }),
                    Err(why) => Err(self.move_aside(GRANTS, why)),
                }
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> GrantRecord {
        GrantRecord {
            door: "ssh".into(),
            key: "alice".into(),
            addr: "192.0.2.1".parse().expect("ip"),
            prefix: None,
            port: "22/tcp".into(),
            opened: 100,
            expires: 130,
            stop: vec!["/sbin/iptables".into(), "-D".into(), "INPUT".into()],
            nft: false,
            id: 1,
        }
    }

    #[test]
    fn grants_round_trip_and_corruption_is_detected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateDir::open(&dir.path().join("state")).expect("open");
        let loaded = store.load_grants_slots().expect("empty");
        assert_eq!(loaded.records, vec![]);
        assert!(!store.has_grants());
        store.write_grants_slot(1, &[record()]).expect("save");
        assert!(store.has_grants());
        let loaded = store.load_grants_slots().expect("load");
        assert_eq!((loaded.seq, loaded.records), (1, vec![record()]));

        // Only one slot exists so far: any damage to it is an error, and it is moved aside.
        let path = store.dir().join(GRANT_SLOTS[1]);
        let good = fs::read(&path).expect("read");
        assert_eq!(good.len() % GRANTS_PAD, 0, "padded");
        // Cut inside the header, inside the JSON, just before its closing bracket.
        let end = good.iter().rposition(|&b| b == b']').expect("JSON array");
        for cut in [0, 10, 100, end] {
            fs::write(&path, &good[..cut]).expect("write");
            let err = store.load_grants_slots().unwrap_err();
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
            store.load_grants_slots(),
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
        let store = StateDir::open(dir.path()).expect("open");
        let mut two = vec![record(), record()];
        two[1].addr = "192.0.2.8".parse().expect("ip");
        let mut big = Vec::new();
        for i in 0..40u8 {
            let mut r = record();
            r.addr = std::net::IpAddr::from([192, 0, 2, i]);
            big.push(r);
        }
        store.write_grants_slot(1, &big).expect("save 1"); // grants.1
        store.write_grants_slot(2, &[record()]).expect("save 2"); // grants.0
        store.write_grants_slot(3, &two).expect("save 3"); // grants.1, over the longer save 1
        let slot0 = fs::read(dir.path().join(GRANT_SLOTS[0])).expect("read");
        let slot1 = fs::read(dir.path().join(GRANT_SLOTS[1])).expect("read");
        assert!(slot0.starts_with(b"knock-spa-grants v2 2 "));
        assert!(slot1.starts_with(b"knock-spa-grants v2 3 "));
        assert!(
            slot1.len() > GRANTS_PAD,
            "never shrunk: still the size of save 1"
        );

        // A fresh StateDir (a restart) reads the newest.
        let again = StateDir::open(dir.path()).expect("open");
        let loaded = again.load_grants_slots().expect("load");
        assert_eq!((loaded.seq, &loaded.records), (3, &two));
        assert!(loaded.warning.is_none());
        again.write_grants_slot(4, &[]).expect("save 4"); // grants.0
        assert!(fs::read(dir.path().join(GRANT_SLOTS[0]))
            .expect("read")
            .starts_with(b"knock-spa-grants v2 4 "));
        assert_eq!(again.load_grants_slots().expect("load").records, vec![]);

        // Both slots damaged (in a copy of the directory): one error naming both.
        let both = tempfile::tempdir().expect("tempdir");
        for n in GRANT_SLOTS {
            let mut b = fs::read(dir.path().join(n)).expect("read");
            b[40] ^= 0x01;
            fs::write(both.path().join(n), b).expect("write");
        }
        let err = StateDir::open(both.path())
            .expect("open")
            .load_grants_slots()
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
        let restarted = StateDir::open(dir.path()).expect("open");
        let loaded = restarted.load_grants_slots().expect("load");
        assert_eq!((loaded.seq, loaded.records), (4, vec![]));
        let warning = loaded.warning.expect("warned");
        assert!(warning.contains("grants.1: corrupt"), "{warning}");
        restarted.write_grants_slot(5, &[record()]).expect("save 5");
        assert!(fs::read(dir.path().join(GRANT_SLOTS[1]))
            .expect("read")
            .starts_with(b"knock-spa-grants v2 5 "));
        assert_eq!(
            restarted.load_grants_slots().expect("load").records,
            vec![record()]
        );
    }

    /// A state directory from before the slots: its grants.json is read, and removed once
    /// the first slot is written.
    #[test]
    fn grants_json_of_earlier_versions_is_read_then_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateDir::open(dir.path()).expect("open");
        let body = serde_json::to_vec_pretty(&[record()]).expect("json");
        let mut v1 = format!("{GRANTS_MAGIC_V1} {}\n", hex(&Sha256::digest(&body))).into_bytes();
        v1.extend_from_slice(&body);
        fs::write(dir.path().join(GRANTS), &v1).expect("write");
        assert!(store.has_grants());
        assert_eq!(
            store.load_grants_slots().expect("load").records,
            vec![record()]
        );
        store.write_grants_slot(1, &[]).expect("save");
        assert!(!dir.path().join(GRANTS).exists(), "superseded");
        assert_eq!(store.load_grants_slots().expect("load").records, vec![]);
        // Damaged, it is an error as before.
        let other = tempfile::tempdir().expect("tempdir");
        let store = StateDir::open(other.path()).expect("open");
        v1[30] ^= 0x01;
        fs::write(other.path().join(GRANTS), &v1).expect("write");
        assert!(matches!(
            store.load_grants_slots(),
            Err(StateError::Corrupt { .. })
        ));
    }
}
