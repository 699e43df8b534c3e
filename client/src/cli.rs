//! The command line, as clap reads it: the single source of `--help`, of the man pages
//! (`knock-spa man`) and of the shell completions (`knock-spa completions`).
//!
//! Role: hold exactly what the user typed. Values the client configuration file
//! (`~/.knock/config`, one stanza per server, see `config`) can supply are `Option`s here, so
//! the resolving step can tell "not given" from "given": command-line flags override the
//! stanza, the stanza overrides the built-in defaults.
//!
//! It must not resolve names, read files or apply defaults; see `spa::resolve`.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum, ValueHint};

use crate::error::EXIT_STATUS_HELP;
use crate::model::{AdmitChoice, Family};

/// The part of `open --help` and `close --help` explaining the packet, the admitted address
/// and the configuration file (a macro so `concat!` can join it to each command's first
/// paragraph).
macro_rules! spa_help {
    () => {
        "The packet is one UDP datagram to HOST:SPA_PORT, encrypted and authenticated with \
         your key, stamped with the current time (the server accepts it only within its time \
         window, so keep your clock right) and bound to the server identity (--server-id).\n\n\
         Address to admit: by default the local address of the route to HOST, i.e. the address \
         your packets to HOST leave from (found by connecting a UDP socket to HOST:SPA_PORT and \
         reading its local address; connecting a UDP socket only picks a route, nothing is \
         sent by it). Behind NAT that is a private address the server never sees: use \
         --allow-ip with your public address, or --use-source; both need the server to allow \
         NAT for your key.\n\n\
         Address families: when HOST has an IPv4 and an IPv6 address, one packet goes over \
         each, each admitting its own source, so a connection over either family finds the \
         port open; -4 or -6 (or the stanza's `family`) sends only one.\n\n\
         Configuration: when HOST is the name of a stanza in the configuration file \
         (--config FILE, $KNOCK_SPA_CONFIG, $XDG_CONFIG_HOME/knock-spa/config or \
         ~/.knock/config; `knock-spa config` shows which), the stanza supplies the host, SPA \
         port, key, address to admit, open time, services, server identity and address \
         families; flags given on the command line override it. With a stanza that has `services`, \
         SERVICE may be left out: `knock-spa open myserver`."
    };
}

const OPEN_ABOUT: &str = concat!(
    "Send an SPA packet asking the server to open SERVICE for this client's address.\n\n",
    spa_help!(),
    "\n\n\
    Knock, then connect: `knock-spa open ssh myserver --wait -- ssh user@myserver` sends the \
    packet, waits until the port accepts a TCP connection (--timeout, 5 s by default), then \
    runs the command in place of knock-spa (its exit status is the command's); without \
    --wait, the command runs after --delay milliseconds (200 by default). `open SERVICE HOST \
    --wait` without a command exits 0 once the port accepts connections, 1 after the \
    timeout: for ssh_config's `Match exec`."
);
const PROXY_ABOUT: &str = concat!(
    "Send an SPA packet asking the server to open PORT/tcp for this client, connect to \
     HOST:PORT as soon as the port accepts connections (at most --timeout seconds; the packet \
     is sent again, once, halfway), then relay standard input to the connection and the \
     connection to standard output until either side closes. Made for ssh:\n\n  \
     Host gw\n      ProxyCommand knock-spa proxy %h %p\n\n\
     Nothing is printed on success unless -v; errors are one line on stderr and the exit \
     status is 1 (2 for a usage error).\n\n",
    spa_help!()
);
const CONFIG_ABOUT: &str = "Print the files knock-spa reads, in the order it looks for them: \
    the configuration file (--config, else $KNOCK_SPA_CONFIG, else \
    $XDG_CONFIG_HOME/knock-spa/config, else ~/.knock/config) with its stanzas, and the key \
    file (--key, else a stanza's `key`, else $XDG_CONFIG_HOME/knock-spa/key, else \
    ~/.knock/key) with its name. $XDG_CONFIG_HOME defaults to ~/.config. Exit status 1 when \
    a file that would be used cannot be (unreadable, too open), 2 for an error in the \
    configuration file.";
