//! `keygen`: write a new key file and print the server-side line.
//!
//! Role: pick the key name ([`default_name`], pure), generate the key and save it through
//! `knock_keys` (mode 0600, refuses to overwrite without `--force`), then print on stdout the
//! `Keys = NAME:BASE64` line for the server's door section, with comment lines saying where it
//! goes, that it is secret, and the public key id.
//!
//! The secret is printed only in that one line, on purpose: it is what the server needs.

use std::io::{self, Write as _};
use std::path::Path;

use anyhow::Context as _;
use knock_keys::public::SigningKey;
use knock_keys::{valid_name, NamedKey, MAX_NAME_LEN};

use crate::model::InputError;

/// The name used when neither `$USER` nor the host name gives a usable one.
pub const FALLBACK_NAME: &str = "client";

/// Replaces characters a key name cannot hold with `_`.
fn sanitise(part: &str) -> String {
    part.trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `USER@HOST` made valid for `knock_keys::valid_name`: characters outside
/// `[A-Za-z0-9._-]` become `_`, the result is cut to 64 bytes; [`FALLBACK_NAME`] when nothing
/// usable is left.
pub fn default_name(user: Option<&str>, host: Option<&str>) -> String {
    let user = user.map(sanitise).filter(|u| !u.is_empty());
    let host = host.map(sanitise).filter(|h| !h.is_empty());
    let mut name = match (user, host) {
        (Some(u), Some(h)) => format!("{u}@{h}"),
        (Some(u), None) => u,
        (None, Some(h)) => format!("{FALLBACK_NAME}@{h}"),
        (None, None) => FALLBACK_NAME.to_owned(),
    };
    // Only ASCII is left, so any byte index is a char boundary.
    name.truncate(MAX_NAME_LEN);
    if valid_name(&name) {
        name
    } else {
        FALLBACK_NAME.to_owned()
    }
}

/// This machine's host name (Linux), if it can be read.
pub fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

/// The text printed on stdout after a key was written.
pub fn server_lines(key: &NamedKey, path: &Path) -> String {
    format!(
        "# knock-spa key `{name}` (key id {id}), written to {path}\n\
         # Paste the next line into the SPA door section of the server's configuration.\n\
         # It is SECRET (anyone with it can open your doors): keep it out of chat and tickets.\n\
         Keys = {inline}\n",
        name = key.name(),
        id = key.derive().id(),
        path = path.display(),
        inline = key.to_inline().as_str(),
    )
}

/// The text printed on stdout after a public-key keyfile was written.
pub fn public_server_lines(key: &SigningKey, path: &Path) -> String {
    format!(
        "# knock-spa public key `{name}` (key id {id}), private key written to {path}\n\
         # Paste the next line into the SPA door section of the server's configuration (the\n\
         # server also needs `ServerKey = FILE`, from `knock-spad server-key`). It opens\n\
         # nothing if stolen, but keep it to the server: it lets its holder make the server\n\
         # check signatures.\n\
         PublicKeys = {inline}\n",
        name = key.name(),
        id = key.public().id(),
        path = path.display(),
        inline = key.public().to_inline(),
    )
}

/// Runs `keygen`.
pub fn execute(name: Option<&str>, path: &Path, force: bool, public: bool) -> anyhow::Result<()> {
    let name = match name {
        Some(n) if valid_name(n) => n.to_owned(),
        Some(n) => return Err(InputError::BadKeyName(n.to_owned()).into()),
        None => default_name(std::env::var("USER").ok().as_deref(), hostname().as_deref()),
    };
    let text = if public {
        let key = SigningKey::generate(&name).context("cannot generate a key")?;
        key.save(path, force).context("cannot write the key file")?;
        zeroize::Zeroizing::new(public_server_lines(&key, path))
    } else {
        let key = NamedKey::generate(&name).context("cannot generate a key")?;
        key.save(path, force).context("cannot write the key file")?;
        zeroize::Zeroizing::new(server_lines(&key, path))
    };
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to stdout")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names() {
        assert_eq!(default_name(Some("alice"), Some("laptop")), "alice@laptop");
        assert_eq!(default_name(Some("alice"), None), "alice");
        assert_eq!(default_name(None, Some("laptop")), "client@laptop");
        assert_eq!(default_name(None, None), "client");
        assert_eq!(default_name(Some(""), Some(" ")), "client");
        assert_eq!(
            default_name(Some("a b"), Some("my host.example")),
            "a_b@my_host.example"
        );
        assert_eq!(default_name(Some("jörg"), Some("h")), "j_rg@h");
        let long = default_name(Some(&"u".repeat(40)), Some(&"h".repeat(40)));
        assert_eq!(long.len(), 64);
        assert!(valid_name(&long));
    }

    #[test]
    fn printed_lines() {
        let key =
            NamedKey::new("alice", knock_keys::MasterKey::from_bytes([7; 32])).expect("valid name");
        let text = server_lines(&key, Path::new("/home/alice/.knock/key"));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[..3].iter().all(|l| l.starts_with('#')));
        assert!(lines[0].contains(&key.derive().id().to_string()));
        assert_eq!(lines[3], format!("Keys = {}", key.to_inline().as_str()));
        // The printed line parses back to the same key.
        let back = NamedKey::from_inline(lines[3].trim_start_matches("Keys = ")).expect("parses");
        assert_eq!(back.derive().id(), key.derive().id());
    }
}
