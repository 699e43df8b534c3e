//! `knock-spad keys list|add|revoke`: the SPA keys of the configuration, managed without
//! opening an editor.
//!
//! - `list` prints door, key name, public key id and allowed ports for every key (inline
//!   `Keys` and `KeyFile`s); never a secret.
//! - `add NAME` takes the `Keys = NAME:BASE64` line `knock-spa keygen` prints (or a client
//!   keyfile) and adds the key to the door: to the door's first `KeyFile` when it has one,
//!   else as a `Keys =` line after the door's last one.
//! - `revoke NAME` removes the key from the door (from every SPA door when no `--door` is
//!   given): its entry in a `Keys` line (the line goes when it was the only one) and its line
//!   in the door's key files.
//!
//! Edits touch only the lines concerned, so comments and layout stay. The result is checked
//! with the loader the daemon and `check` use, before anything is replaced: the edited texts
//! are written to temporary files next to the originals (same mode, so permission checks
//! apply alike), a temporary copy of the configuration points its `KeyFile` lines at them, and
//! `load::load` must accept it; its messages name the real files. Only then is each file
//! replaced atomically (`replace`, through [`knock_keys::atomic`]). A running daemon is then sent SIGHUP.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use knock_keys::public::{ClientPublic, KIND_PUBLIC};
use knock_keys::KIND_SHARED;
use knock_keys::{concat, valid_name, NamedKey};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::cmd::status::table;
use crate::load::{self, LoadError, LoadErrorKind};
use crate::store::status;
use knock_keys::atomic::{self, TempFile};
use knock_shared::located::Located;

/// Why a `keys` command failed.
#[derive(Debug)]
pub enum KeysError {
    /// The configuration (as it is, or as it would be after the edit) is invalid: every
    /// problem, `FILE:LINE: message`. Exit 2.
    Invalid(Vec<LoadError>),
    /// A usage problem (unknown door, unknown key, bad key line). Exit 2.
    Usage(String),
    /// Reading or writing failed. Exit 1.
    Io(String),
}

impl std::fmt::Display for KeysError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeysError::Invalid(errs) => {
                let lines: Vec<String> = errs.iter().map(ToString::to_string).collect();
                f.write_str(&lines.join("\n"))
            }
            KeysError::Usage(m) | KeysError::Io(m) => f.write_str(m),
        }
    }
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> KeysError {
    KeysError::Io(format!("{}: {e}", path.display()))
}

/// One key as `list` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyEntry {
    /// Door name.
    pub door: String,
    /// Key name.
    pub name: String,
    /// Public key id, hex (for a public key, its display id, never sent).
    pub id: String,
    /// `shared-secret` (`Keys`, `KeyFile`) or `public-key` (`PublicKeys`).
    pub kind: &'static str,
    /// The door's `Allow_Ports`.
    pub ports: Vec<String>,
    /// `FILE:LINE` where the key is.
    pub source: String,
}

fn load(config: &Path) -> Result<load::LoadedConfig, KeysError> {
    load::read(config).map_err(KeysError::Invalid)
}

fn spa_door_names(cfg: &knock_shared::config::Config) -> Vec<String> {
    cfg.doors
        .iter()
        .filter(|d| d.spa().is_some())
        .map(|d| d.name.clone())
        .collect()
}

/// Checks `--door`: it must name an SPA door.
fn check_door(cfg: &knock_shared::config::Config, door: &str) -> Result<(), KeysError> {
    match cfg.door(door) {
        Some(d) if d.spa().is_some() => Ok(()),
        Some(_) => Err(KeysError::Usage(format!(
            "door [{door}] is a knock-sequence door; SPA doors: {}",
            spa_door_names(cfg).join(", ")
        ))),
        None => Err(KeysError::Usage(format!(
            "no door [{door}]; SPA doors: {}",
            spa_door_names(cfg).join(", ")
        ))),
    }
}

