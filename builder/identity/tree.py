"""Where a guest's files are: a directory tree (rootfs, LXC container, unpacked output) or an unmounted ext2/3/4
image (edited with debugfs). One small interface, so the identity engine does not care which."""
from __future__ import annotations

import stat as statmod
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from builder.core import e2fs
from builder.core import proc as runner
from builder.core.errors import InputError, UnsafePath
from builder.core.rootfs import RootFS
from builder.identity import inuse
from builder.identity.kept import MAX_GUEST_FILE


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


# the most imgbuild reads of one file in a guest (its identity files, templates, leases are small text): a larger
# one is refused before it is read (a sparse 100 GB /etc/hosts would otherwise fill memory or the host's /tmp)
MAX_READ = MAX_GUEST_FILE

READ_HINT = ("a file imgbuild edits in a guest is small text; look at what the guest has there (remove or "
             "shrink it), or leave the guest as it is")


def _too_large(where: str, size: int) -> InputError:
    return InputError(f"{where}: {size:,} bytes, more than the {MAX_READ:,} imgbuild reads of a file in a guest",
                      READ_HINT)


def _write_meta(meta: Meta | None) -> Meta:
    """The mode and owner a write gives the new file: meta's when it is a regular file's (the file it replaces,
    or what the engine asks for); nothing there: 0644, root's; a link, device or directory lends none of its
    own: 0600, root's (it may stand where a private key was)."""
    if meta is None:
        return Meta(0o100644, 0, 0)
    if not statmod.S_ISREG(meta.mode):
        return Meta(0o100600, 0, 0)
    return meta


class DirTree:
    """A root directory (a guest's: untrusted), through RootFS: no path ever leaves the tree. Links on the way
    are followed inside the tree (as in a chroot of it, at most 40). The last component of a path is never
    followed: a link reads as nothing and is replaced by a write, never written through (a guest's /etc/hostname
    linked to the host's /etc/shadow stays a link in the guest, the host file untouched). A file larger than
    MAX_READ is refused (InputError), at most that much of it read."""

    def __init__(self, root: Path | str, label: str | None = None):
        self.root = RootFS(root)
        self.label = label or str(root)

    def read(self, path: str) -> bytes | None:
        try:
            data = self.root.read_bytes(path, follow_last=False, limit=MAX_READ)   # regular files only
        except UnsafePath:   # a path that escapes is simply not there
            return None
        if data is not None and len(data) > MAX_READ:
            st = self.root.lstat(path)
            raise _too_large(f"{self.root.path}:{path}", st.st_size if st is not None else len(data))
        return data

    def meta(self, path: str) -> Meta | None:
        if not path.strip("/"):
            path = "/"
        try:
            st = self.root.lstat(path)
        except UnsafePath:
            return None
        return None if st is None else Meta(st.st_mode, st.st_uid, st.st_gid)

    def write(self, path: str, data: bytes, meta: Meta | None = None) -> None:
        """Replace path by a regular file (a link there is replaced, never written through); mode and owner: see
        _write_meta (meta, or the file there now)."""
        meta = _write_meta(meta or self.meta(path))
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


class ImageTree:
    """An unmounted ext2/3/4 filesystem image, read and written with debugfs (nothing is mounted), answering as
    DirTree does: paths resolved inside the image as in a chroot of it (builder/e2fs.py: links on the way followed
    inside the image, at most 40; the last component never followed), every name quoted for debugfs or refused
    (InputError) when it cannot be, a file's size checked before it is read (more than MAX_READ: InputError,
    nothing dumped), a write replacing a link rather than writing through it."""

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
        inuse.refuse(self.image, inuse.image_holders(self.image, xen=False), force=False)
        self._free = True

    def read(self, path: str) -> bytes | None:
        ino = e2fs.lookup(self.image, path)
        if ino is None or not ino.is_reg:
            return None
        if ino.size > MAX_READ:
            raise _too_large(f"{self.image}:{path}", ino.size)
        return e2fs.read_inode(self.image, ino, MAX_READ, path)

    def meta(self, path: str) -> Meta | None:
        ino = e2fs.lookup(self.image, path)
        return None if ino is None else Meta(ino.mode, ino.uid, ino.gid)

    def write(self, path: str, data: bytes, meta: Meta | None = None) -> None:
        self._writable()
        meta = _write_meta(meta or self.meta(path))
        e2fs.write(self.image, path, data, statmod.S_IMODE(meta.mode), meta.uid, meta.gid, self.epoch)

    def remove(self, path: str) -> None:
        if self.meta(path) is not None:
            self._writable()
            e2fs.remove(self.image, path, self.epoch)

    def listdir(self, path: str) -> list[str]:
        return e2fs.listdir(self.image, path)


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
        runner.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", comment, "-f", str(key)])
        return key.read_bytes(), (key.with_suffix(".pub")).read_bytes()
