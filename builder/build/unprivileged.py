"""Unprivileged builds: an ordinary user builds Debian recipes in a user namespace of their own.

`imgbuild RECIPE` run by a user other than root starts itself again under
`unshare --map-root-user --map-auto --mount --pid --fork --mount-proc`: inside, the user is root (uid 0 maps to
the user, uids 1-65535 to the user's range in /etc/subuid, likewise for groups), so files get their real owners,
chroot and mounts of proc, tmpfs and devpts work, and the outputs belong to the user outside. What a user
namespace cannot do is worked around where the result allows it, and refused where not:

- device nodes (mknod is not allowed): an empty placeholder file stands in the tree, and the tarball (and the
  image's file system) get the real node with its owner and mode. The tarball is the same, bit for bit, as a
  root build's (tests/build/test_unprivileged.py).
- bootstrap: mmdebstrap only (it bind-mounts /dev nodes where it cannot mknod); debootstrap, yum, dnf and
  rpm-native need root.
- /sys in hooks is the host's, bind-mounted (sysfs cannot be mounted without a network namespace).
- not possible: --install-lxc (LXC's directory is root's); an output directory under /dev/shm (mmdebstrap
  bind-mounts the host's /dev/shm into the tree).
"""
from __future__ import annotations

import ctypes
import os
import pwd
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

from builder.core.errors import InputError
from builder.core.paths import SECRETS_ENV, cache_dir, user_secrets_dir
from builder.core.userns import in_userns

ENV = "IMGBUILD_USERNS"
SUBUID, SUBGID = Path("/etc/subuid"), Path("/etc/subgid")


def active() -> bool:
    """This process is an unprivileged build started by reexec()."""
    return os.environ.get(ENV) == "1" and in_userns()


def subrange(user: str, uid: int, path: Path) -> tuple[int, int] | None:
    """The first (start, count) of user's ranges in /etc/subuid or /etc/subgid (by name or number)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[0] in (user, str(uid)) and parts[1].isdigit() and parts[2].isdigit():
            return int(parts[1]), int(parts[2])
    return None


def check(uid: int | None = None, subuid: Path = SUBUID, subgid: Path = SUBGID) -> None:
    """Raise InputError naming what an unprivileged build lacks on this host."""
    uid = os.getuid() if uid is None else uid
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    for tool, pkg in (("unshare", "util-linux"), ("newuidmap", "uidmap"), ("newgidmap", "uidmap"),
                      ("mmdebstrap", "mmdebstrap")):
        if shutil.which(tool) is None:
            raise InputError(f"an unprivileged build needs {tool}, which is not installed",
                             f"ask your admin: apt-get install {pkg}; or build as root")
    for path in (subuid, subgid):
        got = subrange(user, uid, path)
        if got is None or got[1] < 65535:
            raise InputError(f"an unprivileged build needs 65536 ids for {user} in {path}"
                             + ("" if got is None else f" (it has {got[1]})"),
                             f"ask your admin: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 "
                             f"{user}; or build as root")


def reexec() -> NoReturn:
    """Run this very command again as root of a new user namespace; exit with its status (never returns)."""
    check()
    env = dict(os.environ, **{ENV: "1"})
    # decided now, as the user: inside, euid 0 would pick root's places
    env.setdefault("IMGBUILD_CACHE", str(cache_dir()))
    env.setdefault(SECRETS_ENV, str(user_secrets_dir()))
    argv = ["unshare", "--map-root-user", "--map-auto", "--mount", "--pid", "--fork", "--kill-child=SIGTERM",
            "--mount-proc",
            "--propagation", "private", "--", *sys.orig_argv]
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(_run_forwarding(argv, env))


_SI_KERNEL = 0x80     # si_code of a signal the kernel sent (a terminal's Ctrl-C, a hangup), not kill(2)


def _run_forwarding(argv: list[str], env: dict[str, str]) -> int:
    """Run unshare as our child and return the build's exit status. unshare blocks SIGINT and SIGTERM while it
    waits, so a `kill` of the command the user started (had we exec'd unshare) would never reach the build:
    the stop signals sent to us with kill(2) are passed on to the build inside. A terminal's Ctrl-C reaches the
    build itself (the same process group) and is not passed on again. unshare dies with us, and then
    --kill-child stops the build (which cleans up)."""
    def die_with_parent() -> None:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG

    stops = {signal.SIGINT, signal.SIGTERM}
    if signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:     # nohup: stays ignored
        stops.add(signal.SIGHUP)
    proc = subprocess.Popen(argv, env=env, preexec_fn=die_with_parent)
    waited = stops | {signal.SIGCHLD}
    signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    try:
        while proc.poll() is None:
            info = signal.sigtimedwait(waited, 1.0)
            if info is None or info.si_signo == signal.SIGCHLD or info.si_code == _SI_KERNEL:
                continue
            for pid in _children(proc.pid):
                try:
                    os.kill(pid, info.si_signo)
                except ProcessLookupError:
                    pass
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, waited)
    rc = proc.returncode
    return rc if rc >= 0 else 128 - rc


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []
