//! Ending access now: `knock-spad close` (through the running daemon's control socket), and
//! a reload that removes a key or a door (`keys revoke`), both run the stop commands of the
//! grants concerned at once instead of leaving them open until their timeout.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use knock_shared::wire::Action;

const SERVER: &str = "close-test.example";

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8")
}

/// Two keys on one SPA door (alice may open 22, bob 2222), grants of 600 s.
fn config(dir: &Path, port: u16) -> PathBuf {
    write_private(
        dir,
        "knockd.conf",
        &format!(
            "[options]\n    StateDir = {state}\n    ServerName = {SERVER}\n    SpaPort = {port}\n    \
             Capture = udp\n\n[spaSSH]\n    Keys = {alice}, {bob}\n    \
             Allow_Ports = 22/tcp, 2222/tcp\n    Cmd_Timeout = 600\n    \
             Start_Command = /bin/echo start %IP% %PORT%\n    \
             Stop_Command = /bin/echo stop %IP% %PORT%\n",
            state = dir.join("state").display(),
            alice = key("alice", 1).to_inline().as_str(),
            bob = key("bob", 2).to_inline().as_str(),
        ),
    )
}

/// The number of open grants `status --json` shows.
fn grants(conf: &Path) -> usize {
    let out = run(&["-c", path(conf), "status", "--json"]);
    // Not JSON (the status file not written yet, say): no grants yet.
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    json["grants"].as_array().map_or(0, Vec::len)
}

/// Starts the daemon and has alice open 22 and bob 2222.
fn start_with_two_grants(dir: &Path) -> (Daemon, PathBuf) {
    let port = free_udp_port();
    let conf = config(dir, port);
    let d = Daemon::start(&["-c", path(&conf)], &dir.join("daemon.log"));
    d.wait_for(Duration::from_secs(20), "the daemon", || {
        d.log().contains(" starting: ").then_some(())
    });
    for (name, byte, p) in [("alice", 1, "22/tcp"), ("bob", 2, "2222/tcp")] {
        send(
            port,
            &spa_packet(&key(name, byte), SERVER, &[p], Action::Open),
        );
    }
    d.wait_for(Duration::from_secs(30), "both opens", || {
        (d.log().matches("running command: /bin/echo start").count() == 2).then_some(())
    });
    d.wait_for(Duration::from_secs(30), "both grants in status", || {
        (grants(&conf) == 2).then_some(())
    });
    (d, conf)
}

#[test]
fn close_ends_the_matching_grants_now() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (d, conf) = start_with_two_grants(dir.path());
    let c = path(&conf);

    // Nothing matches: nothing closed, said so.
    let out = run(&["-c", c, "close", "--key", "carol"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "no open grant matches\n");

    let out = run(&["-c", c, "close", "--key", "alice"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "closed spaSSH 127.0.0.1 22/tcp (key alice)\n",
        "{}",
        d.log()
    );
    assert!(
        d.log()
            .contains("running command: /bin/echo stop 127.0.0.1 22\n"),
        "{}",
        d.log()
    );
    assert!(d
        .log()
        .contains("closed by the operator (knock-spad close); closing"));
    d.wait_for(Duration::from_secs(10), "status to show one grant", || {
        (grants(&conf) == 1).then_some(())
    });

    // Filters combine: bob's grant is not for 192.0.2.1.
    let out = run(&["-c", c, "close", "--key", "bob", "--address", "192.0.2.1"]);
    assert_eq!(stdout(&out), "no open grant matches\n");
    let out = run(&["-c", c, "close", "--all"]);
    assert_eq!(stdout(&out), "closed spaSSH 127.0.0.1 2222/tcp (key bob)\n");
    d.wait_for(Duration::from_secs(10), "status to show no grant", || {
        (grants(&conf) == 0).then_some(())
    });

    // Usage: something to close must be named.
    let out = run(&["-c", c, "close"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = run(&["-c", c, "close", "--all", "--key", "bob"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    drop(d);

    // No daemon: exit 3, said so.
    let out = run(&["-c", c, "close", "--all"]);
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    assert!(stdout(&out).contains("knock-spad is not running"));
}

/// Regression: `keys revoke` reloaded the daemon, but the revoked key's grant stayed open
/// until its timeout.
#[test]
fn revoking_a_key_ends_its_grants() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (d, conf) = start_with_two_grants(dir.path());
    let out = run(&["-c", path(&conf), "keys", "revoke", "alice"]);
    assert!(out.status.success(), "{}", stderr(&out));
    d.wait_for(Duration::from_secs(10), "alice's grant to end", || {
        d.log()
            .contains("running command: /bin/echo stop 127.0.0.1 22\n")
            .then_some(())
    });
    assert!(
        d.log()
            .contains("127.0.0.1: spaSSH: its door or key was removed by a reload; closing"),
        "{}",
        d.log()
    );
    d.wait_for(
        Duration::from_secs(10),
        "status to show bob's grant only",
        || (grants(&conf) == 1).then_some(()),
    );
    assert!(
        !d.log().contains("stop 127.0.0.1 2222"),
        "bob's grant was closed too: {}",
        d.log()
    );
}
