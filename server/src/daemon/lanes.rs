//! The grant keeper's two command lanes: start commands run on one, stop commands on the
//! other, each lane one command at a time in the order given. So a slow or hung start command
//! (killed after [`COMMAND_TIMEOUT`](crate::firewall::commands::COMMAND_TIMEOUT)) never holds
//! up a due close, and the keeper itself never waits for a command: it hands jobs over and
//! takes up their results ([`Done`]) as they come.
//!
//! With `Firewall = nftables` the grant keeper adds the elements itself (a netlink batch the
//! kernel answers within the send); the close lane deletes them, in order with the other
//! closes, and the open lane updates the guarded ports at a reload; each with its own socket.
//!
//! Both queues are bounded: the open lane at [`OPEN_LANE_LEN`] (beyond it the keeper refuses
//! new opens, counted with the dropped actions), the close lane at [`CLOSE_LANE_LEN`] (beyond
//! it a due close waits for the next turn). Each job sends back at most one [`Done`], so the
//! results waiting are bounded by the two queues and the two jobs running.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use knock_shared::types::PortSpec;
use tokio::sync::mpsc;

use crate::firewall::commands::{self, check_argv, rule_op, rule_present, ExecError, RuleOp};
use crate::firewall::nft::{self, Element, Nft, NftError};
use crate::log::{error, info, verbose};
use crate::store::status::Stats;

/// Start jobs that may wait at once.
pub const OPEN_LANE_LEN: usize = 256;
/// Stop jobs that may wait at once.
pub const CLOSE_LANE_LEN: usize = 8192;

/// A job for the open lane.
#[derive(Debug)]
pub enum OpenJob {
    /// Run a recorded grant's start command; answered with [`Done::Started`].
    Start {
        /// The grant.
        id: u64,
        /// Its door, for the log.
        door: String,
        /// The rendered start command.
        argv: Vec<String>,
    },
    /// A grant was extended: for iptables, ask the firewall whether its rule is still there
    /// (it may have been deleted by hand, or by a firewall reload), and insert it again if
    /// not. No answer.
    Recheck {
        /// The door, for the log.
        door: String,
        /// The grant's rendered start command.
        argv: Vec<String>,
    },
    /// knockd's `Command` without a stop command: run once, nothing to close. An insert
    /// identical to one already in place is skipped (one rule, not two). No answer.
    Once {
        /// The door, for the log.
        door: String,
        /// The rendered command.
        argv: Vec<String>,
    },
    /// nftables, at a reload: the guarded ports may have changed. Replaces the guarded set's
    /// elements over netlink; if the table is gone (removed by hand), applies the whole
    /// script instead (the open grants' elements are kept either way). No answer.
    Guard {
        /// The ports the doors now guard.
        ports: Vec<PortSpec>,
    },
}

/// How a grant is closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// Its stop command.
    Command(Vec<String>),
    /// nftables: delete its element.
    Element(Element),
}

/// A job for the close lane: run a grant's stop command; answered with [`Done::Stopped`].
#[derive(Debug)]
pub struct StopJob {
    /// The grant.
    pub id: u64,
    /// Its door, for the log.
    pub door: String,
    /// What it admits, for the log.
    pub addr: knock_shared::types::Admitted,
    /// What closes it.
    pub stop: Stop,
}

/// What a stop command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// It succeeded.
    Done,
    /// It failed, but the rule is not in the firewall (asked with iptables `-C`).
    AlreadyGone,
    /// It failed: why.
    Failed(String),
}

/// A job's result, for the keeper.
#[derive(Debug)]
pub enum Done {
    /// A start command ended: whether it succeeded.
    Started {
        /// The grant.
        id: u64,
        /// Success.
        ok: bool,
    },
    /// A stop command ended.
    Stopped {
        /// The grant.
        id: u64,
        /// How.
        how: Closed,
    },
}

/// The counters the grant keeper and its lanes move in the daemon's [`Stats`] (which the
/// status thread publishes): each where the outcome is known, the lanes for the commands and
/// element deletes they run, the keeper for the elements it puts and the opens it refuses.
/// Without stats (a keeper with no status board) nothing is counted.
#[derive(Debug, Clone, Default)]
pub struct Counts(Option<Arc<Stats>>);

impl Counts {
    /// Counts into `stats`.
    pub fn new(stats: Arc<Stats>) -> Self {
        Self(Some(stats))
    }

    fn bump(&self, field: impl Fn(&Stats) -> &std::sync::atomic::AtomicU64) {
        if let Some(s) = &self.0 {
            field(s).fetch_add(1, Ordering::Relaxed);
        }
    }

    /// An open refused (the open lane is full).
    pub fn dropped(&self) {
        self.bump(|s| &s.dropped);
    }

    /// A start command, or an element put, failed.
    pub fn start_failed(&self) {
        self.bump(|s| &s.start_failed);
    }

