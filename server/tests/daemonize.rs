//! `-d` (daemonize), `-p PIDFILE` and `-g LOGFILE`, as knockd has them: the command returns at
//! once, the daemon goes on in the background with its PID in the PID file and its lines in
//! the log file (knockd's `[YYYY-MM-DD HH:MM]` format), and SIGTERM ends it and removes the
//! PID file.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use knock_shared::wire::Action;

const SERVER: &str = "daemon-test.example";

/// The daemonized process, killed on drop unless it ended. It is not this test's child (its
/// parent exited at the fork), so its PID comes from the PID file it wrote; this test started
/// it.
struct Background(libc::pid_t);

impl Drop for Background {
    fn drop(&mut self) {
        if alive(self.0) {
            // SAFETY: kill() takes two integers; the PID is the daemon this test started,
            // still running (checked just above), so it names no other process.
            unsafe {
                libc::kill(self.0, libc::SIGKILL);
            }
        }
    }
}

/// Whether `pid` is a live process (a zombie waiting for a reaper counts as ended).
fn alive(pid: libc::pid_t) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1;
            after.split_whitespace().next().map(|st| st != "Z")
        })
        .unwrap_or(false)
}

/// Runs `knock-spad -d -p PIDFILE -g LOGFILE` with an SPA configuration on UDP `port` in
/// `dir`; returns what the command printed and the paths of the PID and log files.
fn start_daemonized(dir: &Path, port: u16) -> (Output, PathBuf, PathBuf) {
    let conf = spa_config(dir, SERVER, port, "22/tcp", "/bin/true %IP% %PORT%");
    let pidfile = dir.join("knock-spad.pid");
    let logfile = dir.join("knock-spad.log");
    let path = |p: &Path| p.to_str().expect("utf-8").to_owned();
    let out = Command::new(BIN)
        .args(["-c", &path(&conf), "-d", "-p", &path(&pidfile)])
        .args(["-g", &path(&logfile)])
        .stdin(Stdio::null())
        .output()
        .expect("run knock-spad -d");
    (out, pidfile, logfile)
}

#[test]
fn daemonize_with_pid_file_and_log_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_udp_port();
    let (out, pidfile, logfile) = start_daemonized(dir.path(), port);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "",
        "the background daemon writes nothing to the terminal"
    );
    assert_eq!(stderr(&out), "");

    // `-d` returns once the daemon runs: its PID file and its starting line are already there.
    let pid: libc::pid_t = std::fs::read_to_string(&pidfile)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .expect("-d returned before the daemon wrote its PID file");
    let _guard = Background(pid);
    assert!(alive(pid), "PID {pid} from the PID file is not running");
    let log = || std::fs::read_to_string(&logfile).unwrap_or_default();
    assert!(
        log().contains(" starting: "),
        "-d returned before the daemon started: {}",
        log()
    );
    // knockd's LogFile format: `[YYYY-MM-DD HH:MM] message`.
    let first = log().lines().next().unwrap_or_default().to_owned();
    let b = first.as_bytes();
    assert!(
        b.len() > 19
            && b[0] == b'['
            && b[5] == b'-'
            && b[11] == b' '
            && b[14] == b':'
            && b[17] == b']',
        "not knockd's log line format: {first}"
    );

    // It works from the background: an SPA open is accepted and logged.
    send(
        port,
        &spa_packet(&key("alice", 1), SERVER, &["22/tcp"], Action::Open),
    );
    wait_for(Duration::from_secs(10), "the open in the log file", || {
        log().contains("OPEN SESAME").then_some(())
    });

    // SIGTERM: the grant is closed, the PID file removed, the process gone.
    // SAFETY: kill() takes two integers; `pid` is the live daemon this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    wait_for(Duration::from_secs(10), "the daemon to exit", || {
        (!alive(pid)).then_some(())
    });
    assert!(!pidfile.exists(), "PID file left behind");
    let text = log();
    assert!(text.contains("exiting: closing 1 open grant(s)"), "{text}");
    assert_eq!(
        text.matches("spaSSH: running command: /bin/true 127.0.0.1 22")
            .count(),
        2,
        "start and stop command: {text}"
    );
    assert!(text.trim_end().ends_with("] exiting"), "{text}");
}

/// A daemon that cannot start (here: its UDP port is taken) fails `-d` itself: the error is
/// printed on the terminal, the exit code is 1, and no PID file is left behind, instead of a
/// silent exit 0 and a daemon dying in the background.
#[test]
fn daemonize_reports_a_failed_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_udp_port();
    let _taken = std::net::UdpSocket::bind(("0.0.0.0", port)).expect("bind the port first");
    let (out, pidfile, logfile) = start_daemonized(dir.path(), port);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with("knock-spad: error: ")
            && err.contains(&format!("cannot bind UDP port {port}")),
        "{err}"
    );
    assert!(!pidfile.exists(), "PID file left by a failed start");
    let log = std::fs::read_to_string(&logfile).unwrap_or_default();
    assert!(
        log.contains("cannot bind UDP port"),
        "not in the log file: {log}"
    );
}
