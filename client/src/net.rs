//! Host name resolution shared by `open`/`close` and `knock`.
//!
//! Role: turn HOST (a name, an IP address, or a bracketed IPv6 address) into one socket
//! address of the requested family, with an error that names the host.
//!
//! It must not send anything.

use std::net::{SocketAddr, ToSocketAddrs as _};

use anyhow::{anyhow, Context as _};

use crate::model::Family;

/// `[::1]` → `::1`; anything else unchanged.
pub fn strip_brackets(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// Picks the first address of the wanted family, in the resolver's order (as `knock` does).
pub fn pick(addrs: impl IntoIterator<Item = SocketAddr>, family: Family) -> Option<SocketAddr> {
    addrs.into_iter().find(|a| match family {
        Family::Any => true,
        Family::V4 => a.is_ipv4(),
        Family::V6 => a.is_ipv6(),
    })
}

/// Resolves HOST with the system resolver (`getaddrinfo`) and returns the first address of
/// the family asked for, with `port`.
pub fn resolve(host: &str, port: u16, family: Family) -> anyhow::Result<SocketAddr> {
    let name = strip_brackets(host.trim());
    if name.is_empty() {
        return Err(anyhow!("the host name is empty"));
    }
    let addrs: Vec<SocketAddr> = (name, port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve host `{host}`"))?
        .collect();
    pick(addrs.iter().copied(), family).ok_or_else(|| match family {
        Family::V4 => anyhow!("host `{host}` has no IPv4 address (drop -4?)"),
        Family::V6 => anyhow!("host `{host}` has no IPv6 address (drop -6?)"),
        Family::Any => anyhow!("host `{host}` resolves to no address"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brackets() {
        assert_eq!(strip_brackets("[::1]"), "::1");
        assert_eq!(strip_brackets("::1"), "::1");
        assert_eq!(strip_brackets("[x"), "[x");
        assert_eq!(strip_brackets("host"), "host");
    }

    #[test]
    fn family_choice() {
        let v4: SocketAddr = "192.0.2.1:1".parse().expect("literal");
        let v6: SocketAddr = "[2001:db8::1]:1".parse().expect("literal");
        assert_eq!(pick([v6, v4], Family::Any), Some(v6));
        assert_eq!(pick([v6, v4], Family::V4), Some(v4));
        assert_eq!(pick([v6, v4], Family::V6), Some(v6));
        assert_eq!(pick([v4], Family::V6), None);
    }

    #[test]
    fn literals_resolve_without_dns() {
        assert_eq!(
            resolve("127.0.0.1", 9, Family::Any).expect("literal"),
            "127.0.0.1:9".parse::<SocketAddr>().expect("literal")
        );
        assert_eq!(
            resolve("[::1]", 9, Family::V6).expect("literal"),
            "[::1]:9".parse::<SocketAddr>().expect("literal")
        );
        let err = resolve("127.0.0.1", 9, Family::V6).expect_err("no v6");
        assert!(err.to_string().contains("no IPv6"), "{err}");
        assert!(resolve("", 9, Family::Any).is_err());
    }
}