    /// A stop command, or an element delete, failed.
    pub fn stop_failed(&self) {
        self.bump(|s| &s.stop_failed);
    }

    /// Runs `argv` ([`commands::run`]), counting it if it is killed at its time limit.
    async fn run(&self, argv: &[String]) -> Result<(), ExecError> {
        let r = commands::run(argv).await;
        if let Err(ExecError::Timeout(_)) = r {
            self.bump(|s| &s.timed_out);
        }
        r
    }
}

/// The keeper's ends of the lanes. The lanes' tasks start with [`Lanes::spawn`].
#[derive(Debug)]
pub struct Lanes {
    /// Start jobs go here.
    pub open: mpsc::Sender<OpenJob>,
    /// Stop jobs go here.
    pub close: mpsc::Sender<StopJob>,
    /// What the lanes count (set before [`Lanes::spawn`]).
    pub counts: Counts,
    tasks: Option<Tasks>,
}

/// The lanes' ends until their tasks start.
#[derive(Debug)]
struct Tasks {
    open: mpsc::Receiver<OpenJob>,
    close: mpsc::Receiver<StopJob>,
    done_tx: mpsc::UnboundedSender<Done>,
    done: mpsc::UnboundedReceiver<Done>,
}

impl Lanes {
    /// The queues, with no task on them yet.
    pub fn new() -> Self {
        let (open, open_rx) = mpsc::channel(OPEN_LANE_LEN);
        let (close, close_rx) = mpsc::channel(CLOSE_LANE_LEN);
        let (done_tx, done) = mpsc::unbounded_channel();
        Self {
            open,
            close,
            counts: Counts::default(),
            tasks: Some(Tasks {
                open: open_rx,
                close: close_rx,
                done_tx,
                done,
            }),
        }
    }

    /// Starts the two lanes' tasks (needs the tokio runtime's context) and returns where
    /// their results come from; `None` if they were started already. They end when their
    /// queue's senders are dropped.
    pub fn spawn(&mut self) -> Option<mpsc::UnboundedReceiver<Done>> {
        let t = self.tasks.take()?;
        tokio::spawn(open_lane(t.open, t.done_tx.clone(), self.counts.clone()));
        tokio::spawn(close_lane(t.close, t.done_tx, self.counts.clone()));
        Some(t.done)
    }
}

impl Default for Lanes {
    fn default() -> Self {
        Self::new()
    }
}

async fn open_lane(
    mut jobs: mpsc::Receiver<OpenJob>,
    done: mpsc::UnboundedSender<Done>,
    counts: Counts,
) {
    // The inserts of `Once` jobs this daemon made and has not deleted since.
    let mut applied = HashSet::new();
    // This lane's netlink socket, opened at its first nftables job.
    let mut socket = NftSocket::default();
    while let Some(job) = jobs.recv().await {
        match job {
            OpenJob::Start { id, door, argv } => {
                info!("{door}: running command: {}", commands::display(&argv));
                let ok = match counts.run(&argv).await {
                    Ok(()) => true,
                    Err(e) => {
                        error!("{door}: command failed: {e}");
                        counts.start_failed();
                        false
                    }
                };
                let _ = done.send(Done::Started { id, ok });
            }
            OpenJob::Recheck { door, argv } => recheck(&door, &argv, &counts).await,
            OpenJob::Once { door, argv } => run_once(&door, &argv, &mut applied, &counts).await,
            OpenJob::Guard { ports } => guard(&mut socket, ports).await,
        }
    }
}

async fn guard(socket: &mut NftSocket, ports: Vec<PortSpec>) {
    let list: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
    match socket.call(|n| n.set_guarded(&ports)) {
        Ok(()) => info!("nftables: guarding {}", list.join(", ")),
        Err(e) if e.is_missing_table() => {
            info!(
                "nftables: table inet {} is gone; creating it again",
                nft::TABLE
            );
            let script = nft::table::script(&ports);
            match tokio::task::spawn_blocking(move || nft::table::apply(&script)).await {
                Ok(Ok(())) => info!("nftables: table inet {} in place", nft::TABLE),
                Ok(Err(e)) => error!("nftables: cannot set up the table: {e}"),
                Err(e) => error!("nftables: cannot set up the table: {e}"),
            }
        }
        Err(e) => error!("nftables: cannot update the guarded ports: {e}"),
    }
}

/// An element as nft writes it: `10.0.0.1 . tcp . 22`.
pub fn show(e: Element) -> String {
    format!("{} . {} . {}", e.addr, e.port.proto, e.port.port)
}

/// A netlink socket (a lane's, or the grant keeper's): opened when first needed, reopened
/// after a failure.
///
/// Called inline, not on the blocking pool: the kernel runs an nftables batch inside the
/// `sendmsg` and has queued its answers when the receive starts (about 30 µs for an element,
/// add or delete), so a lane drains the jobs waiting for it in one turn instead of one per
/// hand-over to a pool thread (which let 256 opens pile up behind a burst of 200 knocks). A
/// kernel that does not answer is bounded by the socket's receive timeout
/// ([`REPLY_TIMEOUT`](crate::firewall::nft::netlink::REPLY_TIMEOUT)).
#[derive(Debug, Default)]
pub struct NftSocket(Option<Nft>);

