//! This host's own addresses, for the knock path: a knock counts only when it is addressed to
//! one of them (or to its door's `Target`), as knockd compiles `dst host` into its capture
//! filter. A knock for another host that the capture sees (passing through a router, or on a
//! bridge) is not a knock on this one.
//!
//! Read with getifaddrs (the `if-addrs` crate) at start and again whenever the kernel says an
//! address was added or removed: a netlink socket subscribed to the address groups is looked
//! at (one non-blocking `recv`) when a hit names an address not in the set, and every
//! [`REFRESH_EVERY`]. The kernel queues the notice before `ip addr add` returns, so a new
//! address counts from its first knock. Without the socket (it could not be made), a miss
//! reads the addresses again at most every [`REFRESH_ON_MISS`]. Owned by the packet thread.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use knock_shared::types::canonical;

use crate::log::error;

/// Without the netlink socket: least time between two reads caused by a knock for an
/// address not in the set.
pub const REFRESH_ON_MISS: Duration = Duration::from_millis(200);
/// Longest time between two reads.
pub const REFRESH_EVERY: Duration = Duration::from_secs(10);

/// The set, and when it was read.
#[derive(Debug)]
pub struct HostAddrs {
    set: HashSet<IpAddr>,
    read_at: Instant,
    /// The last read failed (reported once until one works again).
    failing: bool,
    changes: Option<Changes>,
}

impl HostAddrs {
    /// Reads the host's addresses now, and subscribes to their changes.
    pub fn new(now: Instant) -> Self {
        let changes = match Changes::subscribe() {
            Ok(c) => Some(c),
            Err(e) => {
                error!(
                    "cannot follow this host's address changes (netlink: {e}); reading them \
                     again at most every {REFRESH_ON_MISS:?} when a knock names another"
                );
                None
            }
        };
        let mut h = Self {
            set: HashSet::new(),
            read_at: now,
            failing: false,
            changes,
        };
        h.read(now);
        h
    }

    /// Whether `ip` is one of this host's addresses (canonical: an IPv4-mapped address is the
    /// IPv4 address).
    pub fn contains(&mut self, ip: IpAddr, now: Instant) -> bool {
        let ip = canonical(ip);
        let stale = now.saturating_duration_since(self.read_at) >= REFRESH_EVERY;
        if stale || (!self.set.contains(&ip) && self.changed(now)) {
            self.read(now);
        }
        self.set.contains(&ip)
    }

    /// Whether the addresses may have changed since they were read.
    fn changed(&mut self, now: Instant) -> bool {
        match &self.changes {
            Some(c) => c.pending(),
            None => now.saturating_duration_since(self.read_at) >= REFRESH_ON_MISS,
        }
    }

    fn read(&mut self, now: Instant) {
        self.read_at = now;
        match if_addrs::get_if_addrs() {
            Ok(list) => {
                self.set = list.iter().map(|i| canonical(i.ip())).collect();
                self.failing = false;
            }
            // The set read last stays: better a moment out of date than empty.
            Err(e) if !self.failing => {
                self.failing = true;
                error!("cannot read this host's addresses: {e}; knocks are judged by the ones read before");
            }
            Err(_) => {}
        }
    }
}

/// A netlink route socket subscribed to the IPv4 and IPv6 address groups: the kernel queues a
/// message on it at every address added or removed.
#[derive(Debug)]
struct Changes {
    fd: std::os::fd::OwnedFd,
}

impl Changes {
    fn subscribe() -> std::io::Result<Self> {
        use std::os::fd::FromRawFd;
        // SAFETY: socket() takes no pointers; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor we just opened and own; OwnedFd closes it once.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain data; all-zero is a valid value (pid 0: the kernel
        // assigns one).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = (libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR) as u32;
        use std::os::fd::AsRawFd;
        // SAFETY: `addr` is a valid sockaddr_nl for the length passed, alive for the call.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::addr_of!(addr).cast::<libc::sockaddr>(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self { fd })
    }

    /// Drains the queued notices; whether there was any (or the queue overflowed, which
    /// means there were too many to keep).
    fn pending(&self) -> bool {
        use std::os::fd::AsRawFd;
        let mut buf = [0u8; 4096];
        let mut any = false;
        loop {
            // SAFETY: `buf` is writable for its length and outlives the call.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n > 0 {
                any = true;
                continue;
            }
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENOBUFS) => true,
                Some(libc::EINTR) => continue,
                _ => any,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_ours_and_a_documentation_address_is_not() {
        let now = Instant::now();
        let mut h = HostAddrs::new(now);
        assert!(h.changes.is_some(), "netlink subscription");
        assert!(h.contains("127.0.0.1".parse().expect("ip"), now));
        assert!(h.contains("::ffff:127.0.0.1".parse().expect("ip"), now));
        let other: IpAddr = "192.0.2.199".parse().expect("ip");
        assert!(!h.contains(other, now));
        // With no change notice, a miss does not read again; after REFRESH_EVERY, a read.
        let before = h.read_at;
        assert!(!h.contains(other, now + REFRESH_ON_MISS));
        assert_eq!(h.read_at, before);
        assert!(!h.contains(other, now + REFRESH_EVERY));
        assert_eq!(h.read_at, now + REFRESH_EVERY);
    }
}
