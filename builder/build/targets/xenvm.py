"""xenvm target: xl configs for Xen 4 booting the disk target's disk as an HVM guest (NAME-hvm.cfg: SeaBIOS or
OVMF boots the disk's GRUB) and as a PVH guest (NAME-pvh.cfg: xl's pygrub reads the disk's /boot/grub/grub.cfg
and starts the kernel, with `console=hvc0` added so `xl console NAME` is the guest's console).

Both read back with xl's own parser (libxlutil) before they are written, as the xen target's PV configs do.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Literal

from builder.build.steps import cloudinit
from builder.build.targets import vm, xen
from builder.core.checks import IfName
from builder.core.outputs import write_atomic
from builder.core.schema import opt
from builder.guestconf import xen as xenconf

if TYPE_CHECKING:
    from builder.build.context import Context
    from builder.build.recipe import Recipe

log = logging.getLogger("imgbuild")
DOC = ("Xen 4 HVM and PVH guests (NAME-hvm.cfg, NAME-pvh.cfg) booting the disk target's disk: "
       "xl create NAME-pvh.cfg")
FIRMWARE = {"bios": "seabios", "uefi": "ovmf"}
Kind = Literal["hvm", "pvh"]


@dataclass(frozen=True)
class XenVmOptions(vm.VmOptions):
    """xenvm target: xl configs (Xen 4) for the disk target's disk."""

    types: tuple[Kind, ...] = opt(("hvm", "pvh"), doc="which configs: hvm (full virtualization, the guest's GRUB "
                                                      "boots), pvh (pygrub on the host, lighter)")
    bridge: IfName = opt("xenbr0", doc="host bridge every vif is attached to (it must exist: xl never creates it)")
    vdev: xen.VDev = opt("xvda", doc="the disk as the guest sees it")


Options = XenVmOptions


def recipe_checks(opts: XenVmOptions, targets) -> list[tuple[str, str]]:
    out = vm.requires("xenvm", opts, targets)
    if not opts.types:
        out.append(("targets.xenvm.types", "name at least one of hvm, pvh"))
    return out


def settings(r: "Recipe", opts: XenVmOptions, kind: str, more: Sequence[str] = ()) -> list[xenconf.Setting]:
    """The config's settings; `more`: disk files attached after the root as xvdb, xvdc ... (a converted guest's
    further disks)."""
    S = lambda k, v: xenconf.Setting(k, v, 0)
    disk = r.targets.disk
    fmt = vm.disk_format(disk, "raw")
    out = [S("name", r.name), S("type", kind), S("memory", opts.memory), S("vcpus", opts.vcpus)]
    if kind == "hvm":
        out.append(S("firmware", FIRMWARE[vm.firmware(opts, disk)]))
    else:
        out += [S("bootloader", "pygrub"), S("extra", "console=hvc0")]
    path = vm.disk_path(r, opts, fmt, xen.DEFAULT_DIR)
    disks = [xenconf.Disk(path, opts.vdev, "rw", format=fmt).spec()]
    disks += [xenconf.Disk(m, f"xvd{chr(ord('a') + i)}", "rw", format=fmt).spec() for i, m in enumerate(more, 1)]
    if cloudinit.makes_iso(r):      # cloud_init's NoCloud seed beside the disk, read-only
        seed = str(PurePosixPath(path).with_name(f"{r.name}.seed.iso"))
        # HVM: an emulated CD-ROM; PVH has no emulated devices, so a read-only PV disk (NoCloud finds the
        # filesystem labelled cidata on any block device)
        disks.append(xenconf.Disk(seed, "hdc", "ro", devtype="cdrom").spec() if kind == "hvm"
                     else xenconf.Disk(seed, "xvdz", "ro").spec())
    out.append(S("disk", disks))
    vifs = [",".join([*([f"mac={mac}"] if mac else []), f"bridge={opts.bridge}"]) for _n, mac in vm.nics(r)]
    if vifs:
        out.append(S("vif", vifs))
    if kind == "hvm":
        out += [S("serial", "pty"), S("vnc", 1), S("vnclisten", "127.0.0.1")]
    out += [S("on_poweroff", "destroy"), S("on_reboot", "restart"), S("on_crash", "destroy")]
    return out


def header(r: "Recipe", opts: XenVmOptions, kind: str) -> list[str]:
    fmt = vm.disk_format(r.targets.disk, "raw")
    how = ("HVM: the disk's GRUB boots under the firmware; console: xl console -t serial {n}" if kind == "hvm"
           else "PVH: pygrub on the host boots the disk's kernel; console: xl console {n}").format(n=r.name)
    return [f"written by imgbuild for {r.name}: xl create /etc/xen/{r.name}-{kind}.cfg", how,
            f"disk: copy {r.name}.{fmt} to {vm.disk_path(r, opts, fmt, xen.DEFAULT_DIR)}"
            + (f" and {r.name}.seed.iso beside it" if cloudinit.makes_iso(r) else "")]


def produce(ctx: "Context", opts: XenVmOptions) -> dict[str, Path]:
    r = ctx.recipe
    out = {}
    for kind in dict.fromkeys(opts.types):
        want = settings(r, opts, kind)
        text = xenconf.render(want, header(r, opts, kind))
        xen.check_xl(text, want, "xenvm")
        dest = ctx.stage / f"{r.name}-{kind}.cfg"
        write_atomic(dest, text)
        out[f"xen-{kind}-config"] = dest
    log.info("xenvm: %s", ", ".join(p.name for p in out.values()))
    return out
