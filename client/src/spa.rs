//! `open` and `close`: build one SPA packet and send it (or print it with `--dry-run`).
//!
//! Role, in order: [`resolve`] turns the command line and the configuration stanza HOST names
//! (if any) into a [`SpaPlan`] (services parsed; each value from the flag, else the stanza,
//! else the built-in default); [`Sender::prepare`] loads the key and resolves HOST into one
//! target per address family ([`net::targets`]); [`Sender::send`] chooses the address each
//! packet admits ([`choose_admit`]: by default its own route's source), builds the
//! [`Request`], seals it with a fresh random nonce and padding, and sends one UDP datagram per
//! target. `send` may be called again (`--wait`, `proxy`): each call makes new packets, never
//! a copy the server would refuse as a replay.
//!
//! The wire format, the crypto and the checks are `knock_shared::wire`'s; nothing here
//! reimplements them. Secrets stay inside `knock_keys` / `KeyState`; nothing here prints them.

use std::io::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context as _};
use knock_keys::public::{ClientKey, ServerPublic, SigningKey};
use knock_keys::{KeyError, NamedKey};
use knock_shared::types::PortSpec;
use knock_shared::wire::{
    seal, Action, Admit, KeyState, PortList, Request, ServerId, MAX_PORTS, NONCE_LEN, PACKET_LEN,
    PADDING_LEN,
};
use knock_shared::wire2::seal2;
use ring::rand::{SecureRandom as _, SystemRandom};

use crate::cli::{SpaArgs, SpaOptions};
use crate::config::{Config, Stanza};
use crate::model::{AdmitChoice, Family, InputError};
use crate::net;
use crate::services::{self, Services};
use crate::wait::{connect_when_open, WaitError};

/// The UDP port SPA packets go to unless told otherwise (the server's `SpaPort` default).
pub const DEFAULT_SPA_PORT: u16 = 62201;

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
    /// The server's public key (base64, as given), for a public-key keyfile.
    pub server_key: Option<String>,
    /// The address to admit.
    pub admit: AdmitChoice,
    /// Requested open time in seconds, 0 for the server's default.
    pub duration: u32,
    /// Address family for HOST: by default one packet per family HOST has.
    pub family: Family,
    /// Print instead of sending.
    pub dry_run: bool,
    /// No `sent ...` line.
    pub quiet: bool,
    /// Also print the server identity, the key and the addresses.
    pub verbose: bool,
    /// HOST names no stanza but is close to one: `no stanza gww (did you mean gw?)`, printed
    /// before HOST is looked up as a host name.
    pub hint: Option<String>,
}

/// The stanza HOST names, if the configuration has one.
pub fn stanza_for<'a>(host: &str, config: Option<&'a Config>) -> Option<&'a Stanza> {
    config.and_then(|c| c.find(host))
}

/// [`resolve_request`] for `open` and `close`, with their output flags.
pub fn resolve(
    action: Action,
    args: &SpaArgs,
    config: Option<&Config>,
    services: &Services,
) -> Result<SpaPlan, InputError> {
    let mut plan = resolve_request(
        action,
        args.service(),
        args.host(),
        &args.opts,
        config,
        services,
    )?;
    plan.dry_run = args.dry_run;
    plan.quiet = args.quiet;
    plan.verbose = args.verbose;
    Ok(plan)
}

