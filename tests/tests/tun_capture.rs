//! Capture on a raw-IP interface (TUN: what WireGuard, OpenVPN and `tun` devices look like to
//! libpcap, `DLT_RAW`, no link header at all). The test owns the interface's other end: it
//! writes whole IP packets into it, and the daemon captures them on `tun0` like any link's.
//! An SPA open and a knock sequence, over IPv4 and IPv6, each end in the real firewall rule.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use knock_shared::types::TcpFlags;

use knock_e2e::{
    dry_run_packet, ip6tables_rules, iptables_rules, tcp_packet, udp_packet, ClientKey, Daemon,
    Topology, Tun,
};

const TUN_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const PEER_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const TUN_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
const PEER_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);
const SPA_PORT: u16 = 62201;
const RULE_WAIT: Duration = Duration::from_secs(3);

fn conf(topo: &Topology, key: &ClientKey) -> PathBuf {
    let rule = |tool: &str, port: &str| {
        format!("/usr/sbin/{tool} -I INPUT -s %IP% -p tcp --dport {port} -j ACCEPT")
    };
    let text = format!(
        "[options]
    StateDir   = {state}
    ServerName = {TUN_V4}, {TUN_V6}

[spaSSH]
    {keys}
    Allow_Ports     = 22/tcp
    # Source mode (the spoofed-source test below) needs it.
    Allow_NAT       = yes
    Start_Command   = {spa4}
    Start_Command_6 = {spa6}

[openAlt]
    Sequence    = 7000,8000:udp,9000
    Seq_Timeout = 5
    TCPFlags    = syn
    Command     = {knock4}
    Command_6   = {knock6}
",
        state = topo.dir().join("state").display(),
        keys = key.server_line,
        spa4 = rule("iptables", "%PORT%"),
        spa6 = rule("ip6tables", "%PORT%"),
        knock4 = rule("iptables", "2222"),
        knock6 = rule("ip6tables", "2222"),
    );
    let path = topo.dir().write("knock-spad.conf", text);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    path
}

/// Waits until the server's IPv4 or IPv6 INPUT chain has a rule admitting `from` to `port`.
#[track_caller]
fn expect_rule(topo: &Topology, d: &Daemon, from: IpAddr, port: u16) {
    let needle_src = match from {
        IpAddr::V4(a) => format!("-s {a}/32"),
        IpAddr::V6(a) => format!("-s {a}/128"),
    };
    let needle_port = format!("--dport {port} ");
    let rules = || match from {
        IpAddr::V4(_) => iptables_rules(&topo.server),
        IpAddr::V6(_) => ip6tables_rules(&topo.server),
    };
    let start = Instant::now();
    while start.elapsed() < RULE_WAIT {
        if rules()
            .lines()
            .any(|l| l.contains(&needle_src) && l.contains(&needle_port))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "no rule for {from} to port {port} within {RULE_WAIT:?}\nrules:\n{}\ndaemon log:\n{}",
        rules(),
        d.log()
    );
}

/// The `openAlt` sequence from `src`: 7000 (SYN), 8000/udp, 9000 (SYN), as whole IP packets.
fn knock_sequence(src: IpAddr, server: IpAddr) -> [std::io::Result<Vec<u8>>; 3] {
    [
        tcp_packet(
            SocketAddr::new(src, 41000),
            SocketAddr::new(server, 7000),
            TcpFlags::SYN,
        ),
        udp_packet(
            SocketAddr::new(src, 41001),
            SocketAddr::new(server, 8000),
            &[0],
        ),
        tcp_packet(
            SocketAddr::new(src, 41002),
            SocketAddr::new(server, 9000),
            TcpFlags::SYN,
        ),
    ]
}

