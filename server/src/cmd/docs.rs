//! `knock-spad man` and `knock-spad completions SHELL`: the manual page (roff, section 8) and
//! shell completion scripts, generated from the same clap definition as `--help`, so they
//! cannot drift from the program; and `knock-spad man --section 5`, knock-spad.conf(5), whose
//! DIRECTIVES are rendered from the directive reference of the configuration reader
//! (`knock_shared::config::DIRECTIVE_DOCS`, the table docs/CONFIG.md shows too).

use std::io::{self, Write};

use clap::Command;
use knock_shared::config::{roff_directives, roff_escape as esc, roff_prose};

fn para(out: &mut String, text: &str) {
    for (i, p) in text.split("\n\n").enumerate() {
        if i > 0 {
            out.push_str(".PP\n");
        }
        for line in p.lines() {
            out.push_str(&esc(line.trim()));
            out.push('\n');
        }
    }
}

/// `-c, --config <FILE>` as the man page shows it.
fn arg_label(a: &clap::Arg) -> String {
    let mut names = Vec::new();
    if let Some(s) = a.get_short() {
        names.push(format!("\\fB\\-{s}\\fR"));
    }
    if let Some(l) = a.get_long() {
        names.push(format!("\\fB\\-\\-{}\\fR", esc(l)));
    }
    let takes_value = a.get_action().takes_values();
    let value = a
        .get_value_names()
        .map(|v| {
            v.iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| a.get_id().to_string().to_uppercase());
    if names.is_empty() {
        format!("\\fI{}\\fR", esc(&value))
    } else if takes_value {
        format!("{} \\fI{}\\fR", names.join(", "), esc(&value))
    } else {
        names.join(", ")
    }
}

/// One `.SS` per (sub)command below `cmd`, with its synopsis and options.
fn commands(out: &mut String, cmd: &Command, path: &str) {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("{path} {}", sub.get_name());
        let mut s = sub.clone().bin_name(name.clone());
        let usage = s.render_usage().to_string();
        out.push_str(&format!(".SS \"{}\"\n", esc(&name)));
        out.push_str(".nf\n");
        out.push_str(&esc(usage.trim_start_matches("Usage: ")));
        out.push_str("\n.fi\n.PP\n");
        if let Some(about) = sub.get_long_about().or(sub.get_about()) {
            para(out, &about.to_string());
        }
        for a in sub
            .get_arguments()
            .filter(|a| !a.is_hide_set() && !a.is_global_set())
            .filter(|a| a.get_id() != "help")
        {
            out.push_str(".TP\n");
            out.push_str(&arg_label(a));
            out.push('\n');
            if let Some(h) = a.get_long_help().or(a.get_help()) {
                para(out, &h.to_string());
            }
            let possible: Vec<String> = a
                .get_possible_values()
                .iter()
                .filter(|v| !v.is_hide_set())
                .map(|v| v.get_name().to_owned())
                .collect();
            if !possible.is_empty() && a.get_action().takes_values() {
                out.push_str(&format!(".br\nOne of: {}.\n", esc(&possible.join(", "))));
            }
        }
        if sub.has_subcommands() {
            commands(out, sub, &name);
        }
    }
}

