//! The grant manager: runs open and close commands, keeps the list of open grants on disk,
//! and closes each grant when its time is up.
//!
//! Every rule is recorded before its open command runs and forgotten only after its close
//! command succeeded (or failed [`MAX_CLOSE_ATTEMPTS`] times, which is logged as an error), so
//! a crash at any moment leaves at worst a record of a rule that is not there, never a rule
//! without a record. On start the manager loads the records: those whose time passed while
//! the daemon was down are closed at once, the others are re-armed.
//!
//! A second open for the same door, address and port extends the grant instead of running
//! the open command again (one grant, one rule). For knockd-style doors with only a
//! `Command` (no stop command), an insert (`-I`/`-A`) identical to one already run is
//! skipped until a matching delete (`-D`) runs: knockd inserts duplicates (knock issue 70).

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use knock_shared::types::PortSpec;
use tokio::sync::mpsc::Receiver;
use tokio::sync::watch;

use crate::daemon::actions::{Action, NextOneTime, OneTimeUse, Shutdown};
use crate::daemon::supervise::{fault, Heartbeat, KEEPER_BEAT};
use crate::firewall::commands::{self, check_argv, rule_op, rule_present, RuleOp};
use crate::load::LoadedConfig;
use crate::log::{error, info, verbose};
use crate::store::{GrantRecord, StateDir};

/// Close attempts before a grant is given up (and reported).
pub const MAX_CLOSE_ATTEMPTS: u32 = 3;
/// Pause between close attempts.
pub const CLOSE_RETRY: Duration = Duration::from_secs(5);
/// Least time between two reports of opens refused for the caps.
const FULL_LOG_INTERVAL: Duration = Duration::from_secs(10);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Debug)]
struct Live {
    rec: GrantRecord,
    attempts: u32,
    /// Unix ms before which no close is tried (retry back-off).
    not_before_ms: u64,
}

/// Open grants and the commands that manage them.
#[derive(Debug)]
pub struct GrantKeeper {
    rt: Arc<LoadedConfig>,
    store: StateDir,
    live: Vec<Live>,
    applied: HashSet<Vec<String>>,
    /// Where `status` reads the open grants from (see [`crate::status`]).
    board: Option<Arc<crate::store::status::StatusBoard>>,
    /// Opens refused for the caps since the last report, and when that was.
    full: (u64, Option<std::time::Instant>),
    /// Where the next sequence of a one-time door goes (the packet thread).
    one_time: Option<std::sync::mpsc::SyncSender<NextOneTime>>,
}

impl GrantKeeper {
    /// Loads the recorded grants (a corrupt file is reported and treated as empty: nothing
    /// is opened because of it).
    pub fn new(rt: Arc<LoadedConfig>, store: StateDir) -> Self {
        let records = match store.load_grants() {
            Ok(loaded) => {
                if let Some(w) = loaded.warning {
                    error!("state: {w}");
                }
                loaded.records
            }
            Err(e) => {
                error!("state: {e}; rules it listed (if any) must be checked by hand");
                Vec::new()
            }
        };
        if !records.is_empty() {
            info!(
                "state: {} grant(s) recorded before the restart",
                records.len()
            );
        }
        let live = records
            .into_iter()
            .map(|rec| Live {
                rec,
                attempts: 0,
                not_before_ms: 0,
            })
            .collect();
        Self {
            rt,
            store,
            live,
            applied: HashSet::new(),
            board: None,
            full: (0, None),
            one_time: None,
        }
    }

    /// Sends the next sequences of one-time doors to `tx` (the packet thread).
    pub fn with_one_time(mut self, tx: std::sync::mpsc::SyncSender<NextOneTime>) -> Self {
        self.one_time = Some(tx);
        self
    }

    /// Publishes the open grants on `board` for `knock-spad status`, now and at every change.
    pub fn with_status(mut self, board: Arc<crate::store::status::StatusBoard>) -> Self {
        board.set_grants(&self.grants());
        self.board = Some(board);
        self
    }

    fn publish(&self) {
        if let Some(b) = &self.board {
            b.set_grants(&self.grants());
        }
    }

    /// The open grants.
    pub fn grants(&self) -> Vec<GrantRecord> {
        self.live.iter().map(|l| l.rec.clone()).collect()
    }

