//! Running firewall commands: argv, no shell, bounded in time.
//!
//! A rendered command template is a list of words; the first is the program. Substituted
//! values are validated IP addresses, port numbers and protocol names only (the config module
//! renders them), so no packet byte can reach an argument, let alone a shell.

use std::time::Duration;

/// Longest a command may run before it is killed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The template rendered to no words.
    #[error("empty command")]
    Empty,
    /// It could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// argv\[0\].
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// It exited unsuccessfully.
    #[error("exited with {status}: {stderr}")]
    Failed {
        /// Exit status.
        status: std::process::ExitStatus,
        /// The first line of its stderr.
        stderr: String,
    },
    /// It ran longer than [`COMMAND_TIMEOUT`] and was killed.
    #[error("timed out after {0:?} and was killed")]
    Timeout(Duration),
}

/// Runs `argv` and waits for it.
pub async fn run(argv: &[String]) -> Result<(), ExecError> {
    let (program, args) = argv.split_first().ok_or(ExecError::Empty)?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|source| ExecError::Spawn {
        program: program.clone(),
        source,
    })?;
    match tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output()).await {
        Err(_) => Err(ExecError::Timeout(COMMAND_TIMEOUT)),
        Ok(Err(source)) => Err(ExecError::Spawn {
            program: program.clone(),
            source,
        }),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => Err(ExecError::Failed {
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned(),
        }),
    }
}

/// Renders argv for a log line, quoting words with spaces.
pub fn display(argv: &[String]) -> String {
    argv.iter()
        .map(|w| {
            if w.is_empty() || w.contains(char::is_whitespace) {
                format!("'{w}'")
            } else {
                w.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn shell_metacharacters_are_passed_literally() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("pwned");
        let out = dir.path().join("argv");
        // If a shell interpreted this, `touch` would create the marker file.
        let argv: Vec<String> = vec![
            "/bin/sh".into(),
            "-c".into(),
            "printf '%s\\n' \"$@\" > \"$0\"".into(),
            out.display().to_string(),
            "; touch".into(),
            marker.display().to_string(),
            "$(id)".into(),
            "&&".into(),
        ];
        rt().block_on(run(&argv)).expect("runs");
        let written = std::fs::read_to_string(&out).expect("argv file");
        assert_eq!(
            written,
            format!("; touch\n{}\n$(id)\n&&\n", marker.display())
        );
        assert!(!marker.exists());
    }

    #[test]
    fn failures_are_reported() {
        let r = rt();
        assert!(matches!(r.block_on(run(&[])), Err(ExecError::Empty)));
        assert!(matches!(
            r.block_on(run(&["/nonexistent/iptables".into()])),
            Err(ExecError::Spawn { .. })
        ));
        assert!(matches!(
            r.block_on(run(&["/bin/false".into()])),
            Err(ExecError::Failed { .. })
        ));
        r.block_on(run(&["/bin/true".into()]))
            .expect("true succeeds");
    }
}
