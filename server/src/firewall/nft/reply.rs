//! Reading what the kernel's nftables sends back, every length checked: the netlink messages
//! of a datagram (acks, errors, the end of a dump, data), and the elements in the parts of a
//! set element dump.
//!
//! `netlink-packet-netfilter`'s typed parsers are not used here: they read nested payloads
//! through unchecked `NlaBuffer::new` (a nested attribute shorter than its header would
//! panic), and nothing the kernel sends may make the daemon panic.

use netlink_packet_core::{NetlinkBuffer, NlasIterator, NLA_HEADER_SIZE, NLMSG_DONE, NLMSG_ERROR};

/// NFNL_SUBSYS_NFTABLES: the nfnetlink subsystem of nf_tables (the `res_id` of a batch's
/// begin and end, the high byte of its message types).
pub(super) const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// NFT_MSG_NEWSETELEM: the type, within the subsystem, of the parts of a set element dump.
pub(super) const NFT_MSG_NEWSETELEM: u16 = 12;
/// NFTA_SET_ELEM_LIST_ELEMENTS: the nested list of elements in a set element message.
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
/// NFTA_LIST_ELEM: one element of that list.
const NFTA_LIST_ELEM: u16 = 1;
/// NFTA_SET_ELEM_KEY: an element's key (nested: NFTA_DATA_VALUE).
const NFTA_SET_ELEM_KEY: u16 = 1;
/// NFTA_SET_ELEM_EXPIRATION: the milliseconds an element has left (big-endian u64).
const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
/// NFTA_DATA_VALUE: the bytes of a key.
const NFTA_DATA_VALUE: u16 = 1;

/// A reply that could not be read: what was wrong with it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Malformed(pub(super) String);

/// `n` rounded up to a multiple of 4 (NLMSG_ALIGN, NLA_ALIGN).
pub(super) fn align4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

/// One netlink message of a reply datagram.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Reply<'a> {
    /// The sequence number of the request it answers.
    pub(super) seq: u32,
    /// Its netlink flags (NLM_F_MULTIPART, NLM_F_DUMP_INTR, ...).
    pub(super) flags: u16,
    /// What it says.
    pub(super) kind: ReplyKind<'a>,
}

/// What a reply message says.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ReplyKind<'a> {
    /// NLMSG_ERROR with code 0: the request was applied.
    Ack,
    /// NLMSG_ERROR with an errno (positive here).
    Error(i32),
    /// NLMSG_DONE, the end of a dump, with the dump's errno (0 when it went well).
    Done(i32),
    /// An nftables message: its type within the subsystem and its attributes.
    Data {
        /// NFT_MSG_*.
        message_type: u16,
        /// The attributes after the nfnetlink header.
        attrs: &'a [u8],
    },
    /// Anything else (NLMSG_NOOP, another subsystem): ignored.
    Other,
}

/// The netlink messages of one datagram the kernel sent, every length checked.
pub(super) fn parse_datagram(mut bytes: &[u8]) -> Result<Vec<Reply<'_>>, Malformed> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let message = NetlinkBuffer::new_checked(bytes)
            .map_err(|e| Malformed(format!("bad netlink header: {e}")))?;
        // new_checked made sure 16 <= length <= bytes.len().
        let len = usize::try_from(message.length()).unwrap_or(usize::MAX);
        let payload = bytes
            .get(16..len)
            .ok_or_else(|| malformed("netlink length"))?;
        out.push(Reply {
            seq: message.sequence_number(),
            flags: message.flags(),
            kind: classify(message.message_type(), payload)?,
        });
        bytes = bytes.get(align4(len)..).unwrap_or_default();
    }
    Ok(out)
}

/// What a message of type `message_type` with `payload` says.
fn classify(message_type: u16, payload: &[u8]) -> Result<ReplyKind<'_>, Malformed> {
    Ok(match message_type {
        NLMSG_ERROR => match errno_of(status(payload).ok_or_else(|| malformed("error"))?)? {
            0 => ReplyKind::Ack,
            errno => ReplyKind::Error(errno),
        },
        // A dump that went well may end with an empty NLMSG_DONE.
        NLMSG_DONE => ReplyKind::Done(status(payload).map_or(Ok(0), errno_of)?),
        t if t >> 8 == NFNL_SUBSYS_NFTABLES => ReplyKind::Data {
            message_type: t & 0xff,
            attrs: payload.get(4..).ok_or_else(|| malformed("nfgenmsg"))?,
        },
        _ => ReplyKind::Other,
    })
}

/// The leading `int` of an NLMSG_ERROR or NLMSG_DONE payload.
fn status(payload: &[u8]) -> Option<i32> {
    Some(i32::from_ne_bytes(payload.get(..4)?.try_into().ok()?))
}

