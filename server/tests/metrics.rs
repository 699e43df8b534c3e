//! `knock-spad status --format prometheus` against the real daemon (UDP capture on loopback,
//! a temporary StateDir, harmless commands): failed start and stop commands, a command killed
//! at its time limit, refused and done reloads, an open grant of a door whose name needs
//! escaping; every output checked against the text exposition format 0.0.4 by a strict
//! parser ([`parse`]: promtool is not packaged small enough to install for this).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use knock_shared::wire::Action;

const SERVER: &str = "metrics-test.example";
/// A door name with a double quote, a backslash and blanks: escaped in a label value.
const ODD_DOOR: &str = r#"ok "q" \ b"#;

/// `ok "q" \ b` (alice, stop command fails), `broken` (bob, start command fails) and `hung`
/// (carol, start command outlives the time limit); with `invalid`, a line that makes the
/// whole file invalid.
fn write_config(dir: &Path, port: u16, invalid: bool) -> PathBuf {
    let door = |name: &str, key: &str, byte: u8, port: &str, start: &str, stop: &str| {
        format!(
            "[{name}]\n    Keys = {}\n    Allow_Ports = {port}\n    Cmd_Timeout = 600\n    \
             Start_Command = {start}\n    Stop_Command = {stop}\n\n",
            common::key(key, byte).to_inline().as_str()
        )
    };
    let text = format!(
        "[options]\n    StateDir = {}\n    ServerName = {SERVER}\n    SpaPort = {port}\n    \
         Capture = udp\n\n{}{}{}{}",
        dir.join("state").display(),
        door(
            ODD_DOOR,
            "alice",
            1,
            "22/tcp",
            "/bin/true %IP%",
            "/bin/false %IP%"
        ),
        door("broken", "bob", 2, "23/tcp", "/bin/false %IP%", "/bin/true"),
        door("hung", "carol", 3, "24/tcp", "/bin/sleep 60", "/bin/true"),
        if invalid { "NoSuchDirective = 1\n" } else { "" },
    );
    // Replaced whole (a rename), as an editor does.
    let tmp = write_private(dir, "knockd.conf.new", &text);
    let conf = dir.join("knockd.conf");
    std::fs::rename(&tmp, &conf).expect("rename");
    conf
}

/// `status ARGS` with its exit code and stdout. The state directory is given, as the
/// configuration is invalid for a while.
fn status(conf: &Path, args: &[&str]) -> (i32, String) {
    let state = conf.with_file_name("state");
    let mut all = vec![
        "-c",
        conf.to_str().expect("utf-8"),
        "--state-dir",
        state.to_str().expect("utf-8"),
        "status",
    ];
    all.extend_from_slice(args);
    let out = run(&all);
    (out.status.code().unwrap_or(-1), stdout(&out))
}

/// `status --format prometheus`, checked: exit 0 and a valid exposition, as series → value.
fn metrics(conf: &Path) -> BTreeMap<String, f64> {
    let (code, text) = status(conf, &["--format", "prometheus"]);
    assert_eq!(code, 0, "{text}");
    parse(&text).unwrap_or_else(|e| panic!("invalid exposition: {e}\n{text}"))
}

/// The metrics once `f` holds for them.
fn metrics_when(
    d: &Daemon,
    conf: &Path,
    what: &str,
    f: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    d.wait_for(Duration::from_secs(45), what, || {
        let m = metrics(conf);
        f(&m).then_some(m)
    })
}

fn value(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or(-1.0)
}

fn sighup(d: &Daemon) {
    // SAFETY: kill() on the daemon this test started, with a valid signal number.
    assert_eq!(
        unsafe { libc::kill(d.pid() as libc::pid_t, libc::SIGHUP) },
        0
    );
}

