//! Parsing captured frames into the few facts the daemon acts on.
//!
//! [`parse_frame`] takes one frame exactly as libpcap delivered it (the link type of the
//! capture handle and the captured bytes) and returns a [`Packet`] borrowing from those bytes:
//! source and destination address, protocol, ports, TCP flags and the UDP payload. Everything
//! it cannot describe with certainty is `None`: other protocols, malformed or truncated
//! headers, fragments, link types we do not know.
//!
//! Must not: allocate, panic on any input, read a clock, or do any I/O. Every byte read goes
//! through a bounds-checked accessor (`get`), so attacker bytes cannot index out of range.
//!
//! # Link types
//!
//! | value | name | header |
//! |---|---|---|
//! | 0 | `DLT_NULL` (BSD loopback) | 4-byte address family, in the capturing host's byte order |
//! | 1 | `DLT_EN10MB` (Ethernet) | 14 bytes, then any number of 802.1Q / 802.1ad tags (4 bytes each, at most [`MAX_VLAN_TAGS`]) |
//! | 12, 101 | `DLT_RAW` / `LINKTYPE_RAW` (tun, raw IP) | none: the IP version nibble decides |
//! | 113 | `DLT_LINUX_SLL` (the `any` device) | 16 bytes, protocol at offset 14 |
//! | 276 | `DLT_LINUX_SLL2` | 20 bytes, protocol at offset 0 |
//!
//! Linux cooked headers say which way a packet went; packets the host itself sent
//! (`PACKET_OUTGOING`) are not observations and yield `None` (on `lo` each packet is otherwise
//! seen twice, once leaving and once arriving), and neither do frames for another host's link
//! address (`PACKET_OTHERHOST`: seen on a bridge port, or in promiscuous mode).
//!
//! # IP rules
//!
//! - IPv4: version 4, IHL ≥ 5 and within the captured bytes, total length ≥ IHL·4 and not
//!   beyond the captured bytes (a snap length shorter than the packet is a truncated packet,
//!   refused). Bytes after the total length are link padding (Ethernet pads frames to 60
//!   bytes) and are cut off. Any fragment (MF set or a non-zero offset) is refused: a knock
//!   or an SPA packet is never fragmented, and the first fragment of a UDP datagram does not
//!   carry the whole payload. The header checksum is not checked (the kernel drops bad ones
//!   before any socket sees them, and a forger computes a correct one anyway).
//! - IPv6: payload length not beyond the captured bytes (jumbograms, payload length 0, are
//!   refused); extension headers hop-by-hop (0), routing (43) and destination options (60)
//!   are skipped, at most [`MAX_IPV6_EXT_HEADERS`] of them; a fragment header (44) or anything
//!   other than TCP or UDP after them is refused.
//! - TCP: at least 20 bytes and a data offset within the segment; the payload is not kept.
//! - UDP: at least 8 bytes and a length field ≥ 8; the payload is
//!   `min(udp length − 8, bytes available)`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::types::Proto;

/// `DLT_NULL`: BSD loopback encapsulation.
pub const DLT_NULL: i32 = 0;
/// `DLT_EN10MB`: Ethernet (and 802.1Q VLAN tagged Ethernet).
pub const DLT_EN10MB: i32 = 1;
/// `DLT_RAW` as most libpcap builds number it: raw IPv4 or IPv6, no link header.
pub const DLT_RAW: i32 = 12;
/// `LINKTYPE_RAW`: the same raw IP encapsulation under its file-format number (some libpcap
/// builds report it as the link type).
pub const LINKTYPE_RAW: i32 = 101;
/// `DLT_LINUX_SLL`: Linux cooked capture v1 (the `any` device).
pub const DLT_LINUX_SLL: i32 = 113;
/// `DLT_LINUX_SLL2`: Linux cooked capture v2.
pub const DLT_LINUX_SLL2: i32 = 276;

