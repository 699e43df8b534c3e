//! Small value types shared by the wire format, the configuration and the trackers.
//!
//! Nothing here allocates or does I/O.

use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU16;
use std::str::FromStr;

/// `ip` with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) rewritten to plain IPv4: the
/// form addresses are compared and admitted in (PROTOCOL.md §7, address policy).
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `ip` may be admitted: an address a rule for one host makes sense for. Refused: the
/// unspecified address (`0.0.0.0`, `::`), which some firewall front ends and scripts read as
/// "any"; multicast; and the IPv4 limited broadcast `255.255.255.255`. No client has any of
/// them as its address. Also refused: IPv6 link-local addresses (`fe80::/10`), which name a
/// host only together with a link: a rule `-s fe80::…` admits that address on every link, so
/// anyone on any of the host's links could take it. Loopback is allowed (a knock from the host
/// itself, when trying a configuration out). An IPv4-mapped IPv6 address is judged as the IPv4
/// address it maps.
pub fn admissible(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(a) => !(a.is_unspecified() || a.is_multicast() || a.is_broadcast()),
        IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast() || a.is_unicast_link_local()),
    }
}

/// What a grant admits: one address (`len` the address's full length), or the network of
/// `len` leading bits that an address is in (a door's `Admit_Prefix`). `addr` is canonical and
/// has its other bits zero. Displayed as firewall commands take it: `198.51.100.7`, or
/// `198.51.100.0/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Admitted {
    /// The address, or the network's first address.
    pub addr: IpAddr,
    /// Prefix length: 32 or 128 for one address.
    pub len: u8,
}

impl Admitted {
    /// Exactly `ip`.
    pub fn host(ip: IpAddr) -> Self {
        let addr = canonical(ip);
        Self {
            addr,
            len: full_len(addr),
        }
    }

    /// The network of `len` leading bits that `ip` is in (`len` is capped at the address's
    /// length).
    pub fn network(ip: IpAddr, len: u8) -> Self {
        let addr = canonical(ip);
        let len = len.min(full_len(addr));
        let addr = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        Self { addr, len }
    }

    /// Whether this is one address.
    pub fn is_host(&self) -> bool {
        self.len == full_len(self.addr)
    }

    /// Whether `ip` is admitted by it.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip.is_ipv4() == self.addr.is_ipv4() && Self::network(ip, self.len).addr == self.addr
    }
}

fn full_len(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

impl fmt::Display for Admitted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.len)
        }
    }
}

/// A door's `Admit_Prefix`: the prefix lengths whose network a verified address admits, for
/// IPv4 and IPv6.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdmitPrefix {
    /// IPv4 prefix length, 8 to 32.
    pub v4: u8,
    /// IPv6 prefix length, 16 to 128.
    pub v6: u8,
}

impl AdmitPrefix {
    /// What a grant for `ip` admits under this prefix.
    pub fn admitted(&self, ip: IpAddr) -> Admitted {
        let ip = canonical(ip);
        Admitted::network(ip, if ip.is_ipv4() { self.v4 } else { self.v6 })
    }
}

/// A transport protocol a door can guard or a knock can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// TCP (IP protocol number 6).
    Tcp,
    /// UDP (IP protocol number 17).
    Udp,
}

impl Proto {
    /// The IP protocol number, as written on the wire.
    pub const fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }

    /// The protocol for an IP protocol number, if it is one we handle.
    pub const fn from_number(n: u8) -> Option<Self> {
        match n {
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            _ => None,
        }
    }

    /// `"tcp"` or `"udp"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Proto {
    type Err = PortSpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("tcp") {
            Ok(Proto::Tcp)
        } else if s.eq_ignore_ascii_case("udp") {
            Ok(Proto::Udp)
        } else {
            Err(PortSpecError::BadProto)
        }
    }
}

/// One protocol and port, e.g. `22/tcp`. Port 0 cannot be represented.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortSpec {
    /// The protocol.
    pub proto: Proto,
    /// The port, 1..=65535.
    pub port: NonZeroU16,
}

impl PortSpec {
    /// Builds a port spec; `None` for port 0.
    pub fn new(proto: Proto, port: u16) -> Option<Self> {
        NonZeroU16::new(port).map(|port| Self { proto, port })
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.proto)
    }
}

/// Why a `PORT[/PROTO]` text was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PortSpecError {
    /// Not a number in 1..=65535.
    #[error("port must be a number from 1 to 65535")]
    BadPort,
    /// Not `tcp` or `udp`.
    #[error("protocol must be tcp or udp")]
    BadProto,
}

/// Parses a port number in 1..=65535.
pub fn parse_port(s: &str) -> Result<NonZeroU16, PortSpecError> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PortSpecError::BadPort);
    }
    s.parse::<u16>()
        .ok()
        .and_then(NonZeroU16::new)
        .ok_or(PortSpecError::BadPort)
}

impl FromStr for PortSpec {
    type Err = PortSpecError;
    /// Parses `22`, `22/tcp`, `53/udp` (also `22:tcp`, knockd's separator). The protocol
    /// defaults to TCP.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (port, proto) = match s.split_once(['/', ':']) {
            Some((p, proto)) => (p, proto.trim().parse()?),
            None => (s, Proto::Tcp),
        };
        Ok(PortSpec {
            proto,
            port: parse_port(port)?,
        })
    }
}

/// A door's `TCPFlags`: bits that must be set and bits that must be clear (knockd's
/// `syn,!ack`). Empty matches every packet. Flags of UDP hits are never checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TcpFlags {
    /// Bits that must all be set.
    pub must_set: u8,
    /// Bits that must all be clear.
    pub must_clear: u8,
}

