//! The classic knock-sequence tracker: knockd's semantics, bounded memory.
//!
//! A [`SequenceTracker`] is fed one [`Hit`] per captured packet (with the current time in
//! milliseconds, from the caller: this module reads no clock and does no I/O) and appends
//! [`Event`]s to a vector the caller reuses. The server turns `Event::Open` into a grant and
//! logs the others the way knockd does (`Stage N`, `OPEN SESAME`, `sequence timeout`).
//!
//! # Rules
//!
//! State is per (source address, door): interleaved knockers, and one knocker working on two
//! doors, are independent. For each door, in order:
//!
//! 1. **Visibility.** A hit is seen at all only if some door would have let it through
//!    knockd's BPF filter: its (protocol, port) is in that door's sequence, its TCP flags match
//!    that door's `tcp_flags`, and its destination is that door's `target` if it has one, or
//!    else one of this host's own addresses ([`Hit::to_host`], which the caller decides, as
//!    knockd's `dst host` clause does). A hit on a port that is in no sequence never resets
//!    anything. (The server builds its capture filter from [`SequenceTracker::ports`].)
//! 2. **Ignored for this door:** a TCP hit whose flags do not match the door's `tcp_flags`,
//!    or a hit whose destination is not the door's `target` (or, without a `target`, not this
//!    host). No progress, no reset.
//! 3. **Timeout.** Every hit must arrive strictly less than `seq_timeout_ms` after the
//!    attempt's first hit. Before any hit is processed, every attempt whose deadline has
//!    passed is removed with [`Event::Timeout`] (knockd purges the same way on every packet);
//!    the hit is then handled as if there had been no attempt. [`SequenceTracker::expire`]
//!    does the same purge without a hit.
//! 4. **Advance.** The hit is the next expected step → [`Event::Stage`] (1-based, also for
//!    the last step); completing the sequence → [`Event::Open`] and the attempt is gone.
//!    Advancing takes priority over rule 5, so a sequence may repeat a port (`7000,7000,8000`).
//! 5. **Duplicate.** The hit equals the step just matched (a TCP SYN retransmitted because
//!    the firewall drops it, `nc -z`, a doubled UDP knock) → ignored. *knockd aborts here.* At
//!    stage 1 a repeated first knock instead restarts the attempt (a new first hit, a new
//!    `Stage 1`): otherwise a stale stage-1 attempt, e.g. the close door started by the last
//!    knock of the open sequence `7000,8000,9000` / `9000,8000,7000`, would make a later
//!    knock time out against the old start time.
//! 6. **Reset.** Any other hit → [`Event::Reset`] and the attempt is gone; if the hit is the
//!    door's first step a new attempt starts at stage 1 at once. *knockd ignores a fresh
//!    first knock until `seq_timeout` has passed after an abort.*
//! 7. **Start.** No attempt and the hit is the door's first step → `Stage 1` (and `Open` at
//!    once for a one-port sequence, which keeps no state).
//!
//! # Memory bound and eviction
//!
//! At most [`TrackerLimits::max_attempts`] attempts exist, in two pools:
//!
//! - **Probation** (`max_attempts − max_protected` slots): new attempts, at stage 1. When it
//!   is full, a new attempt evicts the *oldest* probation attempt ([`Event::Evicted`]). FIFO
//!   guarantee: a probation attempt is evicted only after `probation` newer attempts were
//!   created, so at a flood of R new first knocks per second it survives at least
//!   `probation / R` seconds (49 152 slots at 100 000 spoofed SYN/s: about 0.5 s), and up to its
//!   timeout when `R · seq_timeout < probation`.
//! - **Protected** (`max_protected` slots): an attempt that advances to stage ≥ 2 moves here if
//!   there is room. A protected attempt is never evicted: it ends only by its own source's
//!   hits (open or reset), by its timeout, or by [`SequenceTracker::set_sequence`] on its door.
//!   Filling this pool takes, per slot, a source that sent the door's first *two* knocks in
//!   order, i.e. knowledge of part of the secret. When it is full, an advancing attempt is not
//!   refused and does not displace anyone: it stays in probation, unprotected, and is
//!   promoted at a later advance if room has appeared. (Evicting the protected attempt
//!   closest to expiry would let anyone who knows two ports push legitimate knockers out;
//!   refusing would turn a full pool into a hard denial.)
//!
//! Lookups are one `HashMap` probe per door (std's randomly keyed SipHash, so an attacker
//! cannot aim collisions); expiry is a min-heap of deadlines with lazy deletion, compacted
//! when it reaches twice the cap. Storage grows on demand up to the cap and is then reused:
//! no allocation per packet in the steady state. docs/TRACKER.md has the design notes.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::net::IpAddr;

use crate::frame::Packet;
pub use crate::types::TcpFlags;
use crate::types::{PortSpec, Proto};

/// One knock door, as the tracker needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeqDoorSpec {
    /// The door's name (for logs; the tracker reports doors by index).
    pub name: String,
    /// The knocks, in order. An empty sequence disables the door.
    pub sequence: Vec<PortSpec>,
    /// The whole sequence must arrive within this many milliseconds of its first knock.
    pub seq_timeout_ms: u64,
    /// Flags TCP knocks must carry; others are ignored for this door.
    pub tcp_flags: TcpFlags,
    /// If set, knocks must be addressed to this address; others are ignored for this door.
    pub target: Option<IpAddr>,
}

impl SeqDoorSpec {
    /// Whether `hit` passes this door's flag and destination checks (rule 2 of the module
    /// doc): addressed to the door's `target`, or without one, to this host.
    pub fn sees(&self, hit: &Hit) -> bool {
        let flags_ok = hit.proto == Proto::Udp || self.tcp_flags.matches(hit.tcp_flags);
        let dst_ok = match self.target {
            Some(t) => t == hit.dst,
            None => hit.to_host,
        };
        flags_ok && dst_ok
    }
}

/// How much state the tracker may keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackerLimits {
    /// Attempts in flight, all doors and sources together. At least 1 is used.
    pub max_attempts: usize,
    /// How many of those are reserved for attempts past stage 1 (never evicted). Capped at
    /// `max_attempts − 1` so that new attempts always have a slot.
    pub max_protected: usize,
}

impl TrackerLimits {
    /// The default cap.
    pub const DEFAULT_MAX_ATTEMPTS: usize = 65_536;

    /// `max_attempts` in all, a quarter of them protected: probation gets most slots because
    /// its survival time under a flood is what a first knock needs, while the protected pool
    /// only holds knockers who are genuinely mid-sequence.
    pub const fn new(max_attempts: usize) -> Self {
        Self {
            max_attempts,
            max_protected: max_attempts / 4,
        }
    }
}

impl Default for TrackerLimits {
    fn default() -> Self {
        Self::new(Self::DEFAULT_MAX_ATTEMPTS)
    }
}

/// One observed packet, reduced to what knocking looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    /// Source address: whose attempt this is.
    pub src: IpAddr,
    /// Destination address, compared with a door's `target`.
    pub dst: IpAddr,
    /// Whether `dst` is one of this host's own addresses: a door without a `target` sees
    /// only such hits (a knock for another host that passes through, or that the capture sees
    /// on a bridge, is not a knock on this one).
    pub to_host: bool,
    /// TCP or UDP.
    pub proto: Proto,
    /// Destination port.
    pub dport: u16,
    /// TCP flags byte; ignored for UDP.
    pub tcp_flags: u8,
}

