//! The workspace's one atomic file writer: every file either binary writes whole (a keyfile,
//! the configuration edited by `keys add`, a one-time sequences file, the daemon's state and
//! status files) goes through [`write`].
//!
//! The steps, always in this order: a temporary file is created in the target's directory
//! with `O_CREAT | O_EXCL | O_NOFOLLOW` (never an existing file, never through a link) and the
//! caller's mode; it gets the caller's owner (before the mode, since `chown` clears set-id
//! bits) and mode, the bytes, and (when [`Options::durable`]) an fsync; then it takes the
//! target's place (rename, or a hard link that fails if the target exists); then the directory
//! is fsynced so the rename itself survives a crash. A reader sees the old file or the new one,
//! never a half-written one; a crash leaves at worst a stray `.NAME.tmp-…` file; on any error
//! the temporary file is removed.
//!
//! It lives in this crate because both binaries write files and this is the one crate they
//! share that may do I/O (`knock-shared` must not). It never logs and puts no file contents in
//! an error.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// How the new file takes the target's place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replace<'a> {
    /// Rename over whatever is there.
    Always,
    /// Only if there is nothing at the path yet (a hard link, which fails with
    /// `AlreadyExists` if a file appeared meanwhile).
    Never,
    /// Rename over the target only if it still holds exactly these bytes (nobody edited it
    /// since the caller read it); otherwise fail and leave it untouched.
    IfUnchanged(&'a [u8]),
}

/// What [`write`] makes.
#[derive(Clone, Copy, Debug)]
pub struct Options<'a> {
    /// Permission bits of the new file (`0o600`, or the mode of the file it replaces).
    pub mode: u32,
    /// Owner and group to give the new file; `None` keeps the creating process's.
    pub owner: Option<(u32, u32)>,
    /// How it replaces the target.
    pub replace: Replace<'a>,
    /// Fsync the file before the rename and the directory after it. Off only for files that
    /// are rebuilt at every start (the status file), where a crash losing the last write
    /// costs nothing.
    pub durable: bool,
}

impl Options<'static> {
    /// A private (0600), durable file replacing whatever is there.
    pub const PRIVATE: Self = Self {
        mode: 0o600,
        owner: None,
        replace: Replace::Always,
        durable: true,
    };
}

/// The directory holding `path` (`.` for a bare name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `contents` to `path` atomically, as the module doc says.
pub fn write(path: &Path, contents: &[u8], opts: &Options<'_>) -> io::Result<()> {
    let dir = parent_dir(path);
    let tmp = TempFile::create_with(dir, &file_name(path)?, "new", opts.mode)?;
    tmp.fill(contents, opts)?;
    match opts.replace {
        Replace::Always => fs::rename(tmp.path(), path)?,
        Replace::Never => fs::hard_link(tmp.path(), path)?,
        Replace::IfUnchanged(expected) => {
            let now = zeroize::Zeroizing::new(fs::read(path)?);
            if now.as_slice() != expected {
                return Err(io::Error::other(format!(
                    "{} was changed by someone else while it was being edited; nothing \
                     written, try again",
                    path.display()
                )));
            }
            fs::rename(tmp.path(), path)?;
        }
    }
    // After a rename the temporary name is gone (nothing to remove); after a hard link it
    // must go.
    if opts.replace == Replace::Never {
        drop(tmp);
    } else {
        tmp.keep();
    }
    if opts.durable {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// A temporary file in a given directory, created exclusively, removed on drop unless it was
/// renamed away by [`write`]. `keys add` also uses it to check an edited configuration
/// before the real file is replaced.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    armed: bool,
}

/// Makes temporary names unique within the process (several writers, several threads).
static NEXT: AtomicU64 = AtomicU64::new(0);

impl TempFile {
    /// Creates `dir/.NAME.tmp-PID-N-TAG` exclusively, mode 0600, holding `bytes`, synced.
    pub fn create(dir: &Path, name: &str, tag: &str, bytes: &[u8]) -> io::Result<Self> {
        let tmp = Self::create_with(dir, name, tag, 0o600)?;
        tmp.fill(bytes, &Options::PRIVATE)?;
        Ok(tmp)
    }

    fn create_with(dir: &Path, name: &str, tag: &str, mode: u32) -> io::Result<Self> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".{name}.tmp-{}-{n}-{tag}", std::process::id()));
        create_new(&path, mode)?;
        Ok(Self { path, armed: true })
    }

    /// Owner, mode, contents and (when durable) fsync, through one descriptor opened without
    /// following links.
    fn fill(&self, contents: &[u8], opts: &Options<'_>) -> io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&self.path)?;
        if let Some((uid, gid)) = opts.owner {
            // Owner first: chown clears set-id bits, and the mode is set afterwards.
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        }
        // Explicit, so neither the umask nor a file system ignoring the creation mode decides.
        f.set_permissions(fs::Permissions::from_mode(opts.mode & 0o7777))?;
        f.write_all(contents)?;
        if opts.durable {
            f.sync_all()?;
        }
        Ok(())
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Leaves the file in place (it was renamed away).
    fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Creates `path`, which must not exist (not even as a dangling link), with `mode`.
fn create_new(path: &Path, mode: u32) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(mode & 0o777)
        .open(path)
}

