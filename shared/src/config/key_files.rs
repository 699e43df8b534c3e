//! Keys: `NAME:BASE64` entries, inline in a `Keys` value or one per line in a `KeyFile`.
//!
//! Role: parse the text of a keys file ([`parse_keys_file`]; the server reads the file and
//! hands the text over) and a `Keys` value for the line reader.
//!
//! What it must not do: open a file, or show a secret in a message (messages name the key,
//! never its value).

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use knock_keys::public::ClientPublic;
use knock_keys::NamedKey;

use super::error::{quoted, ConfigError};

/// Parses a `Keys` value (`NAME:BASE64, NAME:BASE64`) into `out`. Messages name the key but
/// never show the secret.
pub(super) fn keys_value(
    key: &str,
    v: &str,
    line: usize,
    out: &mut Vec<(usize, NamedKey)>,
) -> Option<String> {
    if v.is_empty() {
        return Some(format!(
            "{key} is empty: give NAME:BASE64 entries separated by commas"
        ));
    }
    for (i, entry) in v.split(',').enumerate() {
        let entry = entry.trim();
        match inline_key(entry) {
            Ok(k) => out.push((line, k)),
            Err(why) => return Some(format!("{key}: entry {}{why}", i + 1)),
        }
    }
    None
}

/// `PublicKeys = NAME:BASE64, ...`: clients' public keys as `knock-spa keygen --public-key`
/// prints them.
pub(super) fn public_keys_value(
    key: &str,
    v: &str,
    line: usize,
    out: &mut Vec<(usize, ClientPublic)>,
) -> Option<String> {
    if v.is_empty() {
        return Some(format!(
            "{key} is empty: give NAME:BASE64 entries separated by commas"
        ));
    }
    for (i, entry) in v.split(',').enumerate() {
        match ClientPublic::from_inline(entry.trim()) {
            Ok(k) => out.push((line, k)),
            Err(e) => return Some(format!("{key}: entry {}: {e}", i + 1)),
        }
    }
    None
}

/// One `NAME:BASE64`; the error text names the key (or not, if there is no name) and never
/// includes the secret.
fn inline_key(entry: &str) -> Result<NamedKey, String> {
    if entry.is_empty() {
        return Err(" is empty".to_owned());
    }
    let Some((name, _)) = entry.split_once(':') else {
        return Err(" is not NAME:BASE64 (value not shown: it may hold a secret)".to_owned());
    };
    NamedKey::from_inline(entry).map_err(|e| format!(" (key {}): {e}", quoted(name.trim())))
}

/// Parses the text of a `KeyFile`: one `NAME:BASE64` per line (the form `knock-spa keygen`
/// prints for servers), blank lines and `#` comments skipped. Every error is collected; a
/// name given twice and a file without keys are errors. Messages never show a secret.
pub fn parse_keys_file(text: &str) -> Result<Vec<(usize, NamedKey)>, Vec<ConfigError>> {
    let mut keys: Vec<(usize, NamedKey)> = Vec::new();
    let mut errors = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut last = 0;
    for (idx, raw) in text.lines().enumerate() {
        let line = idx + 1;
        last = line;
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let looks_like_keyfile = t.split_once('=').is_some_and(|(k, _)| {
            matches!(k.trim().to_ascii_lowercase().as_str(), "name" | "secret")
        });
        if looks_like_keyfile {
            errors.push(ConfigError {
                line,
                message: "this looks like a client keyfile (name = / secret =); a KeyFile holds \
                          one NAME:BASE64 per line"
                    .to_owned(),
            });
            continue;
        }
        match inline_key(t) {
            Ok(k) => match names.entry(k.name().to_owned()) {
                Entry::Occupied(first) => errors.push(ConfigError {
                    line,
                    message: format!(
                        "key {} given twice (first on line {})",
                        quoted(k.name()),
                        first.get()
                    ),
                }),
                Entry::Vacant(e) => {
                    e.insert(line);
                    keys.push((line, k));
                }
            },
            Err(why) => errors.push(ConfigError {
                line,
                message: format!("key line{why}"),
            }),
        }
    }
    if keys.is_empty() && errors.is_empty() {
        errors.push(ConfigError {
            line: last.max(1),
            message: "the file holds no keys".to_owned(),
        });
    }
    if errors.is_empty() {
        Ok(keys)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{ALICE, ALICE_SECRET, BOB};
    use super::*;

    #[test]
    fn keys_files() {
        let text = format!("# ops team\n{ALICE}\n\n  {BOB}  \n");
        let keys = parse_keys_file(&text).expect("parses");
        let names: Vec<(usize, &str)> = keys.iter().map(|(l, k)| (*l, k.name())).collect();
        assert_eq!(names, [(2, "alice"), (4, "bob")]);

        let text = format!(
            "{ALICE}\nalice:{}\nnot a key\nname = carol\nx:!!!\n",
            &BOB[4..]
        );
        let e = parse_keys_file(&text).expect_err("errors");
        let got: Vec<(usize, bool)> = e
            .iter()
            .map(|e| {
                (
                    e.line,
                    e.message.contains(ALICE_SECRET) || e.message.contains(&BOB[4..]),
                )
            })
            .collect();
        assert_eq!(
            got,
            [(2, false), (3, false), (4, false), (5, false)],
            "{e:#?}"
        );
        assert!(e[0]
            .message
            .contains("key \"alice\" given twice (first on line 1)"));
        assert!(e[1].message.contains("is not NAME:BASE64"));
        assert!(e[2].message.contains("looks like a client keyfile"));
        assert!(e[3]
            .message
            .contains("(key \"x\"): the secret is not valid base64"));

        let e = parse_keys_file("# nothing\n\n").expect_err("empty");
        assert_eq!(
            (e[0].line, e[0].message.as_str()),
            (2, "the file holds no keys")
        );
        assert_eq!(parse_keys_file("").expect_err("empty")[0].line, 1);
    }
}
