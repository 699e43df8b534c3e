//! Parser, phase 1: what the file says, read line by line.
//!
//! Role: the parser's state and its line reader. Syntax, as knockd's `parseconfig()` reads it:
//!
//! - each line is trimmed; blank lines and lines whose first non-blank character is `#` are
//!   skipped (there are no trailing comments: `#` later in a line is part of the value; a
//!   command's value then drops an unquoted word starting with `#` and the rest, as knockd's
//!   shell did, see `template`);
//! - `[name]` alone on a line starts a section; `[options]` (exactly, lower case) holds the
//!   global options, any other name starts a door; door names are case-sensitive;
//! - `Directive = value`: the directive name is case-insensitive, the value is everything after
//!   the first `=`, trimmed; `UseSyslog` (and our `KeepRulesOnExit`) may stand alone as a flag.
//!
//! Each directive is checked for placement and repetition, then its value is parsed into the
//! options or the current raw door; every error and warning is collected with its line.
//!
//! What it must not do: judge a door as a whole (a missing directive, knock and SPA directives
//! mixed, key names across doors): that is phase 2, in `door`, once every line is read.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::IpAddr;

use knock_keys::public::ClientPublic;
use knock_keys::NamedKey;

use crate::types::{AdmitPrefix, PortSpec, TcpFlags};

use super::directives::{
    parse_bool, parse_number, parse_port_list, valid_user_name, Directive, Scope,
};
use super::error::{quoted, quoted_unless_key, ConfigError, Warning};
use super::key_files::{keys_value, public_keys_value};
use super::model::{
    Capture, Firewall, Options, MAX_INTERFACE_LEN, MAX_MAX_GRANTS, MAX_REPLAY_CACHE_SIZE,
    MAX_SPA_WINDOW, MAX_TIMEOUT, MAX_USER_NAME_LEN, MIN_REPLAY_CACHE_SIZE,
};
use super::sequence::{parse_sequence, sequence_warnings};
use super::template::CommandTemplate;

#[derive(Default)]
pub(super) struct RawOptions {
    seen: HashMap<Directive, usize>,
    pub(super) values: Options,
}

pub(super) struct RawDoor {
    pub(super) name: String,
    pub(super) line: usize,
    /// First line of each directive given (valid or not).
    pub(super) seen: HashMap<Directive, usize>,
    /// Whether any value of this door was refused (suppresses "missing" follow-up errors).
    pub(super) had_error: bool,
    pub(super) sequence: Option<(usize, Vec<PortSpec>)>,
    pub(super) one_time: Option<(usize, String)>,
    pub(super) seq_timeout: Option<u64>,
    pub(super) tcp_flags: Option<(usize, TcpFlags)>,
    pub(super) target: Option<IpAddr>,
    pub(super) open_ports: Option<(usize, Vec<PortSpec>)>,
    pub(super) start: Option<(usize, CommandTemplate)>,
    pub(super) start6: Option<(usize, CommandTemplate)>,
    pub(super) stop: Option<(usize, CommandTemplate)>,
    pub(super) stop6: Option<(usize, CommandTemplate)>,
    pub(super) cmd_timeout: Option<(usize, u64)>,
    pub(super) max_grants: Option<usize>,
    pub(super) admit_prefix: Option<AdmitPrefix>,
    pub(super) keys: Vec<(usize, NamedKey)>,
    pub(super) key_files: Vec<(usize, String)>,
    pub(super) public_keys: Vec<(usize, ClientPublic)>,
    pub(super) allow_ports: Option<Vec<PortSpec>>,
    pub(super) allow_nat: Option<bool>,
    pub(super) max_timeout: Option<(usize, u64)>,
}

impl RawDoor {
    fn new(name: &str, line: usize) -> Self {
        Self {
            name: name.to_owned(),
            line,
            seen: HashMap::new(),
            had_error: false,
            sequence: None,
            one_time: None,
            seq_timeout: None,
            tcp_flags: None,
            target: None,
            open_ports: None,
            start: None,
            start6: None,
            stop: None,
            stop6: None,
            cmd_timeout: None,
            max_grants: None,
            admit_prefix: None,
            keys: Vec::new(),
            key_files: Vec::new(),
            public_keys: Vec::new(),
            allow_ports: None,
            allow_nat: None,
            max_timeout: None,
        }
    }

