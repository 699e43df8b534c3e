//! The packet loop: one thread that owns the capture (or the UDP socket), the SPA verifier's
//! replay cache and the knock-sequence tracker, and turns packets into [`Action`]s for the
//! grant keeper.
//!
//! Hot-path rules: no allocation and no syscall per rejected packet beyond the capture itself
//! (libpcap reads a ring of packets per wake-up), no logging per packet (rejects are counted
//! and logged at most once per reason per interval, with a periodic summary), and nothing
//! here waits for a firewall command: actions go to another task over a bounded channel. The
//! only file I/O is the replay journal's append (one record and one `fdatasync` per accepted
//! packet, before it is acted on) and, every 4096 accepts, the journal's rotation; snapshots
//! are written by the snapshot thread and one-time files by the grant keeper.

use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::host_addrs::HostAddrs;
use knock_shared::frame::{self, Packet};
use knock_shared::replay::ReplayCache;
use knock_shared::sequence::{Event, Hit, SeqDoorSpec, SequenceTracker, TcpFlags, TrackerLimits};
use knock_shared::types::{PortSpec, Proto};
use knock_shared::verify::{Reject, RejectKind};
use knock_shared::wire::Action as SpaAction;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::Sender;

use crate::load::KnockDoor;
use crate::load::LoadedConfig;
use crate::store::status::Stats;
use crate::store::{ReplayJournal, ReplayState, SnapshotWriter, StateDir, JOURNAL_COMPACT_AFTER};

use super::actions::{Action, NextOneTime, OneTimeUse};
use super::capture::{self, Source, POLL_MS};
use super::supervise::{fault, Heartbeat};
use crate::log::{error, info, verbose};

/// How often suppressed rejects are summarised, and the period of the per-reason budget of
/// detailed reject lines.
pub const REJECT_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Detailed reject lines per reason per [`REJECT_LOG_INTERVAL`]; the rest are counted and
/// summarised. A handful keeps single mistakes visible (a wrong key, a skewed clock) while a
/// flood costs at most this many lines per reason per interval.
pub const REJECT_LOG_BURST: u32 = 5;
/// Bound of the knock tracker (attempts across all doors and sources).
pub const TRACKER_CAP: usize = 65_536;

/// Least time between two wake-ups of the packet loop while packets keep arriving (see
/// `PacketLoop::run`): caps wake-ups at 1000/s under a flood, where a wake-up per packet cost more
/// than the packets themselves (docs/BENCHMARKS.md).
const MIN_WAKE_INTERVAL: Duration = Duration::from_millis(1);

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Rate limiter of reject log lines.
#[derive(Debug)]
struct RejectLog {
    /// Per reason: start of the current budget period and lines logged in it.
    detail: [(Option<Instant>, u32); RejectKind::ALL.len()],
    suppressed: [u64; RejectKind::ALL.len()],
    last_summary: Instant,
}

impl RejectLog {
    fn new() -> Self {
        Self {
            detail: [(None, 0); RejectKind::ALL.len()],
            suppressed: [0; RejectKind::ALL.len()],
            last_summary: Instant::now(),
        }
    }

    /// Logs `reject` in detail if its reason has budget left, else counts it. Returns whether
    /// it was logged. A packet bound to another server identity is logged with the identities
    /// this server answers to (`servers`), so that the operator sees what the client should
    /// have bound it to (`--server-id`, the stanza's `server_id`).
    fn record(&mut self, now: Instant, src: IpAddr, reject: &Reject, servers: &[String]) -> bool {
        let i = reject.kind().index();
        let (start, count) = &mut self.detail[i];
        if start.is_none_or(|t| now.duration_since(t) >= REJECT_LOG_INTERVAL) {
            *start = Some(now);
            *count = 0;
        }
        if *count < REJECT_LOG_BURST {
            *count += 1;
            if matches!(reject, Reject::WrongServer) {
                info!(
                    "spa: rejected packet from {src}: {reject} (this server answers to {})",
                    servers.join(", ")
                );
            } else {
                info!("spa: rejected packet from {src}: {reject}");
            }
            true
        } else {
            self.suppressed[i] += 1;
            false
        }
    }

