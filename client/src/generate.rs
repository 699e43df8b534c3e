//! `completions` and `man`: shell completion scripts and man pages, generated from the clap
//! definition in `cli` (the same one `--help` shows, so they cannot drift apart).
//!
//! Role: render into memory ([`completion_script`], [`man_page`]); the caller writes the bytes
//! to stdout, so a closed pipe is an error message, not a panic inside a generator.
//!
//! It must not read or write files.

use clap::CommandFactory as _;
use clap_complete::Shell;
use knock_shared::config::roff_prose;

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
/// exist. (knock-spa.conf(5), `man --section 5`, is `conf_page::man_page`.)
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
    Some(man.render(&mut out).map(|()| {
        if command.is_none() {
            out.extend_from_slice(roff_prose(SEE_ALSO).as_bytes());
        }
        out
    }))
}

/// The last section of knock-spa(1).
const SEE_ALSO: &str = "\
# SEE ALSO
**knock-spa.conf**(5), **knock-spad**(8), **knock-spad.conf**(5)
";

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
        let see_also = &top[top.find(".SH \"SEE ALSO\"").expect("SEE ALSO")..];
        for name in ["knock-spa.conf\\fR(5)", "knock-spad\\fR(8)"] {
            assert!(see_also.contains(name), "SEE ALSO lacks {name}");
        }
        assert!(man_page(Some("frobnicate")).is_none());
        assert!(man_page(Some("help")).is_none());
    }

    /// `man --section`: 1 (the default) or 5, and not with COMMAND (whose page is in 1).
    #[test]
    fn man_sections() {
        use clap::Parser as _;
        let section = |args: &[&str]| {
            crate::cli::Cli::try_parse_from(
                std::iter::once("knock-spa").chain(args.iter().copied()),
            )
            .map(|cli| match cli.command {
                crate::cli::Command::Man(m) => (m.section, m.command),
                other => panic!("not man: {other:?}"),
            })
        };
        assert_eq!(section(&["man"]).expect("valid"), ("1".to_owned(), None));
        assert_eq!(
            section(&["man", "--section", "5"]).expect("valid"),
            ("5".to_owned(), None)
        );
        assert_eq!(
            section(&["man", "--section", "1"]).expect("valid"),
            ("1".to_owned(), None)
        );
        assert_eq!(
            section(&["man", "open"]).expect("valid"),
            ("1".to_owned(), Some("open".to_owned()))
        );
        for bad in [
            &["man", "--section", "8"][..],
            &["man", "--section", "3"],
            &["man", "--section", "5", "open"],
        ] {
            assert!(section(bad).is_err(), "{bad:?}");
        }
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