/// Ethernet header: destination MAC (6) + source MAC (6) + EtherType (2).
const ETH_HEADER_LEN: usize = 6 + 6 + 2;
/// An 802.1Q / 802.1ad tag: TCI (2) + inner EtherType (2).
const VLAN_TAG_LEN: usize = 2 + 2;
/// How many stacked VLAN tags we follow (QinQ is two; more is not a real network).
pub const MAX_VLAN_TAGS: usize = 4;
/// Linux cooked v1: packet type (2) + ARPHRD (2) + address length (2) + address (8) +
/// protocol (2).
const SLL_HEADER_LEN: usize = 2 + 2 + 2 + 8 + 2;
/// Offset of the protocol field in a cooked v1 header.
const SLL_PROTOCOL_OFFSET: usize = 14;
/// Linux cooked v2: protocol (2) + reserved (2) + interface index (4) + ARPHRD (2) + packet
/// type (1) + address length (1) + address (8).
const SLL2_HEADER_LEN: usize = 2 + 2 + 4 + 2 + 1 + 1 + 8;
/// Offset of the packet type byte in a cooked v2 header.
const SLL2_PKTTYPE_OFFSET: usize = 10;
/// `PACKET_OUTGOING`: the packet was sent by this host.
const PACKET_OUTGOING: u16 = 4;
/// `PACKET_OTHERHOST`: the frame was addressed to another host's link address.
const PACKET_OTHERHOST: u16 = 3;

/// Whether a cooked header's packet type is one to look at: not sent by this host, not for
/// another host.
fn observed(pkttype: u16) -> bool {
    pkttype != PACKET_OUTGOING && pkttype != PACKET_OTHERHOST
}
/// `DLT_NULL` header: one 32-bit address family.
const NULL_HEADER_LEN: usize = 4;
/// `AF_INET` on every system.
const AF_INET: u32 = 2;
/// `AF_INET6` as Linux, OpenBSD/NetBSD, FreeBSD and macOS number it.
const AF_INET6_VALUES: [u32; 4] = [10, 24, 28, 30];

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
/// 802.1Q customer tag.
const ETHERTYPE_VLAN: u16 = 0x8100;
/// 802.1ad service tag (QinQ outer tag).
const ETHERTYPE_QINQ: u16 = 0x88a8;
/// Pre-standard QinQ outer tag still emitted by some switches.
const ETHERTYPE_QINQ_OLD: u16 = 0x9100;

/// Minimum IPv4 header: 5 32-bit words.
const IPV4_MIN_HEADER_LEN: usize = 20;
/// IPv4 flags/fragment field: "more fragments" bit.
const IPV4_MF: u16 = 0x2000;
/// IPv4 flags/fragment field: the 13-bit fragment offset.
const IPV4_OFFSET_MASK: u16 = 0x1fff;
/// Fixed IPv6 header.
const IPV6_HEADER_LEN: usize = 40;
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_DEST_OPTS: u8 = 60;
/// How many skippable IPv6 extension headers we walk before giving up.
pub const MAX_IPV6_EXT_HEADERS: usize = 8;
/// Minimum TCP header: 5 32-bit words.
const TCP_MIN_HEADER_LEN: usize = 20;
/// Offset of the flags byte in the TCP header.
const TCP_FLAGS_OFFSET: usize = 13;
/// UDP header: source port (2) + destination port (2) + length (2) + checksum (2).
const UDP_HEADER_LEN: usize = 8;

/// One captured TCP or UDP packet, borrowing its payload from the captured frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    /// Source address (the knocker, or whoever forged it).
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// TCP or UDP.
    pub proto: Proto,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// The TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10, URG 0x20, ECE
    /// 0x40, CWR 0x80); 0 for UDP.
    pub tcp_flags: u8,
    /// The UDP payload (cut to the UDP length); empty for TCP.
    pub payload: &'a [u8],
}

