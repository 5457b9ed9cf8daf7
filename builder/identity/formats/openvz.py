"""OpenVZ container configs (/etc/vz/conf/CTID.conf, ctid.conf(5)): rewritten, and read back."""
from __future__ import annotations

from builder.core.checks import mac_norm
from builder.identity.formats.identity import Identity, addr_str, unique
from builder.identity.formats.rename import Rename
from builder.identity.formats.shell import shvars
from builder.identity.formats.values import addr_value, host_value, mac_value, splice, sub_words


def _netif(r: Rename, value: str) -> str:
    devices = value.split(";")
    for n, dev in enumerate(devices):
        pairs = dev.split(",")
        for k, pair in enumerate(pairs):
            key, eq, val = pair.partition("=")
            if eq and key.strip() in ("mac", "host_mac"):
                new = mac_value(r, val, upper=True)
                if new is not None:
                    pairs[k] = key + eq + val.replace(val.strip(), new)
        devices[n] = ",".join(pairs)
    return ";".join(devices)


def openvz_config(text: str, r: Rename) -> str:
    """An OpenVZ /etc/vz/conf/CTID.conf (ctid.conf(5)):

    - HOSTNAME= (short or FQDN) and NAME= (vzctl --name, when it is an old host name);
    - IP_ADDRESS= (venet: a space-separated list, each ADDR or ADDR/MASK);
    - NETIF= (veth: devices separated by ';', each ifname=...,mac=...,host_mac=...): mac= and host_mac= when
      Rename maps them, in the file's case (vzctl writes upper case);
    - left: host_ifname= (a host-side name), NAMESERVER= (other hosts), paths and limits."""
    lines, found = shvars(text)
    for i, m in found:
        key, val = m.group("key"), m.group("val")
        new = None
        if key in ("HOSTNAME", "NAME"):
            new = host_value(r, val)
        elif key == "IP_ADDRESS":
            new = sub_words(val, lambda w: addr_value(r, w))
        elif key == "NETIF":
            new = _netif(r, val)
        if new is not None and new != val:
            lines[i] = splice(lines[i], m, "val", new)
    return "\n".join(lines)


def read_openvz(text: str) -> Identity:
    """An OpenVZ CTID.conf: NAME=, HOSTNAME=, IP_ADDRESS= (venet) and the mac= of each NETIF= device (veth; the
    guest's side: host_mac= is the host's end of the pair)."""
    _, found = shvars(text)
    var = {m.group("key"): m.group("val") for _, m in found}
    ips = [addr_str(w) for w in var.get("IP_ADDRESS", "").split()]
    macs = []
    for dev in var.get("NETIF", "").split(";"):
        for pair in dev.split(","):
            key, eq, val = pair.partition("=")
            if eq and key.strip() == "mac":
                macs.append(mac_norm(val))
    host = var.get("HOSTNAME") or None
    return Identity(var.get("NAME") or None, (host,) if host else (), unique(ips), unique(macs))
