//! The state directory is trusted only when it deserves it: the grants in it name stop
//! commands that the daemon runs as root at its next start, so a directory or a file in it
//! that another user owns or that group or others can write, or a link in it, makes the
//! daemon refuse to start, and nothing recorded there is run.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::*;
use knock_shared::wire::Action;

const SERVER: &str = "state-trust.example";

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8")
}

/// Leaves a grant recorded in `dir/state` whose stop command appends to `dir/ran`: a daemon
/// opens it, then is killed (SIGKILL: nothing is closed).
fn record_a_grant(dir: &Path) -> std::path::PathBuf {
    let port = free_udp_port();
    let ran = dir.join("ran");
    let conf = write_private(
        dir,
        "knockd.conf",
        &format!(
            "[options]\n    StateDir = {state}\n    ServerName = {SERVER}\n    SpaPort = {port}\n    \
             Capture = udp\n\n[spaSSH]\n    Keys = {alice}\n    Allow_Ports = 22/tcp\n    \
             Cmd_Timeout = 30\n    Start_Command = /bin/true %IP%\n    \
             Stop_Command = /bin/sh -c 'echo stop >> {ran}'\n",
            state = dir.join("state").display(),
            alice = key("alice", 1).to_inline().as_str(),
            ran = ran.display(),
        ),
    );
    let mut d = Daemon::start(&["-c", path(&conf)], &dir.join("first.log"));
    d.wait_for(Duration::from_secs(20), "the daemon", || {
        d.log().contains(" starting: ").then_some(())
    });
    send(
        port,
        &spa_packet(&key("alice", 1), SERVER, &["22/tcp"], Action::Open),
    );
    d.wait_for(Duration::from_secs(10), "the open", || {
        d.log().contains("OPEN SESAME").then_some(())
    });
    d.signal_and_wait(libc::SIGKILL);
    assert!(!ran.exists(), "the stop command ran before the test");
    conf
}

#[test]
fn an_untrusted_state_directory_or_file_is_refused_and_nothing_in_it_runs() {
    require_root_and(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = record_a_grant(dir.path());
    let state = dir.path().join("state");
    let ran = dir.path().join("ran");
    // Each start must be refused at once; one that starts instead is stopped and fails the
    // test (rather than hanging it).
    let start = || {
        let log = dir.path().join("refused.log");
        let mut d = Daemon::start(&["-c", path(&conf)], &log);
        let exited = d.wait_exit(Duration::from_secs(20));
        let err = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            exited.is_some(),
            "the daemon started instead of refusing:\n{err}"
        );
        (exited, err)
    };

    // The directory writable by others.
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let (code, err) = start();
    assert_eq!(code, Some(Some(1)), "{err}");
    assert!(
        err.contains("writable by group or others (mode 0777): refusing to use it"),
        "{err}"
    );
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).expect("chmod");

    // The grants journal (which records the grant) owned by another user.
    let journal = state.join("grants.journal");
    std::os::unix::fs::chown(&journal, Some(65534), Some(65534)).expect("chown");
    let (code, err) = start();
    assert_eq!(code, Some(Some(1)), "{err}");
    assert!(
        err.contains("owned by uid 65534, neither root nor the daemon's user"),
        "{err}"
    );
    std::os::unix::fs::chown(&journal, Some(0), Some(0)).expect("chown back");

    // A link planted in the directory.
    let link = state.join("replay.not-before");
    std::os::unix::fs::symlink("/etc/hostname", &link).expect("symlink");
    let (code, err) = start();
    assert_eq!(code, Some(Some(1)), "{err}");
    assert!(err.contains("a symbolic link: refusing to use it"), "{err}");
    std::fs::remove_file(&link).expect("rm link");
    assert!(
        !ran.exists(),
        "a stop command from an untrusted directory ran"
    );

    // Trusted again: the recorded grant is taken up (and closed at the stop).
    let mut d = Daemon::start(&["-c", path(&conf)], &dir.path().join("again.log"));
    d.wait_for(Duration::from_secs(20), "the restart", || {
        d.log().contains(" starting: ").then_some(())
    });
    let st = d.signal_and_wait(libc::SIGTERM).expect("exit");
    assert!(st.success(), "{st:?}: {}", d.log());
    assert_eq!(
        std::fs::read_to_string(&ran).expect("the stop command ran"),
        "stop\n"
    );
}
