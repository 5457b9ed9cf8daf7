"""xm's disk and vif stanzas as xl's specs (xl-disk-configuration(5), xl-network-configuration(5)), and the
--disk-map / --bridge-map pairs that move their paths and bridges.

Disks become `format=raw, vdev=xvda1, access=rw, target=/new/path` (backendtype=phy for block devices);
DiskError names what xl cannot take (a `w!` disk, a tap:vmdk image ...).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

# deprecated xm disk prefixes -> xl format
TAP_FORMATS = {"aio": "raw", "sync": "raw", "qcow": "qcow", "qcow2": "qcow2", "vhd": "vhd"}
SCRIPT_PREFIXES = ("drbd", "iscsi", "nbd", "enbd")


def parse_map(items: Iterable[str], what: str) -> list[tuple[str, str]]:
    """OLD=NEW pairs (ValueError with the bad item)."""
    out = []
    for item in items:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            raise ValueError(f"{what} {item!r}: expected OLD=NEW")
        out.append((old, new))
    return out


def map_path(path: str, disk_map: list[tuple[str, str]]) -> tuple[str, bool]:
    """The path after --disk-map: an exact match first, else the longest directory prefix."""
    for old, new in disk_map:
        if path == old:
            return new, True
    best = None
    for old, new in disk_map:
        base = old.rstrip("/")
        if base and path.startswith(base + "/") and (best is None or len(base) > len(best[0])):
            best = (base, new.rstrip("/"))
    if best:
        return best[1] + path[len(best[0]):], True
    return path, False


@dataclass
class Disk:
    """One disk as xl-disk-configuration(5) takes it; spec() writes it."""

    target: str | None
    vdev: str
    access: str
    format: str = "raw"
    devtype: str | None = None
    script: str | None = None

    def spec(self) -> str:
        parts = [f"format={self.format}", f"vdev={self.vdev}", f"access={self.access}"]
        if self.devtype:
            parts.append(f"devtype={self.devtype}")
        if self.script:
            parts.append(f"script={self.script}")
        elif self.target and self.target.startswith("/dev/") and self.format == "raw":
            parts.append("backendtype=phy")
        if self.target:
            parts.append(f"target={self.target}")
        return ", ".join(parts)


class DiskError(ValueError):
    pass


def xm_disk(spec: str) -> Disk:
    """An xm disk stanza (`PREFIX:PATH,VDEV[:cdrom],MODE`) as its parts; DiskError for what xl cannot take."""
    fields = spec.split(",")
    if len(fields) != 3:
        raise DiskError(f"{spec!r} is not an xm disk (UNAME,DEV,MODE)")
    uname, dev, mode = (f.strip() for f in fields)
    access = {"w": "rw", "rw": "rw", "r": "ro", "ro": "ro"}.get(mode)
    if mode in ("w!", "r!", "!"):
        raise DiskError(f"{spec!r}: mode {mode} (write even if another domain has the disk) does not exist in xl, "
                        "whose parser refuses it; give the disk to one guest with access rw")
    if access is None:
        raise DiskError(f"{spec!r}: unknown mode {mode!r} (r or w)")
    devtype = None
    if dev.startswith("ioemu:"):
        dev = dev[len("ioemu:"):]
    if ":" in dev:
        dev, _, kind = dev.partition(":")
        if kind == "cdrom":
            devtype = "cdrom"
        elif kind != "disk":
            raise DiskError(f"{spec!r}: unknown device type {kind!r}")
    if not re.fullmatch(r"(xvd|hd|sd)[a-z]+[0-9]*", dev):
        raise DiskError(f"{spec!r}: {dev!r} is not a virtual device name xl knows (xvdX, hdX, sdX)")
    if devtype == "cdrom" and access == "rw":
        access = "ro"
    if uname == "":
        if devtype != "cdrom":
            raise DiskError(f"{spec!r}: a disk with no path")
        return Disk(None, dev, access, devtype=devtype)
    words = uname.split(":")
    fmt, script = "raw", None
    if words[0] == "file" and len(words) >= 2:
        path = ":".join(words[1:])
    elif words[0] == "phy" and len(words) >= 2:
        path = ":".join(words[1:])
        if not path.startswith("/"):
            path = "/dev/" + path
    elif words[0] in ("tap", "tap2") and len(words) >= 3:
        rest = words[1:]
        if rest[0] == "tapdisk" and len(rest) >= 3:
            rest = rest[1:]
        kind = rest[0]
        if kind not in TAP_FORMATS:
            raise DiskError(f"{spec!r}: {words[0]}:{kind} images cannot be used by xl (it reads raw, qcow, qcow2, "
                            "vhd and qed); convert it, e.g. qemu-img convert -O raw")
        fmt = TAP_FORMATS[kind]
        path = ":".join(rest[1:])
    elif words[0] in SCRIPT_PREFIXES and len(words) >= 2:
        script = f"block-{words[0]}"
        path = ":".join(words[1:])
    elif uname.startswith("/"):
        path = uname
    else:
        raise DiskError(f"{spec!r}: unknown disk type {words[0]!r}: (file:, phy:, tap:aio:, tap:qcow: ...)")
    return Disk(path, dev, access, format=fmt, devtype=devtype, script=script)


def convert_disk(spec: str, disk_map: list[tuple[str, str]]) -> tuple[str, bool]:
    """One disk entry as an xl spec, --disk-map applied; returns (spec, mapped)."""
    if "=" in spec or spec.count(",") != 2:
        # already xl syntax: map its target (the last, target= form, or the first positional parameter)
        m = re.search(r"(^|,)\s*target=(.*)$", spec)
        if m:
            new, hit = map_path(m.group(2), disk_map)
            return spec[:m.start(2)] + new, hit
        first, sep, rest = spec.partition(",")
        if first and "=" not in first:
            new, hit = map_path(first.strip(), disk_map)
            return new + sep + rest, hit
        return spec, False
    d = xm_disk(spec)
    hit = False
    if d.target and not d.script:
        d.target, hit = map_path(d.target, disk_map)
    return d.spec(), hit


def parse_vif(spec: str) -> list[tuple[str, str]]:
    pairs = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        k, sep, v = part.partition("=")
        pairs.append((k.strip(), v.strip() if sep else ""))
    return pairs

