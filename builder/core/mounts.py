"""Scoped mounts: everything mounted for a chroot is unmounted in a finally, also on errors and Ctrl-C.

`chroot_mounts(root)` gives a chroot the API filesystems (/proc, /sys, a private /dev with the basic nodes,
/dev/pts) and takes them all down again. `clean_stale(path)` unmounts what a killed run left under a work dir.

A tree is untrusted: its /proc, /sys or /dev may be a link (absolute, or `../../..`) that `mount` would follow
out of the tree, onto the host's own /dev. Every mount point inside a tree is opened without following any
link (RootFS.mount_point: a link anywhere on the way is refused, naming it), and mount is handed that open
directory (/proc/PID/fd/N, not canonicalized), so what is mounted is exactly the directory that was checked. At
unmount time the point is checked again: it is unmounted only if the path still leads, without a link, to the
filesystem we mounted there.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from builder.core import proc as runner
from builder.core.errors import CommandError, UnsafePath
from builder.core.rootfs import RootFS
from builder.core.userns import in_userns

log = logging.getLogger("imgbuild")

# nodes a chroot needs in its private /dev: name, major, minor
_DEV_NODES = [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)]
# the mount points chroot_mounts uses, checked all before the first mount
_POINTS = ("/proc", "/sys", "/dev")


def _unescape(field: str) -> str:
    """A mountinfo path: space, tab, newline and backslash come as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounted_under(path: str | os.PathLike) -> list[str]:
    """Mount points at or below path, deepest first (from /proc/self/mountinfo)."""
    base = os.path.realpath(path)
    points = []
    with open("/proc/self/mountinfo", errors="surrogateescape") as f:
        for line in f:
            mp = _unescape(line.split()[4])
            if mp == base or mp.startswith(base + "/"):
                points.append(mp)
    return sorted(points, key=lambda p: p.count("/"), reverse=True)


def umount(point: str) -> None:
    """Unmount point (a path without links: not canonicalized, so umount cannot follow one made meanwhile)."""
    try:
        runner.run(["umount", "--no-canonicalize", point])
    except CommandError:
        runner.run(["umount", "--no-canonicalize", "--lazy", point])


def clean_stale(path: str | os.PathLike) -> list[str]:
    """Unmount whatever is still mounted under path (left by a killed run). Returns what was unmounted."""
    if not os.path.exists(path):
        return []
    points = mounted_under(path)
    for p in points:
        log.warning("unmounting %s, left mounted by an earlier run", p)
        umount(p)
    return points


def remove_tree(d: str | os.PathLike) -> None:
    """Unmount what is mounted under d (a killed run's), then remove d; never removes through a mount that
    stayed (UnsafePath naming it)."""
    if not os.path.lexists(d):
        return
    if not os.path.islink(d):
        for p in mounted_under(d):
            umount(p)
        left = mounted_under(d)
        if left:
            raise UnsafePath(f"{d}: {left[0]} is still mounted under it, so it is not removed",
                             f"unmount it (umount -l {left[0]}), then remove {d}")
    if os.path.islink(d) or not os.path.isdir(d):
        os.unlink(d)
        return
    shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM while mounting or unmounting, so a Ctrl-C never strands half a mount stack."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@dataclass(frozen=True)
class _InTree:
    """A mount inside a tree: where, and what was mounted there (device and inode of the mounted root)."""

    root: RootFS
    path: str
    dev: int
    ino: int

    @property
    def host(self) -> str:
        return str(self.root.path.joinpath(*[c for c in self.path.split("/") if c]))

    def still_ours(self) -> bool:
        """The path still leads, without a link, to the root of what we mounted there."""
        try:
            fd = self.root.mount_point(self.path, create=None, mounted=True)
        except (UnsafePath, OSError):
            return False
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        return (st.st_dev, st.st_ino) == (self.dev, self.ino)


def _argv(source: str, target: str, fstype: str | None, options: str | None, bind: bool, recursive: bool
          ) -> list[str]:
    argv = ["mount"]
    if bind:
        argv.append("--rbind" if recursive else "--bind")
    if fstype:
        argv += ["-t", fstype]
    if options:
        argv += ["-o", options]
    return argv + [source, target]


