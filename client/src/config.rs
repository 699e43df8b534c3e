//! The client configuration file, `$XDG_CONFIG_HOME/knock-spa/config` or `~/.knock/config`:
//! named server stanzas for `open`, `close` and `proxy`.
//!
//! Role: [`locate`] decides which file to read (`--config FILE`, else `$KNOCK_SPA_CONFIG`, else
//! the first default file that exists, see `places`); [`load`] checks and reads it; [`parse`] turns its
//! text into a [`Config`] (pure: the services table, the home directory and the directory
//! relative key paths start from are passed in), validating every value and reporting
//! **every** error as `FILE:LINE: message`.
//!
//! Format (documented for users in docs/CLIENT.md):
//!
//! ```text
//! # a comment: the first non-blank character of the line is '#'
//! [myserver]
//! host = gw.example.org
//! spa_port = 62201
//! key = ~/.knock/work.key
//! admit = route
//! open_for = 300
//! services = ssh,53/udp
//! server_id = gw.example.org
//! family = auto
//! ```
//!
//! - Each line is trimmed; blank lines and lines starting with `#` are skipped. There are no
//!   trailing comments: the value is everything after the first `=`, trimmed.
//! - `[name]` starts a stanza; names are case-sensitive, unique, and contain no blanks, `[`,
//!   `]` or `#`. A setting before the first stanza is an error.
//! - Keys are case-insensitive, each at most once per stanza, and must have a value.
//!
//! The file holds no secret, so group/other may read it; it must not be writable by
//! group/other, since whoever can change it can redirect the packet or the address it admits
//! (ssh refuses such a `~/.ssh/config` for the same reason).
//!
//! It must not send anything or read the key file.

use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _};
use knock_shared::types::PortSpec;

use crate::model::{AdmitChoice, Family};
use crate::services::{self, Services};

/// The environment variable naming the configuration file when `--config` is not given.
pub const CONFIG_ENV: &str = "KNOCK_SPA_CONFIG";

/// The largest configuration file read, in bytes (a guard against reading something that is
/// not a configuration file at all).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The keys a stanza may hold, in the order the documentation lists them.
pub const KEYS: [&str; 9] = [
    "host",
    "spa_port",
    "key",
    "admit",
    "open_for",
    "services",
    "server_id",
    "server_key",
    "family",
];

/// One `[name]` stanza: the values it sets, all validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stanza {
    /// The name in brackets: what HOST must be to use the stanza.
    pub name: String,
    /// The line of `[name]`, for messages.
    pub line: usize,
    /// `host`: where the packet goes.
    pub host: Option<String>,
    /// `spa_port`: 1..=65535.
    pub spa_port: Option<u16>,
    /// `key`: the key file, `~/` expanded, relative paths made relative to the file's
    /// directory.
    pub key: Option<PathBuf>,
    /// `admit`: `route`, `source` or an address.
    pub admit: Option<AdmitChoice>,
    /// `open_for`: seconds, 0 for the server's default.
    pub open_for: Option<u32>,
    /// `services`: the parsed list, 1 to 16 ports.
    pub services: Option<Vec<PortSpec>>,
    /// `server_id`: the identity the packet is bound to, as written.
    pub server_id: Option<String>,
    /// `server_key`: the server's X25519 public key (base64), for public-key keyfiles.
    pub server_key: Option<String>,
    /// `family`: `auto` (one packet per family HOST has), `both`, `v4` or `v6`.
    pub family: Option<Family>,
}

impl Stanza {
    fn new(name: &str, line: usize) -> Self {
        Self {
            name: name.to_owned(),
            line,
            host: None,
            spa_port: None,
            key: None,
            admit: None,
            open_for: None,
            services: None,
            server_id: None,
            server_key: None,
            family: None,
        }
    }
}

/// A parsed configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file, as shown in messages.
    pub source: String,
    /// The stanzas in file order; names are unique.
    pub stanzas: Vec<Stanza>,
}

impl Config {
    /// The stanza named exactly `name`.
    pub fn find(&self, name: &str) -> Option<&Stanza> {
        self.stanzas.iter().find(|s| s.name == name)
    }

