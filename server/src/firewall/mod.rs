//! The firewall: how a grant reaches the kernel and how the live ruleset is read.
//!
//! Today one backend, the command templates of the configuration ([`commands`]: argv, no
//! shell, bounded in time, plus the iptables `-C` checks that tell whether a rule is in
//! place); the baseline rules `firewall-setup` prints or applies ([`baseline`]); and the
//! inspection `check` uses ([`inspect`]). The native nftables backend ([`nft`]: the elements
//! of the daemon's own table, over netlink) lands here as a module of its own, behind the same
//! calls the grant keeper makes.
//!
//! What it must not do: decide who is admitted (the verifier and the tracker do), or keep
//! state (the grant keeper owns the grants).

pub mod baseline;
pub mod commands;
pub mod inspect;
// used by the nftables backend (being wired)
#[allow(dead_code, unused_imports)]
pub mod nft;

pub use baseline::{
    apply, baseline, render, render_nft, system_runner, Applied, Family, PERSIST_NOTE,
};
pub use inspect::{late_appends, other_firewall, ports_of, verdict, Backend, Verdict};
