//! End-to-end tests of the `knock-spa` binary: each test runs the built binary with its own
//! temporary `$HOME`, and checks what it writes, prints and sends against the shared verifier
//! (the same code the server runs) and against real loopback sockets.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use knock_keys::NamedKey;
use knock_shared::replay::ReplayCache;
use knock_shared::types::PortSpec;
use knock_shared::verify::{Accepted, KeyPolicy, Reject, Verifier};
use knock_shared::wire::{Action, Admit, ServerId, PACKET_LEN};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A temporary home directory and a command builder running the binary in it.
struct Env {
    home: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Self {
            home: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn key_path(&self) -> PathBuf {
        self.home.path().join(".knock/key")
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_knock-spa"));
        c.env("HOME", self.home.path())
            .env("USER", "tester")
            .env_remove("RUST_BACKTRACE")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("KNOCK_SPA_CONFIG");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run knock-spa")
    }

    /// An environment with a key at ~/.knock/key, written by `keygen`.
    fn with_key() -> Self {
        let env = Self::new();
        let out = env.run(&["keygen", "--name", "alice"]);
        assert_ok(&out);
        env
    }

    fn key(&self) -> NamedKey {
        NamedKey::load(&self.key_path()).expect("load the key keygen wrote")
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        stdout(out),
        stderr(out)
    );
}

/// Asserts a clean failure: the exit code, one `knock-spa: error:` line containing `needle`,
/// no panic, nothing on stdout.
fn assert_fails(out: &Output, code: i32, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(err.contains(needle), "expected `{needle}` in: {err}");
    assert!(out.stdout.is_empty(), "stdout: {}", stdout(out));
}

fn unhex(text: &str) -> Vec<u8> {
    let text = text.trim();
    assert!(text.len() % 2 == 0, "odd hex length");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn spec(s: &str) -> PortSpec {
    s.parse().expect("test spec")
}

/// The server side: the shared verifier with this key, server id "127.0.0.1", policy 22/tcp.
fn verifier(key: &NamedKey, allow_nat: bool) -> Verifier {
    let mut v = Verifier::new(vec![ServerId::from_name("127.0.0.1")], 60);
    v.add_key(
        key,
        KeyPolicy {
            ports: vec![spec("22/tcp"), spec("53/udp")],
            allow_nat,
        },
        0,
    )
    .expect("one key");
    v
}

fn verify(v: &Verifier, source: IpAddr, packet: &[u8]) -> Result<Accepted, Reject> {
    v.verify(now(), source, packet, &mut ReplayCache::new(16))
}

/// Runs `open`/`close ... --dry-run` and returns the packet bytes.
fn dry_run(env: &Env, args: &[&str]) -> Vec<u8> {
    let key = env.key_path();
    let key = key.to_str().expect("utf-8 temp path");
    let mut all = vec!["--key", key];
    all.extend_from_slice(args);
    all.push("--dry-run");
    let out = env.run(&all);
    assert_ok(&out);
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "one line: {text:?}");
    assert!(
        text.trim_end()
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "lowercase hex: {text}"
    );
    unhex(&text)
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("stat").permissions().mode() & 0o7777
}

#[test]
fn keygen_writes_a_private_key_and_prints_the_server_line() {
    let env = Env::new();
    let out = env.run(&["keygen"]);
    assert_ok(&out);
    let path = env.key_path();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().expect("dir")), 0o700);

    let key = env.key();
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.starts_with("Keys = "))
        .expect("a Keys line");
    // Default name: $USER@hostname, sanitised.
    assert!(line.starts_with("Keys = tester@"), "{line}");
    assert_eq!(
        key.name(),
        line["Keys = ".len()..].split(':').next().expect("name")
    );
    // The printed line is exactly the key in the file.
    assert_eq!(line, format!("Keys = {}", key.to_inline().as_str()));
    // Every other line is a comment (the whole output can be pasted), one names the key id.
    assert!(text
        .lines()
        .filter(|l| *l != line)
        .all(|l| l.starts_with('#')));
    assert!(text.contains(&key.derive().id().to_string()));
    assert!(text.to_lowercase().contains("secret"));
}

#[test]
fn keygen_name_and_output_options() {
    let env = Env::new();
    let file = env.home.path().join("sub/dir/k");
    let out = env.run(&[
        "keygen",
        "--name",
        "bob.laptop",
        "-o",
        file.to_str().expect("utf-8"),
    ]);
    assert_ok(&out);
    assert_eq!(NamedKey::load(&file).expect("load").name(), "bob.laptop");
    assert!(!env.key_path().exists());
    // --key names the output when -o is absent.
    let other = env.home.path().join("other");
    let out = env.run(&["--key", other.to_str().expect("utf-8"), "keygen"]);
    assert_ok(&out);
    assert_eq!(mode(&other), 0o600);

    let out = env.run(&["keygen", "--name", "bad name", "-o", "/nonexistent/x"]);
    assert_fails(&out, 2, "invalid key name");
}