/// The errno of a status: 0 for success, the positive errno for a negative status.
fn errno_of(status: i32) -> Result<i32, Malformed> {
    match status {
        0 => Ok(0),
        s if s < 0 => s.checked_neg().ok_or_else(|| malformed("errno")),
        s => Err(Malformed(format!("positive status {s}"))),
    }
}

/// The error for a reply whose `what` could not be read.
fn malformed(what: &str) -> Malformed {
    Malformed(format!("truncated or inconsistent {what}"))
}

/// An element as a dump shows it: its key and the milliseconds it has left, if it expires.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Listed {
    /// The key bytes (NFTA_DATA_VALUE of NFTA_SET_ELEM_KEY).
    pub(super) key: Vec<u8>,
    /// NFTA_SET_ELEM_EXPIRATION, when the element has a timeout.
    pub(super) expires_ms: Option<u64>,
}

/// The elements in the attributes of one NEWSETELEM dump part.
pub(super) fn listed_elements(attrs: &[u8]) -> Result<Vec<Listed>, Malformed> {
    let mut out = Vec::new();
    for attr in attributes(attrs) {
        let (kind, value) = attr?;
        if kind != NFTA_SET_ELEM_LIST_ELEMENTS {
            continue;
        }
        for item in attributes(value) {
            let (kind, value) = item?;
            if kind == NFTA_LIST_ELEM {
                out.push(listed_element(value)?);
            }
        }
    }
    Ok(out)
}

/// One element from the attributes of its NFTA_LIST_ELEM.
fn listed_element(attrs: &[u8]) -> Result<Listed, Malformed> {
    let (mut key, mut expires_ms) = (None, None);
    for attr in attributes(attrs) {
        match attr? {
            (NFTA_SET_ELEM_KEY, value) => {
                for data in attributes(value) {
                    if let (NFTA_DATA_VALUE, bytes) = data? {
                        key = Some(bytes.to_vec());
                    }
                }
            }
            (NFTA_SET_ELEM_EXPIRATION, value) => {
                let ms = <[u8; 8]>::try_from(value).map_err(|_| malformed("expiration"))?;
                expires_ms = Some(u64::from_be_bytes(ms));
            }
            _ => {}
        }
    }
    let key = key.ok_or_else(|| Malformed("a set element without a key".into()))?;
    Ok(Listed { key, expires_ms })
}

