//! `knock-spad`: keeps ports closed and opens one for one client address on a valid knock
//! sequence (knockd-compatible) or a single authenticated UDP packet (SPA).
//!
//! Exit codes: 0 clean exit; 1 runtime failure (capture, socket, state directory); 2 invalid
//! command line or configuration (`check` exits 2 on any error).

mod engine;
mod exec;
mod firewall;
mod fsutil;
mod grants;
mod keys_cmd;
mod log;
mod manpage;
mod notify;
mod runtime;
mod state;
mod status;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{CommandFactory, Parser, Subcommand};
use knock_shared::config::Capture;
use knock_shared::types::PortSpec;

/// Port-knocking daemon: knock sequences (knockd-compatible) and single packet authorization.
#[derive(Debug, Parser)]
#[command(name = "knock-spad", version, disable_version_flag = true, about, long_about = None)]
struct Cli {
    /// Configuration file (knockd.conf syntax plus SPA directives).
    #[arg(
        short = 'c',
        long = "config",
        value_name = "FILE",
        default_value = "/etc/knockd.conf",
        global = true
    )]
    config: PathBuf,
    /// Interface to capture on (overrides `Interface`; default: `any`).
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    interface: Option<String>,
    /// Run in the background (default: foreground, as systemd wants); returns once the
    /// daemon runs, or prints why it could not start and exits 1.
    #[arg(short = 'd', long = "daemon")]
    daemon: bool,
    /// Debug output.
    #[arg(short = 'D', long = "debug")]
    debug: bool,
    /// Verbose output (knock stages, timeouts).
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    /// Ignore IPv6.
    #[arg(short = '4', long = "only-ip-v4", global = true)]
    only_v4: bool,
    /// Print the version and exit.
    #[arg(short = 'V', long = "version", action = clap::ArgAction::Version)]
    version: Option<bool>,
    /// PID file (overrides `PidFile`).
    #[arg(short = 'p', long = "pidfile", value_name = "FILE", global = true)]
    pidfile: Option<PathBuf>,
    /// Log file (overrides `LogFile`).
    #[arg(short = 'g', long = "logfile", value_name = "FILE")]
    logfile: Option<PathBuf>,
    /// State directory (overrides `StateDir`).
    #[arg(long = "state-dir", value_name = "DIR", global = true)]
    state_dir: Option<PathBuf>,
    /// How SPA packets are received (overrides `Capture`).
    #[arg(long = "capture", value_name = "MODE", value_parser = ["pcap", "udp"])]
    capture: Option<String>,
    /// stderr log format.
    #[arg(long = "log-format", value_enum, default_value_t = log::Format::Text)]
    log_format: log::Format,
    /// Leave open grants in place on SIGTERM/SIGINT (overrides `KeepRulesOnExit`).
    #[arg(long = "keep-rules-on-exit")]
    keep_rules: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check the configuration and exit: 0 if valid, 2 with FILE:LINE errors if not.
    Check,
    /// Show the running daemon's open grants and packet counters.
    ///
    /// Reads the status file the daemon keeps in its state directory (StateDir of the
    /// configuration, or --state-dir). Exit status: 0 running, 1 dead (its status file is
    /// left), 3 not running, 4 stale or unreadable.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
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
        /// Print an nftables ruleset instead (a table with a set of admitted addresses per
        /// family, for doors whose commands run nft; see CONFIG.md). Load it with nft -f.
        #[arg(long, conflicts_with = "apply")]
        nft: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff, section 8).
    Man,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let msg = format!("{e:#}");
            // A daemon still starting hands its error to the waiting parent, which prints it
            // on the terminal; its own stderr is /dev/null by then.
            if report_start_failure(&msg) {
                error!("error: {msg}");
            } else {
                eprintln!("knock-spad: error: {msg}");
            }
            ExitCode::from(1)
        }
    }
}

fn load_or_report(path: &Path) -> Result<runtime::Runtime, ExitCode> {
    runtime::load(path).map_err(|errors| {
        for e in &errors {
            eprintln!("knock-spad: {e}");
        }
        eprintln!(
            "knock-spad: {}: {} error(s); nothing started",
            path.display(),
            errors.len()
        );
        ExitCode::from(2)
    })
}

