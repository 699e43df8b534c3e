//! `knock-spad close`: asks the running daemon, over its control socket
//! ([`crate::daemon::control`]), to end the matching grants now, and prints what it closed.

use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::Duration;

use crate::cli::Cli;
use crate::daemon::actions::CloseFilter;
use crate::daemon::control;

use super::state_dir_of;

/// How long the daemon may take to answer (it runs a stop command per grant, each bounded).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs `close` with the given filter (none given: `--all`).
pub fn run(
    cli: &Cli,
    key: Option<String>,
    door: Option<String>,
    address: Option<IpAddr>,
) -> anyhow::Result<ExitCode> {
    let dir = match state_dir_of(cli) {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    let filter = CloseFilter {
        key,
        door,
        address: address.map(knock_shared::types::canonical),
    };
    let path = dir.join(control::SOCKET);
    let mut stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            println!(
                "knock-spad is not running (no daemon answers on {}; a daemon with another \
                 StateDir or --state-dir has its socket elsewhere)",
                path.display()
            );
            return Ok(ExitCode::from(3));
        }
        Err(e) => {
            eprintln!("knock-spad: {}: {e}", path.display());
            return Ok(ExitCode::from(1));
        }
    };
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    stream.write_all(format!("{}\n", filter.to_line()).as_bytes())?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let mut closed = None;
    for line in answer.lines() {
        if let Some(why) = line.strip_prefix("error: ") {
            eprintln!("knock-spad: close: {why}");
            return Ok(ExitCode::from(2));
        }
        match line.strip_prefix("ok ") {
            Some(n) => closed = n.parse::<usize>().ok(),
            None => println!("{line}"),
        }
    }
    match closed {
        Some(0) => println!("no open grant matches"),
        Some(_) => {}
        None => {
            eprintln!("knock-spad: close: the daemon's answer ended early");
            return Ok(ExitCode::from(1));
        }
    }
    Ok(ExitCode::SUCCESS)
}