/// Parses one captured frame of libpcap link type `linktype`. `None` for anything that is not
/// a complete, unfragmented TCP or UDP packet over IPv4 or IPv6 on a link type we know; see the
/// module documentation for the exact rules. Never panics, never allocates.
pub fn parse_frame(linktype: i32, data: &[u8]) -> Option<Packet<'_>> {
    match linktype {
        DLT_EN10MB => {
            let ethertype = be16(data, 12)?;
            parse_ethertype(ethertype, data.get(ETH_HEADER_LEN..)?)
        }
        DLT_LINUX_SLL => {
            if !observed(be16(data, 0)?) {
                return None;
            }
            let ethertype = be16(data, SLL_PROTOCOL_OFFSET)?;
            parse_ethertype(ethertype, data.get(SLL_HEADER_LEN..)?)
        }
        DLT_LINUX_SLL2 => {
            if !observed(u16::from(*data.get(SLL2_PKTTYPE_OFFSET)?)) {
                return None;
            }
            let ethertype = be16(data, 0)?;
            parse_ethertype(ethertype, data.get(SLL2_HEADER_LEN..)?)
        }
        DLT_RAW | LINKTYPE_RAW => parse_ip(data),
        DLT_NULL => {
            let family: [u8; 4] = data.get(..NULL_HEADER_LEN)?.try_into().ok()?;
            let ip = data.get(NULL_HEADER_LEN..)?;
            // The family is in the capturing host's byte order, which need not be ours.
            let families = [u32::from_le_bytes(family), u32::from_be_bytes(family)];
            let version = ip.first()? >> 4;
            if families.contains(&AF_INET) && version == 4 {
                parse_ipv4(ip)
            } else if families.iter().any(|f| AF_INET6_VALUES.contains(f)) && version == 6 {
                parse_ipv6(ip)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// Follows VLAN tags, then dispatches on the EtherType.
fn parse_ethertype(mut ethertype: u16, mut rest: &[u8]) -> Option<Packet<'_>> {
    for _ in 0..=MAX_VLAN_TAGS {
        match ethertype {
            ETHERTYPE_IPV4 => return parse_ipv4(rest),
            ETHERTYPE_IPV6 => return parse_ipv6(rest),
            ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD => {
                ethertype = be16(rest, 2)?;
                rest = rest.get(VLAN_TAG_LEN..)?;
            }
            _ => return None,
        }
    }
    None
}

/// Raw IP: the version nibble says which.
fn parse_ip(ip: &[u8]) -> Option<Packet<'_>> {
    match ip.first()? >> 4 {
        4 => parse_ipv4(ip),
        6 => parse_ipv6(ip),
        _ => None,
    }
}

fn parse_ipv4(ip: &[u8]) -> Option<Packet<'_>> {
    let first = *ip.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let header_len = usize::from(first & 0x0f) * 4;
    let total_len = usize::from(be16(ip, 2)?);
    if header_len < IPV4_MIN_HEADER_LEN || total_len < header_len || total_len > ip.len() {
        return None;
    }
    let frag = be16(ip, 6)?;
    if frag & (IPV4_MF | IPV4_OFFSET_MASK) != 0 {
        return None;
    }
    let proto = Proto::from_number(*ip.get(9)?)?;
    let src = Ipv4Addr::from(addr::<4>(ip, 12)?);
    let dst = Ipv4Addr::from(addr::<4>(ip, 16)?);
    // Cut Ethernet padding off at the IP total length.
    let l4 = ip.get(header_len..total_len)?;
    parse_l4(proto, src.into(), dst.into(), l4)
}

fn parse_ipv6(ip: &[u8]) -> Option<Packet<'_>> {
    if ip.first()? >> 4 != 6 {
        return None;
    }
    let payload_len = usize::from(be16(ip, 4)?);
    if payload_len == 0 {
        // Zero means a jumbogram (or nothing at all): not a knock.
        return None;
    }
    let mut next = *ip.get(6)?;
    let src = Ipv6Addr::from(addr::<16>(ip, 8)?);
    let dst = Ipv6Addr::from(addr::<16>(ip, 24)?);
    let mut rest = ip.get(IPV6_HEADER_LEN..IPV6_HEADER_LEN.checked_add(payload_len)?)?;
    for _ in 0..=MAX_IPV6_EXT_HEADERS {
        match next {
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS => {
                // Next header (1), header extension length in 8-byte units not counting the
                // first 8 (1), options.
                next = *rest.first()?;
                let len = (usize::from(*rest.get(1)?) + 1) * 8;
                rest = rest.get(len..)?;
            }
            IPV6_FRAGMENT => return None,
            n => return parse_l4(Proto::from_number(n)?, src.into(), dst.into(), rest),
        }
    }
    None
}