fn check(cli: &Cli) -> ExitCode {
    let rt = match load_or_report(&cli.config) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    for w in &rt.config.warnings {
        eprintln!(
            "knock-spad: {}:{}: warning: {}",
            cli.config.display(),
            w.line,
            w.message
        );
    }
    for d in &rt.config.doors {
        println!("[{}] {}", d.name, runtime::door_summary(d));
    }
    warn_open_ports(&rt);
    println!(
        "{}: OK ({} door(s), {} SPA key(s))",
        cli.config.display(),
        rt.config.doors.len(),
        rt.verifier.len()
    );
    ExitCode::SUCCESS
}

/// Warns when a port a door opens (an SPA door's Allow_Ports, a `--dport` in a knock door's
/// start command) is not closed by the current INPUT chain (a door that guards an open port
/// protects nothing). Only when the firewall can be read (root, the tool
/// installed); anything else is said once, not treated as an error.
fn warn_open_ports(rt: &runtime::Runtime) {
    note_other_firewalls(&rt.config);
    let ports = firewall::ports_of(&rt.config, firewall::Backend::Iptables);
    for family in [firewall::Family::V4, firewall::Family::V6] {
        let out = std::process::Command::new(family.tool())
            .args(["-S", "INPUT"])
            .stdin(std::process::Stdio::null())
            .output();
        let chain = match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
            _ => {
                eprintln!(
                    "knock-spad: note: cannot read the {} INPUT chain; not checking that the \
                     guarded ports are closed",
                    family.tool()
                );
                continue;
            }
        };
        for &p in &ports {
            match firewall::verdict(&chain, p) {
                firewall::Verdict::Closed => {}
                firewall::Verdict::Open(why) => eprintln!(
                    "knock-spad: warning: {p} is open in the current {} INPUT chain ({why}): a \
                     door guarding an open port protects nothing; see `knock-spad \
                     firewall-setup`",
                    family.tool()
                ),
                firewall::Verdict::Unknown(rule) => eprintln!(
                    "knock-spad: note: cannot tell whether {p} is closed by the {} INPUT \
                     chain: decided by `{rule}`",
                    family.tool()
                ),
            }
        }
    }
}

/// Says which doors run another firewall tool than iptables: `check` and `firewall-setup`
/// read and write only the iptables INPUT chains, so those doors' ports are left to the
/// administrator.
fn note_other_firewalls(config: &knock_shared::config::Config) {
    for door in &config.doors {
        if let Some(tool) = firewall::other_firewall(door) {
            eprintln!(
                "knock-spad: note: [{}] runs {tool}, not iptables: its ports are not checked \
                 or baselined here; make sure the {tool} ruleset closes them",
                door.name
            );
        }
    }
}

/// Writes `bytes` to stdout; a closed pipe is not an error worth a message.
fn print_bytes(bytes: &[u8]) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e).context("cannot write to stdout"),
    }
}

/// The configuration's `[options]` without reading key files: what `status`, `keys` and
/// `firewall-setup` need even when a key file is broken.
fn read_options(path: &Path) -> Result<knock_shared::config::Config, ExitCode> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => zeroize::Zeroizing::new(t),
        Err(e) => {
            eprintln!("knock-spad: {}: cannot read: {e}", path.display());
            return Err(ExitCode::from(2));
        }
    };
    knock_shared::config::parse_str(&text).map_err(|errs| {
        for e in &errs {
            eprintln!(
                "knock-spad: {}:{}",
                path.display(),
                e.to_string().replacen("line ", "", 1)
            );
        }
        ExitCode::from(2)
    })
}

/// `--state-dir`, else the configuration's `StateDir`.
fn state_dir_of(cli: &Cli) -> Result<PathBuf, ExitCode> {
    if let Some(d) = &cli.state_dir {
        return Ok(d.clone());
    }
    read_options(&cli.config)
        .map(|c| PathBuf::from(c.options.state_dir))
        .inspect_err(|_| {
            eprintln!(
                "knock-spad: (--state-dir DIR names the state directory without a configuration)"
            );
        })
}

