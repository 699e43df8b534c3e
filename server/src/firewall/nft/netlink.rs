//! The netlink layer of the native nftables backend: the elements of the daemon's own table.
//!
//! The table `inet knock_spa` holds a set `guarded` (`inet_proto . inet_service`: the ports the
//! doors guard), the sets `admitted4` and `admitted6` (`ipv4_addr`/`ipv6_addr . inet_proto .
//! inet_service`, `flags timeout`: who is admitted to which port, until when) and the chain
//! that reads them. `nft -f` creates it (`firewall-setup`); this module only adds, refreshes,
//! deletes and lists the elements of those sets, over one netlink socket ([`Nft`]).
//!
//! Every change is an nfnetlink batch, which the kernel applies as one transaction: all of it
//! or none, and no packet sees a state in between. Requests are built with the typed messages
//! of `netlink-packet-netfilter`. Replies are read with bounds-checked attribute iteration
//! instead of that crate's typed parsers, which index nested payloads without checking their
//! length (a short nested attribute from the kernel would panic there).
//!
//! What it must not do: create or delete the table, its sets or its rules; decide who is
//! admitted; keep state beyond the socket and its next sequence number.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::time::Duration;

use knock_shared::types::{PortSpec, Proto};
use netlink_packet_core::{
    Emitable, NetlinkMessage, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_packet_netfilter::nftables::{
    DataAttribute, ListAttribute, NfTablesMessage, SetAttribute, SetElementAttribute,
    SetElementList, SetElementMessage, SetMessage, TableAttribute, TableMessage,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use super::reply::{
    align4, listed_elements, parse_datagram, Listed, Malformed, Reply, ReplyKind,
    NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWSETELEM,
};

/// The daemon's table; its family is `inet` (NFPROTO_INET).
pub const TABLE: &str = "knock_spa";
/// The set of the protocols and ports the doors guard (`inet_proto . inet_service`).
pub const SET_GUARDED: &str = "guarded";
/// The set of admitted IPv4 addresses, each for one protocol and port, with a timeout.
pub const SET_V4: &str = "admitted4";
/// The set of admitted IPv6 addresses, each for one protocol and port, with a timeout.
pub const SET_V6: &str = "admitted6";

/// How long one wait for a reply may last before a call fails with [`NftError::NoReply`].
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// The most bytes one message's element list may hold: an attribute's length is 16 bits
/// (65,535 with its header); the rest is headroom.
const MAX_LIST_BYTES: usize = 60 * 1024;
/// The send buffer asked for, so that a batch can carry several full element lists; the
/// kernel caps it at `net.core.wmem_max` (doubled).
const WANTED_SEND_BUFFER: libc::c_int = 4 << 20;
/// What the kernel keeps of the send buffer for itself: a datagram may be at most the
/// buffer less this (`netlink_sendmsg`).
const SEND_BUFFER_RESERVE: usize = 32;
/// The size of the receive buffer: a dump part is at most 32 KiB, an ack or a (capped) error
/// a few dozen bytes.
const RECV_BUFFER: usize = 64 * 1024;
/// The bytes of a netlink header (`nlmsghdr`) plus the nfnetlink header (`nfgenmsg`).
const MESSAGE_HEADERS: usize = 16 + 4;
/// What one message of a batch takes beyond its element list, with room to spare: the
/// headers, the table and set names, the list's own header.
const MESSAGE_OVERHEAD: usize = MESSAGE_HEADERS + 64;
/// A batch's begin and end messages, which have no attributes.
const BATCH_FRAME: usize = 2 * MESSAGE_HEADERS;
/// How many times a dump interrupted by a concurrent change (NLM_F_DUMP_INTR) is retried.
const DUMP_ATTEMPTS: usize = 3;

/// One admitted address for one protocol and port: an element of admitted4 or admitted6.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Element {
    /// The admitted source address; its family picks the set.
    pub addr: IpAddr,
    /// The protocol and destination port it is admitted to.
    pub port: PortSpec,
}

impl Element {
    /// The set this element belongs in: [`SET_V4`] or [`SET_V6`].
    pub fn set(&self) -> &'static str {
        match self.addr {
            IpAddr::V4(_) => SET_V4,
            IpAddr::V6(_) => SET_V6,
        }
    }
}

/// The protocol and port as two 4-byte concatenation fields (each field of an nftables
/// concatenation is padded to 4 bytes): `[proto, 0, 0, 0, port_hi, port_lo, 0, 0]`. This is
/// also the whole key of an element of `guarded`.
pub fn guarded_key(port: PortSpec) -> [u8; 8] {
    let [hi, lo] = port.port.get().to_be_bytes();
    [port.proto.number(), 0, 0, 0, hi, lo, 0, 0]
}

/// The protocol and port of a `guarded` key (or of the last 8 bytes of an admitted key);
/// `None` unless it is 8 bytes with zero padding, TCP or UDP, and a port other than 0.
pub fn parse_guarded_key(bytes: &[u8]) -> Option<PortSpec> {
    let [proto, 0, 0, 0, hi, lo, 0, 0] = <[u8; 8]>::try_from(bytes).ok()? else {
        return None;
    };
    PortSpec::new(Proto::from_number(proto)?, u16::from_be_bytes([hi, lo]))
}

/// The key of `elem` in its set: the address bytes (4 or 16), then [`guarded_key`] of its
/// port (12 bytes for IPv4, 24 for IPv6).
pub fn key(elem: Element) -> Vec<u8> {
    let mut key = match elem.addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    key.extend_from_slice(&guarded_key(elem.port));
    key
}

/// The element a key of `set` ([`SET_V4`] or [`SET_V6`]) stands for; `None` for another set,
/// a key of the wrong length, or a protocol and port [`parse_guarded_key`] refuses.
pub fn parse_key(set: &str, bytes: &[u8]) -> Option<Element> {
    let addr_len = address_len(set)?;
    if bytes.len() != addr_len + 8 {
        return None;
    }
    let (addr, port) = bytes.split_at(addr_len);
    let addr = match <[u8; 4]>::try_from(addr) {
        Ok(v4) => IpAddr::V4(Ipv4Addr::from(v4)),
        Err(_) => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(addr).ok()?)),
    };
    Some(Element {
        addr,
        port: parse_guarded_key(port)?,
    })
}

/// The length of the address field of `set`'s keys: 4 for admitted4, 16 for admitted6.
fn address_len(set: &str) -> Option<usize> {
    match set {
        SET_V4 => Some(4),
        SET_V6 => Some(16),
        _ => None,
    }
}