fn parse_l4(proto: Proto, src: IpAddr, dst: IpAddr, l4: &[u8]) -> Option<Packet<'_>> {
    let sport = be16(l4, 0)?;
    let dport = be16(l4, 2)?;
    match proto {
        Proto::Tcp => {
            let data_offset = usize::from(*l4.get(12)? >> 4) * 4;
            if data_offset < TCP_MIN_HEADER_LEN || data_offset > l4.len() {
                return None;
            }
            Some(Packet {
                src,
                dst,
                proto,
                sport,
                dport,
                tcp_flags: *l4.get(TCP_FLAGS_OFFSET)?,
                payload: &[],
            })
        }
        Proto::Udp => {
            let udp_len = usize::from(be16(l4, 4)?);
            if udp_len < UDP_HEADER_LEN || l4.len() < UDP_HEADER_LEN {
                return None;
            }
            let end = udp_len.min(l4.len());
            Some(Packet {
                src,
                dst,
                proto,
                sport,
                dport,
                tcp_flags: 0,
                payload: l4.get(UDP_HEADER_LEN..end)?,
            })
        }
    }
}

/// A big-endian u16 at `at`, if there are two bytes there.
fn be16(data: &[u8], at: usize) -> Option<u16> {
    let bytes = data.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes(bytes.try_into().ok()?))
}

