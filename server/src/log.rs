//! Logging: knockd-compatible lines to stderr, a log file and/or syslog.
//!
//! knockd writes `[YYYY-MM-DD HH:MM] message` to its LogFile and `message` to syslog; log
//! watchers (fail2ban filters, scripts) match on those, so the message texts the daemon uses
//! for stages, OPEN SESAME, commands and timeouts follow knockd's. Under systemd (JOURNAL_STREAM
//! set) stderr lines carry no timestamp, since journald adds its own, and start with an
//! sd-daemon priority prefix (`<3>` for errors, `<6>` info, `<7>` detail). SIGUSR1 reopens
//! the log file (after a rotation). Lines below the level in force are not even formatted. `--log-format json` writes
//! one JSON object per line to stderr instead.
//!
//! This module never sees key material: callers pass only names, addresses, ports and reasons.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Debug detail (`-D`).
    Debug,
    /// Verbose detail (`-v`): per-stage progress, command output.
    Verbose,
    /// Normal operation: opens, closes, rejects (rate-limited), summaries.
    Info,
    /// Something failed.
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Verbose => "verbose",
            Level::Info => "info",
            Level::Error => "error",
        }
    }
    fn syslog_priority(self) -> u8 {
        // facility daemon (3) * 8 + severity
        24 + match self {
            Level::Debug | Level::Verbose => 7,
            Level::Info => 6,
            Level::Error => 3,
        }
    }
}

/// stderr line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Plain text.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where log lines go.
#[derive(Debug)]
pub struct Logger {
    min: Level,
    stderr: bool,
    format: Format,
    journald: bool,
    /// The log file and its path (reopened at SIGUSR1, after a rotation).
    file: Option<(PathBuf, Mutex<File>)>,
    syslog: Option<UnixDatagram>,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Settings for [`init`].
#[derive(Debug)]
pub struct Settings<'a> {
    /// Lowest level written.
    pub min: Level,
    /// Write to stderr.
    pub stderr: bool,
    /// stderr format.
    pub format: Format,
    /// Append to this file, knockd-style.
    pub file: Option<&'a Path>,
    /// Send to the local syslog socket.
    pub syslog: bool,
}

fn open_log_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Installs the process-wide logger. Later calls are ignored (the logger is fixed at start;
/// changes to LogFile or UseSyslog take effect on restart, as documented in CONFIG.md).
/// Returns a warning for the log when syslog was asked for but cannot be reached: the lines
/// then go to stderr instead, rather than the daemon refusing to start.
pub fn init(s: Settings<'_>) -> std::io::Result<Option<String>> {
    let file = match s.file {
        Some(p) => Some((p.to_owned(), Mutex::new(open_log_file(p)?))),
        None => None,
    };
    let mut stderr = s.stderr;
    let mut warning = None;
    let syslog = if s.syslog {
        let sock = UnixDatagram::unbound()?;
        match sock.connect(SYSLOG_SOCKET) {
            Ok(()) => Some(sock),
            Err(e) => {
                stderr = true;
                warning = Some(format!(
                    "UseSyslog: cannot reach {SYSLOG_SOCKET} ({e}); logging to stderr instead"
                ));
                None
            }
        }
    } else {
        None
    };
    let _ = LOGGER.set(Logger {
        min: s.min,
        stderr,
        format: s.format,
        journald: std::env::var_os("JOURNAL_STREAM").is_some(),
        file,
        syslog,
    });
    Ok(warning)
}

/// The local syslog socket.
const SYSLOG_SOCKET: &str = "/dev/log";

/// Reopens the log file (SIGUSR1, after logrotate moved it away). `Ok(None)` without one.
pub fn reopen() -> std::io::Result<Option<PathBuf>> {
    let Some((path, file)) = LOGGER.get().and_then(|l| l.file.as_ref()) else {
        return Ok(None);
    };
    let new = open_log_file(path)?;
    if let Ok(mut f) = file.lock() {
        *f = new;
    }
    Ok(Some(path.clone()))
}

/// Whether lines at `level` are written (the macros format nothing otherwise).
pub fn enabled(level: Level) -> bool {
    LOGGER.get().is_none_or(|l| level >= l.min)
}

/// Local time as (year, month, day, hour, minute, second).
fn local_now() -> (i32, u32, u32, u32, u32, u32) {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as libc::time_t;
    // SAFETY: `tm` is a plain C struct for which all-zero bytes are a valid value, and
    // localtime_r only writes into the `tm` we pass; both pointers are valid for the call.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&t, &mut tm);
        tm
    };
    (
        tm.tm_year + 1900,
        (tm.tm_mon + 1) as u32,
        tm.tm_mday as u32,
        tm.tm_hour as u32,
        tm.tm_min as u32,
        tm.tm_sec as u32,
    )
}

