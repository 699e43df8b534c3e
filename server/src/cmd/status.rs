//! `knock-spad status`: reads the status file a running daemon keeps in its state directory
//! and prints it (a table, JSON, or Prometheus metrics: `cmd::prometheus`), with an exit
//! status saying whether the daemon runs. For nftables grants the table and JSON also ask the
//! kernel how long each element has left.

use std::collections::HashMap;
use std::time::Duration;

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::{Cli, StatusFormat};
use crate::firewall::nft::{Element, Nft};
use serde::Serialize;

use crate::store::status::{self, liveness, Counters, GrantView, Liveness, Snapshot};

use super::{print_bytes, prometheus, state_dir_of};

/// `status`, in `format` (`--json` is `--format json`).
pub fn run(cli: &Cli, format: Option<StatusFormat>, json: bool) -> anyhow::Result<ExitCode> {
    let format = match format {
        Some(f) => f,
        None if json => StatusFormat::Json,
        None => StatusFormat::Text,
    };
    let dir = match state_dir_of(cli) {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    let path = dir.join(status::FILE);
    let now = status::unix_now();
    let json = format == StatusFormat::Json;
    match status::read(&dir) {
        // The metrics say whether the daemon runs (knock_spad_up): a textfile collector gets a
        // file, and exit 0, either way.
        Ok(snap) if format == StatusFormat::Prometheus => {
            let running = liveness(&snap, now) == Liveness::Running;
            print_bytes(prometheus::render(running.then_some(&snap)).as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        Err(status::ReadError::Missing(_)) if format == StatusFormat::Prometheus => {
            print_bytes(prometheus::render(None).as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        Ok(snap) => {
            let kernel = Kernel::ask(&snap);
            let code = match status::liveness(&snap, now) {
                status::Liveness::Running => 0,
                status::Liveness::Gone => 1,
                status::Liveness::Stale { .. } => 4,
            };
            let text = if json {
                let mut t = serde_json::to_string_pretty(&report(&path, &snap, now, &kernel))
                    .context("json")?;
                t.push('\n');
                t
            } else {
                render(&path, &snap, now, &kernel)
            };
            print_bytes(text.as_bytes())?;
            Ok(ExitCode::from(code))
        }
        Err(status::ReadError::Missing(_)) => {
            if json {
                let v = serde_json::json!({
                    "state": "stopped",
                    "running": false,
                    "status_file": path.display().to_string(),
                });
                print_bytes(format!("{v:#}\n").as_bytes())?;
            } else {
                println!(
                    "knock-spad is not running (no {}; a daemon with another StateDir or \
                     --state-dir keeps its status elsewhere)",
                    path.display()
                );
            }
            Ok(ExitCode::from(3))
        }
        Err(e @ status::ReadError::Io { .. }) => {
            eprintln!("knock-spad: cannot read the status: {e} (the state directory is root's)");
            Ok(ExitCode::from(4))
        }
        Err(e) => {
            eprintln!("knock-spad: {e}");
            Ok(ExitCode::from(4))
        }
    }
}

/// What the kernel says of the nftables grants' elements.
#[derive(Debug)]
pub enum Kernel {
    /// No nftables grant: not asked.
    NotAsked,
    /// The table's elements could not be read: why.
    Unreadable(String),
    /// Each element of the admitted sets with its time left.
    Elements(HashMap<Element, Duration>),
}

impl Kernel {
    /// Asks the kernel when `snap` has nftables grants.
    fn ask(snap: &Snapshot) -> Self {
        if !snap.grants.iter().any(|g| g.nft) {
            return Kernel::NotAsked;
        }
        match Nft::open().and_then(|mut n| n.list()) {
            Ok(list) => Kernel::Elements(list.into_iter().collect()),
            Err(e) => Kernel::Unreadable(e.to_string()),
        }
    }

    /// The ms the kernel gives grant `g`'s element: `Some(None)` when it has no element,
    /// `None` when not known (a command grant, or the kernel not read).
    fn left_ms(&self, g: &GrantView) -> Option<Option<u64>> {
        let Kernel::Elements(map) = self else {
            return None;
        };
        if !g.nft || g.prefix.is_some() {
            return None;
        }
        let elem = Element {
            addr: g.addr.to_canonical(),
            port: g.port.parse().ok()?,
        };
        Some(map.get(&elem).map(|d| d.as_millis() as u64))
    }
}

/// `status --json` output.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    /// `running`, `stale`, `dead` or (no status file) `stopped`.
    pub state: &'static str,
    /// Whether the daemon runs.
    pub running: bool,
    /// The status file read.
    pub status_file: String,
    /// Seconds since the snapshot was written.
    pub age: u64,
    /// The snapshot; its grants carry `seconds_left`.
    #[serde(flatten)]
    pub snapshot: SnapshotOut<'a>,
}

/// A snapshot with computed fields.
#[derive(Debug, Serialize)]
pub struct SnapshotOut<'a> {
    /// The daemon's pid.
    pub pid: u32,
    /// Daemon version.
    pub version: &'a str,
    /// Its configuration file.
    pub config: &'a str,
    /// How it receives packets.
    pub listening: &'a str,
    /// Unix seconds when it started.
    pub started: u64,
    /// Unix seconds when the snapshot was written.
    pub written: u64,
    /// Doors in force.
    pub doors: usize,
    /// SPA keys in force.
    pub keys: usize,
    /// SIGHUP reloads.
    pub reloads: u64,
    /// Last reload.
    pub last_reload: Option<u64>,
    /// Counters.
    pub counters: &'a Counters,
    /// Open grants.
    pub grants: Vec<GrantOut<'a>>,
}

/// A grant with its time left.
#[derive(Debug, Serialize)]
pub struct GrantOut<'a> {
    /// The grant.
    #[serde(flatten)]
    pub grant: &'a GrantView,
    /// Seconds until it closes (0: closing now).
    pub seconds_left: u64,
    /// nftables grants: whether the kernel holds its element.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_element: Option<bool>,
    /// nftables grants: the ms the kernel's timeout leaves the element.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_ms_left: Option<u64>,
}

/// Builds the `--json` report.
pub fn report<'a>(path: &Path, snap: &'a Snapshot, now: u64, kernel: &Kernel) -> Report<'a> {
    let live = liveness(snap, now);
    Report {
        state: live.as_str(),
        running: live == Liveness::Running,
        status_file: path.display().to_string(),
        age: now.saturating_sub(snap.written),
        snapshot: SnapshotOut {
            pid: snap.pid,
            version: &snap.version,
            config: &snap.config,
            listening: &snap.listening,
            started: snap.started,
            written: snap.written,
            doors: snap.doors,
            keys: snap.keys,
            reloads: snap.reloads,
            last_reload: snap.last_reload,
            counters: &snap.counters,
            grants: snap
                .grants
                .iter()
                .map(|g| {
                    let k = kernel.left_ms(g);
                    GrantOut {
                        grant: g,
                        seconds_left: g.expires.saturating_sub(now),
                        kernel_element: k.map(|l| l.is_some()),
                        kernel_ms_left: k.flatten(),
                    }
                })
                .collect(),
        },
    }
}