fn file_name(path: &Path) -> io::Result<String> {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| io::Error::other(format!("{}: not a file name", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .expect("read dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect()
    }

    #[test]
    fn writes_with_the_given_mode_and_leaves_no_temporary_file() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("f");
        write(&p, b"one\n", &Options::PRIVATE).expect("write");
        assert_eq!(fs::read(&p).expect("read"), b"one\n");
        assert_eq!(fs::metadata(&p).expect("meta").mode() & 0o7777, 0o600);
        let opts = Options {
            mode: 0o640,
            ..Options::PRIVATE
        };
        write(&p, b"two\n", &opts).expect("write again");
        assert_eq!(fs::read(&p).expect("read"), b"two\n");
        assert_eq!(fs::metadata(&p).expect("meta").mode() & 0o7777, 0o640);
        assert!(leftovers(d.path()).is_empty());
    }

    #[test]
    fn never_does_not_replace_and_if_unchanged_sees_an_edit() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("f");
        let never = Options {
            replace: Replace::Never,
            ..Options::PRIVATE
        };
        write(&p, b"first", &never).expect("a new file");
        let e = write(&p, b"second", &never).expect_err("exists");
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&p).expect("read"), b"first");
        let changed = Options {
            replace: Replace::IfUnchanged(b"not what is there"),
            ..Options::PRIVATE
        };
        let e = write(&p, b"third", &changed).expect_err("changed meanwhile");
        assert!(e.to_string().contains("changed by someone else"), "{e}");
        assert_eq!(fs::read(&p).expect("read"), b"first");
        let same = Options {
            replace: Replace::IfUnchanged(b"first"),
            ..Options::PRIVATE
        };
        write(&p, b"fourth", &same).expect("unchanged");
        assert_eq!(fs::read(&p).expect("read"), b"fourth");
        assert!(leftovers(d.path()).is_empty());
    }

    #[test]
    fn a_planted_link_at_a_temporary_name_is_never_followed() {
        let d = tempfile::tempdir().expect("tempdir");
        let victim = d.path().join("victim");
        fs::write(&victim, b"keep").expect("victim");
        let planted = d.path().join(".f.tmp-planted");
        std::os::unix::fs::symlink(&victim, &planted).expect("symlink");
        let e = create_new(&planted, 0o600).expect_err("a link is never opened");
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        let dangling = d.path().join(".g.tmp-planted");
        std::os::unix::fs::symlink(d.path().join("nothing"), &dangling).expect("symlink");
        create_new(&dangling, 0o600).expect_err("nor a dangling one");
        assert!(!d.path().join("nothing").exists());
        assert_eq!(fs::read(&victim).expect("read"), b"keep");
    }
}
