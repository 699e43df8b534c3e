//! One network namespace owned by a test, and the processes a test runs inside it.
//!
//! Must not touch the host namespace: every command runs as `ip -n NS ...` or
//! `ip netns exec NS ...`, and in-process work happens on a thread that joined the namespace.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use crate::sys;

/// How long [`ChildGuard::stop`] waits after SIGTERM before it sends SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// A network namespace created by this test (`ip netns add`), deleted on drop.
///
/// Dropping it first kills, by PID, every process still inside (only processes this test
/// started can be in a namespace with this test's unique name), then deletes it.
#[derive(Debug)]
pub struct Netns {
    name: String,
    log_dir: PathBuf,
}

impl Netns {
    /// Creates the namespace `name`; logs of processes spawned in it go to `log_dir`.
    ///
    /// # Panics
    /// When `ip netns add` fails (e.g. not root, or the name exists).
    pub fn create(name: &str, log_dir: &Path) -> Netns {
        run_ok(Command::new("ip").args(["netns", "add", name]));
        Netns {
            name: name.to_owned(),
            log_dir: log_dir.to_owned(),
        }
    }

    /// The namespace's name (as `ip netns list` shows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file that `setns(2)` opens: `/var/run/netns/NAME`.
    pub fn path(&self) -> PathBuf {
        Path::new("/var/run/netns").join(&self.name)
    }

    /// Runs `ip -n NAME ARGS...` and returns its stdout.
    ///
    /// # Panics
    /// When it cannot run or exits non-zero (the message has the command and its output).
    pub fn ip<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_ok(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// Runs `ARGS...` inside the namespace (`ip netns exec NAME ARGS...`) and returns its
    /// output, whatever its exit status.
    ///
    /// # Panics
    /// When the command cannot be started at all.
    pub fn exec<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run(&mut self.exec_command(args))
    }

