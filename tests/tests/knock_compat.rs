//! knockd compatibility, end to end: the real `knock-spad` against Debian's real `knock`
//! client, `knock-spa knock` against Debian's real `knockd`, and knockd's sequence rules
//! (timeouts, wrong order, foreign ports, TCP flags, interleaved knockers, one-time
//! sequences, `Cmd_Timeout`/`Stop_Command`) checked with real TCP connects.
//!
//! ```text
//!  ks-cli (10.99.0.2, fd99::2)             ks-srv (10.99.0.1, fd99::1)
//!  knock / knock-spa / raw TCP  --hits-->  knock-spad -i eth0 (pcap) -> iptables -I ... ACCEPT
//!  connect :22                  -------->  ks-listen :22 behind REJECT tcp-reset
//!  ks-atk (10.99.0.3, fd99::3): a second knocker, or a bystander that must stay refused
//! ```
//!
//! Every test has its own namespaces, daemon and temp dir (config, `LogFile`, `StateDir`), so
//! they run in parallel. Where a test must show that something did *not* open, it first
//! synchronises with the daemon: a UDP hit on the one-port `[marker]` door, whose command
//! (`/bin/true`) runs after every earlier packet was tracked and every earlier command ran
//! (one capture, one grant manager, both in order). A refused connect after that is a result,
//! not a race.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use knock_shared::types::TcpFlags;

use knock_e2e::{
    ip6tables_rules, iptables_rules, knock_spa, knock_spa_ok, send_ip_packet, send_udp,
    tcp_connect, tcp_packet, wait_for, workspace_bin, ChildGuard, ClientKey, ConnectResult, Daemon,
    Netns, Topology, ATTACKER_V4, CLIENT_V4, CLIENT_V6, IFACE, SERVER_V4, SERVER_V6,
};

/// The guarded port (sshd's).
const SSH: u16 = 22;
/// The one-port UDP door used to synchronise with the daemon (see the module docs).
const MARKER_PORT: u16 = 5999;
/// How long a grant may take to show after the last hit.
const GRANT_DEADLINE: Duration = Duration::from_secs(3);
/// How long a marker hit may take to be processed.
const SYNC_DEADLINE: Duration = Duration::from_secs(3);
/// Timeout of single connect probes.
const PROBE: Duration = Duration::from_secs(1);

const SYN: u8 = TcpFlags::SYN;
const FIN: u8 = TcpFlags::FIN;
const RST: u8 = TcpFlags::RST;
const PSH: u8 = TcpFlags::PSH;
const ACK: u8 = TcpFlags::ACK;

/// The `[openSSH]`/`[closeSSH]` doors of knockd's walkthrough (knockd.conf(5)), with IPv6
/// commands, `seq_timeout` as given.
fn walkthrough_doors(seq_timeout: u32) -> String {
    format!(
        "[openSSH]
\tsequence        = 7000,8000,9000
\tseq_timeout     = {seq_timeout}
\ttcpflags        = syn
\tcommand         = /usr/sbin/iptables -I INPUT -s %IP% -p tcp --dport {SSH} -j ACCEPT
\tstart_command_6 = /usr/sbin/ip6tables -I INPUT -s %IP% -p tcp --dport {SSH} -j ACCEPT

[closeSSH]
\tsequence        = 9000,8000,7000
\tseq_timeout     = {seq_timeout}
\ttcpflags        = syn
\tcommand         = /usr/sbin/iptables -D INPUT -s %IP% -p tcp --dport {SSH} -j ACCEPT
\tstart_command_6 = /usr/sbin/ip6tables -D INPUT -s %IP% -p tcp --dport {SSH} -j ACCEPT
"
    )
}

/// The walkthrough's doors and the marker door, with default options.
fn walkthrough_conf(topo: &Topology) -> PathBuf {
    spad_conf(
        topo,
        "",
        &format!("{}{}", walkthrough_doors(15), marker_door()),
    )
}

/// The synchronisation door (see the module docs).
fn marker_door() -> String {
    format!(
        "[marker]
\tsequence = {MARKER_PORT}:udp
\tcommand  = /bin/true
"
    )
}

/// The LogFile knock-spad writes (configured in [`spad_conf`]).
fn log_path(topo: &Topology) -> PathBuf {
    topo.dir().join("knock-spad.file.log")
}

/// Writes a knock-spad configuration: `[options]` with `LogFile` and `StateDir` in the temp
/// dir (plus `extra_options` lines), then `doors`.
fn spad_conf(topo: &Topology, extra_options: &str, doors: &str) -> PathBuf {
    let text = format!(
        "[options]\n\tLogFile  = {}\n\tStateDir = {}\n{extra_options}\n{doors}",
        log_path(topo).display(),
        topo.dir().join("state").display(),
    );
    topo.dir().write_private("knock-spad.conf", text)
}

/// What knock-spad wrote to its LogFile so far.
fn file_log(topo: &Topology) -> String {
    std::fs::read_to_string(log_path(topo)).unwrap_or_else(|e| format!("<unreadable: {e}>"))
}

/// Everything worth seeing when an assertion fails.
fn diag(topo: &Topology, daemon: &Daemon) -> String {
    format!(
        "server iptables:\n{}\nserver ip6tables:\n{}\nknock-spad stderr:\n{}\nknock-spad LogFile:\n{}",
        iptables_rules(&topo.server),
        ip6tables_rules(&topo.server),
        daemon.log(),
        file_log(topo),
    )
}

fn ssh_v4() -> SocketAddr {
    SocketAddr::from((SERVER_V4, SSH))
}

/// Lines of `log` (knockd's LogFile format) with the `[YYYY-MM-DD HH:MM] ` prefix removed.
/// Panics on a non-empty line without that prefix.
fn log_messages(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let b = line.as_bytes();
            let shape_ok = b.len() > 19
                && b[0] == b'['
                && b[5] == b'-'
                && b[8] == b'-'
                && b[11] == b' '
                && b[14] == b':'
                && b[17] == b']'
                && b[18] == b' '
                && [1, 2, 3, 4, 6, 7, 9, 10, 12, 13, 15, 16]
                    .iter()
                    .all(|&i| b[i].is_ascii_digit());
            assert!(
                shape_ok,
                "log line {line:?} is not in knockd's `[YYYY-MM-DD HH:MM] message` format; \
                 whole log:\n{log}"
            );
            line[19..].to_owned()
        })
        .collect()
}

