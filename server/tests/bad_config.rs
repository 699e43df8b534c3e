//! Malformed configurations and key files: each one is refused by `knock-spad check` and by
//! the daemon itself with exit status 2, an error naming the file and the line, and nothing
//! started.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_knock-spad");
const KEY: &str = "laptop:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// A door that is valid on its own, for cases about [options] or a second door.
const GOOD_DOOR: &str = "[openSSH]
    Sequence = 7000,9000,8000
    Command  = /usr/sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
";

fn spa_door(extra: &str) -> String {
    format!(
        "[spaSSH]
    Keys          = {KEY}
    Allow_Ports   = 22/tcp
    Start_Command = /usr/sbin/iptables -I INPUT -s %IP% -p %PROTO% --dport %PORT% -j ACCEPT
    Stop_Command  = /usr/sbin/iptables -D INPUT -s %IP% -p %PROTO% --dport %PORT% -j ACCEPT
{extra}"
    )
}

struct Case {
    name: &'static str,
    text: String,
    /// The line the error must name (None: the error names the file, or another file).
    line: Option<usize>,
    /// A word the message must contain.
    needle: &'static str,
}

fn case(name: &'static str, text: impl Into<String>, line: usize, needle: &'static str) -> Case {
    Case {
        name,
        text: text.into(),
        line: Some(line),
        needle,
    }
}

