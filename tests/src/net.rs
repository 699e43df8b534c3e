//! Probes and packets sent from inside a namespace, in-process: each call runs on a short-lived
//! thread that joined the namespace ([`Netns::run_in`]), so a probe costs microseconds, not a
//! process start.
//!
//! Must stay bounded: one connection per probe, one datagram per send, batches capped at
//! [`MAX_BATCH`] packets and [`BATCH_TIME_LIMIT`].

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use knock_shared::types::TcpFlags;

use crate::netns::Netns;
use crate::sys::RawIpSocket;

/// Per-attempt connect timeout used by [`wait_for`].
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(250);

/// Interval between attempts in [`wait_for`].
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Most packets one [`send_udp_spoofed_batch`] call sends.
pub const MAX_BATCH: usize = 10_000;

/// Longest one [`send_udp_spoofed_batch`] call keeps sending.
pub const BATCH_TIME_LIMIT: Duration = Duration::from_secs(10);

const IPV4_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
const UDP_HEADER_LEN: usize = 8;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_TCP: u8 = 6;
const HOP_LIMIT: u8 = 64;

/// What a TCP connect attempt saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectResult {
    /// The handshake completed (something listens and the firewall let the SYN in).
    Accepted,
    /// `ECONNREFUSED`: a TCP RST (no listener, or `REJECT --reject-with tcp-reset`) or an ICMP
    /// port-unreachable (plain `REJECT`; over IPv6 Linux reports that only at the first SYN
    /// retransmission, about 1 s later).
    Refused,
    /// No answer within the timeout (e.g. `DROP`).
    TimedOut,
    /// Any other error (e.g. host or network unreachable).
    Other(io::ErrorKind),
}

/// Tries one TCP connection to `addr` from inside `ns`, waiting at most `timeout` (non-blocking
/// connect + poll). An accepted connection is closed at once.
///
/// # Panics
/// When the namespace cannot be joined (a harness problem, not a test result).
pub fn tcp_connect(ns: &Netns, addr: SocketAddr, timeout: Duration) -> ConnectResult {
    // connect_timeout rejects a zero duration.
    let timeout = timeout.max(Duration::from_millis(1));
    ns.run_in(move || match TcpStream::connect_timeout(&addr, timeout) {
        Ok(_stream) => ConnectResult::Accepted,
        Err(e) => match e.kind() {
            io::ErrorKind::ConnectionRefused => ConnectResult::Refused,
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ConnectResult::TimedOut,
            kind => ConnectResult::Other(kind),
        },
    })
    .unwrap_or_else(|e| panic!("tcp_connect from {} to {addr}: {e}", ns.name()))
}

/// Probes `addr` from `ns` every ~10 ms (each attempt waiting at most [`PROBE_TIMEOUT`])
/// until an attempt gives `want`. Returns how long that took, or `None` if `deadline` passed
/// first.
///
/// With [`PROBE_TIMEOUT`], a plain ICMP `REJECT` over IPv6 reads as `TimedOut` (see
/// [`crate::Reject::Icmp`]); use [`wait_for_with`] and a probe timeout above 1 s for that.
pub fn wait_for(
    ns: &Netns,
    addr: SocketAddr,
    want: ConnectResult,
    deadline: Duration,
) -> Option<Duration> {
    wait_for_with(ns, addr, want, deadline, PROBE_TIMEOUT)
}

