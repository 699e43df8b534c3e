#!/usr/bin/env python3
"""An independent implementation of the knock-spa packets, versions 1 and 2, written from
docs/PROTOCOL.md.

It shares no code with the Rust implementation: HKDF and HMAC come from Python's standard
library, ChaCha20-Poly1305, Ed25519 and X25519 from the `cryptography` package (only APIs that
Debian 12's python3-cryptography 38 has), and HChaCha20 (the XChaCha20 subkey step) is written
out below from draft-irtf-cfrg-xchacha-03 section 2.2. It prints the test vectors of
docs/PROTOCOL.md field by field; `scripts/test` compares them with the Rust known-answer
test's expectations.

Output, one value a line:
  kdf NAME HEX                 v1 derived keys (PROTOCOL.md section 2)
  vector N F1 .. F6            v1 packet N: version, key id, nonce, ciphertext, tag, hmac
  kdf2 NAME HEX                v2 keys (sections 13, 14): A, P, display id, X, kid of vector
                               1's epoch
  vector2 N F1 .. F7           v2 packet N: version, key id, ephemeral public key, ciphertext,
                               tag, signature, pre-check
With -v, the v2 intermediate values (shared secret, body key and nonce, replay digest) go to
standard error as `debug2 N ...` lines. Every v2 vector is also opened the server's way
(key id against three epochs, pre-check, signature verified with A, X25519 with x, AEAD
decrypted and compared with the body), and its signature with S + L must be refused, so the
script checks itself.
"""
import hashlib
import hmac
import ipaddress
import struct
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def hkdf(salt, ikm, info, n):
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out, t, i = b"", b"", 1
    while len(out) < n:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        out += t
        i += 1
    return out[:n]


def rotl(v, c):
    return ((v << c) & 0xFFFFFFFF) | (v >> (32 - c))


def quarter(s, a, b, c, d):
    s[a] = (s[a] + s[b]) & 0xFFFFFFFF; s[d] = rotl(s[d] ^ s[a], 16)
    s[c] = (s[c] + s[d]) & 0xFFFFFFFF; s[b] = rotl(s[b] ^ s[c], 12)
    s[a] = (s[a] + s[b]) & 0xFFFFFFFF; s[d] = rotl(s[d] ^ s[a], 8)
    s[c] = (s[c] + s[d]) & 0xFFFFFFFF; s[b] = rotl(s[b] ^ s[c], 7)


def hchacha20(key, nonce16):
    s = list(struct.unpack("<4I", b"expand 32-byte k")) + list(struct.unpack("<8I", key)) + list(
        struct.unpack("<4I", nonce16))
    for _ in range(10):
        quarter(s, 0, 4, 8, 12); quarter(s, 1, 5, 9, 13); quarter(s, 2, 6, 10, 14); quarter(s, 3, 7, 11, 15)
        quarter(s, 0, 5, 10, 15); quarter(s, 1, 6, 11, 12); quarter(s, 2, 7, 8, 13); quarter(s, 3, 4, 9, 14)
    return struct.pack("<8I", *(s[0:4] + s[12:16]))


def xchacha_seal(key, nonce24, plaintext, aad):
    sub = hchacha20(key, nonce24[:16])
    return ChaCha20Poly1305(sub).encrypt(b"\0\0\0\0" + nonce24[16:], plaintext, aad)


def xchacha_open(key, nonce24, sealed, aad):
    sub = hchacha20(key, nonce24[:16])
    return ChaCha20Poly1305(sub).decrypt(b"\0\0\0\0" + nonce24[16:], sealed, aad)


SALT = b"knock-spa v1 hkdf salt"


def derive(master):
    return (hkdf(SALT, master, b"knock-spa v1 encryption key", 32),
            hkdf(SALT, master, b"knock-spa v1 authentication key", 32),
            hkdf(SALT, master, b"knock-spa v1 key id", 8))