const CLOSE_ABOUT: &str = concat!(
    "Send an SPA packet asking the server to close SERVICE for this client's address now, \
     instead of waiting for the open time to run out.\n\n",
    spa_help!()
);

/// Single packet authorization client: asks a knock-spad server to open (or close) firewall
/// ports for one address with one encrypted, authenticated, timestamped UDP packet; also sends
/// classic knock sequences and generates keys.
#[derive(Debug, Parser)]
#[command(
    name = "knock-spa",
    version,
    after_long_help = EXIT_STATUS_HELP,
    after_help = "Run `knock-spa help <command>` or `<command> --help` for details.",
    long_about = "Single packet authorization client: asks a knock-spad server to open (or \
        close) firewall ports for one address with one encrypted, authenticated, timestamped UDP \
        packet; also sends classic knock sequences (like `knock`) and generates keys.\n\n\
        Typical use:\n  \
        knock-spa keygen                      # once; paste the printed line into the server\n  \
        knock-spa open ssh server.example     # then ssh in within the server's time limit\n  \
        knock-spa close ssh server.example\n  \
        knock-spa open myserver --wait -- ssh myserver   # a stanza, then ssh once open\n  \
        ProxyCommand knock-spa proxy %h %p    # in ~/.ssh/config\n\n\
        Files (the first that exists; `knock-spa config` shows which):\n  \
        $XDG_CONFIG_HOME/knock-spa/key, ~/.knock/key        the key file (mode 0600) unless \
        --key or a stanza's `key` names another\n  \
        $XDG_CONFIG_HOME/knock-spa/config, ~/.knock/config  server stanzas (see --config)"
)]
pub struct Cli {
    /// Key file to sign and encrypt with [default: the stanza's `key`, else
    /// $XDG_CONFIG_HOME/knock-spa/key, else ~/.knock/key]; for keygen, where to write the new
    /// key unless -o is given.
    #[arg(long, global = true, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub key: Option<PathBuf>,

    /// Client configuration file with server stanzas [default: $KNOCK_SPA_CONFIG, else
    /// $XDG_CONFIG_HOME/knock-spa/config, else ~/.knock/config; no such file means no
    /// stanzas]. Used by open, close, proxy and config.
    #[arg(long, global = true, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send an SPA packet asking the server to open SERVICE for this client.
    #[command(
        after_long_help = EXIT_STATUS_HELP,
        long_about = OPEN_ABOUT,
        override_usage = "knock-spa open [OPTIONS] [SERVICE] <HOST> [-- <COMMAND>...]"
    )]
    Open(OpenArgs),
    /// Send an SPA packet asking the server to close SERVICE for this client now.
    #[command(
        after_long_help = EXIT_STATUS_HELP,
        long_about = CLOSE_ABOUT,
        override_usage = "knock-spa close [OPTIONS] [SERVICE] <HOST>"
    )]
    Close(SpaArgs),
    /// Open PORT on HOST, then relay stdin and stdout to it (for ssh's ProxyCommand).
    #[command(
        after_long_help = EXIT_STATUS_HELP,
        long_about = PROXY_ABOUT
    )]
    Proxy(ProxyArgs),
    /// Generate a new key file and print the line to paste into the server's configuration.
    #[command(after_long_help = EXIT_STATUS_HELP)]
    Keygen(KeygenArgs),
    /// Send a classic port-knock sequence (a drop-in for the `knock` client).
    #[command(after_long_help = EXIT_STATUS_HELP)]
    Knock(KnockArgs),
    /// Print which configuration and key files knock-spa reads, and what they hold.
    #[command(long_about = CONFIG_ABOUT)]
    Config(ConfigArgs),
    /// Print a shell completion script on stdout.
    #[command(long_about = "Print a completion script for SHELL on stdout.\n\n\
        bash:  knock-spa completions bash > ~/.local/share/bash-completion/completions/knock-spa\n\
        zsh:   knock-spa completions zsh > ~/.zfunc/_knock-spa   (with ~/.zfunc in $fpath)\n\
        fish:  knock-spa completions fish > ~/.config/fish/completions/knock-spa.fish")]
    Completions(CompletionsArgs),
    /// Print a man page (roff) on stdout.
    #[command(
        long_about = "Print a man page in roff on stdout: knock-spa(1), or with \
        COMMAND the page of that command, knock-spa-COMMAND(1), or with --section 5 the \
        page of the configuration file, knock-spa.conf(5).\n\n\
        Read it with `knock-spa man | man -l -`; install with \
        `knock-spa man > /usr/local/share/man/man1/knock-spa.1`."
    )]
    Man(ManArgs),
}

