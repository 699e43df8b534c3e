//! The nftables example of docs/CONFIG.md, end to end: the ruleset and the two doors are read
//! from the document itself, loaded with the real `nft` in the server namespace (no iptables
//! rule at all), and every verdict is a real TCP connect from the client namespace. An SPA
//! open and close over IPv4 and IPv6, a knock door that opens and times out; `check` notes
//! that it cannot read nft rules instead of warning that 22/tcp is open. (`Firewall =
//! nftables`, the daemon's own table, is tests/tests/nft_native.rs.)

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use knock_e2e::{
    knock_spa_ok, tcp_connect, wait_for, workspace_bin, ClientKey, ConnectResult, Daemon, Netns,
    Topology, CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6,
};

const SSH: u16 = 22;
const OPEN_DEADLINE: Duration = Duration::from_secs(1);
const CLOSE_DEADLINE: Duration = Duration::from_secs(3);
const PROBE: Duration = Duration::from_millis(500);

/// The fenced block that follows the line holding `marker` in docs/CONFIG.md.
fn config_md_block(marker: &str) -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/CONFIG.md"))
        .expect("read docs/CONFIG.md");
    let after = doc
        .split_once(marker)
        .unwrap_or_else(|| panic!("docs/CONFIG.md lost its {marker} marker"))
        .1;
    let block = after
        .split_once("```")
        .and_then(|(_, rest)| rest.split_once('\n'))
        .and_then(|(_, rest)| rest.split_once("```"))
        .unwrap_or_else(|| panic!("no fenced block after {marker}"))
        .0;
    block.to_owned()
}

fn ssh4() -> SocketAddr {
    SocketAddr::new(SERVER_V4.into(), SSH)
}

fn ssh6() -> SocketAddr {
    SocketAddr::new(SERVER_V6.into(), SSH)
}

/// `nft list set inet knock NAME` in the server namespace.
fn set_elements(topo: &Topology, name: &str) -> String {
    topo.server
        .exec_ok(["nft", "list", "set", "inet", "knock", name])
}

#[track_caller]
fn expect(topo: &Topology, ns: &Netns, to: SocketAddr, want: ConnectResult, d: &Daemon) {
    let within = match want {
        ConnectResult::Accepted => OPEN_DEADLINE,
        _ => CLOSE_DEADLINE,
    };
    if wait_for(ns, to, want, within).is_none() {
        panic!(
            "{} -> {to}: not {want:?} within {within:?}\nruleset:\n{}\ndaemon log:\n{}",
            ns.name(),
            topo.server.exec_ok(["nft", "list", "ruleset"]),
            d.log()
        );
    }
}

/// The server with the document's ruleset and a listener on 22; the document's doors with
/// `key` in place of its example key, a 2-second knock door, and state in the test's dir.
fn setup(topo: &mut Topology, key: &ClientKey) -> PathBuf {
    let ruleset = topo
        .dir()
        .write("knock.nft", config_md_block("<!-- nftables-ruleset"));
    topo.server
        .exec_ok(["nft", "-f", ruleset.to_str().expect("utf-8")]);
    topo.listen(SSH);
    let mut doors = String::new();
    let mut section = "";
    for line in config_md_block("<!-- nftables-doors").lines() {
        let t = line.trim_start();
        if t.starts_with('[') {
            section = t;
        }
        let line = if t.starts_with("Keys") {
            format!("    {}", key.server_line)
        } else if t.starts_with("Cmd_Timeout") && section == "[openSSH]" {
            // The knock door's grant ends by its timeout within the test.
            "    Cmd_Timeout = 2".to_owned()
        } else {
            line.to_owned()
        };
        doors.push_str(&line);
        doors.push('\n');
    }
    assert!(doors.contains("Cmd_Timeout = 2") && doors.contains(&key.server_line));
    let text = format!(
        "[options]\n    StateDir   = {}\n    ServerName = {SERVER_V4}, {SERVER_V6}\n\n{doors}",
        topo.dir().join("state").display()
    );
    let conf = topo.dir().write("knock-spad.conf", text);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    conf
}

#[test]
fn the_nftables_example_opens_and_closes_with_set_elements() {
    let mut topo = Topology::new();
    let key = ClientKey::generate(&topo, "alice");
    let conf = setup(&mut topo, &key);
    assert_eq!(
        tcp_connect(&topo.client, ssh4(), PROBE),
        ConnectResult::Refused,
        "22 must be refused by the ruleset before any knock"
    );
    assert_eq!(
        tcp_connect(&topo.client, ssh6(), PROBE),
        ConnectResult::Refused
    );

    // check: no false "22/tcp is open" from the empty iptables chain, a note instead.
    let check = topo.server.exec([
        workspace_bin("knock-spad").display().to_string(),
        "check".into(),
        "-c".into(),
        conf.display().to_string(),
    ]);
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{err}");
    assert!(err.contains("note: [spaSSH] runs nft"), "{err}");
    assert!(err.contains("note: [openSSH] runs nft"), "{err}");
    assert!(
        err.contains("not iptables: its ports are not checked or baselined here"),
        "{err}"
    );
    assert!(!err.contains("is open in the current"), "{err}");

    let d = Daemon::start(&topo.server, &conf, &[]);

    // SPA, IPv4: one element while open, none after the close.
    knock_spa_ok(&topo.client, Some(&key), &["open", "ssh", "10.99.0.1"]);
    expect(&topo, &topo.client, ssh4(), ConnectResult::Accepted, &d);
    assert!(
        set_elements(&topo, "allowed4").contains(&format!("{CLIENT_V4} . tcp . 22")),
        "{}",
        set_elements(&topo, "allowed4")
    );
    assert_eq!(
        tcp_connect(&topo.attacker, ssh4(), PROBE),
        ConnectResult::Refused,
        "the grant admitted another address"
    );
    knock_spa_ok(&topo.client, Some(&key), &["close", "ssh", "10.99.0.1"]);
    expect(&topo, &topo.client, ssh4(), ConnectResult::Refused, &d);
    assert!(!set_elements(&topo, "allowed4").contains("elements"));

    // SPA, IPv6: the _6 commands and the other set.
    knock_spa_ok(&topo.client, Some(&key), &["open", "ssh", "fd99::1"]);
    expect(&topo, &topo.client, ssh6(), ConnectResult::Accepted, &d);
    assert!(
        set_elements(&topo, "allowed6").contains(&format!("{CLIENT_V6} . tcp . 22")),
        "{}",
        set_elements(&topo, "allowed6")
    );
    knock_spa_ok(&topo.client, Some(&key), &["close", "ssh", "fd99::1"]);
    expect(&topo, &topo.client, ssh6(), ConnectResult::Refused, &d);

    // The knock door: open, then closed by its 2 s timeout.
    knock_spa_ok(
        &topo.client,
        None,
        &["knock", "10.99.0.1", "7000", "9000", "8000"],
    );
    expect(&topo, &topo.client, ssh4(), ConnectResult::Accepted, &d);
    std::thread::sleep(Duration::from_secs(2));
    expect(&topo, &topo.client, ssh4(), ConnectResult::Refused, &d);
    assert!(!set_elements(&topo, "allowed4").contains("elements"));
}
