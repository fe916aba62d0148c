"""Row 4: many clients, with the bench-only load tool (bench/load).

(a) N handshaken idle connections against `tether serve`, in two waves:
the server's VmRSS/VmHWM before, with all open, after they close; new
clients (connect + handshake + Ping/Pong, in the tool) and `tether exec
-- true` (the real client, a process per run) while they are held.
Goals: RSS with all open <= 150 MiB, a new client answered within 10 ms.
(b) C clients at once, each on its own connection doing exec `true`, put
of 64 KiB and get of it back (SHA-256 checked), for a fixed time, against a
server with default limits: operations/s, BUSY answers and errors.
"""

import json
import resource
import subprocess

from .common import BenchError, env_int, say, start_tether
from .measure import f1, f2, goal_mark, med, table, timed

RSS_GOAL_MIB = 150
NEW_CLIENT_GOAL_MS = 10


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        if hard != resource.RLIM_INFINITY and hard < n:
            raise BenchError(f"needs {n} open files, the hard limit is {hard} (ulimit -Hn)")
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))


def exec_times(ctx, host, n):
    """`tether exec HOST -- true`, n times, wall ms."""
    return [timed([ctx.tether, "-q", "exec", host, "--", "true"]).secs * 1e3 for _ in range(n)]


def idle(ctx, n):
    """Run the idle waves; returns the tool's JSON and exec times unloaded / per wave."""
    raise_nofile(2 * n + 1000)
    p, host = start_tether(ctx, ctx.tether, ctx.scratch("r4a"), "--allow-exec",
                           "--max-connections", str(n + 100), label="tether serve (idle)")
    k = 5 if ctx.quick else 20
    unloaded = exec_times(ctx, host, k)
    tool = ctx.spawn([ctx.load, "idle", "--addr", host, "--server-pid", str(p.pid),
                      "--connections", str(n), "--waves", "2", "--pause"],
                     label="load idle", stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    held, result = [], None
    for line in tool.stdout:
        if line.startswith("HELD"):
            say(f"row 4a: wave {line.split()[1]} held; timing tether exec")
            held.append(exec_times(ctx, host, k))
            tool.stdin.write("\n")
            tool.stdin.flush()
        elif line.startswith("RESULT "):
            result = json.loads(line.removeprefix("RESULT "))
    if tool.wait() != 0 or result is None:
        raise BenchError("the load tool (idle) failed; see its stderr above")
    return result, unloaded, held


def idle_table(result, unloaded, held):
    mib = lambda kib: kib / 1024
    rows, before = [], result["rss_before_kib"]
    for w, ex in zip(result["waves"], held):
        p = w["probe"]
        rows.append([w["wave"], f"{w['open']} ({w['busy']} busy, {w['failed']} failed)",
                     f1(mib(before)), f1(mib(w["rss_held_kib"])), f1(mib(w["rss_after_kib"])),
                     f1(mib(w["hwm_after_kib"])), goal_mark(RSS_GOAL_MIB - mib(w["rss_held_kib"]), 0),
                     f"{f2(p['median_ms'])} / {f2(p['max_ms'])}",
                     f"{p['within_10ms']}/{p['n']}", goal_mark(p["within_10ms"] - p["n"], 0),
                     f"{f2(med(ex))} / {f2(max(ex))}"])
        before = w["rss_after_kib"]
    u = result["probe_unloaded"]
    rows.append(["none held", "0", f1(mib(result["rss_before_kib"])), "", "", "", "",
                 f"{f2(u['median_ms'])} / {f2(u['max_ms'])}", f"{u['within_10ms']}/{u['n']}", "",
                 f"{f2(med(unloaded))} / {f2(max(unloaded))}"])
    return table(["wave", "connections open", "RSS before MiB", "RSS all open MiB",
                  "RSS after close MiB", "VmHWM MiB", f"RSS <= {RSS_GOAL_MIB} MiB",
                  "new client median / max ms", f"within {NEW_CLIENT_GOAL_MS} ms", "goal",
                  "tether exec median / max ms"], rows)


def mixed(ctx, clients, seconds):
    _, host = start_tether(ctx, ctx.tether, ctx.scratch("r4b-srv"), "--allow-exec",
                           label="tether serve (mixed, default limits)")
    r = subprocess.run([str(ctx.load), "mixed", "--addr", host, "--dir", str(ctx.scratch("r4b-cli")),
                        "--clients", str(clients), "--seconds", str(seconds)],
                       stdout=subprocess.PIPE, text=True)
    line = next((l for l in r.stdout.splitlines() if l.startswith("RESULT ")), None)
    if r.returncode != 0 or line is None:
        raise BenchError("the load tool (mixed) failed; see its stderr above")
    return json.loads(line.removeprefix("RESULT "))


def mixed_table(m):
    rows = [[m["clients"], f1(m["seconds"]), m["ops"], f1(m["ops_per_s"]),
             *(f"{m[k]['n']}: {f1(m[k]['median_ms'])} / {f1(m[k]['p99_ms'])}" for k in ("exec", "put", "get")),
             m["busy"], m["errors"]]]
    out = table(["clients", "seconds", "operations", "operations/s",
                 "exec n: median / p99 ms", "put n: median / p99 ms", "get n: median / p99 ms",
                 "BUSY answers (retried)", "errors"], rows)
    if m["first_error"]:
        out += ["", f"First error: `{m['first_error']}`"]
    return out


def run(ctx):
    n = env_int("BENCH_IDLE_CONNECTIONS", 5000)
    clients = env_int("BENCH_CLIENTS", 200)
    seconds = env_int("BENCH_CLIENT_SECONDS", 10 if ctx.quick else 30)
    result, unloaded, held = idle(ctx, n)
    m = mixed(ctx, clients, seconds)
    lines = [f"## 4. Many clients (loopback)", "", f"### (a) {n} handshaken idle connections, two waves", ""]
    lines += idle_table(result, unloaded, held)
    lines += ["", f"Server: `tether serve --allow-exec --max-connections {n + 100}` (the default is 256), "
              "unkeyed; RSS is VmRSS from /proc/PID/status (VmHWM: peak), read 1 s after a wave "
              "is open and 3 s after it closed. New client: connect + Hello/HelloAck + Ping/Pong "
              "on a fresh connection, timed inside the load tool; `tether exec` includes starting "
              "the client process.", "",
              f"### (b) {clients} concurrent clients: exec + 64 KiB put + get, {seconds} s", ""]
    lines += mixed_table(m)
    lines += ["", "Server with default limits (`--allow-exec`; 256 connections, 64 transfers at once, "
              "so BUSY is expected: the client waits 20 ms and retries, and each BUSY is counted). "
              "An operation is one exec, put or get; every get's file is compared with what was put. "
              "Load tool and server share the machine's cores."]
    return lines, []
