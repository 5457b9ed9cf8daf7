"""A zstd tarball made of independent frames, one per chunk of the tar stream, so a rebuild reuses the
compressed frames of every chunk that did not change and compresses only the rest.

Every zstd reader (zstd -d, tar --zstd, python-zstandard, LXD) reads concatenated frames as one stream: the
file is an ordinary .tar.zst. The bytes depend only on the tree, the level and the zstd library, never on what
was reused: the same tree gives the same tarball, cold or rebuilt.

Chunks end at entry boundaries: after an entry once the chunk holds CUT_MIN bytes and the entry's name hashes
to a cut (one name in CUT_ODDS), or once it holds CUT_MAX; a regular file of BIG bytes or more is a chunk of its
own. The cuts depend on names and sizes only, so a changed file changes its own chunk, not those after it.

A chunk's key is the sha256 of its entries' headers (name, mode, owner, size, clamped mtime, xattrs, link
target) and, for each file's data, its inode, size, mtime and ctime: the identity rsync's quick check and git's
index trust. A build's tree stands on a sealed bootstrap cache entry (builder/build/bootcache.py), whose files
keep inode and times from build to build; a file a build writes has a new inode and ctime, so its chunk is
compressed again.

The store (FRAMES: a directory in the cache entry the build stands on, 0700 and checked as the entry is) keeps
for each tarball name the last tarball (a hard link, or a copy across file systems) and its index: per frame the
key, offset, length and the sha256 of the frame's bytes. The index is a file an earlier run left: read with
limits, every field checked; a frame is reused only when its bytes match its sha256, else it is compressed
again. Misses are compressed by python-zstandard on all cores (threads: the library releases the GIL), one
chunk per thread, and written in order.
"""
from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import struct
import tempfile
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Iterator, Protocol

import zstandard

log = logging.getLogger("imgbuild")
BLOCK = 512                    # tar's block (builder/core/tarwriter.py, which calls this module: no import back)


class Entry(Protocol):
    """tarwriter.Entry: a host path, its name in the archive, its lstat."""
    path: str
    name: str
    st: os.stat_result


# tarwriter.entry_header: (entry, epoch, hard links seen, keep_xattr, dropped) -> (header blocks, data size) | None
Header = Callable[..., "tuple[bytes, int] | None"]

CUT_MIN, CUT_MAX, BIG, CUT_ODDS = 1 << 20, 4 << 20, 2 << 20, 32
DEFAULT_LEVEL = 3
FORMAT = 2                     # part of every frame's key: frames of another writer are not reused
MAX_INDEX = 16 << 20           # an index larger than this is not one imgbuild wrote
_READ = 1 << 20
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,200}$")


@dataclass
class Chunk:
    seed: bytes
    parts: list = field(default_factory=list)      # header bytes, or (path, size) of a file's data
    raw: int = 0
    _key: "hashlib._Hash | None" = None

    def add(self, data: bytes) -> None:
        self._hash().update(data)
        self.parts.append(data)
        self.raw += len(data)

    def add_file(self, e: Entry, size: int) -> None:
        st = e.st
        self._hash().update(struct.pack("<QQqq", st.st_ino, size, st.st_mtime_ns, st.st_ctime_ns))
        self.parts.append((e.path, size))
        self.raw += size
        pad = -size % BLOCK
        if pad:
            self.parts.append(bytes(pad))
            self.raw += pad

    def _hash(self):
        if self._key is None:
            self._key = hashlib.sha256(self.seed)
        return self._key

    @property
    def key(self) -> str:
        return self._hash().hexdigest()


def seed(level: int) -> bytes:
    return f"imgbuild zstd frames {FORMAT}; zstd {zstandard.ZSTD_VERSION}; level {level}\n".encode()


def chunks(items: list[Entry], header: Header, epoch: int, level: int,
           keep_xattr: Callable[[str], bool] | None = None, dropped: list[tuple[str, str]] | None = None,
           counted: list[int] | None = None) -> Iterator[Chunk]:
    """The tar stream of items cut into chunks, each entry's header made by `header` (tarwriter.entry_header: the
    same bytes as tarwriter's own stream); counted[0]: entries so far."""
    links: dict[tuple[int, int], bytes] = {}
    s = seed(level)
    cur = Chunk(s)
    for e in items:
        made = header(e, epoch, links, keep_xattr, dropped)
        if made is None:
            continue
        hdr, size = made
        if counted is not None:
            counted[0] += 1
        if size >= BIG:
            if cur.raw:
                yield cur
                cur = Chunk(s)
            big = Chunk(s)
            big.add(hdr)
            big.add_file(e, size)
            yield big
            continue
        cur.add(hdr)
        if size:
            cur.add_file(e, size)
        if cur.raw >= CUT_MAX or (cur.raw >= CUT_MIN and zlib.crc32(os.fsencode(e.name)) % CUT_ODDS == 0):
            yield cur
            cur = Chunk(s)
    cur.add(bytes(2 * BLOCK))
    yield cur


def _pieces(chunk: Chunk) -> Iterator[bytes]:
    """The raw bytes of chunk, a file's data read without following a link and checked against its size."""
    for p in chunk.parts:
        if isinstance(p, bytes):
            yield p
            continue
        path, size = p
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            left = size
            while left:
                data = os.read(fd, min(left, _READ))
                if not data:
                    raise OSError(f"{path} shrank while it was archived")
                left -= len(data)
                yield data
            if os.read(fd, 1):
                raise OSError(f"{path} grew while it was archived")
        finally:
            os.close(fd)