impl Hit {
    /// The hit a captured packet makes; `to_host` as the caller found it. Addresses are
    /// canonical (an IPv4-mapped IPv6 address becomes the IPv4 address), as on the SPA path.
    pub fn from_packet(p: &Packet<'_>, to_host: bool) -> Self {
        Self {
            src: crate::types::canonical(p.src),
            dst: crate::types::canonical(p.dst),
            to_host,
            proto: p.proto,
            dport: p.dport,
            tcp_flags: p.tcp_flags,
        }
    }
}

/// What a hit (or an expiry pass) did. `door` is an index into the tracker's doors; `stage`
/// counts matched knocks, from 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Event {
    /// `src` matched knock number `stage` of `door` (knockd: `Stage N`).
    Stage {
        /// Door index.
        door: usize,
        /// Knocker.
        src: IpAddr,
        /// Knocks matched so far, 1-based.
        stage: usize,
    },
    /// `src` completed `door`'s sequence (knockd: `OPEN SESAME`). The attempt is gone.
    Open {
        /// Door index.
        door: usize,
        /// Knocker.
        src: IpAddr,
    },
    /// The attempt had matched `stage` knocks when its time ran out (knockd: `sequence
    /// timeout (stage N)`).
    Timeout {
        /// Door index.
        door: usize,
        /// Knocker.
        src: IpAddr,
        /// Knocks matched before the timeout.
        stage: usize,
    },
    /// A wrong knock discarded the attempt, which had matched `stage` knocks.
    Reset {
        /// Door index.
        door: usize,
        /// Knocker.
        src: IpAddr,
        /// Knocks matched before the wrong one.
        stage: usize,
    },
    /// The probation pool was full and this, its oldest attempt, made room for a new one.
    /// Counted, not a knockd log line: a steady stream of these means a flood.
    Evicted {
        /// Door index.
        door: usize,
        /// Knocker.
        src: IpAddr,
        /// Knocks matched before eviction.
        stage: usize,
    },
}

impl Event {
    /// The door the event is about.
    pub const fn door(&self) -> usize {
        match *self {
            Event::Stage { door, .. }
            | Event::Open { door, .. }
            | Event::Timeout { door, .. }
            | Event::Reset { door, .. }
            | Event::Evicted { door, .. } => door,
        }
    }

    /// The knocker the event is about.
    pub const fn src(&self) -> IpAddr {
        match *self {
            Event::Stage { src, .. }
            | Event::Open { src, .. }
            | Event::Timeout { src, .. }
            | Event::Reset { src, .. }
            | Event::Evicted { src, .. } => src,
        }
    }
}

/// [`SequenceTracker::set_sequence`] was given a door index that does not exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoSuchDoor(pub usize);

impl fmt::Display for NoSuchDoor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no door with index {}", self.0)
    }
}

impl std::error::Error for NoSuchDoor {}

/// End of a probation list.
const NIL: usize = usize::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pool {
    Free,
    Probation,
    Protected,
}

/// One attempt's storage. Slots are reused; `generation` changes on every reuse so that a
/// deadline left in the heap by an earlier occupant is recognised as stale.
#[derive(Clone, Copy, Debug)]
struct Slot {
    src: IpAddr,
    door: usize,
    /// Knocks matched, ≥ 1 while the slot is in use.
    stage: usize,
    deadline_ms: u64,
    generation: u64,
    pool: Pool,
    /// Probation list neighbours (older, newer); `NIL` outside the list.
    prev: usize,
    next: usize,
}

/// A deadline in the heap: (deadline, slot, generation), smallest deadline on top.
type DeadlineEntry = Reverse<(u64, usize, u64)>;

/// Tracks knock attempts for a set of doors; see the module documentation for the rules and
/// the memory guarantee.
#[derive(Debug)]
pub struct SequenceTracker {
    doors: Vec<SeqDoorSpec>,
    /// Every port of every door, sorted and deduplicated.
    ports: Vec<PortSpec>,
    index: HashMap<(IpAddr, usize), usize>,
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// Oldest probation attempt (evicted first) and newest.
    probation_head: usize,
    probation_tail: usize,
    probation_len: usize,
    protected_len: usize,
    probation_cap: usize,
    protected_cap: usize,
    deadlines: BinaryHeap<DeadlineEntry>,
}

impl SequenceTracker {
    /// A tracker for `doors` (events name them by their index here) within `limits`.
    pub fn new(doors: Vec<SeqDoorSpec>, limits: TrackerLimits) -> Self {
        let total = limits.max_attempts.max(1);
        let protected_cap = limits.max_protected.min(total - 1);
        let mut tracker = Self {
            doors,
            ports: Vec::new(),
            index: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            probation_head: NIL,
            probation_tail: NIL,
            probation_len: 0,
            protected_len: 0,
            probation_cap: total - protected_cap,
            protected_cap,
            deadlines: BinaryHeap::new(),
        };
        tracker.rebuild_ports();
        tracker
    }

    /// The doors, in index order.
    pub fn doors(&self) -> &[SeqDoorSpec] {
        &self.doors
    }

