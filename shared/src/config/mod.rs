//! The configuration reader: knockd 0.8's `knockd.conf` syntax plus knock-spa's SPA doors.
//!
//! Role: turn the text of a configuration file into a validated [`Config`], or into every
//! error the text holds, each with its 1-based line number and a message naming the directive
//! and the value. The caller (the server) reads the file and prefixes the path
//! (`/etc/knockd.conf:12: ...`).
//!
//! What it must not do: I/O of any kind. It opens no file (a `KeyFile` or `One_Time_Sequences`
//! path is recorded with its line, and the server reads it and hands the text to
//! [`parse_keys_file`] / [`parse_one_time_sequences`]), reads no clock and resolves no names.
//! Error and warning messages never contain secret key material.
//!
//! Syntax, as knockd's `parseconfig()` reads it:
//!
//! - each line is trimmed; blank lines and lines whose first non-blank character is `#` are
//!   skipped (there are no trailing comments: `#` later in a line is part of the value);
//! - `[name]` alone on a line starts a section; `[options]` (exactly, lower case) holds the
//!   global options, any other name starts a door; door names are case-sensitive;
//! - `Directive = value`: the directive name is case-insensitive, the value is everything after
//!   the first `=`, trimmed; `UseSyslog` (and our `KeepRulesOnExit`) may stand alone as a flag.
//!
//! Where knockd silently accepts a mistake (an unknown directive in some positions, `atoi`
//! turning `abc` into 0, a repeated directive overriding the first) this reader reports an
//! error; docs/CONFIG.md lists every difference and its reason.
//!
//! Commands are parsed into [`CommandTemplate`]s: argv words (quotes group, no shell) with
//! `%IP%`, `%PORT%` and `%PROTO%` placeholders, rendered by the server after it validated the
//! address. Substitution happens inside a word and can never split or add words.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU16;

use knock_keys::{KeyId, NamedKey};

use crate::types::{PortSpec, PortSpecError, Proto};
pub use crate::types::{TcpFlags, TcpFlagsError};

/// Default `Seq_Timeout` in seconds (knockd's `SEQ_TIMEOUT`).
pub const DEFAULT_SEQ_TIMEOUT: u64 = 25;
/// Default `Cmd_Timeout` of a knock-sequence door in seconds (knockd's `CMD_TIMEOUT`).
pub const DEFAULT_CMD_TIMEOUT: u64 = 10;
/// Default `Cmd_Timeout` (the default open time) of an SPA door in seconds.
pub const DEFAULT_SPA_CMD_TIMEOUT: u64 = 30;
/// Largest accepted timeout of any kind, in seconds (365 days; fits the wire's `u32`).
pub const MAX_TIMEOUT: u64 = 365 * 24 * 60 * 60;
/// Most ports in one knock sequence (knockd's `SEQ_MAX`).
pub const MAX_SEQUENCE_LEN: usize = 32;
/// Default UDP port of the SPA listener.
pub const DEFAULT_SPA_PORT: NonZeroU16 = match NonZeroU16::new(62201) {
    Some(p) => p,
    None => panic!("62201 is not zero"),
};
/// Default state directory (replay cache, open grants).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/knock-spa";
/// Default SPA timestamp window in seconds (a packet is accepted within ± this of our clock).
pub const DEFAULT_SPA_WINDOW: u64 = 60;
/// Largest accepted `SpaWindow`.
pub const MAX_SPA_WINDOW: u64 = 3600;
/// Default `ReplayCacheSize` (entries).
pub const DEFAULT_REPLAY_CACHE_SIZE: usize = 65_536;
/// Smallest accepted `ReplayCacheSize`.
pub const MIN_REPLAY_CACHE_SIZE: usize = 64;
/// Largest accepted `ReplayCacheSize` (16 Mi entries, about 700 MB at worst).
pub const MAX_REPLAY_CACHE_SIZE: usize = 16 * 1024 * 1024;
/// Longest network interface name Linux accepts (`IFNAMSIZ` - 1).
pub const MAX_INTERFACE_LEN: usize = 15;
/// The interface knockd listens on when neither `Interface` nor `-i` names one.
pub const DEFAULT_INTERFACE: &str = "any";

// ---------------------------------------------------------------------------------------------
// Errors and warnings
// ---------------------------------------------------------------------------------------------

/// One error in a configuration text. `Display` gives `line N: message`; the caller prefixes
/// the file's path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong, naming the directive and the value (never a secret).
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A non-fatal remark on a valid configuration (shown by `knock-spad check` and at start-up).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// 1-based line number.
    pub line: usize,
    /// The remark.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

// ---------------------------------------------------------------------------------------------
// The resolved configuration
// ---------------------------------------------------------------------------------------------

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The `[options]` section (defaults where absent).
    pub options: Options,
    /// The doors, in file order.
    pub doors: Vec<Door>,
    /// Non-fatal remarks, in line order.
    pub warnings: Vec<Warning>,
}

impl Config {
    /// The door with this exact (case-sensitive) name.
    pub fn door(&self, name: &str) -> Option<&Door> {
        self.doors.iter().find(|d| d.name == name)
    }
}

/// How the SPA listener receives packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Capture {
    /// libpcap on the interface with a BPF filter: no socket is opened, the port may stay
    /// closed or dropped by the firewall.
    #[default]
    Pcap,
    /// A plain UDP socket bound to `SpaPort` (the firewall must let the port in).
    Udp,
}

impl fmt::Display for Capture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Capture::Pcap => "pcap",
            Capture::Udp => "udp",
        })
    }
}

/// The global options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// `UseSyslog`: log through syslog.
    pub use_syslog: bool,
    /// `LogFile`: append log lines (knockd's format) to this file.
    pub log_file: Option<String>,
    /// `PidFile`: where to write the pid when daemonizing; `None`: the server's default.
    pub pid_file: Option<String>,
    /// `Interface`: the capture interface; `None`: `-i`, else [`DEFAULT_INTERFACE`].
    pub interface: Option<String>,
    /// `SpaPort`: the UDP port SPA packets are sent to.
    pub spa_port: NonZeroU16,
    /// `StateDir`: where the replay cache and open grants persist (absolute path).
    pub state_dir: String,
    /// `ServerName`: the identities this server answers to. Empty: the caller substitutes
    /// the host name.
    pub server_names: Vec<String>,
    /// `SpaWindow`: accepted clock difference in seconds, 1..=3600.
    pub spa_window: u64,
    /// `Capture`: pcap or a UDP socket.
    pub capture: Capture,
    /// `ReplayCacheSize`: entries in the replay cache.
    pub replay_cache_size: usize,
    /// `KeepRulesOnExit`: leave open grants in place on SIGTERM/SIGINT.
    pub keep_rules_on_exit: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            use_syslog: false,
            log_file: None,
            pid_file: None,
            interface: None,
            spa_port: DEFAULT_SPA_PORT,
            state_dir: DEFAULT_STATE_DIR.to_owned(),
            server_names: Vec::new(),
            spa_window: DEFAULT_SPA_WINDOW,
            capture: Capture::Pcap,
            replay_cache_size: DEFAULT_REPLAY_CACHE_SIZE,
            keep_rules_on_exit: false,
        }
    }
}

/// One door: a knock-sequence door (knockd's) or an SPA door.
#[derive(Clone, Debug)]
pub struct Door {
    /// The section name, as written (case-sensitive); appears in log lines.
    pub name: String,
    /// Line of the `[name]` header.
    pub line: usize,
    /// What opens it.
    pub kind: DoorKind,
    /// `Start_Command` / `Command`.
    pub start_command: Option<CommandTemplate>,
    /// `Start_Command_6` / `Command_6`.
    pub start_command_6: Option<CommandTemplate>,
    /// `Stop_Command`.
    pub stop_command: Option<CommandTemplate>,
    /// `Stop_Command_6`.
    pub stop_command_6: Option<CommandTemplate>,
    /// `Cmd_Timeout` in seconds: time between start and stop command (SPA: the default open
    /// time).
    pub cmd_timeout: u64,
}

impl Door {
    /// The command to run when the door opens for `ip`, following knockd: IPv6 uses
    /// `Start_Command_6` and falls back to `Start_Command` when it is absent. `None` when
    /// there is nothing to run (absent, or set to an empty value).
    pub fn start_command_for(&self, ip: IpAddr) -> Option<&CommandTemplate> {
        pick(&self.start_command, &self.start_command_6, ip)
    }

    /// The command to run when the door closes for `ip`; same fallback as
    /// [`Door::start_command_for`].
    pub fn stop_command_for(&self, ip: IpAddr) -> Option<&CommandTemplate> {
        pick(&self.stop_command, &self.stop_command_6, ip)
    }

    /// The knock-sequence part, if this is a knock-sequence door.
    pub fn sequence(&self) -> Option<&SequenceDoor> {
        match &self.kind {
            DoorKind::Sequence(s) => Some(s),
            DoorKind::Spa(_) => None,
        }
    }

    /// The SPA part, if this is an SPA door.
    pub fn spa(&self) -> Option<&SpaDoor> {
        match &self.kind {
            DoorKind::Spa(s) => Some(s),
            DoorKind::Sequence(_) => None,
        }
    }
}

fn pick<'a>(
    v4: &'a Option<CommandTemplate>,
    v6: &'a Option<CommandTemplate>,
    ip: IpAddr,
) -> Option<&'a CommandTemplate> {
    let chosen = match ip {
        IpAddr::V4(_) => v4.as_ref(),
        IpAddr::V6(_) => v6.as_ref().or(v4.as_ref()),
    };
    chosen.filter(|t| !t.is_empty())
}

/// What opens a door.
#[derive(Clone, Debug)]
pub enum DoorKind {
    /// A classic knock sequence (knockd).
    Sequence(SequenceDoor),
    /// Single packet authorization.
    Spa(SpaDoor),
}

/// A knockd door.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SequenceDoor {
    /// The `Sequence`; empty when the door uses `one_time_file`.
    pub sequence: Vec<PortSpec>,
    /// `One_Time_Sequences`: the file's path and the line of the directive. The server reads
    /// it with [`parse_one_time_sequences`].
    pub one_time_file: Option<(String, usize)>,
    /// `Seq_Timeout` in seconds: all hits within this time of the first.
    pub seq_timeout: u64,
    /// `TCPFlags`: TCP hits that do not match are ignored (UDP hits are not filtered).
    pub tcp_flags: TcpFlags,
    /// `Target`: match this destination address instead of the interface's addresses.
    pub target: Option<IpAddr>,
}

/// An SPA door.
#[derive(Clone, Debug)]
pub struct SpaDoor {
    /// Inline `Keys`, each with the line it was given on.
    pub keys: Vec<(usize, NamedKey)>,
    /// `KeyFile` paths, each with its line. The server reads them with [`parse_keys_file`].
    pub key_files: Vec<(usize, String)>,
    /// `Allow_Ports`: what a key of this door may ask to open (never empty, no duplicates).
    pub allow_ports: Vec<PortSpec>,
    /// `Allow_NAT`: a key may ask to admit an address other than the packet's source.
    pub allow_nat: bool,
    /// `Max_Timeout`: cap on a requested open time in seconds (>= `cmd_timeout`).
    pub max_timeout: u64,
}

