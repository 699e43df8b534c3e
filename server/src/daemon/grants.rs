//! The grant keeper: decides which rule opens and closes when, keeps the open grants on
//! disk, and hands the commands to its two [`lanes`](super::lanes).
//!
//! Every rule is recorded before its open command runs and forgotten only after its close
//! command succeeded (or failed [`MAX_CLOSE_ATTEMPTS`] times, which is logged as an error), so
//! a crash at any moment leaves at worst a record of a rule that is not there, never a rule
//! without a record (an nftables element is added first: its kernel timeout bounds it). Each
//! change is one line in the grants journal ([`GrantLog`]), whatever the number of grants. On
//! start the records are loaded: those due are closed at once, the others re-armed.
//!
//! The keeper never waits for a command. A grant goes `Opening` (its start command queued
//! or running on the open lane) → `Open` → `Closing` (its stop command on the close lane) →
//! forgotten; a grant due while still `Opening` closes as soon as its start command ends, so a
//! delete never overtakes its insert. Closes never wait behind opens.
//!
//! A second open for the same door, address and port extends the grant instead of running
//! the open command again (one grant, one rule); one that comes while the grant is closing
//! opens it anew once the close is done. For knockd-style doors with only a `Command` (no
//! stop command), an insert (`-I`/`-A`) identical to one already run is skipped until a
//! matching delete (`-D`) runs: knockd inserts duplicates (knock issue 70).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use knock_shared::config::Firewall;
use knock_shared::types::{Admitted, PortSpec};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::Receiver;
use tokio::sync::{oneshot, watch};

use crate::daemon::actions::{Action, NextOneTime, OneTimeUse, Shutdown};
use crate::daemon::lanes::{
    show, Closed, Counts, Done, Lanes, NftSocket, OpenJob, Stop, StopJob, OPEN_LANE_LEN,
};
use crate::daemon::reconcile::{self, element_of};
use crate::daemon::supervise::{fault, Heartbeat, KEEPER_BEAT};
use crate::firewall::nft::{self, Element, NftError};
use crate::load::LoadedConfig;
use crate::log::{error, info, verbose, Refusals};
use crate::store::status::{Stats, StatusBoard};
use crate::store::{GrantChange, GrantLog, GrantRecord, StateDir};

/// Close attempts before a grant is given up (and reported).
pub const MAX_CLOSE_ATTEMPTS: u32 = 3;
/// Pause between close attempts.
pub const CLOSE_RETRY: Duration = Duration::from_secs(5);
/// Least time between two publications of the grants while actions wait.
const PUBLISH_BUSY: Duration = Duration::from_millis(200);
/// How soon a due close is tried again when the close lane was full.
const CLOSE_LANE_RETRY: Duration = Duration::from_millis(100);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Its start command is queued or running.
    Opening,
    /// Its rule is in place (or was recorded before a restart).
    Open,
    /// Its stop command is queued or running.
    Closing,
}

#[derive(Debug)]
struct Live {
    rec: GrantRecord,
    phase: Phase,
    attempts: u32,
    /// Unix ms before which no close is tried (retry back-off).
    not_before_ms: u64,
    /// Ended before its time (a client's close, the operator, a reload): no "timeout" line.
    ended: bool,
    /// An open of the same door, address and port that came while this grant was closing:
    /// its start command and record, opened once the close is done.
    reopen: Option<(Vec<String>, GrantRecord)>,
}

impl Live {
    fn new(rec: GrantRecord, phase: Phase) -> Self {
        Self {
            rec,
            phase,
            attempts: 0,
            not_before_ms: 0,
            ended: false,
            reopen: None,
        }
    }
}

/// An operator's `knock-spad close` waiting for its grants' stop commands.
#[derive(Debug)]
struct Waiter {
    /// The grants not answered yet, with their description.
    pending: Vec<(u64, String)>,
    lines: Vec<String>,
    reply: oneshot::Sender<Vec<String>>,
}

/// Open grants and the commands that manage them.
#[derive(Debug)]
pub struct GrantKeeper {
    rt: Arc<LoadedConfig>,
    log: GrantLog,
    live: Vec<Live>,
    lanes: Lanes,
    waiters: Vec<Waiter>,
    /// The grants changed since they were last published.
    dirty: bool,
    /// When they were last published.
    published: Instant,
    /// nftables: the keeper's own netlink socket, for the elements it adds.
    nft: NftSocket,
    /// Where `status` reads the open grants from (see [`crate::store::status`]).
    board: Option<Arc<StatusBoard>>,
    /// Opens refused for the caps, and for a full open lane.
    full: Refusals,
    busy: Refusals,
    /// Where the next sequence of a one-time door goes (the packet thread).
    one_time: Option<std::sync::mpsc::SyncSender<NextOneTime>>,
}

