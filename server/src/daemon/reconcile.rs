//! nftables grants and the kernel: which element a grant is, and at start which recorded
//! grants still have theirs.
//!
//! With `Firewall = nftables` a grant's rule is an element of the table's admitted sets with
//! a kernel timeout, so it outlives a crash and ends on time without the daemon. At start the
//! keeper asks which recorded grants lost their element meanwhile (the timeout passed, or an
//! operator deleted it): those are forgotten. An element no grant knows (recorded by another
//! state directory, or added by hand) is logged and left to its timeout.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::daemon::lanes::show;
use crate::firewall::nft::{Element, Nft};
use crate::log::{error, info};
use crate::store::GrantRecord;

/// Elements with no recorded grant named one by one at start, at most.
const UNKNOWN_LOG_MAX: usize = 10;

/// An nftables grant's element (its address, protocol and port); `None` for a command
/// grant, or a record whose port cannot be read (it is then closed as gone).
pub fn element_of(rec: &GrantRecord) -> Option<Element> {
    if !rec.nft || rec.prefix.is_some() {
        return None;
    }
    Some(Element {
        // An IPv4-mapped address is the IPv4 packet's source: admitted4, not admitted6.
        addr: rec.addr.to_canonical(),
        port: rec.port.parse().ok()?,
    })
}

/// The ids of the `recorded` grants whose element is not in the kernel. Nothing when the
/// kernel cannot be asked (logged: the grants are kept, and closed at their time).
pub fn gone(recorded: Vec<(u64, Element)>) -> Vec<u64> {
    let present: HashMap<Element, Duration> = match Nft::open().and_then(|mut n| n.list()) {
        Ok(list) => list.into_iter().collect(),
        Err(e) => {
            error!("nftables: cannot read the table's elements: {e}; recorded grants kept");
            return Vec::new();
        }
    };
    let known: HashSet<Element> = recorded.iter().map(|&(_, e)| e).collect();
    let unknown: Vec<_> = present.iter().filter(|(e, _)| !known.contains(e)).collect();
    for (e, left) in unknown.iter().take(UNKNOWN_LOG_MAX) {
        info!(
            "nftables: element {} is no recorded grant; left to expire in {} s",
            show(**e),
            left.as_secs()
        );
    }
    if unknown.len() > UNKNOWN_LOG_MAX {
        info!(
            "nftables: {} more element(s) are no recorded grant; left to expire",
            unknown.len() - UNKNOWN_LOG_MAX
        );
    }
    let gone: Vec<u64> = recorded
        .iter()
        .filter(|(_, e)| !present.contains_key(e))
        .map(|&(id, _)| id)
        .collect();
    info!(
        "nftables: {} element(s) in the kernel; {} recorded grant(s) kept, {} gone",
        present.len(),
        recorded.len() - gone.len(),
        gone.len()
    );
    gone
}
