"""Locks between imgbuild processes, on flock(2).

The kernel drops a flock when the process holding it ends, however it ends (kill -9 included), so a lock never
outlives its holder and a lock file left behind never blocks anyone. That makes "is the owner of this directory
still running?" a question the kernel answers: no pid files, no pid reuse, and it holds across the pid and mount
namespaces of unprivileged builds.

  Lock(path)        a lock file, exclusive (one holder) or shared (many readers). acquire(wait=False) fails at
                    once; holders() names the processes holding it (from /proc/locks) for the message.
  lock_path(d)      the lock of a directory d: a hidden file beside it, `.NAME.lock` (mode 0600: no other user
                    can open it, so no other user can hold it).
  claim(d)          make d (a work directory, a temp in a cache) and hold its lock until the block ends. The
                    lock is taken before d exists, so d is never there unclaimed while its owner lives.
  using(d)          a shared hold on an existing directory (a cache entry being read); removal waits for it.
  removable(d)      for removing d: True, with d's lock held exclusively, when no live process claims or uses d;
                    its lock file goes when the block ends.
  is_stale(d)       d exists and no live process holds it: what a killed run left.

A holder that removes its lock file (remove=True, exclusive only) unlinks it while still holding it; a waiter
that then gets the lock on the unlinked file sees that the path names another file (or none) and starts again.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
from pathlib import Path
from typing import Callable, Iterator

from builder.core.errors import BuilderError

log = logging.getLogger("imgbuild")

MODE = 0o600


class Busy(BuilderError):
    """Another imgbuild holds what this one needs (exit 1)."""


def lock_path(d: str | os.PathLike) -> Path:
    d = Path(d)
    return d.parent / f".{d.name}.lock"


def holders(path: str | os.PathLike) -> list[int]:
    """Pids holding a flock on path, as /proc/locks shows them (this pid namespace; 0 when not visible)."""
    try:
        st = os.stat(path, follow_symlinks=False)
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    want = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    pids = []
    for line in lines:
        parts = line.split()
        if len(parts) < 6 or parts[1] == "->" or parts[1] != "FLOCK":
            continue          # "->": a waiter, not a holder
        try:
            major, minor, ino = parts[5].split(":")
            key = (int(major, 16), int(minor, 16), int(ino))
            pid = int(parts[4])
        except ValueError:
            continue
        if key == want and pid not in pids:
            pids.append(pid)
    return pids


def describe(pids: list[int], path: str | os.PathLike | None = None) -> str:
    """'pid 1234' / 'pids 1234, 1240' for a message; the pid written in the lock file when /proc/locks has
    none (the holder is in another pid namespace)."""
    pids = [p for p in pids if p > 0]
    if not pids and path is not None:
        with contextlib.suppress(OSError, ValueError):
            first = Path(path).read_text().split(None, 1)[0]
            pids = [int(first)]
    if not pids:
        return "pid unknown"
    return ("pid " if len(pids) == 1 else "pids ") + ", ".join(map(str, pids))


class Lock:
    """`with Lock(path):` waits for the lock; `lock.acquire(wait=False)` returns False when another holds it.

    Exclusive holders write their pid and `what` into the file (for messages). The parent directory is made
    when missing (and made again if another process removed it meanwhile)."""

    def __init__(self, path: str | os.PathLike, *, shared: bool = False, what: str = "", remove: bool = False):
        self.path = Path(path)
        self.shared = shared
        self.what = what
        self.remove = remove and not shared
        self.fd: int | None = None

    def _open(self) -> int:
        for _ in range(100):
            try:
                return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, MODE)
            except FileNotFoundError:
                self.path.parent.mkdir(parents=True, exist_ok=True)   # removed by a finishing run: again
            except OSError as e:
                if e.errno == errno.ELOOP:
                    raise BuilderError(f"{self.path}: is a symbolic link, not imgbuild's lock file",
                                       "remove it; imgbuild makes its lock files itself") from None
                raise BuilderError(f"{self.path}: cannot open the lock file: {e.strerror}",
                                   "check the directory's owner and permissions") from None
        raise BuilderError(f"{self.path}: its directory keeps disappearing", "retry")

    def acquire(self, wait: bool = True) -> bool:
        assert self.fd is None, "lock already held"
        op = fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, op if wait else op | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            except BaseException:
                os.close(fd)
                raise
            try:
                st = os.stat(self.path, follow_symlinks=False)
            except FileNotFoundError:
                st = None
            fst = os.fstat(fd)
            if st is not None and (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino):
                break
            os.close(fd)      # the holder before us removed the file: lock the one the path names now
        self.fd = fd
        if not self.shared:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()} {self.what}\n".encode(), 0)
        return True

    def wait(self, message: str) -> None:
        """Take the lock; if another holds it, say `message` (with the holder's pid) once, then wait."""
        if self.acquire(wait=False):
            return
        log.info("%s (%s); waiting", message, describe(self.holders(), self.path))
        self.acquire(wait=True)

    def holders(self) -> list[int]:
        return holders(self.path)

    def release(self) -> None:
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            if self.remove:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)      # still holding it: a waiter will see the path changed
        finally:
            os.close(fd)

    def __enter__(self) -> "Lock":
        self.acquire(wait=True)
        return self

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def claim(d: str | os.PathLike, what: str = "", leftover: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Make directory d and hold its lock for the block; the caller removes (or renames) d before the block
    ends. While held, `is_stale(d)` is False for every other process. A d already there was left by a dead run
    of the same pid (its lock is ours now): `leftover(d)` removes it, else that is an error."""
    d = Path(d)
    lock = Lock(lock_path(d), what=what or f"working in {d}", remove=True)
    lock.acquire(wait=True)   # held by another only while it removes a dead run's d of the same name
    try:
        if os.path.lexists(d):
            if leftover is None:
                raise BuilderError(f"{d}: already there, left by an earlier run", "remove it, then retry")
            leftover(d)
        d.mkdir()
        yield d
    finally:
        lock.release()


@contextlib.contextmanager
def using(d: str | os.PathLike) -> Iterator[Path]:
    """A shared hold on d (a cache entry being read): `removable(d)` is False for others until the block ends."""
    d = Path(d)
    with Lock(lock_path(d), shared=True):
        yield d


@contextlib.contextmanager
def removable(d: str | os.PathLike) -> Iterator[bool]:
    """`with removable(d) as free:` free is True when no live process claims or uses d; then d's lock is held
    exclusively for the block (nobody can claim or use d meanwhile) and its lock file is removed at the end.
    The caller removes d inside the block."""
    lock = Lock(lock_path(d), what=f"removing {d}", remove=True)
    if not Path(d).parent.is_dir() or not lock.acquire(wait=False):
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def is_stale(d: str | os.PathLike) -> bool:
    """d exists and no live process claims or uses it (its owner died, or an older imgbuild left it)."""
    if not os.path.lexists(d):
        return False
    with removable(d) as free:
        return free


def owner(d: str | os.PathLike) -> str:
    """Who holds d, for a message: 'pid 1234'."""
    lp = lock_path(d)
    return describe(holders(lp), lp)


def clean_orphan_locks(parent: str | os.PathLike) -> None:
    """Remove lock files in parent whose directory is gone and that nobody holds (a run killed between
    removing its directory and its lock file)."""
    parent = Path(parent)
    with contextlib.suppress(OSError):
        for lf in parent.glob(".*.lock"):
            d = parent / lf.name[1:-len(".lock")]
            if not os.path.lexists(d):
                with removable(d):
                    pass
