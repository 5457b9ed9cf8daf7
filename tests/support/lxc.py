"""Run a real LXC container inside a network namespace the test creates, and always clean up.

The container's NIC is attached to a bridge that exists only inside that namespace, so no traffic ever reaches the
host's own network. Two LXC details shape the commands below:

- LXC's command socket is an abstract unix socket, and those are per network namespace: lxc-start, lxc-attach,
  lxc-stop, lxc-destroy and lxc-info must all run with the namespace's network (`nsenter --net=`).
- lxc-start must see the namespace's bridge in /sys/class/net, so it needs a sysfs mounted from inside the
  namespace; `ip netns exec` does that but also hides /sys/fs/cgroup ("Failed to setup cgroup limits"). So
  lxc-start runs in a private mount namespace (unshare --mount) where a fresh sysfs is mounted over /sys and the
  host's cgroup tree is bind-mounted back onto /sys/fs/cgroup. Those mounts exist only in that private mount
  namespace (held by LXC's monitor) and vanish with it; the host's mount table never changes.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from builder.boot.lxc import container_cgroups, container_pids  # noqa: F401 (tests use them from here)

CGROUP_ROOT = Path("/sys/fs/cgroup")
ADDRESS, MAC, HOSTNAME = "10.0.3.2", "00:16:3e:00:03:02", "vm0"  # the container recipes/debian12.yml makes
BOOT_TIMEOUT = 60


def run(cmd: list[str], timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return r


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path` in this (the host's) mount namespace."""
    out = run(["findmnt", "-rn", "-o", "TARGET"], check=True).stdout.split()
    p = str(path).rstrip("/")
    return [m for m in out if m == p or m.startswith(p + "/")]


def netns_names() -> list[str]:
    return [line.split()[0] for line in run(["ip", "netns", "list"], check=True).stdout.splitlines() if line.strip()]


def remove_cgroups(name: str) -> None:
    """rmdir the (empty) cgroup trees of container `name`, deepest first; errors are ignored."""
    for top in container_cgroups(name):
        for dirpath, _dirs, _files in os.walk(top, topdown=False):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass


