//! Exit codes, and which error maps to which (the error type for invalid user input,
//! [`InputError`], is in `model`).
//!
//! Role: decide which exit code an error maps to. Everything the user typed wrong (an unknown
//! service, an invalid port, too many ports, a bad key name, a mistake in the configuration
//! file) is an [`InputError`] or a [`ConfigErrors`] and exits with [`EXIT_USAGE`], like clap's
//! own usage errors; a command after `--` that cannot be run is an [`ExecError`] and exits
//! with 127 or 126, as shells do; everything else (key file unreadable, host does not
//! resolve, send failed) exits with [`EXIT_FAILURE`].
//!
//! It must not print anything; `main` prints.

use crate::config::ConfigErrors;
use crate::model::InputError;

/// Success.
pub const EXIT_OK: i32 = 0;
/// Runtime failure: key missing, unreadable or too open, host does not resolve, send failed.
pub const EXIT_FAILURE: i32 = 1;
/// Invalid command line or input (clap uses 2 for its own errors too).
pub const EXIT_USAGE: i32 = 2;
/// The command after `--` exists but could not be run (as shells and `env` say).
pub const EXIT_CANNOT_EXEC: i32 = 126;
/// The command after `--` was not found (as shells and `env` say).
pub const EXIT_NOT_FOUND: i32 = 127;

/// The `EXIT STATUS` section of `--help`.
pub const EXIT_STATUS_HELP: &str = "\
Exit status:
  0    success
  1    runtime failure: the key file is missing, unreadable or readable by others, the
       configuration file is unreadable or writable by others, the host does not resolve,
       the packet could not be sent, ...
  2    invalid command line or input: unknown option, unknown service, invalid port, more
       than 16 ports, --allow-ip not an IP address, invalid key name, an error in the
       configuration file (each printed as FILE:LINE: message)
  126  open ... -- COMMAND: COMMAND could not be run
  127  open ... -- COMMAND: COMMAND was not found
  Once COMMAND runs, knock-spa's exit status is COMMAND's.";

/// The command after `--` could not be started (`exec` returned).
#[derive(Debug, thiserror::Error)]
#[error("cannot run `{program}`")]
pub struct ExecError {
    /// The program as typed.
    pub program: String,
    /// What `exec` said.
    #[source]
    pub source: std::io::Error,
}

/// The exit code for an error returned by [`crate::run`].
pub fn exit_code(err: &anyhow::Error) -> i32 {
    if let Some(e) = err.chain().find_map(|e| e.downcast_ref::<ExecError>()) {
        return match e.source.kind() {
            std::io::ErrorKind::NotFound => EXIT_NOT_FOUND,
            _ => EXIT_CANNOT_EXEC,
        };
    }
    if err
        .chain()
        .any(|e| e.is::<InputError>() || e.is::<ConfigErrors>())
    {
        EXIT_USAGE
    } else {
        EXIT_FAILURE
    }
}

/// The lines `main` prints after `knock-spa: error: `: one per configuration error
/// (`FILE:LINE: message`), else the single [`render`]ed line.
pub fn report_lines(err: &anyhow::Error) -> Vec<String> {
    match err.chain().find_map(|e| e.downcast_ref::<ConfigErrors>()) {
        Some(errors) => errors.0.iter().map(ToString::to_string).collect(),
        None => vec![render(err)],
    }
}

/// The error and its causes on one line, `outer: inner: innermost`. A cause whose text the
/// line already ends with is skipped: some errors (`knock_keys::KeyError::Io`) print their
/// source in their own message and also return it as `source()`.
pub fn render(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let msg = cause.to_string();
        if msg.is_empty() || line.ends_with(&msg) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&msg);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn render_chain_without_repeats() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let io_text = io.to_string();
        let e = anyhow::Error::new(knock_keys::KeyError::Io {
            path: "/k".into(),
            source: io,
        })
        .context("cannot use the key file");
        assert_eq!(
            render(&e),
            format!("cannot use the key file: /k: {io_text}")
        );
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(render(&e), "outer: inner");
    }

    #[test]
    fn input_errors_exit_2_even_with_context() {
        let e = anyhow::Error::new(InputError::BadPort { text: "0".into() }).context("open");
        assert_eq!(exit_code(&e), EXIT_USAGE);
        let r: Result<(), InputError> = Err(InputError::BadKeyName("a b".into()));
        let e = r.context("keygen").expect_err("is an error");
        assert_eq!(exit_code(&e), EXIT_USAGE);
    }

    #[test]
    fn config_errors_exit_2_one_line_each() {
        let e = anyhow::Error::new(ConfigErrors(vec![
            crate::config::ConfigError {
                file: "c".into(),
                line: 2,
                message: "bad".into(),
            },
            crate::config::ConfigError {
                file: "c".into(),
                line: 5,
                message: "worse".into(),
            },
        ]));
        assert_eq!(exit_code(&e), EXIT_USAGE);
        assert_eq!(report_lines(&e), ["c:2: bad", "c:5: worse"]);
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(report_lines(&e), ["outer: inner"]);
    }

    #[test]
    fn exec_errors_exit_like_a_shell() {
        let exec = |kind| {
            anyhow::Error::new(ExecError {
                program: "x".into(),
                source: std::io::Error::from(kind),
            })
        };
        assert_eq!(
            exit_code(&exec(std::io::ErrorKind::NotFound)),
            EXIT_NOT_FOUND
        );
        assert_eq!(
            exit_code(&exec(std::io::ErrorKind::PermissionDenied)),
            EXIT_CANNOT_EXEC
        );
    }

    #[test]
    fn other_errors_exit_1() {
        let e = anyhow::Error::new(std::io::Error::other("boom")).context("send");
        assert_eq!(exit_code(&e), EXIT_FAILURE);
    }
}
