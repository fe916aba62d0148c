"""Row 1: unkeyed verified transfers against a raw socket.

`tether put` / `tether get` of one file over loopback against socat moving
the same bytes in the same direction into a file, followed by `sync FILE`
(tether fsyncs its result, so the peer pays for that too). Unpinned, and
pinned one core per side (server on CPU 0, client on CPU 1).
Ratio = socat -b 262144 time / tether time, per round, median (goal >= 0.85).
"""

import os
import subprocess
import time

from .common import BenchError, free_port, need, pin, start_tether, verify, wait_listening
from .measure import Contender, Run, f2, goal_mark, pair_ratio, side_by_side, table, time_cells, timed

GOAL = 0.85
BIG = ["-b", "262144"]
PINS = {"unpinned": (None, None), "pinned": (0, 1)}


def tether_pair(ctx, binary, label, pinning, src, digest, size):
    """put and get contenders against one server of `binary`."""
    srv_cpu, cli_cpu = PINS[pinning]
    root = ctx.scratch(f"r1-{label}-{pinning}")
    os.link(src, root / "src.bin")
    _, host = start_tether(ctx, binary, root, cpu=srv_cpu, label=f"{label} serve ({pinning})")
    down = ctx.work / f"r1-{label}-{pinning}-down.bin"

    def put():
        r = timed(pin(cli_cpu) + [binary, "-q", "put", host, src, "up.bin", "--force"])
        verify(root / "up.bin", digest, f"{label} put")
        return r

    def get():
        r = timed(pin(cli_cpu) + [binary, "-q", "get", host, "src.bin", down, "--force"])
        verify(down, digest, f"{label} get")
        return r
    return (Contender(f"{label} put ({pinning})", put, size),
            Contender(f"{label} get ({pinning})", get, size))


def socat(ctx, direction, block, pinning, src, digest, size):
    """socat carrying `src` upstream (client -> server) or downstream, into a file, then sync."""
    srv_cpu, cli_cpu = PINS[pinning]
    dst = ctx.work / f"r1-socat-{direction}.bin"
    into = f"OPEN:{dst},creat,trunc"

    def once():
        port = free_port()
        listen, connect = f"TCP-LISTEN:{port},reuseaddr", f"TCP:127.0.0.1:{port}"
        server = [listen, into] if direction == "up" else [f"OPEN:{src}", listen]
        client = [f"OPEN:{src}", connect] if direction == "up" else [connect, into]
        p = ctx.spawn(pin(srv_cpu) + ["socat", "-u", *block, *server], label="socat listener")
        wait_listening(port)
        t0 = time.perf_counter()
        r = timed(pin(cli_cpu) + ["socat", "-u", *block, *client])
        if p.wait(timeout=600) != 0:
            raise BenchError(f"socat listener exited {p.returncode}")
        subprocess.run(["sync", dst], check=True)
        run = Run(time.perf_counter() - t0, r.cpu, r.rss_kib)
        verify(dst, digest, f"socat {direction}")
        return run
    name = f"socat {'-b 262144' if block else 'default 8 KiB'} {direction} ({pinning})"
    return Contender(name, once, size)


def contenders(ctx, src, digest, size):
    """Every contender, with the peer each tether one is compared with."""
    out, peers = [], {}
    bins = [("tether", ctx.tether)]
    if ctx.settings.baseline:
        bins.append(("baseline", ctx.settings.baseline))
    for pinning in PINS:
        big = {d: socat(ctx, d, BIG, pinning, src, digest, size) for d in ("up", "down")}
        small = [socat(ctx, d, [], pinning, src, digest, size) for d in ("up", "down")]
        for label, binary in bins:
            put, get = tether_pair(ctx, binary, label, pinning, src, digest, size)
            out += [put, get]
            peers[put.name], peers[get.name] = big["up"], big["down"]
        out += [big["up"], big["down"], *small]
    return out, peers


def run(ctx):
    need("socat", "socat")
    need("taskset", "util-linux")
    mb = ctx.settings.mb
    src, digest = ctx.source(mb)
    cs, peers = contenders(ctx, src, digest, mb << 20)
    side_by_side(cs, ctx.settings.runs, "row 1")
    rows = []
    for c in cs:
        peer = peers.get(c.name)
        ratio = pair_ratio(peer, c) if peer else float("nan")
        rows.append([c.name, *time_cells(c),
                     f2(ratio) if peer else "", goal_mark(ratio, GOAL) if peer else ""])
    lines = [f"## 1. Unkeyed verified transfers vs raw socket ({mb} MiB, loopback)", ""]
    lines += table(["measurement", "median s", "min s", "max s", "MiB/s",
                    "socat -b 262144 / tether", f"goal >= {GOAL}"], rows)
    lines += ["", "Time is wall time of the client command; for socat from starting the "
              "connecting side until both ends exited and `sync FILE` returned. "
              "up = client to server (as put), down = server to client (as get). "
              "Pinned: server (or socat listener) on CPU 0, client on CPU 1 (`taskset`). "
              "Every received file's SHA-256 is checked after each run (not timed)."]
    return lines, cs