def compress(chunk: Chunk, level: int, spool: Path) -> IO[bytes]:
    """One zstd frame of chunk, in a file (in memory up to a few MB, else in spool)."""
    out = tempfile.SpooledTemporaryFile(max_size=CUT_MAX + BIG, dir=spool)
    cctx = zstandard.ZstdCompressor(level=level)
    # streamed, never the whole chunk in memory: a worker holds zstd's window and its output, not a copy of the input
    with cctx.stream_writer(out, size=chunk.raw, closefd=False, write_size=_READ) as w:
        buf = bytearray()
        for data in _pieces(chunk):       # headers and small files gathered: one call into zstd per MB
            if len(data) >= _READ and not buf:
                w.write(data)
                continue
            buf += data
            if len(buf) >= _READ:
                w.write(buf)
                buf.clear()
        w.write(buf)
    out.seek(0)
    return out


# ------------------------------------------------------------------ the store of the last tarball's frames

@dataclass
class Store:
    """FRAMES/NAME.json and the tarball it indexes (None when there is none, or it is not usable)."""
    directory: Path
    name: str
    frames: dict[str, tuple[int, int, str]] = field(default_factory=dict)    # key -> (offset, length, sha256)
    fd: int | None = None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _index(directory: Path, name: str) -> Path:
    return directory / f"{name}.json"


def open_store(directory: Path | None, name: str, level: int) -> Store | None:
    """The frames of the last tarball called name, when directory has a sound index of them."""
    if directory is None or not _NAME.match(name):
        return None
    try:
        fd = os.open(_index(directory, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            text = f.read(MAX_INDEX + 1)
        if len(text) > MAX_INDEX:
            return None
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("seed") != seed(level).decode():
            return None
        tar, rows = data.get("tarball"), data.get("frames")
        if not isinstance(tar, str) or not _NAME.match(tar) or not isinstance(rows, list):
            return None
        frames = {}
        for row in rows:
            k, off, n, sha = row
            if not (isinstance(off, int) and isinstance(n, int) and off >= 0 and n > 0 and isinstance(k, str)
                    and isinstance(sha, str) and len(sha) == 64):
                return None
            frames[k] = (off, n, sha)
        store = Store(directory, name, frames)
        store.fd = os.open(directory / tar, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        return store
    except (OSError, ValueError, TypeError):
        return None


def _copy(store: Store, where: tuple[int, int, str], out: IO[bytes]) -> bool:
    """The stored frame into out, checked against its sha256 as it goes; on a mismatch out is cut back to where
    it was and False is returned."""
    off, n, sha = where
    start = out.tell()
    h = hashlib.sha256()
    while n:
        data = os.pread(store.fd, min(n, _READ), off)
        if not data:
            break
        h.update(data)
        out.write(data)
        off += len(data)
        n -= len(data)
    if n or h.hexdigest() != sha:
        out.seek(start)
        out.truncate()
        return False
    return True


def save(directory: Path, name: str, level: int, tarball: Path, rows: list[list]) -> None:
    """Keep tarball (a hard link, else a copy) and its index in directory, for the next build of name."""
    if not _NAME.match(name):
        return
    try:
        directory.mkdir(mode=0o700, exist_ok=True)
        old = None
        with contextlib.suppress(OSError, ValueError):
            old = json.loads(_index(directory, name).read_bytes()[:MAX_INDEX]).get("tarball")
        keep = f"{name}.{os.getpid()}.{hashlib.sha256(os.urandom(8)).hexdigest()[:8]}.tar.zst"
        try:
            os.link(tarball, directory / keep)
        except OSError:
            shutil.copyfile(tarball, directory / keep)
        tmp = directory / f".{name}.json.{os.getpid()}"
        tmp.write_text(json.dumps({"format": FORMAT, "seed": seed(level).decode(), "tarball": keep,
                                   "frames": rows}))
        os.rename(tmp, _index(directory, name))
        if isinstance(old, str) and _NAME.match(old) and old != keep and old.startswith(f"{name}."):
            with contextlib.suppress(OSError):
                os.unlink(directory / old)
    except OSError as e:
        log.debug("zstd frames of %s not kept in %s: %s", name, directory, e)


# ------------------------------------------------------------------ the writer

def write(items: list[Entry], header: Header, out: IO[bytes], epoch: int, level: int, store: Store | None,
          spool: Path, progress: Callable[[int], None] | None = None) -> tuple[int, list[list], int]:
    """The tarball of items into out (a regular file at its start; big frames spooled in spool): (entries, the
    index rows, frames reused)."""
    counted = [0]
    rows: list[list] = []
    reused = 0
    workers = os.cpu_count() or 1
    pending: collections.deque[tuple[Chunk, str, Future | None]] = collections.deque()

    def drain(upto: int) -> None:
        nonlocal reused
        while len(pending) > upto:
            chunk, key, fut = pending.popleft()
            start = out.tell()
            if fut is None and _copy(store, store.frames[key], out):
                reused += 1
                rows.append([key, start, out.tell() - start, store.frames[key][2]])
            else:
                frame = fut.result() if fut is not None else compress(chunk, level, spool)
                h = hashlib.sha256()
                with frame:
                    while data := frame.read(_READ):
                        h.update(data)
                        out.write(data)
                rows.append([key, start, out.tell() - start, h.hexdigest()])
            if progress:
                progress(chunk.raw)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="zstd") as pool:
        try:
            for chunk in chunks(items, header, epoch, level, counted=counted):
                key = chunk.key
                hit = store is not None and key in store.frames
                pending.append((chunk, key, None if hit else pool.submit(compress, chunk, level, spool)))
                drain(workers + 1)      # one frame ahead of the workers: memory stays bounded by cores
            drain(0)
        finally:
            for _, _, fut in pending:
                if fut is not None:
                    fut.cancel()
    return counted[0], rows, reused
