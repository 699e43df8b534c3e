//! Loading a configuration file into what the daemon runs: the parsed doors, the SPA
//! verifier with every key, and the knock-sequence door specs.
//!
//! Two phases, like the config module itself: `knock_shared::config::parse_str` checks the
//! text (no I/O); this module then reads the files it names (key files, one-time sequence
//! files) and reports every problem as a typed [`LoadError`] with its file and line
//! (`FILE:LINE: message`). Files that hold secrets (key files, one-time sequence files, and
//! the configuration itself when it has inline `Keys`) must be regular files with no group or
//! other permission bit, owned by root or by the daemon's user; each file is opened once and
//! checked and read through that one descriptor ([`knock_keys::private`]), into a buffer
//! wiped on drop. Nothing here starts anything:
//! a configuration either loads whole or not at all, so a bad file never half-configures the
//! daemon, at start or on SIGHUP.

use std::fs;
use std::path::{Path, PathBuf};

use knock_keys::private::{self, Exposure};
use knock_keys::public::ServerSecret;
use knock_shared::config::{self, Config, Door};
use knock_shared::located::Located;
use knock_shared::types::PortSpec;
use knock_shared::verify::{KeyPolicy, Verifier};
use knock_shared::wire::ServerId;
use zeroize::Zeroizing;

/// A loaded, validated configuration.
#[derive(Debug)]
pub struct LoadedConfig {
    /// The parsed configuration.
    pub config: Config,
    /// Every SPA key of every SPA door; [`Accepted::door`](knock_shared::verify::Accepted)
    /// indexes `config.doors`.
    pub verifier: Verifier,
    /// The server identities in effect (names).
    pub server_names: Vec<String>,
    /// For each knock-sequence door: its index in `config.doors` and its current sequence
    /// (for one-time doors, the first unused line of the file and that line's number).
    pub knock_doors: Vec<KnockDoor>,
}

/// A knock-sequence door as the tracker sees it.
#[derive(Debug, Clone)]
pub struct KnockDoor {
    /// Index in `config.doors`.
    pub door: usize,
    /// The sequence in force.
    pub sequence: Vec<PortSpec>,
    /// For one-time doors: the file and the line the sequence came from.
    pub one_time: Option<(PathBuf, usize)>,
}

/// A problem with the configuration or a file it names, with the file and line it is in.
pub type LoadError = Located<LoadErrorKind>;

/// What is wrong ([`LoadError`] says where).
#[derive(Debug, thiserror::Error)]
pub enum LoadErrorKind {
    /// The `ServerKey` file could not be used (the next error says why).
    #[error("ServerKey {}: cannot use the server key", path.display())]
    ServerKey {
        /// The file.
        path: PathBuf,
    },
    /// The configuration file could not be read.
    #[error("cannot read: {0}")]
    ReadConfig(std::io::Error),
    /// A file the configuration names (a key file, a one-time sequences file) could not be
    /// read or written.
    #[error("{0}")]
    Io(std::io::Error),
    /// What the configuration parser says (it names the directive and the value).
    #[error("{0}")]
    Parse(String),
    /// The configuration, a key file or a one-time sequences file is not a regular file.
    #[error("not a regular file")]
    NotRegularFile,
    /// A file that holds secrets (a key file, a one-time sequences file, a configuration with
    /// inline keys) that group or others can access.
    #[error(
        "permissions {mode:04o} are too open: a file holding keys or one-time sequences must \
         not be accessible by group or others (run: chmod 600 {})",
        path.display()
    )]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A file that holds secrets owned by someone other than root or the daemon's user.
    #[error(
        "owned by uid {uid}: a file holding keys or one-time sequences must be owned by root \
         or by the user knock-spad runs as (uid {daemon}) (run: chown {} {})",
        chown_user(*daemon),
        path.display()
    )]
    NotOwned {
        /// The file.
        path: PathBuf,
        /// Its owner.
        uid: u32,
        /// The daemon's (effective) uid.
        daemon: u32,
    },
    /// A `KeyFile` line whose file has errors (listed after this one).
    #[error("KeyFile {}: see below", path.display())]
    KeyFile {
        /// The key file.
        path: PathBuf,
    },
    /// Two keys of one door with the same key id.
    #[error("door [{door}]: {error}")]
    Key {
        /// The door.
        door: String,
        /// What the verifier said.
        error: knock_shared::verify::AddKeyError,
    },
    /// A `One_Time_Sequences` file with no unused line left.
    #[error("One_Time_Sequences {}: no unused sequence left", path.display())]
    OneTimeUsedUp {
        /// The file.
        path: PathBuf,
    },
    /// The one-time sequence just knocked is no longer an unused line of its file.
    #[error("the sequence just knocked is no longer an unused line of this file (edited?)")]
    OneTimeGone,
    /// A `One_Time_Sequences` file that cannot be read or parsed.
    #[error("{0}")]
    OneTime(Box<LoadError>),
    /// Knock doors with `Capture = udp`.
    #[error("knock-sequence doors need Capture = pcap (a UDP socket cannot see knocks)")]
    KnocksNeedPcap,
    /// SPA keys but no server identity.
    #[error("no ServerName given and the host name is unknown")]
    NoServerName,
    /// Nothing to run.
    #[error("no doors configured")]
    NoDoors,
}

