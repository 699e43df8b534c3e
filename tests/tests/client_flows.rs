//! The client as people reach servers with it, end to end: the real `knock-spad` in the server
//! namespace behind the classic iptables firewall (port 22 refused with a reset), a listener
//! on port 22 that sends a banner, and the real `knock-spa` in the client namespace:
//!
//! - `proxy HOST PORT` (ssh's ProxyCommand) relays the service's banner and the client's bytes,
//!   and the real `ssh` (openssh-client) gets the banner with both ssh_config recipes of
//!   docs/CLIENT.md (`ProxyCommand knock-spa proxy %h %p`, `Match exec "knock-spa open ...
//!   --wait"`);
//! - `open --wait` exits 0 once the port is open, 1 when the server refuses the packet (bound
//!   to another identity, which the server's log line names);
//! - a HOST with an IPv4 and an IPv6 address (the client namespace's own /etc/hosts) is opened
//!   for both families by one `open`, each for its own source address.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use knock_e2e::{
    ip6tables_rules, iptables_rules, tcp_connect, wait_for, workspace_bin, ClientKey,
    ConnectResult, Daemon, Topology, CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6,
};

const SSH: u16 = 22;
const BANNER: &str = "SSH-2.0-knock-e2e";
const PROBE: Duration = Duration::from_millis(500);
const LOG_WAIT: Duration = Duration::from_secs(5);
/// The name the client namespace's /etc/hosts gives both server addresses.
const DUAL: &str = "gw-dual.test";

