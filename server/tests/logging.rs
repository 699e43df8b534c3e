//! Where the daemon logs: `--log-format json` on stderr, priorities for journald, `LogFile`
//! in knockd's format (reopened at SIGUSR1), and `UseSyslog` to /dev/log (in a private mount
//! namespace whose /dev/log is the test's socket, or that has none).

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn config(dir: &Path, port: u16, extra: &str) -> std::path::PathBuf {
    write_private(
        dir,
        "knockd.conf",
        &format!(
            "[options]\n    StateDir = {}\n    ServerName = log-test\n    SpaPort = {port}\n    Capture = udp\n{extra}\n\
             [spa]\n    Keys = {}\n    Allow_Ports = 22\n    Start_Command = /bin/true %IP%\n    Stop_Command = /bin/true %IP%\n",
            dir.join("state").display(),
            key("alice", 1).to_inline().as_str()
        ),
    )
}

/// A running daemon with `LogFile = dir/knock-spad.log`, and that path.
fn start_with_log_file(dir: &Path) -> (Daemon, std::path::PathBuf) {
    let file = dir.join("knock-spad.log");
    let conf = config(
        dir,
        free_udp_port(),
        &format!("    LogFile = {}\n", file.display()),
    );
    let daemon = Daemon::start(&["-c", conf.to_str().expect("utf-8")], &dir.join("err"));
    wait_running(&daemon, &conf);
    (daemon, file)
}

fn wait_running(daemon: &Daemon, conf: &Path) {
    let c = conf.to_str().expect("utf-8");
    daemon.wait_for(Duration::from_secs(10), "the daemon to run", || {
        run(&["-c", c, "status"]).status.success().then_some(())
    });
}

#[test]
fn log_format_json_writes_one_object_per_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = config(dir.path(), free_udp_port(), "");
    let c = conf.to_str().expect("utf-8");
    let mut daemon = Daemon::start(&["-c", c, "--log-format", "json"], &dir.path().join("err"));
    wait_running(&daemon, &conf);
    daemon.signal_and_wait(libc::SIGTERM);
    let log = daemon.log();
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(lines.len() >= 2, "{log}");
    for v in &lines {
        assert!(
            v["time"].is_string() && v["level"].is_string() && v["msg"].is_string(),
            "{v}"
        );
    }
    assert!(lines
        .iter()
        .any(|v| v["msg"].as_str().is_some_and(|m| m.contains("starting"))));
    assert!(lines.iter().any(|v| v["msg"] == "exiting"), "{log}");
}

/// journald adds its own timestamp, and reads an sd-daemon `<N>` prefix as the priority, so
/// `journalctl -p err` shows the errors.
#[test]
fn under_journald_text_lines_carry_a_priority_and_no_timestamp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = config(dir.path(), free_udp_port(), "");
    let c = conf.to_str().expect("utf-8");
    let mut daemon = Daemon::start_with_env(
        BIN,
        &["-c", c],
        &[("JOURNAL_STREAM", "8:12345")],
        &dir.path().join("err"),
    );
    wait_running(&daemon, &conf);
    // An error: a SIGHUP with a broken file.
    let text = std::fs::read_to_string(&conf).expect("read");
    std::fs::write(&conf, format!("{text}\n    Nonsense = 1\n")).expect("break");
    // SAFETY: kill() on the daemon this test started, with a valid signal number.
    assert_eq!(
        unsafe { libc::kill(daemon.pid() as libc::pid_t, libc::SIGHUP) },
        0
    );
    daemon.wait_for(Duration::from_secs(10), "the refused reload", || {
        daemon.log().contains("keeping the old one").then_some(())
    });
    daemon.signal_and_wait(libc::SIGTERM);
    let log = daemon.log();
    assert!(
        log.lines()
            .any(|l| l.starts_with("<6>knock-spad ") && l.contains("starting")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l
                .starts_with("<3>SIGHUP: the new configuration is invalid; keeping the old one")),
        "{log}"
    );
    assert!(
        log.lines().all(|l| l.starts_with('<')),
        "every line has a priority and no date: {log}"
    );
}

/// logrotate moves the file away and sends SIGUSR1: the daemon writes on in a new file.
#[test]
fn sigusr1_reopens_the_log_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut daemon, file) = start_with_log_file(dir.path());
    let rotated = dir.path().join("knock-spad.log.1");
    std::fs::rename(&file, &rotated).expect("rotate");
    // SAFETY: kill() on the daemon this test started, with a valid signal number.
    assert_eq!(
        unsafe { libc::kill(daemon.pid() as libc::pid_t, libc::SIGUSR1) },
        0
    );
    daemon.wait_for(Duration::from_secs(10), "the new log file", || {
        std::fs::read_to_string(&file)
            .ok()
            .filter(|t| t.contains("SIGUSR1: reopened the log file"))
    });
    daemon.signal_and_wait(libc::SIGTERM);
    let old = std::fs::read_to_string(&rotated).expect("rotated");
    assert!(
        old.contains("starting") && !old.contains("exiting"),
        "{old}"
    );
    let new = std::fs::read_to_string(&file).expect("new");
    assert!(new.contains("] exiting"), "{new}");
}

