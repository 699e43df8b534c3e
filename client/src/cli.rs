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
         Configuration: when HOST is the name of a stanza in the configuration file \
         (~/.knock/config, or --config FILE, or $KNOCK_SPA_CONFIG), the stanza supplies the \
         host, SPA port, key, address to admit, open time, services and server identity; \
         flags given on the command line override it. With a stanza that has `services`, \
         SERVICE may be left out: `knock-spa open myserver`."
    };
}

const OPEN_ABOUT: &str = concat!(
    "Send an SPA packet asking the server to open SERVICE for this client's address.\n\n",
    spa_help!(),
    "\n\n\
    Knock, then connect: `knock-spa open ssh myserver -- ssh user@myserver` sends the packet, \
    waits --wait milliseconds (200 by default) for the server to open the port, then runs the \
    command in place of knock-spa (its exit status is the command's)."
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
        knock-spa close ssh server.example\n  \
        knock-spa open myserver -- ssh myserver   # a stanza of ~/.knock/config, then ssh\n\n\
        Files:\n  \
        ~/.knock/key     the key file (mode 0600) unless --key or a stanza's `key` names \
        another\n  \
        ~/.knock/config  server stanzas for open and close (see --config)"
)]
pub struct Cli {
    /// Key file to sign and encrypt with [default: the stanza's `key`, else ~/.knock/key];
    /// for keygen, where to write the new key unless -o is given.
    #[arg(long, global = true, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub key: Option<PathBuf>,

    /// Client configuration file with server stanzas [default: $KNOCK_SPA_CONFIG, else
    /// ~/.knock/config; a missing default file means no stanzas]. Used by open and close.
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
    /// Generate a new key file and print the line to paste into the server's configuration.
    #[command(after_long_help = EXIT_STATUS_HELP)]
    Keygen(KeygenArgs),
    /// Send a classic port-knock sequence (a drop-in for the `knock` client).
    #[command(after_long_help = EXIT_STATUS_HELP)]
    Knock(KnockArgs),
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

/// Arguments of `open` and `close`.
///
/// The positionals are `[SERVICE] HOST`: clap fills `first`, then `second`, and
/// [`SpaArgs::service`] / [`SpaArgs::host`] say which is which (clap's own "optional
/// positional before a required one" does not combine with the trailing `-- COMMAND`).
#[derive(Debug, Clone, Args)]
pub struct SpaArgs {
    /// Port(s) to open: a name from /etc/services (`ssh` is 22/tcp; a name with both tcp and
    /// udp entries means tcp unless written `domain/udp`), a number (`22`, meaning tcp),
    /// `22/tcp`, `53/udp`, or a comma list of those (`ssh,53/udp`), at most 16. SERVICE may
    /// be left out when HOST is a configuration stanza with `services`: a single argument is
    /// HOST.
    #[arg(id = "service", value_name = "SERVICE")]
    pub first: String,

    /// The server: a host name, an IP address, or the name of a stanza in the configuration
    /// file. The packet goes to HOST:SPA_PORT over UDP.
    #[arg(id = "host", value_name = "HOST", value_hint = ValueHint::Hostname)]
    pub second: Option<String>,

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

    #[command(flatten)]
    pub family: FamilyArgs,

    /// Print the packet as one line of lowercase hex on stdout instead of sending it.
    #[arg(long)]
    pub dry_run: bool,

    /// Do not print the `sent ...` line on stderr (errors are still printed).
    #[arg(short, long)]
    pub quiet: bool,
}

impl SpaArgs {
    /// SERVICE as typed, `None` when only HOST was given.
    pub fn service(&self) -> Option<&str> {
        self.second.as_ref().map(|_| self.first.as_str())
    }

    /// HOST as typed.
    pub fn host(&self) -> &str {
        self.second.as_deref().unwrap_or(&self.first)
    }
}

/// `--admit route|source|IP`, through [`AdmitChoice`]'s parser.
fn parse_admit(text: &str) -> Result<AdmitChoice, String> {
    text.parse()
}

/// Arguments of `open`: those of `close`, and a command to run once the packet is sent.
#[derive(Debug, Clone, Args)]
pub struct OpenArgs {
    #[command(flatten)]
    pub spa: SpaArgs,

    /// With a command after `--`: milliseconds to wait between sending the packet and running
    /// the command, for the server to open the port [default: 200].
    #[arg(long = "wait", value_name = "MS", requires = "command")]
    pub wait_ms: Option<u64>,

    /// A command to run after the packet is sent and --wait has passed, in place of knock-spa
    /// (exec: its exit status is knock-spa's), e.g. `-- ssh user@host`.
    #[arg(
        value_name = "COMMAND",
        last = true,
        num_args = 1..,
        conflicts_with = "dry_run",
        value_hint = ValueHint::CommandWithArguments
    )]
    pub command: Vec<String>,
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
pub const MAN_COMMANDS: [&str; 6] = ["open", "close", "keygen", "knock", "completions", "man"];

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
            open(&["open", "ssh", "h", "--admit", "route"]).spa.admit,
            Some(AdmitChoice::Route)
        );
        assert_eq!(
            open(&["open", "ssh", "h", "--admit", "source"]).spa.admit,
            Some(AdmitChoice::Source)
        );
        assert_eq!(
            open(&["open", "ssh", "h", "--admit", "192.0.2.9"])
                .spa
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
        assert!(parse(&["open"]).is_err(), "HOST is required");
        assert!(
            parse(&["open", "a", "b", "c"]).is_err(),
            "three positionals"
        );
        let cli = parse(&["close", "myserver"]).expect("valid");
        let Command::Close(c) = cli.command else {
            panic!("not close")
        };
        assert_eq!((c.service(), c.host()), (None, "myserver"));
    }

    #[test]
    fn command_after_double_dash() {
        let o = open(&["open", "ssh", "h", "--", "ssh", "-p", "22", "user@h"]);
        assert_eq!(o.command, ["ssh", "-p", "22", "user@h"]);
        assert_eq!((o.spa.service(), o.spa.host()), (Some("ssh"), "h"));
        assert_eq!(o.wait_ms, None);
        let o = open(&["open", "myserver", "--wait", "50", "--", "true"]);
        assert_eq!(
            (o.spa.service(), o.spa.host(), o.wait_ms),
            (None, "myserver", Some(50))
        );
        assert_eq!(o.command, ["true"]);
        let o = open(&["open", "ssh", "h"]);
        assert!(o.command.is_empty());
        // --wait means nothing without a command; --dry-run sends nothing to wait for.
        assert!(parse(&["open", "ssh", "h", "--wait", "5"]).is_err());
        assert!(parse(&["open", "ssh", "h", "--dry-run", "--", "true"]).is_err());
        // close takes no command.
        assert!(parse(&["close", "ssh", "h", "--", "true"]).is_err());
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