impl GrantKeeper {
    /// Loads the recorded grants (what is damaged is reported; nothing opens because of it).
    pub fn new(rt: Arc<LoadedConfig>, store: StateDir) -> Self {
        let opened = store.open_grants();
        for p in &opened.problems {
            error!("state: {p}");
        }
        if !opened.records.is_empty() {
            info!(
                "state: {} grant(s) recorded before the restart",
                opened.records.len()
            );
        }
        let live = opened
            .records
            .into_iter()
            .map(|rec| Live::new(rec, Phase::Open))
            .collect();
        Self {
            rt,
            log: opened.log,
            live,
            lanes: Lanes::new(),
            waiters: Vec::new(),
            dirty: true,
            published: Instant::now(),
            nft: NftSocket::default(),
            board: None,
            full: Refusals::default(),
            busy: Refusals::default(),
            one_time: None,
        }
    }

    /// Sends the next sequences of one-time doors to `tx` (the packet thread).
    pub fn with_one_time(mut self, tx: std::sync::mpsc::SyncSender<NextOneTime>) -> Self {
        self.one_time = Some(tx);
        self
    }

    /// Publishes the open grants on `board` for `knock-spad status`, now and at every change;
    /// counts refused opens and failed firewall actions in `stats` (see [`Counts`]).
    pub fn with_status(mut self, board: Arc<StatusBoard>, stats: Arc<Stats>) -> Self {
        board.set_grants(&self.grants());
        self.board = Some(board);
        self.lanes.counts = Counts::new(stats);
        self
    }

    fn publish(&mut self) {
        if !std::mem::take(&mut self.dirty) {
            return;
        }
        self.published = Instant::now();
        if let Some(b) = &self.board {
            b.set_grants(&self.grants());
        }
    }

    /// The open grants (those opening and closing too).
    pub fn grants(&self) -> Vec<GrantRecord> {
        self.live.iter().map(|l| l.rec.clone()).collect()
    }

    /// Makes `change` durable, before memory changes. A compaction due first writes the
    /// state before the change as the new snapshot.
    fn record(&mut self, change: GrantChange) -> bool {
        if self.log.wants_compaction(self.live.len()) {
            let all = self.grants();
            if let Err(e) = self.log.compact(&all) {
                error!("state: cannot write the grants snapshot: {e}; the journal grows on");
            }
        }
        self.dirty = true;
        match self.log.record(&change) {
            Ok(()) => true,
            Err(e) => {
                error!("state: cannot record a change to the grants: {e}");
                false
            }
        }
    }

    fn index(&self, id: u64) -> Option<usize> {
        self.live.iter().position(|l| l.rec.id == id)
    }

    /// The grant of `door` that admits `admitted` on `port` (one grant, one rule).
    fn find(&self, door: &str, admitted: Admitted, port: &str) -> Option<usize> {
        self.live
            .iter()
            .position(|l| l.rec.door == door && l.rec.admitted() == admitted && l.rec.port == port)
    }

    /// Runs until `shutdown` turns true; then closes every grant unless `keep` is set.
    /// `heart` beats at every turn (at least every [`KEEPER_BEAT`]) and ends with the task.
    pub async fn run(
        mut self,
        mut rx: Receiver<Action>,
        mut shutdown: watch::Receiver<Shutdown>,
        keep: bool,
        heart: Arc<Heartbeat>,
    ) {
        let _alive = heart.alive();
        let Some(mut done) = self.lanes.spawn() else {
            unreachable!("run takes the keeper by value, so its lanes start once")
        };
        self.reconcile();
        loop {
            heart.beat();
            let lane_full = self.close_due();
            // Each publication copies every grant: while actions wait (a burst of opens),
            // at most one every PUBLISH_BUSY, so a burst costs O(n) copies, not O(n²).
            if (rx.is_empty() && done.is_empty()) || self.published.elapsed() >= PUBLISH_BUSY {
                self.publish();
            }
            let wait = if lane_full {
                CLOSE_LANE_RETRY
            } else {
                self.next_deadline_ms()
                    .map_or(KEEPER_BEAT, |t| {
                        Duration::from_millis(t.saturating_sub(now_ms()))
                    })
                    .min(KEEPER_BEAT)
            };
            tokio::select! {
                d = done.recv() => match d {
                    Some(d) => self.done(d),
                    None => panic!("the grant keeper's command lanes ended"),
                },
                msg = rx.recv() => match msg {
                    Some(a) => self.handle(a),
                    None => break,
                },
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => break,
            }
        }
        if *shutdown.borrow() == Shutdown::Failed {
            info!(
                "exiting after a failure; {} grant(s) left recorded for the restart",
                self.live.len()
            );
        } else if keep {
            info!(
                "exiting; {} grant(s) left open as configured (KeepRulesOnExit)",
                self.live.len()
            );
        } else {
            self.close_all(&mut done).await;
        }
        self.publish();
    }

