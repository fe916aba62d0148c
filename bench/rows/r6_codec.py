"""Row 6: codec microbenchmark (criterion, bench/codec).

Encode + decode of one small frame (Ping, Stat, 1 KiB of Data) per
iteration, tether's codec against the seed design (4-byte length, JSON
header with serde_json, body) written two ways: as usually written
(`to_vec`, a fresh frame, an owned header) and its kindest form (reused
buffer, borrowed strings). Allocations per frame come from a counting
global allocator in the same benchmark binary. Criterion runs one
benchmark after another, so the whole benchmark is run in rounds and the
rounds' medians pooled. Goal: tether makes no allocation per frame.
"""

import json
import os
import subprocess

from .common import ROOT, BenchError, env_int
from .measure import f1, f2, goal_mark, med, table

CODECS = ["tether", "seed-json", "seed-json-reuse"]
FRAMES = ["ping", "stat", "data-1k"]
CRATE = ROOT / "bench" / "codec"


def cargo_env(ctx):
    return dict(os.environ, CARGO_TARGET_DIR=str(ROOT / "target" / "bench"))


def build(ctx):
    subprocess.run(["cargo", "bench", "--quiet", "--bench", "codec", "--no-run"], cwd=CRATE,
                   env=cargo_env(ctx), check=True)


def one_round(ctx, n):
    """Run criterion once; ns per frame for every codec/frame, and allocations per frame."""
    allocs = ctx.work / f"r6-allocs-{n}.json"
    times = ["--warm-up-time", "0.5", "--measurement-time", "1"] if ctx.quick else \
        ["--warm-up-time", "1", "--measurement-time", "3"]
    env = dict(cargo_env(ctx), CODEC_ALLOCS_JSON=str(allocs))
    log = ctx.work / f"r6-criterion-{n}.log"
    with open(log, "w") as f:
        r = subprocess.run(["cargo", "bench", "--quiet", "--bench", "codec", "--", *times],
                           cwd=CRATE, env=env, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise BenchError(f"cargo bench (bench/codec) failed: {log.read_text()[-400:]}")
    crit = ROOT / "target" / "bench" / "criterion"
    ns = {}
    for f in FRAMES:
        for c in CODECS:
            est = json.loads((crit / f"roundtrip-{f}" / c / "new" / "estimates.json").read_text())
            ns[(c, f)] = est["median"]["point_estimate"]
    return ns, json.loads(allocs.read_text())


def run(ctx):
    build(ctx)
    rounds = env_int("BENCH_CODEC_ROUNDS", 1 if ctx.quick else 3)
    results = [one_round(ctx, n) for n in range(rounds)]
    rows = []
    for f in FRAMES:
        per = {c: [1e9 / ns[(c, f)] for ns, _ in results] for c in CODECS}
        allocs = {c: max(a[f"{c}/{f}"] for _, a in results) for c in CODECS}
        cells = []
        for c in CODECS:
            cells += [f"{med(per[c]) / 1e6:.2f} ({min(per[c]) / 1e6:.2f}-{max(per[c]) / 1e6:.2f})",
                      f"{allocs[c]:g}"]
        rows.append([f, *cells, f2(med(per["tether"]) / med(per["seed-json"])),
                     f2(med(per["tether"]) / med(per["seed-json-reuse"])),
                     goal_mark(-allocs["tether"], 0)])
    lines = ["## 6. Codec microbenchmark (encode + decode of one frame, in memory)", ""]
    heads = ["frame"]
    for c in CODECS:
        heads += [f"{c} M frames/s (min-max)", f"{c} allocs/frame"]
    lines += table(heads + ["tether / seed-json speed", "tether / seed-json-reuse speed",
                            "tether 0 allocs"], rows)
    lines += ["", f"criterion, median time per encode+decode, {rounds} round(s); frames/s = 1 / time. "
              "seed-json: `u32` length + `serde_json::to_vec` of an owned header (request id, message, "
              "body length) + body, decoded with `serde_json::from_slice` into the owned header; "
              "seed-json-reuse: the same frame built in one reused `Vec`, decoded with borrowed "
              "strings. tether: `encode_frame` into a caller buffer and the sans-IO `Decoder` (header "
              "parsed in place, body borrowed). Allocations: alloc + realloc calls per frame over "
              "10,000 frames after one warm-up frame (counting global allocator)."]
    return lines, []
