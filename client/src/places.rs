//! Where the client looks for its files: `$XDG_CONFIG_HOME/knock-spa/` first (`~/.config` when
//! `$XDG_CONFIG_HOME` is unset, empty or relative, as the XDG base directory specification
//! says), then `~/.knock/`, each for `config` and `key`.
//!
//! Role: [`Places`] is built from the two environment values (pure, so it can be tested
//! without touching the environment) and answers "which default files, in which order" and
//! "where does a new key go". Reading the files is `config::load` and `spa::load_key`'s.
//!
//! It must not read or create files; the existence checks it needs are passed in.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::anyhow;

/// The client's directory under `$XDG_CONFIG_HOME`.
pub const XDG_DIR: &str = "knock-spa";
/// The older directory under `$HOME`.
pub const LEGACY_DIR: &str = ".knock";
/// The configuration file's name in either directory.
pub const CONFIG_NAME: &str = "config";
/// The key file's name in either directory.
pub const KEY_NAME: &str = "key";

/// The directories the client looks in, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Places {
    /// `$XDG_CONFIG_HOME/knock-spa`, when it can be known.
    pub xdg: Option<PathBuf>,
    /// `$HOME/.knock`, when `$HOME` is set.
    pub legacy: Option<PathBuf>,
    /// `$HOME`, for `~/` in the configuration file.
    pub home: Option<PathBuf>,
}

impl Places {
    /// From the values of `$XDG_CONFIG_HOME` and `$HOME`.
    pub fn new(xdg_config_home: Option<OsString>, home: Option<OsString>) -> Self {
        let home = home.filter(|h| !h.is_empty()).map(PathBuf::from);
        let base = xdg_config_home
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| home.as_ref().map(|h| h.join(".config")));
        Self {
            xdg: base.map(|b| b.join(XDG_DIR)),
            legacy: home.as_ref().map(|h| h.join(LEGACY_DIR)),
            home,
        }
    }

    /// From this process's environment.
    pub fn from_env() -> Self {
        Self::new(
            std::env::var_os("XDG_CONFIG_HOME"),
            std::env::var_os("HOME"),
        )
    }

    fn files(&self, name: &str) -> Vec<PathBuf> {
        [&self.xdg, &self.legacy]
            .into_iter()
            .flatten()
            .map(|d| d.join(name))
            .collect()
    }

    /// The default configuration files, in the order they are tried.
    pub fn config_files(&self) -> Vec<PathBuf> {
        self.files(CONFIG_NAME)
    }

    /// The default key files, in the order they are tried.
    pub fn key_files(&self) -> Vec<PathBuf> {
        self.files(KEY_NAME)
    }

    /// The key `open` uses without `--key` or a stanza's `key`: the first default key file that
    /// `exists`; when there is none, where `keygen` would write it ([`Places::new_key`]), so
    /// that the error names that file.
    pub fn default_key(
        &self,
        exists: impl Fn(&Path) -> bool,
        is_dir: impl Fn(&Path) -> bool,
    ) -> anyhow::Result<PathBuf> {
        match self.key_files().into_iter().find(|p| exists(p)) {
            Some(path) => Ok(path),
            None => self.new_key(is_dir),
        }
    }

    /// Where `keygen` writes a new key without `-o` or `--key`: into
    /// `$XDG_CONFIG_HOME/knock-spa/` when that directory exists, else into `~/.knock/`
    /// (created), else into the XDG directory (created) when there is no `$HOME`.
    pub fn new_key(&self, is_dir: impl Fn(&Path) -> bool) -> anyhow::Result<PathBuf> {
        let dir = match (&self.xdg, &self.legacy) {
            (Some(xdg), _) if is_dir(xdg) => xdg,
            (_, Some(legacy)) => legacy,
            (Some(xdg), None) => xdg,
            (None, None) => {
                return Err(anyhow!(
                    "neither $HOME nor $XDG_CONFIG_HOME is set, so there is no default key file \
                     (give --key FILE)"
                ))
            }
        };
        Ok(dir.join(KEY_NAME))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn xdg_then_legacy() {
        let places = Places::new(None, Some("/home/u".into()));
        assert_eq!(
            places.config_files(),
            [
                p("/home/u/.config/knock-spa/config"),
                p("/home/u/.knock/config")
            ]
        );
        assert_eq!(
            places.key_files(),
            [p("/home/u/.config/knock-spa/key"), p("/home/u/.knock/key")]
        );
        let places = Places::new(Some("/x".into()), Some("/home/u".into()));
        assert_eq!(places.xdg, Some(p("/x/knock-spa")));
        // A relative or empty $XDG_CONFIG_HOME is ignored (the specification says so).
        for ignored in ["", "rel/dir"] {
            let places = Places::new(Some(ignored.into()), Some("/home/u".into()));
            assert_eq!(
                places.xdg,
                Some(p("/home/u/.config/knock-spa")),
                "{ignored:?}"
            );
        }
        let places = Places::new(Some("/x".into()), None);
        assert_eq!(places.config_files(), [p("/x/knock-spa/config")]);
        assert!(Places::new(None, None).config_files().is_empty());
    }

    #[test]
    fn which_key() {
        let places = Places::new(None, Some("/home/u".into()));
        let nothing = |_: &Path| false;
        let legacy_key = |f: &Path| f == Path::new("/home/u/.knock/key");
        let both = |_: &Path| true;
        let xdg_dir = |d: &Path| d == Path::new("/home/u/.config/knock-spa");
        assert_eq!(
            places.default_key(both, nothing).expect("key"),
            p("/home/u/.config/knock-spa/key")
        );
        assert_eq!(
            places.default_key(legacy_key, xdg_dir).expect("key"),
            p("/home/u/.knock/key"),
            "an existing key wins over the XDG directory"
        );
        assert_eq!(
            places.default_key(nothing, nothing).expect("key"),
            p("/home/u/.knock/key"),
            "a new key goes to ~/.knock unless the XDG directory exists"
        );
        assert_eq!(
            places.new_key(xdg_dir).expect("key"),
            p("/home/u/.config/knock-spa/key")
        );
        assert_eq!(
            Places::new(Some("/x".into()), None)
                .new_key(nothing)
                .expect("key"),
            p("/x/knock-spa/key")
        );
        assert!(Places::new(None, None).new_key(nothing).is_err());
    }
}
