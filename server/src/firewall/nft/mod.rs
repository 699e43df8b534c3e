//! The native nftables backend: grants as elements of the daemon's own table, over netlink.
//!
//! The table `inet knock_spa` is created with `nft -f` ([`table`]: at start, at a reload, by
//! `firewall-setup --nft`); [`netlink`] manages the elements of its sets: the ports the doors guard (`guarded`) and the addresses
//! admitted to one protocol and port with a kernel timeout (`admitted4`, `admitted6`);
//! [`reply`] reads what the kernel answers, every length checked; [`others`] reads the rest of
//! the ruleset for `check`.

pub mod netlink;
pub mod others;
mod reply;
pub mod table;

pub use netlink::{Element, Nft, NftError, TABLE};
