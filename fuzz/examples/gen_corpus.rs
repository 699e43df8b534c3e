//! Writes the hand-made seeds of `fuzz/corpus/`: the protocol vector packets (spa_verify),
//! version-2 packets sealed with the keys of the version-2 vectors (spa_v2),
//! frames of every supported link type (frame), keyfile and inline-key texts (keyfile), and
//! configuration texts (config: the examples of docs/CONFIG.md, knockd's shipped
//! `/etc/knockd.conf` when present, keys and one-time sequence files), and replay cache
//! snapshots and journals (replay_state).
//!
//! Run from `fuzz/`: `cargo +nightly run --example gen_corpus`. The seeds of `spa_structured`
//! and `sequence` (structured inputs) and the `min-*` files of the other targets come from
//! minimised fuzzing runs instead (docs/FUZZING.md).

use std::fs;
use std::path::Path;

use std::net::{IpAddr, Ipv4Addr};

use knock_fuzz::{unhex, vector2_ephemeral, V2Fixture, MACED, NOW, PRECHECKED2};
use knock_shared::wire::{Action, Admit, PortList, Request};
use knock_shared::wire2::seal2;

/// The three packets of docs/PROTOCOL.md §10 (version ‖ key id ‖ nonce ‖ ct ‖ tag ‖ hmac).
const VECTORS: [&str; 3] = [
    "01 e5097e9248bac751 404142434445464748494a4b4c4d4e4f5051525354555657
     93cb7a87ff9d7727b9c9c7a17c68618f99e32fbf561685591c4aba29a45627943f5603ed1cc46aa0de55e712fcf789eca9fe3a68a5eb0fad9ffc9035801e2d158c8d75ba8c7370daaabe4afd906e45e6df8cdc8d368216340e361d4685cd68485f18ca05ee83c7b72a5e75f4ef773a9216a4b9b26b15a00d6c43dfb3b313af44
     c4a38f40bbd4668e2a8d75093c789d88 6d873c905a32dba1eae9fe3cc56a1d7382689d5ab374af14bb16b4d91798e8f5",
    "01 e5097e9248bac751 808182838485868788898a8b8c8d8e8f9091929394959697
     e807375e86eb3ce7dc1a840e3bb1f20efab62a63b2ac55c04f6400cfa9f723ebe566c87d90abeffe84db0e8a2f4c7292b6e04e64d59f1e64dac0056650e02ed44aa94e231a3537f538f3563000b9fec5e9210be2c8ae23d11f8e9a45127f562d2722f9c8daf1eee8fe1fc4b2e12b2dd71049b298bcff5f7e2efeaacd4ece365a
     9f9e8b64f39f1c88a2b8a8ba1aa28376 a2d89551c57a14b5acc815883752e925c010d01d2bb9fd5b6cd8a0130f5f7370",
    "01 e5097e9248bac751 c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7
     28ae2e6bbfb98091bff05279091666358b536c70021e069d8853aac750cf2faec49c25ab828843f781edcddd2a3a09d4864214a1fc4df58bb298e58124ac46c5aa61d6665a6b597f6b0b608613bbd3fca77ba7ba2551fe6aadbfa43186306e3dce1c9c3ef2243f504da23feb3d47fd31636c5b8a03815e13a0d0930c36ae7972
     b96cb5e978f38555c2109cef84dd9cba 6819a804738716b9daa0c9d7954bcb60bde0d0d8e2499a6b131dffb604842711",
];

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).expect("create corpus dir");
    fs::write(dir.join(name), bytes).expect("write seed");
}

fn spa_verify(root: &Path) {
    let dir = root.join("spa_verify");
    for (i, v) in VECTORS.iter().enumerate() {
        let p = unhex(v);
        assert_eq!(p.len(), 209);
        write(&dir, &format!("vector{}", i + 1), &p);
        if i == 0 {
            // HMAC zeroed: the target recomputes it and reaches the AEAD and body steps.
            let mut q = p.clone();
            q[MACED..].fill(0);
            write(&dir, "vector1-hmac-zeroed", &q);
            write(&dir, "vector1-truncated", &p[..208]);
            let mut v2 = p.clone();
            v2[0] = 2;
            write(&dir, "vector1-version2", &v2);
        }
    }
}

