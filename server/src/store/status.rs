//! The status file: the open grants and the counters of the running daemon, written by the
//! daemon and read by `knock-spad status` (which renders it: `cmd::status`) and `keys`.
//!
//! The daemon publishes a snapshot, `status.json`, in its state directory (mode 0600, in the
//! root-only directory), written atomically (temporary file, rename; not fsynced, being rebuilt at every start). A writer thread rewrites
//! it at once when the open grants or the loaded configuration change, at most once per
//! [`MIN_INTERVAL`] when only the counters changed, and at least every [`HEARTBEAT`] so that a
//! reader can tell a live daemon from a dead one. A clean exit removes it.
//!
//! A reader calls a snapshot *running* when the process it names exists (`kill(pid, 0)`), is
//! the same process (its start time in `/proc/PID/stat` matches, so a reused pid is not taken
//! for the daemon), and the snapshot is younger than [`STALE_AFTER`].
//!
//! The snapshot holds names, addresses, ports and counters only; never key material nor the
//! rendered commands.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use knock_shared::verify::RejectKind;
use serde::{Deserialize, Serialize};

use knock_keys::atomic;

use super::grants::GrantRecord;
use crate::log::error;

/// The snapshot's file name in the state directory.
pub const FILE: &str = "status.json";
/// Version of the snapshot's layout.
pub const FORMAT: u32 = 1;
/// Least time between two writes caused only by counter changes.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// The snapshot is rewritten at least this often, changed or not.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// A snapshot older than this many seconds is stale: its writer is gone or hung.
pub const STALE_AFTER: u64 = 60;
/// How often the writer looks at the counters.
const TICK: Duration = Duration::from_millis(250);

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[derive(Debug, Default)]
pub struct Stats {
    /// Accepted SPA packets.
    pub accepted: AtomicU64,
    /// Completed knock sequences.
    pub knocks: AtomicU64,
    /// Rejected SPA packets by [`RejectKind::index`].
    pub rejected: [AtomicU64; RejectKind::ALL.len()],
    /// Packets seen by the loop.
    pub packets: AtomicU64,
    /// Stage-1 knock attempts evicted to make room (a flood in progress).
    pub evicted: AtomicU64,
    /// Authentic SPA packets refused because they were stamped before a start that found no
    /// trustworthy replay cache.
    pub before_start: AtomicU64,
    /// Authentic SPA packets refused because their replay record could not be saved.
    pub unsaved: AtomicU64,
    /// Actions the packet thread dropped because the grant keeper's queue was full, and opens
    /// the keeper refused because its open lane was full.
    pub dropped: AtomicU64,
    /// Start commands, and nftables element puts, that failed (each retry counts).
    pub start_failed: AtomicU64,
    /// Stop commands, and nftables element deletes, that failed (each retry counts).
    pub stop_failed: AtomicU64,
    /// Commands killed at their time limit (start or stop).
    pub timed_out: AtomicU64,
    /// SIGHUP reloads refused: an invalid configuration, or a capture filter that would not
    /// apply.
    pub reloads_refused: AtomicU64,
    /// Unix seconds of the last refused reload; 0 for none.
    pub last_refused_reload: AtomicU64,
}

impl Stats {
    /// A reload was refused (the old configuration stays in force): counted, with its time.
    pub fn reload_refused(&self) {
        self.reloads_refused.fetch_add(1, Ordering::Relaxed);
        self.last_refused_reload
            .store(unix_now(), Ordering::Relaxed);
    }
}

/// The reasons for refusing a packet that the daemon itself gives, after the verifier
/// accepted it: (JSON key, label). `status` lists them with the verifier's reject reasons.
pub const DAEMON_REFUSALS: [(&str, &str); 2] = [
    ("stamped_before_start", "stamped before start"),
    ("replay_not_saved", "replay not saved"),
];

/// Every refusal reason, (JSON key, label): the verifier's, then the daemon's.
pub fn refusal_reasons() -> Vec<(String, &'static str)> {
    RejectKind::ALL
        .iter()
        .map(|k| (reason_key(*k), k.as_str()))
        .chain(DAEMON_REFUSALS.iter().map(|(k, l)| ((*k).to_owned(), *l)))
        .collect()
}