// ---------------------------------------------------------------------------------------------
// TCP flags
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// Knock sequences
// ---------------------------------------------------------------------------------------------

/// Why a knock sequence was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SequenceError {
    /// Nothing given.
    #[error("the sequence is empty")]
    Empty,
    /// Two commas in a row, or a leading/trailing comma.
    #[error("element {0} is empty")]
    EmptyElement(usize),
    /// An element is not `port[:tcp|udp]`.
    #[error("bad element {element:?}: {reason}")]
    Element {
        /// The element as written.
        element: String,
        /// What is wrong with it.
        reason: PortSpecError,
    },
    /// More than [`MAX_SEQUENCE_LEN`] ports.
    #[error("{0} ports, at most {MAX_SEQUENCE_LEN} are allowed")]
    TooLong(usize),
}

/// Parses knockd's sequence syntax: `port[:tcp|udp]` elements separated by commas (TCP by
/// default; `port/proto` is accepted too).
pub fn parse_sequence(text: &str) -> Result<Vec<PortSpec>, SequenceError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(SequenceError::Empty);
    }
    let mut out = Vec::new();
    for (i, element) in text.split(',').enumerate() {
        let element = element.trim();
        if element.is_empty() {
            return Err(SequenceError::EmptyElement(i + 1));
        }
        let spec = element
            .parse::<PortSpec>()
            .map_err(|reason| SequenceError::Element {
                element: element.to_owned(),
                reason,
            })?;
        out.push(spec);
    }
    if out.len() > MAX_SEQUENCE_LEN {
        return Err(SequenceError::TooLong(out.len()));
    }
    Ok(out)
}

/// Formats a sequence in knockd's notation: `7000,8000:udp` (TCP elements without suffix).
pub fn format_sequence(sequence: &[PortSpec]) -> String {
    let mut out = String::new();
    for (i, p) in sequence.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&p.port.to_string());
        if p.proto == Proto::Udp {
            out.push_str(":udp");
        }
    }
    out
}

/// Whether a plain sequential port scan completes this sequence: two or more ports of one
/// protocol in strictly ascending order (`7000,8000,9000`). `knock-spad check` warns about it.
pub fn is_scan_order(sequence: &[PortSpec]) -> bool {
    sequence.len() >= 2
        && sequence.windows(2).all(|w| match w {
            [a, b] => a.proto == b.proto && a.port < b.port,
            _ => false,
        })
}

/// The warnings a sequence deserves (pure; also used for one-time sequences).
pub fn sequence_warnings(sequence: &[PortSpec]) -> Vec<String> {
    let mut out = Vec::new();
    let text = format_sequence(sequence);
    if is_scan_order(sequence) {
        out.push(format!(
            "sequence {text} is ascending: a sequential port scan completes it; \
             use an order a scanner does not follow"
        ));
    }
    if sequence.len() == 1 {
        out.push(format!(
            "sequence {text} has a single port: any connection attempt to it opens the door"
        ));
    }
    for w in sequence.windows(2) {
        if let [a, b] = w {
            if a == b {
                out.push(format!(
                    "sequence {text} repeats {a} twice in a row: a retransmitted or \
                     duplicated packet can count as both hits"
                ));
                break;
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Command templates
// ---------------------------------------------------------------------------------------------

/// One piece of an argv word.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Ip,
    Port,
    Proto,
}

/// Why a command template was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// A quote opened and never closed.
    #[error("unterminated {0} quote")]
    UnterminatedQuote(char),
    /// A `%NAME%` in capitals that is not a known placeholder.
    #[error("unknown placeholder %{0}% (only %IP%, %PORT% and %PROTO% are substituted)")]
    UnknownPlaceholder(String),
    /// A known placeholder written in the wrong case (`%ip%`).
    #[error("placeholder %{0}% must be written in capitals: %{1}%")]
    PlaceholderCase(String, &'static str),
}

/// A command to run later: argv words (no shell) with `%IP%`, `%PORT%`, `%PROTO%`.
///
/// Tokenizing: words are separated by blanks; `'...'` groups literally; `"..."` groups with
/// `\"` and `\\` as the only escapes; a backslash elsewhere is literal; there is no other shell
/// syntax (`;`, `|`, `&&`, `$(...)`, `>` are ordinary characters). Placeholders are
/// substituted inside a word, quoted or not, and never split or add words.
///
/// A `%NAME%` where NAME is two or more capitals, digits or underscores starting with a letter
/// must be a known placeholder; lower-case names (`%s%`) and single letters (`+%Y%m%d`) are
/// left alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandTemplate {
    text: String,
    words: Vec<Vec<Piece>>,
    shell_syntax: Option<String>,
}

impl CommandTemplate {
    /// Parses a template. An empty (or blank) text gives an empty template, which means
    /// "run nothing" (knockd: "You can use empty value to force doing nothing").
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let text = text.trim();
        let mut words = Vec::new();
        let mut shell_syntax = None;
        for (word, quoted) in tokenize(text)? {
            if !quoted && shell_syntax.is_none() && looks_like_shell(&word) {
                shell_syntax = Some(word.clone());
            }
            words.push(pieces(&word)?);
        }
        Ok(Self {
            text: text.to_owned(),
            words,
            shell_syntax,
        })
    }

    /// The original text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// No words: nothing to run.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Whether `%PORT%` or `%PROTO%` appears (allowed in SPA doors only).
    pub fn uses_port(&self) -> bool {
        self.words
            .iter()
            .flatten()
            .any(|p| matches!(p, Piece::Port | Piece::Proto))
    }

    /// Whether `%IP%` appears.
    pub fn uses_ip(&self) -> bool {
        self.words.iter().flatten().any(|p| matches!(p, Piece::Ip))
    }

    /// The first unquoted word that a shell would have treated as syntax (`;`, `|`, `&&`,
    /// `$(`, a redirection...), if any. It is passed literally; the parser warns about it.
    pub fn shell_syntax(&self) -> Option<&str> {
        self.shell_syntax.as_deref()
    }

    /// The argv with placeholders substituted: `%IP%` by `ip`, `%PORT%` by the port number and
    /// `%PROTO%` by `tcp`/`udp` (both empty when `port` is `None`). Empty for an empty
    /// template. The caller validates `ip` (it is typed, so it cannot carry anything else).
    pub fn render(&self, ip: IpAddr, port: Option<PortSpec>) -> Vec<String> {
        let ip = ip.to_string();
        self.words
            .iter()
            .map(|word| {
                let mut s = String::new();
                for piece in word {
                    match piece {
                        Piece::Lit(l) => s.push_str(l),
                        Piece::Ip => s.push_str(&ip),
                        Piece::Port => {
                            if let Some(p) = port {
                                s.push_str(&p.port.to_string());
                            }
                        }
                        Piece::Proto => {
                            if let Some(p) = port {
                                s.push_str(p.proto.as_str());
                            }
                        }
                    }
                }
                s
            })
            .collect()
    }
}

impl fmt::Display for CommandTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Splits into words; each with whether any part of it was quoted.
fn tokenize(text: &str) -> Result<Vec<(String, bool)>, TemplateError> {
    let mut words = Vec::new();
    let mut cur: Option<(String, bool)> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if let Some(w) = cur.take() {
                    words.push(w);
                }
            }
            '\'' => {
                let w = cur.get_or_insert_with(|| (String::new(), true));
                w.1 = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(ch) => w.0.push(ch),
                        None => return Err(TemplateError::UnterminatedQuote('\'')),
                    }
                }
            }
            '"' => {
                let w = cur.get_or_insert_with(|| (String::new(), true));
                w.1 = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(ch @ ('"' | '\\')) => w.0.push(ch),
                            Some(ch) => {
                                w.0.push('\\');
                                w.0.push(ch);
                            }
                            None => return Err(TemplateError::UnterminatedQuote('"')),
                        },
                        Some(ch) => w.0.push(ch),
                        None => return Err(TemplateError::UnterminatedQuote('"')),
                    }
                }
            }
            c => cur.get_or_insert_with(|| (String::new(), false)).0.push(c),
        }
    }
    if let Some(w) = cur.take() {
        words.push(w);
    }
    Ok(words)
}

fn looks_like_shell(word: &str) -> bool {
    matches!(word, ";" | "|" | "||" | "&" | "&&" | "<" | "&>")
        || word.starts_with('>')
        || word.starts_with("2>")
        || word.ends_with(';')
        || word.starts_with('$')
        || word.contains("$(")
        || word.contains('`')
}

const PLACEHOLDERS: [(&str, Piece); 3] = [
    ("IP", Piece::Ip),
    ("PORT", Piece::Port),
    ("PROTO", Piece::Proto),
];

