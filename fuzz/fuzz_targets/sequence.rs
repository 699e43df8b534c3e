//! A stream of events (time steps, hits from a few sources on a few ports, expiry passes,
//! sequence changes) → `sequence::SequenceTracker`.
//!
//! Two modes, chosen by the input:
//!
//! - **roomy** (a cap far above the number of (source, door) pairs): the tracker's events must
//!   equal, hit for hit, those of a plain reference model of the rules in the module
//!   documentation of `shared/src/sequence.rs` (the model of its `matches_reference_model`
//!   test, extended with `expire` and `set_sequence`), and its `len()` the model's number of
//!   attempts;
//! - **tight** (a cap of 1..8 attempts and many sources): `len()` never exceeds the cap,
//!   `protected_len()` never exceeds its share, and every `Open` is earned: the source's own
//!   hits, in order, seen by the door, within `seq_timeout` and ending with this hit, spell
//!   the door's sequence.
//!
//! In both: events name existing doors and the hit's source, stages lie within the sequence,
//! and a final `expire(u64::MAX)` times out every attempt left.
#![no_main]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use arbitrary::Arbitrary;
use knock_shared::sequence::{Event, Hit, SeqDoorSpec, SequenceTracker, TcpFlags, TrackerLimits};
use knock_shared::types::{PortSpec, Proto};
use libfuzzer_sys::fuzz_target;

const SYN: u8 = TcpFlags::SYN;
const ACK: u8 = TcpFlags::ACK;
const SERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
const OTHER_DST: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99));
/// Ports hits go to: 0 (never a knock), 1..=3 (used by sequences), 4 (in no sequence).
const HIT_PORTS: [u16; 5] = [0, 1, 2, 3, 4];
const FLAGS: [u8; 5] = [SYN, ACK, SYN | ACK, 0, TcpFlags::FIN];

#[derive(Arbitrary, Debug)]
enum TimeoutIn {
    Small(u8),
    Zero,
    Huge,
}

#[derive(Arbitrary, Debug)]
struct DoorIn {
    sequence: Vec<(u8, bool)>,
    timeout: TimeoutIn,
    syn_not_ack: bool,
    target: bool,
}

#[derive(Arbitrary, Debug)]
enum LimitsIn {
    Roomy,
    Tight { max_attempts: u8, max_protected: u8 },
}

#[derive(Arbitrary, Debug)]
enum Step {
    Hit {
        dt: u8,
        src: u8,
        to_server: bool,
        port: u8,
        udp: bool,
        flags: u8,
    },
    Expire {
        dt: u16,
    },
    Jump(u64),
    SetSequence {
        door: u8,
        sequence: Vec<(u8, bool)>,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    doors: Vec<DoorIn>,
    limits: LimitsIn,
    steps: Vec<Step>,
}

fn spec(port: u8, udp: bool) -> PortSpec {
    let proto = if udp { Proto::Udp } else { Proto::Tcp };
    PortSpec::new(proto, u16::from(port % 3) + 1).expect("1..=3")
}

fn sequence(items: &[(u8, bool)]) -> Vec<PortSpec> {
    items.iter().take(5).map(|&(p, u)| spec(p, u)).collect()
}

fn door(d: &DoorIn) -> SeqDoorSpec {
    SeqDoorSpec {
        name: "door".into(),
        sequence: sequence(&d.sequence),
        seq_timeout_ms: match d.timeout {
            TimeoutIn::Small(t) => 1 + u64::from(t % 40),
            TimeoutIn::Zero => 0,
            TimeoutIn::Huge => u64::MAX,
        },
        tcp_flags: if d.syn_not_ack {
            TcpFlags {
                must_set: SYN,
                must_clear: ACK,
            }
        } else {
            TcpFlags::ANY
        },
        target: d.target.then_some(SERVER),
    }
}

/// Source number `i`: IPv4 for even numbers, IPv6 for odd ones.
fn source(i: u32) -> IpAddr {
    if i & 1 == 0 {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i >> 1)))
    } else {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xf, 0, 0, 0, 0, i as u16))
    }
}

/// The rules of the tracker's module documentation, as plainly as possible: a list of
/// attempts, no memory bound.
struct Model {
    doors: Vec<SeqDoorSpec>,
    /// (src, door, stage, deadline)
    attempts: Vec<(IpAddr, usize, usize, u64)>,
}

impl Model {
    fn expire(&mut self, now: u64, out: &mut Vec<Event>) {
        let mut timeouts = Vec::new();
        self.attempts.retain(|&(src, door, stage, deadline)| {
            let alive = deadline > now;
            if !alive {
                timeouts.push(Event::Timeout { door, src, stage });
            }
            alive
        });
        timeouts.sort();
        out.extend(timeouts);
    }

    fn set_sequence(&mut self, door: usize, sequence: Vec<PortSpec>) {
        self.doors[door].sequence = sequence;
        self.attempts.retain(|a| a.1 != door);
    }