/// `-4` / `-6`.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct FamilyArgs {
    /// Use IPv4 only (HOST must have an IPv4 address).
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    pub ipv4: bool,
    /// Use IPv6 only (HOST must have an IPv6 address).
    #[arg(short = '6', long = "ipv6")]
    pub ipv6: bool,
}

impl FamilyArgs {
    /// The family asked for.
    pub fn family(self) -> Family {
        match (self.ipv4, self.ipv6) {
            (true, _) => Family::V4,
            (false, true) => Family::V6,
            (false, false) => Family::Any,
        }
    }
}

/// The options of `open`, `close` and `proxy` that say how the packet is made: each
/// overrides the stanza HOST names.
#[derive(Debug, Clone, Default, Args)]
pub struct SpaOptions {
    /// Admit this address instead of the local one, e.g. your public address when you are
    /// behind NAT (the server must allow NAT for your key).
    #[arg(long, value_name = "IP", conflicts_with_all = ["use_source", "admit"])]
    pub allow_ip: Option<IpAddr>,

    /// Ask the server to admit whatever source address the packet arrives from (for when you
    /// do not know your public address; the server must allow NAT for your key).
    #[arg(long, conflicts_with = "admit")]
    pub use_source: bool,

    /// Address to admit, as the stanza's `admit` key spells it: `route` (the default: the
    /// local address of the route to HOST), `source` (as --use-source) or an IP address (as
    /// --allow-ip). Overrides the stanza.
    #[arg(long, value_name = "route|source|IP", value_parser = parse_admit)]
    pub admit: Option<AdmitChoice>,

    /// Ask for the port to stay open this many seconds; the server caps it. 0 asks for the
    /// server's own default [default: the stanza's `open_for`, else 0].
    #[arg(long = "for", value_name = "SECS")]
    pub for_secs: Option<u32>,

    /// UDP port the server listens on for SPA packets [default: the stanza's `spa_port`, else
    /// 62201].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub spa_port: Option<u16>,

    /// Server identity the packet is bound to [default: the stanza's `server_id`, else its
    /// `host`, else HOST as typed; lower-cased]. It must match one of the server's
    /// `ServerName` values (when the server has none, its host name); a packet bound to
    /// another identity is refused, so one key used for many hosts cannot be replayed from
    /// one to the next.
    #[arg(long, value_name = "NAME")]
    pub server_id: Option<String>,

    /// The server's public key, for a public-key keyfile (`keygen --public-key`): the base64
    /// that `knock-spad server-key` prints [default: the stanza's `server_key`]. Packets are
    /// sealed to it (packet version 2); a shared-secret keyfile ignores it.
    #[arg(long, value_name = "BASE64")]
    pub server_key: Option<String>,

    #[command(flatten)]
    pub family: FamilyArgs,
}

/// Arguments of `open` and `close`.
///
/// The positionals are `[SERVICE] HOST`: clap fills `first`, then `second`, and
/// [`SpaArgs::service`] / [`SpaArgs::host`] say which is which (clap's own "optional
/// positional before a required one" does not combine with the trailing `-- COMMAND`).
/// Neither is required by clap: [`missing_host`] makes the error name HOST, which is what is
/// missing when nothing is given.
#[derive(Debug, Clone, Args)]
pub struct SpaArgs {
    /// Port(s) to open: a name from /etc/services (`ssh` is 22/tcp; a name with both tcp and
    /// udp entries means tcp unless written `domain/udp`), a number (`22`, meaning tcp),
    /// `22/tcp`, `53/udp`, or a comma list of those (`ssh,53/udp`), at most 16. SERVICE may
    /// be left out when HOST is a configuration stanza with `services`: a single argument is
    /// HOST.
    #[arg(id = "service", value_name = "SERVICE")]
    pub first: Option<String>,

