"""The values the rewriters compare and write: addresses, prefixes, gateways, MACs and host names parsed (never
matched as substrings), and the line helpers every format shares."""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

from builder.core.checks import mac_norm
from builder.identity.formats.rename import IPAddress, Rename

# The value of a `KEY = VALUE` line and the blanks after it: VALUE is everything up to the last non-blank. Written
# greedy-then-back-off (linear); the lazy `(.*?)([ \t\r]*)$` it replaces took quadratic time on long runs of
# blanks inside a value, and guest files are outside input.
VALUE = r"(?P<val>(?:.*[^ \t\r])?)(?P<post>[ \t\r]*)$"


def parse_ip(s: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(s.strip())
    except ValueError:
        return None


def prefix_len(s: str, version: int = 4) -> int | None:
    """A prefix length from "24" or from a dotted netmask."""
    s = s.strip()
    if s.isascii() and s.isdigit():
        return int(s)
    if version == 4 and parse_ip(s) is not None:
        try:
            return ipaddress.ip_network(f"0.0.0.0/{s}").prefixlen
        except ValueError:
            return None
    return None


def host_value(r: Rename, value: str) -> str | None:
    """A whole value that is a host name: an old name, or an FQDN starting with one, gets the new name as its
    first label; the rest (the domain) is kept as the value had it."""
    if not r.hostname:
        return None
    low = value.lower()
    for o in r.match_names:
        if low == o or low.startswith(o + "."):
            first = len(o.split(".")[0])
            new = r.hostname + value[first:]
            return new if new != value else None
    return None


def _mac_format(mac: str, like: str, upper: bool) -> str:
    """mac (aa:bb:..) written the way `like` is: its separator notation and its letter case."""
    letters = [c for c in like if c.isalpha()]
    if letters:
        upper = all(c.isupper() for c in letters)
    digits = mac.replace(":", "")
    if "." in like:
        out = ".".join(digits[i:i + 4] for i in range(0, 12, 4))
    else:
        sep = "-" if "-" in like else ":"
        out = sep.join(digits[i:i + 2] for i in range(0, 12, 2))
    return out.upper() if upper else out.lower()


def mac_value(r: Rename, value: str, upper: bool = False) -> str | None:
    n = mac_norm(value)
    if n is None or n not in r.macs or r.macs[n] == n:
        return None
    return _mac_format(r.macs[n], value.strip(), upper)


def addr_value(r: Rename, value: str, add_prefix: bool = False) -> str | None:
    """ADDR or ADDR/PREFIX (a length, or a dotted IPv4 netmask) -> the new address; the prefix changes only when
    the Rename gives it, and is added (add_prefix) where the format keeps it in the same value."""
    a, slash, p = value.partition("/")
    ip = parse_ip(a)
    if ip is None or ip not in r.ips:
        return None
    new = r.ips[ip]
    out = str(new.ip)
    given = ip in r.prefix_given
    if slash:
        if given:
            out += "/" + (str(new.netmask) if new.version == 4 and "." in p else str(new.network.prefixlen))
        else:
            out += "/" + p
    elif given and add_prefix:
        out += f"/{new.network.prefixlen}"
    return out if out != value else None


def gw_value(r: Rename, value: str) -> str | None:
    a, pct, scope = value.partition("%")
    ip = parse_ip(a)
    if ip is None or ip not in r.gateways or r.gateways[ip] == ip:
        return None
    return f"{r.gateways[ip]}{pct}{scope}"


def net_value(r: Rename, value: str, old_ip: IPAddress | None, old_plen: int | None, kind: str) -> str | None:
    """A broadcast or network address that is the one of old_ip/old_plen -> the one of the new address (with the
    new prefix when given, else the old prefix). Any other value (a custom broadcast, "+") is left."""
    if old_ip is None or old_plen is None or old_ip not in r.ips:
        return None
    v = parse_ip(value)
    try:
        old_net = ipaddress.ip_interface(f"{old_ip}/{old_plen}").network
    except ValueError:
        return None
    ref = old_net.broadcast_address if kind == "broadcast" else old_net.network_address
    if v is None or v != ref:
        return None
    new = r.ips[old_ip]
    plen = new.network.prefixlen if old_ip in r.prefix_given else old_plen
    net = ipaddress.ip_interface(f"{new.ip}/{plen}").network
    out = str(net.broadcast_address if kind == "broadcast" else net.network_address)
    return out if out != value.strip() else None


def sub_words(value: str, fn: Callable[[str], str | None], pattern: str = r"[^\s]+") -> str:
    """fn applied to each word of value (whitespace kept)."""
    return re.sub(pattern, lambda m: fn(m.group()) or m.group(), value)


def split_lines(text: str) -> list[str]:
    return text.split("\n")


def splice(line: str, m: re.Match, group: str, new: str | None) -> str:
    if new is None:
        return line
    return line[:m.start(group)] + new + line[m.end(group):]
