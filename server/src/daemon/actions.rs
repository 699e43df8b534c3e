//! What the packet thread asks the grant keeper to do: the one message type between them.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use knock_shared::types::PortSpec;

use crate::load::LoadedConfig;

/// What the packet loop asks the grant manager to do.
#[derive(Debug)]
pub enum Action {
    /// A verified SPA open.
    SpaOpen {
        /// Door index.
        door: usize,
        /// Key name.
        key: String,
        /// Address to admit.
        addr: IpAddr,
        /// Ports.
        ports: Vec<PortSpec>,
        /// Requested seconds (0 = door default).
        duration: u32,
    },
    /// A verified SPA close.
    SpaClose {
        /// Door index.
        door: usize,
        /// Key name.
        key: String,
        /// Address.
        addr: IpAddr,
        /// Ports.
        ports: Vec<PortSpec>,
    },
    /// A completed knock sequence.
    KnockOpen {
        /// Door index.
        door: usize,
        /// The knocker.
        addr: IpAddr,
        /// For a one-time door: the sequence used, which the keeper marks in its file before
        /// the door opens.
        one_time: Option<OneTimeUse>,
    },
    /// The configuration changed (SIGHUP), sent by the packet thread once it applied it,
    /// after every action it made with the old one.
    Reload(Arc<LoadedConfig>),
    /// The operator's `knock-spad close`: end the matching grants now. The keeper answers
    /// with one line per grant it closed.
    Close {
        /// Which grants.
        filter: CloseFilter,
        /// Where the answer goes.
        reply: tokio::sync::oneshot::Sender<Vec<String>>,
    },
}

/// Actions that may wait for the grant keeper at once: beyond them the packet thread drops
/// new ones (counted in `status`, logged), so a flood of completed knock sequences from
/// spoofed sources costs bounded memory, and the packet thread never waits.
pub const QUEUE_LEN: usize = 1024;

/// A one-time door's sequence that was just knocked. The packet thread stops accepting it at
/// once; the grant keeper marks it used in its file (off the packet thread), opens the door
/// only if that worked, and answers with a [`NextOneTime`].
#[derive(Debug, Clone)]
pub struct OneTimeUse {
    /// The one-time sequences file.
    pub path: PathBuf,
    /// The sequence knocked.
    pub used: Vec<PortSpec>,
}

/// The grant keeper's answer to a [`OneTimeUse`]: the door's next sequence, with its line
/// (`None`: none left, or the file cannot be read: the door stays shut).
#[derive(Debug, Clone)]
pub struct NextOneTime {
    /// The door's name.
    pub door: String,
    /// Its one-time sequences file.
    pub path: PathBuf,
    /// The next sequence.
    pub next: Option<(usize, Vec<PortSpec>)>,
}

/// What the main loop tells the grant keeper about stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Keep running.
    Running,
    /// A clean stop (SIGTERM, SIGINT): close every grant unless `KeepRulesOnExit`.
    Stop,
    /// A stop because a part of the daemon failed: leave every grant recorded and in place,
    /// so the restart that follows takes them up with their remaining time.
    Failed,
}

/// Which grants `knock-spad close` ends: those matching every field given (`all` when none
/// is given on purpose).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloseFilter {
    /// The SPA key's name.
    pub key: Option<String>,
    /// The door's name.
    pub door: Option<String>,
    /// The admitted address.
    pub address: Option<IpAddr>,
}

impl CloseFilter {
    /// Whether a grant of `door` for `key` (empty for a knock) that admits `admitted` (an
    /// address, or a network: then `--address` matches any address in it) matches.
    pub fn matches(&self, door: &str, key: &str, admitted: knock_shared::types::Admitted) -> bool {
        self.key.as_deref().is_none_or(|k| k == key)
            && self.door.as_deref().is_none_or(|d| d == door)
            && self.address.is_none_or(|a| admitted.contains(a))
    }

    /// The request line a client sends on the control socket: `close` then `key=…`,
    /// `door=…`, `address=…` words (none: every grant).
    pub fn to_line(&self) -> String {
        let mut line = "close".to_owned();
        if let Some(k) = &self.key {
            line.push_str(&format!(" key={k}"));
        }
        if let Some(d) = &self.door {
            line.push_str(&format!(" door={d}"));
        }
        if let Some(a) = &self.address {
            line.push_str(&format!(" address={a}"));
        }
        line
    }

    /// Parses [`to_line`](Self::to_line)'s form. Names are single words (key and door names
    /// have no blanks).
    pub fn from_line(line: &str) -> Result<Self, String> {
        let mut words = line.split_ascii_whitespace();
        if words.next() != Some("close") {
            return Err("unknown request".into());
        }
        let mut f = Self::default();
        for w in words {
            match w.split_once('=') {
                Some(("key", v)) if !v.is_empty() => f.key = Some(v.to_owned()),
                Some(("door", v)) if !v.is_empty() => f.door = Some(v.to_owned()),
                Some(("address", v)) => {
                    let a: IpAddr = v.parse().map_err(|_| format!("bad address {v:?}"))?;
                    f.address = Some(knock_shared::types::canonical(a));
                }
                _ => return Err(format!("bad request word {w:?}")),
            }
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_requests_round_trip_and_match_every_field_given() {
        let f = CloseFilter {
            key: Some("alice".into()),
            door: None,
            address: Some("192.0.2.7".parse().expect("ip")),
        };
        assert_eq!(f.to_line(), "close key=alice address=192.0.2.7");
        assert_eq!(CloseFilter::from_line(&f.to_line()), Ok(f.clone()));
        use knock_shared::types::Admitted;
        let a = Admitted::host("192.0.2.7".parse().expect("ip"));
        let b = Admitted::host("192.0.2.8".parse().expect("ip"));
        assert!(f.matches("ssh", "alice", a));
        assert!(!f.matches("ssh", "bob", a));
        assert!(!f.matches("ssh", "alice", b));
        let all = CloseFilter::default();
        assert_eq!(all.to_line(), "close");
        assert!(all.matches("knock", "", b));
        // An IPv4-mapped address names the IPv4 grant.
        let mapped = CloseFilter::from_line("close address=::ffff:192.0.2.7").expect("parse");
        assert!(mapped.matches("ssh", "alice", a));
        // An address inside a network grant (Admit_Prefix) names it.
        let net = Admitted::network("192.0.2.200".parse().expect("ip"), 24);
        assert!(f.matches("ssh", "alice", net));
        assert!(CloseFilter::from_line("open").is_err());
        assert!(CloseFilter::from_line("close door=").is_err());
        assert!(CloseFilter::from_line("close address=nonsense").is_err());
    }
}