/// Splits a word into literal text and placeholders.
fn pieces(word: &str) -> Result<Vec<Piece>, TemplateError> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut rest = word;
    while let Some(pos) = rest.find('%') {
        lit.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let name_len = after
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .count();
        let name = &after[..name_len];
        let closed = after.as_bytes().get(name_len) == Some(&b'%');
        let candidate =
            closed && name_len >= 2 && name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic());
        if candidate {
            if let Some((_, piece)) = PLACEHOLDERS.iter().find(|(n, _)| *n == name) {
                if !lit.is_empty() {
                    out.push(Piece::Lit(std::mem::take(&mut lit)));
                }
                out.push(piece.clone());
                rest = &after[name_len + 1..];
                continue;
            }
            if let Some((known, _)) = PLACEHOLDERS
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
            {
                return Err(TemplateError::PlaceholderCase(name.to_owned(), known));
            }
            if name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err(TemplateError::UnknownPlaceholder(name.to_owned()));
            }
        }
        lit.push('%');
        rest = after;
    }
    lit.push_str(rest);
    if !lit.is_empty() || out.is_empty() {
        out.push(Piece::Lit(lit));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Directives
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Directive {
    // [options]
    UseSyslog,
    LogFile,
    PidFile,
    Interface,
    SpaPort,
    StateDir,
    ServerName,
    SpaWindow,
    Capture,
    ReplayCacheSize,
    KeepRulesOnExit,
    // doors, knock sequence only
    Sequence,
    OneTimeSequences,
    SeqTimeout,
    TcpFlags,
    Target,
    // doors, both kinds
    StartCommand,
    StartCommand6,
    StopCommand,
    StopCommand6,
    CmdTimeout,
    // doors, SPA only
    Keys,
    KeyFile,
    AllowPorts,
    AllowNat,
    MaxTimeout,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    Options,
    Legacy,
    Both,
    Spa,
}

/// Upper-case spelling → directive. Aliases are knockd's (`Command`, `Command_6`, `Timeout`).
const DIRECTIVES: &[(&str, Directive)] = &[
    ("USESYSLOG", Directive::UseSyslog),
    ("LOGFILE", Directive::LogFile),
    ("PIDFILE", Directive::PidFile),
    ("INTERFACE", Directive::Interface),
    ("SPAPORT", Directive::SpaPort),
    ("STATEDIR", Directive::StateDir),
    ("SERVERNAME", Directive::ServerName),
    ("SPAWINDOW", Directive::SpaWindow),
    ("CAPTURE", Directive::Capture),
    ("REPLAYCACHESIZE", Directive::ReplayCacheSize),
    ("KEEPRULESONEXIT", Directive::KeepRulesOnExit),
    ("SEQUENCE", Directive::Sequence),
    ("ONE_TIME_SEQUENCES", Directive::OneTimeSequences),
    ("SEQ_TIMEOUT", Directive::SeqTimeout),
    ("TIMEOUT", Directive::SeqTimeout),
    ("TCPFLAGS", Directive::TcpFlags),
    ("TARGET", Directive::Target),
    ("START_COMMAND", Directive::StartCommand),
    ("COMMAND", Directive::StartCommand),
    ("START_COMMAND_6", Directive::StartCommand6),
    ("COMMAND_6", Directive::StartCommand6),
    ("STOP_COMMAND", Directive::StopCommand),
    ("STOP_COMMAND_6", Directive::StopCommand6),
    ("CMD_TIMEOUT", Directive::CmdTimeout),
    ("KEYS", Directive::Keys),
    ("KEYFILE", Directive::KeyFile),
    ("ALLOW_PORTS", Directive::AllowPorts),
    ("ALLOW_NAT", Directive::AllowNat),
    ("MAX_TIMEOUT", Directive::MaxTimeout),
];

impl Directive {
    fn lookup(key: &str) -> Option<Directive> {
        DIRECTIVES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(key))
            .map(|&(_, d)| d)
    }

    /// The canonical spelling, for messages about a directive that is missing.
    fn name(self) -> &'static str {
        match self {
            Directive::UseSyslog => "UseSyslog",
            Directive::LogFile => "LogFile",
            Directive::PidFile => "PidFile",
            Directive::Interface => "Interface",
            Directive::SpaPort => "SpaPort",
            Directive::StateDir => "StateDir",
            Directive::ServerName => "ServerName",
            Directive::SpaWindow => "SpaWindow",
            Directive::Capture => "Capture",
            Directive::ReplayCacheSize => "ReplayCacheSize",
            Directive::KeepRulesOnExit => "KeepRulesOnExit",
            Directive::Sequence => "Sequence",
            Directive::OneTimeSequences => "One_Time_Sequences",
            Directive::SeqTimeout => "Seq_Timeout",
            Directive::TcpFlags => "TCPFlags",
            Directive::Target => "Target",
            Directive::StartCommand => "Start_Command",
            Directive::StartCommand6 => "Start_Command_6",
            Directive::StopCommand => "Stop_Command",
            Directive::StopCommand6 => "Stop_Command_6",
            Directive::CmdTimeout => "Cmd_Timeout",
            Directive::Keys => "Keys",
            Directive::KeyFile => "KeyFile",
            Directive::AllowPorts => "Allow_Ports",
            Directive::AllowNat => "Allow_NAT",
            Directive::MaxTimeout => "Max_Timeout",
        }
    }

    fn scope(self) -> Scope {
        match self {
            Directive::UseSyslog
            | Directive::LogFile
            | Directive::PidFile
            | Directive::Interface
            | Directive::SpaPort
            | Directive::StateDir
            | Directive::ServerName
            | Directive::SpaWindow
            | Directive::Capture
            | Directive::ReplayCacheSize
            | Directive::KeepRulesOnExit => Scope::Options,
            Directive::Sequence
            | Directive::OneTimeSequences
            | Directive::SeqTimeout
            | Directive::TcpFlags
            | Directive::Target => Scope::Legacy,
            Directive::StartCommand
            | Directive::StartCommand6
            | Directive::StopCommand
            | Directive::StopCommand6
            | Directive::CmdTimeout => Scope::Both,
            Directive::Keys
            | Directive::KeyFile
            | Directive::AllowPorts
            | Directive::AllowNat
            | Directive::MaxTimeout => Scope::Spa,
        }
    }

    /// May stand alone, without `= value`.
    fn is_flag(self) -> bool {
        matches!(self, Directive::UseSyslog | Directive::KeepRulesOnExit)
    }

    /// May be given more than once (values accumulate).
    fn repeats(self) -> bool {
        matches!(self, Directive::Keys | Directive::KeyFile)
    }
}

// ---------------------------------------------------------------------------------------------
// Value parsers
// ---------------------------------------------------------------------------------------------

fn parse_bool(v: &str) -> Option<bool> {
    const YES: [&str; 4] = ["yes", "true", "on", "1"];
    const NO: [&str; 4] = ["no", "false", "off", "0"];
    if YES.iter().any(|y| y.eq_ignore_ascii_case(v)) {
        Some(true)
    } else if NO.iter().any(|n| n.eq_ignore_ascii_case(v)) {
        Some(false)
    } else {
        None
    }
}

/// A whole number in `min..=max`: ASCII digits only (no sign, no unit).
fn parse_number(v: &str, min: u64, max: u64) -> Option<u64> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse::<u64>().ok().filter(|n| (min..=max).contains(n))
}

fn parse_port_list(v: &str) -> Result<Vec<PortSpec>, String> {
    if v.is_empty() {
        return Err("the list is empty".to_owned());
    }
    let mut out = Vec::new();
    for (i, element) in v.split(',').enumerate() {
        let element = element.trim();
        if element.is_empty() {
            return Err(format!("element {} is empty", i + 1));
        }
        let spec = element
            .parse::<PortSpec>()
            .map_err(|e| format!("bad element {element:?}: {e}"))?;
        out.push(spec);
    }
    Ok(out)
}

fn quoted(v: &str) -> String {
    format!("{v:?}")
}

// ---------------------------------------------------------------------------------------------
// Parser, phase 1: what the file says
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct RawOptions {
    seen: HashMap<Directive, usize>,
    values: Options,
}

