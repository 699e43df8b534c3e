//! The standard test topology: server, client and attacker namespaces on one bridge (see the
//! diagram in the crate docs), the "classic" firewall, and a TCP listener standing in for
//! sshd.
//!
//! Must not give any namespace a route beyond the 10.99.0.0/24 and fd99::/64 link.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::bins::workspace_bin;
use crate::netns::ChildGuard;
use crate::netns::Netns;
use crate::sys::{require_root, unique_suffix};
use crate::tempdir::TempDir;

/// Name of the veth end inside the server, client and attacker namespaces.
pub const IFACE: &str = "eth0";
/// The server's IPv4 address.
pub const SERVER_V4: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
/// The client's IPv4 address.
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
/// The attacker's IPv4 address.
pub const ATTACKER_V4: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 3);
/// The server's IPv6 address.
pub const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 1);
/// The client's IPv6 address.
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 2);
/// The attacker's IPv6 address.
pub const ATTACKER_V6: Ipv6Addr = Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 3);

/// Name of the bridge in the bridge namespace.
const BRIDGE: &str = "br0";
/// Longest wait for a helper listener to bind.
const LISTENER_READY: Duration = Duration::from_secs(5);

/// How the classic firewall refuses the guarded port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// `REJECT --reject-with tcp-reset`: connect fails at once with `ECONNREFUSED`.
    TcpReset,
    /// Plain `REJECT` (ICMP port unreachable), also `ECONNREFUSED` for TCP. Over IPv4 at once;
    /// over IPv6 Linux treats the ICMPv6 error as soft during the handshake and fails the
    /// connect only at the first SYN retransmission, about 1 s later: probes then need a
    /// timeout above 1 s ([`crate::wait_for_with`]).
    Icmp,
}

/// Server, client and attacker namespaces joined by a bridge namespace; everything is removed
/// on drop (see the crate docs).
#[derive(Debug)]
pub struct Topology {
    // Fields drop in this order: listeners stop before the namespaces go, the temp dir (with
    // the logs) goes last.
    listeners: Vec<ChildGuard>,
    /// `ks-srv-<suffix>`: 10.99.0.1, fd99::1: the daemon, the firewall, the guarded service.
    pub server: Netns,
    /// `ks-cli-<suffix>`: 10.99.0.2, fd99::2: the legitimate client.
    pub client: Netns,
    /// `ks-atk-<suffix>`: 10.99.0.3, fd99::3: an eavesdropper / replayer / spoofer.
    pub attacker: Netns,
    /// `ks-br-<suffix>`: the bridge `br0` and the host ends of the veth pairs.
    pub bridge: Netns,
    suffix: String,
    dir: TempDir,
}

impl Topology {
    /// Builds the topology. Takes a few tens of milliseconds.
    ///
    /// # Panics
    /// When not root, or when any `ip` command fails; whatever was created so far is removed.
    #[track_caller]
    pub fn new() -> Topology {
        require_root();
        let suffix = unique_suffix();
        let dir = TempDir::new();
        let bridge = Netns::create(&format!("ks-br-{suffix}"), dir.path());
        bridge.ip([
            "link",
            "add",
            BRIDGE,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
            "mcast_snooping",
            "0",
        ]);
        // The bridge namespace has no iptables rules, but keep bridged frames out of
        // netfilter altogether where br_netfilter is loaded: the bridge is just a wire. The
        // keys do not exist without br_netfilter, so failure is fine.
        let _ = bridge.exec([
            "sysctl",
            "-q",
            "-w",
            "net.bridge.bridge-nf-call-iptables=0",
            "net.bridge.bridge-nf-call-ip6tables=0",
            "net.bridge.bridge-nf-call-arptables=0",
        ]);
        bridge.ip(["link", "set", "lo", "up"]);
        bridge.ip(["link", "set", BRIDGE, "up"]);

        let end = |role: &str, v4: Ipv4Addr, v6: Ipv6Addr| -> Netns {
            let ns = Netns::create(&format!("ks-{role}-{suffix}"), dir.path());
            let port = format!("v-{role}");
            // Created inside the bridge namespace with its peer directly in `ns`: no interface
            // ever appears in the host namespace, so fixed names cannot clash.
            bridge.ip([
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                IFACE,
                "netns",
                ns.name(),
            ]);
            bridge.ip(["link", "set", &port, "master", BRIDGE, "up"]);
            ns.sysctl(&["net.ipv4.icmp_ratelimit=0", "net.ipv6.icmp.ratelimit=0"]);
            ns.ip(["addr", "add", &format!("{v4}/24"), "dev", IFACE]);
            ns.ip(["addr", "add", &format!("{v6}/64"), "dev", IFACE, "nodad"]);
            ns.ip(["link", "set", "lo", "up"]);
            ns.ip(["link", "set", IFACE, "up"]);
            ns
        };
        let server = end("srv", SERVER_V4, SERVER_V6);
        let client = end("cli", CLIENT_V4, CLIENT_V6);
        let attacker = end("atk", ATTACKER_V4, ATTACKER_V6);
        Topology {
            listeners: Vec::new(),
            server,
            client,
            attacker,
            bridge,
            suffix,
            dir,
        }
    }

