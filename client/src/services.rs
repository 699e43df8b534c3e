//! The SERVICE argument of `open` / `close`: service names from `/etc/services`, port numbers,
//! `PORT/PROTO`, and comma lists of those.
//!
//! Role: [`parse`] turns the text of a services file into a [`Services`] lookup (pure, tested
//! on literal text); [`Services::system`] reads `/etc/services`; [`parse_list`] turns the
//! user's SERVICE text into the port list a packet carries.
//!
//! Rules for one entry of the list:
//! - `22` is 22/tcp; `22/tcp`, `53/udp` (or `53:udp`, knock's separator) say the protocol;
//! - `ssh` is looked up: when the name has a tcp entry it is used, else its udp entry
//!   (`syslog` is 514/udp); `domain/udp` asks for the udp entry explicitly.
//!
//! Duplicates are dropped (first one kept); at most [`MAX_PORTS`] distinct ports.
//! It must not do any I/O except the one read of [`Services::system`], made at the first name
//! looked up (a command line of port numbers never reads the file: `open 22/tcp HOST` starts
//! faster).

use std::cell::OnceCell;
use std::num::NonZeroU16;

use knock_shared::types::{parse_port, PortSpec, Proto};
use knock_shared::wire::MAX_PORTS;

use crate::model::InputError;

/// Where service names come from at run time.
pub const SYSTEM_SERVICES: &str = "/etc/services";

/// The ports one service name has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Entry {
    tcp: Option<NonZeroU16>,
    udp: Option<NonZeroU16>,
}

/// A service-name lookup table, or the reason there is none.
#[derive(Clone, Debug)]
pub struct Services {
    /// The table, once read (or given).
    table: OnceCell<Table>,
    /// The file to read at the first lookup, when the table is not given.
    file: Option<&'static str>,
}

/// The database: the file's text, searched for each name looked up (a command line holds a
/// few names, the file hundreds: one scan per name costs less than indexing every line).
#[derive(Clone, Debug)]
struct Table {
    /// The text of the file.
    text: String,
    /// Shown in error messages (`/etc/services`).
    source_name: String,
    /// Why the database could not be read; names then fail, numbers still work.
    unavailable: Option<String>,
}

/// Takes the text of a services file (`name port/proto [aliases...] [# comment]`).
///
/// Lines that do not parse, and protocols other than tcp and udp, are skipped, as the C
/// library does. When a name (or alias) appears twice for one protocol the first line wins,
/// as `getservbyname` does. Names are matched without regard to ASCII case.
pub fn parse(text: &str) -> Services {
    Services::given(Table {
        text: text.to_owned(),
        source_name: SYSTEM_SERVICES.to_owned(),
        unavailable: None,
    })
}

/// The tcp and udp ports of `name` in `text`: the first line of each protocol that names it.
fn find(text: &str, name: &str) -> Option<Entry> {
    let mut entry = Entry::default();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut words = line.split_whitespace();
        let (Some(first), Some(port_proto)) = (words.next(), words.next()) else {
            continue;
        };
        if !std::iter::once(first)
            .chain(words)
            .any(|n| n.eq_ignore_ascii_case(name))
        {
            continue;
        }
        let Some((port, proto)) = port_proto.split_once('/') else {
            continue;
        };
        let (Ok(port), Ok(proto)) = (parse_port(port), proto.parse::<Proto>()) else {
            continue;
        };
        let slot = match proto {
            Proto::Tcp => &mut entry.tcp,
            Proto::Udp => &mut entry.udp,
        };
        slot.get_or_insert(port);
        if entry.tcp.is_some() && entry.udp.is_some() {
            break;
        }
    }
    (entry != Entry::default()).then_some(entry)
}

impl Services {
    /// [`SYSTEM_SERVICES`], read when the first name is looked up. Never fails: if the file
    /// cannot be read, the error is kept and reported for each name looked up (numeric ports
    /// keep working).
    pub fn system() -> Self {
        Self {
            table: OnceCell::new(),
            file: Some(SYSTEM_SERVICES),
        }
    }

