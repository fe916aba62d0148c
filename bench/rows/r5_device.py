"""Row 5: the simulated device (tether-sim) over a TAP in a network namespace.

One namespace, TAP and device per condition (all alive at once, so that
the conditions run side by side): clean; 100 Mbit/s with the simulator's
own `--tx-rate-limit/--rx-rate-limit` (smoltcp's fault injector, a
policer: packets over the budget are dropped); 100 Mbit/s with `tc tbf` on
the TAP both ways (a shaper: packets queue), for context; `--drop-chance`
1 and 5. Keyed (sealed), as `make sim`. The client runs in the namespace.
Skipped, with the reason, without root, /dev/net/tun or iproute2.
"""

import os
import shutil
import subprocess
import time
from dataclasses import dataclass

from .common import MIB, BenchError, env_int, keygen, say, verify
from .measure import Contender, f1, goal_mark, med, mibs, side_by_side, table, time_cells, timed

DEV_IP = "192.168.69.1"
LINE_MBIT = 100
# smoltcp's limiter counts packets per interval and refills on the first packet
# after more than `interval` ms (a millisecond clock): 82 full 1514-byte frames
# per 10 ms is 99.3 Mbit/s (at most: a refill waits for the next packet).
POLICE = ["--tx-rate-limit", "82", "--rx-rate-limit", "82", "--shaping-interval", "9"]


@dataclass
class Condition:
    name: str
    sim_args: list
    tbf: bool
    kib: tuple | None   # file size in KiB (full, quick); None: the row's size


CONDITIONS = [
    Condition("clean", [], False, None),
    Condition(f"{LINE_MBIT} Mbit/s, sim rate limit (policer)", POLICE, False, (4096, 512)),
    Condition(f"{LINE_MBIT} Mbit/s, tc tbf on the TAP (shaper)", [], True, None),
    Condition("--drop-chance 1", ["--drop-chance", "1"], False, (2048, 256)),
    Condition("--drop-chance 5", ["--drop-chance", "5"], False, (1024, 128)),
]


def missing():
    if os.geteuid() != 0:
        return f"not root (uid {os.geteuid()}): a network namespace and a TAP need root"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun does not exist"
    if not shutil.which("ip"):
        return "iproute2 (`ip`) is not installed"
    return None


def ip(*args, check=True):
    r = subprocess.run(["ip", *map(str, args)], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise BenchError(f"ip {' '.join(map(str, args))}: {r.stderr.strip()}")
    return r


def remove_ns(ns):
    pids = ip("netns", "pids", ns, check=False).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), 15)
        except ProcessLookupError:
            pass
    for _ in range(30):
        if not ip("netns", "pids", ns, check=False).stdout.strip():
            break
        time.sleep(0.1)
    ip("-n", ns, "link", "del", "tap0", check=False)
    ip("netns", "del", ns, check=False)


def tbf(ns):
    """Shape both directions of the TAP to LINE_MBIT: egress directly, ingress through an ifb."""
    tc = ["ip", "netns", "exec", ns, "tc"]
    shaper = ["tbf", "rate", f"{LINE_MBIT}mbit", "burst", "32kb", "latency", "20ms"]
    ip("-n", ns, "link", "add", "ifb0", "type", "ifb")
    ip("-n", ns, "link", "set", "ifb0", "up")
    for args in (["qdisc", "add", "dev", "tap0", "root", *shaper],
                 ["qdisc", "add", "dev", "tap0", "handle", "ffff:", "ingress"],
                 ["filter", "add", "dev", "tap0", "parent", "ffff:", "protocol", "all", "u32",
                  "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", "ifb0"],
                 ["qdisc", "add", "dev", "ifb0", "root", *shaper]):
        r = subprocess.run(tc + args, capture_output=True, text=True)
        if r.returncode != 0:
            raise BenchError(f"tc {' '.join(args[:4])}: {r.stderr.strip()}")


def device(ctx, i, cond, key, kib):
    """A namespace with tap0 and tether-sim in it; returns the namespace's name."""
    ns = f"tether-bench-{os.getpid()}-{i}"
    ip("netns", "add", ns)
    ctx.cleanup.push(f"namespace {ns}", lambda: remove_ns(ns))
    for args in (["link", "set", "lo", "up"], ["tuntap", "add", "dev", "tap0", "mode", "tap"],
                 ["addr", "add", "192.168.69.100/24", "dev", "tap0"], ["link", "set", "tap0", "up"]):
        ip("-n", ns, *args)
    if cond.tbf:
        tbf(ns)
    ctx.spawn(["ip", "netns", "exec", ns, ctx.sim, "-q", "--tap", "tap0", "--ip", f"{DEV_IP}/24",
               "--store-kib", str(3 * kib + 64), "--key-file", key, *cond.sim_args],
              label=f"tether-sim ({cond.name})")
    for _ in range(100):
        r = subprocess.run(["ip", "netns", "exec", ns, ctx.tether, "-qq", "ping", DEV_IP, "-c", "1",
                            "--timeout", "200ms", "--retries", "0"], capture_output=True)
        if r.returncode == 0:
            return ns
        time.sleep(0.1)
    raise BenchError(f"tether-sim ({cond.name}) did not answer ping")


