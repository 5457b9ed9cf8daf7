"""The build's tree above a bootstrap cache entry, without copying it: an overlay.

    lower   CACHE/bootstrap/KEY/tree     the entry, read only (sealed: builder/build/sealed.py)
    upper   WORK/upper                   what this build changes: new and changed files, whiteouts
    work    WORK/overlay-work            overlayfs's own
    merged  WORK/rootfs                  the tree every step, hook and target reads and writes

Whiteouts and opaque directories exist only in the upper layer, which nothing reads: the tarball and every target
read the merged view, so an artifact is the same, byte for byte, as one built on a plain copy (test_bootcache).
As root the overlay is mounted with index=on, so a hard-linked file changed through one of its names stays one
file (retried without it where the kernel refuses it); in an unprivileged build's user namespace with userxattr
(kernels since 5.11). The overlay is unmounted when the build ends, however it ends; a killed build's is
unmounted by the next build into the same output directory.

A cold build's bootstrap itself runs on a tmpfs where there is memory to spare (in_ram): the finished tree is then
copied into the cache entry on the disk in one parallel pass (builder/core/treecopy.py), and the build goes on in
RAM; what it keeps is its outputs.

Where no overlay can be mounted (the kernel's error is said), or with IMGBUILD_TREE=copy, the build works on a
copy of the entry (`cp -a --reflink=auto`: extents shared where the file system can, as on btrfs and XFS).
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from builder.core import mounts, treecopy
from builder.core import proc as runner
from builder.core.errors import CommandError
from builder.core.userns import in_userns

log = logging.getLogger("imgbuild")

ENV = "IMGBUILD_TREE"
# characters overlayfs's option string cannot carry in a layer's path
_UNSAFE = set(",:\\ \t\n")


def _why_not(paths: list[Path]) -> str:
    if os.environ.get(ENV) == "copy":
        return f"{ENV}=copy"
    for p in paths:
        if _UNSAFE & set(str(p)):
            return f"{p}: overlayfs cannot take a path with any of , : \\ or blanks"
    return ""


def tree_over(lower: Path, work: Path, held: contextlib.ExitStack) -> str:
    """Make WORK/rootfs the tree above `lower`; returns how: "overlay" or "copy". The overlay's mount is
    unmounted when `held` closes."""
    upper, scratch, merged = work / "upper", work / "overlay-work", work / "rootfs"
    why = _why_not([lower, upper, scratch])
    if not why:
        try:
            for d in (upper, scratch, merged):
                d.mkdir(mode=0o700)
            st = os.lstat(lower)         # the merged / is the upper's own directory: give it the entry's root
            os.chown(upper, st.st_uid, st.st_gid)
            os.chmod(upper, st.st_mode & 0o7777)
            os.utime(upper, ns=(st.st_atime_ns, st.st_mtime_ns))
            ms = held.enter_context(mounts.MountStack())
            base = f"lowerdir={lower},upperdir={upper},workdir={scratch}"
            tries = [base + ",userxattr"] if in_userns() else [base + ",index=on", base]
            for i, options in enumerate(tries):
                try:
                    ms.mount("imgbuild-tree", merged, "overlay", options)
                    break
                except CommandError:
                    if i == len(tries) - 1:
                        raise
                    _reset(scratch)
            return "overlay"
        except (OSError, CommandError) as e:
            why = f"the overlay could not be mounted: {getattr(e, 'message', None) or e}"
            for d in (merged, scratch, upper):
                mounts.remove_tree(d)
    log.info("building on a copy of the cache entry (%s)", why)
    runner.run(["cp", "-a", "--reflink=auto", "--no-target-directory", str(lower), str(merged)])
    return "copy"


def _reset(scratch: Path) -> None:
    """overlayfs's work directory after a refused mount: emptied for the next try."""
    mounts.remove_tree(scratch)
    scratch.mkdir(mode=0o700)


def copy_out(tree: Path, dest: Path) -> None:
    """A tree that is a mount (an overlay, a tmpfs), copied with every attribute to dest: what --keep-tree keeps."""
    treecopy.copy_tree(tree, dest)


RAM_ENV = "IMGBUILD_BOOTSTRAP_IN_RAM"
RAM_LEAST = 4 << 30        # MemAvailable below this: the bootstrap stays on the disk


def _available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def in_ram(tree: Path, held: contextlib.ExitStack) -> str:
    """Mount a private tmpfs on the empty directory tree (made here) for the bootstrap, unmounted when `held`
    closes; returns how big it may grow, or "" when the bootstrap stays on the disk. On a disk, dpkg's
    thousands of small files and syncs cost more than copying the finished tree into the cache in one go
    (docs/benchmarks.md); a tmpfs uses only what the tree holds, up to half of the memory available now.
    Only where MemAvailable is at least 4 GiB, as root; IMGBUILD_BOOTSTRAP_IN_RAM=0 turns it off."""
    tree.mkdir(mode=0o755)
    if os.environ.get(RAM_ENV, "1") == "0" or in_userns() or os.geteuid() != 0:
        return ""
    avail = _available()
    if avail < RAM_LEAST:
        return ""
    size = avail // 2
    held.enter_context(mounts.MountStack()).mount("imgbuild-bootstrap", tree, "tmpfs",
                                                  f"size={size},mode=0755,nr_inodes=0")
    return f"{size >> 30} GiB"
