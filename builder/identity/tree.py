"""Where a guest's files are: a directory tree (rootfs, LXC container, unpacked output) or an unmounted ext2/3/4
image (edited with debugfs). One small interface, so the identity engine does not care which."""
from __future__ import annotations

import re
import stat as statmod
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .. import run as runner
from ..errors import UnsafePath
from ..rootfs import RootFS
from ..targets import image as img


@dataclass(frozen=True)
class Meta:
    mode: int      # full st_mode
    uid: int
    gid: int


class Tree(Protocol):
    label: str

    def read(self, path: str) -> bytes | None: ...

    def write(self, path: str, data: bytes, meta: Meta | None = None) -> None: ...

    def remove(self, path: str) -> None: ...

    def listdir(self, path: str) -> list[str]: ...

    def meta(self, path: str) -> Meta | None: ...


class DirTree:
    """A root directory (a guest's: untrusted), through RootFS: no path ever leaves the tree. The last component
    of a path is never followed: a link reads as nothing and is replaced by a write, never written through (a
    guest's /etc/hostname linked to the host's /etc/shadow stays a link in the guest, the host file untouched)."""

    def __init__(self, root: Path | str, label: str | None = None):
        self.root = RootFS(root)
        self.label = label or str(root)

    def read(self, path: str) -> bytes | None:
        try:
            return self.root.read_bytes(path, follow_last=False)   # regular files only
        except UnsafePath:   # a path that escapes is simply not there
            return None

    def meta(self, path: str) -> Meta | None:
        if not path.strip("/"):
            path = "/"
        try:
            st = self.root.lstat(path)
        except UnsafePath:
            return None
        return None if st is None else Meta(st.st_mode, st.st_uid, st.st_gid)

    def write(self, path: str, data: bytes, meta: Meta | None = None) -> None:
        """Replace path by a regular file (a link there is replaced, never written through). Mode and owner from
        meta (or the file there now) when that is a regular file; nothing there: 0644, root's; a link, device or
        directory lends none of its own: 0600, root's (it may stand where a private key was)."""
        meta = meta or self.meta(path)
        if meta is None:
            meta = Meta(0o100644, 0, 0)
        elif not statmod.S_ISREG(meta.mode):
            meta = Meta(0o100600, 0, 0)
        self.root.write(path, data, statmod.S_IMODE(meta.mode), meta.uid, meta.gid)

    def remove(self, path: str) -> None:
        if self.root.lexists(path):
            self.root.remove(path)

    def listdir(self, path: str) -> list[str]:
        try:
            st = self.root.lstat(path if path.strip("/") else "/")
        except UnsafePath:
            return []
        if st is None or not statmod.S_ISDIR(st.st_mode):
            return []
        return self.root.listdir(path if path.strip("/") else "/")


_LS = re.compile(r"^/(\d+)/(\d+)/(\d+)/(\d+)/(.*)/(\d*)/$")


class ImageTree:
    """An unmounted ext2/3/4 filesystem image, read and written with debugfs (nothing is mounted)."""

    def __init__(self, image: Path, label: str | None = None, epoch: int | None = None, force: bool = False):
        self.image = Path(image)
        self.label = label or str(image)
        self.epoch = epoch
        self.force = force           # write even while something else holds the image (warned about by the caller)
        self._free = False

    def _writable(self) -> None:
        """Before the first write (debugfs -w): nothing else may have the image attached, mounted or open, and its
        journal must not need recovery - else InputError naming the image and the holder."""
        if self._free or self.force:
            return
        from . import inuse

        inuse.refuse(self.image, inuse.image_holders(self.image, xen=False), force=False)
        self._free = True

    def read(self, path: str) -> bytes | None:
        m = self.meta(path)
        if m is None or not statmod.S_ISREG(m.mode):
            return None
        return img.e2read(self.image, path)

    def meta(self, path: str) -> Meta | None:
        r = runner.run(["debugfs", "-R", f'stat "{path}"', str(self.image)], capture=True, check=False, quiet=True)
        out = r.stdout
        mode = re.search(r"Mode:\s+(\d+)", out)
        ids = re.search(r"User:\s+(\d+)\s+Group:\s+(\d+)", out)
        kind = re.search(r"Type:\s+(\w+)", out)
        if not (mode and ids and kind):
            return None
        fmt = {"regular": statmod.S_IFREG, "directory": statmod.S_IFDIR, "symlink": statmod.S_IFLNK,
               "character": statmod.S_IFCHR, "block": statmod.S_IFBLK, "FIFO": statmod.S_IFIFO,
               "socket": statmod.S_IFSOCK}.get(kind.group(1), 0)
        return Meta(fmt | int(mode.group(1), 8), int(ids.group(1)), int(ids.group(2)))

    def write(self, path: str, data: bytes, meta: Meta | None = None) -> None:
        self._writable()
        meta = meta or self.meta(path) or Meta(0o100644, 0, 0)
        img.e2write(self.image, path, data, statmod.S_IMODE(meta.mode), meta.uid, meta.gid, self.epoch)

    def remove(self, path: str) -> None:
        if self.meta(path) is not None:
            self._writable()
            img.debugfs(self.image, [f'rm "{path}"'], self.epoch)

    def listdir(self, path: str) -> list[str]:
        r = runner.run(["debugfs", "-R", f'ls -p "{path}"', str(self.image)], capture=True, check=False,
                       quiet=True)
        names = []
        for line in r.stdout.splitlines():
            m = _LS.match(line.strip())
            if m and m.group(5) not in (".", ".."):
                names.append(m.group(5))
        return sorted(names)


def is_ext_image(path: Path) -> bool:
    """An ext2/3/4 superblock magic at byte 1080."""
    try:
        with open(path, "rb") as f:
            f.seek(1080)
            return f.read(2) == b"\x53\xef"
    except OSError:
        return False


def fresh_key(kind: str, comment: str) -> tuple[bytes, bytes]:
    """A new ssh host key pair (private, public) made by the host's ssh-keygen."""
    with tempfile.TemporaryDirectory(prefix="imgbuild-key-") as d:
        key = Path(d) / "key"
        runner.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", comment, "-f", str(key)], quiet=True)
        return key.read_bytes(), (key.with_suffix(".pub")).read_bytes()
