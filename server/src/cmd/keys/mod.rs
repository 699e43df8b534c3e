//! `knock-spad keys list|add|revoke`: the dispatch and the messages; the edits themselves
//! (which lines change, validating the result before anything is written) are in [`edit`].

pub mod edit;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::{Cli, KeysCommand};

use super::{print_bytes, read_options};

fn keys_error(e: edit::KeysError, edit: bool) -> ExitCode {
    match e {
        edit::KeysError::Invalid(errs) => {
            for e in &errs {
                eprintln!("knock-spad: {e}");
            }
            if edit {
                eprintln!(
                    "knock-spad: the configuration would be invalid ({} error(s)): nothing was \
                     changed",
                    errs.len()
                );
            }
            ExitCode::from(2)
        }
        edit::KeysError::Usage(m) => {
            eprintln!("knock-spad: {m}");
            ExitCode::from(2)
        }
        edit::KeysError::Io(m) => {
            eprintln!("knock-spad: {m}");
            ExitCode::from(1)
        }
    }
}

pub fn run(cli: &Cli, command: &KeysCommand) -> anyhow::Result<ExitCode> {
    let (outcome, no_reload) = match command {
        KeysCommand::List { door, json } => {
            return match edit::list(&cli.config, door.as_deref()) {
                Ok(entries) if *json => {
                    let mut t = serde_json::to_string_pretty(&entries).context("json")?;
                    t.push('\n');
                    print_bytes(t.as_bytes())
                }
                Ok(entries) if entries.is_empty() => {
                    println!("no SPA keys");
                    Ok(ExitCode::SUCCESS)
                }
                Ok(entries) => print_bytes(edit::render_list(&entries).as_bytes()),
                Err(e) => Ok(keys_error(e, false)),
            };
        }
        KeysCommand::Add {
            name,
            from_line,
            from_file,
            door,
            no_reload,
        } => {
            let given = match (from_line, from_file) {
                (Some(l), _) => edit::key_from_line(l),
                (None, Some(f)) => edit::key_from_file(f).map(edit::GivenKey::Shared),
                (None, None) => Err(edit::KeysError::Usage(
                    "give --from-line or --from-file".into(),
                )),
            };
            let given = match given {
                Ok(k) => k,
                Err(e) => return Ok(keys_error(e, true)),
            };
            let key = match given.renamed(name) {
                Ok(k) => k,
                Err(e) => return Ok(keys_error(e, true)),
            };
            if given.name() != name {
                eprintln!(
                    "knock-spad: note: the key was made as `{}`; this server calls it `{name}`",
                    given.name()
                );
            }
            (edit::add(&cli.config, door.as_deref(), &key), *no_reload)
        }
        KeysCommand::Revoke {
            name,
            door,
            no_reload,
        } => (edit::revoke(&cli.config, door.as_deref(), name), *no_reload),
    };
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => return Ok(keys_error(e, true)),
    };
    for c in &outcome.changes {
        println!("{c}");
    }
    for n in &outcome.notes {
        println!("note: {n}");
    }
    if !no_reload {
        let cfg = read_options(&cli.config).ok();
        let state_dir = cli
            .state_dir
            .clone()
            .or_else(|| cfg.as_ref().map(|c| PathBuf::from(&c.options.state_dir)));
        let pidfile = cli.pidfile.clone().or_else(|| {
            cfg.as_ref()
                .and_then(|c| c.options.pid_file.as_ref().map(PathBuf::from))
        });
        if let Some(dir) = state_dir {
            println!(
                "{}",
                edit::reload_daemon(&cli.config, &dir, pidfile.as_deref())
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