fn cases(dir: &Path) -> Vec<Case> {
    let key_0644 = dir.join("world-readable.keys");
    std::fs::write(&key_0644, format!("{KEY}\n")).expect("write");
    std::fs::set_permissions(&key_0644, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let key_dir = dir.join("a-directory.keys");
    std::fs::create_dir_all(&key_dir).expect("mkdir");
    std::fs::set_permissions(&key_dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let missing = dir.join("no-such-file");
    let keyfile = |path: &Path| {
        format!(
            "[spaSSH]
    KeyFile       = {}
    Allow_Ports   = 22/tcp
    Start_Command = /usr/sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
",
            path.display()
        )
    };
    let seq = |line: &str| format!("[openSSH]\n    {line}\n    Command = /bin/true %IP%\n");
    vec![
        case(
            "unknown directive in a door",
            seq("Sequence = 1,2\n    Colour = blue"),
            3,
            "unknown directive",
        ),
        case(
            "unknown directive in options",
            format!("[options]\n    Colour = blue\n{GOOD_DOOR}"),
            2,
            "unknown",
        ),
        case("bad port", seq("Sequence = 7000,abc,9000"), 2, "abc"),
        case("port 0", seq("Sequence = 7000,0,9000"), 2, "0"),
        case("port 65536", seq("Sequence = 7000,65536"), 2, "65536"),
        case("empty sequence", seq("Sequence ="), 2, "empty"),
        case("empty element", seq("Sequence = 1,,2"), 2, "empty"),
        case("bad protocol", seq("Sequence = 7000:icmp"), 2, "icmp"),
        case(
            "bad tcp flag",
            seq("Sequence = 1,2\n    TCPFlags = syn,bogus"),
            3,
            "bogus",
        ),
        case(
            "contradictory flags",
            seq("Sequence = 1,2\n    TCPFlags = syn,!syn"),
            3,
            "syn",
        ),
        case(
            "seq_timeout 0",
            seq("Sequence = 1,2\n    Seq_Timeout = 0"),
            3,
            "Seq_Timeout",
        ),
        case(
            "seq_timeout not a number",
            seq("Sequence = 1,2\n    Seq_Timeout = soon"),
            3,
            "soon",
        ),
        case(
            "cmd_timeout 0",
            seq("Sequence = 1,2\n    Cmd_Timeout = 0\n    Stop_Command = /bin/true"),
            3,
            "Cmd_Timeout",
        ),
        case(
            "target not an address",
            seq("Sequence = 1,2\n    Target = gateway"),
            3,
            "gateway",
        ),
        case(
            "directive twice",
            seq("Sequence = 1,2\n    Sequence = 3,4"),
            3,
            "twice",
        ),
        case(
            "duplicate door names",
            format!("{GOOD_DOOR}{GOOD_DOOR}"),
            4,
            "openSSH",
        ),
        case(
            "directive outside a section",
            format!("Sequence = 1,2\n{GOOD_DOOR}"),
            1,
            "section",
        ),
        case(
            "unterminated section header",
            "[openSSH\n    Sequence = 1,2\n",
            1,
            "[",
        ),
        case("line without =", seq("Sequence 7000,8000"), 2, "="),
        case(
            "unknown placeholder",
            "[openSSH]\n    Sequence = 1,2\n    Command = /bin/echo %HOST%\n",
            3,
            "%HOST%",
        ),
        case(
            "sequence of 33 ports",
            seq(&format!(
                "Sequence = {}",
                (1000..1033)
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            )),
            2,
            "32",
        ),
        case(
            "bad base64 key",
            spa_door("").replace(KEY, "laptop:!!!notbase64!!!"),
            2,
            "base64",
        ),
        case(
            "short key",
            spa_door("").replace(KEY, "laptop:AAAA"),
            2,
            "32",
        ),
        case(
            "key without a name",
            spa_door("").replace(KEY, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
            2,
            "NAME",
        ),
        case(
            "key name twice",
            spa_door(&format!("    Keys = {KEY}\n")),
            6,
            "laptop",
        ),
        case(
            "SPA door without keys",
            "[spaSSH]\n    Allow_Ports = 22/tcp\n    Start_Command = /bin/true %IP%\n",
            1,
            "key",
        ),
        case(
            "bad allowed port",
            spa_door("").replace("22/tcp", "22/sctp"),
            3,
            "sctp",
        ),
        case(
            "Allow_NAT not yes/no",
            spa_door("    Allow_NAT = maybe\n"),
            6,
            "maybe",
        ),
        case(
            "Max_Timeout below Cmd_Timeout",
            spa_door("    Cmd_Timeout = 60\n    Max_Timeout = 30\n"),
            7,
            "Max_Timeout",
        ),
        case(
            "SpaPort 0",
            format!("[options]\n    SpaPort = 0\n{}", spa_door("")),
            2,
            "SpaPort",
        ),
        case(
            "SpaWindow too large",
            format!("[options]\n    SpaWindow = 99999\n{}", spa_door("")),
            2,
            "SpaWindow",
        ),
        case(
            "ReplayCacheSize too small",
            format!("[options]\n    ReplayCacheSize = 1\n{}", spa_door("")),
            2,
            "ReplayCacheSize",
        ),
        case(
            "Capture unknown",
            format!("[options]\n    Capture = ebpf\n{}", spa_door("")),
            2,
            "ebpf",
        ),
        case(
            "interface name too long",
            format!("[options]\n    Interface = a-very-long-interface-name\n{GOOD_DOOR}"),
            2,
            "Interface",
        ),
        case(
            "key file readable by others",
            keyfile(&key_0644),
            2,
            "chmod 600",
        ),
        case("key file is a directory", keyfile(&key_dir), 2, "directory"),
        case("key file missing", keyfile(&missing), 2, "no-such-file"),
        Case {
            name: "no doors at all",
            text: "[options]\n    UseSyslog\n".into(),
            line: None,
            needle: "door",
        },
    ]
}

/// Runs `cmd`, killing it if it is still running after 5 s (a daemon that accepted a bad file
/// would otherwise run forever).
fn run_bounded(mut cmd: Command) -> std::process::Output {
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run knock-spad");
    let start = std::time::Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > std::time::Duration::from_secs(5) {
            // Our own child, not yet reaped: its PID is still ours.
            let _ = child.kill();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.wait_with_output().expect("collect output")
}

fn write_conf(dir: &Path, name: &str, text: &str) -> PathBuf {
    let file = dir.join(format!("{}.conf", name.replace([' ', '/'], "-")));
    std::fs::write(&file, text).expect("write conf");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    file
}

#[test]
fn every_malformed_configuration_is_refused_with_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = cases(dir.path());
    assert!(cases.len() >= 25);
    let mut failures = Vec::new();
    for c in &cases {
        let file = write_conf(dir.path(), c.name, &c.text);
        let state = dir.path().join("state");
        for mode in ["check", "daemon"] {
            let mut cmd = Command::new(BIN);
            cmd.arg("-c").arg(&file).arg("--state-dir").arg(&state);
            if mode == "check" {
                cmd.arg("check");
            } else {
                // Would capture on loopback if the file were valid; it must never get there.
                cmd.args(["-i", "lo"]);
            }
            let out = run_bounded(cmd);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let want = match c.line {
                Some(l) => format!("{}:{l}:", file.display()),
                None => file.display().to_string(),
            };
            let ok = out.status.code() == Some(2)
                && stderr.contains(&want)
                && stderr.contains(c.needle)
                && stderr.contains("nothing started");
            if !ok {
                failures.push(format!(
                    "{} ({mode}): exit {:?}, wanted 2 with {want:?} and {:?}; stderr:\n{stderr}",
                    c.name,
                    out.status.code(),
                    c.needle
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn an_unreadable_configuration_file_is_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.conf");
    let out = Command::new(BIN)
        .arg("-c")
        .arg(&missing)
        .arg("check")
        .output()
        .expect("run knock-spad");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
}