/// How many messages of `log` are exactly `msg`.
fn count_msg(log: &str, msg: &str) -> usize {
    log.lines()
        .filter(|l| l.len() > 19 && l.get(19..) == Some(msg))
        .count()
}

/// Asserts that `log` has, in knockd's LogFile format and order, the stages of `door` for
/// `src`, its `OPEN SESAME` and `door: running command: command`. Used on knock-spad's
/// LogFile and, as the reference, on knockd's.
fn assert_knockd_log(log: &str, src: &str, door: &str, stages: usize, command: &str) {
    let msgs = log_messages(log);
    let mut want: Vec<String> = (1..=stages)
        .map(|n| format!("{src}: {door}: Stage {n}"))
        .collect();
    want.push(format!("{src}: {door}: OPEN SESAME"));
    want.push(format!("{door}: running command: {command}"));
    let mut from = 0;
    for w in &want {
        match msgs[from..].iter().position(|m| m == w) {
            Some(i) => from += i + 1,
            None => panic!("log lacks {w:?} (in this order: {want:#?}); log:\n{log}"),
        }
    }
}

/// Runs the real `knock` client in `ns` with `args`; returns its stdout.
fn knock(ns: &Netns, args: &[&str]) -> String {
    let mut all = vec!["knock"];
    all.extend_from_slice(args);
    ns.exec_ok(&all)
}

