"""udev's 70-persistent-net.rules: the old MAC's rule gets the new MAC, so the NIC keeps its name."""
from __future__ import annotations

import re

from builder.identity.formats.rename import Rename
from builder.identity.formats.values import mac_value, split_lines

_UDEV_ADDRESS = re.compile(r"""(?P<key>(?:ATTRS?|SYSFS)\{address\}[ \t]*==[ \t]*)"(?P<val>[^"]*)\"""")


def udev_persistent_net(text: str, r: Rename) -> str:
    """/etc/udev/rules.d/70-persistent-net.rules (written by write_net_rules on RHEL 6, Debian before 9, Ubuntu
    before 16.04): the rule matching the old MAC (ATTR{address}==, also ATTRS{} and old udev's SYSFS{}) gets the
    new MAC in the file's case, so the NIC keeps its NAME= (eth0 stays eth0). No rule is ever deleted, and the
    generator's comment lines stay. If the clone already booted once with the new MAC, the file has a second rule
    for it (NAME="eth1"): that rule is left and now duplicates the first; remove it by hand."""
    out = []
    for line in split_lines(text):
        if not line.lstrip().startswith("#"):
            line = _UDEV_ADDRESS.sub(
                lambda m: m.group("key") + '"' + (mac_value(r, m.group("val")) or m.group("val")) + '"', line)
        out.append(line)
    return "\n".join(out)