struct RawDoor {
    name: String,
    line: usize,
    /// First line of each directive given (valid or not).
    seen: HashMap<Directive, usize>,
    /// Whether any value of this door was refused (suppresses "missing" follow-up errors).
    had_error: bool,
    sequence: Option<(usize, Vec<PortSpec>)>,
    one_time: Option<(usize, String)>,
    seq_timeout: Option<u64>,
    tcp_flags: Option<(usize, TcpFlags)>,
    target: Option<IpAddr>,
    start: Option<(usize, CommandTemplate)>,
    start6: Option<(usize, CommandTemplate)>,
    stop: Option<(usize, CommandTemplate)>,
    stop6: Option<(usize, CommandTemplate)>,
    cmd_timeout: Option<(usize, u64)>,
    keys: Vec<(usize, NamedKey)>,
    key_files: Vec<(usize, String)>,
    allow_ports: Option<Vec<PortSpec>>,
    allow_nat: Option<bool>,
    max_timeout: Option<(usize, u64)>,
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
            start: None,
            start6: None,
            stop: None,
            stop6: None,
            cmd_timeout: None,
            keys: Vec::new(),
            key_files: Vec::new(),
            allow_ports: None,
            allow_nat: None,
            max_timeout: None,
        }
    }

    /// The first-given directive of a scope (line, canonical name).
    fn first_of(&self, scope: Scope) -> Option<(usize, &'static str)> {
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
struct Parser {
    errors: Vec<ConfigError>,
    warnings: Vec<Warning>,
    options: RawOptions,
    doors: Vec<RawDoor>,
    door_names: HashMap<String, usize>,
    section: Section,
}

impl Parser {
    fn error(&mut self, line: usize, message: String) {
        self.errors.push(ConfigError { line, message });
    }

    fn warn(&mut self, line: usize, message: String) {
        self.warnings.push(Warning { line, message });
    }

    fn line(&mut self, line: usize, raw: &str) {
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
                    format!("directive {}", quoted(key))
                } else {
                    format!("line {}", quoted(t))
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
                format!("{}: missing directive name before \"=\"", quoted(t)),
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
                format!("unknown directive {} in {place}{hint}", quoted(key)),
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
            Directive::KeyFile => {
                if v.is_empty() {
                    Some(format!("{key} is empty: give the path of a keys file"))
                } else {
                    d.key_files.push((line, v.to_owned()));
                    None
                }
            }
            Directive::AllowPorts => match parse_port_list(v) {
                Ok(mut ports) => {
                    let before = ports.len();
                    let mut seen = std::collections::HashSet::new();
                    ports.retain(|p| seen.insert(*p));
                    if ports.len() != before {
                        warnings.push(format!("{key} = {q} lists a port more than once"));
                    }
                    d.allow_ports = Some(ports);
                    None
                }
                Err(e) => Some(format!("{key} = {q}: {e}")),
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

    fn finish(mut self) -> Result<Config, Vec<ConfigError>> {
        let raw_doors = std::mem::take(&mut self.doors);
        let mut doors = Vec::new();
        for raw in raw_doors {
            if let Some(door) = self.resolve_door(raw) {
                doors.push(door);
            }
        }
        self.check_keys(&doors);
        if doors.is_empty() && self.errors.is_empty() {
            self.warn(
                1,
                "no doors are configured: nothing can be opened".to_owned(),
            );
        }
        if !self.errors.is_empty() {
            self.errors.sort_by_key(|e| e.line);
            return Err(self.errors);
        }
        self.warnings.sort_by_key(|w| w.line);
        Ok(Config {
            options: self.options.values,
            doors,
            warnings: self.warnings,
        })
    }

    fn resolve_door(&mut self, d: RawDoor) -> Option<Door> {
        let legacy = d.first_of(Scope::Legacy);
        let spa = d.first_of(Scope::Spa);
        let name = &d.name;
        if let (Some((ll, ln)), Some((sl, sn))) = (legacy, spa) {
            self.error(
                d.line,
                format!(
                    "door [{name}] mixes knock-sequence directives ({ln}, line {ll}) and SPA \
                     directives ({sn}, line {sl}): split it into two doors"
                ),
            );
            return None;
        }
        let is_spa = spa.is_some();
        if !is_spa {
            let commands = [
                (Directive::StartCommand, &d.start),
                (Directive::StartCommand6, &d.start6),
                (Directive::StopCommand, &d.stop),
                (Directive::StopCommand6, &d.stop6),
            ];
            for (dir, cmd) in commands {
                if let Some((line, t)) = cmd.as_ref().filter(|(_, t)| t.uses_port()) {
                    self.error(
                        *line,
                        format!(
                            "{} = {}: %PORT% and %PROTO% exist only in SPA doors (a knock door \
                             has no requested port)",
                            dir.name(),
                            quoted(t.as_str())
                        ),
                    );
                }
            }
        }
        let has = |dir: Directive| d.seen.contains_key(&dir);
        let has_start = [&d.start, &d.start6]
            .iter()
            .any(|c| c.as_ref().is_some_and(|(_, t)| !t.is_empty()));
        let has_stop = d.stop.is_some() || d.stop6.is_some();

        if is_spa {
            if !has(Directive::Keys) && !has(Directive::KeyFile) {
                self.error(
                    d.line,
                    format!("SPA door [{name}] has no Keys or KeyFile: no client could open it"),
                );
            }
            if !has(Directive::AllowPorts) {
                self.error(
                    d.line,
                    format!(
                        "SPA door [{name}] has no Allow_Ports: say which ports its keys may \
                         open (e.g. Allow_Ports = 22/tcp)"
                    ),
                );
            }
            if !has_start && !has(Directive::StartCommand) && !has(Directive::StartCommand6) {
                self.error(
                    d.line,
                    format!("SPA door [{name}] has no Start_Command: nothing to open"),
                );
            } else if !has_start && !d.had_error {
                self.error(
                    d.line,
                    format!("SPA door [{name}] has only empty start commands: nothing to open"),
                );
            }
            let cmd_timeout = d.cmd_timeout.map_or(DEFAULT_SPA_CMD_TIMEOUT, |(_, n)| n);
            let max_timeout = match d.max_timeout {
                Some((line, m)) if m < cmd_timeout => {
                    self.error(
                        line,
                        format!(
                            "Max_Timeout = {m} is less than Cmd_Timeout = {cmd_timeout} (the \
                             default open time cannot exceed the cap)"
                        ),
                    );
                    m
                }
                Some((_, m)) => m,
                None => cmd_timeout,
            };
            if has_start && !has_stop {
                self.warn(
                    d.line,
                    format!(
                        "SPA door [{name}] has no Stop_Command: what it opens stays open after \
                         the open time"
                    ),
                );
            }
            if d.start6.is_some() && d.stop6.is_none() && d.stop.is_some() {
                self.warn(
                    d.line,
                    format!(
                        "door [{name}] has Start_Command_6 but no Stop_Command_6: IPv6 grants \
                         are closed with Stop_Command (knockd's fallback)"
                    ),
                );
            }
            if d.had_error {
                return None;
            }
            let allow_ports = d.allow_ports?;
            return Some(Door {
                name: d.name,
                line: d.line,
                kind: DoorKind::Spa(SpaDoor {
                    keys: d.keys,
                    key_files: d.key_files,
                    allow_ports,
                    allow_nat: d.allow_nat.unwrap_or(false),
                    max_timeout,
                }),
                start_command: d.start.map(|(_, t)| t),
                start_command_6: d.start6.map(|(_, t)| t),
                stop_command: d.stop.map(|(_, t)| t),
                stop_command_6: d.stop6.map(|(_, t)| t),
                cmd_timeout,
            });
        }

        // A knock-sequence door (or a door with neither).
        match (has(Directive::Sequence), has(Directive::OneTimeSequences)) {
            (true, true) => {
                let l = d
                    .seen
                    .get(&Directive::OneTimeSequences)
                    .copied()
                    .unwrap_or(d.line);
                self.error(
                    l,
                    format!(
                        "door [{name}] has both Sequence and One_Time_Sequences: use one of them"
                    ),
                );
            }
            (false, false) if legacy.is_some() => {
                self.error(
                    d.line,
                    format!(
                        "door [{name}] has an empty knock sequence: add Sequence = ... or \
                         One_Time_Sequences = /path"
                    ),
                );
            }
            (false, false) => {
                self.error(
                    d.line,
                    format!(
                        "door [{name}] has neither a knock sequence (Sequence, \
                         One_Time_Sequences) nor SPA keys (Keys, KeyFile)"
                    ),
                );
            }
            _ => {}
        }
        if let Some((line, _)) = d.cmd_timeout {
            if !has_stop {
                self.warn(
                    line,
                    format!("door [{name}]: Cmd_Timeout has no effect without a Stop_Command"),
                );
            }
        }
        if d.start.is_none() && d.start6.is_none() {
            self.warn(
                d.line,
                format!("door [{name}] has no Start_Command: a completed knock is only logged"),
            );
        }
        if let (Some((line, flags)), Some((_, seq))) = (&d.tcp_flags, &d.sequence) {
            if !flags.is_empty() && seq.iter().all(|p| p.proto == Proto::Udp) {
                self.warn(
                    *line,
                    format!("door [{name}]: TCPFlags has no effect on a sequence of UDP ports"),
                );
            }
        }
        if d.had_error {
            return None;
        }
        let (sequence, one_time_file) = match (d.sequence, d.one_time) {
            (Some((_, s)), None) => (s, None),
            (None, Some((line, path))) => (Vec::new(), Some((path, line))),
            _ => return None,
        };
        Some(Door {
            name: d.name,
            line: d.line,
            kind: DoorKind::Sequence(SequenceDoor {
                sequence,
                one_time_file,
                seq_timeout: d.seq_timeout.unwrap_or(DEFAULT_SEQ_TIMEOUT),
                tcp_flags: d.tcp_flags.map(|(_, f)| f).unwrap_or_default(),
                target: d.target,
            }),
            start_command: d.start.map(|(_, t)| t),
            start_command_6: d.start6.map(|(_, t)| t),
            stop_command: d.stop.map(|(_, t)| t),
            stop_command_6: d.stop6.map(|(_, t)| t),
            cmd_timeout: d.cmd_timeout.map_or(DEFAULT_CMD_TIMEOUT, |(_, n)| n),
        })
    }

    /// One name, one secret: across all doors a key name maps to one key id and back, so the
    /// server's key-id lookup is unambiguous and log lines name the right key.
    fn check_keys(&mut self, doors: &[Door]) {
        let mut by_name: HashMap<&str, (KeyId, usize)> = HashMap::new();
        let mut by_id: HashMap<KeyId, (&str, usize)> = HashMap::new();
        let mut problems = Vec::new();
        for door in doors {
            let Some(spa) = door.spa() else { continue };
            let mut in_door: HashMap<&str, usize> = HashMap::new();
            for (line, key) in &spa.keys {
                let id = key.derive().id();
                let name = key.name();
                if let Some(first) = in_door.insert(name, *line) {
                    problems.push((
                        *line,
                        format!(
                            "Keys: key {} is listed twice in door [{}] (first on line {first})",
                            quoted(name),
                            door.name
                        ),
                    ));
                    continue;
                }
                match by_name.get(name) {
                    Some(&(other, first)) if other != id => problems.push((
                        *line,
                        format!(
                            "Keys: key {} is defined with a different secret on line {first}: \
                             a key name must mean one secret",
                            quoted(name)
                        ),
                    )),
                    Some(_) => {}
                    None => {
                        by_name.insert(name, (id, *line));
                    }
                }
                match by_id.get(&id) {
                    Some(&(other, first)) if other != name => problems.push((
                        *line,
                        format!(
                            "Keys: key {} has the same secret as key {} on line {first}: \
                             a secret must have one name",
                            quoted(name),
                            quoted(other)
                        ),
                    )),
                    Some(_) => {}
                    None => {
                        by_id.insert(id, (name, *line));
                    }
                }
            }
        }
        for (line, message) in problems {
            self.error(line, message);
        }
    }
}

/// Parses a `Keys` value (`NAME:BASE64, NAME:BASE64`) into `out`. Messages name the key but
/// never show the secret.
fn keys_value(key: &str, v: &str, line: usize, out: &mut Vec<(usize, NamedKey)>) -> Option<String> {
    if v.is_empty() {
        return Some(format!(
            "{key} is empty: give NAME:BASE64 entries separated by commas"
        ));
    }
    for (i, entry) in v.split(',').enumerate() {
        let entry = entry.trim();
        match inline_key(entry) {
            Ok(k) => out.push((line, k)),
            Err(why) => return Some(format!("{key}: entry {}{why}", i + 1)),
        }
    }
    None
}

/// One `NAME:BASE64`; the error text names the key (or not, if there is no name) and never
/// includes the secret.
fn inline_key(entry: &str) -> Result<NamedKey, String> {
    if entry.is_empty() {
        return Err(" is empty".to_owned());
    }
    let Some((name, _)) = entry.split_once(':') else {
        return Err(" is not NAME:BASE64 (value not shown: it may hold a secret)".to_owned());
    };
    NamedKey::from_inline(entry).map_err(|e| format!(" (key {}): {e}", quoted(name.trim())))
}

/// Parses a configuration text. On success the [`Config`] carries the warnings; on failure
/// every error found, in line order.
pub fn parse_str(text: &str) -> Result<Config, Vec<ConfigError>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut p = Parser::default();
    for (idx, raw) in text.lines().enumerate() {
        p.line(idx + 1, raw);
    }
    p.finish()
}

// ---------------------------------------------------------------------------------------------
// Keys files
// ---------------------------------------------------------------------------------------------

/// Parses the text of a `KeyFile`: one `NAME:BASE64` per line (the form `knock-spa keygen`
/// prints for servers), blank lines and `#` comments skipped. Every error is collected; a
/// name given twice and a file without keys are errors. Messages never show a secret.
pub fn parse_keys_file(text: &str) -> Result<Vec<(usize, NamedKey)>, Vec<ConfigError>> {
    let mut keys: Vec<(usize, NamedKey)> = Vec::new();
    let mut errors = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut last = 0;
    for (idx, raw) in text.lines().enumerate() {
        let line = idx + 1;
        last = line;
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let looks_like_keyfile = t.split_once('=').is_some_and(|(k, _)| {
            matches!(k.trim().to_ascii_lowercase().as_str(), "name" | "secret")
        });
        if looks_like_keyfile {
            errors.push(ConfigError {
                line,
                message: "this looks like a client keyfile (name = / secret =); a KeyFile holds \
                          one NAME:BASE64 per line"
                    .to_owned(),
            });
            continue;
        }
        match inline_key(t) {
            Ok(k) => match names.entry(k.name().to_owned()) {
                Entry::Occupied(first) => errors.push(ConfigError {
                    line,
                    message: format!(
                        "key {} given twice (first on line {})",
                        quoted(k.name()),
                        first.get()
                    ),
                }),
                Entry::Vacant(e) => {
                    e.insert(line);
                    keys.push((line, k));
                }
            },
            Err(why) => errors.push(ConfigError {
                line,
                message: format!("key line{why}"),
            }),
        }
    }
    if keys.is_empty() && errors.is_empty() {
        errors.push(ConfigError {
            line: last.max(1),
            message: "the file holds no keys".to_owned(),
        });
    }
    if errors.is_empty() {
        Ok(keys)
    } else {
        Err(errors)
    }
}

// ---------------------------------------------------------------------------------------------
// One-time sequences
// ---------------------------------------------------------------------------------------------

/// One usable line of a one-time sequences file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OneTimeSeq {
    /// 1-based line number.
    pub line: usize,
    /// Offset of the line's first byte in the text (where knockd writes its `#`).
    pub byte_offset: usize,
    /// The sequence.
    pub knocks: Vec<PortSpec>,
}

/// Parses a one-time sequences file (knockd's format): one sequence per line in `Sequence`
/// syntax; lines that are blank or whose first non-blank character is `#` (used or comment)
/// are skipped. Unlike knockd, which skips a malformed line silently, a malformed line is an
/// error. The usable lines are returned in file order; the first one is the current sequence.
pub fn parse_one_time_sequences(text: &str) -> Result<Vec<OneTimeSeq>, ConfigError> {
    let mut out = Vec::new();
    let mut offset = 0;
    for (idx, raw) in text.split_inclusive('\n').enumerate() {
        let line = idx + 1;
        let start = offset;
        offset += raw.len();
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let knocks = parse_sequence(t).map_err(|e| ConfigError {
            line,
            message: format!("one-time sequence {}: {e}", quoted(t)),
        })?;
        out.push(OneTimeSeq {
            line,
            byte_offset: start,
            knocks,
        });
    }
    Ok(out)
}

/// Disables a used sequence as knockd does: the first character of line `line` (1-based)
/// becomes `#` (a multi-byte character is replaced whole). The text is returned unchanged if
/// the line does not exist or is empty (knockd would overwrite the newline; we do not). The
/// server writes the result atomically.
pub fn mark_used(text: &str, line: usize) -> String {
    let mut offset = 0;
    for (idx, raw) in text.split_inclusive('\n').enumerate() {
        if idx + 1 == line {
            // A blank line holds no sequence. Any other line is disabled by its first
            // character, whatever it is: a line starting with '\r' (or a blank) still parses
            // as a sequence once trimmed, so it must be marked too.
            let Some(first) = raw.chars().next().filter(|_| !raw.trim().is_empty()) else {
                break;
            };
            let mut out = String::with_capacity(text.len());
            out.push_str(&text[..offset]);
            out.push('#');
            out.push_str(&text[offset + first.len_utf8()..]);
            return out;
        }
        offset += raw.len();
    }
    text.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const ALICE: &str = "alice:BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
    const BOB: &str = "bob:CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=";
    const CAROL: &str = "carol:CwsLCwsLCwsLCwsLCwsLCwsLCwsLCwsLCwsLCwsLCws=";
    /// The secret part of ALICE, to check it never appears in a message.
    const ALICE_SECRET: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

    #[test]
    fn mark_used_disables_a_line_starting_with_a_carriage_return() {
        // Found by the `config` fuzz target: "\r1111,2222" trims to a sequence, and was left
        // unmarked, so it stayed valid for ever.
        let text = "\r1111,2222\n3333,4444\n";
        let marked = mark_used(text, 1);
        assert_eq!(marked, "#1111,2222\n3333,4444\n");
        let left = parse_one_time_sequences(&marked).expect("parses");
        assert_eq!(left.len(), 1, "{left:?}");
        // Blank lines are left alone.
        assert_eq!(mark_used("\n \n", 1), "\n \n");
    }

    fn ok(text: &str) -> Config {
        match parse_str(text) {
            Ok(c) => c,
            Err(errors) => panic!("unexpected errors: {errors:#?}"),
        }
    }

    fn errs(text: &str) -> Vec<ConfigError> {
        match parse_str(text) {
            Ok(c) => panic!("parsed but should not: {c:#?}"),
            Err(e) => e,
        }
    }

    fn ps(port: u16, proto: Proto) -> PortSpec {
        PortSpec::new(proto, port).expect("test ports are non-zero")
    }

    fn tcp(ports: &[u16]) -> Vec<PortSpec> {
        ports.iter().map(|&p| ps(p, Proto::Tcp)).collect()
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    fn seq(door: &Door) -> &SequenceDoor {
        door.sequence().expect("a knock-sequence door")
    }

    fn argv(t: &CommandTemplate, ip: IpAddr, port: Option<PortSpec>) -> String {
        t.render(ip, port).join(" | ")
    }

    fn start(door: &Door) -> &CommandTemplate {
        door.start_command.as_ref().expect("start command")
    }

    // ---- Debian's shipped /etc/knockd.conf (knockd 0.8-3 on Debian 12), verbatim. ----
    const DEBIAN: &str = "[options]
\tUseSyslog

[openSSH]
\tsequence    = 7000,8000,9000
\tseq_timeout = 5
\tcommand     = /sbin/iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
\ttcpflags    = syn

[closeSSH]
\tsequence    = 9000,8000,7000
\tseq_timeout = 5
\tcommand     = /sbin/iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
\ttcpflags    = syn

[openHTTPS]
\tsequence    = 12345,54321,24680,13579
\tseq_timeout = 5
\tcommand     = /usr/local/sbin/knock_add -i -c INPUT -p tcp -d 443 -f %IP%
\ttcpflags    = syn

";

    #[test]
    fn debian_default_config() {
        let c = ok(DEBIAN);
        assert!(c.options.use_syslog);
        assert_eq!(
            c.options,
            Options {
                use_syslog: true,
                ..Options::default()
            }
        );
        let names: Vec<&str> = c.doors.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["openSSH", "closeSSH", "openHTTPS"]);

        let open = c.door("openSSH").expect("openSSH");
        assert_eq!(open.line, 4);
        let s = seq(open);
        assert_eq!(s.sequence, tcp(&[7000, 8000, 9000]));
        assert_eq!(s.seq_timeout, 5);
        assert_eq!(
            s.tcp_flags,
            TcpFlags {
                must_set: TcpFlags::SYN,
                must_clear: 0
            }
        );
        assert_eq!(s.one_time_file, None);
        assert_eq!(s.target, None);
        assert_eq!(open.cmd_timeout, DEFAULT_CMD_TIMEOUT);
        assert_eq!(
            start(open).to_string(),
            "/sbin/iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT"
        );
        assert_eq!(
            start(open).render(v4(192, 0, 2, 7), None),
            [
                "/sbin/iptables",
                "-A",
                "INPUT",
                "-s",
                "192.0.2.7",
                "-p",
                "tcp",
                "--dport",
                "22",
                "-j",
                "ACCEPT"
            ]
        );
        assert!(open.stop_command.is_none());

        assert_eq!(
            seq(c.door("openHTTPS").expect("door")).sequence,
            tcp(&[12345, 54321, 24680, 13579])
        );
        assert_eq!(
            argv(
                start(c.door("openHTTPS").expect("door")),
                v4(10, 0, 0, 1),
                None
            ),
            "/usr/local/sbin/knock_add | -i | -c | INPUT | -p | tcp | -d | 443 | -f | 10.0.0.1"
        );
        // Only openSSH's ascending sequence is worth a warning.
        let w: Vec<(usize, &str)> = c
            .warnings
            .iter()
            .map(|w| (w.line, w.message.as_str()))
            .collect();
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].0, 5);
        assert!(w[0].1.contains("7000,8000,9000 is ascending"), "{}", w[0].1);
    }

    // ---- knockd(1), the four examples (doc/knockd.1.in, with roff's \- as -). ----
    const MAN_1: &str = "[options]
