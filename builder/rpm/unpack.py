"""Unpack RPM packages into a root with rpmfile, the way rpm itself would lay the files down.

The payload (cpio) gives the file data; the header gives everything else: full modes (setuid/setgid/sticky,
which the cpio modes rpmfile reports lose), owner and group names, symlink targets, device numbers, hardlink
sets (files sharing an inode), %ghost files (not in the payload, not created) and mtimes. Owners are names,
resolved against the root's own /etc/passwd and /etc/group after every package is unpacked (the setup package
that carries them may come late); chown goes before chmod so setuid bits survive.
"""
from __future__ import annotations

import io
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import rpmfile

from builder.core.errors import BuilderError, UnsafePath
from builder.core.rootfs import RootFS

log = logging.getLogger("imgbuild")
GHOST = 1 << 6   # RPMFILE_GHOST


class _RPM(rpmfile.RPMFile):
    """rpmfile with the payload decompressed once into memory, so reading members in any order is cheap
    (rpmfile seeks in an xz/gzip stream otherwise, which restarts decompression)."""

    @property
    def data_file(self):
        if self._data_file is None:
            stream = rpmfile.RPMFile.data_file.fget(self)
            self._data_file = io.BytesIO(stream.read())
        return self._data_file


def _list(h: dict, key: str) -> list:
    v = h.get(key)
    if v is None:
        return []
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _text(v) -> str:
    return v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else str(v)


@dataclass
class Owners:
    """Ownership to apply once all packages are unpacked: (path in root, user, group, mode)."""

    pending: list[tuple[str, str, str, int]] = field(default_factory=list)

    def apply(self, root: RootFS) -> None:
        unknown: set[str] = set()
        for path, user, group, mode in self.pending:
            try:
                uid = root.uid(user)
            except KeyError:
                unknown.add(f"user {user}")
                uid = 0
            try:
                gid = root.gid(group)
            except KeyError:
                unknown.add(f"group {group}")
                gid = 0
            # the entry itself, never what it links to: a later package may have replaced this path by a link
            # (to anywhere); a link keeps its target's mode alone
            if root.lstat(path) is None:
                continue
            root.chown(path, uid, gid)
            if not stat.S_ISLNK(mode):
                root.chmod(path, stat.S_IMODE(mode))
        if unknown:
            log.warning("unpack: %s not in the root's user database; those files belong to root",
                        ", ".join(sorted(unknown)))


def unpack(path: Path, root: RootFS, owners: Owners) -> str:
    """Lay down one package's files in root; returns its name-version-release."""
    try:
        rpm = _RPM(str(path))
    except Exception as e:  # rpmfile raises bare Exceptions on garbage
        raise BuilderError(f"{path}: not a readable RPM package ({e})") from None
    with rpm:
        h = rpm.headers
        nvr = f"{_text(h.get('name'))}-{_text(h.get('version'))}-{_text(h.get('release'))}"
        dirs = [_text(d) for d in _list(h, "dirnames")]
        names = [dirs[i] + _text(b) for i, b in zip(_list(h, "dirindexes"), _list(h, "basenames"))]
        if not names:
            return nvr
        n = len(names)
        modes = [m & 0xFFFF for m in _list(h, "filemodes")]
        users = [_text(u) for u in _list(h, "fileusername")] or ["root"] * n
        groups = [_text(g) for g in _list(h, "filegroupname")] or ["root"] * n
        links = [_text(x) for x in _list(h, "filelinktos")] or [""] * n
        flags = _list(h, "fileflags") or [0] * n
        inodes = _list(h, "fileinodes") or list(range(n))
        rdevs = _list(h, "filerdevs") or [0] * n
        mtimes = _list(h, "filemtimes") or [0] * n
        try:
            members = {m.name.lstrip("."): m for m in rpm.getmembers()}
        except Exception as e:  # corrupt payload
            raise BuilderError(f"{path}: cannot read the package's payload ({e})") from None
        first_of_inode: dict[int, str] = {}
        data_of_inode: dict[int, bytes] = {}
        for i, name in enumerate(names):   # hardlink sets: the data travels with one of the names
            m = members.get(name)
            if m is not None and m.size:
                data_of_inode[inodes[i]] = rpm.extractfile(m).read()
        for i, name in enumerate(names):
            if flags[i] & GHOST:
                continue
            try:
                if not _lay_down(root, name, modes[i], links[i], inodes[i], rdevs[i], first_of_inode,
                                 data_of_inode):
                    continue
                if mtimes[i]:
                    root.utime(name, (mtimes[i], mtimes[i]))
            except UnsafePath as e:
                raise BuilderError(f"{path.name}: {name}: {e}", "the package is broken or hostile; leave it out "
                                   "of the build") from None
            owners.pending.append((name, users[i], groups[i], modes[i]))
    return nvr


def _lay_down(root: RootFS, name: str, mode: int, link: str, inode: int, rdev: int, first_of_inode: dict[int, str],
              data_of_inode: dict[int, bytes]) -> bool:
    """One entry of a package, through RootFS: whatever was at `name` is replaced (never written through), links
    on the way are followed inside the root only, a hard link is made only to a regular file of the tree.
    False for an entry rpm does not lay down (a socket)."""
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFDIR:
        root.mkdir(name, stat.S_IMODE(mode) or 0o755)
    elif kind == stat.S_IFLNK:
        root.symlink(link, name)
    elif kind == stat.S_IFREG:
        if inode in first_of_inode:
            root.link(first_of_inode[inode], name)
        else:
            first_of_inode[inode] = name
            root.write(name, data_of_inode.get(inode, b""), stat.S_IMODE(mode))
    elif kind in (stat.S_IFCHR, stat.S_IFBLK):
        rdev &= 0xFFFFFFFF
        root.mknod(name, "c" if kind == stat.S_IFCHR else "b", os.major(rdev), os.minor(rdev), stat.S_IMODE(mode))
    elif kind == stat.S_IFIFO:
        root.mknod(name, "p", 0, 0, stat.S_IMODE(mode))
    else:
        return False
    return True


def read_files(path: Path, wanted) -> dict[str, bytes]:
    """The regular files of a package whose path satisfies wanted(path), by path (release seeding)."""
    out = {}
    with _RPM(str(path)) as rpm:
        h = rpm.headers
        dirs = [_text(d) for d in _list(h, "dirnames")]
        names = [dirs[i] + _text(b) for i, b in zip(_list(h, "dirindexes"), _list(h, "basenames"))]
        modes = [m & 0xFFFF for m in _list(h, "filemodes")]
        flags = _list(h, "fileflags") or [0] * len(names)
        inodes = _list(h, "fileinodes") or list(range(len(names)))
        members = {m.name.lstrip("."): m for m in rpm.getmembers()}
        data = {inodes[i]: rpm.extractfile(members[n]).read() for i, n in enumerate(names)
                if n in members and members[n].size}   # a hardlink set's data travels with one name
        for i, name in enumerate(names):
            if wanted(name) and stat.S_ISREG(modes[i]) and not flags[i] & GHOST:
                out[name] = data.get(inodes[i], b"")
    return out