def pair(ctx, ns, cond, key, kib, limit):
    src, digest = ctx.source_kib(kib)
    down = ctx.work / f"r5-{ns}-down.bin"
    base = ["ip", "netns", "exec", ns, ctx.tether, "-q", "--key-file", key]

    def put():
        r = timed(base + ["put", DEV_IP, src, "dev.bin", "--force"], timeout=limit)
        try:
            stored = subprocess.run(base + ["exec", DEV_IP, "--", "sha256", "dev.bin"], timeout=limit,
                                    capture_output=True, text=True).stdout.split()
        except subprocess.TimeoutExpired:
            raise BenchError(f"device sha256 ({cond.name}) did not answer within {limit} s")
        if not stored or stored[0] != digest:
            raise BenchError(f"device put ({cond.name}): the stored file's SHA-256 differs")
        return r

    def get():  # the file is there: rounds alternate direction, the first one puts first
        r = timed(base + ["get", DEV_IP, "dev.bin", down, "--force"], timeout=limit)
        verify(down, digest, f"device get ({cond.name})")
        return r
    size = f"{kib // 1024} MiB" if kib >= 1024 else f"{kib} KiB"
    return (Contender(f"put {size}, {cond.name}", put, kib << 10),
            Contender(f"get {size}, {cond.name}", get, kib << 10))


def conditions(ctx):
    """(condition, its file size in KiB) in table order."""
    size = env_int("BENCH_DEVICE_MB", 4 if ctx.quick else 16) * 1024
    return [(c, c.kib[1 if ctx.quick else 0] if c.kib else size) for c in CONDITIONS]


def rows(cs, conds):
    clean = {d: cs[0 if d == "put" else 1] for d in ("put", "get")}
    out = []
    for c, (cond, _) in zip(cs, [x for x in conds for _ in range(2)]):
        rate = mibs(c.size, med(c.secs())) if c.results else float("nan")
        base = clean[c.name.split()[0]]
        of_clean = rate / mibs(base.size, med(base.secs())) * 100 if base.results else float("nan")
        of_line = rate * MIB * 8 / (LINE_MBIT * 1e6) * 100
        shaped = "Mbit/s" in cond.name
        out.append([c.name, *time_cells(c), f1(of_clean), f1(of_line) if shaped else "",
                    goal_mark(of_line, 90) if shaped else ""])
    return out


def run(ctx):
    why = missing()
    if why:
        say(f"row 5 skipped: {why}")
        return ["## 5. Device (simulator over TAP)", "", f"Not measured: {why}."], []
    key = keygen(ctx, ctx.tether)
    conds = conditions(ctx)
    limit = 60 if ctx.quick else 300
    cs = []
    for i, (cond, kib) in enumerate(conds):
        ns = device(ctx, i, cond, key, kib)
        cs += pair(ctx, ns, cond, key, kib, limit)
    side_by_side(cs, env_int("BENCH_DEVICE_RUNS", 2 if ctx.quick else 3), "row 5")
    lines = ["## 5. Device (simulator over TAP)", ""]
    lines += table(["measurement", "median s", "min s", "max s", "MiB/s", "% of clean",
                    f"% of {LINE_MBIT} Mbit/s", "goal >= 90%"], rows(cs, conds))
    lines += ["", "tether-sim (device defaults: 1 KiB chunks, 4 KiB TCP buffers, 2 connections) in its "
              "own network namespace on tap0, keyed (every frame sealed); the release `tether` client "
              "runs in the namespace. Time is the client's wall time (its process start included). "
              f"A transfer not done within {limit} s is stopped and reported. Policer: `{' '.join(POLICE)}` "
              "(smoltcp's fault injector drops what exceeds 82 packets per 10 ms, about 99 Mbit/s of "
              "full frames); shaper: `tc tbf rate 100mbit burst 32kb latency 20ms` on tap0 egress and, "
              "through an ifb, ingress. Lossy and policed conditions use smaller files (sizes in the "
              "names) so that the row finishes; % of clean compares MiB/s. After each put the device's "
              "own `sha256` command checks the stored file; each get's file is checked here."]
    return lines, cs