impl LoadErrorKind {
    /// Renames the paths this error names (the file it is in, files named in its message),
    /// for `keys`, which checks an edit on temporary copies and reports the real names.
    pub fn rename_paths(e: &mut LoadError, rename: &impl Fn(&Path) -> Option<PathBuf>) {
        if let Some(new) = e.file.as_deref().and_then(rename) {
            e.file = Some(new);
        }
        match &mut e.error {
            LoadErrorKind::TooOpen { path, .. }
            | LoadErrorKind::NotOwned { path, .. }
            | LoadErrorKind::KeyFile { path }
            | LoadErrorKind::OneTimeUsedUp { path } => {
                if let Some(new) = rename(path) {
                    *path = new;
                }
            }
            LoadErrorKind::OneTime(inner) => Self::rename_paths(inner, rename),
            _ => {}
        }
    }
}

/// A parser error at its line of `file`.
pub fn parse_error(file: &Path, e: config::ConfigError) -> LoadError {
    Located::at_line(e.line, LoadErrorKind::Parse(e.message)).in_file(file)
}

impl LoadedConfig {
    /// Whether door `door` (by name) exists and, for an SPA grant's `key`, still holds a key
    /// of that name: a grant whose door or key a reload removed must end.
    pub fn admits(&self, door: &str, key: &str) -> bool {
        let Some(idx) = self.config.doors.iter().position(|d| d.name == door) else {
            return false;
        };
        key.is_empty() || self.verifier.keys().any(|(k, d)| d == idx && k == key)
    }
}

/// The host name, for the default server identity.
pub fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// A path named in the configuration at `base`: absolute as it is, relative to the
/// configuration file's directory otherwise.
pub fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.parent().unwrap_or(Path::new(".")).join(p)
    }
}

/// The user the daemon runs as (its `User`, else its effective uid): besides root, the one
/// owner a file holding secrets may have. The same rule as for the state directory.
pub fn daemon_uid() -> u32 {
    crate::store::dir::daemon_uid()
}

fn chown_user(uid: u32) -> String {
    if uid == 0 {
        "root".to_owned()
    } else {
        uid.to_string()
    }
}

/// What is wrong with `path`, a file that holds secrets, as `fstat` found it.
fn exposure_error(path: &Path, exposure: Exposure) -> LoadErrorKind {
    let path = path.to_owned();
    match exposure {
        Exposure::TooOpen { mode } => LoadErrorKind::TooOpen { path, mode },
        Exposure::Owner { uid } => LoadErrorKind::NotOwned {
            path,
            uid,
            daemon: daemon_uid(),
        },
    }
}

fn open_error(e: private::ReadError) -> LoadErrorKind {
    match e {
        private::ReadError::NotRegular => LoadErrorKind::NotRegularFile,
        private::ReadError::Io(e) => LoadErrorKind::Io(e),
        _ => LoadErrorKind::Io(std::io::Error::other(e.to_string())),
    }
}

/// Opens a file that holds secrets and checks it on the open descriptor: a regular file, no
/// group or other permission bit, owned by root or [`daemon_uid`]. Every file holding secrets
/// the daemon, `check` and `keys` read or write passes here first.
pub fn open_private(path: &Path) -> Result<private::Opened, LoadErrorKind> {
    let opened = private::open(path).map_err(open_error)?;
    match opened.exposure(daemon_uid()) {
        Some(e) => Err(exposure_error(path, e)),
        None => Ok(opened),
    }
}

/// [`open_private`], then the whole file, read from that descriptor.
fn read_private(path: &Path) -> Result<Zeroizing<Vec<u8>>, LoadError> {
    let at = |kind| Located::new(kind).in_file(path);
    open_private(path)
        .map_err(at)?
        .read()
        .map_err(|e| at(LoadErrorKind::Io(e)))
}

/// The server's X25519 key file (`ServerKey`), through [`open_private`].
pub fn read_server_key(path: &Path) -> Result<ServerSecret, LoadError> {
    let bytes = read_private(path)?;
    let text = text_of(path, &bytes)?;
    ServerSecret::parse_str(text).map_err(|e| {
        let (line, msg) = match e {
            knock_keys::KeyError::Parse { line, what } => (line, what.to_string()),
            other => (1, other.to_string()),
        };
        Located::at_line(line, LoadErrorKind::Parse(msg)).in_file(path)
    })
}