/// One open grant as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantView {
    /// Door name.
    pub door: String,
    /// Key name (SPA); empty for knock sequences.
    pub key: String,
    /// The admitted address (with `prefix`: the network's first address).
    pub addr: IpAddr,
    /// With a door's `Admit_Prefix`: the admitted network's prefix length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<u8>,
    /// `22/tcp` (SPA); empty for knock sequences.
    pub port: String,
    /// Unix seconds when it was opened.
    pub opened: u64,
    /// Unix seconds when it closes.
    pub expires: u64,
    /// An nftables grant: `status` asks the kernel for its element's time left.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nft: bool,
}

impl From<&GrantRecord> for GrantView {
    fn from(r: &GrantRecord) -> Self {
        Self {
            door: r.door.clone(),
            key: r.key.clone(),
            addr: r.addr,
            prefix: r.prefix,
            port: r.port.clone(),
            opened: r.opened,
            expires: r.expires,
            nft: r.nft,
        }
    }
}

/// The packet counters since the daemon started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Packets the loop saw (captured or received).
    pub packets: u64,
    /// Accepted SPA packets.
    pub accepted: u64,
    /// Completed knock sequences.
    pub knocks: u64,
    /// Knock attempts evicted to make room (a flood).
    pub evicted: u64,
    /// Opens and closes dropped because the grant keeper's queue was full.
    #[serde(default)]
    pub dropped: u64,
    /// Start commands (and nftables element puts) that failed, each retry counted.
    #[serde(default)]
    pub start_failed: u64,
    /// Stop commands (and nftables element deletes) that failed, each retry counted.
    #[serde(default)]
    pub stop_failed: u64,
    /// Commands killed at their time limit.
    #[serde(default)]
    pub timed_out: u64,
    /// SIGHUP reloads refused (the old configuration stayed in force).
    #[serde(default)]
    pub reloads_refused: u64,
    /// Unix seconds of the last refused reload, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refused_reload: Option<u64>,
    /// Rejected SPA packets, by reason (every reason, zeros included; see [`reason_key`] and
    /// [`DAEMON_REFUSALS`]).
    pub rejected: BTreeMap<String, u64>,
}

impl Counters {
    /// Reads the daemon's atomics.
    pub fn read(stats: &Stats) -> Self {
        Self {
            packets: stats.packets.load(Ordering::Relaxed),
            accepted: stats.accepted.load(Ordering::Relaxed),
            knocks: stats.knocks.load(Ordering::Relaxed),
            evicted: stats.evicted.load(Ordering::Relaxed),
            dropped: stats.dropped.load(Ordering::Relaxed),
            start_failed: stats.start_failed.load(Ordering::Relaxed),
            stop_failed: stats.stop_failed.load(Ordering::Relaxed),
            timed_out: stats.timed_out.load(Ordering::Relaxed),
            reloads_refused: stats.reloads_refused.load(Ordering::Relaxed),
            last_refused_reload: Some(stats.last_refused_reload.load(Ordering::Relaxed))
                .filter(|t| *t != 0),
            rejected: RejectKind::ALL
                .iter()
                .map(|k| {
                    (
                        reason_key(*k),
                        stats.rejected[k.index()].load(Ordering::Relaxed),
                    )
                })
                .chain([
                    (
                        DAEMON_REFUSALS[0].0.to_owned(),
                        stats.before_start.load(Ordering::Relaxed),
                    ),
                    (
                        DAEMON_REFUSALS[1].0.to_owned(),
                        stats.unsaved.load(Ordering::Relaxed),
                    ),
                ])
                .collect(),
        }
    }

    /// All rejects.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

/// The JSON key of a reject reason: its label with `_` for blanks (`unknown_key`).
pub fn reason_key(kind: RejectKind) -> String {
    kind.as_str().replace(' ', "_")
}

/// What the daemon writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// [`FORMAT`].
    pub format: u32,
    /// The daemon's pid.
    pub pid: u32,
    /// The process start time (field 22 of `/proc/PID/stat`, clock ticks since boot), to tell
    /// the daemon from a later process that reuses its pid; 0 when unknown.
    pub proc_start: u64,
    /// Daemon version.
    pub version: String,
    /// The configuration file it runs (absolute when it could be resolved).
    pub config: String,
    /// How it receives packets, e.g. `udp port 62201` or `pcap on eth0`.
    pub listening: String,
    /// Unix seconds when it started.
    pub started: u64,
    /// Unix seconds when this snapshot was written.
    pub written: u64,
    /// Doors in the configuration in force.
    pub doors: usize,
    /// SPA keys in the configuration in force.
    pub keys: usize,
    /// Configurations loaded by SIGHUP since the start.
    pub reloads: u64,
    /// Unix seconds of the last SIGHUP reload, if any.
    pub last_reload: Option<u64>,
    /// Counters.
    pub counters: Counters,
    /// Open grants.
    pub grants: Vec<GrantView>,
}