    fn given(table: Table) -> Self {
        Self {
            table: OnceCell::from(table),
            file: None,
        }
    }

    /// A table with no names, as when the database cannot be read.
    pub fn unavailable(source_name: &str, why: &str) -> Self {
        Self::given(Table::unavailable(source_name, why))
    }

    /// Whether the file has been read (or the table was given).
    pub fn is_loaded(&self) -> bool {
        self.table.get().is_some()
    }

    fn table(&self) -> &Table {
        self.table.get_or_init(|| match self.file {
            Some(file) => match std::fs::read_to_string(file) {
                Ok(text) => Table {
                    text,
                    source_name: file.to_owned(),
                    unavailable: None,
                },
                Err(e) => Table::unavailable(file, &e.to_string()),
            },
            None => Table::unavailable(SYSTEM_SERVICES, "no services database"),
        })
    }

    /// Looks a name up. `proto` is the protocol the user wrote (`domain/udp`), if any.
    pub fn lookup(&self, name: &str, proto: Option<Proto>) -> Result<PortSpec, InputError> {
        self.table().lookup(name, proto)
    }
}

impl Table {
    fn unavailable(source_name: &str, why: &str) -> Self {
        Self {
            text: String::new(),
            source_name: source_name.to_owned(),
            unavailable: Some(why.to_owned()),
        }
    }

    fn lookup(&self, name: &str, proto: Option<Proto>) -> Result<PortSpec, InputError> {
        if let Some(why) = &self.unavailable {
            return Err(InputError::NoServiceDb {
                name: name.to_owned(),
                source_name: self.source_name.clone(),
                why: why.clone(),
            });
        }
        let Some(entry) = find(&self.text, name) else {
            return Err(InputError::UnknownService {
                name: name.to_owned(),
                source_name: self.source_name.clone(),
            });
        };
        let found = match proto {
            None => entry
                .tcp
                .map(|p| (Proto::Tcp, p))
                .or(entry.udp.map(|p| (Proto::Udp, p))),
            Some(Proto::Tcp) => entry.tcp.map(|p| (Proto::Tcp, p)),
            Some(Proto::Udp) => entry.udp.map(|p| (Proto::Udp, p)),
        };
        match (found, proto) {
            (Some((proto, port)), _) => Ok(PortSpec { proto, port }),
            (None, Some(wanted)) => {
                let have: Vec<String> = [(Proto::Tcp, entry.tcp), (Proto::Udp, entry.udp)]
                    .into_iter()
                    .filter_map(|(pr, p)| p.map(|p| format!("{p}/{pr}")))
                    .collect();
                let number = entry.tcp.or(entry.udp);
                Err(InputError::WrongProto {
                    name: name.to_owned(),
                    proto: wanted,
                    available: have.join(", "),
                    example: number
                        .map_or_else(|| format!("22/{wanted}"), |p| format!("{p}/{wanted}")),
                    source_name: self.source_name.clone(),
                })
            }
            // A name is only stored with at least one protocol.
            (None, None) => Err(InputError::UnknownService {
                name: name.to_owned(),
                source_name: self.source_name.clone(),
            }),
        }
    }
}

