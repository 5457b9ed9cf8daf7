"""A Xen PV guest's disks as `migrate xen --to-kvm` copies them: the root (made a new bootable disk elsewhere) and
every further disk (swap, /srv, /var ...), copied as it is into NAME-VDEV.qcow2 (or .raw) and attached to the new
VM after the root, in the order of the xm config.

A Xen PV guest usually mounts its disks by their Xen names (`/dev/xvda2 none swap sw`, `/dev/sdb1 /srv ext4`);
under KVM the same disks are /dev/vdb, /dev/vdc. So each further disk that holds one filesystem or a swap area
(no partition table: the usual PV layout), or each partition of one that has a table, is asked for its UUID
(`blkid -p` on the copy, never on the original), and the guest's fstab lines that mount it, by its Xen name or by
that UUID, are kept with the device written as UUID=...; lines for anything else are dropped and named. What
blkid and sfdisk read off the guest's disk is data: a type and a UUID are used only in the shape of one.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from builder.core import proc as runner
from builder.core.errors import InputError
from builder.guestconf import xen as xenconf
from builder.migrate import blockdev
from builder.migrate.remote import shown

log = logging.getLogger("imgbuild")
_UUID = re.compile(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}|[0-9a-fA-F]{4}-[0-9a-fA-F]{4}")   # or vfat's
_TYPE = re.compile(r"[a-z][a-z0-9_]{0,15}")
_SKIP = ("proc", "sysfs", "devpts")        # kernel filesystems systemd mounts itself: the new fstab needs none
_DISK = re.compile(r"/dev/|(UUID|LABEL|PARTUUID|PARTLABEL)=", re.I)     # a line's device that is a disk's
# what installing the kernel writes to: a filesystem mounted on one of these (or above one) from another disk
# would not get it
_SYSTEM = ("/etc", "/usr", "/lib/modules", "/var/lib/dpkg", "/var/lib/apt", "/var/cache/apt")


def is_phy(d: xenconf.Disk) -> bool:
    return d.target.startswith("/dev/")        # the parser gives phy:vg/root as /dev/vg/root


def check(d: xenconf.Disk, live: bool) -> None:
    """The disk is there and can be read (a block device, an inactive LVM volume, an image file): before anything
    is made."""
    if is_phy(d):
        blockdev.source(d.target, live)
        return
    src = Path(d.target)
    if not src.is_file() or src.is_symlink():
        raise InputError(f"{src}: the guest's disk image is missing or not a regular file", "check the config")


def copy(d: xenconf.Disk, dest: Path, live: bool, snapshot_size: str, notes: list[str]) -> None:
    """The disk's bytes into dest (raw, sparse, 0600): a phy: device as builder.migrate.blockdev reads it, an
    image file as it is (qcow2 or raw)."""
    if is_phy(d):
        with blockdev.readable(d.target, live, snapshot_size, notes=notes) as src:
            log.info("copy %s -> %s (sparse)", src, dest)
            blockdev.sparse_copy(src, dest)
        return
    check(d, live)
    log.info("copy %s -> %s (sparse)", d.target, dest)
    blockdev.sparse_copy(Path(d.target), dest, d.format)


def _probe(raw: Path, offset: int = 0, size: int | None = None) -> dict[str, str]:
    """{"TYPE", "UUID"} of the filesystem or swap area at offset (blkid -p: low-level probing of the bytes, no
    cache, nothing mounted); {} for none, a partition table, or an answer without the shape of one."""
    where = ["-O", str(offset), "-S", str(size)] if size is not None else []
    r = runner.run(["blkid", "-p", "-o", "export", *where, str(raw)], capture=True, check=False)
    if r.returncode != 0:
        return {}
    vals = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    fstype, uuid = vals.get("TYPE", ""), vals.get("UUID", "")
    if "PTTYPE" in vals or not (_TYPE.fullmatch(fstype) and _UUID.fullmatch(uuid)):
        return {}
    return {"TYPE": fstype, "UUID": uuid}


def _partitions(raw: Path) -> list[tuple[int, int, int]]:
    """(number, byte offset, byte size) of each partition in the copy's table (sfdisk reads it); [] for none."""
    r = runner.run(["sfdisk", "-J", str(raw)], capture=True, check=False)
    try:
        table = json.loads(r.stdout)["partitiontable"] if r.returncode == 0 else {}
        sector = int(table.get("sectorsize", 512))
        out = []
        for part in table.get("partitions", []):
            m = re.search(r"(\d+)$", str(part["node"]))
            if m and int(part["size"]) > 0:
                out.append((int(m.group(1)), int(part["start"]) * sector, int(part["size"]) * sector))
        return out
    except (ValueError, KeyError, TypeError, AttributeError):
        return []