/// The server answers to its two addresses and to [`DUAL`]; one SPA door for 22/tcp with
/// iptables and ip6tables commands.
fn setup() -> (Topology, ClientKey, Daemon) {
    let mut topo = Topology::new();
    topo.classic_firewall(SSH);
    topo.listen_banner(SSH, BANNER);
    let key = ClientKey::generate(&topo, "laptop");
    let rule = |tool: &str, op: &str| {
        format!("/usr/sbin/{tool} {op} INPUT -s %IP% -p %PROTO% --dport %PORT% -j ACCEPT")
    };
    let conf = topo.dir().write(
        "knock-spad.conf",
        format!(
            "[options]\n StateDir = {}\n ServerName = {SERVER_V4}, {SERVER_V6}, {DUAL}\n\
             [spaSSH]\n {}\n Allow_Ports = 22/tcp\n Cmd_Timeout = 60\n\
             Start_Command = {}\n Start_Command_6 = {}\n Stop_Command = {}\n Stop_Command_6 = {}\n",
            topo.dir().join("state").display(),
            key.server_line,
            rule("iptables", "-I"),
            rule("ip6tables", "-I"),
            rule("iptables", "-D"),
            rule("ip6tables", "-D"),
        ),
    );
    std::fs::set_permissions(&conf, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .unwrap_or_else(|e| panic!("chmod: {e}"));
    let daemon = Daemon::start(&topo.server, &conf, &[]);
    assert_eq!(
        tcp_connect(&topo.client, ssh(SERVER_V4.into()), PROBE),
        ConnectResult::Refused,
        "port 22 must be refused before any packet"
    );
    (topo, key, daemon)
}

fn ssh(ip: std::net::IpAddr) -> SocketAddr {
    SocketAddr::new(ip, SSH)
}

/// `knock-spa --key KEY ARGS...` in the client namespace, with `input` on its stdin (then
/// closed); returns (exit code, stdout, stderr).
fn client(topo: &Topology, key: &ClientKey, args: &[&str], input: &[u8]) -> (i32, String, String) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", topo.client.name()])
        .arg(workspace_bin("knock-spa"))
        .arg("--key")
        .arg(&key.path)
        .args(args)
        .env("HOME", topo.path())
        .env_remove("XDG_CONFIG_HOME")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start knock-spa: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .unwrap_or_else(|e| panic!("write to knock-spa: {e}"));
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait for knock-spa: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn proxy_relays_the_services_banner_for_the_client_only() {
    let (topo, key, mut d) = setup();
    let server = SERVER_V4.to_string();
    let (code, out, err) = client(&topo, &key, &["proxy", &server, "22"], b"hello sshd\n");
    assert_eq!(code, 0, "proxy failed: {err}\ndaemon log:\n{}", d.log());
    assert_eq!(
        out,
        format!("{BANNER}\r\nhello sshd\n"),
        "the banner, then the echo of stdin"
    );
    assert!(err.is_empty(), "proxy prints nothing on success: {err}");
    // The grant is the client's: the attacker is still refused.
    assert_eq!(
        tcp_connect(&topo.attacker, ssh(SERVER_V4.into()), PROBE),
        ConnectResult::Refused
    );
    assert!(d.stop());
}

/// Runs the real `ssh -v` (openssh-client) in the client namespace with the ssh_config text
/// `config` to the server's port 22, and returns what it printed on stderr. The stand-in server
/// is no sshd, so the handshake fails after the version exchange; what counts is whether ssh
/// read the server's version line.
fn real_ssh(topo: &Topology, config: &str) -> String {
    let file = topo.dir().write("ssh_config", config);
    let out = Command::new("ip")
        .args(["netns", "exec", topo.client.name(), "ssh", "-v", "-F"])
        .arg(&file)
        .args(["-p", "22", &SERVER_V4.to_string(), "true"])
        .env("HOME", topo.path())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run ssh (openssh-client): {e}"));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What `ssh -v` prints once it has read the stand-in's banner.
const SSH_READ_BANNER: &str = "Remote protocol version 2.0, remote software version knock-e2e";

/// The two ssh_config recipes of docs/CLIENT.md with the real ssh client: `ProxyCommand
/// knock-spa proxy %h %p`, and `Match exec "knock-spa open ... --wait"` before a direct
/// connection. Without a knock, ssh does not get the banner (the port refuses).
#[test]
fn real_ssh_gets_through_with_proxycommand_and_with_match_exec() {
    let (topo, key, mut d) = setup();
    let bin = workspace_bin("knock-spa").display().to_string();
    let key_path = key.path.display().to_string();
    let common = "    BatchMode yes\n    ConnectTimeout 10\n    StrictHostKeyChecking no\n    \
                  UserKnownHostsFile /dev/null\n";
    let err = real_ssh(&topo, &format!("Host *\n{common}"));
    assert!(
        !err.contains(SSH_READ_BANNER),
        "the port must refuse before any knock:\n{err}"
    );

    let err = real_ssh(
        &topo,
        &format!("Host *\n    ProxyCommand {bin} --key {key_path} proxy %h %p\n{common}"),
    );
    assert!(
        err.contains(SSH_READ_BANNER),
        "ProxyCommand:\n{err}\nlog:\n{}",
        d.log()
    );

    // The grant from the proxy is still open: close it, so that Match exec must open again.
    let server = SERVER_V4.to_string();
    let (code, _, e) = client(&topo, &key, &["close", "ssh", &server], b"");
    assert_eq!(code, 0, "{e}");
    if wait_for(
        &topo.client,
        ssh(SERVER_V4.into()),
        ConnectResult::Refused,
        LOG_WAIT,
    )
    .is_none()
    {
        panic!("the close did not close:\n{}", d.log());
    }
    let err = real_ssh(
        &topo,
        &format!(
            "Match host {server} exec \"{bin} --key {key_path} open ssh {server} --wait -q\"\n\
             Host *\n{common}"
        ),
    );
    assert!(
        err.contains(SSH_READ_BANNER),
        "Match exec:\n{err}\nlog:\n{}",
        d.log()
    );
    assert!(d.stop());
}

#[test]
fn open_wait_is_0_when_open_and_1_when_refused_and_the_log_names_the_identities() {
    let (topo, key, mut d) = setup();
    let server = SERVER_V4.to_string();
    // Bound to an identity the server does not answer to: refused, the port stays closed.
    let (code, _, err) = client(
        &topo,
        &key,
        &[
            "open",
            "ssh",
            &server,
            "--server-id",
            "elsewhere",
            "--wait",
            "--timeout",
            "1",
        ],
        b"",
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no connection within 1 s"), "{err}");
    let line =
        format!("wrong server identity (this server answers to {SERVER_V4}, {SERVER_V6}, {DUAL})");
    assert!(
        d.wait_for_log(&line, LOG_WAIT).is_some(),
        "no `{line}` in the log:\n{}",
        d.log()
    );
    // The right identity: open, and --wait returns 0 as soon as the port accepts.
    let (code, _, err) = client(&topo, &key, &["open", "ssh", &server, "--wait", "-v"], b"");
    assert_eq!(code, 0, "{err}\ndaemon log:\n{}", d.log());
    assert!(
        err.contains(&format!("port 22/tcp on {server} accepts connections")),
        "{err}"
    );
    assert!(
        err.contains(&format!("(server identity `{server}`, key `laptop`)")),
        "-v: {err}"
    );
    assert!(d.stop());
}

#[test]
fn one_open_admits_both_families_of_a_dual_stack_host() {
    let (topo, key, mut d) = setup();
    topo.client.etc_file(
        "hosts",
        &format!("127.0.0.1 localhost\n{SERVER_V4} {DUAL}\n{SERVER_V6} {DUAL}\n"),
    );
    let (code, _, err) = client(&topo, &key, &["open", "ssh", DUAL], b"");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        err.matches("sent open 22/tcp").count(),
        2,
        "one packet per family: {err}"
    );
    assert!(
        err.contains(&format!("for {CLIENT_V4} to {SERVER_V4}:62201")),
        "{err}"
    );
    assert!(
        err.contains(&format!("for {CLIENT_V6} to [{SERVER_V6}]:62201")),
        "{err}"
    );
    for to in [ssh(SERVER_V4.into()), ssh(SERVER_V6.into())] {
        if wait_for(
            &topo.client,
            to,
            ConnectResult::Accepted,
            Duration::from_secs(2),
        )
        .is_none()
        {
            panic!(
                "{to} not open for the client\nIPv4:\n{}IPv6:\n{}log:\n{}",
                iptables_rules(&topo.server),
                ip6tables_rules(&topo.server),
                d.log()
            );
        }
    }
    assert!(iptables_rules(&topo.server).contains(&format!("-s {CLIENT_V4}/32")));
    assert!(ip6tables_rules(&topo.server).contains(&format!("-s {CLIENT_V6}/128")));
    for to in [ssh(SERVER_V4.into()), ssh(SERVER_V6.into())] {
        assert_eq!(
            tcp_connect(&topo.attacker, to, PROBE),
            ConnectResult::Refused
        );
    }

    // `family = both` for a host with only an IPv4 address: an error, nothing sent.
    let conf: PathBuf = topo.dir().write(
        "client.conf",
        format!("[v4only]\nhost = {SERVER_V4}\nfamily = both\n"),
    );
    let conf = conf.display().to_string();
    let (code, _, err) = client(
        &topo,
        &key,
        &["--config", &conf, "open", "ssh", "v4only"],
        b"",
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("has no IPv6 address, and the stanza says `family = both`"),
        "{err}"
    );
    assert!(d.stop());
}