/// `3h 4m`, `5m 10s`, `42 s`.
pub fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s} s")
    }
}

/// Left-aligned columns separated by two blanks.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// The human-readable status.
pub fn render(path: &Path, snap: &Snapshot, now: u64, kernel: &Kernel) -> String {
    let live = liveness(snap, now);
    let age = now.saturating_sub(snap.written);
    let mut out = String::new();
    match live {
        Liveness::Running => out.push_str(&format!(
            "knock-spad {} is running (pid {}, up {}), {}\n",
            snap.version,
            snap.pid,
            human_duration(now.saturating_sub(snap.started)),
            snap.listening
        )),
        Liveness::Stale { age } => out.push_str(&format!(
            "knock-spad (pid {}) exists but has not updated {} for {}: it may be hung. \
             Below: its last status.\n",
            snap.pid,
            path.display(),
            human_duration(age)
        )),
        Liveness::Gone => out.push_str(&format!(
            "knock-spad is NOT running: pid {} from {} is gone (it crashed or was killed; a \
             clean exit removes the file). Below: its last status, {} old.\n",
            snap.pid,
            path.display(),
            human_duration(age)
        )),
    }
    out.push_str(&format!(
        "configuration {}: {} door(s), {} SPA key(s){}\n",
        snap.config,
        snap.doors,
        snap.keys,
        match snap.last_reload {
            Some(t) => format!(
                ", reloaded {} time(s), last {} ago",
                snap.reloads,
                human_duration(now.saturating_sub(t))
            ),
            None => String::new(),
        }
    ));
    out.push('\n');
    if snap.grants.is_empty() {
        out.push_str("open grants: none\n");
    } else {
        out.push_str(&format!("open grants: {}\n", snap.grants.len()));
        let rows: Vec<Vec<String>> = snap
            .grants
            .iter()
            .map(|g| {
                let left = g.expires.saturating_sub(now);
                vec![
                    g.door.clone(),
                    if g.key.is_empty() {
                        "(knock)".to_owned()
                    } else {
                        g.key.clone()
                    },
                    match g.prefix {
                        Some(len) => format!("{}/{len}", g.addr),
                        None => g.addr.to_string(),
                    },
                    if g.port.is_empty() {
                        "-".to_owned()
                    } else {
                        g.port.clone()
                    },
                    if left == 0 {
                        "closing".to_owned()
                    } else {
                        human_duration(left)
                    },
                    match kernel.left_ms(g) {
                        None => "-".to_owned(),
                        Some(None) => "no element".to_owned(),
                        Some(Some(ms)) => human_duration(ms.div_ceil(1000)),
                    },
                ]
            })
            .collect();
        let mut header = vec!["DOOR", "KEY", "ADDRESS", "PORT", "LEFT", "KERNEL"];
        let mut rows = rows;
        if matches!(kernel, Kernel::NotAsked) {
            header.pop();
            for r in &mut rows {
                r.pop();
            }
        }
        out.push_str(&table(&header, &rows));
        if let Kernel::Unreadable(e) = kernel {
            out.push_str(&format!(
                "kernel: cannot read table inet knock_spa: {e} (run status as root)\n"
            ));
        }
    }
    out.push('\n');
    let c = &snap.counters;
    let mut rows = vec![
        vec!["packets".to_owned(), c.packets.to_string()],
        vec!["accepted (spa)".to_owned(), c.accepted.to_string()],
        vec!["knock sequences".to_owned(), c.knocks.to_string()],
        vec!["rejected".to_owned(), c.rejected_total().to_string()],
    ];
    for (key, label) in status::refusal_reasons() {
        let n = c.rejected.get(&key).copied().unwrap_or(0);
        if n > 0 {
            rows.push(vec![format!("  {label}"), n.to_string()]);
        }
    }
    if c.evicted > 0 {
        rows.push(vec!["knocks evicted".to_owned(), c.evicted.to_string()]);
    }
    if c.dropped > 0 {
        rows.push(vec!["actions dropped".to_owned(), c.dropped.to_string()]);
    }
    out.push_str(&format!(
        "counters since start (as of {} ago):\n",
        human_duration(age)
    ));
    for r in rows {
        out.push_str(&format!("  {:<20} {:>10}\n", r[0], r[1]));
    }
    out.push_str(&format!(
        "  commands failed: start {}, stop {}{}; reloads: {} done, {} refused{}\n",
        c.start_failed,
        c.stop_failed,
        match c.timed_out {
            0 => String::new(),
            n => format!(" ({n} timed out)"),
        },
        snap.reloads,
        c.reloads_refused,
        match c.last_refused_reload {
            Some(t) => format!(" (last {} ago)", human_duration(now.saturating_sub(t))),
            None => String::new(),
        }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::status::tests::snap;
    use crate::store::status::unix_now;

    #[test]
    fn rendering() {
        let now = unix_now();
        let mut s = snap(std::process::id(), now);
        s.counters.rejected.insert("unknown_key".into(), 3);
        s.counters.accepted = 1;
        let text = render(Path::new("/s/status.json"), &s, now, &Kernel::NotAsked);
        assert!(text.contains("is running"), "{text}");
        assert!(text.contains("alice"), "{text}");
        assert!(text.contains("192.0.2.7"), "{text}");
        assert!(text.contains("25 s"), "{text}");
        assert!(text.contains("unknown key"), "{text}");
        assert!(
            text.contains("  commands failed: start 0, stop 0; reloads: 0 done, 0 refused\n"),
            "{text}"
        );
        s.counters.start_failed = 2;
        s.counters.timed_out = 1;
        s.counters.reloads_refused = 1;
        s.counters.last_refused_reload = Some(now - 300);
        s.reloads = 3;
        let t = render(Path::new("/s/status.json"), &s, now, &Kernel::NotAsked);
        assert!(
            t.contains(
                "  commands failed: start 2, stop 0 (1 timed out); reloads: 3 done, 1 refused \
                 (last 5m 0s ago)\n"
            ),
            "{t}"
        );
        let json = serde_json::to_value(report(
            Path::new("/s/status.json"),
            &s,
            now,
            &Kernel::NotAsked,
        ))
        .expect("json");
        assert_eq!(json["running"], true);
        assert_eq!(json["grants"][0]["seconds_left"], 25);
        assert_eq!(json["grants"][0]["door"], "ssh");
        assert_eq!(json["counters"]["rejected"]["unknown_key"], 3);
        assert_eq!(human_duration(3725), "1h 2m");
        assert_eq!(human_duration(65), "1m 5s");
        assert!(!text.contains("KERNEL"), "{text}");
        // An nftables grant: the kernel's time left, or that its element is gone.
        s.grants[0].nft = true;
        let elem = Element {
            addr: s.grants[0].addr,
            port: "22/tcp".parse().expect("port"),
        };
        let k = Kernel::Elements([(elem, Duration::from_millis(23_400))].into());
        let text = render(Path::new("/s/status.json"), &s, now, &k);
        assert!(text.contains("KERNEL") && text.contains("24 s"), "{text}");
        let json =
            serde_json::to_value(report(Path::new("/s/status.json"), &s, now, &k)).expect("json");
        assert_eq!(json["grants"][0]["kernel_ms_left"], 23_400);
        assert_eq!(json["grants"][0]["kernel_element"], true);
        let none = Kernel::Elements(HashMap::new());
        let text = render(Path::new("/s/status.json"), &s, now, &none);
        assert!(text.contains("no element"), "{text}");
    }
}
