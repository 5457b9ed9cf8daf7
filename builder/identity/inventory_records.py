"""One known guest (GuestRecord: name, host name, addresses, MACs, where its config is) and the normal forms its
values are compared in; the inventory file, discovery and MAC allocation all speak in these."""
from __future__ import annotations

import ipaddress
import posixpath
from dataclasses import dataclass
from typing import Any, Iterable

from builder.core.checks import mac_norm


def normalize_mac(value: object) -> str | None:
    """`value` as a MAC in lower case with colons (00:16:3E:0A:00:01 -> 00:16:3e:0a:00:01); None if it is none.
    Colon and dash notation only: the inventory holds MACs as six pairs."""
    s = str(value)
    return mac_norm(s) if "." not in s else None


def normalize_ip(value: object) -> str | None:
    """`value` as an IP address in its canonical text form, a prefix length dropped (10.0.3.2/24 -> 10.0.3.2);
    None if it is none."""
    try:
        return str(ipaddress.ip_address(str(value).strip().split("/", 1)[0]))
    except ValueError:
        return None


def normalize_where(where: str) -> str:
    """`kind:/path` with the kind in lower case and the path normalized (no trailing slash, no `//`)."""
    kind, sep, path = where.strip().partition(":")
    if not sep or not path.startswith("/"):
        return where.strip()
    path = posixpath.normpath(path)
    return f"{kind.lower()}:{'/' + path.lstrip('/')}"


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


@dataclass(frozen=True)
class GuestRecord:
    """One guest: its name, host name, addresses and where its config is (`lxc:/var/lib/lxc/vm1`,
    `xen:/etc/xen/www.cfg`, `vz:/etc/vz/conf/101.conf` ...). MACs and IPs are normalized when the record is
    made (lower case; canonical IP text); a value that is neither raises ValueError."""

    name: str
    hostname: str | None = None
    ips: tuple[str, ...] = ()
    macs: tuple[str, ...] = ()
    where: str | None = None
    updated: str | None = None      # ISO date of the last record()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"a guest needs a name, not {self.name!r}")
        if self.hostname is not None and (not isinstance(self.hostname, str) or not self.hostname.strip()):
            raise ValueError(f"hostname {self.hostname!r} is not a host name")
        macs, ips = [], []
        for m in self.macs:
            if (n := normalize_mac(m)) is None:
                raise ValueError(f"{m!r} is not a MAC address")
            macs.append(n)
        for i in self.ips:
            if (n := normalize_ip(i)) is None:
                raise ValueError(f"{i!r} is not an IP address")
            ips.append(n)
        object.__setattr__(self, "name", self.name.strip())
        object.__setattr__(self, "hostname", self.hostname.strip() if self.hostname else None)
        object.__setattr__(self, "macs", _unique(macs))
        object.__setattr__(self, "ips", _unique(ips))
        object.__setattr__(self, "where", normalize_where(self.where) if self.where else None)

    def to_dict(self) -> dict[str, Any]:
        """The record as the inventory file holds it: keys in FIELDS order, unset ones left out."""
        d = {"name": self.name, "hostname": self.hostname, "ips": list(self.ips), "macs": list(self.macs),
             "where": self.where, "updated": self.updated}
        return {k: v for k, v in d.items() if v is not None}

    @property
    def who(self) -> str:
        """`name (where)`, as messages name a guest."""
        return f"{self.name} ({self.where})" if self.where else self.name


def sort_key(g: GuestRecord) -> tuple[str, str, str]:
    """The order guests are listed in: by name (case-insensitively first), then by where."""
    return (g.name.lower(), g.name, g.where or "")


def merge(*groups: Iterable[GuestRecord]) -> list[GuestRecord]:
    """All guests of all groups, one per `where` (a later group's record wins: pass the inventory first and the
    discovered configs after it, so what the config says now counts); records without `where` are all kept."""
    by_where: dict[str, GuestRecord] = {}
    loose: list[GuestRecord] = []
    for group in groups:
        for g in group:
            if g.where:
                by_where[g.where] = g
            else:
                loose.append(g)
    return sorted([*by_where.values(), *loose], key=sort_key)
