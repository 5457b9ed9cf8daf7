"""A reproducible tar stream of a root tree.

Entries in name order (bytewise, depth first, like `tar --sort=name`), numeric owners only, mtimes clamped to
the epoch, POSIX pax format with xattrs (file capabilities included) as SCHILY.xattr records, hardlinks as
links to the first name, device nodes and fifos as such. Headers come from the standard library's tarfile; file
data goes from the file to the output with sendfile, so the writer keeps pace with a parallel compressor.
"""
from __future__ import annotations

import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

BLOCK = 512
_SMALL = 1 << 16
_FLUSH = 1 << 20


@dataclass
class Entry:
    path: str       # host path
    name: str       # name in the archive, "./etc/passwd"
    st: os.stat_result


def entries(root: Path) -> list[Entry]:
    """Every entry of the tree, in archive order, with its lstat."""
    out = [Entry(str(root), ".", os.lstat(root))]

    def walk(d: str, rel: str) -> None:
        with os.scandir(d) as it:
            items = sorted(it, key=lambda e: os.fsencode(e.name))
        for e in items:
            st = e.stat(follow_symlinks=False)
            name = f"{rel}/{e.name}"
            out.append(Entry(e.path, name, st))
            if stat.S_ISDIR(st.st_mode):
                walk(e.path, name)

    walk(str(root), ".")
    return out


class _TarInfo(tarfile.TarInfo):
    """TarInfo whose pax records carry raw bytes the way GNU tar writes them.

    The standard library marks a header with a non-UTF-8 value (file capabilities, ACLs) `hdrcharset=BINARY`,
    a keyword GNU tar does not know: every `tar -x` would print "Ignoring unknown extended header keyword".
    The record format (POSIX pax: "LEN KEY=VALUE\\n", LEN counting itself) is kept; only that keyword goes.
    """

    @classmethod
    def _create_pax_generic_header(cls, pax_headers, type, encoding):  # noqa: A002 - the stdlib's signature
        records = b""
        for keyword, value in pax_headers.items():
            kv = keyword.encode("utf-8") + b"=" + value.encode("utf-8", "surrogateescape") + b"\n"
            n = len(kv) + 1
            while len(str(n)) + 1 + len(kv) != n:
                n = len(str(n)) + 1 + len(kv)
            records += str(n).encode() + b" " + kv
        info = {"name": "././@PaxHeader", "type": type, "size": len(records), "magic": tarfile.POSIX_MAGIC}
        return cls._create_header(info, tarfile.USTAR_FORMAT, "ascii", "replace") + cls._create_payload(records)


def _xattrs(path: str) -> dict[str, str]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out = {}
    for n in sorted(names):
        try:
            v = os.getxattr(path, n, follow_symlinks=False)
        except OSError:
            continue
        out["SCHILY.xattr." + n] = v.decode("utf-8", "surrogateescape")
    return out


def tarinfo(e: Entry, epoch: int, links: dict[tuple[int, int], str]) -> tarfile.TarInfo | None:
    st, m = e.st, e.st.st_mode
    ti = _TarInfo(e.name if e.name != "." else "./")
    ti.mode = stat.S_IMODE(m)
    ti.uid, ti.gid = st.st_uid, st.st_gid
    ti.uname = ti.gname = ""
    ti.mtime = min(int(st.st_mtime), epoch)
    if stat.S_ISREG(m):
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in links:
            ti.type, ti.linkname = tarfile.LNKTYPE, links[key]
        else:
            if st.st_nlink > 1:
                links[key] = e.name
            ti.size = st.st_size
    elif stat.S_ISDIR(m):
        ti.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(m):
        ti.type, ti.linkname = tarfile.SYMTYPE, os.readlink(e.path)
    elif stat.S_ISCHR(m) or stat.S_ISBLK(m):
        ti.type = tarfile.CHRTYPE if stat.S_ISCHR(m) else tarfile.BLKTYPE
        ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    elif stat.S_ISFIFO(m):
        ti.type = tarfile.FIFOTYPE
    else:
        return None  # sockets cannot be archived (GNU tar skips them too)
    ti.pax_headers = _xattrs(e.path)
    return ti


class _Out:
    """Buffered writes of headers and small files; big files go straight from their fd by sendfile."""

    def __init__(self, fd: int):
        self.fd = fd
        self.buf = bytearray()

    def write(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) >= _FLUSH:
            self.flush()

    def flush(self) -> None:
        view = memoryview(self.buf)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        self.buf = bytearray()

    def sendfile(self, path: str, size: int) -> None:
        self.flush()
        src = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            off = 0
            while off < size:
                n = os.sendfile(self.fd, src, off, size - off)
                if n == 0:
                    raise OSError(f"{path} shrank while it was archived")
                off += n
        finally:
            os.close(src)


def write(items: list[Entry], fd: int, epoch: int, progress: Callable[[int], None] | None = None) -> int:
    """Write the tar stream of these entries (from `entries(root)`) to fd; returns the number written."""
    out = _Out(fd)
    links: dict[tuple[int, int], str] = {}
    count = 0
    for e in items:
        ti = tarinfo(e, epoch, links)
        if ti is None:
            continue
        out.write(ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        if ti.size:
            if ti.size < _SMALL:
                with open(e.path, "rb") as f:
                    data = f.read()
                if len(data) != ti.size:
                    raise OSError(f"{e.path} changed while it was archived")
                out.write(data)
            else:
                out.sendfile(e.path, ti.size)
            if ti.size % BLOCK:
                out.write(bytes(BLOCK - ti.size % BLOCK))
            if progress:
                progress(ti.size)
        count += 1
    out.write(bytes(2 * BLOCK))
    out.flush()
    return count


def data_size(items: list[Entry]) -> int:
    """Bytes of regular-file data among the entries, hardlinks counted once (progress bars, image sizing)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for e in items:
        if stat.S_ISREG(e.st.st_mode) and (e.st.st_dev, e.st.st_ino) not in seen:
            seen.add((e.st.st_dev, e.st.st_ino))
            total += e.st.st_size
    return total
