//! Known-answer tests: the vectors in docs/PROTOCOL.md, checked byte for byte.
//!
//! A second implementation that reproduces these bytes from the inputs, and whose verifier
//! accepts them, agrees with ours on key derivation, layout, encryption and authentication.

use knock_keys::{MasterKey, NamedKey};
use knock_shared::replay::ReplayCache;
use knock_shared::types::PortSpec;
use knock_shared::verify::{KeyPolicy, Verifier};
use knock_shared::wire::{
    seal, Action, Admit, KeyState, PortList, Request, ServerId, NONCE_LEN, PADDING_LEN,
};

struct Vector {
    name: &'static str,
    time: u64,
    action: Action,
    admit: &'static str,
    duration: u32,
    server: &'static str,
    ports: &'static [&'static str],
    source: &'static str,
    /// Expected packet, hex, one field per string: version, key id, nonce, ciphertext, tag, hmac.
    hex: [&'static str; 6],
}

fn master() -> MasterKey {
    let mut m = [0u8; 32];
    for (i, b) in m.iter_mut().enumerate() {
        *b = i as u8;
    }
    MasterKey::from_bytes(m)
}

/// Vector k (1-based) uses nonce bytes `(0x40 * k + j) mod 256`, j = 0..24.
fn nonce(k: usize) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    for (j, b) in n.iter_mut().enumerate() {
        *b = ((0x40 * k + j) & 0xff) as u8;
    }
    n
}

fn padding() -> [u8; PADDING_LEN] {
    [0xa5; PADDING_LEN]
}

const VECTORS: &[Vector] = &[
    Vector {
        name: "1: open 22/tcp for 192.0.2.10",
        time: 1_767_225_600,
        action: Action::Open,
        admit: "192.0.2.10",
        duration: 0,
        server: "gateway.example",
        ports: &["22/tcp"],
        source: "192.0.2.10",
        hex: [
            "01",
            "e5097e9248bac751",
            "404142434445464748494a4b4c4d4e4f5051525354555657",
            "93cb7a87ff9d7727b9c9c7a17c68618f99e32fbf561685591c4aba29a45627943f5603ed1cc46aa0de55e712fcf789eca9fe3a68a5eb0fad9ffc9035801e2d158c8d75ba8c7370daaabe4afd906e45e6df8cdc8d368216340e361d4685cd68485f18ca05ee83c7b72a5e75f4ef773a9216a4b9b26b15a00d6c43dfb3b313af44",
            "c4a38f40bbd4668e2a8d75093c789d88",
            "6d873c905a32dba1eae9fe3cc56a1d7382689d5ab374af14bb16b4d91798e8f5",
        ],
    },
    Vector {
        name: "2: close 22/tcp and 53/udp for 2001:db8::10, 3600 s",
        time: 1_767_225_601,
        action: Action::Close,
        admit: "2001:db8::10",
        duration: 3600,
        server: "gateway.example",
        ports: &["22/tcp", "53/udp"],
        source: "2001:db8::10",
        hex: [
            "01",
            "e5097e9248bac751",
            "808182838485868788898a8b8c8d8e8f9091929394959697",
            "e807375e86eb3ce7dc1a840e3bb1f20efab62a63b2ac55c04f6400cfa9f723ebe566c87d90abeffe84db0e8a2f4c7292b6e04e64d59f1e64dac0056650e02ed44aa94e231a3537f538f3563000b9fec5e9210be2c8ae23d11f8e9a45127f562d2722f9c8daf1eee8fe1fc4b2e12b2dd71049b298bcff5f7e2efeaacd4ece365a",
            "9f9e8b64f39f1c88a2b8a8ba1aa28376",
            "a2d89551c57a14b5acc815883752e925c010d01d2bb9fd5b6cd8a0130f5f7370",
        ],
    },
    Vector {
        name: "3: open 2222/tcp for the packet's source, 120 s",
        time: 1_767_225_602,
        action: Action::Open,
        admit: "source",
        duration: 120,
        server: "gateway.example",
        ports: &["2222/tcp"],
        source: "198.51.100.20",
        hex: [
            "01",
            "e5097e9248bac751",
            "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7",
            "28ae2e6bbfb98091bff05279091666358b536c70021e069d8853aac750cf2faec49c25ab828843f781edcddd2a3a09d4864214a1fc4df58bb298e58124ac46c5aa61d6665a6b597f6b0b608613bbd3fca77ba7ba2551fe6aadbfa43186306e3dce1c9c3ef2243f504da23feb3d47fd31636c5b8a03815e13a0d0930c36ae7972",
            "b96cb5e978f38555c2109cef84dd9cba",
            "6819a804738716b9daa0c9d7954bcb60bde0d0d8e2499a6b131dffb604842711",
        ],
    },
];

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn build(k: usize, v: &Vector) -> ([u8; knock_shared::wire::PACKET_LEN], Request) {
    let ports: Vec<PortSpec> = v.ports.iter().map(|p| p.parse().expect("port")).collect();
    let admit = match v.admit {
        "source" => Admit::Source,
        a => Admit::Addr(a.parse().expect("ip")),
    };
    let request = Request {
        timestamp: v.time,
        action: v.action,
        admit,
        duration: v.duration,
        server: ServerId::from_name(v.server),
        ports: PortList::new(&ports).expect("ports"),
    };
    let key = KeyState::new(&master().derive());
    (seal(&key, &request, &nonce(k), &padding()), request)
}

