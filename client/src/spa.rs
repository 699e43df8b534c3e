//! `open` and `close`: build one SPA packet and send it (or print it with `--dry-run`).
//!
//! Role, in order: [`resolve`] turns the command line into a [`SpaPlan`] (services parsed,
//! defaults applied; this is where a client configuration stanza will slot in between the
//! flags and the built-in defaults); [`execute`] loads the key, resolves HOST, chooses the
//! address to admit ([`choose_admit`]), builds the [`Request`], seals it with a fresh random
//! nonce and padding, and sends one UDP datagram.
//!
//! The wire format, the crypto and the checks are `knock_shared::wire`'s; nothing here
//! reimplements them. Secrets stay inside `knock_keys` / `KeyState`; nothing here prints them.

use std::io::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context as _};
use knock_keys::{KeyError, NamedKey};
use knock_shared::types::PortSpec;
use knock_shared::wire::{
    seal, Action, Admit, KeyState, PortList, Request, ServerId, MAX_PORTS, NONCE_LEN, PACKET_LEN,
    PADDING_LEN,
};
use ring::rand::{SecureRandom as _, SystemRandom};

use crate::cli::{Family, SpaArgs};
use crate::error::InputError;
use crate::net;
use crate::services::{self, Services};

/// The UDP port SPA packets go to unless told otherwise (the server's `SpaPort` default).
pub const DEFAULT_SPA_PORT: u16 = 62201;

/// Which address the packet asks the server to admit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdmitChoice {
    /// The local address of the route to the server (the default).
    Route,
    /// This address (`--allow-ip`).
    Addr(IpAddr),
    /// Whatever source the packet arrives from (`--use-source`).
    Source,
}

/// Everything `open` / `close` needs, defaults applied, nothing resolved on the network yet.
#[derive(Debug, Clone)]
pub struct SpaPlan {
    /// Open or close.
    pub action: Action,
    /// 1..=16 distinct ports, in the order given.
    pub ports: Vec<PortSpec>,
    /// HOST as typed.
    pub host: String,
    /// The server's SPA port.
    pub spa_port: u16,
    /// The server identity the packet is bound to.
    pub server_name: String,
    /// The address to admit.
    pub admit: AdmitChoice,
    /// Requested open time in seconds, 0 for the server's default.
    pub duration: u32,
    /// Address family for HOST.
    pub family: Family,
    /// Print instead of sending.
    pub dry_run: bool,
    /// No `sent ...` line.
    pub quiet: bool,
}

/// Applies defaults to the command line. Pure: the services table is passed in.
pub fn resolve(action: Action, args: &SpaArgs, services: &Services) -> Result<SpaPlan, InputError> {
    let ports = services::parse_list(&args.service, services)?;
    let admit = match (args.allow_ip, args.use_source) {
        (Some(ip), _) if ip.is_unspecified() || ip.is_multicast() => {
            return Err(InputError::BadAdmit(ip))
        }
        (Some(ip), _) => AdmitChoice::Addr(ip),
        (None, true) => AdmitChoice::Source,
        (None, false) => AdmitChoice::Route,
    };
    let server_name = match &args.server_id {
        Some(name) => name.trim().to_ascii_lowercase(),
        None => net::strip_brackets(args.host.trim()).to_ascii_lowercase(),
    };
    Ok(SpaPlan {
        action,
        ports,
        host: args.host.clone(),
        spa_port: args.spa_port.unwrap_or(DEFAULT_SPA_PORT),
        server_name,
        admit,
        duration: args.for_secs.unwrap_or(0),
        family: args.family.family(),
        dry_run: args.dry_run,
        quiet: args.quiet,
    })
}

