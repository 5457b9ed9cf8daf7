"""Where `imgbuild boot` runs a guest: a network namespace of its own holding one bridge (the guest's gateway
address on it), so the guest's address, MAC and traffic never meet the host's network; and a work directory.

Every name made here carries a random tag (`ib-boot-TAG`), so two boots at once, and a host's own containers and
namespaces, never meet. `ssh_answers` asks the guest's sshd from inside the namespace (ssh-keyscan: a real ssh
handshake, nothing more). `state` is what a kept boot leaves behind (boot.json in the work directory), for
`imgbuild boot --stop DIR`: a file an earlier run left, so every value is checked before it names anything."""
from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from builder.core import proc as runner
from builder.core.errors import InputError
from builder.core.outputs import write_atomic
from builder.core.untrusted import read_json

BRIDGE = "ibbr0"                      # inside the namespace: no other bridge of that name can be there
STATE = "boot.json"
_TAG = re.compile(r"[0-9a-f]{8}")


@dataclass
class State:
    """What a boot made: enough to reach the guest while it runs and to remove everything afterwards."""

    runtime: str
    tag: str
    workdir: str
    name: str                                  # the container / machine name inside the sandbox
    address: str | None = None                 # the guest's address (no prefix)
    pid: int | None = None                     # a process of ours to end (nspawn, qemu)
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def netns(self) -> str:
        return f"ib-boot-{self.tag}"


class Sandbox:
    """The namespace, its bridge and the work directory. Use as a context manager, or call remove()."""

    def __init__(self, runtime: str, gateway: ipaddress.IPv4Interface | None, parent: str | None = None):
        self.tag = secrets.token_hex(4)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"imgbuild-boot-{self.tag}-", dir=parent))
        os.chmod(self.workdir, 0o700)
        self.state = State(runtime, self.tag, str(self.workdir), f"ib-{self.tag}")
        self.gateway = gateway
        self.made_netns = False

    @property
    def netns(self) -> str:
        return self.state.netns

    def create(self) -> "Sandbox":
        runner.run(["ip", "netns", "add", self.netns])
        self.made_netns = True
        runner.run(["ip", "-n", self.netns, "link", "set", "lo", "up"])
        runner.run(["ip", "-n", self.netns, "link", "add", BRIDGE, "type", "bridge"])
        if self.gateway is not None:
            runner.run(["ip", "-n", self.netns, "addr", "add", str(self.gateway), "dev", BRIDGE])
        runner.run(["ip", "-n", self.netns, "link", "set", BRIDGE, "up"])
        return self

    def ns(self, *cmd: object) -> list[str]:
        """cmd with the namespace's network (the host's mounts)."""
        return ["nsenter", f"--net=/run/netns/{self.netns}", *map(str, cmd)]

    def ssh_answers(self, address: str, timeout: float) -> bool:
        """Whether an sshd answers on address:22 from inside the namespace before `timeout` seconds pass."""
        end = time.monotonic() + timeout
        while True:
            r = runner.run(self.ns("ssh-keyscan", "-T", "2", address), capture=True, check=False,
                           max_output=1 << 16)
            keys = [ln.split() for ln in r.stdout.splitlines() if not ln.startswith("#")]
            if any(len(k) >= 3 and k[1].startswith(("ssh-", "ecdsa-")) for k in keys):
                return True
            if time.monotonic() >= end:
                return False
            time.sleep(0.5)

    def keep(self) -> Path:
        """Write boot.json (what --stop reads) and return the work directory."""
        write_atomic(self.workdir / STATE, json.dumps(asdict(self.state), indent=2) + "\n")
        return self.workdir

    def remove(self) -> list[str]:
        """The namespace and the work directory; what could not be removed, as messages."""
        problems = []
        if self.made_netns:
            r = runner.run(["ip", "netns", "del", self.netns], check=False, capture=True)
            if r.returncode != 0:
                problems.append(f"ip netns del {self.netns}: {' '.join(r.tail[-2:])}")
        shutil.rmtree(self.workdir, ignore_errors=True)
        if self.workdir.exists():
            problems.append(f"{self.workdir} was not removed")
        return problems


def read_state(workdir: Path) -> State:
    """boot.json of a kept boot, every value checked (it names processes to end and a namespace to delete)."""
    f = Path(workdir) / STATE
    hint = "give the directory `imgbuild boot --keep` printed"
    if f.is_symlink() or not f.is_file():
        raise InputError(f"{workdir}: no {STATE}: not a boot kept by `imgbuild boot --keep`", hint)
    d = read_json(f, what="imgbuild's boot state", hint=hint)
    try:
        st = State(**{k: d[k] for k in ("runtime", "tag", "workdir", "name", "address", "pid", "extra")})
    except (KeyError, TypeError):
        raise InputError(f"{f}: not the state `imgbuild boot --keep` writes", hint) from None
    ok = (isinstance(st.tag, str) and _TAG.fullmatch(st.tag) and st.name == f"ib-{st.tag}"
          and Path(st.workdir).resolve() == Path(workdir).resolve()
          and (st.pid is None or (isinstance(st.pid, int) and st.pid > 1))
          and isinstance(st.extra, dict) and all(isinstance(v, str) for v in st.extra.values()))
    if not ok:
        raise InputError(f"{f}: its values are not ones `imgbuild boot` writes; nothing was stopped", hint)
    return st


def sandbox_of(st: State) -> Sandbox:
    """The Sandbox a kept boot made, to remove it."""
    sb = Sandbox.__new__(Sandbox)
    sb.tag, sb.workdir, sb.state, sb.gateway, sb.made_netns = st.tag, Path(st.workdir), st, None, True
    return sb


def ours(pid: int | None, program: str, marker: str) -> bool:
    """Whether pid is still the process a boot started: one of its arguments ends in `program` (it is the program,
    or nsenter about to become it) and `marker` is one of them. A pid reused since by something else is never
    signalled."""
    if not pid:
        return False
    for _ in range(50):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                raw = f.read()
        except OSError:
            return False
        if raw:
            break
        # empty: the process is between two programs (nsenter exec()ing the runtime has no arguments yet for a
        # moment) or a zombie; ask again shortly rather than call it gone
        time.sleep(0.02)
    cmd = raw.split(b"\0")
    return any(c.endswith(program.encode()) for c in cmd) and marker.encode() in cmd


def end(pid: int | None, still_ours: Callable[[], bool], sig: int = signal.SIGTERM, grace: float = 10) -> bool:
    """Send `sig` to pid if it is still ours and wait up to `grace` seconds for it to go (reaping it if it is our
    child); True when it is gone."""
    if still_ours():
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
    deadline = time.monotonic() + grace
    while still_ours() and time.monotonic() < deadline:
        reap(pid)
        time.sleep(0.1)
    reap(pid)
    return not still_ours()


def reap(pid: int | None) -> None:
    try:
        if pid:
            os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
