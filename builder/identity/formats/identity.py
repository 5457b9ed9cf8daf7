"""Identity: what a guest config says about its guest, as the readers (read_lxc, read_xen, read_openvz) return it."""
from __future__ import annotations

from dataclasses import dataclass

from builder.identity.formats.values import parse_ip


@dataclass(frozen=True)
class Identity:
    """What a guest config says about its guest: its name (Xen domain name, OpenVZ NAME=; LXC configs do not name
    their container, the directory does), the host names it gives the guest, its addresses (without prefix,
    normalized: fd00:0::2 reads as fd00::2) and its MACs (lower case), each in file order without repeats."""

    name: str | None
    hostnames: tuple[str, ...]
    ips: tuple[str, ...]
    macs: tuple[str, ...]


def unique(items) -> tuple:
    seen = []
    for x in items:
        if x is not None and x not in seen:
            seen.append(x)
    return tuple(seen)


def addr_str(word: str) -> str | None:
    ip = parse_ip(word.partition("/")[0])
    return str(ip) if ip is not None else None
