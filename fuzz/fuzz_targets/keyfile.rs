//! Text → the key readers of `knock_keys`: `NamedKey::parse_str` (keyfiles),
//! `NamedKey::from_inline` (`NAME:BASE64`) and `MasterKey::from_base64`.
//!
//! Checks:
//!
//! - a parsed key round-trips: `to_keyfile_text` → `parse_str` and `to_inline` →
//!   `from_inline` give the same name, secret and key id; its name is valid;
//! - base64 is canonical (PROTOCOL.md §1): whatever `from_base64` accepts is, trimmed, exactly
//!   what `to_base64` writes for the decoded secret, and so is the secret part of an accepted
//!   inline key or keyfile `secret` line;
//! - a keyfile error carries a 1-based line number within the text, and neither it nor any
//!   error's `Display`/`Debug` shows the value of a `secret` line.
#![no_main]

use knock_keys::{valid_name, KeyError, MasterKey, NamedKey, ParseProblem};
use libfuzzer_sys::fuzz_target;

fn same_key(a: &NamedKey, b: &NamedKey) {
    assert_eq!(a.name(), b.name());
    assert_eq!(*a.master().to_base64(), *b.master().to_base64());
    assert_eq!(a.derive().id(), b.derive().id());
}

fn round_trip(k: &NamedKey) {
    assert!(valid_name(k.name()), "accepted name {:?}", k.name());
    let text = k.to_keyfile_text();
    let back = NamedKey::parse_str(&text).expect("keyfile round trip");
    same_key(k, &back);
    let inline = k.to_inline();
    let back = NamedKey::from_inline(&inline).expect("inline round trip");
    same_key(k, &back);
    let debug = format!("{k:?}");
    assert!(
        !debug.contains(k.master().to_base64().as_str()),
        "Debug shows the secret"
    );
}

/// Whether `s` looks like key material: 16 or more characters of the base64 alphabet (so it
/// cannot be a piece of a message's own words, which are separated by blanks).
fn looks_secret(s: &str) -> bool {
    s.len() >= 16
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
}

/// Values of `secret = ...` lines that look like key material and do not also appear in
/// another line's key or value, which a message may quote.
fn secret_values(text: &str) -> Vec<&str> {
    let pairs: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| l.trim().split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let secret = |k: &str| k.eq_ignore_ascii_case("secret");
    pairs
        .iter()
        .filter(|(k, v)| secret(k) && looks_secret(v))
        .map(|(_, v)| *v)
        .filter(|v| {
            !pairs
                .iter()
                .any(|(k2, v2)| !secret(k2) && (v2.contains(v) || k2.contains(v)))
        })
        .collect()
}

fn check_parse(text: &str) {
    match NamedKey::parse_str(text) {
        Ok(k) => {
            round_trip(&k);
            // The accepted secret line holds the canonical base64.
            let canonical = k.master().to_base64();
            let found = text.lines().any(|l| {
                l.trim().split_once('=').is_some_and(|(key, v)| {
                    key.trim().eq_ignore_ascii_case("secret") && v.trim() == canonical.as_str()
                })
            });
            assert!(found, "accepted a secret that is not canonical base64");
        }
        Err(e) => {
            let KeyError::Parse { line, what } = &e else {
                panic!("parse_str returned a non-parse error: {e:?}");
            };
            let n = text.lines().count().max(1);
            assert!((1..=n).contains(line), "line {line} outside 1..={n}");
            let shown = format!("{e} {e:?} {what}");
            for secret in secret_values(text) {
                assert!(!shown.contains(secret), "error {shown:?} shows {secret:?}");
            }
        }
    }
}

fn check_inline(text: &str) {
    match NamedKey::from_inline(text) {
        Ok(k) => {
            round_trip(&k);
            let (_, secret) = text
                .trim()
                .split_once(':')
                .expect("accepted text has a colon");
            assert_eq!(secret.trim(), k.master().to_base64().as_str(), "canonical");
        }
        Err(p) => {
            if !text.contains(':') {
                assert_eq!(p, ParseProblem::InlineSyntax);
            }
            if let Some((name, secret)) = text.split_once(':') {
                let secret = secret.trim();
                if looks_secret(secret) && !name.contains(secret) {
                    let shown = format!("{p} {p:?}");
                    assert!(!shown.contains(secret), "{shown:?} shows the secret");
                }
            }
        }
    }
}

fn check_base64(text: &str) {
    if let Ok(m) = MasterKey::from_base64(text) {
        let b64 = m.to_base64();
        assert_eq!(text.trim(), b64.as_str(), "accepted non-canonical base64");
        let back = MasterKey::from_base64(&b64).expect("round trip");
        assert_eq!(*back.to_base64(), *b64);
        assert_eq!(back.derive().id(), m.derive().id());
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    check_parse(&text);
    check_inline(&text);
    check_base64(&text);
    // Each line alone, too: inline keys and base64 come one per line in real files.
    for line in text.lines().take(8) {
        check_inline(line);
        check_base64(line);
    }
});
