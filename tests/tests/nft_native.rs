//! `Firewall = nftables`, end to end: the daemon's own table `inet knock_spa` in the server
//! namespace (no iptables rule at all), real TCP connects from the client and attacker
//! namespaces. Guarded before any knock; an SPA open is an element with a kernel timeout for
//! exactly the client's address; `kill -9` leaves the client its access until the kernel's
//! timeout and then nothing, with no daemon running; a restart reconciles and opens again;
//! extend and close; IPv6; a knock door with `Open_Ports`; another table that accepts
//! everything opens nothing; 10,000 concurrent grants; pcap and UDP capture;
//! `KeepRulesOnExit` leaves the elements to their kernel timeouts.

use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use knock_e2e::{
    knock_spa_ok, tcp_connect, wait_for, wait_for_status_line, workspace_bin, ClientKey,
    ConnectResult, Daemon, Flood, Netns, Topology, CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6,
};

const SSH: u16 = 22;
const OPEN_DEADLINE: Duration = Duration::from_secs(2);
const CLOSE_DEADLINE: Duration = Duration::from_secs(3);
const PROBE: Duration = Duration::from_millis(500);

fn ssh4() -> SocketAddr {
    SocketAddr::new(SERVER_V4.into(), SSH)
}

fn ssh6() -> SocketAddr {
    SocketAddr::new(SERVER_V6.into(), SSH)
}

fn state(topo: &Topology) -> PathBuf {
    topo.dir().join("state")
}

/// A configuration with `Firewall = nftables`, an SPA door for `key` on 22/tcp, and a knock
/// door (7000, 8000, 9000) that opens 22/tcp for `knock_secs`; `extra_options` go into
/// `[options]`.
fn conf(topo: &Topology, key: &ClientKey, knock_secs: u64, extra_options: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let text = format!(
        "[options]
    Firewall   = nftables
    StateDir   = {state}
    ServerName = {SERVER_V4}, {SERVER_V6}
{extra_options}
[spaSSH]
    {keys}
    Allow_Ports = 22/tcp
    Cmd_Timeout = 30
    Max_Timeout = 3600

[openSSH]
    Sequence    = 7000,8000,9000
    Open_Ports  = 22/tcp
    Cmd_Timeout = {knock_secs}
",
        state = state(topo).display(),
        keys = key.server_line
    );
    let path = topo.dir().write("knock-spad.conf", text);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

/// `nft list set inet knock_spa NAME` in the server namespace.
fn set(topo: &Topology, name: &str) -> String {
    topo.server
        .exec_ok(["nft", "list", "set", "inet", "knock_spa", name])
}

/// The `expires` the kernel reports for `addr . tcp . 22` in set `name`, in ms.
fn expires_ms(topo: &Topology, name: &str, addr: &str) -> Option<u64> {
    let text = set(topo, name);
    let at = text.find(&format!("{addr} . tcp . 22"))?;
    let rest = &text[at..];
    let rest = &rest[rest.find("expires ")? + "expires ".len()..];
    let word = rest.split([',', ' ', '\n', '}']).next()?;
    Some(nft_duration_ms(word))
}

/// `1h2m3s400ms` → ms.
fn nft_duration_ms(word: &str) -> u64 {
    let mut total = 0;
    let mut num = 0u64;
    let mut chars = word.chars().peekable();
    while let Some(c) = chars.next() {
        if let Some(d) = c.to_digit(10) {
            num = num * 10 + u64::from(d);
            continue;
        }
        let unit = match c {
            'd' => 86_400_000,
            'h' => 3_600_000,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                1
            }
            'm' => 60_000,
            's' => 1000,
            _ => 0,
        };
        total += num * unit;
        num = 0;
    }
    total
}

#[track_caller]
fn expect(topo: &Topology, ns: &Netns, to: SocketAddr, want: ConnectResult, log: &str) {
    let within = match want {
        ConnectResult::Accepted => OPEN_DEADLINE,
        _ => CLOSE_DEADLINE,
    };
    if wait_for(ns, to, want, within).is_none() {
        panic!(
            "{} -> {to}: not {want:?} within {within:?}\nruleset:\n{}\ndaemon log:\n{log}",
            ns.name(),
            topo.server.exec_ok(["nft", "list", "ruleset"]),
        );
    }
}