    fn save(&self) -> bool {
        match self.store.save_grants(&self.grants()) {
            Ok(()) => true,
            Err(e) => {
                error!("state: cannot save grants: {e}");
                false
            }
        }
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
        loop {
            heart.beat();
            self.close_due().await;
            self.publish();
            let wait = self
                .next_deadline_ms()
                .map_or(KEEPER_BEAT, |t| {
                    Duration::from_millis(t.saturating_sub(now_ms()))
                })
                .min(KEEPER_BEAT);
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(a) => self.handle(a).await,
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
            self.close_all().await;
        }
        self.publish();
    }

    fn next_deadline_ms(&self) -> Option<u64> {
        self.live
            .iter()
            .map(|l| (l.rec.expires * 1000).max(l.not_before_ms))
            .min()
    }

    async fn handle(&mut self, action: Action) {
        assert!(!fault("grants"), "fault injected: KNOCK_SPAD_FAULT=grants");
        match action {
            Action::Reload(rt) => {
                self.rt = rt.clone();
                if let Some(b) = &self.board {
                    b.set_config(rt.config.doors.len(), rt.verifier.len(), true);
                }
                // Revoking a key or removing a door ends its grants now, not at their timeout.
                self.end_where("its door or key was removed by a reload", |r| {
                    !rt.admits(&r.door, &r.key)
                })
                .await;
            }
            Action::Close { filter, reply } => {
                let lines = self
                    .end_where("closed by the operator (knock-spad close)", |r| {
                        filter.matches(&r.door, &r.key, r.addr)
                    })
                    .await;
                let _ = reply.send(lines);
            }
            Action::SpaOpen {
                door,
                key,
                addr,
                ports,
                duration,
            } => self.spa_open(door, &key, addr, &ports, duration).await,
            Action::SpaClose {
                door,
                key,
                addr,
                ports,
            } => self.spa_close(door, &key, addr, &ports).await,
            Action::KnockOpen {
                door,
                addr,
                one_time,
            } => self.knock_open(door, addr, one_time).await,
        }
    }

    fn find(&self, door: &str, addr: IpAddr, port: &str) -> Option<usize> {
        self.live
            .iter()
            .position(|l| l.rec.door == door && l.rec.addr == addr && l.rec.port == port)
    }

    /// Records a grant, runs the open command, forgets the grant if the command failed.
    async fn open_one(
        &mut self,
        door: usize,
        key: &str,
        addr: IpAddr,
        port: Option<PortSpec>,
        secs: u64,
    ) -> bool {
        let Some(d) = self.rt.config.doors.get(door) else {
            return false;
        };
        let name = d.name.clone();
        let Some(start) = d.start_command_for(addr).map(|t| t.render(addr, port)) else {
            error!("{name}: no start command for {addr}");
            return false;
        };
        let stop = d.stop_command_for(addr).map(|t| t.render(addr, port));
        let port_s = port.map(|p| p.to_string()).unwrap_or_default();
        let now = now_ms();
        let Some(stop) = stop else {
            // knockd's `Command` without a stop command: run once, nothing to close.
            return self.run_once(&name, start).await;
        };
        if let Some(i) = self.find(&name, addr, &port_s) {
            let expires = now.div_ceil(1000) + secs;
            let l = &mut self.live[i];
            l.rec.expires = l.rec.expires.max(expires);
            info!(
                "{addr}: {name}: already open{}; extended to {} s from now",
                if port_s.is_empty() {
                    String::new()
                } else {
                    format!(" ({port_s})")
                },
                l.rec.expires.saturating_sub(now / 1000)
            );
            self.save();
            // The grant is live, but its rule may have been deleted by hand (or by a firewall
            // reload) since: for iptables, ask the firewall, and put the rule back if it is gone.
            if let RuleOp::Insert(rule) = rule_op(&start) {
                if let Some(check) = check_argv(&start, &rule) {
                    if rule_present(&check).await == Some(false) {
                        info!("{name}: the rule of this grant is not in the firewall; inserting it again");
                        info!("{name}: running command: {}", commands::display(&start));
                        if let Err(e) = commands::run(&start).await {
                            error!("{name}: command failed: {e}");
                            return false;
                        }
                    }
                }
            }
            return true;
        }
        // The caps: a flood of knock completions from spoofed sources (anyone who saw the
        // sequence once can send it) must not grow the grants without bound.
        let door_max = self.rt.config.doors.get(door).map_or(0, |d| d.max_grants);
        let total_max = self.rt.config.options.max_grants;
        let in_door = self.live.iter().filter(|l| l.rec.door == name).count();
        if self.live.len() >= total_max || in_door >= door_max {
            self.refused_full(&name, addr, in_door, door_max, total_max);
            return false;
        }
        self.live.push(Live {
            rec: GrantRecord {
                door: name.clone(),
                key: key.to_owned(),
                addr,
                port: port_s,
                opened: now / 1000,
                expires: now.div_ceil(1000) + secs,
                stop,
            },
            attempts: 0,
            not_before_ms: 0,
        });
        if !self.save() {
            self.live.pop();
            error!("{name}: not opening for {addr}: the grant could not be recorded");
            return false;
        }
        info!("{name}: running command: {}", commands::display(&start));
        match commands::run(&start).await {
            Ok(()) => true,
            Err(e) => {
                error!("{name}: command failed: {e}");
                self.live.pop();
                self.save();
                false
            }
        }
    }