/// The local address the kernel would use to reach `target`: connect an unbound UDP socket
/// and read its local address. `connect` on a UDP socket only picks a route; nothing is sent.
pub fn route_local_addr(target: SocketAddr) -> io::Result<IpAddr> {
    let any: IpAddr = match target {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let sock = UdpSocket::bind((any, 0))?;
    sock.connect(target)?;
    Ok(sock.local_addr()?.ip())
}

/// Chooses the address to admit; `route` is asked only for [`AdmitChoice::Route`].
pub fn choose_admit(
    choice: AdmitChoice,
    route: impl FnOnce() -> io::Result<IpAddr>,
) -> anyhow::Result<Admit> {
    match choice {
        AdmitChoice::Addr(ip) => Ok(Admit::Addr(ip)),
        AdmitChoice::Source => Ok(Admit::Source),
        AdmitChoice::Route => {
            let ip = route().context(
                "cannot find the local address of the route to the server (use --allow-ip IP \
                 or --use-source)",
            )?;
            if ip.is_unspecified() {
                return Err(anyhow!(
                    "the route to the server has no local address (use --allow-ip IP or \
                     --use-source)"
                ));
            }
            Ok(Admit::Addr(ip))
        }
    }
}

/// Builds the request. `now` is Unix seconds.
pub fn build_request(plan: &SpaPlan, admit: Admit, now: u64) -> Result<Request, InputError> {
    let ports = PortList::new(&plan.ports).ok_or(InputError::TooManyPorts {
        count: plan.ports.len(),
        max: MAX_PORTS,
    })?;
    Ok(Request {
        timestamp: now,
        action: plan.action,
        admit,
        duration: plan.duration,
        server: ServerId::from_name(&plan.server_name),
        ports,
    })
}

/// Seals a request with a fresh nonce and fresh padding from the OS CSPRNG.
pub fn seal_random(key: &NamedKey, request: &Request) -> anyhow::Result<[u8; PACKET_LEN]> {
    let rng = SystemRandom::new();
    let mut nonce = [0u8; NONCE_LEN];
    let mut padding = [0u8; PADDING_LEN];
    rng.fill(&mut nonce)
        .and_then(|()| rng.fill(&mut padding))
        .map_err(|_| anyhow!("the system random number generator failed"))?;
    let state = KeyState::new(&key.derive());
    Ok(seal(&state, request, &nonce, &padding))
}

/// Lowercase hex, no separators.
pub fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            // Writing to a String cannot fail.
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// `open 22/tcp for 10.99.0.2 to 10.99.0.1:62201`.
pub fn describe(request: &Request, target: SocketAddr) -> String {
    let whom = match request.admit {
        Admit::Addr(ip) => ip.to_string(),
        Admit::Source => "the packet's source address".to_owned(),
    };
    format!(
        "{} {} for {whom} to {target}",
        request.action.as_str(),
        request.ports
    )
}

/// Sends one datagram from an ephemeral port.
pub fn send(target: SocketAddr, packet: &[u8]) -> io::Result<()> {
    let any: IpAddr = match target {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let sock = UdpSocket::bind((any, 0))?;
    let n = sock.send_to(packet, target)?;
    if n != packet.len() {
        return Err(io::Error::other(format!(
            "only {n} of {} bytes were sent",
            packet.len()
        )));
    }
    Ok(())
}

/// Loads the key file, with a hint when it does not exist.
pub fn load_key(path: &Path) -> anyhow::Result<NamedKey> {
    NamedKey::load(path).map_err(|e| {
        let missing = matches!(&e, KeyError::Io { source, .. }
            if source.kind() == io::ErrorKind::NotFound);
        anyhow::Error::new(e).context(if missing {
            "cannot use the key file (create one with `knock-spa keygen`, or give --key FILE)"
        } else {
            "cannot use the key file"
        })
    })
}

fn unix_now() -> anyhow::Result<u64> {
    Ok(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_secs())
}

/// Runs `open` / `close` with the key in `key_path`.
pub fn execute(plan: &SpaPlan, key_path: &Path) -> anyhow::Result<()> {
    let key = load_key(key_path)?;
    let target = net::resolve(&plan.host, plan.spa_port, plan.family)?;
    let admit = choose_admit(plan.admit, || route_local_addr(target))?;
    let request = build_request(plan, admit, unix_now()?)?;
    let packet = seal_random(&key, &request)?;
    let what = describe(&request, target);
    if plan.dry_run {
        let mut out = io::stdout().lock();
        writeln!(out, "{}", to_hex(&packet))
            .and_then(|()| out.flush())
            .context("cannot write to stdout")?;
        if !plan.quiet {
            eprintln!("dry run, not sent: {what}");
        }
    } else {
        send(target, &packet).with_context(|| format!("cannot send to {target}"))?;
        if !plan.quiet {
            eprintln!("sent {what}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::FamilyArgs;

    fn args(service: &str) -> SpaArgs {
        SpaArgs {
            service: service.into(),
            host: "Gateway.Example".into(),
            allow_ip: None,
            use_source: false,
            for_secs: None,
            spa_port: None,
            server_id: None,
            family: FamilyArgs::default(),
            dry_run: false,
            quiet: false,
        }
    }

    fn db() -> Services {
        services::parse("ssh 22/tcp\n")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn never() -> io::Result<IpAddr> {
        panic!("the route must not be asked for")
    }

    #[test]
    fn defaults() {
        let plan = resolve(Action::Open, &args("ssh"), &db()).expect("valid");
        assert_eq!(plan.ports, vec!["22/tcp".parse().expect("spec")]);
        assert_eq!(plan.spa_port, DEFAULT_SPA_PORT);
        assert_eq!(plan.server_name, "gateway.example");
        assert_eq!(plan.admit, AdmitChoice::Route);
        assert_eq!(plan.duration, 0);
    }

    #[test]
    fn overrides() {
        let mut a = args("22,53/udp");
        a.allow_ip = Some(ip("192.0.2.5"));
        a.spa_port = Some(4000);
        a.server_id = Some(" Fleet-1 ".into());
        a.for_secs = Some(30);
        a.host = "[2001:DB8::1]".into();
        let plan = resolve(Action::Close, &a, &db()).expect("valid");
        assert_eq!(plan.admit, AdmitChoice::Addr(ip("192.0.2.5")));
        assert_eq!((plan.spa_port, plan.duration), (4000, 30));
        assert_eq!(plan.server_name, "fleet-1");
        a.server_id = None;
        let plan = resolve(Action::Close, &a, &db()).expect("valid");
        assert_eq!(plan.server_name, "2001:db8::1");
        a.allow_ip = None;
        a.use_source = true;
        let plan = resolve(Action::Close, &a, &db()).expect("valid");
        assert_eq!(plan.admit, AdmitChoice::Source);
    }

    #[test]
    fn unusable_allow_ip() {
        for bad in ["0.0.0.0", "::", "224.0.0.1", "ff02::1"] {
            let mut a = args("ssh");
            a.allow_ip = Some(ip(bad));
            assert_eq!(
                resolve(Action::Open, &a, &db()).map(|p| p.admit),
                Err(InputError::BadAdmit(ip(bad)))
            );
        }
    }

    #[test]
    fn admitted_address_choice() {
        assert_eq!(
            choose_admit(AdmitChoice::Route, || Ok(ip("10.99.0.2"))).expect("route"),
            Admit::Addr(ip("10.99.0.2"))
        );
        assert_eq!(
            choose_admit(AdmitChoice::Addr(ip("192.0.2.5")), never).expect("given"),
            Admit::Addr(ip("192.0.2.5"))
        );
        assert_eq!(
            choose_admit(AdmitChoice::Source, never).expect("source"),
            Admit::Source
        );
        let err = choose_admit(AdmitChoice::Route, || {
            Err(io::Error::from(io::ErrorKind::NetworkUnreachable))
        })
        .expect_err("no route");
        assert!(format!("{err:#}").contains("--allow-ip"), "{err:#}");
        assert!(choose_admit(AdmitChoice::Route, || Ok(ip("0.0.0.0"))).is_err());
    }

    #[test]
    fn route_to_loopback_is_loopback() {
        let target = "127.0.0.1:9".parse().expect("literal");
        assert_eq!(
            route_local_addr(target).expect("loopback route"),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn request_fields() {
        let mut a = args("ssh");
        a.for_secs = Some(45);
        let plan = resolve(Action::Close, &a, &db()).expect("valid");
        let req = build_request(&plan, Admit::Source, 1_700_000_000).expect("valid");
        assert_eq!(req.timestamp, 1_700_000_000);
        assert_eq!(req.action, Action::Close);
        assert_eq!(req.admit, Admit::Source);
        assert_eq!(req.duration, 45);
        assert_eq!(req.server, ServerId::from_name("gateway.example"));
        assert_eq!(req.ports.to_string(), "22/tcp");
        let target = "10.99.0.1:62201".parse().expect("literal");
        assert_eq!(
            describe(&req, target),
            "close 22/tcp for the packet's source address to 10.99.0.1:62201"
        );
    }

    #[test]
    fn hex() {
        assert_eq!(to_hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(to_hex(&[]), "");
    }
}
