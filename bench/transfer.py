#!/usr/bin/env python3
"""Loopback file transfer, side by side: tether (SHA-256 verified, atomic)
against socat (raw bytes, no verification) and scp (SSH, encrypted + MAC).

Run with `make bench` (as root on a machine with apt access the first time:
it installs socat, openssh-server and GNU time when missing). Environment:
BENCH_MB (file size, default 1024), BENCH_RUNS (runs per tool, default 5).
Prints a table and writes it to bench/results/transfer-<timestamp>.md.
"""

import hashlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MB = int(os.environ.get("BENCH_MB", "1024"))
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
TETHER = ROOT / "target" / "release" / "tether"


def need(cmd, package):
    if shutil.which(cmd) is None:
        print(f"installing {package} for the comparison ...", file=sys.stderr)
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on port {port}")


def timed(cmd, **kw):
    """Run cmd under GNU time; returns (seconds, peak RSS KiB)."""
    with tempfile.NamedTemporaryFile("r") as tf:
        t0 = time.perf_counter()
        subprocess.run(["/usr/bin/time", "-f", "%M", "-o", tf.name] + cmd, check=True,
                       stdout=subprocess.DEVNULL, **kw)
        dt = time.perf_counter() - t0
        return dt, int(tf.read().strip().splitlines()[-1])


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def main():
    need("socat", "socat")
    need("sshd", "openssh-server")
    if not Path("/usr/bin/time").exists():
        need("time", "time")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "tether-host"], cwd=ROOT, check=True)

    work = Path(tempfile.mkdtemp(prefix="tether-bench-"))
    procs = []
    try:
        src = work / "src.bin"
        with open(src, "wb") as f:
            block = os.urandom(1 << 20)
            for i in range(MB):
                f.write(block[i % 7:] + block[: i % 7])
        digest = sha256(src)
        srv = work / "srv"
        srv.mkdir()
        results = {}  # name -> list of (seconds, client_rss)

        # tether server
        port = free_port()
        with open(work / "server.log", "w") as log:
            p = subprocess.Popen([str(TETHER), "-q", "serve", "--listen", f"127.0.0.1:{port}",
                                  "--root", str(srv)], stdout=subprocess.DEVNULL, stderr=log)
        procs.append(p)
        wait_port(port)
        host = f"127.0.0.1:{port}"

        def run(name, fn, check):
            for _ in range(RUNS):
                results.setdefault(name, []).append(fn())
                if check() != digest:
                    raise RuntimeError(f"{name}: received file differs")

        run("tether put (verified)",
            lambda: timed([str(TETHER), "-q", "put", host, str(src), "up.bin", "--force"]),
            lambda: sha256(srv / "up.bin"))
        run("tether get (verified)",
            lambda: timed([str(TETHER), "-q", "get", host, "up.bin", str(work / "down.bin"), "--force"]),
            lambda: sha256(work / "down.bin"))

        # The same with a key (every frame MACed) and with --encrypt (ChaCha20-Poly1305).
        keyfile = work / "bench.key"
        subprocess.run([str(TETHER), "-q", "keygen", str(keyfile)], check=True)
        kport = free_port()
        with open(work / "server-keyed.log", "w") as log:
            kp = subprocess.Popen([str(TETHER), "-q", "--key-file", str(keyfile), "serve", "--listen",
                                   f"127.0.0.1:{kport}", "--root", str(srv)],
                                  stdout=subprocess.DEVNULL, stderr=log)
        procs.append(kp)
        wait_port(kport)
        khost = f"127.0.0.1:{kport}"
        for label, extra in (("keyed, sealed", []), ("keyed, --encrypt", ["--encrypt"])):
            base = [str(TETHER), "-q", "--key-file", str(keyfile)] + extra
            run(f"tether put ({label})",
                lambda base=base: timed(base + ["put", khost, str(src), "upk.bin", "--force"]),
                lambda: sha256(srv / "upk.bin"))
            run(f"tether get ({label})",
                lambda base=base: timed(base + ["get", khost, "upk.bin", str(work / "downk.bin"), "--force"]),
                lambda: sha256(work / "downk.bin"))

        # socat: one listener per run
        def socat(block_opts):
            def once():
                sp = free_port()
                dst = work / "socat.bin"
                recv = subprocess.Popen(["socat", "-u"] + block_opts +
                                        [f"TCP-LISTEN:{sp},reuseaddr", f"OPEN:{dst},creat,trunc"])
                wait_port_listen(sp)
                t, rss = timed(["socat", "-u"] + block_opts + [f"OPEN:{src}", f"TCP:127.0.0.1:{sp}"])
                recv.wait(timeout=120)
                return t, rss
            return once

        def wait_port_listen(p):
            # socat exits after one connection, so probe with ss rather than connecting.
            end = time.time() + 10
            while time.time() < end:
                out = subprocess.run(["ss", "-Hltn", f"sport = :{p}"], capture_output=True, text=True).stdout
                if out.strip():
                    return
                time.sleep(0.02)
            raise RuntimeError("socat did not listen")

        run("socat (raw, default 8 KiB blocks)", socat([]), lambda: sha256(work / "socat.bin"))
        run("socat -b 262144 (raw)", socat(["-b", "262144"]), lambda: sha256(work / "socat.bin"))

        # scp over a private sshd on loopback
        sshdir = work / "ssh"
        sshdir.mkdir()
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(sshdir / "host")], check=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(sshdir / "user")], check=True)
        shutil.copy(sshdir / "user.pub", sshdir / "authorized_keys")
        os.chmod(sshdir / "authorized_keys", 0o600)
        sport = free_port()
        (sshdir / "sshd_config").write_text(
            f"Port {sport}\nListenAddress 127.0.0.1\nHostKey {sshdir}/host\n"
            f"AuthorizedKeysFile {sshdir}/authorized_keys\nPermitRootLogin prohibit-password\n"
            f"UsePAM no\nPidFile {sshdir}/pid\nStrictModes no\nSubsystem sftp internal-sftp\n")
        Path("/run/sshd").mkdir(exist_ok=True)
        sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(sshdir / "sshd_config")],
                                stderr=subprocess.DEVNULL)
        procs.append(sshd)
        wait_port(sport)
        ssh_opts = ["-P", str(sport), "-i", str(sshdir / "user"), "-o", "StrictHostKeyChecking=no",
                    "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-q"]
        run("scp (ssh, default cipher)",
            lambda: timed(["scp"] + ssh_opts + [str(src), f"root@127.0.0.1:{work}/scp.bin"]),
            lambda: sha256(work / "scp.bin"))

        lines = table(results)
        print("\n".join(lines))
        out = ROOT / "bench" / "results" / time.strftime("transfer-%Y%m%d-%H%M%S.md")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(lines) + "\n")
        print(f"\nwritten to {out.relative_to(ROOT)}")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