def identities(raw: Path, vdev: str) -> dict[str, dict[str, str]]:
    """Xen device name -> {"TYPE", "UUID"} of what the copy holds: the disk itself when one filesystem or swap
    area fills it (xvda2, xvdb), else each partition of its table (xvdb1, xvdb2 ...); {} for none."""
    whole = _probe(raw)
    if whole:
        return {vdev: whole}
    if vdev[-1].isdigit():             # a partition as Xen gave it (xvda2): no partitions of its own
        return {}
    return {f"{vdev}{n}": ident for n, start, size in _partitions(raw) if (ident := _probe(raw, start, size))}


def xen_names(vdev: str) -> set[str]:
    """How the guest may have named the disk: xvdb1, sdb1 and hdb1 are one disk to a Xen PV kernel."""
    base = re.sub(r"^(xvd|sd|hd)", "", vdev)
    return {f"/dev/{prefix}{base}" for prefix in ("xvd", "sd", "hd")}


def _entries(old: str) -> list[list[str]]:
    """The fstab's lines as fields: comments, blank lines, the root's line and kernel filesystems left out."""
    out = []
    for ln in old.splitlines():
        f = ln.split()
        if len(f) >= 2 and not f[0].startswith("#") and f[1] != "/" and f[0] not in _SKIP:
            out.append(f)
    return out


def split_system(old: str) -> list[str]:
    """The mount points of the guest's fstab, on a disk of their own, that the kernel's installation writes into
    (/usr, /var, /var/lib ...): a conversion would install beside them. /boot is not one (its line is dropped)."""
    return [f[1] for f in _entries(old) if _DISK.match(f[0])
            and any(t == f[1].rstrip("/") or t.startswith(f[1].rstrip("/") + "/") for t in _SYSTEM)]


def fstab(old: str, found: dict[str, dict[str, str]]) -> tuple[list[str], list[str]]:
    """(lines for the new fstab, notes) from the guest's old fstab: every line that mounts a further disk (by
    its Xen name or its UUID), with the device as UUID=...; lines that mount no disk (tmpfs, NFS, a bind mount)
    as they are; the root's line and kernel filesystems left out (the new fstab has its own root line); a /boot
    of its own dropped (the new kernel and GRUB are on the root disk); everything else dropped, each named.
    found: the disks' identities()."""
    keep, notes = [], []
    for f in _entries(old):
        line = "\t".join(f)
        uuid = next((ident["UUID"] for name, ident in found.items()
                     if f[0] in xen_names(name) or f[0].upper() == f"UUID={ident['UUID']}".upper()), None)
        if f[1].rstrip("/") == "/boot":
            why = "the new kernel and GRUB are on the root disk's /boot; the old one's disk is attached, not mounted"
        elif uuid:
            keep.append("\t".join([f"UUID={uuid}", *f[1:]]))
            continue
        elif not _DISK.match(f[0]):
            keep.append(line)
            continue
        else:
            why = "it mounts no disk that was converted"
        if len(notes) < 20:
            notes.append(f"/etc/fstab: dropped {shown(' '.join(f), 200)!r} ({why})")
    return keep, notes
