//! Floods, bounded: the daemon keeps serving the legitimate user, its memory stays flat and its
//! log stays short.
//!
//! * SPA: at least 1 000 000 hostile UDP packets at the SPA port (garbage of several sizes,
//!   unknown key ids, bad HMACs, a replay of an accepted packet), as fast as one sender thread
//!   goes; during it, ten `knock-spa open`s each admit the client within 2 s.
//! * Knock: spoofed SYNs from 200 000 distinct sources at the first knock port; during it, ten
//!   `knock` sequences (Debian's client, `-d 0`) each admit the client within 2 s.
//!
//! Each flood stops by itself (packet count and time bounds in [`Flood`]), and only goes from
//! the attacker namespace to the server namespace.

use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use knock_e2e::{
    iptables_rules, knock_spa_ok, rss_kib, send_udp, tcp_connect, wait_for, ClientKey,
    ConnectResult, Daemon, Flood, Netns, Topology, SERVER_V4,
};

const SSH: u16 = 22;
const TRIALS: usize = 10;
/// The bar for a legitimate open under flood.
const OPEN_DEADLINE: Duration = Duration::from_secs(2);
const CLOSE_DEADLINE: Duration = Duration::from_secs(3);
const PROBE: Duration = Duration::from_millis(500);
/// Memory bound through any flood.
const RSS_LIMIT_KIB: u64 = 64 * 1024;
/// Detailed reject lines are 5 per reason per 10 s (`REJECT_LOG_BURST`); allow generous
/// slack for summaries and the accept/close lines, but far below one line per packet.
const LOG_LINES_LIMIT: usize = 400;

fn ssh() -> SocketAddr {
    SocketAddr::new(SERVER_V4.into(), SSH)
}

fn setup() -> Topology {
    let mut topo = Topology::new();
    topo.classic_firewall(SSH);
    topo.listen(SSH);
    topo
}

fn write_conf(topo: &Topology, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let text = format!(
        "[options]\n    StateDir = {}\n    ServerName = {SERVER_V4}\n{body}",
        topo.dir().join("state").display()
    );
    let path = topo.dir().write("knock-spad.conf", text);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("chmod: {e}"));
    path
}

/// A small deterministic generator for garbage (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Waits for `want` from `ns`; returns how long it took, or `None`.
fn timed(ns: &Netns, want: ConnectResult, within: Duration) -> Option<Duration> {
    wait_for(ns, ssh(), want, within)
}

fn log_lines(d: &Daemon) -> usize {
    d.log().lines().count()
}

fn check_memory(d: &Daemon) -> (u64, u64) {
    let (rss, hwm) = rss_kib(d.pid()).unwrap_or_else(|| panic!("no /proc status for the daemon"));
    assert!(
        hwm < RSS_LIMIT_KIB,
        "daemon peak RSS {hwm} KiB is over {RSS_LIMIT_KIB} KiB"
    );
    (rss, hwm)
}

#[test]
fn spa_opens_within_2s_during_a_million_packet_flood() {
    let topo = setup();
    let key = ClientKey::generate(&topo, "laptop");
    let conf = write_conf(
        &topo,
        &format!(
            "[spaSSH]
    {keys}
    Allow_Ports   = 22/tcp
    Cmd_Timeout   = 30
    Start_Command = /usr/sbin/iptables -I INPUT -s %IP% -p %PROTO% --dport %PORT% -j ACCEPT
    Stop_Command  = /usr/sbin/iptables -D INPUT -s %IP% -p %PROTO% --dport %PORT% -j ACCEPT
",
            keys = key.server_line
        ),
    );
    let mut d = Daemon::start(&topo.server, &conf, &[]);
    let to = SocketAddr::new(SERVER_V4.into(), 62201);

    // One packet the server accepted: replaying it is part of the flood.
    let spent = knock_e2e::dry_run_packet(&topo.client, &key, &["open", "ssh", "10.99.0.1"]);
    send_udp(&topo.client, None, to, &spent).expect("send");
    assert!(timed(&topo.client, ConnectResult::Accepted, OPEN_DEADLINE).is_some());
    knock_spa_ok(&topo.client, Some(&key), &["close", "ssh", "10.99.0.1"]);
    assert!(timed(&topo.client, ConnectResult::Refused, CLOSE_DEADLINE).is_some());
    let (rss_idle, _) = check_memory(&d);
    let lines_before = log_lines(&d);

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut payloads = Vec::new();
    for len in [1, 48, 208, 209, 210, 512, 1400] {
        payloads.push(rng.bytes(len)); // garbage (malformed, or unknown key by chance)
    }
    for _ in 0..8 {
        let mut p = rng.bytes(209);
        p[0] = 1; // version 1, random key id: unknown key
        payloads.push(p);
    }
    for i in 0..8 {
        let mut p = spent.clone();
        p[40 + i * 16] ^= 0x80; // the real key id, a flipped ciphertext bit: bad HMAC
        payloads.push(p);
    }
    for _ in 0..8 {
        payloads.push(spent.clone()); // replay
    }

    let flood = Flood::udp(
        &topo.attacker,
        to,
        payloads,
        5_000_000,
        Duration::from_secs(60),
    );
    assert!(
        flood.wait_sent(20_000, Duration::from_secs(10)),
        "the flood did not get going"
    );
    let mut opened = Vec::new();
    for trial in 0..TRIALS {
        let sent = Instant::now();
        knock_spa_ok(&topo.client, Some(&key), &["open", "ssh", "10.99.0.1"]);
        match timed(&topo.client, ConnectResult::Accepted, OPEN_DEADLINE) {
            Some(_) => opened.push(sent.elapsed()),
            None => panic!(
                "trial {trial}: not admitted within {OPEN_DEADLINE:?} during the flood ({} sent)\nrules:\n{}\nlog tail:\n{}",
                flood.sent(),
                iptables_rules(&topo.server),
                tail(&d.log(), 30)
            ),
        }
        knock_spa_ok(&topo.client, Some(&key), &["close", "ssh", "10.99.0.1"]);
        assert!(
            timed(&topo.client, ConnectResult::Refused, CLOSE_DEADLINE).is_some(),
            "trial {trial}: not closed ({} sent)\nlog tail:\n{}",
            flood.sent(),
            tail(&d.log(), 30)
        );
    }
    assert!(
        flood.is_running(),
        "the flood ended before the trials did: they did not all run under load"
    );
    // Keep going until the million.
    assert!(
        flood.wait_sent(1_000_000, Duration::from_secs(60)),
        "the sender did not reach 1 000 000 packets"
    );
    let report = flood.stop();
    let (rss, hwm) = check_memory(&d);
    assert_eq!(
        tcp_connect(&topo.attacker, ssh(), PROBE),
        ConnectResult::Refused
    );
    // The daemon counted the flood in its periodic summaries, without a line per packet.
    d.expect_log("spa: dropped ", Duration::from_secs(12));
    let lines = log_lines(&d) - lines_before;
    assert!(
        lines < LOG_LINES_LIMIT,
        "{lines} log lines for {} packets: reject logging is not rate-limited",
        report.sent
    );
    let log = d.log();
    // Garbage fails the version byte (or, starting with 1, the length).
    for reason in [
        "bad version|bad length",
        "unknown key",
        "bad hmac",
        "replay",
    ] {
        assert!(
            reason
                .split('|')
                .any(|r| log.contains(&format!("rejected packet from 10.99.0.3: {r}"))),
            "no `{reason}` reject in the log:\n{}",
            tail(&log, 40)
        );
    }
    assert!(d.stop());
    eprintln!(
        "spa flood: {} packets in {:?} ({:.0}/s, {} send errors); opens took {:?}; \
         RSS idle {rss_idle} KiB, after {rss} KiB, peak {hwm} KiB; {lines} log lines",
        report.sent,
        report.elapsed,
        report.rate(),
        report.dropped,
        opened
    );
}