/// Version-2 packets that `spa_v2`'s verifier accepts at its time (one for each ephemeral
/// secret of the vectors, open and close), and variants: pre-check zeroed (the target
/// recomputes it and reaches the signature), signature zeroed, truncated, version byte 0x01.
fn spa_v2(root: &Path) {
    let dir = root.join("spa_v2");
    let f = V2Fixture::new();
    let source = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
    for k in 1..=3u8 {
        let req = Request {
            timestamp: NOW - 1 + u64::from(k),
            action: if k == 3 { Action::Close } else { Action::Open },
            admit: Admit::Addr(source),
            duration: 30 * u32::from(k),
            server: f.server_id,
            ports: PortList::new(&f.policy[..usize::from(k)]).expect("1 to 3 ports"),
        };
        let p = seal2(
            &f.client,
            &f.server,
            &req,
            vector2_ephemeral(k),
            &[0xa5; 33],
        )
        .expect("the server key is not a low-order point");
        write(&dir, &format!("sealed{k}"), &p);
        if k == 1 {
            let mut q = p;
            q[PRECHECKED2..].fill(0);
            write(&dir, "sealed1-precheck-zeroed", &q);
            let mut q = p;
            q[185..PRECHECKED2].fill(0);
            write(&dir, "sealed1-signature-zeroed", &q);
            write(&dir, "sealed1-truncated", &p[..264]);
            let mut q = p;
            q[0] = 1;
            write(&dir, "sealed1-version1", &q);
        }
    }
}

// ---- frames ----

fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1]); // sequence number
    t.extend_from_slice(&[0, 0, 0, 0]); // acknowledgment number
    t.extend_from_slice(&[5 << 4, flags]); // data offset 5 words, flags
    t.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]); // window, checksum, urgent pointer
    t
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    let len = u16::try_from(8 + payload.len()).expect("small");
    u.extend_from_slice(&len.to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

fn ipv4(proto: u8, l4: &[u8]) -> Vec<u8> {
    let total = u16::try_from(20 + l4.len()).expect("small");
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, 64, proto, 0, 0]);
    p.extend_from_slice(&[192, 0, 2, 7, 198, 51, 100, 1]);
    p.extend_from_slice(l4);
    p
}

fn ipv6(next: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&u16::try_from(payload.len()).expect("small").to_be_bytes());
    p.extend_from_slice(&[next, 64]);
    p.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
    p.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    p.extend_from_slice(payload);
    p
}

const MACS: [u8; 12] = [0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];

fn eth(tags: &[u16], ethertype: u16, ip: &[u8]) -> Vec<u8> {
    let mut f = MACS.to_vec();
    for tpid in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&[0x00, 0x0a]);
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(ip);
    f
}

fn sll(pkttype: u16, ethertype: u16, ip: &[u8]) -> Vec<u8> {
    let mut f = pkttype.to_be_bytes().to_vec();
    f.extend_from_slice(&[0, 1, 0, 6, 0x02, 0, 0, 0, 0, 2, 0, 0]);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(ip);
    f
}

fn sll2(pkttype: u8, ethertype: u16, ip: &[u8]) -> Vec<u8> {
    let mut f = ethertype.to_be_bytes().to_vec();
    f.extend_from_slice(&[
        0, 0, 0, 0, 0, 3, 0, 1, pkttype, 6, 0x02, 0, 0, 0, 0, 2, 0, 0,
    ]);
    f.extend_from_slice(ip);
    f
}

/// The frame target's input: mode byte, then the frame.
fn framed(mode: u8, frame: &[u8]) -> Vec<u8> {
    let mut v = vec![mode];
    v.extend_from_slice(frame);
    v
}

