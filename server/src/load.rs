//! Loading a configuration file into what the daemon runs: the parsed doors, the SPA
//! verifier with every key, and the knock-sequence door specs.
//!
//! Two phases, like the config module itself: `knock_shared::config::parse_str` checks the
//! text (no I/O); this module then reads the files it names (key files, one-time sequence
//! files) and reports every problem as `FILE:LINE: message`. Nothing here starts anything:
//! a configuration either loads whole or not at all, so a bad file never half-configures the
//! daemon, at start or on SIGHUP.

use std::fs;
use std::path::{Path, PathBuf};

use knock_shared::config::{self, Config, Door};
use knock_shared::types::PortSpec;
use knock_shared::verify::{KeyPolicy, Verifier};
use knock_shared::wire::ServerId;

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

/// A problem with the configuration, already formatted `FILE:LINE: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError(pub String);

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The host name, for the default server identity.
pub fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.parent().unwrap_or(Path::new(".")).join(p)
    }
}

/// Reads and checks a configuration file.
pub fn read(path: &Path) -> Result<LoadedConfig, Vec<LoadError>> {
    let show = path.display();
    let text = fs::read_to_string(path)
        .map_err(|e| vec![LoadError(format!("{show}: cannot read: {e}"))])?;
    let config = config::parse_str(&text).map_err(|errs| {
        errs.into_iter()
            .map(|e| {
                LoadError(format!(
                    "{show}:{e}",
                    e = e.to_string().replacen("line ", "", 1)
                ))
            })
            .collect::<Vec<_>>()
    })?;
    build(path, config)
}

fn build(path: &Path, config: Config) -> Result<LoadedConfig, Vec<LoadError>> {
    let show = path.display().to_string();
    let mut errors = Vec::new();
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
    let mut knock_doors = Vec::new();

    for (idx, door) in config.doors.iter().enumerate() {
        if let Some(spa) = door.spa() {
            let policy = KeyPolicy {
                ports: spa.allow_ports.clone(),
                allow_nat: spa.allow_nat,
            };
            let mut keys: Vec<(String, usize, knock_keys::NamedKey)> = spa
                .keys
                .iter()
                .map(|(line, k)| (show.clone(), *line, k.clone()))
                .collect();
            for (line, file) in &spa.key_files {
                let kpath = resolve(path, file);
                match read_key_file(&kpath) {
                    Ok(list) => keys.extend(
                        list.into_iter()
                            .map(|(l, k)| (kpath.display().to_string(), l, k)),
                    ),
                    Err(mut e) => {
                        errors.push(LoadError(format!(
                            "{show}:{line}: KeyFile {}: see below",
                            kpath.display()
                        )));
                        errors.append(&mut e);
                    }
                }
            }
            for (file, line, key) in keys {
                if let Err(e) = verifier.add_key(&key, policy.clone(), idx) {
                    errors.push(LoadError(format!(
                        "{file}:{line}: door [{}]: {e}",
                        door.name
                    )));
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
                        Ok(None) => errors.push(LoadError(format!(
                            "{show}:{line}: One_Time_Sequences {}: no unused sequence left",
                            opath.display()
                        ))),
                        Err(e) => errors.push(LoadError(format!("{show}:{line}: {e}"))),
                    }
                }
            }
        }
    }
    if config.options.capture == config::Capture::Udp && !knock_doors.is_empty() {
        errors.push(LoadError(format!(
            "{show}: knock-sequence doors need Capture = pcap (a UDP socket cannot see knocks)"
        )));
    }
    if !verifier.is_empty() && server_names.is_empty() {
        errors.push(LoadError(format!(
            "{show}: no ServerName given and the host name is unknown"
        )));
    }
    if config.doors.is_empty() {
        errors.push(LoadError(format!("{show}: no doors configured")));
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

/// Reads a keys file (`NAME:BASE64` per line). Like a keyfile, it must not be readable by
/// group or others.
pub fn read_key_file(path: &Path) -> Result<Vec<(usize, knock_keys::NamedKey)>, Vec<LoadError>> {
    use std::os::unix::fs::MetadataExt;
    let show = path.display();
    let meta = fs::metadata(path).map_err(|e| vec![LoadError(format!("{show}: {e}"))])?;
    if !meta.is_file() {
        return Err(vec![LoadError(format!("{show}: not a regular file"))]);
    }
    if meta.mode() & 0o077 != 0 {
        return Err(vec![LoadError(format!(
            "{show}: permissions {:04o} are too open: keys must not be accessible by group or \
             others (run: chmod 600 {show})",
            meta.mode() & 0o7777
        ))]);
    }
    let text = fs::read_to_string(path).map_err(|e| vec![LoadError(format!("{show}: {e}"))])?;
    let text = zeroize::Zeroizing::new(text);
    config::parse_keys_file(&text).map_err(|errs| {
        errs.into_iter()
            .map(|e| {
                LoadError(format!(
                    "{show}:{e}",
                    e = e.to_string().replacen("line ", "", 1)
                ))
            })
            .collect()
    })
}

/// The first unused sequence of a one-time file, with its line number.
pub fn next_one_time(path: &Path) -> Result<Option<(usize, Vec<PortSpec>)>, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let seqs = config::parse_one_time_sequences(&text).map_err(|e| {
        format!(
            "{}:{}",
            path.display(),
            e.to_string().replacen("line ", "", 1)
        )
    })?;
    Ok(seqs.into_iter().next().map(|s| (s.line, s.knocks)))
}

/// Marks line `line` of a one-time file used (a `#` over its first character, as knockd
/// does), atomically, and returns the next unused sequence.
pub fn use_one_time(path: &Path, line: usize) -> Result<Option<(usize, Vec<PortSpec>)>, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let marked = config::mark_used(&text, line);
    let tmp = path.with_extension("knock-spa-tmp");
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = fs::File::create(&tmp)?;
        f.write_all(marked.as_bytes())?;
        f.sync_all()?;
        if let Ok(meta) = fs::metadata(path) {
            let _ = fs::set_permissions(&tmp, meta.permissions());
        }
        fs::rename(&tmp, path)
    };
    write().map_err(|e| format!("{}: {e}", path.display()))?;
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