    /// nftables, at start: forgets the grants whose element is gone from the kernel (see
    /// [`reconcile`]).
    fn reconcile(&mut self) {
        let nft_mode = self.rt.config.options.firewall == Firewall::Nftables;
        if !nft_mode && !self.live.iter().any(|l| l.rec.nft) {
            return;
        }
        let recorded = self
            .live
            .iter()
            .filter_map(|l| element_of(&l.rec).map(|e| (l.rec.id, e)));
        for id in reconcile::gone(recorded.collect()) {
            if let Some(i) = self.index(id) {
                let rec = &self.live[i].rec;
                info!(
                    "{}: {}: {}: its element is gone from the kernel (its timeout passed, or \
                     it was deleted by hand); grant dropped",
                    rec.admitted(),
                    rec.door,
                    rec.port
                );
                self.forget(i, "gone");
            }
        }
    }

    /// When the next grant that is open comes due (or may be retried).
    fn next_deadline_ms(&self) -> Option<u64> {
        self.live
            .iter()
            .filter(|l| l.phase == Phase::Open)
            .map(|l| (l.rec.expires * 1000).max(l.not_before_ms))
            .min()
    }

    fn handle(&mut self, action: Action) {
        assert!(!fault("grants"), "fault injected: KNOCK_SPAD_FAULT=grants");
        if fault("grants-stall") {
            static ONCE: std::sync::Once = std::sync::Once::new();
            ONCE.call_once(|| std::thread::sleep(Duration::from_secs(15)));
        }
        match action {
            Action::Reload(rt) => {
                if rt.config.options.firewall == Firewall::Nftables {
                    // The guarded ports may have changed.
                    let ports = nft::table::guarded_ports(&rt.config);
                    if self.lanes.open.try_send(OpenJob::Guard { ports }).is_err() {
                        error!("reload: the open lane is full; the nftables table is not updated");
                    }
                }
                self.rt = rt.clone();
                if let Some(b) = &self.board {
                    b.set_config(rt.config.doors.len(), rt.verifier.len(), true);
                }
                // Revoking a key or removing a door ends its grants now, not at their timeout.
                self.end_where("its door or key was removed by a reload", None, |r| {
                    !rt.admits(&r.door, &r.key)
                });
            }
            Action::Close { filter, reply } => {
                self.end_where(
                    "closed by the operator (knock-spad close)",
                    Some(reply),
                    |r| filter.matches(&r.door, &r.key, r.admitted()),
                );
            }
            Action::SpaOpen {
                door,
                key,
                addr,
                ports,
                duration,
            } => self.spa_open(door, &key, addr, &ports, duration),
            Action::SpaClose {
                door,
                key,
                addr,
                ports,
            } => self.spa_close(door, &key, addr, &ports),
            Action::KnockOpen {
                door,
                addr,
                one_time,
            } => self.knock_open(door, addr, one_time),
        }
    }