    /// The stanza whose name is closest to `name` when `name` is none of them but could be a
    /// typo of one: the same but for case, or at most one edit (two for names of six
    /// characters or more) away, counting a swap of neighbours as one.
    pub fn suggest(&self, name: &str) -> Option<&str> {
        let budget = if name.chars().count() >= 6 { 2 } else { 1 };
        self.stanzas
            .iter()
            .map(|s| {
                (
                    strsim::osa_distance(&s.name.to_lowercase(), &name.to_lowercase()),
                    s,
                )
            })
            .filter(|(d, s)| *d <= budget && s.name != name)
            .min_by_key(|(d, _)| *d)
            .map(|(_, s)| s.name.as_str())
    }

    /// `FILE:LINE` of a stanza's `[name]` line.
    pub fn locate_stanza(&self, stanza: &Stanza) -> String {
        format!("{}:{}", self.source, stanza.line)
    }
}

/// One problem in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct ConfigError {
    /// The file, as shown in messages.
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong, naming the key and the value.
    pub message: String,
}

/// Every problem in the file, in line order (never empty). Maps to exit code 2, like other
/// invalid input; `main` prints each on its own line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// What [`parse`] needs besides the text; all of it is passed in so parsing does no I/O.
#[derive(Debug, Clone, Copy)]
pub struct ParseContext<'a> {
    /// The file name shown in messages.
    pub source: &'a str,
    /// Where relative `key` paths start: the configuration file's directory.
    pub base_dir: &'a Path,
    /// `$HOME`, for `~/` in `key`; `None` when unset (then `~/` is an error).
    pub home: Option<&'a Path>,
    /// Service names for `services`.
    pub services: &'a Services,
}

/// Parses the text of a configuration file, validating every value.
pub fn parse(text: &str, ctx: &ParseContext<'_>) -> Result<Config, ConfigErrors> {
    let mut errors: Vec<ConfigError> = Vec::new();
    let mut stanzas: Vec<Stanza> = Vec::new();
    // The stanza being filled and the keys it has seen; `None` before the first `[name]`,
    // and after a bad `[name]` line (its settings are skipped, one error is enough).
    let mut current: Option<Stanza> = None;
    let mut seen: Vec<&'static str> = Vec::new();
    let mut in_bad_stanza = false;

    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let mut err = |message: String| {
            errors.push(ConfigError {
                file: ctx.source.to_owned(),
                line: line_no,
                message,
            });
        };
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            stanzas.extend(current.take());
            seen.clear();
            match stanza_name(line) {
                Ok(name) => {
                    if let Some(first) = stanzas.iter().find(|s| s.name == name) {
                        err(format!(
                            "duplicate stanza [{name}] (first at line {})",
                            first.line
                        ));
                        in_bad_stanza = true;
                    } else {
                        current = Some(Stanza::new(name, line_no));
                        in_bad_stanza = false;
                    }
                }
                Err(message) => {
                    err(message);
                    in_bad_stanza = true;
                }
            }
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            err(format!("`{line}` is neither `[name]` nor `key = value`"));
            continue;
        };
        let key_lc = key.trim().to_ascii_lowercase();
        let value = value.trim();
        let Some(key) = KEYS.iter().copied().find(|k| *k == key_lc) else {
            err(format!(
                "unknown key `{}` (known: {})",
                key.trim(),
                KEYS.join(", ")
            ));
            continue;
        };
        let Some(stanza) = current.as_mut() else {
            if !in_bad_stanza {
                err(format!(
                    "`{key}` is outside any stanza (start one with `[name]`)"
                ));
            }
            continue;
        };
        if seen.contains(&key) {
            err(format!("`{key}` given twice in stanza [{}]", stanza.name));
            continue;
        }
        seen.push(key);
        if value.is_empty() {
            err(format!("`{key}` has no value"));
            continue;
        }
        if let Err(message) = set(stanza, key, value, ctx) {
            err(message);
        }
    }
    stanzas.extend(current.take());
    if errors.is_empty() {
        Ok(Config {
            source: ctx.source.to_owned(),
            stanzas,
        })
    } else {
        Err(ConfigErrors(errors))
    }
}

/// `[name]` → `name`, or the message for a bad stanza line.
fn stanza_name(line: &str) -> Result<&str, String> {
    let Some(inner) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) else {
        return Err(format!(
            "bad stanza line `{line}`: a stanza starts with `[name]` alone on its line"
        ));
    };
    let name = inner.trim();
    if name.is_empty() {
        return Err("empty stanza name `[]`".to_owned());
    }
    if name
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '[' | ']' | '#'))
    {
        return Err(format!(
            "bad stanza name `{name}`: no blanks, `[`, `]` or `#` (it is what you type as HOST)"
        ));
    }
    Ok(name)
}

