//! `knock-spad man` and `knock-spad completions SHELL`: the manual page (roff, section 8) and
//! shell completion scripts, generated from the same clap definition as `--help`, so they
//! cannot drift from the program.

use std::io::{self, Write};

use clap::Command;

/// Escapes text for roff: backslashes, hyphens (so options copy and paste as ASCII), and a
/// leading `.` or `'` that would read as a request.
fn esc(s: &str) -> String {
    let mut out = s.replace('\\', "\\e").replace('-', "\\-");
    if out.starts_with('.') || out.starts_with('\'') {
        out.insert_str(0, "\\&");
    }
    out
}

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
The configuration (knockd.conf syntax plus SPA directives). With inline \fBKeys\fR it must be mode 0600 and owned by root
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
\fBknock\-spa\fR(1), \fBknockd\fR(1), \fBiptables\fR(8), \fBsystemctl\fR(1)
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
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(esc("a-b\\c"), "a\\-b\\ec");
        assert_eq!(esc(".x"), "\\&.x");
        assert_eq!(esc("'x"), "\\&'x");
    }
}
