//! `knock-spa config`: which configuration and key files the client reads, in the order it
//! looks for them, and what it found in them.
//!
//! Role: [`render`] locates the configuration file as `open` does, reads it (an error in it
//! is the same `FILE:LINE` error `open` would give), then loads each key file that would be
//! used (the default one, and each stanza's) and describes it by name and public key id.
//!
//! It must not print a secret: a key is shown by its name and id only.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use knock_keys::public::ClientKey;
use knock_keys::KeyError;

use crate::config::{self, ConfigSource, CONFIG_ENV};
use crate::places::Places;
use crate::services::Services;

/// What `config` prints, and how many files it found unusable (exit status 1 when any).
#[derive(Debug)]
pub struct Report {
    /// The text for stdout.
    pub text: String,
    /// Files that exist and would be used but cannot be (unreadable, too open, malformed).
    pub unusable: usize,
}

/// One key file, described.
fn describe_key(path: &Path, unusable: &mut usize) -> String {
    match ClientKey::load(path) {
        Ok(key) => format!("key `{}`, id {}, {}", key.name(), key.id(), key.kind()),
        Err(KeyError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            "not found (create it with `knock-spa keygen`)".to_owned()
        }
        Err(e) => {
            *unusable += 1;
            format!("cannot be used: {e}")
        }
    }
}

/// `found`, `not found` for each default file, marking the one used.
fn searched(out: &mut String, files: &[PathBuf], used: Option<&Path>) {
    for f in files {
        let state = if Some(f.as_path()) == used {
            "used"
        } else if f.exists() {
            "found, not used (an earlier file comes first)"
        } else {
            "not found"
        };
        // Writing to a String cannot fail.
        let _ = writeln!(out, "  {}: {state}", f.display());
    }
}

/// The report for `--config` (`config_flag`) and `--key` (`key_flag`).
pub fn render(
    config_flag: Option<&Path>,
    key_flag: Option<&Path>,
    services: &Services,
) -> anyhow::Result<Report> {
    let places = Places::from_env();
    let mut out = String::new();
    let mut unusable = 0;
    let defaults = places.config_files();
    let source = config::locate(config_flag, std::env::var_os(CONFIG_ENV), &defaults, |p| {
        p.exists()
    });
    let config = match &source {
        Some(s) => config::load(s, places.home.as_deref(), services)?,
        None => None,
    };
    let how = match &source {
        Some(ConfigSource::Flag(_)) => " (--config)",
        Some(ConfigSource::Env(_)) => " ($KNOCK_SPA_CONFIG)",
        Some(ConfigSource::Default(_)) | None => "",
    };
    match (&source, &config) {
        (Some(s), Some(c)) => {
            let names: Vec<&str> = c.stanzas.iter().map(|s| s.name.as_str()).collect();
            let _ = writeln!(
                out,
                "configuration: {}{how}: {} stanza(s){}{}",
                s.path().display(),
                names.len(),
                if names.is_empty() { "" } else { ": " },
                names.join(", ")
            );
        }
        _ => {
            let _ = writeln!(out, "configuration: none (no stanzas)");
        }
    }
    if !matches!(
        source,
        Some(ConfigSource::Flag(_)) | Some(ConfigSource::Env(_))
    ) {
        searched(&mut out, &defaults, source.as_ref().map(ConfigSource::path));
    }

    match key_flag {
        Some(path) => {
            let _ = writeln!(
                out,
                "key: {} (--key): {}",
                path.display(),
                describe_key(path, &mut unusable)
            );
        }
        None => {
            let key = places.default_key(|p| p.exists(), Path::is_dir)?;
            let _ = writeln!(
                out,
                "key: {} (default): {}",
                key.display(),
                describe_key(&key, &mut unusable)
            );
            searched(
                &mut out,
                &places.key_files(),
                Some(&key).filter(|k| k.exists()).map(PathBuf::as_path),
            );
            for stanza in config.iter().flat_map(|c| &c.stanzas) {
                if let Some(path) = &stanza.key {
                    let _ = writeln!(
                        out,
                        "stanza [{}]: key {}: {}",
                        stanza.name,
                        path.display(),
                        describe_key(path, &mut unusable)
                    );
                }
            }
        }
    }
    Ok(Report {
        text: out,
        unusable,
    })
}