/// Why a `TCPFlags` value was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TcpFlagsError {
    /// No flag given.
    #[error("no flag given (use fin, syn, rst, psh, ack, urg, each optionally with !)")]
    Empty,
    /// A word that is not a flag.
    #[error("unknown flag {0:?} (use fin, syn, rst, psh, ack, urg, each optionally with !)")]
    Unknown(String),
    /// A flag both required and excluded.
    #[error("flag {0} is both required and excluded")]
    Conflict(&'static str),
}

impl TcpFlags {
    /// FIN bit of the TCP header's flags byte.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// URG.
    pub const URG: u8 = 0x20;

    const NAMES: [(&'static str, u8); 6] = [
        ("fin", Self::FIN),
        ("syn", Self::SYN),
        ("rst", Self::RST),
        ("psh", Self::PSH),
        ("ack", Self::ACK),
        ("urg", Self::URG),
    ];

    /// No requirement: every TCP packet matches (knockd's default).
    pub const ANY: Self = Self {
        must_set: 0,
        must_clear: 0,
    };

    /// Whether a packet with these header flags counts for the door.
    pub const fn matches(self, flags: u8) -> bool {
        flags & self.must_set == self.must_set && flags & self.must_clear == 0
    }

    /// No constraint at all.
    pub const fn is_empty(self) -> bool {
        self.must_set == 0 && self.must_clear == 0
    }
}

impl FromStr for TcpFlags {
    type Err = TcpFlagsError;

    /// Parses knockd's comma list (`syn,!ack`), case-insensitive, blanks around words allowed.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Err(TcpFlagsError::Empty);
        }
        let mut out = TcpFlags::default();
        for word in s.split(',') {
            let word = word.trim();
            let (negated, name) = match word.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, word),
            };
            let Some(&(canonical, bit)) = Self::NAMES
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
            else {
                return Err(TcpFlagsError::Unknown(word.to_owned()));
            };
            if negated {
                out.must_clear |= bit;
            } else {
                out.must_set |= bit;
            }
            if out.must_set & out.must_clear != 0 {
                return Err(TcpFlagsError::Conflict(canonical));
            }
        }
        Ok(out)
    }
}

impl fmt::Display for TcpFlags {
    /// knockd's notation, e.g. `syn,!ack`; empty when there is no constraint.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (name, bit) in Self::NAMES {
            let prefix = if self.must_set & bit != 0 {
                ""
            } else if self.must_clear & bit != 0 {
                "!"
            } else {
                continue;
            };
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{prefix}{name}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admitted_networks_mask_and_contain() {
        let ip = |s: &str| -> IpAddr { s.parse().expect("ip") };
        let p = AdmitPrefix { v4: 24, v6: 64 };
        let a = p.admitted(ip("198.51.100.77"));
        assert_eq!(a.to_string(), "198.51.100.0/24");
        assert!(a.contains(ip("198.51.100.1")) && a.contains(ip("::ffff:198.51.100.200")));
        assert!(!a.contains(ip("198.51.101.1")) && !a.contains(ip("2001:db8::1")));
        let b = p.admitted(ip("2001:db8:1:2:3:4:5:6"));
        assert_eq!(b.to_string(), "2001:db8:1:2::/64");
        assert!(b.contains(ip("2001:db8:1:2::99")) && !b.contains(ip("2001:db8:1:3::1")));
        // A mapped address is its IPv4 address; full lengths are one host.
        assert_eq!(p.admitted(ip("::ffff:10.1.2.3")).to_string(), "10.1.2.0/24");
        let host = Admitted::host(ip("::ffff:10.1.2.3"));
        assert!(host.is_host());
        assert_eq!(host.to_string(), "10.1.2.3");
        assert_eq!(Admitted::network(ip("10.1.2.3"), 32), host);
        assert_eq!(
            Admitted::network(ip("10.1.2.3"), 0).to_string(),
            "0.0.0.0/0"
        );
        assert_eq!(Admitted::network(ip("10.1.2.3"), 99), host, "capped");
    }

    #[test]
    fn admissible_addresses_are_host_addresses() {
        let yes = [
            "192.0.2.10",
            "10.0.0.1",
            "127.0.0.1",
            "::1",
            "2001:db8::7",
            "::ffff:192.0.2.10",
        ];
        let no = [
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "239.1.2.3",
            "ff02::1",
            "255.255.255.255",
            "::ffff:224.0.0.9",
            "::ffff:0.0.0.0",
            "fe80::1",
            "febf::1",
        ];
        for a in yes {
            assert!(admissible(a.parse().expect("ip")), "{a}");
        }
        for a in no {
            assert!(!admissible(a.parse().expect("ip")), "{a}");
        }
    }

    #[test]
    fn port_specs() {
        assert_eq!(
            "22".parse::<PortSpec>(),
            Ok(PortSpec::new(Proto::Tcp, 22).expect("nz"))
        );
        assert_eq!(
            "53/udp".parse::<PortSpec>(),
            Ok(PortSpec::new(Proto::Udp, 53).expect("nz"))
        );
        assert_eq!(
            "53:UDP".parse::<PortSpec>(),
            Ok(PortSpec::new(Proto::Udp, 53).expect("nz"))
        );
        for bad in ["0", "65536", "-1", "", "22/sctp", "x", "22/", "+22"] {
            assert!(bad.parse::<PortSpec>().is_err(), "{bad}");
        }
        assert_eq!(
            PortSpec::new(Proto::Tcp, 22).expect("nz").to_string(),
            "22/tcp"
        );
    }
}
