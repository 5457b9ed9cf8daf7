"""`cp -a` of a whole tree, several files at once: what `imgbuild clone` copies a container's tree with.

One walk makes every directory, link, device node, fifo and socket, and lists the regular files; a pool of threads
then copies the files' data, a batch of files per task (copy_file_range: extents shared where the file system can;
holes kept with SEEK_DATA/SEEK_HOLE in a file that has any) and their attributes in the order that keeps them (owner,
then mode, so setuid bits stay; then extended attributes, so file capabilities and ACLs stay; then times); hard links
are linked to their first copy; directories get their attributes last, deepest first. On a disk the copies overlap
their waits, which is where a serial `cp -a` spends its time.

Nothing is followed: every file is opened without following a link and must be the very file (device and inode)
the walk saw, so a guest that swaps a directory for a link while it is copied (to make the copy read a host file)
stops the copy with CopyError naming the path. Any error is a CopyError naming the file; the caller removes the
partial copy.
"""
from __future__ import annotations

import errno
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from builder.core import proc as runner
from builder.core.errors import BuilderError

THREADS = 8
BATCH_FILES = 64            # files per task: one task per file spends more on the pool than on small files
BATCH_BYTES = 8 << 20       # and a task ends after this much data, so big files spread over the threads


class CopyError(BuilderError):
    pass


@dataclass
class _Plan:
    files: list[tuple[str, os.stat_result]] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)          # (path, path of its first name)
    dirs: list[tuple[str, os.stat_result]] = field(default_factory=list)


def _xattrs(src: int | str, dest: int | str) -> None:
    """Every extended attribute of src onto dest; a path is never followed (an open file is what it is)."""
    nofollow = {} if isinstance(src, int) else {"follow_symlinks": False}
    try:
        names = os.listxattr(src, **nofollow)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return
        raise
    for name in names:
        os.setxattr(dest, name, os.getxattr(src, name, **nofollow))


def _attrs(src: int | str, dest: int | str, st: os.stat_result) -> None:
    """Owner, mode (after the owner: chown clears setuid), xattrs (after both: chown clears capabilities), times."""
    os.chown(dest, st.st_uid, st.st_gid)
    os.chmod(dest, stat.S_IMODE(st.st_mode))
    _xattrs(src, dest)
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))


def _walk(src: str, dest: str, plan: _Plan) -> None:
    seen: dict[tuple[int, int], str] = {}
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(src + rel) as it:
            for e in it:
                path = f"{rel}/{e.name}"
                st = e.stat(follow_symlinks=False)
                mode, out = st.st_mode, dest + path
                if stat.S_ISDIR(mode):
                    os.mkdir(out, 0o700)
                    plan.dirs.append((path, st))
                    stack.append(path)
                    continue
                if st.st_nlink > 1:
                    first = seen.setdefault((st.st_dev, st.st_ino), path)
                    if first != path:
                        plan.links.append((path, first))
                        continue
                if stat.S_ISREG(mode):
                    plan.files.append((path, st))
                elif stat.S_ISLNK(mode):
                    os.symlink(os.readlink(src + path), out)
                    os.chown(out, st.st_uid, st.st_gid, follow_symlinks=False)
                    os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
                else:          # device node, fifo, socket
                    os.mknod(out, stat.S_IFMT(mode) | 0o600, st.st_rdev)
                    _attrs(src + path, out, st)


_NO_RANGE = (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)


def _range(src: int, dest: int, off: int, end: int) -> None:
    """Bytes off..end of src to the same place in dest: copy_file_range (shares extents where the file system
    can), or sendfile where the kernel copies no range between these two file systems (overlay or tmpfs to ext4)."""
    while off < end:
        try:
            n = os.copy_file_range(src, dest, end - off, off, off)
        except OSError as e:
            if e.errno not in _NO_RANGE:
                raise
            os.lseek(dest, off, os.SEEK_SET)
            n = os.sendfile(dest, src, off, end - off)
        if n == 0:
            return
        off += n


def _data(src: int, dest: int, size: int) -> None:
    """The bytes of src into dest, holes kept (dest is sized to size at the end)."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(src, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:     # only a hole is left
                break
            raise
        end = os.lseek(src, start, os.SEEK_HOLE)
        _range(src, dest, start, end)
        pos = end
    os.ftruncate(dest, size)


def _copy_file(src: str, dest: str, path: str, st: os.stat_result) -> None:
    fd = os.open(src + path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(now.st_mode):
            raise CopyError(f"{src + path}: changed while it was copied (not the file the walk saw)",
                            "copy a stopped guest; nothing of it was used")
        out = os.open(dest + path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            if now.st_blocks * 512 >= now.st_size:      # no holes to keep: one range, no seeking
                _range(fd, out, 0, now.st_size)
            else:
                _data(fd, out, now.st_size)
            _attrs(fd, out, st)
        finally:
            os.close(out)
    finally:
        os.close(fd)


def _copy_files(src: str, dest: str, files: list[tuple[str, os.stat_result]]) -> None:
    for path, st in files:
        _copy_file(src, dest, path, st)


def _batches(files: list[tuple[str, os.stat_result]]) -> list[list[tuple[str, os.stat_result]]]:
    out: list[list[tuple[str, os.stat_result]]] = []
    batch: list[tuple[str, os.stat_result]] = []
    size = 0
    for f in files:
        batch.append(f)
        size += f[1].st_size
        if len(batch) >= BATCH_FILES or size >= BATCH_BYTES:
            out.append(batch)
            batch, size = [], 0
    if batch:
        out.append(batch)
    return out


def copy_tree(src: str | os.PathLike, dest: str | os.PathLike, threads: int = THREADS) -> None:
    """Copy the directory src to dest (which must not exist), as `cp -a` would: owners, modes, times, xattrs,
    ACLs, capabilities, devices, hard links, holes. CopyError naming the file on any error."""
    src, dest = os.fspath(src), os.fspath(dest)
    plan = _Plan()
    try:
        st = os.lstat(src)
        if not stat.S_ISDIR(st.st_mode):
            raise CopyError(f"{src}: not a directory", "give the tree's directory itself")
        os.mkdir(dest, 0o700)
        _walk(src, dest, plan)
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for f in [pool.submit(_copy_files, src, dest, b) for b in _batches(plan.files)]:
                f.result()
        for path, first in plan.links:
            os.link(dest + first, dest + path, follow_symlinks=False)
        for path, s in reversed(plan.dirs):
            _attrs(src + path, dest + path, s)
        _attrs(src, dest, st)
    except OSError as e:
        where = e.filename or src
        raise CopyError(f"cannot copy {src} to {dest}: {where}: {e.strerror}",
                        "check the free space and that the tree is not changing") from None


def copy_any(src: Path, dest: Path) -> None:
    """A directory with copy_tree, anything else as cp -a would (mode, owner, times kept)."""
    if src.is_dir() and not src.is_symlink():
        copy_tree(src, dest)
        return
    runner.run(["cp", "-a", "--reflink=auto", "--sparse=always", str(src), str(dest)])