impl NftSocket {
    /// Runs `f` on the socket (opened first if need be).
    pub fn call<T>(
        &mut self,
        f: impl FnOnce(&mut Nft) -> Result<T, NftError>,
    ) -> Result<T, NftError> {
        let mut nft = match self.0.take() {
            Some(n) => n,
            None => Nft::open()?,
        };
        let result = f(&mut nft);
        // A socket that failed may hold replies out of step: the next call opens another.
        if result.is_ok() {
            self.0 = Some(nft);
        }
        result
    }
}

async fn close_lane(
    mut jobs: mpsc::Receiver<StopJob>,
    done: mpsc::UnboundedSender<Done>,
    counts: Counts,
) {
    let mut socket = NftSocket::default();
    while let Some(job) = jobs.recv().await {
        let how = match &job.stop {
            Stop::Command(argv) => stop_command(&job, argv, &counts).await,
            &Stop::Element(elem) => match socket.call(|n| n.delete(elem)) {
                Ok(true) => {
                    verbose!("{}: element {} deleted", job.door, show(elem));
                    Closed::Done
                }
                Ok(false) => {
                    verbose!(
                        "{}: element {} was gone already (the kernel's timeout)",
                        job.door,
                        show(elem)
                    );
                    Closed::AlreadyGone
                }
                Err(e) => Closed::Failed(e.to_string()),
            },
        };
        if let Closed::Failed(_) = how {
            counts.stop_failed();
        }
        let _ = done.send(Done::Stopped { id: job.id, how });
    }
}

async fn stop_command(job: &StopJob, argv: &[String], counts: &Counts) -> Closed {
    info!("{}: running command: {}", job.door, commands::display(argv));
    match counts.run(argv).await {
        Ok(()) => Closed::Done,
        Err(_) if rule_already_gone(argv).await => {
            info!(
                "{}: the rule for {} was already gone from the firewall (deleted by hand?)",
                job.door, job.addr
            );
            Closed::AlreadyGone
        }
        Err(e) => Closed::Failed(e.to_string()),
    }
}

async fn recheck(door: &str, start: &[String], counts: &Counts) {
    let RuleOp::Insert(rule) = rule_op(start) else {
        return;
    };
    let Some(check) = check_argv(start, &rule) else {
        return;
    };
    if rule_present(&check).await == Some(false) {
        info!("{door}: the rule of this grant is not in the firewall; inserting it again");
        info!("{door}: running command: {}", commands::display(start));
        if let Err(e) = counts.run(start).await {
            error!("{door}: command failed: {e}");
            counts.start_failed();
        }
    }
}

async fn run_once(
    door: &str,
    argv: &[String],
    applied: &mut HashSet<Vec<String>>,
    counts: &Counts,
) {
    let op = rule_op(argv);
    if let RuleOp::Insert(rule) = &op {
        // One rule, not two. For iptables the firewall itself is asked (`-C`): it knows about
        // a rule inserted before a restart, and about one deleted by hand since this daemon
        // inserted it (memory alone would then skip the insert, and the knock would never
        // open again). Other tools, and a check that cannot answer, fall back on what this
        // daemon inserted and has not deleted since.
        let present = match check_argv(argv, rule) {
            Some(check) => rule_present(&check).await,
            None => None,
        }
        .unwrap_or_else(|| applied.contains(rule));
        if present {
            applied.insert(rule.clone());
            info!(
                "{door}: rule already in place (inserted by an earlier knock and not deleted \
                 since); not inserting it twice"
            );
            return;
        }
    }
    info!("{door}: running command: {}", commands::display(argv));
    match counts.run(argv).await {
        Ok(()) => match op {
            RuleOp::Insert(rule) => {
                applied.insert(rule);
            }
            RuleOp::Delete(rule) => {
                applied.remove(&rule);
            }
            RuleOp::Other => {}
        },
        Err(_) if rule_already_gone(argv).await => {
            if let RuleOp::Delete(rule) = op {
                applied.remove(&rule);
            }
            info!("{door}: the rule was already gone from the firewall; nothing to delete");
        }
        Err(e) => {
            error!("{door}: command failed: {e}");
            counts.start_failed();
        }
    }
}

/// Whether a failed iptables delete failed because its rule is not in the firewall (asked
/// with `-C`): then the grant is closed all the same. Other tools cannot be asked.
async fn rule_already_gone(stop: &[String]) -> bool {
    let RuleOp::Delete(rule) = rule_op(stop) else {
        return false;
    };
    match check_argv(stop, &rule) {
        Some(check) => rule_present(&check).await == Some(false),
        None => false,
    }
}
