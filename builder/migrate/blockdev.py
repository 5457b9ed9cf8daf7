"""Reading a Xen guest's `phy:` disk (an LVM volume, a partition, a whole disk) on the host that holds it.

- A stopped guest's device is read directly. A guest that is running (the user says --live, or the device is
  busy: Xen's blkback, a mount or another program holds it open exclusively) is read through an LVM snapshot
  (`lvcreate -s`), removed again after the copy, also when the copy fails; a busy device that is no logical
  volume cannot be snapshotted and is refused (copying a filesystem that is being written gives a broken copy).
- A logical volume whose volume group is not active on this host (no /dev/VG/LV) is read from its extents on the
  physical volumes, without activating anything (builder.migrate.lvextents); a running guest's volume is active.
- The copy is sparse: `qemu-img convert` from the device (or snapshot) writes no block that reads as zeros.

LVM runs without waiting for udev (`activation{udev_sync=0 udev_rules=0}`), as it must in a container or on a
host whose udev does not manage device-mapper nodes, and without its warnings about inherited descriptors.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

from builder.core import proc as runner
from builder.core.errors import BuilderError, InputError
from builder.migrate import lvextents

log = logging.getLogger("imgbuild")
LVM_CONFIG = "activation{udev_sync=0 udev_rules=0}"
SNAP_SUFFIX = "-imgbuild-snap"
_LVNAME = re.compile(r"[A-Za-z0-9+_.][A-Za-z0-9+_.-]{0,120}")


def lvm_env() -> dict[str, str]:
    return {**os.environ, "LVM_SUPPRESS_FD_WARNINGS": "1", "DM_DISABLE_UDEV": "1", "LC_ALL": "C"}


def lvm(*args: str, check: bool = True):
    """One LVM command, without udev waits; its output captured."""
    return runner.run([args[0], "--config", LVM_CONFIG, *args[1:]], env=lvm_env(), capture=True, check=check)


def device(path: str) -> Path:
    """The block device a `phy:` disk names: an absolute path, or a name under /dev (xm allows `phy:sda1` and
    `phy:vg/root`); it must be a block device."""
    p = Path(path if path.startswith("/") else f"/dev/{path}")
    if ".." in p.parts:
        raise InputError(f"phy:{path}: a device path with '..'", "name the device by its /dev path")
    try:
        st = os.stat(p)
    except OSError as e:
        raise InputError(f"phy:{path}: {p}: {e.strerror}", "run this on the host that holds the guest's volumes "
                         "(its disks attached; LVM must know the volume group: pvscan)") from None
    if not stat.S_ISBLK(st.st_mode):
        raise InputError(f"phy:{path}: {p} is not a block device", "check the guest's disk = [...] line")
    return p


def source(path: str, live: bool = False) -> Path | lvextents.InactiveVolume:
    """What the disk is read from: its block device, or, for a logical volume that is not active here (no device
    node, LVM knows it), its extents. Checked before anything is made."""
    try:
        return device(path)
    except InputError as missing:
        p = Path(path if path.startswith("/") else f"/dev/{path}")
        lvname = None if os.path.lexists(p) else lvextents.names(p)
        vol = lvextents.find(*lvname, lvm) if lvname and shutil.which("lvs") else None
        if vol is None:
            raise missing from None
    if live:
        raise InputError(f"phy:{path}: --live, but the volume {vol.vg}/{vol.lv} is not active on this host, so no "
                         "guest here runs from it; nothing was read",
                         f"leave out --live (the guest is stopped here), or activate it: vgchange -ay {vol.vg}")
    return vol


def logical_volume(dev: Path) -> tuple[str, str] | None:
    """(volume group, logical volume) when dev is an LVM logical volume, else None."""
    r = lvm("lvs", "--noheadings", "--separator", "/", "-o", "vg_name,lv_name", str(dev), check=False)
    if r.returncode != 0:
        return None
    vg, _, lv = r.stdout.strip().partition("/")
    return (vg, lv) if vg and lv else None


def busy(dev: Path) -> bool:
    """Whether something holds the device exclusively (a mount, Xen's blkback, another O_EXCL opener)."""
    try:
        fd = os.open(dev, os.O_RDONLY | os.O_EXCL)
    except OSError as e:
        if e.errno == errno.EBUSY:
            return True
        raise
    os.close(fd)
    return False


def snapshot_argv(vg: str, lv: str, size: str) -> list[str]:
    return ["lvcreate", "--config", LVM_CONFIG, "-s", "-n", f"{lv}{SNAP_SUFFIX}", "-L", size, f"{vg}/{lv}"]


@contextlib.contextmanager
def readable(path: str, live: bool, snapshot_size: str = "1G", dry_run: bool = False,
             notes: list[str] | None = None) -> Iterator[Path]:
    """The device to copy the disk from: the device itself (a stopped guest) or an LVM snapshot of it (a running
    one), removed when the block ends, however it ends. `notes` collects what was (or, dry, would be) done."""
    notes = notes if notes is not None else []
    dev = source(path, live)
    if isinstance(dev, lvextents.InactiveVolume):
        notes.append(f"{path}: the volume group {dev.vg} is not active on this host: {dev.vg}/{dev.lv} is read "
                     f"from its extents on {', '.join(dev.pvs)}, read-only, nothing activated (a guest running from "
                     "it on another host sharing this storage must be stopped first)")
        yield dev
        return
    in_use = busy(dev)
    if not (live or in_use):
        notes.append(f"{dev}: read directly (the guest is stopped)")
        yield dev
        return
    why = "--live" if live else "the device is in use"
    lvname = logical_volume(dev)
    if lvname is None:
        raise InputError(f"phy:{path}: {dev} is in use ({why}) and is not an LVM volume, so it cannot be "
                         "snapshotted; nothing was copied",
                         "shut the guest down (xm shutdown NAME) and run again, or put its disk on LVM")
    vg, lv = lvname
    if not (_LVNAME.fullmatch(vg) and _LVNAME.fullmatch(lv)):
        raise InputError(f"phy:{path}: LVM names {vg!r}/{lv!r} are not plain names", "rename the volume")
    snap = Path(f"/dev/{vg}/{lv}{SNAP_SUFFIX}")
    notes.append(f"{dev}: read through the LVM snapshot {vg}/{lv}{SNAP_SUFFIX} ({why}; removed after the copy)")
    if dry_run:
        yield snap
        return
    if lvm("lvs", f"{vg}/{lv}{SNAP_SUFFIX}", check=False).returncode == 0:
        raise InputError(f"{vg}/{lv}{SNAP_SUFFIX} exists already (a snapshot an interrupted run left?); nothing "
                         "was copied", f"remove it: lvremove -f {vg}/{lv}{SNAP_SUFFIX}")
    runner.run(snapshot_argv(vg, lv, snapshot_size), env=lvm_env())
    try:
        yield snap
    finally:
        with runner.cleanup():
            r = lvm("lvremove", "-f", f"{vg}/{lv}{SNAP_SUFFIX}", check=False)
        if r.returncode != 0:
            log.warning("the snapshot %s/%s%s was not removed: %s", vg, lv, SNAP_SUFFIX, "; ".join(r.tail[-2:]))


def sparse_copy(src: Path | lvextents.InactiveVolume, dest: Path, fmt: str = "raw") -> None:
    """The device's bytes into the file dest (made 0600: the guest's secrets are in it); zero blocks stay holes."""
    if isinstance(src, lvextents.InactiveVolume):
        lvextents.copy(src, dest)
        return
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    r = runner.run(["qemu-img", "convert", "-f", fmt, "-O", "raw", "-S", "4k", str(src), str(dest)], check=False)
    if r.returncode != 0:
        raise BuilderError(f"copying {src} failed (qemu-img exit {r.returncode}): " + "; ".join(r.tail[-2:]),
                           "check the device can be read (a snapshot that filled up is invalid: give a larger "
                           "--snapshot-size)")
