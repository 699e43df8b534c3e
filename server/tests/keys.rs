//! `knock-spad keys list|add|revoke` on temporary configurations (no daemon: StateDir is a
//! temporary directory, so nothing on the host is signalled).

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;
use serde_json::Value;

fn conf_text(dir: &Path) -> String {
    format!(
        "# knock-spa test configuration\n\
         [options]\n    StateDir   = {state}\n    ServerName = keys-test\n\n\
         # the SSH door: inline keys\n\
         [spaSSH]\n    Keys          = {alice}\n    Allow_Ports   = 22/tcp\n    \
         Start_Command = /bin/true %IP%\n    Stop_Command  = /bin/true %IP%\n\n\
         # the web door: a key file\n\
         [spaWeb]\n    KeyFile       = web.keys\n    Allow_Ports   = 443/tcp, 8443/tcp\n    \
         Start_Command = /bin/true %IP%\n",
        state = dir.join("state").display(),
        alice = key("alice", 1).to_inline().as_str(),
    )
}

fn setup() -> (tempfile::TempDir, std::path::PathBuf, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = conf_text(dir.path());
    let conf = write_private(dir.path(), "knockd.conf", &text);
    write_private(
        dir.path(),
        "web.keys",
        &format!("# web keys\n{}\n", key("carol", 3).to_inline().as_str()),
    );
    (dir, conf, text)
}

fn list(conf: &str, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["-c", conf, "keys", "list", "--json"];
    args.extend_from_slice(extra);
    let out = run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("json")
}

fn names(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .map(|e| {
            format!(
                "{}/{}",
                e["door"].as_str().unwrap_or(""),
                e["name"].as_str().unwrap_or("")
            )
        })
        .collect()
}

fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// `dir`'s configuration and `web.keys` still hold `conf` and `web`, and no other file (no
/// temporary copy) is there.
#[track_caller]
fn assert_unchanged(dir: &Path, conf: &str, web: &str, what: &str) {
    let read = |name| fs::read_to_string(dir.join(name)).expect("read");
    assert_eq!(read("knockd.conf"), conf, "{what}");
    assert_eq!(read("web.keys"), web, "{what}");
    assert_eq!(dir_names(dir), ["knockd.conf", "web.keys"], "{what}");
}