/// Waits until `status` lists `n` open grants: their records are written.
fn recorded(topo: &Topology, n: usize) {
    wait_for_status_line(
        &state(topo),
        &["open", "grants:", &n.to_string()],
        Duration::from_secs(5),
    );
}

/// Starts the daemon and waits until its table is in place.
fn start(topo: &Topology, conf: &std::path::Path) -> Daemon {
    let mut d = Daemon::start(&topo.server, conf, &[]);
    d.expect_log("table inet knock_spa in place", Duration::from_secs(5));
    d
}

/// An SPA open from the client with `args`, then `to` accepted.
#[track_caller]
fn open_ok(topo: &Topology, key: &ClientKey, args: &[&str], to: SocketAddr, d: &Daemon) {
    knock_spa_ok(&topo.client, Some(key), args);
    expect(topo, &topo.client, to, ConnectResult::Accepted, &d.log());
}

/// The client's element `ADDR . tcp . 22` is in set `name`, and the attacker is refused.
#[track_caller]
fn admits_only(topo: &Topology, name: &str, client: &str, to: SocketAddr) {
    let listed = set(topo, name);
    assert!(listed.contains(&format!("{client} . tcp . 22")), "{listed}");
    assert_eq!(
        tcp_connect(&topo.attacker, to, PROBE),
        ConnectResult::Refused,
        "the grant admitted another address"
    );
}

fn spad(topo: &Topology, args: &[&str]) -> std::process::Output {
    let mut argv = vec![workspace_bin("knock-spad").display().to_string()];
    argv.extend(args.iter().map(|s| s.to_string()));
    topo.server.exec(argv)
}

fn setup(knock_secs: u64, extra: &str) -> (Topology, ClientKey, PathBuf) {
    let mut topo = Topology::new();
    topo.listen(SSH);
    let key = ClientKey::generate(&topo, "alice");
    let conf = conf(&topo, &key, knock_secs, extra);
    (topo, key, conf)
}