fn frames(root: &Path) {
    let dir = root.join("frame");
    let spa = unhex(VECTORS[0]);
    let syn4 = ipv4(6, &tcp(40000, 7000, 0x02));
    let spa4 = ipv4(17, &udp(40001, 62201, &spa));
    let udp6 = ipv6(17, &udp(40002, 9000, b"knock"));
    let syn6 = ipv6(6, &tcp(40003, 8000, 0x02));
    // Hop-by-hop (8 bytes) then a routing header (8 bytes), then TCP.
    let mut ext = vec![43, 0, 1, 4, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0];
    ext.extend_from_slice(&tcp(40004, 7000, 0x02));
    let ext6 = ipv6(0, &ext);
    let mut frag6_payload = vec![17, 0, 0, 1, 0, 0, 0, 1];
    frag6_payload.extend_from_slice(&udp(1, 2, b"x"));
    let frag6 = ipv6(44, &frag6_payload);

    // Modes 0..=5: DLT_NULL, EN10MB, RAW, LINKTYPE_RAW, SLL, SLL2.
    let mut null4 = 2u32.to_le_bytes().to_vec();
    null4.extend_from_slice(&syn4);
    write(&dir, "null-le-ipv4-syn", &framed(0, &null4));
    let mut null6 = 30u32.to_be_bytes().to_vec();
    null6.extend_from_slice(&udp6);
    write(&dir, "null-be-ipv6-udp", &framed(0, &null6));
    write(&dir, "eth-ipv4-syn", &framed(1, &eth(&[], 0x0800, &syn4)));
    let mut padded = eth(&[], 0x0800, &syn4);
    padded.resize(60, 0);
    write(&dir, "eth-ipv4-syn-padded", &framed(1, &padded));
    write(&dir, "eth-ipv4-spa", &framed(1, &eth(&[], 0x0800, &spa4)));
    write(
        &dir,
        "eth-qinq-ipv6-syn",
        &framed(1, &eth(&[0x88a8, 0x8100], 0x86dd, &syn6)),
    );
    write(
        &dir,
        "eth-ipv6-ext-tcp",
        &framed(1, &eth(&[], 0x86dd, &ext6)),
    );
    write(
        &dir,
        "eth-ipv6-fragment",
        &framed(1, &eth(&[], 0x86dd, &frag6)),
    );
    write(&dir, "raw-ipv4-spa", &framed(2, &spa4));
    write(&dir, "raw101-ipv6-udp", &framed(3, &udp6));
    write(&dir, "sll-in-ipv4-syn", &framed(4, &sll(0, 0x0800, &syn4)));
    write(&dir, "sll-out-ipv4-syn", &framed(4, &sll(4, 0x0800, &syn4)));
    write(
        &dir,
        "sll2-in-ipv6-udp",
        &framed(5, &sll2(0, 0x86dd, &udp6)),
    );
    // Mode 6: a link type number, then the frame.
    let mut other = 1i32.to_be_bytes().to_vec();
    other.extend_from_slice(&eth(&[], 0x0800, &syn4));
    write(&dir, "linktype-1-eth", &framed(6, &other));
    // Mode 7: a VLAN tag, then one IP packet wrapped in every link header.
    for (name, ip) in [("wrap-ipv4-spa", &spa4), ("wrap-ipv6-ext", &ext6)] {
        let mut v = vec![7, 0x00, 0x0a];
        v.extend_from_slice(ip);
        write(&dir, name, &v);
    }
}

// ---- text ----

const KEYFILE: &str = "# knock-spa key (key id e5097e9248bac751): keep this file secret, mode 0600
name = alice
secret = AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=
";

