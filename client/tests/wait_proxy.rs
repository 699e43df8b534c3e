//! `open --wait` and `proxy` over loopback: a UDP socket stands for the server's SPA port
//! (it counts the packets), a TCP listener for the guarded service (present or absent).
//! The end-to-end tests in namespaces, with the real daemon and firewall, are in
//! tests/tests/client_flows.rs.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

struct Env {
    home: tempfile::TempDir,
}

impl Env {
    /// A `$HOME` with a key at ~/.knock/key.
    fn new() -> Self {
        let env = Self {
            home: tempfile::tempdir().expect("temp home"),
        };
        let out = env.run(&["keygen", "--name", "tester"]);
        assert!(out.status.success(), "keygen: {out:?}");
        env
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_knock-spa"));
        c.env("HOME", self.home.path())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("KNOCK_SPA_CONFIG");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run knock-spa")
    }
}

/// A UDP "SPA port" that counts the datagrams it gets, until the test ends.
fn spa_counter() -> (u16, Arc<AtomicUsize>) {
    let sock = UdpSocket::bind((LOOPBACK, 0)).expect("bind udp");
    let port = sock.local_addr().expect("addr").port();
    let count = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&count);
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while sock.recv_from(&mut buf).is_ok() {
            c.fetch_add(1, Ordering::SeqCst);
        }
    });
    (port, count)
}

/// Waits (bounded) until `count` reaches `n`, and returns it: the counter thread may lag a
/// little behind the client, which has sent everything when it exits.
fn settled(count: &AtomicUsize, n: usize) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while count.load(Ordering::SeqCst) < n && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    count.load(Ordering::SeqCst)
}

/// A TCP port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind((LOOPBACK, 0))
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

#[test]
fn open_wait_exits_0_once_the_port_accepts() {
    let env = Env::new();
    let (spa, packets) = spa_counter();
    let listener = TcpListener::bind((LOOPBACK, 0)).expect("bind tcp");
    let port = listener.local_addr().expect("addr").port().to_string();
    let service = format!("{port}/tcp");
    let spa = spa.to_string();
    let out = env.run(&["open", &service, "127.0.0.1", "--spa-port", &spa, "--wait"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("port {port}/tcp on 127.0.0.1 accepts connections")),
        "{err}"
    );
    assert!(settled(&packets, 1) >= 1, "no packet was sent");
}

#[test]
fn open_wait_exits_1_after_the_timeout_and_sends_again_halfway() {
    let env = Env::new();
    let (spa, packets) = spa_counter();
    let service = format!("{}/tcp", closed_port());
    let spa = spa.to_string();
    let out = env.run(&[
        "open",
        &service,
        "127.0.0.1",
        "--spa-port",
        &spa,
        "--wait",
        "--timeout",
        "1",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no connection within 1 s"), "{err}");
    assert!(err.contains("Connection refused"), "{err}");
    assert_eq!(
        err.matches("sent open").count(),
        2,
        "the packet is sent again, once: {err}"
    );
    assert_eq!(
        settled(&packets, 2),
        2,
        "both arrived (loopback loses none)"
    );
    // --wait needs a TCP port.
    let out = env.run(&["open", "53/udp", "127.0.0.1", "--spa-port", &spa, "--wait"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--wait needs a TCP port"));
}

#[test]
fn proxy_relays_the_banner_and_stdin_then_ends_with_the_server() {
    let env = Env::new();
    let (spa, packets) = spa_counter();
    let listener = TcpListener::bind((LOOPBACK, 0)).expect("bind tcp");
    let port = listener.local_addr().expect("addr").port().to_string();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.write_all(b"SSH-2.0-test-banner\r\n").expect("banner");
        let mut got = Vec::new();
        s.read_to_end(&mut got)
            .expect("read until the client's end");
        s.write_all(b"you said: ").expect("write");
        s.write_all(&got).expect("echo");
        got
    });
    let mut child = env
        .cmd()
        .args(["proxy", "127.0.0.1", &port, "--spa-port", &spa.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn proxy");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"client hello\n")
        .expect("write stdin");
    // stdin is closed here (dropped): the proxy shuts its sending side, the server answers.
    let out = child.wait_with_output().expect("proxy ends");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(server.join().expect("server"), b"client hello\n");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "SSH-2.0-test-banner\r\nyou said: client hello\n"
    );
    assert!(
        out.stderr.is_empty(),
        "proxy is silent on success: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(settled(&packets, 1), 1);
}

#[test]
fn proxy_fails_in_ssh_style_when_the_port_stays_closed() {
    let env = Env::new();
    let (spa, _) = spa_counter();
    let port = closed_port().to_string();
    let out = env.run(&[
        "proxy",
        "127.0.0.1",
        &port,
        "--spa-port",
        &spa.to_string(),
        "--timeout",
        "1",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(out.stdout.is_empty());
    assert!(
        err.contains(&format!(
            "connect to host 127.0.0.1 port {port}: no connection within 1 s"
        )),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}
