"""Timing one command, running contenders side by side (A B, B A, ...),
statistics, and the Markdown the rows are written in."""

import os
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from .common import MIB, BenchError, Timeout, say


@dataclass
class Run:
    """One measured run: wall seconds, and the measured client's CPU seconds and peak RSS."""
    secs: float
    cpu: float = float("nan")
    rss_kib: int = 0


def timed(cmd, timeout=None, env=None):
    """Run `cmd` to completion; its wall time, CPU time and peak RSS (wait4)."""
    cmd = [str(c) for c in cmd]
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=err, env=env)
        killed = threading.Event()

        def kill():
            killed.set()
            p.kill()
        timer = threading.Timer(timeout, kill) if timeout else None
        if timer:
            timer.daemon = True
            timer.start()
        try:
            _, status, ru = os.wait4(p.pid, 0)
        except BaseException:  # Ctrl-C: do not leave the client running
            p.kill()
            p.wait()
            raise
        finally:
            if timer:
                timer.cancel()
        secs = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        if killed.is_set():
            raise Timeout(f"{os.path.basename(cmd[0])} did not finish within {timeout:.0f} s")
        if p.returncode != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace").strip().splitlines()[-3:]
            raise BenchError(f"`{' '.join(cmd)}` exited {p.returncode}: {' / '.join(tail)}")
    return Run(secs, ru.ru_utime + ru.ru_stime, ru.ru_maxrss)


@dataclass
class Contender:
    """One thing measured in a row: `run()` makes one measured run
    (verification included, outside the timed part)."""
    name: str
    run: Callable[[], Run]
    size: int = 0                       # bytes moved per run (for MiB/s)
    results: list = field(default_factory=list)
    failure: str | None = None

    def secs(self):
        return [r.secs for r in self.results]


def side_by_side(contenders, rounds, label):
    """Round r runs every contender once, forwards in even rounds and
    backwards in odd ones (A B C, C B A, ...), so no contender always
    follows the same one."""
    for r in range(rounds):
        for c in (contenders if r % 2 == 0 else reversed(contenders)):
            if c.failure:
                continue
            try:
                run = c.run()
            except BenchError as e:
                c.failure = str(e)
                say(f"{label} round {r + 1}/{rounds}: {c.name}: FAILED: {e}")
                continue
            c.results.append(run)
            say(f"{label} round {r + 1}/{rounds}: {c.name}: {run.secs:.3f} s")


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def pair_ratio(num, den):
    """Median over rounds of num[i] / den[i] (both Contenders, same rounds)."""
    n = min(len(num.results), len(den.results))
    if n == 0:
        return float("nan")
    return statistics.median(num.results[i].secs / den.results[i].secs for i in range(n))


def mibs(size, secs):
    return size / MIB / secs if secs else float("nan")


def f3(x):
    return "n/a" if x != x else f"{x:.3f}"


def f2(x):
    return "n/a" if x != x else f"{x:.2f}"


def f1(x):
    return "n/a" if x != x else f"{x:.1f}"


def goal_mark(value, goal, higher_is_better=True):
    if value != value:
        return "not measured"
    ok = value >= goal if higher_is_better else value <= goal
    return "met" if ok else "**missed**"


def table(headers, rows, align=None):
    """Markdown table; `align` is a string of l/r per column (default: first l, rest r)."""
    align = align or "l" + "r" * (len(headers) - 1)
    sep = ["---" if a == "l" else "---:" for a in align]
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join(sep) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def time_cells(c):
    """median, min, max seconds and MiB/s of a contender (or its failure)."""
    if not c.results:
        return [f"not measured: {c.failure}", "", "", ""]
    s = c.secs()
    return [f3(med(s)), f3(min(s)), f3(max(s)), f1(mibs(c.size, med(s))) if c.size else ""]
