//! One reload path: the packet thread applies a new configuration and hands it to the grant
//! keeper in order with its own actions, so an action always reaches the door it was made
//! for, and `status` shows a reload only once every part runs it.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use knock_shared::wire::Action;

const SERVER: &str = "reload-test.example";
const OPENS: u16 = 30;

/// Two SPA doors, `[first]` (alice, ports 1001 and up, start command `/bin/echo first`) and
/// `[second]` (bob), in the order given.
fn write_config(dir: &Path, port: u16, reversed: bool) -> std::path::PathBuf {
    let ports: Vec<String> = (1..=OPENS).map(|i| format!("{}/tcp", 1000 + i)).collect();
    let first = format!(
        "[first]\n    Keys = {}\n    Allow_Ports = {}\n    Cmd_Timeout = 600\n    \
         Start_Command = /bin/echo first %PORT%\n    Stop_Command = /bin/true\n\n",
        key("alice", 1).to_inline().as_str(),
        ports.join(", ")
    );
    let second = format!(
        "[second]\n    Keys = {}\n    Allow_Ports = 2001/tcp\n    Cmd_Timeout = 600\n    \
         Start_Command = /bin/echo second %PORT%\n    Stop_Command = /bin/true\n\n",
        key("bob", 2).to_inline().as_str(),
    );
    let doors = if reversed {
        second + &first
    } else {
        first + &second
    };
    // Replaced whole (a rename), as an editor or `keys` does: the daemon reads the old file
    // or the new one.
    let text = format!(
        "[options]\n    StateDir = {}\n    ServerName = {SERVER}\n    SpaPort = {port}\n    \
         Capture = udp\n\n{doors}",
        dir.join("state").display()
    );
    let tmp = write_private(dir, "knockd.conf.new", &text);
    let conf = dir.join("knockd.conf");
    std::fs::rename(&tmp, &conf).expect("rename");
    conf
}

/// Regression: the grant keeper took a reload at once while the packet thread applied it up
/// to one poll interval later, so an open verified under the old order could run the door
/// at the same index in the new one.
#[test]
fn reordering_doors_in_a_reload_never_runs_another_doors_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_udp_port();
    let conf = write_config(dir.path(), port, false);
    let d = Daemon::start(
        &["-c", conf.to_str().expect("utf-8")],
        &dir.path().join("daemon.log"),
    );
    d.wait_for(Duration::from_secs(20), "the daemon", || {
        d.log().contains(" starting: ").then_some(())
    });
    let alice = key("alice", 1);
    for i in 1..=OPENS {
        write_config(dir.path(), port, i % 2 == 1);
        // SAFETY: kill() on the daemon this test started, with a valid signal number.
        assert_eq!(
            unsafe { libc::kill(d.pid() as libc::pid_t, libc::SIGHUP) },
            0
        );
        // At once, while the reload is on its way to the parts of the daemon.
        let p = format!("{}/tcp", 1000 + i);
        send(port, &spa_packet(&alice, SERVER, &[&p], Action::Open));
    }
    d.wait_for(
        Duration::from_secs(30),
        "every open to run a command",
        || {
            (d.log().matches("running command: /bin/echo").count() >= usize::from(OPENS))
                .then_some(())
        },
    );
    let log = d.log();
    assert_eq!(
        log.matches("running command: /bin/echo first").count(),
        usize::from(OPENS),
        "{log}"
    );
    assert!(
        !log.contains("running command: /bin/echo second"),
        "alice's open ran the other door's command:\n{log}"
    );
}
