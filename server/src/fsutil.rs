//! Replacing a file the administrator owns (the configuration, a key file) atomically, as
//! editors should: write a temporary file in the same directory with the same mode and owner,
//! fsync it, check that nobody changed the original meanwhile, rename it over the original,
//! fsync the directory. A reader (the daemon at SIGHUP) sees the old file or the new one,
//! never a half-written one, and a crash leaves at worst a stray temporary file.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A temporary file removed on drop unless it was [`kept`](TempFile::keep).
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    /// Creates `dir/.NAME.knock-spad-PID-TAG` exclusively, mode 0600, holding `bytes`, synced.
    pub fn create(dir: &Path, name: &str, tag: &str, bytes: &[u8]) -> io::Result<Self> {
        let path = dir.join(format!(".{name}.knock-spad-{}-{tag}", std::process::id()));
        let _ = fs::remove_file(&path); // a leftover of a crashed run with our pid
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let me = Self { path, armed: true };
        f.write_all(bytes)?;
        f.sync_all()?;
        Ok(me)
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

fn file_name(path: &Path) -> io::Result<String> {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| io::Error::other(format!("{}: not a file name", path.display())))
}

/// The directory holding `path` (`.` for a bare name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Replaces `path` (resolved through symlinks) with `contents`, keeping its mode and owner.
/// Refuses, leaving it untouched, when its contents are no longer `expected` (someone else
/// edited it since it was read).
pub fn replace(path: &Path, expected: &[u8], contents: &[u8]) -> io::Result<()> {
    let path = fs::canonicalize(path)?;
    let meta = fs::metadata(&path)?;
    let dir = parent_dir(&path);
    let tmp = TempFile::create(dir, &file_name(&path)?, "new", contents)?;
    {
        let f = fs::OpenOptions::new().write(true).open(tmp.path())?;
        // Owner first: chown clears set-id bits, and the mode is set afterwards.
        std::os::unix::fs::fchown(&f, Some(meta.uid()), Some(meta.gid()))?;
        f.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        f.sync_all()?;
    }
    let now = zeroize::Zeroizing::new(fs::read(&path)?);
    if now.as_slice() != expected {
        return Err(io::Error::other(format!(
            "{} was changed by someone else while it was being edited; nothing written, try again",
            path.display()
        )));
    }
    fs::rename(tmp.path(), &path)?;
    tmp.keep();
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_keeps_mode_and_refuses_a_concurrent_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f.conf");
        fs::write(&p, b"old\n").expect("write");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).expect("chmod");
        replace(&p, b"old\n", b"new\n").expect("replace");
        assert_eq!(fs::read(&p).expect("read"), b"new\n");
        assert_eq!(
            fs::metadata(&p).expect("meta").permissions().mode() & 0o777,
            0o640
        );
        let err = replace(&p, b"old\n", b"newer\n").expect_err("changed meanwhile");
        assert!(err.to_string().contains("changed by someone else"), "{err}");
        assert_eq!(fs::read(&p).expect("read"), b"new\n");
        // No temporary file is left behind either way.
        let names: Vec<String> = fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["f.conf".to_owned()]);
    }

    #[test]
    fn replace_follows_a_symlink() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("real.conf");
        let link = dir.path().join("link.conf");
        fs::write(&real, b"a").expect("write");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        replace(&link, b"a", b"b").expect("replace");
        assert!(fs::symlink_metadata(&link)
            .expect("meta")
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&real).expect("read"), b"b");
    }
}