/// `N` address bytes at `at`, if they are all there.
fn addr<const N: usize>(data: &[u8], at: usize) -> Option<[u8; N]> {
    data.get(at..at.checked_add(N)?)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SRC4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
    const DST4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
    const SRC6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7);
    const DST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    const SYN: u8 = 0x02;

    fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(&sport.to_be_bytes());
        t.extend_from_slice(&dport.to_be_bytes());
        t.extend_from_slice(&[0, 0, 0, 1]); // seq
        t.extend_from_slice(&[0, 0, 0, 0]); // ack
        t.push(5 << 4); // data offset 5 words
        t.push(flags);
        t.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]); // window, checksum, urgent
        t
    }

    fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut u = Vec::new();
        u.extend_from_slice(&sport.to_be_bytes());
        u.extend_from_slice(&dport.to_be_bytes());
        let len = u16::try_from(UDP_HEADER_LEN + payload.len()).expect("small payload");
        u.extend_from_slice(&len.to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(payload);
        u
    }

    /// IPv4 with `options` (a multiple of 4 bytes) after the fixed header.
    fn ipv4_opts(proto: u8, options: &[u8], l4: &[u8]) -> Vec<u8> {
        assert_eq!(options.len() % 4, 0);
        let ihl = u8::try_from(5 + options.len() / 4).expect("ihl");
        let total = u16::try_from(20 + options.len() + l4.len()).expect("len");
        let mut p = vec![0x40 | ihl, 0];
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&[0x12, 0x34, 0x40, 0x00]); // id, DF
        p.extend_from_slice(&[64, proto, 0, 0]);
        p.extend_from_slice(&SRC4.octets());
        p.extend_from_slice(&DST4.octets());
        p.extend_from_slice(options);
        p.extend_from_slice(l4);
        p
    }

    fn ipv4(proto: u8, l4: &[u8]) -> Vec<u8> {
        ipv4_opts(proto, &[], l4)
    }

    /// IPv6; `ext` is a list of (header type, body) whose bodies are 6 + 8k bytes.
    fn ipv6_ext(ext: &[(u8, Vec<u8>)], proto: u8, l4: &[u8]) -> Vec<u8> {
        let mut payload = Vec::new();
        let mut types: Vec<u8> = ext.iter().map(|(t, _)| *t).collect();
        types.push(proto);
        for (i, (_, body)) in ext.iter().enumerate() {
            assert_eq!((body.len() + 2) % 8, 0);
            payload.push(types[i + 1]);
            payload.push(u8::try_from((body.len() + 2) / 8 - 1).expect("ext len"));
            payload.extend_from_slice(body);
        }
        payload.extend_from_slice(l4);
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&u16::try_from(payload.len()).expect("len").to_be_bytes());
        p.push(types[0]);
        p.push(64);
        p.extend_from_slice(&SRC6.octets());
        p.extend_from_slice(&DST6.octets());
        p.extend_from_slice(&payload);
        p
    }

    fn ipv6(proto: u8, l4: &[u8]) -> Vec<u8> {
        ipv6_ext(&[], proto, l4)
    }

    fn eth(tags: &[u16], ethertype: u16, ip: &[u8]) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        for tpid in tags {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&[0x00, 0x0a]); // TCI: VLAN 10
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(ip);
        f
    }

    fn sll(pkttype: u16, ethertype: u16, ip: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&pkttype.to_be_bytes());
        f.extend_from_slice(&1u16.to_be_bytes()); // ARPHRD_ETHER
        f.extend_from_slice(&6u16.to_be_bytes());
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0, 0]);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(ip);
        f
    }

    fn sll2(pkttype: u8, ethertype: u16, ip: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&3u32.to_be_bytes()); // ifindex
        f.extend_from_slice(&1u16.to_be_bytes()); // ARPHRD_ETHER
        f.push(pkttype);
        f.push(6);
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0, 0]);
        f.extend_from_slice(ip);
        f
    }

    fn null_le(family: u32, ip: &[u8]) -> Vec<u8> {
        let mut f = family.to_le_bytes().to_vec();
        f.extend_from_slice(ip);
        f
    }

    fn syn4() -> Packet<'static> {
        Packet {
            src: SRC4.into(),
            dst: DST4.into(),
            proto: Proto::Tcp,
            sport: 40000,
            dport: 7000,
            tcp_flags: SYN,
            payload: &[],
        }
    }

    fn udp6(payload: &'static [u8]) -> Packet<'static> {
        Packet {
            src: SRC6.into(),
            dst: DST6.into(),
            proto: Proto::Udp,
            sport: 40001,
            dport: 62201,
            tcp_flags: 0,
            payload,
        }
    }

    /// Every link type, v4 TCP and v6 UDP: (linktype, frame, expected).
    fn corpus() -> Vec<(i32, Vec<u8>, Packet<'static>)> {
        let t4 = ipv4(6, &tcp(40000, 7000, SYN));
        let u6 = ipv6(17, &udp(40001, 62201, b"spa!"));
        let u4 = ipv4(17, &udp(40001, 62201, b"spa!"));
        let t6 = ipv6(6, &tcp(40000, 7000, SYN));
        let udp4 = Packet {
            src: SRC4.into(),
            dst: DST4.into(),
            ..udp6(b"spa!")
        };
        let syn6 = Packet {
            src: SRC6.into(),
            dst: DST6.into(),
            ..syn4()
        };
        vec![
            (DLT_EN10MB, eth(&[], ETHERTYPE_IPV4, &t4), syn4()),
            (DLT_EN10MB, eth(&[], ETHERTYPE_IPV6, &u6), udp6(b"spa!")),
            (
                DLT_EN10MB,
                eth(&[ETHERTYPE_VLAN], ETHERTYPE_IPV4, &u4),
                udp4,
            ),
            (
                DLT_EN10MB,
                eth(&[ETHERTYPE_QINQ, ETHERTYPE_VLAN], ETHERTYPE_IPV6, &t6),
                syn6,
            ),
            (DLT_LINUX_SLL, sll(0, ETHERTYPE_IPV4, &t4), syn4()),
            (DLT_LINUX_SLL, sll(0, ETHERTYPE_IPV6, &u6), udp6(b"spa!")),
            (DLT_LINUX_SLL2, sll2(0, ETHERTYPE_IPV4, &u4), udp4),
            (DLT_LINUX_SLL2, sll2(0, ETHERTYPE_IPV6, &t6), syn6),
            (DLT_RAW, t4.clone(), syn4()),
            (DLT_RAW, u6.clone(), udp6(b"spa!")),
            (LINKTYPE_RAW, u4.clone(), udp4),
            (LINKTYPE_RAW, t6.clone(), syn6),
            (DLT_NULL, null_le(AF_INET, &t4), syn4()),
            (DLT_NULL, null_le(30, &u6), udp6(b"spa!")),
            (
                DLT_NULL,
                (AF_INET).to_be_bytes().iter().copied().chain(u4).collect(),
                udp4,
            ),
            (
                DLT_NULL,
                10u32.to_be_bytes().iter().copied().chain(t6).collect(),
                syn6,
            ),
        ]
    }

    #[test]
    fn every_link_type_v4_v6_tcp_udp() {
        for (i, (linktype, frame, want)) in corpus().into_iter().enumerate() {
            assert_eq!(parse_frame(linktype, &frame), Some(want), "case {i}");
        }
    }

    #[test]
    fn every_truncation_is_none_and_never_panics() {
        for (i, (linktype, frame, _)) in corpus().into_iter().enumerate() {
            for len in 0..frame.len() {
                assert_eq!(
                    parse_frame(linktype, &frame[..len]),
                    None,
                    "case {i} len {len}"
                );
            }
        }
    }

    #[test]
    fn ethernet_padding_is_cut_at_ip_total_length() {
        // A 1-byte UDP payload makes a 43-byte frame; Ethernet pads it to 60 bytes.
        let mut frame = eth(&[], ETHERTYPE_IPV4, &ipv4(17, &udp(5, 6, b"x")));
        frame.resize(60, 0xee);
        let p = parse_frame(DLT_EN10MB, &frame).expect("parses");
        assert_eq!(p.payload, b"x");
        let mut frame = eth(&[], ETHERTYPE_IPV6, &ipv6(17, &udp(5, 6, b"")));
        frame.resize(90, 0xee);
        assert_eq!(
            parse_frame(DLT_EN10MB, &frame).expect("parses").payload,
            b""
        );
    }

    #[test]
    fn ipv4_options_are_skipped() {
        let opts = [0x94, 0x04, 0x00, 0x00, 0x01, 0x01, 0x01, 0x00]; // router alert, NOPs, EOL
        let frame = ipv4_opts(6, &opts, &tcp(40000, 7000, SYN));
        assert_eq!(parse_frame(DLT_RAW, &frame), Some(syn4()));
    }

    #[test]
    fn bad_ipv4_headers_are_refused() {
        let good = ipv4(6, &tcp(40000, 7000, SYN));
        assert!(parse_frame(DLT_RAW, &good).is_some());
        let cases: [(&str, usize, u8); 6] = [
            ("ihl 4", 0, 0x44),
            ("ihl 15 beyond total", 0, 0x4f),
            ("version 5", 0, 0x55),
            ("total length < ihl", 3, 19),
            ("total length beyond capture", 3, 41),
            ("protocol icmp", 9, 1),
        ];
        for (what, at, byte) in cases {
            let mut bad = good.clone();
            bad[at] = byte;
            assert_eq!(parse_frame(DLT_RAW, &bad), None, "{what}");
        }
    }

    #[test]
    fn ipv4_fragments_are_refused() {
        let good = ipv4(17, &udp(5, 6, b"payload"));
        for (flags_hi, flags_lo, what) in [
            (0x20, 0x00, "first fragment, MF"),
            (0x00, 0x01, "last fragment, offset 8"),
            (0x20, 0x10, "middle fragment"),
            (0x1f, 0xff, "max offset"),
        ] {
            let mut bad = good.clone();
            bad[6] = flags_hi;
            bad[7] = flags_lo;
            assert_eq!(parse_frame(DLT_RAW, &bad), None, "{what}");
        }
        // DF alone is fine.
        let mut df = good;
        df[6] = 0x40;
        assert!(parse_frame(DLT_RAW, &df).is_some());
    }

    #[test]
    fn ipv6_extension_headers() {
        let hbh = (IPV6_HOP_BY_HOP, vec![1, 4, 0, 0, 0, 0]); // PadN
        let dst = (
            IPV6_DEST_OPTS,
            vec![1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        );
        let rt = (IPV6_ROUTING, vec![0, 0, 0, 0, 0, 0]); // type 0, segments left 0
        let frame = ipv6_ext(&[hbh.clone(), rt, dst], 17, &udp(40001, 62201, b"spa!"));
        assert_eq!(parse_frame(DLT_RAW, &frame), Some(udp6(b"spa!")));

        let frag = (IPV6_FRAGMENT, vec![0, 0, 0, 0, 0, 1]);
        let frame = ipv6_ext(&[hbh.clone(), frag], 17, &udp(40001, 62201, b"spa!"));
        assert_eq!(parse_frame(DLT_RAW, &frame), None, "fragment header");

        let ah = (51, vec![0; 14]);
        let frame = ipv6_ext(&[ah], 17, &udp(40001, 62201, b"spa!"));
        assert_eq!(parse_frame(DLT_RAW, &frame), None, "AH is not skipped");

        let many: Vec<_> = (0..=MAX_IPV6_EXT_HEADERS).map(|_| hbh.clone()).collect();
        let frame = ipv6_ext(&many, 17, &udp(40001, 62201, b"spa!"));
        assert_eq!(
            parse_frame(DLT_RAW, &frame),
            None,
            "too many extension headers"
        );
        let frame = ipv6_ext(&many[1..], 17, &udp(40001, 62201, b"spa!"));
        assert!(
            parse_frame(DLT_RAW, &frame).is_some(),
            "the maximum is fine"
        );

        let frame = ipv6(58, &[128, 0, 0, 0]);
        assert_eq!(parse_frame(DLT_RAW, &frame), None, "ICMPv6");
    }

    #[test]
    fn bad_ipv6_lengths_are_refused() {
        let mut jumbo = ipv6(17, &udp(1, 2, b"x"));
        jumbo[4] = 0;
        jumbo[5] = 0;
        assert_eq!(parse_frame(DLT_RAW, &jumbo), None);
        let mut long = ipv6(17, &udp(1, 2, b"x"));
        long[5] += 1;
        assert_eq!(parse_frame(DLT_RAW, &long), None);
        // An extension header whose length runs past the payload.
        let mut ext = ipv6_ext(&[(IPV6_DEST_OPTS, vec![0; 6])], 17, &udp(1, 2, b""));
        ext[41] = 9;
        assert_eq!(parse_frame(DLT_RAW, &ext), None);
    }

    #[test]
    fn udp_length_field_is_respected() {
        let mut short = udp(1, 2, b"abcdef");
        short[5] = 8 + 3; // UDP says 3 bytes of payload, IP carries 6
        let frame = ipv4(17, &short);
        let p = parse_frame(DLT_RAW, &frame).expect("parses");
        assert_eq!(p.payload, b"abc");

        let mut long = udp(1, 2, b"abcdef");
        long[5] = 8 + 100; // UDP claims more than there is: what is there
        let frame = ipv4(17, &long);
        let p = parse_frame(DLT_RAW, &frame).expect("parses");
        assert_eq!(p.payload, b"abcdef");

        let mut tiny = udp(1, 2, b"abcdef");
        tiny[5] = 7; // less than its own header
        assert_eq!(parse_frame(DLT_RAW, &ipv4(17, &tiny)), None);
    }

    #[test]
    fn tcp_header_checks() {
        let mut t = tcp(1, 2, 0x12);
        let frame = ipv6(6, &t);
        let p = parse_frame(DLT_RAW, &frame).expect("parses");
        assert_eq!((p.tcp_flags, p.payload), (0x12, &[][..]));
        t[12] = 4 << 4;
        assert_eq!(parse_frame(DLT_RAW, &ipv6(6, &t)), None, "data offset 4");
        t[12] = 6 << 4;
        assert_eq!(
            parse_frame(DLT_RAW, &ipv6(6, &t)),
            None,
            "options beyond segment"
        );
        // With TCP options and payload present: flags read, payload not kept.
        let mut t = tcp(1, 2, 0x18);
        t[12] = 6 << 4;
        t.extend_from_slice(&[1, 1, 1, 1, b'h', b'i']);
        let frame = ipv4(6, &t);
        let p = parse_frame(DLT_RAW, &frame).expect("parses");
        assert_eq!((p.tcp_flags, p.payload), (0x18, &[][..]));
    }

    #[test]
    fn other_link_payloads_are_none() {
        let t4 = ipv4(6, &tcp(40000, 7000, SYN));
        assert_eq!(parse_frame(DLT_EN10MB, &eth(&[], 0x0806, &t4)), None, "ARP");
        assert_eq!(
            parse_frame(DLT_EN10MB, &eth(&[], ETHERTYPE_IPV6, &t4)),
            None,
            "v4 in v6"
        );
        assert_eq!(
            parse_frame(DLT_LINUX_SLL, &sll(4, ETHERTYPE_IPV4, &t4)),
            None,
            "outgoing"
        );
        assert_eq!(
            parse_frame(DLT_LINUX_SLL2, &sll2(4, ETHERTYPE_IPV4, &t4)),
            None,
            "outgoing"
        );
        assert_eq!(
            parse_frame(DLT_LINUX_SLL, &sll(3, ETHERTYPE_IPV4, &t4)),
            None,
            "for another host"
        );
        assert_eq!(
            parse_frame(DLT_LINUX_SLL2, &sll2(3, ETHERTYPE_IPV4, &t4)),
            None,
            "for another host"
        );
        assert_eq!(
            parse_frame(DLT_NULL, &null_le(AF_INET, &ipv6(6, &[]))),
            None
        );
        assert_eq!(
            parse_frame(DLT_NULL, &null_le(7, &t4)),
            None,
            "unknown family"
        );
        assert_eq!(parse_frame(105, &t4), None, "802.11");
        assert_eq!(parse_frame(DLT_RAW, &[0x50; 60]), None, "IP version 5");
        let tags = [ETHERTYPE_VLAN; MAX_VLAN_TAGS + 1];
        assert_eq!(
            parse_frame(DLT_EN10MB, &eth(&tags, ETHERTYPE_IPV4, &t4)),
            None
        );
        let tags = [ETHERTYPE_VLAN; MAX_VLAN_TAGS];
        assert!(parse_frame(DLT_EN10MB, &eth(&tags, ETHERTYPE_IPV4, &t4)).is_some());
        // Cooked captures also carry VLAN tags when the kernel did not strip them.
        let tagged = [0x00, 0x0a, 0x08, 0x00]
            .iter()
            .copied()
            .chain(t4)
            .collect::<Vec<_>>();
        assert!(parse_frame(DLT_LINUX_SLL, &sll(0, ETHERTYPE_VLAN, &tagged)).is_some());
    }

    const LINK_TYPES: [i32; 7] = [
        DLT_NULL,
        DLT_EN10MB,
        DLT_RAW,
        LINKTYPE_RAW,
        DLT_LINUX_SLL,
        DLT_LINUX_SLL2,
        -1,
    ];

    proptest! {
        #[test]
        fn random_bytes_never_panic(
            linktype in prop::sample::select(&LINK_TYPES[..]),
            data in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            if let Some(p) = parse_frame(linktype, &data) {
                prop_assert!(p.payload.len() <= data.len());
                prop_assert!(p.proto == Proto::Udp || p.payload.is_empty());
            }
        }

        /// Corrupting bytes of real frames reaches deeper paths than random bytes do.
        #[test]
        fn mutated_frames_never_panic(
            case in 0usize..16,
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let corpus = corpus();
            let (linktype, mut frame, _) = corpus[case % corpus.len()].clone();
            for (at, byte) in edits {
                let i = at.index(frame.len());
                frame[i] = byte;
            }
            let len = cut.index(frame.len() + 1);
            let _ = parse_frame(linktype, &frame[..len]);
            let _ = parse_frame(linktype, &frame);
        }
    }
}
