"""squashfs target: the root as a reproducible squashfs image, the rootfs of split LXD/Incus images.

The image is made from the tarball's own stream (builder/core/tarwriter.py) by tar2sqfs (squashfs-tools-ng): the
same entries in the same order, numeric owners, mtimes clamped to SOURCE_DATE_EPOCH, xattrs, hardlinks and device
nodes, also those an unprivileged build records instead of making them. Squashfs has no POSIX ACLs (only user.,
trusted. and security. xattrs, file capabilities among them): those are left out, with a warning naming them. The
compressor, its settings and the block size are fixed, and the file system's own time is the epoch, so the
same tree gives the same bytes.
"""
from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from builder.core import tarwriter
from builder.core.outputs import file_mode
from builder.core.schema import opt

if TYPE_CHECKING:
    from builder.build.context import Context

log = logging.getLogger("imgbuild")
DOC = "the root as a reproducible squashfs image (NAME.squashfs): what split LXD/Incus images use as rootfs"
BLOCK_SIZE = 131072       # mksquashfs's and tar2sqfs's default, written out so it never changes under us


@dataclass(frozen=True)
class SquashfsOptions:
    """squashfs target."""

    compression: Literal["xz", "zstd", "gzip", "lz4"] = opt("xz", doc="compressor (xz: what image servers "
                                                                      "serve; zstd: faster to build and read)")


Options = SquashfsOptions


def _squashfs_holds(xattr: str) -> bool:
    """The xattr namespaces squashfs has (POSIX ACLs, system.posix_acl_*, it has not)."""
    return xattr.startswith(("user.", "trusted.", "security."))


def make(root: Path, dest: Path, epoch: int, compression: str = "xz",
         items: list[tarwriter.Entry] | None = None) -> int:
    """dest (written atomically) from root's tar stream (or items'); the number of entries."""
    items = tarwriter.entries(root) if items is None else items
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    try:
        argv = ["tar2sqfs", "--quiet", "--no-skip", "--force", "--compressor", compression,
                "--block-size", str(BLOCK_SIZE), "--num-jobs", str(os.cpu_count() or 1),
                "--defaults", f"uid=0,gid=0,mode=0755,mtime={epoch}", tmp]
        dropped: list[tuple[str, str]] = []
        n = tarwriter.feed(items, argv, epoch, dest.name, keep_xattr=_squashfs_holds, dropped=dropped)
        if dropped:
            log.warning("%s: squashfs holds only user., trusted. and security. xattrs: %d left out (%s)",
                        dest.name, len(dropped), ", ".join(f"{k} of {p.lstrip('.')}" for p, k in dropped[:3]) +
                        (" ..." if len(dropped) > 3 else ""))
        os.chmod(tmp, file_mode())
        os.rename(tmp, dest)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return n


def produce(ctx: "Context", opts: SquashfsOptions) -> dict[str, Path]:
    dest = ctx.stage / f"{ctx.recipe.name}.squashfs"
    n = make(ctx.root.path, dest, ctx.epoch, opts.compression)
    log.info("squashfs: %s (%d entries, %s)", dest.name, n, opts.compression)
    return {"squashfs": dest}
