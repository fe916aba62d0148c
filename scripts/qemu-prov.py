#!/usr/bin/env python3
"""Write the firmware's provisioning block (firmware-qemu/src/prov.rs has
the layout): a fresh 32-byte seed from /dev/urandom, the optional key from a
`tether keygen` file, the IPv4 address and the current Unix time.

    qemu-prov.py OUT [--key-file FILE] [--ip 192.168.69.2/24] [--gateway A.B.C.D]
                     [--seed-hex HEX]   (only for reproducible test vectors)
"""
import argparse
import ipaddress
import os
import struct
import sys
import time
import zlib

MAGIC = b"TPRV"
VERSION = 1
LEN = 128
DEFAULT_IP = ("192.168.69.2", 24)


def block(key, seed, ip, prefix, gateway, unix_ms):
    flags = 0
    b = bytearray(LEN)
    b[0:4] = MAGIC
    struct.pack_into("<HH", b, 4, VERSION, LEN)
    if key is not None:
        flags |= 1
        b[12:44] = key
    b[44:76] = seed
    if (ip, prefix) != DEFAULT_IP or gateway:
        flags |= 2
        b[76:80] = ipaddress.IPv4Address(ip).packed
        b[80] = prefix
        if gateway:
            b[84:88] = ipaddress.IPv4Address(gateway).packed
    if unix_ms is not None:
        flags |= 4
        struct.pack_into("<Q", b, 88, unix_ms)
    struct.pack_into("<I", b, 8, flags)
    struct.pack_into("<I", b, 124, zlib.crc32(bytes(b[:124])) & 0xFFFFFFFF)
    return bytes(b)


def read_key(path):
    text = open(path, "rb").read()
    for end in (b"\r\n", b"\n"):
        if text.endswith(end):
            text = text[: -len(end)]
            break
    if len(text) != 64:
        sys.exit(f"{path}: a key is 64 hexadecimal digits")
    try:
        return bytes.fromhex(text.decode("ascii"))
    except ValueError:
        sys.exit(f"{path}: a key is 64 hexadecimal digits")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--key-file")
    ap.add_argument("--ip", default="192.168.69.2/24")
    ap.add_argument("--gateway")
    ap.add_argument("--seed-hex")
    ap.add_argument("--unix-ms", type=int)
    a = ap.parse_args()
    net = ipaddress.IPv4Interface(a.ip)
    seed = bytes.fromhex(a.seed_hex) if a.seed_hex else os.urandom(32)
    if len(seed) != 32 or seed == bytes(32):
        sys.exit("the seed must be 32 bytes, not all zero")
    key = read_key(a.key_file) if a.key_file else None
    unix_ms = a.unix_ms if a.unix_ms is not None else int(time.time() * 1000)
    data = block(key, seed, str(net.ip), net.network.prefixlen, a.gateway, unix_ms)
    fd = os.open(a.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


if __name__ == "__main__":
    main()