    /// Records a grant and queues its start command; extends the grant there is instead.
    fn open_one(
        &mut self,
        door: usize,
        key: &str,
        addr: IpAddr,
        port: Option<PortSpec>,
        secs: u64,
    ) {
        let Some(d) = self.rt.config.doors.get(door) else {
            return;
        };
        let nft = self.rt.config.options.firewall == Firewall::Nftables;
        let name = d.name.clone();
        let door_max = d.max_grants;
        // The address, or with `Admit_Prefix` its network: what `%IP%` renders.
        let admitted = d.admitted(addr);
        let render = |t: &knock_shared::config::CommandTemplate| t.render_admitted(admitted, port);
        let (start, stop) = if nft {
            // The element is the grant's address and port; nothing is rendered.
            (Vec::new(), Some(Vec::new()))
        } else {
            let Some(start) = d.start_command_for(addr).map(render) else {
                error!("{name}: no start command for {addr}");
                return;
            };
            (start, d.stop_command_for(addr).map(render))
        };
        let Some(stop) = stop else {
            // knockd's `Command` without a stop command: run once, nothing to close.
            let job = OpenJob::Once {
                door: name.clone(),
                argv: start,
            };
            if let Err(e) = self.lanes.open.try_send(job) {
                self.lane_refused(e, &name, admitted);
            }
            return;
        };
        let port_s = port.map(|p| p.to_string()).unwrap_or_default();
        let now = now_ms();
        let expires = now.div_ceil(1000) + secs;
        let rec = GrantRecord {
            door: name.clone(),
            key: key.to_owned(),
            addr: admitted.addr,
            prefix: (!admitted.is_host()).then_some(admitted.len),
            port: port_s.clone(),
            opened: now / 1000,
            expires,
            stop,
            nft,
            id: 0,
        };
        if let Some(i) = self.find(&name, admitted, &port_s) {
            self.extend(i, start, rec);
            return;
        }
        // The caps: a flood of knock completions from spoofed sources (anyone who saw the
        // sequence once can send it) must not grow the grants without bound.
        let total_max = self.rt.config.options.max_grants;
        let in_door = self.live.iter().filter(|l| l.rec.door == name).count();
        if self.live.len() >= total_max || in_door >= door_max {
            if let Some(n) = self.full.count() {
                error!(
                    "{addr}: {name}: not opened: {in_door} grant(s) open in this door \
                     (Max_Grants {door_max}), {} in all (MaxGrants {total_max}); {n} open(s) \
                     refused so since the last report",
                    self.live.len()
                );
            }
            return;
        }
        self.open_new(start, rec);
    }

    /// Records `rec` as a new grant and queues `start`, if the open lane has room.
    fn open_new(&mut self, start: Vec<String>, mut rec: GrantRecord) {
        if let Some(elem) = element_of(&rec) {
            self.open_element(elem, rec);
            return;
        }
        let (name, addr) = (rec.door.clone(), rec.admitted());
        if self.lanes.open.capacity() == 0 {
            self.lane_refused(TrySendError::Full(()), &name, addr);
            return;
        }
        rec.id = self.log.new_id();
        let id = rec.id;
        if !self.record(GrantChange::Open(rec.clone())) {
            error!("{name}: not opening for {addr}: the grant could not be recorded");
            return;
        }
        self.live.push(Live::new(rec, Phase::Opening));
        let job = OpenJob::Start {
            id,
            door: name.clone(),
            argv: start,
        };
        if let Err(e) = self.lanes.open.try_send(job) {
            self.lane_refused(e, &name, addr);
            if let Some(i) = self.index(id) {
                self.forget(i, "not opened");
            }
        }
    }

    /// nftables: adds the element, then records the grant (already open). The element comes
    /// first, unlike a command's rule: its kernel timeout ends it on time even if the record
    /// is lost to a crash (the next start logs it as unknown), and so the one sync of the
    /// record is not on the path from the packet to the open port. The kernel answers the
    /// batch within the send (about 30 µs), so the keeper makes it itself.
    fn open_element(&mut self, elem: Element, mut rec: GrantRecord) {
        let (name, addr) = (rec.door.clone(), rec.admitted());
        if let Err(e) = self.put(elem, rec.expires) {
            error!(
                "{name}: not opened for {addr}: cannot add the element {}: {e}",
                show(elem)
            );
            return;
        }
        rec.id = self.log.new_id();
        if !self.record(GrantChange::Open(rec.clone())) {
            error!("{name}: not opening for {addr}: the grant could not be recorded");
            if let Err(e) = self.nft.call(|n| n.delete(elem)) {
                self.lanes.counts.stop_failed();
                error!("{name}: cannot delete the element {}: {e}", show(elem));
            }
            return;
        }
        self.live.push(Live::new(rec, Phase::Open));
    }