    /// Every (protocol, port) of every door's sequence, sorted, each once. Only hits on these
    /// are ever looked at; the capture filter should pass exactly these.
    pub fn ports(&self) -> impl Iterator<Item = PortSpec> + '_ {
        self.ports.iter().copied()
    }

    /// Attempts in flight.
    pub fn len(&self) -> usize {
        self.probation_len + self.protected_len
    }

    /// Whether no attempt is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most attempts that can be in flight at once.
    pub fn capacity(&self) -> usize {
        self.probation_cap + self.protected_cap
    }

    /// Attempts in the protected pool (past stage 1, never evicted).
    pub fn protected_len(&self) -> usize {
        self.protected_len
    }

    /// Handles one hit at `now_ms`, appending what happened to `out` (which is not cleared).
    pub fn handle_hit(&mut self, now_ms: u64, hit: Hit, out: &mut Vec<Event>) {
        self.expire(now_ms, out);
        let Some(spec) = PortSpec::new(hit.proto, hit.dport) else {
            return;
        };
        if self.ports.binary_search(&spec).is_err() {
            return;
        }
        let visible = self
            .doors
            .iter()
            .any(|d| d.sequence.contains(&spec) && d.sees(&hit));
        if !visible {
            return;
        }
        for door in 0..self.doors.len() {
            self.hit_door(door, now_ms, &hit, spec, out);
        }
    }

    /// Removes every attempt whose time has run out at `now_ms`, appending an
    /// [`Event::Timeout`] for each. [`handle_hit`](Self::handle_hit) does this itself; call it
    /// periodically so that timeouts are reported (and memory freed) when no packets come.
    pub fn expire(&mut self, now_ms: u64, out: &mut Vec<Event>) {
        while let Some(&Reverse((deadline, slot, generation))) = self.deadlines.peek() {
            if deadline > now_ms {
                break;
            }
            self.deadlines.pop();
            if let Some(s) = self.live(slot, generation) {
                out.push(Event::Timeout {
                    door: s.door,
                    src: s.src,
                    stage: s.stage,
                });
                self.remove(slot);
            }
        }
    }

    /// Replaces door `door`'s sequence (one-time sequences, after each use) and discards that
    /// door's attempts in flight, silently. An empty sequence disables the door.
    pub fn set_sequence(&mut self, door: usize, sequence: Vec<PortSpec>) -> Result<(), NoSuchDoor> {
        let d = self.doors.get_mut(door).ok_or(NoSuchDoor(door))?;
        d.sequence = sequence;
        for slot in 0..self.slots.len() {
            if self
                .slots
                .get(slot)
                .is_some_and(|s| s.pool != Pool::Free && s.door == door)
            {
                self.remove(slot);
            }
        }
        self.rebuild_ports();
        Ok(())
    }

    fn rebuild_ports(&mut self) {
        self.ports.clear();
        self.ports
            .extend(self.doors.iter().flat_map(|d| d.sequence.iter().copied()));
        self.ports.sort_unstable();
        self.ports.dedup();
    }

    /// Rules 2 and 4–7 of the module doc for one door.
    fn hit_door(
        &mut self,
        door: usize,
        now_ms: u64,
        hit: &Hit,
        spec: PortSpec,
        out: &mut Vec<Event>,
    ) {
        let Some(d) = self.doors.get(door) else {
            return;
        };
        if !d.sees(hit) {
            return;
        }
        let is_first = d.sequence.first() == Some(&spec);
        let len = d.sequence.len();
        let src = hit.src;
        let Some(&slot) = self.index.get(&(src, door)) else {
            if is_first {
                self.start(door, src, now_ms, out);
            }
            return;
        };
        let Some(stage) = self.slots.get(slot).map(|s| s.stage) else {
            return;
        };
        let next = d.sequence.get(stage).copied();
        let last = stage
            .checked_sub(1)
            .and_then(|i| d.sequence.get(i))
            .copied();
        if next == Some(spec) {
            let stage = stage + 1;
            out.push(Event::Stage { door, src, stage });
            if stage >= len {
                out.push(Event::Open { door, src });
                self.remove(slot);
            } else {
                if let Some(s) = self.slots.get_mut(slot) {
                    s.stage = stage;
                }
                self.promote(slot);
            }
        } else if last == Some(spec) {
            if stage == 1 {
                // A repeated first knock: a new attempt, silently replacing the old one.
                self.remove(slot);
                self.start(door, src, now_ms, out);
            }
        } else {
            out.push(Event::Reset { door, src, stage });
            self.remove(slot);
            if is_first {
                self.start(door, src, now_ms, out);
            }
        }
    }

    /// A first knock: `Stage 1`, then `Open` or a new probation attempt.
    fn start(&mut self, door: usize, src: IpAddr, now_ms: u64, out: &mut Vec<Event>) {
        let Some(d) = self.doors.get(door) else {
            return;
        };
        let (len, timeout) = (d.sequence.len(), d.seq_timeout_ms);
        if len <= 1 {
            out.push(Event::Stage {
                door,
                src,
                stage: 1,
            });
            out.push(Event::Open { door, src });
            return;
        }
        if self.probation_len >= self.probation_cap {
            let victim = self.probation_head;
            if let Some(s) = self.slots.get(victim) {
                out.push(Event::Evicted {
                    door: s.door,
                    src: s.src,
                    stage: s.stage,
                });
                self.remove(victim);
            }
        }
        out.push(Event::Stage {
            door,
            src,
            stage: 1,
        });
        let deadline_ms = now_ms.saturating_add(timeout);
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(Slot {
                    src,
                    door,
                    stage: 0,
                    deadline_ms,
                    generation: 0,
                    pool: Pool::Free,
                    prev: NIL,
                    next: NIL,
                });
                self.slots.len() - 1
            }
        };
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        s.src = src;
        s.door = door;
        s.stage = 1;
        s.deadline_ms = deadline_ms;
        s.pool = Pool::Probation;
        let generation = s.generation;
        self.link_tail(slot);
        self.probation_len += 1;
        self.index.insert((src, door), slot);
        self.push_deadline(deadline_ms, slot, generation);
    }

    /// Moves a probation attempt to the protected pool if there is room.
    fn promote(&mut self, slot: usize) {
        let in_probation = self
            .slots
            .get(slot)
            .is_some_and(|s| s.pool == Pool::Probation);
        if in_probation && self.protected_len < self.protected_cap {
            self.unlink(slot);
            self.probation_len -= 1;
            self.protected_len += 1;
            if let Some(s) = self.slots.get_mut(slot) {
                s.pool = Pool::Protected;
            }
        }
    }

    /// Frees a slot in use: out of its pool, out of the index, onto the free list.
    fn remove(&mut self, slot: usize) {
        let Some(s) = self.slots.get(slot).copied() else {
            return;
        };
        match s.pool {
            Pool::Free => return,
            Pool::Probation => {
                self.unlink(slot);
                self.probation_len -= 1;
            }
            Pool::Protected => self.protected_len -= 1,
        }
        self.index.remove(&(s.src, s.door));
        if let Some(s) = self.slots.get_mut(slot) {
            s.pool = Pool::Free;
            s.generation = s.generation.wrapping_add(1);
        }
        self.free.push(slot);
    }

    /// The slot's attempt, if `generation` is still its current occupant.
    fn live(&self, slot: usize, generation: u64) -> Option<Slot> {
        self.slots
            .get(slot)
            .filter(|s| s.pool != Pool::Free && s.generation == generation)
            .copied()
    }

    /// Records a deadline. Entries of removed attempts stay until popped; when the heap
    /// reaches twice the cap they are dropped in one pass (amortised O(1) per push, and the
    /// heap never exceeds 2 × cap + 1 entries).
    fn push_deadline(&mut self, deadline_ms: u64, slot: usize, generation: u64) {
        if self.deadlines.len() > 2 * self.capacity() {
            let slots = &self.slots;
            self.deadlines.retain(|&Reverse((_, slot, generation))| {
                slots
                    .get(slot)
                    .is_some_and(|s| s.pool != Pool::Free && s.generation == generation)
            });
        }
        self.deadlines
            .push(Reverse((deadline_ms, slot, generation)));
    }

    fn link_tail(&mut self, slot: usize) {
        let tail = self.probation_tail;
        if let Some(s) = self.slots.get_mut(slot) {
            s.prev = tail;
            s.next = NIL;
        }
        match self.slots.get_mut(tail) {
            Some(t) => t.next = slot,
            None => self.probation_head = slot,
        }
        self.probation_tail = slot;
    }

    fn unlink(&mut self, slot: usize) {
        let Some(&Slot { prev, next, .. }) = self.slots.get(slot) else {
            return;
        };
        match self.slots.get_mut(prev) {
            Some(p) => p.next = next,
            None => self.probation_head = next,
        }
        match self.slots.get_mut(next) {
            Some(n) => n.prev = prev,
            None => self.probation_tail = prev,
        }
        if let Some(s) = self.slots.get_mut(slot) {
            s.prev = NIL;
            s.next = NIL;
        }
    }

    /// Checks every internal invariant; for tests.
    #[cfg(test)]
    fn check_invariants(&self) {
        let in_use = self.slots.iter().filter(|s| s.pool != Pool::Free).count();
        assert_eq!(in_use, self.len());
        assert_eq!(self.index.len(), self.len());
        assert_eq!(self.free.len() + in_use, self.slots.len());
        assert!(self.len() <= self.capacity());
        assert!(self.slots.len() <= self.capacity());
        assert!(self.probation_len <= self.probation_cap);
        assert!(self.protected_len <= self.protected_cap);
        assert!(self.deadlines.len() <= 2 * self.capacity() + 1);
        let protected = self
            .slots
            .iter()
            .filter(|s| s.pool == Pool::Protected)
            .count();
        assert_eq!(protected, self.protected_len);
        for (&(src, door), &slot) in &self.index {
            let s = self.slots[slot];
            assert!(s.pool != Pool::Free && s.src == src && s.door == door);
            assert!(s.stage >= 1 && s.stage < self.doors[door].sequence.len());
            assert!(s.pool == Pool::Probation || s.stage >= 2);
        }
        // Walk the probation list both ways.
        let (mut n, mut cur, mut prev) = (0, self.probation_head, NIL);
        while cur != NIL {
            let s = self.slots[cur];
            assert_eq!(s.pool, Pool::Probation);
            assert_eq!(s.prev, prev);
            n += 1;
            assert!(n <= self.probation_len);
            prev = cur;
            cur = s.next;
        }
        assert_eq!(n, self.probation_len);
        assert_eq!(self.probation_tail, prev);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const SYN: u8 = TcpFlags::SYN;
    const ACK: u8 = TcpFlags::ACK;
    const SERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
    const ALICE: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
    const BOB: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 20));
    const CAROL6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x30));

    fn tcp(port: u16) -> PortSpec {
        PortSpec::new(Proto::Tcp, port).expect("non-zero port")
    }

    fn udp(port: u16) -> PortSpec {
        PortSpec::new(Proto::Udp, port).expect("non-zero port")
    }

    fn door(name: &str, sequence: &[PortSpec], timeout_s: u64) -> SeqDoorSpec {
        SeqDoorSpec {
            name: name.into(),
            sequence: sequence.to_vec(),
            seq_timeout_ms: timeout_s * 1000,
            tcp_flags: TcpFlags {
                must_set: SYN,
                must_clear: 0,
            },
            target: None,
        }
    }

    /// knockd's walkthrough: openSSH 7000,8000,9000 / closeSSH 9000,8000,7000, 15 s, syn.
    fn walkthrough() -> Vec<SeqDoorSpec> {
        vec![
            door("openSSH", &[tcp(7000), tcp(8000), tcp(9000)], 15),
            door("closeSSH", &[tcp(9000), tcp(8000), tcp(7000)], 15),
        ]
    }

    fn tracker(doors: Vec<SeqDoorSpec>) -> SequenceTracker {
        SequenceTracker::new(doors, TrackerLimits::default())
    }

    fn hit_flags(src: IpAddr, spec: PortSpec, flags: u8) -> Hit {
        Hit {
            src,
            dst: SERVER,
            to_host: true,
            proto: spec.proto,
            dport: spec.port.get(),
            tcp_flags: flags,
        }
    }

    fn syn(src: IpAddr, spec: PortSpec) -> Hit {
        hit_flags(src, spec, if spec.proto == Proto::Tcp { SYN } else { 0 })
    }

    /// Feeds hits at the given times and returns all events.
    fn feed(t: &mut SequenceTracker, hits: &[(u64, Hit)]) -> Vec<Event> {
        let mut out = Vec::new();
        for &(now, hit) in hits {
            t.handle_hit(now, hit, &mut out);
            t.check_invariants();
        }
        out
    }

    fn opens(events: &[Event]) -> Vec<(usize, IpAddr)> {
        events
            .iter()
            .filter_map(|e| match *e {
                Event::Open { door, src } => Some((door, src)),
                _ => None,
            })
            .collect()
    }

    fn stage(door: usize, src: IpAddr, stage: usize) -> Event {
        Event::Stage { door, src, stage }
    }

    #[test]
    fn flags_spec() {
        let syn_not_ack = TcpFlags {
            must_set: SYN,
            must_clear: ACK,
        };
        assert!(syn_not_ack.matches(SYN));
        assert!(syn_not_ack.matches(SYN | TcpFlags::PSH));
        assert!(!syn_not_ack.matches(SYN | ACK));
        assert!(!syn_not_ack.matches(0));
        assert!(TcpFlags::ANY.matches(0xff));
        assert!(TcpFlags::default().matches(0));
    }

    #[test]
    fn knockd_walkthrough_open_then_close() {
        let mut t = tracker(walkthrough());
        let seq = [7000, 8000, 9000];
        let hits: Vec<_> = seq
            .iter()
            .enumerate()
            .map(|(i, &p)| (i as u64 * 500, syn(ALICE, tcp(p))))
            .collect();
        let events = feed(&mut t, &hits);
        assert_eq!(
            events,
            [
                stage(0, ALICE, 1),
                stage(0, ALICE, 2),
                stage(0, ALICE, 3),
                Event::Open {
                    door: 0,
                    src: ALICE
                },
                // 9000 is also closeSSH's first knock: state is per (source, door).
                stage(1, ALICE, 1),
            ]
        );
        // The close knock, 2 s later: its first knock restarts that stage-1 attempt.
        let hits: Vec<_> = [9000, 8000, 7000]
            .iter()
            .enumerate()
            .map(|(i, &p)| (2000 + i as u64 * 500, syn(ALICE, tcp(p))))
            .collect();
        let events = feed(&mut t, &hits);
        assert_eq!(
            events,
            [
                stage(1, ALICE, 1),
                stage(1, ALICE, 2),
                // Within one hit, events come in door order.
                stage(0, ALICE, 1),
                stage(1, ALICE, 3),
                Event::Open {
                    door: 1,
                    src: ALICE
                },
            ]
        );
    }

    #[test]
    fn close_started_late_in_a_stale_window_still_works() {
        // The opening's last knock starts closeSSH at t=1000 (deadline 16 000). Closing at
        // 15 000..16 000 would time out against that start if the repeated 9000 were ignored.
        let mut t = tracker(walkthrough());
        let mut hits: Vec<_> = [7000, 8000, 9000]
            .iter()
            .enumerate()
            .map(|(i, &p)| (i as u64 * 500, syn(ALICE, tcp(p))))
            .collect();
        hits.extend([
            (15_000, syn(ALICE, tcp(9000))),
            (15_500, syn(ALICE, tcp(8000))),
            (16_000, syn(ALICE, tcp(7000))),
        ]);
        let events = feed(&mut t, &hits);
        assert_eq!(opens(&events), [(0, ALICE), (1, ALICE)]);
    }

    #[test]
    fn knock_with_no_delay() {
        let mut t = tracker(walkthrough());
        let events = feed(&mut t, &[7000, 8000, 9000].map(|p| (5, syn(ALICE, tcp(p)))));
        assert_eq!(opens(&events), [(0, ALICE)]);
    }

    #[test]
    fn mixed_tcp_udp_sequence() {
        let mut t = tracker(vec![door("mixed", &[udp(2222), tcp(3333), udp(4444)], 10)]);
        // TCP on a UDP step is a different knock: visible only if tcp/2222 were a door port.
        let events = feed(
            &mut t,
            &[
                (0, syn(ALICE, udp(2222))),
                (10, syn(ALICE, tcp(3333))),
                (20, syn(ALICE, udp(4444))),
            ],
        );
        assert_eq!(opens(&events), [(0, ALICE)]);
        // udp/3333 is in no sequence: never seen, no reset.
        let events = feed(
            &mut t,
            &[
                (100, syn(ALICE, udp(2222))),
                (110, syn(ALICE, udp(3333))),
                (120, syn(ALICE, tcp(3333))),
                (130, syn(ALICE, udp(4444))),
            ],
        );
        assert_eq!(opens(&events), [(0, ALICE)]);
        // tcp/4444 in place of udp/4444 is not in the sequence either.
        let events = feed(
            &mut t,
            &[
                (200, syn(ALICE, udp(2222))),
                (210, syn(ALICE, tcp(3333))),
                (220, syn(ALICE, tcp(4444))),
            ],
        );
        assert_eq!(opens(&events), []);
        // ... but udp/2222 at stage 2 is a wrong knock of this door: reset and restart.
        let events = feed(&mut t, &[(230, syn(ALICE, udp(2222)))]);
        assert_eq!(
            events,
            [
                Event::Reset {
                    door: 0,
                    src: ALICE,
                    stage: 2
                },
                stage(0, ALICE, 1),
            ]
        );
    }

    #[test]
    fn too_slow_times_out_and_the_late_knock_counts_afresh() {
        let mut t = tracker(walkthrough());
        let events = feed(
            &mut t,
            &[
                (0, syn(ALICE, tcp(7000))),
                (14_000, syn(ALICE, tcp(8000))),
                (15_000, syn(ALICE, tcp(9000))),
            ],
        );
        // At exactly seq_timeout the attempt is over (knockd: `now - start >= timeout`).
        assert_eq!(
            events,
            [
                stage(0, ALICE, 1),
                stage(0, ALICE, 2),
                Event::Timeout {
                    door: 0,
                    src: ALICE,
                    stage: 2
                },
                stage(1, ALICE, 1),
            ]
        );
        let events = feed(
            &mut t,
            &[
                (15_001, syn(ALICE, tcp(8000))),
                (29_999, syn(ALICE, tcp(7000))),
            ],
        );
        assert_eq!(
            events,
            [
                stage(1, ALICE, 2),
                stage(0, ALICE, 1),
                stage(1, ALICE, 3),
                Event::Open {
                    door: 1,
                    src: ALICE
                },
            ]
        );
    }

    #[test]
    fn expire_reports_timeouts_without_packets() {
        let mut t = tracker(walkthrough());
        feed(
            &mut t,
            &[
                (0, syn(ALICE, tcp(7000))),
                (1000, syn(BOB, tcp(7000))),
                (2000, syn(BOB, tcp(8000))),
            ],
        );
        assert_eq!(t.len(), 2);
        let mut out = Vec::new();
        t.expire(14_999, &mut out);
        assert_eq!(out, []);
        t.expire(15_000, &mut out);
        assert_eq!(
            out,
            [Event::Timeout {
                door: 0,
                src: ALICE,
                stage: 1
            }]
        );
        t.expire(u64::MAX, &mut out);
        assert_eq!(
            out[1],
            Event::Timeout {
                door: 0,
                src: BOB,
                stage: 2
            }
        );
        assert!(t.is_empty());
        t.check_invariants();
    }

    #[test]
    fn wrong_order_does_not_open() {
        let mut t = tracker(vec![door(
            "openSSH",
            &[tcp(7000), tcp(8000), tcp(9000)],
            15,
        )]);
        let events = feed(&mut t, &[8000, 7000, 9000].map(|p| (0, syn(ALICE, tcp(p)))));
        assert_eq!(
            events,
            [
                stage(0, ALICE, 1),
                Event::Reset {
                    door: 0,
                    src: ALICE,
                    stage: 1
                },
            ]
        );
        assert!(t.is_empty());
    }

    #[test]
    fn wrong_port_in_between_resets_only_if_it_is_a_door_port() {
        let mut doors = walkthrough();
        doors.push(door("other", &[tcp(5555), tcp(6666)], 15));
        let mut t = tracker(doors);
        // 1234 is in no sequence: invisible, as behind knockd's BPF filter.
        let events = feed(
            &mut t,
            &[7000, 8000, 1234, 9000].map(|p| (0, syn(ALICE, tcp(p)))),
        );
        assert_eq!(opens(&events), [(0, ALICE)]);
        // 6666 is another door's port: it resets.
        let events = feed(
            &mut t,
            &[7000, 8000, 6666, 9000].map(|p| (100, syn(ALICE, tcp(p)))),
        );
        assert!(events.contains(&Event::Reset {
            door: 0,
            src: ALICE,
            stage: 2
        }));
        assert_eq!(opens(&events), []);
    }

    #[test]
    fn retry_right_after_an_abort_works_at_once() {
        let mut t = tracker(walkthrough());
        let events = feed(
            &mut t,
            &[
                (0, syn(ALICE, tcp(7000))),
                (10, syn(ALICE, tcp(9000))), // wrong: resets openSSH (and starts closeSSH)
                (20, syn(ALICE, tcp(7000))),
                (30, syn(ALICE, tcp(8000))),
                (40, syn(ALICE, tcp(9000))),
            ],
        );
        assert!(events.contains(&Event::Reset {
            door: 0,
            src: ALICE,
            stage: 1
        }));
        assert_eq!(opens(&events)[0], (0, ALICE));
        // The wrong knock is itself the first knock: it starts the new attempt.
        let mut t = tracker(walkthrough());
        let events = feed(
            &mut t,
            &[7000, 8000, 7000, 8000, 9000].map(|p| (0, syn(ALICE, tcp(p)))),
        );
        assert_eq!(
            &events[..4],
            [
                stage(0, ALICE, 1),
                stage(0, ALICE, 2),
                Event::Reset {
                    door: 0,
                    src: ALICE,
                    stage: 2
                },
                stage(0, ALICE, 1),
            ]
        );
        assert_eq!(opens(&events)[0], (0, ALICE));
    }

    #[test]
    fn duplicate_hits_do_not_abort() {
        let mut t = tracker(vec![door(
            "openSSH",
            &[tcp(7000), tcp(8000), tcp(9000)],
            15,
        )]);
        let events = feed(
            &mut t,
            &[
                (0, syn(ALICE, tcp(7000))),
                (1000, syn(ALICE, tcp(7000))), // SYN retransmit at stage 1: restarts
                (1500, syn(ALICE, tcp(8000))),
                (2500, syn(ALICE, tcp(8000))), // retransmit at stage 2: ignored
                (3500, syn(ALICE, tcp(8000))),
                (4000, syn(ALICE, tcp(9000))),
            ],
        );
        assert_eq!(
            events,
            [
                stage(0, ALICE, 1),
                stage(0, ALICE, 1),
                stage(0, ALICE, 2),
                stage(0, ALICE, 3),
                Event::Open {
                    door: 0,
                    src: ALICE
                },
            ]
        );
    }

    #[test]
    fn repeated_port_in_sequence_advances_first() {
        let mut t = tracker(vec![door("twice", &[tcp(7000), tcp(7000), tcp(8000)], 15)]);
        let events = feed(
            &mut t,
            &[7000, 7000, 7000, 8000].map(|p| (0, syn(ALICE, tcp(p)))),
        );
        assert_eq!(
            events,
            [
                stage(0, ALICE, 1),
                stage(0, ALICE, 2),
                // third 7000 duplicates step 2: ignored
                stage(0, ALICE, 3),
                Event::Open {
                    door: 0,
                    src: ALICE
                },
            ]
        );
    }

    #[test]
    fn non_matching_flags_are_ignored_in_between() {
        let mut doors = walkthrough();
        doors.push(SeqDoorSpec {
            tcp_flags: TcpFlags::ANY,
            ..door("anyflags", &[tcp(5555), tcp(6666)], 15)
        });
        let mut t = tracker(doors);
        let events = feed(
            &mut t,
            &[
                (0, syn(ALICE, tcp(7000))),
                (1, hit_flags(ALICE, tcp(8000), ACK)), // not SYN: ignored by openSSH
                (2, hit_flags(ALICE, tcp(9000), SYN | ACK)), // SYN set: matches `syn`, wrong port
            ],
        );
        assert!(events.contains(&Event::Reset {
            door: 0,
            src: ALICE,
            stage: 1
        }));
        let events = feed(
            &mut t,
            &[
                (10, syn(ALICE, tcp(7000))),
                (11, hit_flags(ALICE, tcp(8000), ACK)),
                (12, hit_flags(ALICE, tcp(5555), ACK)), // visible (anyflags door), not SYN for openSSH
                (13, hit_flags(ALICE, tcp(9000), TcpFlags::RST)),
                (14, syn(ALICE, tcp(8000))),
                (15, syn(ALICE, tcp(9000))),
            ],
        );
        assert_eq!(opens(&events), [(0, ALICE)]);
    }

    #[test]
    fn interleaved_sources_open_only_for_themselves() {
        let mut t = tracker(walkthrough());
        let events = feed(
            &mut t,
            &[
                (0, syn(ALICE, tcp(7000))),
                (1, syn(BOB, tcp(7000))),
                (2, syn(ALICE, tcp(8000))),
                (3, syn(BOB, tcp(8000))),
                (4, syn(BOB, tcp(9000))),
                (5, syn(ALICE, tcp(9000))),
            ],
        );
        assert_eq!(opens(&events), [(0, BOB), (0, ALICE)]);
        // Bob knocking Alice's next port does nothing to Alice.
        let events = feed(
            &mut t,
            &[
                (10, syn(CAROL6, tcp(7000))),
                (11, syn(BOB, tcp(8000))),
                (12, syn(CAROL6, tcp(8000))),
                (13, syn(CAROL6, tcp(9000))),
            ],
        );
        assert_eq!(opens(&events), [(0, CAROL6)]);
    }

    #[test]
    fn one_source_on_two_doors_is_independent() {
        let mut doors = walkthrough();
        doors.push(door("other", &[tcp(5555), tcp(6666)], 15));
        let mut t = tracker(doors);
        let events = feed(&mut t, &[7000, 5555, 6666].map(|p| (0, syn(ALICE, tcp(p)))));
        // 5555 resets openSSH (a visible wrong knock), but "other" starts anyway (knockd
        // would not start it while an openSSH attempt exists).
        assert_eq!(opens(&events), [(2, ALICE)]);
    }

    /// A door without a `target` counts only knocks addressed to this host: the same
    /// sequence sent to another host (seen passing through, or on a bridge) is no knock here,
    /// and does not reset an attempt either.
    #[test]
    fn knocks_for_another_host_are_ignored() {
        let mut t = tracker(vec![door("ssh", &[tcp(7000), tcp(8000)], 15)]);
        let other: IpAddr = Ipv4Addr::new(10, 99, 0, 77).into();
        let elsewhere = |port| Hit {
            dst: other,
            to_host: false,
            ..syn(ALICE, tcp(port))
        };
        let events = feed(&mut t, &[(0, elsewhere(7000)), (1, elsewhere(8000))]);
        assert_eq!(events, []);
        let events = feed(
            &mut t,
            &[
                (2, syn(ALICE, tcp(7000))),
                (3, elsewhere(9999)),
                (4, elsewhere(7000)),
                (5, syn(ALICE, tcp(8000))),
            ],
        );
        assert_eq!(opens(&events), [(0, ALICE)]);
    }

    #[test]
    fn target_mismatch_is_ignored() {
        let elsewhere: IpAddr = Ipv4Addr::new(203, 0, 113, 9).into();
        let mut t = tracker(vec![SeqDoorSpec {
            target: Some(elsewhere),
            ..door("fwd", &[tcp(7000), tcp(8000)], 15)
        }]);
        let to = |dst: IpAddr, port| Hit {
            dst,
            to_host: dst == SERVER,
            ..syn(ALICE, tcp(port))
        };
        let events = feed(&mut t, &[(0, to(SERVER, 7000)), (1, to(SERVER, 8000))]);
        assert_eq!(events, []);
        let events = feed(
            &mut t,
            &[
                (2, to(elsewhere, 7000)),
                (3, to(SERVER, 7000)),
                (4, to(SERVER, 9999)),
                (5, to(elsewhere, 8000)),
            ],
        );
        assert_eq!(opens(&events), [(0, ALICE)]);
    }

    #[test]
    fn ipv6_sources() {
        let mut t = tracker(walkthrough());
        let dave: IpAddr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x40).into();
        let v6 = |src, port| Hit {
            dst: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into(),
            ..syn(src, tcp(port))
        };
        let events = feed(
            &mut t,
            &[
                (0, v6(CAROL6, 7000)),
                (1, v6(dave, 7000)),
                (2, v6(CAROL6, 8000)),
                (3, v6(CAROL6, 9000)),
            ],
        );
        assert_eq!(opens(&events), [(0, CAROL6)]);
        assert_eq!(t.len(), 2); // dave at stage 1 of openSSH, carol at stage 1 of closeSSH
    }

    #[test]
    fn one_time_sequences() {
        let mut t = tracker(vec![door("once", &[tcp(1111), tcp(2222)], 15)]);
        let events = feed(
            &mut t,
            &[
                (0, syn(ALICE, tcp(1111))),
                (1, syn(BOB, tcp(1111))),
                (2, syn(ALICE, tcp(2222))),
            ],
        );
        assert_eq!(opens(&events), [(0, ALICE)]);
        // The server loads the next line and clears the door's attempts (Bob's too).
        t.set_sequence(0, vec![udp(3333), tcp(4444), tcp(5555)])
            .expect("door 0");
        t.check_invariants();
        assert!(t.is_empty());
        assert_eq!(
            t.ports().collect::<Vec<_>>(),
            [tcp(4444), tcp(5555), udp(3333)]
        );
        let events = feed(
            &mut t,
            &[
                (3, syn(BOB, tcp(2222))),
                (4, syn(ALICE, tcp(1111))),
                (5, syn(ALICE, tcp(2222))),
            ],
        );
        assert_eq!(events, [], "the used sequence is dead");
        let events = feed(
            &mut t,
            &[3333, 4444, 5555].map(|p| (6, syn(ALICE, if p == 3333 { udp(p) } else { tcp(p) }))),
        );
        assert_eq!(opens(&events), [(0, ALICE)]);
        assert_eq!(t.set_sequence(1, vec![]), Err(NoSuchDoor(1)));
        t.set_sequence(0, vec![]).expect("door 0");
        assert_eq!(t.ports().count(), 0);
        assert_eq!(feed(&mut t, &[(7, syn(ALICE, tcp(3333)))]), []);
    }

    #[test]
    fn ports_lists_every_door_port_once() {
        let mut doors = walkthrough();
        doors.push(door("mixed", &[udp(7000), tcp(7000), tcp(1)], 15));
        let t = tracker(doors);
        assert_eq!(
            t.ports().collect::<Vec<_>>(),
            [tcp(1), tcp(7000), tcp(8000), tcp(9000), udp(7000)]
        );
    }

    #[test]
    fn one_port_door_opens_at_once_without_state() {
        let mut t = tracker(vec![door("single", &[udp(9999)], 15)]);
        let events = feed(&mut t, &[(0, syn(ALICE, udp(9999)))]);
        assert_eq!(
            events,
            [
                stage(0, ALICE, 1),
                Event::Open {
                    door: 0,
                    src: ALICE
                }
            ]
        );
        assert!(t.is_empty());
    }

    #[test]
    fn port_zero_and_unknown_ports_are_ignored() {
        let mut t = tracker(walkthrough());
        let mut out = Vec::new();
        t.handle_hit(
            0,
            Hit {
                dport: 0,
                ..syn(ALICE, tcp(7000))
            },
            &mut out,
        );
        t.handle_hit(0, syn(ALICE, udp(7000)), &mut out);
        assert_eq!(out, []);
    }

    /// A source address from a number: 10.0.0.0/8 and a v6 prefix, never ALICE.
    fn spoofed(i: u32) -> IpAddr {
        if i & 1 == 0 {
            IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i >> 1)))
        } else {
            IpAddr::V6(Ipv6Addr::new(
                0x2001,
                0xdb8,
                0xf,
                0,
                0,
                0,
                (i >> 16) as u16,
                i as u16,
            ))
        }
    }

    #[test]
    fn flood_neither_grows_memory_nor_evicts_a_knocker_mid_sequence() {
        let limits = TrackerLimits::default();
        let mut t = SequenceTracker::new(walkthrough(), limits);
        let mut out = Vec::new();
        let mut legit = vec![(0, 7000), (10_000, 8000), (150_000, 9000)]
            .into_iter()
            .peekable();
        let mut evicted = 0usize;
        for i in 0..200_000u32 {
            let now = u64::from(i) / 20; // 200 000 spoofed SYNs in 10 s
            if legit.peek().is_some_and(|&(at, _)| at == i) {
                let (_, port) = legit.next().expect("peeked");
                t.handle_hit(now, syn(ALICE, tcp(port)), &mut out);
            }
            t.handle_hit(now, syn(spoofed(i), tcp(7000)), &mut out);
            assert!(t.len() <= t.capacity());
            evicted += out
                .iter()
                .filter(|e| matches!(e, Event::Evicted { .. }))
                .count();
            assert!(!out.iter().any(|e| e.src() == ALICE
                && e.door() == 0
                && matches!(e, Event::Evicted { .. } | Event::Reset { .. })));
            if out.contains(&Event::Open {
                door: 0,
                src: ALICE,
            }) {
                assert_eq!(i, 150_000);
                legit.next();
            }
            out.clear();
        }
        assert!(legit.next().is_none(), "Alice's knock opened");
        assert_eq!(t.capacity(), 65_536);
        assert!(evicted >= 200_000 - 65_536);
        t.check_invariants();
    }

    #[test]
    fn stage_one_survives_probation_cap_new_attempts_and_no_more() {
        let mut t = SequenceTracker::new(
            walkthrough(),
            TrackerLimits {
                max_attempts: 10,
                max_protected: 2,
            },
        );
        assert_eq!(t.capacity(), 10);
        let mut out = Vec::new();
        t.handle_hit(0, syn(ALICE, tcp(7000)), &mut out);
        for i in 0..7 {
            t.handle_hit(1, syn(spoofed(i), tcp(7000)), &mut out);
        }
        assert!(!out.iter().any(|e| matches!(e, Event::Evicted { .. })));
        // Eight probation slots: the eighth newcomer evicts the oldest, Alice.
        t.handle_hit(1, syn(spoofed(7), tcp(7000)), &mut out);
        assert_eq!(out.last(), Some(&stage(0, spoofed(7), 1)));
        assert!(out.contains(&Event::Evicted {
            door: 0,
            src: ALICE,
            stage: 1
        }));
        t.check_invariants();
    }

    #[test]
    fn full_protected_pool_keeps_its_members_and_demotes_no_one() {
        let mut t = SequenceTracker::new(
            walkthrough(),
            TrackerLimits {
                max_attempts: 6,
                max_protected: 2,
            },
        );
        let mut out = Vec::new();
        // Two attackers who know 7000,8000 fill the protected pool.
        for i in 0..2 {
            t.handle_hit(0, syn(spoofed(i), tcp(7000)), &mut out);
            t.handle_hit(0, syn(spoofed(i), tcp(8000)), &mut out);
        }
        assert_eq!(t.protected_len(), 2);
        // Alice advances too: no room, so she stays in probation, and the attackers stay.
        t.handle_hit(1, syn(ALICE, tcp(7000)), &mut out);
        t.handle_hit(1, syn(ALICE, tcp(8000)), &mut out);
        assert_eq!(t.protected_len(), 2);
        assert_eq!(t.len(), 3);
        // A flood of first knocks evicts her (she is unprotected) but never the protected two.
        for i in 10..100 {
            t.handle_hit(2, syn(spoofed(i), tcp(7000)), &mut out);
            t.check_invariants();
        }
        assert!(out.contains(&Event::Evicted {
            door: 0,
            src: ALICE,
            stage: 2
        }));
        assert!(!out.iter().any(
            |e| matches!(e, Event::Evicted { src, .. } if *src == spoofed(0) || *src == spoofed(1))
        ));
        // When they time out, the room is Alice's at her next advance.
        out.clear();
        t.handle_hit(15_000, syn(ALICE, tcp(7000)), &mut out);
        t.handle_hit(15_001, syn(ALICE, tcp(8000)), &mut out);
        assert_eq!(t.protected_len(), 1);
        t.check_invariants();
    }

    #[test]
    fn deadline_heap_stays_bounded_under_churn() {
        let mut t = SequenceTracker::new(walkthrough(), TrackerLimits::new(8));
        let mut out = Vec::new();
        // Start and reset the same attempts over and over within one timeout window.
        for i in 0..10_000u32 {
            t.handle_hit(0, syn(spoofed(i % 3), tcp(7000)), &mut out);
            t.handle_hit(0, syn(spoofed(i % 3), tcp(9000)), &mut out);
            t.check_invariants();
        }
        assert!(t.deadlines.len() <= 2 * t.capacity() + 1);
    }

    // ---- model check against a straightforward reference implementation ----

    /// The rules of the module doc written as plainly as possible: a list of attempts, no
    /// memory bound.
    struct Model {
        doors: Vec<SeqDoorSpec>,
        /// (src, door, stage, deadline)
        attempts: Vec<(IpAddr, usize, usize, u64)>,
    }

    impl Model {
        fn hit(&mut self, now: u64, hit: Hit) -> Vec<Event> {
            let mut out = Vec::new();
            let mut timeouts: Vec<Event> = Vec::new();
            self.attempts.retain(|&(src, door, stage, deadline)| {
                let alive = deadline > now;
                if !alive {
                    timeouts.push(Event::Timeout { door, src, stage });
                }
                alive
            });
            timeouts.sort();
            out.extend(timeouts);
            let Some(spec) = PortSpec::new(hit.proto, hit.dport) else {
                return out;
            };
            if !self
                .doors
                .iter()
                .any(|d| d.sequence.contains(&spec) && d.sees(&hit))
            {
                return out;
            }
            for (di, d) in self.doors.iter().enumerate() {
                if !d.sees(&hit) {
                    continue;
                }
                let start = |out: &mut Vec<Event>, attempts: &mut Vec<_>| {
                    if d.sequence.first() == Some(&spec) {
                        out.push(stage(di, hit.src, 1));
                        if d.sequence.len() == 1 {
                            out.push(Event::Open {
                                door: di,
                                src: hit.src,
                            });
                        } else {
                            attempts.push((hit.src, di, 1, now.saturating_add(d.seq_timeout_ms)));
                        }
                    }
                };
                match self
                    .attempts
                    .iter()
                    .position(|a| a.0 == hit.src && a.1 == di)
                {
                    None => start(&mut out, &mut self.attempts),
                    Some(i) => {
                        let st = self.attempts[i].2;
                        if d.sequence.get(st) == Some(&spec) {
                            out.push(stage(di, hit.src, st + 1));
                            if st + 1 == d.sequence.len() {
                                out.push(Event::Open {
                                    door: di,
                                    src: hit.src,
                                });
                                self.attempts.remove(i);
                            } else {
                                self.attempts[i].2 += 1;
                            }
                        } else if d.sequence[st - 1] == spec {
                            if st == 1 {
                                self.attempts.remove(i);
                                start(&mut out, &mut self.attempts);
                            }
                        } else {
                            out.push(Event::Reset {
                                door: di,
                                src: hit.src,
                                stage: st,
                            });
                            self.attempts.remove(i);
                            start(&mut out, &mut self.attempts);
                        }
                    }
                }
            }
            out
        }
    }

    const PORTS: [u16; 4] = [1, 2, 3, 4];

    fn port_spec() -> impl Strategy<Value = PortSpec> {
        (prop::sample::select(&PORTS[..3]), any::<bool>())
            .prop_map(|(p, u)| if u { udp(p) } else { tcp(p) })
    }

    fn door_spec() -> impl Strategy<Value = SeqDoorSpec> {
        (
            prop::collection::vec(port_spec(), 1..5),
            1u64..40,
            prop::sample::select(vec![
                TcpFlags::ANY,
                TcpFlags {
                    must_set: SYN,
                    must_clear: ACK,
                },
            ]),
            prop::option::weighted(0.2, Just(SERVER)),
        )
            .prop_map(
                |(sequence, seq_timeout_ms, tcp_flags, target)| SeqDoorSpec {
                    name: "d".into(),
                    sequence,
                    seq_timeout_ms,
                    tcp_flags,
                    target,
                },
            )
    }

    /// (time step, hit); sources drawn from `sources` addresses.
    fn hits(sources: u32, n: usize) -> impl Strategy<Value = Vec<(u64, Hit)>> {
        let hit = (
            0u64..8,
            0..sources,
            any::<bool>(),
            prop::sample::select(&PORTS[..]),
            any::<bool>(),
            prop::sample::select(vec![SYN, ACK, SYN | ACK, 0]),
        )
            .prop_map(|(dt, s, to_server, port, is_udp, flags)| {
                let hit = Hit {
                    src: spoofed(s),
                    dst: if to_server { SERVER } else { ALICE },
                    to_host: to_server,
                    proto: if is_udp { Proto::Udp } else { Proto::Tcp },
                    dport: port,
                    tcp_flags: flags,
                };
                (dt, hit)
            });
        prop::collection::vec(hit, 0..n)
    }

    /// Whether `history` (this source's hits) holds `door`'s sequence, in order, among hits
    /// the door sees, ending with the last hit, all less than seq_timeout before `now`.
    fn justified(door: &SeqDoorSpec, history: &[(u64, Hit)], now: u64) -> bool {
        let mut want = door.sequence.iter().rev().peekable();
        for (i, &(t, h)) in history.iter().rev().enumerate() {
            if t.saturating_add(door.seq_timeout_ms) <= now {
                break;
            }
            let spec = PortSpec::new(h.proto, h.dport);
            if door.sees(&h) && spec.as_ref() == want.peek().copied() {
                want.next();
            } else if i == 0 {
                return false; // the opening hit must be the last knock
            }
            if want.peek().is_none() {
                return true;
            }
        }
        false
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// With room for everyone, the tracker behaves exactly like the model.
        #[test]
        fn matches_reference_model(
            doors in prop::collection::vec(door_spec(), 1..4),
            steps in hits(3, 120),
        ) {
            let mut t = SequenceTracker::new(doors.clone(), TrackerLimits::new(1000));
            let mut m = Model { doors, attempts: Vec::new() };
            let mut now = 0;
            let mut out = Vec::new();
            for (dt, hit) in steps {
                now += dt;
                out.clear();
                t.handle_hit(now, hit, &mut out);
                t.check_invariants();
                let want = m.hit(now, hit);
                // Timeouts come first, in heap order: compare them as a set.
                let n = out.iter().take_while(|e| matches!(e, Event::Timeout { .. })).count();
                out[..n].sort();
                prop_assert_eq!(&out, &want, "at {} after {:?}", now, hit);
                prop_assert_eq!(t.len(), m.attempts.len());
            }
        }

        /// With a tiny cap and many sources: the cap holds, and every Open is earned.
        #[test]
        fn cap_holds_and_opens_are_earned(
            doors in prop::collection::vec(door_spec(), 1..3),
            steps in hits(24, 300),
            max_attempts in 1usize..8,
            max_protected in 0usize..4,
        ) {
            let limits = TrackerLimits { max_attempts, max_protected };
            let mut t = SequenceTracker::new(doors.clone(), limits);
            prop_assert_eq!(t.capacity(), max_attempts);
            let mut history: HashMap<IpAddr, Vec<(u64, Hit)>> = HashMap::new();
            let mut now = 0;
            let mut out = Vec::new();
            for (dt, hit) in steps {
                now += dt;
                out.clear();
                history.entry(hit.src).or_default().push((now, hit));
                t.handle_hit(now, hit, &mut out);
                t.check_invariants();
                prop_assert!(t.len() <= max_attempts);
                for e in &out {
                    if let Event::Open { door, src } = *e {
                        prop_assert_eq!(src, hit.src);
                        prop_assert!(justified(&doors[door], &history[&src], now));
                    }
                }
            }
        }
    }
}