\tlogfile = /var/log/knockd.log

[openSSH]
\tsequence    = 7000,8000,9000
\tseq_timeout = 10
\ttcpflags    = syn
\tcommand     = /usr/sbin/iptables -A INPUT -s %IP% --dport 22 -j ACCEPT

[closeSSH]
\tsequence    = 9000,8000,7000
\tseq_timeout = 10
\ttcpflags    = syn
\tcommand     = /usr/sbin/iptables -D INPUT -s %IP% --dport 22 -j ACCEPT
";

    const MAN_2: &str = "[options]
\tlogfile = /var/log/knockd.log

[opencloseSSH]
\tsequence      = 2222:udp,3333:tcp,4444:udp
\tseq_timeout   = 15
\ttcpflags      = syn,ack
\tstart_command = /usr/sbin/iptables -A INPUT -s %IP% -p tcp --syn -j ACCEPT
\tcmd_timeout   = 5
\tstop_command  = /usr/sbin/iptables -D INPUT -s %IP% -p tcp --syn -j ACCEPT
";

    const MAN_3: &str = "[options]
\tlogfile = /var/log/knockd.log

[opencloseSMTP]
\tone_time_sequences = /etc/knockd/smtp_sequences
\tseq_timeout        = 15
\ttcpflags           = fin,!ack
\tstart_command      = /usr/sbin/iptables -A INPUT -s %IP% -p tcp --dport 25 -j ACCEPT
\tcmd_timeout        = 5
\tstop_command       = /usr/sbin/iptables -D INPUT -s %IP% -p tcp --dport 25 -j ACCEPT
\t
";

    const MAN_4: &str = "[options]
\tlogfile = /var/log/knockd.log