    /// Puts `elem` with a kernel timeout ending at `expires` (Unix seconds).
    fn put(&mut self, elem: Element, expires: u64) -> Result<(), NftError> {
        let left = (expires * 1000).saturating_sub(now_ms()).max(1);
        self.nft
            .call(|n| n.put(elem, Duration::from_millis(left)))
            .inspect(|()| verbose!("element {} added, {left} ms", show(elem)))
            .inspect_err(|_| self.lanes.counts.start_failed())
    }

    /// A second open of grant `i` (`rec` is what the new one would be).
    fn extend(&mut self, i: usize, start: Vec<String>, rec: GrantRecord) {
        let l = &self.live[i];
        let (name, addr, id) = (l.rec.door.clone(), l.rec.admitted(), l.rec.id);
        let port = if rec.port.is_empty() {
            String::new()
        } else {
            format!(" ({})", rec.port)
        };
        if l.phase == Phase::Closing {
            info!("{addr}: {name}: closing{port}; opening again once it is closed");
            self.live[i].reopen = Some((start, rec));
            return;
        }
        let expires = l.rec.expires.max(rec.expires);
        if expires != l.rec.expires && !self.record(GrantChange::Extend { id, expires }) {
            error!("{name}: not extending for {addr}: the change could not be recorded");
            return;
        }
        let l = &mut self.live[i];
        l.rec.expires = expires;
        l.ended = false;
        info!(
            "{addr}: {name}: already open{port}; extended to {} s from now",
            expires.saturating_sub(now_ms() / 1000)
        );
        if let Some(elem) = element_of(&l.rec) {
            // The kernel's timeout follows (and an element deleted by hand comes back).
            if let Err(e) = self.put(elem, expires) {
                error!("{name}: cannot extend the element {}: {e}", show(elem));
            }
            return;
        }
        // The grant is live, but its rule may have been deleted by hand since.
        if l.phase == Phase::Open {
            let job = OpenJob::Recheck {
                door: name,
                argv: start,
            };
            if self.lanes.open.try_send(job).is_err() {
                verbose!("{addr}: the open lane is full; the rule is not checked this time");
            }
        }
    }

    /// An open refused because the open lane is full (or gone: then the keeper ends, and
    /// the supervisor restarts the daemon).
    fn lane_refused<T>(&mut self, e: TrySendError<T>, name: &str, addr: Admitted) {
        if let TrySendError::Closed(_) = e {
            panic!("the grant keeper's open lane ended");
        }
        self.lanes.counts.dropped();
        if let Some(n) = self.busy.count() {
            error!(
                "{addr}: {name}: not opened: {OPEN_LANE_LEN} start commands wait already (a \
                 slow or hung command?); {n} open(s) refused so since the last report"
            );
        }
    }

    fn spa_open(
        &mut self,
        door: usize,
        key: &str,
        addr: IpAddr,
        ports: &[PortSpec],
        duration: u32,
    ) {
        let Some(d) = self.rt.config.doors.get(door) else {
            return;
        };
        let Some(spa) = d.spa() else { return };
        let secs = match u64::from(duration) {
            0 => d.cmd_timeout,
            n => n.min(spa.max_timeout),
        };
        let list: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
        info!(
            "{addr}: {}: OPEN SESAME (spa key {key}, {}, {secs} s)",
            d.name,
            list.join(",")
        );
        for &p in ports {
            self.open_one(door, key, addr, Some(p), secs);
        }
    }

    fn knock_open(&mut self, door: usize, addr: IpAddr, one_time: Option<OneTimeUse>) {
        let Some(d) = self.rt.config.doors.get(door) else {
            return;
        };
        let secs = d.cmd_timeout;
        let name = d.name.clone();
        let ports = match (self.rt.config.options.firewall, d.sequence()) {
            (Firewall::Nftables, Some(s)) => s.open_ports.clone(),
            _ => Vec::new(),
        };
        if let Some(used) = one_time {
            if !self.use_one_time(&name, used) {
                return;
            }
        }
        if ports.is_empty() {
            self.open_one(door, "", addr, None, secs);
        }
        for p in ports {
            self.open_one(door, "", addr, Some(p), secs);
        }
    }

