"""Safe file access inside a root tree.

A root tree is untrusted: any component of a path may be a symlink, absolute or relative, pointing anywhere.
Every path here is resolved the way the kernel would inside a chroot of the tree (absolute link targets start
again at the tree's top, `..` stops at the top), so nothing done through RootFS can touch a file outside it.
Writes replace the last component (a symlink there is replaced by the file, never followed).
"""
from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tempfile
from pathlib import Path

from .errors import UnsafePath

MAX_LINKS = 40

# marks the empty file standing in for a device node where mknod is not allowed (see unpriv.py)
DEVICE_XATTR = "user.imgbuild.device"


class RootFS:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).resolve()

    def __repr__(self) -> str:
        return f"RootFS({str(self.path)!r})"

    # ------------------------------------------------------------ resolution

    def resolve(self, path: str, *, follow_last: bool = True) -> Path:
        """The host path of `path` inside the root, following links as a chroot would."""
        if not path.startswith("/"):
            raise UnsafePath(f"{path}: paths inside the root must be absolute")
        todo = [c for c in path.split("/") if c not in ("", ".")]
        done: list[str] = []
        hops = 0
        while todo:
            comp = todo.pop(0)
            if comp == "..":
                if done:
                    done.pop()
                continue
            candidate = self.path.joinpath(*done, comp)
            is_last = not todo
            if (follow_last or not is_last) and candidate.is_symlink():
                hops += 1
                if hops > MAX_LINKS:
                    raise UnsafePath(f"{path}: too many levels of symbolic links inside {self.path}")
                target = os.readlink(candidate)
                parts = [c for c in target.split("/") if c not in ("", ".")]
                if target.startswith("/"):
                    done = []
                todo = parts + todo
                continue
            done.append(comp)
        host = self.path.joinpath(*done)
        self._check_inside(host.parent if not follow_last else host)
        return host

    def _check_inside(self, host: Path) -> None:
        real = os.path.realpath(host)
        if real != str(self.path) and not real.startswith(str(self.path) + os.sep):
            raise UnsafePath(f"{host} resolves outside the root {self.path}")

    def parent_of(self, path: str) -> tuple[Path, str]:
        """(host directory that holds `path`, last component), the directory resolved safely."""
        path = posixpath.normpath(path)
        parent, name = posixpath.split(path)
        if not name or name in (".", ".."):
            raise UnsafePath(f"{path}: not a file path")
        return self.resolve(parent or "/"), name

    # ------------------------------------------------------------ reading

    def lexists(self, path: str) -> bool:
        d, name = self.parent_of(path)
        return os.path.lexists(d / name)

    def exists(self, path: str) -> bool:
        try:
            return self.resolve(path).exists()
        except UnsafePath:
            return False

    def read_bytes(self, path: str) -> bytes | None:
        try:
            host = self.resolve(path)
        except UnsafePath:
            return None
        try:
            return host.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def read_text(self, path: str) -> str | None:
        data = self.read_bytes(path)
        return None if data is None else data.decode("utf-8", "replace")

    # ------------------------------------------------------------ writing

    def mkdir(self, path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Path:
        """mkdir -p inside the root; existing directories keep their mode."""
        cur = "/"
        host = self.path
        for comp in [c for c in posixpath.normpath(path).split("/") if c]:
            cur = posixpath.join(cur, comp)
            host = self.resolve(cur)
            if not host.exists():
                # resolve() returned a path without links; what is missing of it (a link's target
                # included) is created inside the root
                os.makedirs(host, mode=mode)
                os.chown(host, uid, gid)
                os.chmod(host, mode)
            elif not host.is_dir():
                raise UnsafePath(f"{cur} exists in the root and is not a directory")
        return host

    def write(self, path: str, data: bytes | str, mode: int = 0o644, uid: int = 0, gid: int = 0) -> Path:
        """Atomically replace `path` by a regular file with this content, mode and owner."""
        if isinstance(data, str):
            data = data.encode()
        parent = posixpath.dirname(posixpath.normpath(path))
        self.mkdir(parent)
        d, name = self.parent_of(path)
        dest = d / name
        if dest.is_dir() and not dest.is_symlink():
            raise UnsafePath(f"{path} is a directory in the root; cannot write a file there")
        fd, tmp = tempfile.mkstemp(prefix=".imgbuild-", dir=d)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                os.fchown(f.fileno(), uid, gid)
                os.fchmod(f.fileno(), mode)
            os.rename(tmp, dest)
        except BaseException:
            if os.path.lexists(tmp):
                os.unlink(tmp)
            raise
        return dest

    def copy_in(self, source: str | os.PathLike, path: str, mode: int = 0o644, uid: int = 0, gid: int = 0) -> Path:
        return self.write(path, Path(source).read_bytes(), mode, uid, gid)

    def symlink(self, target: str, path: str) -> Path:
        self.mkdir(posixpath.dirname(posixpath.normpath(path)))
        d, name = self.parent_of(path)
        tmp = d / f".imgbuild-link-{os.getpid()}-{name}"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(target, tmp)
        os.rename(tmp, d / name)
        return d / name

    def mknod(self, path: str, kind: str, major: int, minor: int, mode: int, uid: int = 0, gid: int = 0) -> Path:
        """Create a device node or fifo (kind c, b or p), replacing whatever is there."""
        self.mkdir(posixpath.dirname(posixpath.normpath(path)))
        d, name = self.parent_of(path)
        dest = d / name
        self.remove(path)
        fmt = {"c": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}[kind]
        try:
            os.mknod(dest, fmt | mode, os.makedev(major, minor) if kind != "p" else 0)
        except PermissionError:
            if kind == "p":
                raise
            # no mknod here (a user namespace): an empty file that says what it stands for; the tarball and
            # the image get the real node (tarwriter.placeholder)
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                os.setxattr(fd, DEVICE_XATTR, f"{kind} {major} {minor}".encode())
            finally:
                os.close(fd)
        os.chown(dest, uid, gid, follow_symlinks=False)
        os.chmod(dest, mode)
        return dest

    def remove(self, path: str, *, tree: bool = False) -> bool:
        """Remove a file, link or (tree=True) directory; the link itself, never its target."""
        d, name = self.parent_of(path)
        dest = d / name
        if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
            dest.unlink()
            return True
        if dest.is_dir():
            if tree:
                shutil.rmtree(dest)
            else:
                dest.rmdir()
            return True
        return False

    def chmod(self, path: str, mode: int) -> None:
        os.chmod(self.resolve(path), mode)

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
