"""A reproducible tar stream of a root tree.

Entries in name order (bytewise, depth first, like `tar --sort=name`), numeric owners only, mtimes clamped to
the epoch, POSIX pax format: xattrs (file capabilities, ACLs) as SCHILY.xattr records, hardlinks as links to
the first name, device nodes and fifos as such. File data goes from the file to the output with sendfile, so
the writer keeps pace with a parallel compressor; zstd tarballs are written as independent frames by
builder/core/zstdframes.py (the same tar stream, cut into chunks a rebuild can reuse).

The headers are packed here rather than by the standard library's tarfile, for two reasons: the bytes must
not change with the Python version (tarfile's header fields have changed between releases, e.g. the device
fields of non-device entries), and tarfile's header building costs more CPU than the compressor it feeds
shares the machine with. The format is POSIX ustar (IEEE 1003.1-2001, "ustar Interchange Format") plus pax
extended headers ("pax Extended Header"), the same records GNU tar writes; tests read every case back with
GNU tar and with tarfile.
"""
from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from builder.core import proc as runner
from builder.core.outputs import atomic_file
from builder.core.rootfs import DEVICE_XATTR

if TYPE_CHECKING:
    from tqdm import tqdm

log = logging.getLogger("imgbuild")
BLOCK = 512
_SMALL = 1 << 16
_FLUSH = 1 << 20
_NUL = bytes(BLOCK)

REG, LNK, SYM, CHR, BLK, DIR, FIFO, PAX = b"0", b"1", b"2", b"3", b"4", b"5", b"6", b"x"


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


# ------------------------------------------------------------------ the format


def pax_records(records: dict[str, bytes]) -> bytes:
    """pax extended header data: "LEN KEY=VALUE\\n" lines, LEN counting the whole line, its own digits too."""
    out = b""
    for key, value in records.items():
        kv = key.encode() + b"=" + value + b"\n"
        n = len(kv) + 2
        while len(str(n)) + 1 + len(kv) != n:
            n = len(str(n)) + 1 + len(kv)
        out += str(n).encode() + b" " + kv
    return out


_MAX8, _MAX12 = 8 ** 7, 8 ** 11   # what 7 and 11 octal digits hold


def ustar(name: bytes, mode: int, uid: int, gid: int, size: int, mtime: int, kind: bytes, linkname: bytes = b"",
          devmajor: int = 0, devminor: int = 0) -> bytes:
    """One 512-byte ustar header; every field must fit (header() sees to that)."""
    dev = b"%07o\0%07o\0" % (devmajor, devminor) if kind in (CHR, BLK) else bytes(16)
    buf = b"".join((
        name.ljust(100, b"\0"), b"%07o\0%07o\0%07o\0%011o\0%011o\0" % (mode, uid, gid, size, mtime), b"        ",
        kind, linkname.ljust(100, b"\0"), b"ustar\x0000", bytes(64), dev, bytes(167),
    ))
    return buf[:148] + b"%06o\0" % sum(buf) + buf[155:]


def header(name: bytes, mode: int, uid: int, gid: int, size: int, mtime: int, kind: bytes, linkname: bytes = b"",
           devmajor: int = 0, devminor: int = 0, xattrs: dict[str, bytes] | None = None) -> bytes:
    """The header blocks of one entry: a pax extended header first when something does not fit ustar."""
    if (len(name) <= 100 and len(linkname) <= 100 and 0 <= uid < _MAX8 and 0 <= gid < _MAX8 and size < _MAX12
            and 0 <= mtime < _MAX12 and not xattrs):
        return ustar(name, mode, uid, gid, size, mtime, kind, linkname, devmajor, devminor)
    if not (0 <= devmajor < _MAX8 and 0 <= devminor < _MAX8):
        raise ValueError(f"{name!r}: device number {devmajor},{devminor} does not fit a tar header")
    pax: dict[str, bytes] = {}
    if len(name) > 100:
        pax["path"], name = name, name[:100]
    if len(linkname) > 100:
        pax["linkpath"], linkname = linkname, linkname[:100]
    numbers = {"uid": (uid, _MAX8), "gid": (gid, _MAX8), "size": (size, _MAX12), "mtime": (mtime, _MAX12)}
    for key, (value, limit) in numbers.items():
        if not 0 <= value < limit:
            pax[key] = str(value).encode()
    for k, v in sorted((xattrs or {}).items()):
        pax["SCHILY.xattr." + k] = v
    fit = {k: v if 0 <= v < limit else 0 for k, (v, limit) in numbers.items()}
    main = ustar(name, mode, fit["uid"], fit["gid"], fit["size"], fit["mtime"], kind, linkname, devmajor, devminor)
    data = pax_records(pax)
    ext = ustar(b"././@PaxHeader", 0, 0, 0, len(data), 0, PAX)
    return ext + data + _NUL[: -len(data) % BLOCK] + main


