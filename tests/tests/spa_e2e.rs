//! The SPA server end to end: the real `knock-spad` in the server namespace behind the classic
//! firewall (ESTABLISHED,RELATED accepted, tcp/22 rejected) with a listener on port 22, the
//! real `knock-spa` client in the client namespace, and an attacker namespace that replays and
//! spoofs. Every verdict is a real TCP connect.
//!
//! The tests are independent (each has its own namespaces) and run in parallel.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use knock_e2e::{
    dry_run_packet, ip6tables_rules, iptables_rules, knock_spa, knock_spa_ok, send_udp,
    send_udp_spoofed, tcp_connect, wait_for, ClientKey, ConnectResult, Daemon, Netns, Topology,
    CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6, SIGHUP,
};
use knock_keys::NamedKey;
use knock_shared::types::PortSpec;
use knock_shared::wire::{self, Action, Admit, KeyState, PortList, Request, ServerId};

const SSH: u16 = 22;
const SPA_PORT: u16 = 62201;
/// The bar: admitted within 1 s of `knock-spa open`.
const OPEN_DEADLINE: Duration = Duration::from_secs(1);
/// How long a close (or a timeout's stop command) may take to show.
const CLOSE_DEADLINE: Duration = Duration::from_secs(3);
const PROBE: Duration = Duration::from_millis(500);
const LOG_WAIT: Duration = Duration::from_secs(3);

fn ssh4() -> SocketAddr {
    SocketAddr::new(SERVER_V4.into(), SSH)
}

fn ssh6() -> SocketAddr {
    SocketAddr::new(SERVER_V6.into(), SSH)
}

/// One SPA door guarding 22/tcp for `key`, IPv4 and IPv6 commands, state in the test's dir.
fn spa_conf(topo: &Topology, key: &ClientKey, cmd_timeout: u32, options: &str) -> PathBuf {
    let state = topo.dir().join("state");
    let rule = |tool: &str, op: &str| {
        format!("/usr/sbin/{tool} {op} INPUT -s %IP% -p %PROTO% --dport %PORT% -j ACCEPT")
    };
    let text = format!(
        "[options]
    StateDir   = {state}
    ServerName = {SERVER_V4}, {SERVER_V6}
{options}
[spaSSH]
    {keys}
    Allow_Ports     = 22/tcp
    Cmd_Timeout     = {cmd_timeout}
    Start_Command   = {start}
    Start_Command_6 = {start6}
    Stop_Command    = {stop}
    Stop_Command_6  = {stop6}
",
        state = state.display(),
        keys = key.server_line,
        start = rule("iptables", "-I"),
        start6 = rule("ip6tables", "-I"),
        stop = rule("iptables", "-D"),
        stop6 = rule("ip6tables", "-D"),
    );
    let path = topo.dir().write("knock-spad.conf", text);
    set_mode_600(&path);
    path
}

