//! Proves the harness against the reference implementation: Debian's real `knockd` in the
//! server namespace and the real `knock` client in the client namespace, with the classic
//! walkthrough configuration (open 7000,8000,9000 / close 9000,8000,7000, guarding port 22).
//!
//! ```text
//!  ks-cli (10.99.0.2, fd99::2)          ks-srv (10.99.0.1, fd99::1)
//!  knock 7000 8000 9000  ----SYNs---->  knockd -i eth0 (pcap)  -> iptables -I ... ACCEPT
//!  connect :22           ------------>  ks-listen :22 behind REJECT tcp-reset
//!  ks-atk (10.99.0.3, fd99::3): connect :22 must stay refused throughout
//! ```
//!
//! The same scenario runs over IPv4 and over IPv6, as two tests that run in parallel.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use knock_e2e::{
    ip6tables_rules, iptables_rules, tcp_connect, wait_for, ChildGuard, ConnectResult, Netns,
    Topology, ATTACKER_V4, ATTACKER_V6, CLIENT_V4, CLIENT_V6, IFACE, SERVER_V4, SERVER_V6,
};

/// The guarded port (sshd's).
const SSH: u16 = 22;
/// knockd's open and close sequences.
const OPEN: [u16; 3] = [7000, 8000, 9000];
const CLOSE: [u16; 3] = [9000, 8000, 7000];
/// Milliseconds `knock -d` waits between hits.
const KNOCK_DELAY_MS: u32 = 100;
/// How long knockd may take to run its command after the last hit.
const GRANT_DEADLINE: Duration = Duration::from_secs(2);
/// How long knockd may take to open its capture.
const READY_DEADLINE: Duration = Duration::from_secs(5);
/// Timeout of single connect probes.
const PROBE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn server(self) -> IpAddr {
        match self {
            Family::V4 => SERVER_V4.into(),
            Family::V6 => SERVER_V6.into(),
        }
    }
    fn client(self) -> IpAddr {
        match self {
            Family::V4 => CLIENT_V4.into(),
            Family::V6 => CLIENT_V6.into(),
        }
    }
    fn attacker(self) -> IpAddr {
        match self {
            Family::V4 => ATTACKER_V4.into(),
            Family::V6 => ATTACKER_V6.into(),
        }
    }
    fn rules(self, ns: &Netns) -> String {
        match self {
            Family::V4 => iptables_rules(ns),
            Family::V6 => ip6tables_rules(ns),
        }
    }
    fn knock_flag(self) -> &'static str {
        match self {
            Family::V4 => "-4",
            Family::V6 => "-6",
        }
    }
}

/// The knockd.conf of the classic walkthrough, with IPv6 commands (knockd 0.8 runs
/// `start_command_6` for knocks that came over IPv6) and the log file in the temp dir.
fn knockd_conf(log_file: &Path) -> String {
    let seq = |s: &[u16]| s.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
    format!(
        "[options]
\tLogFile = {log}

[openSSH]
\tsequence        = {open}
\tseq_timeout     = 15
\ttcpflags        = syn
\tcommand         = /usr/sbin/iptables -I INPUT -s %IP% -p tcp --dport {SSH} -j ACCEPT
\tstart_command_6 = /usr/sbin/ip6tables -I INPUT -s %IP% -p tcp --dport {SSH} -j ACCEPT

[closeSSH]
\tsequence        = {close}
\tseq_timeout     = 15
\ttcpflags        = syn
\tcommand         = /usr/sbin/iptables -D INPUT -s %IP% -p tcp --dport {SSH} -j ACCEPT
\tstart_command_6 = /usr/sbin/ip6tables -D INPUT -s %IP% -p tcp --dport {SSH} -j ACCEPT
",
        log = log_file.display(),
        open = seq(&OPEN),
        close = seq(&CLOSE),
    )
}

/// Runs the real `knock` client in `ns`; returns how long it took.
fn knock(ns: &Netns, family: Family, ports: &[u16]) -> Duration {
    let start = Instant::now();
    let mut args = vec![
        "knock".to_owned(),
        family.knock_flag().to_owned(),
        "-v".to_owned(),
        "-d".to_owned(),
        KNOCK_DELAY_MS.to_string(),
        family.server().to_string(),
    ];
    args.extend(ports.iter().map(u16::to_string));
    ns.exec_ok(&args);
    start.elapsed()
}

