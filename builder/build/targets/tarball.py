"""Tarball target: the root as a reproducible tar, compressed on all cores (zstd, xz, gzip via pigz)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from tqdm import tqdm

from builder.core import proc as runner
from builder.core import tarwriter
from builder.core.outputs import atomic_file
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


def compressor(kind: str, level: int | None) -> list[str] | None:
    lv = [f"-{level}"] if level is not None else []
    if kind in ("zst", "zstd"):
        return ["zstd", "-T0", "-q", "-c", *(["--ultra"] if (level or 0) > 19 else []), *lv]
    if kind == "xz":
        return ["xz", "-T0", "-c", *lv]
    if kind == "gz":
        return ["pigz" if runner.which("pigz") else "gzip", "-n", "-c", *lv]
    return None


def pack(root: Path, dest: Path, epoch: int, opts: "TarballOptions") -> int:
    """Write root as a tarball at dest (atomically); returns the number of entries."""
    items = tarwriter.entries(root)
    total = tarwriter.data_size(items)
    argv = compressor(opts.compression, opts.level)
    with atomic_file(dest) as f, tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, leave=False,
                                      disable=None) as bar:
        if argv is None:
            return tarwriter.write(items, f.fileno(), epoch, bar.update)
        with runner.Pipe(argv, f) as fd:
            return tarwriter.write(items, fd, epoch, bar.update)


def produce(ctx: "Context", opts: "TarballOptions") -> dict[str, Path]:
    dest = ctx.stage / f"{ctx.recipe.name}{SUFFIX[opts.compression]}"
    n = pack(ctx.root.path, dest, ctx.epoch, opts)
    log.info("tarball: %s (%d entries)", dest.name, n)
    return {"tarball": dest}