/// The bytes of `path` as text.
fn text_of<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a str, LoadError> {
    std::str::from_utf8(bytes).map_err(|_| {
        let e = std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text");
        Located::new(LoadErrorKind::Io(e)).in_file(path)
    })
}

/// The line of the first inline `Keys` of the configuration: `None` for a configuration
/// without secrets of its own (a pure knockd file, or SPA doors with only `KeyFile`s), which
/// may stay readable by others.
pub fn inline_keys_line(config: &Config) -> Option<usize> {
    config
        .doors
        .iter()
        .filter_map(|d| d.spa())
        .flat_map(|spa| spa.keys.iter().map(|(line, _)| *line))
        .min()
}

/// Reads and checks a configuration file. It is opened once; when it holds inline keys, the
/// mode and owner `fstat` gave for that descriptor must be a key file's (see
/// [`open_private`]), reported at the line of its first `Keys`.
pub fn read(path: &Path) -> Result<LoadedConfig, Vec<LoadError>> {
    let whole = |kind| vec![Located::new(kind).in_file(path)];
    let opened = private::open(path).map_err(|e| {
        whole(match open_error(e) {
            LoadErrorKind::Io(e) => LoadErrorKind::ReadConfig(e),
            other => other,
        })
    })?;
    let exposure = opened.exposure(daemon_uid());
    let bytes = opened
        .read()
        .map_err(|e| whole(LoadErrorKind::ReadConfig(e)))?;
    let text = text_of(path, &bytes).map_err(|e| vec![e])?;
    let config = config::parse_str(text).map_err(|errs| {
        errs.into_iter()
            .map(|e| parse_error(path, e))
            .collect::<Vec<_>>()
    })?;
    let mut errors = Vec::new();
    if let (Some(line), Some(e)) = (inline_keys_line(&config), exposure) {
        errors.push(Located::at_line(line, exposure_error(path, e)).in_file(path));
    }
    build(path, config, errors)
}

fn build(
    path: &Path,
    config: Config,
    mut errors: Vec<LoadError>,
) -> Result<LoadedConfig, Vec<LoadError>> {
    let mut server_names = config.options.server_names.clone();
    if server_names.is_empty() {
        let h = hostname();
        if !h.is_empty() {
            server_names.push(h);
        }
    }
    let ids = server_names
        .iter()
        .map(|n| ServerId::from_name(n))
        .collect();
    let mut verifier = Verifier::new(ids, config.options.spa_window);
    if let Some((line, file)) = &config.options.server_key {
        let kpath = resolve(path, file);
        match read_server_key(&kpath) {
            Ok(key) => verifier.set_server_key(key),
            Err(e) => {
                errors.push(
                    Located::at_line(*line, LoadErrorKind::ServerKey { path: kpath }).in_file(path),
                );
                errors.push(e);
            }
        }
    }
    let mut knock_doors = Vec::new();

    for (idx, door) in config.doors.iter().enumerate() {
        if let Some(spa) = door.spa() {
            let policy = KeyPolicy {
                ports: spa.allow_ports.clone(),
                allow_nat: spa.allow_nat,
            };
            let mut keys: Vec<(PathBuf, usize, knock_keys::NamedKey)> = spa
                .keys
                .iter()
                .map(|(line, k)| (path.to_owned(), *line, k.clone()))
                .collect();
            for (line, file) in &spa.key_files {
                let kpath = resolve(path, file);
                match read_key_file(&kpath) {
                    Ok(list) => keys.extend(list.into_iter().map(|(l, k)| (kpath.clone(), l, k))),
                    Err(mut e) => {
                        errors.push(
                            Located::at_line(*line, LoadErrorKind::KeyFile { path: kpath })
                                .in_file(path),
                        );
                        errors.append(&mut e);
                    }
                }
            }
            for (line, key) in &spa.public_keys {
                if let Err(error) = verifier.add_public_key(key, policy.clone(), idx) {
                    let door = door.name.clone();
                    errors.push(
                        Located::at_line(*line, LoadErrorKind::Key { door, error }).in_file(path),
                    );
                }
            }
            for (file, line, key) in keys {
                if let Err(error) = verifier.add_key(&key, policy.clone(), idx) {
                    let door = door.name.clone();
                    errors.push(
                        Located::at_line(line, LoadErrorKind::Key { door, error }).in_file(&file),
                    );
                }
            }
        }
        if let Some(seq) = door.sequence() {
            match &seq.one_time_file {
                None => knock_doors.push(KnockDoor {
                    door: idx,
                    sequence: seq.sequence.clone(),
                    one_time: None,
                }),
                Some((file, line)) => {
                    let opath = resolve(path, file);
                    match next_one_time(&opath) {
                        Ok(Some((l, s))) => knock_doors.push(KnockDoor {
                            door: idx,
                            sequence: s,
                            one_time: Some((opath, l)),
                        }),
                        Ok(None) => errors.push(
                            Located::at_line(*line, LoadErrorKind::OneTimeUsedUp { path: opath })
                                .in_file(path),
                        ),
                        Err(e) => errors.push(
                            Located::at_line(*line, LoadErrorKind::OneTime(Box::new(e)))
                                .in_file(path),
                        ),
                    }
                }
            }
        }
    }
    if config.options.capture == config::Capture::Udp && !knock_doors.is_empty() {
        errors.push(Located::new(LoadErrorKind::KnocksNeedPcap).in_file(path));
    }
    if !verifier.is_empty() && server_names.is_empty() {
        errors.push(Located::new(LoadErrorKind::NoServerName).in_file(path));
    }
    if config.doors.is_empty() {
        errors.push(Located::new(LoadErrorKind::NoDoors).in_file(path));
    }
    if errors.is_empty() {
        Ok(LoadedConfig {
            config,
            verifier,
            server_names,
            knock_doors,
        })
    } else {
        Err(errors)
    }
}

