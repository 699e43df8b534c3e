//! Process plumbing of the daemon: going into the background (`-d`) with a pipe on which the
//! child tells the waiting parent whether it started, and the PID file.

use anyhow::bail;

/// The write end of the pipe to the parent of a daemon still starting (after `-d`), taken by
/// [`report_started`] or [`report_start_failure`], whichever comes first.
static START_PIPE: std::sync::Mutex<Option<std::fs::File>> = std::sync::Mutex::new(None);

/// Byte the daemon sends its waiting parent when it runs.
const START_OK: u8 = 0;
/// Byte the daemon sends, followed by the error text, when it could not start.
const START_FAILED: u8 = 1;

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

/// Hands a start-up error to the parent waiting after `-d`, which prints it and exits 1.
/// Returns false when there is no such parent (foreground, or the daemon already started).
pub fn report_start_failure(msg: &str) -> bool {
    let Some(mut pipe) = take_start_pipe() else {
        return false;
    };
    use std::io::Write;
    let mut buf = vec![START_FAILED];
    buf.extend_from_slice(msg.as_bytes());
    let _ = pipe.write_all(&buf);
    true
}

/// What the parent prints and its exit code, from what the daemon sent through the pipe
/// before closing it.
fn start_outcome(sent: &[u8]) -> (Option<String>, u8) {
    match sent.split_first() {
        Some((&START_OK, _)) => (None, 0),
        Some((&START_FAILED, msg)) => (
            Some(format!(
                "knock-spad: error: {}",
                String::from_utf8_lossy(msg)
            )),
            1,
        ),
        _ => (
            Some("knock-spad: error: the daemon ended while starting (see its log)".to_owned()),
            1,
        ),
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
    }
}
