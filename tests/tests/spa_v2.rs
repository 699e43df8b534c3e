//! Public-key mode (packet version 2) end to end: the real `knock-spad` with a server key made
//! by `knock-spad server-key`, a door holding only the `PublicKeys =` line that
//! `knock-spa keygen --public-key` printed, the real client sealing to the server's key, and
//! the version-1 attacks of spa_e2e.rs replayed against version 2. Every verdict is a real
//! TCP connect, every refusal a log line.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use knock_e2e::{
    dry_run_packet, iptables_rules, knock_spa, knock_spa_ok, send_udp, send_udp_spoofed,
    tcp_connect, wait_for, workspace_bin, ClientKey, ConnectResult, Daemon, Topology, CLIENT_V4,
    SERVER_V4,
};
use knock_keys::public::{ClientPublic, ServerPublic, SigningKey};
use knock_shared::types::PortSpec;
use knock_shared::wire::{Action, Admit, PortList, Request, ServerId, PADDING_LEN};
use knock_shared::wire2::{precheck, seal2, PRECHECK_OFFSET};

const SSH: u16 = 22;
const SPA_PORT: u16 = 62201;
const OPEN_DEADLINE: Duration = Duration::from_secs(1);
const CLOSE_DEADLINE: Duration = Duration::from_secs(3);
const PROBE: Duration = Duration::from_millis(500);
const LOG_WAIT: Duration = Duration::from_secs(3);

fn ssh4() -> SocketAddr {
    SocketAddr::new(SERVER_V4.into(), SSH)
}

