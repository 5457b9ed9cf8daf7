"""Safe file access inside a root tree.

A root tree is untrusted: any component of a path may be a symlink, absolute or relative, pointing anywhere, and
any file may be a device node or a fifo. Every path here is resolved the way the kernel would inside a chroot of
the tree (absolute link targets start again at the tree's top, `..` stops at the top), one component at a time
from directories held open (never by handing a path with links to the kernel), so nothing done through RootFS
can touch a file outside the tree, even when the tree changes while we work in it.

- Writes replace the last component: a link there is replaced by the file, never written through; a later
  write, link or node for the same path replaces the earlier one.
- chmod, chown, utime and lstat act on the last component itself (a link keeps its target's mode alone).
- Reads follow links inside the tree and read regular files only (a device node or fifo reads as missing).
- `resolve()` gives the host path of a path inside the tree, for reading or for handing to a tool; it is never
  used to write.
- `mount_point()` opens a directory to mount on, refusing any link on the way (see mounts.py).
"""
from __future__ import annotations

import collections
import contextlib
import errno
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable

from builder.core.errors import UnsafePath

MAX_LINKS = 40

# marks the empty file standing in for a device node where mknod is not allowed (see unpriv.py)
DEVICE_XATTR = "user.imgbuild.device"

_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_OBJ = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


def _fd_path(fd: int) -> str:
    """The /proc path of an open file: opening or chmod-ing it acts on exactly that file, never on a link."""
    return f"/proc/self/fd/{fd}"


def _split(path: str) -> list[str]:
    return [c for c in path.split("/") if c not in ("", ".")]


@dataclass
class _Cursor:
    """The directories from the tree's top down to the current one, each held open: `..` goes back one, an
    absolute link starts again at the top. The kernel is only ever asked about one name in an open directory."""

    fds: list[int]
    names: list[str] = field(default_factory=list)

    @property
    def fd(self) -> int:
        return self.fds[-1]

    def down(self, name: str, fd: int) -> None:
        self.fds.append(fd)
        self.names.append(name)

    def up(self) -> None:
        if len(self.fds) > 1:
            os.close(self.fds.pop())
            self.names.pop()

    def top(self) -> None:
        while len(self.fds) > 1:
            self.up()

    def close(self) -> None:
        while self.fds:
            os.close(self.fds.pop())


@dataclass
class _Loc:
    """Where a path ends: `name` in the open directory `cur` (None: that directory itself). `rest` is what could
    not be walked because `name` is missing or not a directory (the path does not exist)."""

    cur: _Cursor
    name: str | None
    rest: list[str]

    @property
    def dfd(self) -> int:
        return self.cur.fd

    @property
    def at(self) -> str:
        """The name to give *at calls with dfd ("." for the directory itself)."""
        return "." if self.name is None else self.name

    def __enter__(self) -> "_Loc":
        return self

    def __exit__(self, *exc) -> None:
        self.cur.close()


