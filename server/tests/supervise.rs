//! Supervision: when the packet thread or the grant keeper dies, the daemon exits with
//! status 1 (so `Restart=on-failure` brings it back) and leaves its grants recorded for the
//! restart, instead of living on half alive; while both parts live it sends systemd's
//! `WATCHDOG=1` (`WatchdogSec=`). The faults are injected with `KNOCK_SPAD_FAULT`, which only
//! debug builds (the ones under test) read.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

use common::*;
use knock_shared::wire::Action;

const SERVER: &str = "supervise-test.example";

fn start(dir: &Path, env: &[(&str, &str)]) -> (Daemon, u16) {
    let port = free_udp_port();
    let conf = spa_config(dir, SERVER, port, "22/tcp", "/bin/echo start %IP% %PORT%");
    let d = Daemon::start_with_env(
        BIN,
        &["-c", conf.to_str().expect("utf-8")],
        env,
        &dir.join("daemon.log"),
    );
    d.wait_for(Duration::from_secs(20), "the daemon", || {
        d.log().contains(" starting: ").then_some(())
    });
    (d, port)
}

#[test]
fn a_dead_packet_thread_ends_the_daemon_with_status_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut d, port) = start(dir.path(), &[("KNOCK_SPAD_FAULT", "packets")]);
    send(
        port,
        &spa_packet(&key("alice", 1), SERVER, &["22/tcp"], Action::Open),
    );
    d.wait_for(Duration::from_secs(10), "the open", || {
        d.log()
            .contains("running command: /bin/echo start")
            .then_some(())
    });
    send(port, b"knock-spad-fault");
    let code = d.wait_exit(Duration::from_secs(20));
    let log = d.log();
    assert_eq!(code, Some(Some(1)), "{log}");
    assert!(
        log.contains(
            "the packet thread ended; exiting with status 1 so that the service manager \
             restarts the daemon (open grants stay recorded)"
        ),
        "{log}"
    );
    // The grant was neither closed nor forgotten: the restart takes it up.
    assert!(!log.contains("running command: /bin/true"), "{log}");
    let (again, _) = start(dir.path(), &[]);
    again.wait_for(Duration::from_secs(10), "the grant taken up", || {
        again
            .log()
            .contains("state: 1 grant(s) recorded before the restart")
            .then_some(())
    });
}

#[test]
fn a_dead_grant_keeper_ends_the_daemon_with_status_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut d, port) = start(dir.path(), &[("KNOCK_SPAD_FAULT", "grants")]);
    send(
        port,
        &spa_packet(&key("alice", 1), SERVER, &["22/tcp"], Action::Open),
    );
    let code = d.wait_exit(Duration::from_secs(20));
    let log = d.log();
    assert_eq!(code, Some(Some(1)), "{log}");
    assert!(
        log.contains("the grant keeper panicked; exiting with status 1"),
        "{log}"
    );
}

#[test]
fn the_watchdog_hears_from_a_live_daemon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // 0.4 s: the daemon pings every 0.2 s.
    let (_d, _) = start(
        dir.path(),
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().expect("utf-8")),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let mut buf = [0u8; 256];
    let mut pings = 0;
    while pings < 3 {
        let n = sock.recv(&mut buf).expect("a notification within 10 s");
        if &buf[..n] == b"WATCHDOG=1" {
            pings += 1;
        }
    }
}