#[test]
fn keys_add_list_revoke_round_trip() {
    let (dir, conf, original) = setup();
    let c = conf.to_str().expect("utf-8");
    let web_original = fs::read_to_string(dir.path().join("web.keys")).expect("read");

    let entries = list(c, &[]);
    assert_eq!(names(&entries), ["spaSSH/alice", "spaWeb/carol"]);
    assert_eq!(entries[0]["id"], key("alice", 1).derive().id().to_string());
    assert_eq!(
        entries[1]["ports"],
        serde_json::json!(["443/tcp", "8443/tcp"])
    );
    assert!(entries[1]["source"]
        .as_str()
        .is_some_and(|s| s.ends_with("web.keys:2")));
    // The table never shows a secret.
    let table = stdout(&run(&["-c", c, "keys", "list"]));
    assert!(
        table.contains("alice") && table.contains("KEY ID"),
        "{table}"
    );
    assert!(!table.contains(key("alice", 1).master().to_base64().as_str()));

    // add to the inline door, from the line keygen prints.
    let bob = key("bob", 2);
    let line = format!("Keys = {}", bob.to_inline().as_str());
    let out = run(&[
        "-c",
        c,
        "keys",
        "add",
        "bob",
        "--door",
        "spaSSH",
        "--from-line",
        &line,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&bob.derive().id().to_string()),
        "{}",
        stdout(&out)
    );
    let now = fs::read_to_string(&conf).expect("read");
    assert!(
        now.contains(&format!(
            "    Keys          = {}\n",
            bob.to_inline().as_str()
        )),
        "{now}"
    );
    assert!(
        now.contains("# the SSH door: inline keys\n"),
        "comments stay"
    );
    // add to the key-file door, from a client keyfile.
    let dave = key("dave", 4);
    dave.save(&dir.path().join("dave.key"), false)
        .expect("keyfile");
    let kf = dir.path().join("dave.key");
    let out = run(&[
        "-c",
        c,
        "keys",
        "add",
        "dave",
        "--door",
        "spaWeb",
        "--from-file",
        kf.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        names(&list(c, &[])),
        ["spaSSH/alice", "spaSSH/bob", "spaWeb/carol", "spaWeb/dave"]
    );
    assert_eq!(
        names(&list(c, &["--door", "spaWeb"])),
        ["spaWeb/carol", "spaWeb/dave"]
    );
    assert_eq!(
        fs::read_to_string(&conf)
            .expect("read")
            .matches("Keys")
            .count(),
        2,
        "the key-file door's key went to its KeyFile, not the configuration"
    );
    // The configuration still passes `check`.
    assert!(run(&["-c", c, "check"]).status.success());

    // revoke both: the files are back to what they were, byte for byte, with their modes.
    for name in ["bob", "dave"] {
        let out = run(&["-c", c, "keys", "revoke", name]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stdout(&out).contains(&format!("removed key `{name}`")),
            "{}",
            stdout(&out)
        );
    }
    assert_eq!(names(&list(c, &[])), ["spaSSH/alice", "spaWeb/carol"]);
    assert_eq!(fs::read_to_string(&conf).expect("read"), original);
    assert_eq!(
        fs::read_to_string(dir.path().join("web.keys")).expect("read"),
        web_original
    );
    for f in ["knockd.conf", "web.keys"] {
        let mode = fs::metadata(dir.path().join(f))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    // No temporary files left behind.
    assert_eq!(
        dir_names(dir.path()),
        ["dave.key", "knockd.conf", "web.keys"]
    );
}

#[test]
fn keys_refuses_an_invalid_result_and_leaves_the_files_unchanged() {
    let (dir, conf, original) = setup();
    let c = conf.to_str().expect("utf-8");
    let web = dir.path().join("web.keys");
    let web_original = fs::read_to_string(&web).expect("read");
    let unchanged = |what: &str| assert_unchanged(dir.path(), &original, &web_original, what);

    // Revoking the door's only key would leave an SPA door without keys.
    let out = run(&["-c", c, "keys", "revoke", "alice"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{c}:")),
        "errors name the real file: {err}"
    );
    assert!(err.contains("nothing was changed"), "{err}");
    assert!(
        !err.contains(".knock-spad-"),
        "no temporary path shown: {err}"
    );
    unchanged("revoke alice");

    // Emptying a key file: the loader's error names the key file and its line.
    let out = run(&["-c", c, "keys", "revoke", "carol", "--door", "spaWeb"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains(&format!("{}:", web.display())), "{err}");
    assert!(err.contains("holds no keys"), "{err}");
    unchanged("revoke carol");

    // One secret under two names (alice's secret as `eve`).
    let alias = format!(
        "Keys = eve:{}",
        key("alice", 1).master().to_base64().as_str()
    );
    let out = run(&[
        "-c",
        c,
        "keys",
        "add",
        "eve",
        "--door",
        "spaSSH",
        "--from-line",
        &alias,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(!stderr(&out).contains(key("alice", 1).master().to_base64().as_str()));
    unchanged("secret under two names");

    // A name already in the door.
    let again = format!("Keys = {}", key("alice", 7).to_inline().as_str());
    let out = run(&[
        "-c",
        c,
        "keys",
        "add",
        "alice",
        "--door",
        "spaSSH",
        "--from-line",
        &again,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("already has a key `alice`"),
        "{}",
        stderr(&out)
    );
    unchanged("duplicate name");

    // A malformed line: refused without echoing it.
    let bad = "Keys = frank:not-base64-at-all";
    let out = run(&[
        "-c",
        c,
        "keys",
        "add",
        "frank",
        "--door",
        "spaSSH",
        "--from-line",
        bad,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        !stderr(&out).contains("not-base64-at-all"),
        "{}",
        stderr(&out)
    );
    unchanged("malformed line");

    // Several SPA doors and no --door; an unknown door; an unknown key.
    let line = format!("Keys = {}", key("gina", 8).to_inline().as_str());
    let out = run(&["-c", c, "keys", "add", "gina", "--from-line", &line]);
    assert!(stderr(&out).contains("--door"), "{}", stderr(&out));
    let out = run(&[
        "-c",
        c,
        "keys",
        "add",
        "gina",
        "--door",
        "nope",
        "--from-line",
        &line,
    ]);
    assert!(stderr(&out).contains("no door [nope]"), "{}", stderr(&out));
    let out = run(&["-c", c, "keys", "revoke", "nobody"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no SPA door has a key `nobody`"),
        "{}",
        stderr(&out)
    );
    unchanged("usage errors");
}

/// A keys file read by two doors would give each of its keys two doors, which the loader
/// refuses (one key id, one door), so `check` reports it and `keys add` to such a file is
/// refused and changes nothing.
#[test]
fn a_keys_file_shared_by_two_doors_is_refused() {
    let (dir, conf, text) = setup();
    let web_keys = dir.path().join("web.keys");
    let before = fs::read_to_string(&web_keys).expect("read");
    let shared = format!(
        "{text}\n[spaMail]\n    KeyFile       = web.keys\n    Allow_Ports   = 993/tcp\n    \
         Start_Command = /bin/true %IP%\n"
    );
    fs::write(&conf, &shared).expect("write");
    let c = conf.to_str().expect("utf-8");
    let check = run(&["-c", c, "check"]);
    assert_eq!(check.status.code(), Some(2));
    assert!(
        stderr(&check).contains("door [spaMail]: key `carol` has the same key id as key `carol`"),
        "{}",
        stderr(&check)
    );
    let dave = key("dave", 4);
    let line = format!("Keys = {}", dave.to_inline().as_str());
    let out = run(&[
        "-c",
        c,
        "keys",
        "add",
        "dave",
        "--door",
        "spaWeb",
        "--from-line",
        &line,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("nothing was changed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::read_to_string(&web_keys).expect("read"), before);
    assert_eq!(fs::read_to_string(&conf).expect("read"), shared);
}

/// `keys add` writes a secret only into a file the loader accepts secrets from: a
/// configuration with inline keys or a key file that group or others can read is refused
/// before anything is written (no temporary copy either), with the loader's message.
#[test]
fn keys_add_refuses_a_file_readable_by_others_before_writing_a_secret() {
    let (dir, conf, original) = setup();
    let c = conf.to_str().expect("utf-8");
    let web = dir.path().join("web.keys");
    let web_original = fs::read_to_string(&web).expect("read");
    let chmod = |p: &Path, mode| {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
    };
    let add = |name: &str, door: &str, byte| {
        let line = format!("Keys = {}", key(name, byte).to_inline().as_str());
        run(&[
            "-c",
            c,
            "keys",
            "add",
            name,
            "--door",
            door,
            "--from-line",
            &line,
        ])
    };
    let unchanged = |what: &str| assert_unchanged(dir.path(), &original, &web_original, what);

    chmod(&conf, 0o644);
    let out = add("bob", "spaSSH", 2);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = stderr(&out);
    // Line 8 holds the door's first `Keys`.
    assert!(
        err.contains(&format!("{c}:8: permissions 0644 are too open")),
        "{err}"
    );
    assert!(err.contains(&format!("(run: chmod 600 {c})")), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    assert!(!err.contains(key("bob", 2).master().to_base64().as_str()));
    unchanged("inline key into a 0644 configuration");
    assert_eq!(
        fs::metadata(&conf).expect("meta").permissions().mode() & 0o777,
        0o644
    );

    chmod(&conf, 0o600);
    chmod(&web, 0o640);
    let out = add("dave", "spaWeb", 4);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = stderr(&out);
    let w = web.display().to_string();
    assert!(
        err.contains(&format!("{w}: permissions 0640 are too open")),
        "{err}"
    );
    assert!(err.contains(&format!("(run: chmod 600 {w})")), "{err}");
    unchanged("key into a 0640 key file");
}

/// A configuration whose keys are all in key files holds no secret: it may stay 0644, and
/// `keys add` puts the new key in the (private) key file without touching it.
#[test]
fn keys_add_to_a_key_file_leaves_a_configuration_without_secrets_as_it_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "[options]\n    StateDir   = {}\n    ServerName = keys-test\n\n\
         [spaWeb]\n    KeyFile       = web.keys\n    Allow_Ports   = 443/tcp\n    \
         Start_Command = /bin/true %IP%\n",
        dir.path().join("state").display()
    );
    let conf = dir.path().join("knockd.conf");
    fs::write(&conf, &text).expect("write");
    fs::set_permissions(&conf, fs::Permissions::from_mode(0o644)).expect("chmod");
    let web = write_private(
        dir.path(),
        "web.keys",
        &format!("{}\n", key("carol", 3).to_inline().as_str()),
    );
    let c = conf.to_str().expect("utf-8");
    let line = format!("Keys = {}", key("dave", 4).to_inline().as_str());
    let out = run(&[
        "-c",
        c,
        "keys",
        "add",
        "dave",
        "--from-line",
        &line,
        "--no-reload",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fs::read_to_string(&conf).expect("read"), text);
    assert_eq!(
        fs::metadata(&conf).expect("meta").permissions().mode() & 0o777,
        0o644
    );
    assert_eq!(
        fs::metadata(&web).expect("meta").permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(names(&list(c, &[])), ["spaWeb/carol", "spaWeb/dave"]);
}

/// A public key (`PublicKeys = NAME:BASE64` from `knock-spa keygen --public-key`): added as a
/// `PublicKeys` line of the door (even one with a key file), listed with its kind, revoked.
#[test]
fn public_keys_are_added_listed_and_revoked() {
    let (dir, conf, _) = setup();
    let c = conf.to_str().expect("utf-8");
    let server = knock_keys::public::ServerSecret::generate().expect("server key");
    let skey = dir.path().join("server.key");
    server.save(&skey, false).expect("save");
    // ServerKey first (a door with PublicKeys needs it).
    let text = fs::read_to_string(&conf).expect("read").replace(
        "    ServerName = keys-test\n",
        &format!(
            "    ServerName = keys-test\n    ServerKey  = {}\n",
            skey.display()
        ),
    );
    fs::write(&conf, text).expect("write");
    let pk = knock_keys::public::SigningKey::from_seed("phone", [9; 32]).expect("key");
    let line = format!("PublicKeys = {}", pk.public().to_inline());
    // Into the door with a key file: the public key goes on a line of the configuration.
    let out = run(&[
        "-c",
        c,
        "keys",
        "add",
        "phone",
        "--door",
        "spaWeb",
        "--from-line",
        &line,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("added public key `phone`"),
        "{}",
        stdout(&out)
    );
    let now = fs::read_to_string(&conf).expect("read");
    assert_eq!(now.matches("PublicKeys = phone:").count(), 1, "{now}");
    let web = fs::read_to_string(dir.path().join("web.keys")).expect("read");
    assert!(
        !web.contains("phone"),
        "a public key went into the key file: {web}"
    );
    let entries = list(c, &[]);
    let phone: Vec<&Value> = entries.iter().filter(|e| e["name"] == "phone").collect();
    assert_eq!(phone.len(), 1);
    assert!(phone.iter().all(|e| e["kind"] == "public-key"));
    assert_eq!(phone[0]["id"], pk.public().id().to_string());
    assert!(entries
        .iter()
        .any(|e| e["name"] == "alice" && e["kind"] == "shared-secret"));
    let check = run(&["-c", c, "check"]);
    assert!(
        stdout(&check).contains("1 public-key"),
        "{}",
        stdout(&check)
    );
    assert!(
        stdout(&check).contains(&server.public().to_base64()),
        "{}",
        stdout(&check)
    );

    let out = run(&["-c", c, "keys", "revoke", "phone"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let now = fs::read_to_string(&conf).expect("read");
    assert!(!now.contains("PublicKeys"), "{now}");
    assert!(list(c, &[]).iter().all(|e| e["name"] != "phone"));
}
