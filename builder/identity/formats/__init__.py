"""Rewriters for a guest's new identity, one module per file format: pure text -> text, for clone and re-identify,
and readers of the identity a guest config holds. Each rewriter edits only the values that carry identity and
keeps every other byte; each is idempotent. The design, and what is deliberately not changed, is in
docs/identity-formats.md."""
from __future__ import annotations

from collections.abc import Callable

from builder.identity.formats.hostname import hostname_file
from builder.identity.formats.hosts import hosts
from builder.identity.formats.identity import Identity
from builder.identity.formats.interfaces import debian_interfaces
from builder.identity.formats.lxc import lxc_config, read_lxc
from builder.identity.formats.netplan import netplan
from builder.identity.formats.networkd import networkd
from builder.identity.formats.nm_keyfile import nm_keyfile
from builder.identity.formats.openvz import openvz_config, read_openvz
from builder.identity.formats.rename import Rename, RenameError
from builder.identity.formats.shell import shvars
from builder.identity.formats.sysconfig import ifcfg, sysconfig_network
from builder.identity.formats.tokens import tokens
from builder.identity.formats.udev import udev_persistent_net
from builder.identity.formats.xen import read_xen, xen_config

__all__ = ["Rename", "RenameError", "Identity", "hostname_file", "hosts", "sysconfig_network", "ifcfg",
           "debian_interfaces", "networkd", "nm_keyfile", "netplan", "udev_persistent_net", "lxc_config",
           "xen_config", "openvz_config", "tokens", "read_lxc", "read_xen", "read_openvz", "REWRITERS", "shvars"]

REWRITERS: dict[str, Callable[[str, Rename], str]] = {
    "hostname": hostname_file, "hosts": hosts, "sysconfig-network": sysconfig_network, "ifcfg": ifcfg,
    "debian-interfaces": debian_interfaces, "networkd": networkd, "nm-keyfile": nm_keyfile, "netplan": netplan,
    "udev-persistent-net": udev_persistent_net, "lxc": lxc_config, "xen": xen_config, "openvz": openvz_config,
    "tokens": tokens,
}