    /// The server: a host name, an IP address, or the name of a stanza in the configuration
    /// file. The packet goes to HOST:SPA_PORT over UDP.
    #[arg(id = "host", value_name = "HOST", value_hint = ValueHint::Hostname)]
    pub second: Option<String>,

    #[command(flatten)]
    pub opts: SpaOptions,

    /// Print the packet as one line of lowercase hex on stdout instead of sending it (one
    /// line per packet).
    #[arg(long)]
    pub dry_run: bool,

    /// Do not print the `sent ...` line on stderr (errors are still printed).
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Also print the server identity the packet is bound to, the key, and each address
    /// tried.
    #[arg(short, long)]
    pub verbose: bool,
}

impl SpaArgs {
    /// SERVICE as typed, `None` when only HOST was given.
    pub fn service(&self) -> Option<&str> {
        self.second.as_ref().and(self.first.as_deref())
    }

    /// HOST as typed (empty when nothing was given; see [`missing_host`]).
    pub fn host(&self) -> &str {
        self.second
            .as_deref()
            .or(self.first.as_deref())
            .unwrap_or("")
    }
}

/// `--admit route|source|IP`, through [`AdmitChoice`]'s parser.
fn parse_admit(text: &str) -> Result<AdmitChoice, String> {
    text.parse()
}

/// How long `open --wait` and `proxy` try to connect, unless `--timeout`.
pub const DEFAULT_TIMEOUT_SECS: u64 = 5;

/// Arguments of `open`: those of `close`, and a command to run once the packet is sent.
#[derive(Debug, Clone, Args)]
pub struct OpenArgs {
    #[command(flatten)]
    pub spa: SpaArgs,

    /// Wait until the (first TCP) port accepts a TCP connection: exit 0 as soon as it does,
    /// or 1 after --timeout (the packet is sent again, once, halfway). With a command after
    /// `--`, run it once the port accepts connections.
    #[arg(long, conflicts_with = "dry_run")]
    pub wait: bool,

    /// With --wait: give up after this many seconds.
    #[arg(
        long,
        value_name = "SECS",
        requires = "wait",
        default_value_t = DEFAULT_TIMEOUT_SECS,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub timeout: u64,

    /// With a command after `--` and no --wait: milliseconds to wait between sending the
    /// packet and running the command [default: 200].
    #[arg(
        long = "delay",
        value_name = "MS",
        requires = "command",
        conflicts_with = "wait"
    )]
    pub delay_ms: Option<u64>,

    /// A command to run once the packet is sent (after --wait, or --delay), in place of
    /// knock-spa (exec: its exit status is knock-spa's), e.g. `-- ssh user@host`.
    #[arg(
        value_name = "COMMAND",
        last = true,
        num_args = 1..,
        conflicts_with = "dry_run",
        value_hint = ValueHint::CommandWithArguments
    )]
    pub command: Vec<String>,
}

/// Arguments of `proxy`.
#[derive(Debug, Clone, Args)]
pub struct ProxyArgs {
    /// The server: a host name, an IP address, or a stanza of the configuration file (in
    /// ssh_config: `%h`, or `%n` for the name as typed).
    #[arg(value_name = "HOST", value_hint = ValueHint::Hostname)]
    pub host: String,

    /// The TCP port to open and connect to (in ssh_config: `%p`).
    #[arg(value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,

    #[command(flatten)]
    pub opts: SpaOptions,

    /// Give up connecting after this many seconds (the packet is sent again, once, halfway).
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = DEFAULT_TIMEOUT_SECS,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub timeout: u64,

    /// Print the packets sent and the connection made on stderr (ssh shows a proxy's stderr).
    #[arg(short, long)]
    pub verbose: bool,
}

/// Arguments of `config`.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {}

