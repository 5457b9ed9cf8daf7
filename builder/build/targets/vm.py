"""What the VM guest configs (libvirt, Xen HVM/PVH) share: the disk they boot is the disk target's, at a path on
the VM host; the firmware is one the disk boots with; the NICs are the recipe's, with its MACs.

A VM config target is only valid with the disk target on (recipe check `requires`), and a firmware the disk was
not built for is refused when the recipe loads, not after the build.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal

from builder.core.schema import Check, FieldError, opt

if TYPE_CHECKING:
    from builder.build.recipe import Recipe
    from builder.build.targets.disk import DiskOptions


def _host_path(v: str) -> str:
    if not v.startswith("/"):
        raise ValueError(f"{v!r} must be an absolute path on the VM host")
    if re.search(r"[\s,\"'\\]", v) or any(ord(c) < 32 for c in v):
        raise ValueError(f"{v!r}: spaces, commas, quotes and backslashes cannot be written into a disk or kernel "
                         "setting")
    return v


HostPath = Annotated[str, Check(_host_path, {"pattern": "^/"}, describe="absolute path on the VM host")]
Firmware = Literal["auto", "bios", "uefi"]


@dataclass(frozen=True)
class VmOptions:
    """Settings every VM config has."""

    memory: int = opt(1024, doc="RAM in MiB")
    vcpus: int = opt(1, doc="virtual CPUs")
    firmware: Firmware = opt("auto", doc="bios or uefi; auto: BIOS when the disk boots with it, else UEFI")
    path: HostPath | None = opt(None, doc="where the disk file is on the VM host (default: DIR/NAME.EXT in the "
                                          "hypervisor's usual image directory)")

    def __post_init__(self) -> None:
        if self.memory < 128:
            raise FieldError("memory", f"{self.memory} MiB is too little for a VM with a distribution kernel "
                                       "(at least 128)")
        if self.vcpus < 1:
            raise FieldError("vcpus", "at least 1")


def firmware(opts: VmOptions, disk: "DiskOptions") -> str:
    """bios or uefi: the one asked for, or (auto) the one the disk boots with, BIOS first."""
    if opts.firmware != "auto":
        return opts.firmware
    return "bios" if disk.boot in ("bios", "both") else "uefi"


def disk_format(disk: "DiskOptions", prefer: str) -> str:
    """raw or qcow2: the one the disk target writes; `prefer` when it writes both."""
    return prefer if disk.format == "both" else disk.format


def disk_path(r: "Recipe", opts: VmOptions, fmt: str, directory: str) -> str:
    return opts.path or f"{directory}/{r.name}.{fmt}"


def requires(name: str, opts: VmOptions, targets) -> list[tuple[str, str]]:
    """Recipe checks for a VM config target `name`: the disk target is on and boots with the chosen firmware."""
    disk = targets.disk
    if disk is None:
        return [(f"targets.{name}", "needs the disk target (targets.disk: {}): it is the disk this VM boots")]
    if opts.firmware != "auto" and disk.boot not in (opts.firmware, "both"):
        return [(f"targets.{name}.firmware", f"{opts.firmware}, but targets.disk.boot is {disk.boot}: the disk "
                                              f"would not boot; set targets.disk.boot to {opts.firmware} or both")]
    return []


def nics(r: "Recipe") -> list[tuple[str, str | None]]:
    """(interface name, MAC or None) for each of the recipe's interfaces, in order."""
    return [(name, iface.mac) for name, iface in r.network.items()]