    async fn run_once(&mut self, name: &str, argv: Vec<String>) -> bool {
        let op = rule_op(&argv);
        if let RuleOp::Insert(rule) = &op {
            // One rule, not two. For iptables the firewall itself is asked (`-C`): it knows
            // about a rule inserted before a restart, and about one deleted by hand since this
            // daemon inserted it (memory alone would then skip the insert, and the knock
            // would never open again). Other tools, and a check that cannot answer, fall back
            // on what this daemon inserted and has not deleted since.
            let present = match check_argv(&argv, rule) {
                Some(check) => rule_present(&check).await,
                None => None,
            }
            .unwrap_or_else(|| self.applied.contains(rule));
            if present {
                self.applied.insert(rule.clone());
                info!(
                    "{name}: rule already in place (inserted by an earlier knock and not deleted \
                     since); not inserting it twice"
                );
                return true;
            }
        }
        info!("{name}: running command: {}", commands::display(&argv));
        match commands::run(&argv).await {
            Ok(()) => {
                match op {
                    RuleOp::Insert(rule) => {
                        self.applied.insert(rule);
                    }
                    RuleOp::Delete(rule) => {
                        self.applied.remove(&rule);
                    }
                    RuleOp::Other => {}
                }
                true
            }
            Err(_) if self.rule_already_gone(&argv).await => {
                if let RuleOp::Delete(rule) = op {
                    self.applied.remove(&rule);
                }
                info!("{name}: the rule was already gone from the firewall; nothing to delete");
                true
            }
            Err(e) => {
                error!("{name}: command failed: {e}");
                false
            }
        }
    }

