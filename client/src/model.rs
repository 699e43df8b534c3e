//! The client's shared vocabulary: the small types several modules use, so that none of them
//! has to import another for them (`cli`, `net`, `spa`, `config`, `services`, `keygen`,
//! `knock` and `error` all meet here instead of in each other).
//!
//! - [`Family`]: which address family HOST must resolve to (`-4` / `-6`).
//! - [`AdmitChoice`]: which address the packet asks the server to admit (`--admit`, `admit =`).
//! - [`InputError`]: input the user typed that cannot be used (exit code 2, see `error`).
//!
//! Role: a leaf. It must not import other client modules (no `use crate::…`), only std
//! and external crates, so that every module can use it without creating a cycle.

use std::net::IpAddr;
use std::str::FromStr;

use knock_shared::types::Proto;

/// Which address family to use when HOST resolves to several addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Family {
    /// `open`, `close`, `proxy`: every family HOST has, one packet each (the stanza's
    /// `family = auto`); `knock`: the first address the resolver returns.
    #[default]
    Any,
    /// Both families: HOST must have an IPv4 and an IPv6 address (`family = both`).
    Both,
    /// IPv4 only.
    V4,
    /// IPv6 only.
    V6,
}

impl FromStr for Family {
    type Err = String;

    /// `auto`, `both`, `v4` or `v6`, as the stanza's `family` key spells it.
    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "auto" => Ok(Self::Any),
            "both" => Ok(Self::Both),
            "v4" => Ok(Self::V4),
            "v6" => Ok(Self::V6),
            other => Err(format!("`{other}` is not auto, both, v4 or v6")),
        }
    }
}

/// Which address the packet asks the server to admit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdmitChoice {
    /// The local address of the route to the server (the default).
    Route,
    /// This address (`--allow-ip`).
    Addr(IpAddr),
    /// Whatever source the packet arrives from (`--use-source`).
    Source,
}

impl FromStr for AdmitChoice {
    type Err = String;

    /// `route`, `source` or an IP address a host can have (as `admit =` and `--admit`
    /// spell it); the error is a message without the option or key name.
    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "route" => Ok(Self::Route),
            "source" => Ok(Self::Source),
            other => match other.parse::<IpAddr>() {
                Ok(ip) if !knock_shared::types::admissible(ip) => Err(format!(
                    "{ip}: not an address a host can have (unspecified, multicast or broadcast)"
                )),
                Ok(ip) => Ok(Self::Addr(ip)),
                Err(_) => Err(format!("`{other}` is not route, source or an IP address")),
            },
        }
    }
}

/// Input the user typed that cannot be used. Maps to [`EXIT_USAGE`](crate::error::EXIT_USAGE).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// A service list with an empty entry (`ssh,,http`, or nothing at all).
    #[error("empty entry in service list `{list}`")]
    EmptyService {
        /// The whole list as typed.
        list: String,
    },
    /// A name that is not in the services database.
    #[error("unknown service `{name}` (not in {source_name}; give a port number such as 22/tcp)")]
    UnknownService {
        /// The name.
        name: String,
        /// Where names are looked up (`/etc/services`).
        source_name: String,
    },
    /// A name that is in the database, but not for the protocol asked.
    #[error(
        "service `{name}` has no {proto} entry in {source_name} (it is {available}); \
         give the port number, e.g. {example}"
    )]
    WrongProto {
        /// The name.
        name: String,
        /// The protocol asked for.
        proto: Proto,
        /// What the database has, e.g. `22/tcp`.
        available: String,
        /// A numeric spelling that would work.
        example: String,
        /// Where names are looked up.
        source_name: String,
    },
    /// A name was given but the services database could not be read.
    #[error(
        "cannot look up service `{name}`: {source_name} is unreadable ({why}); give a port \
         number such as 22/tcp"
    )]
    NoServiceDb {
        /// The name.
        name: String,
        /// The file.
        source_name: String,
        /// The OS error, as text.
        why: String,
    },
    /// Not a port number in 1..=65535.
    #[error("invalid port `{text}`: a port is a number from 1 to 65535")]
    BadPort {
        /// The port as typed.
        text: String,
    },
    /// A protocol other than tcp or udp.
    #[error("invalid protocol in `{text}`: the protocol is tcp or udp")]
    BadProto {
        /// The entry as typed.
        text: String,
    },
    /// More ports than one packet carries.
    #[error("too many ports: {count} given, one packet carries at most {max}")]
    TooManyPorts {
        /// How many distinct ports were given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// An address the server refuses to admit (unspecified, multicast or broadcast).
    #[error(
        "--allow-ip {0}: not an address a host can have (unspecified, multicast or broadcast)"
    )]
    BadAdmit(std::net::IpAddr),
    /// A key name outside `[A-Za-z0-9._@-]{1,64}`.
    #[error("invalid key name `{0}`: use 1 to 64 of A-Z a-z 0-9 . _ @ -")]
    BadKeyName(String),
    /// HOST is a plain number: `getaddrinfo` would take `200` for 0.0.0.200. The likely cause
    /// is a value given to `--wait`, which takes none.
    #[error(
        "HOST `{0}` is a number, not a host name or address (`--wait` takes no value; for a \
         fixed delay before COMMAND use `--delay MS`)"
    )]
    NumericHost(String),
    /// `open` / `close` without HOST (an empty HOST).
    #[error("no HOST given")]
    NoHost,
    /// `open --wait` with no TCP port to try.
    #[error("--wait needs a TCP port to connect to, and `{0}` has none")]
    NoTcpPort(String),
    /// `open HOST` without SERVICE, and no stanza supplies `services`.
    #[error("no SERVICE given for `{host}`, and {why}; give SERVICE HOST")]
    NoService {
        /// HOST as typed.
        host: String,
        /// Why the configuration does not supply one.
        why: String,
    },
}
