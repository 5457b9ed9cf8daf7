"""A real LXD daemon of a test's own (Debian's lxd package): started with its own LXD_DIR, a dir storage pool and a
default profile without a network (this host has no free subnet for lxdbr0), and stopped afterwards with
everything it made: instances and images deleted, the daemon shut down (TERM, then KILL, by its pid), what it
mounted under its directory unmounted, the directory removed."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

PRESEED = """\
storage_pools:
- name: default
  driver: dir
profiles:
- name: default
  devices:
    root:
      path: /
      pool: default
      type: disk
"""


@dataclass
class Lxd:
    dir: Path
    env: dict[str, str]

    def lxc(self, *args: str, timeout: int = 300, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(["lxc", *args], env=self.env, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise AssertionError(f"lxc {' '.join(args)}: exit {r.returncode}: {r.stderr.strip()}")
        return r

    def running(self, name: str, timeout: float = 120) -> str:
        """Wait until systemd in the instance says running (or degraded); returns what it said last."""
        end, said = time.monotonic() + timeout, ""
        while time.monotonic() < end:
            r = self.lxc("exec", name, "--", "systemctl", "is-system-running", check=False, timeout=60)
            said = (r.stdout.strip() or r.stderr.strip())
            if said in ("running", "degraded"):
                return said
            time.sleep(1)
        return said


def reason() -> str | None:
    """Why LXD cannot be tested here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    for prog in ("lxd", "lxc"):
        if shutil.which(prog) is None:
            return f"{prog} is not installed (scripts/setup.sh installs the lxd package)"
    return None


def _mounts_under(d: Path) -> list[str]:
    base = os.path.realpath(d)
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return sorted((p for p in points if p == base or p.startswith(base + "/")), key=len, reverse=True)


@contextlib.contextmanager
def lxd_daemon(**env_extra: str) -> Iterator[Lxd]:
    """env_extra: more environment for the daemon and the client (SSL_CERT_FILE to trust a test's server)."""
    d = Path(tempfile.mkdtemp(prefix="imgbuild-test-lxd-", dir="/var/tmp"))
    os.chmod(d, 0o711)                   # the containers' mapped root crosses it to reach its rootfs
    env = dict(os.environ, LXD_DIR=str(d), LXD_CONF=str(d / "client"), **env_extra)
    log = d / "lxd.log"
    proc = subprocess.Popen(["lxd", "--group", "lxd", "--logfile", str(log)], env=env, start_new_session=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lxd = Lxd(d, env)
    try:
        r = subprocess.run(["lxd", "waitready", "--timeout=60"], env=env, capture_output=True, text=True,
                           timeout=90)
        assert r.returncode == 0, f"lxd did not start: {r.stderr} {log.read_text() if log.exists() else ''}"
        r = subprocess.run(["lxd", "init", "--preseed"], input=PRESEED, env=env, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, f"lxd init --preseed: {r.stderr}"
        yield lxd
    finally:
        with contextlib.suppress(Exception):
            for name in lxd.lxc("list", "--format", "csv", "-c", "n", check=False, timeout=60).stdout.split():
                lxd.lxc("delete", "--force", name, check=False, timeout=120)
            for fp in lxd.lxc("image", "list", "--format", "csv", "-c", "f", check=False,
                              timeout=60).stdout.split():
                lxd.lxc("image", "delete", fp, check=False, timeout=60)
            lxd.lxc("profile", "device", "remove", "default", "root", check=False, timeout=60)
            lxd.lxc("storage", "delete", "default", check=False, timeout=60)
        with contextlib.suppress(Exception):
            subprocess.run(["lxd", "shutdown", "--timeout=30"], env=env, capture_output=True, timeout=60)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=20)
        for m in _mounts_under(d):
            subprocess.run(["umount", "-l", m], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)