    /// The first-given directive of a scope (line, canonical name).
    pub(super) fn first_of(&self, scope: Scope) -> Option<(usize, &'static str)> {
        self.seen
            .iter()
            .filter(|(d, _)| d.scope() == scope)
            .map(|(d, &l)| (l, d.name()))
            .min()
    }
}

#[derive(Clone, Copy, Default)]
enum Section {
    #[default]
    None,
    Options,
    Door(usize),
    /// After a malformed header: skip until the next header (no cascade of errors).
    Skip,
}

#[derive(Default)]
pub(super) struct Parser {
    pub(super) errors: Vec<ConfigError>,
    pub(super) warnings: Vec<Warning>,
    pub(super) options: RawOptions,
    pub(super) doors: Vec<RawDoor>,
    door_names: HashMap<String, usize>,
    section: Section,
}

impl Parser {
    pub(super) fn error(&mut self, line: usize, message: String) {
        self.errors.push(ConfigError { line, message });
    }

    pub(super) fn warn(&mut self, line: usize, message: String) {
        self.warnings.push(Warning { line, message });
    }

    pub(super) fn line(&mut self, line: usize, raw: &str) {
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            return;
        }
        if t.starts_with('[') {
            self.header(line, t);
            return;
        }
        let (key, value) = match t.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (t, None),
        };
        let door = match self.section {
            Section::Skip => return,
            Section::None => {
                let what = if value.is_some() {
                    format!("directive {}", quoted_unless_key(key))
                } else {
                    format!("line {}", quoted_unless_key(t))
                };
                self.error(
                    line,
                    format!(
                        "{what} appears before any section: every directive belongs to \
                         [options] or to a door such as [openSSH]"
                    ),
                );
                return;
            }
            Section::Options => None,
            Section::Door(i) => Some(i),
        };
        if key.is_empty() {
            self.error(
                line,
                format!(
                    "{}: missing directive name before \"=\"",
                    quoted_unless_key(t)
                ),
            );
            return;
        }
        let Some(dir) = Directive::lookup(key) else {
            let place = match door.and_then(|i| self.doors.get(i)) {
                Some(d) => format!("door [{}]", d.name),
                None => "[options]".to_owned(),
            };
            let hint = if value.is_none() {
                " (expected \"Directive = value\")"
            } else {
                ""
            };
            self.error(
                line,
                format!(
                    "unknown directive {} in {place}{hint}",
                    quoted_unless_key(key)
                ),
            );
            return;
        };
        // Placement.
        match (door, dir.scope()) {
            (None, Scope::Options) | (Some(_), Scope::Legacy | Scope::Both | Scope::Spa) => {}
            (Some(i), Scope::Options) => {
                let name = self
                    .doors
                    .get(i)
                    .map(|d| d.name.clone())
                    .unwrap_or_default();
                if dir == Directive::UseSyslog && value.is_none() {
                    // knockd accepts the bare flag in any section.
                    self.warn(
                        line,
                        format!("{key} belongs in [options]; it applies globally (as in knockd)"),
                    );
                } else {
                    self.error(
                        line,
                        format!("{key} belongs in [options], not in door [{name}]"),
                    );
                    return;
                }
            }
            (None, _) => {
                self.error(
                    line,
                    format!(
                        "{key} is a door directive; it cannot be used in [options] \
                         (note: the options section is spelled [options] in lower case)"
                    ),
                );
                return;
            }
        }
        // A bare word: only flags.
        let value = match value {
            Some(v) => v,
            None if dir.is_flag() => "yes",
            None => {
                self.error(line, format!("{key} needs a value: {key} = ..."));
                return;
            }
        };
        // Repetition.
        let seen = match door.and_then(|i| self.doors.get_mut(i)) {
            Some(d) => &mut d.seen,
            None => &mut self.options.seen,
        };
        match seen.entry(dir) {
            Entry::Occupied(first) if !dir.repeats() => {
                let first = *first.get();
                self.error(
                    line,
                    format!(
                        "{key} given twice (first on line {first}; {} is the same directive)",
                        dir.name()
                    ),
                );
                return;
            }
            Entry::Occupied(_) => {}
            Entry::Vacant(e) => {
                e.insert(line);
            }
        }
        match door {
            Some(i) if dir.scope() != Scope::Options => self.door_value(i, line, dir, key, value),
            _ => self.option_value(line, dir, key, value),
        }
    }

    fn header(&mut self, line: usize, t: &str) {
        let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) else {
            self.error(
                line,
                format!(
                    "malformed section header {}: expected \"[name]\" alone on the line",
                    quoted(t)
                ),
            );
            self.section = Section::Skip;
            return;
        };
        if name.is_empty() {
            self.error(line, "empty section name \"[]\"".to_owned());
            self.section = Section::Skip;
            return;
        }
        if name == "options" {
            self.section = Section::Options;
            return;
        }
        match self.door_names.entry(name.to_owned()) {
            Entry::Occupied(first) => {
                let first = *first.get();
                self.error(
                    line,
                    format!("duplicate door name [{name}] (first defined on line {first})"),
                );
                self.section = Section::Skip;
            }
            Entry::Vacant(e) => {
                e.insert(line);
                self.doors.push(RawDoor::new(name, line));
                self.section = Section::Door(self.doors.len() - 1);
            }
        }
    }

    fn option_value(&mut self, line: usize, dir: Directive, key: &str, v: &str) {
        let q = quoted(v);
        let o = &mut self.options.values;
        let problem: Option<String> = match dir {
            Directive::UseSyslog | Directive::KeepRulesOnExit => match parse_bool(v) {
                Some(b) => {
                    if dir == Directive::UseSyslog {
                        o.use_syslog = b;
                    } else {
                        o.keep_rules_on_exit = b;
                    }
                    None
                }
                None => Some(format!(
                    "{key} = {q}: expected yes or no (or the bare word {key})"
                )),
            },
            Directive::LogFile | Directive::PidFile => {
                if v.is_empty() {
                    Some(format!("{key} is empty: give a file path"))
                } else {
                    let slot = if dir == Directive::LogFile {
                        &mut o.log_file
                    } else {
                        &mut o.pid_file
                    };
                    *slot = Some(v.to_owned());
                    None
                }
            }
            Directive::Firewall => {
                if v.eq_ignore_ascii_case("commands") {
                    o.firewall = Firewall::Commands;
                    None
                } else if v.eq_ignore_ascii_case("nftables") {
                    o.firewall = Firewall::Nftables;
                    None
                } else {
                    Some(format!("{key} = {q}: expected commands or nftables"))
                }
            }
            Directive::User => {
                if valid_user_name(v) {
                    o.user = Some(v.to_owned());
                    None
                } else {
                    Some(format!(
                        "{key} = {q}: expected a user name such as knock-spa (1 to \
                         {MAX_USER_NAME_LEN} letters, digits, '_', '-' or '.', not starting with \
                         '-' or a digit)"
                    ))
                }
            }
            Directive::Interface => {
                if v.is_empty()
                    || v.len() > MAX_INTERFACE_LEN
                    || v.contains(char::is_whitespace)
                    || v.contains('/')
                {
                    Some(format!(
                        "{key} = {q}: expected an interface name such as eth0 or any \
                         (1 to {MAX_INTERFACE_LEN} characters, no blanks or /)"
                    ))
                } else {
                    o.interface = Some(v.to_owned());
                    None
                }
            }
            Directive::SpaPort => match crate::types::parse_port(v) {
                Ok(p) => {
                    o.spa_port = p;
                    None
                }
                Err(e) => Some(format!("{key} = {q}: {e}")),
            },
            Directive::ServerKey => {
                if v.starts_with('/') {
                    o.server_key = Some((line, v.to_owned()));
                    None
                } else {
                    Some(format!("{key} = {q}: expected an absolute path (`knock-spad server-key -o FILE` makes one)"))
                }
            }
            Directive::StateDir => {
                if v.starts_with('/') {
                    o.state_dir = v.to_owned();
                    None
                } else {
                    Some(format!("{key} = {q}: expected an absolute directory path"))
                }
            }
            Directive::ServerName => {
                let names: Vec<&str> = v.split(',').map(str::trim).collect();
                if let Some(pos) = names.iter().position(|n| n.is_empty()) {
                    Some(format!(
                        "{key} = {q}: name {} is empty (give one or more names separated by \
                         commas, or remove the line to use the host name)",
                        pos + 1
                    ))
                } else if let Some(bad) = names
                    .iter()
                    .find(|n| n.chars().any(|c| c.is_whitespace() || c.is_control()))
                {
                    Some(format!(
                        "{key} = {q}: name {} contains a blank",
                        quoted(bad)
                    ))
                } else {
                    o.server_names = names.into_iter().map(str::to_owned).collect();
                    None
                }
            }
            Directive::SpaWindow => match parse_number(v, 1, MAX_SPA_WINDOW) {
                Some(n) => {
                    o.spa_window = n;
                    None
                }
                None => Some(format!(
                    "{key} = {q}: expected a whole number of seconds from 1 to {MAX_SPA_WINDOW}"
                )),
            },
            Directive::Capture => {
                if v.eq_ignore_ascii_case("pcap") {
                    o.capture = Capture::Pcap;
                    None
                } else if v.eq_ignore_ascii_case("udp") {
                    o.capture = Capture::Udp;
                    None
                } else {
                    Some(format!("{key} = {q}: expected pcap or udp"))
                }
            }
            Directive::MaxGrants => match parse_number(v, 1, MAX_MAX_GRANTS as u64)
                .and_then(|n| usize::try_from(n).ok())
            {
                Some(n) => {
                    o.max_grants = n;
                    None
                }
                None => Some(format!(
                    "{key} = {q}: expected a whole number of grants from 1 to {MAX_MAX_GRANTS}"
                )),
            },
            Directive::ReplayCacheSize => {
                match parse_number(
                    v,
                    MIN_REPLAY_CACHE_SIZE as u64,
                    MAX_REPLAY_CACHE_SIZE as u64,
                )
                .and_then(|n| usize::try_from(n).ok())
                {
                    Some(n) => {
                        o.replay_cache_size = n;
                        None
                    }
                    None => Some(format!(
                        "{key} = {q}: expected a whole number of entries from \
                         {MIN_REPLAY_CACHE_SIZE} to {MAX_REPLAY_CACHE_SIZE}"
                    )),
                }
            }
            _ => None, // placement was checked by the caller
        };
        if let Some(p) = problem {
            self.error(line, p);
        }
    }

    fn door_value(&mut self, i: usize, line: usize, dir: Directive, key: &str, v: &str) {
        let q = quoted(v);
        let mut warnings = Vec::new();
        let Some(d) = self.doors.get_mut(i) else {
            return;
        };
        let timeout_problem =
            || format!("{key} = {q}: expected a whole number of seconds from 1 to {MAX_TIMEOUT}");
        let problem: Option<String> = match dir {
            Directive::Sequence => match parse_sequence(v) {
                Ok(seq) => {
                    warnings.extend(sequence_warnings(&seq));
                    d.sequence = Some((line, seq));
                    None
                }
                Err(e) => Some(format!("{key} = {q}: {e}")),
            },
            Directive::OneTimeSequences => {
                if v.is_empty() {
                    Some(format!(
                        "{key} is empty: give the path of the sequences file"
                    ))
                } else {
                    d.one_time = Some((line, v.to_owned()));
                    None
                }
            }
            Directive::SeqTimeout => match parse_number(v, 1, MAX_TIMEOUT) {
                Some(n) => {
                    d.seq_timeout = Some(n);
                    None
                }
                None => Some(timeout_problem()),
            },
            Directive::CmdTimeout => match parse_number(v, 1, MAX_TIMEOUT) {
                Some(n) => {
                    d.cmd_timeout = Some((line, n));
                    None
                }
                None => Some(timeout_problem()),
            },
            Directive::DoorMaxGrants => match parse_number(v, 1, MAX_MAX_GRANTS as u64)
                .and_then(|n| usize::try_from(n).ok())
            {
                Some(n) => {
                    d.max_grants = Some(n);
                    None
                }
                None => Some(format!(
                    "{key} = {q}: expected a whole number of grants from 1 to {MAX_MAX_GRANTS}"
                )),
            },
            Directive::AdmitPrefix => match parse_admit_prefix(v) {
                Some(p) => {
                    d.admit_prefix = Some(p);
                    None
                }
                None => Some(format!(
                    "{key} = {q}: expected two prefix lengths, IPv4 then IPv6: `24, 64` (IPv4 8 \
                     to 32, IPv6 16 to 128)"
                )),
            },
            Directive::MaxTimeout => match parse_number(v, 1, MAX_TIMEOUT) {
                Some(n) => {
                    d.max_timeout = Some((line, n));
                    None
                }
                None => Some(timeout_problem()),
            },
            Directive::TcpFlags => match v.parse::<TcpFlags>() {
                Ok(f) => {
                    d.tcp_flags = Some((line, f));
                    None
                }
                Err(e) => Some(format!("{key} = {q}: {e}")),
            },
            Directive::OpenPorts => match port_set(key, &q, v, &mut warnings) {
                Ok(ports) => {
                    d.open_ports = Some((line, ports));
                    None
                }
                Err(e) => Some(e),
            },
            Directive::Target => match v.parse::<IpAddr>() {
                Ok(ip) => {
                    d.target = Some(ip);
                    None
                }
                Err(_) => Some(format!(
                    "{key} = {q}: expected an IPv4 or IPv6 address (no host names)"
                )),
            },
            Directive::StartCommand
            | Directive::StartCommand6
            | Directive::StopCommand
            | Directive::StopCommand6 => match CommandTemplate::parse(v) {
                Ok(t) => {
                    if let Some(word) = t.shell_syntax() {
                        warnings.push(format!(
                            "{key} contains {}, which a shell would interpret, but commands \
                                 run without a shell: it is passed literally as an argument \
                                 (put pipelines and redirections in a script)",
                            quoted(word)
                        ));
                    }
                    if let Some(comment) = t.comment() {
                        warnings.push(format!(
                            "{key} ends in the comment {}, which is dropped, as knockd's shell \
                             dropped it: it is not passed to the program (quote the # to pass \
                             it)",
                            quoted(comment)
                        ));
                    }
                    let slot = match dir {
                        Directive::StartCommand => &mut d.start,
                        Directive::StartCommand6 => &mut d.start6,
                        Directive::StopCommand => &mut d.stop,
                        _ => &mut d.stop6,
                    };
                    *slot = Some((line, t));
                    None
                }
                Err(e) => Some(format!("{key} = {q}: {e}")),
            },
            Directive::Keys => keys_value(key, v, line, &mut d.keys),
            Directive::PublicKeys => public_keys_value(key, v, line, &mut d.public_keys),
            Directive::KeyFile => {
                if v.is_empty() {
                    Some(format!("{key} is empty: give the path of a keys file"))
                } else {
                    d.key_files.push((line, v.to_owned()));
                    None
                }
            }
            Directive::AllowPorts => match port_set(key, &q, v, &mut warnings) {
                Ok(ports) => {
                    d.allow_ports = Some(ports);
                    None
                }
                Err(e) => Some(e),
            },
            Directive::AllowNat => match parse_bool(v) {
                Some(b) => {
                    d.allow_nat = Some(b);
                    None
                }
                None => Some(format!("{key} = {q}: expected yes or no")),
            },
            _ => None, // options directives were routed elsewhere
        };
        if problem.is_some() {
            d.had_error = true;
        }
        if let Some(p) = problem {
            self.error(line, p);
        }
        for w in warnings {
            self.warn(line, w);
        }
    }
}

/// `Admit_Prefix`'s value: `V4, V6` (or `V4,V6`), IPv4 8..=32, IPv6 16..=128.
/// A port list without duplicates (a duplicate is dropped with a warning).
fn port_set(
    key: &str,
    q: &str,
    v: &str,
    warnings: &mut Vec<String>,
) -> Result<Vec<PortSpec>, String> {
    let mut ports = parse_port_list(v).map_err(|e| format!("{key} = {q}: {e}"))?;
    let before = ports.len();
    let mut seen = std::collections::HashSet::new();
    ports.retain(|p| seen.insert(*p));
    if ports.len() != before {
        warnings.push(format!("{key} = {q} lists a port more than once"));
    }
    Ok(ports)
}

fn parse_admit_prefix(v: &str) -> Option<AdmitPrefix> {
    let (a, b) = v.split_once(',')?;
    let v4 = u8::try_from(parse_number(a.trim(), 8, 32)?).ok()?;
    let v6 = u8::try_from(parse_number(b.trim(), 16, 128)?).ok()?;
    Some(AdmitPrefix { v4, v6 })
}