fn json_escape(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// Writes one line at `level`.
pub fn write(level: Level, msg: &str) {
    let Some(l) = LOGGER.get() else {
        eprintln!("knock-spad: {msg}");
        return;
    };
    if level < l.min {
        return;
    }
    let (y, mo, d, h, mi, s) = local_now();
    if l.stderr {
        let line = match l.format {
            Format::Json => format!(
                "{{\"time\":\"{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}\",\"level\":\"{}\",\"msg\":{}}}\n",
                level.as_str(),
                json_escape(msg)
            ),
            // journald reads an sd-daemon `<N>` prefix as the line's priority, so
            // `journalctl -p err` shows the errors.
            Format::Text if l.journald => format!("<{}>{msg}\n", level.syslog_priority() & 7),
            Format::Text => format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} {msg}\n"),
        };
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
    if let Some((_, f)) = &l.file {
        if let Ok(mut f) = f.lock() {
            let _ = writeln!(f, "[{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}] {msg}");
        }
    }
    if let Some(sock) = &l.syslog {
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let month = MONTHS.get(mo.saturating_sub(1) as usize).unwrap_or(&"Jan");
        let line = format!(
            "<{}>{month} {d:>2} {h:02}:{mi:02}:{s:02} knock-spad[{}]: {msg}",
            level.syslog_priority(),
            std::process::id()
        );
        let _ = sock.send(line.as_bytes());
    }
}

/// Logs at info level.
macro_rules! info {
    ($($t:tt)*) => {
        if $crate::log::enabled($crate::log::Level::Info) {
            $crate::log::write($crate::log::Level::Info, &format!($($t)*))
        }
    };
}
/// Logs at error level.
macro_rules! error {
    ($($t:tt)*) => {
        if $crate::log::enabled($crate::log::Level::Error) {
            $crate::log::write($crate::log::Level::Error, &format!($($t)*))
        }
    };
}
/// Logs at verbose level.
macro_rules! verbose {
    ($($t:tt)*) => {
        if $crate::log::enabled($crate::log::Level::Verbose) {
            $crate::log::write($crate::log::Level::Verbose, &format!($($t)*))
        }
    };
}
/// Logs at debug level.
macro_rules! debug {
    ($($t:tt)*) => {
        if $crate::log::enabled($crate::log::Level::Debug) {
            $crate::log::write($crate::log::Level::Debug, &format!($($t)*))
        }
    };
}

/// Least time between two reports of refused opens (for the caps or a full open lane).
const REFUSALS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Rate-limited reports of refused opens: how many since the last, and when that was.
#[derive(Debug, Default)]
pub struct Refusals(u64, Option<std::time::Instant>);

impl Refusals {
    /// Counts one; `Some(n)` when it is time to report the `n` counted since the last report
    /// (then the count restarts).
    pub fn count(&mut self) -> Option<u64> {
        self.0 += 1;
        let now = std::time::Instant::now();
        if self
            .1
            .is_none_or(|t| now.duration_since(t) >= REFUSALS_INTERVAL)
        {
            let n = self.0;
            *self = Self(0, Some(now));
            return Some(n);
        }
        None
    }
}

// Re-exported so that callers import them by path (`use crate::log::info;`), like any item.
pub(crate) use {debug, error, info, verbose};