/// Parses one entry: `22`, `22/tcp`, `53:udp`, `ssh`, `domain/udp`.
pub fn parse_one(text: &str, services: &Services) -> Result<PortSpec, InputError> {
    let entry = text.trim();
    let (what, proto) = match entry.split_once(['/', ':']) {
        Some((what, proto)) => {
            let proto = proto
                .trim()
                .parse::<Proto>()
                .map_err(|_| InputError::BadProto {
                    text: entry.to_owned(),
                })?;
            (what.trim(), Some(proto))
        }
        None => (entry, None),
    };
    if what.is_empty() {
        return Err(InputError::BadPort {
            text: entry.to_owned(),
        });
    }
    if what.bytes().all(|b| b.is_ascii_digit()) {
        let port = parse_port(what).map_err(|_| InputError::BadPort {
            text: what.to_owned(),
        })?;
        return Ok(PortSpec {
            proto: proto.unwrap_or(Proto::Tcp),
            port,
        });
    }
    match services.lookup(what, proto) {
        // `22x`, `-1`, `+22`: not a name anyone has; say what a port looks like.
        Err(InputError::UnknownService { .. })
            if !what.starts_with(|c: char| c.is_ascii_alphabetic()) =>
        {
            Err(InputError::BadPort {
                text: what.to_owned(),
            })
        }
        other => other,
    }
}

