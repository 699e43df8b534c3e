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
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::watch;

use crate::engine::Action;
use crate::exec;
use crate::runtime::Runtime;
use crate::state::{GrantRecord, Store};
use crate::{error, info};

/// Close attempts before a grant is given up (and reported).
pub const MAX_CLOSE_ATTEMPTS: u32 = 3;
/// Pause between close attempts.
pub const CLOSE_RETRY: Duration = Duration::from_secs(5);

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
pub struct Manager {
    rt: Arc<Runtime>,
    store: Store,
    live: Vec<Live>,
    applied: HashSet<Vec<String>>,
    /// Where `status` reads the open grants from (see [`crate::status`]).
    board: Option<Arc<crate::status::Board>>,
}

/// How an argv changes a firewall: inserts a rule, deletes one, or something else.
#[derive(Debug, PartialEq, Eq)]
enum RuleOp {
    Insert(Vec<String>),
    Delete(Vec<String>),
    Other,
}

/// Classifies an iptables-like argv and returns the rule with the operation (and an
/// insert position) removed, so `-I INPUT 1 -s X -j ACCEPT` and `-D INPUT -s X -j ACCEPT`
/// name the same rule.
fn rule_op(argv: &[String]) -> RuleOp {
    let mut op = None;
    let mut rule = Vec::with_capacity(argv.len());
    let mut i = 0;
    while i < argv.len() {
        let w = argv[i].as_str();
        match w {
            "-I" | "--insert" | "-A" | "--append" | "-D" | "--delete" if op.is_none() => {
                op = Some(matches!(w, "-D" | "--delete"));
                rule.push("<op>".to_owned());
                if let Some(chain) = argv.get(i + 1) {
                    rule.push(chain.clone());
                    i += 1;
                }
                if argv
                    .get(i + 1)
                    .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
                {
                    i += 1; // rule position
                }
            }
            _ => rule.push(w.to_owned()),
        }
        i += 1;
    }
    match op {
        Some(false) => RuleOp::Insert(rule),
        Some(true) => RuleOp::Delete(rule),
        None => RuleOp::Other,
    }
}

/// For an iptables/ip6tables insert or delete, the same rule with `-C` (check): exits 0 when
/// the rule is in the chain, 1 when it is not. Other tools (nft, scripts) get `None`: only the
/// in-memory record applies.
fn check_argv(argv: &[String], rule: &[String]) -> Option<Vec<String>> {
    let tool = std::path::Path::new(argv.first()?).file_name()?.to_str()?;
    if !(tool.starts_with("iptables") || tool.starts_with("ip6tables")) {
        return None;
    }
    Some(
        rule.iter()
            .map(|w| {
                if w == "<op>" {
                    "-C".to_owned()
                } else {
                    w.clone()
                }
            })
            .collect(),
    )
}

/// Runs an iptables `-C` check: `Some(true)` when the rule is in the chain, `Some(false)` when
/// iptables says it is not (exit status 1), `None` when the answer is unknown (the xtables
/// lock, a timeout, any other failure), which callers must not read as "absent".
async fn rule_present(check: &[String]) -> Option<bool> {
    match exec::run(check).await {
        Ok(()) => Some(true),
        Err(exec::ExecError::Failed { status, .. }) if status.code() == Some(1) => Some(false),
        Err(_) => None,
    }
}

