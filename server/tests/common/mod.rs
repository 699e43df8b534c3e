//! Helpers shared by the server's integration tests: the built binary, temporary
//! configurations, a daemon guard and SPA packets.
#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use knock_keys::{MasterKey, NamedKey};
use knock_shared::types::PortSpec;
use knock_shared::wire::{seal, Action, Admit, KeyState, PortList, Request, ServerId};

/// The `knock-spad` under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_knock-spad");

/// Runs `knock-spad ARGS`.
pub fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run knock-spad")
}

/// Runs `knock-spad ARGS` with `input` on stdin.
pub fn run_with_stdin(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn knock-spad");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

/// stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Writes `dir/knockd.conf`: options for a UDP-socket daemon on `port` answering to
/// `server`, its state in `dir/state`, and one SPA door `[spaSSH]` for alice's key (byte 1)
/// allowing `allow_ports`, with `Cmd_Timeout = 30`, `start` as its start command and a
/// harmless stop command.
pub fn spa_config(dir: &Path, server: &str, port: u16, allow_ports: &str, start: &str) -> PathBuf {
    write_private(
        dir,
        "knockd.conf",
        &format!(
            "[options]\n    StateDir   = {state}\n    ServerName = {server}\n    SpaPort    = {port}\n    Capture    = udp\n\n\
             [spaSSH]\n    Keys          = {alice}\n    Allow_Ports   = {allow_ports}\n    Cmd_Timeout   = 30\n    \
             Start_Command = {start}\n    Stop_Command  = /bin/true %IP% %PORT%\n",
            state = dir.join("state").display(),
            alice = key("alice", 1).to_inline().as_str(),
        ),
    )
}

/// Fails the calling test unless it runs as root and `tools` are installed: a test that
/// cannot do what it is about must fail loudly, never pass having proved nothing.
#[track_caller]
pub fn require_root_and(tools: &[&str]) {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "this test needs root (namespaces, mounts, iptables); effective uid is {euid}: run the \
         tests as root (scripts/test does)"
    );
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| {
            !std::env::var_os("PATH")
                .is_some_and(|p| std::env::split_paths(&p).any(|d| Path::new(&d).join(t).exists()))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "this test needs {missing:?} installed (scripts/test installs them)"
    );
}

/// Starts `sh -c SCRIPT` (which sets up mounts, then execs the daemon) in a private mount
/// namespace: its mounts never reach the host's. The daemon keeps the shell's PID.
pub fn start_in_private_mounts(script: &str, log: &Path) -> Daemon {
    Daemon::start_program(
        "unshare",
        &["--mount", "--propagation", "private", "sh", "-c", script],
        log,
    )
}

/// A key with a fixed secret of `byte`s.
pub fn key(name: &str, byte: u8) -> NamedKey {
    NamedKey::new(name, MasterKey::from_bytes([byte; 32])).expect("valid name")
}

/// Writes `text` to `dir/name`, mode 0600.
pub fn write_private(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, text).expect("write");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).expect("chmod");
    p
}

/// A UDP port free on loopback right now, for a daemon to bind a moment later.
///
/// Asking the kernel for port 0 would hand out an ephemeral port, and the
/// kernel hands the same port to the next ephemeral bind: another test's
/// sending socket could take it before the daemon starts (a CI run failed with
/// "Address already in use" that way). So the ports come from below the
/// ephemeral range (32768..61000 on Linux), each at most once per process,
/// starting at an offset derived from the PID, and only if bindable now.
pub fn free_udp_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const BASE: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = std::process::id().wrapping_mul(2_654_435_761) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (BASE + (offset + n) % SPAN) as u16;
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free UDP port in {BASE}..{}", BASE + SPAN);
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// An SPA packet from `key` for server `server`, admitting the source address.
pub fn spa_packet(key: &NamedKey, server: &str, ports: &[&str], action: Action) -> Vec<u8> {
    spa_packet_at(key, server, ports, action, unix_now())
}

