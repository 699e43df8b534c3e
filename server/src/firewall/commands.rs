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

/// How an argv changes a firewall: inserts a rule, deletes one, or something else.
#[derive(Debug, PartialEq, Eq)]
pub enum RuleOp {
    /// Inserts (or appends) this rule.
    Insert(Vec<String>),
    /// Deletes this rule.
    Delete(Vec<String>),
    /// Anything else.
    Other,
}

/// Classifies an iptables-like argv and returns the rule with the operation (and an
/// insert position) removed, so `-I INPUT 1 -s X -j ACCEPT` and `-D INPUT -s X -j ACCEPT`
/// name the same rule.
pub fn rule_op(argv: &[String]) -> RuleOp {
    let mut op = None;
    let mut rule = Vec::with_capacity(argv.len());
    let mut i = 0;
    while i < argv.len() {
        let w = argv[i].as_str();
        match w {
            "-I" | "--insert" | "-A" | "--append" | "-D" | "--delete" if op.is_none() => {
                op = Some(matches!(w, "-D" | "--delete"));
                rule.push("<op>".to_owned());
                if let Some(chain) = argv.get(i + 1) {
                    rule.push(chain.clone());
                    i += 1;
                }
                if argv
                    .get(i + 1)
                    .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
                {
                    i += 1; // rule position
                }
            }
            _ => rule.push(w.to_owned()),
        }
        i += 1;
    }
    match op {
        Some(false) => RuleOp::Insert(rule),
        Some(true) => RuleOp::Delete(rule),
        None => RuleOp::Other,
    }
}

/// For an iptables/ip6tables insert or delete, the same rule with `-C` (check): exits 0 when
/// the rule is in the chain, 1 when it is not. Other tools (nft, scripts) get `None`: only the
/// in-memory record applies.
pub fn check_argv(argv: &[String], rule: &[String]) -> Option<Vec<String>> {
    let tool = std::path::Path::new(argv.first()?).file_name()?.to_str()?;
    if !(tool.starts_with("iptables") || tool.starts_with("ip6tables")) {
        return None;
    }
    Some(
        rule.iter()
            .map(|w| {
                if w == "<op>" {
                    "-C".to_owned()
                } else {
                    w.clone()
                }
            })
            .collect(),
    )
}

/// Runs an iptables `-C` check: `Some(true)` when the rule is in the chain, `Some(false)` when
/// iptables says it is not (exit status 1), `None` when the answer is unknown (the xtables
/// lock, a timeout, any other failure), which callers must not read as "absent".
pub async fn rule_present(check: &[String]) -> Option<bool> {
    match run(check).await {
        Ok(()) => Some(true),
        Err(ExecError::Failed { status, .. }) if status.code() == Some(1) => Some(false),
        Err(_) => None,
    }
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

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn check_argv_turns_an_insert_into_a_check() {
        let argv = v("/usr/sbin/iptables -I INPUT 1 -s 10.0.0.2 -p tcp --dport 22 -j ACCEPT");
        let RuleOp::Insert(rule) = rule_op(&argv) else {
            panic!("not an insert")
        };
        assert_eq!(
            check_argv(&argv, &rule),
            Some(v(
                "/usr/sbin/iptables -C INPUT -s 10.0.0.2 -p tcp --dport 22 -j ACCEPT"
            ))
        );
        let argv6 = v("/sbin/ip6tables -A INPUT -s fd00::2 -j ACCEPT");
        let RuleOp::Insert(rule6) = rule_op(&argv6) else {
            panic!("not an insert")
        };
        assert_eq!(
            check_argv(&argv6, &rule6),
            Some(v("/sbin/ip6tables -C INPUT -s fd00::2 -j ACCEPT"))
        );
        // Another tool: no check, only the in-memory record.
        let other = v("/usr/local/bin/open-door -I INPUT 10.0.0.2");
        let RuleOp::Insert(r) = rule_op(&other) else {
            panic!("not an insert")
        };
        assert_eq!(check_argv(&other, &r), None);
    }

    #[test]
    fn insert_and_delete_name_the_same_rule() {
        let ins = rule_op(&v(
            "/usr/sbin/iptables -I INPUT 1 -s 10.0.0.2 -p tcp --dport 22 -j ACCEPT",
        ));
        let del = rule_op(&v(
            "/usr/sbin/iptables -D INPUT -s 10.0.0.2 -p tcp --dport 22 -j ACCEPT",
        ));
        let app = rule_op(&v(
            "/usr/sbin/iptables -A INPUT -s 10.0.0.2 -p tcp --dport 22 -j ACCEPT",
        ));
        match (ins, del, app) {
            (RuleOp::Insert(a), RuleOp::Delete(b), RuleOp::Insert(c)) => {
                assert_eq!(a, b);
                assert_eq!(a, c);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(rule_op(&v("/bin/logger hello")), RuleOp::Other);
        let other_ip = rule_op(&v("iptables -D INPUT -s 10.0.0.3 -j ACCEPT"));
        let ins2 = rule_op(&v("iptables -I INPUT -s 10.0.0.2 -j ACCEPT"));
        assert_ne!(
            format!("{other_ip:?}"),
            format!("{ins2:?}").replace("Insert", "Delete")
        );
    }
}