def server_id(name):
    return hashlib.sha256(b"knock-spa v1 server id\0" + name.strip().lower().encode()).digest()[:16]


def body(ts, action, admit, duration, server, ports, padding):
    b = struct.pack(">Q", ts) + bytes([{"open": 1, "close": 2}[action]])
    if admit == "source":
        b += b"\0" + bytes(16)
    else:
        ip = ipaddress.ip_address(admit)
        b += bytes([4 if ip.version == 4 else 6]) + ip.packed.ljust(16, b"\0")
    b += struct.pack(">I", duration) + server_id(server) + bytes([len(ports)])
    slots = b""
    for p in ports:
        port, proto = p.split("/")
        slots += bytes([{"tcp": 6, "udp": 17}[proto]]) + struct.pack(">H", int(port))
    b += slots.ljust(48, b"\0") + padding
    assert len(b) == 128
    return b


def packet(master, nonce, padding, **req):
    enc, mac, kid = derive(master)
    header = b"\x01" + kid + nonce
    sealed = xchacha_seal(enc, nonce, body(padding=padding, **req), header)
    maced = header + sealed
    return maced + hmac.new(mac, maced, hashlib.sha256).digest()


# Version 2 (public-key mode), PROTOCOL.md sections 12-18.
SALT2 = b"knock-spa v2 hkdf salt"
V2_LEN = 265
RAW = (Encoding.Raw, PublicFormat.Raw)
ED25519_L = 2**252 + 27742317777372353535851937790883648493


def hmac256(key, msg):
    return hmac.new(key, msg, hashlib.sha256).digest()


def expand1(prk, info, n):
    """One-block HKDF-Expand: the first n (<= 32) bytes of HMAC(PRK, info || 0x01)."""
    assert n <= 32
    return hmac256(prk, info + b"\x01")[:n]


def client_keys(seed):
    """(A, P, display id) of an Ed25519 seed."""
    a = ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(*RAW)
    p = expand1(hmac256(SALT2, seed), b"knock-spa v2 pre-check key", 32)
    display = hashlib.sha256(b"knock-spa v2 public key id\0" + a).digest()[:8]
    return a, p, display


def x25519_public(secret):
    return x25519.X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes(*RAW)


def x25519_shared(secret, public):
    try:
        shared = x25519.X25519PrivateKey.from_private_bytes(secret).exchange(
            x25519.X25519PublicKey.from_public_bytes(public))
    except ValueError:  # some versions refuse the all-zero output themselves
        shared = bytes(32)
    if shared == bytes(32):
        raise ValueError("all-zero X25519 shared secret")
    return shared


def kid(pre_check_key, epoch):
    return hmac256(pre_check_key, b"knock-spa v2 key id" + struct.pack(">Q", epoch))[:8]


def body_key(shared, eph, server_pub, client_pub):
    prk = hmac256(SALT2, shared)
    ctx = eph + server_pub + client_pub
    return (expand1(prk, b"knock-spa v2 body key" + ctx, 32),
            expand1(prk, b"knock-spa v2 body nonce" + ctx, 24))


def signed_message(server_pub, p):
    return b"knock-spa v2 signature" + server_pub + p[0:185]


