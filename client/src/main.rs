//! `knock-spa`: parse the command line, run, print the error chain on one line (one line per
//! configuration file error), exit with a documented code (see `knock_spa::error`).

use std::process::ExitCode;

use clap::Parser as _;
use knock_spa::cli::Cli;
use knock_spa::error::{exit_code, report_lines, EXIT_OK};

fn main() -> ExitCode {
    // clap prints its own usage errors and exits with 2; --help and --version exit with 0.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        Err(err) => knock_spa::cli::explain_error(err, &argv).exit(),
    };
    if let Some(err) = knock_spa::cli::check(&cli, &argv) {
        err.exit();
    }
    let code = match knock_spa::run(cli) {
        Ok(()) => EXIT_OK,
        Err(err) => {
            for line in report_lines(&err) {
                eprintln!("knock-spa: error: {line}");
            }
            exit_code(&err)
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