/// [`read`], with every error printed on stderr and exit status 2 when there are any (for
/// `check` and the daemon's start).
pub fn read_or_report(path: &Path) -> Result<LoadedConfig, std::process::ExitCode> {
    read(path).map_err(|errors| {
        for e in &errors {
            eprintln!("knock-spad: {e}");
        }
        eprintln!(
            "knock-spad: {}: {} error(s); nothing started",
            path.display(),
            errors.len()
        );
        std::process::ExitCode::from(2)
    })
}

/// Reads a keys file (`NAME:BASE64` per line), a file holding secrets ([`open_private`]).
pub fn read_key_file(path: &Path) -> Result<Vec<(usize, knock_keys::NamedKey)>, Vec<LoadError>> {
    let bytes = read_private(path).map_err(|e| vec![e])?;
    let text = text_of(path, &bytes).map_err(|e| vec![e])?;
    config::parse_keys_file(text)
        .map_err(|errs| errs.into_iter().map(|e| parse_error(path, e)).collect())
}

/// The first unused sequence of a one-time file (a file holding secrets, see
/// [`open_private`]), with its line number.
pub fn next_one_time(path: &Path) -> Result<Option<(usize, Vec<PortSpec>)>, LoadError> {
    let bytes = read_private(path)?;
    let seqs = config::parse_one_time_sequences(text_of(path, &bytes)?)
        .map_err(|e| parse_error(path, e))?;
    Ok(seqs.into_iter().next().map(|s| (s.line, s.knocks)))
}

/// Marks the sequence `used` used in a one-time file (a `#` over the first character of the
/// first unused line holding it, as knockd does: found by its content, so a file edited since
/// it was read, lines added or removed above, marks the right line), atomically, keeping the
/// file's owner and mode, and durably; then returns the next unused sequence. An error when
/// the sequence is no longer in the file (the administrator removed it): the caller must not
/// open the door then.
pub fn use_one_time(
    path: &Path,
    used: &[PortSpec],
) -> Result<Option<(usize, Vec<PortSpec>)>, LoadError> {
    let read_error = |e| Located::new(LoadErrorKind::Io(e)).in_file(path);
    let bytes = read_private(path)?;
    let text = text_of(path, &bytes)?;
    let seqs = config::parse_one_time_sequences(text).map_err(|e| parse_error(path, e))?;
    let Some(line) = seqs.iter().find(|s| s.knocks == used).map(|s| s.line) else {
        return Err(Located::new(LoadErrorKind::OneTimeGone).in_file(path));
    };
    let marked = Zeroizing::new(config::mark_used(text, line));
    // The one atomic writer, keeping the file's owner and mode; refused if the file changed
    // since it was read.
    let write = || -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let meta = fs::metadata(path)?;
        let opts = knock_keys::atomic::Options {
            mode: meta.mode() & 0o7777,
            owner: Some((meta.uid(), meta.gid())),
            replace: knock_keys::atomic::Replace::IfUnchanged(text.as_bytes()),
            durable: true,
        };
        knock_keys::atomic::write(path, marked.as_bytes(), &opts)
    };
    write().map_err(read_error)?;
    next_one_time(path)
}

/// Whether a door has anything to run.
pub fn door_summary(door: &Door) -> String {
    match (door.sequence(), door.spa()) {
        (Some(s), _) if s.one_time_file.is_some() => "one-time sequences".to_owned(),
        (Some(s), _) => config::format_sequence(&s.sequence),
        (_, Some(spa)) => format!(
            "spa, ports {}",
            spa.allow_ports
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ),
        _ => String::new(),
    }
}
