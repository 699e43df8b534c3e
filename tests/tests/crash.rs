//! Crash and restart safety: `kill -9` at random moments during a stream of opens and closes,
//! and state files damaged on disk. After every restart no rule outlives its grant, every
//! packet accepted before is still refused, and nothing opens because of a damaged file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use knock_e2e::{
    dry_run_packet, iptables_rules, knock_spa_ok, send_udp, tcp_connect, wait_for, ClientKey,
    ConnectResult, Daemon, Topology, SERVER_V4,
};

const SSH: u16 = 22;
/// Grant length: short, so that grants expire while the daemon is down.
const GRANT_SECS: u64 = 2;
const ITERATIONS: usize = 50;
const PROBE: Duration = Duration::from_millis(300);

fn ssh() -> SocketAddr {
    SocketAddr::new(SERVER_V4.into(), SSH)
}

fn spa() -> SocketAddr {
    SocketAddr::new(SERVER_V4.into(), 62201)
}

fn conf(topo: &Topology, key: &ClientKey) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let text = format!(
        "[options]
    StateDir   = {state}
    ServerName = {SERVER_V4}
[spaSSH]
    {keys}
    Allow_Ports   = 22/tcp
    Cmd_Timeout   = {GRANT_SECS}
    Start_Command = /usr/sbin/iptables -I INPUT -s %IP% -p %PROTO% --dport %PORT% -j ACCEPT
    Stop_Command  = /usr/sbin/iptables -D INPUT -s %IP% -p %PROTO% --dport %PORT% -j ACCEPT
",
        state = state_dir(topo).display(),
        keys = key.server_line
    );
    let path = topo.dir().write("knock-spad.conf", text);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("chmod: {e}"));
    path
}

/// The classic firewall and listener, a client key and its configuration.
fn setup() -> (Topology, ClientKey, PathBuf) {
    let mut topo = Topology::new();
    topo.classic_firewall(SSH);
    topo.listen(SSH);
    let key = ClientKey::generate(&topo, "laptop");
    let conf = conf(&topo, &key);
    (topo, key, conf)
}

/// Starts the daemon and has it accept one SPA open; returns it and the packet.
fn start_and_open(topo: &Topology, conf: &Path, key: &ClientKey) -> (Daemon, Vec<u8>) {
    let mut d = Daemon::start_args(&topo.server, conf, &[]);
    // After a start with no (or a lost) replay cache, packets stamped before the next second
    // are refused: wait for it.
    std::thread::sleep(Duration::from_millis(1100));
    let p = dry_run_packet(&topo.client, key, &["open", "ssh", "10.99.0.1"]);
    send_udp(&topo.client, None, spa(), &p).expect("send");
    d.expect_log("OPEN SESAME", Duration::from_secs(3));
    (d, p)
}

/// Starts the daemon and opens the port for the client for 60 s; returns once the rule is in
/// the firewall.
fn open_for_a_minute(topo: &Topology, conf: &Path, key: &ClientKey) -> Daemon {
    let mut d = Daemon::start_args(&topo.server, conf, &[]);
    // As in `start_and_open`: packets stamped before the next second may be refused.
    std::thread::sleep(Duration::from_millis(1100));
    knock_spa_ok(
        &topo.client,
        Some(key),
        &["open", "ssh", "10.99.0.1", "--for", "60"],
    );
    d.expect_log("OPEN SESAME", Duration::from_secs(3));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while rules_for_client(topo) != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the rule did not come:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    d
}

fn state_dir(topo: &Topology) -> PathBuf {
    topo.dir().join("state")
}

fn rules_for_client(topo: &Topology) -> usize {
    iptables_rules(&topo.server)
        .matches("-s 10.99.0.2/32")
        .count()
}

/// xorshift64*, seeded from the clock; the seed is printed so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

fn seed() -> u64 {
    std::env::var("KS_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64 | 1)
        })
}

