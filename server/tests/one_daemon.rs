//! One daemon per state directory: a second `knock-spad` on the same directory is refused
//! (exit 2) before it reads anything, so it can neither show nor close the first one's grants;
//! and the PID file is created exclusively and removed only while it still holds our pid.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use knock_shared::wire::Action;

const SERVER: &str = "one-daemon.example";

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8")
}

/// Regression: a second start was not refused; it read the first daemon's grants and ran
/// their stop commands at its own SIGTERM, while the first daemon still listed them.
#[test]
fn a_second_daemon_on_the_same_state_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_udp_port();
    let conf = spa_config(dir.path(), SERVER, port, "22/tcp", "/bin/echo open %IP%");
    let first = Daemon::start(&["-c", path(&conf)], &dir.path().join("first.log"));
    first.wait_for(Duration::from_secs(20), "the first daemon", || {
        first.log().contains(" starting: ").then_some(())
    });
    send(
        port,
        &spa_packet(&key("alice", 1), SERVER, &["22/tcp"], Action::Open),
    );
    first.wait_for(Duration::from_secs(10), "the open", || {
        first.log().contains("OPEN SESAME").then_some(())
    });

    // In the foreground and with -d alike: exit 2, naming the holder, and nothing run.
    let state = dir.path().join("state");
    for extra in [&[][..], &["-d"][..]] {
        let out = Command::new(BIN)
            .args(["-c", path(&conf)])
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .expect("run a second knock-spad");
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {err}");
        assert!(
            err.contains(&format!(
                "another knock-spad (pid {}) holds {}",
                first.pid(),
                state.display()
            )),
            "{extra:?}: {err}"
        );
    }
    // The first daemon still runs and still holds its grant; no stop command ran.
    let status = run(&["-c", path(&conf), "status", "--json"]);
    assert_eq!(status.status.code(), Some(0), "{}", stderr(&status));
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    assert_eq!(json["grants"].as_array().map(Vec::len), Some(1), "{json}");
    let log = first.log();
    assert_eq!(
        log.matches("running command: /bin/echo").count(),
        1,
        "{log}"
    );
    assert!(
        !log.contains("running command: /bin/true"),
        "a stop command ran: {log}"
    );
}

/// The PID file: a stale one (its daemon died) is replaced; one that names a running
/// knock-spad, or a symbolic link, is refused and left alone; and at exit the file is removed
/// only while it still holds our pid.
#[test]
fn the_pid_file_is_ours_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_udp_port();
    let conf = spa_config(dir.path(), SERVER, port, "22/tcp", "/bin/true %IP% %PORT%");
    let pidfile = dir.path().join("knock-spad.pid");

    // A symbolic link where the PID file goes: refused, and its target untouched.
    let target = dir.path().join("target");
    std::fs::write(&target, "keep\n").expect("target");
    std::os::unix::fs::symlink(&target, &pidfile).expect("symlink");
    let out = run(&["-c", path(&conf), "-p", path(&pidfile)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot write pid file") && stderr(&out).contains("not a regular"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_to_string(&target).expect("read"), "keep\n");
    std::fs::remove_file(&pidfile).expect("rm link");

    // A stale PID file (a pid above pid_max names no process): replaced, mode 0644.
    std::fs::write(&pidfile, "999999999\n").expect("stale");
    let d = Daemon::start(
        &["-c", path(&conf), "-p", path(&pidfile)],
        &dir.path().join("d.log"),
    );
    d.wait_for(Duration::from_secs(20), "the PID file", || {
        let t = std::fs::read_to_string(&pidfile).ok()?;
        (t.trim() == d.pid().to_string()).then_some(())
    });
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&pidfile)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777,
        0o644
    );

    // Another daemon (its own state directory) given the same PID file: refused while the
    // first runs, and the file still names the first.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).expect("mkdir");
    let conf2 = spa_config(&other, SERVER, free_udp_port(), "22/tcp", "/bin/true %IP%");
    let out = run(&["-c", path(&conf2), "-p", path(&pidfile)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("names knock-spad pid {}", d.pid())),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(&pidfile).expect("read").trim(),
        d.pid().to_string()
    );

    // Someone else's pid written over ours meanwhile: the exiting daemon leaves the file.
    std::fs::write(&pidfile, "12345\n").expect("overwrite");
    let mut d = d;
    let st = d.signal_and_wait(libc::SIGTERM).expect("exit status");
    assert!(
        st.success(),
        "{st:?}: {}",
        std::fs::read_to_string(dir.path().join("d.log")).unwrap_or_default()
    );
    assert_eq!(
        std::fs::read_to_string(&pidfile).expect("still there"),
        "12345\n"
    );
}
