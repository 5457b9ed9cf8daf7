"""Atomic outputs: files are written under a temp name and renamed; a build's output directory is swapped in
whole, so a failed or interrupted build leaves the previous good output untouched and nothing half-written."""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import IO, Iterator

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


SECRET_FILE = 0o600     # an output that holds a secret (a password hash, a cluster secret ...)
SECRET_DIR = 0o700      # and the output directory that holds it


def umask() -> int:
    """This process's umask, read without changing it (Linux: /proc/self/status)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/self/status") as f:
            return int(next(line for line in f if line.startswith("Umask:")).split()[1], 8)
    old = os.umask(0o022)
    os.umask(old)
    return old


def file_mode() -> int:
    """The mode an ordinary new file gets under the user's umask (0644 under umask 022, 0600 under 077)."""
    return 0o666 & ~umask()


def dir_mode() -> int:
    return 0o777 & ~umask()


def set_modes(directory: Path, files: dict[str, Path], secret: set[str]) -> None:
    """An output directory's modes: the files whose kinds are in secret 0600 and the directory 0700; every
    other file (and the directory, when nothing in it is secret) as the umask says. A directory artifact (a
    machine tree) keeps its own modes, the guest's; the 0700 directory around it keeps it private."""
    for kind, path in files.items():
        st = os.lstat(path)
        if stat.S_ISREG(st.st_mode):
            os.chmod(path, SECRET_FILE if kind in secret else file_mode())
    os.chmod(directory, SECRET_DIR if secret else dir_mode())


@contextlib.contextmanager
def atomic_file(path: Path, mode: int | None = None) -> Iterator[IO[bytes]]:
    """`with atomic_file(p) as f: f.write(...)`: p appears complete or not at all. Its mode: mode, else what
    the umask gives a new file; it is 0600 while it is written."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode() if mode is None else mode)
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_atomic(path: Path, data: bytes | str, mode: int | None = None) -> None:
    with atomic_file(path, mode) as f:
        f.write(data.encode() if isinstance(data, str) else data)


def _exchange(a: Path, b: Path) -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        return False
    return fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


def publish(stage: Path, final: Path) -> None:
    """Put the finished stage directory at `final`, replacing a previous output in one step."""
    stage, final = Path(stage), Path(final)
    for f in stage.iterdir():
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    if final.exists() and _exchange(stage, final):
        shutil.rmtree(stage)  # now holds the previous output
    elif final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.rename(final, old)
        os.rename(stage, final)
        shutil.rmtree(old)
    else:
        os.rename(stage, final)
    dfd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
