#!/usr/bin/env python3
"""`make bench`: every benchmark row, each against its peer in the same run.

Rows (bench/rows/): 1 unkeyed transfers vs socat, 2 keyed/encrypted
transfers vs scp, 3 exec round trip vs ssh and local spawns, 4 many
clients (bench/load), 5 the simulated device over TAP, 6 the codec vs the
seed design (bench/codec); 7 (BENCH_BASELINE) the same rows 1-3 with a
second tether binary interleaved. Writes one Markdown file per run to
bench/results/. Environment: BENCH_QUICK=1, BENCH_MB, BENCH_RUNS,
BENCH_BASELINE, BENCH_ROWS (e.g. 1,3); see bench/README.md.
Python 3.11 standard library only.
"""

import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rows import r1_transfer, r2_scp, r3_exec, r4_clients, r5_device, r6_codec  # noqa: E402
from rows.common import ROOT, BenchError, Cleanup, Ctx, Settings, say  # noqa: E402
from rows.measure import f1, goal_mark, med, pair_ratio, table  # noqa: E402

ROWS = [("1", r1_transfer), ("2", r2_scp), ("3", r3_exec), ("4", r4_clients),
        ("5", r5_device), ("6", r6_codec)]
BASELINE_GOAL = 1.05


def build(rows):
    say("building tether and tether-sim (release)")
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "tether-host", "-p", "tether-sim"],
                   cwd=ROOT, check=True)
    if "4" in rows:
        say("building the load tool (bench/load, release)")
        subprocess.run(["cargo", "build", "--release", "--quiet", "--manifest-path",
                        ROOT / "bench" / "load" / "Cargo.toml"],
                       env=dict(os.environ, CARGO_TARGET_DIR=str(ROOT / "target" / "bench")), check=True)


def out(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT).stdout.strip()
    except OSError:
        return "unknown"


def machine(settings, tether):
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
               platform.processor() or "unknown")
    dirty = " (uncommitted changes)" if out(["git", "status", "--porcelain", "-uno"]) else ""
    lines = [f"- Machine: {cpu}, {os.cpu_count()} cores, kernel {platform.release()}, "
             f"load average at start {os.getloadavg()[0]:.2f}",
             f"- Toolchain: {out(['rustc', '-V'])}",
             f"- tether: {out([tether, '--version'])}, git {out(['git', 'rev-parse', '--short', 'HEAD'])}{dirty}",
             f"- Date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
             f"- Mode: {'quick (BENCH_QUICK=1)' if settings.quick else 'full'}; file size {settings.mb} MiB; "
             f"{settings.runs} rounds (rows 1-2)"]
    if settings.baseline:
        lines.append(f"- Baseline (BENCH_BASELINE): `{settings.baseline}`: {out([settings.baseline, '--version'])}")
    return lines


def old_vs_new(contenders):
    """Row 7: tether time / baseline time, per round, for every measurement of rows 1-3."""
    by = {c.name: c for c in contenders}
    rows = []
    for c in contenders:
        b = by.get("baseline " + c.name.removeprefix("tether ")) if c.name.startswith("tether ") else None
        if b is None or not (b.results and c.results):
            continue
        r = pair_ratio(c, b)
        rows.append([c.name.removeprefix("tether "), f1(med(c.secs()) * 1e3), f1(med(b.secs()) * 1e3),
                     f"{r:.3f}", goal_mark(r, BASELINE_GOAL, higher_is_better=False)])
    lines = ["## 7. This tether vs the baseline binary (rows 1-3, interleaved)", ""]
    lines += table(["measurement", "tether median ms", "baseline median ms", "tether / baseline",
                    f"goal <= {BASELINE_GOAL}"], rows)
    return lines + ["", "Each ratio is the median over rounds of this round's tether time divided by "
                    "the baseline's (both ran in the same round, one after the other)."]


HOW_TO_READ = [
    "How to read: every row runs its contenders side by side, in rounds (A B C, then C B A, ...), "
    "so that noise from other load on the machine hits all of them alike; times are medians "
    "with min and max over the rounds; a ratio is computed per round from the two runs of that "
    "round and its median is quoted (so > 1 with `peer / tether` means tether was faster). "
    "`met` / `**missed**` compare with the goal in the column header.",
]


def run_rows(ctx, selected):
    sections, contenders = [], []
    for key, module in ROWS:
        if key not in selected:
            continue
        say(module.__doc__.strip().splitlines()[0])
        mark = ctx.cleanup.mark()
        try:
            lines, cs = module.run(ctx)
        except BenchError as e:
            say(f"row {key} not measured: {e}")
            title = module.__doc__.strip().splitlines()[0].rstrip(".")
            lines, cs = [f"## {title}", "", f"Not measured: {e}"], []
        finally:
            ctx.cleanup.unwind(mark)
        sections.append(lines)
        contenders += cs
    if ctx.settings.baseline and selected & {"1", "2", "3"}:
        sections.append(old_vs_new(contenders))
    return sections


def write(settings, head, sections):
    lines = [f"# tether benchmarks, {time.strftime('%Y-%m-%d')}", "", *head, "", *HOW_TO_READ, ""]
    for s in sections:
        lines += s + [""]
    name = time.strftime("bench-%Y%m%d-%H%M%S") + ("-quick" if settings.quick else "") + ".md"
    path = ROOT / "bench" / "results" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    print("\n".join(lines))
    say(f"written to {path.relative_to(ROOT)}")


def interrupted(signum, frame):
    raise KeyboardInterrupt


def main():
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)
    for var in ("TETHER_KEY", "TETHER_KEY_FILE", "TETHER_ENCRYPT", "TETHER_RETRIES"):
        os.environ.pop(var, None)
    settings = Settings.from_env()
    selected = settings.rows or {k for k, _ in ROWS}
    t0 = time.time()
    build(selected)
    release = ROOT / "target" / "release"
    cleanup = Cleanup()
    work = Path(tempfile.mkdtemp(prefix="tether-bench-"))
    cleanup.push(f"scratch directory {work}", lambda: shutil.rmtree(work, ignore_errors=True))
    ctx = Ctx(settings, work, cleanup, release / "tether", release / "tether-sim",
              ROOT / "target" / "bench" / "release" / "tether-bench-load")
    try:
        head = machine(settings, ctx.tether)
        sections = run_rows(ctx, selected)
        head.append(f"- Duration: {(time.time() - t0) / 60:.1f} min (builds included), "
                    f"load average at end {os.getloadavg()[0]:.2f}")
        write(settings, head, sections)
    except KeyboardInterrupt:
        say("interrupted: cleaning up")
        sys.exit(130)
    finally:
        cleanup.unwind()


if __name__ == "__main__":
    try:
        main()
    except BenchError as e:
        say(f"error: {e}")
        sys.exit(1)
