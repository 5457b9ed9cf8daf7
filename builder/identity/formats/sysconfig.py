"""RHEL's /etc/sysconfig/network and network-scripts/ifcfg-NAME (initscripts and NetworkManager's ifcfg-rh)."""
from __future__ import annotations

import re

from builder.identity.formats.rename import IPAddress, IPInterface, Rename
from builder.identity.formats.shell import shvars
from builder.identity.formats.values import (
    addr_value,
    gw_value,
    host_value,
    mac_value,
    net_value,
    parse_ip,
    prefix_len,
    splice,
    sub_words,
)


def sysconfig_network(text: str, r: Rename) -> str:
    """RHEL /etc/sysconfig/network: HOSTNAME= (short or FQDN; the domain is kept), GATEWAY= and IPV6_DEFAULTGW=
    (through Rename.gateways). NETWORKING, NOZEROCONF and the rest are left."""
    lines, found = shvars(text)
    for i, m in found:
        key, val = m.group("key"), m.group("val")
        if key == "HOSTNAME":
            new = host_value(r, val)
        elif key in ("GATEWAY", "IPV6_DEFAULTGW"):
            new = gw_value(r, val)
        else:
            continue
        lines[i] = splice(lines[i], m, "val", new)
    return "\n".join(lines)


def ifcfg(text: str, r: Rename) -> str:
    """RHEL 5-9 /etc/sysconfig/network-scripts/ifcfg-NAME (initscripts and NetworkManager's ifcfg-rh):

    - IPADDR / IPADDRn (RHEL 7 writes IPADDR0): the address; with the index's PREFIXn and NETMASKn changed when the
      new prefix is given (both if both are there: RHEL 5 reads only NETMASK). When neither is there and a prefix
      is given, NETMASKn= is added after the address line (every initscripts version and ifcfg-rh read it).
    - BROADCAST= / NETWORK= (RHEL 5's anaconda wrote them): recomputed when they were those of the old address.
    - IPV6ADDR (ADDR/PREFIX), IPV6ADDR_SECONDARIES (a space-separated list).
    - GATEWAY / GATEWAYn / IPV6_DEFAULTGW: through Rename.gateways.
    - HWADDR (binds the file to the NIC with that MAC) and MACADDR (sets the MAC): new MAC, in the file's case
      (upper case, as anaconda writes it, when the old value has no letters).
    - DHCP_HOSTNAME, DHCP_FQDN, HOSTNAME: the host name.
    - left: UUID (see docs/identity-formats.md), NAME, DEVICE, DNS1/DNS2 (other hosts), everything else."""
    lines, found = shvars(text)
    var = {m.group("key"): m.group("val") for _, m in found}

    def ref(n: str) -> tuple[IPAddress | None, int | None]:
        ip = parse_ip(var.get(f"IPADDR{n}", "").partition("/")[0])
        plen = None
        if f"PREFIX{n}" in var:
            plen = prefix_len(var[f"PREFIX{n}"])
        elif f"NETMASK{n}" in var:
            plen = prefix_len(var[f"NETMASK{n}"])
        return ip, plen

    def mapped_with_prefix(n: str) -> IPInterface | None:
        ip, _ = ref(n)
        return r.ips[ip] if ip is not None and ip in r.ips and ip in r.prefix_given else None

    inserts: dict[int, str] = {}
    for i, m in found:
        key, val = m.group("key"), m.group("val")
        new = None
        k = re.fullmatch(r"(IPADDR|PREFIX|NETMASK|GATEWAY)(\d*)", key)
        if k:
            kind, n = k.groups()
            if kind == "IPADDR":
                new = addr_value(r, val)
                target = mapped_with_prefix(n)
                if target is not None and target.version == 4 \
                        and f"PREFIX{n}" not in var and f"NETMASK{n}" not in var:
                    eol = "\r" if lines[i].endswith("\r") else ""
                    inserts[i] = f"{m.group('pre')}NETMASK{n}={m.group('q')}{target.netmask}{m.group('q')}{eol}"
            elif kind in ("PREFIX", "NETMASK"):
                target = mapped_with_prefix(n)
                if target is not None:
                    new = str(target.network.prefixlen) if kind == "PREFIX" else str(target.netmask)
            else:
                new = gw_value(r, val)
        elif key in ("BROADCAST", "NETWORK"):
            n = "" if "IPADDR" in var else "0"
            ip, plen = ref(n)
            new = net_value(r, val, ip, plen, key.lower())
        elif key == "IPV6ADDR":
            new = addr_value(r, val, add_prefix=True)
        elif key == "IPV6ADDR_SECONDARIES":
            new = sub_words(val, lambda w: addr_value(r, w, add_prefix=True))
        elif key == "IPV6_DEFAULTGW":
            new = gw_value(r, val)
        elif key in ("HWADDR", "MACADDR"):
            new = mac_value(r, val, upper=True)
        elif key in ("DHCP_HOSTNAME", "DHCP_FQDN", "HOSTNAME"):
            new = host_value(r, val)
        if new is not None and new != val:
            lines[i] = splice(lines[i], m, "val", new)
    return "\n".join(x for i, line in enumerate(lines) for x in ((line, inserts[i]) if i in inserts else (line,)))
