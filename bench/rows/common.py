"""Shared pieces of `make bench`: settings, processes and their clean-up,
scratch files, tool installation, SHA-256 checks and tether servers."""

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MIB = 1 << 20


class BenchError(Exception):
    """A measurement could not be made; the message says why."""


class Timeout(BenchError):
    """A command ran past its time limit and was killed."""


def say(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def env_int(name, default):
    v = os.environ.get(name, "").strip()
    return int(v) if v else default


@dataclass
class Settings:
    """What `make bench` was asked for (environment variables)."""
    quick: bool
    mb: int                   # file size of rows 1 and 2, MiB
    runs: int                 # side-by-side rounds per row
    baseline: Path | None     # BENCH_BASELINE: a second tether binary
    rows: set[str] | None     # BENCH_ROWS=1,3: only these rows

    @classmethod
    def from_env(cls):
        quick = os.environ.get("BENCH_QUICK", "0") not in ("", "0")
        base = os.environ.get("BENCH_BASELINE", "").strip()
        rows = os.environ.get("BENCH_ROWS", "").strip()
        s = cls(quick=quick,
                mb=env_int("BENCH_MB", 128 if quick else 1024),
                runs=env_int("BENCH_RUNS", 3 if quick else 5),
                baseline=Path(base).resolve() if base else None,
                rows={r.strip() for r in rows.split(",") if r.strip()} or None)
        if s.baseline and not os.access(s.baseline, os.X_OK):
            raise BenchError(f"BENCH_BASELINE={base} is not an executable file")
        return s


class Cleanup:
    """A stack of undo actions, run newest first, down to a mark."""

    def __init__(self):
        self.actions = []

    def push(self, label, fn):
        self.actions.append((label, fn))

    def mark(self):
        return len(self.actions)

    def unwind(self, mark=0):
        while len(self.actions) > mark:
            label, fn = self.actions.pop()
            try:
                fn()
            except Exception as e:  # keep cleaning up whatever happens
                say(f"clean-up of {label} failed: {e}")


def stop_process(p, grace=10):
    """End a process started by spawn() and everything in its session."""
    if p.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5)):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        try:
            p.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass
class Ctx:
    """Everything a row needs: settings, binaries, scratch space, clean-up."""
    settings: Settings
    work: Path
    cleanup: Cleanup
    tether: Path
    sim: Path
    load: Path
    sources: dict = field(default_factory=dict)

    @property
    def quick(self):
        return self.settings.quick

    def spawn(self, cmd, label=None, **kw):
        """Start a long-lived process in its own session; stopped at clean-up."""
        p = subprocess.Popen([str(c) for c in cmd], start_new_session=True,
                             stdin=kw.pop("stdin", subprocess.DEVNULL), **kw)
        self.cleanup.push(label or Path(str(cmd[0])).name, lambda: stop_process(p))
        return p

    def source(self, mib):
        """A file of `mib` MiB of random bytes and its SHA-256 (made once)."""
        return self.source_kib(mib * 1024)

    def source_kib(self, kib):
        """A file of `kib` KiB of random bytes and its SHA-256 (made once)."""
        if kib not in self.sources:
            path = self.work / f"src-{kib}KiB.bin"
            say(f"writing {kib // 1024} MiB of random data to {path}" if kib >= 1024
                else f"writing {kib} KiB of random data to {path}")
            with open(path, "wb") as f:
                for _ in range(kib // 1024):
                    f.write(os.urandom(MIB))
                f.write(os.urandom(kib % 1024 * 1024))
            self.sources[kib] = (path, sha256(path))
        return self.sources[kib]

    def scratch(self, name):
        d = self.work / name
        d.mkdir(parents=True, exist_ok=True)
        return d


def need(cmd, package):
    """Install `package` with apt-get when `cmd` is missing; BenchError if impossible."""
    if shutil.which(cmd):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise BenchError(f"{cmd} is missing (package {package}); install it or run as root with apt-get")
    say(f"installing {package} (for {cmd}) ...")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
    r = subprocess.run(["apt-get", "install", "-y", "-qq", package], env=env)
    if r.returncode != 0 or not shutil.which(cmd):
        raise BenchError(f"could not install {package} for {cmd}")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MIB):
            h.update(chunk)
    return h.hexdigest()


def verify(path, digest, what):
    """Check a received file's SHA-256, then delete it."""
    got = sha256(path)
    Path(path).unlink()
    if got != digest:
        raise BenchError(f"{what}: the received file's SHA-256 differs ({got[:16]}.. != {digest[:16]}..)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, timeout=10):
    """Wait until something listens on 127.0.0.1:port, without connecting."""
    end = time.time() + timeout
    while time.time() < end:
        out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout
        if out.strip():
            return
        time.sleep(0.01)
    raise BenchError(f"nothing listens on port {port}")


def pin(cpu):
    """taskset prefix for one CPU, or nothing."""
    return [] if cpu is None else ["taskset", "-c", str(cpu)]


def start_tether(ctx, binary, root, *args, key=None, cpu=None, label="tether serve"):
    """`tether serve` on a free loopback port (optionally keyed, pinned);
    returns (process, "127.0.0.1:PORT"). Stopped at clean-up."""
    keyed = ["--key-file", key] if key else []
    log = open(ctx.work / f"serve-{len(ctx.cleanup.actions)}.log", "w")
    p = ctx.spawn(pin(cpu) + [binary, "-q", *keyed, "serve", "--listen", "127.0.0.1:0",
                              "--root", root, *args],
                  label=label, stdout=subprocess.PIPE, stderr=log, text=True)
    line = p.stdout.readline().strip()
    if not line.startswith("listening on "):
        log.flush()
        raise BenchError(f"{label} did not start: {Path(log.name).read_text().strip()[-300:]}")
    return p, line.removeprefix("listening on ")


def keygen(ctx, binary, name="bench.key"):
    path = ctx.work / name
    if not path.exists():
        subprocess.run([binary, "-q", "keygen", path], check=True, capture_output=True)
    return path