    fn hit(&mut self, now: u64, hit: Hit) -> Vec<Event> {
        let mut out = Vec::new();
        self.expire(now, &mut out);
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
                    out.push(Event::Stage {
                        door: di,
                        src: hit.src,
                        stage: 1,
                    });
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
                        out.push(Event::Stage {
                            door: di,
                            src: hit.src,
                            stage: st + 1,
                        });
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

/// Whether `history` (one source's hits since its door last changed) holds `door`'s
/// sequence, in order, among hits the door sees, ending with the last hit, all (but that
/// last one) less than `seq_timeout` before `now`.
fn justified(door: &SeqDoorSpec, history: &[(u64, Hit)], now: u64) -> bool {
    let mut want = door.sequence.iter().rev().peekable();
    for (i, &(t, h)) in history.iter().rev().enumerate() {
        // The opening hit itself always counts: a one-port door opens on its hit, whatever
        // the timeout (even 0, which the configuration reader refuses anyway).
        if i > 0 && t.saturating_add(door.seq_timeout_ms) <= now {
            break;
        }
        let spec = PortSpec::new(h.proto, h.dport);
        if door.sees(&h) && spec.as_ref() == want.peek().copied() {
            want.next();
        } else if i == 0 {
            return false;
        }
        if want.peek().is_none() {
            return true;
        }
    }
    false
}

/// Timeouts come first, in heap order: sort that prefix to compare with the model.
fn sort_timeouts(events: &mut [Event]) {
    let n = events
        .iter()
        .take_while(|e| matches!(e, Event::Timeout { .. }))
        .count();
    events[..n].sort();
}

fn check_event(e: &Event, doors: &[SeqDoorSpec]) {
    let d = doors.get(e.door()).expect("event names an existing door");
    match *e {
        Event::Stage { stage, .. } => assert!(stage >= 1 && stage <= d.sequence.len()),
        Event::Timeout { stage, .. }
        | Event::Reset { stage, .. }
        | Event::Evicted { stage, .. } => {
            // An attempt in flight has matched at least one knock and not yet all of them.
            assert!(stage >= 1 && stage < d.sequence.len(), "{e:?}");
        }
        Event::Open { .. } => assert!(!d.sequence.is_empty()),
    }
}

fuzz_target!(|input: Input| {
    let mut doors: Vec<SeqDoorSpec> = input.doors.iter().take(3).map(door).collect();
    if doors.is_empty() {
        return;
    }
    let (limits, roomy, sources) = match input.limits {
        LimitsIn::Roomy => (TrackerLimits::new(1000), true, 4u32),
        LimitsIn::Tight {
            max_attempts,
            max_protected,
        } => (
            TrackerLimits {
                max_attempts: usize::from(max_attempts % 8) + 1,
                max_protected: usize::from(max_protected % 4),
            },
            false,
            24u32,
        ),
    };
    let mut t = SequenceTracker::new(doors.clone(), limits);
    let cap = limits.max_attempts.max(1);
    assert_eq!(t.capacity(), cap);
    let protected_cap = limits.max_protected.min(cap - 1);
    let mut model = Model {
        doors: doors.clone(),
        attempts: Vec::new(),
    };
    // Per (source, door): hits since the door's sequence last changed.
    let mut history: HashMap<(IpAddr, usize), Vec<(u64, Hit)>> = HashMap::new();
    let mut now: u64 = 0;
    let mut out = Vec::new();
    for step in input.steps.iter().take(400) {
        out.clear();
        match *step {
            Step::Hit {
                dt,
                src,
                to_server,
                port,
                udp,
                flags,
            } => {
                now = now.saturating_add(u64::from(dt % 8));
                let hit = Hit {
                    src: source(u32::from(src) % sources),
                    dst: if to_server { SERVER } else { OTHER_DST },
                    to_host: to_server,
                    proto: if udp { Proto::Udp } else { Proto::Tcp },
                    dport: HIT_PORTS[usize::from(port) % HIT_PORTS.len()],
                    tcp_flags: FLAGS[usize::from(flags) % FLAGS.len()],
                };
                for di in 0..doors.len() {
                    history.entry((hit.src, di)).or_default().push((now, hit));
                }
                t.handle_hit(now, hit, &mut out);
                for e in &out {
                    check_event(e, &doors);
                    if let Event::Open { door, src } = *e {
                        assert_eq!(src, hit.src, "Open for another source");
                        assert!(
                            justified(&doors[door], &history[&(src, door)], now),
                            "unearned Open of door {door} for {src} at {now}"
                        );
                    }
                    if matches!(e, Event::Stage { .. } | Event::Reset { .. }) {
                        assert_eq!(e.src(), hit.src);
                    }
                }
                if roomy {
                    sort_timeouts(&mut out);
                    let want = model.hit(now, hit);
                    assert_eq!(out, want, "at {now} after {hit:?}");
                }
            }
            Step::Expire { dt } => {
                now = now.saturating_add(u64::from(dt));
                t.expire(now, &mut out);
                assert!(out.iter().all(|e| matches!(e, Event::Timeout { .. })));
                if roomy {
                    out.sort();
                    let mut want = Vec::new();
                    model.expire(now, &mut want);
                    assert_eq!(out, want, "expire at {now}");
                }
            }
            Step::Jump(to) => now = now.max(to),
            Step::SetSequence { door, ref sequence } => {
                let di = usize::from(door) % doors.len();
                let seq = self::sequence(sequence);
                assert!(t.set_sequence(di, seq.clone()).is_ok());
                assert!(t.set_sequence(doors.len(), Vec::new()).is_err());
                doors[di].sequence = seq.clone();
                assert_eq!(t.doors()[di].sequence, seq);
                history.retain(|&(_, d), _| d != di);
                model.set_sequence(di, seq);
            }
        }
        assert!(t.len() <= cap, "{} attempts, cap {cap}", t.len());
        assert!(t.protected_len() <= protected_cap);
        assert!(t.protected_len() <= t.len());
        if roomy {
            assert_eq!(t.len(), model.attempts.len(), "attempts in flight");
        }
        let mut ports: Vec<PortSpec> = doors.iter().flat_map(|d| d.sequence.clone()).collect();
        ports.sort();
        ports.dedup();
        assert!(t.ports().eq(ports.iter().copied()), "ports()");
    }
    let left = t.len();
    out.clear();
    t.expire(u64::MAX, &mut out);
    assert!(t.is_empty(), "attempts left after expire(u64::MAX)");
    assert_eq!(out.len(), left, "one Timeout per attempt");
});