fn set_mode_600(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// The classic setup: firewall, listener, a client key, nothing open yet (checked).
fn setup() -> (Topology, ClientKey) {
    let mut topo = Topology::new();
    topo.classic_firewall(SSH);
    topo.listen(SSH);
    let key = ClientKey::generate(&topo, "laptop");
    assert_eq!(
        tcp_connect(&topo.client, ssh4(), PROBE),
        ConnectResult::Refused,
        "port 22 must be refused before any knock"
    );
    (topo, key)
}

/// Waits until a connect from `ns` to `to` gives `want`; panics with the server's rules and
/// the daemon's log otherwise.
#[track_caller]
fn expect_state(
    topo: &Topology,
    ns: &Netns,
    to: SocketAddr,
    want: ConnectResult,
    within: Duration,
    d: &Daemon,
) {
    if wait_for(ns, to, want, within).is_none() {
        panic!(
            "{} -> {to}: not {want:?} within {within:?}\nIPv4 rules:\n{}IPv6 rules:\n{}\ndaemon log:\n{}",
            ns.name(),
            iptables_rules(&topo.server),
            ip6tables_rules(&topo.server),
            d.log()
        );
    }
}

/// [`expect_state`]: `to` accepts connections from `ns` within [`OPEN_DEADLINE`].
#[track_caller]
fn expect_open(topo: &Topology, ns: &Netns, to: SocketAddr, d: &Daemon) {
    expect_state(topo, ns, to, ConnectResult::Accepted, OPEN_DEADLINE, d);
}

/// [`expect_state`]: `to` refuses connections from `ns` within [`CLOSE_DEADLINE`].
#[track_caller]
fn expect_closed(topo: &Topology, ns: &Netns, to: SocketAddr, d: &Daemon) {
    expect_state(topo, ns, to, ConnectResult::Refused, CLOSE_DEADLINE, d);
}

/// No ACCEPT rule for anyone is left in the server's INPUT chains.
#[track_caller]
fn assert_no_grant_rules(topo: &Topology) {
    let v4 = iptables_rules(&topo.server);
    let v6 = ip6tables_rules(&topo.server);
    assert!(!v4.contains(" -s "), "leftover IPv4 rule:\n{v4}");
    assert!(!v6.contains(" -s "), "leftover IPv6 rule:\n{v6}");
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Seals a request with the client's key, outside the client, for packets the client will not
/// make (a stale timestamp).
fn forge(key: &ClientKey, timestamp: u64, ports: &[&str]) -> Vec<u8> {
    let named = NamedKey::load(&key.path).unwrap_or_else(|e| panic!("load key: {e}"));
    let state = KeyState::new(&named.derive());
    let ports: Vec<PortSpec> = ports
        .iter()
        .map(|p| p.parse().unwrap_or_else(|e| panic!("port {p}: {e:?}")))
        .collect();
    let request = Request {
        timestamp,
        action: Action::Open,
        admit: Admit::Addr(IpAddr::V4(CLIENT_V4)),
        duration: 0,
        server: ServerId::from_name(&SERVER_V4.to_string()),
        ports: PortList::new(&ports).unwrap_or_else(|| panic!("port list {ports:?}")),
    };
    let nonce = [0x5a; wire::NONCE_LEN];
    let padding = [0u8; wire::PADDING_LEN];
    wire::seal(&state, &request, &nonce, &padding).to_vec()
}

fn spa_to(addr: IpAddr) -> SocketAddr {
    SocketAddr::new(addr, SPA_PORT)
}

/// Open → accepted within 1 s (attacker still refused, one rule) → refused again once
/// Cmd_Timeout passes, with no rule left. Then open → close → refused before the timeout.
fn open_timeout_and_close(extra_args: &[&str]) {
    let (topo, key) = setup();
    let conf = spa_conf(&topo, &key, 2, "");
    let mut d = Daemon::start(&topo.server, &conf, extra_args);

    let sent = Instant::now();
    knock_spa_ok(&topo.client, Some(&key), &["open", "ssh", "10.99.0.1"]);
    expect_open(&topo, &topo.client, ssh4(), &d);
    let admitted = sent.elapsed();
    d.expect_log(
        "10.99.0.2: spaSSH: OPEN SESAME (spa key laptop, 22/tcp, 2 s)",
        LOG_WAIT,
    );
    assert_eq!(
        tcp_connect(&topo.attacker, ssh4(), PROBE),
        ConnectResult::Refused,
        "the attacker was admitted along with the client"
    );
    let rules = iptables_rules(&topo.server);
    assert_eq!(
        rules.matches("-s 10.99.0.2/32").count(),
        1,
        "exactly one rule for the client:\n{rules}"
    );

    // The timeout closes it.
    expect_state(
        &topo,
        &topo.client,
        ssh4(),
        ConnectResult::Refused,
        Duration::from_secs(2) + CLOSE_DEADLINE,
        &d,
    );
    d.expect_log("spaSSH: command timeout", LOG_WAIT);
    assert_no_grant_rules(&topo);

    // An explicit close beats a long timeout.
    knock_spa_ok(
        &topo.client,
        Some(&key),
        &["open", "ssh", "10.99.0.1", "--for", "2"],
    );
    expect_open(&topo, &topo.client, ssh4(), &d);
    knock_spa_ok(&topo.client, Some(&key), &["close", "ssh", "10.99.0.1"]);
    let closing = Instant::now();
    expect_closed(&topo, &topo.client, ssh4(), &d);
    assert!(
        closing.elapsed() < Duration::from_millis(1500),
        "closed only after {:?}: by the timeout, not by the close request",
        closing.elapsed()
    );
    d.expect_log(
        "10.99.0.2: spaSSH: close requested (spa key laptop, 22/tcp)",
        LOG_WAIT,
    );
    assert_no_grant_rules(&topo);

    assert!(d.stop(), "knock-spad did not exit 0:\n{}", d.log());
    eprintln!("admitted {admitted:?} after sending ({extra_args:?})");
}

#[test]
fn capture_mode_opens_times_out_and_closes() {
    open_timeout_and_close(&[]);
}

#[test]
fn udp_socket_mode_opens_times_out_and_closes() {
    open_timeout_and_close(&["--capture", "udp"]);
}

#[test]
fn ipv6_uses_the_6_commands() {
    let (topo, key) = setup();
    let conf = spa_conf(&topo, &key, 30, "");
    let mut d = Daemon::start(&topo.server, &conf, &[]);
    assert_eq!(
        tcp_connect(&topo.client, ssh6(), PROBE),
        ConnectResult::Refused
    );
    knock_spa_ok(&topo.client, Some(&key), &["open", "ssh", "fd99::1"]);
    expect_open(&topo, &topo.client, ssh6(), &d);
    let rules6 = ip6tables_rules(&topo.server);
    assert!(
        rules6.contains(&format!("-s {CLIENT_V6}/128")),
        "no ip6tables rule for the client:\n{rules6}"
    );
    assert!(
        !iptables_rules(&topo.server).contains(" -s "),
        "an IPv4 rule for an IPv6 grant"
    );
    assert_eq!(
        tcp_connect(&topo.attacker, ssh6(), PROBE),
        ConnectResult::Refused
    );
    // Still closed over IPv4: the grant is for the IPv6 address only.
    assert_eq!(
        tcp_connect(&topo.client, ssh4(), PROBE),
        ConnectResult::Refused
    );
    knock_spa_ok(&topo.client, Some(&key), &["close", "ssh", "fd99::1"]);
    expect_closed(&topo, &topo.client, ssh6(), &d);
    assert_no_grant_rules(&topo);
    assert!(d.stop());
}

/// An eavesdropper has the client's packet. Sent from its own address before the client's
/// copy arrives: address mismatch, nothing opens. The client's own copy then opens for the
/// client only. Resent afterwards, from the attacker's address or with the client's address
/// forged: replay. After a restart of the daemon: still replay.
#[test]
fn captured_packets_never_open_for_the_attacker_and_stay_spent_across_restarts() {
    let (topo, key) = setup();
    let conf = spa_conf(&topo, &key, 30, "");
    let mut d = Daemon::start(&topo.server, &conf, &[]);

    // A packet the client made but has not sent (the attacker won the race).
    let raced = dry_run_packet(&topo.client, &key, &["open", "ssh", "10.99.0.1"]);
    send_udp(&topo.attacker, None, spa_to(SERVER_V4.into()), &raced).expect("send");
    d.expect_log(
        "spa: rejected packet from 10.99.0.3: address mismatch",
        LOG_WAIT,
    );
    assert_eq!(
        tcp_connect(&topo.attacker, ssh4(), PROBE),
        ConnectResult::Refused
    );
    assert_eq!(
        tcp_connect(&topo.client, ssh4(), PROBE),
        ConnectResult::Refused,
        "the attacker's copy opened for the client"
    );

    // The client's copy of the same packet still works: the rejected copy did not spend it.
    send_udp(&topo.client, None, spa_to(SERVER_V4.into()), &raced).expect("send");
    expect_open(&topo, &topo.client, ssh4(), &d);

    // Replays, from the attacker's own address and with the client's address forged.
    send_udp(&topo.attacker, None, spa_to(SERVER_V4.into()), &raced).expect("send");
    d.expect_log("spa: rejected packet from 10.99.0.3: replay", LOG_WAIT);
    let forged_src = SocketAddr::new(CLIENT_V4.into(), 40000);
    send_udp_spoofed(&topo.attacker, forged_src, spa_to(SERVER_V4.into()), &raced)
        .expect("spoofed send");
    d.expect_log("spa: rejected packet from 10.99.0.2: replay", LOG_WAIT);
    assert_eq!(
        tcp_connect(&topo.attacker, ssh4(), PROBE),
        ConnectResult::Refused
    );

    // Restart (SIGTERM closes the grant), then the same replay.
    assert!(d.stop(), "knock-spad did not exit 0:\n{}", d.log());
    expect_closed(&topo, &topo.client, ssh4(), &d);
    assert_no_grant_rules(&topo);
    let mut d = Daemon::start(&topo.server, &conf, &[]);
    send_udp_spoofed(&topo.attacker, forged_src, spa_to(SERVER_V4.into()), &raced)
        .expect("spoofed send");
    d.expect_log("spa: rejected packet from 10.99.0.2: replay", LOG_WAIT);
    assert_eq!(
        tcp_connect(&topo.client, ssh4(), PROBE),
        ConnectResult::Refused,
        "a replay reopened the port after a restart"
    );
    assert!(d.stop());
}

/// `Admit_Prefix = 24, 64`: the client's packet admits its /24 (a carrier-grade NAT pool:
/// knock from one address, connect from another), one rule `-s 10.99.0.0/24`; the attacker
/// in the same /24 gets in too (the documented risk), and the client's close ends it for
/// both.
#[test]
fn admit_prefix_admits_the_network_of_the_verified_address() {
    let (topo, key) = setup();
    let conf = spa_conf(&topo, &key, 60, "");
    let text = std::fs::read_to_string(&conf).expect("read conf").replace(
        "    Allow_Ports     = 22/tcp\n",
        "    Allow_Ports     = 22/tcp\n    Admit_Prefix    = 24, 64\n",
    );
    std::fs::write(&conf, text).expect("write conf");
    let mut d = Daemon::start(&topo.server, &conf, &[]);

    knock_spa_ok(&topo.client, Some(&key), &["open", "ssh", "10.99.0.1"]);
    expect_open(&topo, &topo.client, ssh4(), &d);
    expect_open(&topo, &topo.attacker, ssh4(), &d);
    let rules = iptables_rules(&topo.server);
    assert_eq!(
        rules.matches("-s 10.99.0.0/24").count(),
        1,
        "one rule for the network:\n{rules}"
    );
    assert!(!rules.contains("-s 10.99.0.2/32"), "{rules}");
    knock_e2e::wait_for_status_line(
        &topo.dir().join("state"),
        &["10.99.0.0/24", "22/tcp"],
        Duration::from_secs(10),
    );

    knock_spa_ok(&topo.client, Some(&key), &["close", "ssh", "10.99.0.1"]);
    expect_closed(&topo, &topo.client, ssh4(), &d);
    expect_closed(&topo, &topo.attacker, ssh4(), &d);
    assert_no_grant_rules(&topo);
    assert!(d.stop());
}

/// Source mode ("admit whatever address this comes from", the client's `--use-source`) on a
/// door without `Allow_NAT` (the default): a copy raced from the attacker's own address does
/// not admit the attacker, and is not cached; the client's own copy is refused the same way,
/// each counted under its own reason.
#[test]
fn a_raced_source_mode_copy_admits_nobody_without_allow_nat() {
    let (topo, key) = setup();
    let conf = spa_conf(&topo, &key, 30, "");
    let mut d = Daemon::start(&topo.server, &conf, &[]);

    let raced = dry_run_packet(
        &topo.client,
        &key,
        &["open", "ssh", "10.99.0.1", "--use-source"],
    );
    send_udp(&topo.attacker, None, spa_to(SERVER_V4.into()), &raced).expect("send");
    d.expect_log(
        "spa: rejected packet from 10.99.0.3: source mode not allowed",
        LOG_WAIT,
    );
    assert_eq!(
        tcp_connect(&topo.attacker, ssh4(), PROBE),
        ConnectResult::Refused,
        "the raced copy admitted the attacker"
    );
    // Not spent: the client's copy is judged on its own, and refused for the same reason
    // (not as a replay).
    send_udp(&topo.client, None, spa_to(SERVER_V4.into()), &raced).expect("send");
    d.expect_log(
        "spa: rejected packet from 10.99.0.2: source mode not allowed",
        LOG_WAIT,
    );
    assert_eq!(
        tcp_connect(&topo.client, ssh4(), PROBE),
        ConnectResult::Refused
    );
    assert_no_grant_rules(&topo);

    // Counted under their own reason in `status`.
    let state = topo.dir().join("state");
    knock_e2e::wait_for_status_line(&state, &["source", "mode", "2"], Duration::from_secs(10));
    assert!(d.stop());
}

/// Stale timestamp, a port the key may not open, a flipped bit: each rejected with its
/// reason; the port stays closed.
#[test]
fn stale_wrong_port_and_bit_flipped_packets_are_rejected() {
    let (topo, key) = setup();
    let conf = spa_conf(&topo, &key, 30, "");
    let mut d = Daemon::start(&topo.server, &conf, &[]);
    let to = spa_to(SERVER_V4.into());

    let stale = forge(&key, unix_now() - 3600, &["22/tcp"]);
    send_udp(&topo.client, None, to, &stale).expect("send");
    d.expect_log(
        "spa: rejected packet from 10.99.0.2: stale timestamp (3600 s old",
        LOG_WAIT,
    );

    let (ok, out, err) = knock_spa(&topo.client, Some(&key), &["open", "8080", "10.99.0.1"]);
    assert!(ok, "knock-spa open 8080: {out}{err}");
    d.expect_log(
        "spa: rejected packet from 10.99.0.2: port 8080/tcp not allowed for this key",
        LOG_WAIT,
    );

    let mut flipped = dry_run_packet(&topo.client, &key, &["open", "ssh", "10.99.0.1"]);
    flipped[100] ^= 0x04;
    send_udp(&topo.client, None, to, &flipped).expect("send");
    d.expect_log("spa: rejected packet from 10.99.0.2: bad hmac", LOG_WAIT);

    assert_eq!(
        tcp_connect(&topo.client, ssh4(), PROBE),
        ConnectResult::Refused
    );
    assert_no_grant_rules(&topo);
    let log = d.log();
    assert!(!log.contains("OPEN SESAME"), "something opened:\n{log}");
    assert!(d.stop());
}

/// kill -9 with a grant open. Restarted at once: the grant is re-armed (still open, closed on
/// time). Restarted after its time: closed at once. Never a leftover rule.
#[test]
fn grants_survive_a_crash_and_close_on_time() {
    let (topo, key) = setup();
    let conf = spa_conf(&topo, &key, 3, "");

    // Crash, restart at once: re-armed.
    let mut d = Daemon::start(&topo.server, &conf, &[]);
    knock_spa_ok(&topo.client, Some(&key), &["open", "ssh", "10.99.0.1"]);
    expect_open(&topo, &topo.client, ssh4(), &d);
    let opened = Instant::now();
    d.crash();
    let mut d = Daemon::start(&topo.server, &conf, &[]);
    d.expect_log("1 grant(s) recorded before the restart", LOG_WAIT);
    assert_eq!(
        tcp_connect(&topo.client, ssh4(), PROBE),
        ConnectResult::Accepted,
        "the re-armed grant was closed early:\n{}",
        d.log()
    );
    expect_state(
        &topo,
        &topo.client,
        ssh4(),
        ConnectResult::Refused,
        Duration::from_secs(3) + CLOSE_DEADLINE,
        &d,
    );
    assert!(
        opened.elapsed() >= Duration::from_millis(2500),
        "closed after {:?}, before its 3 s",
        opened.elapsed()
    );
    assert_no_grant_rules(&topo);

    // Crash, stay down past the grant's time, restart: closed at once.
    knock_spa_ok(&topo.client, Some(&key), &["open", "ssh", "10.99.0.1"]);
    expect_open(&topo, &topo.client, ssh4(), &d);
    d.crash();
    std::thread::sleep(Duration::from_millis(3500));
    assert!(
        iptables_rules(&topo.server).contains("-s 10.99.0.2/32"),
        "the rule should still be there while the daemon is down"
    );
    let restarted = Instant::now();
    let d = Daemon::start(&topo.server, &conf, &[]);
    expect_closed(&topo, &topo.client, ssh4(), &d);
    eprintln!(
        "expired grant closed {:?} after restart",
        restarted.elapsed()
    );
    assert_no_grant_rules(&topo);
}

/// SIGHUP reloads: a key added to the file works without a restart; a broken file is
/// reported and the old configuration keeps working.
#[test]
fn sighup_reloads_and_keeps_the_old_config_when_the_new_one_is_broken() {
    let (topo, key) = setup();
    let conf = spa_conf(&topo, &key, 30, "");
    let mut d = Daemon::start(&topo.server, &conf, &[]);

    // A broken file: the old one stays.
    let good = std::fs::read_to_string(&conf).expect("read conf");
    std::fs::write(&conf, format!("{good}\n    Bogus_Directive = 1\n")).expect("write conf");
    d.signal(SIGHUP);
    d.expect_log("keeping the old one", LOG_WAIT);
    knock_spa_ok(&topo.client, Some(&key), &["open", "ssh", "10.99.0.1"]);
    expect_open(&topo, &topo.client, ssh4(), &d);

    // A second key added to the door: it works after SIGHUP, for the attacker namespace
    // (standing in for a second user).
    let second = ClientKey::generate(&topo, "desktop");
    let with_second = good.replace(
        &key.server_line,
        &format!("{}\n    {}", key.server_line, second.server_line),
    );
    std::fs::write(&conf, with_second).expect("write conf");
    let (ok, _, _) = knock_spa(&topo.attacker, Some(&second), &["open", "ssh", "10.99.0.1"]);
    assert!(ok);
    d.expect_log("unknown key", LOG_WAIT);
    d.signal(SIGHUP);
    d.expect_log("configuration reloaded", LOG_WAIT);
    knock_spa_ok(&topo.attacker, Some(&second), &["open", "ssh", "10.99.0.1"]);
    expect_open(&topo, &topo.attacker, ssh4(), &d);
    // The first grant is still there.
    assert_eq!(
        tcp_connect(&topo.client, ssh4(), PROBE),
        ConnectResult::Accepted
    );
    assert!(d.stop());
    assert_no_grant_rules(&topo);
}

/// `knock-spad check` reads the firewall it would guard: a guarded port left open is a
/// warning; the classic setup is not.
#[test]
fn check_warns_when_the_guarded_port_is_open() {
    let topo = Topology::new();
    let key = ClientKey::generate(&topo, "laptop");
    let conf = spa_conf(&topo, &key, 30, "");
    let check = |topo: &Topology| {
        let out = topo.server.exec([
            knock_e2e::workspace_bin("knock-spad").display().to_string(),
            "check".into(),
            "-c".into(),
            conf.display().to_string(),
        ]);
        assert!(out.status.success(), "check failed: {out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let before = check(&topo);
    assert!(
        before.contains(
            "warning: 22/tcp is open in the current iptables INPUT chain (policy ACCEPT)"
        ),
        "no warning for an open port:\n{before}"
    );
    topo.classic_firewall(SSH);
    let after = check(&topo);
    assert!(
        !after.contains("22/tcp is open in the current iptables"),
        "warning with the classic setup in place:\n{after}"
    );
}

/// Capture on `any` (Linux cooked capture headers instead of Ethernet): an SPA open and a
/// knock sequence both work, over IPv4 and IPv6.
#[test]
fn capture_on_any_interface() {
    let (topo, key) = setup();
    let base = std::fs::read_to_string(spa_conf(&topo, &key, 30, "")).expect("read conf");
    let conf = topo.dir().write(
        "knock-spad.conf",
        format!(
            "{base}
[openSSH]
    Sequence        = 7000:udp,9000,8000
    Seq_Timeout     = 5
    TCPFlags        = syn
    Start_Command   = /usr/sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
    Start_Command_6 = /usr/sbin/ip6tables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
    Cmd_Timeout     = 30
    Stop_Command    = /usr/sbin/iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
    Stop_Command_6  = /usr/sbin/ip6tables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
"
        ),
    );
    set_mode_600(&conf);
    let mut d = Daemon::start_on(&topo.server, &conf, "any", &["-v"]);
    d.expect_log("on any", LOG_WAIT);

    knock_spa_ok(&topo.client, Some(&key), &["open", "ssh", "10.99.0.1"]);
    expect_open(&topo, &topo.client, ssh4(), &d);
    knock_spa_ok(&topo.client, Some(&key), &["close", "ssh", "10.99.0.1"]);
    expect_closed(&topo, &topo.client, ssh4(), &d);

    // The knock door, over IPv6, with the real `knock` client.
    topo.client.exec_ok([
        "knock", "-6", "-d", "0", "fd99::1", "7000:udp", "9000", "8000",
    ]);
    expect_open(&topo, &topo.client, ssh6(), &d);
    d.expect_log("fd99::2: openSSH: OPEN SESAME", LOG_WAIT);
    assert_eq!(
        tcp_connect(&topo.attacker, ssh6(), PROBE),
        ConnectResult::Refused
    );
    assert!(d.stop());
    assert_no_grant_rules(&topo);
}

/// A grant's rule deleted by hand (an administrator's `iptables -D`, a firewall reload) while
/// the grant is live: the next open extends the grant and, finding the rule gone (`-C`),
/// inserts it again; one rule, and one close closes. A close whose rule is already gone ends
/// the grant without retries.
#[test]
fn the_next_open_restores_a_rule_deleted_by_hand() {
    let (topo, key) = setup();
    let conf = spa_conf(&topo, &key, 30, "");
    let mut d = Daemon::start(&topo.server, &conf, &[]);
    let delete_by_hand = || {
        topo.server
            .exec_ok("iptables -D INPUT -s 10.99.0.2 -p tcp --dport 22 -j ACCEPT".split(' '));
    };
    knock_spa_ok(&topo.client, Some(&key), &["open", "ssh", "10.99.0.1"]);
    expect_open(&topo, &topo.client, ssh4(), &d);
    delete_by_hand();
    expect_closed(&topo, &topo.client, ssh4(), &d);

    knock_spa_ok(&topo.client, Some(&key), &["open", "ssh", "10.99.0.1"]);
    expect_open(&topo, &topo.client, ssh4(), &d);
    d.expect_log(
        "spaSSH: the rule of this grant is not in the firewall; inserting it again",
        LOG_WAIT,
    );
    let rules = iptables_rules(&topo.server);
    assert_eq!(
        rules.matches(&format!("-s {CLIENT_V4}/32")).count(),
        1,
        "{rules}"
    );
    knock_spa_ok(&topo.client, Some(&key), &["close", "ssh", "10.99.0.1"]);
    expect_closed(&topo, &topo.client, ssh4(), &d);
    assert_no_grant_rules(&topo);

    // Deleted by hand, then closed: the failed delete is checked (`-C`), and the grant ends
    // at once instead of being retried and reported as a firewall to fix by hand.
    knock_spa_ok(&topo.client, Some(&key), &["open", "ssh", "10.99.0.1"]);
    expect_open(&topo, &topo.client, ssh4(), &d);
    delete_by_hand();
    knock_spa_ok(&topo.client, Some(&key), &["close", "ssh", "10.99.0.1"]);
    d.expect_log(
        "spaSSH: the rule for 10.99.0.2 was already gone from the firewall",
        LOG_WAIT,
    );
    assert!(!d.log().contains("close command for"), "{}", d.log());
    assert!(d.stop());
}