fn keyfiles(root: &Path) {
    let dir = root.join("keyfile");
    write(&dir, "keyfile", KEYFILE.as_bytes());
    write(
        &dir,
        "keyfile-crlf",
        KEYFILE.replace('\n', "\r\n").as_bytes(),
    );
    write(
        &dir,
        "keyfile-upper",
        b"\xef\xbb\xbf  NAME=bob@example.org\n\tSecret =BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=   \n",
    );
    write(
        &dir,
        "inline",
        b"alice:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    );
    write(
        &dir,
        "base64",
        b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    );
    write(
        &dir,
        "keyfile-bad",
        b"name = a b\nsecret = AAAA\ncolour = red\nname = x\n",
    );
}

const KEYS_FILE: &str = "# ops keys, one NAME:BASE64 per line
alice:BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=
bob:CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=

carol : CwsLCwsLCwsLCwsLCwsLCwsLCwsLCwsLCwsLCwsLCws=
";

const ONE_TIME: &str = "# one-time sequences for [opencloseSMTP]
 1111,2222,3333
#4444:udp,5555,6666
 7777:udp, 8888/tcp,9999\r
";

const SPA_ONLY: &str = "[options]
    ServerName = gw.example.org, gw
    SpaPort = 62201
    SpaWindow = 120
    Capture = udp
    ReplayCacheSize = 4096
    StateDir = /var/lib/knock-spa
    KeepRulesOnExit

[spa]
    Keys = alice:BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=, bob:CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=
    Allow_Ports = 22/tcp, 53:udp, 443
    Allow_NAT = yes
    Cmd_Timeout = 30
    Max_Timeout = 3600
    Start_Command = /sbin/iptables -I INPUT -s %IP% -p %PROTO% --dport %PORT% -j ACCEPT
    Stop_Command = /bin/sh -c 'iptables -D INPUT -s \"$1\" -j ACCEPT && logger closed' sh %IP%

[otp]
    One_Time_Sequences = /etc/knockd/otp
    Seq_Timeout = 10
    TCPFlags = syn,!ack
    Target = 2001:db8::1
    Command = /usr/bin/logger %IP%
    Command_6 =
";

fn configs(root: &Path, repo: &Path) {
    let dir = root.join("config");
    let doc = fs::read_to_string(repo.join("docs/CONFIG.md")).expect("docs/CONFIG.md");
    let mut n = 0;
    let mut block: Option<String> = None;
    for line in doc.lines() {
        match (&mut block, line.trim_start()) {
            (None, "```ini") => block = Some(String::new()),
            (Some(b), "```") => {
                n += 1;
                write(&dir, &format!("config-md-{n}.conf"), b.as_bytes());
                block = None;
            }
            (Some(b), _) => {
                b.push_str(line);
                b.push('\n');
            }
            _ => {}
        }
    }
    match fs::read("/etc/knockd.conf") {
        Ok(text) => write(&dir, "debian-knockd.conf", &text),
        Err(e) => eprintln!("/etc/knockd.conf: {e} (seed skipped)"),
    }
    write(&dir, "spa-and-otp.conf", SPA_ONLY.as_bytes());
    write(&dir, "keys-file", KEYS_FILE.as_bytes());
    write(&dir, "one-time-sequences", ONE_TIME.as_bytes());
    write(
        &dir,
        "errors.conf",
        b"Sequence = 1\n[options]\n  Sequence = 1,,2\n[d]\n  Sequence = 0,70a0\n  Bogus\n  Command = x %HOST% 'y\n[d]\n",
    );
}

/// Replay cache snapshots and journals (replay_state).
fn replay_state(root: &Path) {
    use knock_shared::replay::{journal_record, ReplayCache, JOURNAL_MAGIC};
    let dir = root.join("replay_state");
    let mut cache = ReplayCache::new(64);
    write(&dir, "snapshot-empty", &cache.encode());
    for i in 0..3u8 {
        cache
            .insert(1_700_000_000, [i; 32], 1_700_000_060 + u64::from(i))
            .expect("insert");
    }
    write(&dir, "snapshot-3", &cache.encode());
    write(&dir, "journal-empty", JOURNAL_MAGIC);
    let mut journal = JOURNAL_MAGIC.to_vec();
    for (i, expiry) in [1_700_000_060u64, 1_699_999_000, 1_700_000_090]
        .into_iter()
        .enumerate()
    {
        journal.extend_from_slice(&journal_record(&[i as u8 + 7; 32], expiry));
    }
    write(&dir, "journal-3", &journal);
    write(&dir, "journal-torn", &journal[..journal.len() - 20]);
}

fn main() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = fuzz.join("corpus");
    replay_state(&root);
    spa_verify(&root);
    spa_v2(&root);
    frames(&root);
    keyfiles(&root);
    configs(&root, fuzz.parent().expect("repository root"));
    println!("seeds written under {}", root.display());
}
