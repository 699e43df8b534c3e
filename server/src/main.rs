//! `knock-spad`: keeps ports closed and opens one for one client address on a valid knock
//! sequence (knockd-compatible) or a single authenticated UDP packet (SPA).
//!
//! Exit codes: 0 clean exit; 1 runtime failure (capture, socket, state directory); 2 invalid
//! command line or configuration (`check` exits 2 on any error), or another daemon holds the
//! state directory.

mod cli;
mod cmd;
mod daemon;
mod firewall;
mod load;
mod log;
mod store;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // A start refused because another daemon holds the state directory is a usage
            // error (exit 2); anything else is a runtime failure (exit 1).
            let code = if e
                .downcast_ref::<store::LockError>()
                .is_some_and(|l| matches!(l, store::LockError::Held { .. }))
            {
                2
            } else {
                1
            };
            let msg = format!("{e:#}");
            // A daemon still starting hands its error to the waiting parent, which prints it
            // on the terminal; its own stderr is /dev/null by then.
            if !daemon::process::report_start_failure(&msg, code) {
                eprintln!("knock-spad: error: {msg}");
            }
            ExitCode::from(code)
        }
    }
}

/// Dispatches a subcommand, or runs the daemon when there is none.
fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Some(Command::Check) => Ok(cmd::check::run(&cli)),
        Some(Command::Status { format, json }) => cmd::status::run(&cli, *format, *json),
        Some(Command::Keys { command }) => cmd::keys::run(&cli, command),
        Some(Command::FirewallSetup {
            ports,
            apply,
            no_ipv6,
            nft,
            remove,
        }) => match (*nft, *remove) {
            (true, true) => cmd::firewall_setup::remove_nft(),
            (true, false) => cmd::firewall_setup::run_nft(&cli, ports, *apply),
            _ => cmd::firewall_setup::run(&cli, ports, *apply, *no_ipv6),
        },
        Some(Command::ServerKey {
            output,
            force,
            show,
        }) => cmd::server_key::run(output.as_deref(), *force, show.as_deref()),
        Some(Command::Completions { shell }) => {
            cmd::print_bytes(&cmd::docs::completions(*shell, Cli::command()))
        }
        Some(Command::Close {
            key,
            door,
            address,
            all: _,
        }) => cmd::close::run(&cli, key.clone(), door.clone(), *address),
        Some(Command::Man { section }) => {
            cmd::print_bytes(&cmd::docs::page(section, Cli::command())?)
        }
        None => daemon::run(cli),
    }
}
