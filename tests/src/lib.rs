//! End-to-end test harness for knock-spa: real daemons, real iptables, real clients, each test
//! in its own set of network namespaces.
//!
//! # Topology
//!
//! [`Topology::new`] builds four namespaces whose names end in a per-run suffix
//! (`<pid>-<counter>`), so tests running in parallel (threads of one test binary, or several
//! binaries) never share anything:
//!
//! ```text
//!   ks-srv-<sfx>             ks-cli-<sfx>             ks-atk-<sfx>
//!   server (daemon,          client (knock,           attacker (replays,
//!   firewall, listener)      knock-spa)               spoofed packets)
//!   lo up                    lo up                    lo up
//!   eth0 10.99.0.1/24        eth0 10.99.0.2/24        eth0 10.99.0.3/24
//!        fd99::1/64               fd99::2/64               fd99::3/64
//!     |                        |                        |
//!     | veth                   | veth                   | veth
//!     |                        |                        |
//!   v-srv ------------------ v-cli ------------------ v-atk
//!   '------------------ br0 (Linux bridge) -----------------'
//!                       ks-br-<sfx>
//! ```
//!
//! * Every veth pair is created with `ip -n ks-br-<sfx> link add ... peer name eth0 netns ...`,
//!   so no interface ever exists in the host namespace.
//! * No namespace has a default route: the only reachable addresses are the three above (and
//!   each namespace's own loopback). Traffic never leaves the namespaces a test created.
//! * IPv6 addresses are added with `nodad`, usable at once; multicast snooping is off on the
//!   bridge so neighbour discovery works immediately.
//! * `net.ipv4.icmp_ratelimit` and `net.ipv6.icmp.ratelimit` are 0 in the three end
//!   namespaces, so a `REJECT` answers every probe.
//! * Dropping the [`Topology`] (also while unwinding from a failed assertion) stops the
//!   processes it started, kills by PID whatever is still running inside its namespaces (only
//!   processes this test started can be there) and deletes the namespaces.
//!
//! # Pieces
//!
//! * [`Netns`]: one namespace: [`Netns::exec`], [`Netns::spawn`] (a [`ChildGuard`] that logs to
//!   the test's temp dir and is killed by PID on drop), [`Netns::run_in`] (run a closure on a
//!   thread that entered the namespace).
//! * [`tcp_connect`] / [`wait_for`]: in-process TCP probes from inside a namespace.
//! * [`send_udp`], [`send_udp_spoofed`], [`send_udp_spoofed_batch`]: raw datagrams, optionally
//!   with a forged source address (raw socket, `IP_HDRINCL`); [`udp_packet`] / [`tcp_packet`]
//!   build whole IP packets (any flags), [`send_ip_packet`] sends one.
//! * [`Tun`]: a TUN interface in a namespace that the test feeds with whole IP packets (raw-IP
//!   capture, as on WireGuard or OpenVPN links).
//! * [`TempDir`]: a per-test directory for configs, state and logs.
//! * [`workspace_bin`]: path of a binary built by `cargo build --workspace`.
//!
//! All of this needs root: [`require_root`] fails the test with a message saying so.
//!
//! # Example
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use std::time::Duration;
//! use knock_e2e::{tcp_connect, wait_for, workspace_bin, ConnectResult, Topology, SERVER_V4};
//!
//! let mut topo = Topology::new(); // fails (does not skip) when not root
//! topo.classic_firewall(22);
//! topo.listen(22);
//! let ssh = SocketAddr::from((SERVER_V4, 22));
//! assert_eq!(tcp_connect(&topo.client, ssh, Duration::from_secs(1)), ConnectResult::Refused);
//!
//! let conf = topo.dir().write("knockd.conf", "...");
//! let mut daemon = topo.server.spawn([workspace_bin("knock-spad").as_os_str(), "-c".as_ref(), conf.as_os_str()]);
//! daemon.wait_for_log("listening", Duration::from_secs(5)).expect("daemon up");
//! // ... knock from topo.client, then:
//! let took = wait_for(&topo.client, ssh, ConnectResult::Accepted, Duration::from_secs(2));
//! assert!(took.is_some(), "not admitted; daemon log:\n{}", daemon.log_text());
//! // Dropping `daemon` and `topo` stops the processes and deletes the namespaces.
//! ```

mod bins;
mod daemon;
mod flood;
mod net;
mod netns;
mod sys;
mod tempdir;
mod topology;
mod tun;

pub use bins::workspace_bin;
pub use daemon::{
    dry_run_packet, knock_spa, knock_spa_ok, wait_for_status_line, ClientKey, Daemon, DAEMON_READY,
};
pub use flood::{rss_kib, Flood, FloodReport, FLOOD_TIME_CEILING};
pub use libc::{SIGHUP, SIGKILL, SIGTERM};
pub use net::{
    send_ip_packet, send_udp, send_udp_spoofed, send_udp_spoofed_batch, tcp_connect, tcp_packet,
    udp_packet, wait_for, wait_for_with, ConnectResult, BATCH_TIME_LIMIT, MAX_BATCH, PROBE_TIMEOUT,
};
pub use netns::{ChildGuard, Netns};
pub use sys::{require_root, unique_suffix};
pub use tempdir::TempDir;
pub use topology::{
    ip6tables_rules, iptables_rules, Reject, Topology, ATTACKER_V4, ATTACKER_V6, CLIENT_V4,
    CLIENT_V6, IFACE, SERVER_V4, SERVER_V6,
};
pub use tun::Tun;
