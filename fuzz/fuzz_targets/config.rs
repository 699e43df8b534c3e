//! Text → the configuration readers: `config::parse_str` (knockd.conf with SPA doors),
//! `parse_keys_file`, `parse_one_time_sequences` and `mark_used`.
//!
//! Checks:
//!
//! - every error and warning has a 1-based line number within the text's line count, and
//!   errors and warnings come in line order; parsing is deterministic;
//! - an error never shows the secret part of a `NAME:SECRET` key entry on its line (unless
//!   the same text is also written where it is public: a door name, a key name);
//! - an accepted configuration keeps the documented ranges (window, cache size, interface
//!   name, timeouts, sequence length, non-empty and duplicate-free `Allow_Ports`, SPA doors
//!   with keys and a start command, no `%PORT%`/`%PROTO%` in knock doors, unique door names)
//!   and its parts round-trip: sequences through `format_sequence`/`parse_sequence`, TCP flags
//!   through `Display`/`FromStr`, commands through `CommandTemplate::parse`, inline keys
//!   through `to_inline`/`from_inline`;
//! - rendering a command never splits or adds words, whatever the address and port;
//! - a keys file's keys are named validly, once each, on lines that exist;
//! - one-time sequences: line numbers and byte offsets point at the line, and after
//!   `mark_used` on the first usable line the remaining sequences are exactly the others.
#![no_main]

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use knock_keys::{valid_name, NamedKey};
use knock_shared::config::{
    format_sequence, mark_used, parse_keys_file, parse_one_time_sequences, parse_sequence,
    parse_str, CommandTemplate, Config, ConfigError, DoorKind, TcpFlags, MAX_INTERFACE_LEN,
    MAX_MAX_GRANTS, MAX_REPLAY_CACHE_SIZE, MAX_SEQUENCE_LEN, MAX_SPA_WINDOW, MAX_TIMEOUT,
    MIN_REPLAY_CACHE_SIZE,
};
use knock_shared::types::{PortSpec, Proto};
use libfuzzer_sys::fuzz_target;

const V4: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 5));
const V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0xdead, 0xbeef));

/// Lines as `str::lines` counts them (the readers use it), at least 1 for "the file".
fn line_count(text: &str) -> usize {
    text.lines().count().max(1)
}

fn check_lines(what: &str, text: &str, lines: impl Iterator<Item = usize>) {
    let n = line_count(text);
    let mut last = 0;
    for line in lines {
        assert!(
            (1..=n).contains(&line),
            "{what}: line {line} outside 1..={n}"
        );
        assert!(line >= last, "{what}: line {line} after line {last}");
        last = line;
    }
}

/// Whether `s` looks like key material: 16 or more characters of the base64 alphabet (so it
/// cannot be a piece of a message's own words, which are separated by blanks).
fn looks_secret(s: &str) -> bool {
    s.len() >= 16
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
}

/// The `NAME:SECRET` entries of a line (a `Keys = ...` line of a configuration, or any line
/// of a keys file), split at the first `:` of each comma-separated entry.
fn entries_on_line(line: &str, keys_file: bool) -> Vec<(&str, &str)> {
    let value = if keys_file {
        line
    } else {
        match line.split_once('=') {
            Some((k, v)) if k.trim().eq_ignore_ascii_case("keys") => v,
            _ => return Vec::new(),
        }
    };
    let entries: Vec<&str> = if keys_file {
        vec![value]
    } else {
        value.split(',').collect()
    };
    entries
        .into_iter()
        .filter_map(|entry| entry.split_once(':'))
        .collect()
}

/// The text with the secret part of every entry cut out: what a message may quote (door
/// names, key names, directives, comments).
fn public_text(text: &str, keys_file: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let entries = entries_on_line(line, keys_file);
        if entries.is_empty() {
            out.push_str(line);
        } else {
            for (name, _) in entries {
                out.push_str(name);
                out.push('\0');
            }
        }
        out.push('\n');
    }
    out
}

