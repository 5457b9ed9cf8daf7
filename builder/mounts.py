"""Scoped mounts: everything mounted for a chroot is unmounted in a finally, also on errors and Ctrl-C.

`chroot_mounts(root)` gives a chroot the API filesystems (/proc, /sys, a private /dev with the basic nodes,
/dev/pts) and takes them all down again. `clean_stale(path)` unmounts what a killed run left under a work dir.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
from pathlib import Path
from typing import Iterator

from . import run as runner
from .errors import CommandError
from .unpriv import in_userns

log = logging.getLogger("imgbuild")

# nodes a chroot needs in its private /dev: name, major, minor
_DEV_NODES = [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)]


def mounted_under(path: str | os.PathLike) -> list[str]:
    """Mount points at or below path, deepest first (from /proc/self/mountinfo)."""
    base = os.path.realpath(path)
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].encode().decode("unicode_escape")
            if mp == base or mp.startswith(base + "/"):
                points.append(mp)
    return sorted(points, key=lambda p: p.count("/"), reverse=True)


def umount(point: str) -> None:
    try:
        runner.run(["umount", point], quiet=True)
    except CommandError:
        runner.run(["umount", "--lazy", point], quiet=True)


def clean_stale(path: str | os.PathLike) -> list[str]:
    """Unmount whatever is still mounted under path (left by a killed run). Returns what was unmounted."""
    if not os.path.exists(path):
        return []
    points = mounted_under(path)
    for p in points:
        log.warning("unmounting %s, left mounted by an earlier run", p)
        umount(p)
    return points


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM while mounting or unmounting, so a Ctrl-C never strands half a mount stack."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class MountStack:
    """Mounts pushed here are unmounted in reverse order when the `with` block ends, however it ends."""

    def __init__(self) -> None:
        self.points: list[str] = []

    def mount(self, source: str, target: Path, fstype: str | None = None, options: str | None = None,
              bind: bool = False, recursive: bool = False) -> None:
        argv = ["mount"]
        if bind:
            argv.append("--rbind" if recursive else "--bind")
        if fstype:
            argv += ["-t", fstype]
        if options:
            argv += ["-o", options]
        argv += [source, str(target)]
        with _signals_deferred():
            runner.run(argv, quiet=True)
            self.points.append(str(target))

    def close(self) -> None:
        with _signals_deferred():
            errors = []
            while self.points:
                p = self.points.pop()
                try:
                    umount(p)
                except CommandError as e:
                    errors.append(e)
            if errors:
                raise errors[0]

    def __enter__(self) -> "MountStack":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def chroot_mounts(root: Path) -> Iterator[MountStack]:
    """/proc, /sys (read-only), a private tmpfs /dev with the basic nodes, /dev/pts and /dev/shm in root."""
    root = Path(root)
    with MountStack() as ms:
        for d in ("proc", "sys", "dev"):
            (root / d).mkdir(exist_ok=True)
        userns = in_userns()
        ms.mount("proc", root / "proc", "proc", "nosuid,nodev,noexec")
        if userns:   # sysfs needs a network namespace of its own: the host's, bound
            ms.mount("/sys", root / "sys", bind=True, recursive=True)
        else:
            ms.mount("sysfs", root / "sys", "sysfs", "ro,nosuid,nodev,noexec")
        ms.mount("imgbuild-dev", root / "dev", "tmpfs", "mode=0755,nosuid,size=16m")
        dev = root / "dev"
        for name, major, minor in _DEV_NODES:
            if userns:   # no mknod: the host's nodes, bound onto empty files
                (dev / name).touch()
                ms.mount(f"/dev/{name}", dev / name, bind=True)
            else:
                os.mknod(dev / name, 0o666 | 0o020000, os.makedev(major, minor))
                os.chmod(dev / name, 0o666)
        for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                             ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx")):
            os.symlink(target, dev / name)
        (dev / "pts").mkdir()
        (dev / "shm").mkdir(mode=0o1777)
        os.chmod(dev / "shm", 0o1777)
        ms.mount("devpts", dev / "pts", "devpts", "newinstance,ptmxmode=0666,mode=0620,gid=5")
        yield ms
