"""A throwaway sshd on a high loopback port, with its own host key, user
key and config in the scratch directory; the system's sshd and its
configuration are never touched. Stopped (and /run/sshd removed, if it
was made here) at clean-up."""

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .common import BenchError, free_port, need, wait_listening


@dataclass
class Sshd:
    port: int
    user_key: Path

    def ssh_opts(self):
        """Options shared by ssh and scp (port flag excluded: -p vs -P)."""
        return ["-i", str(self.user_key), "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                "-o", "BatchMode=yes"]

    def ssh(self, *args):
        return ["ssh", "-p", str(self.port), *self.ssh_opts(), "root@127.0.0.1", *args]

    def scp(self, cipher=None):
        c = ["-c", cipher] if cipher else []
        return ["scp", "-q", "-P", str(self.port), *self.ssh_opts(), *c]

    def negotiated_cipher(self):
        """The cipher ssh picks by default (from `ssh -v`)."""
        r = subprocess.run(self.ssh("-v", "true"), capture_output=True, text=True)
        for line in r.stderr.splitlines():
            if "kex: client->server cipher:" in line:
                return line.split("cipher:")[1].split()[0]
        return "unknown"


def config(d, port):
    return (f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host\n"
            f"AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n"
            f"PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            f"PidFile {d}/sshd.pid\nStrictModes no\nSubsystem sftp internal-sftp\n")


def start(ctx):
    if os.geteuid() != 0:
        raise BenchError("the throwaway sshd logs in as root and needs root to start")
    need("sshd", "openssh-server")
    need("ssh", "openssh-client")
    d = ctx.scratch("sshd")
    for name in ("host", "user"):
        if not (d / name).exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", d / name], check=True)
    shutil.copy(d / "user.pub", d / "authorized_keys")
    os.chmod(d / "authorized_keys", 0o600)
    port = free_port()
    (d / "sshd_config").write_text(config(d, port))
    privsep = Path("/run/sshd")
    if not privsep.exists():
        privsep.mkdir(mode=0o755)
        ctx.cleanup.push("/run/sshd", lambda: privsep.rmdir())
    ctx.spawn(["/usr/sbin/sshd", "-D", "-e", "-f", d / "sshd_config"], label="sshd",
              stderr=open(d / "sshd.log", "w"))
    wait_listening(port)
    s = Sshd(port, d / "user")
    r = subprocess.run(s.ssh("true"), capture_output=True, text=True)
    if r.returncode != 0:
        raise BenchError(f"cannot log in to the throwaway sshd: {r.stderr.strip()[-200:]}")
    return s
