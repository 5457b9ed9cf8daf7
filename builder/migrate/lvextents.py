"""An LVM logical volume that is not active on this host, read from its extents on the physical volumes.

A stopped Xen guest's volume group is often not active where the conversion runs: the old dom0's disks attached to
another host that should not activate them, a host that activates volumes only when a guest starts, or a kernel
without device-mapper. (Two volume groups of one name, the old dom0's VolGroup00 beside the host's own, LVM refuses
to name at all: imgbuild says so and stops; rename one with vgimportclone first.) Activating a foreign volume group
changes LVM's state on the host; imgbuild does not. It asks LVM where the volume's extents lie (`lvs --segments`,
`pvs`: LVM reads its own metadata, nothing is written) and copies those byte ranges of the physical volumes, in
order, read-only, as device-mapper's linear target would map them. Blocks of zeros stay holes in the copy.

Only linear volumes (one stripe per segment) are read this way; a striped, mirrored, RAID, thin or snapshot
volume needs its volume group activated. The metadata is checked before a byte is read: every physical volume is
a block device under /dev (a missing one is named), every range lies inside it, the segments follow one another
from 0 to the volume's size (lv_size). A volume LVM reports as active is never read behind its device's back.
"""
from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from builder.core.errors import BuilderError, InputError

CHUNK = 1 << 20
_ZERO = bytes(CHUNK)
_NAME = re.compile(r"[A-Za-z0-9+_.][A-Za-z0-9+_.-]{0,120}")
_DEVICES = re.compile(r"(/dev/[A-Za-z0-9+_.:/-]+)\((\d+)\)")     # by-path names have colons


@dataclass(frozen=True)
class Extent:
    """length bytes of the physical volume pv from offset, at byte `at` of the logical volume."""
    pv: Path
    offset: int
    length: int
    at: int


@dataclass(frozen=True)
class InactiveVolume:
    vg: str
    lv: str
    size: int
    extents: tuple[Extent, ...]

    def __str__(self) -> str:
        where = ", ".join(f"{e.pv}@{e.offset}+{e.length}" for e in self.extents)
        return f"{self.vg}/{self.lv} (not active; read from {where})"

    @property
    def pvs(self) -> list[str]:
        return sorted({str(e.pv) for e in self.extents})


def names(path: Path) -> tuple[str, str] | None:
    """(VG, LV) from /dev/VG/LV or /dev/mapper/VG-LV (device-mapper doubles a '-' inside a name), else None."""
    parts = path.parts
    if len(parts) == 4 and parts[:2] == ("/", "dev") and parts[2] != "mapper":
        vg, lv = parts[2], parts[3]
    elif len(parts) == 4 and parts[:3] == ("/", "dev", "mapper"):
        m = re.fullmatch(r"((?:[^-]|--)+)-((?:[^-]|--)+)", parts[3])
        if not m:
            return None
        vg, lv = (s.replace("--", "-") for s in m.groups())
    else:
        return None
    return (vg, lv) if _NAME.fullmatch(vg) and _NAME.fullmatch(lv) else None


def _report(out: str, kind: str, what: str) -> list[dict]:
    try:
        return [row for rep in json.loads(out)["report"] for row in rep[kind]]
    except (ValueError, KeyError, TypeError):
        raise BuilderError(f"LVM's report on {what} could not be read", "check `lvs`/`pvs` work on this host") \
            from None


def _int(row: dict, key: str, what: str) -> int:
    v = str(row.get(key, ""))
    if not v.isdigit():
        raise InputError(f"{what}: LVM reports {key}={v!r}, not a number of bytes", "check the volume with lvs")
    return int(v)


