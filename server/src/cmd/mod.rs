//! The admin subcommands of `knock-spad` (`check`, `status`, `keys`, `close`, `server-key`,
//! `firewall-setup`, `completions`, `man`): each reads files and prints, none starts the daemon or holds its
//! state. Shared here: loading the configuration for a command and printing to stdout.

pub mod check;
pub mod close;
pub mod docs;
pub mod firewall_setup;
pub mod keys;
pub mod prometheus;
pub mod server_key;
pub mod status;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::Cli;
use crate::load;

/// Writes `bytes` to stdout; a closed pipe is not an error worth a message.
pub fn print_bytes(bytes: &[u8]) -> anyhow::Result<ExitCode> {
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
pub fn read_options(path: &Path) -> Result<knock_shared::config::Config, ExitCode> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => zeroize::Zeroizing::new(t),
        Err(e) => {
            eprintln!("knock-spad: {}: cannot read: {e}", path.display());
            return Err(ExitCode::from(2));
        }
    };
    knock_shared::config::parse_str(&text).map_err(|errs| {
        for e in errs {
            eprintln!("knock-spad: {}", load::parse_error(path, e));
        }
        ExitCode::from(2)
    })
}

/// `--state-dir`, else the configuration's `StateDir`.
pub fn state_dir_of(cli: &Cli) -> Result<PathBuf, ExitCode> {
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