    async fn spa_open(
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
            self.open_one(door, key, addr, Some(p), secs).await;
        }
    }

    async fn knock_open(&mut self, door: usize, addr: IpAddr, one_time: Option<OneTimeUse>) {
        let Some(d) = self.rt.config.doors.get(door) else {
            return;
        };
        let secs = d.cmd_timeout;
        let name = d.name.clone();
        if let Some(used) = one_time {
            if !self.use_one_time(&name, used) {
                return;
            }
        }
        self.open_one(door, "", addr, None, secs).await;
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

    async fn spa_close(&mut self, door: usize, key: &str, addr: IpAddr, ports: &[PortSpec]) {
        let Some(name) = self.rt.config.doors.get(door).map(|d| d.name.clone()) else {
            return;
        };
        let list: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
        info!(
            "{addr}: {name}: close requested (spa key {key}, {})",
            list.join(",")
        );
        for p in ports {
            match self.find(&name, addr, &p.to_string()) {
                Some(i) => {
                    self.close_index(i).await;
                }
                None => info!("{addr}: {name}: {p} was not open"),
            }
        }
        self.save();
    }

    /// Logs an open refused for the caps: the first at once, then at most one summary per
    /// [`FULL_LOG_INTERVAL`].
    fn refused_full(
        &mut self,
        name: &str,
        addr: IpAddr,
        in_door: usize,
        door_max: usize,
        total_max: usize,
    ) {
        self.full.0 += 1;
        let now = std::time::Instant::now();
        if self
            .full
            .1
            .is_none_or(|t| now.duration_since(t) >= FULL_LOG_INTERVAL)
        {
            error!(
                "{addr}: {name}: not opened: {in_door} grant(s) open in this door (Max_Grants \
                 {door_max}), {} in all (MaxGrants {total_max}); {} open(s) refused so since the \
                 last report",
                self.live.len(),
                self.full.0
            );
            self.full = (0, Some(now));
        }
    }

    /// Ends every grant for which `ends` holds, now: runs its stop command (a failed one is
    /// retried as at a timeout, the grant being due). Returns a line per grant, for the
    /// operator.
    async fn end_where(&mut self, why: &str, ends: impl Fn(&GrantRecord) -> bool) -> Vec<String> {
        let now_s = now_ms() / 1000;
        let mut done = Vec::new();
        let mut i = 0;
        while i < self.live.len() {
            if !ends(&self.live[i].rec) {
                i += 1;
                continue;
            }
            let rec = self.live[i].rec.clone();
            info!("{}: {}: {why}; closing", rec.addr, rec.door);
            self.live[i].rec.expires = rec.expires.min(now_s);
            let what = format!(
                "{} {}{}{}",
                rec.door,
                rec.addr,
                if rec.port.is_empty() {
                    String::new()
                } else {
                    format!(" {}", rec.port)
                },
                if rec.key.is_empty() {
                    String::new()
                } else {
                    format!(" (key {})", rec.key)
                },
            );
            if self.close_index(i).await {
                done.push(format!("closed {what}"));
                continue;
            }
            done.push(format!("closing {what}: its stop command failed, retrying"));
            i += 1;
        }
        if !done.is_empty() {
            self.save();
            self.publish();
        }
        done
    }

    /// Runs the stop command of grant `i`; removes it on success or after the last attempt.
    /// Returns whether it was removed.
    async fn close_index(&mut self, i: usize) -> bool {
        let rec = self.live[i].rec.clone();
        info!(
            "{}: running command: {}",
            rec.door,
            commands::display(&rec.stop)
        );
        match commands::run(&rec.stop).await {
            Ok(()) => {
                self.live.remove(i);
                true
            }
            Err(_) if self.rule_already_gone(&rec.stop).await => {
                info!(
                    "{}: the rule for {} was already gone from the firewall (deleted by hand?)",
                    rec.door, rec.addr
                );
                self.live.remove(i);
                true
            }
            Err(e) => {
                let l = &mut self.live[i];
                l.attempts += 1;
                if l.attempts >= MAX_CLOSE_ATTEMPTS {
                    error!(
                        "{}: close command for {} failed {} times ({e}); giving up: check the \
                         firewall by hand",
                        rec.door, rec.addr, l.attempts
                    );
                    self.live.remove(i);
                    true
                } else {
                    error!(
                        "{}: close command for {} failed ({e}); will retry",
                        rec.door, rec.addr
                    );
                    l.not_before_ms = now_ms() + CLOSE_RETRY.as_millis() as u64;
                    false
                }
            }
        }
    }

    /// Whether a failed iptables delete failed because its rule is not in the firewall (asked
    /// with `-C`): then the grant is closed all the same. Other tools cannot be asked.
    async fn rule_already_gone(&self, stop: &[String]) -> bool {
        let RuleOp::Delete(rule) = rule_op(stop) else {
            return false;
        };
        match check_argv(stop, &rule) {
            Some(check) => rule_present(&check).await == Some(false),
            None => false,
        }
    }

    async fn close_due(&mut self) {
        let now = now_ms();
        let mut changed = false;
        let mut i = 0;
        while i < self.live.len() {
            let l = &self.live[i];
            if l.rec.expires * 1000 <= now && l.not_before_ms <= now {
                if l.attempts == 0 {
                    info!("{}: {}: command timeout", l.rec.addr, l.rec.door);
                }
                changed = true;
                if self.close_index(i).await {
                    continue;
                }
            }
            i += 1;
        }
        if changed {
            self.save();
        }
    }

    async fn close_all(&mut self) {
        if self.live.is_empty() {
            return;
        }
        info!("exiting: closing {} open grant(s)", self.live.len());
        while !self.live.is_empty() {
            let last = self.live.len() - 1;
            if !self.close_index(last).await {
                // Keep the record (and the rest) for the next start, which retries.
                break;
            }
        }
        self.save();
    }
}