/// What clap lets through but is wrong: `close ... -- WORDS` (clap would take a word after
/// `--` as HOST), and `open` or `close` with neither SERVICE nor HOST ([`missing_host`]).
pub fn check(cli: &Cli, argv: &[std::ffi::OsString]) -> Option<clap::Error> {
    if matches!(cli.command, Command::Close(_)) && argv.iter().any(|a| a == "--") {
        return Some(close_has_no_command());
    }
    missing_host(cli)
}

fn close_has_no_command() -> clap::Error {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    let message = "close runs no command: `-- COMMAND` belongs to open \
                   (knock-spa open [SERVICE] HOST --wait -- COMMAND)";
    match cmd.find_subcommand_mut("close") {
        Some(sub) => sub.error(clap::error::ErrorKind::UnknownArgument, message),
        None => cmd.error(clap::error::ErrorKind::UnknownArgument, message),
    }
}

/// `open` or `close` with neither SERVICE nor HOST: clap's error, naming HOST (what is
/// missing; SERVICE may be left out).
pub fn missing_host(cli: &Cli) -> Option<clap::Error> {
    let (name, args) = match &cli.command {
        Command::Open(o) => ("open", &o.spa),
        Command::Close(c) => ("close", c),
        _ => return None,
    };
    if args.first.is_some() {
        return None;
    }
    let mut cmd = <Cli as clap::CommandFactory>::command();
    let sub = cmd.find_subcommand_mut(name)?;
    let mut err = clap::Error::new(clap::error::ErrorKind::MissingRequiredArgument).with_cmd(sub);
    err.insert(
        clap::error::ContextKind::InvalidArg,
        clap::error::ContextValue::Strings(vec!["<HOST>".to_owned()]),
    );
    err.insert(
        clap::error::ContextKind::Usage,
        clap::error::ContextValue::StyledStr(sub.render_usage()),
    );
    Some(err)
}

/// Makes clap's errors say what is true of this command line:
///
/// - `close HOST -- COMMAND`: only `open` runs a command, which is what the user needs to
///   hear (clap says only "unexpected argument");
/// - an unknown option (`--tiemout`): clap's tip to write `-- --tiemout` would, for `open`,
///   run `--tiemout` as the command, so that tip is dropped (its "a similar argument exists"
///   tip is kept).
pub fn explain_error(err: clap::Error, argv: &[std::ffi::OsString]) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if err.kind() != ErrorKind::UnknownArgument {
        return err;
    }
    if subcommand_of(argv) == Some("close") && argv.iter().any(|a| a == "--") {
        return close_has_no_command();
    }
    let mut err = err;
    if let Some(ContextValue::StyledStrs(tips)) = err.get(ContextKind::Suggested) {
        let kept: Vec<_> = tips
            .iter()
            .filter(|t| !t.to_string().contains("use '-- "))
            .cloned()
            .collect();
        err.insert(ContextKind::Suggested, ContextValue::StyledStrs(kept));
    }
    err
}

/// The subcommand word of a command line: the first word after the program that is not a
/// global option or its value.
fn subcommand_of(argv: &[std::ffi::OsString]) -> Option<&str> {
    let mut words = argv.iter().skip(1).filter_map(|a| a.to_str());
    while let Some(word) = words.next() {
        match word {
            "--key" | "--config" => {
                words.next();
            }
            w if w.starts_with('-') => {}
            w => return Some(w),
        }
    }
    None
}

/// The shells `completions` writes scripts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    /// GNU bash.
    Bash,
    /// zsh.
    Zsh,
    /// fish.
    Fish,
}

/// Arguments of `completions`.
#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell to write a completion script for.
    #[arg(value_name = "SHELL")]
    pub shell: CompletionShell,
}

/// Arguments of `man`.
#[derive(Debug, Clone, Args)]
pub struct ManArgs {
    /// Print the page of this command (knock-spa-COMMAND(1)) instead of knock-spa(1).
    #[arg(value_name = "COMMAND", value_parser = MAN_COMMANDS)]
    pub command: Option<String>,
    /// Which page: 1, knock-spa(1) (or knock-spa-COMMAND(1)); 5, knock-spa.conf(5), the
    /// configuration file.
    #[arg(long, value_name = "SECTION", default_value = "1", value_parser = ["1", "5"], conflicts_with = "command")]
    pub section: String,
}

