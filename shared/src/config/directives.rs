//! The directive table and the parsers of simple values.
//!
//! Role: every directive the reader knows: its spellings (knockd's aliases included), its
//! canonical name for messages, where it may appear ([`Scope`]), whether it may stand alone or
//! repeat; and the value kinds several directives share (yes/no, a bounded whole number, a port
//! list).
//!
//! What it must not do: hold parser state or line numbers, word a message about a refused
//! value (the callers do, naming the directive as written), or know doors.

use crate::types::PortSpec;

use super::model::MAX_USER_NAME_LEN;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Directive {
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
    MaxGrants,
    KeepRulesOnExit,
    User,
    Firewall,
    ServerKey,
    // doors, knock sequence only
    Sequence,
    OneTimeSequences,
    SeqTimeout,
    TcpFlags,
    Target,
    OpenPorts,
    // doors, both kinds
    StartCommand,
    StartCommand6,
    StopCommand,
    StopCommand6,
    CmdTimeout,
    DoorMaxGrants,
    AdmitPrefix,
    // doors, SPA only
    Keys,
    KeyFile,
    PublicKeys,
    AllowPorts,
    AllowNat,
    MaxTimeout,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    Options,
    Legacy,
    Both,
    Spa,
}

/// Upper-case spelling → directive. Aliases are knockd's (`Command`, `Command_6`, `Timeout`).
pub(super) const DIRECTIVES: &[(&str, Directive)] = &[
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
    ("MAXGRANTS", Directive::MaxGrants),
    ("MAX_GRANTS", Directive::DoorMaxGrants),
    ("ADMIT_PREFIX", Directive::AdmitPrefix),
    ("KEEPRULESONEXIT", Directive::KeepRulesOnExit),
    ("USER", Directive::User),
    ("FIREWALL", Directive::Firewall),
    ("OPEN_PORTS", Directive::OpenPorts),
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
    ("PUBLICKEYS", Directive::PublicKeys),
    ("SERVERKEY", Directive::ServerKey),
    ("ALLOW_PORTS", Directive::AllowPorts),
    ("ALLOW_NAT", Directive::AllowNat),
    ("MAX_TIMEOUT", Directive::MaxTimeout),
];

impl Directive {
    pub(super) fn lookup(key: &str) -> Option<Directive> {
        DIRECTIVES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(key))
            .map(|&(_, d)| d)
    }

    /// The canonical spelling, for messages about a directive that is missing.
    pub(super) fn name(self) -> &'static str {
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
            Directive::MaxGrants => "MaxGrants",
            Directive::DoorMaxGrants => "Max_Grants",
            Directive::AdmitPrefix => "Admit_Prefix",
            Directive::KeepRulesOnExit => "KeepRulesOnExit",
            Directive::User => "User",
            Directive::Firewall => "Firewall",
            Directive::OpenPorts => "Open_Ports",
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
            Directive::PublicKeys => "PublicKeys",
            Directive::ServerKey => "ServerKey",
            Directive::AllowPorts => "Allow_Ports",
            Directive::AllowNat => "Allow_NAT",
            Directive::MaxTimeout => "Max_Timeout",
        }
    }

    pub(super) fn scope(self) -> Scope {
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
            | Directive::MaxGrants
            | Directive::KeepRulesOnExit
            | Directive::User
            | Directive::Firewall
            | Directive::ServerKey => Scope::Options,
            Directive::Sequence
            | Directive::OneTimeSequences
            | Directive::SeqTimeout
            | Directive::TcpFlags
            | Directive::Target
            | Directive::OpenPorts => Scope::Legacy,
            Directive::StartCommand
            | Directive::StartCommand6
            | Directive::StopCommand
            | Directive::StopCommand6
            | Directive::CmdTimeout
            | Directive::DoorMaxGrants
            | Directive::AdmitPrefix => Scope::Both,
            Directive::Keys
            | Directive::KeyFile
            | Directive::PublicKeys
            | Directive::AllowPorts
            | Directive::AllowNat
            | Directive::MaxTimeout => Scope::Spa,
        }
    }

    /// May stand alone, without `= value`.
    pub(super) fn is_flag(self) -> bool {
        matches!(self, Directive::UseSyslog | Directive::KeepRulesOnExit)
    }

    /// May be given more than once (values accumulate).
    pub(super) fn repeats(self) -> bool {
        matches!(
            self,
            Directive::Keys | Directive::KeyFile | Directive::PublicKeys
        )
    }
}

pub(super) fn parse_bool(v: &str) -> Option<bool> {
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
pub(super) fn parse_number(v: &str, min: u64, max: u64) -> Option<u64> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse::<u64>().ok().filter(|n| (min..=max).contains(n))
}

pub(super) fn parse_port_list(v: &str) -> Result<Vec<PortSpec>, String> {
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

/// A user name as `useradd` accepts it by default: 1 to [`MAX_USER_NAME_LEN`] ASCII letters,
/// digits, `_`, `-` or `.`, not starting with `-` or a digit (so never a number, never an
/// option), optionally ending in `$` (Samba machine accounts).
pub(super) fn valid_user_name(v: &str) -> bool {
    let body = v.strip_suffix('$').unwrap_or(v);
    !body.is_empty()
        && v.len() <= MAX_USER_NAME_LEN
        && !body.starts_with(|c: char| c == '-' || c.is_ascii_digit())
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}