const TAIL: &str = r#".SH FILES
.TP
\fI/etc/knockd.conf\fR
The configuration (knockd.conf syntax plus SPA directives), described in
\fBknock\-spad.conf\fR(5). With inline \fBKeys\fR it must be mode 0600 and owned by root
(or the daemon's user), like every \fBKeyFile\fR and \fBOne_Time_Sequences\fR file; otherwise it is refused.
.TP
\fI/var/lib/knock\-spa/\fR
The state directory (\fBStateDir\fR): \fIgrants.0\fR and \fIgrants.1\fR (the open grants, double\-buffered; after a restart or a
crash, those whose time passed are closed at once and the others re\-armed), \fIreplay.bin\fR
and \fIreplay.journal\fR (the replay cache: a snapshot and the packets accepted since;
\fIreplay.not\-before\fR when it was ever lost), \fIstatus.json\fR (what \fBknock\-spad status\fR reads; removed at a
clean exit), \fIlock\fR (held by the running daemon: one daemon per state directory) and
\fIcontrol\fR (the socket \fBknock\-spad close\fR talks to).
.SH SIGNALS
.TP
\fBSIGHUP\fR
Reload the configuration. An invalid file is refused with its errors and the old configuration
stays in force. Open grants keep their timers.
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
Close every open grant (run its stop command) and exit, unless \fBKeepRulesOnExit\fR or
\fB\-\-keep\-rules\-on\-exit\fR is set; then the grants are re\-armed at the next start.
.SH EXIT STATUS
0 on success; 1 on a runtime failure; 2 for an invalid command line or configuration, or when
another \fBknock\-spad\fR holds the state directory.
\fBstatus\fR exits 0 when the daemon runs, 1 when its process is gone but its status file is
left (it crashed or was killed), 3 when no daemon is running, 4 when the status is stale or
unreadable.
.SH SEE ALSO
\fBknock\-spad.conf\fR(5), \fBknock\-spa\fR(1), \fBknockd\fR(1), \fBiptables\fR(8), \fBsystemctl\fR(1)
"#;

/// The manual page, roff.
pub fn man(cmd: Command) -> io::Result<Vec<u8>> {
    let cmd = cmd.disable_help_subcommand(true);
    let man = clap_mangen::Man::new(cmd.clone())
        .section("8")
        .manual("System Administration");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    let mut text = String::from(".SH \"COMMANDS IN DETAIL\"\n");
    commands(&mut text, &cmd, cmd.get_name());
    out.write_all(text.as_bytes())?;
    out.write_all(TAIL.as_bytes())?;
    man.render_version_section(&mut out)?;
    Ok(out)
}

/// The page `knock-spad man --section SECTION` prints: knock-spad(8), or for `5`
/// knock-spad.conf(5). clap accepts no other section.
pub fn page(section: &str, cmd: Command) -> io::Result<Vec<u8>> {
    match section {
        "5" => Ok(conf_page().into_bytes()),
        _ => man(cmd),
    }
}

/// knock-spad.conf(5) before its DIRECTIVES.
const CONF_HEAD: &str = "\
# NAME
knock-spad.conf - configuration file of knock-spad, the port-knocking and SPA daemon
# SYNOPSIS
`/etc/knockd.conf`

`knock-spad -c FILE`, `knock-spad check -c FILE`
# DESCRIPTION
`knock-spad` reads one file, by default `/etc/knockd.conf` (`-c FILE` names another), in \
knockd 0.8's syntax: an unmodified knockd configuration keeps working, and SPA (single packet \
authorization) doors are new directives in the same file. The file is read at start and \
again at SIGHUP. It loads whole or not at all: every error is reported with its line, and at \
SIGHUP a file with errors leaves the old configuration in force. `knock-spad check -c FILE` \
validates a file and prints every error and warning as `FILE:LINE: message`.
## Syntax
- Each line is trimmed. Blank lines and lines whose first non-blank character is `#` are \
skipped. There are no trailing comments (`Sequence = 1,2 # note` is an error), except in \
commands (see Commands).
- `[name]` alone on its line starts a section. `[options]` (exactly so, in lower case, as in \
knockd) holds the global options; every other name starts a door. Door names are \
case-sensitive, appear in log lines, and are unique.
- Inside a section, `Directive = value`. Directive names are case-insensitive. The value is \
everything after the first `=`, trimmed. `UseSyslog` and `KeepRulesOnExit` are flags: the \
bare word means yes; they also take `= yes|no` (also `true|false`, `on|off`, `1|0`).
- A directive may be given once per section (an alias counts as the same directive), except \
`Keys` and `KeyFile`, which accumulate.
- Numbers are plain decimal digits: no sign, no unit (`10`, not `10s`).
## Doors
A door is either a knock-sequence door (knockd's: a `Sequence` or `One_Time_Sequences`) or \
an SPA door (`Keys` or `KeyFile`). A door that mixes the directives of the two kinds, or has \
neither a sequence nor keys, is an error. The directives each kind takes are listed under \
DIRECTIVES.
## Commands
A command is a template, run later as an argument vector, without a shell:
- Words are separated by blanks. `'single quotes'` group text literally; `\"double quotes\"` \
group text, with `\\\"` and `\\\\` as the only escapes. An unclosed quote is an error.
- `%IP%` is the address to admit (validated as an IP address first); `%PORT%` and \
`%PROTO%` the granted port and `tcp` or `udp`, in SPA doors only. Any other `%NAME%` of \
capitals is an error; other uses of `%` stay as they are.
- Shell syntax (`;`, `|`, `&&`, `>`, `$(...)`) is passed to the program as literal \
arguments, with a warning: put pipelines in a script, or ask for a shell, as in \
`/bin/sh -c '...' sh %IP%`.
- An unquoted word starting with `#` begins a comment, dropped with the rest of the value \
(with a warning), as knockd's shell dropped it.
- An empty value runs nothing.
## Files that hold secrets
A `KeyFile`, a `One_Time_Sequences` file, and this file when it has an inline `Keys` line \
must be regular files without any group or other permission bit (0600 or 0400), owned by \
root or by the user the daemon runs as. Otherwise they are refused, like any other error, \
with the `chmod` or `chown` that fixes it. A configuration without secrets of its own may \
stay readable by others.
## One-time sequences file
knockd's format: one sequence per line in `Sequence` syntax; blank lines and `#` lines are \
skipped. The first remaining line is the door's sequence. Once it is used, the daemon writes \
`#` over the first character of the line (start each line with a blank), atomically and \
before the door opens, and the next line is in force.
## Firewall = nftables
With `Firewall = nftables` in `[options]` the daemon keeps the guarded ports closed with a \
table of its own, `table inet knock_spa`, created or brought up to date at every start, and \
a grant is an element of a set with a kernel timeout. Doors then name ports, not commands: \
a knock door needs `Open_Ports`, an SPA door opens what `Allow_Ports` allows, and the \
command directives and `Admit_Prefix` are errors.
## knockd compatibility
Every knockd 0.8 directive means what it means to knockd, with these differences: commands \
run without a shell (above); a malformed value, an unknown directive, a directive given \
twice and two doors of one name are errors instead of being guessed at; `Interface` \
defaults to `any`; `Stage` and timeout lines are logged only with `-v`. knock-spa's own \
directives are errors for knockd. CONFIG.md (in `/usr/share/doc/knock-spa/` when installed) \
lists every difference and its reason.
# DIRECTIVES
Directives marked *knock-spa.* are knock-spa's additions, which knockd refuses; the others are \
knockd's.
";

/// knock-spad.conf(5) after its DIRECTIVES.
const CONF_TAIL: &str = "\
# EXAMPLE
```
[options]
    UseSyslog
    ServerName = gw.example.org

[openSSH]
    Sequence      = 7000,9000,8000
    Seq_Timeout   = 15
    TCPFlags      = syn
    Start_Command = /sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
    Cmd_Timeout   = 30
    Stop_Command  = /sbin/iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT

[spaSSH]
    KeyFile       = /etc/knock-spa/ops.keys
    Allow_Ports   = 22/tcp
    Cmd_Timeout   = 30
    Max_Timeout   = 3600
    Start_Command = /sbin/iptables -I INPUT -s %IP% -p %PROTO% --dport %PORT% -j ACCEPT
    Stop_Command  = /sbin/iptables -D INPUT -s %IP% -p %PROTO% --dport %PORT% -j ACCEPT
```
# FILES
- `/etc/knockd.conf`: the configuration.
- `/var/lib/knock-spa/`: the state directory (`StateDir`): the open grants and the replay \
cache, across restarts.
# SEE ALSO
**knock-spad**(8), **knock-spa**(1), **knock-spa.conf**(5), **knockd**(1), **iptables**(8), \
**nft**(8)
";

/// knock-spad.conf(5), roff.
pub fn conf_page() -> String {
    let mut out = format!(
        ".TH knock-spad.conf 5 \"\" \"knock-spad {}\" \"File Formats\"\n",
        env!("CARGO_PKG_VERSION")
    );
    out.push_str(&roff_prose(CONF_HEAD));
    out.push_str(&roff_directives());
    out.push_str(&roff_prose(CONF_TAIL));
    out
}

/// The completion script for `shell`.
pub fn completions(shell: clap_complete::Shell, mut cmd: Command) -> Vec<u8> {
    let mut out = Vec::new();
    let name = cmd.get_name().to_owned();
    clap_complete::generate(shell, &mut cmd, name.clone(), &mut out);
    if shell == clap_complete::Shell::Bash {
        fix_bash_hyphenated_name(&name, &out)
    } else {
        out
    }
}

/// clap_complete 4.6's bash script spells the state of a hyphenated binary's subcommands two
/// ways (`knock__spad__subcmd__keys` where it is set, `knock__subcmd__spad__subcmd__keys` in
/// the arms that use it), so nothing after the first word completes (clap-rs/clap#6421).
/// Rewrites the arms to the spelling that is set.
fn fix_bash_hyphenated_name(name: &str, script: &[u8]) -> Vec<u8> {
    let wrong = name.replace('-', "__subcmd__");
    let right = name.replace('-', "__");
    if wrong == right {
        return script.to_vec();
    }
    String::from_utf8_lossy(script)
        .replace(&format!("{wrong}__subcmd__"), &format!("{right}__subcmd__"))
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser as _};
    use knock_shared::config::DIRECTIVE_DOCS;

    use super::*;
    use crate::cli::{Cli, Command as Sub};

    fn section(args: &[&str]) -> Result<String, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("knock-spad").chain(args.iter().copied()))?;
        match cli.command {
            Some(Sub::Man { section }) => Ok(section),
            other => panic!("not man: {other:?}"),
        }
    }

    /// The page's EXAMPLE is a configuration the daemon accepts (the parser only: its key
    /// file is named, not read).
    #[test]
    fn the_config_pages_example_parses() {
        let example = CONF_TAIL
            .split("```\n")
            .nth(1)
            .expect("CONF_TAIL has a fenced example");
        let cfg = knock_shared::config::parse_str(example)
            .unwrap_or_else(|e| panic!("the example: {e:?}"));
        assert_eq!(cfg.doors.len(), 2);
    }

    #[test]
    fn section_is_8_or_5() {
        assert_eq!(section(&["man"]).expect("valid"), "8");
        assert_eq!(section(&["man", "--section", "8"]).expect("valid"), "8");
        assert_eq!(section(&["man", "--section", "5"]).expect("valid"), "5");
        for bad in ["1", "3", "", "5x"] {
            let e = section(&["man", "--section", bad]).expect_err(bad);
            assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue, "{bad}");
        }
    }

    #[test]
    fn the_config_page_has_every_directive() {
        let page = String::from_utf8(page("5", Cli::command()).expect("renders")).expect("utf-8");
        assert!(
            page.starts_with(".TH knock-spad.conf 5 "),
            "{}",
            &page[..80]
        );
        for heading in [
            ".SH \"NAME\"",
            ".SH \"SYNOPSIS\"",
            ".SH \"DESCRIPTION\"",
            ".SH \"DIRECTIVES\"",
            ".SH \"FILES\"",
            ".SH \"SEE ALSO\"",
            ".SS \"Files that hold secrets\"",
            ".SS \"Commands\"",
        ] {
            assert!(page.contains(heading), "lacks {heading}");
        }
        assert!(
            page.contains("\\fI/etc/knockd.conf\\fR") || page.contains("\\fB/etc/knockd.conf\\fR")
        );
        for d in DIRECTIVE_DOCS {
            let names: Vec<String> = std::iter::once(d.name())
                .chain(d.aliases.iter().copied())
                .map(|n| format!("\\fB{}\\fR", esc(n)))
                .collect();
            let entry = format!(".TP\n{}\n", names.join(", "));
            assert!(page.contains(&entry), "lacks {entry}");
        }
        let see_also = &page[page.find(".SH \"SEE ALSO\"").expect("SEE ALSO")..];
        for name in ["knock\\-spad\\fR(8)", "knock\\-spa\\fR(1)", "knockd\\fR(1)"] {
            assert!(see_also.contains(name), "SEE ALSO lacks {name}");
        }
        unescaped_hyphens_only_in_requests(&page);
    }

    #[test]
    fn the_program_page_refers_to_the_config_page() {
        let page = String::from_utf8(page("8", Cli::command()).expect("renders")).expect("utf-8");
        assert!(page.contains(".TH knock-spad 8"), "{}", &page[..80]);
        let see_also = &page[page.find(".SH SEE ALSO").expect("SEE ALSO")..];
        assert!(
            see_also.contains("\\fBknock\\-spad.conf\\fR(5)"),
            "{see_also}"
        );
    }

    /// Every hyphen of a text line is `\-`, so options and paths copy as ASCII.
    fn unescaped_hyphens_only_in_requests(page: &str) {
        for line in page.lines().filter(|l| !l.starts_with('.')) {
            let bare = line.replace("\\-", "");
            assert!(!bare.contains('-'), "unescaped hyphen: {line}");
        }
    }

    /// groff checks the page (`-z`: no output, `-wall`: every warning); any warning fails.
    #[test]
    fn groff_reads_the_config_page_without_warnings() {
        let page = page("5", Cli::command()).expect("renders");
        let mut child = std::process::Command::new("groff")
            .args(["-z", "-wall", "-man", "-Tutf8"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect(
                "groff must be installed (Debian: apt-get install groff-base; scripts/test does)",
            );
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&page)
            .expect("write to groff");
        let out = child.wait_with_output().expect("groff runs");
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && warnings.is_empty(),
            "groff: {warnings}"
        );
    }
}
