"""Atomic outputs: files are written under a temp name and renamed; a build's output directory is swapped in
whole, so a failed or interrupted build leaves the previous good output untouched and nothing half-written."""
from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import IO, Iterator

from builder.core.errors import InputError
from builder.core.net import file_digest
from builder.core.untrusted import read_json

log = logging.getLogger("imgbuild")

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


# SHA256SUMS and its signatures (builder/core/sums.py), beside the manifest in every output
CHECKSUM_FILES = ("SHA256SUMS", "SHA256SUMS.asc", "SHA256SUMS.sig")
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
    if path.is_dir() and not path.is_symlink():
        raise InputError(f"{path}: is a directory; cannot write a file there", "give the path of a file")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except (FileNotFoundError, NotADirectoryError) as e:     # a path the user gave, in no directory
        why = "does not exist" if isinstance(e, FileNotFoundError) else "is not a directory"
        raise InputError(f"{path}: cannot write it: {path.parent} {why}",
                         "create the directory first, or give a path in an existing one") from None
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


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (renameat2 RENAME_EXCHANGE); False where the kernel or libc cannot."""
    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        return False
    return fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


_exchange = exchange

MOVE_HINT = "move it away (or remove it yourself), or build into another directory with -o"


def _entries(d: Path) -> list[str]:
    try:
        return sorted(os.listdir(d))
    except OSError as e:
        raise InputError(f"{d}: cannot read the directory imgbuild would replace: {e.strerror}", MOVE_HINT) from None


def previous_output(final: Path) -> dict | None:
    """final's manifest when final is an output imgbuild wrote: a real directory (not a symlink) whose
    manifest.json is an object naming it, with a list of artifacts that are plain file names in it. None when
    there is no manifest.json; InputError (naming the file) when there is one of another shape."""
    f = Path(final) / "manifest.json"
    if not f.is_file() or f.is_symlink():
        return None
    try:
        m = read_json(f, what="an imgbuild manifest", hint=MOVE_HINT)
    except InputError as e:
        raise InputError(f"{final} is not an output imgbuild wrote: {e.message}", MOVE_HINT) from None
    arts = m.get("artifacts")
    if m.get("name") != Path(final).name or not isinstance(arts, list) or not all(
            isinstance(a, dict) and isinstance(a.get("path"), str) and _plain(a["path"]) for a in arts):
        raise InputError(f"{f}: not the manifest of an imgbuild output named {Path(final).name!r} (its name or "
                         "artifacts are not what imgbuild writes)", MOVE_HINT)
    return m


def _plain(name: str) -> bool:
    return bool(name) and "/" not in name and "\0" not in name and name not in (".", "..")


def check_replaceable(final: Path) -> None:
    """Refuse (InputError, exit 2) to replace `final` unless it is absent, an empty directory, or an output
    imgbuild wrote (previous_output) holding nothing but its manifest and its artifacts: a directory of the
    user's, or files the user put into an old output, are never deleted."""
    final = Path(final)
    if not os.path.lexists(final):
        return
    if final.is_symlink() or not final.is_dir():
        kind = "a symbolic link" if final.is_symlink() else "not a directory"
        raise InputError(f"{final} is {kind}; imgbuild replaces only an output directory it wrote", MOVE_HINT)
    entries = _entries(final)
    if not entries:
        return
    m = previous_output(final)
    if m is None:
        raise InputError(f"{final} is not an imgbuild output (no manifest.json) and is not empty; imgbuild "
                         f"replaces only its own outputs ({len(entries)} entries there, e.g. "
                         f"{', '.join(entries[:3])})", MOVE_HINT)
    ours = {"manifest.json", *CHECKSUM_FILES, *(a["path"] for a in m["artifacts"])}
    foreign = [e for e in entries if e not in ours]
    if foreign:
        raise InputError(f"{final} holds files imgbuild did not write: {', '.join(foreign[:5])}"
                         f"{' ...' if len(foreign) > 5 else ''}; a rebuild would delete them", MOVE_HINT)


def publish(stage: Path, final: Path) -> None:
    """Put the finished stage directory at `final`, replacing a previous output in one step. Only an output
    imgbuild wrote, or an empty directory, is replaced (check_replaceable)."""
    stage, final = Path(stage), Path(final)
    check_replaceable(final)
    for f in stage.iterdir():
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    if os.path.lexists(final) and exchange(stage, final):
        _remove_dir(stage)  # now holds the previous output
    elif os.path.lexists(final):
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.rename(final, old / final.name)
        os.rename(stage, final)
        shutil.rmtree(old)
    else:
        os.rename(stage, final)
    dfd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _remove_dir(d: Path) -> None:
    """rmtree of a directory imgbuild just swapped out; a symlink put there meanwhile is left alone."""
    if d.is_symlink() or not d.is_dir():
        log.warning("%s is no longer the directory imgbuild swapped out; left alone", d)
        return
    shutil.rmtree(d)


# ------------------------------------------------------------------ the kept tree (--keep-tree)


def _tree_marker(kept: Path) -> Path:
    return kept.with_name(f".{kept.name}.imgbuild")


def check_tree_replaceable(kept: Path) -> None:
    """Refuse to replace OUTPUT/NAME.rootfs unless it is absent, empty, or the very tree an earlier --keep-tree
    left (its marker beside it, .NAME.rootfs.imgbuild, names its device and inode)."""
    kept = Path(kept)
    if not os.path.lexists(kept):
        return
    if kept.is_symlink() or not kept.is_dir():
        raise InputError(f"{kept} is {'a symbolic link' if kept.is_symlink() else 'not a directory'}; --keep-tree "
                         "replaces only a tree it kept before", MOVE_HINT)
    if not _entries(kept):
        return
    marker = _tree_marker(kept)
    st = kept.lstat()
    if marker.is_file() and not marker.is_symlink():
        try:
            m = read_json(marker, what="imgbuild's note of a kept tree", hint=MOVE_HINT)
        except InputError:
            m = {}
        if m.get("name") == kept.name and m.get("device") == st.st_dev and m.get("inode") == st.st_ino:
            return
    raise InputError(f"{kept} is not a tree an earlier --keep-tree left here (no matching {marker.name} "
                     "beside it); imgbuild will not delete it", MOVE_HINT)


def keep_tree(tree: Path, kept: Path) -> None:
    """Move the finished tree to `kept` (OUTPUT/NAME.rootfs), replacing only a tree kept there before."""
    tree, kept = Path(tree), Path(kept)
    check_tree_replaceable(kept)
    old = None
    if os.path.lexists(kept):
        old = Path(tempfile.mkdtemp(prefix=f".{kept.name}.old-", dir=kept.parent))
        os.rename(kept, old / kept.name)
    os.rename(tree, kept)
    st = kept.lstat()
    write_atomic(_tree_marker(kept), json.dumps({"name": kept.name, "device": st.st_dev, "inode": st.st_ino})
                 + "\n")
    if old is not None:
        shutil.rmtree(old)


def sha256(path: Path) -> str:
    """An output's sha256, as manifests and caches record it (net.file_digest, the one digest function)."""
    return file_digest(path)
