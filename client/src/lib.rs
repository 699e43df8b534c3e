//! The `knock-spa` client: sends SPA packets (`open`, `close`), classic knock sequences
//! (`knock`), and generates keys (`keygen`).
//!
//! Role: the command-line front end over `knock_shared` (wire format, crypto) and `knock_keys`
//! (key files). The binary's `main` only parses the command line, calls [`run`] and maps the
//! error to an exit code ([`error::exit_code`]); everything else is here so it can be tested.
//!
//! It must not reimplement the protocol, and never prints secret key material except the one
//! `Keys = ...` line `keygen` exists to print.

pub mod cli;
pub mod error;
pub mod keygen;
pub mod knock;
pub mod net;
pub mod services;
pub mod spa;

use std::path::PathBuf;

use anyhow::anyhow;
use knock_shared::wire::Action;

use crate::cli::{Cli, Command};

/// Where the key lives unless `--key` says otherwise, relative to `$HOME`.
pub const DEFAULT_KEY_IN_HOME: &str = ".knock/key";

/// `$HOME/.knock/key`.
pub fn default_key_path() -> anyhow::Result<PathBuf> {
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => Ok(PathBuf::from(home).join(DEFAULT_KEY_IN_HOME)),
        _ => Err(anyhow!(
            "$HOME is not set, so there is no default key file ~/{DEFAULT_KEY_IN_HOME} \
             (give --key FILE)"
        )),
    }
}

/// `--key FILE`, else the default.
fn key_path(key: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    match key {
        Some(path) => Ok(path.clone()),
        None => default_key_path(),
    }
}

/// Runs `open` or `close`: input is checked first (exit 2 for a typo), then the key.
fn spa_command(action: Action, args: &cli::SpaArgs, key: Option<&PathBuf>) -> anyhow::Result<()> {
    let plan = spa::resolve(action, args, &services::Services::system())?;
    spa::execute(&plan, &key_path(key)?)
}

/// Runs one command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let key = cli.key.as_ref();
    match &cli.command {
        Command::Open(args) => spa_command(Action::Open, args, key),
        Command::Close(args) => spa_command(Action::Close, args, key),
        Command::Keygen(args) => {
            let path = match &args.output {
                Some(path) => path.clone(),
                None => key_path(key)?,
            };
            keygen::execute(args.name.as_deref(), &path, args.force)
        }
        Command::Knock(args) => knock::execute(args),
    }
}
