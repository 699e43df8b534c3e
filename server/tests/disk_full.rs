//! A full disk under the state directory: the daemon refuses to open rather than open a port
//! it could not record (fail closed), says why, leaves its files whole, and opens again once
//! there is room. The state
//! directory is a 64 KiB tmpfs mounted in a private mount namespace (the host's mounts are
//! untouched); the test fills it from inside that namespace with `nsenter`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use knock_shared::wire::Action;

const SERVER: &str = "disk-full-test.example";

/// Runs `sh -c SCRIPT` in the mount namespace of `pid`.
fn in_mount_ns(pid: u32, script: &str) -> std::process::Output {
    Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-m", "sh", "-c", script])
        .output()
        .expect("nsenter")
}

#[test]
fn a_full_state_directory_refuses_to_open_and_recovers() {
    require_root_and(&["unshare", "nsenter"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_udp_port();
    let opened = dir.path().join("opened");
    let conf = spa_config(
        dir.path(),
        SERVER,
        port,
        "22/tcp",
        &format!("/usr/bin/touch {}", opened.display()),
    );
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("mkdir state");
    let script = format!(
        "set -e; mount -t tmpfs -o size=64k,mode=0700 knock-spa-test {s}; exec {bin} -c {c}",
        s = state.display(),
        bin = BIN,
        c = conf.display()
    );
    let mut daemon = start_in_private_mounts(&script, &dir.path().join("err"));
    daemon.wait_for(Duration::from_secs(10), "the daemon to run", || {
        daemon.log().contains(" starting: ").then_some(())
    });
    let pid = daemon.pid();

    // Fill the tmpfs (cat stops at ENOSPC; its failure is the point).
    let fill = format!(
        "cat /dev/zero > {}/fill 2>/dev/null; df -k {}",
        state.display(),
        state.display()
    );
    let df = in_mount_ns(pid, &fill);
    assert!(
        String::from_utf8_lossy(&df.stdout).contains("knock-spa-test"),
        "the state directory is not the test's tmpfs: {}",
        String::from_utf8_lossy(&df.stdout)
    );

    send(
        port,
        &spa_packet(&key("alice", 1), SERVER, &["22/tcp"], Action::Open),
    );
    let wait_log = |needle: &str| {
        daemon.wait_for(Duration::from_secs(10), needle, || {
            daemon.log().contains(needle).then_some(())
        })
    };
    wait_log("not opening for 127.0.0.1: the grant could not be recorded");
    assert!(
        !opened.exists(),
        "the start command ran with the grant unrecorded"
    );
    assert!(
        daemon.log().contains("No space left on device"),
        "{}",
        daemon.log()
    );

    // Room again: a new packet opens.
    let rm = in_mount_ns(pid, &format!("rm {}/fill", state.display()));
    assert!(
        rm.status.success(),
        "{}",
        String::from_utf8_lossy(&rm.stderr)
    );
    send(
        port,
        &spa_packet(&key("alice", 1), SERVER, &["22/tcp"], Action::Open),
    );
    daemon.wait_for(Duration::from_secs(10), "the open", || {
        opened.exists().then_some(())
    });

    // The replay journal: fill the disk just when the next record needs a new page. The
    // packet is refused (its replay record could not be made durable), and the journal is
    // cut back to its last good record: whole records only, no torn tail.
    let journal = state.join("replay.journal");
    let journal_len = || -> u64 {
        let out = in_mount_ns(pid, &format!("stat -c %s {}", journal.display()));
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("journal size")
    };
    let page_full = 4096 - (4096 - 8) % 48; // magic + 85 records
    let mut len = journal_len();
    while len < page_full {
        send(
            port,
            &spa_packet(&key("alice", 1), SERVER, &["22/tcp"], Action::Open),
        );
        len = daemon.wait_for(Duration::from_secs(10), "a journal record", || {
            let now = journal_len();
            (now > len).then_some(now)
        });
    }
    assert_eq!(len, page_full);
    in_mount_ns(pid, &fill);
    send(
        port,
        &spa_packet(&key("alice", 1), SERVER, &["22/tcp"], Action::Open),
    );
    wait_log("cannot save the replay cache");
    assert_eq!(journal_len(), page_full, "cut back to the last good record");
    let bytes = in_mount_ns(pid, &format!("cat {}", journal.display())).stdout;
    let j = knock_shared::replay::decode_journal(&bytes).expect("a valid journal");
    assert_eq!(j.entries.len(), 85);
    assert!(!j.torn_tail);
    in_mount_ns(pid, &format!("rm {}/fill", state.display()));
    // The refused packet is counted (`status` reads the file the daemon writes again now
    // that there is room).
    daemon.wait_for(Duration::from_secs(10), "the refusal counted", || {
        let out = in_mount_ns(
            pid,
            &format!("{BIN} status --json --state-dir {}", state.display()),
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["counters"]["rejected"]["replay_not_saved"] == 1).then_some(())
    });
    let status = daemon.signal_and_wait(libc::SIGTERM).expect("exit status");
    assert!(status.success(), "{status:?}\n{}", daemon.log());
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
}
