//! Process plumbing of the daemon: going into the background (`-d`) with a pipe on which the
//! child tells the waiting parent whether it started, and the PID file.

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::bail;

use crate::log::error;
use crate::store::status;

/// The write end of the pipe to the parent of a daemon still starting (after `-d`), taken by
/// [`report_started`] or [`report_start_failure`], whichever comes first.
static START_PIPE: std::sync::Mutex<Option<std::fs::File>> = std::sync::Mutex::new(None);

/// Byte the daemon sends its waiting parent when it runs.
const START_OK: u8 = 0;
/// Byte the daemon sends, followed by the error text, when it could not start (the parent
/// exits 1).
const START_FAILED: u8 = 1;
/// Likewise, when it refused to start (another daemon holds its state directory): exit 2.
const START_REFUSED: u8 = 2;

fn take_start_pipe() -> Option<std::fs::File> {
    START_PIPE.lock().ok().and_then(|mut p| p.take())
}

/// Tells the parent waiting after `-d` that the daemon runs (capture open, signal handlers
/// installed, PID file written), so it exits 0. Does nothing in the foreground.
pub fn report_started() {
    if let Some(mut pipe) = take_start_pipe() {
        use std::io::Write;
        let _ = pipe.write_all(&[START_OK]);
    }
}

/// Hands a start-up error to the parent waiting after `-d`, which prints it and exits with
/// `code` (1, or 2 for a refused start). The error is in the log before the parent learns of
/// it, so whoever reads the log after `-d` returned finds it there. Returns false when there
/// is no such parent (foreground, or the daemon already started).
pub fn report_start_failure(msg: &str, code: u8) -> bool {
    let Some(mut pipe) = take_start_pipe() else {
        return false;
    };
    error!("error: {msg}");
    use std::io::Write;
    let mut buf = vec![if code == 2 {
        START_REFUSED
    } else {
        START_FAILED
    }];
    buf.extend_from_slice(msg.as_bytes());
    let _ = pipe.write_all(&buf);
    true
}

/// What the parent prints and its exit code, from what the daemon sent through the pipe
/// before closing it.
fn start_outcome(sent: &[u8]) -> (Option<String>, u8) {
    match sent.split_first() {
        Some((&START_OK, _)) => (None, 0),
        Some((&code @ (START_FAILED | START_REFUSED), msg)) => (
            Some(format!(
                "knock-spad: error: {}",
                String::from_utf8_lossy(msg)
            )),
            code,
        ),
        _ => (
            Some("knock-spad: error: the daemon ended while starting (see its log)".to_owned()),
            1,
        ),
    }
}

/// Creates the PID file holding our pid: exclusively, without following a link, mode 0644.
/// The caller holds the state directory's lock, so a file already there was left by a daemon
/// that died, unless a live `knock-spad` (of another state directory) named in it still runs,
/// or it is not a plain file: then it is refused, not overwritten.
pub fn write_pid_file(path: &Path) -> io::Result<()> {
    let create = || {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
    };
    let mut file = match create() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let meta = fs::symlink_metadata(path)?;
            if !meta.file_type().is_file() {
                return Err(io::Error::other("exists and is not a regular file"));
            }
            let old = fs::read_to_string(path).unwrap_or_default();
            if let Ok(pid) = old.trim().parse::<u32>() {
                if pid != std::process::id() && status::pid_alive(pid) && status::is_knock_spad(pid)
                {
                    return Err(io::Error::other(format!(
                        "names knock-spad pid {pid}, which still runs"
                    )));
                }
            }
            fs::remove_file(path)?;
            create()?
        }
        other => other?,
    };
    // The umask must not narrow 0644: other tools read the PID file.
    file.set_permissions(fs::Permissions::from_mode(0o644))?;
    writeln!(file, "{}", std::process::id())
}

/// Removes the PID file if it still holds our pid (nobody replaced it meanwhile).
pub fn remove_pid_file(path: &Path) {
    let ours =
        fs::read_to_string(path).is_ok_and(|t| t.trim().parse::<u32>() == Ok(std::process::id()));
    if ours {
        let _ = fs::remove_file(path);
    }
}

/// Forks into the background: the child starts a new session with its standard streams on
/// /dev/null; the parent waits until the child runs ([`report_started`]) or fails
/// ([`report_start_failure`]), and exits 0 or prints the child's error and exits 1, so that
/// `knock-spad -d` with a wrong interface fails on the terminal, not silently in the
/// background. Called before any thread is started.
pub fn daemonize() -> anyhow::Result<()> {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the two-element array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        bail!("pipe failed: {}", std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nothing else; each
    // File below becomes their only owner.
    let (mut read_end, write_end) = unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    // SAFETY: fork() is called while the process is single-threaded (no runtime, no packet
    // thread yet), so the child inherits a consistent address space and the parent may go on
    // with ordinary code.
    match unsafe { libc::fork() } {
        -1 => bail!("fork failed: {}", std::io::Error::last_os_error()),
        0 => {}
        _ => {
            drop(write_end);
            let mut sent = Vec::new();
            let _ = read_end.read_to_end(&mut sent);
            let (message, code) = start_outcome(&sent);
            if let Some(m) = message {
                eprintln!("{m}");
            }
            // SAFETY: _exit ends the parent without running destructors or atexit handlers
            // that belong to the daemon, which goes on in the child.
            unsafe { libc::_exit(code.into()) }
        }
    }
    drop(read_end);
    if let Ok(mut p) = START_PIPE.lock() {
        *p = Some(write_end);
    }
    // SAFETY: setsid has no memory-safety preconditions.
    if unsafe { libc::setsid() } == -1 {
        bail!("setsid failed: {}", std::io::Error::last_os_error());
    }
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    use std::os::fd::AsRawFd;
    for fd in 0..3 {
        // SAFETY: dup2 on a valid open descriptor onto 0..2 only replaces the standard
        // streams; no Rust object owns those descriptors exclusively.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } == -1 {
            bail!("dup2 failed: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_of_a_daemon_exits_as_the_daemon_reports() {
        assert_eq!(start_outcome(&[START_OK]), (None, 0));
        assert_eq!(
            start_outcome(b"\x01cannot bind UDP port 62201: Address in use"),
            (
                Some("knock-spad: error: cannot bind UDP port 62201: Address in use".to_owned()),
                1
            )
        );
        // The daemon died (a panic, a signal) before saying anything.
        let (message, code) = start_outcome(b"");
        assert_eq!(code, 1);
        assert!(message.is_some_and(|m| m.contains("ended while starting")));
        // Anything else is not a start.
        assert_eq!(start_outcome(b"\x07").1, 1);
        // A refused start (another daemon holds the state directory) exits 2.
        assert_eq!(
            start_outcome(b"\x02another knock-spad (pid 7) holds /s"),
            (
                Some("knock-spad: error: another knock-spad (pid 7) holds /s".to_owned()),
                2
            )
        );
    }
}