#[test]
fn knock_opens_within_2s_during_a_spoofed_syn_flood() {
    let topo = setup();
    let conf = write_conf(
        &topo,
        "[openSSH]
    Sequence    = 7000,9000,8000
    Seq_Timeout = 5
    TCPFlags    = syn
    Command     = /usr/sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT

[closeSSH]
    Sequence    = 8000,9000,7000
    Seq_Timeout = 5
    TCPFlags    = syn
    Command     = /usr/sbin/iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
",
    );
    // Without -v: per-stage lines are verbose output; the flood must not fill the log.
    let d = Daemon::start_args(&topo.server, &conf, &[]);
    let (rss_idle, _) = check_memory(&d);
    let lines_before = log_lines(&d);

    const SOURCES: u32 = 200_000;
    let flood = Flood::syn_spoofed(
        &topo.attacker,
        SocketAddrV4::new(SERVER_V4, 7000),
        SOURCES,
        5_000_000,
        Duration::from_secs(60),
    );
    // Every source has knocked once before the first trial: the tracker is at its cap.
    assert!(
        flood.wait_sent(u64::from(SOURCES), Duration::from_secs(30)),
        "the flood did not reach {SOURCES} sources"
    );
    let knock = |ports: &[&str]| {
        let mut args = vec!["knock", "-d", "0", "10.99.0.1"];
        args.extend_from_slice(ports);
        topo.client.exec_ok(&args);
    };
    let mut opened = Vec::new();
    for trial in 0..TRIALS {
        let start = Instant::now();
        knock(&["7000", "9000", "8000"]);
        match timed(&topo.client, ConnectResult::Accepted, OPEN_DEADLINE) {
            Some(_) => opened.push(start.elapsed()),
            None => panic!(
                "trial {trial}: not admitted within {OPEN_DEADLINE:?} during the SYN flood ({} sent)\nlog tail:\n{}",
                flood.sent(),
                tail(&d.log(), 30)
            ),
        }
        knock(&["8000", "9000", "7000"]);
        assert!(
            timed(&topo.client, ConnectResult::Refused, CLOSE_DEADLINE).is_some(),
            "trial {trial}: not closed\nlog tail:\n{}",
            tail(&d.log(), 30)
        );
    }
    assert!(
        flood.is_running(),
        "the flood ended before the trials did: they did not all run under load"
    );
    let report = flood.stop();
    let (rss, hwm) = check_memory(&d);
    let lines = log_lines(&d) - lines_before;
    assert!(
        lines < LOG_LINES_LIMIT,
        "{lines} log lines for {} spoofed SYNs",
        report.sent
    );
    eprintln!(
        "syn flood: {} packets in {:?} ({:.0}/s, {} send errors) from {SOURCES} sources; \
         opens took {:?}; RSS idle {rss_idle} KiB, after {rss} KiB, peak {hwm} KiB; {lines} log lines",
        report.sent,
        report.elapsed,
        report.rate(),
        report.dropped,
        opened
    );
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
