//! Public-key mode from the client's side: `keygen --public-key` and version-2 packets that
//! the shared verifier (the server's code) accepts, with the server key made here.

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use knock_keys::public::{ClientPublic, ServerSecret};
use knock_shared::replay::ReplayCache;
use knock_shared::verify::{KeyPolicy, Verifier};
use knock_shared::wire::ServerId;

fn run(home: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_knock-spa"))
        .env("HOME", home)
        .env("USER", "tester")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("KNOCK_SPA_CONFIG")
        .args(args)
        .output()
        .expect("run knock-spa")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// keygen --public-key, then the door line it printed.
fn keygen(home: &std::path::Path) -> (std::path::PathBuf, ClientPublic, String) {
    let path = home.join("pk.key");
    let out = run(
        home,
        &[
            "keygen",
            "--public-key",
            "--name",
            "laptop",
            "-o",
            path.to_str().expect("utf-8"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("PublicKeys = "))
        .collect();
    assert_eq!(lines.len(), 1, "one PublicKeys line:\n{stdout}");
    let public = ClientPublic::from_inline(lines[0]).expect("the line parses");
    (path, public, stdout)
}

#[test]
fn keygen_public_key_writes_a_private_file_and_prints_only_the_public_line() {
    let home = tempfile::tempdir().expect("temp dir");
    let (path, public, stdout) = keygen(home.path());
    assert_eq!(public.name(), "laptop");
    let meta = std::fs::metadata(&path).expect("key file");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let file = std::fs::read_to_string(&path).expect("read");
    assert!(file.contains("kind = public-key"), "{file}");
    let secret = file
        .lines()
        .find_map(|l| l.strip_prefix("secret = "))
        .expect("secret line")
        .trim();
    assert!(
        !stdout.contains(secret),
        "keygen printed the secret:\n{stdout}"
    );
    // `knock-spa config` names the kind.
    let out = run(
        home.path(),
        &["--key", path.to_str().expect("utf-8"), "config"],
    );
    assert!(
        text(&out.stdout).contains("public-key"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn a_public_key_packet_is_version_2_and_the_servers_verifier_accepts_it() {
    let home = tempfile::tempdir().expect("temp dir");
    let (path, public, _) = keygen(home.path());
    let server = ServerSecret::generate().expect("server key");
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let port = sock.local_addr().expect("addr").port().to_string();
    let b64 = server.public().to_base64();
    let out = run(
        home.path(),
        &[
            "--key",
            path.to_str().expect("utf-8"),
            "open",
            "22/tcp",
            "127.0.0.1",
            "--spa-port",
            &port,
            "--server-key",
            &b64,
            "-v",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("packet version 2"),
        "{}",
        text(&out.stderr)
    );
    let mut buf = [0u8; 1024];
    let (n, _) = sock.recv_from(&mut buf).expect("a packet");
    assert_eq!(n, 265);
    assert_eq!(buf[0], 2);

    let mut v = Verifier::new(vec![ServerId::from_name("127.0.0.1")], 60);
    v.set_server_key(server);
    v.add_public_key(
        &public,
        KeyPolicy {
            ports: vec!["22/tcp".parse().expect("port")],
            allow_nat: false,
        },
        0,
    )
    .expect("add");
    let mut cache = ReplayCache::new(8);
    let ok = v
        .verify(
            now(),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            &buf[..n],
            &mut cache,
        )
        .expect("the server accepts the client's packet");
    assert_eq!(v.key_name(ok.key()), "laptop");
}

#[test]
fn a_public_key_without_a_server_key_or_with_a_bad_one_is_an_input_error() {
    let home = tempfile::tempdir().expect("temp dir");
    let (path, _, _) = keygen(home.path());
    let key = path.to_str().expect("utf-8");
    let out = run(
        home.path(),
        &["--key", key, "open", "22/tcp", "127.0.0.1", "--dry-run"],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("is a public key") && err.contains("--server-key"),
        "{err}"
    );
    let zero = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let out = run(
        home.path(),
        &[
            "--key",
            key,
            "open",
            "22/tcp",
            "127.0.0.1",
            "--dry-run",
            "--server-key",
            zero,
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("server-key"),
        "{}",
        text(&out.stderr)
    );
}