/// Parses a SERVICE argument: one entry or a comma list, 1 to [`MAX_PORTS`] distinct ports in
/// the order given.
pub fn parse_list(text: &str, services: &Services) -> Result<Vec<PortSpec>, InputError> {
    let mut out: Vec<PortSpec> = Vec::new();
    for item in text.split(',') {
        if item.trim().is_empty() {
            return Err(InputError::EmptyService {
                list: text.to_owned(),
            });
        }
        let spec = parse_one(item, services)?;
        if !out.contains(&spec) {
            out.push(spec);
        }
    }
    if out.len() > MAX_PORTS {
        return Err(InputError::TooManyPorts {
            count: out.len(),
            max: MAX_PORTS,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# Network services, Internet style
tcpmux		1/tcp				# TCP port service multiplexer
ssh		22/tcp				# SSH Remote Login Protocol
domain		53/tcp				# Domain Name Server
domain		53/udp
http		80/tcp		www		# WorldWideWeb HTTP
ntp		123/udp				# Network Time Protocol
syslog		514/udp
sctp-only	9/sctp
ddp-thing	4/ddp
broken-no-proto 77
broken-port	0/tcp
http-alt	8080/tcp	webcache
www		81/tcp		# a later line for an existing alias: ignored
   
";

    fn spec(s: &str) -> PortSpec {
        s.parse().expect("test spec")
    }

    fn list(text: &str) -> Result<Vec<PortSpec>, InputError> {
        parse_list(text, &parse(TEXT))
    }

    #[test]
    fn names_and_aliases() {
        let db = parse(TEXT);
        assert_eq!(db.lookup("ssh", None), Ok(spec("22/tcp")));
        assert_eq!(db.lookup("SSH", None), Ok(spec("22/tcp")));
        assert_eq!(
            db.lookup("www", None),
            Ok(spec("80/tcp")),
            "alias, first line wins"
        );
        assert_eq!(db.lookup("webcache", None), Ok(spec("8080/tcp")));
        assert_eq!(db.lookup("tcpmux", None), Ok(spec("1/tcp")));
    }

    #[test]
    fn tcp_preferred_unless_udp_asked() {
        assert_eq!(list("domain"), Ok(vec![spec("53/tcp")]));
        assert_eq!(list("domain/udp"), Ok(vec![spec("53/udp")]));
        assert_eq!(list("domain:udp"), Ok(vec![spec("53/udp")]));
        assert_eq!(list("domain/tcp"), Ok(vec![spec("53/tcp")]));
        // Only a udp entry: that is the one.
        assert_eq!(list("syslog"), Ok(vec![spec("514/udp")]));
        assert_eq!(list("ntp"), Ok(vec![spec("123/udp")]));
    }

    #[test]
    fn wrong_proto_for_name() {
        let err = list("ssh/udp").expect_err("ssh has no udp entry");
        assert!(
            matches!(
                err,
                InputError::WrongProto {
                    proto: Proto::Udp,
                    ..
                }
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("22/tcp") && msg.contains("22/udp"), "{msg}");
        assert!(matches!(
            list("syslog/tcp"),
            Err(InputError::WrongProto { .. })
        ));
    }

    #[test]
    fn skipped_lines() {
        for name in [
            "sctp-only",
            "ddp-thing",
            "broken-no-proto",
            "broken-port",
            "network",
        ] {
            assert!(
                matches!(list(name), Err(InputError::UnknownService { .. })),
                "{name}"
            );
        }
    }

    #[test]
    fn numbers() {
        assert_eq!(list("22"), Ok(vec![spec("22/tcp")]));
        assert_eq!(list("22/tcp"), Ok(vec![spec("22/tcp")]));
        assert_eq!(list("53/udp"), Ok(vec![spec("53/udp")]));
        assert_eq!(list("53/UDP"), Ok(vec![spec("53/udp")]));
        assert_eq!(list("65535"), Ok(vec![spec("65535/tcp")]));
        assert_eq!(list(" 1 "), Ok(vec![spec("1/tcp")]));
    }

    #[test]
    fn lists_keep_order_and_drop_duplicates() {
        assert_eq!(
            list("ssh,53/udp,http,8443"),
            Ok(vec![
                spec("22/tcp"),
                spec("53/udp"),
                spec("80/tcp"),
                spec("8443/tcp")
            ])
        );
        assert_eq!(list("ssh,22,22/tcp"), Ok(vec![spec("22/tcp")]));
        assert_eq!(
            list("domain,domain/udp"),
            Ok(vec![spec("53/tcp"), spec("53/udp")])
        );
    }

    #[test]
    fn sixteen_ports_but_not_seventeen() {
        let sixteen: Vec<String> = (1..=16).map(|p| p.to_string()).collect();
        assert_eq!(list(&sixteen.join(",")).map(|v| v.len()), Ok(16));
        let seventeen: Vec<String> = (1..=17).map(|p| p.to_string()).collect();
        assert_eq!(
            list(&seventeen.join(",")),
            Err(InputError::TooManyPorts { count: 17, max: 16 })
        );
        // Duplicates do not count.
        assert_eq!(
            list(&format!("{},1,2", sixteen.join(","))).map(|v| v.len()),
            Ok(16)
        );
    }

    #[test]
    fn bad_ports() {
        for bad in [
            "0",
            "65536",
            "99999999999",
            "-1",
            "+22",
            "22x",
            "1e3",
            "/tcp",
            "0/udp",
        ] {
            assert!(
                matches!(list(bad), Err(InputError::BadPort { .. })),
                "{bad}: {:?}",
                list(bad)
            );
        }
        for bad in ["22/sctp", "22/", "ssh/icmp"] {
            assert!(
                matches!(list(bad), Err(InputError::BadProto { .. })),
                "{bad}"
            );
        }
        for bad in ["", ",", "ssh,", ",ssh", "ssh,,http", " "] {
            assert!(
                matches!(list(bad), Err(InputError::EmptyService { .. })),
                "{bad:?}"
            );
        }
        assert!(matches!(
            list("nosuchservice"),
            Err(InputError::UnknownService { .. })
        ));
    }

    #[test]
    fn unreadable_database_keeps_numbers_working() {
        let db = Services::unavailable("/etc/services", "No such file or directory");
        assert_eq!(
            parse_list("22,53/udp", &db),
            Ok(vec![spec("22/tcp"), spec("53/udp")])
        );
        let err = parse_list("ssh", &db).expect_err("no names without a database");
        assert!(matches!(err, InputError::NoServiceDb { .. }));
        assert!(err.to_string().contains("No such file"), "{err}");
    }

    #[test]
    fn the_system_file_is_read_only_for_a_name() {
        let db = Services::system();
        assert_eq!(
            parse_list("22,53/udp,443:tcp", &db),
            Ok(vec![spec("22/tcp"), spec("53/udp"), spec("443/tcp")])
        );
        assert!(!db.is_loaded(), "numbers alone never read /etc/services");
        // A name reads it (whatever it holds on this machine: found, unknown or unreadable).
        let _ = parse_list("no-such-service-name", &db);
        assert!(db.is_loaded());
    }
}
