"""Debian's ifupdown /etc/network/interfaces and interfaces.d/* (interfaces(5))."""
from __future__ import annotations

import re

from builder.identity.formats.rename import Rename
from builder.identity.formats.tokens import token_sub
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
    sub_words,
)

_IFUPDOWN_STANZA = re.compile(r"^[ \t]*(iface|mapping|auto|allow-\S+|source|source-directory|rename|no-auto-down|"
                              r"no-scripts)(?:[ \t]|$)")
_IFUPDOWN_OPT = re.compile(r"^(?P<pre>[ \t]*)(?P<key>[A-Za-z0-9_-]+)(?P<sep>[ \t]+)" + VALUE)
_COMMAND_KEYS = {"up", "down", "pre-up", "post-up", "pre-down", "post-down"}


def debian_interfaces(text: str, r: Rename) -> str:
    """ifupdown's /etc/network/interfaces and /etc/network/interfaces.d/* (interfaces(5)), every `iface` stanza:

    - address ADDR or ADDR/PREFIX (several words: ifupdown2's list form); the new prefix, when given, goes into
      the stanza's netmask line (dotted, or a length as inet6 and `netmask 24` write it), or onto the address
      when the stanza has no netmask line;
    - broadcast / network lines recomputed when they were those of the stanza's old address;
    - gateway (Rename.gateways), hwaddress [ether] MAC, hostname (the DHCP method's option);
    - up/down/pre-up/post-up/pre-down/post-down commands: old addresses, gateways and MACs as whole tokens
      (`ip addr add 10.0.3.13/24 dev eth0` adds the guest's own address);
    - left: dns-nameservers and dns-search (other hosts), auto/allow-/source lines, comments (interfaces(5) has
      only whole-line comments)."""
    lines = split_lines(text)
    stanzas: list[tuple[int, list[int]]] = []
    current: tuple[int, list[int]] | None = None
    for i, line in enumerate(lines):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        m = _IFUPDOWN_STANZA.match(line)
        if m:
            current = (i, []) if m.group(1) == "iface" else None
            if current is not None:
                stanzas.append(current)
        elif current is not None:
            current[1].append(i)
    for head, members in stanzas:
        words = lines[head].split()
        family = words[2] if len(words) > 2 else "inet"
        opts = [(i, m) for i in members if (m := _IFUPDOWN_OPT.match(lines[i]))]
        keys = [m.group("key") for _, m in opts]
        addr_words = [w for _, m in opts if m.group("key") == "address" for w in m.group("val").split()]
        ref_ip, ref_plen = None, None
        if addr_words:
            a, _, p = addr_words[0].partition("/")
            ref_ip = parse_ip(a)
            if p:
                ref_plen = prefix_len(p)
            else:
                masks = [m.group("val") for _, m in opts if m.group("key") == "netmask"]
                if masks:
                    ref_plen = prefix_len(masks[0], 6 if family == "inet6" else 4)
        target = r.ips[ref_ip] if ref_ip is not None and ref_ip in r.ips and ref_ip in r.prefix_given else None
        add_prefix = "netmask" not in keys      # no netmask line: a given prefix goes onto the address
        for i, m in opts:
            key, val = m.group("key"), m.group("val")
            new = None
            if key == "address":
                new = sub_words(val, lambda w, add=add_prefix: addr_value(r, w, add_prefix=add))
            elif key == "netmask" and target is not None:
                new = str(target.network.prefixlen) if val.strip().isdigit() else str(target.netmask)
            elif key in ("broadcast", "network"):
                new = net_value(r, val, ref_ip, ref_plen, key)
            elif key == "gateway":
                new = gw_value(r, val)
            elif key == "hwaddress":
                new = sub_words(val, lambda w: mac_value(r, w))
            elif key == "hostname":
                new = host_value(r, val)
            elif key in _COMMAND_KEYS:
                new = token_sub(r, val, names=False, gateways=True)
            if new is not None and new != val:
                lines[i] = splice(lines[i], m, "val", new)
    return "\n".join(lines)
