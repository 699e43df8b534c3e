//! The `knock-spa` client: sends SPA packets (`open`, `close`, optionally waiting for the port
//! and running a command afterwards; `proxy` for ssh's ProxyCommand), classic knock sequences
//! (`knock`), generates keys (`keygen`), shows the files it reads (`config`), and prints its
//! shell completions and man pages (`completions`, `man`).
//!
//! Role: the command-line front end over `knock_shared` (wire format, crypto) and `knock_keys`
//! (key files). The binary's `main` only parses the command line, calls [`run`] and maps the
//! error to an exit code ([`error::exit_code`]); everything else is here so it can be tested.
//!
//! It must not reimplement the protocol, and never prints secret key material except the one
//! `Keys = ...` line `keygen` exists to print.

pub mod cli;
pub mod conf_page;
pub mod config;
pub mod error;
pub mod exec;
pub mod generate;
pub mod keygen;
pub mod knock;
pub mod model;
pub mod net;
pub mod places;
pub mod proxy;
pub mod report;
pub mod services;
pub mod spa;
pub mod wait;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use knock_shared::wire::Action;

use crate::cli::{Cli, Command, OpenArgs};
use crate::config::Config;
use crate::model::InputError;
use crate::places::Places;
use crate::services::Services;
use crate::spa::{Sender, SpaPlan};

/// The key `open` uses without `--key` or a stanza's `key`: the first of
/// `$XDG_CONFIG_HOME/knock-spa/key`, `~/.knock/key` that exists, else where `keygen` would
/// write it.
pub fn default_key_path() -> anyhow::Result<PathBuf> {
    Places::from_env().default_key(|p| p.exists(), Path::is_dir)
}

/// Reads the configuration file `--config`, `$KNOCK_SPA_CONFIG` or the first default file
/// that exists names; `None` when there is none.
pub fn load_config(flag: Option<&Path>, services: &Services) -> anyhow::Result<Option<Config>> {
    let places = Places::from_env();
    match config::locate(
        flag,
        std::env::var_os(config::CONFIG_ENV),
        &places.config_files(),
        |p| p.exists(),
    ) {
        Some(source) => config::load(&source, places.home.as_deref(), services),
        None => Ok(None),
    }
}

/// The key file for a plan: `--key`, else the stanza's `key`, else the default.
fn key_for(cli: &Cli, host: &str, config: Option<&Config>) -> anyhow::Result<PathBuf> {
    let stanza = spa::stanza_for(host, config);
    spa::key_path(cli.key.as_deref(), stanza, default_key_path)
}

/// Resolves `open` / `close`: the configuration and the input are checked first (exit 2 for
/// a typo), then the key is loaded and HOST resolved.
fn prepare(action: Action, args: &cli::SpaArgs, cli: &Cli) -> anyhow::Result<Sender> {
    let services = Services::system();
    let config = load_config(cli.config.as_deref(), &services)?;
    let plan = spa::resolve(action, args, config.as_ref(), &services)?;
    let key = key_for(cli, args.host(), config.as_ref())?;
    Sender::prepare(plan, &key)
}

/// `open`: the packets, then `--wait` (for the port to accept a connection) or `--delay`, then
/// the command, if any.
fn open(args: &OpenArgs, cli: &Cli) -> anyhow::Result<()> {
    let sender = prepare(Action::Open, &args.spa, cli)?;
    if args.wait {
        let port = first_tcp_port(sender.plan())?;
        let (_, took) = sender
            .send_and_connect(port, Duration::from_secs(args.timeout))?
            .map_err(|e| anyhow!("port {port}/tcp on {}: {e}", sender.plan().host))?;
        if !args.spa.quiet {
            eprintln!(
                "port {port}/tcp on {} accepts connections ({:.3} s)",
                sender.plan().host,
                took.as_secs_f64()
            );
        }
        if args.command.is_empty() {
            return Ok(());
        }
        return Err(exec::wait_then_exec(Duration::ZERO, &args.command));
    }
    sender.send()?;
    if args.command.is_empty() {
        return Ok(());
    }
    let delay = Duration::from_millis(args.delay_ms.unwrap_or(exec::DEFAULT_WAIT_MS));
    Err(exec::wait_then_exec(delay, &args.command))
}

/// The first TCP port a plan asks for: what `--wait` connects to.
fn first_tcp_port(plan: &SpaPlan) -> Result<u16, InputError> {
    plan.ports
        .iter()
        .find(|p| p.proto == knock_shared::types::Proto::Tcp)
        .map(|p| p.port.get())
        .ok_or_else(|| {
            InputError::NoTcpPort(
                plan.ports
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            )
        })
}

/// `proxy HOST PORT`.
fn proxy(args: &cli::ProxyArgs, cli: &Cli) -> anyhow::Result<()> {
    let services = Services::system();
    let config = load_config(cli.config.as_deref(), &services)?;
    let service = format!("{}/tcp", args.port);
    let mut plan = spa::resolve_request(
        Action::Open,
        Some(&service),
        &args.host,
        &args.opts,
        config.as_ref(),
        &services,
    )?;
    plan.quiet = !args.verbose;
    plan.verbose = args.verbose;
    let key = key_for(cli, &args.host, config.as_ref())?;
    let sender = Sender::prepare(plan, &key)?;
    proxy::run(
        &sender,
        &args.host,
        args.port,
        Duration::from_secs(args.timeout),
    )
}

/// Writes generated bytes to stdout.
fn print_bytes(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}

/// Runs one command.
///
/// `open ... -- COMMAND` does not return when COMMAND starts: the process becomes COMMAND.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Open(args) => open(args, &cli),
        Command::Close(args) => prepare(Action::Close, args, &cli)?.send().map(drop),
        Command::Proxy(args) => proxy(args, &cli),
        Command::Config(_) => {
            let services = Services::system();
            let report = report::render(cli.config.as_deref(), cli.key.as_deref(), &services)?;
            print_bytes(report.text.as_bytes())?;
            match report.unusable {
                0 => Ok(()),
                n => Err(anyhow!("{n} file(s) above cannot be used")),
            }
        }
        Command::Keygen(args) => {
            let path = match (&args.output, &cli.key) {
                (Some(path), _) | (None, Some(path)) => path.clone(),
                (None, None) => default_key_path()?,
            };
            keygen::execute(args.name.as_deref(), &path, args.force, args.public_key)
        }
        Command::Knock(args) => knock::execute(args),
        Command::Completions(args) => print_bytes(&generate::completion_script(args.shell)),
        Command::Man(args) if args.section == "5" => print_bytes(&conf_page::man_page()),
        Command::Man(args) => match generate::man_page(args.command.as_deref()) {
            Some(page) => print_bytes(&page.context("cannot render the man page")?),
            // clap accepts only the names in `cli::MAN_COMMANDS`, each a subcommand.
            None => Err(anyhow!(
                "no man page for `{}`",
                args.command.as_deref().unwrap_or("")
            )),
        },
    }
}
