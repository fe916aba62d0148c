"""Row 3: exec round trip.

hyperfine times `tether exec 127.0.0.1:PORT -- true` (unkeyed and keyed),
`ssh -p PORT root@127.0.0.1 true` (throwaway sshd), and two local spawns:
`/bin/true` and `tether --version`. hyperfine runs each command's runs in a
block, so it is called once per round with every command, and the rounds
are pooled: A B C, C B A, ... at the granularity of a round.
Goal: tether exec <= tether --version + /bin/true + 1.5 ms (two local
process spawns, the client's and the server's, plus 1.5 ms).
"""

import json
import shlex
import subprocess

from . import sshd
from .common import BenchError, keygen, need, start_tether
from .measure import Contender, Run, f2, goal_mark, med, table

SLACK_MS = 1.5


def commands(ctx, ssh):
    """(name, command line) for every command measured."""
    key = keygen(ctx, ctx.tether)
    bins = [("tether", ctx.tether)]
    if ctx.settings.baseline:
        bins.append(("baseline", ctx.settings.baseline))
    out = [("/bin/true", "/bin/true")]
    root = ctx.scratch("r3")
    for label, b in bins:
        _, open_host = start_tether(ctx, b, root, "--allow-exec", label=f"{label} serve")
        _, keyed_host = start_tether(ctx, b, root, "--allow-exec", key=key, label=f"{label} serve keyed")
        q = shlex.quote(str(b))
        out += [(f"{label} --version", f"{q} --version"),
                (f"{label} exec -- true", f"{q} exec {open_host} -- true"),
                (f"{label} exec -- true (keyed)", f"{q} --key-file {key} exec {keyed_host} -- true")]
    out.append(("ssh true", shlex.join(ssh.ssh("true"))))
    return out


def hyperfine_round(ctx, cmds, runs, n):
    out = ctx.work / f"r3-round{n}.json"
    args = ["hyperfine", "-N", "--style", "none", "--warmup", "3", "--runs", str(runs),
            "--export-json", out]
    for name, cmd in (cmds if n % 2 == 0 else reversed(cmds)):
        args += ["-n", name, cmd]
    r = subprocess.run([str(a) for a in args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise BenchError(f"hyperfine failed: {r.stderr.strip()[-300:]}")
    return {r["command"]: r["times"] for r in json.loads(out.read_text())["results"]}


def measure(ctx, cmds):
    rounds, runs = (3, 10) if ctx.quick else (10, 20)
    cs = {name: Contender(name, None) for name, _ in cmds}
    for n in range(rounds):
        for name, times in hyperfine_round(ctx, cmds, runs, n).items():
            cs[name].results += [Run(t) for t in times]
    return cs


def run(ctx):
    need("hyperfine", "hyperfine")
    ssh = sshd.start(ctx)
    cs = measure(ctx, commands(ctx, ssh))
    ms = {n: med(c.secs()) * 1e3 for n, c in cs.items()}
    rows = []
    for name, c in cs.items():
        s = [x * 1e3 for x in c.secs()]
        label = name.split()[0]
        goal = ms.get(f"{label} --version", float("nan")) + ms["/bin/true"] + SLACK_MS
        is_exec = " exec " in name
        rows.append([name, f2(ms[name]), f2(min(s)), f2(max(s)),
                     f2(goal) if is_exec else "", goal_mark(goal - ms[name], 0) if is_exec else "",
                     f2(ms["ssh true"] / ms[name]) if is_exec else ""])
    lines = ["## 3. Exec round trip (loopback)", ""]
    lines += table(["command", "median ms", "min ms", "max ms",
                    f"goal ms (--version + /bin/true + {SLACK_MS})", "goal", "ssh / tether (medians)"], rows)
    lines += ["", f"hyperfine -N (no shell), 3 warm-up runs, {len(next(iter(cs.values())).results)} runs "
              "per command pooled over rounds; every round runs all commands. ssh logs in to the "
              "throwaway sshd with an ed25519 key (a full SSH handshake per run). The servers run "
              "with --allow-exec; keyed = --key-file on both sides (mutual proof, sealed frames)."]
    return lines, list(cs.values())
