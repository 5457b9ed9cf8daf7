"""Whether a guest's disk image or root directory is in use, and by what.

Editing a filesystem that something else has open corrupts it, or the holder overwrites the edits: a mounted
image's kernel caches never see what debugfs wrote, a running guest writes its own files back. So before an
image or a tree is re-identified (or copied for a clone), every holder this host can see is looked for:

- an image: each attached loop device whose backing file IS the image (same device and inode, so a hard link,
  a symlink or a bind-mounted path to it counts too; from the loop ioctl, else the backing_file sysfs entry) -
  with the mounts of that device, its partitions and device-mapper devices on top of it; every process that has
  the image open (/proc/PID/fd) or mapped (/proc/PID/maps); a running Xen domain whose disk it is (`xl list -l`,
  on a Xen dom0); a running LXC container whose rootfs it is; and an ext journal that still needs recovery (the
  filesystem was not cleanly unmounted: something may still have it mounted, and debugfs does not replay the
  journal, so a later mount would undo the edits).
- a root directory: every process whose root directory it is (a running container - named from its cgroup -,
  a chroot, systemd-nspawn), and the running LXC containers in the given lxcpaths whose lxc.rootfs.path is it
  (dir:, overlay lower/upper, loop: image).

Each holder says whether it may write (a read-write mount, a running guest, a file descriptor open for
writing): a copy only needs the source to hold still, so a clone refuses only writers; an edit refuses them all.

Not seen: mounts in other mount namespaces of a device that is not a loop device of this image (there is none
for a regular file), holders on other hosts (an image on shared storage used by another host). An OpenVZ
container counts as running while its VE_ROOT is mounted (builder.identity.guest; vzctl is not asked). The check
runs right before the edit; a holder that starts while imgbuild edits is not stopped.
"""
from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from builder.core import proc as runner
from builder.core.errors import BuilderError, InputError
from builder.core.untrusted import load_json

log = logging.getLogger("imgbuild")

SYS_BLOCK = Path("/sys/block")
PROC = Path("/proc")
LOOP_GET_STATUS64 = 0x4C05          # <linux/loop.h>
LO_FLAGS_READ_ONLY = 1
EXT_SUPERBLOCK = 1024
EXT_MAGIC = b"\x53\xef"
EXT_INCOMPAT_RECOVER = 0x0004       # "needs_recovery"
MAX_SHOWN = 5                       # processes named per holder line


@dataclass(frozen=True)
class Holder:
    """Something that uses an image or a tree: what it is (for the message), how to end it (for the hint),
    whether it may write to it."""

    what: str
    fix: str
    writes: bool = True
    key: str = ""                   # one holder seen two ways (e.g. a container by lxc-ls and by /proc) counts once


Ident = tuple[int, int]             # (st_dev, st_ino)