class RootFS:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).resolve()

    def __repr__(self) -> str:
        return f"RootFS({str(self.path)!r})"

    # ------------------------------------------------------------ resolution

    def _top(self, create: bool) -> int:
        try:
            return os.open(self.path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            if not create:
                raise
            os.mkdir(self.path, 0o755)
            return os.open(self.path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def _locate(self, path: str, *, follow_last: bool = True, make: tuple[int, int, int] | None = None) -> _Loc:
        """Walk `path` inside the tree. Links are followed inside the tree (the last one only with follow_last).
        make=(mode, uid, gid): missing directories on the way are created with that mode and owner (a link's
        missing target included, as mkdir -p in a chroot would); a non-directory on the way is then an error."""
        if not isinstance(path, str) or not path.startswith("/"):
            raise UnsafePath(f"{path}: paths inside the root must be absolute")
        if "\0" in path:
            raise UnsafePath(f"{path!r}: a path with a NUL byte")
        todo = collections.deque(_split(path))
        cur = _Cursor([self._top(make is not None)])
        hops = 0

        def hop() -> None:
            nonlocal hops
            hops += 1
            if hops > MAX_LINKS:
                raise _LinkLoop(f"{path}: too many levels of symbolic links inside {self.path}")
        try:
            while todo:
                comp = todo.popleft()
                if comp == "..":
                    cur.up()
                    continue
                last = not todo
                try:
                    st = os.stat(comp, dir_fd=cur.fd, follow_symlinks=False)
                except FileNotFoundError:
                    if make is None or last:
                        return _Loc(cur, comp, list(todo))
                    try:
                        _mkdir_at(cur.fd, comp, *make)
                    except FileExistsError:      # made meanwhile: look again
                        hop()
                    todo.appendleft(comp)
                    continue
                if stat.S_ISLNK(st.st_mode) and (follow_last or not last):
                    hop()
                    try:
                        target = os.readlink(comp, dir_fd=cur.fd)
                    except OSError:          # no longer a link: look again
                        hop()
                        todo.appendleft(comp)
                        continue
                    if target.startswith("/"):
                        cur.top()
                    todo.extendleft(reversed(_split(target)))
                    continue
                if last:
                    return _Loc(cur, comp, [])
                if not stat.S_ISDIR(st.st_mode):
                    if make is not None:
                        where = "/" + "/".join([*cur.names, comp])
                        raise UnsafePath(f"{path}: {where} exists in the root and is not a directory")
                    return _Loc(cur, comp, list(todo))
                try:
                    fd = os.open(comp, _DIR, dir_fd=cur.fd)
                except OSError as e:
                    if e.errno not in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
                        raise
                    hop()                    # replaced since the stat: look again
                    todo.appendleft(comp)
                    continue
                cur.down(comp, fd)
            return _Loc(cur, None, [])
        except BaseException:
            cur.close()
            raise

    def _find(self, path: str, follow_last: bool = True) -> _Loc | None:
        """_locate for readers: None when the path (or the tree) is not there, or leads into a loop of links."""
        try:
            loc = self._locate(path, follow_last=follow_last)
        except (FileNotFoundError, _LinkLoop):
            return None
        if loc.rest:
            loc.cur.close()
            return None
        return loc

    def _parent(self, path: str, make: bool = False) -> _Loc | None:
        """The directory holding path's last component (links on the way followed inside the tree), that
        component itself not followed. With make, missing directories are created (0755, root's)."""
        try:
            loc = self._locate(path, follow_last=False, make=(0o755, 0, 0) if make else None)
        except FileNotFoundError:
            return None
        if loc.name is None:
            loc.cur.close()
            raise UnsafePath(f"{path}: not a file path")
        if loc.rest:
            loc.cur.close()
            return None
        return loc

    def _host(self, loc: _Loc) -> Path:
        return self.path.joinpath(*loc.cur.names, *([loc.name] if loc.name else []), *loc.rest)

    def resolve(self, path: str, *, follow_last: bool = True) -> Path:
        """The host path of `path` inside the root, following links as a chroot would. For reading or for
        handing to a tool; never write through it (use the methods below)."""
        try:
            loc = self._locate(path, follow_last=follow_last)
        except FileNotFoundError:        # the tree itself is not there (yet)
            return self.path.joinpath(*_lexical(_split(path)))
        with loc:
            return self.path.joinpath(*loc.cur.names, *_lexical([loc.name] + loc.rest if loc.name else loc.rest))

    def parent_of(self, path: str) -> tuple[Path, str]:
        """(host directory that holds `path`, last component), the directory resolved safely."""
        try:
            loc = self._locate(path, follow_last=False)
        except FileNotFoundError:
            raise UnsafePath(f"{path}: the root {self.path} is not there") from None
        with loc:
            if loc.name is None or loc.rest:
                raise UnsafePath(f"{path}: not a file path in {self.path}")
            return self.path.joinpath(*loc.cur.names), loc.name

    # ------------------------------------------------------------ reading

    def lstat(self, path: str) -> os.stat_result | None:
        """The last component itself (a link is a link); None when missing."""
        return self._stat(path, False)

    def stat(self, path: str) -> os.stat_result | None:
        """What the path leads to, links followed inside the tree; None when missing or dangling."""
        return self._stat(path, True)

    def _stat(self, path: str, follow: bool) -> os.stat_result | None:
        loc = self._find(path, follow)
        if loc is None:
            return None
        with loc:
            try:
                return os.stat(loc.at, dir_fd=loc.dfd, follow_symlinks=False)
            except FileNotFoundError:
                return None

    def lexists(self, path: str) -> bool:
        return self.lstat(path) is not None

    def exists(self, path: str) -> bool:
        return self.stat(path) is not None

    def is_dir(self, path: str) -> bool:
        st = self.stat(path)
        return st is not None and stat.S_ISDIR(st.st_mode)

    def read_bytes(self, path: str, *, follow_last: bool = True, limit: int | None = None) -> bytes | None:
        """A regular file's bytes (links followed inside the tree, the last one only with follow_last); None for
        anything else: missing, a directory, a device node, a fifo. With limit, at most limit + 1 bytes are read
        (more than limit: the caller refuses the file)."""
        loc = self._find(path, follow_last)
        if loc is None:
            return None
        with loc:
            try:
                fd = _reopen(loc.dfd, loc.at, os.O_RDONLY)
            except (FileNotFoundError, _NotRegular):
                return None
            with os.fdopen(fd, "rb") as f:
                return f.read() if limit is None else f.read(limit + 1)

    def read_text(self, path: str, *, follow_last: bool = True) -> str | None:
        data = self.read_bytes(path, follow_last=follow_last)
        return None if data is None else data.decode("utf-8", "replace")

    def readlink(self, path: str) -> str | None:
        """A link's target as written (not followed); None when path is not a link."""
        loc = self._find(path, follow_last=False)
        if loc is None:
            return None
        with loc:
            try:
                return os.readlink(loc.at, dir_fd=loc.dfd)
            except OSError:
                return None

    def listdir(self, path: str) -> list[str]:
        """Names in a directory (links followed inside the tree), sorted; [] when it is not a directory."""
        loc = self._find(path, True)
        if loc is None:
            return []
        with loc:
            try:
                fd = os.open(loc.at, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=loc.dfd)
            except OSError:
                return []
            try:
                return sorted(os.listdir(fd))
            finally:
                os.close(fd)

    # ------------------------------------------------------------ writing

    def mkdir(self, path: str, mode: int = 0o755, uid: int = 0, gid: int = 0, *, reset: bool = False) -> Path:
        """mkdir -p inside the root (links followed inside it); existing directories keep their mode and owner
        unless reset. Returns the host path (for reading or tools)."""
        with self._locate(path, follow_last=True, make=(mode, uid, gid)) as loc:
            if loc.name is not None:
                try:
                    st = os.stat(loc.name, dir_fd=loc.dfd, follow_symlinks=False)
                except FileNotFoundError:
                    _mkdir_at(loc.dfd, loc.name, mode, uid, gid)
                else:
                    if not stat.S_ISDIR(st.st_mode):
                        raise UnsafePath(f"{path} exists in the root and is not a directory")
                    if reset:
                        _chown_at(loc.dfd, loc.name, uid, gid)
                        _chmod_at(loc.dfd, loc.name, mode)
            elif reset:
                _chown_at(loc.dfd, ".", uid, gid)
                _chmod_at(loc.dfd, ".", mode)
            return self._host(loc)

    def write(self, path: str, data: bytes | str, mode: int = 0o644, uid: int = 0, gid: int = 0) -> Path:
        """Atomically replace `path` by a regular file with this content, mode and owner."""
        if isinstance(data, str):
            data = data.encode()
        return self._create(path, lambda f: f.write(data), mode, uid, gid)

    def copy_in(self, source: str | os.PathLike, path: str, mode: int = 0o644, uid: int = 0, gid: int = 0) -> Path:
        """A host file copied in (streamed) as a new regular file at `path`."""
        with open(source, "rb") as src:
            return self._create(path, lambda f: shutil.copyfileobj(src, f, 1 << 20), mode, uid, gid)

    def _create(self, path: str, fill: Callable[[IO[bytes]], object], mode: int, uid: int, gid: int) -> Path:
        with self._parent(path, make=True) as loc:
            _refuse_dir(loc, path, "write a file")
            tmp = _tmp_name(loc.name)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=loc.dfd)
            try:
                with os.fdopen(fd, "wb") as f:
                    fill(f)
                    f.flush()
                    os.fchown(f.fileno(), uid, gid)
                    os.fchmod(f.fileno(), mode)
                os.rename(tmp, loc.name, src_dir_fd=loc.dfd, dst_dir_fd=loc.dfd)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp, dir_fd=loc.dfd)
                raise
            return self._host(loc)

    def symlink(self, target: str, path: str) -> Path:
        """Replace `path` by a link to target (the link itself; target is not looked at)."""
        with self._parent(path, make=True) as loc:
            _refuse_dir(loc, path, "replace it by a link")
            tmp = _tmp_name(loc.name)
            os.symlink(target, tmp, dir_fd=loc.dfd)
            try:
                os.rename(tmp, loc.name, src_dir_fd=loc.dfd, dst_dir_fd=loc.dfd)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp, dir_fd=loc.dfd)
                raise
            return self._host(loc)

    def link(self, existing: str, path: str) -> Path:
        """A hard link at `path` to the regular file `existing` (both inside the root; neither followed if it is
        a link: a hard link is only ever made to a regular file of the tree)."""
        src = self._parent(existing)
        if src is None:
            raise UnsafePath(f"cannot make {path} a hard link of {existing}: that is not in the root")
        with src:
            st = os.stat(src.name, dir_fd=src.dfd, follow_symlinks=False) if _lexists_at(src) else None
            if st is None or not stat.S_ISREG(st.st_mode):
                raise UnsafePath(f"cannot make {path} a hard link of {existing}: that is not a regular file in "
                                 "the root")
            with self._parent(path, make=True) as dst:
                _refuse_dir(dst, path, "replace it by a hard link")
                if _lexists_at(dst):
                    if os.path.samestat(st, os.stat(dst.name, dir_fd=dst.dfd, follow_symlinks=False)):
                        return self._host(dst)
                    os.unlink(dst.name, dir_fd=dst.dfd)
                os.link(src.name, dst.name, src_dir_fd=src.dfd, dst_dir_fd=dst.dfd, follow_symlinks=False)
                return self._host(dst)

    def mknod(self, path: str, kind: str, major: int, minor: int, mode: int, uid: int = 0, gid: int = 0) -> Path:
        """Create a device node or fifo (kind c, b or p), replacing whatever is there."""
        fmt = {"c": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}[kind]
        with self._parent(path, make=True) as loc:
            _refuse_dir(loc, path, "make a device node there")
            if _lexists_at(loc):
                os.unlink(loc.name, dir_fd=loc.dfd)
            try:
                os.mknod(loc.name, fmt | mode, os.makedev(major, minor) if kind != "p" else 0, dir_fd=loc.dfd)
            except PermissionError:
                if kind == "p":
                    raise
                # no mknod here (a user namespace): an empty file that says what it stands for; the tarball and
                # the image get the real node (tarwriter.placeholder)
                fd = os.open(loc.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                             dir_fd=loc.dfd)
                try:
                    os.setxattr(fd, DEVICE_XATTR, f"{kind} {major} {minor}".encode())
                finally:
                    os.close(fd)
            _chown_at(loc.dfd, loc.name, uid, gid)
            _chmod_at(loc.dfd, loc.name, mode)
            return self._host(loc)

    def remove(self, path: str, *, tree: bool = False) -> bool:
        """Remove a file, link or (tree=True) directory; the link itself, never its target."""
        loc = self._parent(path)
        if loc is None:
            return False
        with loc:
            try:
                st = os.stat(loc.name, dir_fd=loc.dfd, follow_symlinks=False)
            except FileNotFoundError:
                return False
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(loc.name, dir_fd=loc.dfd)
            elif tree:
                shutil.rmtree(loc.name, dir_fd=loc.dfd)     # the fd-based rmtree: never follows a link
            else:
                os.rmdir(loc.name, dir_fd=loc.dfd)
            return True

    def truncate(self, path: str) -> bool:
        """Empty a regular file in place (mode, owner and inode kept); anything else is left alone."""
        loc = self._find(path, follow_last=False)
        if loc is None:
            return False
        with loc:
            try:
                fd = _reopen(loc.dfd, loc.at, os.O_WRONLY)
            except (FileNotFoundError, _NotRegular):
                return False
            try:
                os.ftruncate(fd, 0)
            finally:
                os.close(fd)
            return True

    # ------------------------------------------------------------ metadata (the last component itself)

    def chmod(self, path: str, mode: int) -> bool:
        """chmod the last component itself; a link is left alone (False)."""
        loc = self._find(path, follow_last=False)
        if loc is None:
            raise UnsafePath(f"{path}: not in the root {self.path}")
        with loc:
            return _chmod_at(loc.dfd, loc.at, mode)

    def chown(self, path: str, uid: int, gid: int) -> None:
        """chown the last component itself (a link's own owner, never its target's)."""
        loc = self._find(path, follow_last=False)
        if loc is None:
            raise UnsafePath(f"{path}: not in the root {self.path}")
        with loc:
            _chown_at(loc.dfd, loc.at, uid, gid)

    def utime(self, path: str, times: tuple[float, float]) -> None:
        """Set atime and mtime of the last component itself."""
        loc = self._find(path, follow_last=False)
        if loc is None:
            raise UnsafePath(f"{path}: not in the root {self.path}")
        with loc:
            os.utime(loc.at, times, dir_fd=loc.dfd, follow_symlinks=False)

    # ------------------------------------------------------------ mounts

    def mount_point(self, path: str, create: str | None = "dir", *, mounted: bool = False) -> int:
        """An O_PATH descriptor of `path` to mount on: every component a real directory (or, for the last, a
        regular file), no link anywhere on the way; missing last component created (create="dir" or "file").
        mounted=True: the root of what is mounted there now (any kind: a bound device node too). The caller
        closes it. A link is refused, naming it and its target: mounting there would mount outside the tree (or
        somewhere else in it)."""
        comps = _split(path)
        if not path.startswith("/") or ".." in comps or not comps:
            raise UnsafePath(f"{path}: not a mount point inside the root")
        try:
            cur = _Cursor([self._top(False)])
        except FileNotFoundError:
            raise UnsafePath(f"{self.path}: the tree is not there; nothing mounted") from None
        try:
            for i, comp in enumerate(comps):
                last = i == len(comps) - 1
                where = self.path.joinpath(*comps[:i + 1])
                try:
                    st = os.stat(comp, dir_fd=cur.fd, follow_symlinks=False)
                except FileNotFoundError:
                    if not last or create is None:
                        raise UnsafePath(f"{where}: missing in the tree; nothing mounted there") from None
                    if create == "file":
                        os.close(os.open(comp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                                         0o644, dir_fd=cur.fd))
                    else:
                        _mkdir_at(cur.fd, comp, 0o755, 0, 0)
                    st = os.stat(comp, dir_fd=cur.fd, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    target = os.readlink(comp, dir_fd=cur.fd)
                    raise UnsafePath(f"{where} is a symbolic link (to {target}) in the tree: refusing to mount "
                                     f"{'/' + '/'.join(comps)} there",
                                     f"/{'/'.join(comps[:i + 1])} must be a real directory in the tree; remove the "
                                     "link (a package, hook or the guest made it)")
                if not stat.S_ISDIR(st.st_mode) and not (last and (mounted or stat.S_ISREG(st.st_mode))):
                    raise UnsafePath(f"{where} is not a directory: refusing to mount there")
                fd = os.open(comp, _OBJ if last else _DIR, dir_fd=cur.fd)
                if last:
                    if not os.path.samestat(os.fstat(fd), st):    # replaced since the stat
                        os.close(fd)
                        raise UnsafePath(f"{where} changed while being checked: refusing to mount there")
                    return fd
                cur.down(comp, fd)
            raise AssertionError("unreachable")
        finally:
            cur.close()

    # ------------------------------------------------------------ users

    def _ids(self, db: str, name: str) -> int:
        if name.isdigit():
            return int(name)
        for line in (self.read_text(db) or "").splitlines():
            parts = line.split(":")
            if len(parts) > 2 and parts[0] == name:
                return int(parts[2])
        raise KeyError(name)

    def uid(self, name: str) -> int:
        """A user's uid from the root's own /etc/passwd (never the host's)."""
        return self._ids("/etc/passwd", name)

    def gid(self, name: str) -> int:
        return self._ids("/etc/group", name)


# ------------------------------------------------------------ helpers on (open directory, name)

class _NotRegular(Exception):
    pass


class _LinkLoop(UnsafePath):
    pass


def _lexical(parts: list[str]) -> list[str]:
    out: list[str] = []
    for p in parts:
        if p == "..":
            if out:
                out.pop()
        else:
            out.append(p)
    return out


def _lexists_at(loc: _Loc) -> bool:
    try:
        os.stat(loc.at, dir_fd=loc.dfd, follow_symlinks=False)
        return True
    except FileNotFoundError:
        return False


def _refuse_dir(loc: _Loc, path: str, what: str) -> None:
    try:
        st = os.stat(loc.at, dir_fd=loc.dfd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise UnsafePath(f"{path} is a directory in the root; cannot {what}")


def _tmp_name(name: str) -> str:
    return f".imgbuild-{os.getpid()}-{os.urandom(4).hex()}-{name}"[:255]


def _mkdir_at(dfd: int, name: str, mode: int, uid: int, gid: int) -> None:
    os.mkdir(name, 0o700, dir_fd=dfd)
    _chown_at(dfd, name, uid, gid)
    _chmod_at(dfd, name, mode)


def _chown_at(dfd: int, name: str, uid: int, gid: int) -> None:
    os.chown(name, uid, gid, dir_fd=dfd, follow_symlinks=False)


def _chmod_at(dfd: int, name: str, mode: int) -> bool:
    """chmod of exactly that entry (Linux has no lchmod: the entry is opened without following and chmod-ed through
    its /proc/self/fd path). A link has no mode of its own: left alone, False."""
    fd = os.open(name, _OBJ, dir_fd=dfd)
    try:
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            return False
        os.chmod(_fd_path(fd), mode)
        return True
    finally:
        os.close(fd)


def _reopen(dfd: int, name: str, flags: int) -> int:
    """Open a regular file for reading or writing without following a link and without opening anything else
    (opening a device node or fifo can block or act on a device: they are never opened)."""
    fd = os.open(name, _OBJ, dir_fd=dfd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _NotRegular(name)
        return os.open(_fd_path(fd), flags | os.O_CLOEXEC | os.O_NOCTTY)
    finally:
        os.close(fd)