#[test]
fn keygen_refuses_to_overwrite_without_force() {
    let env = Env::new();
    assert_ok(&env.run(&["keygen"]));
    let before = fs::read(env.key_path()).expect("read");

    let out = env.run(&["keygen"]);
    assert_fails(&out, 1, "--force");
    assert_eq!(
        fs::read(env.key_path()).expect("read"),
        before,
        "file unchanged"
    );

    let out = env.run(&["keygen", "--force"]);
    assert_ok(&out);
    assert_ne!(fs::read(env.key_path()).expect("read"), before, "new key");
    assert_eq!(mode(&env.key_path()), 0o600);
}

#[test]
fn dry_run_packet_is_accepted_and_every_bit_flip_rejected() {
    let env = Env::with_key();
    let packet = dry_run(&env, &["open", "ssh", "127.0.0.1"]);
    assert_eq!(packet.len(), PACKET_LEN);
    assert_eq!(packet.len(), 209);

    // No NAT allowed: the default admitted address (route to 127.0.0.1) must be the source.
    let v = verifier(&env.key(), false);
    let acc = verify(&v, LOOPBACK, &packet).expect("accepted");
    assert_eq!(acc.action(), Action::Open);
    assert_eq!(acc.addr(), LOOPBACK);
    let req = acc.request();
    assert_eq!(req.admit, Admit::Addr(LOOPBACK));
    assert_eq!(req.ports.iter().collect::<Vec<_>>(), vec![spec("22/tcp")]);
    assert_eq!(req.server, ServerId::from_name("127.0.0.1"));
    assert_eq!(req.duration, 0);
    assert!(req.timestamp.abs_diff(now()) <= 5);

    for bit in 0..packet.len() * 8 {
        let mut bad = packet.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        assert!(
            verify(&v, LOOPBACK, &bad).is_err(),
            "flip of bit {bit} was accepted"
        );
    }

    // Two runs never produce the same packet (fresh nonce and padding).
    let again = dry_run(&env, &["open", "ssh", "127.0.0.1"]);
    assert_ne!(again, packet);
    assert!(verify(&v, LOOPBACK, &again).is_ok());
}

#[test]
fn allow_ip_use_source_close_and_options_reach_the_request() {
    let env = Env::with_key();
    let nat = verifier(&env.key(), true);

    let p = dry_run(
        &env,
        &["open", "ssh", "127.0.0.1", "--allow-ip", "192.0.2.5"],
    );
    let acc = verify(&nat, LOOPBACK, &p).expect("accepted with NAT");
    assert_eq!(
        acc.request().admit,
        Admit::Addr("192.0.2.5".parse().expect("ip"))
    );
    assert_eq!(acc.addr(), "192.0.2.5".parse::<IpAddr>().expect("ip"));
    // Without NAT the same packet is refused: the address is not the source.
    assert_eq!(
        verify(&verifier(&env.key(), false), LOOPBACK, &p).map(|_| ()),
        Err(Reject::AddressMismatch)
    );

    let p = dry_run(&env, &["open", "ssh", "127.0.0.1", "--use-source"]);
    let acc = verify(&nat, "198.51.100.7".parse().expect("ip"), &p).expect("accepted");
    assert_eq!(acc.request().admit, Admit::Source);
    assert_eq!(acc.addr(), "198.51.100.7".parse::<IpAddr>().expect("ip"));

    let p = dry_run(&env, &["close", "ssh", "127.0.0.1"]);
    let acc = verify(&nat, LOOPBACK, &p).expect("accepted");
    assert_eq!(acc.action(), Action::Close);

    let p = dry_run(
        &env,
        &["open", "22,domain/udp", "127.0.0.1", "--for", "45", "-q"],
    );
    let acc = verify(&nat, LOOPBACK, &p).expect("accepted");
    assert_eq!(
        acc.request().ports.iter().collect::<Vec<_>>(),
        vec![spec("22/tcp"), spec("53/udp")]
    );
    assert_eq!(acc.request().duration, 45);

    // The server id binds the packet: another identity is refused, a matching one accepted.
    let p = dry_run(
        &env,
        &["open", "ssh", "127.0.0.1", "--server-id", "gateway"],
    );
    assert_eq!(
        verify(&nat, LOOPBACK, &p).map(|_| ()),
        Err(Reject::WrongServer)
    );
    let p = dry_run(
        &env,
        &["open", "ssh", "localhost", "-4", "--server-id", "127.0.0.1"],
    );
    assert!(verify(&nat, LOOPBACK, &p).is_ok());
}

#[test]
fn dry_run_keeps_stdout_for_the_packet_and_quiet_silences_stderr() {
    let env = Env::with_key();
    let out = env.run(&["open", "ssh", "127.0.0.1", "--dry-run"]);
    assert_ok(&out);
    assert!(stderr(&out).contains("open 22/tcp for 127.0.0.1 to 127.0.0.1:62201"));
    let out = env.run(&["open", "ssh", "127.0.0.1", "--dry-run", "-q"]);
    assert_ok(&out);
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
}