/// The commands `man COMMAND` accepts: every subcommand (a test checks the list is complete).
pub const MAN_COMMANDS: [&str; 8] = [
    "open",
    "close",
    "proxy",
    "keygen",
    "knock",
    "config",
    "completions",
    "man",
];

/// Arguments of `keygen`.
#[derive(Debug, Clone, Args)]
pub struct KeygenArgs {
    /// Key name the server shows in its logs [default: $USER@HOSTNAME, or `client`]: 1 to 64
    /// of A-Z a-z 0-9 . _ @ -
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Where to write the key file (mode 0600; its directory is created with mode 0700)
    /// [default: the --key file, else ~/.knock/key].
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Replace an existing key file (the old key stops working once the server has the new
    /// one).
    #[arg(long)]
    pub force: bool,

    /// Make a public-key keyfile (packet version 2) instead of a shared secret: the server's
    /// door gets only the printed `PublicKeys =` line, which cannot open anything if stolen.
    #[arg(long)]
    pub public_key: bool,
}

/// Arguments of `knock`.
#[derive(Debug, Clone, Args)]
#[command(
    long_about = "Send a classic port-knock sequence, as the `knock` client does.\n\n\
    For each PORT in order: a TCP port gets one connection attempt (a non-blocking connect, so \
    one SYN is sent; the socket is closed at once, the handshake is not waited for); a UDP port \
    gets one datagram holding a single zero byte. Sequences are sent in clear and can be \
    replayed by anyone who sees them: prefer `open` with an SPA key where the server supports \
    it.\n\n\
    Example: knock-spa knock server.example 7000 8000:udp 9000 -d 100"
)]
pub struct KnockArgs {
    /// The server: a host name or an IP address.
    #[arg(value_name = "HOST")]
    pub host: String,

    /// The sequence: PORT or PORT:tcp or PORT:udp (PORT/udp also accepted), in order.
    #[arg(value_name = "PORT[:PROTO]", required = true, num_args = 1..)]
    pub ports: Vec<String>,

    /// Wait this many milliseconds between hits (helps when a router treats a fast stream of
    /// SYNs as a port scan).
    #[arg(short = 'd', long = "delay", value_name = "MS", default_value_t = 0)]
    pub delay_ms: u64,

    /// Every hit uses UDP, even PORT:tcp, as knock -u does (default: TCP unless PORT:udp).
    #[arg(short = 'u', long = "udp")]
    pub udp: bool,

    #[command(flatten)]
    pub family: FamilyArgs,