class MountStack:
    """Mounts pushed here are unmounted in reverse order when the `with` block ends, however it ends."""

    def __init__(self) -> None:
        self.points: list[str] = []
        self._in_tree: dict[int, _InTree] = {}     # index in points -> the check made before unmounting it

    def mount(self, source: str, target: Path, fstype: str | None = None, options: str | None = None,
              bind: bool = False, recursive: bool = False) -> None:
        """Mount on a host path of imgbuild's own making (e.g. a fresh temp dir); inside a tree, mount_in."""
        argv = _argv(source, str(target), fstype, options, bind, recursive)
        with _signals_deferred():
            runner.run(argv)
            self.points.append(str(target))

    def mount_in(self, root: RootFS, path: str, source: str, fstype: str | None = None, options: str | None = None,
                 bind: bool = False, recursive: bool = False, create: str = "dir") -> str:
        """Mount on `path` inside the tree: never through a link (refused with UnsafePath naming it); mount is
        handed the very directory that was checked. Returns the host path."""
        fd = root.mount_point(path, create=create)
        try:
            # the directory checked, as an open file of this process: the kernel mounts on exactly that
            argv = _argv(source, f"/proc/{os.getpid()}/fd/{fd}", fstype, options, bind, recursive)
            argv.insert(1, "--no-canonicalize")
            host = str(root.path.joinpath(*[c for c in path.split("/") if c]))
            with _signals_deferred():
                runner.run(argv)
                self.points.append(host)
                # what is mounted there now (the mount's root), checked again before unmounting
                top = root.mount_point(path, create=None, mounted=True)
                try:
                    st = os.fstat(top)
                finally:
                    os.close(top)
                self._in_tree[len(self.points) - 1] = _InTree(root, path, st.st_dev, st.st_ino)
        finally:
            os.close(fd)
        return host

    def close(self) -> None:
        with _signals_deferred():
            errors = []
            while self.points:
                p = self.points.pop()
                check = self._in_tree.pop(len(self.points), None)
                if check is not None and not check.still_ours():
                    # unmounted (and replaced) from inside: the path may now lead anywhere; nothing of ours there
                    log.warning("%s is no longer the mount imgbuild made; left alone", p)
                    continue
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
def chroot_mounts(root: RootFS | Path | str) -> Iterator[MountStack]:
    """/proc, /sys (read-only), a private tmpfs /dev with the basic nodes, /dev/pts and /dev/shm in root.

    A mount point that is a link in the tree (or has one on the way) is refused before anything is mounted:
    UnsafePath naming it."""
    root = root if isinstance(root, RootFS) else RootFS(root)
    for point in _POINTS:      # all checked (and made if missing) before the first mount
        os.close(root.mount_point(point))
    with MountStack() as ms:
        userns = in_userns()
        ms.mount_in(root, "/proc", "proc", "proc", "nosuid,nodev,noexec")
        if userns:   # sysfs needs a network namespace of its own: the host's, bound
            ms.mount_in(root, "/sys", "/sys", bind=True, recursive=True)
        else:
            ms.mount_in(root, "/sys", "sysfs", "sysfs", "ro,nosuid,nodev,noexec")
        ms.mount_in(root, "/dev", "imgbuild-dev", "tmpfs", "mode=0755,nosuid,size=16m")
        # /dev is now our own empty tmpfs
        for name, major, minor in _DEV_NODES:
            if userns:   # no mknod: the host's nodes, bound onto empty files
                root.write(f"/dev/{name}", b"", 0o666)
                ms.mount_in(root, f"/dev/{name}", f"/dev/{name}", bind=True, create="file")
            else:
                root.mknod(f"/dev/{name}", "c", major, minor, 0o666)
        for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                             ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx")):
            root.symlink(target, f"/dev/{name}")
        root.mkdir("/dev/pts")
        root.mkdir("/dev/shm", 0o1777, reset=True)
        ms.mount_in(root, "/dev/pts", "devpts", "devpts", "newinstance,ptmxmode=0666,mode=0620,gid=5")
        yield ms