/// What the daemon knows about itself that does not change while it runs.
#[derive(Clone, Debug)]
pub struct Identity {
    /// Configuration file.
    pub config: String,
    /// How it receives packets.
    pub listening: String,
}

#[derive(Debug, Default)]
struct BoardState {
    grants: Vec<GrantView>,
    doors: usize,
    keys: usize,
    reloads: u64,
    last_reload: Option<u64>,
    /// Something `status` must see at once changed.
    urgent: bool,
    stop: bool,
}

/// What the grant manager and the signal loop publish for the snapshot writer.
#[derive(Debug, Default)]
pub struct StatusBoard {
    state: Mutex<BoardState>,
    wake: Condvar,
}

impl StatusBoard {
    fn lock(&self) -> MutexGuard<'_, BoardState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The open grants changed (or may have): the snapshot is rewritten at once if they did.
    pub fn set_grants(&self, grants: &[GrantRecord]) {
        let view: Vec<GrantView> = grants.iter().map(GrantView::from).collect();
        let mut s = self.lock();
        if s.grants != view {
            s.grants = view;
            s.urgent = true;
            self.wake.notify_all();
        }
    }

    /// A configuration was loaded: at start (`reload` false) or by SIGHUP.
    pub fn set_config(&self, doors: usize, keys: usize, reload: bool) {
        let mut s = self.lock();
        s.doors = doors;
        s.keys = keys;
        if reload {
            s.reloads += 1;
            s.last_reload = Some(unix_now());
        }
        s.urgent = true;
        self.wake.notify_all();
    }

    /// Asks the writer to remove the snapshot and end.
    pub fn stop(&self) {
        self.lock().stop = true;
        self.wake.notify_all();
    }
}