#[test]
fn open_keyfile_is_refused() {
    let env = Env::with_key();
    fs::set_permissions(env.key_path(), fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = env.run(&["open", "ssh", "127.0.0.1", "--dry-run"]);
    assert_fails(&out, 1, "chmod 600");
    assert!(stderr(&out).starts_with("knock-spa: error: "));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
}

#[test]
fn missing_key_and_missing_home() {
    let env = Env::new();
    let out = env.run(&["open", "ssh", "127.0.0.1", "--dry-run"]);
    assert_fails(&out, 1, "knock-spa keygen");
    assert_eq!(
        stderr(&out).matches("No such file").count(),
        1,
        "cause printed once: {}",
        stderr(&out)
    );

    let out = env
        .cmd()
        .env_remove("HOME")
        .args(["open", "ssh", "127.0.0.1", "--dry-run"])
        .output()
        .expect("run");
    assert_fails(&out, 1, "neither $HOME nor $XDG_CONFIG_HOME is set");
}

#[test]
fn invalid_input_fails_cleanly() {
    let env = Env::with_key();
    let seventeen: Vec<String> = (1..=17).map(|p| p.to_string()).collect();
    let seventeen = seventeen.join(",");
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["open", "no-such-service", "127.0.0.1"],
            2,
            "unknown service `no-such-service`",
        ),
        (&["open", "0", "127.0.0.1"], 2, "invalid port `0`"),
        (&["open", "65536", "127.0.0.1"], 2, "invalid port `65536`"),
        (&["open", "22x", "127.0.0.1"], 2, "invalid port `22x`"),
        (&["open", "22/sctp", "127.0.0.1"], 2, "tcp or udp"),
        (&["open", "ssh,,http", "127.0.0.1"], 2, "empty entry"),
        (&["open", &seventeen, "127.0.0.1"], 2, "too many ports: 17"),
        (
            &["close", "ssh", "no-such-host.invalid"],
            1,
            "no-such-host.invalid",
        ),
        (&["open", "ssh", "127.0.0.1", "-6"], 1, "no IPv6 address"),
        (
            &["open", "ssh", "127.0.0.1", "--allow-ip", "not-an-ip"],
            2,
            "--allow-ip",
        ),
        (
            &["open", "ssh", "127.0.0.1", "--allow-ip", "0.0.0.0"],
            2,
            "--allow-ip",
        ),
        (
            &["open", "ssh", "127.0.0.1", "--spa-port", "0"],
            2,
            "--spa-port",
        ),
        (&["knock", "127.0.0.1", "7000", "0"], 2, "invalid port `0`"),
        (&["knock", "127.0.0.1", "7000:icmp"], 2, "tcp or udp"),
        (
            &["knock", "no-such-host.invalid", "7000"],
            1,
            "no-such-host.invalid",
        ),
        (&["frobnicate"], 2, "frobnicate"),
    ];
    for (args, code, needle) in cases {
        let mut all = args.to_vec();
        if args[0] != "knock" && args[0] != "frobnicate" {
            all.push("--dry-run");
        }
        let out = env.run(&all);
        assert_fails(&out, *code, needle);
    }
}

#[test]
fn open_sends_one_datagram_the_verifier_accepts() {
    let env = Env::with_key();
    let server = UdpSocket::bind((LOOPBACK, 0)).expect("bind");
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let port = server.local_addr().expect("addr").port().to_string();

    let out = env.run(&["open", "ssh", "127.0.0.1", "--spa-port", &port]);
    assert_ok(&out);
    assert!(out.stdout.is_empty(), "stdout stays clean");
    assert_eq!(
        stderr(&out).trim_end(),
        format!("sent open 22/tcp for 127.0.0.1 to 127.0.0.1:{port}")
    );

    let mut buf = [0u8; 2048];
    let (n, from) = server.recv_from(&mut buf).expect("a datagram");
    assert_eq!(n, PACKET_LEN);
    let acc = verify(&verifier(&env.key(), false), from.ip(), &buf[..n]).expect("accepted");
    assert_eq!(acc.action(), Action::Open);
    assert_eq!(acc.addr(), LOOPBACK);

    // -q: nothing on either stream.
    let out = env.run(&["close", "ssh", "127.0.0.1", "--spa-port", &port, "-q"]);
    assert_ok(&out);
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
    let (n, from) = server.recv_from(&mut buf).expect("a datagram");
    let acc = verify(&verifier(&env.key(), false), from.ip(), &buf[..n]).expect("accepted");
    assert_eq!(acc.action(), Action::Close);
}

