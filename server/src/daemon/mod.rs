//! The daemon: bring-up (configuration, the state directory and its lock, capture, signal
//! handlers, the control socket), the main loop (SIGTERM, SIGINT, SIGHUP reloads, SIGUSR1 log
//! reopening, supervision of the other parts), and the orderly stop. The parts it starts are
//! in its submodules: the packet thread ([`packets`], reading from [`capture`]), the grant
//! keeper task ([`grants`], fed by [`actions`] and [`control`]), and the process plumbing
//! ([`process`], [`notify`], [`supervise`]).
//!
//! Threads: `packets` (capture, verifier, tracker), `snapshots` (replay snapshots, off the
//! packet thread), `status` (the status file), and the
//! current-thread tokio runtime here (signals, the control socket and the grant keeper). They
//! talk over bounded channels only; each resource has one owner.

pub mod actions;
pub mod capture;
pub mod control;
pub mod grants;
pub mod host_addrs;
pub mod lanes;
pub mod notify;
pub mod packets;
pub mod privs;
pub mod process;
pub mod reconcile;
pub mod supervise;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use knock_shared::config::Capture;

use crate::cli::Cli;
use crate::firewall::nft;
use crate::load;
use crate::log::{self, debug, error, info};
use crate::store::{self, status};

/// Logs the configuration's warnings as `check` prints them (`FILE:LINE: warning: ...`),
/// once per load.
fn log_config_warnings(
    prefix: &str,
    path: &std::path::Path,
    config: &knock_shared::config::Config,
) {
    for w in &config.warnings {
        info!(
            "{prefix}{}:{}: warning: {}",
            path.display(),
            w.line,
            w.message
        );
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // Before anything is read for good: from here on the daemon's files are read and made as
    // the User's, so what a reload will read after the switch is what the start read.
    let user = match cli
        .user
        .clone()
        .or_else(|| privs::configured_user(&cli.config))
    {
        Some(name) => Some(privs::prepare_user(&name)?),
        None => None,
    };
    let rt = match load::read_or_report(&cli.config) {
        Ok(rt) => rt,
        Err(code) => {
            if let Some(u) = &user {
                eprintln!(
                    "knock-spad: (read as User {}: the configuration and the files it names \
                     must be readable by that user)",
                    u.name
                );
            }
            return Ok(code);
        }
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
        process::daemonize()?;
    }
    let log_warning = log::init(log::Settings {
        min,
        stderr: !cli.daemon,
        format: cli.log_format,
        file: log_file.as_deref(),
        syslog: opts.use_syslog,
    })
    .context("cannot open the log")?;
    if let Some(w) = log_warning {
        error!("{w}");
    }
    if let Some(problem) = notify_problem {
        error!("{problem}");
    }
    log_config_warnings("", &cli.config, &rt.config);
    let pidfile = cli
        .pidfile
        .clone()
        .or(opts.pid_file.as_ref().map(PathBuf::from));
    let state_dir = cli
        .state_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&opts.state_dir));
    if let Some(u) = &user {
        privs::check_state_dir_owner(&state_dir, u)?;
    }
    let store = store::StateDir::open(&state_dir).context("state directory")?;
    // Before anything is read from the directory: a second daemon must not read, close or
    // reopen the first one's grants. Held until the process ends.
    let _lock = store.lock()?;
    debug!("state directory {}", store.dir().display());
    if opts.firewall == knock_shared::config::Firewall::Nftables {
        // The table guards the ports from here on, daemon or not (fail closed); applying it
        // again keeps the elements of a run before (reconciled by the grant keeper).
        let ports = nft::table::guarded_ports(&rt.config);
        nft::table::apply(&nft::table::script(&ports))
            .map_err(|e| anyhow::anyhow!("nftables: cannot set up table inet knock_spa: {e}"))?;
        let list: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
        info!(
            "nftables: table inet {} in place, guarding {}",
            nft::table::TABLE,
            list.join(", ")
        );
    }
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
        Capture::Pcap => capture::open_pcap(&iface, &rt, cli.only_v4)
            .with_context(|| format!("cannot capture on {iface}"))?,
        Capture::Udp => capture::open_udp(opts.spa_port.get(), cli.only_v4)
            .with_context(|| format!("cannot bind UDP port {}", opts.spa_port))?,
    };
    // The capture is open and the files are read: from here on, only what the firewall
    // commands need (and the User's files, when there is one).
    let legacy = privs::legacy_iptables(&rt);
    if !legacy.is_empty() {
        info!(
            "privileges: keeping CAP_NET_RAW: {} is iptables-legacy, which needs a raw socket",
            legacy
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    info!(
        "{}",
        privs::drop_privileges(user.as_ref(), !legacy.is_empty())?
    );
    let keep = cli.keep_rules || opts.keep_rules_on_exit;
    let rt = Arc::new(rt);
    let stats = Arc::new(status::Stats::default());
    // Signal handlers first: from the moment the status file or the "starting" line says the
    // daemon runs, SIGTERM must mean "close the grants and exit", never the default action.
    let tokio_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let (mut term, mut int, mut hup, mut usr1, control) = {
        use tokio::signal::unix::{signal, SignalKind};
        let _in_runtime = tokio_rt.enter();
        (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
            signal(SignalKind::hangup())?,
            signal(SignalKind::user_defined1())?,
            control::bind(store.dir()).with_context(|| {
                format!(
                    "cannot create the control socket {}",
                    store.dir().join(control::SOCKET).display()
                )
            })?,
        )
    };
    let control_path = store.dir().join(control::SOCKET);
    let board = Arc::new(status::StatusBoard::default());
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
            Capture::Pcap => format!("pcap ({})", capture::bpf_filter(&rt, cli.only_v4)),
            Capture::Udp => format!("udp port {}", opts.spa_port),
        },
        match capture {
            Capture::Pcap => iface.as_str(),
            Capture::Udp => "all addresses",
        },
        rt.server_names.join(",")
    );

    let (tx, rx) = tokio::sync::mpsc::channel(actions::QUEUE_LEN);
    let (reload_tx, reload_rx) = std::sync::mpsc::channel();
    let (one_time_tx, one_time_rx) = std::sync::mpsc::sync_channel(actions::QUEUE_LEN);
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(actions::Shutdown::Running);
    let packets_heart = Arc::new(supervise::Heartbeat::default());
    let keeper_heart = Arc::new(supervise::Heartbeat::default());
    let stop = Arc::new(AtomicBool::new(false));

    let manager = grants::GrantKeeper::new(rt.clone(), store.clone())
        .with_status(board.clone(), stats.clone())
        .with_one_time(one_time_tx);
    let only_v4 = cli.only_v4;
    let snapshots = store::SnapshotWriter::spawn(store.clone(), |e| {
        error!("cannot write the replay snapshot (the journals keep growing): {e}");
    })
    .context("cannot start the snapshot thread")?;
    let engine_thread = {
        let rt = rt.clone();
        let stop = stop.clone();
        let tx = tx.clone();
        let stats = stats.clone();
        let heart = packets_heart.clone();
        std::thread::Builder::new()
            .name("packets".into())
            .spawn(move || {
                let mut e =
                    packets::PacketLoop::new(rt, replay, store, snapshots, tx, stats, only_v4);
                e.run(source, reload_rx, one_time_rx, &stop, &heart);
            })
            .context("cannot start the packet thread")?
    };
    // Written once everything that can fail at start has worked, so a failed start leaves no
    // PID file behind, and a service manager reading it after `-d` returns finds a daemon.
    if let Some(p) = &pidfile {
        if let Err(e) = process::write_pid_file(p) {
            stop.store(true, Ordering::Relaxed);
            let _ = engine_thread.join();
            status_writer.stop();
            bail!("cannot write pid file {}: {e}", p.display());
        }
    }
    process::report_started();
    notify::send("READY=1");

    let config_path = cli.config.clone();
    let mut supervisor = supervise::Supervisor::new(
        &[
            ("packet thread", packets_heart),
            ("grant keeper", keeper_heart.clone()),
        ],
        notify::watchdog(),
    );
    let failed = tokio_rt.block_on(async move {
        let mut manager = tokio::spawn(manager.run(rx, shutdown_rx, keep, keeper_heart));
        tokio::spawn(control::serve(control, tx.clone()));
        let mut tick = tokio::time::interval(supervisor.interval());
        let mut manager_done = false;
        let mut failed = false;
        let mut stalled = None;
        loop {
            tokio::select! {
                _ = term.recv() => { info!("SIGTERM received"); break; }
                _ = int.recv() => { info!("SIGINT received"); break; }
                _ = usr1.recv() => match log::reopen() {
                    Ok(Some(path)) => info!("SIGUSR1: reopened the log file {}", path.display()),
                    Ok(None) => info!("SIGUSR1: no log file to reopen"),
                    Err(e) => error!("SIGUSR1: cannot reopen the log file: {e}; writing on to the old one"),
                },
                ended = &mut manager => {
                    manager_done = true;
                    failed = true;
                    let how = match ended {
                        Err(e) if e.is_panic() => "panicked",
                        _ => "ended",
                    };
                    error!(
                        "the grant keeper {how}; exiting with status 1 so that the service \
                         manager restarts the daemon (open grants stay recorded)"
                    );
                    break;
                }
                _ = tick.tick() => match supervisor.tick(std::time::Instant::now()) {
                    supervise::Verdict::Live => {
                        if let Some(part) = stalled.take() {
                            info!("the {part} moves again");
                        }
                    }
                    supervise::Verdict::Stalled(part) => {
                        if stalled.replace(part).is_none() {
                            error!(
                                "the {part} has not moved for {:?}; the watchdog (if any) is \
                                 no longer told that the daemon lives",
                                supervise::STALL_AFTER
                            );
                        }
                    }
                    supervise::Verdict::Ended(part) => {
                        failed = true;
                        error!(
                            "the {part} ended; exiting with status 1 so that the service \
                             manager restarts the daemon (open grants stay recorded)"
                        );
                        break;
                    }
                },
                _ = hup.recv() => {
                    notify::send("RELOADING=1");
                    match load::read(&config_path) {
                        Ok(new) => {
                            log_config_warnings("SIGHUP: ", &config_path, &new.config);
                            if new.config.options.user != opts.user {
                                info!("SIGHUP: User changed; it takes effect at the next start");
                            }
                            // One path: the packet thread applies it (at most one poll
                            // interval later) or refuses it, and hands it on to the grant
                            // keeper in order with its actions; the keeper then publishes it
                            // in the status file. A refusal leaves the old one everywhere.
                            let _ = reload_tx.send(Arc::new(new));
                            notify::send("READY=1\nSTATUS=configuration reloaded");
                        }
                        Err(errors) => {
                            for e in errors {
                                error!("SIGHUP: {e}");
                            }
                            error!("SIGHUP: the new configuration is invalid; keeping the old one");
                            stats.reload_refused();
                            notify::send(
                                "READY=1\nSTATUS=the new configuration is invalid; running the old one",
                            );
                        }
                    }
                }
            }
        }
        notify::send("STOPPING=1");
        let _ = shutdown_tx.send(if failed {
            actions::Shutdown::Failed
        } else {
            actions::Shutdown::Stop
        });
        if !manager_done {
            let _ = manager.await;
        }
        failed
    });
    stop.store(true, Ordering::Relaxed);
    let _ = engine_thread.join();
    status_writer.stop();
    let _ = std::fs::remove_file(&control_path);
    if let Some(p) = &pidfile {
        process::remove_pid_file(p);
    }
    info!("exiting");
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The replay cache the daemon starts with: loaded from the state directory, or, when it was
/// lost, damaged or cut short, an empty one with the instant before which packets are refused
/// (kept in the state directory across restarts); its journal opened afresh.
fn load_replay_state(
    store: &store::StateDir,
    capacity: usize,
) -> anyhow::Result<store::ReplayState> {
    let replay = match store.load_replay(capacity, status::unix_now()) {
        Ok(Some(store::LoadedReplay {
            cache,
            tail_lost: false,
        })) => Some(cache),
        // The last journal record is incomplete: almost surely an append a crash cut short
        // (its packet was never acted on), but a damaged record looks the same, so its packet
        // may have been: fail closed for packets stamped before now.
        Ok(Some(store::LoadedReplay {
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
    Ok(store::ReplayState {
        cache: replay,
        not_before,
        journal,
    })
}
