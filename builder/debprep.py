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
import gzip
import hashlib
import lzma
from pathlib import Path
from typing import Iterator

MAGIC = b"!<arch>\n"
_DECOMPRESS = {"xz": lzma.decompress, "gz": gzip.decompress, "lzma": lzma.decompress, "bz2": bz2.decompress}


class NotADeb(ValueError):
    pass


def members(data: bytes) -> Iterator[tuple[bytes, str, bytes]]:
    """(header, name, body) of each ar member."""
    if not data.startswith(MAGIC):
        raise NotADeb("not an ar archive")
    off = len(MAGIC)
    while off + 60 <= len(data):
        head = data[off:off + 60]
        if head[58:60] != b"`\n":
            raise NotADeb(f"bad ar member header at byte {off}")
        size = int(head[48:58])
        name = head[:16].decode("ascii", "replace").strip().rstrip("/")
        yield head, name, data[off + 60:off + 60 + size]
        off += 60 + size + (size & 1)


def _header(old: bytes, name: str, size: int) -> bytes:
    """old's date, owner, group and mode with a new name and size."""
    return name.ljust(16).encode() + old[16:48] + str(size).ljust(10).encode() + old[58:60]


def prepare(data: bytes) -> bytes:
    """The prepared form of a .deb's bytes (a .deb whose data.tar is already uncompressed is returned as is)."""
    out = [MAGIC]
    changed = False
    for head, name, body in members(data):
        if name.startswith("data.tar."):
            ext = name[len("data.tar."):]
            if ext == "zst":       # no zstd module in the standard library; dpkg reads it fast anyway
                return data
            try:
                body = _DECOMPRESS[ext](body)
            except KeyError:
                raise NotADeb(f"unknown data member {name}") from None
            except (lzma.LZMAError, OSError, EOFError) as e:
                raise NotADeb(f"{name}: {e}") from None
            name, changed = "data.tar", True
        out += [_header(head, name, len(body)), body, b"\n" if len(body) & 1 else b""]
    return b"".join(out) if changed else data


def prepare_file(src: Path, dest: Path) -> tuple[str, int]:
    """Write the prepared form of src to dest; returns its (sha256, size)."""
    data = prepare(src.read_bytes())
    dest.write_bytes(data)
    return hashlib.sha256(data).hexdigest(), len(data)