/// Checks that no error quotes the secret of an entry on its line. A secret counts only when
/// it looks like key material and its text appears nowhere else in the file: written also as
/// a door name or inside a key name (of that line or another), it is public, and messages
/// name their door and their key.
fn check_errors_hide_secrets(text: &str, errors: &[ConfigError], keys_file: bool) {
    let lines: Vec<&str> = text.lines().collect();
    let public = public_text(text, keys_file);
    for e in errors {
        let Some(line) = lines.get(e.line.wrapping_sub(1)) else {
            continue;
        };
        for (_, secret) in entries_on_line(line, keys_file) {
            let secret = secret.trim();
            if !looks_secret(secret) || public.contains(secret) {
                continue;
            }
            assert!(
                !e.message.contains(secret),
                "line {}: message {:?} shows the secret {secret:?}",
                e.line,
                e.message
            );
        }
    }
}

fn check_template(t: &CommandTemplate, knock_door: bool) {
    let again = CommandTemplate::parse(t.as_str()).expect("an accepted template re-parses");
    assert_eq!(&again, t, "template round trip");
    if knock_door {
        assert!(!t.uses_port(), "%PORT%/%PROTO% accepted in a knock door");
    }
    let port = PortSpec::new(Proto::Udp, 65535).expect("non-zero");
    let a = t.render(V4, Some(port));
    let b = t.render(V6, None);
    let c = t.render(IpAddr::V6(Ipv6Addr::UNSPECIFIED), Some(port));
    assert_eq!(a.len(), b.len(), "rendering changed the number of words");
    assert_eq!(a.len(), c.len(), "rendering changed the number of words");
    assert_eq!(a.is_empty(), t.is_empty());
    if !t.uses_ip() && !t.uses_port() {
        assert_eq!(a, b, "a template without placeholders renders the same");
    }
}

fn check_config(text: &str, c: &Config) {
    check_lines("warning", text, c.warnings.iter().map(|w| w.line));
    let o = &c.options;
    assert!((1..=MAX_SPA_WINDOW).contains(&o.spa_window));
    assert!((MIN_REPLAY_CACHE_SIZE..=MAX_REPLAY_CACHE_SIZE).contains(&o.replay_cache_size));
    assert!((1..=MAX_MAX_GRANTS).contains(&o.max_grants));
    if let Some(i) = &o.interface {
        assert!(
            !i.is_empty() && i.len() <= MAX_INTERFACE_LEN,
            "interface {i:?}"
        );
    }
    assert!(o.state_dir.starts_with('/'), "state dir {:?}", o.state_dir);
    let n = line_count(text);
    let mut names = HashSet::new();
    for d in &c.doors {
        assert!(names.insert(d.name.as_str()), "door [{}] twice", d.name);
        assert!((1..=n).contains(&d.line));
        assert!((1..=MAX_TIMEOUT).contains(&d.cmd_timeout));
        assert!((1..=MAX_MAX_GRANTS).contains(&d.max_grants));
        let knock = matches!(d.kind, DoorKind::Sequence(_));
        for t in [
            &d.start_command,
            &d.start_command_6,
            &d.stop_command,
            &d.stop_command_6,
        ]
        .into_iter()
        .flatten()
        {
            check_template(t, knock);
        }
        match &d.kind {
            DoorKind::Sequence(s) => {
                assert!((1..=MAX_TIMEOUT).contains(&s.seq_timeout));
                if s.one_time_file.is_none() {
                    assert!((1..=MAX_SEQUENCE_LEN).contains(&s.sequence.len()));
                    let text = format_sequence(&s.sequence);
                    assert_eq!(parse_sequence(&text).as_ref(), Ok(&s.sequence), "{text}");
                } else {
                    assert!(s.sequence.is_empty());
                }
                assert_eq!(s.tcp_flags.must_set & s.tcp_flags.must_clear, 0);
                if !s.tcp_flags.is_empty() {
                    let shown = s.tcp_flags.to_string();
                    assert_eq!(shown.parse::<TcpFlags>(), Ok(s.tcp_flags), "{shown}");
                }
            }
            DoorKind::Spa(s) => {
                assert!(!s.keys.is_empty() || !s.key_files.is_empty());
                assert!(!s.allow_ports.is_empty());
                let unique: HashSet<_> = s.allow_ports.iter().collect();
                assert_eq!(unique.len(), s.allow_ports.len(), "duplicate allowed port");
                assert!(s.max_timeout >= d.cmd_timeout && s.max_timeout <= MAX_TIMEOUT);
                assert!(
                    d.start_command_for(V4).is_some() || d.start_command_for(V6).is_some(),
                    "SPA door [{}] with nothing to run",
                    d.name
                );
                for (line, k) in &s.keys {
                    assert!((1..=n).contains(line));
                    check_key(k);
                }
                for (line, _) in &s.key_files {
                    assert!((1..=n).contains(line));
                }
            }
        }
    }
}

