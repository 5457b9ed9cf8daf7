"""LXD (and Incus) image target: the image `lxc image import` / `incus image import` takes, in both layouts.

- split (the default, what image servers serve): NAME.lxd-meta.tar.xz (metadata.yaml and templates/) beside the
  root as a squashfs image (the squashfs target's NAME.squashfs, made here when that target is off):
  `lxc image import NAME.lxd-meta.tar.xz NAME.squashfs --alias NAME`
- unified: NAME.lxd.tar.xz holding metadata.yaml, rootfs/ and templates/: `lxc image import NAME.lxd.tar.xz`

metadata.yaml has the mandatory architecture (the kernel's name: x86_64, aarch64 ...) and creation_date
(SOURCE_DATE_EPOCH, so the same inputs give the same image and the same fingerprint), and the properties image
servers list: os, release, variant, architecture, description, serial, name. Templates, rendered by LXD when an
instance is created or copied, give /etc/hostname and /etc/hosts the instance's name; when the recipe names no
interface (or `network: dhcp`), eth0 gets DHCP, which is what LXD's default profile offers a container.

Every tarball is the tar writer's reproducible stream (builder/core/tarwriter.py).
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import yaml

from builder.build.targets import squashfs
from builder.build.targets.lxc import LINUX_ARCH
from builder.core import tarwriter
from builder.core.checks import Name
from builder.core.outputs import write_atomic
from builder.core.schema import opt

if TYPE_CHECKING:
    from builder.build.context import Context

log = logging.getLogger("imgbuild")
DOC = "an LXD/Incus image: metadata.yaml, templates and the root (split: a metadata tarball + squashfs; or unified)"
NAME_TEMPLATE = "{{ container.name }}"     # pongo2, as LXD renders templates (container: LXD 4+ and Incus)


@dataclass(frozen=True)
class LxdOptions:
    """LXD/Incus image target."""

    layout: Literal["split", "unified", "both"] = opt("split", doc="split: NAME.lxd-meta.tar.xz + NAME.squashfs; "
                                                               "unified: NAME.lxd.tar.xz; both")
    compression: Literal["xz", "gz", "zst"] = opt("xz", doc="the compressor of the tarballs and of the squashfs "
                                                            "made here (xz: what image servers serve)")
    variant: Name = opt("default", doc="the image's variant property (default, cloud ...)")
    description: str | None = opt(None, doc="the image's description (default: distro, release, arch and name)")
    network: Literal["auto", "dhcp", "recipe"] = opt("auto", doc="auto: the recipe's interfaces, or DHCP on eth0 "
                                                               "when it names none; dhcp: DHCP on eth0 always "
                                                               "(an image for many hosts); recipe: as built")


Options = LxdOptions
SUFFIX = {"xz": ".tar.xz", "gz": ".tar.gz", "zst": ".tar.zst"}
SQUASHFS_COMPRESSOR = {"xz": "xz", "gz": "gzip", "zst": "zstd"}     # the squashfs this target makes itself


def serial(epoch: int) -> str:
    """The image's serial, from SOURCE_DATE_EPOCH: YYYYMMDD_HHMM (UTC), as image servers name builds."""
    return time.strftime("%Y%m%d_%H%M", time.gmtime(epoch))


def metadata(ctx: "Context", opts: LxdOptions, templates: dict[str, str]) -> dict:
    r = ctx.recipe
    arch = LINUX_ARCH.get(r.arch, r.arch)
    props = {"os": r.distro, "release": r.release, "variant": opts.variant, "architecture": arch,
             "description": opts.description or f"{r.distro.capitalize()} {r.release} {arch} ({r.name}, built by "
                                                 "imgbuild)",
             "serial": serial(ctx.epoch), "name": r.name}
    out = {"architecture": arch, "creation_date": max(ctx.epoch, 1), "properties": props}
    if templates:
        out["templates"] = {path: {"when": ["create", "copy"], "create_only": False, "template": name,
                                   "properties": {}} for path, name in sorted(templates.items())}
    return out


