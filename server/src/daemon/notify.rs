//! systemd's readiness protocol (sd_notify(3)) without libsystemd. Under `Type=notify`,
//! systemd puts the address of a unix datagram socket in `NOTIFY_SOCKET`; the daemon sends
//! `READY=1` once it runs (capture open, signal handlers installed, PID file written), so
//! `systemctl start` returns only then, and fails when the daemon exits before. At SIGHUP it
//! sends `RELOADING=1`, then `READY=1` with a `STATUS=` line saying whether the new
//! configuration was taken. `STOPPING=1` says the daemon is closing its grants. With
//! `WatchdogSec=`, `WATCHDOG=1` goes out while every part of the daemon is live
//! ([`super::supervise`]). Without `NOTIFY_SOCKET` every call does nothing.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::OnceLock;
use std::time::Duration;

struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
}

static NOTIFIER: OnceLock<Option<Notifier>> = OnceLock::new();
/// Half of `WATCHDOG_USEC`, when systemd set it for this process.
static WATCHDOG: OnceLock<Option<Duration>> = OnceLock::new();

/// The socket address `NOTIFY_SOCKET` names: a path, or `@NAME` for the abstract namespace.
fn parse_addr(value: &[u8]) -> Option<SocketAddr> {
    match value.split_first() {
        Some((b'/', _)) => {
            use std::os::unix::ffi::OsStrExt;
            SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(value)).ok()
        }
        Some((b'@', name)) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name).ok()
        }
        _ => None,
    }
}

/// Reads `NOTIFY_SOCKET` and removes it from the environment, so the commands the daemon runs
/// do not inherit it. Call once, at start, before any thread exists (the environment is not
/// safe to change once other threads may read it). Returns a description of a value it cannot
/// use, for the log.
pub fn init() -> Option<String> {
    // `WatchdogSec=`: systemd expects `WATCHDOG=1` at least every WATCHDOG_USEC, from the pid
    // in WATCHDOG_PID when it is set.
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let for_pid = std::env::var("WATCHDOG_PID").ok();
    std::env::remove_var("WATCHDOG_USEC");
    std::env::remove_var("WATCHDOG_PID");
    let ours = for_pid.is_none_or(|p| p.trim() == std::process::id().to_string());
    let _ = WATCHDOG.set(
        usec.and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| ours && u > 0)
            .map(|u| Duration::from_micros(u / 2)),
    );
    let value = std::env::var_os("NOTIFY_SOCKET")?;
    std::env::remove_var("NOTIFY_SOCKET");
    use std::os::unix::ffi::OsStrExt;
    let parsed = parse_addr(value.as_bytes()).and_then(|addr| {
        let sock = UnixDatagram::unbound().ok()?;
        Some(Notifier { sock, addr })
    });
    let problem = parsed.is_none().then(|| {
        format!("NOTIFY_SOCKET={value:?} is not a usable socket address; not notifying systemd")
    });
    let _ = NOTIFIER.set(parsed);
    problem
}

/// How often to send `WATCHDOG=1` (half the interval systemd asked for), if it asked.
pub fn watchdog() -> Option<Duration> {
    WATCHDOG.get().copied().flatten()
}

/// Sends `state` (newline-separated `KEY=VALUE` lines) to systemd, if it asked for them.
/// Failures are ignored, as sd_notify's are: the daemon runs the same either way.
pub fn send(state: &str) {
    if let Some(Some(n)) = NOTIFIER.get() {
        let _ = n.sock.send_to_addr(state.as_bytes(), &n.addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_paths_or_abstract_names() {
        let a = parse_addr(b"/run/systemd/notify").expect("a path");
        assert_eq!(
            a.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        use std::os::linux::net::SocketAddrExt;
        let a = parse_addr(b"@/org/freedesktop/systemd1/notify/42").expect("abstract");
        assert_eq!(
            a.as_abstract_name(),
            Some(&b"/org/freedesktop/systemd1/notify/42"[..])
        );
        assert!(parse_addr(b"").is_none());
        assert!(parse_addr(b"relative/path").is_none());
    }
}