    /// Marks a one-time sequence used in its file, durably, before its door opens (a crash
    /// in between must not leave it usable again), and tells the packet thread the door's
    /// next sequence. Returns whether the door may open: not when the sequence could not be
    /// marked (the file cannot be written, or the sequence is no longer an unused line: a
    /// second completion of it, say).
    fn use_one_time(&mut self, name: &str, used: OneTimeUse) -> bool {
        let (opens, next) = match crate::load::use_one_time(&used.path, &used.used) {
            Ok(next) => (true, next),
            Err(e) => {
                error!("{name}: cannot mark the one-time sequence used: {e}; not opening");
                (false, crate::load::next_one_time(&used.path).ok().flatten())
            }
        };
        match &next {
            Some((line, _)) => verbose!("{name}: next one-time sequence from line {line}"),
            None => info!(
                "{name}: one-time sequences used up (or unreadable); the door stays shut until \
                 more are added and the daemon is reloaded"
            ),
        }
        if let Some(tx) = &self.one_time {
            let _ = tx.try_send(NextOneTime {
                door: name.to_owned(),
                path: used.path,
                next,
            });
        }
        opens
    }

    fn spa_close(&mut self, door: usize, key: &str, addr: IpAddr, ports: &[PortSpec]) {
        let Some((name, admitted)) = self
            .rt
            .config
            .doors
            .get(door)
            .map(|d| (d.name.clone(), d.admitted(addr)))
        else {
            return;
        };
        let list: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
        info!(
            "{addr}: {name}: close requested (spa key {key}, {})",
            list.join(",")
        );
        for p in ports {
            match self.find(&name, admitted, &p.to_string()) {
                Some(i) => self.end_now(i),
                None => info!("{addr}: {name}: {p} was not open"),
            }
        }
    }

    /// Makes grant `i` due now (durably: a restart does not re-arm it), so that it closes at
    /// this turn, or once its start command ended.
    fn end_now(&mut self, i: usize) {
        let now_s = now_ms() / 1000;
        let (id, expires) = (self.live[i].rec.id, self.live[i].rec.expires);
        if expires > now_s {
            // Not recorded: the grant still closes now, and a restart closes it at its time.
            let _ = self.record(GrantChange::Extend { id, expires: now_s });
        }
        let l = &mut self.live[i];
        l.rec.expires = expires.min(now_s);
        l.not_before_ms = 0;
        l.ended = true;
        l.reopen = None;
    }

    /// Ends every grant for which `ends` holds, now. With `reply` (the operator's request),
    /// answers a line per grant once its stop command ended.
    fn end_where(
        &mut self,
        why: &str,
        reply: Option<oneshot::Sender<Vec<String>>>,
        ends: impl Fn(&GrantRecord) -> bool,
    ) {
        let mut pending = Vec::new();
        for i in 0..self.live.len() {
            let rec = &self.live[i].rec;
            if !ends(rec) {
                continue;
            }
            info!("{}: {}: {why}; closing", rec.admitted(), rec.door);
            pending.push((rec.id, rec.describe()));
            self.end_now(i);
        }
        if let Some(reply) = reply {
            if pending.is_empty() {
                let _ = reply.send(Vec::new());
            } else {
                self.waiters.push(Waiter {
                    pending,
                    lines: Vec::new(),
                    reply,
                });
            }
        }
    }

    /// Answers the operator's requests waiting for grant `id` with `line`.
    fn answer(&mut self, id: u64, line: impl Fn(&str) -> String) {
        let mut i = 0;
        while i < self.waiters.len() {
            let w = &mut self.waiters[i];
            if let Some(at) = w.pending.iter().position(|(p, _)| *p == id) {
                let (_, what) = w.pending.swap_remove(at);
                w.lines.push(line(&what));
            }
            if w.pending.is_empty() {
                let w = self.waiters.swap_remove(i);
                let _ = w.reply.send(w.lines);
                continue;
            }
            i += 1;
        }
    }

    /// Forgets grant `i` (its rule is gone, or never came): recorded, then removed.
    /// Returns the open that waited for it.
    fn forget(&mut self, i: usize, how: &str) -> Option<(Vec<String>, GrantRecord)> {
        let id = self.live[i].rec.id;
        // A close that cannot be recorded leaves a record of a rule that is gone: the next
        // start runs its stop command once more, which is harmless.
        let _ = self.record(GrantChange::Close { id });
        let l = self.live.remove(i);
        self.answer(id, |what| format!("{how} {what}"));
        l.reopen
    }

