//! (link type, bytes) → `frame::parse_frame`.
//!
//! The first input byte picks the mode: one of the supported link types (`DLT_NULL`,
//! `DLT_EN10MB`, `DLT_RAW`, `LINKTYPE_RAW`, `DLT_LINUX_SLL`, `DLT_LINUX_SLL2`), an arbitrary
//! link type number taken from the next four bytes, or the "wrap" mode, which treats the rest
//! as one raw IP packet and wraps it in every supported link header. Checks:
//!
//! - a returned packet borrows its payload from inside the input; source and destination are
//!   of one IP family; TCP has flags and no payload, UDP has flags 0 and a payload that sits
//!   right after an 8-byte UDP header holding the returned ports and a length covering it;
//! - unknown link types, frames the host sent itself (`PACKET_OUTGOING`) and frames for
//!   another host's link address (`PACKET_OTHERHOST`) give `None`;
//! - wrap mode: the same IP packet parses to the same result under every link header (with
//!   and without VLAN tags, either byte order of the `DLT_NULL` family), under both RAW
//!   numbers, and with trailing link padding appended.
#![no_main]

use knock_shared::frame::{
    parse_frame, Packet, DLT_EN10MB, DLT_LINUX_SLL, DLT_LINUX_SLL2, DLT_NULL, DLT_RAW, LINKTYPE_RAW,
};
use knock_shared::types::Proto;
use libfuzzer_sys::fuzz_target;

const LINKTYPES: [i32; 6] = [
    DLT_NULL,
    DLT_EN10MB,
    DLT_RAW,
    LINKTYPE_RAW,
    DLT_LINUX_SLL,
    DLT_LINUX_SLL2,
];

/// `PACKET_OUTGOING` in the Linux cooked headers.
const OUTGOING: u8 = 4;
/// `PACKET_OTHERHOST` in the Linux cooked headers.
const OTHERHOST: u8 = 3;

fn check_packet(linktype: i32, data: &[u8], p: &Packet<'_>) {
    assert!(LINKTYPES.contains(&linktype), "link type {linktype} parsed");
    assert_eq!(p.src.is_ipv4(), p.dst.is_ipv4(), "mixed families: {p:?}");
    let start = data.as_ptr() as usize;
    let end = start + data.len();
    let at = p.payload.as_ptr() as usize;
    match p.proto {
        Proto::Tcp => assert!(p.payload.is_empty(), "TCP with a payload"),
        Proto::Udp => {
            assert_eq!(p.tcp_flags, 0, "UDP with TCP flags");
            assert!(
                at >= start + 8 && at + p.payload.len() <= end,
                "UDP payload outside the frame"
            );
            let off = at - start;
            let be16 = |i: usize| u16::from_be_bytes([data[i], data[i + 1]]);
            assert_eq!(be16(off - 8), p.sport, "source port");
            assert_eq!(be16(off - 6), p.dport, "destination port");
            let udp_len = usize::from(be16(off - 4));
            assert!(
                udp_len >= 8 + p.payload.len(),
                "payload beyond the UDP length"
            );
        }
    }
    match linktype {
        DLT_LINUX_SLL => {
            assert_ne!(data[..2], [0, OUTGOING]);
            assert_ne!(data[..2], [0, OTHERHOST]);
        }
        DLT_LINUX_SLL2 => assert!(![OUTGOING, OTHERHOST].contains(&data[10])),
        _ => {}
    }
}

/// Copies a packet's fields, payload by value, to compare results from different buffers.
fn owned(p: Option<Packet<'_>>) -> Option<(Packet<'static>, Vec<u8>)> {
    p.map(|p| (Packet { payload: &[], ..p }, p.payload.to_vec()))
}

fn parse_checked(linktype: i32, frame: &[u8]) -> Option<(Packet<'static>, Vec<u8>)> {
    let p = parse_frame(linktype, frame);
    if let Some(p) = &p {
        check_packet(linktype, frame, p);
    }
    owned(p)
}

fn with_header(header: &[u8], ip: &[u8]) -> Vec<u8> {
    let mut f = header.to_vec();
    f.extend_from_slice(ip);
    f
}

fn wrap(ip: &[u8], tag: u16) {
    let raw = parse_checked(DLT_RAW, ip);
    assert_eq!(parse_checked(LINKTYPE_RAW, ip), raw, "LINKTYPE_RAW");
    let version = ip.first().map(|b| b >> 4);
    let ethertype: u16 = match version {
        Some(4) => 0x0800,
        Some(6) => 0x86dd,
        _ => 0x0800,
    };
    let et = ethertype.to_be_bytes();
    let mac = [0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];

    let eth = with_header(&[&mac[..], &et].concat(), ip);
    assert_eq!(parse_checked(DLT_EN10MB, &eth), raw, "Ethernet");
    for tpid in [0x8100u16, 0x88a8, 0x9100] {
        let mut h = mac.to_vec();
        h.extend_from_slice(&tpid.to_be_bytes());
        h.extend_from_slice(&tag.to_be_bytes());
        h.extend_from_slice(&et);
        assert_eq!(parse_checked(DLT_EN10MB, &with_header(&h, ip)), raw, "VLAN");
    }

    for pkttype in [0u16, 1, 2, 3, 4] {
        let mut h = pkttype.to_be_bytes().to_vec();
        h.extend_from_slice(&[0, 1, 0, 6, 0x02, 0, 0, 0, 0, 2, 0, 0]);
        h.extend_from_slice(&et);
        let want = if [OUTGOING, OTHERHOST].map(u16::from).contains(&pkttype) {
            None
        } else {
            raw.clone()
        };
        assert_eq!(
            parse_checked(DLT_LINUX_SLL, &with_header(&h, ip)),
            want,
            "SLL"
        );

        let mut h2 = et.to_vec();
        h2.extend_from_slice(&[0, 0, 0, 0, 0, 3, 0, 1]);
        h2.push(pkttype as u8);
        h2.extend_from_slice(&[6, 0x02, 0, 0, 0, 0, 2, 0, 0]);
        assert_eq!(
            parse_checked(DLT_LINUX_SLL2, &with_header(&h2, ip)),
            want,
            "SLL2"
        );
    }

    let families: &[u32] = match version {
        Some(4) => &[2],
        Some(6) => &[10, 24, 28, 30],
        _ => &[],
    };
    for &family in families {
        for h in [family.to_le_bytes(), family.to_be_bytes()] {
            assert_eq!(parse_checked(DLT_NULL, &with_header(&h, ip)), raw, "NULL");
        }
    }

    if raw.is_some() {
        // Bytes after the IP packet (Ethernet pads to 60 bytes) change nothing.
        let padded = with_header(ip, &[0u8; 46]);
        assert_eq!(parse_checked(DLT_RAW, &padded), raw, "padding");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 8 {
        m @ 0..=5 => {
            let linktype = LINKTYPES[usize::from(m)];
            parse_checked(linktype, rest);
        }
        6 => {
            let Some((lt, frame)) = rest.split_first_chunk::<4>() else {
                return;
            };
            let linktype = i32::from_be_bytes(*lt);
            let p = parse_checked(linktype, frame);
            if !LINKTYPES.contains(&linktype) {
                assert_eq!(p, None, "unknown link type {linktype} parsed");
            }
        }
        _ => {
            let Some((tag, ip)) = rest.split_first_chunk::<2>() else {
                return;
            };
            wrap(ip, u16::from_be_bytes(*tag));
        }
    }
});
