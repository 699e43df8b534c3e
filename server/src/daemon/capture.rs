//! Where packets come from: a libpcap capture on an interface (with the BPF filter built from
//! the doors), or a plain UDP socket on the SPA port. Opening and waiting only; the packet
//! thread ([`super::packets`]) reads and decides.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use knock_shared::types::PortSpec;

use crate::load::{KnockDoor, LoadedConfig};
use crate::log::info;

/// Where packets come from.
pub enum Source {
    /// libpcap.
    Pcap {
        /// The capture.
        cap: pcap::Capture<pcap::Active>,
        /// Its link type.
        linktype: i32,
    },
    /// A bound UDP socket.
    Udp(UdpSocket),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Pcap { linktype, .. } => write!(f, "Pcap(linktype {linktype})"),
            Source::Udp(s) => write!(f, "Udp({:?})", s.local_addr().ok()),
        }
    }
}

/// The BPF filter for a runtime: the SPA port plus every knock port, as knockd compiles its
/// door ports into the filter (a hit on a port in no sequence is never seen).
pub fn bpf_filter(rt: &LoadedConfig, only_v4: bool) -> String {
    bpf_filter_for(rt, &rt.knock_doors, only_v4)
}

/// [`bpf_filter`] with the knock doors' current sequences (`slots`), which differ from the
/// runtime's once a one-time door has moved on to its next line.
pub(super) fn bpf_filter_for(rt: &LoadedConfig, slots: &[KnockDoor], only_v4: bool) -> String {
    let mut parts = Vec::new();
    if !rt.verifier.is_empty() {
        parts.push(format!("(udp and dst port {})", rt.config.options.spa_port));
    }
    let mut ports: Vec<PortSpec> = slots.iter().flat_map(|s| s.sequence.clone()).collect();
    ports.sort();
    ports.dedup();
    for p in ports {
        parts.push(format!("({} and dst port {})", p.proto, p.port));
    }
    let body = if parts.is_empty() {
        "udp and dst port 0".to_owned()
    } else {
        parts.join(" or ")
    };
    if only_v4 {
        format!("ip and ({body})")
    } else {
        body
    }
}

/// How long the packet loop sleeps waiting for traffic before it looks at timers, reloads
/// and the stop flag.
pub(super) const POLL_MS: i32 = 100;

/// Waits until `fd` is readable or `ms` milliseconds have passed. Errors (EINTR) just return:
/// the caller reads non-blocking and loops.
pub(super) fn wait_readable(fd: std::os::fd::RawFd, ms: i32) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is a valid, exclusively borrowed pollfd for the duration of the call and
    // nfds is 1, so the kernel reads and writes exactly that one struct.
    unsafe {
        libc::poll(&mut pfd, 1, ms);
    }
}

/// Logs packets the kernel dropped because the capture buffer was full since the last call
/// (the daemon fell behind: a flood beyond what this machine handles, or the process was
/// stopped). `seen` is the running total already reported.
pub(super) fn report_capture_drops(cap: &mut pcap::Capture<pcap::Active>, seen: &mut u32) {
    if let Ok(stat) = cap.stats() {
        let new = stat.dropped.wrapping_sub(*seen);
        if new > 0 {
            info!("capture: the kernel dropped {new} packets (capture buffer full; the daemon fell behind)");
        }
        *seen = stat.dropped;
    }
}

/// Opens the capture on `iface` with the runtime's filter.
pub fn open_pcap(iface: &str, rt: &LoadedConfig, only_v4: bool) -> Result<Source, pcap::Error> {
    let mut cap = pcap::Capture::from_device(iface)?
        .immediate_mode(true)
        .snaplen(512)
        .buffer_size(4 << 20)
        .timeout(100)
        .open()?
        // libpcap 1.10 retries its own poll() on timeout in immediate mode, so a blocking
        // pcap_next_ex never returns on an idle link and shutdown would hang. The loop waits
        // on the descriptor itself instead (see `wait_readable`).
        .setnonblock()?;
    cap.filter(&bpf_filter(rt, only_v4), true)?;
    let linktype = cap.get_datalink().0;
    Ok(Source::Pcap { cap, linktype })
}

/// Binds the UDP socket mode.
pub fn open_udp(port: u16, only_v4: bool) -> std::io::Result<Source> {
    let sock = if only_v4 {
        UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], port)))?
    } else {
        // Dual-stack [::]; Linux accepts IPv4 as v4-mapped unless bindv6only is set.
        UdpSocket::bind(SocketAddr::from(([0u16; 8], port)))
            .or_else(|_| UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], port))))?
    };
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    Ok(Source::Udp(sock))
}