fn no_corruption_reported(logs: &[String]) {
    for (i, log) in logs.iter().enumerate() {
        assert!(
            !log.contains("corrupt"),
            "restart {i} found a corrupt state file:\n{log}"
        );
    }
}

#[test]
fn kill_9_at_random_moments_loses_nothing() {
    let (topo, key, conf) = setup();
    let seed = seed();
    eprintln!("KS_CRASH_SEED={seed}");
    let mut rng = Rng(seed);

    // Packets the server is known to have accepted (logged); they must stay spent. A packet
    // sent just before a crash may never have been read: it is not a replay, so it is left
    // out of the final check.
    let mut accepted: Vec<Vec<u8>> = Vec::new();
    let mut logs = Vec::new();
    let started = Instant::now();
    for i in 0..ITERATIONS {
        let mut d = Daemon::start_args(&topo.server, &conf, &[]);
        // A restart must close what expired while the daemon was down: give it one grant
        // length (plus the stop command's time) and check that nothing older survives.
        let ops = 1 + rng.below(3);
        let mut sent = Vec::new();
        for _ in 0..ops {
            let action = if rng.below(3) == 0 { "close" } else { "open" };
            let p = dry_run_packet(&topo.client, &key, &[action, "ssh", "10.99.0.1"]);
            send_udp(&topo.client, None, spa(), &p).expect("send");
            sent.push(p);
            // Sometimes let the command run, sometimes crash right in the middle of it.
            let pause = rng.below(40);
            if pause > 0 {
                std::thread::sleep(Duration::from_millis(pause));
            }
        }
        d.crash();
        let log = d.log();
        // The daemon handles packets in order and logs each accepted one.
        let handled = log.matches("OPEN SESAME (spa key").count()
            + log.matches("close requested (spa key").count();
        assert!(handled <= sent.len(), "more accepts than packets:\n{log}");
        accepted.extend(sent.into_iter().take(handled));
        logs.push(log);
        assert!(
            rules_for_client(&topo) <= 1,
            "iteration {i}: more than one rule for one grant:\n{}",
            iptables_rules(&topo.server)
        );
        if i % 10 == 9 {
            // Every so often, stay down past the grant length.
            std::thread::sleep(Duration::from_millis(GRANT_SECS * 1000 + 200));
        }
    }
    eprintln!(
        "{ITERATIONS} crashes in {:?}; {} packets known accepted",
        started.elapsed(),
        accepted.len()
    );
    assert!(
        accepted.len() >= ITERATIONS / 2,
        "too few packets got through to test"
    );

    // Final start: whatever was open expires within one grant length, and every packet ever
    // sent is refused now.
    let mut d = Daemon::start_args(&topo.server, &conf, &[]);
    if wait_for(
        &topo.client,
        ssh(),
        ConnectResult::Refused,
        Duration::from_secs(GRANT_SECS + 3),
    )
    .is_none()
    {
        panic!(
            "a grant outlived its time after the restart:\n{}\n{}",
            iptables_rules(&topo.server),
            d.log()
        );
    }
    assert_eq!(
        rules_for_client(&topo),
        0,
        "leftover rule:\n{}",
        iptables_rules(&topo.server)
    );
    let before = d.log();
    // A fresh close after the replays, as a sentinel: packets are handled in order, so once
    // it is judged (accepted, or refused as stamped before a start without a trustworthy
    // cache) every replay before it has been judged too.
    const JUDGED: [&str; 2] = [
        "close requested (spa key",
        "stamped before the daemon started",
    ];
    let judged = d.log_count(&JUDGED);
    for p in &accepted {
        send_udp(&topo.client, None, spa(), p).expect("send");
    }
    let sentinel = dry_run_packet(&topo.client, &key, &["close", "ssh", "10.99.0.1"]);
    send_udp(&topo.client, None, spa(), &sentinel).expect("send");
    d.wait_for_log_count(&JUDGED, judged + 1, Duration::from_secs(10));
    assert_eq!(
        tcp_connect(&topo.client, ssh(), PROBE),
        ConnectResult::Refused,
        "an old packet opened the port again:\n{}",
        d.log()
    );
    let after = d.log();
    let new = &after[before.len()..];
    assert!(
        !new.contains("OPEN SESAME"),
        "an old packet was accepted after the restarts:\n{new}"
    );
    assert!(d.stop());
    logs.push(d.log());
    no_corruption_reported(&logs);
    assert_eq!(rules_for_client(&topo), 0);
}