/// [`wait_for`] with a chosen per-attempt timeout.
pub fn wait_for_with(
    ns: &Netns,
    addr: SocketAddr,
    want: ConnectResult,
    deadline: Duration,
    probe_timeout: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    loop {
        let left = deadline.saturating_sub(start.elapsed());
        if tcp_connect(ns, addr, probe_timeout.min(left)) == want {
            return Some(start.elapsed());
        }
        if start.elapsed() >= deadline {
            return None;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Sends one UDP datagram with `payload` from inside `ns` to `to`, from `from` if given
/// (which must be an address of `ns`), else from an ephemeral port.
///
/// # Errors
/// When the namespace cannot be joined, or binding or sending fails.
pub fn send_udp(
    ns: &Netns,
    from: Option<SocketAddr>,
    to: SocketAddr,
    payload: &[u8],
) -> io::Result<()> {
    let payload = payload.to_vec();
    let bind = from.unwrap_or_else(|| match to {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    });
    ns.run_in(move || -> io::Result<()> {
        let sock = UdpSocket::bind(bind)
            .map_err(|e| io::Error::new(e.kind(), format!("bind {bind}: {e}")))?;
        let n = sock
            .send_to(&payload, to)
            .map_err(|e| io::Error::new(e.kind(), format!("send to {to}: {e}")))?;
        if n != payload.len() {
            return Err(io::Error::other(format!(
                "short send to {to}: {n} of {}",
                payload.len()
            )));
        }
        Ok(())
    })?
}

/// Sends one UDP datagram from inside `ns` to `to` with a forged source `src` (any address
/// and port, e.g. the client's, sent from the attacker's namespace), through a raw socket
/// with `IP_HDRINCL` / `IPV6_HDRINCL`. The UDP checksum is computed, so the receiver accepts
/// the datagram as genuine.
///
/// # Errors
/// When `src` and `to` are of different families, the payload does not fit one datagram, the
/// namespace cannot be joined, or sending fails.
pub fn send_udp_spoofed(
    ns: &Netns,
    src: SocketAddr,
    to: SocketAddr,
    payload: &[u8],
) -> io::Result<()> {
    send_udp_spoofed_batch(ns, src, to, &[payload]).map(|_| ())
}

/// Sends each of `payloads` as in [`send_udp_spoofed`], in order, on one raw socket. Returns
/// how many were sent: all of them, unless [`BATCH_TIME_LIMIT`] ran out first.
///
/// # Errors
/// As [`send_udp_spoofed`], and when more than [`MAX_BATCH`] payloads are given.
pub fn send_udp_spoofed_batch<P: AsRef<[u8]>>(
    ns: &Netns,
    src: SocketAddr,
    to: SocketAddr,
    payloads: &[P],
) -> io::Result<usize> {
    if payloads.len() > MAX_BATCH {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} packets asked, at most {MAX_BATCH} per batch",
                payloads.len()
            ),
        ));
    }
    let packets = payloads
        .iter()
        .map(|p| udp_packet(src, to, p.as_ref()))
        .collect::<io::Result<Vec<_>>>()?;
    send_raw(ns, to.ip(), packets)
}

/// Sends one whole IP packet (from [`udp_packet`] or [`tcp_packet`]; source address and all)
/// from inside `ns` on a raw socket, to the destination its header names.
///
/// # Errors
/// When the packet is not a whole IPv4 or IPv6 header's worth, or as [`send_udp_spoofed`].
pub fn send_ip_packet(ns: &Netns, packet: Vec<u8>) -> io::Result<()> {
    let dst = match packet.first().map(|b| b >> 4) {
        Some(4) if packet.len() >= IPV4_HEADER_LEN => {
            IpAddr::from(<[u8; 4]>::try_from(&packet[16..20]).map_err(io::Error::other)?)
        }
        Some(6) if packet.len() >= IPV6_HEADER_LEN => {
            IpAddr::from(<[u8; 16]>::try_from(&packet[24..40]).map_err(io::Error::other)?)
        }
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not an IPv4 or IPv6 packet",
            ))
        }
    };
    send_raw(ns, dst, vec![packet]).map(|_| ())
}

/// Sends `packets` (whole IP packets to `dst`) on one raw socket in `ns`, within
/// [`BATCH_TIME_LIMIT`]; returns how many were sent.
fn send_raw(ns: &Netns, dst: IpAddr, packets: Vec<Vec<u8>>) -> io::Result<usize> {
    ns.run_in(move || -> io::Result<usize> {
        let sock = RawIpSocket::new(dst.is_ipv6())?;
        let start = Instant::now();
        for (i, packet) in packets.iter().enumerate() {
            if start.elapsed() >= BATCH_TIME_LIMIT {
                return Ok(i);
            }
            match dst {
                IpAddr::V4(d) => sock.send_v4(packet, d)?,
                IpAddr::V6(d) => sock.send_v6(packet, d)?,
            }
        }
        Ok(packets.len())
    })?
}

