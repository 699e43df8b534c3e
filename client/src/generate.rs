//! `completions` and `man`: shell completion scripts and man pages, generated from the clap
//! definition in `cli` (the same one `--help` shows, so they cannot drift apart).
//!
//! Role: render into memory ([`completion_script`], [`man_page`]); the caller writes the bytes
//! to stdout, so a closed pipe is an error message, not a panic inside a generator.
//!
//! It must not read or write files.

use clap::CommandFactory as _;
use clap_complete::Shell;

use crate::cli::{Cli, CompletionShell};

/// The binary name completions are registered for.
pub const BIN_NAME: &str = "knock-spa";

/// The completion script for `shell`.
pub fn completion_script(shell: CompletionShell) -> Vec<u8> {
    let generator = match shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
    };
    let mut out = Vec::new();
    clap_complete::generate(generator, &mut Cli::command(), BIN_NAME, &mut out);
    match shell {
        CompletionShell::Bash => fix_bash_state_names(&out),
        CompletionShell::Zsh | CompletionShell::Fish => out,
    }
}

/// Works around clap_complete's bash generator for a binary name with a hyphen
/// (clap-rs/clap issue 6421, open in clap_complete 4.6.11): its dispatch loop names the state
/// after `knock-spa open` `knock__spa__subcmd__open`, but the case arms spell it
/// `knock__subcmd__spa__subcmd__open`, so no subcommand's options ever complete. Spelling the
/// arms as the loop does fixes it; once clap_complete is fixed the pattern no longer occurs
/// and this changes nothing.
fn fix_bash_state_names(script: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(script);
    text.replace("knock__subcmd__spa", "knock__spa")
        .into_bytes()
}

/// The names of the commands that have a man page of their own (`man COMMAND`).
pub fn man_commands() -> Vec<String> {
    Cli::command()
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .map(|c| c.get_name().to_owned())
        .collect()
}

/// knock-spa(1), or knock-spa-COMMAND(1) for `command`; `None` for a command that does not
/// exist.
pub fn man_page(command: Option<&str>) -> Option<std::io::Result<Vec<u8>>> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    // Sets the subcommands' display names (`knock-spa-open`), which become their page titles.
    cmd.build();
    let page = match command {
        None => cmd,
        Some(name) => cmd
            .get_subcommands()
            .find(|c| c.get_name() == name && !c.is_hide_set())?
            .clone(),
    };
    let mut out = Vec::new();
    let man = clap_mangen::Man::new(page)
        .source(format!("knock-spa {}", env!("CARGO_PKG_VERSION")))
        .manual("knock-spa manual");
    Some(man.render(&mut out).map(|()| out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page as text, with roff's escaped hyphens (`\-`) plain.
    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).expect("utf-8").replace("\\-", "-")
    }

    #[test]
    fn every_shell_names_every_command() {
        for shell in [
            CompletionShell::Bash,
            CompletionShell::Zsh,
            CompletionShell::Fish,
        ] {
            let script = text(completion_script(shell));
            for name in man_commands() {
                assert!(script.contains(&name), "{shell:?} lacks {name}");
            }
            assert!(script.contains("config"), "{shell:?}");
            assert!(script.contains("dry-run"), "{shell:?}");
        }
    }

    #[test]
    fn man_pages_for_the_tool_and_each_command() {
        let top = text(man_page(None).expect("exists").expect("renders"));
        assert!(top.contains(".TH knock-spa 1"), "{top}");
        assert!(top.contains("~/.knock/config"), "{top}");
        for name in man_commands() {
            assert!(top.contains(&format!("knock-spa-{name}(1)")), "{name}");
            let page = text(man_page(Some(&name)).expect("exists").expect("renders"));
            assert!(page.contains(&format!(".TH knock-spa-{name} 1")), "{page}");
            assert!(page.contains(".SH SYNOPSIS"), "{page}");
            assert!(page.contains(env!("CARGO_PKG_VERSION")), "{page}");
        }
        assert!(man_page(Some("frobnicate")).is_none());
        assert!(man_page(Some("help")).is_none());
    }

    /// dist/install.sh (and so the Debian package) installs knock-spa-COMMAND(1) for the
    /// commands it lists, which must be exactly the commands knock-spa(1) refers to.
    #[test]
    fn install_sh_installs_a_page_per_command() {
        let script = include_str!("../../dist/install.sh");
        let listed: Vec<&str> = script
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("for command in ")
                    .and_then(|l| l.strip_suffix("; do"))
            })
            .expect("install.sh has a `for command in ...; do` line")
            .split_whitespace()
            .collect();
        assert_eq!(listed, man_commands());
    }
}