fn damage(path: &Path, how: &str) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let damaged = match how {
        "truncate" => bytes[..bytes.len() / 2].to_vec(),
        "garble" => {
            let mut b = bytes;
            let mid = b.len() / 2;
            b[mid] ^= 0x5a;
            b
        }
        "empty" => Vec::new(),
        // A grants slot is padded: flip a byte of its header's checksum, not of the padding.
        "garble-record" => {
            let mut b = bytes;
            b[40] ^= 0x01;
            b
        }
        other => panic!("unknown damage {other}"),
    };
    std::fs::write(path, damaged).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A crash leaves the accepted packets in the replay journal only (no snapshot is written
/// at a kill -9). A journal then truncated, garbled or emptied is reported, and the packet
/// it recorded stays refused after the restart.
#[test]
fn damaged_replay_journal_after_a_crash_fails_closed() {
    let (topo, key, conf) = setup();
    let journal = state_dir(&topo).join("replay.journal");

    for how in ["truncate", "garble", "empty"] {
        let (mut d, p) = start_and_open(&topo, &conf, &key);
        d.crash();
        let len = std::fs::metadata(&journal).map_or(0, |m| m.len());
        assert_eq!(
            len,
            8 + 48,
            "{how}: one record in the journal after the crash"
        );
        damage(&journal, how);

        let mut d = Daemon::start_args(&topo.server, &conf, &[]);
        d.expect_log("replay.journal", Duration::from_secs(3));
        d.expect_log(
            "refusing every SPA packet stamped before now",
            Duration::from_secs(3),
        );
        send_udp(&topo.client, None, spa(), &p).expect("send");
        d.expect_log("stamped before the daemon started", Duration::from_secs(3));
        assert!(
            !d.log().contains("OPEN SESAME"),
            "{how}: the recorded packet was accepted again:\n{}",
            d.log()
        );
        // And counted, like every refusal.
        knock_e2e::wait_for_status_line(
            &state_dir(&topo),
            &["stamped", "before", "start", "1"],
            Duration::from_secs(10),
        );
        // The loss is remembered: a crash and a restart right after (the cache on disk is
        // now the fresh, empty one) still refuse the packet.
        d.crash();
        let mut d = Daemon::start_args(&topo.server, &conf, &[]);
        send_udp(&topo.client, None, spa(), &p).expect("send");
        d.expect_log("stamped before the daemon started", Duration::from_secs(3));
        assert!(
            !d.log().contains("OPEN SESAME"),
            "{how}: accepted again after a second restart:\n{}",
            d.log()
        );
        assert!(d.stop(), "clean exit");
        assert_eq!(
            rules_for_client(&topo),
            0,
            "{how}: the re-armed grant was closed"
        );
    }
}

/// Truncated, garbled or emptied state files: reported, moved aside, and nothing opens
/// because of them: an earlier packet stays refused. A damaged grants snapshot is made up
/// for by the journal; a damaged journal line loses its record, and the log says the rules
/// it listed must be checked by hand.
#[test]
fn damaged_state_files_are_reported_and_fail_closed() {
    let (topo, key, conf) = setup();

    for how in ["truncate", "garble", "empty"] {
        let (mut d, p) = start_and_open(&topo, &conf, &key);
        assert!(d.stop());
        assert_eq!(rules_for_client(&topo), 0);

        let replay = state_dir(&topo).join("replay.bin");
        damage(&replay, how);
        let mut d = Daemon::start_args(&topo.server, &conf, &[]);
        d.expect_log("replay.bin: corrupt", Duration::from_secs(3));
        send_udp(&topo.client, None, spa(), &p).expect("send");
        d.expect_log("stamped before the daemon started", Duration::from_secs(3));
        assert_eq!(
            tcp_connect(&topo.client, ssh(), PROBE),
            ConnectResult::Refused,
            "{how}: the old packet opened the port with the replay cache lost"
        );
        let moved = std::fs::read_dir(state_dir(&topo))
            .expect("state dir")
            .filter_map(Result::ok)
            .any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("replay.bin.corrupt-")
            });
        assert!(moved, "{how}: the damaged file was not kept for inspection");
        assert!(d.stop());
    }

    // A damaged grants snapshot while a grant is open: the newest slot garbled, the daemon
    // falls back to the other slot and says so; the grant, recorded in the journal, is still
    // known, and its rule is closed at the clean stop. Nothing new is opened because of it.
    let mut d = open_for_a_minute(&topo, &conf, &key);
    d.crash();
    let (newest, _) = grants_slots(&topo)
        .into_iter()
        .max_by_key(|(_, seq)| *seq)
        .expect("a grants slot");
    damage(&newest, "garble-record");
    let mut d = Daemon::start_args(&topo.server, &conf, &[]);
    d.expect_log(": corrupt", Duration::from_secs(3));
    d.expect_log("may need checking by hand", Duration::from_secs(3));
    d.expect_log(
        "1 grant(s) recorded before the restart",
        Duration::from_secs(3),
    );
    assert!(d.stop());
    assert_eq!(rules_for_client(&topo), 0, "the journal's grant was closed");

    // The journal's line of an open grant garbled: the grant's record is lost, so its rule
    // is not closed by the daemon, and the log says to check by hand.
    let mut d = open_for_a_minute(&topo, &conf, &key);
    d.crash();
    let journal = state_dir(&topo).join("grants.journal");
    let mut bytes = std::fs::read(&journal).expect("journal");
    // The start folded the journal into a snapshot: the open is the first line now.
    assert!(bytes.starts_with(b"g1 "), "a journal line first");
    bytes[20] ^= 0x01;
    std::fs::write(&journal, &bytes).expect("write");
    let mut d = Daemon::start_args(&topo.server, &conf, &[]);
    d.expect_log("damaged line(s) ignored", Duration::from_secs(3));
    d.expect_log("may need checking by hand", Duration::from_secs(3));
    assert!(rules_for_client(&topo) <= 1, "a damaged file added rules");
    d.crash();

    // Both slots damaged: nothing is known about the open rules but what the journal says;
    // reported, nothing opened.
    let slots = grants_slots(&topo);
    assert!(!slots.is_empty());
    for (path, _) in &slots {
        damage(path, "garble-record");
    }
    let mut d = Daemon::start_args(&topo.server, &conf, &[]);
    d.expect_log(": corrupt", Duration::from_secs(3));
    d.expect_log("must be checked by hand", Duration::from_secs(3));
    assert!(rules_for_client(&topo) <= 1, "a damaged file added rules");
    assert!(d.stop());
}

/// The grants slots in the state directory (`grants.0`, `grants.1`), with the save number
/// their header gives (0 when unreadable).
fn grants_slots(topo: &Topology) -> Vec<(PathBuf, u64)> {
    ["grants.0", "grants.1"]
        .iter()
        .map(|n| state_dir(topo).join(n))
        .filter_map(|p| {
            let text = std::fs::read(&p).ok()?;
            let seq = String::from_utf8_lossy(&text)
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("knock-spa-grants v2 "))
                .and_then(|r| r.split_whitespace().next()?.parse().ok())
                .unwrap_or(0);
            Some((p, seq))
        })
        .collect()
}
