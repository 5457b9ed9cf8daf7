"""Tarball target: the root as a reproducible tar, compressed on all cores (zstd, xz, gzip via pigz).

zstd tarballs are independent frames (builder/core/zstdframes.py): a build on a bootstrap cache entry keeps its
frames in the entry, and the next build on it compresses only the chunks whose files changed."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from builder.core import tarwriter
from builder.core.schema import opt

if TYPE_CHECKING:
    from builder.build.context import Context

log = logging.getLogger("imgbuild")
DOC = "the root as a reproducible tarball (numeric owners, devices, hardlinks, xattrs, sorted, clamped mtimes)"

SUFFIX = {"zst": ".tar.zst", "zstd": ".tar.zst", "xz": ".tar.xz", "gz": ".tar.gz", "none": ".tar"}


@dataclass(frozen=True)
class TarballOptions:
    """Tarball target."""

    compression: Literal["zst", "zstd", "xz", "gz", "none"] = opt("zst", doc="compressor (zst and zstd are the "
                                                                            "same)")
    level: int | None = opt(None, doc="compression level (default: the compressor's own: zstd 3, xz 6, gzip 6)")


Options = TarballOptions


def produce(ctx: "Context", opts: "TarballOptions") -> dict[str, Path]:
    dest = ctx.stage / f"{ctx.recipe.name}{SUFFIX[opts.compression]}"
    n = tarwriter.pack(ctx.root.path, dest, ctx.epoch, opts.compression, opts.level, frames=ctx.frames)
    log.info("tarball: %s (%d entries)", dest.name, n)
    return {"tarball": dest}