#[test]
fn vectors_match_byte_for_byte_and_verify() {
    for (i, v) in VECTORS.iter().enumerate() {
        let (packet, request) = build(i + 1, v);
        let fields = [
            &packet[0..1],
            &packet[1..9],
            &packet[9..33],
            &packet[33..161],
            &packet[161..177],
            &packet[177..209],
        ];
        let got: Vec<String> = fields.iter().map(|f| hex(f)).collect();
        println!("{}:\n{:#?}", v.name, got);
        assert_eq!(got, v.hex.map(str::to_owned), "{}", v.name);

        let mut verifier = Verifier::new(vec![ServerId::from_name(v.server)], 60);
        let key = NamedKey::new("vector", master()).expect("name");
        let ports: Vec<PortSpec> = v.ports.iter().map(|p| p.parse().expect("port")).collect();
        verifier
            .add_key(
                &key,
                KeyPolicy {
                    ports,
                    // Source mode needs Allow_NAT; the other vectors name their source.
                    allow_nat: v.admit == "source",
                },
                0,
            )
            .expect("add");
        let mut cache = ReplayCache::new(8);
        let ok = verifier
            .verify(v.time, v.source.parse().expect("ip"), &packet, &mut cache)
            .expect("vector verifies");
        assert_eq!(ok.request(), &request);
    }
}

/// Version 2 (public-key mode), docs/PROTOCOL.md part II: the same three requests, sealed to
/// the server key `20 21 … 3f` with the signing seed `00 01 … 1f`; vector k's ephemeral secret
/// is bytes `(0x40 * k + j) mod 256`, j = 0..32. Fields: version, key id, ephemeral public key,
/// ciphertext, tag, signature, pre-check.
const VECTORS_V2: [[&str; 7]; 3] = V2_HEX;

fn seq32(start: usize) -> [u8; 32] {
    let mut b = [0u8; 32];
    for (j, x) in b.iter_mut().enumerate() {
        *x = ((start + j) & 0xff) as u8;
    }
    b
}

