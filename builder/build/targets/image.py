"""Disk image target: an ext2/3/4 filesystem image made from the tree with `mke2fs -d` (no loop mount), sized
from the tree with headroom or as the recipe says; owners, modes and device nodes kept.

The image gets its own /etc/fstab (and, for pygrub boots, a bootloader config) written into the image with
debugfs, so the tree, which other targets also read, is left as it is.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import posixpath
import re
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from builder.core import e2fs, tarwriter
from builder.core import proc as runner
from builder.core.errors import BuilderError, InputError
from builder.core.schema import Check, opt

if TYPE_CHECKING:
    from builder.build.context import Context

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
    if parse_size(v) < 8 << 20:
        raise ValueError(f"{v!r} is too small for a filesystem image (at least 8M)")
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


def min_size(tree_bytes: int, inodes: int, files: int) -> int:
    """What the tree needs at the least: its data with a block's slack per non-empty file, the inode tables,
    a journal and the filesystem's own metadata."""
    return tree_bytes + files * 4096 + inodes * 256 + (16 << 20)


def default_size(tree_bytes: int, inodes: int, files: int = 0) -> int:
    """Bytes: data + 30% + 64 MiB + room for the inodes (at least min_size + 15%), rounded up to 64 MiB."""
    need = max(tree_bytes * 1.3 + (64 << 20) + inodes * 256, min_size(tree_bytes, inodes, files) * 1.15)
    step = 64 << 20
    return int(math.ceil(need / step) * step)


def fstab(label: str, fs: str) -> str:
    return (f"# written by imgbuild for this disk image\n"
            f"LABEL={label}\t/\t{fs}\tdefaults,errors=remount-ro\t0 1\n"
            "tmpfs\t/dev/shm\ttmpfs\tnosuid,nodev\t0 0\n")


def _devices(image: Path, items: list, epoch: int) -> None:
    """Where the tree has placeholders for device nodes (an unprivileged build), put the real nodes."""
    cmds = []
    for e in items:
        dev = tarwriter.placeholder(e.path, e.st)
        if dev is None:
            continue
        p = e.name[1:]
        parent, name = posixpath.split(p)
        q = e2fs.quote(p, image)
        kind, major, minor = dev
        mode = (stat.S_IFCHR if kind == "c" else stat.S_IFBLK) | stat.S_IMODE(e.st.st_mode)
        # debugfs's mknod makes its name in the current directory
        cmds += [f"rm {q}", f"cd {e2fs.quote(parent, image)}",
                 f"mknod {e2fs.quote(name, image)} {kind} {major} {minor}", "cd /",
                 f"sif {q} mode 0{mode:o}", f"sif {q} uid {e.st.st_uid}", f"sif {q} gid {e.st.st_gid}"]
    if cmds:
        e2fs.script(image, cmds, epoch)


def _clamp_times(image: Path, items: list, root: Path, epoch: int) -> None:
    """mke2fs -d copies each file's times from the tree (atime changes on every read): set them all to the
    file's mtime clamped to the epoch, as the tarball does, so a rebuild gives the same image. Only what differs
    is set: mke2fs stores whole seconds, an mtime at or before the epoch is already right and a ctime often is;
    the atime is always set (reading the tree may have changed it since it was listed); crtime is mke2fs's, the
    epoch (E2FSPROGS_FAKE_TIME) for every inode."""
    cmds = []
    for e in items:
        t = min(int(e.st.st_mtime), epoch)
        p = "/" if e.name == "." else e.name[1:]
        try:
            q = e2fs.quote(p, image)
        except InputError:     # a name with a line break: debugfs cannot be handed it; its times stay mke2fs's
            log.warning("image: %r keeps the time it has in the tree (debugfs cannot be handed its name)", p)
            continue
        cmds.append(f"sif {q} atime @{t}")
        cmds += [f"sif {q} {field} @{t}" for field, v in (("mtime", e.st.st_mtime), ("ctime", e.st.st_ctime))
                 if int(v) != t]
    e2fs.script(image, cmds, epoch)


def plan(root: Path, opts: ImageOptions) -> tuple[list, int]:
    """The tree's entries and the filesystem's size in bytes (the option's, or from the tree)."""
    items = tarwriter.entries(root)
    data = tarwriter.data_size(items)
    files = sum(1 for e in items if stat.S_ISREG(e.st.st_mode) and e.st.st_size)
    size = parse_size(opts.size) if opts.size else default_size(data, len(items), files)
    need = min_size(data, len(items), files)
    if size < need:
        raise BuilderError(f"image size {opts.size} is too small for this tree ({data >> 20} MiB in {len(items)} "
                           f"entries; it needs about {need >> 20} MiB)",
                           "raise the target's size, or leave it out to size the image from the tree")
    return items, size


def write_fs(root: Path, target: Path, items: list, size: int, opts: ImageOptions, epoch: int,
             offset: int = 0) -> Path:
    """mke2fs -d: the tree as a filesystem of `size` bytes at `offset` in the file `target` (a disk image's
    partition, or the whole file); device nodes, times, fstab; settled and checked. Returns the name e2fsprogs
    opens that filesystem by (e2fs.at)."""
    spec = e2fs.at(target, offset)
    inodes = int(len(items) * 1.3) + 1024
    extended = [f"root_owner=0:0,hash_seed={fs_uuid('hash:' + opts.label, epoch)}", *([f"offset={offset}"] if offset
                                                                                      else [])]
    runner.run(["mke2fs", "-q", "-F", "-t", opts.fs, "-L", opts.label, "-N", str(inodes), "-d", str(root),
                "-E", ",".join(extended), "-U", fs_uuid(opts.label, epoch), str(target), f"{size // 1024}k"],
               env=e2fs.env(epoch))
    _devices(spec, items, epoch)
    _clamp_times(spec, items, root, epoch)
    if opts.fstab:
        e2fs.write(spec, "/etc/fstab", fstab(opts.label, opts.fs).encode(), 0o644, 0, 0, epoch)
    e2fs.settle(spec, epoch)
    runner.run(["e2fsck", "-fn", str(spec)])
    return spec


def make_image(root: Path, dest: Path, opts: ImageOptions, epoch: int) -> Path:
    """mke2fs -d: the tree as a filesystem image at dest (written under a temp name, then renamed)."""
    items, size = plan(root, opts)
    tmp = dest.with_name(f".{dest.name}.part")
    tmp.unlink(missing_ok=True)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)   # the tree's secrets go in; the
        with os.fdopen(fd, "wb") as f:                                     # build gives it its mode at the end
            f.truncate(size)   # sparse
        write_fs(root, tmp, items, size, opts, epoch)
        tmp.rename(dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.info("image: %s (%d MiB, %s)", dest.name, size >> 20, opts.fs)
    return dest


def fs_uuid(label: str, epoch: int) -> str:
    """A filesystem UUID derived from the recipe, so rebuilds give the same image."""
    return str(uuid.UUID(bytes=hashlib.sha256(f"{label}:{epoch}".encode()).digest()[:16], version=4))


def produce(ctx: "Context", opts: ImageOptions) -> dict[str, Path]:
    dest = ctx.stage / f"{ctx.recipe.name}.{opts.fs}"
    return {"image": make_image(ctx.root.path, dest, opts, ctx.epoch)}
