//! The firewall: how a grant reaches the kernel and how the live ruleset is read.
//!
//! Two backends: the command templates of the configuration ([`commands`]: argv, no shell,
//! bounded in time, plus the iptables `-C` checks that tell whether a rule is in place), and
//! `Firewall = nftables` ([`nft`]: the daemon's own table, grants as set elements with kernel
//! timeouts over netlink). Also the iptables baseline `firewall-setup` prints or applies
//! ([`baseline`]) and the inspection `check` uses ([`inspect`]).
//!
//! What it must not do: decide who is admitted (the verifier and the tracker do), or keep
//! state (the grant keeper owns the grants).

pub mod baseline;
pub mod commands;
pub mod inspect;
pub mod nft;

pub use baseline::{apply, baseline, render, system_runner, Applied, Family, PERSIST_NOTE};
pub use inspect::{late_appends, other_firewall, ports_of, verdict, Verdict};