    /// Logs the summary of suppressed rejects once per interval; returns whether an interval
    /// ended (the caller hooks other periodic reports on it).
    fn tick(&mut self, now: Instant) -> bool {
        if now.duration_since(self.last_summary) < REJECT_LOG_INTERVAL {
            return false;
        }
        self.last_summary = now;
        let total: u64 = self.suppressed.iter().sum();
        if total == 0 {
            return true;
        }
        let parts: Vec<String> = RejectKind::ALL
            .iter()
            .filter(|k| self.suppressed[k.index()] > 0)
            .map(|k| format!("{} {}", k.as_str(), self.suppressed[k.index()]))
            .collect();
        info!("spa: dropped {total} packets: {}", parts.join(", "));
        self.suppressed = [0; RejectKind::ALL.len()];
        true
    }
}

/// The packet loop's state.
pub struct PacketLoop {
    rt: Arc<LoadedConfig>,
    /// The knock doors in force (one-time doors move on after each use).
    knock_doors: Vec<KnockDoor>,
    cache: ReplayCache,
    journal: ReplayJournal,
    tracker: SequenceTracker,
    events: Vec<Event>,
    store: StateDir,
    /// Writes replay snapshots off this thread.
    snapshots: SnapshotWriter,
    tx: Sender<Action>,
    stats: Arc<Stats>,
    rejects: RejectLog,
    /// Actions dropped since the last report, and when that was (a full queue is reported at
    /// most once per [`REJECT_LOG_INTERVAL`]).
    dropped: (u64, Option<Instant>),
    /// Packets stamped before this are refused: set when the replay cache was lost, so a
    /// packet accepted before the loss cannot be replayed (fail closed).
    not_before: u64,
    started: Instant,
    only_v4: bool,
    /// This host's addresses: a knock counts only when addressed to one (or to its door's
    /// `Target`).
    host: HostAddrs,
    /// A one-time door moved on to a sequence on other ports: the capture filter must be
    /// rebuilt from `knock_doors` (knockd regenerates its filter likewise).
    filter_stale: bool,
}

impl std::fmt::Debug for PacketLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketLoop")
            .field("cache", &self.cache.len())
            .field("tracker", &self.tracker.len())
            .finish()
    }
}

fn tracker_for(rt: &LoadedConfig) -> SequenceTracker {
    let specs = rt
        .knock_doors
        .iter()
        .map(|s| {
            let door = &rt.config.doors[s.door];
            let seq = door.sequence();
            SeqDoorSpec {
                name: door.name.clone(),
                sequence: s.sequence.clone(),
                seq_timeout_ms: seq.map_or(25, |q| q.seq_timeout).saturating_mul(1000),
                tcp_flags: seq.map_or(TcpFlags::ANY, |q| q.tcp_flags),
                target: seq.and_then(|q| q.target),
            }
        })
        .collect();
    SequenceTracker::new(specs, TrackerLimits::new(TRACKER_CAP))
}

impl PacketLoop {
    /// Builds the loop state.
    pub fn new(
        rt: Arc<LoadedConfig>,
        replay: ReplayState,
        store: StateDir,
        snapshots: SnapshotWriter,
        tx: Sender<Action>,
        stats: Arc<Stats>,
        only_v4: bool,
    ) -> Self {
        let ReplayState {
            cache,
            not_before,
            journal,
        } = replay;
        Self {
            journal,
            tracker: tracker_for(&rt),
            knock_doors: rt.knock_doors.clone(),
            rt,
            cache,
            events: Vec::with_capacity(8),
            store,
            snapshots,
            tx,
            stats,
            rejects: RejectLog::new(),
            dropped: (0, None),
            not_before,
            started: Instant::now(),
            host: HostAddrs::new(Instant::now()),
            only_v4,
            filter_stale: false,
        }
    }