/// The start time of process `pid` (field 22 of `/proc/PID/stat`), if readable.
pub fn proc_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold blanks: count from after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` runs a program called `knock-spad` (its `comm`).
pub fn is_knock_spad(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "knock-spad")
}

/// Whether a process `pid` exists (`kill(pid, 0)`; EPERM means it exists under another user).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if p <= 0 {
        return false;
    }
    // SAFETY: signal 0 performs only the existence and permission checks; nothing is sent.
    let r = unsafe { libc::kill(p, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The snapshot writer: a thread that ends (and removes the snapshot) after [`StatusBoard::stop`].
#[derive(Debug)]
pub struct Writer {
    handle: std::thread::JoinHandle<()>,
    board: Arc<StatusBoard>,
}

impl Writer {
    /// Starts the writer for the state directory `dir`.
    pub fn spawn(
        dir: &Path,
        board: Arc<StatusBoard>,
        stats: Arc<Stats>,
        identity: Identity,
    ) -> io::Result<Self> {
        let dir = dir.to_owned();
        let b = board.clone();
        let handle = std::thread::Builder::new()
            .name("status".into())
            .spawn(move || write_loop(&dir, &b, &stats, &identity))?;
        Ok(Self { handle, board })
    }

    /// Stops the writer, which removes the snapshot.
    pub fn stop(self) {
        self.board.stop();
        let _ = self.handle.join();
    }
}

fn write_loop(dir: &Path, board: &StatusBoard, stats: &Stats, id: &Identity) {
    let pid = std::process::id();
    let proc_start = proc_start_time(pid).unwrap_or(0);
    let started = unix_now();
    let mut last_write: Option<(Instant, Counters)> = None;
    let mut failing = false;
    loop {
        let (urgent, mut snap) = {
            let mut s = board.lock();
            if !s.urgent && !s.stop {
                s = board
                    .wake
                    .wait_timeout(s, TICK)
                    .map_or_else(|e| e.into_inner().0, |(g, _)| g);
            }
            if s.stop {
                break;
            }
            let urgent = std::mem::take(&mut s.urgent);
            let snap = Snapshot {
                format: FORMAT,
                pid,
                proc_start,
                version: env!("CARGO_PKG_VERSION").to_owned(),
                config: id.config.clone(),
                listening: id.listening.clone(),
                started,
                written: 0,
                doors: s.doors,
                keys: s.keys,
                reloads: s.reloads,
                last_reload: s.last_reload,
                counters: Counters::default(),
                grants: s.grants.clone(),
            };
            (urgent, snap)
        };
        snap.counters = Counters::read(stats);
        let due = match &last_write {
            None => true,
            Some((at, counters)) => {
                let since = at.elapsed();
                urgent
                    || since >= HEARTBEAT
                    || (since >= MIN_INTERVAL && *counters != snap.counters)
            }
        };
        if !due {
            continue;
        }
        snap.written = unix_now();
        let result = serde_json::to_vec_pretty(&snap)
            .map_err(io::Error::other)
            .and_then(|mut bytes| {
                bytes.push(b'\n');
                atomic::write(
                    &dir.join(FILE),
                    &bytes,
                    // Rebuilt at every start and every few seconds: not worth an fsync.
                    &atomic::Options {
                        durable: false,
                        ..atomic::Options::PRIVATE
                    },
                )
            });
        match result {
            Ok(()) => {
                failing = false;
                last_write = Some((Instant::now(), snap.counters));
            }
            Err(e) => {
                if !failing {
                    error!(
                        "status: cannot write {}: {e}; `knock-spad status` will report the \
                         daemon as not running",
                        dir.join(FILE).display()
                    );
                }
                failing = true;
                // Retry at the next heartbeat, not at every tick.
                last_write = Some((Instant::now(), snap.counters));
            }
        }
    }
    let _ = fs::remove_file(dir.join(FILE));
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

/// Whether the daemon behind a snapshot runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Its process exists and the snapshot is fresh.
    Running,
    /// Its process exists but the snapshot is older than [`STALE_AFTER`] seconds.
    Stale {
        /// Seconds since it was written.
        age: u64,
    },
    /// No such process (it crashed or was killed; a clean exit removes the snapshot).
    Gone,
}

impl Liveness {
    /// `running`, `stale` or `dead`.
    pub fn as_str(self) -> &'static str {
        match self {
            Liveness::Running => "running",
            Liveness::Stale { .. } => "stale",
            Liveness::Gone => "dead",
        }
    }
}

/// Judges a snapshot at time `now`.
pub fn liveness(snap: &Snapshot, now: u64) -> Liveness {
    let same_process = pid_alive(snap.pid)
        && match (snap.proc_start, proc_start_time(snap.pid)) {
            (0, _) | (_, None) => true,
            (want, Some(have)) => want == have,
        };
    if !same_process {
        return Liveness::Gone;
    }
    let age = now.saturating_sub(snap.written);
    if age > STALE_AFTER {
        Liveness::Stale { age }
    } else {
        Liveness::Running
    }
}

/// Why no snapshot could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// There is none: the daemon is not running (or runs with another state directory).
    #[error("{0}: no status file")]
    Missing(PathBuf),
    /// It cannot be read (permissions: the state directory is root's).
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// It is not a snapshot this version understands.
    #[error("{path}: not a knock-spad status file: {why}")]
    Bad {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// Reads the snapshot in state directory `dir`.
pub fn read(dir: &Path) -> Result<Snapshot, ReadError> {
    let path = dir.join(FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ReadError::Missing(path)),
        Err(source) => return Err(ReadError::Io { path, source }),
    };
    let snap: Snapshot = serde_json::from_slice(&bytes).map_err(|e| ReadError::Bad {
        path: path.clone(),
        why: e.to_string(),
    })?;
    if snap.format != FORMAT {
        return Err(ReadError::Bad {
            path,
            why: format!("format {} (this knock-spad reads {FORMAT})", snap.format),
        });
    }
    Ok(snap)
}

/// The running daemon of state directory `dir`, if there is one.
pub fn running_daemon(dir: &Path) -> Option<Snapshot> {
    let snap = read(dir).ok()?;
    (liveness(&snap, unix_now()) == Liveness::Running).then_some(snap)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn snap(pid: u32, written: u64) -> Snapshot {
        Snapshot {
            format: FORMAT,
            pid,
            proc_start: proc_start_time(pid).unwrap_or(0),
            version: "0.1.0".into(),
            config: "/etc/knockd.conf".into(),
            listening: "udp port 62201".into(),
            started: written - 100,
            written,
            doors: 1,
            keys: 2,
            reloads: 0,
            last_reload: None,
            counters: Counters::default(),
            grants: vec![GrantView {
                door: "ssh".into(),
                key: "alice".into(),
                addr: "192.0.2.7".parse().expect("ip"),
                prefix: None,
                port: "22/tcp".into(),
                opened: written - 5,
                expires: written + 25,
                nft: false,
            }],
        }
    }

    #[test]
    fn liveness_checks_pid_start_time_and_age() {
        let now = unix_now();
        let me = std::process::id();
        assert_eq!(liveness(&snap(me, now), now), Liveness::Running);
        assert_eq!(
            liveness(&snap(me, now - 100), now),
            Liveness::Stale { age: 100 }
        );
        // Our pid, but recorded with another start time: a reused pid, not the daemon.
        let mut reused = snap(me, now);
        reused.proc_start += 1;
        assert_eq!(liveness(&reused, now), Liveness::Gone);
        // A pid that cannot exist, and pid 0 (which kill() would take for the group).
        assert_eq!(liveness(&snap(i32::MAX as u32, now), now), Liveness::Gone);
        assert!(!pid_alive(0));
        assert!(!pid_alive(u32::MAX));
    }

    #[test]
    fn a_status_file_without_the_newer_counters_still_reads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut v = serde_json::to_value(snap(1, 1_000)).expect("json");
        let counters = v["counters"].as_object_mut().expect("counters");
        for k in [
            "dropped",
            "start_failed",
            "stop_failed",
            "timed_out",
            "reloads_refused",
            "last_refused_reload",
        ] {
            counters.remove(k);
        }
        fs::write(dir.path().join(FILE), v.to_string()).expect("write");
        let read = read(dir.path()).expect("an older daemon's file");
        assert_eq!(read.counters, Counters::default());
    }

    #[test]
    fn failures_and_refused_reloads_are_counted() {
        let stats = Stats::default();
        assert_eq!(Counters::read(&stats).last_refused_reload, None);
        stats.reload_refused();
        stats.reload_refused();
        stats.start_failed.fetch_add(3, Ordering::Relaxed);
        let c = Counters::read(&stats);
        assert_eq!((c.reloads_refused, c.start_failed), (2, 3));
        assert!(c.last_refused_reload.is_some_and(|t| t + 5 >= unix_now()));
        let json = serde_json::to_value(&c).expect("json");
        assert_eq!(json["reloads_refused"], 2);
        assert_eq!(json["start_failed"], 3);
        assert_eq!(json["stop_failed"], 0);
    }

    #[test]
    fn board_flags_only_real_grant_changes() {
        let b = StatusBoard::default();
        b.set_grants(&[]);
        assert!(!b.lock().urgent, "no change, nothing to write");
        let rec = GrantRecord {
            door: "d".into(),
            key: "k".into(),
            addr: "192.0.2.1".parse().expect("ip"),
            prefix: None,
            port: "22/tcp".into(),
            opened: 1,
            expires: 2,
            stop: vec!["/bin/true".into()],
            nft: false,
            id: 1,
        };
        b.set_grants(std::slice::from_ref(&rec));
        assert!(std::mem::take(&mut b.lock().urgent));
        b.set_grants(std::slice::from_ref(&rec));
        assert!(!b.lock().urgent);
        b.set_config(3, 4, true);
        let s = b.lock();
        assert_eq!((s.doors, s.keys, s.reloads), (3, 4, 1));
    }

    #[test]
    fn writer_writes_snapshot_mode_0600_and_removes_it_at_stop() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let board = Arc::new(StatusBoard::default());
        let stats = Arc::new(Stats::default());
        board.set_config(1, 1, false);
        let w = Writer::spawn(
            dir.path(),
            board.clone(),
            stats.clone(),
            Identity {
                config: "/x.conf".into(),
                listening: "udp port 1".into(),
            },
        )
        .expect("spawn");
        let path = dir.path().join(FILE);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !path.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let snap = read(dir.path()).expect("snapshot");
        assert_eq!(snap.pid, std::process::id());
        assert_eq!(snap.doors, 1);
        assert_eq!(
            fs::metadata(&path).expect("meta").permissions().mode() & 0o777,
            0o600
        );
        // A counter change shows up within about MIN_INTERVAL.
        stats.rejected[RejectKind::Replay.index()].fetch_add(2, Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let s = read(dir.path()).expect("snapshot");
            if s.counters.rejected.get("replay") == Some(&2) {
                break;
            }
            assert!(Instant::now() < deadline, "counter not published");
            std::thread::sleep(Duration::from_millis(50));
        }
        w.stop();
        assert!(!path.exists(), "removed at a clean stop");
        assert!(matches!(read(dir.path()), Err(ReadError::Missing(_))));
    }
}