def table(results):
    size = MB * (1 << 20)
    base = statistics.median(t for t, _ in results["tether put (verified)"])
    lines = [
        f"# Loopback transfer of {MB} MiB, {RUNS} runs each, {time.strftime('%Y-%m-%d %H:%M')}",
        "",
        f"Machine: {os.cpu_count()} CPUs; {os.uname().release}. Median of {RUNS} runs; "
        "time is the sending command's wall time (socat: until the sender exits).",
        "",
        "| tool | median s | MB/s | min s | max s | time vs tether put (no key) | client peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, runs in results.items():
        ts = [t for t, _ in runs]
        med = statistics.median(ts)
        rss = max(r for _, r in runs) / 1024
        lines.append(f"| {name} | {med:.3f} | {size / med / 1e6:.0f} | {min(ts):.3f} | {max(ts):.3f} | "
                     f"{med / base:.2f}x | {rss:.1f} |")
    lines += ["", "tether hashes every byte with SHA-256 on both ends, fsyncs and renames only a verified file; "
              "keyed adds an HMAC-SHA256 tag per frame, --encrypt ChaCha20-Poly1305 instead. "
              "socat verifies nothing and does not fsync; scp encrypts and MACs (it does not hash the file end to end). "
              "Over loopback both ends share the same two cores, so CPU costs are paid twice on one machine."]
    return lines


if __name__ == "__main__":
    main()
