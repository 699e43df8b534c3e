//! Closes never wait behind opens: start commands and stop commands run on separate lanes,
//! so a hung start command holds up no due close; and a grant that comes due while its start
//! command still runs is closed only after it, never before (a delete must not overtake its
//! insert).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use knock_shared::wire::Action;

const SERVER: &str = "lanes-test.example";

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8")
}

/// A script that appends `line` to `events`; with `wait_for`, only once that file exists
/// (polling, at most 60 s, then it fails), and it writes its pid to `DIR/NAME.pid` first.
fn script(dir: &Path, name: &str, events: &Path, line: &str, wait_for: Option<&Path>) -> String {
    let wait = wait_for.map_or(String::new(), |w| {
        format!(
            "echo $$ > '{}.pid'\ni=0\nwhile [ ! -e '{}' ]; do\n  i=$((i+1)); [ $i -gt 1200 ] && exit 1\n  sleep 0.05\ndone\n",
            dir.join(name).display(),
            w.display()
        )
    });
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!("#!/bin/sh\n{wait}echo '{line}' >> '{}'\n", events.display()),
    )
    .expect("write script");
    p.display().to_string()
}

/// Writes `dir/knockd.conf` (a UDP daemon on `port`, state in `dir/state`, then `doors`),
/// starts the daemon on it and waits until it runs.
fn start(dir: &Path, port: u16, doors: &str) -> (Daemon, PathBuf) {
    let conf = write_private(
        dir,
        "knockd.conf",
        &format!(
            "[options]\n    StateDir = {state}\n    ServerName = {SERVER}\n    SpaPort = {port}\n    \
             Capture = udp\n\n{doors}",
            state = dir.join("state").display(),
        ),
    );
    let d = Daemon::start(&["-c", path(&conf)], &dir.join("daemon.log"));
    d.wait_for(Duration::from_secs(20), "the daemon", || {
        d.log().contains(" starting: ").then_some(())
    });
    (d, conf)
}

#[test]
fn closes_never_wait_behind_a_hung_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_udp_port();
    let events = dir.path().join("events");
    let release = dir.path().join("release");
    let slow_start = script(
        dir.path(),
        "slow-start",
        &events,
        "slow started",
        Some(&release),
    );
    let slow_stop = script(dir.path(), "slow-stop", &events, "slow stopped", None);
    let quick_stop = script(dir.path(), "quick-stop", &events, "quick stopped", None);
    let (mut d, conf) = start(
        dir.path(),
        port,
        &format!(
            "[slow]\n    Keys = {alice}\n    Allow_Ports = 1001/tcp\n    Cmd_Timeout = 1\n    \
             Start_Command = /bin/sh {slow_start}\n    Stop_Command = /bin/sh {slow_stop}\n\n\
             [quick]\n    Keys = {bob}\n    Allow_Ports = 2001/tcp\n    Cmd_Timeout = 1\n    \
             Start_Command = /bin/true\n    Stop_Command = /bin/sh {quick_stop}\n",
            alice = key("alice", 1).to_inline().as_str(),
            bob = key("bob", 2).to_inline().as_str(),
        ),
    );
    let read = || std::fs::read_to_string(&events).unwrap_or_default();

    // The quick door opens; then the slow door's start command hangs on the open lane.
    send(
        port,
        &spa_packet(&key("bob", 2), SERVER, &["2001/tcp"], Action::Open),
    );
    d.wait_for(Duration::from_secs(10), "the quick door's open", || {
        d.log()
            .contains("quick: running command: /bin/true")
            .then_some(())
    });
    send(
        port,
        &spa_packet(&key("alice", 1), SERVER, &["1001/tcp"], Action::Open),
    );
    d.wait_for(Duration::from_secs(10), "the hung start command", || {
        d.log()
            .contains(&format!("slow: running command: /bin/sh {slow_start}"))
            .then_some(())
    });

    let slow_pid: i32 = d.wait_for(Duration::from_secs(10), "the slow start's pid", || {
        std::fs::read_to_string(dir.path().join("slow-start.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    });

    // The quick grant's second runs out: it closes while the slow start still hangs (its
    // process still runs: it is killed only after 20 s, or ends at the release).
    d.wait_for(Duration::from_secs(60), "the quick grant's close", || {
        read().contains("quick stopped").then_some(())
    });
    // SAFETY: kill with signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(slow_pid, 0) } == 0;
    assert!(
        alive,
        "the quick close waited for the slow start command to end"
    );
    assert_eq!(read(), "quick stopped\n", "the slow start has not ended");
    // The status file follows the keeper through its own writer thread: wait for it to show
    // the quick grant gone (the stop command's output above can come first).
    let status_doors = || {
        let grants = run(&["-c", path(&conf), "status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&grants.stdout).unwrap_or_default();
        let doors: Vec<String> = v["grants"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|g| g["door"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        (doors, v)
    };
    d.wait_for(
        Duration::from_secs(10),
        "the status without the quick grant",
        || (!status_doors().0.iter().any(|d| d == "quick")).then_some(()),
    );
    let (doors, v) = status_doors();
    assert_eq!(
        doors,
        ["slow"],
        "the slow grant is recorded while it opens: {v}"
    );

    // The slow grant came due while opening: its stop command runs once its start ended.
    std::fs::write(&release, "").expect("release");
    d.wait_for(Duration::from_secs(20), "the slow grant's close", || {
        read().contains("slow stopped").then_some(())
    });
    assert_eq!(read(), "quick stopped\nslow started\nslow stopped\n");
    let st = d.signal_and_wait(libc::SIGTERM).expect("exit status");
    assert!(st.success(), "{st}");
}

/// An open that comes while the same grant's stop command runs opens it again once the
/// close is done: the client asked for access after the old grant ran out.
#[test]
fn an_open_during_its_close_opens_again_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_udp_port();
    let events = dir.path().join("events");
    let release = dir.path().join("release");
    let start_cmd = script(dir.path(), "start", &events, "started", None);
    let stop = script(dir.path(), "stop", &events, "stopped", Some(&release));
    let (mut d, _) = start(
        dir.path(),
        port,
        &format!(
            "[quick]\n    Keys = {bob}\n    Allow_Ports = 2001/tcp\n    Cmd_Timeout = 1\n    \
             Start_Command = /bin/sh {start_cmd}\n    Stop_Command = /bin/sh {stop}\n",
            bob = key("bob", 2).to_inline().as_str(),
        ),
    );
    let read = || std::fs::read_to_string(&events).unwrap_or_default();
    let open = || {
        send(
            port,
            &spa_packet(&key("bob", 2), SERVER, &["2001/tcp"], Action::Open),
        )
    };
    open();
    d.wait_for(Duration::from_secs(20), "the hung stop command", || {
        d.log()
            .contains(&format!("quick: running command: /bin/sh {stop}"))
            .then_some(())
    });
    open();
    d.wait_for(Duration::from_secs(10), "the second open", || {
        d.log()
            .contains("quick: closing (2001/tcp); opening again once it is closed")
            .then_some(())
    });
    assert_eq!(read(), "started\n", "nothing ran while the stop hangs");
    std::fs::write(&release, "").expect("release");
    d.wait_for(Duration::from_secs(20), "the open after the close", || {
        (read() == "started\nstopped\nstarted\nstopped\n").then_some(())
    });
    let st = d.signal_and_wait(libc::SIGTERM).expect("exit status");
    assert!(st.success(), "{st}");
}