/// Validates `value` for `key` and stores it in the stanza.
fn set(stanza: &mut Stanza, key: &str, value: &str, ctx: &ParseContext<'_>) -> Result<(), String> {
    match key {
        "host" => {
            if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!(
                    "host `{value}`: a host name or address has no blanks"
                ));
            }
            stanza.host = Some(value.to_owned());
        }
        "spa_port" => {
            let port = parse_number(value)
                .and_then(|n| u16::try_from(n).ok())
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("spa_port `{value}`: a port is a number from 1 to 65535"))?;
            stanza.spa_port = Some(port);
        }
        "key" => stanza.key = Some(key_path(value, ctx)?),
        "admit" => {
            let admit = value
                .parse::<AdmitChoice>()
                .map_err(|why| format!("admit: {why}"))?;
            stanza.admit = Some(admit);
        }
        "open_for" => {
            let secs = parse_number(value)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    format!(
                        "open_for `{value}`: seconds as a number from 0 to {} (0: the server's \
                         default)",
                        u32::MAX
                    )
                })?;
            stanza.open_for = Some(secs);
        }
        "services" => {
            let ports = services::parse_list(value, ctx.services)
                .map_err(|e| format!("services `{value}`: {e}"))?;
            stanza.services = Some(ports);
        }
        "server_id" => {
            if value.chars().any(char::is_control) {
                return Err(format!(
                    "server_id `{}`: control characters are not allowed",
                    value.escape_debug()
                ));
            }
            stanza.server_id = Some(value.to_owned());
        }
        "server_key" => {
            knock_keys::public::ServerPublic::from_base64(value).map_err(|e| {
                format!("server_key: {e} (`knock-spad server-key --show FILE` prints the key)")
            })?;
            stanza.server_key = Some(value.to_owned());
        }
        "family" => {
            let family = value
                .parse::<Family>()
                .map_err(|why| format!("family: {why}"))?;
            stanza.family = Some(family);
        }
        // `KEYS` and this match list the same names.
        other => return Err(format!("unknown key `{other}`")),
    }
    Ok(())
}

/// Plain decimal digits (no sign, no unit), as a `u64`.
fn parse_number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `~/x` → `$HOME/x`; `~` → `$HOME`; a relative path → relative to the file's directory.
fn key_path(value: &str, ctx: &ParseContext<'_>) -> Result<PathBuf, String> {
    if let Some(rest) = value.strip_prefix('~') {
        let rest = match rest.strip_prefix('/') {
            Some(rest) => rest,
            None if rest.is_empty() => "",
            None => {
                return Err(format!(
                    "key `{value}`: only `~/` is expanded (to $HOME), not `~user`"
                ))
            }
        };
        let home = ctx
            .home
            .ok_or_else(|| format!("key `{value}`: $HOME is not set, so `~` cannot be expanded"))?;
        return Ok(if rest.is_empty() {
            home.to_path_buf()
        } else {
            home.join(rest)
        });
    }
    let path = Path::new(value);
    Ok(if path.is_absolute() {
        path.to_path_buf()
    } else {
        ctx.base_dir.join(path)
    })
}

/// Which file to read and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// `--config FILE`: must exist.
    Flag(PathBuf),
    /// `$KNOCK_SPA_CONFIG`: must exist.
    Env(PathBuf),
    /// The first default file that exists (`$XDG_CONFIG_HOME/knock-spa/config`, else
    /// `~/.knock/config`); if it went in the meantime, there are no stanzas.
    Default(PathBuf),
}

impl ConfigSource {
    /// The path.
    pub fn path(&self) -> &Path {
        match self {
            Self::Flag(p) | Self::Env(p) | Self::Default(p) => p,
        }
    }
}

