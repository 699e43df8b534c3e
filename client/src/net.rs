//! Host name resolution shared by `open`/`close` and `knock`.
//!
//! Role: turn HOST (a name, an IP address, or a bracketed IPv6 address) into socket addresses
//! of the requested family, with an error that names the host: one address for `knock`
//! ([`resolve`]), one per family for SPA packets ([`resolve_targets`], [`targets`]).
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
        Family::Any | Family::Both => true,
        Family::V4 => a.is_ipv4(),
        Family::V6 => a.is_ipv6(),
    })
}

/// Resolves HOST with the system resolver (`getaddrinfo`) and returns the first address of
/// the family asked for, with `port`.
pub fn resolve(host: &str, port: u16, family: Family) -> anyhow::Result<SocketAddr> {
    let addrs = resolve_all(host, port)?;
    pick(addrs.iter().copied(), family).ok_or_else(|| no_address(host, family))
}

/// Every address HOST resolves to, in the resolver's order, with `port`.
pub fn resolve_all(host: &str, port: u16) -> anyhow::Result<Vec<SocketAddr>> {
    let name = strip_brackets(host.trim());
    if name.is_empty() {
        return Err(anyhow!("the host name is empty"));
    }
    Ok((name, port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve host `{host}`"))?
        .collect())
}

fn no_address(host: &str, family: Family) -> anyhow::Error {
    match family {
        Family::V4 => anyhow!("host `{host}` has no IPv4 address (drop -4?)"),
        Family::V6 => anyhow!("host `{host}` has no IPv6 address (drop -6?)"),
        Family::Any | Family::Both => anyhow!("host `{host}` resolves to no address"),
    }
}

/// The addresses SPA packets go to, one per family, each the first of its family in the
/// resolver's order, the resolver's first address first:
///
/// - [`Family::V4`], [`Family::V6`]: the first address of that family;
/// - [`Family::Any`]: the first IPv4 and the first IPv6 address, whichever HOST has, so that
///   the service can be reached over either (with `single`, only the first address: a packet
///   that names the address to admit opens the same grant over either family);
/// - [`Family::Both`]: as `Any`, but HOST must have both.
pub fn targets(
    host: &str,
    addrs: &[SocketAddr],
    family: Family,
    single: bool,
) -> anyhow::Result<Vec<SocketAddr>> {
    let first_of = |v4: bool| addrs.iter().copied().find(|a| a.is_ipv4() == v4);
    let chosen: Vec<SocketAddr> = match family {
        Family::V4 => first_of(true).into_iter().collect(),
        Family::V6 => first_of(false).into_iter().collect(),
        Family::Any if single => addrs.first().copied().into_iter().collect(),
        Family::Any | Family::Both => {
            let mut both: Vec<SocketAddr> = [first_of(true), first_of(false)]
                .into_iter()
                .flatten()
                .collect();
            // The resolver's preference first.
            if both.len() == 2 && addrs.first() == Some(&both[1]) {
                both.swap(0, 1);
            }
            both
        }
    };
    if chosen.is_empty() {
        return Err(no_address(host, family));
    }
    if family == Family::Both && chosen.len() < 2 {
        let missing = if chosen[0].is_ipv4() { "IPv6" } else { "IPv4" };
        return Err(anyhow!(
            "host `{host}` has no {missing} address, and the stanza says `family = both`"
        ));
    }
    Ok(chosen)
}

/// [`resolve_all`], then [`targets`].
pub fn resolve_targets(
    host: &str,
    port: u16,
    family: Family,
    single: bool,
) -> anyhow::Result<Vec<SocketAddr>> {
    let addrs = resolve_all(host, port)?;
    targets(host, &addrs, family, single)
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
    fn one_target_per_family() {
        let v4: SocketAddr = "192.0.2.1:1".parse().expect("literal");
        let v4b: SocketAddr = "192.0.2.2:1".parse().expect("literal");
        let v6: SocketAddr = "[2001:db8::1]:1".parse().expect("literal");
        let t = |addrs: &[SocketAddr], family, single| {
            targets("h", addrs, family, single).map_err(|e| e.to_string())
        };
        assert_eq!(t(&[v4, v4b, v6], Family::Any, false), Ok(vec![v4, v6]));
        assert_eq!(t(&[v6, v4, v4b], Family::Any, false), Ok(vec![v6, v4]));
        assert_eq!(t(&[v6, v4], Family::Any, true), Ok(vec![v6]));
        assert_eq!(t(&[v4, v4b], Family::Any, false), Ok(vec![v4]));
        assert_eq!(t(&[v4, v6], Family::V6, false), Ok(vec![v6]));
        assert_eq!(t(&[v4, v6], Family::V4, false), Ok(vec![v4]));
        assert_eq!(t(&[v6, v4], Family::Both, true), Ok(vec![v6, v4]));
        let err = t(&[v4, v4b], Family::Both, false).expect_err("no v6");
        assert!(
            err.contains("no IPv6 address") && err.contains("family = both"),
            "{err}"
        );
        assert!(t(&[v6], Family::V4, false).is_err());
        assert!(t(&[], Family::Any, false).is_err());
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
