"""Prepared .debs: the same package with its data.tar stored uncompressed.

Most of a Debian bootstrap's time goes to xz: dpkg decompresses every data.tar.xz while unpacking it, and
mmdebstrap unpacks the essential set twice (extracting, then installing). A prepared .deb holds the very same
members (debian-binary, control.tar.*, and the data.tar with the same bytes, only not compressed), so dpkg
installs the same files, owners, modes and mtimes, and the installed system records nothing of the archive's
compression. Making one costs one decompression, once per package version, kept in the package cache.

The ar container is read and written here: python-debian's arfile reads ar but cannot write it, and the format
is a fixed 60-byte header per member (man 5 ar / deb(5)).
"""
from __future__ import annotations

import bz2
import hashlib
import io
import lzma
import zlib
from pathlib import Path
from typing import BinaryIO, Iterator

MAGIC = b"!<arch>\n"


class NotADeb(ValueError):
    pass


def members(data: bytes) -> Iterator[tuple[bytes, str, memoryview]]:
    """(header, name, body) of each ar member; the bodies are views of data, not copies."""
    if not data.startswith(MAGIC):
        raise NotADeb("not an ar archive")
    view = memoryview(data)
    off = len(MAGIC)
    while off + 60 <= len(data):
        head = data[off:off + 60]
        if head[58:60] != b"`\n":
            raise NotADeb(f"bad ar member header at byte {off}")
        size = int(head[48:58])
        name = head[:16].decode("ascii", "replace").strip().rstrip("/")
        if off + 60 + size > len(data):
            raise NotADeb(f"ar member {name} is cut short")
        yield head, name, view[off + 60:off + 60 + size]
        off += 60 + size + (size & 1)


def _header(old: bytes, name: str, size: int) -> bytes:
    """old's date, owner, group and mode with a new name and size."""
    return name.ljust(16).encode() + old[16:48] + str(size).ljust(10).encode() + old[58:60]


def _decompressor(ext: str):
    if ext in ("xz", "lzma"):
        return lzma.LZMADecompressor()
    if ext == "gz":
        return zlib.decompressobj(wbits=31)
    if ext == "bz2":
        return bz2.BZ2Decompressor()
    raise NotADeb(f"unknown data member data.tar.{ext}")


def _write_prepared(data: bytes, f: BinaryIO) -> bool:
    """Write the prepared form of a .deb's bytes to f (seekable); False (nothing written) if there is nothing to
    prepare. The data.tar is decompressed in pieces straight into f, its header written when its size is known,
    so memory holds the compressed .deb and one piece."""
    parts = list(members(data))
    todo = [n for _, n, _ in parts if n.startswith("data.tar.") and n != "data.tar.zst"]
    if not todo:      # already uncompressed, or zstd (no zstd module in the standard library; dpkg reads it fast)
        return False
    f.write(MAGIC)
    for head, name, body in parts:
        if name not in todo:
            f.write(_header(head, name, len(body)))
            f.write(body)
            f.write(b"\n" if len(body) & 1 else b"")
            continue
        d = _decompressor(name[len("data.tar."):])
        at = f.tell()
        f.write(bytes(60))
        size = 0
        try:
            for i in range(0, len(body), 1 << 16):
                piece = d.decompress(body[i:i + (1 << 16)])
                f.write(piece)
                size += len(piece)
            if hasattr(d, "flush"):     # zlib's keeps a tail until flushed
                tail = d.flush()
                f.write(tail)
                size += len(tail)
        except (lzma.LZMAError, zlib.error, OSError, EOFError) as e:
            raise NotADeb(f"{name}: {e}") from None
        if not d.eof:
            raise NotADeb(f"{name}: truncated")
        if size & 1:
            f.write(b"\n")
        end = f.tell()
        f.seek(at)
        f.write(_header(head, "data.tar", size))
        f.seek(end)
    return True


def prepare(data: bytes) -> bytes:
    """The prepared form of a .deb's bytes (a .deb with nothing to prepare is returned as is)."""
    buf = io.BytesIO()
    return buf.getvalue() if _write_prepared(data, buf) else data


def prepare_file(src: Path, dest: Path) -> tuple[str, int]:
    """Write the prepared form of src to dest (a copy if there is nothing to prepare); returns its (sha256, size)."""
    data = src.read_bytes()
    h = hashlib.sha256()
    with open(dest, "w+b") as f:
        if not _write_prepared(data, f):
            f.write(data)
        f.flush()
        f.seek(0)
        while block := f.read(1 << 20):
            h.update(block)
        return h.hexdigest(), f.tell()