/// Applies the stanza HOST names (if any) and the defaults to the command line: each value is
/// the flag's, else the stanza's, else the built-in default. Pure: the configuration and the
/// services table are passed in. The output flags are off.
pub fn resolve_request(
    action: Action,
    service: Option<&str>,
    host_arg: &str,
    opts: &SpaOptions,
    config: Option<&Config>,
    services: &Services,
) -> Result<SpaPlan, InputError> {
    let stanza = stanza_for(host_arg, config);
    let bare = net::strip_brackets(host_arg.trim());
    if bare.is_empty() {
        return Err(InputError::NoHost);
    }
    if stanza.is_none() && bare.bytes().all(|b| b.is_ascii_digit()) {
        return Err(InputError::NumericHost(host_arg.to_owned()));
    }
    let hint = match (stanza, config) {
        (None, Some(c)) if bare.parse::<IpAddr>().is_err() => c
            .suggest(host_arg)
            .map(|near| format!("no stanza {host_arg} (did you mean {near}?)")),
        _ => None,
    };
    let ports = match (service, stanza) {
        (Some(text), _) => services::parse_list(text, services)?,
        (None, Some(st)) => match &st.services {
            Some(ports) => ports.clone(),
            None => {
                return Err(InputError::NoService {
                    host: host_arg.to_owned(),
                    why: format!(
                        "stanza [{}] ({}) has no `services`",
                        st.name,
                        config.map_or_else(String::new, |c| c.locate_stanza(st))
                    ),
                })
            }
        },
        (None, None) => {
            return Err(InputError::NoService {
                host: host_arg.to_owned(),
                why: match config {
                    Some(c) => format!("there is no stanza [{host_arg}] in {}", c.source),
                    None => "there is no configuration file".to_owned(),
                },
            })
        }
    };
    let admit = match (opts.allow_ip, opts.use_source, opts.admit) {
        (Some(ip), _, _) if !knock_shared::types::admissible(ip) => {
            return Err(InputError::BadAdmit(ip))
        }
        (Some(ip), _, _) => AdmitChoice::Addr(ip),
        (None, true, _) => AdmitChoice::Source,
        (None, false, Some(choice)) => choice,
        (None, false, None) => stanza.and_then(|s| s.admit).unwrap_or(AdmitChoice::Route),
    };
    let host = stanza
        .and_then(|s| s.host.clone())
        .unwrap_or_else(|| host_arg.to_owned());
    let server_name = match opts
        .server_id
        .as_ref()
        .or(stanza.and_then(|s| s.server_id.as_ref()))
    {
        Some(name) => name.trim().to_ascii_lowercase(),
        None => net::strip_brackets(host.trim()).to_ascii_lowercase(),
    };
    let server_key = opts
        .server_key
        .clone()
        .or(stanza.and_then(|s| s.server_key.clone()));
    Ok(SpaPlan {
        server_key,
        action,
        ports,
        host,
        spa_port: opts
            .spa_port
            .or(stanza.and_then(|s| s.spa_port))
            .unwrap_or(DEFAULT_SPA_PORT),
        server_name,
        admit,
        duration: opts
            .for_secs
            .or(stanza.and_then(|s| s.open_for))
            .unwrap_or(0),
        family: match opts.family.family() {
            Family::Any => stanza.and_then(|s| s.family).unwrap_or(Family::Any),
            flag => flag,
        },
        dry_run: false,
        quiet: false,
        verbose: false,
        hint,
    })
}

