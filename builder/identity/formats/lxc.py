"""LXC container configs, modern (LXC 2.1+) and legacy (LXC 0.7-2.0) keys: rewritten, and read back."""
from __future__ import annotations

import re

from builder.core.checks import mac_norm
from builder.identity.formats.identity import Identity, addr_str, unique
from builder.identity.formats.rename import Rename
from builder.identity.formats.values import (
    VALUE,
    addr_value,
    gw_value,
    host_value,
    mac_value,
    net_value,
    parse_ip,
    prefix_len,
    splice,
    split_lines,
)

_LXC_KEY = re.compile(r"^(?P<pre>[ \t]*)(?P<key>lxc\.[A-Za-z0-9_.-]+)(?P<sep>[ \t]*=[ \t]*)" + VALUE)
_LXC_UTS = re.compile(r"lxc\.(?:uts\.name|utsname)")
_LXC_HWADDR = re.compile(r"lxc\.(?:net\.\d+|network(?:\.\d+)?)\.hwaddr")
_LXC_ADDRESS = re.compile(r"lxc\.(?:net\.\d+\.ipv[46]\.address|network(?:\.\d+)?\.ipv[46])")
_LXC_GATEWAY = re.compile(r"lxc\.(?:net\.\d+|network(?:\.\d+)?)\.ipv[46]\.gateway")


def _lxc_address(r: Rename, val: str) -> str | None:
    """ADDR/PREFIX [BROADCAST] (lxc.container.conf(5)); the broadcast follows the address when it was the old
    network's."""
    m = re.match(r"^(?P<a>\S+)(?:(?P<sp>[ \t]+)(?P<b>\S+))?(?P<rest>.*)$", val)
    if not m:
        return None
    a = m.group("a")
    new_a = addr_value(r, a, add_prefix=True) or a
    new_b = m.group("b")
    if new_b is not None:
        ip, _, p = a.partition("/")
        old_ip = parse_ip(ip)
        plen = prefix_len(p, old_ip.version if old_ip else 4) if p else None
        new_b = net_value(r, new_b, old_ip, plen, "broadcast") or new_b
        return new_a + m.group("sp") + new_b + m.group("rest")
    return new_a + m.group("rest")


def lxc_config(text: str, r: Rename) -> str:
    """An LXC container config, modern keys (LXC 2.1+) and legacy keys (LXC 0.7-2.0) alike:

    - lxc.uts.name / lxc.utsname: the host name;
    - lxc.net.N.hwaddr / lxc.network.hwaddr (and the indexed lxc.network.N.*): the MAC (a template with x's
      such as 00:16:3e:xx:xx:xx stays);
    - lxc.net.N.ipv4.address / lxc.network.ipv4 and ipv6 likewise: ADDR/PREFIX [BROADCAST];
    - lxc.net.N.ipv4.gateway / lxc.network.ipv4.gateway and ipv6 (`auto` and `dev` stay): Rename.gateways;
    - left: veth.pair names, rootfs and mount paths, lxc.net.N.name (see docs/identity-formats.md), comments."""
    out = []
    for line in split_lines(text):
        m = _LXC_KEY.match(line)        # a comment never matches: the key must start the line
        if m:
            key, val = m.group("key"), m.group("val")
            new = None
            if _LXC_UTS.fullmatch(key):
                new = host_value(r, val)
            elif _LXC_HWADDR.fullmatch(key):
                new = mac_value(r, val)
            elif _LXC_ADDRESS.fullmatch(key):
                new = _lxc_address(r, val)
            elif _LXC_GATEWAY.fullmatch(key):
                new = gw_value(r, val)
            if new is not None and new != val:
                line = splice(line, m, "val", new)
        out.append(line)
    return "\n".join(out)

_LXC_NET = re.compile(r"lxc\.(?:net\.(?P<n>\d+)|network(?:\.(?P<ln>\d+))?)\.(?P<sub>type|hwaddr|ipv[46](?:\.address)?)")


def read_lxc(text: str) -> Identity:
    """An LXC config (modern or legacy keys): lxc.uts.name/lxc.utsname (the last one, as LXC reads it), each
    network's hwaddr (templates with x's skipped) and ipv4/ipv6 addresses, the way LXC builds its networks: modern
    ones by index, legacy ones by `lxc.network.type` line (or their lxc.network.N index); an empty `lxc.net =` /
    `lxc.network =` drops the networks before it, an empty hwaddr or address line clears that value (a config
    that includes a common one and overrides it). Included files are not followed."""
    uts = None
    nets: dict[str, dict] = {}
    legacy = -1
    for line in split_lines(text):
        m = _LXC_KEY.match(line)
        if not m:
            continue
        key, val = m.group("key"), m.group("val").strip()
        if _LXC_UTS.fullmatch(key):
            uts = val or None
            continue
        if key in ("lxc.net", "lxc.network") and not val:
            nets.clear()
            continue
        k = _LXC_NET.fullmatch(key)
        if not k:
            continue
        sub = k.group("sub")
        if k.group("n") is not None:
            idx = f"net{k.group('n')}"
        elif k.group("ln") is not None:
            idx = f"network{k.group('ln')}"
        else:
            if sub == "type":
                legacy += 1
            if legacy < 0:
                continue                    # before the first type line: LXC refuses it too
            idx = f"network{legacy}"
        net = nets.setdefault(idx, {"mac": None, "ipv4": [], "ipv6": []})
        if sub == "hwaddr":
            net["mac"] = mac_norm(val)
        elif sub.startswith("ipv"):
            family = sub[:4]
            if val:
                net[family].append(addr_str(val.split()[0]))
            else:
                net[family].clear()
    ips = [a for net in nets.values() for a in net["ipv4"] + net["ipv6"]]
    macs = [net["mac"] for net in nets.values()]
    return Identity(None, (uts,) if uts else (), unique(ips), unique(macs))
