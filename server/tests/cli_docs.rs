//! `knock-spad man` and `knock-spad completions SHELL`.

mod common;

use common::*;

const SUBCOMMANDS: [&str; 4] = ["check", "status", "keys", "firewall-setup"];

#[test]
fn completions_cover_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let text = stdout(&out);
        assert!(text.len() > 500, "{shell}: {text}");
        for sub in SUBCOMMANDS {
            assert!(text.contains(sub), "{shell} completions lack {sub}");
        }
        // Nested: keys list/add/revoke, and options such as --from-line.
        for word in ["revoke", "from-line", "state-dir"] {
            assert!(text.contains(word), "{shell} completions lack {word}");
        }
    }
    let out = run(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
}

/// What bash offers for `knock-spad WORDS... CUR<TAB>`, with the generated script.
fn bash_complete(script: &std::path::Path, words: &[&str], cur: &str) -> Vec<String> {
    let mut all: Vec<String> = vec!["knock-spad".into()];
    all.extend(words.iter().map(|w| (*w).to_owned()));
    let prev = all.last().cloned().unwrap_or_default();
    all.push(cur.to_owned());
    let quoted: Vec<String> = all.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "source '{}'; COMP_WORDS=({}); COMP_CWORD={}; _knock__spad knock-spad '{cur}' '{prev}'; \
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        quoted.join(" "),
        all.len() - 1
    );
    let out = std::process::Command::new("bash")
        .args(["--norc", "-c", &program])
        .output()
        .expect("bash");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completion_completes_nested_subcommands_and_their_options() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("knock-spad.bash");
    std::fs::write(&script, run(&["completions", "bash"]).stdout).expect("write");
    let top = bash_complete(&script, &[], "");
    assert!(top.contains(&"firewall-setup".to_owned()), "{top:?}");
    let keys = bash_complete(&script, &["keys"], "");
    for sub in ["list", "add", "revoke"] {
        assert!(keys.contains(&sub.to_owned()), "keys <TAB>: {keys:?}");
    }
    let add = bash_complete(&script, &["keys", "add"], "--");
    assert!(
        add.contains(&"--from-line".to_owned()),
        "keys add --<TAB>: {add:?}"
    );
    let status = bash_complete(&script, &["status"], "--");
    assert!(
        status.contains(&"--json".to_owned()),
        "status --<TAB>: {status:?}"
    );
}

#[test]
fn man_page_documents_every_subcommand() {
    let out = run(&["man"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(".TH knock-spad 8"),
        "{}",
        &text[..text.len().min(400)]
    );
    for sub in SUBCOMMANDS {
        // roff escapes hyphens.
        let escaped = format!("knock\\-spad {}", sub.replace('-', "\\-"));
        assert!(text.contains(&escaped), "man page lacks {escaped}");
    }
    for section in [
        ".SH SIGNALS",
        ".SH FILES",
        ".SH \"EXIT STATUS\"",
        ".SH \"COMMANDS IN DETAIL\"",
    ] {
        assert!(
            text.contains(section) || text.contains(&section.replace('"', "")),
            "lacks {section}"
        );
    }
    assert!(
        text.contains("\\-\\-from\\-line"),
        "keys add options are documented"
    );
}