/// Builds a whole IPv4 or IPv6 packet carrying one UDP datagram from `src` to `dst`, every
/// checksum filled in (as a packet injected into a TUN interface must be).
///
/// # Errors
/// When the families differ or the payload does not fit one datagram.
pub fn udp_packet(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> io::Result<Vec<u8>> {
    let udp_len = u16::try_from(UDP_HEADER_LEN + payload.len())
        .ok()
        .filter(|&n| usize::from(n) + IPV6_HEADER_LEN <= usize::from(u16::MAX))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "payload of {} bytes does not fit one datagram",
                    payload.len()
                ),
            )
        })?;
    let mut udp = Vec::with_capacity(usize::from(udp_len));
    udp.extend_from_slice(&src.port().to_be_bytes());
    udp.extend_from_slice(&dst.port().to_be_bytes());
    udp.extend_from_slice(&udp_len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]); // checksum, filled in by ip_packet
    udp.extend_from_slice(payload);
    ip_packet(src.ip(), dst.ip(), IPPROTO_UDP, udp, 6)
}

/// Builds a whole IPv4 or IPv6 packet carrying one 20-byte TCP header (no payload) from `src`
/// to `dst` with `flags` (bits as in [`TcpFlags`]: `TcpFlags::SYN | TcpFlags::ACK`), every
/// checksum filled in.
///
/// # Errors
/// When the families differ.
pub fn tcp_packet(src: SocketAddr, dst: SocketAddr, flags: u8) -> io::Result<Vec<u8>> {
    let mut seg = Vec::with_capacity(20);
    seg.extend_from_slice(&src.port().to_be_bytes());
    seg.extend_from_slice(&dst.port().to_be_bytes());
    seg.extend_from_slice(&0x1234_5678u32.to_be_bytes()); // sequence number
    let ack_no: u32 = if flags & TcpFlags::ACK != 0 {
        0x0bad_f00d
    } else {
        0
    };
    seg.extend_from_slice(&ack_no.to_be_bytes());
    seg.extend_from_slice(&[5 << 4, flags]); // data offset 5 words; flags
    seg.extend_from_slice(&64240u16.to_be_bytes()); // window
    seg.extend_from_slice(&[0, 0, 0, 0]); // checksum (filled in by ip_packet), urgent pointer
    ip_packet(src.ip(), dst.ip(), IPPROTO_TCP, seg, 16)
}

/// Wraps the transport segment `l4` (at most 65 495 bytes, as the callers check) in an IPv4
/// or IPv6 header from `src` to `dst`, after writing its checksum (pseudo-header included) at
/// byte `checksum_at`. Both IPv4 checksums are filled in: raw sockets overwrite the header's,
/// a TUN interface does not.
fn ip_packet(
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    mut l4: Vec<u8>,
    checksum_at: usize,
) -> io::Result<Vec<u8>> {
    let l4_len = u16::try_from(l4.len()).map_err(io::Error::other)?;
    let mut pseudo = Vec::with_capacity(40);
    let mut packet;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&[0, proto]);
            pseudo.extend_from_slice(&l4_len.to_be_bytes());
            let total = u16::try_from(IPV4_HEADER_LEN + l4.len()).map_err(io::Error::other)?;
            packet = Vec::with_capacity(IPV4_HEADER_LEN + l4.len());
            packet.extend_from_slice(&[0x45, 0]); // version 4, IHL 5; TOS 0
            packet.extend_from_slice(&total.to_be_bytes());
            // id 0, DF, TTL, protocol, header checksum (below)
            packet.extend_from_slice(&[0, 0, 0x40, 0, HOP_LIMIT, proto, 0, 0]);
            packet.extend_from_slice(&s.octets());
            packet.extend_from_slice(&d.octets());
            let check = !fold(ones_complement_sum(&packet, 0));
            packet[10..12].copy_from_slice(&check.to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&u32::from(l4_len).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, proto]);
            packet = Vec::with_capacity(IPV6_HEADER_LEN + l4.len());
            packet.extend_from_slice(&[0x60, 0, 0, 0]); // version 6, class 0, flow 0
            packet.extend_from_slice(&l4_len.to_be_bytes());
            packet.extend_from_slice(&[proto, HOP_LIMIT]);
            packet.extend_from_slice(&s.octets());
            packet.extend_from_slice(&d.octets());
        }
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("source {src} and destination {dst} are of different families"),
            ))
        }
    }
    let check = match !fold(ones_complement_sum(&l4, ones_complement_sum(&pseudo, 0))) {
        // A computed 0 is sent as 0xffff (RFC 768: 0 means "no checksum" in IPv4 UDP; the
        // same value in one's complement for TCP).
        0 => 0xffff,
        c => c,
    };
    l4[checksum_at..checksum_at + 2].copy_from_slice(&check.to_be_bytes());
    packet.extend_from_slice(&l4);
    Ok(packet)
}