    /// Runs until `stop` says so. Reloads arrive on `reload`.
    pub fn run(
        &mut self,
        mut source: Source,
        reload: Receiver<Arc<LoadedConfig>>,
        one_time: Receiver<NextOneTime>,
        stop: &std::sync::atomic::AtomicBool,
        heart: &Arc<Heartbeat>,
    ) {
        let _alive = heart.alive();
        let mut buf = [0u8; 2048];
        let mut kernel_dropped = 0u32;
        let mut last_wake = Instant::now() - MIN_WAKE_INTERVAL;
        while !stop.load(Ordering::Relaxed) {
            heart.beat();
            // Under sustained traffic, let packets gather for a moment instead of waking for
            // each one: at most one wake-up per MIN_WAKE_INTERVAL. After a quiet spell the
            // first packet is read at once, so a lone SPA packet or knock waits for nothing.
            let since = last_wake.elapsed();
            if since < MIN_WAKE_INTERVAL {
                std::thread::sleep(MIN_WAKE_INTERVAL - since);
            }
            match &mut source {
                Source::Pcap { cap, linktype } => {
                    let lt = *linktype;
                    capture::wait_readable(cap.as_raw_fd(), POLL_MS);
                    last_wake = Instant::now();
                    // Drain what libpcap has buffered before looking at timers again.
                    for _ in 0..4096 {
                        match cap.next_packet() {
                            Ok(p) => {
                                self.stats.packets.fetch_add(1, Ordering::Relaxed);
                                if let Some(pkt) = frame::parse_frame(lt, p.data) {
                                    self.handle_packet(&pkt);
                                }
                            }
                            Err(pcap::Error::TimeoutExpired) => break,
                            Err(e) => {
                                error!("capture failed: {e}");
                                std::thread::sleep(Duration::from_millis(100));
                                break;
                            }
                        }
                    }
                }
                Source::Udp(sock) => {
                    for i in 0..4096 {
                        match sock.recv_from(&mut buf) {
                            Ok((n, from)) => {
                                if i == 0 {
                                    last_wake = Instant::now();
                                }
                                self.stats.packets.fetch_add(1, Ordering::Relaxed);
                                let payload = &buf[..n];
                                self.handle_spa(from.ip(), payload);
                            }
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                ) =>
                            {
                                break
                            }
                            Err(e) => {
                                error!("udp receive failed: {e}");
                                break;
                            }
                        }
                    }
                }
            }
            if std::mem::take(&mut self.filter_stale) {
                if let Source::Pcap { cap, .. } = &mut source {
                    let filter = capture::bpf_filter_for(&self.rt, &self.knock_doors, self.only_v4);
                    if let Err(e) = cap.filter(&filter, true) {
                        error!("one-time sequences: cannot apply capture filter {filter:?}: {e}");
                    }
                }
            }
            let now = Instant::now();
            if self.rejects.tick(now) {
                if let Source::Pcap { cap, .. } = &mut source {
                    capture::report_capture_drops(cap, &mut kernel_dropped);
                }
            }
            self.expire_knocks(now);
            while let Ok(n) = one_time.try_recv() {
                self.handle_next_one_time(n);
            }
            while let Ok(rt) = reload.try_recv() {
                if let Source::Pcap { cap, .. } = &mut source {
                    let filter = capture::bpf_filter(&rt, self.only_v4);
                    if let Err(e) = cap.filter(&filter, true) {
                        error!("reload: cannot apply capture filter {filter:?}: {e}; keeping the old configuration");
                        self.stats.reload_refused();
                        continue;
                    }
                }
                self.reload(rt.clone());
                // After every action made with the old configuration: the keeper switches
                // exactly between them, so a door index always means the door it meant.
                // Never dropped: it waits for room (the keeper drains the queue).
                let _ = self.tx.blocking_send(Action::Reload(rt));
            }
        }
        // One writer of the snapshot at a time: the one under way first, then the last one.
        self.snapshots.finish();
        if let Err(e) = self.store.save_replay(&self.cache, &mut self.journal) {
            error!("cannot save the replay cache: {e}");
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn expire_knocks(&mut self, _now: Instant) {
        let now_ms = self.now_ms();
        let mut events = std::mem::take(&mut self.events);
        self.tracker.expire(now_ms, &mut events);
        self.handle_events(&mut events);
        self.events = events;
    }

    fn reload(&mut self, rt: Arc<LoadedConfig>) {
        self.tracker = tracker_for(&rt);
        self.knock_doors = rt.knock_doors.clone();
        info!(
            "SIGHUP: configuration reloaded ({} door(s), {} SPA key(s))",
            rt.config.doors.len(),
            rt.verifier.len()
        );
        self.rt = rt;
    }

    /// Gives an action to the grant keeper, or drops it when the keeper's queue is full.
    /// Returns whether it was handed over.
    fn hand_over(&mut self, action: Action) -> bool {
        match self.tx.try_send(action) {
            Ok(()) => true,
            Err(TrySendError::Closed(_)) => false,
            Err(TrySendError::Full(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                self.dropped.0 += 1;
                let now = Instant::now();
                if self
                    .dropped
                    .1
                    .is_none_or(|t| now.duration_since(t) >= REJECT_LOG_INTERVAL)
                {
                    error!(
                        "the grant keeper is behind: dropped {} action(s) since the last report \
                         ({} wait already; a flood of completed knocks?)",
                        self.dropped.0,
                        super::actions::QUEUE_LEN
                    );
                    self.dropped = (0, Some(now));
                }
                false
            }
        }
    }

    /// One captured packet.
    pub fn handle_packet(&mut self, pkt: &Packet<'_>) {
        if pkt.proto == Proto::Udp && pkt.dport == self.rt.config.options.spa_port.get() {
            self.handle_spa(pkt.src, pkt.payload);
            return;
        }
        // No knock sequence admits "any", multicast, broadcast or link-local (a spoofed source
        // like that could only fill the tracker); the SPA verifier refuses them the same way.
        // Nor is a packet for a broadcast or multicast address a knock.
        use knock_shared::types::admissible;
        if self.knock_doors.is_empty() || !admissible(pkt.src) || !admissible(pkt.dst) {
            return;
        }
        let to_host = self.host.contains(pkt.dst, Instant::now());
        let hit = Hit::from_packet(pkt, to_host);
        let now_ms = self.now_ms();
        let mut events = std::mem::take(&mut self.events);
        self.tracker.handle_hit(now_ms, hit, &mut events);
        self.handle_events(&mut events);
        self.events = events;
    }

    fn handle_events(&mut self, events: &mut Vec<Event>) {
        for ev in events.drain(..) {
            match ev {
                Event::Stage { door, src, stage } => {
                    verbose!("{src}: {}: Stage {stage}", self.door_name(door));
                }
                Event::Open { door, src } => {
                    let Some(slot) = self.knock_doors.get(door) else {
                        continue;
                    };
                    self.stats.knocks.fetch_add(1, Ordering::Relaxed);
                    info!("{src}: {}: OPEN SESAME", self.door_name(door));
                    // A one-time sequence: the grant keeper marks it used in its file before
                    // the door opens; from now on this thread no longer accepts it, and the
                    // next one comes back from the keeper (`NextOneTime`).
                    let one_time = slot.one_time.as_ref().map(|(path, _)| OneTimeUse {
                        path: path.clone(),
                        used: slot.sequence.clone(),
                    });
                    let is_one_time = one_time.is_some();
                    let action = Action::KnockOpen {
                        door: slot.door,
                        addr: src,
                        one_time,
                    };
                    if self.hand_over(action) && is_one_time {
                        self.set_one_time(door, None);
                    }
                }
                Event::Timeout { door, src, stage } => {
                    verbose!(
                        "{src}: {}: sequence timeout (stage {stage})",
                        self.door_name(door)
                    );
                }
                Event::Evicted { .. } => {
                    self.stats.evicted.fetch_add(1, Ordering::Relaxed);
                }
                Event::Reset { door, src, stage } => {
                    verbose!(
                        "{src}: {}: sequence reset by a wrong port (stage {stage})",
                        self.door_name(door)
                    );
                }
            }
        }
    }

    fn door_name(&self, seq_idx: usize) -> &str {
        self.knock_doors
            .get(seq_idx)
            .and_then(|s| self.rt.config.doors.get(s.door))
            .map_or("?", |d| d.name.as_str())
    }

    /// Puts a one-time door's sequence in force (or none: the door stays shut), and has the
    /// capture filter follow.
    fn set_one_time(&mut self, seq_idx: usize, next: Option<(usize, Vec<PortSpec>)>) {
        let (line, seq) = next.unwrap_or_default();
        if let Err(e) = self.tracker.set_sequence(seq_idx, seq.clone()) {
            error!("{}: {e:?}", self.door_name(seq_idx));
        }
        if let Some(slot) = self.knock_doors.get_mut(seq_idx) {
            slot.sequence = seq;
            if let Some((_, l)) = slot.one_time.as_mut() {
                *l = line;
            }
        }
        self.filter_stale = true;
    }

    /// The grant keeper marked a one-time sequence used: its door's next sequence, if the
    /// door is still the one it was (a reload may have changed the doors meanwhile).
    fn handle_next_one_time(&mut self, n: NextOneTime) {
        let found = self.knock_doors.iter().position(|kd| {
            kd.one_time.as_ref().is_some_and(|(p, _)| *p == n.path)
                && self
                    .rt
                    .config
                    .doors
                    .get(kd.door)
                    .is_some_and(|d| d.name == n.door)
        });
        if let Some(idx) = found {
            self.set_one_time(idx, n.next);
        }
    }

    /// One SPA payload from `src`.
    pub fn handle_spa(&mut self, src: IpAddr, payload: &[u8]) {
        assert!(
            !(fault("packets") && payload == b"knock-spad-fault"),
            "fault injected: KNOCK_SPAD_FAULT=packets"
        );
        let now = unix_now();
        let result = self.rt.verifier.verify(now, src, payload, &mut self.cache);
        let accepted = match result {
            Ok(a) => a,
            Err(reject) => {
                self.stats.rejected[reject.kind().index()].fetch_add(1, Ordering::Relaxed);
                let _ = self
                    .rejects
                    .record(Instant::now(), src, &reject, &self.rt.server_names);
                return;
            }
        };
        let key = self.rt.verifier.key_name(accepted.key()).to_owned();
        let req = accepted.request();
        if req.timestamp < self.not_before {
            self.stats.before_start.fetch_add(1, Ordering::Relaxed);
            info!(
                "spa: rejected packet from {src} (key {key}): stamped before the daemon started \
                 and the replay cache was lost; send a new one"
            );
            return;
        }
        // Persist before acting: after a crash the packet must still be a replay.
        if let Err(e) = self.journal.append(accepted.digest(), accepted.expiry()) {
            self.stats.unsaved.fetch_add(1, Ordering::Relaxed);
            error!(
                "spa: refusing packet from {src} (key {key}): cannot save the replay cache: {e}"
            );
            return;
        }
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        let ports: Vec<PortSpec> = req.ports.iter().collect();
        let action = match accepted.action() {
            SpaAction::Open => Action::SpaOpen {
                door: accepted.door(),
                key,
                addr: accepted.addr(),
                ports,
                duration: req.duration,
            },
            SpaAction::Close => Action::SpaClose {
                door: accepted.door(),
                key,
                addr: accepted.addr(),
                ports,
            },
        };
        self.hand_over(action);
        // The rule is on its way; now is the time for the occasional compaction: a new
        // journal here, the snapshot written by the snapshot thread from a copy of the cache.
        if self.journal.records() >= JOURNAL_COMPACT_AFTER && !self.snapshots.busy() {
            match self.store.rotate_journal(&mut self.journal) {
                Ok(_) => self.snapshots.request(self.cache.clone()),
                Err(e) => {
                    error!("cannot rotate the replay journal (it keeps growing): {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reject_log_has_a_per_reason_budget_per_interval() {
        let mut log = RejectLog::new();
        let t0 = Instant::now();
        let src = IpAddr::from([192, 0, 2, 1]);
        let logged = (0..20)
            .filter(|_| log.record(t0, src, &Reject::Replay, &[]))
            .count();
        assert_eq!(logged as u32, REJECT_LOG_BURST);
        assert_eq!(log.suppressed[Reject::Replay.kind().index()], 15);
        // Another reason has its own budget.
        assert!(log.record(t0, src, &Reject::UnknownKey, &[]));
        // The budget comes back after the interval; the summary resets the counters.
        let later = t0 + REJECT_LOG_INTERVAL;
        assert!(log.record(later, src, &Reject::Replay, &[]));
        assert!(log.tick(later));
        assert_eq!(log.suppressed.iter().sum::<u64>(), 0);
        assert!(!log.tick(later));
    }
}
