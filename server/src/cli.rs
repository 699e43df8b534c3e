//! The command line of `knock-spad`: the clap definitions, from which `--help`, the man page
//! and the shell completions are all generated (`cmd::docs`). Only definitions live here; what
//! each command does is in `cmd/` and `daemon/`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use knock_shared::types::PortSpec;

use crate::log;

/// Port-knocking daemon: knock sequences (knockd-compatible) and single packet authorization.
#[derive(Debug, Parser)]
#[command(name = "knock-spad", version, disable_version_flag = true, about, long_about = None)]
pub struct Cli {
    /// Configuration file (knockd.conf syntax plus SPA directives).
    #[arg(
        short = 'c',
        long = "config",
        value_name = "FILE",
        default_value = "/etc/knockd.conf",
        global = true
    )]
    pub config: PathBuf,
    /// Interface to capture on (overrides `Interface`; default: `any`).
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    pub interface: Option<String>,
    /// Run in the background (default: foreground, as systemd wants); returns once the
    /// daemon runs, or prints why it could not start and exits 1.
    #[arg(short = 'd', long = "daemon")]
    pub daemon: bool,
    /// Debug output.
    #[arg(short = 'D', long = "debug")]
    pub debug: bool,
    /// Verbose output (knock stages, timeouts).
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,
    /// Ignore IPv6.
    #[arg(short = '4', long = "only-ip-v4", global = true)]
    pub only_v4: bool,
    /// Print the version and exit.
    #[arg(short = 'V', long = "version", action = clap::ArgAction::Version)]
    pub version: Option<bool>,
    /// PID file (overrides `PidFile`).
    #[arg(short = 'p', long = "pidfile", value_name = "FILE", global = true)]
    pub pidfile: Option<PathBuf>,
    /// Log file (overrides `LogFile`).
    #[arg(short = 'g', long = "logfile", value_name = "FILE")]
    pub logfile: Option<PathBuf>,
    /// State directory (overrides `StateDir`).
    #[arg(long = "state-dir", value_name = "DIR", global = true)]
    pub state_dir: Option<PathBuf>,
    /// How SPA packets are received (overrides `Capture`).
    #[arg(long = "capture", value_name = "MODE", value_parser = ["pcap", "udp"])]
    pub capture: Option<String>,
    /// stderr log format.
    #[arg(long = "log-format", value_enum, default_value_t = log::Format::Text)]
    pub log_format: log::Format,
    /// Leave open grants in place on SIGTERM/SIGINT (overrides `KeepRulesOnExit`).
    #[arg(long = "keep-rules-on-exit")]
    pub keep_rules: bool,
    /// After the capture is open, run as this user, keeping only CAP_NET_ADMIN for the
    /// firewall commands (overrides `User`; the state directory must be the user's).
    #[arg(long = "user", value_name = "NAME")]
    pub user: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the configuration and exit: 0 if valid, 2 with FILE:LINE errors if not.
    Check,
    /// Show the running daemon's open grants and packet counters.
    ///
    /// Reads the status file the daemon keeps in its state directory (StateDir of the
    /// configuration, or --state-dir). Exit status: 0 running, 1 dead (its status file is
    /// left), 3 not running, 4 stale or unreadable. With --format prometheus: 0 whenever the
    /// metrics were printed (`knock_spad_up 0` when no live daemon), 4 when the status file
    /// cannot be read (nothing on stdout).
    Status {
        /// Output format: a table, JSON, or Prometheus' text exposition format (for
        /// node_exporter's textfile collector).
        #[arg(long, value_enum, value_name = "FORMAT")]
        format: Option<StatusFormat>,
        /// Print JSON instead of a table (the same as --format json).
        #[arg(long, conflicts_with = "format")]
        json: bool,
    },
    /// List, add or revoke SPA keys in the configuration, and reload a running daemon.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Print the baseline firewall rules for the guarded ports (or apply them with --apply).
    ///
    /// ESTABLISHED,RELATED is accepted first, so live sessions survive; then new connections
    /// to each guarded port are refused (TCP: reset). IPv4 and IPv6.
    FirewallSetup {
        /// A port to guard: 22, 22/tcp or 53/udp; repeatable. Default: every Allow_Ports of
        /// the configuration's SPA doors and every --dport in a knock door's start command.
        #[arg(long = "port", value_name = "PORT[/PROTO]")]
        ports: Vec<PortSpec>,
        /// Apply the rules with iptables and ip6tables: each is checked with -C first and
        /// added only when missing, so running it again changes nothing.
        #[arg(long)]
        apply: bool,
        /// IPv4 only (also with -4).
        #[arg(long = "no-ipv6")]
        no_ipv6: bool,
        /// The daemon's own nftables table instead (Firewall = nftables): `table inet
        /// knock_spa`, guarding the ports of the configuration's doors (or --port). Printed as
        /// an nft script; with --apply, applied in one transaction (open grants are kept).
        #[arg(long)]
        nft: bool,
        /// With --nft: delete table inet knock_spa, and with it every grant it holds. The
        /// daemon never removes the table itself (its ports stay guarded when it stops).
        #[arg(long, requires = "nft", conflicts_with = "apply")]
        remove: bool,
    },
    /// Make the server's X25519 key for public-key doors (packet version 2), or show the
    /// public key of one.
    ///
    /// Writes the private key to FILE (mode 0600; an existing file is kept unless --force)
    /// and prints its public key, which clients seal their packets to (`knock-spa
    /// --server-key`, or `server_key` in the client's stanza). Name FILE in the
    /// configuration with `ServerKey = FILE` in [options].
    ServerKey {
        /// Where to write the new key.
        #[arg(
            short = 'o',
            long = "output",
            value_name = "FILE",
            required_unless_present = "show"
        )]
        output: Option<PathBuf>,
        /// Replace FILE if it exists.
        #[arg(long, requires = "output")]
        force: bool,
        /// Print the public key of an existing key file instead.
        #[arg(long, value_name = "FILE", conflicts_with = "output")]
        show: Option<PathBuf>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// End open grants now, through the running daemon (their stop commands run).
    ///
    /// Closes the grants matching every option given: a key, a door, an address; or all of
    /// them with --all. `status` shows the result. Exit status: 0 when the daemon answered,
    /// 3 when no daemon runs on this state directory.
    #[command(group(clap::ArgGroup::new("which").required(true).multiple(true).args(["key", "door", "address", "all"])))]
    Close {
        /// Grants of this SPA key.
        #[arg(long, value_name = "NAME")]
        key: Option<String>,
        /// Grants of this door.
        #[arg(long, value_name = "NAME")]
        door: Option<String>,
        /// Grants for this address.
        #[arg(long, value_name = "IP")]
        address: Option<std::net::IpAddr>,
        /// Every open grant.
        #[arg(long, conflicts_with_all = ["key", "door", "address"])]
        all: bool,
    },
    /// Print a manual page (roff): knock-spad(8), or with --section 5 knock-spad.conf(5).
    ///
    /// Read it with `knock-spad man | man -l -` (or `knock-spad man --section 5 | man -l -`).
    Man {
        /// Which page: 8, knock-spad(8), the program; 5, knock-spad.conf(5), its
        /// configuration file (every directive).
        #[arg(long, value_name = "SECTION", default_value = "8", value_parser = ["8", "5"])]
        section: String,
    },
}