impl Manager {
    /// Loads the recorded grants (a corrupt file is reported and treated as empty: nothing
    /// is opened because of it).
    pub fn new(rt: Arc<Runtime>, store: Store) -> Self {
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
        }
    }

    /// Publishes the open grants on `board` for `knock-spad status`, now and at every change.
    pub fn with_status(mut self, board: Arc<crate::status::Board>) -> Self {
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
    pub async fn run(
        mut self,
        mut rx: UnboundedReceiver<Action>,
        mut shutdown: watch::Receiver<bool>,
        keep: bool,
    ) {
        loop {
            self.close_due().await;
            self.publish();
            let wait = self
                .next_deadline_ms()
                .map_or(Duration::from_secs(3600), |t| {
                    Duration::from_millis(t.saturating_sub(now_ms()))
                });
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(a) => self.handle(a).await,
                    None => break,
                },
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => break,
            }
        }
        if keep {
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
        match action {
            Action::Reload(rt) => self.rt = rt,
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
            Action::KnockOpen { door, addr } => self.knock_open(door, addr).await,
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
                        info!("{name}: running command: {}", exec::display(&start));
                        if let Err(e) = exec::run(&start).await {
                            error!("{name}: command failed: {e}");
                            return false;
                        }
                    }
                }
            }
            return true;
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
        info!("{name}: running command: {}", exec::display(&start));
        match exec::run(&start).await {
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
        info!("{name}: running command: {}", exec::display(&argv));
        match exec::run(&argv).await {
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

    async fn knock_open(&mut self, door: usize, addr: IpAddr) {
        let Some(d) = self.rt.config.doors.get(door) else {
            return;
        };
        let secs = d.cmd_timeout;
        self.open_one(door, "", addr, None, secs).await;
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

    /// Runs the stop command of grant `i`; removes it on success or after the last attempt.
    /// Returns whether it was removed.
    async fn close_index(&mut self, i: usize) -> bool {
        let rec = self.live[i].rec.clone();
        info!(
            "{}: running command: {}",
            rec.door,
            exec::display(&rec.stop)
        );
        match exec::run(&rec.stop).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn check_argv_turns_an_insert_into_a_check() {
        let argv = v("/usr/sbin/iptables -I INPUT 1 -s 10.0.0.2 -p tcp --dport 22 -j ACCEPT");
        let RuleOp::Insert(rule) = rule_op(&argv) else {
            panic!("not an insert")
        };
        assert_eq!(
            check_argv(&argv, &rule),
            Some(v(
                "/usr/sbin/iptables -C INPUT -s 10.0.0.2 -p tcp --dport 22 -j ACCEPT"
            ))
        );
        let argv6 = v("/sbin/ip6tables -A INPUT -s fd00::2 -j ACCEPT");
        let RuleOp::Insert(rule6) = rule_op(&argv6) else {
            panic!("not an insert")
        };
        assert_eq!(
            check_argv(&argv6, &rule6),
            Some(v("/sbin/ip6tables -C INPUT -s fd00::2 -j ACCEPT"))
        );
        // Another tool: no check, only the in-memory record.
        let other = v("/usr/local/bin/open-door -I INPUT 10.0.0.2");
        let RuleOp::Insert(r) = rule_op(&other) else {
            panic!("not an insert")
        };
        assert_eq!(check_argv(&other, &r), None);
    }

    #[test]
    fn insert_and_delete_name_the_same_rule() {
        let ins = rule_op(&v(
            "/usr/sbin/iptables -I INPUT 1 -s 10.0.0.2 -p tcp --dport 22 -j ACCEPT",
        ));
        let del = rule_op(&v(
            "/usr/sbin/iptables -D INPUT -s 10.0.0.2 -p tcp --dport 22 -j ACCEPT",
        ));
        let app = rule_op(&v(
            "/usr/sbin/iptables -A INPUT -s 10.0.0.2 -p tcp --dport 22 -j ACCEPT",
        ));
        match (ins, del, app) {
            (RuleOp::Insert(a), RuleOp::Delete(b), RuleOp::Insert(c)) => {
                assert_eq!(a, b);
                assert_eq!(a, c);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(rule_op(&v("/bin/logger hello")), RuleOp::Other);
        let other_ip = rule_op(&v("iptables -D INPUT -s 10.0.0.3 -j ACCEPT"));
        let ins2 = rule_op(&v("iptables -I INPUT -s 10.0.0.2 -j ACCEPT"));
        assert_ne!(
            format!("{other_ip:?}"),
            format!("{ins2:?}").replace("Insert", "Delete")
        );
    }
}