/// Every key of every SPA door (or of `door`), in file order.
pub fn list(config: &Path, door: Option<&str>) -> Result<Vec<KeyEntry>, KeysError> {
    let rt = load(config)?;
    if let Some(d) = door {
        check_door(&rt.config, d)?;
    }
    let mut out = Vec::new();
    for d in &rt.config.doors {
        let Some(spa) = d.spa() else { continue };
        if door.is_some_and(|want| want != d.name) {
            continue;
        }
        let ports: Vec<String> = spa.allow_ports.iter().map(|p| p.to_string()).collect();
        let mut push = |name: &str, id: String, kind: &'static str, source: String| {
            out.push(KeyEntry {
                door: d.name.clone(),
                name: name.to_owned(),
                id,
                kind,
                ports: ports.clone(),
                source,
            });
        };
        let shared = |key: &NamedKey| (key.name().to_owned(), key.derive().id().to_string());
        for (line, key) in &spa.keys {
            let (name, id) = shared(key);
            push(
                &name,
                id,
                KIND_SHARED,
                format!("{}:{line}", config.display()),
            );
        }
        for (line, key) in &spa.public_keys {
            let source = format!("{}:{line}", config.display());
            push(key.name(), key.id().to_string(), KIND_PUBLIC, source);
        }
        for (_, file) in &spa.key_files {
            let path = load::resolve(config, file);
            let keys = load::read_key_file(&path).map_err(KeysError::Invalid)?;
            for (line, key) in &keys {
                let (name, id) = shared(key);
                push(&name, id, KIND_SHARED, format!("{}:{line}", path.display()));
            }
        }
    }
    Ok(out)
}

/// `list` as a table.
pub fn render_list(entries: &[KeyEntry]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.door.clone(),
                e.name.clone(),
                e.id.clone(),
                e.kind.to_owned(),
                e.ports.join(","),
                e.source.clone(),
            ]
        })
        .collect();
    table(&["DOOR", "KEY", "KEY ID", "KIND", "PORTS", "SOURCE"], &rows)
}

// ---------------------------------------------------------------------------------------------
// Reading the key to add
// ---------------------------------------------------------------------------------------------

/// The most `--from-line -` reads from standard input.
const STDIN_LIMIT: usize = 64 * 1024;

/// Parses what `knock-spa keygen` prints for the server: `Keys = NAME:BASE64` (or just
/// `NAME:BASE64`). `-` reads it from standard input, where comment lines are skipped.
pub fn key_from_line(arg: &str) -> Result<GivenKey, KeysError> {
    let text = if arg == "-" {
        // Into a buffer reserved once, so a growing one leaves no copy behind; a key line is
        // well under a kilobyte.
        let mut s = Zeroizing::new(String::with_capacity(STDIN_LIMIT + 1));
        let mut stdin = std::io::Read::take(std::io::stdin().lock(), STDIN_LIMIT as u64 + 1);
        std::io::Read::read_to_string(&mut stdin, &mut s)
            .map_err(|e| KeysError::Io(format!("standard input: {e}")))?;
        if s.len() > STDIN_LIMIT {
            return Err(KeysError::Usage(format!(
                "--from-line -: more than {STDIN_LIMIT} bytes on standard input; expected one \
                 `Keys = NAME:BASE64` line"
            )));
        }
        s
    } else {
        Zeroizing::new(arg.to_owned())
    };
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let [line] = lines.as_slice() else {
        return Err(KeysError::Usage(format!(
            "--from-line: expected one `Keys = NAME:BASE64` line, got {}",
            lines.len()
        )));
    };
    let value =
        match line.split_once('=') {
            Some((k, v)) if k.trim().eq_ignore_ascii_case("keys") => v.trim(),
            Some((k, v)) if k.trim().eq_ignore_ascii_case("publickeys") => {
                if v.contains(',') {
                    return Err(KeysError::Usage(
                        "--from-line: one key at a time (the value holds a comma)".to_owned(),
                    ));
                }
                return ClientPublic::from_inline(v.trim())
                    .map(GivenKey::Public)
                    .map_err(|e| KeysError::Usage(format!("--from-line: {e}")));
            }
            // A bare `NAME:BASE64`: that `=` is base64 padding.
            Some((k, _)) if k.contains(':') => line,
            Some(_) => return Err(KeysError::Usage(
                "--from-line: expected `Keys = NAME:BASE64` (the line `knock-spa keygen` prints)"
                    .to_owned(),
            )),
            None => line,
        };
    if value.contains(',') {
        return Err(KeysError::Usage(
            "--from-line: one key at a time (the value holds a comma)".to_owned(),
        ));
    }
    // Messages of `from_inline` never show the secret.
    NamedKey::from_inline(value)
        .map(GivenKey::Shared)
        .map_err(|e| KeysError::Usage(format!("--from-line: {e}")))
}