def packet2(seed, server_pub, eph_secret, padding, **req):
    """The v2 packet and its intermediate values (shared, body key, body nonce)."""
    a, pck, _ = client_keys(seed)
    eph = x25519_public(eph_secret)
    header = b"\x02" + kid(pck, req["ts"] // 3600) + eph
    shared = x25519_shared(eph_secret, server_pub)
    key, nonce = body_key(shared, eph, server_pub, a)
    p = header + xchacha_seal(key, nonce, body(padding=padding, **req), header)
    p += ed25519.Ed25519PrivateKey.from_private_bytes(seed).sign(signed_message(server_pub, p))
    p += hmac256(pck, p)[:16]
    assert len(p) == V2_LEN
    return p, shared, key, nonce


def open2(p, server_secret, a, pck, now):
    """The server side, written separately from packet2: the checks of section 17's
    verification order up to the AEAD (no replay cache here); returns the body."""
    assert p[0] == 2 and len(p) == V2_LEN
    e = now // 3600
    assert p[1:9] in {kid(pck, e - 1), kid(pck, e), kid(pck, e + 1)}
    assert hmac.compare_digest(hmac256(pck, p[0:249])[:16], p[249:265])
    server_pub = x25519_public(server_secret)
    # verify raises InvalidSignature on a bad signature
    ed25519.Ed25519PublicKey.from_public_bytes(a).verify(p[185:249], signed_message(server_pub, p))
    eph = p[9:41]
    key, nonce = body_key(x25519_shared(server_secret, eph), eph, server_pub, a)
    return xchacha_open(key, nonce, p[41:185], p[0:41])


VECTORS = [
    dict(ts=1_767_225_600, action="open", admit="192.0.2.10", duration=0,
         server="gateway.example", ports=["22/tcp"]),
    dict(ts=1_767_225_601, action="close", admit="2001:db8::10", duration=3600,
         server="gateway.example", ports=["22/tcp", "53/udp"]),
    dict(ts=1_767_225_602, action="open", admit="source", duration=120,
         server="gateway.example", ports=["2222/tcp"]),
]


def main():
    master = bytes(range(32))
    padding = bytes([0xA5]) * 33
    enc, mac, kid = derive(master)
    print("kdf enc", enc.hex())
    print("kdf mac", mac.hex())
    print("kdf id ", kid.hex())
    for i, v in enumerate(VECTORS, 1):
        # A fresh nonce per vector, as every real packet has one.
        nonce = bytes((0x40 * i + j) & 0xFF for j in range(24))
        p = packet(master, nonce, padding, **v)
        assert len(p) == 209
        fields = [p[0:1], p[1:9], p[9:33], p[33:161], p[161:177], p[177:209]]
        print("vector", i, " ".join(f.hex() for f in fields))
    main2(padding)
    return 0


def main2(padding):
    seed = bytes(range(32))
    server_secret = bytes(range(0x20, 0x40))
    a, pck, display = client_keys(seed)
    server_pub = x25519_public(server_secret)
    print("kdf2 A", a.hex())
    print("kdf2 P", pck.hex())
    print("kdf2 display", display.hex())
    print("kdf2 X", server_pub.hex())
    print("kdf2 kid", kid(pck, VECTORS[0]["ts"] // 3600).hex())
    for i, v in enumerate(VECTORS, 1):
        eph_secret = bytes((0x40 * i + j) & 0xFF for j in range(32))
        p, shared, key, nonce = packet2(seed, server_pub, eph_secret, padding, **v)
        if "-v" in sys.argv[1:]:
            print("debug2", i, "shared", shared.hex(), "key", key.hex(), "nonce", nonce.hex(),
                  "digest", hashlib.sha256(p).hexdigest(), file=sys.stderr)
        # The server's way, with x instead of the ephemeral secret: the body comes back.
        assert open2(p, server_secret, a, pck, v["ts"]) == body(padding=padding, **v)
        # The same signature with S + L (non-canonical, RFC 8032 5.1.7) must not verify:
        # otherwise a holder of P could make a new digest of an old packet.
        s_plus_l = int.from_bytes(p[217:249], "little") + ED25519_L
        forged = p[185:217] + s_plus_l.to_bytes(32, "little")
        try:
            ed25519.Ed25519PublicKey.from_public_bytes(a).verify(forged, signed_message(server_pub, p))
            raise AssertionError("a non-canonical Ed25519 signature verified")
        except InvalidSignature:
            pass
        fields = [p[0:1], p[1:9], p[9:41], p[41:169], p[169:185], p[185:249], p[249:265]]
        print("vector2", i, " ".join(f.hex() for f in fields))


if __name__ == "__main__":
    sys.exit(main())
