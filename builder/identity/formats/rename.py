"""What a clone or re-identify changes in a guest's files: the Rename (new host name, old -> new addresses,
gateways and MACs), checked so that every rewrite with it is idempotent."""
from __future__ import annotations

import ipaddress
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, field

from builder.core.checks import mac_norm
from builder.core.errors import InputError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")


def _hostname_ok(name: str) -> bool:
    return len(name) <= 253 and all(_LABEL.match(label) for label in name.split("."))


class RenameError(InputError, ValueError):
    """A Rename that cannot be made: bad input (exit 2), also a ValueError as Rename always raised. Its values
    may come from a guest's own files (the old host name is read from /etc/hostname), so this is not an
    internal error."""

    def __init__(self, message: str):
        super().__init__(message, "a host name is dot-separated labels of letters, digits and '-'; addresses and "
                                  "MACs as ip(8) writes them; the old values are read from the guest's files")


def _chains(kind: str, pairs: Mapping) -> None:
    for old, new in pairs.items():
        if new != old and new in pairs:
            raise RenameError(f"{kind}: {old} -> {new} and {new} -> {pairs[new]}: a new value that is also an old "
                              "one cannot be rewritten idempotently (a second run would move it again); rename in "
                              "two steps through an unused value")


@dataclass(frozen=True)
class Rename:
    """One identity change. Build it with Rename.of(...) from strings, or directly with ipaddress objects."""

    hostname: str | None = None                                   # the new host name (one label: vm1)
    old_hostnames: tuple[str, ...] = ()                           # names to replace (vm0, vm0.lxc ...)
    ips: Mapping[IPAddress, IPInterface] = field(default_factory=dict)   # old address -> new address
    prefix_given: frozenset[IPAddress] = frozenset()              # old addresses whose new prefix applies
    gateways: Mapping[IPAddress, IPAddress] = field(default_factory=dict)  # old gateway -> new gateway
    macs: Mapping[str, str] = field(default_factory=dict)         # old MAC -> new MAC, aa:bb:cc:dd:ee:ff

    def __post_init__(self) -> None:
        try:
            self._check()
        except RenameError:
            raise
        except (ValueError, TypeError) as e:       # an address ipaddress cannot read, a value of the wrong kind
            raise RenameError(str(e)) from None

    def _check(self) -> None:
        put = lambda k, v: object.__setattr__(self, k, v)
        if self.hostname is not None and not _LABEL.match(self.hostname):
            raise RenameError(f"{self.hostname!r}: the new host name must be one label (letters, digits, '-'; "
                              "vm1, not vm1.lxc): the domain of each old name is kept")
        olds = (self.old_hostnames,) if isinstance(self.old_hostnames, str) else tuple(self.old_hostnames)
        for o in olds:
            if not _hostname_ok(o):
                raise RenameError(f"{o!r} is not a host name")
        put("old_hostnames", olds)
        ips: dict[IPAddress, IPInterface] = {}
        for old, new in dict(self.ips).items():
            old = ipaddress.ip_address(old) if isinstance(old, str) else old
            if isinstance(new, (str, ipaddress.IPv4Address, ipaddress.IPv6Address)):
                new = ipaddress.ip_interface(str(new))
            if old.version != new.version:
                raise RenameError(f"{old} -> {new}: an IPv{old.version} address cannot become IPv{new.version}")
            ips[old] = new
        _chains("addresses", {o: n.ip for o, n in ips.items()})
        given = frozenset(ipaddress.ip_address(a) if isinstance(a, str) else a for a in self.prefix_given)
        if not given <= set(ips):
            raise RenameError(f"prefix given for {', '.join(map(str, sorted(given - set(ips), key=str)))}, "
                              "which is not an old address of the rename")
        gws: dict[IPAddress, IPAddress] = {}
        for old, new in dict(self.gateways).items():
            old = ipaddress.ip_address(old) if isinstance(old, str) else old
            new = ipaddress.ip_address(new) if isinstance(new, str) else new
            if old.version != new.version:
                raise RenameError(f"gateway {old} -> {new}: not the same IP version")
            gws[old] = new
        _chains("gateways", gws)
        cross = (set(gws) & set(ips)) | ({n for o, n in gws.items() if n != o} & set(ips)) \
            | ({n.ip for o, n in ips.items() if n.ip != o} & set(gws))
        if cross:
            raise RenameError(f"{', '.join(map(str, sorted(cross, key=str)))}: both a guest address and a gateway "
                              "in the rename (a guest is not its own gateway, and one would be rewritten twice)")
        macs: dict[str, str] = {}
        for old, new in dict(self.macs).items():
            o, n = mac_norm(old), mac_norm(new)
            if o is None or n is None:
                raise RenameError(f"{old} -> {new}: not a MAC address (six hex pairs, e.g. 00:16:3e:00:03:02)")
            macs[o] = n
        _chains("MACs", macs)
        put("ips", types.MappingProxyType(ips))
        put("prefix_given", given)
        put("gateways", types.MappingProxyType(gws))
        put("macs", types.MappingProxyType(macs))
        # the names matched: each old name and, for an FQDN, its first label (vm0.lxc -> vm0 too); longest first
        names = {o.lower() for o in olds} | {o.split(".")[0].lower() for o in olds}
        put("match_names", tuple(sorted(names, key=lambda n: (-len(n), n))))

    @classmethod
    def of(cls, hostname: str | None = None, old_hostnames=(), ips: Mapping[str, str] | None = None,
           gateways: Mapping[str, str] | None = None, macs: Mapping[str, str] | None = None) -> Rename:
        """From strings: ips={"10.0.3.2": "10.0.3.3"} keeps each file's prefix, {"10.0.3.2": "10.0.3.3/16"}
        also sets the prefix to 16."""
        ips = dict(ips or {})
        try:
            parsed = ({ipaddress.ip_address(o): ipaddress.ip_interface(n) for o, n in ips.items()},
                      frozenset(ipaddress.ip_address(o) for o, n in ips.items() if "/" in str(n)))
        except ValueError as e:
            raise RenameError(str(e)) from None
        return cls(hostname=hostname, old_hostnames=tuple([old_hostnames] if isinstance(old_hostnames, str)
                                                          else old_hostnames),
                   ips=parsed[0], prefix_given=parsed[1],
                   gateways=dict(gateways or {}), macs=dict(macs or {}))

    @property
    def empty(self) -> bool:
        return not ((self.hostname and self.old_hostnames) or self.ips or self.gateways or self.macs)