fn status_cmd(cli: &Cli, json: bool) -> anyhow::Result<ExitCode> {
    let dir = match state_dir_of(cli) {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    let path = dir.join(status::FILE);
    let now = status::unix_now();
    match status::read(&dir) {
        Ok(snap) => {
            let code = match status::liveness(&snap, now) {
                status::Liveness::Running => 0,
                status::Liveness::Gone => 1,
                status::Liveness::Stale { .. } => 4,
            };
            let text = if json {
                let mut t = serde_json::to_string_pretty(&status::report(&path, &snap, now))
                    .context("json")?;
                t.push('\n');
                t
            } else {
                status::render(&path, &snap, now)
            };
            print_bytes(text.as_bytes())?;
            Ok(ExitCode::from(code))
        }
        Err(status::ReadError::Missing(_)) => {
            if json {
                let v = serde_json::json!({
                    "state": "stopped",
                    "running": false,
                    "status_file": path.display().to_string(),
                });
                print_bytes(format!("{v:#}\n").as_bytes())?;
            } else {
                println!(
                    "knock-spad is not running (no {}; a daemon with another StateDir or \
                     --state-dir keeps its status elsewhere)",
                    path.display()
                );
            }
            Ok(ExitCode::from(3))
        }
        Err(e @ status::ReadError::Io { .. }) => {
            eprintln!("knock-spad: cannot read the status: {e} (the state directory is root's)");
            Ok(ExitCode::from(4))
        }
        Err(e) => {
            eprintln!("knock-spad: {e}");
            Ok(ExitCode::from(4))
        }
    }
}

fn keys_error(e: keys_cmd::KeysError, edit: bool) -> ExitCode {
    match e {
        keys_cmd::KeysError::Invalid(errs) => {
            for e in &errs {
                eprintln!("knock-spad: {e}");
            }
            if edit {
                eprintln!(
                    "knock-spad: the configuration would be invalid ({} error(s)): nothing was \
                     changed",
                    errs.len()
                );
            }
            ExitCode::from(2)
        }
        keys_cmd::KeysError::Usage(m) => {
            eprintln!("knock-spad: {m}");
            ExitCode::from(2)
        }
        keys_cmd::KeysError::Io(m) => {
            eprintln!("knock-spad: {m}");
            ExitCode::from(1)
        }
    }
}

fn keys_cmd(cli: &Cli, command: &KeysCommand) -> anyhow::Result<ExitCode> {
    let (outcome, no_reload) = match command {
        KeysCommand::List { door, json } => {
            return match keys_cmd::list(&cli.config, door.as_deref()) {
                Ok(entries) if *json => {
                    let mut t = serde_json::to_string_pretty(&entries).context("json")?;
                    t.push('\n');
                    print_bytes(t.as_bytes())
                }
                Ok(entries) if entries.is_empty() => {
                    println!("no SPA keys");
                    Ok(ExitCode::SUCCESS)
                }
                Ok(entries) => print_bytes(keys_cmd::render_list(&entries).as_bytes()),
                Err(e) => Ok(keys_error(e, false)),
            };
        }
        KeysCommand::Add {
            name,
            from_line,
            from_file,
            door,
            no_reload,
        } => {
            let given = match (from_line, from_file) {
                (Some(l), _) => keys_cmd::key_from_line(l),
                (None, Some(f)) => keys_cmd::key_from_file(f),
                (None, None) => Err(keys_cmd::KeysError::Usage(
                    "give --from-line or --from-file".into(),
                )),
            };
            let given = match given {
                Ok(k) => k,
                Err(e) => return Ok(keys_error(e, true)),
            };
            let key = match knock_keys::NamedKey::new(name, given.master().clone()) {
                Ok(k) => k,
                Err(e) => return Ok(keys_error(keys_cmd::KeysError::Usage(e.to_string()), true)),
            };
            if given.name() != name {
                eprintln!(
                    "knock-spad: note: the key was made as `{}`; this server calls it `{name}`",
                    given.name()
                );
            }
            (
                keys_cmd::add(&cli.config, door.as_deref(), &key),
                *no_reload,
            )
        }
        KeysCommand::Revoke {
            name,
            door,
            no_reload,
        } => (
            keys_cmd::revoke(&cli.config, door.as_deref(), name),
            *no_reload,
        ),
    };
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => return Ok(keys_error(e, true)),
    };
    for c in &outcome.changes {
        println!("{c}");
    }
    for n in &outcome.notes {
        println!("note: {n}");
    }
    if !no_reload {
        let cfg = read_options(&cli.config).ok();
        let state_dir = cli
            .state_dir
            .clone()
            .or_else(|| cfg.as_ref().map(|c| PathBuf::from(&c.options.state_dir)));
        let pidfile = cli.pidfile.clone().or_else(|| {
            cfg.as_ref()
                .and_then(|c| c.options.pid_file.as_ref().map(PathBuf::from))
        });
        if let Some(dir) = state_dir {
            println!(
                "{}",
                keys_cmd::reload_daemon(&cli.config, &dir, pidfile.as_deref())
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn firewall_cmd(
    cli: &Cli,
    ports: &[PortSpec],
    apply: bool,
    no_ipv6: bool,
    backend: firewall::Backend,
) -> anyhow::Result<ExitCode> {
    let ports = if ports.is_empty() {
        let cfg = match read_options(&cli.config) {
            Ok(c) => c,
            Err(code) => {
                eprintln!("knock-spad: (or name the ports with --port)");
                return Ok(code);
            }
        };
        if backend == firewall::Backend::Iptables {
            note_other_firewalls(&cfg);
        }
        let p = firewall::ports_of(&cfg, backend);
        if p.is_empty() {
            let doors = match backend {
                firewall::Backend::Iptables => {
                    "no SPA door's Allow_Ports, no --dport in a knock door's start command"
                }
                firewall::Backend::Nft => "no door whose commands run nft",
            };
            eprintln!(
                "knock-spad: {} names no port to guard ({doors}): name the ports with --port",
                cli.config.display()
            );
            return Ok(ExitCode::from(2));
        }
        p
    } else {
        let mut p = ports.to_vec();
        p.sort();
        p.dedup();
        p
    };
    let ipv6 = !(no_ipv6 || cli.only_v4);
    if backend == firewall::Backend::Nft {
        return print_bytes(firewall::render_nft(&ports, ipv6).as_bytes());
    }
    let rules = firewall::baseline(&ports, ipv6);
    if !apply {
        return print_bytes(firewall::render(&ports, &rules).as_bytes());
    }
    match firewall::apply(&rules, &mut firewall::system_runner) {
        Ok(done) => {
            for d in done {
                match d {
                    firewall::Applied::Present(c) => println!("present: {c}"),
                    firewall::Applied::Added(c) => println!("added:   {c}"),
                }
            }
            print!("{}", firewall::PERSIST_NOTE);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("knock-spad: firewall-setup: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Some(Command::Check) => return Ok(check(&cli)),
        Some(Command::Status { json }) => return status_cmd(&cli, *json),
        Some(Command::Keys { command }) => return keys_cmd(&cli, command),
        Some(Command::FirewallSetup {
            ports,
            apply,
            no_ipv6,
            nft,
        }) => {
            let backend = if *nft {
                firewall::Backend::Nft
            } else {
                firewall::Backend::Iptables
            };
            return firewall_cmd(&cli, ports, *apply, *no_ipv6, backend);
        }
        Some(Command::Completions { shell }) => {
            return print_bytes(&manpage::completions(*shell, Cli::command()))
        }
        Some(Command::Man) => return print_bytes(&manpage::man(Cli::command())?),
        None => {}
    }
    let rt = match load_or_report(&cli.config) {
        Ok(rt) => rt,
        Err(code) => return Ok(code),
    };
    let opts = rt.config.options.clone();
    let log_file = cli
        .logfile
        .clone()
        .or(opts.log_file.as_ref().map(PathBuf::from));
    let min = if cli.debug {
        log::Level::Debug
    } else if cli.verbose {
        log::Level::Verbose
    } else {
        log::Level::Info
    };
    // Before any thread exists: it changes the environment.
    let notify_problem = notify::init();
    if cli.daemon {
        daemonize()?;
    }
    log::init(log::Settings {
        min,
        stderr: !cli.daemon,
        format: cli.log_format,
        file: log_file.as_deref(),
        syslog: opts.use_syslog,
    })
    .context("cannot open the log")?;
    if let Some(problem) = notify_problem {
        error!("{problem}");
    }
    let pidfile = cli
        .pidfile
        .clone()
        .or(opts.pid_file.as_ref().map(PathBuf::from));
    let state_dir = cli
        .state_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&opts.state_dir));
    let store = state::Store::open(&state_dir).context("state directory")?;
    debug!("state directory {}", store.dir().display());
    let replay = load_replay_state(&store, opts.replay_cache_size)?;
    let capture = match cli.capture.as_deref() {
        Some("udp") => Capture::Udp,
        Some(_) => Capture::Pcap,
        None => opts.capture,
    };
    let iface = cli
        .interface
        .clone()
        .or(opts.interface.clone())
        .unwrap_or_else(|| "any".to_owned());
    let source = match capture {
        Capture::Pcap => engine::open_pcap(&iface, &rt, cli.only_v4)
            .with_context(|| format!("cannot capture on {iface}"))?,
        Capture::Udp => engine::open_udp(opts.spa_port.get(), cli.only_v4)
            .with_context(|| format!("cannot bind UDP port {}", opts.spa_port))?,
    };
    let keep = cli.keep_rules || opts.keep_rules_on_exit;
    let rt = Arc::new(rt);
    let stats = Arc::new(engine::Stats::default());
    // Signal handlers first: from the moment the status file or the "starting" line says the
    // daemon runs, SIGTERM must mean "close the grants and exit", never the default action.
    let tokio_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let (mut term, mut int, mut hup) = {
        use tokio::signal::unix::{signal, SignalKind};
        let _in_runtime = tokio_rt.enter();
        (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
            signal(SignalKind::hangup())?,
        )
    };
    let board = Arc::new(status::Board::default());
    board.set_config(rt.config.doors.len(), rt.verifier.len(), false);
    let status_writer = status::Writer::spawn(
        store.dir(),
        board.clone(),
        stats.clone(),
        status::Identity {
            config: std::fs::canonicalize(&cli.config)
                .unwrap_or_else(|_| cli.config.clone())
                .display()
                .to_string(),
            listening: match capture {
                Capture::Pcap => format!("pcap on {iface}"),
                Capture::Udp => format!("udp port {}", opts.spa_port),
            },
        },
    )
    .context("cannot start the status thread")?;
    info!(
        "knock-spad {} starting: {} door(s), {} SPA key(s), {} on {}, server name(s) {}",
        env!("CARGO_PKG_VERSION"),
        rt.config.doors.len(),
        rt.verifier.len(),
        match capture {
            Capture::Pcap => format!("pcap ({})", engine::bpf_filter(&rt, cli.only_v4)),
            Capture::Udp => format!("udp port {}", opts.spa_port),
        },
        match capture {
            Capture::Pcap => iface.as_str(),
            Capture::Udp => "all addresses",
        },
        rt.server_names.join(",")
    );

    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (reload_tx, reload_rx) = std::sync::mpsc::channel();
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let stop = Arc::new(AtomicBool::new(false));

    let manager = grants::Manager::new(rt.clone(), store.clone()).with_status(board.clone());
    let only_v4 = cli.only_v4;
    let engine_thread = {
        let rt = rt.clone();
        let stop = stop.clone();
        let tx = tx.clone();
        let stats = stats.clone();
        std::thread::Builder::new()
            .name("packets".into())
            .spawn(move || {
                let mut e = engine::Engine::new(rt, replay, store, tx, stats, only_v4);
                e.run(source, reload_rx, &stop);
            })
            .context("cannot start the packet thread")?
    };
    // Written once everything that can fail at start has worked, so a failed start leaves no
    // PID file behind, and a service manager reading it after `-d` returns finds a daemon.
    if let Some(p) = &pidfile {
        if let Err(e) = std::fs::write(p, format!("{}\n", std::process::id())) {
            stop.store(true, Ordering::Relaxed);
            let _ = engine_thread.join();
            status_writer.stop();
            bail!("cannot write pid file {}: {e}", p.display());
        }
    }
    report_started();
    notify::send("READY=1");

    let config_path = cli.config.clone();
    tokio_rt.block_on(async move {
        let manager = tokio::spawn(manager.run(rx, shutdown_rx, keep));
        loop {
            tokio::select! {
                _ = term.recv() => { info!("SIGTERM received"); break; }
                _ = int.recv() => { info!("SIGINT received"); break; }
                _ = hup.recv() => {
                    notify::send("RELOADING=1");
                    match runtime::load(&config_path) {
                        Ok(new) => {
                            // The packet thread logs "configuration reloaded" once it
                            // applies it (at most one poll interval later).
                            board.set_config(new.config.doors.len(), new.verifier.len(), true);
                            let new = Arc::new(new);
                            let _ = reload_tx.send(new.clone());
                            let _ = tx.send(engine::Action::Reload(new));
                            notify::send("READY=1\nSTATUS=configuration reloaded");
                        }
                        Err(errors) => {
                            for e in errors {
                                error!("SIGHUP: {e}");
                            }
                            error!("SIGHUP: the new configuration is invalid; keeping the old one");
                            notify::send(
                                "READY=1\nSTATUS=the new configuration is invalid; running the old one",
                            );
                        }
                    }
                }
            }
        }
        notify::send("STOPPING=1");
        let _ = shutdown_tx.send(true);
        let _ = manager.await;
        anyhow::Ok(())
    })?;
    stop.store(true, Ordering::Relaxed);
    let _ = engine_thread.join();
    status_writer.stop();
    if let Some(p) = &pidfile {
        let _ = std::fs::remove_file(p);
    }
    info!("exiting");
    Ok(ExitCode::SUCCESS)
}

/// The replay cache the daemon starts with: loaded from the state directory, or, when it was
/// lost, damaged or cut short, an empty one with the instant before which packets are refused
/// (kept in the state directory across restarts); its journal opened afresh.
fn load_replay_state(store: &state::Store, capacity: usize) -> anyhow::Result<engine::Replay> {
    let replay = match store.load_replay(capacity, status::unix_now()) {
        Ok(Some(state::LoadedReplay {
            cache,
            tail_lost: false,
        })) => Some(cache),
        // The last journal record is incomplete: almost surely an append a crash cut short
        // (its packet was never acted on), but a damaged record looks the same, so its packet
        // may have been: fail closed for packets stamped before now.
        Ok(Some(state::LoadedReplay {
            tail_lost: true, ..
        })) => {
            error!(
                "state: {}: the replay journal ends in an incomplete record (a crash during a \
                 write?); refusing every SPA packet stamped before now",
                store.dir().join("replay.journal").display()
            );
            None
        }
        // No replay cache but a grants file: the daemon ran here before and the cache was
        // deleted, so nothing says which packets it accepted: fail closed as for a corrupt
        // file. Neither file: a first start, nothing was ever accepted.
        Ok(None) if store.has_grants() => {
            error!(
                "state: {}: replay cache missing; refusing every SPA packet stamped before now",
                store.dir().display()
            );
            None
        }
        Ok(None) => Some(knock_shared::replay::ReplayCache::new(capacity)),
        Err(e) => {
            error!(
                "state: {e}; refusing every SPA packet stamped before now (a lost replay cache \
                 must not let an old packet in)"
            );
            None
        }
    };
    // A lost cache: start an empty one, and refuse packets stamped before now (the engine's
    // `not_before`), so none accepted before the loss gets in again.
    let (replay, not_before) = match replay {
        Some(c) => (c, 0),
        None => (
            knock_shared::replay::ReplayCache::new(capacity),
            status::unix_now() + 1,
        ),
    };
    // The instant before which packets are refused outlives this run (`replay.not-before`),
    // and is written before the fresh cache replaces the lost one on disk, so that a restart
    // soon after (a crash, say) still refuses what this start refuses.
    let (persisted, damaged) = match store.load_not_before(status::unix_now() + 1) {
        Ok(t) => (t, false),
        Err((fallback, e)) => {
            error!("state: {e}; refusing every SPA packet stamped before now");
            (fallback, true)
        }
    };
    let not_before = not_before.max(persisted);
    if not_before != 0 && (not_before != persisted || damaged) {
        store
            .save_not_before(not_before)
            .context("state directory: cannot record the replay cache loss")?;
    }
    let journal = store
        .open_journal(&replay)
        .context("state directory: cannot start the replay journal")?;
    Ok(engine::Replay {
        cache: replay,
        not_before,
        journal,
    })
}

/// The write end of the pipe to the parent of a daemon still starting (after `-d`), taken by
/// [`report_started`] or [`report_start_failure`], whichever comes first.
static START_PIPE: std::sync::Mutex<Option<std::fs::File>> = std::sync::Mutex::new(None);

/// Byte the daemon sends its waiting parent when it runs.
const START_OK: u8 = 0;
/// Byte the daemon sends, followed by the error text, when it could not start.
const START_FAILED: u8 = 1;

fn take_start_pipe() -> Option<std::fs::File> {
    START_PIPE.lock().ok().and_then(|mut p| p.take())
}

/// Tells the parent waiting after `-d` that the daemon runs (capture open, signal handlers
/// installed, PID file written), so it exits 0. Does nothing in the foreground.
fn report_started() {
    if let Some(mut pipe) = take_start_pipe() {
        use std::io::Write;
        let _ = pipe.write_all(&[START_OK]);
    }
}

/// Hands a start-up error to the parent waiting after `-d`, which prints it and exits 1.
/// Returns false when there is no such parent (foreground, or the daemon already started).
fn report_start_failure(msg: &str) -> bool {
    let Some(mut pipe) = take_start_pipe() else {
        return false;
    };
    use std::io::Write;
    let mut buf = vec![START_FAILED];
    buf.extend_from_slice(msg.as_bytes());
    let _ = pipe.write_all(&buf);
    true
}

/// What the parent prints and its exit code, from what the daemon sent through the pipe
/// before closing it.
fn start_outcome(sent: &[u8]) -> (Option<String>, u8) {
    match sent.split_first() {
        Some((&START_OK, _)) => (None, 0),
        Some((&START_FAILED, msg)) => (
            Some(format!(
                "knock-spad: error: {}",
                String::from_utf8_lossy(msg)
            )),
            1,
        ),
        _ => (
            Some("knock-spad: error: the daemon ended while starting (see its log)".to_owned()),
            1,
        ),
    }
}

/// Forks into the background: the child starts a new session with its standard streams on
/// /dev/null; the parent waits until the child runs ([`report_started`]) or fails
/// ([`report_start_failure`]), and exits 0 or prints the child's error and exits 1, so that
/// `knock-spad -d` with a wrong interface fails on the terminal, not silently in the
/// background. Called before any thread is started.
fn daemonize() -> anyhow::Result<()> {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the two-element array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        bail!("pipe failed: {}", std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nothing else; each
    // File below becomes their only owner.
    let (mut read_end, write_end) = unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    // SAFETY: fork() is called while the process is single-threaded (no runtime, no packet
    // thread yet), so the child inherits a consistent address space and the parent may go on
    // with ordinary code.
    match unsafe { libc::fork() } {
        -1 => bail!("fork failed: {}", std::io::Error::last_os_error()),
        0 => {}
        _ => {
            drop(write_end);
            let mut sent = Vec::new();
            let _ = read_end.read_to_end(&mut sent);
            let (message, code) = start_outcome(&sent);
            if let Some(m) = message {
                eprintln!("{m}");
            }
            // SAFETY: _exit ends the parent without running destructors or atexit handlers
            // that belong to the daemon, which goes on in the child.
            unsafe { libc::_exit(code.into()) }
        }
    }
    drop(read_end);
    if let Ok(mut p) = START_PIPE.lock() {
        *p = Some(write_end);
    }
    // SAFETY: setsid has no memory-safety preconditions.
    if unsafe { libc::setsid() } == -1 {
        bail!("setsid failed: {}", std::io::Error::last_os_error());
    }
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    use std::os::fd::AsRawFd;
    for fd in 0..3 {
        // SAFETY: dup2 on a valid open descriptor onto 0..2 only replaces the standard
        // streams; no Rust object owns those descriptors exclusively.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } == -1 {
            bail!("dup2 failed: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_of_a_daemon_exits_as_the_daemon_reports() {
        assert_eq!(start_outcome(&[START_OK]), (None, 0));
        assert_eq!(
            start_outcome(b"\x01cannot bind UDP port 62201: Address in use"),
            (
                Some("knock-spad: error: cannot bind UDP port 62201: Address in use".to_owned()),
                1
            )
        );
        // The daemon died (a panic, a signal) before saying anything.
        let (message, code) = start_outcome(b"");
        assert_eq!(code, 1);
        assert!(message.is_some_and(|m| m.contains("ended while starting")));
        // Anything else is not a start.
        assert_eq!(start_outcome(b"\x07").1, 1);
    }
}
