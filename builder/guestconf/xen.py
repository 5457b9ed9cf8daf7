"""Xen 3 (xm) domain configs to xl (Xen 4): `migrate convert-xen`, and the names its callers use.

The whole move, convert_text(): read the old file without running it (builder.guestconf.xm), move the xm idioms
to xl's (builder.guestconf.xmtoxl: disks to xl-disk-configuration(5) specs with --disk-map applied, the
hard-coded pygrub path to `pygrub`, vif bridges through --bridge-map, builder = 'hvm' to type = "hvm", xend's
device_model and an HVM guest's hvmloader dropped, also when their value needed Python; the rest is carried
over), write it in xl's syntax (builder.guestconf.xlwrite) and read it back with xl's own parser
(builder.guestconf.xl): the result is only handed out if xl reads it back as intended.
"""
from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Iterable

from builder.guestconf import xl
from builder.guestconf.xlwrite import quote, render, value_text, verify
from builder.guestconf.xm import (
    MAX_BYTES,
    XEND_ONLY,
    XL_KEYS,
    XM_KERNEL_IP,
    XM_KEYS,
    Finding,
    Setting,
    Value,
    XmConfig,
    read_xm,
)
from builder.guestconf.xmdevices import Disk, DiskError, convert_disk, map_path, parse_map, parse_vif, xm_disk
from builder.guestconf.xmtoxl import convert

__all__ = ["MAX_BYTES", "XEND_ONLY", "XL_KEYS", "XM_KEYS", "XM_KERNEL_IP", "Conversion", "Disk", "DiskError",
           "Finding", "Setting", "Value", "XmConfig", "convert", "convert_disk", "convert_text", "map_path",
           "parse_map", "parse_vif", "quote", "read_xm", "render", "value_text", "verify", "xm_disk"]


@dataclass
class Conversion:
    settings: list[Setting]
    findings: list[Finding]
    text: str | None              # the xl config; None when there are errors
    checked: bool = False         # read back by xl's parser

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors


def convert_text(text: str, source: str = "config", disk_map: Iterable[tuple[str, str]] = (),
                 bridge_map: Iterable[tuple[str, str]] = ()) -> Conversion:
    """The whole move: read (never run) the xm config, convert, render, check with xl's parser."""
    settings, findings = convert(read_xm(text, source), disk_map, bridge_map)
    if any(f.level == "error" for f in findings):
        return Conversion(settings, findings, None)
    base = "".join(c if c.isprintable() else "?" for c in posixpath.basename(source))
    out = render(settings, [f"converted from {base} (xm, Xen 3) by imgbuild "
                            "(migrate convert-xen): xl syntax, Xen 4"])
    if not xl.available():
        findings.append(Finding(0, "warning", f"not checked with xl's parser: {xl.why_unavailable()}"))
        return Conversion(settings, findings, out)
    problems = verify(out, settings)
    if problems:
        return Conversion(settings, findings + problems, None)
    return Conversion(settings, findings, out, checked=True)