# ------------------------------------------------------------------ the tree


def _xattrs(path: str) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out = {}
    for n in names:
        try:
            out[n] = os.getxattr(path, n, follow_symlinks=False)
        except OSError:
            continue
    return out


def placeholder(path: str, st: os.stat_result, xattrs: dict[str, bytes] | None = None) -> tuple[str, int, int] | None:
    """(kind, major, minor) when this is the empty file RootFS.mknod leaves where mknod is not allowed."""
    if not stat.S_ISREG(st.st_mode) or st.st_size:
        return None
    if xattrs is None:
        try:
            raw = os.getxattr(path, DEVICE_XATTR, follow_symlinks=False)
        except OSError:
            return None
    elif DEVICE_XATTR in xattrs:
        raw = xattrs[DEVICE_XATTR]
    else:
        return None
    kind, major, minor = raw.decode().split()
    return kind, int(major), int(minor)


def entry_header(e: Entry, epoch: int, links: dict[tuple[int, int], bytes],
                 keep_xattr: Callable[[str], bool] | None = None,
                 dropped: list[tuple[str, str]] | None = None) -> tuple[bytes, int] | None:
    """(header blocks, bytes of data that follow) for one entry; None for what tar cannot hold (sockets).
    keep_xattr: which xattrs the archive may hold (the others are left out, each (name, xattr) added to dropped)."""
    st, m = e.st, e.st.st_mode
    name = b"./" if e.name == "." else os.fsencode(e.name)
    size, linkname, major, minor = 0, b"", 0, 0
    xattrs = _xattrs(e.path)
    if keep_xattr is not None:
        for k in [k for k in xattrs if k != DEVICE_XATTR and not keep_xattr(k)]:
            del xattrs[k]
            if dropped is not None:
                dropped.append((e.name, k))
    dev = placeholder(e.path, st, xattrs)
    if dev is not None:
        del xattrs[DEVICE_XATTR]
        kind, major, minor = (CHR if dev[0] == "c" else BLK), dev[1], dev[2]
    elif stat.S_ISREG(m):
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in links:
            kind, linkname = LNK, links[key]
        else:
            if st.st_nlink > 1:
                links[key] = name
            kind, size = REG, st.st_size
    elif stat.S_ISDIR(m):
        kind = DIR
        if not name.endswith(b"/"):
            name += b"/"   # as GNU tar names directories
    elif stat.S_ISLNK(m):
        kind, linkname = SYM, os.fsencode(os.readlink(e.path))
    elif stat.S_ISCHR(m) or stat.S_ISBLK(m):
        kind = CHR if stat.S_ISCHR(m) else BLK
        major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    elif stat.S_ISFIFO(m):
        kind = FIFO
    else:
        return None  # sockets cannot be archived (GNU tar skips them too)
    hdr = header(name, stat.S_IMODE(m), st.st_uid, st.st_gid, size, min(int(st.st_mtime), epoch), kind, linkname,
                 major, minor, xattrs)
    return hdr, size


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