/// `--config FILE`, else `$KNOCK_SPA_CONFIG` (when set and not empty), else the first of the
/// default files (`places::Places::config_files`) that `exists`, else nothing.
pub fn locate(
    flag: Option<&Path>,
    env: Option<OsString>,
    defaults: &[PathBuf],
    exists: impl Fn(&Path) -> bool,
) -> Option<ConfigSource> {
    if let Some(path) = flag {
        return Some(ConfigSource::Flag(path.to_path_buf()));
    }
    if let Some(path) = env.filter(|p| !p.is_empty()) {
        return Some(ConfigSource::Env(PathBuf::from(path)));
    }
    defaults
        .iter()
        .find(|p| exists(p))
        .map(|p| ConfigSource::Default(p.clone()))
}

/// The one path that is not a regular file but is accepted: `--config /dev/null` reads no
/// stanzas (as `ssh -F /dev/null`), a way round a broken default file.
pub const NULL_CONFIG: &str = "/dev/null";

/// Reads and parses the file `source` names. `Ok(None)` only when the default file does not
/// exist. Refuses a file that is not a regular file (except [`NULL_CONFIG`]), is larger than
/// [`MAX_CONFIG_BYTES`], or is writable by group or others.
pub fn load(
    source: &ConfigSource,
    home: Option<&Path>,
    services: &Services,
) -> anyhow::Result<Option<Config>> {
    let path = source.path();
    let shown = path.display().to_string();
    let why = match source {
        ConfigSource::Flag(_) => " (given with --config)",
        ConfigSource::Env(_) => " (named by $KNOCK_SPA_CONFIG)",
        ConfigSource::Default(_) => "",
    };
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e)
            if e.kind() == io::ErrorKind::NotFound
                && matches!(source, ConfigSource::Default(_)) =>
        {
            return Ok(None)
        }
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context(format!("cannot read the configuration file {shown}{why}")))
        }
    };
    if path == Path::new(NULL_CONFIG) {
        return Ok(Some(Config {
            source: shown,
            stanzas: Vec::new(),
        }));
    }
    if !meta.is_file() {
        return Err(anyhow!(
            "the configuration file {shown}{why} is not a regular file"
        ));
    }
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(anyhow!(
            "the configuration file {shown} is writable by {} (mode {:o}): anyone who can \
             change it can redirect your packets; run `chmod go-w {shown}`",
            if mode & 0o002 != 0 {
                "others"
            } else {
                "its group"
            },
            mode & 0o7777
        ));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes))
        .with_context(|| format!("cannot read the configuration file {shown}{why}"))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(anyhow!(
            "the configuration file {shown} is larger than {MAX_CONFIG_BYTES} bytes"
        ));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow!("the configuration file {shown} is not valid UTF-8"))?;
    let base_dir = path.parent().unwrap_or_else(|| Path::new("."));
    let ctx = ParseContext {
        source: &shown,
        base_dir,
        home,
        services,
    };
    Ok(Some(parse(&text, &ctx)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Services {
        services::parse("ssh 22/tcp\ndomain 53/tcp\ndomain 53/udp\nhttps 443/tcp\n")
    }

    fn parse_text(text: &str) -> Result<Config, ConfigErrors> {
        let services = db();
        parse(
            text,
            &ParseContext {
                source: "cfg",
                base_dir: Path::new("/etc/knock"),
                home: Some(Path::new("/home/u")),
                services: &services,
            },
        )
    }

    fn spec(s: &str) -> PortSpec {
        s.parse().expect("test spec")
    }

    #[test]
    fn full_stanza() {
        let cfg = parse_text(
            "# comment\n\
             \n\
             [myserver]\n\
             \thost = gw.example.org\n\
             SPA_Port=4000\n\
             key = ~/.knock/work.key\n\
             admit = 203.0.113.7\n\
             open_for = 300\n\
             services = ssh, domain/udp\n\
             server_id = GW.example.org\n\
             [other]\n\
             admit = source\n\
             key = keys/o.key\n\
             [third]\n\
             admit = route\n\
             key = /abs/k\n\
             [~]\n\
             key = ~\n",
        )
        .expect("valid");
        assert_eq!(cfg.source, "cfg");
        assert_eq!(cfg.stanzas.len(), 4);
        let s = cfg.find("myserver").expect("stanza");
        assert_eq!(s.line, 3);
        assert_eq!(s.host.as_deref(), Some("gw.example.org"));
        assert_eq!(s.spa_port, Some(4000));
        assert_eq!(s.key.as_deref(), Some(Path::new("/home/u/.knock/work.key")));
        assert_eq!(
            s.admit,
            Some(AdmitChoice::Addr("203.0.113.7".parse().expect("ip")))
        );
        assert_eq!(s.open_for, Some(300));
        assert_eq!(s.services, Some(vec![spec("22/tcp"), spec("53/udp")]));
        assert_eq!(s.server_id.as_deref(), Some("GW.example.org"));
        assert_eq!(cfg.locate_stanza(s), "cfg:3");

        let o = cfg.find("other").expect("stanza");
        assert_eq!(o.admit, Some(AdmitChoice::Source));
        assert_eq!(o.key.as_deref(), Some(Path::new("/etc/knock/keys/o.key")));
        assert_eq!(
            (o.host.as_ref(), o.spa_port, o.services.as_ref()),
            (None, None, None)
        );
        let t = cfg.find("third").expect("stanza");
        assert_eq!(t.admit, Some(AdmitChoice::Route));
        assert_eq!(t.key.as_deref(), Some(Path::new("/abs/k")));
        assert_eq!(
            cfg.find("~").and_then(|s| s.key.as_deref()),
            Some(Path::new("/home/u"))
        );
        // Names are matched exactly.
        assert!(cfg.find("MyServer").is_none());
    }

    #[test]
    fn empty_and_comment_only_files() {
        assert_eq!(parse_text("").expect("valid").stanzas, vec![]);
        assert_eq!(
            parse_text("# nothing\n\n   # more\n")
                .expect("valid")
                .stanzas,
            vec![]
        );
        // A stanza with nothing in it is allowed: HOST is then its name.
        let cfg = parse_text("[gw.example.org]\n").expect("valid");
        assert_eq!(cfg.stanzas, vec![Stanza::new("gw.example.org", 1)]);
    }

    /// One bad input, the line the error must name, and a fragment of its message.
    const BAD: &[(&str, usize, &str)] = &[
        ("host = x\n", 1, "outside any stanza"),
        ("[a]\nfrobnicate = 1\n", 2, "unknown key `frobnicate`"),
        ("[a]\nhost\n", 2, "neither `[name]` nor `key = value`"),
        ("[a]\nhost =\n", 2, "`host` has no value"),
        ("[a]\nhost = x\nhost = y\n", 3, "`host` given twice"),
        ("[a]\n[a]\n", 2, "duplicate stanza [a] (first at line 1)"),
        ("[]\n", 1, "empty stanza name"),
        ("[a b]\n", 1, "bad stanza name `a b`"),
        ("[a] # x\n", 1, "bad stanza line"),
        ("[a\n", 1, "bad stanza line"),
        ("[a]\nspa_port = 0\n", 2, "spa_port `0`"),
        ("[a]\nspa_port = 65536\n", 2, "spa_port `65536`"),
        ("[a]\nspa_port = +22\n", 2, "spa_port `+22`"),
        (
            "[a]\nspa_port = 62201 # default\n",
            2,
            "spa_port `62201 # default`",
        ),
        ("[a]\nopen_for = -1\n", 2, "open_for `-1`"),
        ("[a]\nopen_for = 5m\n", 2, "open_for `5m`"),
        ("[a]\nopen_for = 4294967296\n", 2, "open_for `4294967296`"),
        (
            "[a]\nadmit = nat\n",
            2,
            "admit: `nat` is not route, source or an IP address",
        ),
        ("[a]\nadmit = 0.0.0.0\n", 2, "admit: 0.0.0.0"),
        ("[a]\nadmit = ff02::1\n", 2, "multicast"),
        (
            "[a]\nservices = nosuch\n",
            2,
            "services `nosuch`: unknown service `nosuch`",
        ),
        ("[a]\nservices = 22/sctp\n", 2, "tcp or udp"),
        ("[a]\nservices = ssh,,https\n", 2, "empty entry"),
        (
            "[a]\nservices = 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17\n",
            2,
            "too many ports",
        ),
        ("[a]\nhost = gw example\n", 2, "host `gw example`"),
        ("[a]\nkey = ~bob/k\n", 2, "only `~/` is expanded"),
        ("[a]\nserver_id = a\u{7}b\n", 2, "control characters"),
    ];

    #[test]
    fn bad_inputs_name_file_and_line() {
        for (text, line, needle) in BAD {
            let err = parse_text(text).expect_err(text);
            assert_eq!(err.0.len(), 1, "{text:?}: {err}");
            let e = &err.0[0];
            assert_eq!((e.file.as_str(), e.line), ("cfg", *line), "{text:?}: {e}");
            let shown = e.to_string();
            assert!(
                shown.starts_with(&format!("cfg:{line}: ")),
                "{text:?}: {shown}"
            );
            assert!(
                shown.contains(needle),
                "{text:?}: `{needle}` not in {shown}"
            );
        }
    }

    #[test]
    fn every_error_is_reported_in_line_order() {
        let err = parse_text(
            "[a]\n\
             spa_port = 0\n\
             color = blue\n\
             [b]\n\
             open_for = x\n\
             open_for = 1\n",
        )
        .expect_err("three errors");
        let lines: Vec<usize> = err.0.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 3, 5, 6]);
        let shown = err.to_string();
        assert_eq!(shown.lines().count(), 4, "{shown}");
        assert!(shown.lines().all(|l| l.starts_with("cfg:")), "{shown}");
    }

    #[test]
    fn settings_of_a_bad_stanza_are_not_reported_again() {
        let err = parse_text("[a b]\nhost = x\nport = 1\n").expect_err("errors");
        let lines: Vec<usize> = err.0.iter().map(|e| e.line).collect();
        // The bad header, and the unknown key; `host` is not "outside any stanza".
        assert_eq!(lines, [1, 3]);
    }

    #[test]
    fn tilde_without_home_is_an_error() {
        let services = db();
        let err = parse(
            "[a]\nkey = ~/k\n",
            &ParseContext {
                source: "cfg",
                base_dir: Path::new("/"),
                home: None,
                services: &services,
            },
        )
        .expect_err("no home");
        assert!(err.to_string().contains("$HOME is not set"), "{err}");
    }

    #[test]
    fn which_file() {
        let defaults = [
            PathBuf::from("/home/u/.config/knock-spa/config"),
            PathBuf::from("/home/u/.knock/config"),
        ];
        let none = |_: &Path| false;
        let legacy = |p: &Path| p == Path::new("/home/u/.knock/config");
        let all = |_: &Path| true;
        assert_eq!(
            locate(Some(Path::new("/f")), Some("/e".into()), &defaults, all),
            Some(ConfigSource::Flag("/f".into()))
        );
        assert_eq!(
            locate(None, Some("/e".into()), &defaults, all),
            Some(ConfigSource::Env("/e".into()))
        );
        assert_eq!(
            locate(None, Some("".into()), &defaults, all),
            Some(ConfigSource::Default(defaults[0].clone())),
            "the XDG file first"
        );
        assert_eq!(
            locate(None, None, &defaults, legacy),
            Some(ConfigSource::Default(defaults[1].clone()))
        );
        assert_eq!(locate(None, None, &defaults, none), None);
        assert_eq!(locate(None, None, &[], all), None);
    }

    #[test]
    fn family_key() {
        let c = parse_text("[a]\nfamily = both\n[b]\nfamily = v6\n[c]\nfamily = auto\n")
            .expect("valid");
        let f: Vec<_> = c.stanzas.iter().map(|s| s.family).collect();
        assert_eq!(f, [Some(Family::Both), Some(Family::V6), Some(Family::Any)]);
        let err = parse_text("[a]\nfamily = ipv4\n")
            .expect_err("bad family")
            .to_string();
        assert!(
            err.contains("cfg:2: family: `ipv4` is not auto, both, v4 or v6"),
            "{err}"
        );
    }

    #[test]
    fn near_stanza_names() {
        let c = parse_text("[gw]\n[home-router]\n[Build]\n").expect("valid");
        assert_eq!(c.suggest("gww"), Some("gw"));
        assert_eq!(c.suggest("wg"), Some("gw"), "a swap is one edit");
        assert_eq!(c.suggest("GW"), Some("gw"));
        assert_eq!(c.suggest("build"), Some("Build"));
        assert_eq!(c.suggest("home-ruoter"), Some("home-router"));
        assert_eq!(
            c.suggest("hme-ruoter"),
            Some("home-router"),
            "two edits, long name"
        );
        assert_eq!(c.suggest("gwxy"), None, "two edits, short name");
        assert_eq!(c.suggest("gw"), None, "a stanza itself");
        assert_eq!(c.suggest("gw.example.org"), None);
        assert_eq!(c.suggest(""), None);
    }
}