/// The key file: `--key FILE`, else the stanza's `key`, else `default` (called only then, so
/// an unset `$HOME` matters only when it is needed).
pub fn key_path(
    flag: Option<&Path>,
    stanza: Option<&Stanza>,
    default: impl FnOnce() -> anyhow::Result<PathBuf>,
) -> anyhow::Result<PathBuf> {
    match flag.or(stanza.and_then(|s| s.key.as_deref())) {
        Some(path) => Ok(path.to_path_buf()),
        None => default(),
    }
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

/// Seals a version-2 request to `server` with a fresh ephemeral key and fresh padding from
/// the OS CSPRNG.
pub fn seal2_random(
    key: &SigningKey,
    server: &ServerPublic,
    request: &Request,
) -> anyhow::Result<Vec<u8>> {
    let rng = SystemRandom::new();
    let mut ephemeral = zeroize::Zeroizing::new([0u8; 32]);
    let mut padding = [0u8; PADDING_LEN];
    rng.fill(&mut ephemeral[..])
        .and_then(|()| rng.fill(&mut padding))
        .map_err(|_| anyhow!("the system random number generator failed"))?;
    let packet = seal2(key, server, request, *ephemeral, &padding)
        .ok_or_else(|| anyhow!("the server key is not a usable X25519 key"))?;
    Ok(packet.to_vec())
}

/// The key a [`Sender`] seals with: a shared secret (version 1) or a signing key with the
/// server's public key (version 2).
#[derive(Debug)]
enum Sealer {
    Shared(NamedKey),
    Public(SigningKey, ServerPublic),
}

impl Sealer {
    fn new(key: ClientKey, server_key: Option<&str>) -> anyhow::Result<Self> {
        match key {
            ClientKey::Shared(k) => Ok(Sealer::Shared(k)),
            ClientKey::Public(k) => {
                let Some(text) = server_key else {
                    anyhow::bail!(
                        "the key `{}` is a public key: give the server's key with --server-key \
                         BASE64 or server_key in the stanza (knock-spad server-key prints it)",
                        k.name()
                    );
                };
                let server = ServerPublic::from_base64(text)
                    .map_err(|e| anyhow!("--server-key / server_key: {e}"))?;
                Ok(Sealer::Public(k, server))
            }
        }
    }

    fn name(&self) -> &str {
        match self {
            Sealer::Shared(k) => k.name(),
            Sealer::Public(k, _) => k.name(),
        }
    }

    fn seal(&self, request: &Request) -> anyhow::Result<Vec<u8>> {
        match self {
            Sealer::Shared(k) => Ok(seal_random(k, request)?.to_vec()),
            Sealer::Public(k, server) => seal2_random(k, server, request),
        }
    }

    /// `key `alice``, or `public key `alice`, packet version 2`.
    fn describe(&self) -> String {
        match self {
            Sealer::Shared(k) => format!("key `{}`", k.name()),
            Sealer::Public(k, _) => format!("public key `{}`, packet version 2", k.name()),
        }
    }
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
pub fn load_key(path: &Path) -> anyhow::Result<ClientKey> {
    ClientKey::load(path).map_err(|e| {
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

/// A key and the targets of one `open` / `close` / `proxy`: everything needed to send its
/// packets, again if need be.
#[derive(Debug)]
pub struct Sender {
    plan: SpaPlan,
    key: Sealer,
    /// Where the packets go: one address per family (see [`net::targets`]).
    targets: Vec<SocketAddr>,
}

impl Sender {
    /// Loads the key, prints the plan's hint (before any name is looked up), resolves HOST.
    pub fn prepare(plan: SpaPlan, key_path: &Path) -> anyhow::Result<Self> {
        let key = Sealer::new(load_key(key_path)?, plan.server_key.as_deref())?;
        if let Some(hint) = &plan.hint {
            eprintln!("knock-spa: {hint}");
        }
        let single = matches!(plan.admit, AdmitChoice::Addr(_));
        let targets = net::resolve_targets(&plan.host, plan.spa_port, plan.family, single)?;
        if plan.verbose {
            eprintln!(
                "knock-spa: key `{}` from {}; {} target(s): {}",
                key.name(),
                key_path.display(),
                targets.len(),
                targets
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Ok(Self { plan, key, targets })
    }

    /// The plan.
    pub fn plan(&self) -> &SpaPlan {
        &self.plan
    }

    /// Seals and sends one new packet to each target (or prints it, with `--dry-run`), and
    /// returns the targets it went to. A target whose packet cannot be made or sent is
    /// skipped with a warning while another one gets its packet; when none does, the first
    /// error is returned.
    pub fn send(&self) -> anyhow::Result<Vec<SocketAddr>> {
        let mut sent = Vec::with_capacity(self.targets.len());
        let mut first_error = None;
        for &target in &self.targets {
            match self.send_one(target) {
                Ok(()) => sent.push(target),
                Err(e) if self.targets.len() > 1 => {
                    eprintln!("knock-spa: warning: {}", crate::error::render(&e));
                    first_error.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        match first_error {
            Some(e) if sent.is_empty() => Err(e),
            _ => Ok(sent),
        }
    }

    /// `open --wait` and `proxy`: sends the packets, then connects to `port` on the addresses
    /// they went to as soon as one accepts (`wait::connect_when_open`), sending new packets
    /// once halfway through `timeout`. The outer error is a failed first send; the inner one,
    /// no connection in time.
    pub fn send_and_connect(
        &self,
        port: u16,
        timeout: std::time::Duration,
    ) -> anyhow::Result<Result<(std::net::TcpStream, std::time::Duration), WaitError>> {
        let addrs: Vec<SocketAddr> = self
            .send()?
            .iter()
            .map(|a| SocketAddr::new(a.ip(), port))
            .collect();
        Ok(connect_when_open(&addrs, timeout, || {
            if let Err(e) = self.send() {
                eprintln!(
                    "knock-spa: warning: cannot send the packets again: {}",
                    crate::error::render(&e)
                );
            }
        }))
    }

    fn send_one(&self, target: SocketAddr) -> anyhow::Result<()> {
        let plan = &self.plan;
        let admit = choose_admit(plan.admit, || route_local_addr(target))
            .with_context(|| format!("no packet to {target}"))?;
        let request = build_request(plan, admit, unix_now()?)?;
        let packet = self.key.seal(&request)?;
        let mut what = describe(&request, target);
        if plan.dry_run || plan.verbose {
            what.push_str(&format!(
                " (server identity `{}`, {})",
                plan.server_name,
                self.key.describe()
            ));
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, ParseContext};

    fn args(service: &str) -> SpaArgs {
        SpaArgs {
            first: Some(service.into()),
            second: Some("Gateway.Example".into()),
            opts: SpaOptions::default(),
            dry_run: false,
            quiet: false,
            verbose: false,
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
        let plan = resolve(Action::Open, &args("ssh"), None, &db()).expect("valid");
        assert_eq!(plan.ports, vec!["22/tcp".parse().expect("spec")]);
        assert_eq!(plan.spa_port, DEFAULT_SPA_PORT);
        assert_eq!(plan.server_name, "gateway.example");
        assert_eq!(plan.admit, AdmitChoice::Route);
        assert_eq!(plan.duration, 0);
    }

    #[test]
    fn overrides() {
        let mut a = args("22,53/udp");
        a.opts.allow_ip = Some(ip("192.0.2.5"));
        a.opts.spa_port = Some(4000);
        a.opts.server_id = Some(" Fleet-1 ".into());
        a.opts.for_secs = Some(30);
        a.second = Some("[2001:DB8::1]".into());
        let plan = resolve(Action::Close, &a, None, &db()).expect("valid");
        assert_eq!(plan.admit, AdmitChoice::Addr(ip("192.0.2.5")));
        assert_eq!((plan.spa_port, plan.duration), (4000, 30));
        assert_eq!(plan.server_name, "fleet-1");
        a.opts.server_id = None;
        let plan = resolve(Action::Close, &a, None, &db()).expect("valid");
        assert_eq!(plan.server_name, "2001:db8::1");
        a.opts.allow_ip = None;
        a.opts.use_source = true;
        let plan = resolve(Action::Close, &a, None, &db()).expect("valid");
        assert_eq!(plan.admit, AdmitChoice::Source);
    }

    fn cfg(text: &str) -> Config {
        config::parse(
            text,
            &ParseContext {
                source: "cfg",
                base_dir: Path::new("/cfgdir"),
                home: Some(Path::new("/home/u")),
                services: &db(),
            },
        )
        .expect("valid config")
    }

    const STANZA: &str = "\
[myserver]
host = 192.0.2.1
spa_port = 4000
key = ~/.knock/work.key
admit = source
open_for = 300
services = 22,53/udp
server_id = GW.Example.org
[bare]
[nosvc]
host = 192.0.2.2
";

    fn host_args(service: Option<&str>, host: &str) -> SpaArgs {
        let mut a = args("ssh");
        match service {
            Some(service) => {
                a.first = Some(service.into());
                a.second = Some(host.into());
            }
            None => {
                a.first = Some(host.into());
                a.second = None;
            }
        }
        a
    }

    #[test]
    fn stanza_supplies_every_value() {
        let c = cfg(STANZA);
        let plan =
            resolve(Action::Open, &host_args(None, "myserver"), Some(&c), &db()).expect("valid");
        assert_eq!(plan.host, "192.0.2.1");
        assert_eq!(plan.spa_port, 4000);
        assert_eq!(plan.admit, AdmitChoice::Source);
        assert_eq!(plan.duration, 300);
        assert_eq!(
            plan.ports,
            vec![
                "22/tcp".parse().expect("spec"),
                "53/udp".parse().expect("spec")
            ]
        );
        assert_eq!(plan.server_name, "gw.example.org");
        // SERVICE on the command line replaces the stanza's services.
        let plan = resolve(
            Action::Open,
            &host_args(Some("ssh"), "myserver"),
            Some(&c),
            &db(),
        )
        .expect("valid");
        assert_eq!(plan.ports, vec!["22/tcp".parse().expect("spec")]);
        assert_eq!(plan.duration, 300, "the rest still from the stanza");
    }

    #[test]
    fn flags_override_the_stanza() {
        let c = cfg(STANZA);
        let mut a = host_args(Some("ssh"), "myserver");
        a.opts.spa_port = Some(5000);
        a.opts.for_secs = Some(0);
        a.opts.server_id = Some("Other".into());
        a.opts.admit = Some(AdmitChoice::Route);
        let plan = resolve(Action::Open, &a, Some(&c), &db()).expect("valid");
        assert_eq!(
            (
                plan.spa_port,
                plan.duration,
                plan.server_name.as_str(),
                plan.admit
            ),
            (5000, 0, "other", AdmitChoice::Route)
        );
        assert_eq!(
            plan.host, "192.0.2.1",
            "no flag for the host: HOST names the stanza"
        );
        a.opts.admit = None;
        a.opts.allow_ip = Some(ip("198.51.100.4"));
        let plan = resolve(Action::Open, &a, Some(&c), &db()).expect("valid");
        assert_eq!(plan.admit, AdmitChoice::Addr(ip("198.51.100.4")));
        a.opts.allow_ip = None;
        a.opts.use_source = true;
        let c2 = cfg("[myserver]\nadmit = 192.0.2.7\n");
        let plan = resolve(Action::Open, &a, Some(&c2), &db()).expect("valid");
        assert_eq!(plan.admit, AdmitChoice::Source);
        a.opts.use_source = false;
        let plan = resolve(Action::Open, &a, Some(&c2), &db()).expect("valid");
        assert_eq!(plan.admit, AdmitChoice::Addr(ip("192.0.2.7")));
    }

    #[test]
    fn stanza_defaults_when_keys_are_absent() {
        let c = cfg(STANZA);
        // An empty stanza: HOST is its name, everything else the built-in default.
        let plan = resolve(
            Action::Open,
            &host_args(Some("ssh"), "bare"),
            Some(&c),
            &db(),
        )
        .expect("valid");
        assert_eq!(plan.host, "bare");
        assert_eq!(plan.server_name, "bare");
        assert_eq!((plan.spa_port, plan.duration), (DEFAULT_SPA_PORT, 0));
        assert_eq!(plan.admit, AdmitChoice::Route);
        // No server_id: the stanza's host.
        let plan = resolve(
            Action::Open,
            &host_args(Some("ssh"), "nosvc"),
            Some(&c),
            &db(),
        )
        .expect("valid");
        assert_eq!(plan.server_name, "192.0.2.2");
        // A HOST that names no stanza ignores the file.
        let plan = resolve(
            Action::Open,
            &host_args(Some("ssh"), "MyServer"),
            Some(&c),
            &db(),
        )
        .expect("valid");
        assert_eq!(
            (plan.host.as_str(), plan.spa_port),
            ("MyServer", DEFAULT_SPA_PORT)
        );
    }

    #[test]
    fn service_left_out_needs_a_stanza_with_services() {
        let c = cfg(STANZA);
        let err = resolve(Action::Open, &host_args(None, "nosvc"), Some(&c), &db())
            .expect_err("no services");
        assert_eq!(
            err.to_string(),
            "no SERVICE given for `nosvc`, and stanza [nosvc] (cfg:10) has no `services`; \
             give SERVICE HOST"
        );
        let err = resolve(Action::Open, &host_args(None, "elsewhere"), Some(&c), &db())
            .expect_err("no stanza");
        assert!(
            err.to_string().contains("no stanza [elsewhere] in cfg"),
            "{err}"
        );
        let err = resolve(Action::Open, &host_args(None, "myserver"), None, &db())
            .expect_err("no config");
        assert!(err.to_string().contains("no configuration file"), "{err}");
    }

    #[test]
    fn key_file_choice() {
        let c = cfg(STANZA);
        let st = c.find("myserver");
        let default = || Ok(PathBuf::from("/home/u/.knock/key"));
        let no_default = || -> anyhow::Result<PathBuf> { Err(anyhow!("no $HOME")) };
        assert_eq!(
            key_path(Some(Path::new("/flag")), st, no_default).expect("flag"),
            PathBuf::from("/flag")
        );
        assert_eq!(
            key_path(None, st, no_default).expect("stanza"),
            PathBuf::from("/home/u/.knock/work.key")
        );
        assert_eq!(
            key_path(None, c.find("bare"), default).expect("default"),
            PathBuf::from("/home/u/.knock/key")
        );
        assert!(key_path(None, None, no_default).is_err());
    }

    #[test]
    fn admit_choice_text() {
        assert_eq!("route".parse(), Ok(AdmitChoice::Route));
        assert_eq!(" source ".parse(), Ok(AdmitChoice::Source));
        assert_eq!(
            "2001:db8::7".parse(),
            Ok(AdmitChoice::Addr(ip("2001:db8::7")))
        );
        for bad in [
            "Route",
            "nat",
            "",
            "1.2.3",
            "::",
            "239.1.1.1",
            "255.255.255.255",
        ] {
            assert!(bad.parse::<AdmitChoice>().is_err(), "{bad}");
        }
    }

    #[test]
    fn unusable_allow_ip() {
        // The server's rule (PROTOCOL.md §7, step 8b), said before anything is sent.
        for bad in [
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "ff02::1",
            "255.255.255.255",
            "::ffff:0.0.0.0",
        ] {
            let mut a = args("ssh");
            a.opts.allow_ip = Some(ip(bad));
            assert_eq!(
                resolve(Action::Open, &a, None, &db()).map(|p| p.admit),
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
        a.opts.for_secs = Some(45);
        let plan = resolve(Action::Close, &a, None, &db()).expect("valid");
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
    fn host_errors_and_the_stanza_hint() {
        let c = cfg(STANZA);
        let plan = |host: &str, config: Option<&Config>| {
            resolve(Action::Open, &host_args(Some("ssh"), host), config, &db())
        };
        assert_eq!(plan("", None).map(|_| ()), Err(InputError::NoHost));
        assert_eq!(plan("[]", None).map(|_| ()), Err(InputError::NoHost));
        // `open gw --wait 500` puts 500 in HOST; getaddrinfo would take it for 0.0.0.500.
        assert_eq!(
            plan("500", None).map(|_| ()),
            Err(InputError::NumericHost("500".into()))
        );
        let err = InputError::NumericHost("500".into()).to_string();
        assert!(err.contains("--delay MS"), "{err}");
        assert_eq!(
            plan("myservr", Some(&c)).expect("valid").hint.as_deref(),
            Some("no stanza myservr (did you mean myserver?)")
        );
        assert_eq!(plan("myserver", Some(&c)).expect("valid").hint, None);
        assert_eq!(plan("192.0.2.1", Some(&c)).expect("valid").hint, None);
        assert_eq!(plan("myservr", None).expect("valid").hint, None);
    }

    #[test]
    fn the_stanza_family_unless_a_flag() {
        let c = cfg("[both]\nfamily = both\n[plain]\n");
        let mut a = host_args(Some("ssh"), "both");
        let family = |a: &SpaArgs| resolve(Action::Open, a, Some(&c), &db()).map(|p| p.family);
        assert_eq!(family(&a), Ok(Family::Both));
        a.opts.family.ipv6 = true;
        assert_eq!(family(&a), Ok(Family::V6), "-6 overrides the stanza");
        assert_eq!(family(&host_args(Some("ssh"), "plain")), Ok(Family::Any));
    }

    #[test]
    fn hex() {
        assert_eq!(to_hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(to_hex(&[]), "");
    }
}
