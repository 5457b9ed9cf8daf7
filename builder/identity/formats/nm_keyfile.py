"""NetworkManager keyfiles (system-connections/*.nmconnection, nm-settings-keyfile(5))."""
from __future__ import annotations

import re

from builder.identity.formats.ini import ini_edit
from builder.identity.formats.rename import Rename
from builder.identity.formats.values import gw_value, host_value, mac_value, parse_ip


def _nm_fields(value: str) -> tuple[list[str], list[str]]:
    parts = re.split(r"([/;,])", value)
    return parts[0::2], parts[1::2]


def _nm_join(fields: list[str], seps: list[str]) -> str:
    out = fields[0]
    for sep, f in zip(seps, fields[1:]):
        out += sep + f
    return out


def _nm_address(r: Rename, value: str, route: bool) -> str | None:
    """NetworkManager's address/route values: ADDR/PLEN,GATEWAY (also the old ADDR;PLEN;GATEWAY; form: '/', ';'
    and ',' are interchangeable, nm-keyfile-reader.c), routes DEST/PLEN,GATEWAY,METRIC."""
    fields, seps = _nm_fields(value)
    has_plen = len(fields) > 1 and fields[1].isdigit()
    gw = 2 if has_plen else 1
    if not route:
        ip = parse_ip(fields[0])
        if ip is not None and ip in r.ips:
            new = r.ips[ip]
            fields[0] = str(new.ip)
            if ip in r.prefix_given:
                if has_plen:
                    fields[1] = str(new.network.prefixlen)
                else:
                    fields.insert(1, str(new.network.prefixlen))
                    seps.insert(0, "/")
                    gw += 1
    if gw < len(fields):
        g = gw_value(r, fields[gw])
        if g is not None:
            fields[gw] = g
    out = _nm_join(fields, seps)
    return out if out != value else None


def _nm_mac(r: Rename, value: str) -> str | None:
    """mac-address= in hex notation, or the obsolete list of six decimal bytes (0;22;62;0;3;2;)."""
    m = re.fullmatch(r"((?:\d{1,3};){5}\d{1,3})(;?)", value.strip())
    if not m:
        return mac_value(r, value)
    octets = [int(x) for x in m.group(1).split(";")]
    if any(x > 255 for x in octets):
        return None
    old = ":".join(f"{x:02x}" for x in octets)
    if old not in r.macs or r.macs[old] == old:
        return None
    return ";".join(str(int(b, 16)) for b in r.macs[old].split(":")) + m.group(2)


def nm_keyfile(text: str, r: Rename) -> str:
    """NetworkManager keyfiles (/etc/NetworkManager/system-connections/*.nmconnection, nm-settings-keyfile(5)):

    - mac-address= and cloned-mac-address= in any section ([ethernet], the older [802-3-ethernet], [wifi] ...),
      hex in the file's case, or the obsolete byte list; `preserve`, `random` ... stay;
    - [ipv4]/[ipv6] address, addresses, addressN, addressesN (ADDR/PLEN,GW); route, routes, routeN, routesN (the
      gateway field); gateway=; dhcp-hostname= and dhcp-fqdn=;
    - left: uuid= and id= (this guest's own profile), dns= (other hosts), mac-address-blacklist=."""
    def edit(section: str, key: str, val: str) -> str | None:
        if key in ("mac-address", "cloned-mac-address"):
            return _nm_mac(r, val)
        if section not in ("ipv4", "ipv6"):
            return None
        if re.fullmatch(r"address(?:es)?\d*", key):
            return _nm_address(r, val, route=False)
        if re.fullmatch(r"routes?\d*", key):
            return _nm_address(r, val, route=True)
        if key == "gateway":
            return gw_value(r, val)
        if key in ("dhcp-hostname", "dhcp-fqdn"):
            return host_value(r, val)
        return None
    return ini_edit(text, edit, "#")