/// The attributes in `bytes` as (type without flags, value), every length checked.
fn attributes(bytes: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), Malformed>> {
    NlasIterator::new(bytes).map(|nla| {
        let nla = nla.map_err(|e| Malformed(format!("bad attribute: {e}")))?;
        let (kind, len) = (nla.kind(), usize::from(nla.length()));
        let value = nla.into_inner().get(NLA_HEADER_SIZE..len);
        Ok((kind, value.ok_or_else(|| malformed("attribute"))?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A netlink message: header (`length`, `kind`, `flags`, `seq`, port 0) and `payload`.
    fn message(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(16 + payload.len()).expect("length");
        let mut out = len.to_ne_bytes().to_vec();
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&flags.to_ne_bytes());
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(payload);
        out.resize(align4(out.len()), 0);
        out
    }

    /// An NLMSG_ERROR payload: the status and a (capped) copy of the request's header.
    fn status_payload(status: i32) -> Vec<u8> {
        let mut out = status.to_ne_bytes().to_vec();
        out.extend_from_slice(&[0; 16]);
        out
    }

    /// An attribute of type `kind` holding `value`, padded.
    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let len = u16::try_from(4 + value.len()).expect("length");
        let mut out = len.to_ne_bytes().to_vec();
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value);
        out.resize(align4(out.len()), 0);
        out
    }

    /// The attributes of a NEWSETELEM dump part holding one element with `key` and, if
    /// given, an expiration.
    fn dump_part(key: &[u8], expires_ms: Option<u64>) -> Vec<u8> {
        let mut element = attr(NFTA_SET_ELEM_KEY | 0x8000, &attr(NFTA_DATA_VALUE, key));
        if let Some(ms) = expires_ms {
            element.extend(attr(NFTA_SET_ELEM_EXPIRATION, &ms.to_be_bytes()));
        }
        let list = attr(NFTA_LIST_ELEM | 0x8000, &element);
        let mut out = attr(1, b"knock_spa\0");
        out.extend(attr(2, b"admitted4\0"));
        out.extend(attr(NFTA_SET_ELEM_LIST_ELEMENTS | 0x8000, &list));
        out
    }

    #[test]
    fn acks_errors_dones_and_data_are_told_apart() {
        let mut datagram = message(NLMSG_ERROR, 0x100, 7, &status_payload(0));
        datagram.extend(message(
            NLMSG_ERROR,
            0x100,
            8,
            &status_payload(-libc::ENOENT),
        ));
        datagram.extend(message(NLMSG_DONE, 2, 9, &0i32.to_ne_bytes()));
        datagram.extend(message(NLMSG_DONE, 2, 10, &[]));
        datagram.extend(message(NLMSG_DONE, 2, 11, &(-libc::EINTR).to_ne_bytes()));
        let mut nft = vec![1, 0, 0, 0];
        nft.extend(attr(1, b"x\0"));
        datagram.extend(message(
            NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWSETELEM,
            2,
            12,
            &nft,
        ));
        datagram.extend(message(1, 0, 13, &[])); // NLMSG_NOOP
        let kinds: Vec<_> = parse_datagram(&datagram)
            .expect("parse")
            .into_iter()
            .map(|r| (r.seq, r.kind))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (7, ReplyKind::Ack),
                (8, ReplyKind::Error(libc::ENOENT)),
                (9, ReplyKind::Done(0)),
                (10, ReplyKind::Done(0)),
                (11, ReplyKind::Done(libc::EINTR)),
                (
                    12,
                    ReplyKind::Data {
                        message_type: NFT_MSG_NEWSETELEM,
                        attrs: &nft[4..]
                    }
                ),
                (13, ReplyKind::Other),
            ]
        );
    }

    #[test]
    fn broken_datagrams_are_malformed_not_panics() {
        let ack = message(NLMSG_ERROR, 0, 1, &status_payload(0));
        assert_eq!(parse_datagram(&[]), Ok(vec![]));
        assert!(parse_datagram(&ack[..10]).is_err(), "shorter than a header");
        let mut long = ack.clone();
        long[..4].copy_from_slice(&200u32.to_ne_bytes());
        assert!(
            parse_datagram(&long).is_err(),
            "a length beyond the datagram"
        );
        let mut tiny = ack.clone();
        tiny[..4].copy_from_slice(&8u32.to_ne_bytes());
        assert!(parse_datagram(&tiny).is_err(), "a length below the header");
        assert!(
            parse_datagram(&message(NLMSG_ERROR, 0, 1, &[0, 0])).is_err(),
            "no status"
        );
        let positive = message(NLMSG_ERROR, 0, 1, &status_payload(5));
        assert!(parse_datagram(&positive).is_err(), "a positive status");
        let no_nfgen = message(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWSETELEM, 0, 1, &[]);
        assert!(parse_datagram(&no_nfgen).is_err(), "no nfgenmsg");
    }

    #[test]
    fn a_dump_part_gives_its_elements() {
        let key = [10, 1, 2, 3, 6, 0, 0, 0, 0, 22, 0, 0];
        let got = listed_elements(&dump_part(&key, Some(29_500))).expect("parse");
        let want = Listed {
            key: key.to_vec(),
            expires_ms: Some(29_500),
        };
        assert_eq!(got, vec![want]);
        let got = listed_elements(&dump_part(&key, None)).expect("parse");
        assert_eq!(got[0].expires_ms, None);
    }

    #[test]
    fn broken_dump_parts_are_malformed_not_panics() {
        let key = [10, 1, 2, 3, 6, 0, 0, 0, 0, 22, 0, 0];
        // A key attribute whose nested value is shorter than an attribute header (the case
        // the crate's typed parser would panic on).
        let short = attr(NFTA_SET_ELEM_KEY, &[1, 0]);
        let list = attr(NFTA_LIST_ELEM, &short);
        let part = attr(NFTA_SET_ELEM_LIST_ELEMENTS, &list);
        assert!(listed_elements(&part).is_err());
        // An element without a key, an expiration of the wrong size.
        let list = attr(NFTA_LIST_ELEM, &attr(NFTA_SET_ELEM_EXPIRATION, &[0; 8]));
        assert!(listed_elements(&attr(NFTA_SET_ELEM_LIST_ELEMENTS, &list)).is_err());
        let mut element = attr(NFTA_SET_ELEM_KEY, &attr(NFTA_DATA_VALUE, &key));
        element.extend(attr(NFTA_SET_ELEM_EXPIRATION, &[0; 4]));
        let list = attr(NFTA_LIST_ELEM, &element);
        assert!(listed_elements(&attr(NFTA_SET_ELEM_LIST_ELEMENTS, &list)).is_err());
        // Every truncation of a good part either parses or is refused.
        let good = dump_part(&key, Some(1));
        for n in 0..good.len() {
            let _ = listed_elements(&good[..n]);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // xorshift: a fixed sequence of inputs, the same on every run.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..20_000 {
            let len = usize::try_from(next() % 96).expect("small");
            let mut bytes: Vec<u8> = (0..len).map(|_| next().to_le_bytes()[0]).collect();
            if round % 2 == 0 && bytes.len() >= 4 {
                // A plausible length field, so that more inputs get past the first check.
                let n = u16::try_from(bytes.len()).expect("small");
                bytes[..2].copy_from_slice(&n.to_ne_bytes());
            }
            let _ = parse_datagram(&bytes);
            let _ = listed_elements(&bytes);
        }
    }
}
