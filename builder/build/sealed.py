"""A sealed tree: a recorded listing of every file, checked before the tree is used again.

`seal(tree)` lists every file under tree (nothing followed): path, type, mode, uid, gid, size, mtime_ns and
ctime_ns, and what identifies its contents: the sha256 of a regular file, the target of a link, the device
number of a node. `check(tree, listing)` compares the metadata only (one lstat per file: a fraction of a second for
a Debian tree), which finds a file changed, added, removed, chmod'ed or chown'ed; the ctime finds a file written
and its mtime set back, since no program can set a ctime. `verify(tree, listing)` also reads every file and
compares its contents: `imgbuild cache verify`.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from pathlib import Path
from typing import Iterator

# path -> [type, mode, uid, gid, size, mtime_ns, ctime_ns, contents]
Listing = dict[str, list]

_TYPES = {stat.S_IFREG: "f", stat.S_IFDIR: "d", stat.S_IFLNK: "l", stat.S_IFCHR: "c", stat.S_IFBLK: "b",
          stat.S_IFIFO: "p", stat.S_IFSOCK: "s"}


def _walk(tree: str) -> Iterator[tuple[str, os.stat_result]]:
    """('/', st) and (relative path, lstat) of everything under tree, parents first; never through a link."""
    yield "/", os.lstat(tree)
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(tree + rel) as it:
            for e in sorted(it, key=lambda e: e.name):
                path = f"{rel}/{e.name}"
                st = e.stat(follow_symlinks=False)
                yield path, st
                if stat.S_ISDIR(st.st_mode):
                    stack.append(path)


def _meta(st: os.stat_result) -> list:
    kind = _TYPES.get(stat.S_IFMT(st.st_mode), "?")
    size = st.st_size if kind in "fl" else 0      # a directory's size is the file system's business
    return [kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, size, st.st_mtime_ns,
            st.st_ctime_ns if kind != "d" else 0]


def _contents(tree: str, path: str, st: os.stat_result) -> str:
    full = tree + path if path != "/" else tree
    if stat.S_ISREG(st.st_mode):
        fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    if stat.S_ISLNK(st.st_mode):
        return os.fsdecode(os.readlink(full))
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    return ""


def seal(tree: str | os.PathLike) -> Listing:
    """The listing of tree, contents included."""
    tree = os.fspath(tree)
    return {p: _meta(st) + [_contents(tree, p, st)] for p, st in _walk(tree)}


def _t(ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ns // 1_000_000_000)) + f".{ns % 1_000_000_000:09d}"


def _differences(tree: str, listing: Listing, contents: bool, limit: int) -> list[str]:
    found: list[str] = []
    seen = set()
    names = ("type", "mode", "uid", "gid", "size", "mtime", "ctime")
    try:
        for p, st in _walk(tree):
            seen.add(p)
            want = listing.get(p)
            if want is None:
                found.append(f"{p}: added")
            else:
                have = _meta(st)
                for name, a, b in zip(names, want, have):
                    if a != b:
                        shown = (f"{a:o} -> {b:o}" if name == "mode" else f"{_t(a)} -> {_t(b)}"
                                 if name in ("mtime", "ctime") else f"{a} -> {b}")
                        found.append(f"{p}: {name} {shown}")
                        break
                else:
                    if contents and want[7] != _contents(tree, p, st):
                        found.append(f"{p}: contents differ")
            if len(found) >= limit:
                return found
    except OSError as e:
        return found + [f"{e.filename or tree}: {e.strerror}"]
    found += [f"{p}: removed" for p in listing if p not in seen]
    return found[:limit]


def check(tree: str | os.PathLike, listing: Listing, limit: int = 3) -> list[str]:
    """The first differences between tree and its listing, metadata only ([] when it matches)."""
    return _differences(os.fspath(tree), listing, False, limit)


def verify(tree: str | os.PathLike, listing: Listing, limit: int = 20) -> list[str]:
    """Like check, and every file's contents too."""
    return _differences(os.fspath(tree), listing, True, limit)


def size(listing: Listing) -> int:
    return sum(v[4] for v in listing.values() if v[0] == "f")


def load(path: Path) -> Listing:
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError("not a listing")
    return data