/// Polls knock-spad's LogFile until `msg` appears `n` times.
fn wait_count(topo: &Topology, daemon: &Daemon, msg: &str, n: usize, deadline: Duration) {
    let start = Instant::now();
    while count_msg(&file_log(topo), msg) < n {
        assert!(
            start.elapsed() < deadline,
            "{msg:?} not logged {n} time(s) within {deadline:?}\n{}",
            diag(topo, daemon)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends a marker hit from `ns` and waits until the daemon ran its command: every packet sent
/// before has been tracked and every command it caused has run.
fn sync(topo: &Topology, daemon: &Daemon, ns: &Netns) {
    const MSG: &str = "marker: running command: /bin/true";
    let before = count_msg(&file_log(topo), MSG);
    send_udp(ns, None, SocketAddr::from((SERVER_V4, MARKER_PORT)), &[0])
        .unwrap_or_else(|e| panic!("marker hit from {}: {e}", ns.name()));
    wait_count(topo, daemon, MSG, before + 1, SYNC_DEADLINE);
}

/// Asserts that `ns` is admitted to port 22 within [`GRANT_DEADLINE`]; returns how long it took.
#[track_caller]
fn expect_open(topo: &Topology, daemon: &Daemon, ns: &Netns, what: &str) -> Duration {
    wait_for(ns, ssh_v4(), ConnectResult::Accepted, GRANT_DEADLINE).unwrap_or_else(|| {
        panic!(
            "{}: not admitted within {GRANT_DEADLINE:?} after {what}\n{}",
            ns.name(),
            diag(topo, daemon)
        )
    })
}

/// Asserts that `ns` is refused on port 22 (after [`sync`], so nothing is still in flight).
#[track_caller]
fn expect_refused(topo: &Topology, daemon: &Daemon, ns: &Netns, what: &str) {
    let got = tcp_connect(ns, ssh_v4(), PROBE);
    assert_eq!(
        got,
        ConnectResult::Refused,
        "{}: {what}: expected refused\n{}",
        ns.name(),
        diag(topo, daemon)
    );
}

/// The classic firewall and listener on 22, and the client refused before anything.
fn topology() -> Topology {
    let mut topo = Topology::new();
    topo.classic_firewall(SSH);
    topo.listen(SSH);
    for ns in [&topo.client, &topo.attacker] {
        assert_eq!(
            tcp_connect(ns, ssh_v4(), PROBE),
            ConnectResult::Refused,
            "{} must be refused before any knock; rules:\n{}",
            ns.name(),
            iptables_rules(&topo.server)
        );
    }
    topo
}

/// The number of rules in `rules` admitting `addr` (`-s ADDR/32` or `/128`).
fn rules_for(rules: &str, addr: IpAddr) -> usize {
    let needle = format!("-s {addr}/");
    rules.lines().filter(|l| l.contains(&needle)).count()
}

// ---------------------------------------------------------------------------------------------
// Raw TCP segments with chosen flags (for TCPFlags tests; `knock` only sends SYNs).

/// Sends one TCP segment with `flags` from `ns` (whose address is `src`) to the server's
/// `dport`, through a raw socket.
fn tcp_hit(ns: &Netns, src: Ipv4Addr, dport: u16, flags: u8) {
    // A fixed, unused source port per destination port: nothing in `ns` owns it.
    let from = SocketAddr::from((src, 40000 + dport % 20000));
    let packet = tcp_packet(from, SocketAddr::from((SERVER_V4, dport)), flags)
        .unwrap_or_else(|e| panic!("TCP packet: {e}"));
    send_ip_packet(ns, packet)
        .unwrap_or_else(|e| panic!("raw TCP send to port {dport} from {}: {e}", ns.name()));
}

/// SYNs from `ns` (address `src`) to each of `ports`, in order.
fn syns(ns: &Netns, src: Ipv4Addr, ports: &[u16]) {
    for &p in ports {
        tcp_hit(ns, src, p, SYN);
    }
}

// ---------------------------------------------------------------------------------------------
// 1. The real `knock` client against knock-spad, knockd's walkthrough configuration.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

fn walkthrough(family: Family, delay_ms: u32) {
    let t0 = Instant::now();
    let topo = topology();
    let (server, client, flag, tool, rules_of): (IpAddr, IpAddr, _, _, fn(&Netns) -> String) =
        match family {
            Family::V4 => (
                SERVER_V4.into(),
                CLIENT_V4.into(),
                "-4",
                "/usr/sbin/iptables",
                iptables_rules,
            ),
            Family::V6 => (
                SERVER_V6.into(),
                CLIENT_V6.into(),
                "-6",
                "/usr/sbin/ip6tables",
                ip6tables_rules,
            ),
        };
    let ssh = SocketAddr::new(server, SSH);
    let conf = spad_conf(&topo, "", &walkthrough_doors(15));
    let daemon = Daemon::start(&topo.server, &conf, &[]);
    let server_s = server.to_string();
    let delay = delay_ms.to_string();
    let knock_args = |ports: [&'static str; 3]| -> Vec<String> {
        let mut v: Vec<String> = vec![flag.into(), "-v".into(), "-d".into(), delay.clone()];
        v.push(server_s.clone());
        v.extend(ports.iter().map(|p| (*p).to_owned()));
        v
    };

    let args = knock_args(["7000", "8000", "9000"]);
    let out = knock(
        &topo.client,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(
        out.contains(&format!("hitting tcp {server}:9000")),
        "knock -v output: {out}"
    );
    let opened = wait_for(&topo.client, ssh, ConnectResult::Accepted, GRANT_DEADLINE)
        .unwrap_or_else(|| {
            panic!(
                "client not admitted within {GRANT_DEADLINE:?} of `knock {args:?}`\n{}",
                diag(&topo, &daemon)
            )
        });
    let rules = rules_of(&topo.server);
    assert_eq!(
        rules_for(&rules, client),
        1,
        "expected exactly one ACCEPT rule for {client}:\n{rules}"
    );
    assert_eq!(
        tcp_connect(&topo.attacker, ssh, PROBE),
        ConnectResult::Refused,
        "attacker admitted along with the client\n{}",
        diag(&topo, &daemon)
    );
    assert_knockd_log(
        &file_log(&topo),
        &client.to_string(),
        "openSSH",
        3,
        &format!("{tool} -I INPUT -s {client} -p tcp --dport 22 -j ACCEPT"),
    );

    let args = knock_args(["9000", "8000", "7000"]);
    knock(
        &topo.client,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let closed = wait_for(&topo.client, ssh, ConnectResult::Refused, GRANT_DEADLINE)
        .unwrap_or_else(|| {
            panic!(
                "client still admitted {GRANT_DEADLINE:?} after `knock {args:?}`\n{}",
                diag(&topo, &daemon)
            )
        });
    let rules = rules_of(&topo.server);
    assert_eq!(
        rules_for(&rules, client),
        0,
        "rule for {client} left after the close sequence:\n{rules}"
    );
    assert_knockd_log(
        &file_log(&topo),
        &client.to_string(),
        "closeSSH",
        3,
        &format!("{tool} -D INPUT -s {client} -p tcp --dport 22 -j ACCEPT"),
    );
    assert_eq!(
        tcp_connect(&topo.attacker, ssh, PROBE),
        ConnectResult::Refused
    );
    eprintln!(
        "{family:?} -d {delay_ms}: admitted {opened:?} after the knock, refused {closed:?} after \
         the close knock, total {:?}",
        t0.elapsed()
    );
}

/// `knock -v -d 500 10.99.0.1 7000 8000 9000` opens, only for the client; the reverse sequence
/// closes; the LogFile has knockd's lines; no rule is left.
#[test]
fn knock_client_walkthrough_ipv4() {
    walkthrough(Family::V4, 500);
}

/// The same with `-d 0`: hits back to back.
#[test]
fn knock_client_walkthrough_ipv4_no_delay() {
    walkthrough(Family::V4, 0);
}

/// The same over IPv6 (`knock -6`, `start_command_6` with ip6tables).
#[test]
fn knock_client_walkthrough_ipv6() {
    walkthrough(Family::V6, 100);
}

// ---------------------------------------------------------------------------------------------
// 2. Mixed TCP/UDP sequence, Cmd_Timeout and Stop_Command.

/// `2222:udp,3333:tcp,4444:udp`: the all-UDP variant does not open; the right protocols open;
/// the grant closes by itself after `cmd_timeout` (stop command, `command timeout` logged);
/// the knock then opens again. (knock's `-u` makes *every* port UDP, `3333:tcp` included.)
#[test]
fn mixed_protocols_and_cmd_timeout() {
    let topo = topology();
    let doors = format!(
        "[mixed]
\tsequence      = 2222:udp,3333:tcp,4444:udp
\tseq_timeout   = 10
\ttcpflags      = syn
\tstart_command = /usr/sbin/iptables -I INPUT -s %IP% -p tcp --dport {SSH} -j ACCEPT
\tcmd_timeout   = 3
\tstop_command  = /usr/sbin/iptables -D INPUT -s %IP% -p tcp --dport {SSH} -j ACCEPT

{}",
        marker_door()
    );
    let conf = spad_conf(&topo, "", &doors);
    let daemon = Daemon::start(&topo.server, &conf, &[]);

    // 3333 over UDP is not the door's 3333/tcp.
    let out = knock(
        &topo.client,
        &["-v", "-u", "10.99.0.1", "2222", "3333", "4444"],
    );
    assert!(
        out.contains("hitting udp 10.99.0.1:3333"),
        "knock -u: {out}"
    );
    sync(&topo, &daemon, &topo.client);
    expect_refused(&topo, &daemon, &topo.client, "all-UDP knock");
    assert_eq!(
        count_msg(&file_log(&topo), "10.99.0.2: mixed: OPEN SESAME"),
        0,
        "{}",
        diag(&topo, &daemon)
    );

    let out = knock(
        &topo.client,
        &["-v", "10.99.0.1", "2222:udp", "3333:tcp", "4444:udp"],
    );
    assert!(
        out.contains("hitting udp 10.99.0.1:2222") && out.contains("hitting tcp 10.99.0.1:3333"),
        "knock: {out}"
    );
    let knocked = Instant::now();
    expect_open(&topo, &daemon, &topo.client, "the mixed knock");
    let closed = wait_for(
        &topo.client,
        ssh_v4(),
        ConnectResult::Refused,
        Duration::from_secs(7),
    )
    .unwrap_or_else(|| {
        panic!(
            "grant not closed within cmd_timeout (3 s) + 4 s\n{}",
            diag(&topo, &daemon)
        )
    });
    let open_for = knocked.elapsed();
    assert!(
        open_for >= Duration::from_millis(2500),
        "closed after {open_for:?}, before cmd_timeout (3 s)\n{}",
        diag(&topo, &daemon)
    );
    let log = file_log(&topo);
    let msgs = log_messages(&log);
    assert!(
        msgs.iter().any(|m| m.ends_with("mixed: command timeout")),
        "no `command timeout` line:\n{log}"
    );
    assert!(
        msgs.iter().any(|m| m
            == "mixed: running command: /usr/sbin/iptables -D INPUT -s 10.99.0.2 -p tcp --dport 22 -j ACCEPT"),
        "stop command not logged:\n{log}"
    );
    let rules = iptables_rules(&topo.server);
    assert_eq!(
        rules_for(&rules, CLIENT_V4.into()),
        0,
        "left over:\n{rules}"
    );

    // The same knock again, after the grant closed, opens again (3333 is TCP by default).
    knock(&topo.client, &["10.99.0.1", "2222:udp", "3333", "4444:udp"]);
    expect_open(&topo, &daemon, &topo.client, "the mixed knock, again");
    eprintln!("mixed: open for {open_for:?} (closed {closed:?} into the wait)");
}

// ---------------------------------------------------------------------------------------------
// 3. One_Time_Sequences.

/// Each line of a one-time file opens once: a replay of a used line does nothing, the next
/// line works, and used lines get a `#` over their first character, before the door opens
/// (its command sees the line marked), and found by content (an edit above it since the
/// last use does not make the daemon mark another line).
#[test]
fn one_time_sequences() {
    let topo = topology();
    let seqs = topo.dir().write_private(
        "one-time.seq",
        "# one-time sequences for [oneTime]\n 7001,8001,9001\n 7002,8002:udp,9002\n 7003,8003,9003\n",
    );
    // The door's command keeps a copy of the file as it is when the door opens.
    let at_open = topo.dir().path().join("at-open.seq");
    let open_script = topo.dir().write(
        "open.sh",
        format!(
            "#!/bin/sh\ncp {} {}\nexec /usr/sbin/iptables -I INPUT -s \"$1\" -p tcp --dport {SSH} -j ACCEPT\n",
            seqs.display(),
            at_open.display()
        ),
    );
    std::fs::set_permissions(
        &open_script,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let doors = format!(
        "[oneTime]
\tone_time_sequences = {}
\tseq_timeout        = 10
\ttcpflags           = syn
\tcommand            = {} %IP%

[closeSSH]
\tsequence    = 6001,6002
\tseq_timeout = 10
\tcommand     = /usr/sbin/iptables -D INPUT -s %IP% -p tcp --dport {SSH} -j ACCEPT

{}",
        seqs.display(),
        open_script.display(),
        marker_door()
    );
    let conf = spad_conf(&topo, "", &doors);
    let daemon = Daemon::start(&topo.server, &conf, &[]);
    // The daemon marks the line right after it logs OPEN SESAME, before the door opens.
    let expect_seqs = |want: &str, what: &str| {
        let start = Instant::now();
        loop {
            let got = std::fs::read_to_string(&seqs)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", seqs.display()));
            if got == want {
                return;
            }
            assert!(
                start.elapsed() < SYNC_DEADLINE,
                "{what}: one-time file is\n{got}\nexpected\n{want}\n{}",
                diag(&topo, &daemon)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    const OPENED: &str = "10.99.0.2: oneTime: OPEN SESAME";
    let close = || {
        knock(&topo.client, &["10.99.0.1", "6001", "6002"]);
        wait_for(
            &topo.client,
            ssh_v4(),
            ConnectResult::Refused,
            GRANT_DEADLINE,
        )
        .unwrap_or_else(|| panic!("close knock did not close\n{}", diag(&topo, &daemon)));
    };

    knock(&topo.client, &["10.99.0.1", "7001", "8001", "9001"]);
    expect_open(&topo, &daemon, &topo.client, "the first one-time sequence");
    wait_count(&topo, &daemon, OPENED, 1, SYNC_DEADLINE);
    expect_seqs(
        "# one-time sequences for [oneTime]\n#7001,8001,9001\n 7002,8002:udp,9002\n 7003,8003,9003\n",
        "first line used",
    );
    assert_eq!(
        std::fs::read_to_string(&at_open).expect("the copy made at open"),
        "# one-time sequences for [oneTime]\n#7001,8001,9001\n 7002,8002:udp,9002\n 7003,8003,9003\n",
        "the line was not marked before the door opened"
    );
    close();
    // The administrator adds a comment at the top: every line moves down by one.
    let edited = "# rotated weekly\n# one-time sequences for [oneTime]\n#7001,8001,9001\n 7002,8002:udp,9002\n 7003,8003,9003\n";
    let tmp = topo.dir().write_private("one-time.seq.new", edited);
    std::fs::rename(&tmp, &seqs).expect("replace the file");

    // A replay of the used sequence does nothing.
    knock(&topo.client, &["10.99.0.1", "7001", "8001", "9001"]);
    sync(&topo, &daemon, &topo.client);
    expect_refused(&topo, &daemon, &topo.client, "replayed one-time sequence");
    assert_eq!(
        count_msg(&file_log(&topo), OPENED),
        1,
        "{}",
        diag(&topo, &daemon)
    );

    // The next line works (a different set of ports, one of them UDP).
    knock(&topo.client, &["10.99.0.1", "7002", "8002:udp", "9002"]);
    expect_open(&topo, &daemon, &topo.client, "the second one-time sequence");
    wait_count(&topo, &daemon, OPENED, 2, SYNC_DEADLINE);
    expect_seqs(
        "# rotated weekly\n# one-time sequences for [oneTime]\n#7001,8001,9001\n#7002,8002:udp,9002\n 7003,8003,9003\n",
        "second line used, found by its content",
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Sequences that must not open (and the control that they would have).

/// A knock-spad with the walkthrough doors (seq_timeout as given), an `[other]` door on
/// 6000,6001 and the marker door.
fn negative_setup(seq_timeout: u32) -> (Topology, Daemon) {
    let topo = topology();
    let doors = format!(
        "{}
[other]
\tsequence    = 6000,6001
\tseq_timeout = 10
\tcommand     = /bin/true %IP%

{}",
        walkthrough_doors(seq_timeout),
        marker_door()
    );
    let conf = spad_conf(&topo, "", &doors);
    let daemon = Daemon::start(&topo.server, &conf, &[]);
    (topo, daemon)
}

const OPEN_SSH: &str = "10.99.0.2: openSSH: OPEN SESAME";

/// A knock sequence addressed to another host is no knock on this one, as in knockd (whose
/// filter has `dst host`): the client sends it to 10.99.0.77 with the server's link address
/// as the next hop (as a host behind a router, or on a bridge, would be seen), and nothing
/// opens. An address added to the server while the daemon runs counts from its first knock.
#[test]
fn knocks_for_another_host_open_nothing_and_a_new_address_counts() {
    let (topo, daemon) = negative_setup(15);
    let mac = topo
        .server
        .exec_ok(["cat", "/sys/class/net/eth0/address"])
        .trim()
        .to_owned();
    topo.client.ip([
        "neigh",
        "replace",
        "10.99.0.77",
        "lladdr",
        &mac,
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]);
    knock(
        &topo.client,
        &["-d", "0", "10.99.0.77", "7000", "8000", "9000"],
    );
    sync(&topo, &daemon, &topo.client);
    expect_refused(&topo, &daemon, &topo.client, "a knock for another host");
    let log = file_log(&topo);
    assert_eq!(count_msg(&log, OPEN_SSH), 0, "{}", diag(&topo, &daemon));
    assert_eq!(
        count_msg(&log, "10.99.0.2: openSSH: Stage 1"),
        0,
        "a knock for another host was counted\n{}",
        diag(&topo, &daemon)
    );

    topo.server
        .ip(["addr", "add", "10.99.0.50/24", "dev", "eth0"]);
    knock(
        &topo.client,
        &["-d", "0", "10.99.0.50", "7000", "8000", "9000"],
    );
    expect_open(&topo, &daemon, &topo.client, "a knock on the new address");
}

/// A hit after `seq_timeout` does not complete the sequence; a fast knock then opens.
#[test]
fn too_slow_does_not_open() {
    let (topo, daemon) = negative_setup(1);
    let started = Instant::now();
    syns(&topo.client, CLIENT_V4, &[7000, 8000]);
    // Past the 1 s seq_timeout of the first hit.
    std::thread::sleep(Duration::from_millis(1300).saturating_sub(started.elapsed()));
    syns(&topo.client, CLIENT_V4, &[9000]);
    sync(&topo, &daemon, &topo.client);
    expect_refused(&topo, &daemon, &topo.client, "last hit after seq_timeout");
    let log = file_log(&topo);
    assert_eq!(count_msg(&log, OPEN_SSH), 0, "{}", diag(&topo, &daemon));
    assert!(
        count_msg(&log, "10.99.0.2: openSSH: sequence timeout (stage 2)") == 1,
        "no timeout logged\n{}",
        diag(&topo, &daemon)
    );

    syns(&topo.client, CLIENT_V4, &[7000, 8000, 9000]);
    expect_open(&topo, &daemon, &topo.client, "a knock within seq_timeout");
}

/// The right ports in the wrong order do not open; the right order then does.
#[test]
fn wrong_order_does_not_open() {
    let (topo, daemon) = negative_setup(10);
    syns(&topo.client, CLIENT_V4, &[7000, 9000, 8000]);
    syns(&topo.client, CLIENT_V4, &[8000, 7000, 9000]);
    sync(&topo, &daemon, &topo.client);
    expect_refused(&topo, &daemon, &topo.client, "wrong order");
    assert_eq!(
        count_msg(&file_log(&topo), OPEN_SSH),
        0,
        "{}",
        diag(&topo, &daemon)
    );

    syns(&topo.client, CLIENT_V4, &[7000, 8000, 9000]);
    expect_open(&topo, &daemon, &topo.client, "the right order");
}

/// A hit on another door's port in the middle aborts the attempt (knockd sees it: it is in
/// its filter); a hit on a port of no door does not (knockd never sees it).
#[test]
fn foreign_door_port_aborts_unrelated_port_does_not() {
    let (topo, daemon) = negative_setup(10);
    syns(&topo.client, CLIENT_V4, &[7000, 6000, 8000, 9000]);
    sync(&topo, &daemon, &topo.client);
    expect_refused(
        &topo,
        &daemon,
        &topo.client,
        "another door's port in between",
    );
    assert_eq!(
        count_msg(&file_log(&topo), OPEN_SSH),
        0,
        "{}",
        diag(&topo, &daemon)
    );

    syns(&topo.client, CLIENT_V4, &[7000, 7500, 8000, 12345, 9000]);
    expect_open(
        &topo,
        &daemon,
        &topo.client,
        "ports of no door between the knocks",
    );
}

/// With `tcpflags = syn`, packets without SYN are ignored: ACKs alone never open, and
/// non-SYN packets to a wrong door port in the middle of a knock do not abort it.
#[test]
fn non_matching_tcp_flags_are_ignored() {
    let (topo, daemon) = negative_setup(10);
    for p in [7000, 8000, 9000] {
        tcp_hit(&topo.client, CLIENT_V4, p, ACK);
    }
    sync(&topo, &daemon, &topo.client);
    expect_refused(&topo, &daemon, &topo.client, "the sequence as ACKs");
    assert_eq!(
        count_msg(&file_log(&topo), OPEN_SSH),
        0,
        "{}",
        diag(&topo, &daemon)
    );

    tcp_hit(&topo.client, CLIENT_V4, 7000, SYN);
    // Each would abort the attempt (9000 is not next) if its flags counted. (A SYN+ACK does
    // match `tcpflags = syn`, in knockd too: that needs `syn,!ack`, tested below.)
    for flags in [ACK, FIN | ACK, RST, RST | ACK, PSH | ACK, FIN] {
        tcp_hit(&topo.client, CLIENT_V4, 9000, flags);
    }
    tcp_hit(&topo.client, CLIENT_V4, 8000, SYN);
    tcp_hit(&topo.client, CLIENT_V4, 6000, ACK);
    tcp_hit(&topo.client, CLIENT_V4, 9000, SYN);
    expect_open(
        &topo,
        &daemon,
        &topo.client,
        "SYNs with non-SYN packets between",
    );
}

/// `tcpflags = syn,!ack`: SYN+ACKs are ignored, plain SYNs count (Debian's knockd 0.8 opens
/// such a door for `knock`'s SYNs too).
#[test]
fn tcp_flags_negation_ignores_syn_ack() {
    let topo = topology();
    let doors = format!(
        "[strict]
\tsequence    = 7100,8100,9100
\tseq_timeout = 10
\ttcpflags    = syn,!ack
\tcommand     = /usr/sbin/iptables -I INPUT -s %IP% -p tcp --dport {SSH} -j ACCEPT

{}",
        marker_door()
    );
    let conf = spad_conf(&topo, "", &doors);
    let daemon = Daemon::start(&topo.server, &conf, &[]);
    for p in [7100, 8100, 9100] {
        tcp_hit(&topo.client, CLIENT_V4, p, SYN | ACK);
    }
    sync(&topo, &daemon, &topo.client);
    expect_refused(&topo, &daemon, &topo.client, "the sequence as SYN+ACKs");

    tcp_hit(&topo.client, CLIENT_V4, 7100, SYN);
    tcp_hit(&topo.client, CLIENT_V4, 9100, SYN | ACK);
    tcp_hit(&topo.client, CLIENT_V4, 8100, SYN);
    tcp_hit(&topo.client, CLIENT_V4, 7100, SYN | ACK);
    tcp_hit(&topo.client, CLIENT_V4, 9100, SYN);
    expect_open(&topo, &daemon, &topo.client, "SYNs with SYN+ACKs between");
}

/// Two sources knocking at once, hits interleaved: both open, each for itself only.
#[test]
fn interleaved_knockers_both_open() {
    let (topo, daemon) = negative_setup(10);
    for p in [7000, 8000, 9000] {
        tcp_hit(&topo.client, CLIENT_V4, p, SYN);
        tcp_hit(&topo.attacker, ATTACKER_V4, p, SYN);
    }
    expect_open(&topo, &daemon, &topo.client, "interleaved knock");
    expect_open(&topo, &daemon, &topo.attacker, "interleaved knock");
    let rules = iptables_rules(&topo.server);
    assert_eq!(rules_for(&rules, CLIENT_V4.into()), 1, "{rules}");
    assert_eq!(rules_for(&rules, ATTACKER_V4.into()), 1, "{rules}");
}

/// Interleaved with a knocker who gets the order wrong: the wrong hits reset only that
/// knocker; the other opens, the wrong one stays refused.
#[test]
fn interleaved_wrong_knocker_resets_only_itself() {
    let (topo, daemon) = negative_setup(10);
    let (c, a) = (&topo.client, &topo.attacker);
    tcp_hit(c, CLIENT_V4, 7000, SYN);
    tcp_hit(a, ATTACKER_V4, 7000, SYN);
    tcp_hit(a, ATTACKER_V4, 9000, SYN); // wrong for the attacker
    tcp_hit(c, CLIENT_V4, 8000, SYN);
    tcp_hit(a, ATTACKER_V4, 8000, SYN);
    tcp_hit(c, CLIENT_V4, 9000, SYN);
    expect_open(&topo, &daemon, c, "its own correct knock");
    sync(&topo, &daemon, a);
    expect_refused(
        &topo,
        &daemon,
        a,
        "a wrong knock interleaved with a right one",
    );
    let log = file_log(&topo);
    assert_eq!(
        count_msg(&log, "10.99.0.3: openSSH: OPEN SESAME"),
        0,
        "{}",
        diag(&topo, &daemon)
    );
    let rules = iptables_rules(&topo.server);
    assert_eq!(rules_for(&rules, CLIENT_V4.into()), 1, "{rules}");
    assert_eq!(rules_for(&rules, ATTACKER_V4.into()), 0, "{rules}");
}

// ---------------------------------------------------------------------------------------------
// 4b. Where knock-spad deliberately differs from knockd 0.8 (docs/CONFIG.md, "Migrating from
// knockd"). Debian's knockd 0.8 opens in none of these three cases (checked by hand with the
// same sequences and `knock -d 50`): it drops the aborting knock, aborts on a duplicate, and
// inserts the rule twice (knock issue 70), so one close leaves the port open.

/// A retry that starts with the aborting knock itself opens; a duplicated hit of the port just
/// matched does not abort; a second open adds no second rule, so one close really closes.
#[test]
fn deliberate_differences_from_knockd() {
    let topo = topology();
    let doors = format!("{}\n{}", walkthrough_doors(15), marker_door());
    let conf = spad_conf(&topo, "", &doors);
    let daemon = Daemon::start(&topo.server, &conf, &[]);
    let close = |what: &str| {
        knock(
            &topo.client,
            &["-d", "50", "10.99.0.1", "9000", "8000", "7000"],
        );
        wait_for(
            &topo.client,
            ssh_v4(),
            ConnectResult::Refused,
            GRANT_DEADLINE,
        )
        .unwrap_or_else(|| {
            panic!(
                "{what}: close knock did not close\n{}",
                diag(&topo, &daemon)
            )
        });
        let rules = iptables_rules(&topo.server);
        assert_eq!(
            rules_for(&rules, CLIENT_V4.into()),
            0,
            "{what}: left over after one close:\n{rules}"
        );
    };

    // 7000 at stage 2 aborts the attempt and is at once a new first knock.
    knock(
        &topo.client,
        &[
            "-d",
            "50",
            "10.99.0.1",
            "7000",
            "8000",
            "7000",
            "8000",
            "9000",
        ],
    );
    expect_open(&topo, &daemon, &topo.client, "7000 8000 7000 8000 9000");
    close("retry after abort");

    // A doubled 8000 (a retransmitted SYN, `nc -z`) is ignored.
    knock(
        &topo.client,
        &["-d", "50", "10.99.0.1", "7000", "8000", "8000", "9000"],
    );
    expect_open(&topo, &daemon, &topo.client, "7000 8000 8000 9000");

    // Knocking again while open: OPEN SESAME, but no second identical rule.
    knock(
        &topo.client,
        &["-d", "50", "10.99.0.1", "7000", "8000", "9000"],
    );
    wait_count(&topo, &daemon, OPEN_SSH, 3, SYNC_DEADLINE);
    sync(&topo, &daemon, &topo.client);
    let rules = iptables_rules(&topo.server);
    assert_eq!(
        rules_for(&rules, CLIENT_V4.into()),
        1,
        "second open inserted a second rule:\n{rules}\n{}",
        diag(&topo, &daemon)
    );
    close("one grant, one rule");
}

// ---------------------------------------------------------------------------------------------
// 5. knock-spa's `knock` against the real knockd.

/// `knock-spa knock` opens and closes the real knockd's walkthrough doors, and a mixed
/// TCP/UDP door (knock-spa's UDP hits are knock's); knockd's own LogFile passes the same
/// format check as knock-spad's.
#[test]
fn knock_spa_knock_against_real_knockd() {
    let topo = topology();
    let knockd_log = topo.dir().join("knockd.file.log");
    let conf = topo.dir().write(
        "knockd.conf",
        format!(
            "[options]\n\tLogFile = {}\n\n{}
[mixed]
\tsequence    = 2222:udp,3333:tcp,4444:udp
\tseq_timeout = 10
\ttcpflags    = syn
\tcommand     = /usr/sbin/iptables -I INPUT -s %IP% -p tcp --dport {SSH} -j ACCEPT
",
            knockd_log.display(),
            walkthrough_doors(15)
        ),
    );
    let mut knockd: ChildGuard = topo.server.spawn([
        Path::new("/usr/sbin/knockd").as_os_str(),
        "-i".as_ref(),
        IFACE.as_ref(),
        "-c".as_ref(),
        conf.as_os_str(),
        "-p".as_ref(),
        topo.dir().join("knockd.pid").as_os_str(),
        "-v".as_ref(),
    ]);
    if knockd
        .wait_for_log(&format!("listening on {IFACE}"), Duration::from_secs(5))
        .is_none()
    {
        panic!(
            "knockd not listening (exited: {:?}):\n{}",
            knockd.poll_status(),
            knockd.log_text()
        );
    }
    let diag = |knockd: &ChildGuard| {
        format!(
            "rules:\n{}\nknockd output:\n{}\nknockd LogFile:\n{}",
            iptables_rules(&topo.server),
            knockd.log_text(),
            std::fs::read_to_string(&knockd_log).unwrap_or_else(|e| format!("<{e}>"))
        )
    };
    let spa = |args: &[&str]| {
        let mut all = vec!["knock"];
        all.extend_from_slice(args);
        knock_spa_ok(&topo.client, None, &all)
    };

    let out = spa(&["-v", "10.99.0.1", "7000", "8000", "9000"]);
    assert!(out.contains("hitting tcp 10.99.0.1:7000"), "{out}");
    wait_for(
        &topo.client,
        ssh_v4(),
        ConnectResult::Accepted,
        GRANT_DEADLINE,
    )
    .unwrap_or_else(|| panic!("knockd did not open for knock-spa knock\n{}", diag(&knockd)));
    assert_eq!(
        tcp_connect(&topo.attacker, ssh_v4(), PROBE),
        ConnectResult::Refused
    );
    assert_knockd_log(
        &std::fs::read_to_string(&knockd_log).unwrap_or_default(),
        "10.99.0.2",
        "openSSH",
        3,
        "/usr/sbin/iptables -I INPUT -s 10.99.0.2 -p tcp --dport 22 -j ACCEPT",
    );

    spa(&["-d", "100", "10.99.0.1", "9000", "8000", "7000"]);
    wait_for(
        &topo.client,
        ssh_v4(),
        ConnectResult::Refused,
        GRANT_DEADLINE,
    )
    .unwrap_or_else(|| {
        panic!(
            "knockd did not close for knock-spa knock\n{}",
            diag(&knockd)
        )
    });

    spa(&["10.99.0.1", "2222:udp", "3333", "4444/udp"]);
    wait_for(
        &topo.client,
        ssh_v4(),
        ConnectResult::Accepted,
        GRANT_DEADLINE,
    )
    .unwrap_or_else(|| panic!("knockd did not open the mixed door\n{}", diag(&knockd)));
    // The knock client's exit status is what scripts test.
    let (ok, _, err) = knock_spa(&topo.client, None, &["knock", "10.99.0.1", "70000"]);
    assert!(!ok, "port 70000 accepted: {err}");
}

// ---------------------------------------------------------------------------------------------
// 6. A legacy knock door and an SPA door in one file, one daemon.

/// One knockd.conf with the walkthrough doors and an SPA door (the `Keys =` line keygen
/// printed): `knock-spa open/close` and `knock` both work, independently.
#[test]
fn legacy_and_spa_doors_in_one_daemon() {
    let topo = topology();
    let key = ClientKey::generate(&topo, "alice");
    let doors = format!(
        "{}
[spaSSH]
\t{}
\tallow_ports   = 22/tcp
\tcmd_timeout   = 30
\tstart_command = /usr/sbin/iptables -I INPUT -s %IP% -p %PROTO% --dport %PORT% -j ACCEPT
\tstop_command  = /usr/sbin/iptables -D INPUT -s %IP% -p %PROTO% --dport %PORT% -j ACCEPT
",
        walkthrough_doors(15),
        key.server_line
    );
    let conf = spad_conf(&topo, "\tServerName = 10.99.0.1\n", &doors);
    let check = std::process::Command::new(workspace_bin("knock-spad"))
        .args(["check", "-c"])
        .arg(&conf)
        .output()
        .unwrap_or_else(|e| panic!("knock-spad check: {e}"));
    assert!(
        check.status.success(),
        "knock-spad check rejects the mixed file:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let daemon = Daemon::start(&topo.server, &conf, &[]);

    knock_spa_ok(&topo.client, Some(&key), &["open", "ssh", "10.99.0.1"]);
    expect_open(&topo, &daemon, &topo.client, "knock-spa open ssh");
    assert_eq!(
        tcp_connect(&topo.attacker, ssh_v4(), PROBE),
        ConnectResult::Refused
    );
    knock_spa_ok(&topo.client, Some(&key), &["close", "ssh", "10.99.0.1"]);
    wait_for(
        &topo.client,
        ssh_v4(),
        ConnectResult::Refused,
        GRANT_DEADLINE,
    )
    .unwrap_or_else(|| panic!("SPA close did not close\n{}", diag(&topo, &daemon)));

    knock(&topo.client, &["10.99.0.1", "7000", "8000", "9000"]);
    expect_open(&topo, &daemon, &topo.client, "knock 7000 8000 9000");
    knock(&topo.client, &["10.99.0.1", "9000", "8000", "7000"]);
    wait_for(
        &topo.client,
        ssh_v4(),
        ConnectResult::Refused,
        GRANT_DEADLINE,
    )
    .unwrap_or_else(|| panic!("close knock did not close\n{}", diag(&topo, &daemon)));
    let log = file_log(&topo);
    assert!(
        log.contains("10.99.0.2: spaSSH: OPEN SESAME (spa key alice")
            && log.contains("10.99.0.2: openSSH: OPEN SESAME"),
        "{}",
        diag(&topo, &daemon)
    );
    let rules = iptables_rules(&topo.server);
    assert_eq!(
        rules_for(&rules, CLIENT_V4.into()),
        0,
        "left over:\n{rules}"
    );
}

/// knock issue 70, across a restart: a `Command`-only door inserts its rule once; after the
/// daemon restarts (the rule stays: nothing closes it), the same knock finds the rule already
/// in the firewall and does not insert a second copy, so one close knock really closes.
#[test]
fn one_rule_per_grant_across_a_restart() {
    let topo = topology();
    let conf = walkthrough_conf(&topo);
    let client: IpAddr = CLIENT_V4.into();
    let mut daemon = Daemon::start(&topo.server, &conf, &[]);
    knock(
        &topo.client,
        &["-d", "0", "10.99.0.1", "7000", "8000", "9000"],
    );
    expect_open(&topo, &daemon, &topo.client, "the open knock");
    assert!(daemon.stop(), "{}", diag(&topo, &daemon));
    assert_eq!(rules_for(&iptables_rules(&topo.server), client), 1);

    let daemon = Daemon::start(&topo.server, &conf, &[]);
    knock(
        &topo.client,
        &["-d", "0", "10.99.0.1", "7000", "8000", "9000"],
    );
    wait_count(
        &topo,
        &daemon,
        "openSSH: rule already in place (inserted by an earlier knock and not deleted since); \
         not inserting it twice",
        1,
        GRANT_DEADLINE,
    );
    assert_eq!(
        rules_for(&iptables_rules(&topo.server), client),
        1,
        "a second copy of the rule after the restart\n{}",
        diag(&topo, &daemon)
    );
    knock(
        &topo.client,
        &["-d", "0", "10.99.0.1", "9000", "8000", "7000"],
    );
    sync(&topo, &daemon, &topo.client);
    expect_refused(
        &topo,
        &daemon,
        &topo.client,
        "one close knock after the restart",
    );
    assert_eq!(rules_for(&iptables_rules(&topo.server), client), 0);
}

/// A rule deleted by hand (an administrator's `iptables -D`, a firewall reload) while the
/// daemon runs: the next open knock inserts it again. The daemon asks the firewall (`-C`)
/// instead of trusting its memory of having inserted it, which would skip the insert and
/// leave the door shut until a restart.
#[test]
fn a_rule_deleted_by_hand_is_inserted_again() {
    let topo = topology();
    let conf = walkthrough_conf(&topo);
    let client: IpAddr = CLIENT_V4.into();
    let daemon = Daemon::start(&topo.server, &conf, &[]);
    let open = ["-d", "0", "10.99.0.1", "7000", "8000", "9000"];
    knock(&topo.client, &open);
    expect_open(&topo, &daemon, &topo.client, "the open knock");

    topo.server
        .exec_ok("iptables -D INPUT -s 10.99.0.2 -p tcp --dport 22 -j ACCEPT".split(' '));
    assert_eq!(rules_for(&iptables_rules(&topo.server), client), 0);
    expect_refused(&topo, &daemon, &topo.client, "the rule deleted by hand");

    knock(&topo.client, &open);
    expect_open(
        &topo,
        &daemon,
        &topo.client,
        "the open knock after the deletion",
    );
    assert_eq!(
        rules_for(&iptables_rules(&topo.server), client),
        1,
        "{}",
        diag(&topo, &daemon)
    );

    // Deleted by hand again, then the close knock: nothing to delete, said as such, not as
    // a failed command.
    topo.server
        .exec_ok("iptables -D INPUT -s 10.99.0.2 -p tcp --dport 22 -j ACCEPT".split(' '));
    knock(
        &topo.client,
        &["-d", "0", "10.99.0.1", "9000", "8000", "7000"],
    );
    wait_count(
        &topo,
        &daemon,
        "closeSSH: the rule was already gone from the firewall; nothing to delete",
        1,
        GRANT_DEADLINE,
    );
    assert_eq!(count_msg(&file_log(&topo), "closeSSH: command failed"), 0);
}