    /// A lane's result.
    fn done(&mut self, done: Done) {
        match done {
            Done::Started { id, ok } => {
                let Some(i) = self.index(id) else { return };
                if ok {
                    self.live[i].phase = Phase::Open;
                    self.dirty = true;
                } else {
                    self.forget(i, "closed");
                }
            }
            Done::Stopped { id, how } => {
                let Some(i) = self.index(id) else { return };
                match how {
                    Closed::Done | Closed::AlreadyGone => {
                        if let Some((start, rec)) = self.forget(i, "closed") {
                            self.open_new(start, rec);
                        }
                    }
                    Closed::Failed(e) => self.close_failed(i, &e),
                }
            }
        }
    }

    fn close_failed(&mut self, i: usize, e: &str) {
        let l = &mut self.live[i];
        l.attempts += 1;
        l.phase = Phase::Open;
        let (door, addr, id) = (l.rec.door.clone(), l.rec.admitted(), l.rec.id);
        if l.attempts >= MAX_CLOSE_ATTEMPTS {
            error!(
                "{door}: close command for {addr} failed {} times ({e}); giving up: check the \
                 firewall by hand",
                l.attempts
            );
            if let Some((start, rec)) = self.forget(i, "gave up closing") {
                self.open_new(start, rec);
            }
            return;
        }
        error!("{door}: close command for {addr} failed ({e}); will retry");
        l.not_before_ms = now_ms() + CLOSE_RETRY.as_millis() as u64;
        if let Some((_, rec)) = l.reopen.take() {
            // Asked for again while closing, and the rule is still there: it stays open.
            l.attempts = 0;
            l.not_before_ms = 0;
            l.ended = false;
            let expires = rec.expires;
            if self.record(GrantChange::Extend { id, expires }) {
                self.live[i].rec.expires = expires;
            }
        }
        self.answer(id, |what| {
            format!("closing {what}: its stop command failed, retrying")
        });
    }

    /// Hands the stop command of every open grant that is due to the close lane. Returns
    /// whether the lane was full (the rest wait for the next turn).
    fn close_due(&mut self) -> bool {
        let now = now_ms();
        for l in &mut self.live {
            if l.phase != Phase::Open || l.rec.expires * 1000 > now || l.not_before_ms > now {
                continue;
            }
            if l.attempts == 0 && !l.ended {
                info!("{}: {}: command timeout", l.rec.admitted(), l.rec.door);
            }
            let stop = match element_of(&l.rec) {
                Some(elem) => Stop::Element(elem),
                None => Stop::Command(l.rec.stop.clone()),
            };
            let job = StopJob {
                id: l.rec.id,
                door: l.rec.door.clone(),
                addr: l.rec.admitted(),
                stop,
            };
            match self.lanes.close.try_send(job) {
                Ok(()) => {
                    l.phase = Phase::Closing;
                    self.dirty = true;
                }
                Err(TrySendError::Full(_)) => return true,
                Err(TrySendError::Closed(_)) => panic!("the grant keeper's close lane ended"),
            }
            // Logged once per grant, not at every turn the lane was full.
            l.ended = true;
        }
        false
    }

    /// At a clean stop: waits for the start commands running, then runs every stop command
    /// once. A grant whose stop command fails stays recorded for the next start.
    async fn close_all(&mut self, done: &mut tokio::sync::mpsc::UnboundedReceiver<Done>) {
        if self.live.is_empty() {
            return;
        }
        info!("exiting: closing {} open grant(s)", self.live.len());
        let mut kept = 0;
        loop {
            let now_s = now_ms() / 1000;
            for l in &mut self.live {
                l.rec.expires = l.rec.expires.min(now_s);
                l.not_before_ms = 0;
                l.ended = true;
                l.reopen = None;
            }
            let lane_full = self.close_due();
            if self.live.iter().all(|l| l.phase == Phase::Open) && !lane_full {
                break;
            }
            match done.recv().await {
                Some(Done::Stopped {
                    id,
                    how: Closed::Failed(e),
                }) => {
                    if let Some(i) = self.index(id) {
                        let l = self.live.remove(i);
                        error!(
                            "{}: close command for {} failed ({e}); left recorded for the next \
                             start",
                            l.rec.door,
                            l.rec.admitted()
                        );
                        kept += 1;
                    }
                }
                Some(d) => self.done(d),
                None => break,
            }
        }
        if kept > 0 {
            info!("exiting: {kept} grant(s) left recorded for the next start");
        }
    }
}