def write(items: list[Entry], fd: int, epoch: int, progress: Callable[[int], None] | None = None,
          keep_xattr: Callable[[str], bool] | None = None, dropped: list[tuple[str, str]] | None = None) -> int:
    """Write the tar stream of these entries (from `entries(root)`) to fd; returns the number written."""
    out = _Out(fd)
    links: dict[tuple[int, int], bytes] = {}
    count = 0
    for e in items:
        made = entry_header(e, epoch, links, keep_xattr, dropped)
        if made is None:
            continue
        hdr, size = made
        out.write(hdr)
        if size:
            if size < _SMALL:
                src = os.open(e.path, os.O_RDONLY | os.O_NOFOLLOW)
                try:
                    data = os.read(src, size + 1)
                finally:
                    os.close(src)
                if len(data) != size:
                    raise OSError(f"{e.path} changed while it was archived")
                out.write(data)
            else:
                out.sendfile(e.path, size)
            out.write(_NUL[: -size % BLOCK])
            if progress:
                progress(size)
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


def compressor(kind: str, level: int | None) -> list[str] | None:
    """The command that compresses a tar stream on all cores (None: no compression)."""
    lv = [f"-{level}"] if level is not None else []
    if kind in ("zst", "zstd"):
        return ["zstd", "-T0", "-q", "-c", *(["--ultra"] if (level or 0) > 19 else []), *lv]
    if kind == "xz":
        return ["xz", "-T0", "-c", *lv]
    if kind == "gz":
        return ["pigz" if runner.which("pigz") else "gzip", "-n", "-c", *lv]
    return None


def pack(root: Path, dest: Path, epoch: int, compression: str = "zst", level: int | None = None,
         items: list[Entry] | None = None, frames: Path | None = None) -> int:
    """Write root as a reproducible tarball at dest (atomically), compressed; returns the number of entries.
    items: other entries than root's own (an image layout that puts the tree under rootfs/, say).
    zstd: independent frames (builder/core/zstdframes.py); frames, a directory where the last tarball of this
    name keeps its frames for the next build to reuse."""
    items = entries(root) if items is None else items
    if compression in ("zst", "zstd"):
        return _pack_frames(items, Path(dest), epoch, level, frames)
    argv = compressor(compression, level)
    with atomic_file(dest) as f, _bar(items, dest.name) as bar:
        if argv is None:
            return write(items, f.fileno(), epoch, bar.update)
        with runner.Pipe(argv, f) as fd:
            return write(items, fd, epoch, bar.update)


def _pack_frames(items: list[Entry], dest: Path, epoch: int, level: int | None, frames: Path | None) -> int:
    from builder.core import zstdframes

    level = zstdframes.DEFAULT_LEVEL if level is None else level
    store = zstdframes.open_store(frames, dest.name, level)
    try:
        with atomic_file(dest) as f, _bar(items, dest.name) as bar:
            n, rows, reused = zstdframes.write(items, entry_header, f, epoch, level, store, dest.parent, bar.update)
    finally:
        if store is not None:
            store.close()
    if frames is not None:
        log.info("%s: %d of %d zstd frames reused from the last build", dest.name, reused, len(rows))
        zstdframes.save(frames, dest.name, level, dest, rows)
    return n


def _bar(items: list[Entry], desc: str) -> tqdm:
    from tqdm import tqdm  # here: a command that packs nothing (clone of a directory) does not load it
    return tqdm(total=data_size(items), unit="B", unit_scale=True, desc=desc, leave=False, disable=None)


def feed(items: list[Entry], argv: list[str], epoch: int, desc: str, keep_xattr: Callable[[str], bool] | None = None,
         dropped: list[tuple[str, str]] | None = None) -> int:
    """The tar stream of items into the stdin of argv (a program that writes its own output file, such as
    tar2sqfs); returns the number of entries."""
    with open(os.devnull, "wb") as null, _bar(items, desc) as bar, runner.Pipe(argv, null) as fd:
        return write(items, fd, epoch, bar.update, keep_xattr, dropped)


def renamed(items: list[Entry], prefix: str) -> list[Entry]:
    """The same entries under ./PREFIX/ in the archive ("." becomes "./PREFIX")."""
    return [Entry(e.path, f"./{prefix}{e.name[1:]}", e.st) for e in items]
