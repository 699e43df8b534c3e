//! `knock`: the legacy port-knock sequence, behaving like the `knock` client of knockd 0.8.
//!
//! Role: for each `PORT[:PROTO]` in order, one hit on HOST: for TCP a non-blocking connect
//! (the kernel sends the SYN inside `connect`; the socket is closed at once without waiting
//! for the handshake), for UDP one datagram holding a single zero byte (knock sends
//! `sendto(sd, "", 1, ...)`, the string's terminating NUL); then the delay.
//!
//! Differences from knock, on purpose: a port that is not a number in 1..=65535 or a protocol
//! other than tcp/udp is an error (knock's `atoi` turns junk into port 0, and any suffix
//! other than `udp` into TCP); a connect that fails at once for a reason other than "in
//! progress" or "refused" (no route, blocked by the local firewall) is reported, because no
//! SYN left; there is no delay after the last hit.
//!
//! It must not wait for a handshake or read any reply.

use std::io::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::num::NonZeroU16;
use std::time::Duration;

use anyhow::Context as _;
use knock_shared::types::{parse_port, PortSpec, Proto};
use socket2::{Domain, Protocol, Socket, Type};

use crate::cli::KnockArgs;
use crate::model::InputError;
use crate::net;

/// The payload of a UDP hit: one zero byte, as knock sends.
pub const UDP_PAYLOAD: [u8; 1] = [0];

/// Parses one `PORT`, `PORT:tcp`, `PORT:udp` (or with `/`); a port without a protocol uses
/// `default`.
pub fn parse_hit(text: &str, default: Proto) -> Result<PortSpec, InputError> {
    let t = text.trim();
    let (port, proto) = match t.split_once([':', '/']) {
        Some((port, proto)) => (
            port,
            proto
                .trim()
                .parse::<Proto>()
                .map_err(|_| InputError::BadProto { text: t.to_owned() })?,
        ),
        None => (t, default),
    };
    let port: NonZeroU16 = parse_port(port).map_err(|_| InputError::BadPort {
        text: port.trim().to_owned(),
    })?;
    Ok(PortSpec { proto, port })
}

/// Parses the whole sequence (duplicates kept: a sequence may hit a port twice). With
/// `all_udp` (`-u`) every hit is UDP, an explicit `:tcp` included: that is what knock's `-u`
/// ("make all port hits use UDP") does, observed with Debian's knock.
pub fn parse_sequence(ports: &[String], all_udp: bool) -> Result<Vec<PortSpec>, InputError> {
    ports
        .iter()
        .map(|p| {
            let hit = parse_hit(p, Proto::Tcp)?;
            Ok(if all_udp {
                PortSpec {
                    proto: Proto::Udp,
                    ..hit
                }
            } else {
                hit
            })
        })
        .collect()
}

/// The `-v` line, exactly as knock prints it (`hitting tcp 10.0.0.1:7000`; IPv6 addresses
/// without brackets, as knock's `getnameinfo` output is).
pub fn hit_line(proto: Proto, ip: IpAddr, port: NonZeroU16) -> String {
    format!("hitting {proto} {ip}:{port}")
}

fn unspecified(target: SocketAddr) -> IpAddr {
    match target {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    }
}

/// One TCP hit: start a connect and close the socket at once.
pub fn hit_tcp(target: SocketAddr) -> io::Result<()> {
    let sock = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    sock.set_nonblocking(true)?;
    match sock.connect(&target.into()) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(()),
        // The SYN left and a RST came back before connect returned (loopback, LAN): the
        // server saw the knock all the same.
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(()),
        Err(e) => Err(e),
    }
    // `sock` is dropped (closed) here, like knock's close(sd) right after connect.
}

/// One UDP hit: one datagram with [`UDP_PAYLOAD`].
pub fn hit_udp(target: SocketAddr) -> io::Result<()> {
    let sock = UdpSocket::bind((unspecified(target), 0))?;
    sock.send_to(&UDP_PAYLOAD, target)?;
    Ok(())
}

/// Runs `knock`.
pub fn execute(args: &KnockArgs) -> anyhow::Result<()> {
    let sequence = parse_sequence(&args.ports, args.udp)?;
    // Resolved once: knock resolves per port but always takes the first answer.
    let host = net::resolve(&args.host, 0, args.family.family())?;
    let delay = Duration::from_millis(args.delay_ms);
    for (i, hit) in sequence.iter().enumerate() {
        if i > 0 && !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let target = SocketAddr::new(host.ip(), hit.port.get());
        if args.verbose {
            // Flushed per line, as knock does, so the order shows even when piped.
            let mut out = io::stdout().lock();
            writeln!(out, "{}", hit_line(hit.proto, target.ip(), hit.port))
                .and_then(|()| out.flush())
                .context("cannot write to stdout")?;
        }
        match hit.proto {
            Proto::Tcp => hit_tcp(target),
            Proto::Udp => hit_udp(target),
        }
        .with_context(|| format!("cannot knock on {} {target}", hit.proto))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> PortSpec {
        s.parse().expect("test spec")
    }

    #[test]
    fn sequence_parsing() {
        let seq: Vec<String> = ["7000", "8000:udp", "9000:tcp", "7000", "53/UDP"]
            .map(String::from)
            .into();
        assert_eq!(
            parse_sequence(&seq, false),
            Ok(vec![
                spec("7000/tcp"),
                spec("8000/udp"),
                spec("9000/tcp"),
                spec("7000/tcp"),
                spec("53/udp"),
            ])
        );
        // -u makes every hit UDP, an explicit :tcp included, as knock -u does.
        assert_eq!(
            parse_sequence(&seq, true),
            Ok(vec![
                spec("7000/udp"),
                spec("8000/udp"),
                spec("9000/udp"),
                spec("7000/udp"),
                spec("53/udp"),
            ])
        );
    }

    #[test]
    fn bad_hits() {
        for bad in ["0", "65536", "x", "", ":udp", "-5"] {
            assert!(
                matches!(parse_hit(bad, Proto::Tcp), Err(InputError::BadPort { .. })),
                "{bad}"
            );
        }
        for bad in ["7000:icmp", "7000:", "7000:udpx"] {
            assert!(
                matches!(parse_hit(bad, Proto::Tcp), Err(InputError::BadProto { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn verbose_line_like_knock() {
        let p = NonZeroU16::new(7000).expect("nonzero");
        assert_eq!(
            hit_line(Proto::Tcp, "10.0.0.1".parse().expect("ip"), p),
            "hitting tcp 10.0.0.1:7000"
        );
        assert_eq!(
            hit_line(Proto::Udp, "::1".parse().expect("ip"), p),
            "hitting udp ::1:7000"
        );
    }
}