/// Adds `data` as big-endian 16-bit words (odd tail padded with 0) to `sum`.
fn ones_complement_sum(data: &[u8], mut sum: u32) -> u32 {
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum = fold(sum + u32::from(u16::from_be_bytes([w[0], w[1]]))).into();
    }
    if let [last] = words.remainder() {
        sum = fold(sum + (u32::from(*last) << 8)).into();
    }
    sum
}

/// Folds carries back into 16 bits.
fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop leaves sum <= 0xffff.
    u16::try_from(sum).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 1071 example words: 0001 f203 f4f5 f6f7 sum to ddf2.
    #[test]
    fn checksum_rfc1071_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(ones_complement_sum(&data, 0)), 0xddf2);
    }

    #[test]
    fn v4_packet_layout() {
        let src: SocketAddr = "10.99.0.2:40000".parse().expect("literal");
        let dst: SocketAddr = "10.99.0.1:62201".parse().expect("literal");
        let p = udp_packet(src, dst, b"abc").expect("fits");
        assert_eq!(p.len(), 20 + 8 + 3);
        assert_eq!(&p[2..4], &31u16.to_be_bytes());
        assert_eq!(&p[12..16], &[10, 99, 0, 2]);
        assert_eq!(&p[20..22], &40000u16.to_be_bytes());
        assert_eq!(&p[22..24], &62201u16.to_be_bytes());
        assert_eq!(&p[24..26], &11u16.to_be_bytes());
        // Summing pseudo-header + UDP datagram including its checksum gives 0xffff.
        let mut pseudo = vec![10, 99, 0, 2, 10, 99, 0, 1, 0, 17, 0, 11];
        pseudo.extend_from_slice(&p[20..]);
        assert_eq!(fold(ones_complement_sum(&pseudo, 0)), 0xffff);
    }

    #[test]
    fn ipv4_header_checksum_verifies() {
        let src: SocketAddr = "10.99.0.2:40000".parse().expect("literal");
        let dst: SocketAddr = "10.99.0.1:7000".parse().expect("literal");
        for p in [
            udp_packet(src, dst, b"abc").expect("fits"),
            tcp_packet(src, dst, TcpFlags::SYN).expect("same family"),
        ] {
            assert_ne!(&p[10..12], &[0, 0]);
            assert_eq!(fold(ones_complement_sum(&p[..20], 0)), 0xffff);
        }
    }

    #[test]
    fn tcp_packet_layout_and_checksum() {
        let src: SocketAddr = "[fd99::2]:40000".parse().expect("literal");
        let dst: SocketAddr = "[fd99::1]:7000".parse().expect("literal");
        let p = tcp_packet(src, dst, TcpFlags::SYN).expect("same family");
        assert_eq!(p.len(), 40 + 20);
        assert_eq!(p[6], 6, "next header TCP");
        assert_eq!(&p[42..44], &7000u16.to_be_bytes());
        assert_eq!(p[40 + 13], TcpFlags::SYN);
        let mut pseudo = p[8..40].to_vec();
        pseudo.extend_from_slice(&[0, 0, 0, 20, 0, 0, 0, 6]);
        pseudo.extend_from_slice(&p[40..]);
        assert_eq!(fold(ones_complement_sum(&pseudo, 0)), 0xffff);
        assert!(tcp_packet("10.0.0.1:1".parse().expect("literal"), dst, 0).is_err());
    }

    #[test]
    fn mixed_families_rejected() {
        let src: SocketAddr = "10.99.0.2:1".parse().expect("literal");
        let dst: SocketAddr = "[fd99::1]:2".parse().expect("literal");
        assert!(udp_packet(src, dst, b"").is_err());
    }
}
