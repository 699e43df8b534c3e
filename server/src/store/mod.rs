//! The state directory (`StateDir`, default `/var/lib/knock-spa`): everything the daemon keeps
//! on disk. [`dir`] is the handle and its errors; [`grants`] the snapshots of the open grants
//! (double-buffered slots) and [`grant_journal`] the changes since (one line each, the one
//! writer of the grants state); [`replay`] the replay cache (snapshot and journal) and the
//! "refuse before" instant; [`status`] the status file that `knock-spad status` reads.
//!
//! Invariants: each file has one writer (the grant keeper for the grants, the packet thread
//! for the replay state, the status thread for the status file); whole files are replaced
//! through `knock_keys::atomic`; anything damaged is moved aside and treated fail-closed.
//! Nothing here runs a command or knows about the firewall.

pub mod dir;
pub mod grant_journal;
pub mod grants;
pub mod replay;
pub mod status;

pub use dir::{LockError, StateDir};
pub use grant_journal::{GrantChange, GrantLog};
pub use grants::GrantRecord;
pub use replay::{LoadedReplay, ReplayJournal, ReplayState, SnapshotWriter, JOURNAL_COMPACT_AFTER};