/// `status --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFormat {
    /// A table.
    Text,
    /// JSON.
    Json,
    /// Prometheus text exposition format 0.0.4.
    Prometheus,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print every SPA key: door, name, public key id, allowed ports, where it is (never a
    /// secret).
    List {
        /// Only this door.
        #[arg(long, value_name = "NAME")]
        door: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add a key: to the door's KeyFile when it has one, else as a `Keys =` line.
    #[command(group(clap::ArgGroup::new("source").required(true).args(["from_line", "from_file"])))]
    Add {
        /// The key's name on this server (log lines show it).
        name: String,
        /// The `Keys = NAME:BASE64` line `knock-spa keygen` prints; `-` reads it from stdin
        /// (safer: a secret on the command line is visible to other users in ps).
        #[arg(long = "from-line", value_name = "LINE")]
        from_line: Option<String>,
        /// A client keyfile (`name =`, `secret =`; mode 0600).
        #[arg(long = "from-file", value_name = "KEYFILE")]
        from_file: Option<PathBuf>,
        /// The SPA door (needed when there are several).
        #[arg(long, value_name = "NAME")]
        door: Option<String>,
        /// Do not signal a running daemon.
        #[arg(long = "no-reload")]
        no_reload: bool,
    },
    /// Remove a key from the door (from every SPA door without --door).
    Revoke {
        /// The key's name.
        name: String,
        /// Only this door.
        #[arg(long, value_name = "NAME")]
        door: Option<String>,
        /// Do not signal a running daemon.
        #[arg(long = "no-reload")]
        no_reload: bool,
    },
}
