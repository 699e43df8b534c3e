//! Self-tests of the harness: the topology is wired as documented, packets (also spoofed
//! ones) arrive as sent, processes are logged and killed, and nothing outlives a test, not
//! even one that panics.

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use knock_e2e::{
    iptables_rules, send_udp, send_udp_spoofed, send_udp_spoofed_batch, tcp_connect, wait_for_with,
    ConnectResult, Netns, Reject, Topology, ATTACKER_V4, ATTACKER_V6, CLIENT_V4, CLIENT_V6,
    MAX_BATCH, SERVER_V4, SERVER_V6,
};

const PROBE: Duration = Duration::from_secs(1);

fn netns_list() -> String {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("`ip netns list` runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Binds a UDP socket in `ns` (it stays in that namespace) with a receive timeout.
fn udp_socket_in(ns: &Netns, addr: SocketAddr) -> UdpSocket {
    let sock = ns
        .run_in(move || UdpSocket::bind(addr))
        .expect("join namespace")
        .unwrap_or_else(|e| panic!("bind {addr} in {}: {e}", ns.name()));
    sock.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("set read timeout");
    sock
}

fn recv(sock: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = [0u8; 2048];
    let (n, from) = sock
        .recv_from(&mut buf)
        .expect("datagram arrives within 2 s");
    (buf[..n].to_vec(), from)
}

#[test]
fn topology_is_wired_and_firewall_refuses() {
    let mut topo = Topology::new();
    for name in [
        topo.server.name(),
        topo.client.name(),
        topo.attacker.name(),
        topo.bridge.name(),
    ] {
        assert!(netns_list().contains(name), "{name} missing");
    }
    // No default route anywhere.
    for ns in [&topo.server, &topo.client, &topo.attacker] {
        let routes =
            ns.ip(["route", "show", "default"]) + &ns.ip(["-6", "route", "show", "default"]);
        assert!(
            routes.trim().is_empty(),
            "default route in {}: {routes}",
            ns.name()
        );
    }
    topo.listen(2222);
    for (from, addr) in [
        (&topo.client, SocketAddr::from((SERVER_V4, 2222))),
        (&topo.attacker, SocketAddr::from((SERVER_V6, 2222))),
    ] {
        assert_eq!(
            tcp_connect(from, addr, PROBE),
            ConnectResult::Accepted,
            "{addr}"
        );
    }
    topo.classic_firewall_with(2222, Reject::Icmp);
    let rules = iptables_rules(&topo.server);
    assert!(
        rules.contains("--dport 2222 -j REJECT --reject-with icmp-port-unreachable"),
        "{rules}"
    );
    let v4 = SocketAddr::from((SERVER_V4, 2222));
    assert_eq!(
        tcp_connect(&topo.client, v4, PROBE),
        ConnectResult::Refused,
        "{rules}"
    );
    // Over IPv6 the ICMPv6 error only fails the connect at the SYN retransmission (~1 s).
    let v6 = SocketAddr::from((SERVER_V6, 2222));
    let fast = tcp_connect(&topo.client, v6, Duration::from_millis(300));
    assert_eq!(
        fast,
        ConnectResult::TimedOut,
        "Linux changed: update Reject::Icmp docs"
    );
    let t = wait_for_with(
        &topo.client,
        v6,
        ConnectResult::Refused,
        Duration::from_secs(3),
        Duration::from_secs(2),
    );
    assert!(t.is_some(), "ICMPv6 REJECT never seen as refused");
    // A port nobody listens on answers RST; a DROP times out.
    assert_eq!(
        tcp_connect(&topo.client, SocketAddr::from((SERVER_V4, 1)), PROBE),
        ConnectResult::Refused
    );
    topo.server.exec_ok([
        "iptables", "-w", "-A", "INPUT", "-p", "tcp", "--dport", "3", "-j", "DROP",
    ]);
    assert_eq!(
        tcp_connect(
            &topo.client,
            SocketAddr::from((SERVER_V4, 3)),
            Duration::from_millis(200)
        ),
        ConnectResult::TimedOut
    );
}

#[test]
fn udp_plain_and_spoofed_arrive_as_sent() {
    let topo = Topology::new();
    for (srv, cli, atk) in [
        (SERVER_V4.into(), CLIENT_V4.into(), ATTACKER_V4.into()),
        (SERVER_V6.into(), CLIENT_V6.into(), ATTACKER_V6.into()),
    ] {
        let to = SocketAddr::new(srv, 62201);
        let sock = udp_socket_in(&topo.server, to);

        send_udp(&topo.client, None, to, b"plain").expect("send plain");
        let (data, from) = recv(&sock);
        assert_eq!((data.as_slice(), from.ip()), (&b"plain"[..], cli));

        let from_port = SocketAddr::new(atk, 4444);
        send_udp(&topo.attacker, Some(from_port), to, b"bound").expect("send bound");
        assert_eq!(recv(&sock), (b"bound".to_vec(), from_port));

        // The attacker forges the client's address: the server cannot tell.
        let forged = SocketAddr::new(cli, 5555);
        send_udp_spoofed(&topo.attacker, forged, to, b"spoofed").expect("send spoofed");
        assert_eq!(recv(&sock), (b"spoofed".to_vec(), forged));

        let batch: Vec<Vec<u8>> = (0u8..5).map(|i| vec![i; 3 + usize::from(i)]).collect();
        let sent = send_udp_spoofed_batch(&topo.attacker, forged, to, &batch).expect("batch");
        assert_eq!(sent, batch.len());
        for want in &batch {
            assert_eq!(&recv(&sock), &(want.clone(), forged));
        }
    }
    let too_many = vec![[0u8; 1]; MAX_BATCH + 1];
    let to = SocketAddr::from((SERVER_V4, 9));
    assert!(send_udp_spoofed_batch(&topo.attacker, to, to, &too_many).is_err());
}

#[test]
fn children_are_logged_and_killed() {
    let topo = Topology::new();
    let mut child = topo
        .server
        .spawn(["sh", "-c", "echo hello from $$; sleep 30 & wait"]);
    assert!(
        child
            .wait_for_log("hello from", Duration::from_secs(5))
            .is_some(),
        "{}",
        child.log_text()
    );
    let pids = topo.server.pids();
    assert!(
        pids.contains(&child.pid()),
        "{pids:?} lacks {}",
        child.pid()
    );
    let t = Instant::now();
    drop(child);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "stop took {:?}",
        t.elapsed()
    );
    // The orphaned `sleep` is still in the namespace; dropping the topology kills it.
    let left = topo.server.pids();
    assert_eq!(left.len(), 1, "expected the orphaned sleep: {left:?}");
    drop(topo);
    std::thread::sleep(Duration::from_millis(100));
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", left[0])).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z"),
        "orphan {} still running: {stat}",
        left[0]
    );
}

#[test]
fn namespaces_removed_even_when_the_test_panics() {
    let names = std::sync::Mutex::new(Vec::new());
    let result = std::panic::catch_unwind(|| {
        let topo = Topology::new();
        let _sleeper = topo.server.spawn(["sleep", "30"]);
        names
            .lock()
            .expect("not poisoned")
            .extend([topo.server.name().to_owned(), topo.bridge.name().to_owned()]);
        panic!("deliberate failure inside a test");
    });
    assert!(result.is_err());
    let names = names.into_inner().expect("not poisoned");
    assert_eq!(names.len(), 2);
    let list = netns_list();
    for name in names {
        assert!(!list.contains(&name), "{name} left behind:\n{list}");
    }
}