class LxcNetns:
    """A network namespace holding a bridge (BRIDGE_CIDR on it), and the LXC containers started inside it."""

    def __init__(self, workdir: Path, bridge_cidr: str = "10.0.3.1/24", tag: str | None = None):
        tag = tag or f"{os.getpid()}{secrets.token_hex(2)}"
        self.netns = f"imgbuild-t{tag}"
        self.bridge = f"ib{tag}"[:15]
        self.bridge_cidr = bridge_cidr
        self.workdir = Path(workdir)
        self.lxcpath = self.workdir / "lxc"
        self.cgs = self.workdir / "cgs"  # mount point used only inside lxc-start's private mount namespace
        self.log = self.workdir / "lxc.log"
        self.started: list[str] = []
        self.created = False

    # ---- namespace and bridge
    def create(self) -> None:
        run(["ip", "netns", "add", self.netns], check=True)
        self.created = True
        run(["ip", "-n", self.netns, "link", "set", "lo", "up"], check=True)
        run(["ip", "-n", self.netns, "link", "add", self.bridge, "type", "bridge"], check=True)
        run(["ip", "-n", self.netns, "addr", "add", self.bridge_cidr, "dev", self.bridge], check=True)
        run(["ip", "-n", self.netns, "link", "set", self.bridge, "up"], check=True)
        self.lxcpath.mkdir(parents=True, exist_ok=True)
        self.cgs.mkdir(parents=True, exist_ok=True)

    def ns(self, *cmd: str) -> list[str]:
        """`cmd` run with the namespace's network (and the host's mounts)."""
        return ["nsenter", f"--net=/run/netns/{self.netns}", *map(str, cmd)]

    def run_ns(self, *cmd: str, timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess:
        return run(self.ns(*cmd), timeout=timeout, check=check)

    # ---- containers
    def adopt(self, name: str) -> None:
        """Make cleanup stop and remove container `name` in LXCPATH (call it before installing the container)."""
        if name not in self.started:
            self.started.append(name)

    def start(self, name: str) -> None:
        """lxc-start -d NAME from LXCPATH, in the namespace (see the module docstring for the mounts)."""
        self.adopt(name)
        script = ('mount --rbind /sys/fs/cgroup "$1" && mount -t sysfs sysfs /sys && '
                  'mount --rbind "$1" /sys/fs/cgroup && exec lxc-start -P "$2" -n "$3" -d -l DEBUG -o "$4"')
        out = self.workdir / "lxc-start.out"
        # stdout/stderr to a file, not a pipe: the daemonized monitor must not hold our pipe open
        with open(out, "w") as f:
            r = subprocess.run(["unshare", "--mount", "--propagation", "private",
                                *self.ns("sh", "-c", script, "sh", self.cgs, self.lxcpath, name, self.log)],
                               stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, timeout=120)
        if r.returncode != 0:
            raise AssertionError(f"lxc-start {name} failed ({r.returncode}):\n{out.read_text()}\n"
                                 f"--- tail of {self.log}:\n{self.log_tail()}")

    def attach(self, name: str, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return self.run_ns("lxc-attach", "-P", self.lxcpath, "-n", name, "--", *cmd, timeout=timeout)

    def state(self, name: str) -> str:
        r = self.run_ns("lxc-info", "-P", self.lxcpath, "-n", name, "-s", "-H", timeout=30)
        return r.stdout.strip() or r.stderr.strip()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, name: str) -> list[str]:
        """Stop and remove container `name`: lxc-stop -k, then (only if needed) SIGKILL what is left in its own
        cgroups, remove its cgroups, lxc-destroy (or delete its directory). Returns what went wrong (not raised:
        cleanup goes on)."""
        problems = []
        r = self.run_ns("lxc-stop", "-P", self.lxcpath, "-n", name, "-k", timeout=60)
        if r.returncode != 0 and "not running" not in (r.stdout + r.stderr):
            problems.append(f"lxc-stop -k {name}: {r.returncode} {r.stderr.strip()}")
        if not _wait(lambda: not container_pids(name), 15):
            left = container_pids(name)
            problems.append(f"{name}: processes left after lxc-stop, killed: {sorted(left)}")
            for pid in left:  # only processes in this container's own cgroups
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            _wait(lambda: not container_pids(name), 15)
        remove_cgroups(name)
        if container_pids(name):
            problems.append(f"{name}: still running, its directory is kept: {self.lxcpath / name}")
            return problems
        d = self.run_ns("lxc-destroy", "-P", self.lxcpath, "-n", name, timeout=120)
        if (self.lxcpath / name).exists():
            if d.returncode != 0:
                problems.append(f"lxc-destroy {name}: {d.returncode} {d.stderr.strip()}")
            shutil.rmtree(self.lxcpath / name, ignore_errors=True)
        return problems

    # ---- cleanup
    def cleanup(self) -> list[str]:
        problems: list[str] = []
        for name in reversed(self.started):
            try:
                problems += self.stop(name)
            except Exception as e:  # noqa: BLE001 - cleanup must go on
                problems.append(f"stopping {name}: {e!r}")
        if self.created:
            r = run(["ip", "netns", "del", self.netns])
            if r.returncode != 0:
                problems.append(f"ip netns del {self.netns}: {r.stderr.strip()}")
        remove_lock_dir(self.lxcpath)
        return problems

    def leftovers(self) -> list[str]:
        """Anything of ours still present on the host after cleanup()."""
        left = []
        if self.netns in netns_names():
            left.append(f"network namespace {self.netns}")
        left += [f"mount {m}" for m in mounts_under(self.workdir)]
        for name in self.started:
            left += [f"cgroup {c}" for c in container_cgroups(name)]
            if (self.lxcpath / name).exists():
                left.append(f"container directory {self.lxcpath / name}")
        return left


def lock_dir(lxcpath: Path) -> Path:
    return Path("/run/lxc/lock") / Path(os.path.abspath(lxcpath)).relative_to("/")


def remove_lock_dir(lxcpath: Path) -> None:
    """LXC keeps lock files under /run/lxc/lock/<lxcpath>/; remove the ones of our own lxcpath (and its parents
    there while they are empty)."""
    d = lock_dir(lxcpath)
    shutil.rmtree(d, ignore_errors=True)
    for parent in d.parents:
        if parent == Path("/run/lxc/lock") or not str(parent).startswith("/run/lxc/lock/"):
            break
        try:
            parent.rmdir()
        except OSError:
            break


def _wait(pred, timeout: float, step: float = 0.2) -> bool:
    end = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() > end:
            return False
        time.sleep(step)


@contextmanager
def lxc_netns(workdir: Path, bridge_cidr: str = "10.0.3.1/24"):
    """Yield an LxcNetns (namespace and bridge created); on exit stop and remove every container started through
    it, delete the namespace, and raise if anything was left behind."""
    sandbox = LxcNetns(workdir, bridge_cidr)
    failed = True
    try:
        sandbox.create()
        yield sandbox
        failed = False
    finally:
        problems = sandbox.cleanup() + [f"left behind: {x}" for x in sandbox.leftovers()]
        for p in problems:
            print(f"LXC test cleanup: {p}", file=sys.stderr)
        if problems and not failed:  # on failure, the original error is the one to see
            raise AssertionError("LXC test cleanup: " + "; ".join(problems))


def tcp_banner(sandbox: LxcNetns, host: str, port: int, timeout: float = 20) -> str:
    """Connect from inside the namespace to host:port and return the first line the server sends ('' if none
    before `timeout`)."""
    code = ("import socket, sys\n"
            "s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)\n"
            "buf = b''\n"
            "while b'\\n' not in buf and len(buf) < 255:\n"
            "    d = s.recv(255)\n"
            "    if not d: break\n"
            "    buf += d\n"
            "print(buf.decode('ascii', 'replace').splitlines()[0] if buf else '')\n")
    end = time.monotonic() + timeout
    last = ""
    while time.monotonic() < end:
        r = sandbox.run_ns(sys.executable, "-c", code, host, str(port), timeout=15)
        if r.returncode == 0 and r.stdout.strip():
            return r.stdout.strip()
        last = r.stderr.strip().splitlines()[-1:] or [""]
        last = last[0]
        time.sleep(0.5)
    return f"(no banner: {last})"


def wait_running(sb, name: str, timeout: float = BOOT_TIMEOUT) -> tuple[str, float]:
    """Poll `systemctl is-system-running` in the container until `running` (or a state it will not leave)."""
    t0 = time.monotonic()
    state = ""
    while time.monotonic() - t0 < timeout:
        r = sb.attach(name, "systemctl", "is-system-running")
        state = r.stdout.strip() or r.stderr.strip()
        if state in ("running", "degraded", "maintenance", "stopping"):
            break
        time.sleep(0.5)
    return state, time.monotonic() - t0


def boot(sb, name: str) -> None:
    """Start container `name` and wait for systemd to be running with no failed unit (the test fails, with
    systemctl --failed and the LXC log, if it is not)."""
    import pytest

    sb.start(name)
    state, took = wait_running(sb, name)
    if state != "running":
        failed = sb.attach(name, "systemctl", "--failed", "--no-pager")
        pytest.fail(f"systemd in {name} is {state!r} after {took:.1f} s (want 'running')\n"
                    f"--- systemctl --failed:\n{failed.stdout}{failed.stderr}\n"
                    f"--- lxc-info: {sb.state(name)}\n--- tail of the LXC log:\n{sb.log_tail()}")
    failed = sb.attach(name, "systemctl", "--failed", "--no-legend", "--plain", "--no-pager")
    assert failed.returncode == 0 and failed.stdout.strip() == "", failed.stdout + failed.stderr


def install_on_bridge(sb, output: Path, name: str, env: dict | None = None) -> Path:
    """`imgbuild install-lxc` of a build's output as container `name` in the sandbox, its NIC moved onto the
    sandbox's bridge (the test fails if the install does); returns the container's rootfs."""
    import re

    from tests.conftest import imgbuild

    r = imgbuild("install-lxc", output, "--name", name, "--lxcpath", sb.lxcpath, **({"env": env} if env else {}))
    assert r.returncode == 0, r.stdout + r.stderr
    cfg = sb.lxcpath / name / "config"
    cfg.write_text(re.sub(r"^lxc\.net\.0\.link = .*$", f"lxc.net.0.link = {sb.bridge}", cfg.read_text(), flags=re.M))
    return sb.lxcpath / name / "rootfs"
