//! Running the real `knock-spad` and `knock-spa` inside a [`Topology`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::bins::workspace_bin;
use crate::netns::{ChildGuard, Netns};
use crate::topology::{Topology, IFACE};

/// Longest wait for the daemon to open its capture (or socket) and say so.
pub const DAEMON_READY: Duration = Duration::from_secs(10);

/// A running `knock-spad` in the server namespace. Dropping it stops it (SIGTERM, SIGKILL
/// after a grace period).
#[derive(Debug)]
pub struct Daemon {
    child: ChildGuard,
    config: PathBuf,
}

impl Daemon {
    /// Starts `knock-spad -c CONFIG -i eth0 -v EXTRA...` in `ns` and waits until it logs that
    /// it is listening (the `starting:` line comes after the capture or socket is open).
    ///
    /// # Panics
    /// When it exits or stays silent for [`DAEMON_READY`], with its output.
    #[track_caller]
    pub fn start(ns: &Netns, config: &Path, extra: &[&str]) -> Daemon {
        let mut args = vec!["-v"];
        args.extend_from_slice(extra);
        Daemon::start_args(ns, config, &args)
    }

    /// As [`Daemon::start`] without the implicit `-v` (no per-stage knock lines).
    #[track_caller]
    pub fn start_args(ns: &Netns, config: &Path, extra: &[&str]) -> Daemon {
        Daemon::start_on(ns, config, IFACE, extra)
    }