    /// Print each hit on stdout (`hitting tcp 10.0.0.1:7000`), as knock -v does.
    #[arg(short, long)]
    pub verbose: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("knock-spa").chain(args.iter().copied()))
    }

    fn open(args: &[&str]) -> OpenArgs {
        let cli = parse(args).expect("valid");
        match cli.command {
            Command::Open(o) => o,
            other => panic!("not open: {other:?}"),
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn allow_ip_and_use_source_conflict() {
        assert!(parse(&["open", "ssh", "h", "--allow-ip", "1.2.3.4", "--use-source"]).is_err());
        assert!(parse(&["open", "ssh", "h", "--allow-ip", "nope"]).is_err());
        assert!(parse(&["open", "ssh", "h", "--admit", "route", "--use-source"]).is_err());
        assert!(parse(&[
            "open",
            "ssh",
            "h",
            "--admit",
            "source",
            "--allow-ip",
            "1.2.3.4"
        ])
        .is_err());
    }

    #[test]
    fn admit_values() {
        assert_eq!(
            open(&["open", "ssh", "h", "--admit", "route"])
                .spa
                .opts
                .admit,
            Some(AdmitChoice::Route)
        );
        assert_eq!(
            open(&["open", "ssh", "h", "--admit", "source"])
                .spa
                .opts
                .admit,
            Some(AdmitChoice::Source)
        );
        assert_eq!(
            open(&["open", "ssh", "h", "--admit", "192.0.2.9"])
                .spa
                .opts
                .admit,
            Some(AdmitChoice::Addr("192.0.2.9".parse().expect("ip")))
        );
        for bad in ["sauce", "", "0.0.0.0", "224.0.0.1"] {
            let err = parse(&["open", "ssh", "h", "--admit", bad]).expect_err(bad);
            assert!(err.to_string().contains("--admit"), "{err}");
        }
    }

    #[test]
    fn spa_port_zero_is_refused() {
        assert!(parse(&["open", "ssh", "h", "--spa-port", "0"]).is_err());
    }

    #[test]
    fn service_may_be_left_out() {
        let o = open(&["open", "myserver"]);
        assert_eq!((o.spa.service(), o.spa.host()), (None, "myserver"));
        let o = open(&["open", "ssh", "myserver"]);
        assert_eq!((o.spa.service(), o.spa.host()), (Some("ssh"), "myserver"));
        assert!(
            parse(&["open", "a", "b", "c"]).is_err(),
            "three positionals"
        );
        let cli = parse(&["close", "myserver"]).expect("valid");
        let Command::Close(c) = &cli.command else {
            panic!("not close")
        };
        assert_eq!((c.service(), c.host()), (None, "myserver"));
        assert!(missing_host(&cli).is_none());
    }

    #[test]
    fn nothing_given_names_host() {
        for command in ["open", "close"] {
            let cli = parse(&[command]).expect("clap leaves the check to missing_host");
            let err = missing_host(&cli).expect("HOST is missing");
            assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
            let text = err.to_string();
            assert!(text.contains("<HOST>"), "{text}");
            assert!(!text.contains("<SERVICE>\n"), "{text}");
            assert!(text.contains(&format!("knock-spa {command}")), "{text}");
        }
    }

    /// The error `main` prints for `args`: clap's (explained), or [`check`]'s.
    fn explained(args: &[&str]) -> String {
        let argv: Vec<std::ffi::OsString> = std::iter::once("knock-spa")
            .chain(args.iter().copied())
            .map(Into::into)
            .collect();
        match Cli::try_parse_from(&argv) {
            Err(err) => explain_error(err, &argv).to_string(),
            Ok(cli) => check(&cli, &argv)
                .unwrap_or_else(|| panic!("{args:?} is valid"))
                .to_string(),
        }
    }

    #[test]
    fn errors_say_what_is_true() {
        // The typo gets the similar option, never "use -- --tiemout" (that would be the command).
        let text = explained(&["open", "ssh", "gw", "--tiemout", "3"]);
        assert!(text.contains("'--tiemout'"), "{text}");
        assert!(text.contains("'--timeout'"), "{text}");
        assert!(!text.contains("-- --tiemout"), "{text}");
        let text = explained(&["close", "ssh", "gw", "--frob"]);
        assert!(!text.contains("-- --frob"), "{text}");
        // close has no command.
        for args in [
            &["close", "gw", "--", "ssh", "gw"][..],
            &["--key", "/k", "close", "gw", "--", "ssh"],
            &["close", "--", "gw"],
            &["--config=/c", "close", "ssh", "gw", "--", "ssh"],
        ] {
            let text = explained(args);
            assert!(text.contains("close runs no command"), "{args:?}: {text}");
            assert!(text.contains("belongs to open"), "{text}");
        }
        assert_eq!(
            subcommand_of(&["k".into(), "--key".into(), "close".into(), "open".into()]),
            Some("open"),
            "the value of --key is not the command"
        );
    }

    #[test]
    fn command_after_double_dash() {
        let o = open(&["open", "ssh", "h", "--", "ssh", "-p", "22", "user@h"]);
        assert_eq!(o.command, ["ssh", "-p", "22", "user@h"]);
        assert_eq!((o.spa.service(), o.spa.host()), (Some("ssh"), "h"));
        assert_eq!((o.wait, o.delay_ms), (false, None));
        let o = open(&["open", "myserver", "--delay", "50", "--", "true"]);
        assert_eq!(
            (o.spa.service(), o.spa.host(), o.delay_ms),
            (None, "myserver", Some(50))
        );
        assert_eq!(o.command, ["true"]);
        let o = open(&["open", "ssh", "h"]);
        assert!(o.command.is_empty());
        // --delay means nothing without a command, or with --wait; --dry-run sends nothing
        // to wait for.
        assert!(parse(&["open", "ssh", "h", "--delay", "5"]).is_err());
        assert!(parse(&["open", "ssh", "h", "--wait", "--delay", "5", "--", "true"]).is_err());
        assert!(parse(&["open", "ssh", "h", "--dry-run", "--", "true"]).is_err());
        assert!(parse(&["open", "ssh", "h", "--dry-run", "--wait"]).is_err());
        // close takes no command.
        assert!(parse(&["close", "ssh", "h", "--", "true"]).is_err());
    }

    #[test]
    fn wait_and_timeout() {
        let o = open(&["open", "ssh", "h", "--wait"]);
        assert!(o.wait && o.command.is_empty());
        assert_eq!(o.timeout, DEFAULT_TIMEOUT_SECS);
        let o = open(&[
            "open",
            "ssh",
            "h",
            "--wait",
            "--timeout",
            "2",
            "--",
            "ssh",
            "h",
        ]);
        assert_eq!((o.wait, o.timeout), (true, 2));
        assert_eq!(o.command, ["ssh", "h"]);
        assert!(
            parse(&["open", "ssh", "h", "--timeout", "2"]).is_err(),
            "needs --wait"
        );
        assert!(parse(&["open", "ssh", "h", "--wait", "--timeout", "0"]).is_err());
    }

    #[test]
    fn proxy_arguments() {
        let cli = parse(&["proxy", "gw", "22"]).expect("valid");
        let Command::Proxy(p) = cli.command else {
            panic!("not proxy")
        };
        assert_eq!((p.host.as_str(), p.port, p.timeout), ("gw", 22, 5));
        let cli = parse(&["proxy", "--timeout", "9", "-4", "gw", "2222", "-v"]).expect("valid");
        let Command::Proxy(p) = cli.command else {
            panic!("not proxy")
        };
        assert_eq!((p.port, p.timeout, p.verbose), (2222, 9, true));
        assert_eq!(p.opts.family.family(), Family::V4);
        assert!(parse(&["proxy", "gw"]).is_err(), "PORT is required");
        assert!(parse(&["proxy", "gw", "0"]).is_err());
        assert!(
            parse(&["proxy", "gw", "ssh"]).is_err(),
            "a port number, as ssh's %p"
        );
        assert!(parse(&["proxy", "gw", "22", "--dry-run"]).is_err());
    }

    #[test]
    fn global_config_and_key_anywhere() {
        let cli = parse(&["open", "ssh", "h", "--config", "/c", "--key", "/k"]).expect("valid");
        assert_eq!(cli.config, Some(PathBuf::from("/c")));
        assert_eq!(cli.key, Some(PathBuf::from("/k")));
        let cli = parse(&["--config", "/c", "open", "ssh", "h"]).expect("valid");
        assert_eq!(cli.config, Some(PathBuf::from("/c")));
    }

    #[test]
    fn completions_and_man_arguments() {
        let cli = parse(&["completions", "zsh"]).expect("valid");
        assert!(matches!(
            cli.command,
            Command::Completions(CompletionsArgs {
                shell: CompletionShell::Zsh
            })
        ));
        assert!(parse(&["completions", "tcsh"]).is_err());
        assert!(parse(&["completions"]).is_err());
        assert!(parse(&["man", "frobnicate"]).is_err());
        let names: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .collect();
        assert_eq!(names, MAN_COMMANDS, "MAN_COMMANDS lists every subcommand");
        let cli = parse(&["man", "open"]).expect("valid");
        assert!(
            matches!(cli.command, Command::Man(ManArgs { command: Some(ref c), .. }) if c == "open")
        );
    }

    #[test]
    fn knock_flags_anywhere() {
        let cli = parse(&["knock", "h", "7000", "8000:udp", "-d", "50"]).expect("valid");
        let Command::Knock(k) = cli.command else {
            panic!("not knock")
        };
        assert_eq!(k.ports, ["7000", "8000:udp"]);
        assert_eq!(k.delay_ms, 50);
        assert_eq!(k.family.family(), Family::Any);
    }
}
