//! A TUN interface inside a test namespace, fed by the test: packets written to it arrive at
//! the namespace as if from a point-to-point link, and libpcap sees them with raw-IP link
//! headers (`DLT_RAW`), the capture path of `tun`/WireGuard/OpenVPN interfaces.

use std::fs::File;
use std::io::{self, Write};

use crate::netns::Netns;
use crate::sys;

/// A TUN interface with the test attached as its packet source. The interface lives in the
/// namespace and goes with it; dropping this only closes the test's end.
#[derive(Debug)]
pub struct Tun {
    file: File,
    name: String,
}

impl Tun {
    /// Creates TUN interface `name` in `ns` with the addresses `addrs` (`10.77.0.1/24`,
    /// `fd77::1/64`; IPv6 ones without duplicate address detection), brings it up and attaches
    /// to it.
    ///
    /// # Panics
    /// When `ip` fails or the interface cannot be attached (no `/dev/net/tun`).
    #[track_caller]
    pub fn create(ns: &Netns, name: &str, addrs: &[&str]) -> Tun {
        ns.ip(["tuntap", "add", "dev", name, "mode", "tun"]);
        for a in addrs {
            if a.contains(':') {
                ns.ip(["-6", "addr", "add", a, "dev", name, "nodad"]);
            } else {
                ns.ip(["addr", "add", a, "dev", name]);
            }
        }
        let owned = name.to_owned();
        let file = ns
            .run_in(move || sys::tun_attach(&owned))
            .and_then(|r| r)
            .unwrap_or_else(|e| panic!("cannot attach to {name} in {}: {e}", ns.name()));
        ns.ip(["link", "set", name, "up"]);
        Tun {
            file,
            name: name.to_owned(),
        }
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Delivers one whole IP packet (see [`crate::udp_packet`], [`crate::tcp_packet`]) to the
    /// namespace through the interface.
    ///
    /// # Errors
    /// When the write fails or is short.
    pub fn inject(&self, packet: &[u8]) -> io::Result<()> {
        let n = (&self.file).write(packet)?;
        if n == packet.len() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "short write to {}: {n} of {}",
                self.name,
                packet.len()
            )))
        }
    }
}
