//! The state directory (`StateDir`, default `/var/lib/knock-spa`): everything the daemon keeps
//! on disk. [`dir`] is the handle and its errors, [`grants`] the open grants (double-buffered
//! slots), [`replay`] the replay cache (snapshot and journal) and the "refuse before" instant,
//! [`status`] the status file that `knock-spad status` reads.
//!
//! Invariants: each file has one writer (the grant keeper for the grants, the packet thread
//! for the replay state, the status thread for the status file); whole files are replaced
//! through `knock_keys::atomic`; anything damaged is moved aside and treated fail-closed.
//! Nothing here runs a command or knows about the firewall.

pub mod dir;
pub mod grants;
pub mod replay;
pub mod status;

pub use dir::{LockError, StateDir};
pub use grants::GrantRecord;
pub use replay::{LoadedReplay, ReplayJournal, ReplayState, SnapshotWriter, JOURNAL_COMPACT_AFTER};