/// Everything worth seeing when an assertion fails.
fn diagnostics(topo: &Topology, family: Family, knockd: &ChildGuard) -> String {
    format!(
        "server rules:\n{}\nknockd output:\n{}\nknockd LogFile:\n{}",
        family.rules(&topo.server),
        knockd.log_text(),
        std::fs::read_to_string(topo.dir().join("knockd.file.log"))
            .unwrap_or_else(|e| format!("<unreadable: {e}>")),
    )
}

fn walkthrough(family: Family) {
    let t0 = Instant::now();
    let mut topo = Topology::new();
    let t_topology = t0.elapsed();
    topo.classic_firewall(SSH);
    topo.listen(SSH);
    let ssh = SocketAddr::new(family.server(), SSH);

    // Closed before any knock, for everyone.
    assert_eq!(
        tcp_connect(&topo.client, ssh, PROBE),
        ConnectResult::Refused,
        "client must be refused before knocking; rules:\n{}",
        family.rules(&topo.server)
    );
    assert_eq!(
        tcp_connect(&topo.attacker, ssh, PROBE),
        ConnectResult::Refused
    );

    let conf = topo.dir().write(
        "knockd.conf",
        knockd_conf(&topo.dir().join("knockd.file.log")),
    );
    let pidfile = topo.dir().join("knockd.pid");
    let started = Instant::now();
    let mut knockd = topo.server.spawn([
        Path::new("/usr/sbin/knockd").as_os_str(),
        "-i".as_ref(),
        IFACE.as_ref(),
        "-c".as_ref(),
        conf.as_os_str(),
        "-p".as_ref(),
        pidfile.as_os_str(),
        "-v".as_ref(),
        "-D".as_ref(),
    ]);
    // knockd prints this after pcap_open_live and setting the filter: the capture is live.
    let ready = knockd
        .wait_for_log(&format!("listening on {IFACE}"), READY_DEADLINE)
        .unwrap_or_else(|| {
            panic!(
                "knockd not listening after {:?} (exited: {:?}):\n{}",
                started.elapsed(),
                knockd.poll_status(),
                knockd.log_text()
            )
        });

    // Open.
    let knock_open = knock(&topo.client, family, &OPEN);
    let granted = wait_for(&topo.client, ssh, ConnectResult::Accepted, GRANT_DEADLINE)
        .unwrap_or_else(|| {
            panic!(
                "client not admitted within {GRANT_DEADLINE:?} of the open knock\n{}",
                diagnostics(&topo, family, &knockd)
            )
        });
    let log = knockd.log_text();
    let client = family.client().to_string();
    assert!(
        log.contains(&format!("{client}: openSSH: OPEN SESAME")),
        "knockd log lacks OPEN SESAME for {client}:\n{log}"
    );
    let rules = family.rules(&topo.server);
    assert!(
        rules.contains(&format!("-s {client}/")) && rules.contains("--dport 22 -j ACCEPT"),
        "no ACCEPT rule for the client:\n{rules}"
    );
    // Only the client's address was admitted.
    assert_eq!(
        tcp_connect(&topo.attacker, ssh, PROBE),
        ConnectResult::Refused,
        "attacker {} admitted along with the client\n{}",
        family.attacker(),
        diagnostics(&topo, family, &knockd)
    );

    // Close.
    let knock_close = knock(&topo.client, family, &CLOSE);
    let revoked = wait_for(&topo.client, ssh, ConnectResult::Refused, GRANT_DEADLINE)
        .unwrap_or_else(|| {
            panic!(
                "client still admitted {GRANT_DEADLINE:?} after the close knock\n{}",
                diagnostics(&topo, family, &knockd)
            )
        });
    let rules = family.rules(&topo.server);
    assert!(
        !rules.contains(&format!("-s {client}/")),
        "ACCEPT rule for the client left after closing:\n{rules}"
    );
    assert_eq!(
        tcp_connect(&topo.attacker, ssh, PROBE),
        ConnectResult::Refused
    );

    let status = knockd.stop();
    eprintln!(
        "{family:?}: topology {t_topology:?}, knockd ready {ready:?}, open knock {knock_open:?} \
         + admitted after {granted:?}, close knock {knock_close:?} + refused after {revoked:?}, \
         total {:?}, knockd exit {status:?}",
        t0.elapsed()
    );
}

#[test]
fn knockd_walkthrough_ipv4() {
    walkthrough(Family::V4);
}

#[test]
fn knockd_walkthrough_ipv6() {
    walkthrough(Family::V6);
}