    /// As [`Daemon::start_args`], capturing on `iface` (`any`: Linux cooked capture).
    #[track_caller]
    pub fn start_on(ns: &Netns, config: &Path, iface: &str, extra: &[&str]) -> Daemon {
        let bin = workspace_bin("knock-spad");
        let mut args: Vec<String> = vec![
            bin.display().to_string(),
            "-c".into(),
            config.display().to_string(),
            "-i".into(),
            iface.into(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let mut child = ns.spawn(&args);
        if child.wait_for_log(" starting: ", DAEMON_READY).is_none() {
            panic!(
                "knock-spad not ready within {DAEMON_READY:?} (exit status {:?}):\n{}",
                child.poll_status(),
                child.log_text()
            );
        }
        Daemon {
            child,
            config: config.to_owned(),
        }
    }

    /// The configuration file it was started with.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Everything it logged so far (stderr).
    pub fn log(&self) -> String {
        self.child.log_text()
    }

    /// Waits for `needle` in its log; `None` on timeout or exit.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Option<Duration> {
        self.child.wait_for_log(needle, timeout)
    }

    /// Waits for `needle` in its log and panics with the log if it does not come.
    #[track_caller]
    pub fn expect_log(&mut self, needle: &str, timeout: Duration) {
        if self.wait_for_log(needle, timeout).is_none() {
            panic!(
                "knock-spad did not log {needle:?} within {timeout:?}:\n{}",
                self.log()
            );
        }
    }

    /// How often any of `needles` occurs in its log.
    pub fn log_count(&self, needles: &[&str]) -> usize {
        let log = self.log();
        needles.iter().map(|n| log.matches(n).count()).sum()
    }

    /// Waits until `needles` occur `count` times in all in its log (an event counted, not a
    /// sleep), and panics with the log if they do not within `timeout`.
    #[track_caller]
    pub fn wait_for_log_count(&mut self, needles: &[&str], count: usize, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while self.log_count(needles) < count {
            assert!(
                std::time::Instant::now() < deadline,
                "knock-spad did not log {needles:?} {count} times within {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` to it.
    ///
    /// # Panics
    /// When the signal cannot be delivered.
    pub fn signal(&mut self, signal: i32) {
        assert!(
            self.child.is_running(),
            "knock-spad already exited:\n{}",
            self.log()
        );
        crate::sys::kill(self.child.pid(), signal)
            .unwrap_or_else(|e| panic!("kill -{signal} {}: {e}", self.child.pid()));
    }

    /// SIGKILL, then reap it: a crash, as far as the daemon can tell.
    pub fn crash(&mut self) {
        self.signal(libc::SIGKILL);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while self.child.is_running() {
            assert!(
                std::time::Instant::now() < deadline,
                "knock-spad survived SIGKILL"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM and wait; returns whether it exited with status 0.
    pub fn stop(&mut self) -> bool {
        self.child.stop().is_some_and(|s| s.success())
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.is_running()
    }
}

/// A client key made with `knock-spa keygen`.
#[derive(Debug, Clone)]
pub struct ClientKey {
    /// The key file (mode 0600).
    pub path: PathBuf,
    /// The `Keys = NAME:BASE64` line keygen printed, for the server's configuration.
    pub server_line: String,
}

impl ClientKey {
    /// Runs `knock-spa keygen --name NAME -o DIR/NAME.key` on the host (no network).
    ///
    /// # Panics
    /// When keygen fails or prints no `Keys =` line.
    #[track_caller]
    pub fn generate(topo: &Topology, name: &str) -> ClientKey {
        let path = topo.dir().join(&format!("{name}.key"));
        let out = std::process::Command::new(workspace_bin("knock-spa"))
            .args(["keygen", "--name", name, "-o"])
            .arg(&path)
            .output()
            .unwrap_or_else(|e| panic!("cannot run knock-spa keygen: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "knock-spa keygen failed: {}{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        let server_line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with("Keys = "))
            .unwrap_or_else(|| panic!("keygen printed no `Keys =` line:\n{stdout}"))
            .trim()
            .to_owned();
        ClientKey { path, server_line }
    }
}

/// Runs `knock-spa --key KEY ARGS...` in `ns`; returns (success, stdout, stderr).
pub fn knock_spa(ns: &Netns, key: Option<&ClientKey>, args: &[&str]) -> (bool, String, String) {
    let mut all = vec![workspace_bin("knock-spa").display().to_string()];
    if let Some(k) = key {
        all.push("--key".into());
        all.push(k.path.display().to_string());
    }
    all.extend(args.iter().map(|s| (*s).to_owned()));
    let out = ns.exec(&all);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// As [`knock_spa`], panicking with the output unless it succeeds; returns stdout.
#[track_caller]
pub fn knock_spa_ok(ns: &Netns, key: Option<&ClientKey>, args: &[&str]) -> String {
    let (ok, out, err) = knock_spa(ns, key, args);
    assert!(ok, "knock-spa {args:?} failed:\n{out}{err}");
    out
}

/// The packet `knock-spa ... --dry-run` prints (hex on stdout), as bytes.
///
/// # Panics
/// When the command fails or prints no hex packet.
#[track_caller]
pub fn dry_run_packet(ns: &Netns, key: &ClientKey, args: &[&str]) -> Vec<u8> {
    let mut all = args.to_vec();
    all.push("--dry-run");
    let out = knock_spa_ok(ns, Some(key), &all);
    let hex = out
        .lines()
        .map(str::trim)
        .find(|l| l.len() >= 64 && l.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("--dry-run printed no packet:\n{out}"));
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap_or_else(|e| panic!("hex: {e}")))
        .collect()
}

/// Waits until `knock-spad status --state-dir STATE` prints a line that has `words` in a row
/// (a counter's label and value: `["source", "mode", "2"]`; a grant's address and port);
/// panics with what it printed when that does not come within `timeout`.
#[track_caller]
pub fn wait_for_status_line(state: &std::path::Path, words: &[&str], timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let out = std::process::Command::new(workspace_bin("knock-spad"))
            .args(["status", "--state-dir"])
            .arg(state)
            .output()
            .unwrap_or_else(|e| panic!("knock-spad status: {e}"));
        let text = String::from_utf8_lossy(&out.stdout);
        let found = text.lines().any(|l| {
            let got: Vec<&str> = l.split_whitespace().collect();
            got.windows(words.len()).any(|w| w == words)
        });
        if found {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "status has no line ending in {words:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