/// What a request was about, for its error message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject {
    /// The table itself.
    Table,
    /// One of its sets, by name.
    Set(&'static str),
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Table => write!(f, "table inet {TABLE}"),
            Subject::Set(set) => write!(f, "set {set} of table inet {TABLE}"),
        }
    }
}

/// Why a call to the kernel failed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// ENOENT on the table or the set: `firewall-setup` has not created them (or someone
    /// deleted them).
    #[error(
        "table inet knock_spa (or its set {set}) is missing: \
         run `knock-spad firewall-setup --nft --apply`"
    )]
    MissingTable {
        /// The set the request was about.
        set: &'static str,
    },
    /// EPERM: the calling thread lacks CAP_NET_ADMIN.
    #[error(
        "nftables over netlink needs CAP_NET_ADMIN (the kernel said: operation not permitted)"
    )]
    NotPermitted,
    /// Any other errno the kernel answered.
    #[error("the kernel refused a request on {subject}: {}", errno_text(*errno))]
    Kernel {
        /// What the request was about.
        subject: Subject,
        /// The errno (positive).
        errno: i32,
    },
    /// The kernel did not answer within [`REPLY_TIMEOUT`].
    #[error("no reply from the kernel's nftables within {0:?}")]
    NoReply(Duration),
    /// The socket failed.
    #[error("nftables netlink socket: {0}")]
    Io(#[from] io::Error),
    /// A reply the kernel sent could not be read.
    #[error("malformed reply from the kernel's nftables: {0}")]
    Malformed(String),
}

impl NftError {
    /// Whether the table or one of its sets is missing (`firewall-setup` should create it).
    pub fn is_missing_table(&self) -> bool {
        matches!(self, NftError::MissingTable { .. })
    }
}

impl From<Malformed> for NftError {
    fn from(Malformed(what): Malformed) -> Self {
        NftError::Malformed(what)
    }
}

/// The text of an errno, as `strerror` gives it.
fn errno_text(errno: i32) -> String {
    io::Error::from_raw_os_error(errno).to_string()
}

/// The error for a request about `subject` that the kernel refused with `errno`.
fn refusal(subject: Subject, errno: i32) -> NftError {
    match (errno, subject) {
        (libc::ENOENT, Subject::Set(set)) => NftError::MissingTable { set },
        (libc::EPERM, _) => NftError::NotPermitted,
        _ => NftError::Kernel { subject, errno },
    }
}

/// A netlink socket to nftables: one owner, blocking, used from one thread at a time.
pub struct Nft {
    /// The NETLINK_NETFILTER socket, connected to the kernel.
    socket: Socket,
    /// The sequence number the next message gets.
    seq: u32,
    /// The most bytes one batch datagram may have on this socket.
    batch_limit: usize,
    /// The receive buffer, reused by every call.
    buf: Vec<u8>,
}

impl fmt::Debug for Nft {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Nft")
            .field("fd", &self.socket.as_raw_fd())
            .field("seq", &self.seq)
            .field("batch_limit", &self.batch_limit)
            .finish_non_exhaustive()
    }
}

