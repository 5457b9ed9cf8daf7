"""OpenVZ target: the container's CTID.conf and the OS template tarball named the way
`vzctl create CTID --ostemplate NAME` finds it (/vz/template/cache/NAME.tar.gz)."""
from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from builder.build.targets.lxc import LINUX_ARCH
from builder.core import tarwriter
from builder.core.outputs import write_atomic
from builder.core.schema import Check, opt

if TYPE_CHECKING:
    from builder.build.context import Context
    from builder.build.recipe import Recipe

DOC = "an OpenVZ CTID.conf and the OS template tarball (NAME.tar.gz) for vzctl create --ostemplate"


_VZSIZE = re.compile(r"^(\d+(?:\.\d+)?)([TGMKPB]?)$", re.I)   # vzctl's parse_ul_sfx: number, optional suffix
_KIB = {"": 1, "B": 1 / 1024, "K": 1, "M": 1 << 10, "G": 1 << 20, "T": 1 << 30, "P": None}


def _vzsize(v: str) -> str:
    m = _VZSIZE.match(v.strip())
    if not m or m.group(2).upper() == "P":
        raise ValueError(f"{v!r} is not a vzctl size (a number with K, M, G or T, e.g. 512M, 1.5G)")
    return v.strip()


def _ctid(v: int) -> int:
    if not 101 <= v < 10**9:
        raise ValueError(f"{v}: container IDs 0-100 are the host's and OpenVZ's own; use 101 or more "
                         "(below 10^9, so veth<CTID>.<n> stays a valid interface name)")
    return v


VzSize = Annotated[str, Check(_vzsize, {"pattern": _VZSIZE.pattern}, describe="size (512M, 1.5G)")]
Ctid = Annotated[int, Check(_ctid, {"minimum": 101}, describe="container ID (101 and up)")]


@dataclass(frozen=True)
class OpenvzOptions:
    """OpenVZ target."""

    ctid: Ctid = opt(101, doc="container ID: the config is written as CTID.conf")
    ostemplate: str | None = opt(None, doc="template name (default: DISTRO-RELEASE-ARCH, e.g. centos-6-x86_64)")
    network: Literal["venet", "veth"] = opt("venet", doc="venet: IP_ADDRESS routed by the host; veth: an "
                                                        "Ethernet device with the recipe's MAC on bridge")
    bridge: str = opt("vmbr0", doc="bridge for veth")
    memory: VzSize = opt("512M", doc="RAM (PHYSPAGES, vSwap)")
    swap: VzSize = opt("512M", doc="swap (SWAPPAGES)")
    disk: VzSize = opt("10G", doc="disk space soft limit (DISKSPACE; the hard limit is 10% more)")
    diskinodes: int = opt(200000, doc="inode soft limit (DISKINODES)")
    cpus: int | None = opt(None, doc="CPUS (default: all)")
    onboot: bool = opt(True, doc="start with the host")


Options = OpenvzOptions


def template_name(r: "Recipe", opts: OpenvzOptions) -> str:
    return opts.ostemplate or f"{r.distro}-{r.release}-{LINUX_ARCH.get(r.arch, r.arch)}"


def _grow(size: str, factor: float) -> str:
    """size times factor: in its own unit when that comes out whole (10G -> 11G), else in KiB, vzctl's unit
    for DISKSPACE (1G -> 1153434K, never 1G again)."""
    m = _VZSIZE.match(size)
    n, unit = float(m.group(1)), m.group(2).upper()
    grown = round(n * factor, 6)
    if grown.is_integer() and unit not in ("", "B"):
        return f"{int(grown)}{m.group(2)}"
    kib = math.ceil(n * _KIB[unit] * factor)
    return f"{kib}" if unit == "" else f"{kib}K"


def render(r: "Recipe", opts: OpenvzOptions) -> str:
    q = shlex.quote
    lines = [f"# written by imgbuild for {r.name}: /etc/vz/conf/{opts.ctid}.conf",
             f"ONBOOT={q('yes' if opts.onboot else 'no')}",
             f'PHYSPAGES="0:{opts.memory}"', f'SWAPPAGES="0:{opts.swap}"',
             f'DISKSPACE="{opts.disk}:{_grow(opts.disk, 1.1)}"',
             f'DISKINODES="{opts.diskinodes}:{int(opts.diskinodes * 1.1)}"', 'QUOTATIME="0"']
    if opts.cpus:
        lines.append(f'CPUS="{opts.cpus}"')
    lines += ['VE_ROOT="/vz/root/$VEID"', 'VE_PRIVATE="/vz/private/$VEID"',
              f'OSTEMPLATE="{template_name(r, opts)}"', f'HOSTNAME="{r.hostname}"']
    static = [str(i.address.ip) for i in r.network.values() if i.address is not None]
    if opts.network == "venet":
        lines.append(f'IP_ADDRESS="{" ".join(static)}"')
    else:
        nets = [f"ifname={name},bridge={opts.bridge}" + (f",mac={i.mac.upper()}" if i.mac else "")
                + f",host_ifname=veth{opts.ctid}.{n}" for n, (name, i) in enumerate(r.network.items())]
        lines.append(f'NETIF="{";".join(nets)}"')
    if r.dns:
        lines.append(f'NAMESERVER="{" ".join(str(a) for a in r.dns)}"')
    if r.search:
        lines.append(f'SEARCHDOMAIN="{" ".join(r.search)}"')
    return "\n".join(lines) + "\n"


def produce(ctx: "Context", opts: OpenvzOptions) -> dict[str, Path]:
    name = template_name(ctx.recipe, opts)
    conf = ctx.stage / f"{opts.ctid}.conf"
    write_atomic(conf, render(ctx.recipe, opts))
    tmpl = ctx.stage / f"{name}.tar.gz"
    tarwriter.pack(ctx.root.path, tmpl, ctx.epoch, "gz")
    return {"openvz-config": conf, "openvz-template": tmpl}
