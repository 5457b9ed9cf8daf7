"""Guest network configuration: one writer per distro family (Debian: ifupdown's /etc/network/interfaces; EL:
sysconfig's ifcfg files); the family (builder/build/families/) says which, and when."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

from builder.core.checks import MAC, IPAddress, IPInterface
from builder.core.schema import FieldError, opt

if TYPE_CHECKING:
    from builder.build.context import Context

log = logging.getLogger("imgbuild")


@dataclass(frozen=True)
class Interface:
    """One network interface of the guest: a static address or DHCP, and optionally its MAC."""

    address: IPInterface | None = opt(None, doc="static address with prefix, e.g. 10.0.3.2/24")
    gateway: IPAddress | None = opt(None, doc="default gateway (static only)")
    dhcp: bool = opt(False, doc="configure by DHCP instead of a static address")
    mac: MAC | None = opt(None, doc="MAC address; also set in guest configs (LXC hwaddr, Xen vif)")

    def __post_init__(self) -> None:
        if self.dhcp and self.address is not None:
            raise ValueError("give either address or dhcp: true, not both")
        if not self.dhcp and self.address is None:
            raise ValueError("give address (e.g. 10.0.3.2/24) or dhcp: true")
        if self.gateway is not None:
            if self.dhcp:
                raise FieldError("gateway", "gateway is for static addresses; DHCP supplies its own")
            if self.gateway.version != self.address.version or self.gateway not in self.address.network:
                raise FieldError("gateway", f"gateway {self.gateway} is not in {self.address.network}")


def debian_interfaces(network: Mapping[str, Interface]) -> str:
    out = ["# written by imgbuild", "auto lo", "iface lo inet loopback"]
    for name, i in network.items():
        fam = "inet6" if i.address is not None and i.address.version == 6 else "inet"
        out += ["", f"auto {name}", f"iface {name} {fam} {'dhcp' if i.dhcp else 'static'}"]
        if i.address is not None:
            out.append(f"    address {i.address.with_prefixlen}")
        if i.gateway is not None:
            out.append(f"    gateway {i.gateway}")
        if i.mac:
            out.append(f"    hwaddress ether {i.mac}")
    return "\n".join(out) + "\n"


def write_interfaces(ctx: "Context") -> None:
    """Debian: /etc/network/interfaces."""
    ctx.root.write("/etc/network/interfaces", debian_interfaces(ctx.recipe.network))
    if any(i.dhcp for i in ctx.recipe.network.values()) and not any(
            ctx.root.exists(p) for p in ("/sbin/dhclient", "/usr/sbin/dhclient", "/sbin/udhcpc", "/usr/sbin/udhcpc")):
        log.warning("network: DHCP is configured but the root has no DHCP client; add isc-dhcp-client to "
                    "bootstrap.packages")


def rhel_network(hostname: str, domain: str | None) -> str:
    fqdn = f"{hostname}.{domain}" if domain else hostname
    return f"NETWORKING=yes\nHOSTNAME={fqdn}\n"


def rhel_ifcfg(name: str, i: Interface) -> str:
    """/etc/sysconfig/network-scripts/ifcfg-NAME, read by EL5 to EL9's initscripts (and NetworkManager's
    ifcfg-rh plugin). NETMASK and PREFIX both: EL5 reads only NETMASK."""
    out = [f"DEVICE={name}", "TYPE=Ethernet", "ONBOOT=yes", "NM_CONTROLLED=no"]
    if i.mac:
        out.append(f"HWADDR={i.mac.upper()}")
    if i.dhcp:
        out.append("BOOTPROTO=dhcp")
    elif i.address.version == 4:
        out += ["BOOTPROTO=none", f"IPADDR={i.address.ip}", f"NETMASK={i.address.netmask}",
                f"PREFIX={i.address.network.prefixlen}"]
        if i.gateway is not None:
            out.append(f"GATEWAY={i.gateway}")
    else:
        out += ["BOOTPROTO=none", "IPV6INIT=yes", f"IPV6ADDR={i.address.with_prefixlen}"]
        if i.gateway is not None:
            out.append(f"IPV6_DEFAULTGW={i.gateway}")
    return "\n".join(out) + "\n"


def write_sysconfig(ctx: "Context") -> None:
    """EL: /etc/sysconfig/network and an ifcfg file per interface."""
    r = ctx.recipe
    ctx.root.write("/etc/sysconfig/network", rhel_network(r.hostname, r.domain))
    for name, iface in r.network.items():
        ctx.root.write(f"/etc/sysconfig/network-scripts/ifcfg-{name}", rhel_ifcfg(name, iface))
    if any(i.dhcp for i in r.network.values()) and not ctx.root.exists("/sbin/dhclient"):
        log.warning("network: DHCP is configured but the root has no /sbin/dhclient; add dhclient to "
                    "bootstrap.packages")


def run(ctx: "Context", _opts: None = None) -> None:
    ctx.family.write_network(ctx)
