//! The native nftables backend: grants as elements of the daemon's own table, over netlink.
//!
//! The table `inet knock_spa` is created with `nft -f` (by `firewall-setup`); [`netlink`]
//! manages the elements of its sets: the ports the doors guard (`guarded`) and the addresses
//! admitted to one protocol and port with a kernel timeout (`admitted4`, `admitted6`);
//! [`reply`] reads what the kernel answers, every length checked.

pub mod netlink;
mod reply;

pub use netlink::{Element, Nft, NftError, Subject, SET_GUARDED, SET_V4, SET_V6, TABLE};