/// Waits for one connection on `listener` (non-blocking poll), returning when it arrived.
fn accept_time(listener: TcpListener) -> Instant {
    listener.set_nonblocking(true).expect("nonblocking");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match listener.accept() {
            Ok(_) => return Instant::now(),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "no TCP knock arrived");
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// Waits for one datagram, returning when it arrived, its payload and its source.
fn recv_time(sock: UdpSocket) -> (Instant, Vec<u8>, SocketAddr) {
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    let (n, from) = sock.recv_from(&mut buf).expect("no UDP knock arrived");
    (Instant::now(), buf[..n].to_vec(), from)
}

#[test]
fn knock_hits_tcp_then_udp_in_order_with_the_delay() {
    let env = Env::new();
    let tcp = TcpListener::bind((LOOPBACK, 0)).expect("bind tcp");
    let udp = UdpSocket::bind((LOOPBACK, 0)).expect("bind udp");
    let p1 = tcp.local_addr().expect("addr").port();
    let p2 = udp.local_addr().expect("addr").port();
    let t = std::thread::spawn(move || accept_time(tcp));
    let u = std::thread::spawn(move || recv_time(udp));

    let out = env.run(&[
        "knock",
        "127.0.0.1",
        &p1.to_string(),
        &format!("{p2}:udp"),
        "-d",
        "50",
        "-v",
    ]);
    assert_ok(&out);
    // -v prints each hit as knock does.
    assert_eq!(
        stdout(&out),
        format!("hitting tcp 127.0.0.1:{p1}\nhitting udp 127.0.0.1:{p2}\n")
    );

    let tcp_at = t.join().expect("tcp thread");
    let (udp_at, payload, _) = u.join().expect("udp thread");
    assert!(udp_at > tcp_at, "TCP hit first");
    assert!(
        udp_at - tcp_at >= Duration::from_millis(40),
        "delay between hits: {:?}",
        udp_at - tcp_at
    );
    assert_eq!(payload, [0u8], "knock's one zero byte");
}

#[test]
fn knock_refused_tcp_port_is_still_a_hit() {
    let env = Env::new();
    let udp = UdpSocket::bind((LOOPBACK, 0)).expect("bind udp");
    let port = udp.local_addr().expect("addr").port();
    // A TCP port nobody listens on: knock's SYN gets a RST; still a successful hit.
    let closed = TcpListener::bind((LOOPBACK, 0)).expect("bind");
    let closed_port = closed.local_addr().expect("addr").port();
    drop(closed);
    let u = std::thread::spawn(move || recv_time(udp));
    let out = env.run(&[
        "knock",
        "127.0.0.1",
        &format!("{closed_port}:tcp"),
        &format!("{port}:udp"),
    ]);
    assert_ok(&out);
    assert!(out.stdout.is_empty(), "quiet without -v");
    let (_, payload, _) = u.join().expect("udp thread");
    assert_eq!(payload, [0u8]);
}

/// `-u` makes every hit UDP, an explicit `:tcp` included, as Debian's `knock -u` does.
#[test]
fn knock_u_sends_every_hit_over_udp() {
    let env = Env::new();
    let first = UdpSocket::bind((LOOPBACK, 0)).expect("bind udp");
    let second = UdpSocket::bind((LOOPBACK, 0)).expect("bind udp");
    let p1 = first.local_addr().expect("addr").port();
    let p2 = second.local_addr().expect("addr").port();
    let a = std::thread::spawn(move || recv_time(first));
    let b = std::thread::spawn(move || recv_time(second));
    let out = env.run(&[
        "knock",
        "-u",
        "-v",
        "127.0.0.1",
        &format!("{p1}:tcp"),
        &p2.to_string(),
    ]);
    assert_ok(&out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("hitting udp 127.0.0.1:{p1}\nhitting udp 127.0.0.1:{p2}\n")
    );
    assert_eq!(a.join().expect("udp thread").1, [0u8]);
    assert_eq!(b.join().expect("udp thread").1, [0u8]);
}

#[test]
fn help_documents_exit_codes_and_defaults() {
    let env = Env::new();
    let out = env.run(&["open", "--help"]);
    assert_ok(&out);
    let help = stdout(&out);
    for needle in [
        "Exit status",
        "local address of the route",
        "nothing is sent",
        "ServerName",
        "62201",
        "/etc/services",
        "--dry-run",
    ] {
        assert!(help.contains(needle), "`{needle}` missing from:\n{help}");
    }
    let out = env.run(&["--help"]);
    assert_ok(&out);
    assert!(stdout(&out).contains("Exit status"));
    assert!(stdout(&out).contains("~/.knock/key"));
}

// ---------------------------------------------------------------------------------------------
// Configuration file, `-- COMMAND`, completions and man pages.

impl Env {
    /// Writes `text` to ~/.knock/config (mode 0600) and returns its path.
    fn write_config(&self, text: &str) -> PathBuf {
        let path = self.home.path().join(".knock/config");
        write_private(&path, text);
        path
    }

    /// A second key, written by `keygen` to `rel` under the home directory.
    fn extra_key(&self, rel: &str, name: &str) -> (PathBuf, NamedKey) {
        let path = self.home.path().join(rel);
        let out = self.run(&[
            "keygen",
            "--name",
            name,
            "-o",
            path.to_str().expect("utf-8"),
        ]);
        assert_ok(&out);
        let key = NamedKey::load(&path).expect("load");
        (path, key)
    }
}

fn write_private(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
    fs::write(path, text).expect("write config");
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// Runs a dry run with exactly these arguments (no --key added) and returns the packet and the
/// `dry run, not sent: ...` description.
fn dry_run_raw(env: &Env, args: &[&str]) -> (Vec<u8>, String) {
    let mut all = args.to_vec();
    all.push("--dry-run");
    let out = env.run(&all);
    assert_ok(&out);
    let err = stderr(&out);
    let what = err
        .trim_end()
        .strip_prefix("dry run, not sent: ")
        .unwrap_or_else(|| panic!("a dry-run line: {err}"));
    // The identity the packet is bound to ends the line; the tests that care check it.
    let what = match what.find(" (server identity `") {
        Some(i) => &what[..i],
        None => panic!("the dry-run line names no server identity: {err}"),
    };
    (unhex(&stdout(&out)), what.to_owned())
}

/// A verifier for `key` answering to `server_id`, allowing 22/tcp and 53/udp, NAT allowed.
fn verifier_for(key: &NamedKey, server_id: &str) -> Verifier {
    let mut v = Verifier::new(vec![ServerId::from_name(server_id)], 60);
    v.add_key(
        key,
        KeyPolicy {
            ports: vec![spec("22/tcp"), spec("53/udp")],
            allow_nat: true,
        },
        0,
    )
    .expect("one key");
    v
}

/// A stanza setting every key; its key file is `keys/work.key` relative to the config file.
const FULL_STANZA: &str = "\
# knock-spa client configuration
[myserver]
host = 127.0.0.1
spa_port = 4000
key = keys/work.key
admit = source
open_for = 300
services = ssh,53/udp
server_id = GW.Example.org
";

#[test]
fn config_stanza_supplies_target_key_and_packet_fields() {
    let env = Env::new();
    env.write_config(FULL_STANZA);
    let (_, work) = env.extra_key(".knock/keys/work.key", "work");

    // `open myserver`: the stanza's services; no --key, no ~/.knock/key: the stanza's key.
    let (packet, what) = dry_run_raw(&env, &["open", "myserver"]);
    assert_eq!(
        what,
        "open 22/tcp,53/udp for the packet's source address to 127.0.0.1:4000"
    );
    let acc = verify(&verifier_for(&work, "gw.example.org"), LOOPBACK, &packet)
        .expect("accepted with the stanza's key and server id");
    let req = acc.request();
    assert_eq!(req.admit, Admit::Source);
    assert_eq!(req.duration, 300);
    assert_eq!(
        req.ports.iter().collect::<Vec<_>>(),
        vec![spec("22/tcp"), spec("53/udp")]
    );

    // `open ssh myserver`: SERVICE replaces the stanza's services, the rest stays.
    let (packet, what) = dry_run_raw(&env, &["open", "ssh", "myserver"]);
    assert_eq!(
        what,
        "open 22/tcp for the packet's source address to 127.0.0.1:4000"
    );
    let acc = verify(&verifier_for(&work, "gw.example.org"), LOOPBACK, &packet).expect("ok");
    assert_eq!(acc.request().duration, 300);

    // close works through the stanza as well.
    let (packet, _) = dry_run_raw(&env, &["close", "myserver"]);
    let acc = verify(&verifier_for(&work, "gw.example.org"), LOOPBACK, &packet).expect("ok");
    assert_eq!(acc.action(), Action::Close);
}

#[test]
fn flags_override_the_stanza_and_the_stanza_overrides_defaults() {
    let env = Env::with_key();
    env.write_config(FULL_STANZA);
    let (_, work) = env.extra_key(".knock/keys/work.key", "work");
    let default_key = env.key_path();
    let default_key = default_key.to_str().expect("utf-8");

    let (packet, what) = dry_run_raw(
        &env,
        &[
            "open",
            "ssh",
            "myserver",
            "--spa-port",
            "5000",
            "--for",
            "10",
            "--admit",
            "route",
            "--server-id",
            "127.0.0.1",
            "--key",
            default_key,
        ],
    );
    assert_eq!(what, "open 22/tcp for 127.0.0.1 to 127.0.0.1:5000");
    // Signed with --key's key, not the stanza's.
    assert!(verify(&verifier_for(&work, "127.0.0.1"), LOOPBACK, &packet).is_err());
    let acc = verify(&verifier(&env.key(), false), LOOPBACK, &packet).expect("accepted");
    assert_eq!(acc.request().admit, Admit::Addr(LOOPBACK));
    assert_eq!(acc.request().duration, 10);

    // --allow-ip and --use-source override `admit` too.
    let (_, what) = dry_run_raw(&env, &["open", "myserver", "--allow-ip", "192.0.2.5"]);
    assert_eq!(what, "open 22/tcp,53/udp for 192.0.2.5 to 127.0.0.1:4000");
    env.write_config("[myserver]\nhost = 127.0.0.1\nadmit = 192.0.2.9\n");
    let (_, what) = dry_run_raw(&env, &["open", "ssh", "myserver", "--use-source"]);
    assert_eq!(
        what,
        "open 22/tcp for the packet's source address to 127.0.0.1:62201"
    );

    // Keys left out of the stanza take the built-in defaults: port 62201, ~/.knock/key, the
    // stanza's host as server id, duration 0.
    let (packet, what) = dry_run_raw(&env, &["open", "ssh", "myserver"]);
    assert_eq!(what, "open 22/tcp for 192.0.2.9 to 127.0.0.1:62201");
    let acc = verify(&verifier_for(&env.key(), "127.0.0.1"), LOOPBACK, &packet).expect("ok");
    assert_eq!(acc.request().duration, 0);

    // A HOST that is no stanza name ignores the file entirely.
    let (_, what) = dry_run_raw(&env, &["open", "ssh", "127.0.0.1"]);
    assert_eq!(what, "open 22/tcp for 127.0.0.1 to 127.0.0.1:62201");
}

#[test]
fn config_file_location_flag_then_env_then_home() {
    let env = Env::with_key();
    env.write_config("[s]\nhost = 127.0.0.1\nspa_port = 1001\n");
    let env_file = env.home.path().join("env.conf");
    write_private(&env_file, "[s]\nhost = 127.0.0.1\nspa_port = 1002\n");
    let flag_file = env.home.path().join("flag.conf");
    write_private(&flag_file, "[s]\nhost = 127.0.0.1\nspa_port = 1003\n");

    let port_of = |cmd: &mut Command| -> String {
        let out = cmd.output().expect("run");
        assert_ok(&out);
        let err = stderr(&out);
        let line = err.trim_end();
        let line = &line[..line.find(" (server identity").unwrap_or(line.len())];
        line.rsplit(':').next().expect("port").to_owned()
    };
    let base = ["open", "ssh", "s", "--dry-run"];
    assert_eq!(port_of(env.cmd().args(base)), "1001");
    assert_eq!(
        port_of(env.cmd().args(base).env("KNOCK_SPA_CONFIG", &env_file)),
        "1002"
    );
    assert_eq!(
        port_of(
            env.cmd()
                .args(base)
                .env("KNOCK_SPA_CONFIG", &env_file)
                .arg("--config")
                .arg(&flag_file)
        ),
        "1003"
    );
    // An empty variable counts as unset.
    assert_eq!(
        port_of(env.cmd().args(base).env("KNOCK_SPA_CONFIG", "")),
        "1001"
    );
    // --config /dev/null: no stanzas (a way round a broken file), `s` is then a host name.
    let out = env.run(&["open", "ssh", "s", "--config", "/dev/null", "--dry-run"]);
    assert_fails(&out, 1, "cannot resolve host `s`");
}

/// `$XDG_CONFIG_HOME/knock-spa/` (default `~/.config/knock-spa/`) comes before `~/.knock/`,
/// for the configuration and the key, and `knock-spa config` says which files it read.
#[test]
fn xdg_directory_first_and_config_shows_which_files() {
    let env = Env::with_key(); // ~/.knock/key, key `alice`
    env.write_config("[s]\nhost = 127.0.0.1\nspa_port = 1001\n");
    let home = env.home.path();
    let show = |cmd: &mut Command| -> String {
        let out = cmd.arg("config").output().expect("run");
        assert_ok(&out);
        stdout(&out)
    };
    let text = show(&mut env.cmd());
    let legacy = home.join(".knock/config");
    assert!(
        text.contains(&format!(
            "configuration: {}: 1 stanza(s): s",
            legacy.display()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{}: not found",
            home.join(".config/knock-spa/config").display()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "key: {} (default): key `alice`, id ",
            home.join(".knock/key").display()
        )),
        "{text}"
    );

    // A file in ~/.config/knock-spa wins, and a key there too.
    write_private(
        &home.join(".config/knock-spa/config"),
        "[s]\nhost = 127.0.0.1\nspa_port = 1004\n[t]\n",
    );
    let out = env.run(&[
        "keygen",
        "--name",
        "xdg",
        "-o",
        home.join(".config/knock-spa/key").to_str().expect("utf-8"),
    ]);
    assert_ok(&out);
    let out = env.run(&["open", "ssh", "s", "--dry-run"]);
    assert_ok(&out);
    let err = stderr(&out);
    assert!(
        err.contains("127.0.0.1:1004 (server identity `127.0.0.1`, key `xdg`)"),
        "{err}"
    );
    let text = show(&mut env.cmd());
    assert!(text.contains("2 stanza(s): s, t"), "{text}");
    assert!(
        text.contains(&format!(
            "{}: found, not used (an earlier file comes first)",
            legacy.display()
        )),
        "{text}"
    );
    assert!(text.contains("(default): key `xdg`"), "{text}");

    // $XDG_CONFIG_HOME moves the directory; an empty one there means ~/.knock again.
    let xdg = home.join("elsewhere");
    fs::create_dir_all(&xdg).expect("mkdir");
    let out = env
        .cmd()
        .env("XDG_CONFIG_HOME", &xdg)
        .args(["open", "ssh", "s", "--dry-run"])
        .output()
        .expect("run");
    assert_ok(&out);
    let err = stderr(&out);
    assert!(
        err.contains("127.0.0.1:1001 (server identity `127.0.0.1`, key `alice`)"),
        "{err}"
    );

    // A key that cannot be used: `config` says so and exits 1.
    fs::set_permissions(
        home.join(".config/knock-spa/key"),
        fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let out = env.cmd().arg("config").output().expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stdout(&out).contains("cannot be used"), "{}", stdout(&out));
}

/// A HOST that is nearly a stanza name: the hint comes before the name is looked up.
#[test]
fn near_stanza_name_gets_a_hint_before_dns() {
    let env = Env::with_key();
    env.write_config("[gw]\nhost = 127.0.0.1\n");
    let out = env.run(&["open", "ssh", "gww", "--dry-run"]);
    let err = stderr(&out);
    let hint = err
        .find("knock-spa: no stanza gww (did you mean gw?)")
        .unwrap_or_else(|| panic!("{err}"));
    // `gww` is no host name here: the lookup fails after the hint.
    let lookup = err
        .find("cannot resolve host `gww`")
        .unwrap_or_else(|| panic!("{err}"));
    assert!(hint < lookup, "{err}");
    assert_eq!(out.status.code(), Some(1));
    // A HOST that is nothing like a stanza gets no hint; an address never does.
    for host in ["127.0.0.1", "elsewhere.invalid"] {
        let out = env.run(&["open", "ssh", host, "--dry-run"]);
        assert!(!stderr(&out).contains("did you mean"), "{}", stderr(&out));
    }
}

#[test]
fn missing_and_unsafe_config_files() {
    let env = Env::with_key();
    // No ~/.knock/config: fine.
    assert_ok(&env.run(&["open", "ssh", "127.0.0.1", "--dry-run"]));
    // A file named explicitly must exist.
    let out = env.run(&[
        "open",
        "ssh",
        "127.0.0.1",
        "--config",
        "/nonexistent/c",
        "--dry-run",
    ]);
    assert_fails(
        &out,
        1,
        "cannot read the configuration file /nonexistent/c (given with --config)",
    );
    let out = env
        .cmd()
        .env("KNOCK_SPA_CONFIG", "/nonexistent/e")
        .args(["open", "ssh", "127.0.0.1", "--dry-run"])
        .output()
        .expect("run");
    assert_fails(&out, 1, "/nonexistent/e (named by $KNOCK_SPA_CONFIG)");
    let out = env.run(&["open", "ssh", "127.0.0.1", "--config", "/tmp", "--dry-run"]);
    assert_fails(&out, 1, "not a regular file");

    // Readable by everyone is fine (it holds no secret); writable by group or others is not.
    let path = env.write_config("[s]\nhost = 127.0.0.1\n");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
    assert_ok(&env.run(&["open", "ssh", "s", "--dry-run"]));
    for (mode, who) in [(0o664, "its group"), (0o646, "others")] {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
        let out = env.run(&["open", "ssh", "s", "--dry-run"]);
        assert_fails(&out, 1, &format!("writable by {who}"));
        assert!(stderr(&out).contains("chmod go-w"), "{}", stderr(&out));
    }
    // The key file named by a stanza keeps the key file rules.
    let key = env.key_path();
    env.write_config(&format!("[s]\nhost = 127.0.0.1\nkey = {}\n", key.display()));
    fs::set_permissions(&key, fs::Permissions::from_mode(0o640)).expect("chmod");
    let out = env.run(&["open", "ssh", "s", "--dry-run"]);
    assert_fails(&out, 1, "chmod 600");
}

#[test]
fn config_errors_are_reported_with_file_and_line() {
    let env = Env::with_key();
    let path = env.write_config(
        "[ok]\n\
         host = 127.0.0.1\n\
         \n\
         [bad]\n\
         spa_port = 0\n\
         colour = blue\n\
         admit = nat\n\
         services = nosuchservice\n\
         open_for = 5m\n",
    );
    let out = env.run(&["open", "ssh", "ok", "--dry-run"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(out.stdout.is_empty());
    let p = path.display();
    let expected = [
        format!("knock-spa: error: {p}:5: spa_port `0`"),
        format!("knock-spa: error: {p}:6: unknown key `colour`"),
        format!("knock-spa: error: {p}:7: admit: `nat` is not route, source or an IP address"),
        format!("knock-spa: error: {p}:8: services `nosuchservice`: unknown service"),
        format!("knock-spa: error: {p}:9: open_for `5m`"),
    ];
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{err}");
    for (line, want) in lines.iter().zip(&expected) {
        assert!(
            line.starts_with(want.as_str()),
            "`{line}` should start with `{want}`"
        );
    }
}

#[test]
fn service_may_be_left_out_only_for_a_stanza_with_services() {
    let env = Env::with_key();
    env.write_config("[nosvc]\nhost = 127.0.0.1\n");
    let out = env.run(&["open", "nosvc", "--dry-run"]);
    assert_fails(&out, 2, "stanza [nosvc]");
    assert!(
        stderr(&out).contains("config:1) has no `services`"),
        "{}",
        stderr(&out)
    );
    let out = env.run(&["open", "127.0.0.1", "--dry-run"]);
    assert_fails(&out, 2, "there is no stanza [127.0.0.1]");
}

/// Receives one datagram on `sock` (5 s limit): when, and the payload.
fn recv_packet(sock: UdpSocket) -> (Instant, Vec<u8>) {
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 2048];
    let (n, _) = sock.recv_from(&mut buf).expect("a packet");
    (Instant::now(), buf[..n].to_vec())
}

#[test]
fn open_then_exec_runs_the_command_after_the_packet_and_the_wait() {
    let env = Env::with_key();
    env.write_config("[myserver]\nhost = 127.0.0.1\nservices = ssh\nserver_id = 127.0.0.1\n");
    let server = UdpSocket::bind((LOOPBACK, 0)).expect("bind");
    let port = server.local_addr().expect("addr").port().to_string();
    let receiver = std::thread::spawn(move || recv_packet(server));

    let child = env
        .cmd()
        .args([
            "open",
            "myserver",
            "--spa-port",
            &port,
            "--delay",
            "300",
            "--",
            "/bin/sh",
            "-c",
            "echo ran; echo $$",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait");
    let done = Instant::now();
    assert_ok(&out);
    let (arrived, packet) = receiver.join().expect("receiver");

    // The command ran, after the packet, in place of knock-spa (same process id: exec).
    assert_eq!(stdout(&out), format!("ran\n{pid}\n"));
    assert_eq!(
        stderr(&out).trim_end(),
        format!("sent open 22/tcp for 127.0.0.1 to 127.0.0.1:{port}")
    );
    assert!(
        done - arrived >= Duration::from_millis(250),
        "the command ran {:?} after the packet, --delay is 300 ms",
        done - arrived
    );
    verify(&verifier(&env.key(), false), LOOPBACK, &packet).expect("accepted");
}

#[test]
fn exec_exit_status_is_the_commands_and_failures_are_126_127() {
    let env = Env::with_key();
    let server = UdpSocket::bind((LOOPBACK, 0)).expect("bind");
    let port = server.local_addr().expect("addr").port().to_string();
    let base = [
        "open",
        "ssh",
        "127.0.0.1",
        "-q",
        "--spa-port",
        &port,
        "--delay",
        "0",
        "--",
    ];

    let mut args = base.to_vec();
    args.extend(["/bin/sh", "-c", "exit 7"]);
    assert_eq!(env.run(&args).status.code(), Some(7));

    let mut args = base.to_vec();
    args.push("/nonexistent/knock-spa-no-such-program");
    let out = env.run(&args);
    assert_fails(
        &out,
        127,
        "cannot run `/nonexistent/knock-spa-no-such-program`",
    );

    let not_exec = env.home.path().join("not-executable");
    fs::write(&not_exec, "#!/bin/sh\n").expect("write");
    fs::set_permissions(&not_exec, fs::Permissions::from_mode(0o644)).expect("chmod");
    let mut args = base.to_vec();
    let not_exec = not_exec.to_str().expect("utf-8");
    args.push(not_exec);
    assert_fails(&env.run(&args), 126, "cannot run");

    // Each run still sent its packet first.
    for _ in 0..3 {
        let (_, packet) = recv_packet(server.try_clone().expect("clone"));
        assert_eq!(packet.len(), PACKET_LEN);
    }

    // A failed send runs nothing.
    let marker = env.home.path().join("ran");
    let cmd = format!("touch {}", marker.display());
    let out = env.run(&[
        "open",
        "ssh",
        "no-such-host.invalid",
        "--",
        "/bin/sh",
        "-c",
        &cmd,
    ]);
    assert_fails(&out, 1, "no-such-host.invalid");
    assert!(
        !marker.exists(),
        "the command must not run when the packet was not sent"
    );
}

#[test]
fn completions_name_every_command() {
    let env = Env::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = env.run(&["completions", shell]);
        assert_ok(&out);
        let script = stdout(&out);
        assert!(script.len() > 500, "{shell}: {script}");
        for name in ["open", "close", "keygen", "knock", "completions", "man"] {
            assert!(script.contains(name), "{shell} completion lacks {name}");
        }
        assert!(script.contains("knock-spa"), "{shell}");
    }
    let out = env.run(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn man_pages_for_the_tool_and_its_commands() {
    let env = Env::new();
    let out = env.run(&["man"]);
    assert_ok(&out);
    let page = stdout(&out).replace("\\-", "-");
    assert!(page.contains(".TH knock-spa 1"), "{page}");
    for name in ["open", "close", "keygen", "knock", "completions", "man"] {
        assert!(page.contains(&format!("knock-spa-{name}(1)")), "{name}");
    }
    let out = env.run(&["man", "open"]);
    assert_ok(&out);
    let page = stdout(&out).replace("\\-", "-");
    assert!(page.contains(".TH knock-spa-open 1"), "{page}");
    for needle in ["--config", "--admit", "--wait", "COMMAND", "Exit status"] {
        assert!(
            page.contains(needle),
            "`{needle}` missing from knock-spa-open(1)"
        );
    }
    assert_eq!(env.run(&["man", "frobnicate"]).status.code(), Some(2));
}

/// Asks the bash completion script what it offers for `words` (the last one being completed).
fn bash_complete(script: &Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let cword = words.len() - 1;
    let prog = format!(
        "source '{}'; COMP_WORDS=({}); COMP_CWORD={cword}; \
         _knock__spa knock-spa '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        quoted.join(" "),
        words[cword],
        words[cword - 1],
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &prog])
        .output()
        .expect("run bash");
    assert_ok(&out);
    stdout(&out).lines().map(str::to_owned).collect()
}

#[test]
fn bash_completion_works_for_subcommand_options() {
    let env = Env::new();
    let out = env.run(&["completions", "bash"]);
    assert_ok(&out);
    let script = env.home.path().join("knock-spa.bash");
    fs::write(&script, &out.stdout).expect("write");

    assert_eq!(bash_complete(&script, &["knock-spa", "op"]), ["open"]);
    // The options of a subcommand (broken upstream for hyphenated names, fixed up here).
    assert_eq!(
        bash_complete(&script, &["knock-spa", "open", "--spa"]),
        ["--spa-port"]
    );
    let opts = bash_complete(&script, &["knock-spa", "open", "--"]);
    for want in ["--config", "--admit", "--wait", "--dry-run"] {
        assert!(opts.iter().any(|o| o == want), "{want} not in {opts:?}");
    }
    assert_eq!(
        bash_complete(&script, &["knock-spa", "completions", "f"]),
        ["fish"]
    );
}
