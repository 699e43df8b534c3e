//! Supervision: each long-lived part of the daemon (the packet thread, the grant keeper task)
//! beats a [`Heartbeat`] as it loops and marks it ended when it stops, however it stops (a
//! panic unwinds through the [`Alive`] guard). The main loop looks at both every
//! [`tick`](Supervisor::tick): a part that ended makes the daemon exit with status 1 (so
//! systemd's `Restart=on-failure` restarts it) instead of living on half alive with grants
//! that never close; while both beat, it sends systemd's `WATCHDOG=1` (when `WatchdogSec=` is
//! set), so a part that hangs gets the daemon restarted too.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A part stalls when its heartbeat has not moved for this long. The packet thread beats at
/// least every 100 ms and the grant keeper at least every [`KEEPER_BEAT`]; a firewall command
/// may hold the keeper for its 20 s time limit (or a few, for a grant of several ports).
pub const STALL_AFTER: Duration = Duration::from_secs(45);
/// The grant keeper wakes at least this often, to beat.
pub const KEEPER_BEAT: Duration = Duration::from_secs(1);
/// How often the main loop looks, without a watchdog.
const TICK: Duration = Duration::from_secs(1);

/// A part's sign of life.
#[derive(Debug, Default)]
pub struct Heartbeat {
    beats: AtomicU64,
    ended: AtomicBool,
}

impl Heartbeat {
    /// Records one turn of the part's loop.
    pub fn beat(&self) {
        self.beats.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the part stopped.
    pub fn ended(&self) -> bool {
        self.ended.load(Ordering::Relaxed)
    }

    /// A guard the part holds while it runs: dropping it (a return or a panic) marks the
    /// heartbeat ended.
    pub fn alive(self: &Arc<Self>) -> Alive {
        Alive(self.clone())
    }
}

/// See [`Heartbeat::alive`].
#[derive(Debug)]
pub struct Alive(Arc<Heartbeat>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.ended.store(true, Ordering::Relaxed);
    }
}

/// One watched part: its name for the log, its heartbeat, and when the beat last moved.
#[derive(Debug)]
struct Watched {
    name: &'static str,
    heart: Arc<Heartbeat>,
    seen: u64,
    moved: Instant,
}

/// What the main loop should do after a [`Supervisor::tick`].
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every part is live (and `WATCHDOG=1` went out, when asked for).
    Live,
    /// A part beats no more: no `WATCHDOG=1` (systemd will restart the daemon when its
    /// watchdog is on).
    Stalled(&'static str),
    /// A part ended: exit with status 1.
    Ended(&'static str),
}

/// Watches the parts.
#[derive(Debug)]
pub struct Supervisor {
    parts: Vec<Watched>,
    /// Half of systemd's `WATCHDOG_USEC`, when set.
    watchdog: Option<Duration>,
}

impl Supervisor {
    /// Watches `parts` (name, heartbeat); pings systemd's watchdog every `watchdog`.
    pub fn new(parts: &[(&'static str, Arc<Heartbeat>)], watchdog: Option<Duration>) -> Self {
        let now = Instant::now();
        let parts = parts
            .iter()
            .map(|(name, heart)| Watched {
                name,
                heart: heart.clone(),
                seen: heart.beats.load(Ordering::Relaxed),
                moved: now,
            })
            .collect();
        Self { parts, watchdog }
    }

    /// How often to call [`tick`](Self::tick).
    pub fn interval(&self) -> Duration {
        self.watchdog.map_or(TICK, |w| w.min(TICK))
    }

    /// Looks at every part at `now`.
    pub fn tick(&mut self, now: Instant) -> Verdict {
        let mut verdict = Verdict::Live;
        for p in &mut self.parts {
            if p.heart.ended() {
                return Verdict::Ended(p.name);
            }
            let beats = p.heart.beats.load(Ordering::Relaxed);
            if beats != p.seen {
                p.seen = beats;
                p.moved = now;
            } else if now.duration_since(p.moved) >= STALL_AFTER && verdict == Verdict::Live {
                verdict = Verdict::Stalled(p.name);
            }
        }
        if verdict == Verdict::Live && self.watchdog.is_some() {
            super::notify::send("WATCHDOG=1");
        }
        verdict
    }
}

/// Faults for the tests of this module's promise, in debug builds only:
/// `KNOCK_SPAD_FAULT=packets` makes the packet thread panic at a UDP payload
/// `knock-spad-fault` to the SPA port,
/// `KNOCK_SPAD_FAULT=grants` the grant keeper at its first action,
/// `KNOCK_SPAD_FAULT=grants-stall` blocks the grant keeper for 15 s at its first action (as a
/// stalled disk would; the packet thread's queue then fills).
/// Read once (the packet thread asks at every packet).
pub fn fault(part: &str) -> bool {
    static FAULT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    cfg!(debug_assertions)
        && FAULT
            .get_or_init(|| std::env::var("KNOCK_SPAD_FAULT").ok())
            .as_deref()
            == Some(part)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_that_ends_or_stops_beating_is_reported() {
        let packets = Arc::new(Heartbeat::default());
        let grants = Arc::new(Heartbeat::default());
        let mut s = Supervisor::new(
            &[("packets", packets.clone()), ("grants", grants.clone())],
            None,
        );
        let t0 = Instant::now();
        assert_eq!(s.tick(t0), Verdict::Live);
        // The grant keeper beats, the packet thread does not: stalled after STALL_AFTER.
        grants.beat();
        assert_eq!(s.tick(t0 + STALL_AFTER / 2), Verdict::Live);
        grants.beat();
        assert_eq!(s.tick(t0 + STALL_AFTER), Verdict::Stalled("packets"));
        packets.beat();
        grants.beat();
        assert_eq!(s.tick(t0 + STALL_AFTER * 2), Verdict::Live);
        // A panic unwinding through the guard marks the part ended.
        let g = grants.clone();
        let joined = std::thread::spawn(move || {
            let _alive = g.alive();
            panic!("injected");
        })
        .join();
        assert!(joined.is_err());
        assert_eq!(s.tick(t0 + STALL_AFTER * 2), Verdict::Ended("grants"));
    }
}
