"""Atomic outputs: files are written under a temp name and renamed; a build's output directory is swapped in
whole, so a failed or interrupted build leaves the previous good output untouched and nothing half-written."""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterator

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


@contextlib.contextmanager
def atomic_file(path: Path, mode: int = 0o644) -> Iterator[IO[bytes]]:
    """`with atomic_file(p) as f: f.write(...)`: p appears complete or not at all."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_atomic(path: Path, data: bytes | str, mode: int = 0o644) -> None:
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