    /// The per-run suffix of the namespace names (`<pid>-<counter>`).
    pub fn suffix(&self) -> &str {
        &self.suffix
    }

    /// The test's temp dir: write configs, keys and state here; process logs are here too.
    pub fn dir(&self) -> &TempDir {
        &self.dir
    }

    /// Path of the test's temp dir.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// [`Topology::classic_firewall_with`] with [`Reject::TcpReset`].
    pub fn classic_firewall(&self, port: u16) {
        self.classic_firewall_with(port, Reject::TcpReset);
    }

    /// Installs the classic knockd-walkthrough firewall in the server namespace, for IPv4
    /// (iptables) and IPv6 (ip6tables):
    ///
    /// ```text
    /// -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
    /// -A INPUT -p tcp --dport PORT -j REJECT [--reject-with tcp-reset]
    /// ```
    ///
    /// Only the guarded port is closed; the knock ports stay as they are (nothing listens, so
    /// the kernel answers a SYN with a RST).
    ///
    /// # Panics
    /// When iptables fails.
    pub fn classic_firewall_with(&self, port: u16, reject: Reject) {
        let port = port.to_string();
        for tool in ["iptables", "ip6tables"] {
            self.server.exec_ok([
                tool,
                "-w",
                "-A",
                "INPUT",
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "ACCEPT",
            ]);
            let mut rule = vec![tool, "-w", "-A", "INPUT", "-p", "tcp", "--dport", &port];
            rule.extend_from_slice(&["-j", "REJECT"]);
            if reject == Reject::TcpReset {
                rule.extend_from_slice(&["--reject-with", "tcp-reset"]);
            }
            self.server.exec_ok(rule);
        }
    }

    /// Starts a TCP listener (`ks-listen`) on `port` of the server, IPv4 and IPv6, that
    /// accepts connections and closes them at once; it runs until the topology is dropped.
    /// Returns once it is bound.
    ///
    /// # Panics
    /// When `ks-listen` is missing or does not come up within 5 s.
    pub fn listen(&mut self, port: u16) {
        self.listen_with(port, None);
    }

    /// As [`Topology::listen`], but each connection gets `banner` and a line ending first
    /// (as sshd sends its version line), then an echo of what the client sends.
    pub fn listen_banner(&mut self, port: u16, banner: &str) {
        self.listen_with(port, Some(banner));
    }

    fn listen_with(&mut self, port: u16, banner: Option<&str>) {
        let bin = workspace_bin("ks-listen").display().to_string();
        let v4 = SocketAddr::from((SERVER_V4, port)).to_string();
        let v6 = SocketAddr::from((SERVER_V6, port)).to_string();
        let mut args = vec![bin.as_str()];
        if let Some(text) = banner {
            args.extend(["--banner", text]);
        }
        args.extend([v4.as_str(), v6.as_str()]);
        let mut child = self.server.spawn(args);
        let start = Instant::now();
        if child
            .wait_for_log("ks-listen: ready", LISTENER_READY)
            .is_none()
        {
            panic!(
                "ks-listen on port {port} not ready after {:?}; log:\n{}",
                start.elapsed(),
                child.log_text()
            );
        }
        self.listeners.push(child);
    }
}

impl Default for Topology {
    fn default() -> Self {
        Topology::new()
    }
}

/// The IPv4 rules of `ns` (`iptables -S`).
///
/// # Panics
/// When iptables fails.
pub fn iptables_rules(ns: &Netns) -> String {
    ns.exec_ok(["iptables", "-w", "-S"])
}

/// The IPv6 rules of `ns` (`ip6tables -S`).
///
/// # Panics
/// When ip6tables fails.
pub fn ip6tables_rules(ns: &Netns) -> String {
    ns.exec_ok(["ip6tables", "-w", "-S"])
}
