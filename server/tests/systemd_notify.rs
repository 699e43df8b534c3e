//! `Type=notify` (sd_notify(3)): with `NOTIFY_SOCKET` set, the daemon sends `READY=1` once it
//! runs (an SPA packet sent right after it is handled), `RELOADING=1` and `READY=1` around a
//! SIGHUP, and `STOPPING=1` at SIGTERM, to a path or to an abstract socket; the commands it
//! runs do not inherit `NOTIFY_SOCKET`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

use common::*;
use knock_shared::wire::Action;

const SERVER: &str = "notify-test.example";

/// The next datagram on `sock` as text (waits at most 10 s).
fn next_message(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("a notification within 10 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn sighup(daemon: &Daemon) {
    // SAFETY: kill() takes two integers; the PID is the daemon this test started, running.
    let rc = unsafe { libc::kill(daemon.pid() as libc::pid_t, libc::SIGHUP) };
    assert_eq!(rc, 0, "SIGHUP");
}

/// Starts the daemon with `NOTIFY_SOCKET=notify_socket`, its start command a script that
/// writes the environment it got to `dir/env.txt`; checks READY=1, an open, two SIGHUPs,
/// STOPPING=1.
fn notify_round_trip(dir: &Path, sock: &UnixDatagram, notify_socket: &str) {
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let script = dir.join("dump-env");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nenv > {}\n", dir.join("env.txt").display()),
    )
    .expect("write script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let port = free_udp_port();
    let conf = spa_config(
        dir,
        SERVER,
        port,
        "22/tcp",
        &format!("{} %IP% %PORT%", script.display()),
    );
    let mut daemon = Daemon::start_with_env(
        BIN,
        &["-c", conf.to_str().expect("utf-8")],
        &[("NOTIFY_SOCKET", notify_socket)],
        &dir.join("daemon.log"),
    );

    assert_eq!(next_message(sock), "READY=1", "log:\n{}", daemon.log());
    // Ready means ready: the first packet after it is handled, with no grace period.
    send(
        port,
        &spa_packet(&key("alice", 1), SERVER, &["22/tcp"], Action::Open),
    );
    let env = daemon.wait_for(Duration::from_secs(10), "the start command", || {
        std::fs::read_to_string(dir.join("env.txt"))
            .ok()
            .filter(|t| !t.is_empty())
    });
    assert!(
        !env.contains("NOTIFY_SOCKET"),
        "a command inherited NOTIFY_SOCKET:\n{env}"
    );

    // SIGHUP: reloading, then ready again, saying what became of the file.
    sighup(&daemon);
    assert_eq!(next_message(sock), "RELOADING=1");
    assert_eq!(next_message(sock), "READY=1\nSTATUS=configuration reloaded");
    // A broken file: still ready (with the old configuration), and the status says so.
    let text = std::fs::read_to_string(&conf).expect("read config");
    std::fs::write(&conf, format!("{text}    No_Such_Directive = 1\n")).expect("break config");
    sighup(&daemon);
    assert_eq!(next_message(sock), "RELOADING=1");
    assert_eq!(
        next_message(sock),
        "READY=1\nSTATUS=the new configuration is invalid; running the old one"
    );

    let status = daemon.signal_and_wait(libc::SIGTERM).expect("exit status");
    assert!(status.success(), "{status:?}");
    assert_eq!(next_message(sock), "STOPPING=1");
}

#[test]
fn ready_and_stopping_reach_a_path_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
    notify_round_trip(dir.path(), &sock, path.to_str().expect("utf-8"));
}

#[test]
fn ready_and_stopping_reach_an_abstract_socket() {
    use std::os::linux::net::SocketAddrExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let name = format!("knock-spa-notify-test-{}", std::process::id());
    let addr =
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("address");
    let sock = UnixDatagram::bind_addr(&addr).expect("bind the abstract notify socket");
    notify_round_trip(dir.path(), &sock, &format!("@{name}"));
}

/// Without a usable address the daemon runs as usual and says so once.
#[test]
fn an_unusable_notify_socket_is_reported_not_fatal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_udp_port();
    let conf = spa_config(dir.path(), SERVER, port, "22/tcp", "/bin/true %IP% %PORT%");
    let daemon = Daemon::start_with_env(
        BIN,
        &["-c", conf.to_str().expect("utf-8")],
        &[("NOTIFY_SOCKET", "relative/notify.sock")],
        &dir.path().join("daemon.log"),
    );
    daemon.wait_for(Duration::from_secs(10), "the starting line", || {
        daemon.log().contains(" starting: ").then_some(())
    });
    assert!(
        daemon.log().contains("not a usable socket address"),
        "{}",
        daemon.log()
    );
}
