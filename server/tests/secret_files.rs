//! Files that hold secrets (a configuration with inline `Keys`, a `KeyFile`, a
//! `One_Time_Sequences` file) are refused alike by `check`, at start and on SIGHUP when group
//! or others can access them or when neither root nor the daemon's user owns them; a
//! configuration without secrets of its own may stay 0644.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::*;

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

fn check(conf: &Path) -> std::process::Output {
    run(&["-c", conf.to_str().expect("utf-8"), "check"])
}

/// `out` is exit status 2 with every one of `needles` on stderr.
#[track_caller]
fn refused(out: &std::process::Output, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} missing from:\n{err}");
    }
}

/// An SPA door whose keys are in `web.keys` (0600), in a configuration with no secret of its
/// own, answering on a UDP socket.
fn key_file_config(dir: &Path, port: u16) -> std::path::PathBuf {
    write_private(
        dir,
        "web.keys",
        &format!("{}\n", key("carol", 3).to_inline().as_str()),
    );
    write_private(
        dir,
        "knockd.conf",
        &format!(
            "[options]\n    StateDir   = {}\n    ServerName = secret-files\n    \
             SpaPort    = {port}\n    Capture    = udp\n\n\
             [spaWeb]\n    KeyFile       = web.keys\n    Allow_Ports   = 443/tcp\n    \
             Start_Command = /bin/true %IP%\n",
            dir.join("state").display()
        ),
    )
}

/// `spa_config`: alice's key inline, on line 8.
fn inline_config(dir: &Path) -> std::path::PathBuf {
    spa_config(dir, "secret-files", free_udp_port(), "22/tcp", "/bin/true")
}

#[test]
fn a_configuration_with_inline_keys_readable_by_others_is_refused_by_check_and_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = inline_config(dir.path());
    let c = conf.to_str().expect("utf-8");
    let at_keys = format!("{c}:8: permissions 0644 are too open");
    let hint = format!("(run: chmod 600 {c})");
    for mode in [0o644, 0o640, 0o604] {
        chmod(&conf, mode);
        let at_keys = at_keys.replace("0644", &format!("{mode:04o}"));
        refused(&check(&conf), &[&at_keys, &hint, "nothing started"]);
    }
    chmod(&conf, 0o644);
    let mut d = Daemon::start(&["-c", c], &dir.path().join("daemon.log"));
    assert_eq!(
        d.wait_exit(Duration::from_secs(20)),
        Some(Some(2)),
        "{}",
        d.log()
    );
    for n in [&at_keys, &hint, "nothing started"] {
        assert!(d.log().contains(n), "{n:?} missing from:\n{}", d.log());
    }
    // Not a word of the secret.
    let secret = key("alice", 1).master().to_base64();
    assert!(!d.log().contains(secret.as_str()), "{}", d.log());
    assert!(!stderr(&check(&conf)).contains(secret.as_str()));
    chmod(&conf, 0o600);
    assert!(check(&conf).status.success(), "{}", stderr(&check(&conf)));
}

#[test]
fn a_configuration_without_secrets_of_its_own_may_stay_readable() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A pure knockd configuration.
    let knockd = dir.path().join("knockd-only.conf");
    fs::write(
        &knockd,
        "[openSSH]\n    Sequence = 7000,8000,9000\n    Command  = /bin/true %IP%\n",
    )
    .expect("write");
    chmod(&knockd, 0o644);
    let out = check(&knockd);
    assert!(out.status.success(), "{}", stderr(&out));
    // SPA keys in a private KeyFile: the daemon starts with its configuration 0644.
    let port = free_udp_port();
    let conf = key_file_config(dir.path(), port);
    chmod(&conf, 0o644);
    let out = check(&conf);
    assert!(out.status.success(), "{}", stderr(&out));
    let d = Daemon::start(
        &["-c", conf.to_str().expect("utf-8")],
        &dir.path().join("daemon.log"),
    );
    d.wait_for(Duration::from_secs(20), "the daemon to start", || {
        d.log().contains(" starting: ").then_some(())
    });
}

#[test]
fn a_one_time_sequences_file_readable_by_group_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seqs = write_private(
        dir.path(),
        "one-time.seq",
        " 7001,8001,9001\n 7002,8002,9002\n",
    );
    let conf = dir.path().join("knockd.conf");
    fs::write(
        &conf,
        "[oneTime]\n    One_Time_Sequences = one-time.seq\n    Command = /bin/true %IP%\n",
    )
    .expect("write");
    chmod(&conf, 0o644);
    assert!(check(&conf).status.success(), "{}", stderr(&check(&conf)));
    chmod(&seqs, 0o640);
    let s = seqs.display().to_string();
    refused(
        &check(&conf),
        &[
            &format!("{}:2: {s}: permissions 0640 are too open", conf.display()),
            &format!("(run: chmod 600 {s})"),
        ],
    );
    // Nor the configuration of a daemon started as `-i lo`.
    let mut d = Daemon::start(
        &[
            "-c",
            conf.to_str().expect("utf-8"),
            "--state-dir",
            dir.path().join("state").to_str().expect("utf-8"),
            "-i",
            "lo",
        ],
        &dir.path().join("daemon.log"),
    );
    assert_eq!(
        d.wait_exit(Duration::from_secs(20)),
        Some(Some(2)),
        "{}",
        d.log()
    );
    assert!(d.log().contains("chmod 600"), "{}", d.log());
}

#[test]
fn files_holding_secrets_owned_by_another_user_are_refused() {
    require_root_and(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_udp_port();
    let conf = key_file_config(dir.path(), port);
    let keys = dir.path().join("web.keys");
    let nobody = 65534;
    std::os::unix::fs::chown(&keys, Some(nobody), None).expect("chown");
    let k = keys.display().to_string();
    refused(
        &check(&conf),
        &[
            &format!("{k}: owned by uid {nobody}"),
            "must be owned by root or by the user knock-spad runs as (uid 0)",
            &format!("(run: chown root {k})"),
        ],
    );
    // The same for a configuration holding inline keys, whatever its mode.
    let other = tempfile::tempdir().expect("tempdir");
    let inline = inline_config(other.path());
    std::os::unix::fs::chown(&inline, Some(nobody), None).expect("chown");
    let i = inline.display().to_string();
    refused(
        &check(&inline),
        &[
            &format!("{i}:8: owned by uid {nobody}"),
            &format!("(run: chown root {i})"),
        ],
    );
    std::os::unix::fs::chown(&inline, Some(0), None).expect("chown");
    assert!(check(&inline).status.success());
}

#[test]
fn a_reload_into_a_configuration_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = inline_config(dir.path());
    let d = Daemon::start(
        &["-c", conf.to_str().expect("utf-8")],
        &dir.path().join("daemon.log"),
    );
    d.wait_for(Duration::from_secs(20), "the daemon to start", || {
        d.log().contains(" starting: ").then_some(())
    });
    chmod(&conf, 0o644);
    // SAFETY: kill() on the daemon this test started, with a valid signal number.
    assert_eq!(
        unsafe { libc::kill(d.pid() as libc::pid_t, libc::SIGHUP) },
        0
    );
    d.wait_for(Duration::from_secs(20), "the reload to be refused", || {
        d.log()
            .contains("SIGHUP: the new configuration is invalid; keeping the old one")
            .then_some(())
    });
    assert!(
        d.log().contains(&format!(
            "SIGHUP: {}:8: permissions 0644 are too open",
            conf.display()
        )),
        "{}",
        d.log()
    );
}