    /// Like [`Netns::exec`], and returns stdout.
    ///
    /// # Panics
    /// When the command exits non-zero (the message has the command and its output).
    pub fn exec_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_ok(&mut self.exec_command(args))
    }

    /// Sets sysctls inside the namespace, e.g. `["net.ipv4.icmp_ratelimit=0"]`.
    ///
    /// # Panics
    /// When `sysctl -w` fails.
    pub fn sysctl(&self, settings: &[&str]) {
        let mut args = vec!["sysctl", "-q", "-w"];
        args.extend_from_slice(settings);
        self.exec_ok(args);
    }

    /// Starts `ARGS...` inside the namespace as a child process with stdin from /dev/null and
    /// stdout and stderr into one log file in the test's temp dir.
    ///
    /// `ip netns exec` execs the program in place, so the guard's PID is the program's own.
    ///
    /// # Panics
    /// When the log file cannot be created or the process cannot be started.
    pub fn spawn<I, S>(&self, args: I) -> ChildGuard
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let program = args
            .first()
            .map(|p| {
                Path::new(p)
                    .file_name()
                    .unwrap_or(p)
                    .to_string_lossy()
                    .into_owned()
            })
            .unwrap_or_else(|| panic!("Netns::spawn needs a program to run"));
        let label = format!("{}-{}-{}", self.name, program, sys::unique_suffix());
        let log = self.log_dir.join(format!("{label}.log"));
        let out =
            File::create(&log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot dup log file {}: {e}", log.display()));
        let mut cmd = self.exec_command(&args);
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        ChildGuard {
            label,
            child,
            log,
            status: None,
        }
    }

    /// Runs `f` on a new thread that joined this namespace and returns its result. Sockets
    /// `f` creates belong to the namespace (and stay in it if returned). Panics in `f` are
    /// propagated.
    ///
    /// # Errors
    /// When the namespace cannot be opened or joined, or the thread cannot be spawned.
    pub fn run_in<T, F>(&self, f: F) -> std::io::Result<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let path = self.path();
        let handle = std::thread::Builder::new()
            .name(format!("in-{}", self.name))
            .spawn(move || -> std::io::Result<T> {
                let ns = File::open(&path).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("open {}: {e}", path.display()))
                })?;
                sys::setns_net(ns.as_fd()).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("setns {}: {e}", path.display()))
                })?;
                // This thread now lives in the namespace until it ends right after `f`.
                Ok(f())
            })?;
        match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Gives the processes this namespace runs (through `ip netns exec`) their own
    /// `/etc/FILE`: `ip netns exec NAME` bind-mounts `/etc/netns/NAME/FILE` over `/etc/FILE`
    /// in the command's private mount namespace, so `/etc/hosts` here is seen only by them.
    /// The directory `/etc/netns/NAME` has this run's unique name and goes with the namespace.
    ///
    /// # Panics
    /// When the file cannot be written.
    pub fn etc_file(&self, file: &str, text: &str) {
        let dir = self.etc_dir();
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let path = dir.join(file);
        std::fs::write(&path, text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    fn etc_dir(&self) -> PathBuf {
        Path::new("/etc/netns").join(&self.name)
    }

    /// PIDs of the processes inside the namespace (`ip netns pids`).
    pub fn pids(&self) -> Vec<u32> {
        let out = run(Command::new("ip").args(["netns", "pids", &self.name]));
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    fn exec_command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(args);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Anything still running here was started by this test (directly, or by a daemon it
        // started, e.g. a knockd command): the namespace's name is unique to this run. Kill it
        // by PID so that it does not keep the namespace alive after its name is gone.
        for pid in self.pids() {
            eprintln!("knock-e2e: killing leftover pid {pid} in {}", self.name);
            if let Err(e) = sys::kill(pid, libc::SIGKILL) {
                eprintln!("knock-e2e: kill {pid}: {e}");
            }
        }
        let etc = self.etc_dir();
        if etc.exists() {
            if let Err(e) = std::fs::remove_dir_all(&etc) {
                eprintln!("knock-e2e: cannot remove {}: {e}", etc.display());
            }
        }
        let out = run(Command::new("ip").args(["netns", "del", &self.name]));
        if !out.status.success() {
            eprintln!(
                "knock-e2e: `ip netns del {}` failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// A process started by [`Netns::spawn`]. Dropping it stops it (SIGTERM, then SIGKILL after
/// a grace period) by its PID; if the test is panicking, its log is printed to stderr.
#[derive(Debug)]
pub struct ChildGuard {
    label: String,
    child: Child,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl ChildGuard {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The file holding the process's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn log_text(&self) -> String {
        match std::fs::read(&self.log) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => format!("<cannot read {}: {e}>", self.log.display()),
        }
    }

    /// Whether the process is still running (reaps it if it has exited).
    pub fn is_running(&mut self) -> bool {
        self.poll_status().is_none()
    }

    /// The exit status, if the process has exited.
    pub fn poll_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            match self.child.try_wait() {
                Ok(s) => self.status = s,
                Err(e) => panic!("waiting for {}: {e}", self.label),
            }
        }
        self.status
    }

    /// Waits until the log contains `needle`, polling every 10 ms for at most `timeout`.
    /// Returns how long it took, or `None` on timeout or if the process exited first.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Option<Duration> {
        let start = Instant::now();
        loop {
            // Read the log before checking for exit, so lines written just before exiting
            // count.
            let exited = !self.is_running();
            if self.log_text().contains(needle) {
                return Some(start.elapsed());
            }
            if exited || start.elapsed() >= timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the process: SIGTERM, then SIGKILL if it has not exited within a grace period.
    /// Returns its exit status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if let Some(s) = self.poll_status() {
            return Some(s);
        }
        // The child has not been reaped (poll_status saw it running), so its PID is still
        // ours.
        if let Err(e) = sys::kill(self.child.id(), libc::SIGTERM) {
            eprintln!("knock-e2e: SIGTERM {}: {e}", self.label);
        }
        let start = Instant::now();
        while start.elapsed() < STOP_GRACE {
            if let Some(s) = self.poll_status() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!("knock-e2e: {} ignored SIGTERM, sending SIGKILL", self.label);
        // Child::kill sends SIGKILL to the (still unreaped) child's PID.
        if let Err(e) = self.child.kill() {
            eprintln!("knock-e2e: SIGKILL {}: {e}", self.label);
        }
        match self.child.wait() {
            Ok(s) => self.status = Some(s),
            Err(e) => eprintln!("knock-e2e: waiting for {}: {e}", self.label),
        }
        self.status
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let status = self.stop();
        if std::thread::panicking() {
            eprintln!(
                "----- log of {} (pid {}, {status:?}) -----\n{}\n----- end of log -----",
                self.label,
                self.child.id(),
                self.log_text()
            );
        }
    }
}

/// Runs `cmd` to completion and returns its output.
///
/// # Panics
/// When it cannot be started.
pub(crate) fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs `cmd` to completion and returns its stdout.
///
/// # Panics
/// When it cannot be started or exits non-zero (the message has its output).
pub(crate) fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