#[test]
fn failed_commands_and_reloads_show_in_the_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_udp_port();
    let conf = write_config(dir.path(), port, false);

    // No daemon: still a file for the textfile collector, and exit 0.
    let down = metrics(&conf);
    assert_eq!(
        down,
        BTreeMap::from([("knock_spad_up".to_owned(), 0.0)]),
        "only knock_spad_up 0"
    );

    let d = Daemon::start(
        &["-c", conf.to_str().expect("utf-8")],
        &dir.path().join("daemon.log"),
    );
    let m = metrics_when(&d, &conf, "knock_spad_up 1", |m| {
        value(m, "knock_spad_up") == 1.0
    });
    assert_eq!(value(&m, "knock_spad_config_doors"), 3.0);
    assert_eq!(value(&m, "knock_spad_config_keys"), 3.0);
    assert_eq!(value(&m, "knock_spad_grants_open"), 0.0);
    assert_eq!(
        value(&m, r#"knock_spad_commands_failed_total{kind="start"}"#),
        0.0
    );
    assert_eq!(
        value(&m, r#"knock_spad_spa_rejected_total{reason="bad_hmac"}"#),
        0.0
    );
    let version = format!(
        r#"knock_spad_build_info{{version="{}"}}"#,
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&m, &version), 1.0, "{m:?}");
    wait_past_start(value(&m, "knock_spad_start_time_seconds") as u64);

    // A start command that fails.
    send(
        port,
        &spa_packet(&key("bob", 2), SERVER, &["23/tcp"], Action::Open),
    );
    metrics_when(&d, &conf, "the failed start command", |m| {
        value(m, r#"knock_spad_commands_failed_total{kind="start"}"#) == 1.0
    });
    assert!(d.log().contains("broken: command failed"), "{}", d.log());

    // A grant of the door with the odd name, then its stop command fails at a close.
    send(
        port,
        &spa_packet(&key("alice", 1), SERVER, &["22/tcp"], Action::Open),
    );
    let grant = r#"knock_spad_grant_expiry_timestamp_seconds{door="ok \"q\" \\ b",key="alice",addr="127.0.0.1",port="22/tcp"}"#;
    let m = metrics_when(&d, &conf, "the grant", |m| m.contains_key(grant));
    assert_eq!(value(&m, "knock_spad_grants_open"), 1.0);
    assert_eq!(value(&m, "knock_spad_spa_accepted_total"), 2.0);
    send(
        port,
        &spa_packet(&key("alice", 1), SERVER, &["22/tcp"], Action::Close),
    );
    metrics_when(&d, &conf, "the failed stop command", |m| {
        value(m, r#"knock_spad_commands_failed_total{kind="stop"}"#) >= 1.0
    });

    // A start command that outlives the time limit holds the open lane while the reloads go
    // on (they never wait for a command).
    send(
        port,
        &spa_packet(&key("carol", 3), SERVER, &["24/tcp"], Action::Open),
    );

    // A refused reload, then one that is done.
    write_config(dir.path(), port, true);
    sighup(&d);
    d.wait_for(Duration::from_secs(20), "the refusal", || {
        d.log()
            .contains("SIGHUP: the new configuration is invalid")
            .then_some(())
    });
    let m = metrics_when(&d, &conf, "the refused reload", |m| {
        value(m, r#"knock_spad_reloads_total{result="refused"}"#) == 1.0
    });
    assert_eq!(value(&m, r#"knock_spad_reloads_total{result="done"}"#), 0.0);
    assert!(m.contains_key("knock_spad_last_refused_reload_timestamp_seconds"));
    assert!(!m.contains_key("knock_spad_last_reload_timestamp_seconds"));
    write_config(dir.path(), port, false);
    sighup(&d);
    let m = metrics_when(&d, &conf, "the reload", |m| {
        value(m, r#"knock_spad_reloads_total{result="done"}"#) == 1.0
    });
    assert_eq!(
        value(&m, r#"knock_spad_reloads_total{result="refused"}"#),
        1.0
    );
    assert!(m.contains_key("knock_spad_last_reload_timestamp_seconds"));

    // The hung command is killed (COMMAND_TIMEOUT, 20 s): timed out, and a failed start.
    let m = metrics_when(&d, &conf, "the timed-out command", |m| {
        value(m, "knock_spad_commands_timed_out_total") == 1.0
    });
    assert_eq!(
        value(&m, r#"knock_spad_commands_failed_total{kind="start"}"#),
        2.0
    );

    // The table and JSON show the same counters.
    let (code, text) = status(&conf, &[]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("commands failed: start 2, stop ")
            && text.contains(" (1 timed out); reloads: 1 done, 1 refused (last "),
        "{text}"
    );
    for args in [&["--json"][..], &["--format", "json"]] {
        let (code, json) = status(&conf, args);
        assert_eq!(code, 0, "{json}");
        let v: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(v["counters"]["start_failed"], 2, "{v}");
        assert_eq!(v["counters"]["timed_out"], 1, "{v}");
        assert_eq!(v["counters"]["reloads_refused"], 1, "{v}");
        assert!(v["counters"]["stop_failed"].as_u64() >= Some(1), "{v}");
        assert!(v["counters"]["last_refused_reload"].is_u64(), "{v}");
        assert_eq!(v["reloads"], 1, "{v}");
    }
    // --json is --format json: not both.
    let out = run(&[
        "-c",
        conf.to_str().expect("utf-8"),
        "status",
        "--json",
        "--format",
        "text",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

// ---------------------------------------------------------------------------------------------
// A strict reader of the text exposition format 0.0.4
// ---------------------------------------------------------------------------------------------

/// Reads `text` as the format demands, and as this daemon promises: `# HELP` and `# TYPE`
/// (counter or gauge) once per family and before its samples, a family's samples together,
/// metric names valid and prefixed `knock_spad_`, counters ending `_total`, label names
/// valid and not repeated, label values escaped, values numbers, no series twice, a newline
/// at the end. Returns each series (as written) with its value.
fn parse(text: &str) -> Result<BTreeMap<String, f64>, String> {
    if !text.ends_with('\n') {
        return Err("no newline at the end".into());
    }
    let mut helped = BTreeSet::new();
    let mut typed = BTreeMap::new();
    let mut sampled = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let at = |why: String| format!("line {}: {why}: {line:?}", n + 1);
        if let Some(rest) = line.strip_prefix("# ") {
            let mut words = rest.splitn(3, ' ');
            let (word, name, tail) = (words.next(), words.next(), words.next());
            let (Some(word @ ("HELP" | "TYPE")), Some(name)) = (word, name) else {
                continue; // a comment
            };
            check_name(name).map_err(at)?;
            if sampled.contains(name) {
                return Err(at(format!("{word} after the samples of {name}")));
            }
            let tail = tail.ok_or_else(|| at("nothing after the name".into()))?;
            if word == "HELP" {
                check_escapes(tail, &['\\', 'n']).map_err(at)?;
                if !helped.insert(name.to_owned()) {
                    return Err(at("a second HELP".into()));
                }
            } else {
                if !matches!(tail, "counter" | "gauge") {
                    return Err(at(format!("type {tail}")));
                }
                if tail == "counter" && !name.ends_with("_total") {
                    return Err(at("a counter not ending in _total".into()));
                }
                if typed.insert(name.to_owned(), tail.to_owned()).is_some() {
                    return Err(at("a second TYPE".into()));
                }
            }
            current = Some(name.to_owned());
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            return Err(at("not a sample, HELP, TYPE or comment".into()));
        }
        let (name, labels, value) = split_sample(line).map_err(at)?;
        check_name(name).map_err(at)?;
        if current.as_deref() != Some(name) {
            return Err(at(format!("a sample of {name} outside its family")));
        }
        if !typed.contains_key(name) || !helped.contains(name) {
            return Err(at("a sample without HELP and TYPE".into()));
        }
        let mut label_names = BTreeSet::new();
        for (k, v) in labels {
            let valid = k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !k.starts_with("__");
            if !valid || !label_names.insert(k) {
                return Err(at(format!("label name {k:?}")));
            }
            check_escapes(v, &['\\', '"', 'n']).map_err(at)?;
        }
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().map_err(|e| at(format!("value: {e}")))?,
        };
        sampled.insert(name.to_owned());
        let series = line[..line.len() - value.len() - 1].to_owned();
        if out.insert(series, v).is_some() {
            return Err(at("a series twice".into()));
        }
    }
    Ok(out)
}

fn check_name(name: &str) -> Result<(), String> {
    let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    if !valid || !name.starts_with("knock_spad_") {
        return Err(format!("metric name {name:?}"));
    }
    Ok(())
}

/// Every backslash in `s` starts one of the escapes `allowed`; with `"` allowed (a label
/// value), no double quote stands alone.
fn check_escapes(s: &str, allowed: &[char]) -> Result<(), String> {
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e) if allowed.contains(&e) => {}
                e => return Err(format!("escape \\{e:?} in {s:?}")),
            },
            '"' if allowed.contains(&'"') => return Err(format!("a bare quote in {s:?}")),
            _ => {}
        }
    }
    Ok(())
}

type Sample<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);

/// `name{k="v",...} value` (no timestamp: the daemon writes none) into its parts; label
/// values still escaped.
fn split_sample(line: &str) -> Result<Sample<'_>, String> {
    let Some(brace) = line.find('{') else {
        let (name, value) = line.split_once(' ').ok_or("no value")?;
        return Ok((name, Vec::new(), value));
    };
    let name = &line[..brace];
    let mut rest = &line[brace + 1..];
    let mut labels = Vec::new();
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            let value = after.strip_prefix(' ').ok_or("no blank before the value")?;
            if value.contains(' ') {
                return Err("more than a value after the labels".into());
            }
            return Ok((name, labels, value));
        }
        let (k, after) = rest.split_once("=\"").ok_or("a label without =\"")?;
        // The value ends at the first double quote not escaped.
        let mut end = None;
        let mut escaped = false;
        for (i, c) in after.char_indices() {
            match (escaped, c) {
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(i);
                    break;
                }
                _ => escaped = false,
            }
        }
        let end = end.ok_or("an unterminated label value")?;
        labels.push((k, &after[..end]));
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

#[test]
fn the_reader_refuses_what_the_format_forbids() {
    let good = "# HELP knock_spad_x_total X.\n# TYPE knock_spad_x_total counter\n\
                knock_spad_x_total{a=\"q\\\"\\\\\\n\"} 1\n";
    assert!(parse(good).is_ok(), "{:?}", parse(good));
    for bad in [
        // No TYPE.
        "# HELP knock_spad_x_total X.\nknock_spad_x_total 1\n",
        // A counter without _total.
        "# HELP knock_spad_x X.\n# TYPE knock_spad_x counter\nknock_spad_x 1\n",
        // A bare quote and an unknown escape in label values.
        "# HELP knock_spad_x X.\n# TYPE knock_spad_x gauge\nknock_spad_x{a=\"q\"\"} 1\n",
        "# HELP knock_spad_x X.\n# TYPE knock_spad_x gauge\nknock_spad_x{a=\"\\t\"} 1\n",
        // A series twice, a repeated label, a bad value, no newline at the end.
        "# HELP knock_spad_x X.\n# TYPE knock_spad_x gauge\nknock_spad_x 1\nknock_spad_x 2\n",
        "# HELP knock_spad_x X.\n# TYPE knock_spad_x gauge\nknock_spad_x{a=\"1\",a=\"2\"} 1\n",
        "# HELP knock_spad_x X.\n# TYPE knock_spad_x gauge\nknock_spad_x one\n",
        "# HELP knock_spad_x X.\n# TYPE knock_spad_x gauge\nknock_spad_x 1",
        // Samples of a family apart, and a name without the prefix.
        "# HELP knock_spad_x X.\n# TYPE knock_spad_x gauge\nknock_spad_x{a=\"1\"} 1\n\
         # HELP knock_spad_y Y.\n# TYPE knock_spad_y gauge\nknock_spad_y 1\nknock_spad_x 1\n",
        "# HELP x X.\n# TYPE x gauge\nx 1\n",
    ] {
        assert!(parse(bad).is_err(), "accepted: {bad:?}");
    }
}
