//! Clock steps with the real daemon: its wall clock is moved with libfaketime (Debian's
//! `libfaketime`, preloaded into the daemon alone; the host's clock is not touched). A
//! packet accepted, the clock stepped a day ahead (a packet accepted then purges the first
//! one's replay entry) and back: the first packet, replayed, must be refused, not accepted a
//! second time.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use knock_shared::wire::Action;

const SERVER: &str = "clock-test.example";
const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
const DAY: u64 = 86_400;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Sets the daemon's clock offset (libfaketime reads the file at every call).
fn set_offset(file: &Path, offset: &str) {
    let tmp = file.with_extension("new");
    std::fs::write(&tmp, format!("{offset}\n")).expect("write");
    std::fs::rename(&tmp, file).expect("rename");
}

/// Regression: the forward step purged the live entry, and the step back let the captured
/// packet in again.
#[test]
fn a_clock_stepped_forward_and_back_does_not_readmit_a_captured_packet() {
    assert!(
        Path::new(FAKETIME).exists(),
        "{FAKETIME} is needed (Debian: apt-get install libfaketime; scripts/test installs it)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let offset = dir.path().join("faketime");
    set_offset(&offset, "+0");
    let port = free_udp_port();
    let conf = spa_config(dir.path(), SERVER, port, "22/tcp", "/bin/true %IP% %PORT%");
    let d = Daemon::start_with_env(
        BIN,
        &["-c", conf.to_str().expect("utf-8")],
        &[
            ("LD_PRELOAD", FAKETIME),
            ("FAKETIME_TIMESTAMP_FILE", offset.to_str().expect("utf-8")),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
        &dir.path().join("daemon.log"),
    );
    d.wait_for(Duration::from_secs(20), "the daemon", || {
        d.log().contains(" starting: ").then_some(())
    });
    let opened = |n: usize| {
        d.wait_for(Duration::from_secs(10), "an open", || {
            (d.log().matches("OPEN SESAME").count() == n).then_some(())
        });
    };
    let alice = key("alice", 1);
    let captured = spa_packet(&alice, SERVER, &["22/tcp"], Action::Open);
    send(port, &captured);
    opened(1);

    // A day ahead: a packet stamped then is accepted, and the first one's entry expires.
    set_offset(&offset, "+1d");
    send(
        port,
        &spa_packet_at(&alice, SERVER, &["22/tcp"], Action::Open, now() + DAY),
    );
    opened(2);

    // Back to the right time: the captured packet, replayed, is refused as stale.
    set_offset(&offset, "+0");
    send(port, &captured);
    d.wait_for(Duration::from_secs(10), "the replay refused", || {
        d.log().contains("stale").then_some(())
    });
    assert_eq!(
        d.log().matches("OPEN SESAME").count(),
        2,
        "the captured packet was accepted again:\n{}",
        d.log()
    );
}
