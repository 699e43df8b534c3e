//! The state directory: where the daemon keeps what must survive a restart or a crash (open
//! grants, the replay cache) and its status file. [`StateDir`] is the one handle on it; the
//! files themselves are described in [`grants`](super::grants), [`replay`](super::replay) and
//! [`status`](super::status).
//!
//! A file that fails its checksum or does not parse is reported, renamed to
//! `NAME.corrupt-<unix time>` for inspection, and treated fail-closed by the caller: a lost
//! replay cache makes the daemon refuse every packet stamped before it started; lost grants
//! open nothing.
//!
//! Whole-file writes go through the workspace's one atomic writer ([`knock_keys::atomic`]);
//! the grants slots, the grants journal and the replay journal are written in place, as their modules say.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use knock_keys::atomic;

/// Why state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// File system error.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The directory or a file in it belongs to someone else or is writable by group or
    /// others: the daemon would run the stop commands it holds as root.
    #[error(
        "{}: {why}: refusing to use it (its grants name commands run as root; fix with \
         `chown root: PATH` and `chmod go-w PATH`)",
        path.display()
    )]
    Untrusted {
        /// The directory or file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The file is corrupt; it was moved aside.
    #[error("{path}: corrupt ({why}); moved to {moved}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
        /// Where it went.
        moved: String,
    },
}

/// Name of the lock file in the state directory.
pub const LOCK: &str = "lock";

/// One daemon's exclusive hold on its state directory: an `flock` on `DIR/lock`, which holds
/// the daemon's pid. Released when the process ends (however it ends), so a crashed daemon
/// never blocks the next start.
#[derive(Debug)]
pub struct DirLock {
    _file: fs::File,
}

/// Why the state directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock: a second daemon must not read, close or reopen the
    /// first one's grants.
    #[error("another knock-spad (pid {pid}) holds {}", dir.display())]
    Held {
        /// The pid the lock file names (`?` when it names none).
        pid: String,
        /// The state directory.
        dir: PathBuf,
    },
    /// The lock file could not be opened or locked.
    #[error("{}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    pub(super) dir: PathBuf,
}

impl StateDir {
    /// Opens (creating, mode 0700) the state directory.
    ///
    /// The directory must be ours to trust: the grants it holds name commands the daemon runs
    /// as root at its next start, so a directory (or a file in it) owned by another user, or
    /// writable by group or others, is refused ([`StateError::Untrusted`]).
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        let io = |source| StateError::Io {
            path: dir.to_owned(),
            source,
        };
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
        }
        let meta = fs::metadata(dir).map_err(io)?;
        if !meta.is_dir() {
            return Err(io(io::Error::other("not a directory")));
        }
        trusted(&meta).map_err(|why| StateError::Untrusted {
            path: dir.to_owned(),
            why,
        })?;
        // Every entry, not only the files this version writes: none may be a link, another
        // user's, or writable by others.
        for entry in fs::read_dir(dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).map_err(|source| StateError::Io {
                path: path.clone(),
                source,
            })?;
            let check = if meta.file_type().is_symlink() {
                Err("a symbolic link".to_owned())
            } else {
                trusted(&meta)
            };
            if let Err(why) = check {
                return Err(StateError::Untrusted { path, why });
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the directory's lock (see [`DirLock`]) and writes our pid into it. Call it before
    /// reading anything else from the directory.
    pub fn lock(&self) -> Result<DirLock, LockError> {
        use std::io::{Read, Seek, Write};
        use std::os::fd::AsRawFd;
        let path = self.path(LOCK);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        // Like every state file: no link, a regular file, one we can trust.
        let mut file = open_in_place(&path).map_err(io)?;
        // SAFETY: flock takes a descriptor and flags; `file` owns the open descriptor for the
        // duration of the call.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io(e));
            }
            let mut held = String::new();
            let _ = file.read_to_string(&mut held);
            let pid = held.trim();
            let pid = if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) {
                pid.to_owned()
            } else {
                "?".to_owned()
            };
            return Err(LockError::Held {
                pid,
                dir: self.dir.clone(),
            });
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(DirLock { _file: file })
    }

    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes `bytes` to `name` atomically (mode 0600, durable).
    pub(super) fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<(), StateError> {
        let path = self.path(name);
        atomic::write(&path, bytes, &atomic::Options::PRIVATE)
            .map_err(|source| StateError::Io { path, source })
    }

    /// Renames `from` to `to` inside the directory and makes it durable (directory fsync).
    pub(super) fn rename_within(&self, from: &str, to: &str) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: self.path(from),
            source,
        };
        fs::rename(self.path(from), self.path(to)).map_err(io)?;
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io)
    }

    /// Removes `name` if it exists, durably.
    pub(super) fn remove(&self, name: &str) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: self.path(name),
            source,
        };
        match fs::remove_file(self.path(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(e)),
        }
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io)
    }

    pub(super) fn move_aside(&self, name: &str, why: String) -> StateError {
        let path = self.path(name);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let moved = format!("{name}.corrupt-{now}");
        let _ = fs::rename(&path, self.path(&moved));
        StateError::Corrupt { path, why, moved }
    }

    /// Reads a state file whole: opened without following a link, and only if it is a regular
    /// file we can trust (see [`StateDir::open`]). `None` when it does not exist.
    pub(super) fn read(&self, name: &str) -> Result<Option<Vec<u8>>, StateError> {
        use std::io::Read;
        let path = self.path(name);
        let opened = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path);
        let mut file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::Io { path, source }),
        };
        let meta = file.metadata().map_err(|source| StateError::Io {
            path: path.clone(),
            source,
        })?;
        let check = if meta.is_file() {
            trusted(&meta)
        } else {
            Err("not a regular file".to_owned())
        };
        if let Err(why) = check {
            return Err(StateError::Untrusted { path, why });
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|source| StateError::Io { path, source })?;
        Ok(Some(bytes))
    }
}

/// Opens (creating, mode 0600) a state file to be written in place: read and write, never
/// truncated on open, never through a link, and only a regular file we can trust.
pub(super) fn open_in_place(path: &Path) -> io::Result<fs::File> {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    trusted(&meta).map_err(io::Error::other)?;
    Ok(file)
}

/// The uid the daemon runs as once it has switched to its `User` (set before the switch, so
/// that the state directory is judged by the user that will write it); `u32::MAX`: none set,
/// the effective uid decides.
static DAEMON_UID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(u32::MAX);

/// Says that the daemon runs (or is about to run) as `uid`: from now on, state files owned by
/// `uid` (or root) are trusted, whatever the effective uid is at the moment.
pub fn trust_daemon_user(uid: u32) {
    DAEMON_UID.store(uid, std::sync::atomic::Ordering::Relaxed);
}

/// The uid whose state files are trusted besides root's: the daemon's `User` if it has one
/// (see [`trust_daemon_user`]), else the effective uid, read at each check (so after a switch
/// of user, at every reload, it is the user the daemon runs as then).
pub fn daemon_uid() -> u32 {
    match DAEMON_UID.load(std::sync::atomic::Ordering::Relaxed) {
        // SAFETY: geteuid has no preconditions and cannot fail.
        u32::MAX => unsafe { libc::geteuid() },
        uid => uid,
    }
}

/// Whether a state directory or file can be trusted: owned by root or by the user the daemon
/// runs as, and not writable by group or others. The reason when not.
pub(super) fn trusted(meta: &fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let euid = daemon_uid();
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(format!(
            "owned by uid {}, neither root nor the daemon's user",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "writable by group or others (mode {:04o})",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

pub(super) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