def hosts_naming(text: str, hostname: str, placeholder: str) -> str:
    """/etc/hosts with the host name (and its FQDN) replaced by placeholder, which the image's consumer turns
    into the instance's name; a 127.0.1.1 line for it when no line named the host."""
    out, n = re.subn(rf"(?<![\w.-]){re.escape(hostname)}(\.[\w.-]+)?(?![\w.-])", placeholder, text)
    return out if n else out + f"127.0.1.1\t{placeholder}\n"


def _hosts(ctx: "Context") -> str:
    """The tree's /etc/hosts with the recipe's host name (and FQDN) replaced by the instance's name."""
    text = ctx.root.read_text("/etc/hosts") or "127.0.0.1\tlocalhost\n"
    # pongo2 renders the file on the LXD host: a tag or comment opener in it stays literal text
    text = re.sub(r"\{([{%#])", lambda m: "{{ '{" + m.group(1) + "' }}", text)
    return hosts_naming(text, ctx.recipe.hostname, NAME_TEMPLATE)


def _dhcp(ctx: "Context", opts: LxdOptions) -> tuple[str, str] | None:
    """(path, content) of eth0 by DHCP for this distro family, when the image should have it."""
    if opts.network == "recipe" or (opts.network == "auto" and ctx.recipe.network):
        return None
    return ctx.family.dhcp_eth0()


def write_meta(ctx: "Context", opts: LxdOptions, where: Path) -> Path:
    """where/meta/: metadata.yaml and templates/, every file 0644 and directory 0755."""
    meta = where / "meta"
    tpl = meta / "templates"
    tpl.mkdir(parents=True, mode=0o755)
    os.chmod(meta, 0o755)
    os.chmod(tpl, 0o755)
    templates = {"/etc/hostname": ("hostname.tpl", NAME_TEMPLATE + "\n"), "/etc/hosts": ("hosts.tpl", _hosts(ctx))}
    dhcp = _dhcp(ctx, opts)
    if dhcp:
        templates[dhcp[0]] = (Path(dhcp[0]).name + ".tpl", dhcp[1])
    for name, content in templates.values():
        write_atomic(tpl / name, content, 0o644)
    doc = metadata(ctx, opts, {path: name for path, (name, _) in templates.items()})
    write_atomic(meta / "metadata.yaml", yaml.safe_dump(doc, sort_keys=True, default_flow_style=False), 0o644)
    return meta


def unified_entries(meta: Path, root: Path) -> list[tarwriter.Entry]:
    """metadata.yaml, rootfs/ (the tree) and templates/ in one archive, in name order."""
    own = tarwriter.entries(meta)
    top = [e for e in own if e.name == "./metadata.yaml"]
    rest = [e for e in own[1:] if e.name != "./metadata.yaml"]
    return [own[0], *top, *tarwriter.renamed(tarwriter.entries(root), "rootfs"), *rest]


def fingerprint(*files: Path) -> str:
    """LXD's image fingerprint: the sha256 of the image file, or of the metadata file followed by the rootfs."""
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def produce(ctx: "Context", opts: LxdOptions) -> dict[str, Path]:
    name = ctx.recipe.name
    meta = write_meta(ctx, opts, ctx.work / "lxd")
    out: dict[str, Path] = {}
    if opts.layout in ("split", "both"):
        mfile = ctx.stage / f"{name}.lxd-meta{SUFFIX[opts.compression]}"
        tarwriter.pack(meta, mfile, ctx.epoch, opts.compression)
        rootfs = ctx.artifacts.get("squashfs")
        if rootfs is None:
            rootfs = ctx.stage / f"{name}.squashfs"
            squashfs.make(ctx.root.path, rootfs, ctx.epoch, SQUASHFS_COMPRESSOR[opts.compression])
            out["squashfs"] = rootfs
        out["lxd-metadata"] = mfile
        log.info("lxd: %s + %s (fingerprint %s)", mfile.name, rootfs.name, fingerprint(mfile, rootfs)[:12])
    if opts.layout in ("unified", "both"):
        ufile = ctx.stage / f"{name}.lxd{SUFFIX[opts.compression]}"
        n = tarwriter.pack(meta, ufile, ctx.epoch, opts.compression, items=unified_entries(meta, ctx.root.path))
        out["lxd-image"] = ufile
        log.info("lxd: %s (%d entries, fingerprint %s)", ufile.name, n, fingerprint(ufile)[:12])
    return out