#[test]
fn spa_opens_an_element_for_exactly_the_client_then_extends_and_closes() {
    let (topo, key, conf) = setup(5, "");
    // Before the daemon: nothing guards 22 (no table, no iptables rule).
    assert_eq!(
        tcp_connect(&topo.client, ssh4(), PROBE),
        ConnectResult::Accepted
    );
    let mut d = start(&topo, &conf);
    for (ns, to) in [
        (&topo.client, ssh4()),
        (&topo.client, ssh6()),
        (&topo.attacker, ssh4()),
    ] {
        assert_eq!(
            tcp_connect(ns, to, PROBE),
            ConnectResult::Refused,
            "{} -> {to} must be refused (a reset) before any knock",
            ns.name()
        );
    }

    // SPA open, IPv4: one element for the client with the kernel's timeout.
    open_ok(
        &topo,
        &key,
        &["open", "ssh", "10.99.0.1", "--for", "60"],
        ssh4(),
        &d,
    );
    let first = expires_ms(&topo, "admitted4", &CLIENT_V4.to_string())
        .unwrap_or_else(|| panic!("no element for the client:\n{}", set(&topo, "admitted4")));
    assert!(
        (50_000..=61_000).contains(&first),
        "expires {first} ms, for a 60 s grant"
    );
    assert_eq!(
        tcp_connect(&topo.attacker, ssh4(), PROBE),
        ConnectResult::Refused,
        "the grant admitted another address"
    );
    let status = spad(
        &topo,
        &[
            "status",
            "--state-dir",
            state(&topo).to_str().expect("utf-8"),
        ],
    );
    let out = String::from_utf8_lossy(&status.stdout);
    assert!(
        out.contains("KERNEL"),
        "status shows the kernel's time left:\n{out}"
    );
    assert!(!out.contains("no element"), "{out}");

    // Extend: the same open with a longer time replaces the kernel's timeout.
    knock_spa_ok(
        &topo.client,
        Some(&key),
        &["open", "ssh", "10.99.0.1", "--for", "600"],
    );
    d.expect_log("extended to", Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = expires_ms(&topo, "admitted4", &CLIENT_V4.to_string()).unwrap_or(0);
        if now > 500_000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the element's timeout was not extended: {}",
            set(&topo, "admitted4")
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Close: the element goes, the port with it.
    knock_spa_ok(&topo.client, Some(&key), &["close", "ssh", "10.99.0.1"]);
    expect(
        &topo,
        &topo.client,
        ssh4(),
        ConnectResult::Refused,
        &d.log(),
    );
    assert!(
        !set(&topo, "admitted4").contains("elements"),
        "{}",
        set(&topo, "admitted4")
    );

    // IPv6: the other set.
    open_ok(&topo, &key, &["open", "ssh", "fd99::1"], ssh6(), &d);
    admits_only(&topo, "admitted6", &CLIENT_V6.to_string(), ssh6());
    assert_eq!(
        tcp_connect(&topo.client, ssh4(), PROBE),
        ConnectResult::Refused,
        "an IPv6 grant opened IPv4"
    );

    // SIGTERM deletes the elements; the table stays and keeps guarding (fail closed).
    assert!(d.stop(), "daemon exit status:\n{}", d.log());
    assert!(
        !set(&topo, "admitted6").contains("elements"),
        "{}",
        set(&topo, "admitted6")
    );
    assert_eq!(
        tcp_connect(&topo.client, ssh6(), PROBE),
        ConnectResult::Refused,
        "a stopped daemon must leave the port guarded"
    );

    // firewall-setup --nft --remove is the one way the table goes.
    let rm = spad(&topo, &["firewall-setup", "--nft", "--remove"]);
    assert!(
        rm.status.success(),
        "{}",
        String::from_utf8_lossy(&rm.stderr)
    );
    assert_eq!(
        tcp_connect(&topo.client, ssh4(), PROBE),
        ConnectResult::Accepted,
        "the table was not removed"
    );
}

#[test]
fn after_kill_9_the_kernel_ends_the_grant_on_time_and_a_restart_reconciles() {
    let (topo, key, conf) = setup(5, "");
    let mut d = start(&topo, &conf);
    open_ok(
        &topo,
        &key,
        &["open", "ssh", "10.99.0.1", "--for", "4"],
        ssh4(),
        &d,
    );
    let opened = Instant::now();
    // The element comes before the grant's record: crash once it is recorded (a crash before
    // leaves an element with no record, which the kernel ends all the same).
    recorded(&topo, 1);
    d.crash();
    assert!(!d.is_running());
    // No daemon: the client keeps its access until the kernel's timeout...
    assert_eq!(
        tcp_connect(&topo.client, ssh4(), PROBE),
        ConnectResult::Accepted,
        "the grant ended with the daemon"
    );
    // ...and then loses it, with no element left.
    let refused = wait_for(
        &topo.client,
        ssh4(),
        ConnectResult::Refused,
        Duration::from_secs(10),
    )
    .unwrap_or_else(|| {
        panic!(
            "still open 10 s after a 4 s grant:\n{}",
            set(&topo, "admitted4")
        )
    });
    let _ = refused;
    let lasted = opened.elapsed();
    assert!(
        lasted >= Duration::from_millis(2500) && lasted <= Duration::from_secs(7),
        "the grant lasted {lasted:?} without the daemon, for 4 s"
    );
    assert!(!set(&topo, "admitted4").contains("elements"));
    assert!(!d.is_running());

    // Restart: the recorded grant's element is gone, so the grant is dropped; a new open works.
    let mut d = Daemon::start(&topo.server, &conf, &[]);
    d.expect_log(
        "its element is gone from the kernel",
        Duration::from_secs(5),
    );
    open_ok(
        &topo,
        &key,
        &["open", "ssh", "10.99.0.1", "--for", "60"],
        ssh4(),
        &d,
    );

    // A crash with a live element: the restart keeps the grant and closes it at its time.
    recorded(&topo, 1);
    d.crash();
    let mut d = Daemon::start(&topo.server, &conf, &[]);
    d.expect_log("1 recorded grant(s) kept, 0 gone", Duration::from_secs(5));
    assert_eq!(
        tcp_connect(&topo.client, ssh4(), PROBE),
        ConnectResult::Accepted
    );
    knock_spa_ok(&topo.client, Some(&key), &["close", "ssh", "10.99.0.1"]);
    expect(
        &topo,
        &topo.client,
        ssh4(),
        ConnectResult::Refused,
        &d.log(),
    );
    assert!(d.stop());
}

#[test]
fn a_knock_door_opens_its_open_ports_and_another_table_opens_nothing() {
    let (topo, _key, conf) = setup(2, "");
    let conf_s = conf.to_str().expect("utf-8");
    let table = || {
        topo.server
            .exec_ok(["nft", "list", "table", "inet", "knock_spa"])
    };
    let remove = || {
        let rm = spad(&topo, &["firewall-setup", "--nft", "--remove"]);
        assert!(
            rm.status.success(),
            "{}",
            String::from_utf8_lossy(&rm.stderr)
        );
    };
    // firewall-setup --nft prints exactly what --apply applies, and what the daemon applies.
    let applied = spad(&topo, &["firewall-setup", "--nft", "--apply", "-c", conf_s]);
    assert!(
        String::from_utf8_lossy(&applied.stdout).contains("applied: table inet knock_spa"),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let by_apply = table();
    assert!(by_apply.contains("elements = { tcp . 22 }"), "{by_apply}");
    remove();
    let printed = spad(&topo, &["firewall-setup", "--nft", "-c", conf_s]);
    let script = topo.dir().write("knock_spa.nft", &printed.stdout);
    topo.server
        .exec_ok(["nft", "-f", script.to_str().expect("utf-8")]);
    assert_eq!(
        table(),
        by_apply,
        "the printed script differs from what --apply applies"
    );
    remove();
    let mut d = start(&topo, &conf);
    assert_eq!(table(), by_apply, "the daemon applies another table");
    // Another table that accepts everything first does not open a guarded port.
    topo.server.exec_ok([
        "nft",
        "add table inet other; add chain inet other input { type filter hook input priority -100; policy accept; }; add rule inet other input accept",
    ]);
    assert_eq!(
        tcp_connect(&topo.client, ssh4(), PROBE),
        ConnectResult::Refused,
        "another table's accept opened a guarded port"
    );
    // check warns about nothing here (the other table accepts), and names a drop elsewhere.
    topo.server
        .exec_ok(["nft", "add rule inet other input tcp dport 22 drop"]);
    let check = spad(&topo, &["check", "-c", conf.to_str().expect("utf-8")]);
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{err}");
    assert!(
        err.contains("table inet other chain input refuses a guarded port (tcp dport 22 drop)"),
        "{err}"
    );
    topo.server.exec_ok(["nft", "delete table inet other"]);

    knock_spa_ok(
        &topo.client,
        None,
        &["knock", "10.99.0.1", "7000", "8000", "9000"],
    );
    expect(
        &topo,
        &topo.client,
        ssh4(),
        ConnectResult::Accepted,
        &d.log(),
    );
    admits_only(&topo, "admitted4", &CLIENT_V4.to_string(), ssh4());
    // Closed by its 2 s Cmd_Timeout.
    d.expect_log("command timeout", Duration::from_secs(5));
    expect(
        &topo,
        &topo.client,
        ssh4(),
        ConnectResult::Refused,
        &d.log(),
    );
    assert!(!set(&topo, "admitted4").contains("elements"));
}

#[test]
fn ten_thousand_concurrent_grants() {
    const GRANTS: u32 = 10_000;
    let (topo, key, conf) = setup(600, "    MaxGrants  = 20000\n");
    // A one-port knock door that each spoofed SYN completes: one grant per source.
    let text = std::fs::read_to_string(&conf).expect("read conf")
        + "\n[flood]\n    Sequence    = 7100\n    Open_Ports  = 22/tcp\n    Cmd_Timeout = 600\n    Max_Grants  = 20000\n";
    std::fs::write(&conf, text).expect("write conf");
    let mut d = start(&topo, &conf);
    // In rounds of new sources, each within the action queue's bound (a burst of 10,000
    // completions at once is refused beyond the bounded queues, by design: caps.rs).
    const ROUND: u32 = 1000;
    for round in 0..GRANTS / ROUND {
        let flood = Flood::syn_spoofed_from(
            &topo.attacker,
            SocketAddrV4::new(SERVER_V4, 7100),
            round * ROUND,
            ROUND,
            u64::from(ROUND),
            Duration::from_secs(30),
        );
        assert!(
            flood.wait_sent(u64::from(ROUND), Duration::from_secs(30)),
            "round {round}: the flood did not send its {ROUND} SYNs"
        );
        let _ = flood.stop();
        wait_for_status_line(
            &state(&topo),
            &["open", "grants:", &((round + 1) * ROUND).to_string()],
            Duration::from_secs(60),
        );
    }
    // `status` lists a grant from the moment it is recorded; its element follows.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let elements = set(&topo, "admitted4").matches(" . tcp . 22").count();
        if elements == GRANTS as usize {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{elements} elements in the kernel for {GRANTS} grants"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Among them all, still exactly the admitted addresses.
    assert_eq!(
        tcp_connect(&topo.client, ssh4(), PROBE),
        ConnectResult::Refused
    );
    knock_spa_ok(&topo.client, Some(&key), &["open", "ssh", "10.99.0.1"]);
    expect(
        &topo,
        &topo.client,
        ssh4(),
        ConnectResult::Accepted,
        &d.log(),
    );
    assert_eq!(
        tcp_connect(&topo.attacker, ssh4(), PROBE),
        ConnectResult::Refused
    );
    // Killed, the daemon leaves the 10,001 elements to their kernel timeouts; a restart
    // finds every one of them (a restart with 10,001 grants to reconcile).
    d.crash();
    assert_eq!(
        set(&topo, "admitted4").matches(" . tcp . 22").count(),
        GRANTS as usize + 1
    );
    let mut d = Daemon::start(&topo.server, &conf, &[]);
    d.expect_log(
        &format!("{} recorded grant(s) kept, 0 gone", GRANTS + 1),
        Duration::from_secs(60),
    );
    expect(
        &topo,
        &topo.client,
        ssh4(),
        ConnectResult::Accepted,
        &d.log(),
    );
    d.crash();
}

#[test]
fn udp_capture_opens_elements_too() {
    let (topo, key, conf) = setup(5, "    Capture    = udp\n");
    // A UDP socket sees no knocks: the SPA door alone.
    let text = std::fs::read_to_string(&conf).expect("read conf");
    let spa_only = text.split("[openSSH]").next().expect("text").to_owned();
    std::fs::write(&conf, spa_only).expect("write conf");
    let d = start(&topo, &conf);
    // The table guards the doors' ports, not the SPA port the socket listens on.
    assert!(!set(&topo, "guarded").contains("62201"));
    assert_eq!(
        tcp_connect(&topo.client, ssh4(), PROBE),
        ConnectResult::Refused
    );
    open_ok(&topo, &key, &["open", "ssh", "10.99.0.1"], ssh4(), &d);
    admits_only(&topo, "admitted4", &CLIENT_V4.to_string(), ssh4());
    open_ok(&topo, &key, &["open", "ssh", "fd99::1"], ssh6(), &d);
    admits_only(&topo, "admitted6", &CLIENT_V6.to_string(), ssh6());
}

#[test]
fn keep_rules_on_exit_leaves_the_elements_to_their_kernel_timeout() {
    let (topo, key, conf) = setup(5, "    KeepRulesOnExit\n");
    let mut d = start(&topo, &conf);
    open_ok(
        &topo,
        &key,
        &["open", "ssh", "10.99.0.1", "--for", "60"],
        ssh4(),
        &d,
    );
    assert!(d.stop(), "{}", d.log());
    // Stopped, and the grant is still there, with the kernel's timeout.
    let left = expires_ms(&topo, "admitted4", &CLIENT_V4.to_string()).unwrap_or_else(|| {
        panic!(
            "the element went with the daemon:\n{}",
            set(&topo, "admitted4")
        )
    });
    assert!((40_000..=61_000).contains(&left), "expires {left} ms");
    assert_eq!(
        tcp_connect(&topo.client, ssh4(), PROBE),
        ConnectResult::Accepted
    );
    let mut d = Daemon::start(&topo.server, &conf, &[]);
    d.expect_log("1 recorded grant(s) kept, 0 gone", Duration::from_secs(5));
    knock_spa_ok(&topo.client, Some(&key), &["close", "ssh", "10.99.0.1"]);
    expect(
        &topo,
        &topo.client,
        ssh4(),
        ConnectResult::Refused,
        &d.log(),
    );
}
