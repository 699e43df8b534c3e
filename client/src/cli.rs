//! The command line, as clap reads it: the single source of `--help` (and later of the man
//! page and shell completions).
//!
//! Role: hold exactly what the user typed. Values a future client configuration file
//! (`~/.knock/config`, a stanza per server) can supply are `Option`s here, so the resolving
//! step can tell "not given" from "given": command-line flags override the stanza, the stanza
//! overrides the built-in defaults.
//!
//! It must not resolve names, read files or apply defaults; see `spa::resolve`.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::error::EXIT_STATUS_HELP;

/// The part of `open --help` and `close --help` explaining the packet and the admitted
/// address (a macro so `concat!` can join it to each command's first paragraph).
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
         NAT for your key."
    };
}

const OPEN_ABOUT: &str = concat!(
    "Send an SPA packet asking the server to open SERVICE for this client's address.\n\n",
    spa_help!()
);
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
        knock-spa close ssh server.example"
)]
pub struct Cli {
    /// Key file to sign and encrypt with [default: ~/.knock/key]; for keygen, where to write
    /// the new key unless -o is given.
    #[arg(long, global = true, value_name = "FILE")]
    pub key: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send an SPA packet asking the server to open SERVICE for this client.
    #[command(after_long_help = EXIT_STATUS_HELP, long_about = OPEN_ABOUT)]
    Open(SpaArgs),
    /// Send an SPA packet asking the server to close SERVICE for this client now.
    #[command(after_long_help = EXIT_STATUS_HELP, long_about = CLOSE_ABOUT)]
    Close(SpaArgs),
    /// Generate a new key file and print the line to paste into the server's configuration.
    #[command(after_long_help = EXIT_STATUS_HELP)]
    Keygen(KeygenArgs),
    /// Send a classic port-knock sequence (a drop-in for the `knock` client).
    #[command(after_long_help = EXIT_STATUS_HELP)]
    Knock(KnockArgs),
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

/// Which address family to use when HOST resolves to several addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Family {
    /// The first address the resolver returns.
    #[default]
    Any,
    /// IPv4 only.
    V4,
    /// IPv6 only.
    V6,
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

/// Arguments of `open` and `close`.
#[derive(Debug, Clone, Args)]
pub struct SpaArgs {
    /// Port(s) to open: a name from /etc/services (`ssh` is 22/tcp; a name with both tcp and
    /// udp entries means tcp unless written `domain/udp`), a number (`22`, meaning tcp),
    /// `22/tcp`, `53/udp`, or a comma list of those (`ssh,53/udp`), at most 16.
    #[arg(value_name = "SERVICE")]
    pub service: String,

    /// The server: a host name or an IP address. The packet goes to HOST:SPA_PORT over UDP.
    #[arg(value_name = "HOST")]
    pub host: String,

    /// Admit this address instead of the local one, e.g. your public address when you are
    /// behind NAT (the server must allow NAT for your key).
    #[arg(long, value_name = "IP", conflicts_with = "use_source")]
    pub allow_ip: Option<IpAddr>,

    /// Ask the server to admit whatever source address the packet arrives from (for when you
    /// do not know your public address; the server must allow NAT for your key).
    #[arg(long)]
    pub use_source: bool,

    /// Ask for the port to stay open this many seconds; the server caps it. 0 asks for the
    /// server's own default [default: 0].
    #[arg(long = "for", value_name = "SECS")]
    pub for_secs: Option<u32>,

    /// UDP port the server listens on for SPA packets [default: 62201].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub spa_port: Option<u16>,

    /// Server identity the packet is bound to [default: HOST as typed, lower-cased]. It must
    /// match one of the server's `ServerName` values (when the server has none, its host
    /// name); a packet bound to another identity is refused, so one key used for many hosts
    /// cannot be replayed from one to the next.
    #[arg(long, value_name = "NAME")]
    pub server_id: Option<String>,

    #[command(flatten)]
    pub family: FamilyArgs,

    /// Print the packet as one line of lowercase hex on stdout instead of sending it.
    #[arg(long)]
    pub dry_run: bool,

    /// Do not print the `sent ...` line on stderr (errors are still printed).
    #[arg(short, long)]
    pub quiet: bool,
}

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

    /// Ports without :tcp or :udp use UDP (default: TCP).
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

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn allow_ip_and_use_source_conflict() {
        let r = Cli::try_parse_from([
            "knock-spa",
            "open",
            "ssh",
            "h",
            "--allow-ip",
            "1.2.3.4",
            "--use-source",
        ]);
        assert!(r.is_err());
        let r = Cli::try_parse_from(["knock-spa", "open", "ssh", "h", "--allow-ip", "nope"]);
        assert!(r.is_err());
    }

    #[test]
    fn spa_port_zero_is_refused() {
        let r = Cli::try_parse_from(["knock-spa", "open", "ssh", "h", "--spa-port", "0"]);
        assert!(r.is_err());
    }

    #[test]
    fn knock_flags_anywhere() {
        let cli = Cli::try_parse_from(["knock-spa", "knock", "h", "7000", "8000:udp", "-d", "50"])
            .expect("valid");
        let Command::Knock(k) = cli.command else {
            panic!("not knock")
        };
        assert_eq!(k.ports, ["7000", "8000:udp"]);
        assert_eq!(k.delay_ms, 50);
        assert_eq!(k.family.family(), Family::Any);
    }
}