#[test]
fn v2_vectors_match_byte_for_byte_and_verify() {
    use knock_keys::public::{ServerSecret, SigningKey};
    use knock_shared::wire2::seal2;
    let client = SigningKey::from_seed("vector", seq32(0)).expect("key");
    let server = ServerSecret::from_bytes(seq32(0x20));
    for (i, v) in VECTORS.iter().enumerate() {
        let (_, request) = build(i + 1, v);
        let packet = seal2(
            &client,
            &server.public(),
            &request,
            seq32(0x40 * (i + 1)),
            &padding(),
        )
        .expect("seal");
        let cuts = [0, 1, 9, 41, 169, 185, 249, 265];
        let got: Vec<String> = cuts.windows(2).map(|w| hex(&packet[w[0]..w[1]])).collect();
        println!("v2 {}:\n{:#?}", v.name, got);
        assert_eq!(got, VECTORS_V2[i].map(str::to_owned), "v2 {}", v.name);

        let mut verifier = Verifier::new(vec![ServerId::from_name(v.server)], 60);
        verifier.set_server_key(server.clone());
        let ports: Vec<PortSpec> = v.ports.iter().map(|p| p.parse().expect("port")).collect();
        verifier
            .add_public_key(
                client.public(),
                KeyPolicy {
                    ports,
                    allow_nat: v.admit == "source",
                },
                0,
            )
            .expect("add");
        let mut cache = ReplayCache::new(8);
        let ok = verifier
            .verify(v.time, v.source.parse().expect("ip"), &packet, &mut cache)
            .expect("v2 vector verifies");
        assert_eq!(ok.request(), &request);
    }
}

const V2_HEX: [[&str; 7]; 3] = [
    [
        "02",
        "84a3cbdc3f780c88",
        "79a631eede1bf9c98f12032cdeadd0e7a079398fc786b88cc846ec89af85a51a",
        "c9626e61ab73c11bba270f290c3efb8e2b7b42b42108ad5aac320d15c07bfd5e6b34a4fdc2d1c68e29389960c3a8355dcaa051008f309e292e60a49177dfaecfd8739e570da16513ee91cbe3ecb6aa5d026bda84f81ccaeff6e3d9a1e4ee19726e18fc0cb172ccd7bf325689c197d5b6c7060fd453ce36ae5bae5809a7ee1997",
        "4fced36bee9b3ba137e3b0f4e50a5c3a",
        "1d7a72afeb6bdbe1f7350e23ee3f532a8f28219c4f92d59c4ab2878ed78d150e08120affcbbc28050fca7fa96ebd37ea1633899fe172ef473a92b38cdf5ad000",
        "f7a50cd4674d2921e67b38f66f263f9a",
    ],
    [
        "02",
        "84a3cbdc3f780c88",
        "493e82fc74464a59268817623d2053c5eb8e2cc4a988b4fee179ec6b010d531d",
        "76948bb496cc0d3d92523dd3b9f5878149a8ff3fa4254395dab42bb13d2a71f01903025248738bd272008af2743a767d6cc382480c65851fdc169d3a1369b23e63c20bfba4135f40dfb85daa3ef616a6f78e5e2199c4912a34a784a24f232c9877cfe44d0312414d0e432892f15c1591c4f92224f729819dd9b7e9e6f450da88",
        "50c0f9e4572653d531735b9245b9c763",
        "b3d64bd980a3427916dee6e0ad6ceabf9703ce410445732296cd5cfb5accb4d7ebbe1f1ad0f9e76663b5acc4e86091163b6e8d69a4fc4ed1c9e3b2b462cfc100",
        "78083e30fb40306722a364f9e628686f",
    ],
    [
        "02",
        "84a3cbdc3f780c88",
        "dc2cca31e8e43bbd91dff7e475cca3347eb478107d5bd765aba4ae4a30c35d44",
        "fda2eb9be3838252694f95c4ace6f8a8e2bd568859902cab68e9be14e76c93cf2ceda59972332dce50d89461d4c72f4ec7d6cd2b35147e54443d7e8397ba5f4bb28a63987e4182434ca406508a1cd4c1b3c6462ea129f77ca3a9884dd524ec6ebb799024a9b8b993b3d7a7ae73f78715526d7411781d94d44e6790aa6ec3d266",
        "c86e85441f14fce5c87e474420eb794f",
        "850fefa1cb689b0cc65bac79ad25c64939aa714d5f2bc8ce80d861e47b2966e4828a4f4c08559fcf13faede19baf98fcba9767bd7db736b35ce374f872dc1500",
        "d783d80ed9379ea7e7cc94f81d5b9ffa",
    ],
];
