//! `open ... -- COMMAND`: once the packet is sent, wait a moment for the server to open the
//! port, then replace this process with COMMAND (the classic "knock, then ssh" in one line).
//!
//! Role: [`wait_then_exec`] sleeps and calls `execvp` through
//! `std::os::unix::process::CommandExt::exec`; it returns only when the command could not be
//! started. The command inherits stdin, stdout, stderr and the environment, and its exit
//! status becomes knock-spa's.
//!
//! It must not run a shell: the words after `--` are the program and its arguments as given.

use std::process::Command;
use std::time::Duration;

use anyhow::anyhow;

use crate::error::ExecError;

/// How long to wait between sending the packet and running the command, unless `--wait`.
pub const DEFAULT_WAIT_MS: u64 = 200;

/// Sleeps `wait`, then execs `command[0]` (looked up in `$PATH` unless it holds a `/`) with
/// the remaining words as arguments. Returns only on failure, with an [`ExecError`] when
/// `exec` itself failed.
pub fn wait_then_exec(wait: Duration, command: &[String]) -> anyhow::Error {
    let Some((program, args)) = command.split_first() else {
        return anyhow!("no command given after `--`");
    };
    std::thread::sleep(wait);
    let source = std::os::unix::process::CommandExt::exec(Command::new(program).args(args));
    anyhow::Error::new(ExecError {
        program: program.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{exit_code, EXIT_NOT_FOUND};

    #[test]
    fn empty_command_is_an_error_not_a_panic() {
        let err = wait_then_exec(Duration::ZERO, &[]);
        assert!(err.to_string().contains("--"), "{err}");
    }

    #[test]
    fn missing_program_returns_with_127() {
        // exec fails before replacing anything, so this is safe inside the test process.
        let err = wait_then_exec(
            Duration::from_millis(1),
            &["/nonexistent/knock-spa-test-program".to_owned()],
        );
        assert_eq!(exit_code(&err), EXIT_NOT_FOUND);
        assert!(
            format!("{err:#}").contains("cannot run `/nonexistent/knock-spa-test-program`"),
            "{err:#}"
        );
    }
}