def _block_size(pv: Path, what: str) -> int:
    try:
        st = os.stat(pv)
        if not stat.S_ISBLK(st.st_mode):
            raise InputError(f"{what}: its physical volume {pv} is not a block device", "check the volume with lvs")
        fd = os.open(pv, os.O_RDONLY)
    except OSError as e:
        raise InputError(f"{what}: its physical volume {pv}: {e.strerror}",
                         "attach every disk of the volume group (pvs shows which is missing)") from None
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def find(vg: str, lv: str, lvm) -> InactiveVolume | None:
    """The volume's extents, when LVM knows vg/lv and it is not active; None when LVM does not know it. `lvm`
    runs one LVM reporting command (builder.migrate.blockdev.lvm)."""
    what = f"{vg}/{lv}"
    r = lvm("lvs", "--reportformat", "json", "--units", "b", "--nosuffix", "--segments", "-o",
            "vg_name,lv_name,lv_active,lv_size,seg_start,seg_size,segtype,stripes,devices,vg_extent_size", what,
            check=False)
    said = " ".join(r.tail)
    if "Multiple VGs found with the same name" in said:
        raise InputError(f"/dev/{what} is missing, and this host has two volume groups named {vg} (the guest's and "
                         "another), which LVM will not tell apart by name; nothing was read",
                         "give the guest's volume group a name of its own: vgimportclone -n NEWNAME PV (or vgrename "
                         "by UUID: vgs -o vg_name,vg_uuid), and name it in a copy of the xm config")
    if r.returncode != 0:
        return None
    segs = _report(r.stdout, "seg", what)
    if not segs or any((s.get("vg_name"), s.get("lv_name")) != (vg, lv) for s in segs):
        return None
    if any(s.get("lv_active") == "active" for s in segs):
        raise InputError(f"/dev/{what} is missing, but LVM says the volume is active; nothing was read",
                         f"make its device node (vgmknodes {vg}) and run again")
    pe_start: dict[str, int] = {}
    extents, at = [], 0
    for s in sorted(segs, key=lambda s: _int(s, "seg_start", what)):
        devices = str(s.get("devices", ""))
        if s.get("segtype") not in ("linear", "striped") or str(s.get("stripes")) != "1":
            raise InputError(f"{what} is a {s.get('segtype')} volume ({devices}), not a linear one; nothing was "
                             "read", f"activate its volume group (vgchange -ay {vg}) and run again")
        if devices.startswith("[unknown]"):
            raise InputError(f"{what}: a physical volume it lies on is missing ({devices}); nothing was read",
                             "attach every disk of the volume group (pvs shows which is missing)")
        m = _DEVICES.fullmatch(devices)
        if not m or ".." in Path(m.group(1)).parts:
            raise InputError(f"{what}: LVM names its physical volume {devices!r}, not a device path under /dev; "
                             "nothing was read", f"check the volume with lvs --segments -o +devices {what}")
        start, size, ext = (_int(s, k, what) for k in ("seg_start", "seg_size", "vg_extent_size"))
        if start != at or size <= 0 or ext <= 0:
            raise InputError(f"{what}: LVM's segments leave a gap at byte {at}; nothing was read",
                             "check the volume with lvs --segments")
        pv = Path(m.group(1))
        if str(pv) not in pe_start:
            pe_start[str(pv)] = _pe_start(pv, what, lvm)
        offset = pe_start[str(pv)] + int(m.group(2)) * ext
        if offset + size > _block_size(pv, what):
            raise InputError(f"{what}: its extents on {pv} end beyond the device; nothing was read",
                             "check the volume group's metadata (vgck)")
        extents.append(Extent(pv, offset, size, at))
        at += size
    if at != _int(segs[0], "lv_size", what):
        raise InputError(f"{what}: LVM's segments cover {at} bytes of a {segs[0].get('lv_size')}-byte volume; "
                         "nothing was read", "check the volume with lvs --segments")
    return InactiveVolume(vg, lv, at, tuple(extents))


def _pe_start(pv: Path, what: str, lvm) -> int:
    r = lvm("pvs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o", "pv_name,pe_start", str(pv),
            check=False)
    rows = _report(r.stdout, "pv", str(pv)) if r.returncode == 0 else []
    if len(rows) != 1:
        raise InputError(f"{what}: LVM does not report its physical volume {pv}", "check pvs")
    return _int(rows[0], "pe_start", str(pv))


def copy(vol: InactiveVolume, dest: Path) -> None:
    """The volume's bytes into dest (made 0600, must not exist), extent after extent; zero blocks stay holes."""
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, vol.size)
        buf = bytearray(CHUNK)
        for e in vol.extents:
            src = os.open(e.pv, os.O_RDONLY)
            try:
                done = 0
                while done < e.length:
                    want = min(CHUNK, e.length - done)
                    chunk, zero = (buf, _ZERO) if want == CHUNK else (bytearray(want), bytes(want))
                    if os.preadv(src, [chunk], e.offset + done) != want:
                        raise BuilderError(f"{e.pv}: short read at byte {e.offset + done}", "check the disk")
                    if chunk != zero:                  # bytes compare: memcmp, unlike a memoryview's
                        os.pwrite(fd, chunk, e.at + done)
                    done += want
            finally:
                os.close(src)
        os.fsync(fd)
    finally:
        os.close(fd)