[opencloseSMTP]
\tone_time_sequences = /etc/knockd/smtp_sequences
\tseq_timeout        = 15
\ttcpflags           = fin,!ack
\tstart_command      = /usr/sbin/iptables -A INPUT -s %IP% -p tcp --dport 25 -j ACCEPT
\tstart_command_6    = /usr/sbin/ip6tables -A INPUT -s %IP% -p tcp --dport 25 -j ACCEPT
\tcmd_timeout        = 5
\tstop_command       = /usr/sbin/iptables -D INPUT -s %IP% -p tcp --dport 25 -j ACCEPT
\tstop_command_6     = /usr/sbin/ip6tables -D INPUT -s %IP% -p tcp --dport 25 -j ACCEPT
\t
";

    #[test]
    fn man_page_example_1() {
        let c = ok(MAN_1);
        assert_eq!(c.options.log_file.as_deref(), Some("/var/log/knockd.log"));
        assert!(!c.options.use_syslog);
        assert_eq!(c.doors.len(), 2);
        let close = c.door("closeSSH").expect("door");
        assert_eq!(seq(close).sequence, tcp(&[9000, 8000, 7000]));
        assert_eq!(seq(close).seq_timeout, 10);
        assert!(start(close).as_str().contains("-D INPUT"));
    }

    #[test]
    fn man_page_example_2_mixed_protocols_and_flags() {
        let c = ok(MAN_2);
        let d = c.door("opencloseSSH").expect("door");
        let s = seq(d);
        assert_eq!(
            s.sequence,
            [
                ps(2222, Proto::Udp),
                ps(3333, Proto::Tcp),
                ps(4444, Proto::Udp)
            ]
        );
        assert_eq!(s.seq_timeout, 15);
        assert_eq!(s.tcp_flags.must_set, TcpFlags::SYN | TcpFlags::ACK);
        assert_eq!(s.tcp_flags.must_clear, 0);
        assert_eq!(d.cmd_timeout, 5);
        let stop = d.stop_command.as_ref().expect("stop");
        assert_eq!(
            stop.render(v4(198, 51, 100, 9), None),
            [
                "/usr/sbin/iptables",
                "-D",
                "INPUT",
                "-s",
                "198.51.100.9",
                "-p",
                "tcp",
                "--syn",
                "-j",
                "ACCEPT"
            ]
        );
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn man_page_example_3_one_time_sequences() {
        let c = ok(MAN_3);
        let d = c.door("opencloseSMTP").expect("door");
        let s = seq(d);
        assert!(s.sequence.is_empty());
        assert_eq!(
            s.one_time_file,
            Some(("/etc/knockd/smtp_sequences".to_owned(), 5))
        );
        assert_eq!(
            s.tcp_flags,
            TcpFlags {
                must_set: TcpFlags::FIN,
                must_clear: TcpFlags::ACK
            }
        );
        assert_eq!(s.tcp_flags.to_string(), "fin,!ack");
        assert_eq!(d.cmd_timeout, 5);
        // No _6 commands: IPv6 falls back to the IPv4 ones, as knockd does.
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert_eq!(d.start_command_for(v6), d.start_command.as_ref());
        assert_eq!(d.stop_command_for(v6), d.stop_command.as_ref());
    }

    #[test]
    fn man_page_example_4_ipv6_commands() {
        let c = ok(MAN_4);
        let d = c.door("opencloseSMTP").expect("door");
        let v6: IpAddr = "2001:db8::1".parse().expect("ip");
        let v4a = v4(203, 0, 113, 5);
        assert_eq!(
            d.start_command_for(v6).expect("v6").render(v6, None),
            [
                "/usr/sbin/ip6tables",
                "-A",
                "INPUT",
                "-s",
                "2001:db8::1",
                "-p",
                "tcp",
                "--dport",
                "25",
                "-j",
                "ACCEPT"
            ]
        );
        assert_eq!(
            d.start_command_for(v4a).expect("v4").render(v4a, None)[0],
            "/usr/sbin/iptables"
        );
        assert_eq!(
            d.stop_command_for(v6).expect("v6").render(v6, None)[1],
            "-D"
        );
        assert_eq!(
            d.stop_command_for(v6).expect("v6").render(v6, None)[0],
            "/usr/sbin/ip6tables"
        );
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    // ---- The classic walkthrough, which the interoperability tests run. ----
    const CLASSIC: &str = "[options]
    logfile = /var/log/knockd.log

[openSSH]
    sequence    = 7000,8000,9000
    seq_timeout = 15
    tcpflags    = syn
    command     = /sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT

[closeSSH]
    sequence    = 9000,8000,7000
    seq_timeout = 15
    tcpflags    = syn
    command     = /sbin/iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
";

    #[test]
    fn classic_walkthrough() {
        let c = ok(CLASSIC);
        let open = c.door("openSSH").expect("door");
        let close = c.door("closeSSH").expect("door");
        assert_eq!(seq(open).sequence, tcp(&[7000, 8000, 9000]));
        assert_eq!(seq(close).sequence, tcp(&[9000, 8000, 7000]));
        assert_eq!(seq(open).seq_timeout, 15);
        assert!(seq(open).tcp_flags.matches(0x02)); // SYN
        assert!(seq(open).tcp_flags.matches(0x02 | 0x10)); // SYN+ACK also has SYN
        assert!(!seq(open).tcp_flags.matches(0x10)); // ACK alone
        let ip = v4(10, 1, 2, 3);
        assert_eq!(
            open.start_command_for(ip).expect("cmd").render(ip, None),
            [
                "/sbin/iptables",
                "-I",
                "INPUT",
                "-s",
                "10.1.2.3",
                "-p",
                "tcp",
                "--dport",
                "22",
                "-j",
                "ACCEPT"
            ]
        );
        assert_eq!(
            close.start_command_for(ip).expect("cmd").render(ip, None)[1],
            "-D"
        );
        assert!(open.stop_command_for(ip).is_none());
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].message.contains("ascending"));
        assert_eq!(c.warnings[0].line, 5);
    }

    // ---- A legacy door and an SPA door in one file, with every extension option. ----
    fn mixed() -> String {
        format!(
            "# knock-spa: one file for knock and SPA
[options]
    UseSyslog
    LogFile = /var/log/knock-spad.log
    PidFile = /run/knock-spad.pid
    Interface = any
    SpaPort = 4500
    StateDir = /var/lib/knock-spa-test
    ServerName = gw.example.org, gw
    SpaWindow = 30
    Capture = udp
    ReplayCacheSize = 1024
    KeepRulesOnExit

[openSSH]
    sequence    = 7000,9000,8000
    seq_timeout = 15
    tcpflags    = syn
    start_command = /sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
    cmd_timeout = 20
    stop_command  = /sbin/iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT

[spaSSH]
    Keys = {ALICE}, {BOB}
    Keys = {CAROL}
    KeyFile = /etc/knock-spa/ops.keys
    Allow_Ports = 22/tcp, 2222, 53:udp
    Allow_NAT = yes
    Cmd_Timeout = 60
    Max_Timeout = 600
    Start_Command   = /sbin/iptables -I INPUT -s %IP% -p %PROTO% --dport %PORT% -j ACCEPT
    Start_Command_6 = /sbin/ip6tables -I INPUT -s %IP% -p %PROTO% --dport %PORT% -j ACCEPT
    Stop_Command    = /sbin/iptables -D INPUT -s %IP% -p %PROTO% --dport %PORT% -j ACCEPT
    Stop_Command_6  = /sbin/ip6tables -D INPUT -s %IP% -p %PROTO% --dport %PORT% -j ACCEPT
"
        )
    }

    #[test]
    fn mixed_legacy_and_spa() {
        let c = ok(&mixed());
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let o = &c.options;
        assert!(o.use_syslog && o.keep_rules_on_exit);
        assert_eq!(o.log_file.as_deref(), Some("/var/log/knock-spad.log"));
        assert_eq!(o.pid_file.as_deref(), Some("/run/knock-spad.pid"));
        assert_eq!(o.interface.as_deref(), Some("any"));
        assert_eq!(o.spa_port.get(), 4500);
        assert_eq!(o.state_dir, "/var/lib/knock-spa-test");
        assert_eq!(o.server_names, ["gw.example.org", "gw"]);
        assert_eq!(o.spa_window, 30);
        assert_eq!(o.capture, Capture::Udp);
        assert_eq!(o.replay_cache_size, 1024);

        let legacy = c.door("openSSH").expect("door");
        assert_eq!(legacy.cmd_timeout, 20);
        assert!(legacy.spa().is_none());

        let d = c.door("spaSSH").expect("door");
        assert!(d.sequence().is_none());
        let spa = d.spa().expect("spa");
        let names: Vec<(usize, &str)> = spa.keys.iter().map(|(l, k)| (*l, k.name())).collect();
        assert_eq!(names, [(24, "alice"), (24, "bob"), (25, "carol")]);
        assert_eq!(spa.key_files, [(26, "/etc/knock-spa/ops.keys".to_owned())]);
        assert_eq!(
            spa.allow_ports,
            [ps(22, Proto::Tcp), ps(2222, Proto::Tcp), ps(53, Proto::Udp)]
        );
        assert!(spa.allow_nat);
        assert_eq!(d.cmd_timeout, 60);
        assert_eq!(spa.max_timeout, 600);
        let ip: IpAddr = "2001:db8::7".parse().expect("ip");
        assert_eq!(
            d.start_command_for(ip)
                .expect("cmd")
                .render(ip, Some(ps(53, Proto::Udp))),
            [
                "/sbin/ip6tables",
                "-I",
                "INPUT",
                "-s",
                "2001:db8::7",
                "-p",
                "udp",
                "--dport",
                "53",
                "-j",
                "ACCEPT"
            ]
        );
        let ip = v4(192, 0, 2, 1);
        assert_eq!(
            argv(
                d.stop_command_for(ip).expect("cmd"),
                ip,
                Some(ps(22, Proto::Tcp))
            ),
            "/sbin/iptables | -D | INPUT | -s | 192.0.2.1 | -p | tcp | --dport | 22 | -j | ACCEPT"
        );
    }

    #[test]
    fn spa_defaults() {
        let c = ok(&format!(
            "[web]\nkeys = {ALICE}\nallow_ports = 443\nstart_command = /bin/true %IP%\nstop_command = /bin/true\n"
        ));
        let d = c.door("web").expect("door");
        assert_eq!(d.cmd_timeout, DEFAULT_SPA_CMD_TIMEOUT);
        let spa = d.spa().expect("spa");
        assert_eq!(spa.max_timeout, DEFAULT_SPA_CMD_TIMEOUT);
        assert!(!spa.allow_nat);
        assert_eq!(c.options, Options::default());
        assert_eq!(c.options.spa_port.get(), 62201);
        assert_eq!(c.options.state_dir, "/var/lib/knock-spa");
        assert_eq!(c.options.spa_window, 60);
        assert_eq!(c.options.capture, Capture::Pcap);
        assert_eq!(c.options.replay_cache_size, 65_536);
        assert!(c.options.server_names.is_empty());
        // Max_Timeout alone raises the cap, the default open time stays.
        let c = ok(&format!(
            "[web]\nkeys = {ALICE}\nallow_ports = 443\nmax_timeout = 3600\nstart_command = /bin/true\nstop_command = /bin/true\n"
        ));
        let d = c.door("web").expect("door");
        assert_eq!(
            (d.cmd_timeout, d.spa().expect("spa").max_timeout),
            (30, 3600)
        );
    }

    #[test]
    fn knockd_spellings_and_case() {
        // Directive names in any case, knockd's aliases, `=` inside values, blanks around.
        let c = ok(
            "[options]\nLOGFILE=/tmp/a=b.log\n[Door One]\nSEQUENCE=1:UDP , 2 :tcp,3\n\
                    Timeout=7\nTcpFlags = SYN , !Ack\nCommand=/bin/echo %IP%\nCommand_6=\n\
                    Target = 192.0.2.10\n",
        );
        assert_eq!(c.options.log_file.as_deref(), Some("/tmp/a=b.log"));
        let d = c.door("Door One").expect("door");
        let s = seq(d);
        assert_eq!(
            s.sequence,
            [ps(1, Proto::Udp), ps(2, Proto::Tcp), ps(3, Proto::Tcp)]
        );
        assert_eq!(s.seq_timeout, 7);
        assert_eq!(
            s.tcp_flags,
            TcpFlags {
                must_set: TcpFlags::SYN,
                must_clear: TcpFlags::ACK
            }
        );
        assert_eq!(s.target, Some(v4(192, 0, 2, 10)));
        // Command_6 set to nothing: IPv6 knockers run nothing (knockd's documented way).
        assert!(d
            .start_command_for(IpAddr::V6(Ipv6Addr::LOCALHOST))
            .is_none());
        assert!(d.start_command_for(v4(1, 2, 3, 4)).is_some());
        // Door names are case-sensitive: [door one] is another door.
        assert!(c.door("door one").is_none());
        // UseSyslog as a bare flag inside a door is accepted by knockd: a warning here.
        let c = ok("[d]\nsequence = 9,8\nUseSyslog\n");
        assert!(c.options.use_syslog);
        assert!(c
            .warnings
            .iter()
            .any(|w| w.line == 3 && w.message.contains("[options]")));
    }

    // ---- Malformed inputs: (text, line, phrase in the message). ----
    #[test]
    fn malformed_inputs() {
        let door = "[d]\nsequence = 7000,9000,8000\n";
        let spa_head = format!("[s]\nkeys = {ALICE}\nallow_ports = 22\n");
        let cases: Vec<(String, usize, &str)> = vec![
            ("[options]\nFooBar = 1\n".into(), 2, "unknown directive \"FooBar\" in [options]"),
            (format!("{door}colour = red\n"), 3, "unknown directive \"colour\" in door [d]"),
            ("sequence = 1,2\n[d]\n".into(), 1, "before any section"),
            ("# c\n\n  logfile = /x\n".into(), 3, "before any section"),
            ("[openSSH\nsequence = 1,2\n".into(), 1, "malformed section header \"[openSSH\""),
            ("[d] # comment\n".into(), 1, "malformed section header"),
            ("[]\n".into(), 1, "empty section name"),
            (format!("{door}[d]\nsequence = 3,2\n"), 3, "duplicate door name [d] (first defined on line 1)"),
            ("[d]\nsequence =\n".into(), 2, "the sequence is empty"),
            ("[d]\nsequence = 7000,,8000\n".into(), 2, "element 2 is empty"),
            ("[d]\nsequence = 7000,0\n".into(), 2, "bad element \"0\": port must be a number from 1 to 65535"),
            ("[d]\nsequence = 65536,2\n".into(), 2, "bad element \"65536\""),
            ("[d]\nsequence = 70a0,2\n".into(), 2, "bad element \"70a0\""),
            ("[d]\nsequence = 7000:sctp\n".into(), 2, "protocol must be tcp or udp"),
            (format!("{door}tcpflags = syn,fog\n"), 3, "unknown flag \"fog\""),
            (format!("{door}tcpflags = syn,!syn\n"), 3, "flag syn is both required and excluded"),
            (format!("{door}seq_timeout = abc\n"), 3, "seq_timeout = \"abc\": expected a whole number of seconds from 1 to 31536000"),
            (format!("{door}seq_timeout = 0\n"), 3, "seq_timeout = \"0\""),
            (format!("{door}cmd_timeout = -5\n"), 3, "cmd_timeout = \"-5\""),
            (format!("{door}cmd_timeout = 10s\n"), 3, "cmd_timeout = \"10s\""),
            (format!("{door}target = gw.example.org\n"), 3, "target = \"gw.example.org\": expected an IPv4 or IPv6 address"),
            (format!("{door}sequence = 1,2\n"), 3, "sequence given twice (first on line 2"),
            (format!("{door}command = a\nstart_command = b\n"), 4, "start_command given twice (first on line 3; Start_Command"),
            (format!("{door}command = /sbin/x %IPADDR%\n"), 3, "unknown placeholder %IPADDR%"),
            (format!("{door}command = /sbin/x %ip%\n"), 3, "must be written in capitals: %IP%"),
            (format!("{door}command = /sbin/x --dport %PORT%\n"), 3, "%PORT% and %PROTO% exist only in SPA doors"),
            (format!("{door}stop_command = /sbin/x -p %PROTO%\n"), 3, "Stop_Command = \"/sbin/x -p %PROTO%\": %PORT%"),
            (format!("{door}command = /bin/echo 'unterminated\n"), 3, "unterminated ' quote"),
            (format!("{door}sequence\n"), 3, "sequence needs a value"),
            (format!("{door}logfile = /x\n"), 3, "logfile belongs in [options], not in door [d]"),
            ("[options]\nsequence = 1,2\n".into(), 2, "sequence is a door directive"),
            ("[options]\nbogus\n".into(), 2, "unknown directive \"bogus\" in [options] (expected \"Directive = value\")"),
            ("[options]\n= 5\n".into(), 2, "missing directive name"),
            ("[Options]\nlogfile = /x\n".into(), 2, "logfile belongs in [options], not in door [Options]"),
            ("[d]\nseq_timeout = 5\n".into(), 1, "door [d] has an empty knock sequence"),
            ("[d]\ncommand = /bin/true\n".into(), 1, "door [d] has neither a knock sequence"),
            (format!("{door}one_time_sequences = /etc/x\n"), 3, "both Sequence and One_Time_Sequences"),
            (format!("{door}keys = {ALICE}\n"), 1, "door [d] mixes knock-sequence directives (Sequence, line 2) and SPA directives (Keys, line 3)"),
            ("[s]\nallow_ports = 22\nstart_command = /bin/true\n".into(), 1, "SPA door [s] has no Keys or KeyFile"),
            (format!("[s]\nkeys = {ALICE}\nstart_command = /bin/true\n"), 1, "SPA door [s] has no Allow_Ports"),
            (spa_head.clone(), 1, "SPA door [s] has no Start_Command: nothing to open"),
            (format!("{spa_head}start_command =\n"), 1, "only empty start commands"),
            (format!("{spa_head}start_command = /bin/true\ncmd_timeout = 60\nmax_timeout = 10\n"), 6, "Max_Timeout = 10 is less than Cmd_Timeout = 60"),
            (format!("{spa_head}start_command = /bin/true\nmax_timeout = 10\n"), 5, "less than Cmd_Timeout = 30"),
            (format!("[s]\nkeys = {ALICE}\nallow_ports = 22/tcp, 0\n"), 3, "allow_ports = \"22/tcp, 0\": bad element \"0\""),
            (format!("[s]\nkeys = {ALICE}\nallow_ports = 22,\n"), 3, "element 2 is empty"),
            (format!("[s]\nkeys = {ALICE}\nallow_nat = maybe\n"), 3, "allow_nat = \"maybe\": expected yes or no"),
            ("[s]\nkeys = alice:notbase64!!\n".into(), 2, "keys: entry 1 (key \"alice\"): the secret is not valid base64"),
            ("[s]\nkeys = alice:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==\n".into(), 2, "the secret is 31 bytes, expected 32"),
            (format!("[s]\nkeys = {ALICE}, bad name:{ALICE_SECRET}\n"), 2, "entry 2 (key \"bad name\"): invalid key name"),
            (format!("[s]\nkeys = {ALICE}, {ALICE_SECRET}\n"), 2, "entry 2 is not NAME:BASE64"),
            (format!("[s]\nkeys = {ALICE},{ALICE}\nallow_ports = 22\ncommand = /bin/true\n"), 2, "key \"alice\" is listed twice in door [s]"),
            ("[options]\nspaport = 0\n".into(), 2, "spaport = \"0\": port must be a number from 1 to 65535"),
            ("[options]\nSpaWindow = 3601\n".into(), 2, "SpaWindow = \"3601\": expected a whole number of seconds from 1 to 3600"),
            ("[options]\nCapture = bpf\n".into(), 2, "Capture = \"bpf\": expected pcap or udp"),
            ("[options]\nReplayCacheSize = 10\n".into(), 2, "ReplayCacheSize = \"10\": expected a whole number of entries from 64"),
            ("[options]\nStateDir = var/lib/x\n".into(), 2, "StateDir = \"var/lib/x\": expected an absolute directory path"),
            ("[options]\nServerName = a,,b\n".into(), 2, "ServerName = \"a,,b\": name 2 is empty"),
            ("[options]\nInterface = eth0 eth1\n".into(), 2, "Interface = \"eth0 eth1\": expected an interface name"),
            ("[options]\nUseSyslog = sometimes\n".into(), 2, "UseSyslog = \"sometimes\": expected yes or no"),
            ("[options]\nUseSyslog\nUseSyslog\n".into(), 3, "UseSyslog given twice"),
            ("[options]\nLogFile =\n".into(), 2, "LogFile is empty"),
        ];
        assert!(cases.len() >= 20);
        for (text, line, phrase) in &cases {
            let e = errs(text);
            assert!(
                e.iter()
                    .any(|e| e.line == *line && e.message.contains(phrase)),
                "input {text:?}: expected line {line} with {phrase:?}, got {e:#?}"
            );
            for e in &e {
                assert!(!e.message.contains(ALICE_SECRET), "secret in {e}");
                assert!(!e.to_string().contains(ALICE_SECRET));
            }
        }
    }

    #[test]
    fn every_error_is_collected_in_line_order() {
        let text = "[options]\nbogus = 1\n[d]\nsequence = 0\nseq_timeout = x\ntcpflags = nope\n\
                    [d]\n[e]\nsequence = 5,4\nmystery = 1\n";
        let e = errs(text);
        let lines: Vec<usize> = e.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 4, 5, 6, 7, 10], "{e:#?}");
        assert_eq!(
            e[0].to_string(),
            "line 2: unknown directive \"bogus\" in [options]"
        );
        // No follow-up "empty sequence" error for a door whose sequence was malformed.
        assert!(!e.iter().any(|e| e.message.contains("empty knock sequence")));
    }

    #[test]
    fn same_key_across_doors() {
        let door = |name: &str, key: &str, port: u16| {
            format!("[{name}]\nkeys = {key}\nallow_ports = {port}\ncommand = /bin/true\nstop_command = /bin/true\n")
        };
        // The same key in two doors is fine.
        let c = ok(&(door("a", ALICE, 22) + &door("b", ALICE, 80)));
        assert_eq!(c.doors.len(), 2);
        // One name, two secrets.
        let other = format!("alice:{}", &BOB[4..]);
        let e = errs(&(door("a", ALICE, 22) + &door("b", &other, 80)));
        assert!(
            e.iter()
                .any(|e| e.line == 7 && e.message.contains("different secret on line 2")),
            "{e:?}"
        );
        // One secret, two names.
        let alias = format!("alias:{ALICE_SECRET}");
        let e = errs(&(door("a", ALICE, 22) + &door("b", &alias, 80)));
        assert!(
            e.iter()
                .any(|e| e.line == 7 && e.message.contains("same secret as key \"alice\"")),
            "{e:?}"
        );
        assert!(e.iter().all(|e| !e.message.contains(ALICE_SECRET)));
    }

    #[test]
    fn warnings() {
        let c = ok(
            "[d]\nsequence = 2222:udp,3333:udp\ntcpflags = syn\ncmd_timeout = 5\n\
                    [e]\nsequence = 80\ncommand = /bin/true\n[f]\nsequence = 9,5,5,1\n\
                    command = /sbin/iptables -I INPUT -s %IP% -j ACCEPT; logger opened\n",
        );
        let w: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
        let has = |line: usize, phrase: &str| {
            c.warnings
                .iter()
                .any(|w| w.line == line && w.message.contains(phrase))
        };
        assert!(has(2, "2222:udp,3333:udp is ascending"), "{w:#?}");
        assert!(
            has(3, "TCPFlags has no effect on a sequence of UDP ports"),
            "{w:#?}"
        );
        assert!(
            has(4, "Cmd_Timeout has no effect without a Stop_Command"),
            "{w:#?}"
        );
        assert!(
            has(1, "no Start_Command: a completed knock is only logged"),
            "{w:#?}"
        );
        assert!(has(6, "single port"), "{w:#?}");
        assert!(has(9, "repeats 5/tcp twice in a row"), "{w:#?}");
        assert!(
            has(10, "contains \"ACCEPT;\", which a shell would interpret"),
            "{w:#?}"
        );
        // Sorted by line.
        assert!(c.warnings.windows(2).all(|p| p[0].line <= p[1].line));
        assert!(ok("")
            .warnings
            .iter()
            .any(|w| w.message.contains("no doors")));
        // SPA door without stop command, and a _6 start without a _6 stop.
        let c = ok(&format!(
            "[s]\nkeys = {ALICE}\nallow_ports = 22,22/tcp\nstart_command = /bin/true\n\
             start_command_6 = /bin/true 6\n"
        ));
        let has = |line: usize, phrase: &str| {
            c.warnings
                .iter()
                .any(|w| w.line == line && w.message.contains(phrase))
        };
        assert!(has(1, "no Stop_Command"), "{:#?}", c.warnings);
        assert!(has(3, "lists a port more than once"), "{:#?}", c.warnings);
        assert_eq!(
            c.door("s").and_then(Door::spa).map(|s| s.allow_ports.len()),
            Some(1)
        );
        let c = ok(&format!(
            "[s]\nkeys = {ALICE}\nallow_ports = 22\nstart_command = /bin/true\n\
             start_command_6 = /bin/true 6\nstop_command = /bin/false\n"
        ));
        assert!(c
            .warnings
            .iter()
            .any(|w| w.message.contains("Start_Command_6 but no Stop_Command_6")));
    }

    #[test]
    fn scan_order() {
        assert!(is_scan_order(&tcp(&[7000, 8000, 9000])));
        assert!(is_scan_order(&tcp(&[1, 2])));
        assert!(!is_scan_order(&tcp(&[9000, 8000, 7000])));
        assert!(!is_scan_order(&tcp(&[7000, 9000, 8000])));
        assert!(!is_scan_order(&tcp(&[7000, 7000, 8000])));
        assert!(!is_scan_order(&tcp(&[7000])));
        assert!(!is_scan_order(&[]));
        // A TCP scan never completes a sequence that needs a UDP hit.
        assert!(!is_scan_order(&[
            ps(1000, Proto::Tcp),
            ps(2000, Proto::Udp)
        ]));
        assert!(is_scan_order(&[ps(1000, Proto::Udp), ps(2000, Proto::Udp)]));
        assert_eq!(
            format_sequence(&[ps(1, Proto::Tcp), ps(2, Proto::Udp)]),
            "1,2:udp"
        );
        assert_eq!(
            parse_sequence(&"1,".repeat(33)),
            Err(SequenceError::EmptyElement(34))
        );
        let long = (1..=33)
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(parse_sequence(&long), Err(SequenceError::TooLong(33)));
        let max = (1..=32)
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(parse_sequence(&max).map(|s| s.len()), Ok(32));
    }

    // ---- Command templates ----
    #[test]
    fn template_tokenizing() {
        let ip = v4(192, 0, 2, 1);
        let t = CommandTemplate::parse(
            r#"/usr/bin/logger -t "knock door" 'opened for %IP%' -s%IP%/32 "a\"b\\c\d" '' x"y"'z'"#,
        )
        .expect("parses");
        assert_eq!(
            t.render(ip, None),
            [
                "/usr/bin/logger",
                "-t",
                "knock door",
                "opened for 192.0.2.1",
                "-s192.0.2.1/32",
                r#"a"b\c\d"#,
                "",
                "xyz"
            ]
        );
        assert!(t.uses_ip() && !t.uses_port());
        assert_eq!(t.shell_syntax(), None);
        // Display is the original text.
        assert_eq!(
            t.to_string(),
            r#"/usr/bin/logger -t "knock door" 'opened for %IP%' -s%IP%/32 "a\"b\\c\d" '' x"y"'z'"#
        );

        // Shell syntax is not interpreted: each piece is an argv word, and it is flagged.
        let t = CommandTemplate::parse("/bin/echo %IP% ; rm -rf / && $(reboot) | tee x")
            .expect("parses");
        assert_eq!(
            t.render(ip, None),
            [
                "/bin/echo",
                "192.0.2.1",
                ";",
                "rm",
                "-rf",
                "/",
                "&&",
                "$(reboot)",
                "|",
                "tee",
                "x"
            ]
        );
        assert_eq!(t.shell_syntax(), Some(";"));
        // Quoted for an explicit `sh -c`: not flagged.
        let t = CommandTemplate::parse("/bin/sh -c 'a %IP% | b'").expect("parses");
        assert_eq!(t.shell_syntax(), None);
        assert_eq!(t.render(ip, None), ["/bin/sh", "-c", "a 192.0.2.1 | b"]);

        // Placeholders with ports; lower-case or single-letter %...% left alone.
        let t =
            CommandTemplate::parse("f %PORT%/%PROTO% %s%s% +%Y%m%d 100% %20x%").expect("parses");
        assert!(t.uses_port());
        assert_eq!(
            t.render(ip, Some(ps(53, Proto::Udp))),
            ["f", "53/udp", "%s%s%", "+%Y%m%d", "100%", "%20x%"]
        );
        assert_eq!(t.render(ip, None)[1], "/");
        // IPv6 addresses render in their canonical form.
        let v6: IpAddr = "2001:0db8:0:0::1".parse().expect("ip");
        assert_eq!(
            CommandTemplate::parse("-s %IP%")
                .expect("parses")
                .render(v6, None),
            ["-s", "2001:db8::1"]
        );

        // Empty means nothing to run.
        let t = CommandTemplate::parse("   ").expect("parses");
        assert!(t.is_empty());
        assert!(t.render(ip, None).is_empty());

        for (bad, err) in [
            ("a 'b", TemplateError::UnterminatedQuote('\'')),
            ("a \"b", TemplateError::UnterminatedQuote('"')),
            ("a \"b\\", TemplateError::UnterminatedQuote('"')),
            ("x %HOST%", TemplateError::UnknownPlaceholder("HOST".into())),
            (
                "x %DOOR_NAME%",
                TemplateError::UnknownPlaceholder("DOOR_NAME".into()),
            ),
            (
                "x '%Port%'",
                TemplateError::PlaceholderCase("Port".into(), "PORT"),
            ),
        ] {
            assert_eq!(CommandTemplate::parse(bad), Err(err), "{bad}");
        }
    }

    #[test]
    fn tcp_flags() {
        let f: TcpFlags = "syn,!ack".parse().expect("parses");
        assert!(f.matches(TcpFlags::SYN));
        assert!(f.matches(TcpFlags::SYN | TcpFlags::PSH));
        assert!(!f.matches(TcpFlags::SYN | TcpFlags::ACK));
        assert!(!f.matches(0));
        assert_eq!(f.to_string(), "syn,!ack");
        let all: TcpFlags = "FIN,syn,Rst,psh,ack,urg".parse().expect("parses");
        assert_eq!(all.must_set, 0x3f);
        assert_eq!(all.to_string(), "fin,syn,rst,psh,ack,urg");
        let none: TcpFlags = "!fin,!syn,!rst,!psh,!ack,!urg".parse().expect("parses");
        assert!(none.matches(0) && !none.matches(TcpFlags::URG));
        let empty = TcpFlags::default();
        assert!(empty.is_empty());
        assert!((0..=0xffu8).all(|b| empty.matches(b)));
        assert_eq!("".parse::<TcpFlags>(), Err(TcpFlagsError::Empty));
        assert_eq!(
            "syn,".parse::<TcpFlags>(),
            Err(TcpFlagsError::Unknown(String::new()))
        );
        assert_eq!(
            "ece".parse::<TcpFlags>(),
            Err(TcpFlagsError::Unknown("ece".into()))
        );
        assert_eq!(
            "!ack,ack".parse::<TcpFlags>(),
            Err(TcpFlagsError::Conflict("ack"))
        );
    }

    // ---- One-time sequences ----
    #[test]
    fn one_time_sequences() {
        let text =
            "# used ones start with #\n 7000,8000,9000\n\n#1234,5678\n 2222:udp, 3333\r\n   # x\n";
        let s = parse_one_time_sequences(text).expect("parses");
        assert_eq!(
            s,
            [
                OneTimeSeq {
                    line: 2,
                    byte_offset: 25,
                    knocks: tcp(&[7000, 8000, 9000])
                },
                OneTimeSeq {
                    line: 5,
                    byte_offset: 53,
                    knocks: vec![ps(2222, Proto::Udp), ps(3333, Proto::Tcp)]
                },
            ]
        );
        assert_eq!(&text[25..26], " ");

        // Using the first one: knockd writes `#` over the first character.
        let after = mark_used(text, 2);
        assert_eq!(after.len(), text.len());
        assert!(after.contains("\n#7000,8000,9000\n"));
        let s = parse_one_time_sequences(&after).expect("parses");
        assert_eq!(s.first().map(|s| s.line), Some(5));
        let after = mark_used(&after, 5);
        assert!(after.contains("\n#2222:udp, 3333\r\n"));
        assert_eq!(parse_one_time_sequences(&after), Ok(vec![]));

        // Without a leading blank the first digit is lost, exactly as in knockd.
        assert_eq!(mark_used("7000,8000\n9000,1\n", 1), "#000,8000\n9000,1\n");
        assert_eq!(mark_used("7000,8000\n9000,1", 2), "7000,8000\n#000,1");
        assert_eq!(mark_used("é1,2\n", 1), "#1,2\n");
        // Out of range or empty lines: unchanged.
        assert_eq!(mark_used("1,2\n\n3,4\n", 2), "1,2\n\n3,4\n");
        assert_eq!(mark_used("1,2\n", 9), "1,2\n");
        assert_eq!(mark_used("1,2\n", 0), "1,2\n");

        let e = parse_one_time_sequences("1,2\n3,0\n").expect_err("bad port");
        assert_eq!(e.line, 2);
        assert!(
            e.message
                .contains("one-time sequence \"3,0\": bad element \"0\""),
            "{e}"
        );
    }

    // ---- Keys files ----
    #[test]
    fn keys_files() {
        let text = format!("# ops team\n{ALICE}\n\n  {BOB}  \n");
        let keys = parse_keys_file(&text).expect("parses");
        let names: Vec<(usize, &str)> = keys.iter().map(|(l, k)| (*l, k.name())).collect();
        assert_eq!(names, [(2, "alice"), (4, "bob")]);

        let text = format!(
            "{ALICE}\nalice:{}\nnot a key\nname = carol\nx:!!!\n",
            &BOB[4..]
        );
        let e = parse_keys_file(&text).expect_err("errors");
        let got: Vec<(usize, bool)> = e
            .iter()
            .map(|e| {
                (
                    e.line,
                    e.message.contains(ALICE_SECRET) || e.message.contains(&BOB[4..]),
                )
            })
            .collect();
        assert_eq!(
            got,
            [(2, false), (3, false), (4, false), (5, false)],
            "{e:#?}"
        );
        assert!(e[0]
            .message
            .contains("key \"alice\" given twice (first on line 1)"));
        assert!(e[1].message.contains("is not NAME:BASE64"));
        assert!(e[2].message.contains("looks like a client keyfile"));
        assert!(e[3]
            .message
            .contains("(key \"x\"): the secret is not valid base64"));

        let e = parse_keys_file("# nothing\n\n").expect_err("empty");
        assert_eq!(
            (e[0].line, e[0].message.as_str()),
            (2, "the file holds no keys")
        );
        assert_eq!(parse_keys_file("").expect_err("empty")[0].line, 1);
    }

    #[test]
    fn debug_output_hides_secrets() {
        let c = ok(&mixed());
        let dbg = format!("{c:?}");
        assert!(!dbg.contains(ALICE_SECRET));
        assert!(dbg.contains("alice"));
    }
}