impl Nft {
    /// Opens a socket to the nftables of the calling thread's network namespace. Needs no
    /// privilege; the requests need CAP_NET_ADMIN.
    pub fn open() -> Result<Self, NftError> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // An error echoes only the refused message's header, not a whole batch.
        socket.set_cap_ack(true)?;
        set_timeval(&socket, libc::SO_RCVTIMEO, REPLY_TIMEOUT)?;
        set_int(&socket, libc::SO_SNDBUF, WANTED_SEND_BUFFER)?;
        let batch_limit = send_buffer(&socket)?.saturating_sub(SEND_BUFFER_RESERVE);
        Ok(Self {
            socket,
            seq: 1,
            batch_limit,
            buf: vec![0; RECV_BUFFER],
        })
    }

    /// Adds `elem` with a kernel timeout of `timeout` (ms precision, at least 1 ms), or
    /// replaces the timeout of the element already there, atomically: ONE batch of
    /// [NEWSETELEM without timeout, NLM_F_CREATE (no EXCL: succeeds if present)],
    /// [DELSETELEM], [NEWSETELEM with NFTA_SET_ELEM_TIMEOUT]. (Kernels before 6.12 do not
    /// update a timeout on re-add, so this portable form is required; a batch is
    /// all-or-nothing, so packets never see the element missing.)
    pub fn put(&mut self, elem: Element, timeout: Duration) -> Result<(), NftError> {
        self.put_many(&[(elem, timeout)])
    }

    /// Same for many elements in as few batches as fit the socket buffer (used to open
    /// 10,000 grants in tests and benchmarks). An element named twice gets its last timeout.
    /// Each batch is all-or-nothing; on an error, the batches before it stay applied.
    pub fn put_many(&mut self, elems: &[(Element, Duration)]) -> Result<(), NftError> {
        for (set, elems) in by_set(elems) {
            let groups = self.put_groups(set, &elems);
            let costs: Vec<usize> = groups
                .iter()
                .map(|g| g.iter().map(Change::encoded_len).sum())
                .collect();
            let mut groups = groups.into_iter();
            for batch in pack(&costs, self.batch_limit.saturating_sub(BATCH_FRAME)) {
                let changes = groups.by_ref().take(batch.len()).flatten().collect();
                self.run_batch(changes)?;
            }
        }
        Ok(())
    }

    /// The put messages for `elems` (all of `set`, each named once): three messages for each
    /// run of elements whose timed element list fits one attribute and a third of a batch.
    fn put_groups(&self, set: &'static str, elems: &[(Element, Duration)]) -> Vec<Vec<Change>> {
        let third = (self.batch_limit.saturating_sub(BATCH_FRAME) / 3)
            .saturating_sub(MESSAGE_OVERHEAD)
            .max(1);
        let sizes: Vec<usize> = elems
            .iter()
            .map(|&(e, t)| timed_item(e, t).buffer_len())
            .collect();
        pack(&sizes, MAX_LIST_BYTES.min(third))
            .into_iter()
            .map(|run| put_changes(set, &elems[run]))
            .collect()
    }

    /// Deletes `elem`: Ok(true) if it was there, Ok(false) if it was not (ENOENT on the
    /// element, e.g. the kernel expired it). One batch per element (an ENOENT aborts a whole
    /// batch).
    pub fn delete(&mut self, elem: Element) -> Result<bool, NftError> {
        let set = elem.set();
        let change = Change::delete(set, Some(vec![plain_item(key(elem))]));
        match self.run_batch(vec![change]) {
            Ok(()) => Ok(true),
            // ENOENT says the element, the set or the table is missing: ask which.
            Err(NftError::MissingTable { .. }) if self.set_exists(set)? => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every element of admitted4 and admitted6 with the time the kernel says it has left
    /// (NFTA_SET_ELEM_EXPIRATION, ms), via a GETSETELEM dump (NLM_F_DUMP) of each set.
    /// An element without a timeout (added by hand) has `Duration::MAX`; one this module
    /// cannot represent (another protocol than TCP or UDP, port 0: never written here) is
    /// left out.
    pub fn list(&mut self) -> Result<Vec<(Element, Duration)>, NftError> {
        let mut out = Vec::new();
        for set in [SET_V4, SET_V6] {
            for listed in self.dump(set)? {
                check_key_len(set, &listed.key, address_len(set).unwrap_or(0) + 8)?;
                if let Some(elem) = parse_key(set, &listed.key) {
                    let left = listed
                        .expires_ms
                        .map_or(Duration::MAX, Duration::from_millis);
                    out.push((elem, left));
                }
            }
        }
        Ok(out)
    }

    /// Replaces the elements of `guarded` with `ports` in one batch (flush: DELSETELEM naming
    /// only table and set and no element list, then NEWSETELEM with all the ports).
    pub fn set_guarded(&mut self, ports: &[PortSpec]) -> Result<(), NftError> {
        let mut ports = ports.to_vec();
        ports.sort_unstable();
        ports.dedup();
        let items: Vec<_> = ports
            .iter()
            .map(|p| plain_item(guarded_key(*p).to_vec()))
            .collect();
        let sizes: Vec<usize> = items.iter().map(Emitable::buffer_len).collect();
        let mut items = items.into_iter();
        let mut changes = vec![Change::delete(SET_GUARDED, None)];
        for run in pack(&sizes, MAX_LIST_BYTES) {
            let list = items.by_ref().take(run.len()).collect();
            changes.push(Change::new(SET_GUARDED, list));
        }
        self.run_batch(changes)
    }

    /// The elements of `guarded`, sorted.
    pub fn guarded(&mut self) -> Result<Vec<PortSpec>, NftError> {
        let mut out = Vec::new();
        for listed in self.dump(SET_GUARDED)? {
            check_key_len(SET_GUARDED, &listed.key, 8)?;
            out.extend(parse_guarded_key(&listed.key));
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Whether table inet knock_spa exists (GETTABLE; ENOENT -> false).
    pub fn table_exists(&mut self) -> Result<bool, NftError> {
        let get = NfTablesMessage::GetTable(TableMessage {
            attributes: vec![TableAttribute::Name(TABLE.to_owned())],
        });
        self.exists(Subject::Table, get)
    }

    /// Whether `set` exists in the table (GETSET; ENOENT -> false).
    fn set_exists(&mut self, set: &'static str) -> Result<bool, NftError> {
        let get = NfTablesMessage::GetSet(SetMessage {
            attributes: vec![
                SetAttribute::Table(TABLE.to_owned()),
                SetAttribute::Name(set.to_owned()),
            ],
        });
        self.exists(Subject::Set(set), get)
    }

    /// Sends the GET request `get` about `subject` with an ack asked for: true on the ack,
    /// false on ENOENT.
    fn exists(&mut self, subject: Subject, get: NfTablesMessage) -> Result<bool, NftError> {
        let seq = self.request(get, NLM_F_ACK)?;
        match self.await_answers(&[Wait { seq, subject }], None)?.refused {
            None => Ok(true),
            Some((_, libc::ENOENT)) => Ok(false),
            Some((subject, errno)) => Err(refusal(subject, errno)),
        }
    }

    /// The elements of `set` as a GETSETELEM dump shows them, retried when a concurrent
    /// change interrupted the dump.
    fn dump(&mut self, set: &'static str) -> Result<Vec<Listed>, NftError> {
        for _ in 0..DUMP_ATTEMPTS {
            let get = NfTablesMessage::GetSetElement(element_message(set, None));
            let seq = self.request(get, NLM_F_DUMP)?;
            let subject = Subject::Set(set);
            let answers = self.await_answers(&[Wait { seq, subject }], None)?;
            if let Some((subject, errno)) = answers.refused {
                return Err(refusal(subject, errno));
            }
            if answers.interrupted {
                continue;
            }
            let mut out = Vec::new();
            for (message_type, attrs) in &answers.data {
                if *message_type == NFT_MSG_NEWSETELEM {
                    out.extend(listed_elements(attrs)?);
                }
            }
            return Ok(out);
        }
        Err(NftError::Kernel {
            subject: Subject::Set(set),
            errno: libc::EINTR,
        })
    }

    /// Sends `message` alone (not in a batch) with NLM_F_REQUEST and `flags`; its sequence
    /// number.
    fn request(&mut self, message: NfTablesMessage, flags: u16) -> Result<u32, NftError> {
        let seq = self.next_seq();
        let mut bytes = Vec::new();
        encode(&mut bytes, nft_message(message), NLM_F_REQUEST | flags, seq);
        self.send(&bytes)?;
        Ok(seq)
    }

    /// Sends `changes` as one batch and waits for every message's ack, or for the first
    /// error (the kernel then applies none of them) and the answers to the rest.
    fn run_batch(&mut self, changes: Vec<Change>) -> Result<(), NftError> {
        let Some(first) = changes.first().map(|c| Subject::Set(c.set)) else {
            return Ok(());
        };
        let begin = self.next_seq();
        let mut bytes = Vec::new();
        encode(
            &mut bytes,
            control(ControlMessage::BatchBegin),
            NLM_F_REQUEST,
            begin,
        );
        let mut waits = Vec::with_capacity(changes.len() + 1);
        // An error answering the begin message (EPERM, a malformed batch) is the whole batch's.
        waits.push(Wait {
            seq: begin,
            subject: first,
        });
        for change in changes {
            let seq = self.next_seq();
            let flags = NLM_F_REQUEST | NLM_F_ACK | change.flags;
            encode(&mut bytes, nft_message(change.message), flags, seq);
            waits.push(Wait {
                seq,
                subject: Subject::Set(change.set),
            });
        }
        let end = self.next_seq();
        encode(
            &mut bytes,
            control(ControlMessage::BatchEnd),
            NLM_F_REQUEST,
            end,
        );
        self.send(&bytes)?;
        match self.await_answers(&waits, Some(begin))?.refused {
            None => Ok(()),
            Some((subject, errno)) => Err(refusal(subject, errno)),
        }
    }

    /// Reads replies until each of `waits` is answered (an ack, an error, the end of a dump),
    /// or `batch` (the sequence number of a batch's begin message) got an error, which ends
    /// the batch. Replies to other sequence numbers (left over from an earlier call that
    /// timed out) are skipped. Once an error is in, a timeout ends the wait with it.
    fn await_answers(&mut self, waits: &[Wait], batch: Option<u32>) -> Result<Answers, NftError> {
        let mut open: HashMap<u32, Subject> = waits.iter().map(|w| (w.seq, w.subject)).collect();
        if let Some(begin) = batch {
            // The begin message asks no ack: only an error can answer it.
            open.remove(&begin);
        }
        let begin_subject = waits.first().map(|w| w.subject);
        let mut answers = Answers::default();
        while !open.is_empty() {
            let n = match self.recv() {
                Ok(n) => n,
                Err(NftError::NoReply(_)) if answers.refused.is_some() => break,
                Err(e) => return Err(e),
            };
            for reply in parse_datagram(&self.buf[..n])? {
                let subject = if Some(reply.seq) == batch {
                    begin_subject
                } else {
                    open.get(&reply.seq).copied()
                };
                let Some(subject) = subject else {
                    continue;
                };
                if Some(reply.seq) == batch && matches!(reply.kind, ReplyKind::Error(_)) {
                    open.clear();
                }
                answers.take(reply, subject, &mut open);
            }
        }
        Ok(answers)
    }

    /// Receives one datagram into the buffer; its length.
    fn recv(&mut self) -> Result<usize, NftError> {
        loop {
            match self.socket.recv(&mut &mut self.buf[..], libc::MSG_TRUNC) {
                Ok(n) if n > self.buf.len() => {
                    return Err(NftError::Malformed(format!(
                        "a reply of {n} bytes is larger than the {RECV_BUFFER}-byte buffer"
                    )))
                }
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(NftError::NoReply(REPLY_TIMEOUT))
                }
                Err(e) => return Err(NftError::Io(e)),
            }
        }
    }

    /// Sends one datagram whole.
    fn send(&self, bytes: &[u8]) -> Result<(), NftError> {
        loop {
            match self.socket.send(bytes, 0) {
                Ok(n) if n == bytes.len() => return Ok(()),
                Ok(n) => {
                    let short = format!("sent {n} of {} bytes", bytes.len());
                    return Err(NftError::Io(io::Error::other(short)));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(NftError::Io(e)),
            }
        }
    }

    /// The next sequence number.
    fn next_seq(&mut self) -> u32 {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        seq
    }
}

/// `elems` without repeats (an element named twice keeps its last timeout), split by set.
fn by_set(elems: &[(Element, Duration)]) -> Vec<(&'static str, Vec<(Element, Duration)>)> {
    let mut index: HashMap<Element, usize> = HashMap::new();
    let mut unique: Vec<(Element, Duration)> = Vec::new();
    for &(elem, timeout) in elems {
        match index.get(&elem) {
            Some(&i) => unique[i].1 = timeout,
            None => {
                index.insert(elem, unique.len());
                unique.push((elem, timeout));
            }
        }
    }
    let of_set = |set| -> Vec<_> {
        unique
            .iter()
            .filter(|(e, _)| e.set() == set)
            .copied()
            .collect()
    };
    [SET_V4, SET_V6]
        .into_iter()
        .map(|set| (set, of_set(set)))
        .filter(|(_, elems)| !elems.is_empty())
        .collect()
}

/// Splits items of the given sizes into consecutive runs whose sizes add up to at most
/// `limit` each (an item larger than `limit` gets a run of its own).
fn pack(sizes: &[usize], limit: usize) -> Vec<Range<usize>> {
    let mut runs = Vec::new();
    let (mut start, mut total) = (0, 0);
    for (i, &size) in sizes.iter().enumerate() {
        if i > start && total + size > limit {
            runs.push(start..i);
            (start, total) = (i, 0);
        }
        total += size;
    }
    if start < sizes.len() {
        runs.push(start..sizes.len());
    }
    runs
}

/// One nftables message of a batch: the set it changes, the message, and the flags it
/// needs beyond NLM_F_REQUEST | NLM_F_ACK.
#[derive(Debug)]
struct Change {
    /// The set the message changes.
    set: &'static str,
    /// The message.
    message: NfTablesMessage,
    /// Extra netlink flags (NLM_F_CREATE for a NEWSETELEM).
    flags: u16,
}

impl Change {
    /// A NEWSETELEM adding `items` to `set`, or keeping them if there (NLM_F_CREATE, no
    /// NLM_F_EXCL).
    fn new(set: &'static str, items: Vec<ListAttribute<SetElementAttribute>>) -> Self {
        Self {
            set,
            message: NfTablesMessage::NewSetElement(element_message(set, Some(items))),
            flags: NLM_F_CREATE,
        }
    }

    /// A DELSETELEM deleting `items` from `set`, or every element of it for `None` (a flush).
    fn delete(set: &'static str, items: Option<Vec<ListAttribute<SetElementAttribute>>>) -> Self {
        Self {
            set,
            message: NfTablesMessage::DeleteSetElement(element_message(set, items)),
            flags: 0,
        }
    }

    /// The bytes this message takes in a batch.
    fn encoded_len(&self) -> usize {
        align4(MESSAGE_HEADERS + self.message.buffer_len())
    }
}

/// The three messages that put `elems` (all of `set`) with their timeouts: add without a
/// timeout (a no-op for one already there), delete, add with the timeout.
fn put_changes(set: &'static str, elems: &[(Element, Duration)]) -> Vec<Change> {
    let plain = || elems.iter().map(|&(e, _)| plain_item(key(e))).collect();
    let timed = elems.iter().map(|&(e, t)| timed_item(e, t)).collect();
    vec![
        Change::new(set, plain()),
        Change::delete(set, Some(plain())),
        Change::new(set, timed),
    ]
}

/// A set element message about `set` of the table, with `items` as its element list (none
/// for a flush or a dump request).
fn element_message(
    set: &str,
    items: Option<Vec<ListAttribute<SetElementAttribute>>>,
) -> SetElementMessage {
    let mut attributes = vec![
        SetElementList::Table(TABLE.to_owned()),
        SetElementList::Set(set.to_owned()),
    ];
    attributes.extend(items.map(SetElementList::Elements));
    SetElementMessage { attributes }
}

/// An element list entry with only a key (NFTA_SET_ELEM_KEY holding NFTA_DATA_VALUE).
fn plain_item(key: Vec<u8>) -> ListAttribute<SetElementAttribute> {
    ListAttribute::Element(vec![SetElementAttribute::Key(DataAttribute::Value(key))])
}

/// An element list entry for `elem` with NFTA_SET_ELEM_TIMEOUT set to `timeout`.
fn timed_item(elem: Element, timeout: Duration) -> ListAttribute<SetElementAttribute> {
    ListAttribute::Element(vec![
        SetElementAttribute::Key(DataAttribute::Value(key(elem))),
        SetElementAttribute::Timeout(timeout_ms(timeout)),
    ])
}

/// A timeout in whole milliseconds for NFTA_SET_ELEM_TIMEOUT: truncated, and at least 1
/// (0 would mean the set's default timeout, which these sets do not have: never).
fn timeout_ms(timeout: Duration) -> u64 {
    u64::try_from(timeout.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// An nftables message about the `inet` family.
fn nft_message(message: NfTablesMessage) -> NetfilterMessage {
    NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::Inet, 0, 0),
        message,
    )
}

/// A batch begin or end message for the nftables subsystem.
fn control(message: ControlMessage) -> NetfilterMessage {
    NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFNL_SUBSYS_NFTABLES),
        message,
    )
}

/// Appends `message` with `flags` and `seq` to `out`, padded to 4 bytes.
fn encode(out: &mut Vec<u8>, message: NetfilterMessage, flags: u16, seq: u32) {
    let mut message = NetlinkMessage::from(message);
    message.header.flags = flags;
    message.header.sequence_number = seq;
    message.finalize();
    let start = out.len();
    out.resize(start + message.buffer_len(), 0);
    message.serialize(&mut out[start..]);
    out.resize(align4(out.len()), 0);
}

/// A request still waiting for its answer: its sequence number and what it is about.
#[derive(Clone, Copy, Debug)]
struct Wait {
    /// The request's sequence number.
    seq: u32,
    /// What it is about, for an error.
    subject: Subject,
}

/// What the kernel answered to the requests of one call.
#[derive(Debug, Default)]
struct Answers {
    /// The nftables messages that carry data (a dump's parts, a GET's answer): each one's
    /// type within the subsystem and its attributes.
    data: Vec<(u16, Vec<u8>)>,
    /// The first error: what its request was about, and the errno.
    refused: Option<(Subject, i32)>,
    /// Whether a dump part said the dump was interrupted by a change (NLM_F_DUMP_INTR).
    interrupted: bool,
}

impl Answers {
    /// Takes in `reply`, to a request about `subject`, closing its wait if it ends it.
    fn take(&mut self, reply: Reply<'_>, subject: Subject, open: &mut HashMap<u32, Subject>) {
        self.interrupted |= reply.flags & NLM_F_DUMP_INTR != 0;
        match reply.kind {
            ReplyKind::Data {
                message_type,
                attrs,
            } => self.data.push((message_type, attrs.to_vec())),
            ReplyKind::Ack | ReplyKind::Done(0) => {
                open.remove(&reply.seq);
            }
            ReplyKind::Error(errno) | ReplyKind::Done(errno) => {
                self.refused.get_or_insert((subject, errno));
                open.remove(&reply.seq);
            }
            ReplyKind::Other => {}
        }
    }
}

/// Fails unless a key of `set` has the `expected` length, which the set's type fixes: any
/// other length means the table is not the one `firewall-setup` writes, or the reply is
/// damaged.
fn check_key_len(set: &str, key: &[u8], expected: usize) -> Result<(), NftError> {
    if key.len() == expected {
        return Ok(());
    }
    Err(NftError::Malformed(format!(
        "set {set} holds a key of {} bytes, not {expected}",
        key.len()
    )))
}

/// Sets a `SOL_SOCKET` option whose value is a `c_int`.
fn set_int(socket: &Socket, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    set_option(socket, name, &value)
}

/// Sets a `SOL_SOCKET` option whose value is a `timeval` (SO_RCVTIMEO, SO_SNDTIMEO).
fn set_timeval(socket: &Socket, name: libc::c_int, value: Duration) -> io::Result<()> {
    // Below a million: fits an i32, and so `suseconds_t` on every target.
    let micros = i32::try_from(value.subsec_micros()).map_err(io::Error::other)?;
    let tv = libc::timeval {
        tv_sec: libc::time_t::try_from(value.as_secs()).map_err(io::Error::other)?,
        tv_usec: libc::suseconds_t::from(micros),
    };
    set_option(socket, name, &tv)
}

/// Sets a `SOL_SOCKET` option to the bytes of `value`, a `c_int` or a `timeval` (plain C
/// data without padding, which is all the callers above pass).
fn set_option<T>(socket: &Socket, name: libc::c_int, value: &T) -> io::Result<()> {
    let len = libc::socklen_t::try_from(std::mem::size_of::<T>()).map_err(io::Error::other)?;
    // SAFETY: `value` points to a live, initialized `T` of `len` bytes for the whole call, and
    // setsockopt only reads that many bytes from it; the descriptor is the socket's own,
    // open while `socket` is borrowed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            std::ptr::from_ref(value).cast(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The socket's send buffer (SO_SNDBUF), in bytes.
fn send_buffer(socket: &Socket) -> io::Result<usize> {
    let mut value: libc::c_int = 0;
    let mut len =
        libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).map_err(io::Error::other)?;
    // SAFETY: `value` and `len` are live and writable for the whole call; `len` holds the size
    // of `value`, and getsockopt writes at most that many bytes to `value` and the size it
    // wrote to `len`. The descriptor is the socket's own, open while `socket` is borrowed.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            std::ptr::addr_of_mut!(value).cast(),
            std::ptr::addr_of_mut!(len),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    usize::try_from(value).map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::process::{Command, Stdio};
    use std::time::Instant;

    /// The table `firewall-setup --nft` creates, with a minimal chain.
    const TABLE_TEXT: &str = "table inet knock_spa {
        set guarded {
            type inet_proto . inet_service
        }
        set admitted4 {
            type ipv4_addr . inet_proto . inet_service
            flags timeout
        }
        set admitted6 {
            type ipv6_addr . inet_proto . inet_service
            flags timeout
        }
        chain input { type filter hook input priority filter; policy accept; }
    }
    ";

    /// `addr` admitted to `port` (`"22/tcp"`).
    fn elem(addr: &str, port: &str) -> Element {
        Element {
            addr: addr.parse().expect("address"),
            port: port.parse().expect("port"),
        }
    }

    /// `"22/tcp"` as a PortSpec.
    fn port(text: &str) -> PortSpec {
        text.parse().expect("port")
    }

    #[test]
    fn v4_key_is_address_then_padded_proto_and_port() {
        let key = key(elem("10.1.2.3", "22/tcp"));
        assert_eq!(key, [10, 1, 2, 3, 6, 0, 0, 0, 0, 22, 0, 0]);
        let key = super::key(elem("192.0.2.1", "4660/udp"));
        assert_eq!(key, [192, 0, 2, 1, 17, 0, 0, 0, 0x12, 0x34, 0, 0]);
    }

    #[test]
    fn v6_key_is_24_bytes() {
        let key = key(elem("2001:db8::1", "443/tcp"));
        let mut want = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)
            .octets()
            .to_vec();
        want.extend_from_slice(&[6, 0, 0, 0, 0x01, 0xbb, 0, 0]);
        assert_eq!(key, want);
        assert_eq!(key.len(), 24);
    }

    #[test]
    fn guarded_key_is_8_bytes() {
        assert_eq!(guarded_key(port("22/tcp")), [6, 0, 0, 0, 0, 22, 0, 0]);
        assert_eq!(guarded_key(port("53/udp")), [17, 0, 0, 0, 0, 53, 0, 0]);
        assert_eq!(
            guarded_key(port("65535/udp")),
            [17, 0, 0, 0, 0xff, 0xff, 0, 0]
        );
    }

    #[test]
    fn keys_round_trip() {
        for e in [
            elem("10.1.2.3", "22/tcp"),
            elem("0.0.0.0", "1/udp"),
            elem("255.255.255.255", "65535/tcp"),
            elem("2001:db8::1", "53/udp"),
            elem("::", "1/tcp"),
            elem("::ffff:10.1.2.3", "8080/tcp"),
        ] {
            assert_eq!(parse_key(e.set(), &key(e)), Some(e), "{e:?}");
        }
        for p in [
            port("1/tcp"),
            port("22/tcp"),
            port("53/udp"),
            port("65535/udp"),
        ] {
            assert_eq!(parse_guarded_key(&guarded_key(p)), Some(p));
        }
    }

    #[test]
    fn malformed_keys_give_none() {
        let good = key(elem("10.1.2.3", "22/tcp"));
        assert_eq!(parse_key(SET_V4, &good[..11]), None, "short");
        assert_eq!(parse_key(SET_V4, &[]), None, "empty");
        assert_eq!(parse_key(SET_V6, &good), None, "a v4 key in the v6 set");
        assert_eq!(parse_key(SET_GUARDED, &good), None, "another set");
        assert_eq!(parse_key("nonesuch", &good), None, "unknown set");
        let mut sctp = good.clone();
        sctp[4] = 132;
        assert_eq!(
            parse_key(SET_V4, &sctp),
            None,
            "a protocol we do not handle"
        );
        let mut port0 = good.clone();
        port0[8..10].copy_from_slice(&[0, 0]);
        assert_eq!(parse_key(SET_V4, &port0), None, "port 0");
        let mut padded = good.clone();
        padded[11] = 1;
        assert_eq!(parse_key(SET_V4, &padded), None, "non-zero padding");
        assert_eq!(parse_guarded_key(&[6, 0, 0, 0, 0, 22, 0]), None, "short");
        assert_eq!(
            parse_guarded_key(&[6, 0, 0, 0, 0, 22, 0, 0, 0]),
            None,
            "long"
        );
        assert_eq!(
            parse_guarded_key(&[6, 1, 0, 0, 0, 22, 0, 0]),
            None,
            "padding"
        );
    }

    #[test]
    fn timeouts_are_whole_milliseconds_at_least_one() {
        assert_eq!(timeout_ms(Duration::ZERO), 1);
        assert_eq!(timeout_ms(Duration::from_micros(1500)), 1);
        assert_eq!(timeout_ms(Duration::from_secs(30)), 30_000);
        assert_eq!(timeout_ms(Duration::MAX), u64::MAX);
    }

    #[test]
    fn pack_keeps_runs_within_the_limit() {
        assert_eq!(pack(&[], 10), Vec::<Range<usize>>::new());
        assert_eq!(pack(&[4, 4, 4], 8), vec![0..2, 2..3]);
        assert_eq!(pack(&[4, 4, 4], 12), vec![0..3]);
        assert_eq!(
            pack(&[20, 1, 1], 8),
            vec![0..1, 1..3],
            "an oversized item alone"
        );
    }

    #[test]
    fn repeats_keep_the_last_timeout_and_sets_split() {
        let a = elem("10.0.0.1", "22/tcp");
        let b = elem("2001:db8::1", "22/tcp");
        let got = by_set(&[
            (a, Duration::from_secs(1)),
            (b, Duration::from_secs(2)),
            (a, Duration::from_secs(3)),
        ]);
        assert_eq!(
            got,
            vec![
                (SET_V4, vec![(a, Duration::from_secs(3))]),
                (SET_V6, vec![(b, Duration::from_secs(2))]),
            ]
        );
    }

    #[test]
    fn a_put_is_one_batch_of_three_messages() {
        let e = elem("10.1.2.3", "22/tcp");
        let changes = put_changes(SET_V4, &[(e, Duration::from_secs(30))]);
        let kinds: Vec<_> = changes
            .iter()
            .map(|c| (c.message.message_type(), c.flags))
            .collect();
        use netlink_packet_netfilter::nftables::NfTablesMessageType as T;
        assert_eq!(
            kinds,
            vec![
                (T::NewSetElement, NLM_F_CREATE),
                (T::DeleteSetElement, 0),
                (T::NewSetElement, NLM_F_CREATE),
            ]
        );
        let NfTablesMessage::NewSetElement(last) = &changes[2].message else {
            panic!("not a NEWSETELEM");
        };
        let timed = SetElementList::Elements(vec![timed_item(e, Duration::from_secs(30))]);
        assert!(last.attributes.contains(&timed), "{last:?}");
    }

    #[test]
    fn error_messages_say_what_to_do() {
        let missing = refusal(Subject::Set(SET_V4), libc::ENOENT);
        assert!(missing.is_missing_table());
        assert_eq!(
            missing.to_string(),
            "table inet knock_spa (or its set admitted4) is missing: \
             run `knock-spad firewall-setup --nft --apply`"
        );
        let denied = refusal(Subject::Table, libc::EPERM);
        assert!(
            denied.to_string().contains("needs CAP_NET_ADMIN"),
            "{denied}"
        );
        assert!(!denied.is_missing_table());
        let other = refusal(Subject::Set(SET_V6), libc::EBUSY);
        assert!(
            other
                .to_string()
                .contains("set admitted6 of table inet knock_spa")
                && other.to_string().contains("busy"),
            "{other}"
        );
        let table = refusal(Subject::Table, libc::ENOENT);
        assert!(
            !table.is_missing_table(),
            "ENOENT on the table alone is `table_exists`'s"
        );
    }

    // ---- Against the kernel, each in a network namespace of its own ----

    /// Fails the test unless it runs as root (it creates a network namespace and a table).
    fn require_root() {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "this test needs root: it creates a network namespace and an nftables table in it \
             (run `sudo -E cargo test -p knock-spad nft`)"
        );
    }

    /// Runs `body` on a thread of its own in a new network namespace (with the table when
    /// `with_table`), which disappears with the thread; the host's firewall is never touched.
    fn in_netns<T: Send + 'static>(
        with_table: bool,
        body: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        require_root();
        let thread = std::thread::spawn(move || {
            // SAFETY: unshare takes no pointers. CLONE_NEWNET moves only the calling thread (a
            // thread spawned for this test, which ends when `body` returns) into a new network
            // namespace; no other thread, and no memory, is affected.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(
                rc,
                0,
                "unshare(CLONE_NEWNET): {}",
                io::Error::last_os_error()
            );
            if with_table {
                nft_stdin(TABLE_TEXT);
            }
            body()
        });
        match thread.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Runs `nft -f -` with `text` in this thread's namespace; fails the test if it fails.
    fn nft_stdin(text: &str) {
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nft");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write to nft");
        let out = child.wait_with_output().expect("wait for nft");
        assert!(
            out.status.success(),
            "nft -f: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The output of `nft ARGS` in this thread's namespace.
    fn nft_out(args: &[&str]) -> String {
        let out = Command::new("nft").args(args).output().expect("run nft");
        assert!(
            out.status.success(),
            "nft {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A socket in this thread's namespace.
    fn open() -> Nft {
        Nft::open().expect("open the netlink socket")
    }

    /// The time `e` has left according to `list`, if it is listed.
    fn left(nft: &mut Nft, e: Element) -> Option<Duration> {
        let listed = nft.list().expect("list");
        listed.iter().find(|(x, _)| *x == e).map(|(_, d)| *d)
    }

    /// Asserts that `d` is within `(lo, hi]` seconds.
    fn assert_between(d: Option<Duration>, lo: u64, hi: u64) {
        let d = d.expect("the element is listed");
        assert!(
            d > Duration::from_secs(lo) && d <= Duration::from_secs(hi),
            "{d:?} is not in ({lo}s, {hi}s]"
        );
    }

    #[test]
    fn put_then_list_shows_the_element_and_its_timeout() {
        in_netns(true, || {
            let mut nft = open();
            let v4 = elem("10.1.2.3", "22/tcp");
            let v6 = elem("2001:db8::1", "53/udp");
            nft.put(v4, Duration::from_secs(30)).expect("put v4");
            nft.put(v6, Duration::from_secs(60)).expect("put v6");
            let listed = nft.list().expect("list");
            assert_eq!(listed.len(), 2, "{listed:?}");
            assert_between(left(&mut nft, v4), 25, 30);
            assert_between(left(&mut nft, v6), 55, 60);
            let shown = nft_out(&["list", "set", "inet", "knock_spa", "admitted4"]);
            assert!(shown.contains("10.1.2.3 . tcp . 22 timeout 30s"), "{shown}");
            let shown = nft_out(&["list", "set", "inet", "knock_spa", "admitted6"]);
            assert!(
                shown.contains("2001:db8::1 . udp . 53 timeout 1m"),
                "{shown}"
            );
        });
    }

    #[test]
    fn put_again_replaces_the_timeout() {
        in_netns(true, || {
            let mut nft = open();
            let e = elem("10.1.2.3", "22/tcp");
            nft.put(e, Duration::from_secs(30)).expect("first put");
            assert_between(left(&mut nft, e), 25, 30);
            nft.put(e, Duration::from_secs(600)).expect("longer put");
            assert_between(left(&mut nft, e), 590, 600);
            nft.put(e, Duration::from_secs(10)).expect("shorter put");
            assert_between(left(&mut nft, e), 5, 10);
            assert_eq!(nft.list().expect("list").len(), 1);
        });
    }

    #[test]
    fn delete_says_whether_the_element_was_there() {
        in_netns(true, || {
            let mut nft = open();
            let e = elem("2001:db8::7", "443/tcp");
            let other = elem("2001:db8::7", "443/udp");
            nft.put(e, Duration::from_secs(30)).expect("put");
            nft.put(other, Duration::from_secs(30)).expect("put");
            assert!(nft.delete(e).expect("first delete"));
            assert!(!nft.delete(e).expect("second delete"));
            assert_eq!(
                nft.list().expect("list"),
                vec![(other, left(&mut nft, other).expect("other"))]
            );
            // The socket is clean after the refused batch: the next call works.
            nft.put(e, Duration::from_secs(5))
                .expect("put after the refusal");
            assert!(nft.delete(e).expect("delete"));
        });
    }

    #[test]
    fn replies_left_over_from_an_earlier_call_are_skipped() {
        in_netns(true, || {
            let mut nft = open();
            // As after a call that timed out: requests whose answers nobody read.
            let get = || {
                NfTablesMessage::GetTable(TableMessage {
                    attributes: vec![TableAttribute::Name(TABLE.to_owned())],
                })
            };
            nft.request(get(), NLM_F_ACK).expect("request");
            let dump = NfTablesMessage::GetSetElement(element_message(SET_GUARDED, None));
            nft.request(dump, NLM_F_DUMP).expect("request");
            let e = elem("10.1.2.3", "22/tcp");
            nft.put(e, Duration::from_secs(30)).expect("put");
            assert_eq!(nft.guarded().expect("guarded"), vec![]);
            assert!(nft.table_exists().expect("table_exists"));
            assert_between(left(&mut nft, e), 25, 30);
        });
    }

    #[test]
    fn an_element_expires_by_itself() {
        in_netns(true, || {
            let mut nft = open();
            let e = elem("10.9.9.9", "2222/tcp");
            nft.put(e, Duration::from_secs(1)).expect("put");
            assert!(left(&mut nft, e).is_some(), "listed right after the put");
            let deadline = Instant::now() + Duration::from_secs(5);
            while left(&mut nft, e).is_some() {
                assert!(
                    Instant::now() < deadline,
                    "still listed 5 s after a 1 s timeout"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            // Expired: a delete finds nothing.
            assert!(!nft.delete(e).expect("delete"));
        });
    }

    #[test]
    fn set_guarded_replaces_the_ports() {
        in_netns(true, || {
            let mut nft = open();
            assert_eq!(nft.guarded().expect("guarded"), vec![]);
            nft.set_guarded(&[port("22/tcp"), port("53/udp"), port("22/tcp")])
                .expect("first set");
            assert_eq!(
                nft.guarded().expect("guarded"),
                vec![port("22/tcp"), port("53/udp")]
            );
            nft.set_guarded(&[port("80/tcp")]).expect("second set");
            assert_eq!(nft.guarded().expect("guarded"), vec![port("80/tcp")]);
            let shown = nft_out(&["list", "set", "inet", "knock_spa", "guarded"]);
            assert!(shown.contains("tcp . 80"), "{shown}");
            nft.set_guarded(&[]).expect("empty");
            assert_eq!(nft.guarded().expect("guarded"), vec![]);
        });
    }

    #[test]
    fn a_missing_table_is_reported_as_such() {
        in_netns(false, || {
            let mut nft = open();
            assert!(!nft.table_exists().expect("table_exists"));
            let e = elem("10.1.2.3", "22/tcp");
            let err = nft
                .put(e, Duration::from_secs(30))
                .expect_err("put without a table");
            assert!(err.is_missing_table(), "{err}");
            assert!(err.to_string().contains("set admitted4"), "{err}");
            let err = nft.delete(e).expect_err("delete without a table");
            assert!(err.is_missing_table(), "{err}");
            let err = nft.list().expect_err("list without a table");
            assert!(err.is_missing_table(), "{err}");
            let err = nft
                .set_guarded(&[port("22/tcp")])
                .expect_err("guarded without a table");
            assert!(err.is_missing_table(), "{err}");
            nft_stdin(TABLE_TEXT);
            assert!(nft.table_exists().expect("table_exists"));
            nft.put(e, Duration::from_secs(30))
                .expect("put once the table is there");
        });
    }

    #[test]
    fn a_missing_set_is_reported_as_such() {
        in_netns(false, || {
            nft_stdin(
                "table inet knock_spa {
                    set admitted4 {
                        type ipv4_addr . inet_proto . inet_service
                        flags timeout
                    }
                }",
            );
            let mut nft = open();
            assert!(nft.table_exists().expect("table_exists"));
            let e = elem("2001:db8::1", "22/tcp");
            let err = nft
                .put(e, Duration::from_secs(30))
                .expect_err("put without admitted6");
            assert!(err.to_string().contains("set admitted6"), "{err}");
            let err = nft.delete(e).expect_err("delete without admitted6");
            assert!(err.is_missing_table(), "{err}");
        });
    }

    #[test]
    fn put_many_opens_ten_thousand_grants() {
        in_netns(true, || {
            let mut nft = open();
            let v4 = (0..8_000u32).map(|i| Element {
                addr: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)),
                port: port("22/tcp"),
            });
            let v6 = (0..2_000u128).map(|i| Element {
                addr: IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | i)),
                port: port("443/udp"),
            });
            let grants: Vec<_> = v4
                .chain(v6)
                .map(|e| (e, Duration::from_secs(600)))
                .collect();
            let started = Instant::now();
            nft.put_many(&grants).expect("put_many");
            let put_took = started.elapsed();
            let listed = nft.list().expect("list");
            assert_eq!(listed.len(), 10_000);
            assert!(listed.iter().all(|(_, d)| *d > Duration::from_secs(590)));
            // Refreshing them all is the same call.
            nft.put_many(&grants).expect("put_many again");
            assert_eq!(nft.list().expect("list").len(), 10_000);
            eprintln!("put_many of 10,000: {put_took:?}; {nft:?}");
        });
    }

    #[test]
    fn put_many_splits_into_batches_that_fit_a_small_send_buffer() {
        in_netns(true, || {
            let mut nft = open();
            // A real send buffer of 8 KiB (the kernel doubles the 4 KiB asked for): a datagram
            // larger than that is refused with EMSGSIZE, so every batch must fit it.
            set_int(&nft.socket, libc::SO_SNDBUF, 4096).expect("SO_SNDBUF");
            let sndbuf = send_buffer(&nft.socket).expect("SO_SNDBUF");
            assert!(sndbuf < 16 * 1024, "{sndbuf}");
            nft.batch_limit = sndbuf - SEND_BUFFER_RESERVE;
            let grants: Vec<_> = (0..1_000u32)
                .map(|i| Element {
                    addr: IpAddr::V4(Ipv4Addr::from(0xc000_0200 + i)),
                    port: port("22/tcp"),
                })
                .map(|e| (e, Duration::from_secs(60)))
                .collect();
            let seq_before = nft.seq;
            nft.put_many(&grants).expect("put_many");
            // A batch of one run of elements is 5 messages (begin, 3 changes, end).
            let messages = nft.seq - seq_before;
            assert!(messages >= 5 * 10, "{messages} messages: not in batches");
            assert_eq!(nft.list().expect("list").len(), 1_000);
        });
    }

    #[test]
    fn put_many_with_a_repeat_keeps_the_last_timeout() {
        in_netns(true, || {
            let mut nft = open();
            let e = elem("10.1.2.3", "22/tcp");
            let grants = [(e, Duration::from_secs(10)), (e, Duration::from_secs(100))];
            nft.put_many(&grants).expect("put_many");
            assert_between(left(&mut nft, e), 95, 100);
            nft.put_many(&[]).expect("nothing to put");
        });
    }

    #[test]
    fn without_cap_net_admin_it_is_not_permitted() {
        in_netns(true, || {
            // Capabilities are per thread: this drops it for this test's thread only.
            caps::drop(
                None,
                caps::CapSet::Effective,
                caps::Capability::CAP_NET_ADMIN,
            )
            .expect("drop CAP_NET_ADMIN");
            let mut nft = open();
            let err = nft
                .table_exists()
                .expect_err("table_exists without the capability");
            assert!(matches!(err, NftError::NotPermitted), "{err}");
            let err = nft
                .put(elem("10.1.2.3", "22/tcp"), Duration::from_secs(1))
                .expect_err("put without the capability");
            assert!(matches!(err, NftError::NotPermitted), "{err}");
        });
    }
}