/// [`spa_packet`] stamped `timestamp`.
pub fn spa_packet_at(
    key: &NamedKey,
    server: &str,
    ports: &[&str],
    action: Action,
    timestamp: u64,
) -> Vec<u8> {
    let ports: Vec<PortSpec> = ports.iter().map(|p| p.parse().expect("port")).collect();
    let request = Request {
        timestamp,
        action,
        // The tests send from loopback; source mode needs Allow_NAT.
        admit: Admit::Addr(std::net::Ipv4Addr::LOCALHOST.into()),
        duration: 0,
        server: ServerId::from_name(server),
        ports: PortList::new(&ports).expect("ports"),
    };
    // Distinct nonces per packet (tests only: the client draws them from the OS CSPRNG).
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos()
        .to_le_bytes();
    let mut nonce = [0u8; knock_shared::wire::NONCE_LEN];
    nonce[..16].copy_from_slice(&t);
    nonce[16] = key.name().len() as u8;
    let padding = [0u8; knock_shared::wire::PADDING_LEN];
    seal(&KeyState::new(&key.derive()), &request, &nonce, &padding).to_vec()
}

/// A daemon that starts without a replay cache refuses packets stamped before the second
/// after its start (a lost cache must not let an old packet in): wait until packets stamped
/// now are past that.
pub fn wait_past_start(started: u64) {
    while unix_now() < started + 2 {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `payload` to 127.0.0.1:`port`.
pub fn send(port: u16, payload: &[u8]) {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.send_to(payload, ("127.0.0.1", port)).expect("send");
}

/// Polls `f` every 50 ms until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running `knock-spad`; dropping it stops it (SIGTERM, then SIGKILL after 10 s).
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Starts `knock-spad ARGS` with its stderr in `log`.
    pub fn start(args: &[&str], log: &Path) -> Self {
        Self::start_program(BIN, args, log)
    }

    /// Starts `program ARGS` (which execs the daemon) with its stderr in `log`.
    pub fn start_program(program: &str, args: &[&str], log: &Path) -> Self {
        Self::start_with_env(program, args, &[], log)
    }

    /// [`Daemon::start_program`] with extra environment variables.
    pub fn start_with_env(program: &str, args: &[&str], env: &[(&str, &str)], log: &Path) -> Self {
        let err = fs::File::create(log).expect("log file");
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn knock-spad");
        Self {
            child: Some(child),
            log: log.to_owned(),
        }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// [`wait_for`], with the daemon's log in the panic message.
    pub fn wait_for<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut f: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; daemon log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits up to `timeout` for it to exit by itself: `Some(exit code)` when it did (the
    /// code is `None` after a signal), `None` when it still runs then (it is stopped at drop).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<Option<i32>> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = child.try_wait() {
                self.child = None;
                return Some(st.code());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Sends `sig` and waits for the exit (at most 10 s).
    pub fn signal_and_wait(&mut self, sig: i32) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: kill() on our own child's pid with a valid signal number.
        unsafe {
            libc::kill(child.id() as libc::pid_t, sig);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.signal_and_wait(libc::SIGTERM);
    }
}

/// A network namespace (`ip netns add`) deleted on drop, even when the test fails: where the
/// tests run firewall commands, never in the host's own firewall.
pub struct Netns(String);

impl Netns {
    /// A fresh namespace `ks-ops-PID-N`, its loopback up.
    pub fn create() -> Option<Self> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "ks-ops-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        let ns = ok.then_some(Self(name))?;
        ns.exec(&["ip", "link", "set", "lo", "up"])
            .status
            .success()
            .then_some(ns)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.0
    }

    /// Runs `args` in it.
    pub fn exec(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .output()
            .expect("ip netns exec")
    }

    /// Sends `payload` to 127.0.0.1:`port` inside it, from a thread that joins it (a socket
    /// belongs to the namespace its thread was in when it was made).
    pub fn send(&self, port: u16, payload: &[u8]) {
        use std::os::fd::AsRawFd;
        let ns = fs::File::open(format!("/run/netns/{}", self.0)).expect("open the namespace");
        let payload = payload.to_vec();
        std::thread::spawn(move || {
            // SAFETY: setns on a descriptor we own and keep open for the call; it changes
            // only this thread's network namespace (CLONE_NEWNET), and this thread ends
            // after sending.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            send(port, &payload);
        })
        .join()
        .expect("the sending thread");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}