fn check_key(k: &NamedKey) {
    assert!(valid_name(k.name()), "key name {:?}", k.name());
    let back = NamedKey::from_inline(&k.to_inline()).expect("inline round trip");
    assert_eq!(back.name(), k.name());
    assert_eq!(back.master().to_base64(), k.master().to_base64());
}

fn check_keys_file(text: &str) {
    match parse_keys_file(text) {
        Ok(keys) => {
            assert!(!keys.is_empty());
            let mut names = HashSet::new();
            let mut last = 0;
            for (line, k) in &keys {
                assert!((1..=line_count(text)).contains(line));
                assert!(*line > last, "keys out of line order");
                last = *line;
                assert!(names.insert(k.name().to_owned()), "{} twice", k.name());
                check_key(k);
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            check_lines("keys file error", text, errors.iter().map(|e| e.line));
            check_errors_hide_secrets(text, &errors, true);
        }
    }
}

fn check_one_time(text: &str) {
    let n_split = text.split_inclusive('\n').count();
    match parse_one_time_sequences(text) {
        Err(e) => assert!((1..=n_split.max(1)).contains(&e.line), "line {}", e.line),
        Ok(seqs) => {
            let mut last = 0;
            for s in &seqs {
                assert!(s.line > last && s.line <= n_split);
                last = s.line;
                assert!((1..=MAX_SEQUENCE_LEN).contains(&s.knocks.len()));
                let line = text
                    .split_inclusive('\n')
                    .nth(s.line - 1)
                    .expect("line exists");
                assert_eq!(
                    text.get(s.byte_offset..s.byte_offset + line.len()),
                    Some(line),
                    "byte offset of line {}",
                    s.line
                );
            }
            if let Some(first) = seqs.first() {
                // Using the current sequence disables it and nothing else.
                let after = mark_used(text, first.line);
                let rest = parse_one_time_sequences(&after).expect("marking keeps it valid");
                let got: Vec<_> = rest.iter().map(|s| (s.line, &s.knocks)).collect();
                let want: Vec<_> = seqs[1..].iter().map(|s| (s.line, &s.knocks)).collect();
                assert_eq!(got, want, "after mark_used({})", first.line);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let text: &str = &text;
    let first = parse_str(text);
    match &first {
        Ok(c) => check_config(text, c),
        Err(errors) => {
            assert!(!errors.is_empty());
            check_lines("error", text, errors.iter().map(|e| e.line));
            check_errors_hide_secrets(text, errors, false);
            for e in errors {
                assert!(!e.message.is_empty());
            }
            assert_eq!(
                parse_str(text).err().as_ref(),
                Some(errors),
                "deterministic"
            );
        }
    }
    check_keys_file(text);
    check_one_time(text);
});
