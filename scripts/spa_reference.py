#!/usr/bin/env python3
"""An independent implementation of the knock-spa v1 packet, written from docs/PROTOCOL.md.

It shares no code with the Rust implementation: HKDF and HMAC come from Python's standard
library, ChaCha20-Poly1305 from the `cryptography` package, and HChaCha20 (the XChaCha20
subkey step) is written out below from draft-irtf-cfrg-xchacha-03 section 2.2. It prints the
test vectors of docs/PROTOCOL.md field by field; `scripts/test` compares them with the Rust
known-answer test's expectations.
"""
import hashlib
import hmac
import ipaddress
import struct
import sys

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305


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
    return 0


if __name__ == "__main__":
    sys.exit(main())
