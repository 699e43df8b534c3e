//! `knock-spad`: keeps ports closed and opens one for one client address on a valid knock
//! sequence (knockd-compatible) or a single authenticated UDP packet (SPA).
//!
//! Exit codes: 0 clean exit; 1 runtime failure (capture, socket, state directory); 2 invalid
//! command line or configuration (`check` exits 2 on any error).

mod engine;
mod exec;
mod grants;
mod log;
mod runtime;
mod state;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use knock_shared::config::Capture;

/// Port-knocking daemon: knock sequences (knockd-compatible) and single packet authorization.
#[derive(Debug, Parser)]
#[command(name = "knock-spad", version, disable_version_flag = true, about, long_about = None)]
struct Cli {
    /// Configuration file (knockd.conf syntax plus SPA directives; see knock-spad.conf(5)).
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
    /// Run in the background (default: foreground, as systemd wants).
    #[arg(short = 'd', long = "daemon")]
    daemon: bool,
    /// Debug output.
    #[arg(short = 'D', long = "debug")]
    debug: bool,
    /// Verbose output (knock stages, timeouts).
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    /// Ignore IPv6.
    #[arg(short = '4', long = "only-ip-v4")]
    only_v4: bool,
    /// Print the version and exit.
    #[arg(short = 'V', long = "version", action = clap::ArgAction::Version)]
    version: Option<bool>,
    /// PID file (overrides `PidFile`).
    #[arg(short = 'p', long = "pidfile", value_name = "FILE")]
    pidfile: Option<PathBuf>,
    /// Log file (overrides `LogFile`).
    #[arg(short = 'g', long = "logfile", value_name = "FILE")]
    logfile: Option<PathBuf>,
    /// State directory (overrides `StateDir`).
    #[arg(long = "state-dir", value_name = "DIR")]
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("knock-spad: error: {e:#}");
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
    println!(
        "{}: OK ({} door(s), {} SPA key(s))",
        cli.config.display(),
        rt.config.doors.len(),
        rt.verifier.len()
    );
    ExitCode::SUCCESS
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Some(Command::Check) = cli.command {
        return Ok(check(&cli));
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
    let pidfile = cli
        .pidfile
        .clone()
        .or(opts.pid_file.as_ref().map(PathBuf::from));
    if let Some(p) = &pidfile {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write pid file {}", p.display()))?;
    }
    let state_dir = cli
        .state_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&opts.state_dir));
    let store = state::Store::open(&state_dir).context("state directory")?;
    debug!("state directory {}", store.dir().display());
    let replay = match store.load_replay(opts.replay_cache_size) {
        Ok(Some(c)) => Some(c),
        Ok(None) => Some(knock_shared::replay::ReplayCache::new(
            opts.replay_cache_size,
        )),
        Err(e) => {
            error!(
                "state: {e}; refusing every SPA packet stamped before now (a lost replay cache \
                 must not let an old packet in)"
            );
            None
        }
    };
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

    let tokio_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (reload_tx, reload_rx) = std::sync::mpsc::channel();
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(engine::Stats::default());

    let manager = grants::Manager::new(rt.clone(), store.clone());
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

    let config_path = cli.config.clone();
    tokio_rt.block_on(async move {
        let manager = tokio::spawn(manager.run(rx, shutdown_rx, keep));
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        loop {
            tokio::select! {
                _ = term.recv() => { info!("SIGTERM received"); break; }
                _ = int.recv() => { info!("SIGINT received"); break; }
                _ = hup.recv() => {
                    match runtime::load(&config_path) {
                        Ok(new) => {
                            // The packet thread logs "configuration reloaded" once it
                            // applies it (at most one poll interval later).
                            let new = Arc::new(new);
                            let _ = reload_tx.send(new.clone());
                            let _ = tx.send(engine::Action::Reload(new));
                        }
                        Err(errors) => {
                            for e in errors {
                                error!("SIGHUP: {e}");
                            }
                            error!("SIGHUP: the new configuration is invalid; keeping the old one");
                        }
                    }
                }
            }
        }
        let _ = shutdown_tx.send(true);
        let _ = manager.await;
        anyhow::Ok(())
    })?;
    stop.store(true, Ordering::Relaxed);
    let _ = engine_thread.join();
    if let Some(p) = &pidfile {
        let _ = std::fs::remove_file(p);
    }
    info!("exiting");
    Ok(ExitCode::SUCCESS)
}

/// Forks into the background: the parent exits, the child starts a new session with its
/// standard streams on /dev/null. Called before any thread is started.
fn daemonize() -> anyhow::Result<()> {
    // SAFETY: fork() is called while the process is single-threaded (no runtime, no packet
    // thread yet), so the child inherits a consistent address space; the parent only calls
    // _exit.
    match unsafe { libc::fork() } {
        -1 => bail!("fork failed: {}", std::io::Error::last_os_error()),
        0 => {}
        _ => {
            // SAFETY: _exit is async-signal-safe and ends the parent without running any
            // destructor the child still relies on.
            unsafe { libc::_exit(0) }
        }
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