/// `UseSyslog` on a machine without /dev/log: a warning and stderr, not a refusal to start.
#[test]
fn use_syslog_without_dev_log_falls_back_to_stderr() {
    require_root_and(&["unshare"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = config(dir.path(), free_udp_port(), "    UseSyslog\n");
    let devdir = dir.path().join("dev");
    std::fs::create_dir(&devdir).expect("mkdir");
    std::fs::write(devdir.join("null"), b"").expect("touch");
    let script = format!(
        "set -e; mount --bind /dev/null {d}/null; mount --rbind {d} /dev; exec {bin} -c {c}",
        d = devdir.display(),
        bin = BIN,
        c = conf.display()
    );
    let mut daemon = start_in_private_mounts(&script, &dir.path().join("err"));
    wait_running(&daemon, &conf);
    daemon.signal_and_wait(libc::SIGTERM);
    let log = daemon.log();
    assert!(
        log.contains("UseSyslog: cannot reach /dev/log (")
            && log.contains("logging to stderr instead"),
        "{log}"
    );
    assert!(log.contains(" starting: "), "{log}");
}

#[test]
fn log_file_has_knockd_line_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut daemon, file) = start_with_log_file(dir.path());
    daemon.signal_and_wait(libc::SIGTERM);
    let text = std::fs::read_to_string(&file).expect("LogFile");
    assert!(text.lines().count() >= 2, "{text}");
    for line in text.lines() {
        // [YYYY-MM-DD HH:MM] message
        let b = line.as_bytes();
        assert!(
            b.len() > 19 && b[0] == b'[' && b[11] == b' ' && b[17] == b']' && b[18] == b' ',
            "{line}"
        );
    }
    assert!(
        text.contains("] knock-spad ") && text.contains("starting"),
        "{text}"
    );
}

#[test]
fn use_syslog_sends_daemon_facility_lines_to_dev_log() {
    require_root_and(&["unshare"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let sock_path = dir.path().join("log.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind syslog socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let conf = config(dir.path(), free_udp_port(), "    UseSyslog\n");
    // In a private mount namespace, /dev is a directory of our own holding /dev/null and
    // /dev/log (the socket above); the host's /dev is untouched.
    let devdir = dir.path().join("dev");
    std::fs::create_dir(&devdir).expect("mkdir");
    std::fs::write(devdir.join("null"), b"").expect("touch");
    std::fs::write(devdir.join("log"), b"").expect("touch");
    let script = format!(
        "set -e; mount --bind /dev/null {d}/null; mount --bind {s} {d}/log; mount --rbind {d} /dev; exec {bin} -c {c}",
        d = devdir.display(),
        s = sock_path.display(),
        bin = BIN,
        c = conf.display()
    );
    let mut daemon = start_in_private_mounts(&script, &dir.path().join("err"));
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    daemon.wait_for(Duration::from_secs(10), "a syslog line", || {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        got.iter().any(|l| l.contains("starting")).then_some(())
    });
    daemon.signal_and_wait(libc::SIGTERM);
    let line = got.iter().find(|l| l.contains("starting")).expect("line");
    // <30>: facility daemon (3), severity info (6); then a BSD timestamp and the tag.
    assert!(line.starts_with("<30>"), "{line}");
    assert!(line.contains(" knock-spad["), "{line}");
}

/// A configuration's warnings are what `check` prints, and the daemon logs them at start and
/// at each reload: here a trailing `# comment` in a command, dropped as knockd's shell did.
#[test]
fn configuration_warnings_are_logged_at_start_and_reload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = write_private(
        dir.path(),
        "knockd.conf",
        &format!(
            "[options]\n    StateDir = {}\n    ServerName = log-test\n    SpaPort = {}\n    Capture = udp\n\
             [spa]\n    Keys = {}\n    Allow_Ports = 22\n\
             \x20   Start_Command = /bin/true %IP% # let them in\n    Stop_Command = /bin/true %IP%\n",
            dir.path().join("state").display(),
            free_udp_port(),
            key("alice", 1).to_inline().as_str()
        ),
    );
    let c = conf.to_str().expect("utf-8");
    let warning = format!(
        "{c}:9: warning: Start_Command ends in the comment \"# let them in\", which is dropped, \
         as knockd's shell dropped it"
    );
    let checked = run(&["-c", c, "check"]);
    assert!(checked.status.success(), "{}", stderr(&checked));
    assert!(
        stderr(&checked).contains(&format!("knock-spad: {warning}")),
        "{}",
        stderr(&checked)
    );

    let mut daemon = Daemon::start(&["-c", c], &dir.path().join("err"));
    wait_running(&daemon, &conf);
    let log = daemon.log();
    let at = |what: &str| {
        log.find(what)
            .unwrap_or_else(|| panic!("no {what:?} in {log}"))
    };
    assert!(at(&warning) < at(" starting: "), "{log}");
    // SAFETY: kill() on the daemon this test started, with a valid signal number.
    assert_eq!(
        unsafe { libc::kill(daemon.pid() as libc::pid_t, libc::SIGHUP) },
        0
    );
    daemon.wait_for(Duration::from_secs(10), "the reload's warning", || {
        daemon
            .log()
            .contains(&format!("SIGHUP: {warning}"))
            .then_some(())
    });
    daemon.signal_and_wait(libc::SIGTERM);
    assert_eq!(
        daemon.log().matches(&warning).count(),
        2,
        "{}",
        daemon.log()
    );
}
