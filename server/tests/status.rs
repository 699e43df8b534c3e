//! `knock-spad status` against the real daemon: UDP capture on a free loopback port, a
//! temporary StateDir, and `/bin/true` as the firewall command, so nothing needs iptables or
//! a namespace.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use knock_shared::wire::Action;
use serde_json::Value;

const SERVER: &str = "status-test.example";

fn config(dir: &Path, port: u16) -> std::path::PathBuf {
    spa_config(
        dir,
        SERVER,
        port,
        "22/tcp, 443/tcp",
        "/bin/true %IP% %PORT%",
    )
}

/// `status --json` as JSON, with its exit code.
fn status(conf: &Path) -> (i32, Value) {
    let out = run(&["-c", conf.to_str().expect("utf-8"), "status", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status --json: {e}: {}{}", stdout(&out), stderr(&out)));
    (out.status.code().unwrap_or(-1), v)
}

fn running(conf: &Path) -> Option<Value> {
    let (code, v) = status(conf);
    (code == 0 && v["running"] == true).then_some(v)
}

#[test]
fn status_shows_grants_and_counters_of_the_running_daemon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_udp_port();
    let conf = config(dir.path(), port);
    let c = conf.to_str().expect("utf-8");

    // Not running yet: exit 3, and JSON says so.
    let (code, v) = status(&conf);
    assert_eq!(code, 3, "{v}");
    assert_eq!(v["running"], false);
    let text = run(&["-c", c, "status"]);
    assert!(stdout(&text).contains("not running"), "{}", stdout(&text));

    let mut daemon = Daemon::start(&["-c", c], &dir.path().join("daemon.log"));
    let v = daemon.wait_for(Duration::from_secs(10), "the daemon's status", || {
        running(&conf)
    });
    assert_eq!(v["pid"], daemon.pid());
    assert_eq!(v["listening"], format!("udp port {port}"));
    assert_eq!(v["keys"], 1);
    assert_eq!(v["grants"].as_array().map(Vec::len), Some(0));
    wait_past_start(v["started"].as_u64().expect("started"));

    // The snapshot is root's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("state/status.json"))
        .expect("status.json")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // One valid SPA packet: one grant, one accepted.
    send(
        port,
        &spa_packet(&key("alice", 1), SERVER, &["22/tcp"], Action::Open),
    );
    let v = daemon.wait_for(Duration::from_secs(10), "the grant in status", || {
        running(&conf).filter(|v| {
            v["counters"]["accepted"] == 1 && v["grants"].as_array().is_some_and(|g| g.len() == 1)
        })
    });
    let g = &v["grants"][0];
    assert_eq!(g["door"], "spaSSH", "{v}");
    assert_eq!(g["key"], "alice");
    assert_eq!(g["addr"], "127.0.0.1");
    assert_eq!(g["port"], "22/tcp");
    let left = g["seconds_left"].as_u64().expect("seconds_left");
    assert!((1..=31).contains(&left), "{left}");
    assert_eq!(v["counters"]["rejected"]["malformed"], 0);

    // Garbage: a reject counter moves, nothing else opens.
    send(port, b"not an spa packet");
    let v = daemon.wait_for(Duration::from_secs(10), "the reject counter", || {
        running(&conf).filter(|v| v["counters"]["rejected"]["malformed"] == 1)
    });
    assert_eq!(v["counters"]["accepted"], 1);
    assert_eq!(v["counters"]["packets"], 2);
    // An unknown key is counted under its own reason.
    send(
        port,
        &spa_packet(&key("mallory", 9), SERVER, &["22/tcp"], Action::Open),
    );
    daemon.wait_for(Duration::from_secs(10), "the unknown-key counter", || {
        running(&conf).filter(|v| v["counters"]["rejected"]["unknown_key"] == 1)
    });

    // The table shows the same.
    let text = stdout(&run(&["-c", c, "status"]));
    assert!(text.contains("is running"), "{text}");
    assert!(text.contains("spaSSH") && text.contains("alice") && text.contains("127.0.0.1"));
    assert!(
        text.contains("malformed") && text.contains("unknown key"),
        "{text}"
    );

    // A verified close removes the grant at once.
    send(
        port,
        &spa_packet(&key("alice", 1), SERVER, &["22/tcp"], Action::Close),
    );
    daemon.wait_for(Duration::from_secs(10), "the grant to close", || {
        running(&conf).filter(|v| v["grants"].as_array().is_some_and(Vec::is_empty))
    });

    // A clean exit removes the snapshot: not running, exit 3.
    let st = daemon.signal_and_wait(libc::SIGTERM).expect("exit status");
    assert!(st.success(), "{st:?}\n{}", daemon.log());
    assert!(!dir.path().join("state/status.json").exists());
    let (code, v) = status(&conf);
    assert_eq!((code, &v["state"]), (3, &Value::from("stopped")));
}

#[test]
fn status_reports_a_killed_daemon_as_dead() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_udp_port();
    let conf = config(dir.path(), port);
    let c = conf.to_str().expect("utf-8");
    let mut daemon = Daemon::start(&["-c", c], &dir.path().join("daemon.log"));
    daemon.wait_for(Duration::from_secs(10), "the daemon's status", || {
        running(&conf)
    });
    daemon.signal_and_wait(libc::SIGKILL);
    let (code, v) = status(&conf);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["state"], "dead");
    assert_eq!(v["running"], false);
    let text = stdout(&run(&["-c", c, "status"]));
    assert!(text.contains("NOT running"), "{text}");
    // --state-dir finds the same file without the configuration.
    let state = dir.path().join("state");
    let out = run(&[
        "-c",
        "/nonexistent/knockd.conf",
        "--state-dir",
        state.to_str().expect("utf-8"),
        "status",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

#[test]
fn keys_add_reloads_the_running_daemon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_udp_port();
    let conf = config(dir.path(), port);
    let c = conf.to_str().expect("utf-8");
    let daemon = Daemon::start(&["-c", c], &dir.path().join("daemon.log"));
    let v = daemon.wait_for(Duration::from_secs(10), "the daemon's status", || {
        running(&conf)
    });
    wait_past_start(v["started"].as_u64().expect("started"));

    // bob is unknown until added.
    let bob = key("bob", 2);
    let line = format!("Keys = {}", bob.to_inline().as_str());
    let out = run_with_stdin(&["-c", c, "keys", "add", "bob", "--from-line", "-"], &line);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let said = stdout(&out);
    assert!(
        said.contains(&format!("knock-spad (pid {}) reloaded", daemon.pid())),
        "{said}"
    );
    assert!(said.contains("2 SPA key(s)"), "{said}");
    let v = running(&conf).expect("running");
    assert_eq!(
        (v["keys"].as_u64(), v["reloads"].as_u64()),
        (Some(2), Some(1))
    );

    send(port, &spa_packet(&bob, SERVER, &["443/tcp"], Action::Open));
    let v = daemon.wait_for(Duration::from_secs(10), "bob's grant", || {
        running(&conf).filter(|v| v["counters"]["accepted"] == 1)
    });
    assert_eq!(v["grants"][0]["key"], "bob", "{v}");
    assert_eq!(v["grants"][0]["port"], "443/tcp");
    assert!(
        daemon.log().contains("configuration reloaded"),
        "{}",
        daemon.log()
    );
}