def ident(path: str | os.PathLike[str]) -> Ident | None:
    """The device and inode of what `path` names (links followed); None if it is not there."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _read(path: Path | str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _unique(holders: Iterable[Holder]) -> list[Holder]:
    seen: set[str] = set()
    out = []
    for h in holders:
        k = h.key or h.what
        if k not in seen:
            seen.add(k)
            out.append(h)
    return out


# ------------------------------------------------------------------ loop devices and mounts


@dataclass(frozen=True)
class Loop:
    name: str                       # loop3
    backing: Ident | None
    backing_file: str
    read_only: bool

    @property
    def dev(self) -> str:
        return f"/dev/{self.name}"


def _loop_status(name: str) -> tuple[Ident, bool] | None:
    """(backing device, inode), read-only flag: LOOP_GET_STATUS64 on /dev/NAME (None if it cannot be asked)."""
    try:
        fd = os.open(f"/dev/{name}", os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        buf = bytearray(232)        # struct loop_info64
        fcntl.ioctl(fd, LOOP_GET_STATUS64, buf)
    except OSError:
        return None
    finally:
        os.close(fd)
    dev, ino, _rdev, _off, _size, _num, _enc, _keysize, flags = struct.unpack_from("=QQQQQIIII", buf)
    # the kernel encodes the device as new_encode_dev(); for majors below 4096 that is glibc's makedev
    major, minor = (dev & 0xfff00) >> 8, (dev & 0xff) | ((dev >> 12) & 0xfff00)
    return (os.makedev(major, minor), ino), bool(flags & LO_FLAGS_READ_ONLY)


def loops() -> list[Loop]:
    """Every attached loop device."""
    out = []
    try:
        names = sorted(p.name for p in SYS_BLOCK.iterdir() if p.name.startswith("loop"))
    except OSError:
        return []
    for name in names:
        sysdir = SYS_BLOCK / name / "loop"
        if not sysdir.is_dir():
            continue                # not attached
        backing_file = (_read(sysdir / "backing_file") or "").rstrip("\n")
        status = _loop_status(name)
        if status is not None:
            backing, ro = status
        else:                       # no /dev node here: the path the kernel keeps (a deleted file has none)
            backing = None if backing_file.endswith(" (deleted)") else ident(backing_file)
            ro = (_read(SYS_BLOCK / name / "ro") or "0").strip() == "1"
        out.append(Loop(name, backing, backing_file, ro))
    return out


def _block_devs(name: str) -> dict[str, str]:
    """maj:min -> device name, for a block device, its partitions and the devices stacked on them (dm ...)."""
    out: dict[str, str] = {}
    todo = [SYS_BLOCK / name]
    while todo:
        d = todo.pop()
        if d.name in out.values():
            continue
        if (n := (_read(d / "dev") or "").strip()):
            out[n] = d.name
        try:
            todo += [p for p in d.iterdir() if p.name.startswith(name) and (p / "partition").exists()]
            todo += [SYS_BLOCK / h.name for h in (d / "holders").iterdir()]
        except OSError:
            pass
    return out


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_of(devs: dict[str, str]) -> list[tuple[str, str, bool]]:
    """(mount point, device name, read-write) of each mount in this mount namespace of one of `devs`."""
    out = []
    for line in (_read(PROC / "self/mountinfo") or "").splitlines():
        f = line.split()
        if len(f) < 6 or f[2] not in devs:
            continue
        out.append((_unescape(f[4]), devs[f[2]], "rw" in f[5].split(",")))
    return out


def is_mount_point(path: str | os.PathLike[str]) -> bool:
    """Whether something is mounted on `path` in this mount namespace (a bind mount within one filesystem too,
    which os.path.ismount does not see)."""
    real = os.path.realpath(path)
    return any(len(f) > 4 and _unescape(f[4]) == real
               for f in (line.split() for line in (_read(PROC / "self/mountinfo") or "").splitlines()))


def loop_holders(image: Ident) -> list[Holder]:
    holders = []
    for lo in loops():
        if lo.backing != image:
            continue
        devs = _block_devs(lo.name)
        mounted = mounts_of(devs)
        for point, dev, rw in mounted:
            holders.append(Holder(f"mounted at {point} through /dev/{dev} ({'read-write' if rw else 'read-only'})",
                                  f"umount {point}", writes=rw))
        stacked = sorted(n for n in devs.values() if not n.startswith(lo.name))
        on = f", used by {', '.join('/dev/' + n for n in stacked)}" if stacked else ""
        state = "mounted above" if mounted else "not mounted in this mount namespace"
        holders.append(Holder(f"attached to {lo.dev} ({'read-only' if lo.read_only else 'read-write'}; {state}{on})",
                              f"losetup -d {lo.dev}", writes=not lo.read_only))
    return holders


# ------------------------------------------------------------------ processes


def _pids() -> list[int]:
    try:
        return sorted(int(p.name) for p in PROC.iterdir() if p.name.isdigit())
    except OSError:
        return []


def _comm(pid: int) -> str:
    return (_read(PROC / str(pid) / "comm") or "?").strip() or "?"


def _fd_writes(pid: int, fd: str) -> bool:
    info = _read(PROC / str(pid) / "fdinfo" / fd) or ""
    m = re.search(r"^flags:\s*([0-7]+)", info, re.M)
    return m is None or (int(m.group(1), 8) & os.O_ACCMODE) != os.O_RDONLY


def _holds(pid: int, image: Ident) -> bool | None:
    """None: pid does not hold the image; else whether it may write to it (an fd open for writing, or a shared
    writable mapping)."""
    found: bool | None = None
    fd_dir = PROC / str(pid) / "fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        fds = []
    for fd in fds:
        if ident(fd_dir / fd) == image:
            found = bool(found) or _fd_writes(pid, fd)
    dev = f"{os.major(image[0]):02x}:{os.minor(image[0]):02x}"
    for line in (_read(PROC / str(pid) / "maps") or "").splitlines():
        f = line.split(None, 5)
        if len(f) >= 5 and f[4] == str(image[1]) and f[3] == dev:
            found = bool(found) or (f[1][1] == "w" and f[1][3] == "s")
    return found


def process_holders(image: Ident) -> list[Holder]:
    """Every other process that has the file open or mapped, as fuser finds them."""
    me = os.getpid()
    holders = []
    for pid in _pids():
        if pid == me:
            continue
        w = _holds(pid, image)
        if w is not None:
            holders.append(Holder(f"open in process {pid} ({_comm(pid)}){' for writing' if w else ''}",
                                  f"end process {pid}", writes=w))
    return holders


_LXC_CGROUP = re.compile(r"(?:lxc\.payload[./]|/lxc/)([^/\n]+)")


def root_holders(root: Ident) -> list[Holder]:
    """The processes whose root directory is `root`: containers (named from their cgroup: LXC's lxc.payload.NAME),
    chroots and nspawn guests, one line per container."""
    me = os.getpid()
    groups: dict[str, list[int]] = {}
    for pid in _pids():
        if pid == me or ident(PROC / str(pid) / "root") != root:
            continue
        m = _LXC_CGROUP.search(_read(PROC / str(pid) / "cgroup") or "")
        groups.setdefault(f"lxc:{m.group(1)}" if m else "", []).append(pid)
    holders = []
    for key, pids in sorted(groups.items()):
        shown = ", ".join(f"{p} ({_comm(p)})" if not key else str(p) for p in pids[:MAX_SHOWN])
        shown += f" and {len(pids) - MAX_SHOWN} more" if len(pids) > MAX_SHOWN else ""
        if key:
            name = key[4:]
            holders.append(Holder(f"LXC container {name} is running from it (process {shown})",
                                  f"lxc-stop -n {name}", key=key))
        elif len(pids) == 1:
            holders.append(Holder(f"process {shown} runs with it as its root directory", f"end process {pids[0]}"))
        else:
            holders.append(Holder(f"processes {shown} run with it as their root directory",
                                  "end those processes (a chroot, systemd-nspawn ...)"))
    return holders


# ------------------------------------------------------------------ LXC and Xen


def lxc_running(lxcpath: str | os.PathLike[str], name: str) -> bool:
    """Whether LXC says container `name` in `lxcpath` is running (any state but STOPPED); False without LXC's
    tools. LXC answers through an abstract socket of the network namespace the container was started from: a
    container started from another namespace is found by root_holders() instead."""
    if shutil.which("lxc-info") is None:
        return False
    r = runner.run(["lxc-info", "-P", str(lxcpath), "-n", name, "-s", "-H"], capture=True, check=False)
    state = r.stdout.strip()
    return r.returncode == 0 and bool(state) and state != "STOPPED"


def _rootfs_paths(config_text: str, config_dir: Path) -> list[str]:
    """The paths an LXC config's rootfs uses: dir:P, loop:P, overlay:LOWER:UPPER (legacy lxc.rootfs too)."""
    value = None
    for line in config_text.splitlines():
        k, sep, v = line.partition("=")
        if sep and k.strip() in ("lxc.rootfs.path", "lxc.rootfs"):
            value = v.strip()
    if not value:
        return [str(config_dir / "rootfs")]
    kind, sep, rest = value.partition(":")
    if not sep or value.startswith("/"):
        return [value]
    if kind in ("dir", "loop"):
        return [rest]
    if kind in ("overlay", "overlayfs", "aufs"):
        return [p for p in rest.split(":") if p.startswith("/")]
    return []


def lxc_holders(target: Ident, lxcpaths: Iterable[str | os.PathLike[str]]) -> list[Holder]:
    """The running containers in `lxcpaths` (`lxc-ls --running`) whose rootfs is `target` (a directory or an
    image file)."""
    if shutil.which("lxc-ls") is None:
        return []
    holders = []
    for path in dict.fromkeys(os.path.abspath(p) for p in lxcpaths):
        if not os.path.isdir(path):
            continue
        r = runner.run(["lxc-ls", "-P", path, "--running", "-1"], capture=True, check=False)
        for name in r.stdout.split():
            cdir = Path(path) / name
            text = _read(cdir / "config") or ""
            if any(ident(p) == target for p in _rootfs_paths(text, cdir)):
                holders.append(Holder(f"LXC container {name} ({cdir}) is running from it",
                                      f"lxc-stop -P {path} -n {name}", key=f"lxc:{name}"))
    return holders


def _xen_dom0() -> bool:
    """Whether this is a Xen host's control domain (a domU - a guest of a Xen cloud - runs no domains)."""
    return "control_d" in (_read("/proc/xen/capabilities") or "")


def xen_domains() -> list[tuple[str, list[str]]]:
    """(name, disk paths) of each running Xen domain but Domain-0, from `xl list -l`. Not a Xen host's dom0 (xl
    missing, or failing without a hypervisor): none. On a dom0 where xl cannot answer: BuilderError (whether a
    domain uses the image cannot be told). Xen 3's xm is not asked: its domains' image files are attached to loop
    devices (file:) or held open (tap:), which loop_holders() and process_holders() see."""
    if shutil.which("xl") is None:
        return []
    r = runner.run(["xl", "list", "-l"], capture=True, check=False)
    if r.returncode != 0:
        if _xen_dom0():
            raise BuilderError(f"cannot tell which Xen domains are running: `xl list -l` failed: "
                               f"{' '.join(r.tail[-2:]) or r.returncode}")
        log.debug("xl list -l failed (%s): not a Xen dom0, no domains", r.returncode)
        return []
    try:
        data = load_json(r.stdout or "[]", "the output of `xl list -l`", expect=list)
    except InputError as e:
        raise BuilderError(f"cannot tell which Xen domains are running: {e}") from None
    out = []
    for d in data:
        cfg = d.get("config") if isinstance(d, dict) else None
        if not isinstance(cfg, dict) or d.get("domid") == 0:
            continue
        name = (cfg.get("c_info") or {}).get("name") if isinstance(cfg.get("c_info"), dict) else None
        disks = [x.get("pdev_path") for x in cfg.get("disks") or [] if isinstance(x, dict)]
        out.append((str(name or f"domid {d.get('domid')}"), [p for p in disks if isinstance(p, str) and p]))
    return out


def xen_holders(image: Ident) -> list[Holder]:
    """The running Xen domains one of whose disks is `image`. (Not by name: a domain called like the guest but
    running from another disk - the original, while `migrate xen` edits its staged copy - holds nothing here.)"""
    try:
        domains = xen_domains()
    except BuilderError as e:
        return [Holder(f"{e.message}; a running domain may be using it", "check with `xl list -l`",
                       key="xen:?")]
    holders = []
    for name, disks in domains:
        if any(ident(p) == image for p in disks):
            holders.append(Holder(f"Xen domain {name} is running from it", f"xl shutdown -w {name}",
                                  key=f"xen:{name}"))
    return holders


# ------------------------------------------------------------------ the journal


def needs_recovery(image: Path) -> bool:
    """Whether an ext3/4 image's journal still has to be replayed (the superblock's needs_recovery feature:
    it is mounted somewhere, or was not unmounted cleanly)."""
    try:
        with open(image, "rb") as f:
            f.seek(EXT_SUPERBLOCK)
            sb = f.read(0x64)
    except OSError:
        return False
    if len(sb) < 0x64 or sb[0x38:0x3A] != EXT_MAGIC:
        return False
    return bool(int.from_bytes(sb[0x60:0x64], "little") & EXT_INCOMPAT_RECOVER)


def journal_holders(image: Path) -> list[Holder]:
    if not needs_recovery(image):
        return []
    return [Holder("its ext journal needs recovery (needs_recovery: it is mounted somewhere, or was not cleanly "
                   "unmounted)", f"if nothing uses it, replay the journal: e2fsck -E journal_only {image}")]


# ------------------------------------------------------------------ what holds an image, a tree


def image_holders(image: Path, lxcpaths: Iterable[str | os.PathLike[str]] = (), xen: bool = True) -> list[Holder]:
    """Everything that holds the image file (see the module's docstring); [] when it is not there."""
    me = ident(image)
    if me is None:
        return []
    found = loop_holders(me) + process_holders(me) + lxc_holders(me, lxcpaths)
    if xen:
        found += xen_holders(me)
    return _unique(found + journal_holders(image))


def tree_holders(root: Path, lxcpaths: Iterable[str | os.PathLike[str]] = (),
                 container: tuple[str, str] | None = None) -> list[Holder]:
    """Everything that runs from the root directory; `container`: (lxcpath, name) of the LXC container whose
    rootfs it is, asked for by name too."""
    me = ident(root)
    if me is None:
        return []
    found = []
    if container is not None and lxc_running(*container):
        name = container[1]
        found.append(Holder(f"LXC container {name} ({Path(container[0]) / name}) is running",
                            f"lxc-stop -P {container[0]} -n {name}", key=f"lxc:{name}"))
    return _unique(found + lxc_holders(me, [*lxcpaths, *([container[0]] if container else [])]) + root_holders(me))


def refuse(subject: str | os.PathLike[str], holders: list[Holder], force: bool, writing: bool = True) -> None:
    """InputError naming `subject` and each holder (exit 2), or with `force` a warning naming them. Reading
    (writing=False, a clone's source) only the holders that may write count."""
    counted = holders if writing else [h for h in holders if h.writes]
    if not counted:
        return
    lines = "\n".join(f"  {h.what}" for h in counted)
    if force:
        verb = "editing" if writing else "copying"
        log.warning("--force: %s is in use; %s it anyway (the holder may overwrite the changes or corrupt it):\n%s",
                    subject, verb, lines)
        return
    fixes = "; ".join(dict.fromkeys(h.fix for h in counted))
    if writing:
        head = f"{subject} is in use; nothing was changed:\n{lines}"
        hint = (f"stop what uses it first ({fixes}), then run this again; --force edits it anyway (the running "
                "guest or mount may overwrite the changes or corrupt its filesystem)")
    else:
        head = (f"{subject} is in use and may be changing, so a copy would not be consistent; nothing was "
                f"copied:\n{lines}")
        hint = (f"stop what writes to it first ({fixes}), then run this again; --force copies it anyway (a snapshot "
                "of a live guest, as after a power cut)")
    raise InputError(head, hint)
