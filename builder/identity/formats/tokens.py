"""Any file the user names (my.cnf, a vhost, /etc/mailname): old names, addresses and MACs replaced as whole
tokens."""
from __future__ import annotations

import re
from functools import lru_cache

from builder.core.checks import MAC_PAIRS
from builder.identity.formats.rename import Rename
from builder.identity.formats.values import addr_value, gw_value, host_value, mac_value, parse_ip


@lru_cache(maxsize=64)
def _token_re(names: tuple[str, ...]) -> re.Pattern:
    alts = [
        r"(?P<mac>(?<![\w:.-])" + MAC_PAIRS + r"(?!\w|[:-]\w))",
        # IPv6 (also v4-mapped ::ffff:a.b.c.d); a candidate that does not parse (a time, 12:30:45) stays
        (r"(?P<v6>(?<![\w:.])(?=[0-9A-Fa-f:]*:[0-9A-Fa-f:]*:)[0-9A-Fa-f:]+(?:(?<=:)\d{1,3}(?:\.\d{1,3}){3})?"
         r"(?![\w:]|\.\d))(?:/(?P<p6>\d{1,3})(?![\w.]))?"),
        r"(?P<v4>(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?!\w|\.\d))(?:/(?P<p4>\d{1,3}(?:\.\d{1,3}){3}|\d{1,2})(?![\w.]))?",
    ]
    if names:
        alts.append(r"(?P<host>(?i:(?<![\w.-])(?:" + "|".join(re.escape(n) for n in names) + r")(?![\w-])))")
    return re.compile("|".join(alts))


def token_sub(r: Rename, text: str, names: bool = True, addresses: bool = True, macs: bool = True,
               gateways: bool = False) -> str:
    pattern = _token_re(r.match_names if names and r.hostname else ())

    def one(m: re.Match) -> str:
        whole = m.group()
        if m.group("mac") is not None:
            return (mac_value(r, whole) if macs else None) or whole
        if m.groupdict().get("host") is not None:
            return host_value(r, whole) or whole
        addr = m.group("v6") if m.group("v6") is not None else m.group("v4")
        plen = m.group("p6") if m.group("v6") is not None else m.group("p4")
        ip = parse_ip(addr)
        if ip is None:
            return whole
        if addresses and ip in r.ips:
            return addr_value(r, whole) or whole
        if gateways and ip in r.gateways:
            new = gw_value(r, addr)
            return (new + (f"/{plen}" if plen is not None else "")) if new else whole
        return whole

    return pattern.sub(one, text)


def tokens(text: str, r: Rename) -> str:
    """Any file the user names (my.cnf, a web server's vhost, /etc/mailname ...): old host names (and FQDNs
    starting with one), old addresses (an ADDR/PREFIX gets the new prefix when given) and old MACs (any case,
    colon or dash) replaced where they stand as whole tokens, everywhere in the file, comments included. Gateways
    are not replaced (an address of another host, like a peer's: see docs/identity-formats.md)."""
    return token_sub(r, text)