/// The topology with `tun0` in the server namespace, a client key, and the daemon capturing
/// on `tun0` (bind the result in this order: the daemon is dropped first).
fn start() -> (Topology, Tun, ClientKey, Daemon) {
    knock_e2e::require_root();
    let topo = Topology::new();
    let tun = Tun::create(&topo.server, "tun0", &["10.77.0.1/24", "fd77::1/64"]);
    let key = ClientKey::generate(&topo, "laptop");
    let conf = conf(&topo, &key);
    let d = Daemon::start_on(&topo.server, &conf, tun.name(), &["-v"]);
    (topo, tun, key, d)
}

#[test]
fn spa_and_knock_captured_on_a_tun_interface() {
    let (topo, tun, key, mut d) = start();

    for (peer, server) in [
        (IpAddr::V4(PEER_V4), IpAddr::V4(TUN_V4)),
        (IpAddr::V6(PEER_V6), IpAddr::V6(TUN_V6)),
    ] {
        // SPA: the packet knock-spa would send from `peer`, delivered through the tunnel.
        let spa = dry_run_packet(
            &topo.client,
            &key,
            &[
                "open",
                "ssh",
                &server.to_string(),
                "--allow-ip",
                &peer.to_string(),
            ],
        );
        let to_spa = SocketAddr::new(server, SPA_PORT);
        let mut flipped = spa.clone();
        flipped[60] ^= 0x01;
        let bad = udp_packet(SocketAddr::new(peer, 40001), to_spa, &flipped).expect("packet");
        tun.inject(&bad).expect("inject");
        d.expect_log(
            &format!("spa: rejected packet from {peer}: bad hmac"),
            RULE_WAIT,
        );
        let good = udp_packet(SocketAddr::new(peer, 40002), to_spa, &spa).expect("packet");
        tun.inject(&good).expect("inject");
        expect_rule(&topo, &d, peer, 22);

        // The knock sequence 7000 (SYN), 8000/udp, 9000 (SYN).
        let hits = knock_sequence(peer, server);
        for hit in hits {
            tun.inject(&hit.expect("packet")).expect("inject");
        }
        expect_rule(&topo, &d, peer, 2222);
        d.expect_log(&format!("{peer}: openAlt: OPEN SESAME"), RULE_WAIT);
    }
    assert!(d.stop(), "clean exit:\n{}", d.log());
}

/// Sources no rule should be made for (unspecified, multicast), which only a spoofer sends:
/// an authentic SPA packet admitting its source is rejected with its reason, and a knock
/// sequence from them reaches no stage. The same sequence from a real address then opens
/// (so the spoofed packets were captured and looked at, in order, before it).
#[test]
fn spoofed_unadmissible_sources_open_nothing() {
    let (topo, tun, key, mut d) = start();

    let spa = dry_run_packet(
        &topo.client,
        &key,
        &["open", "ssh", &TUN_V4.to_string(), "--use-source"],
    );
    let to_spa = SocketAddr::new(TUN_V4.into(), SPA_PORT);
    let from_any = udp_packet(
        SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 40000),
        to_spa,
        &spa,
    )
    .expect("packet");
    tun.inject(&from_any).expect("inject");
    d.expect_log(
        "spa: rejected packet from 0.0.0.0: address 0.0.0.0 cannot be admitted",
        RULE_WAIT,
    );

    let spoofed: [(IpAddr, IpAddr); 2] = [
        (Ipv4Addr::UNSPECIFIED.into(), TUN_V4.into()),
        ("ff02::1".parse().expect("ip"), TUN_V6.into()),
    ];
    for (src, server) in spoofed {
        for hit in knock_sequence(src, server) {
            tun.inject(&hit.expect("packet")).expect("inject");
        }
    }
    for hit in knock_sequence(PEER_V6.into(), TUN_V6.into()) {
        tun.inject(&hit.expect("packet")).expect("inject");
    }
    expect_rule(&topo, &d, PEER_V6.into(), 2222);
    let log = d.log();
    for (src, _) in spoofed {
        assert!(
            !log.contains(&format!("{src}: openAlt:")),
            "a knock from {src} reached the tracker:\n{log}"
        );
    }
    assert!(d.stop(), "clean exit:\n{}", d.log());
}
