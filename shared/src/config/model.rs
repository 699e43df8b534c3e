//! The resolved configuration: what the reader hands the server once a text is valid.
//!
//! Role: the types ([`Config`], [`Options`], [`Door`] and its two kinds) and the defaults and
//! limits (`DEFAULT_*`, `MIN_*`, `MAX_*`) that the parser applies and the server relies on.
//!
//! What it must not do: parse or check anything (a value here has already passed phase 1 and
//! phase 2 of the parser), or know the file's syntax.

use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU16;

use knock_keys::public::ClientPublic;
use knock_keys::NamedKey;

use crate::types::{PortSpec, TcpFlags};

use super::error::Warning;
use super::template::CommandTemplate;

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
/// Default `MaxGrants`: open grants in all, at most.
pub const DEFAULT_MAX_GRANTS: usize = 4096;
/// Default `Max_Grants` of a door: its open grants at most.
pub const DEFAULT_DOOR_MAX_GRANTS: usize = 1024;
/// Largest accepted `MaxGrants` and `Max_Grants`.
pub const MAX_MAX_GRANTS: usize = 1 << 20;
/// Default `ReplayCacheSize` (entries).
pub const DEFAULT_REPLAY_CACHE_SIZE: usize = 65_536;
/// Smallest accepted `ReplayCacheSize`.
pub const MIN_REPLAY_CACHE_SIZE: usize = 64;
/// Largest accepted `ReplayCacheSize` (16 Mi entries, about 700 MB at worst).
pub const MAX_REPLAY_CACHE_SIZE: usize = 16 * 1024 * 1024;
/// Longest network interface name Linux accepts (`IFNAMSIZ` - 1).
pub const MAX_INTERFACE_LEN: usize = 15;
/// Longest accepted `User` name (`useradd`'s limit on Debian).
pub const MAX_USER_NAME_LEN: usize = 32;
/// The interface knockd listens on when neither `Interface` nor `-i` names one.
pub const DEFAULT_INTERFACE: &str = "any";

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

/// How grants reach the kernel (`Firewall`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Firewall {
    /// The doors' command templates (`Start_Command`, `Stop_Command`), run as argv.
    #[default]
    Commands,
    /// The daemon's own table `inet knock_spa`: a grant is a set element with a kernel
    /// timeout, added and deleted over netlink. Doors name ports (`Open_Ports`,
    /// `Allow_Ports`), not commands.
    Nftables,
}

impl fmt::Display for Firewall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Firewall::Commands => "commands",
            Firewall::Nftables => "nftables",
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
    /// `ServerKey`: the server's X25519 key file (public-key doors need it), with its line.
    pub server_key: Option<(usize, String)>,
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
    /// `MaxGrants`: open grants in all, at most; an open beyond it is refused.
    pub max_grants: usize,
    /// `KeepRulesOnExit`: leave open grants in place on SIGTERM/SIGINT.
    pub keep_rules_on_exit: bool,
    /// `User`: after the capture is open, the daemon runs as this user (name from the user
    /// database), keeping only `CAP_NET_ADMIN` for its firewall commands. `None`: it stays root.
    pub user: Option<String>,
    /// `Firewall`: command templates (the default) or the native nftables table.
    pub firewall: Firewall,
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
            server_key: None,
            server_names: Vec::new(),
            spa_window: DEFAULT_SPA_WINDOW,
            capture: Capture::Pcap,
            replay_cache_size: DEFAULT_REPLAY_CACHE_SIZE,
            max_grants: DEFAULT_MAX_GRANTS,
            keep_rules_on_exit: false,
            user: None,
            firewall: Firewall::Commands,
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
    /// The lines `start_command` and `start_command_6` were given on, for messages.
    pub start_lines: (Option<usize>, Option<usize>),
    /// `Stop_Command`.
    pub stop_command: Option<CommandTemplate>,
    /// `Stop_Command_6`.
    pub stop_command_6: Option<CommandTemplate>,
    /// `Cmd_Timeout` in seconds: time between start and stop command (SPA: the default open
    /// time).
    pub cmd_timeout: u64,
    /// `Max_Grants`: this door's open grants at most; an open beyond it is refused.
    pub max_grants: usize,
    /// `Admit_Prefix`: admit the network of this many leading bits that the verified address
    /// is in, instead of the address alone (carrier-grade NAT pools). `None`: the address.
    pub admit_prefix: Option<crate::types::AdmitPrefix>,
}

impl Door {
    /// What a grant of this door for `ip` admits: `ip`, or its network under
    /// `Admit_Prefix`.
    pub fn admitted(&self, ip: IpAddr) -> crate::types::Admitted {
        match self.admit_prefix {
            Some(p) => p.admitted(ip),
            None => crate::types::Admitted::host(ip),
        }
    }

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
    /// it with [`parse_one_time_sequences`](crate::config::parse_one_time_sequences).
    pub one_time_file: Option<(String, usize)>,
    /// `Seq_Timeout` in seconds: all hits within this time of the first.
    pub seq_timeout: u64,
    /// `TCPFlags`: TCP hits that do not match are ignored (UDP hits are not filtered).
    pub tcp_flags: TcpFlags,
    /// `Target`: match this destination address instead of the interface's addresses.
    pub target: Option<IpAddr>,
    /// `Open_Ports` (with `Firewall = nftables`): what a completed knock opens, a grant per
    /// port; empty with command templates.
    pub open_ports: Vec<PortSpec>,
}

/// An SPA door.
#[derive(Clone, Debug)]
pub struct SpaDoor {
    /// Inline `Keys`, each with the line it was given on.
    pub keys: Vec<(usize, NamedKey)>,
    /// `KeyFile` paths, each with its line. The server reads them with
    /// [`parse_keys_file`](crate::config::parse_keys_file).
    pub key_files: Vec<(usize, String)>,
    /// Inline `PublicKeys` (packet version 2), each with its line.
    pub public_keys: Vec<(usize, ClientPublic)>,
    /// `Allow_Ports`: what a key of this door may ask to open (never empty, no duplicates).
    pub allow_ports: Vec<PortSpec>,
    /// `Allow_NAT`: a key may ask to admit an address other than the packet's source.
    pub allow_nat: bool,
    /// `Max_Timeout`: cap on a requested open time in seconds (>= `cmd_timeout`).
    pub max_timeout: u64,
}