fn spa_to() -> SocketAddr {
    SocketAddr::new(SERVER_V4.into(), SPA_PORT)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `knock-spa keygen --public-key --name NAME -o DIR/NAME.key`; the `PublicKeys =` line it
/// printed.
#[track_caller]
fn public_keygen(topo: &Topology, name: &str, file: &str) -> ClientKey {
    let path = topo.dir().join(file);
    let out = std::process::Command::new(workspace_bin("knock-spa"))
        .args(["keygen", "--public-key", "--name", name, "-o"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run knock-spa keygen: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "keygen --public-key failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("PublicKeys = "))
        .collect();
    assert_eq!(lines.len(), 1, "one `PublicKeys =` line:\n{stdout}");
    ClientKey {
        path,
        server_line: lines[0].to_owned(),
    }
}

/// `knock-spad server-key -o DIR/server.key`: the file and the public key it printed.
#[track_caller]
fn server_key(topo: &Topology) -> (PathBuf, String) {
    let path = topo.dir().join("server.key");
    let out = std::process::Command::new(workspace_bin("knock-spad"))
        .args(["server-key", "-o"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run knock-spad server-key: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "server-key failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = stdout
        .lines()
        .find(|l| l.contains("public key"))
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or_else(|| panic!("server-key printed no public key:\n{stdout}"))
        .to_owned();
    ServerPublic::from_base64(&public)
        .unwrap_or_else(|e| panic!("server-key printed {public:?}, not a key: {e}"));
    (path, public)
}

/// One public-key door guarding 22/tcp.
fn conf(topo: &Topology, key: &ClientKey, server_key: &Path) -> PathBuf {
    let state = topo.dir().join("state");
    let rule = |op: &str| {
        format!("/usr/sbin/iptables {op} INPUT -s %IP% -p %PROTO% --dport %PORT% -j ACCEPT")
    };
    let text = format!(
        "[options]
    StateDir   = {state}
    ServerName = {SERVER_V4}
    ServerKey  = {server_key}

[spaSSH]
    {keys}
    Allow_Ports   = 22/tcp
    Cmd_Timeout   = 30
    Start_Command = {start}
    Stop_Command  = {stop}
",
        state = state.display(),
        server_key = server_key.display(),
        keys = key.server_line,
        start = rule("-I"),
        stop = rule("-D"),
    );
    let path = topo.dir().write("knock-spad.conf", text);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    path
}

struct Setup {
    topo: Topology,
    key: ClientKey,
    server_public: String,
    conf: PathBuf,
}

fn setup() -> Setup {
    let mut topo = Topology::new();
    topo.classic_firewall(SSH);
    topo.listen(SSH);
    let key = public_keygen(&topo, "laptop", "laptop.key");
    let (server_file, server_public) = server_key(&topo);
    let conf = conf(&topo, &key, &server_file);
    assert_eq!(
        tcp_connect(&topo.client, ssh4(), PROBE),
        ConnectResult::Refused,
        "port 22 must be refused before any knock"
    );
    Setup {
        topo,
        key,
        server_public,
        conf,
    }
}

#[track_caller]
fn expect(s: &Setup, want: ConnectResult, within: Duration, d: &Daemon) {
    if wait_for(&s.topo.client, ssh4(), want, within).is_none() {
        panic!(
            "client -> {}: not {want:?} within {within:?}\nrules:\n{}\nlog:\n{}",
            ssh4(),
            iptables_rules(&s.topo.server),
            d.log()
        );
    }
}

/// A packet the client would not make (a stale or future stamp, another signer), sealed
/// here with the client library's own functions to the server's key.
fn forge(signer: &SigningKey, server: &str, timestamp: u64) -> Vec<u8> {
    let ports: Vec<PortSpec> = vec!["22/tcp".parse().unwrap_or_else(|e| panic!("port: {e:?}"))];
    let request = Request {
        timestamp,
        action: Action::Open,
        admit: Admit::Addr(IpAddr::V4(CLIENT_V4)),
        duration: 0,
        server: ServerId::from_name(&SERVER_V4.to_string()),
        ports: PortList::new(&ports).unwrap_or_else(|| panic!("ports")),
    };
    let server = ServerPublic::from_base64(server).unwrap_or_else(|e| panic!("server key: {e}"));
    seal2(signer, &server, &request, [0x77; 32], &[0; PADDING_LEN])
        .unwrap_or_else(|| panic!("seal2"))
        .to_vec()
}

#[test]
fn a_public_key_opens_and_closes_and_the_server_holds_no_token_of_it() {
    let s = setup();
    let mut d = Daemon::start(&s.topo.server, &s.conf, &[]);
    let sk = ["--server-key", s.server_public.as_str()];

    let packet = dry_run_packet(
        &s.topo.client,
        &s.key,
        &["open", "ssh", "10.99.0.1", sk[0], sk[1]],
    );
    assert_eq!(packet.len(), 265, "a version-2 packet");
    assert_eq!(packet[0], 2);

    knock_spa_ok(
        &s.topo.client,
        Some(&s.key),
        &["open", "ssh", "10.99.0.1", sk[0], sk[1]],
    );
    expect(&s, ConnectResult::Accepted, OPEN_DEADLINE, &d);
    d.expect_log(
        "10.99.0.2: spaSSH: OPEN SESAME (spa key laptop, 22/tcp, 30 s)",
        LOG_WAIT,
    );
    assert_eq!(
        tcp_connect(&s.topo.attacker, ssh4(), PROBE),
        ConnectResult::Refused,
        "the attacker was admitted along with the client"
    );
    knock_spa_ok(
        &s.topo.client,
        Some(&s.key),
        &["close", "ssh", "10.99.0.1", sk[0], sk[1]],
    );
    expect(&s, ConnectResult::Refused, CLOSE_DEADLINE, &d);
    d.expect_log(
        "10.99.0.2: spaSSH: close requested (spa key laptop, 22/tcp)",
        LOG_WAIT,
    );

    // Without the server's key the client refuses to guess.
    let (ok, out, err) = knock_spa(&s.topo.client, Some(&s.key), &["open", "ssh", "10.99.0.1"]);
    assert!(!ok, "open without a server key succeeded: {out}");
    assert!(
        err.contains("--server-key"),
        "the error names --server-key: {err}"
    );
    assert!(d.stop(), "knock-spad did not exit 0:\n{}", d.log());
    let log = d.log();

    // Nothing on the server side holds a token of the client's secret: not the base64 of
    // its seed, not its hex, not its raw bytes.
    let client_file = std::fs::read_to_string(&s.key.path).unwrap_or_else(|e| panic!("{e}"));
    let seed_b64 = client_file
        .lines()
        .find_map(|l| l.strip_prefix("secret = "))
        .unwrap_or_else(|| panic!("no secret line in {client_file}"))
        .trim()
        .to_owned();
    let seed = {
        use base64_decode::decode;
        decode(&seed_b64)
    };
    let seed_hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
    let mut files = vec![s.conf.clone(), s.topo.dir().join("server.key")];
    files.extend(walk(&s.topo.dir().join("state")));
    assert!(!log.contains(&seed_b64), "the log holds the seed");
    for f in &files {
        let bytes = std::fs::read(f).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(&seed_b64),
            "{} holds the seed (base64)",
            f.display()
        );
        assert!(
            !text.contains(&seed_hex),
            "{} holds the seed (hex)",
            f.display()
        );
        assert!(
            !bytes.windows(seed.len()).any(|w| w == seed.as_slice()),
            "{} holds the seed bytes",
            f.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A tiny standard-base64 decoder for the test (the client's seed line).
mod base64_decode {
    pub fn decode(s: &str) -> Vec<u8> {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut bits = 0u32;
        let mut n = 0;
        let mut out = Vec::new();
        for c in s.bytes().filter(|c| *c != b'=') {
            let v = A
                .iter()
                .position(|a| *a == c)
                .unwrap_or_else(|| panic!("base64 {c}")) as u32;
            bits = (bits << 6) | v;
            n += 6;
            if n >= 8 {
                n -= 8;
                out.push((bits >> n) as u8);
            }
        }
        out
    }
}

#[test]
fn v2_attacks_are_refused_each_for_its_reason_and_nothing_opens() {
    let s = setup();
    let mut d = Daemon::start(&s.topo.server, &s.conf, &[]);
    let sk = ["--server-key", s.server_public.as_str()];
    let client = SigningKey::load(&s.key.path).unwrap_or_else(|e| panic!("load key: {e}"));

    // Raced by the attacker from its own address: address mismatch; the client's own copy
    // still works, and every copy after it is a replay, spoofed or not, across a restart.
    let raced = dry_run_packet(
        &s.topo.client,
        &s.key,
        &["open", "ssh", "10.99.0.1", sk[0], sk[1]],
    );
    send_udp(&s.topo.attacker, None, spa_to(), &raced).expect("send");
    d.expect_log(
        "spa: rejected packet from 10.99.0.3: address mismatch",
        LOG_WAIT,
    );
    send_udp(&s.topo.client, None, spa_to(), &raced).expect("send");
    expect(&s, ConnectResult::Accepted, OPEN_DEADLINE, &d);
    let forged_src = SocketAddr::new(CLIENT_V4.into(), 40000);
    send_udp_spoofed(&s.topo.attacker, forged_src, spa_to(), &raced).expect("spoofed send");
    d.expect_log("spa: rejected packet from 10.99.0.2: replay", LOG_WAIT);
    assert!(d.stop(), "knock-spad did not exit 0:\n{}", d.log());
    expect(&s, ConnectResult::Refused, CLOSE_DEADLINE, &d);
    let mut d = Daemon::start(&s.topo.server, &s.conf, &[]);
    send_udp_spoofed(&s.topo.attacker, forged_src, spa_to(), &raced).expect("spoofed send");
    d.expect_log("spa: rejected packet from 10.99.0.2: replay", LOG_WAIT);

    // Bit flips anywhere after the key id, and truncation.
    let fresh = dry_run_packet(
        &s.topo.client,
        &s.key,
        &["open", "ssh", "10.99.0.1", sk[0], sk[1]],
    );
    for (i, at) in [20, 100, 200, 260].into_iter().enumerate() {
        let mut p = fresh.clone();
        p[at] ^= 0x04;
        send_udp(&s.topo.client, None, spa_to(), &p).expect("send");
        d.wait_for_log_count(
            &["spa: rejected packet from 10.99.0.2: bad precheck"],
            i + 1,
            LOG_WAIT,
        );
    }
    send_udp(&s.topo.client, None, spa_to(), &fresh[..264]).expect("send");
    d.expect_log("spa: rejected packet from 10.99.0.2: bad length", LOG_WAIT);

    // Another key under the same name: unknown as it is; with the door's pre-check key (a
    // thief of the server's configuration has it) it passes the pre-check and is refused by
    // the signature.
    let other = public_keygen(&s.topo, "laptop", "thief.key");
    let thief = SigningKey::load(&other.path).unwrap_or_else(|e| panic!("load key: {e}"));
    let mut p = forge(&thief, &s.server_public, unix_now());
    send_udp(&s.topo.client, None, spa_to(), &p).expect("send");
    d.expect_log("spa: rejected packet from 10.99.0.2: unknown key", LOG_WAIT);
    let door = ClientPublic::from_inline(
        s.key
            .server_line
            .strip_prefix("PublicKeys = ")
            .unwrap_or_else(|| panic!("line {}", s.key.server_line)),
    )
    .unwrap_or_else(|e| panic!("door line: {e}"));
    let epoch = knock_keys::public::epoch(unix_now());
    p[1..9].copy_from_slice(&door.epoch_id(epoch).0);
    let pre = precheck(door.precheck_key(), &p[..PRECHECK_OFFSET]);
    p[PRECHECK_OFFSET..].copy_from_slice(&pre);
    send_udp(&s.topo.client, None, spa_to(), &p).expect("send");
    d.expect_log(
        "spa: rejected packet from 10.99.0.2: bad signature",
        LOG_WAIT,
    );

    // Stale and future clocks, with the client's own key.
    let stale = forge(&client, &s.server_public, unix_now() - 3600);
    send_udp(&s.topo.client, None, spa_to(), &stale).expect("send");
    d.expect_log(
        "spa: rejected packet from 10.99.0.2: stale timestamp",
        LOG_WAIT,
    );
    let future = forge(&client, &s.server_public, unix_now() + 600);
    send_udp(&s.topo.client, None, spa_to(), &future).expect("send");
    d.expect_log(
        "spa: rejected packet from 10.99.0.2: timestamp in the future",
        LOG_WAIT,
    );

    // Wrong server identity, wrong port, through the real client.
    knock_spa_ok(
        &s.topo.client,
        Some(&s.key),
        &[
            "open",
            "ssh",
            "10.99.0.1",
            sk[0],
            sk[1],
            "--server-id",
            "elsewhere",
        ],
    );
    d.expect_log(
        "spa: rejected packet from 10.99.0.2: wrong server identity",
        LOG_WAIT,
    );
    knock_spa_ok(
        &s.topo.client,
        Some(&s.key),
        &["open", "8080", "10.99.0.1", sk[0], sk[1]],
    );
    d.expect_log(
        "spa: rejected packet from 10.99.0.2: port 8080/tcp not allowed for this key",
        LOG_WAIT,
    );

    assert_eq!(
        tcp_connect(&s.topo.client, ssh4(), PROBE),
        ConnectResult::Refused,
        "an attack opened the port"
    );
    let log = d.log();
    assert_eq!(
        log.matches("OPEN SESAME").count(),
        0,
        "something opened:\n{log}"
    );
    assert!(d.stop());
}
