"""Row 2: keyed (sealed) and keyed --encrypt transfers against scp.

scp goes to localhost through a throwaway sshd (rows/sshd.py), once with
ssh's default cipher and once with the fastest cipher on this machine
(probed first). scp's received file is followed by `sync FILE`, as tether
fsyncs. Ratio = scp time / tether time, per round, median (goal >= 1.25).
"""

import os
import subprocess
import time

from . import sshd
from .common import keygen, say, start_tether, verify
from .measure import (Contender, Run, f2, f3, goal_mark, med, pair_ratio, side_by_side, table,
                      time_cells, timed)

GOAL = 1.25
CIPHERS = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
           "chacha20-poly1305@openssh.com", "aes128-ctr"]


def scp_contender(ctx, ssh, direction, cipher, label, src, digest, size):
    dst = ctx.work / f"r2-scp-{direction}.bin"
    args = [src, f"root@127.0.0.1:{dst}"] if direction == "up" else [f"root@127.0.0.1:{src}", dst]

    def once():
        t0 = time.perf_counter()
        r = timed(ssh.scp(cipher) + args)
        subprocess.run(["sync", dst], check=True)
        run = Run(time.perf_counter() - t0, r.cpu, r.rss_kib)
        verify(dst, digest, f"scp {direction}")
        return run
    return Contender(f"scp {label} {direction}", once, size)


def fastest_cipher(ctx, ssh):
    """Median of a few uploads of a probe file per available cipher, interleaved."""
    have = set(subprocess.run(["ssh", "-Q", "cipher"], capture_output=True, text=True).stdout.split())
    probe_mb = 64 if ctx.quick else 256
    src, digest = ctx.source(min(probe_mb, ctx.settings.mb))
    cs = [scp_contender(ctx, ssh, "up", c, c, src, digest, 0) for c in CIPHERS if c in have]
    side_by_side(cs, 2 if ctx.quick else 3, "row 2 cipher probe")
    timings = {c.name.split()[1]: med(c.secs()) for c in cs if c.results}
    best = min(timings, key=timings.get)
    say(f"fastest scp cipher here: {best}")
    return best, timings, min(probe_mb, ctx.settings.mb)


def tether_contenders(ctx, label, binary, src, digest, size):
    root = ctx.scratch(f"r2-{label}")
    os.link(src, root / "src.bin")
    key = keygen(ctx, ctx.tether)
    _, host = start_tether(ctx, binary, root, key=key, label=f"{label} serve (keyed)")
    down = ctx.work / f"r2-{label}-down.bin"
    out = []
    for mode, extra in (("sealed", []), ("--encrypt", ["--encrypt"])):
        base = [binary, "-q", "--key-file", key, *extra]

        def put(base=base, mode=mode):
            r = timed(base + ["put", host, src, "up.bin", "--force"])
            verify(root / "up.bin", digest, f"{label} put {mode}")
            return r

        def get(base=base, mode=mode):
            r = timed(base + ["get", host, "src.bin", down, "--force"])
            verify(down, digest, f"{label} get {mode}")
            return r
        out += [Contender(f"{label} put keyed {mode}", put, size),
                Contender(f"{label} get keyed {mode}", get, size)]
    return out


def ratio_cells(c, peers):
    """scp/tether ratios against the default and the fastest scp, same direction."""
    direction = "up" if " put " in c.name else "down"
    cells = []
    for peer in peers:
        p = peer.get(direction)
        r = pair_ratio(p, c) if p else float("nan")
        cells += [f2(r), goal_mark(r, GOAL)]
    return cells


def run(ctx):
    ssh = sshd.start(ctx)
    default = ssh.negotiated_cipher()
    best, probe, probe_mb = fastest_cipher(ctx, ssh)
    mb = ctx.settings.mb
    src, digest = ctx.source(mb)
    size = mb << 20
    tethers = tether_contenders(ctx, "tether", ctx.tether, src, digest, size)
    if ctx.settings.baseline:
        tethers += tether_contenders(ctx, "baseline", ctx.settings.baseline, src, digest, size)
    scp_default = {d: scp_contender(ctx, ssh, d, None, f"default ({default})", src, digest, size)
                   for d in ("up", "down")}
    scp_best = scp_default if best == default else {
        d: scp_contender(ctx, ssh, d, best, f"fastest ({best})", src, digest, size) for d in ("up", "down")}
    cs = tethers + list(scp_default.values()) + ([] if best == default else list(scp_best.values()))
    side_by_side(cs, ctx.settings.runs, "row 2")
    rows = [[c.name, *time_cells(c), *(ratio_cells(c, [scp_default, scp_best]) if c in tethers
                                        else ["", "", "", ""])] for c in cs]
    lines = [f"## 2. Keyed and encrypted transfers vs scp ({mb} MiB, loopback)", ""]
    lines += table(["measurement", "median s", "min s", "max s", "MiB/s",
                    "scp default / tether", f"goal >= {GOAL}",
                    "scp fastest / tether", f"goal >= {GOAL}"], rows)
    lines += ["", f"scp: OpenSSH to a throwaway sshd on 127.0.0.1 (ed25519 keys made for the run), "
              f"default cipher `{default}`; fastest here `{best}` "
              f"(probe, {probe_mb} MiB uploads, median s: "
              + ", ".join(f"`{k}` {f3(v)}" for k, v in sorted(probe.items(), key=lambda kv: kv[1]))
              + "). up = upload (as put), down = download (as get); scp time includes "
              "`sync FILE` after it. Sealed = HMAC-SHA256 tag per frame, not encrypted; "
              "--encrypt = ChaCha20-Poly1305 (the like-for-like comparison with scp). "
              "Every received file's SHA-256 is checked after each run (not timed)."]
    return lines, cs
