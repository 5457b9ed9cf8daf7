"""Disk image target: an ext2/3/4 filesystem image made from the tree with `mke2fs -d` (no loop mount), sized
from the tree with headroom or as the recipe says; owners, modes and device nodes kept.

The image gets its own /etc/fstab (and, for pygrub boots, a bootloader config) written into the image with
debugfs, so the tree, which other targets also read, is left as it is.
"""
from __future__ import annotations

import hashlib
import logging
import math
import re
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from .. import run as runner
from .. import tarwriter
from ..errors import BuilderError
from ..schema import Check, opt

if TYPE_CHECKING:
    from ..context import Context

log = logging.getLogger("imgbuild")
DOC = "a filesystem image of the root (ext4, ext3 or ext2) made with mke2fs -d, with a matching fstab"

_SIZE = re.compile(r"^(\d+)([KMGT]?)$")
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(v: str) -> int:
    m = _SIZE.match(v.strip().upper().removesuffix("B").removesuffix("I"))
    if not m:
        raise ValueError(f"{v!r} is not a size (e.g. 2G, 512M)")
    return int(m.group(1)) * _UNITS[m.group(2)]


def _size(v: str) -> str:
    parse_size(v)
    return v


Size = Annotated[str, Check(_size, {"pattern": r"^\d+[KMGTkmgt]?$"}, describe="size (512M, 2G)")]


@dataclass(frozen=True)
class ImageOptions:
    """Disk image target."""

    size: Size | None = opt(None, doc="image size; default: the tree's size plus 30% and 64M, rounded up to 64M")
    fs: Literal["ext4", "ext3", "ext2"] = opt("ext4", doc="filesystem (ext3 for guests whose kernel lacks ext4, "
                                                        "e.g. CentOS 5)")
    label: str = opt("root", doc="filesystem label; fstab mounts / by it")
    fstab: bool = opt(True, doc="write an /etc/fstab into the image that mounts it as / (LABEL=...)")


Options = ImageOptions


def default_size(tree_bytes: int, inodes: int) -> int:
    """Bytes: data + 30% + 64 MiB + room for the inodes, rounded up to 64 MiB."""
    need = tree_bytes * 1.3 + (64 << 20) + inodes * 256
    step = 64 << 20
    return int(math.ceil(need / step) * step)


def fstab(label: str, fs: str) -> str:
    return (f"# written by imgbuild for this disk image\n"
            f"LABEL={label}\t/\t{fs}\tdefaults,errors=remount-ro\t0 1\n"
            "tmpfs\t/dev/shm\ttmpfs\tnosuid,nodev\t0 0\n")


def e2write(image: Path, path: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
    """Replace (or create) a regular file inside an unmounted ext2/3/4 image, with debugfs."""
    if "\n" in path or '"' in path:
        raise BuilderError(f"{path!r}: cannot be written into an image")
    with tempfile.NamedTemporaryFile() as src, tempfile.NamedTemporaryFile("w", suffix=".debugfs") as cmds:
        src.write(data)
        src.flush()
        cmds.write(f'rm "{path}"\nwrite "{src.name}" "{path}"\n'
                   f'sif "{path}" mode 0{0o100000 | mode:o}\nsif "{path}" uid {uid}\nsif "{path}" gid {gid}\n')
        cmds.flush()
        runner.run(["debugfs", "-w", "-f", cmds.name, str(image)], quiet=True)


def e2read(image: Path, path: str) -> bytes | None:
    """A file's content from an unmounted ext2/3/4 image, or None if it is not there."""
    r = runner.run(["debugfs", "-R", f'cat "{path}"', str(image)], capture=True, check=False, quiet=True)
    if r.returncode != 0 or any("File not found" in line for line in r.tail):
        return None
    return r.stdout.encode("utf-8", "surrogateescape")


def make_image(root: Path, dest: Path, opts: ImageOptions, epoch: int) -> Path:
    """mke2fs -d: the tree as a filesystem image at dest (written under a temp name, then renamed)."""
    items = tarwriter.entries(root)
    size = parse_size(opts.size) if opts.size else default_size(tarwriter.data_size(items), len(items))
    tmp = dest.with_name(f".{dest.name}.part")
    tmp.unlink(missing_ok=True)
    try:
        with open(tmp, "wb") as f:
            f.truncate(size)   # sparse
        env = {"E2FSPROGS_FAKE_TIME": str(epoch), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        runner.run(["mke2fs", "-q", "-F", "-t", opts.fs, "-L", opts.label, "-d", str(root),
                    "-E", f"root_owner=0:0,hash_seed=00000000-0000-0000-0000-{epoch:012x}",
                    "-U", _uuid(opts.label, epoch), str(tmp)], env=env)
        if opts.fstab:
            e2write(tmp, "/etc/fstab", fstab(opts.label, opts.fs).encode())
        runner.run(["e2fsck", "-fn", str(tmp)], quiet=True)
        tmp.rename(dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.info("image: %s (%d MiB, %s)", dest.name, size >> 20, opts.fs)
    return dest


def _uuid(label: str, epoch: int) -> str:
    """A filesystem UUID derived from the recipe, so rebuilds give the same image."""
    return str(uuid.UUID(bytes=hashlib.sha256(f"{label}:{epoch}".encode()).digest()[:16], version=4))


def produce(ctx: "Context", opts: ImageOptions) -> dict[str, Path]:
    dest = ctx.stage / f"{ctx.recipe.name}.{opts.fs}"
    return {"image": make_image(ctx.root.path, dest, opts, ctx.epoch)}