/// A key to add: a shared secret (`Keys`) or a client's public key (`PublicKeys`).
#[derive(Debug)]
pub enum GivenKey {
    /// From `Keys = NAME:BASE64` or a client keyfile.
    Shared(NamedKey),
    /// From `PublicKeys = NAME:BASE64` (`knock-spa keygen --public-key`).
    Public(ClientPublic),
}

impl GivenKey {
    /// The name the key was made with.
    pub fn name(&self) -> &str {
        match self {
            GivenKey::Shared(k) => k.name(),
            GivenKey::Public(k) => k.name(),
        }
    }

    /// The same key under another name.
    pub fn renamed(&self, name: &str) -> Result<GivenKey, KeysError> {
        let usage = |e: knock_keys::ParseProblem| KeysError::Usage(e.to_string());
        match self {
            GivenKey::Shared(k) => NamedKey::new(name, k.master().clone())
                .map(GivenKey::Shared)
                .map_err(usage),
            GivenKey::Public(k) => {
                let inline = k.to_inline();
                let value = inline.split_once(':').map_or("", |(_, v)| v);
                ClientPublic::from_inline(&format!("{name}:{value}"))
                    .map(GivenKey::Public)
                    .map_err(usage)
            }
        }
    }
}

/// Reads a client keyfile (`name =` / `secret =`; must be mode 0600).
pub fn key_from_file(path: &Path) -> Result<NamedKey, KeysError> {
    NamedKey::load(path).map_err(|e| KeysError::Usage(format!("--from-file: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Line editing
// ---------------------------------------------------------------------------------------------

/// A file's text as lines, each with its line ending.
#[derive(Debug)]
struct Lines(Vec<Zeroizing<String>>);

impl Lines {
    fn new(text: &str) -> Self {
        Self(
            text.split_inclusive('\n')
                .map(|l| Zeroizing::new(l.to_owned()))
                .collect(),
        )
    }

    fn text(&self) -> Zeroizing<String> {
        let parts: Vec<&str> = self.0.iter().map(|l| l.as_str()).collect();
        concat(&parts)
    }
}

/// The line without its ending, and the ending.
fn split_ending(line: &str) -> (&str, &str) {
    let body = line.trim_end_matches(['\n', '\r']);
    (body, &line[body.len()..])
}

/// `[name]` on a line.
fn section_name(line: &str) -> Option<&str> {
    let t = line.trim_start_matches('\u{feff}').trim();
    (t.len() >= 2 && t.starts_with('[') && t.ends_with(']')).then(|| &t[1..t.len() - 1])
}

/// The directive of a line (lower case) and the byte offset of its `=`.
fn directive(line: &str) -> Option<(String, usize)> {
    let t = line.trim_start_matches('\u{feff}').trim_start();
    if t.is_empty() || t.starts_with('#') || section_name(line).is_some() {
        return None;
    }
    let eq = line.find('=')?;
    Some((
        line[..eq]
            .trim_start_matches('\u{feff}')
            .trim()
            .to_ascii_lowercase(),
        eq,
    ))
}

/// Line indexes `[header, end)` of the door whose header is on (1-based) `header_line`.
fn door_range(lines: &Lines, header_line: usize) -> (usize, usize) {
    let start = header_line.saturating_sub(1);
    let end = (start + 1..lines.0.len())
        .find(|&i| section_name(&lines.0[i]).is_some())
        .unwrap_or(lines.0.len());
    (start, end)
}

/// Removes key `name` from the `Keys` and `PublicKeys` lines in `[start, end)`. Returns how many were removed.
fn remove_inline(lines: &mut Lines, (start, end): (usize, usize), name: &str) -> usize {
    let mut removed = 0;
    let mut i = start;
    let mut end = end;
    while i < end {
        let Some((d, eq)) = directive(&lines.0[i]) else {
            i += 1;
            continue;
        };
        if d != "keys" && d != "publickeys" {
            i += 1;
            continue;
        }
        let line = lines.0[i].clone();
        let (body, ending) = split_ending(&line);
        let entries: Vec<&str> = body[eq + 1..].split(',').map(str::trim).collect();
        let kept: Vec<&str> = entries
            .iter()
            .copied()
            .filter(|e| e.split_once(':').map_or(*e, |(n, _)| n).trim() != name)
            .collect();
        if kept.len() == entries.len() {
            i += 1;
            continue;
        }
        removed += entries.len() - kept.len();
        if kept.is_empty() {
            lines.0.remove(i);
            end -= 1;
        } else {
            let kept = Zeroizing::new(kept.join(", "));
            lines.0[i] = concat(&[&body[..eq], "= ", &kept, ending]);
            i += 1;
        }
    }
    removed
}

/// Inserts `DIRECTIVE = NAME:BASE64` (`Keys` or `PublicKeys`) after the door's last line of
/// that directive (or after its header), in the same layout.
fn insert_inline(
    lines: &mut Lines,
    (start, end): (usize, usize),
    directive_name: &str,
    inline: &str,
) {
    let lower = directive_name.to_ascii_lowercase();
    let last_keys = (start..end)
        .rev()
        .find(|&i| directive(&lines.0[i]).is_some_and(|(d, _)| d == lower));
    let new = match last_keys {
        Some(i) => {
            let line = lines.0[i].clone();
            let (body, ending) = split_ending(&line);
            let eq = directive(body).map_or(0, |(_, eq)| eq);
            let ending = if ending.is_empty() { "\n" } else { ending };
            (i + 1, concat(&[&body[..eq], "= ", inline, ending]))
        }
        None => {
            let indent = (start + 1..end)
                .find_map(|i| {
                    directive(&lines.0[i]).map(|_| {
                        let l = &lines.0[i];
                        l[..l.len() - l.trim_start().len()].to_owned()
                    })
                })
                .unwrap_or_else(|| "    ".to_owned());
            (
                start + 1,
                concat(&[&indent, directive_name, " = ", inline, "\n"]),
            )
        }
    };
    // The line before the insertion point must end with a newline.
    if let Some(prev) = lines.0.get_mut(new.0 - 1) {
        if !prev.ends_with('\n') {
            *prev = concat(&[prev, "\n"]);
        }
    }
    lines.0.insert(new.0, new.1);
}

/// The key name of a key-file line, if it is a key line.
fn key_file_name(line: &str) -> Option<&str> {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') {
        return None;
    }
    t.split_once(':').map(|(n, _)| n.trim())
}

// ---------------------------------------------------------------------------------------------
// Planning, checking and writing an edit
// ---------------------------------------------------------------------------------------------

/// A file to rewrite: where, what it held, what it will hold.
#[derive(Debug)]
struct FileEdit {
    /// As the configuration names it (resolved against the configuration's directory).
    path: PathBuf,
    old: Zeroizing<Vec<u8>>,
    new: Zeroizing<String>,
}

fn read_text(path: &Path) -> Result<Zeroizing<Vec<u8>>, KeysError> {
    fs::read(path)
        .map(Zeroizing::new)
        .map_err(|e| io_err(path, e))
}

fn as_text(path: &Path, bytes: &[u8]) -> Result<Zeroizing<String>, KeysError> {
    std::str::from_utf8(bytes)
        .map(|s| Zeroizing::new(s.to_owned()))
        .map_err(|_| KeysError::Io(format!("{}: not UTF-8 text", path.display())))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Checks the configuration as it would be after `edits` with the daemon's loader, without
/// touching the real files. `config_edit` is the new configuration text (or `None`: as is).
fn validate(config: &Path, config_text: &str, key_files: &[&FileEdit]) -> Result<(), KeysError> {
    let io = |p: &Path, e: std::io::Error| io_err(p, e);
    // The new key files, next to the real ones, with their mode.
    let mut temps: Vec<(PathBuf, TempFile)> = Vec::new();
    for kf in key_files {
        let name = kf
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let t = TempFile::create(
            atomic::parent_dir(&kf.path),
            &name,
            "check",
            kf.new.as_bytes(),
        )
        .map_err(|e| io(&kf.path, e))?;
        let mode = fs::metadata(&kf.path)
            .map_err(|e| io(&kf.path, e))?
            .permissions()
            .mode();
        fs::set_permissions(t.path(), fs::Permissions::from_mode(mode & 0o7777))
            .map_err(|e| io(t.path(), e))?;
        temps.push((kf.path.clone(), t));
    }
    // The configuration with its KeyFile lines pointing at them (line numbers unchanged).
    let mut lines = Lines::new(config_text);
    for l in lines.0.iter_mut() {
        let Some((d, eq)) = directive(l) else {
            continue;
        };
        if d != "keyfile" {
            continue;
        }
        let (body, ending) = split_ending(l);
        let target = load::resolve(config, body[eq + 1..].trim());
        if let Some((_, t)) = temps.iter().find(|(p, _)| same_file(p, &target)) {
            let abs = std::path::absolute(t.path()).map_err(|e| io(t.path(), e))?;
            let new = format!("{}= {}{ending}", &body[..eq], abs.display());
            *l = Zeroizing::new(new);
        }
    }
    let name = config
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp_config = TempFile::create(
        atomic::parent_dir(config),
        &name,
        "check",
        lines.text().as_bytes(),
    )
    .map_err(|e| io(config, e))?;
    // The copy is in the configuration's directory, so relative paths in it resolve alike.
    let checked = tmp_config.path().to_owned();
    match load::read(&checked) {
        Ok(_) => Ok(()),
        Err(mut errs) => {
            // Name the real files, not the temporary copies the check read.
            let copies: Vec<(PathBuf, PathBuf)> = temps
                .iter()
                .filter_map(|(real, t)| Some((std::path::absolute(t.path()).ok()?, real.clone())))
                .chain([(checked.clone(), config.to_owned())])
                .collect();
            let rename = |p: &Path| {
                copies
                    .iter()
                    .find(|(copy, _)| copy == p)
                    .map(|(_, real)| real.clone())
            };
            for e in &mut errs {
                LoadErrorKind::rename_paths(e, &rename);
            }
            Err(KeysError::Invalid(errs))
        }
    }
}

/// What an edit did, for the user.
#[derive(Debug, Default)]
pub struct Outcome {
    /// One line per change.
    pub changes: Vec<String>,
    /// Notes (shared key files and the like).
    pub notes: Vec<String>,
}

fn apply(
    config: &Path,
    config_old: &[u8],
    config_new: &Zeroizing<String>,
    key_files: &[FileEdit],
) -> Result<(), KeysError> {
    refuse_exposed(config, config_new, key_files)?;
    let refs: Vec<&FileEdit> = key_files.iter().collect();
    validate(config, config_new, &refs)?;
    if config_old != config_new.as_bytes() {
        replace(config, config_old, config_new.as_bytes()).map_err(|e| io_err(config, e))?;
    }
    for kf in key_files {
        replace(&kf.path, &kf.old, kf.new.as_bytes()).map_err(|e| io_err(&kf.path, e))?;
    }
    Ok(())
}

/// Refuses, before anything is written (the temporary copies [`validate`] checks included), an
/// edit that would leave a secret in a file the loader refuses to read secrets from: the key
/// files it rewrites, and the configuration when its new text has inline keys. The check is
/// the loader's ([`load::open_private`]), on the real files, with the loader's messages (and
/// the `chmod`/`chown` hint).
fn refuse_exposed(
    config: &Path,
    config_new: &str,
    key_files: &[FileEdit],
) -> Result<(), KeysError> {
    let mut errors = Vec::new();
    if let Some(line) = load::inline_keys_line(&parse_config(config, config_new)?) {
        if let Err(e) = load::open_private(config) {
            errors.push(Located::at_line(line, e).in_file(config));
        }
    }
    for kf in key_files {
        if let Err(e) = load::open_private(&kf.path) {
            errors.push(Located::new(e).in_file(&kf.path));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(KeysError::Invalid(errors))
    }
}

/// Replaces `path` (resolved through symlinks) with `contents`, keeping its mode and owner.
/// Refuses, leaving it untouched, when its contents are no longer `expected` (someone else
/// edited it since it was read).
fn replace(path: &Path, expected: &[u8], contents: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let path = fs::canonicalize(path)?;
    let meta = fs::metadata(&path)?;
    let opts = atomic::Options {
        mode: meta.mode() & 0o7777,
        owner: Some((meta.uid(), meta.gid())),
        replace: atomic::Replace::IfUnchanged(expected),
        durable: true,
    };
    atomic::write(&path, contents, &opts)
}

/// Parses the configuration text of `config`; errors as `FILE:LINE: message`.
fn parse_config(config: &Path, text: &str) -> Result<knock_shared::config::Config, KeysError> {
    knock_shared::config::parse_str(text).map_err(|errs| {
        KeysError::Invalid(
            errs.into_iter()
                .map(|e| load::parse_error(config, e))
                .collect(),
        )
    })
}

/// Adds `key` to `door` (the only SPA door when `None`).
pub fn add(config: &Path, door: Option<&str>, given: &GivenKey) -> Result<Outcome, KeysError> {
    let old = read_text(config)?;
    let text = as_text(config, &old)?;
    let cfg = parse_config(config, &text)?;
    let door = match door {
        Some(d) => {
            check_door(&cfg, d)?;
            d.to_owned()
        }
        None => match spa_door_names(&cfg).as_slice() {
            [one] => one.clone(),
            [] => return Err(KeysError::Usage("the configuration has no SPA door".into())),
            many => {
                return Err(KeysError::Usage(format!(
                    "several SPA doors ({}): say which with --door",
                    many.join(", ")
                )))
            }
        },
    };
    // A name already in the door: refuse with where it is (the loader would refuse too, but
    // less helpfully when the other one is in a key file).
    if let Ok(entries) = list(config, Some(&door)) {
        if let Some(e) = entries.iter().find(|e| e.name == given.name()) {
            return Err(KeysError::Usage(format!(
                "door [{door}] already has a key `{}` ({}); revoke it first or choose another name",
                e.name, e.source
            )));
        }
    }
    let Some(d) = cfg.door(&door) else {
        return Err(KeysError::Usage(format!("no door [{door}]")));
    };
    let spa = d
        .spa()
        .ok_or_else(|| KeysError::Usage(format!("[{door}] is not an SPA door")))?;
    let mut out = Outcome::default();
    let key = match given {
        GivenKey::Shared(k) => k,
        GivenKey::Public(k) => {
            // Public keys go on a `PublicKeys` line of the configuration, never into a key
            // file (those hold shared secrets).
            let mut lines = Lines::new(&text);
            let range = door_range(&lines, d.line);
            insert_inline(&mut lines, range, "PublicKeys", &k.to_inline());
            apply(config, &old, &lines.text(), &[])?;
            out.changes.push(format!(
                "added public key `{}` (key id {}) to door [{door}] in {}",
                k.name(),
                k.id(),
                config.display()
            ));
            return Ok(out);
        }
    };
    let inline = key.to_inline();
    let id = key.derive().id();
    if let Some((_, file)) = spa.key_files.first() {
        let path = load::resolve(config, file);
        let kold = read_text(&path)?;
        let ktext = as_text(&path, &kold)?;
        let sep = if ktext.is_empty() || ktext.ends_with('\n') {
            ""
        } else {
            "\n"
        };
        let new = concat(&[&ktext, sep, &inline, "\n"]);
        let edit = FileEdit {
            path: path.clone(),
            old: kold,
            new,
        };
        apply(config, &old, &text, std::slice::from_ref(&edit))?;
        out.changes.push(format!(
            "added key `{}` (key id {id}) to door [{door}] in {}",
            key.name(),
            path.display()
        ));
    } else {
        let mut lines = Lines::new(&text);
        let range = door_range(&lines, d.line);
        insert_inline(&mut lines, range, "Keys", &inline);
        let new = lines.text();
        apply(config, &old, &new, &[])?;
        out.changes.push(format!(
            "added key `{}` (key id {id}) to door [{door}] in {}",
            key.name(),
            config.display()
        ));
    }
    Ok(out)
}

/// Removes key `name` from `door` (every SPA door when `None`).
pub fn revoke(config: &Path, door: Option<&str>, name: &str) -> Result<Outcome, KeysError> {
    if !valid_name(name) {
        return Err(KeysError::Usage(format!(
            "invalid key name `{name}`: use 1 to 64 of A-Z a-z 0-9 . _ @ -"
        )));
    }
    let old = read_text(config)?;
    let text = as_text(config, &old)?;
    let cfg = parse_config(config, &text)?;
    if let Some(d) = door {
        check_door(&cfg, d)?;
    }
    let mut out = Outcome::default();
    let mut lines = Lines::new(&text);
    let mut edits: Vec<FileEdit> = Vec::new();
    // Doors from the last to the first, so removing lines does not move a door still to do.
    let doors: Vec<&knock_shared::config::Door> = cfg
        .doors
        .iter()
        .filter(|d| d.spa().is_some() && door.is_none_or(|want| want == d.name))
        .collect();
    for d in doors.iter().rev() {
        let range = door_range(&lines, d.line);
        let n = remove_inline(&mut lines, range, name);
        if n > 0 {
            out.changes.push(format!(
                "removed key `{name}` from door [{}] in {}",
                d.name,
                config.display()
            ));
        }
    }
    out.changes.reverse();
    for d in &doors {
        let Some(spa) = d.spa() else { continue };
        for (_, file) in &spa.key_files {
            let path = load::resolve(config, file);
            if edits.iter().any(|e| same_file(&e.path, &path)) {
                continue;
            }
            let kold = read_text(&path)?;
            let ktext = as_text(&path, &kold)?;
            let mut klines = Lines::new(&ktext);
            let before = klines.0.len();
            klines.0.retain(|l| key_file_name(l) != Some(name));
            if klines.0.len() == before {
                continue;
            }
            out.changes.push(format!(
                "removed key `{name}` from {} (KeyFile of door [{}])",
                path.display(),
                d.name
            ));
            edits.push(FileEdit {
                path,
                old: kold,
                new: klines.text(),
            });
        }
    }
    if out.changes.is_empty() {
        return Err(KeysError::Usage(match door {
            Some(d) => format!("door [{d}] has no key `{name}`"),
            None => format!("no SPA door has a key `{name}`"),
        }));
    }
    let new = lines.text();
    apply(config, &old, &new, &edits)?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Telling the daemon
// ---------------------------------------------------------------------------------------------

/// How long to wait for the daemon to confirm a reload in its status snapshot.
pub const RELOAD_WAIT: Duration = Duration::from_secs(5);

fn sighup(pid: u32) -> std::io::Result<()> {
    let p = libc::pid_t::try_from(pid).map_err(std::io::Error::other)?;
    if p <= 0 {
        return Err(std::io::Error::other("bad pid"));
    }
    // SAFETY: kill() with a positive pid and SIGHUP has no memory-safety preconditions.
    if unsafe { libc::kill(p, libc::SIGHUP) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Sends SIGHUP to the daemon running `config`, found by its status snapshot in `state_dir`
/// or else by `pidfile`, and waits for it to confirm. Returns what to tell the user.
pub fn reload_daemon(config: &Path, state_dir: &Path, pidfile: Option<&Path>) -> String {
    let want = fs::canonicalize(config).unwrap_or_else(|_| config.to_owned());
    if let Some(snap) = status::running_daemon(state_dir) {
        if Path::new(&snap.config) != want {
            return format!(
                "the knock-spad running from {} (pid {}) uses {}, not {}: not signalled",
                state_dir.display(),
                snap.pid,
                snap.config,
                want.display()
            );
        }
        if let Err(e) = sighup(snap.pid) {
            return format!("cannot send SIGHUP to knock-spad (pid {}): {e}", snap.pid);
        }
        let deadline = Instant::now() + RELOAD_WAIT;
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            if let Ok(now) = status::read(state_dir) {
                if now.pid == snap.pid && now.reloads > snap.reloads {
                    return format!(
                        "knock-spad (pid {}) reloaded its configuration: {} door(s), {} SPA key(s)",
                        now.pid, now.doors, now.keys
                    );
                }
            }
        }
        return format!(
            "sent SIGHUP to knock-spad (pid {}), which did not confirm a reload within {} s: \
             check its log",
            snap.pid,
            RELOAD_WAIT.as_secs()
        );
    }
    if let Some(pf) = pidfile {
        if let Some(pid) = fs::read_to_string(pf)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        {
            if status::pid_alive(pid) && status::is_knock_spad(pid) {
                return match sighup(pid) {
                    Ok(()) => format!(
                        "sent SIGHUP to knock-spad (pid {pid}, from {}); its log confirms the reload",
                        pf.display()
                    ),
                    Err(e) => format!("cannot send SIGHUP to knock-spad (pid {pid}): {e}"),
                };
            }
        }
    }
    "no running knock-spad found for this configuration: the change takes effect when it starts"
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, b: u8) -> NamedKey {
        NamedKey::new(name, knock_keys::MasterKey::from_bytes([b; 32])).expect("name")
    }

    #[test]
    fn inline_removal_keeps_layout() {
        let a = key("alice", 1).to_inline();
        let b = key("bob", 2).to_inline();
        let text = format!(
            "# top\n[options]\n    ServerName = x\n\n[spa]\n    # keys\n    Keys        = {}, {}\n    Allow_Ports = 22\n[other]\n    Keys = {}\n",
            a.as_str(),
            b.as_str(),
            a.as_str()
        );
        let mut lines = Lines::new(&text);
        let n = {
            let r = door_range(&lines, 5);
            remove_inline(&mut lines, r, "alice")
        };
        assert_eq!(n, 1);
        let out = lines.text();
        assert!(out.contains(&format!("    Keys        = {}\n", b.as_str())));
        assert!(out.contains("# keys\n"), "comments stay");
        // The other door keeps its alice.
        assert!(out.contains(&format!("[other]\n    Keys = {}\n", a.as_str())));
        // Removing the last entry removes the line.
        let n = {
            let r = door_range(&lines, 5);
            remove_inline(&mut lines, r, "bob")
        };
        assert_eq!(n, 1);
        assert!(!lines.text().contains(b.as_str()));
        assert!(lines.text().contains("    # keys\n    Allow_Ports = 22\n"));
    }

    #[test]
    fn inline_insertion_follows_the_last_keys_line() {
        let a = key("alice", 1).to_inline();
        let text = format!("[spa]\n  keys   = {}\n  allow_ports = 22", a.as_str());
        let mut lines = Lines::new(&text);
        {
            let r = door_range(&lines, 1);
            insert_inline(&mut lines, r, "Keys", "carol:XYZ")
        }
        assert_eq!(
            lines.text().as_str(),
            format!(
                "[spa]\n  keys   = {}\n  keys   = carol:XYZ\n  allow_ports = 22",
                a.as_str()
            )
        );
        // No Keys line: after the header, indented like the door's directives.
        let mut lines = Lines::new("[spa]\n\tKeyFile = k\n");
        {
            let r = door_range(&lines, 1);
            insert_inline(&mut lines, r, "Keys", "carol:XYZ")
        }
        assert_eq!(
            lines.text().as_str(),
            "[spa]\n\tKeys = carol:XYZ\n\tKeyFile = k\n"
        );
    }

    #[test]
    fn key_lines_are_parsed_without_showing_secrets() {
        let k = key("alice", 3);
        let line = format!("Keys = {}", k.to_inline().as_str());
        let parsed = key_from_line(&line).expect("parses");
        assert_eq!(parsed.name(), "alice");
        let GivenKey::Shared(parsed) = parsed else {
            panic!("a Keys line is a shared secret");
        };
        assert_eq!(parsed.derive().id(), k.derive().id());
        let pk = knock_keys::public::SigningKey::from_seed("phone", [4; 32]).expect("key");
        let public = key_from_line(&format!("PublicKeys = {}", pk.public().to_inline()))
            .expect("a PublicKeys line parses");
        assert!(matches!(&public, GivenKey::Public(p) if p.id() == pk.public().id()));
        assert_eq!(public.renamed("tablet").expect("rename").name(), "tablet");
        let bare = key_from_line(k.to_inline().as_str()).expect("bare");
        assert_eq!(bare.name(), "alice");
        let secret = k.master().to_base64();
        for bad in [
            format!("Keys = alice:{}x", secret.as_str()),
            format!("Keys = a:{s}, b:{s}", s = secret.as_str()),
            format!("Key = alice:{}", secret.as_str()),
            String::new(),
        ] {
            let e = key_from_line(&bad).expect_err("refused").to_string();
            assert!(!e.contains(secret.as_str()), "secret shown: {e}");
        }
    }

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
