//! A per-test temporary directory for configs, keys, state and process logs.
//!
//! Removed on drop unless `KS_E2E_KEEP` is set in the environment (then its path is printed,
//! to look at a failed run's files by hand).

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// A directory under the system temp dir, unique to one test, mode 0700.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `$TMPDIR/knock-e2e-<pid>-<counter>`.
    ///
    /// # Panics
    /// When the directory cannot be created (the message names it).
    pub fn new() -> TempDir {
        let path = std::env::temp_dir().join(format!("knock-e2e-{}", crate::sys::unique_suffix()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .unwrap_or_else(|e| panic!("cannot create temp dir {}: {e}", path.display()));
        TempDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `path()/name`.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `contents` to `path()/name` and returns the file's path.
    ///
    /// # Panics
    /// When the file cannot be written.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.join(name);
        fs::write(&p, contents).unwrap_or_else(|e| panic!("cannot write {}: {e}", p.display()));
        p
    }

    /// [`TempDir::write`], then mode 0600: for a file holding secrets (a configuration with
    /// inline keys, a one-time sequences file), which the daemon refuses otherwise.
    ///
    /// # Panics
    /// When the file cannot be written or its mode set.
    pub fn write_private(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.write(name, contents);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", p.display()));
        p
    }
}

impl Default for TempDir {
    fn default() -> Self {
        TempDir::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("KS_E2E_KEEP").is_some() {
            eprintln!(
                "knock-e2e: keeping {} (KS_E2E_KEEP is set)",
                self.path.display()
            );
            return;
        }
        if let Err(e) = fs::remove_dir_all(&self.path) {
            eprintln!("knock-e2e: cannot remove {}: {e}", self.path.display());
        }
    }
}
