"""Fresh unicast MACs no known guest has: in Xen's OUI (00:16:3e, the lower half of the fourth octet, where Xen's
own tools draw theirs) or locally administered ones. Drawn from `mac_rng(key)`, the draws are the same on every run
on this host for one guest (so a dry run shows the MACs the run will take), and differ between guests and between
hosts; a MAC another guest has is skipped for the next draw."""
from __future__ import annotations

import hashlib
import hmac
import random
import re
import socket
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from builder.core.errors import BuilderError, InputError
from builder.identity.inventory_records import GuestRecord, normalize_mac

XEN_OUI = "00:16:3e"
_HEX_DIGITS = frozenset(string.hexdigits)


MACHINE_ID = Path("/etc/machine-id")


def host_key() -> bytes:
    """What sets this host apart from others: its machine-id, else its host name. Keyed with it, two hosts that
    clone guests of one name draw different MACs for them."""
    try:
        mid = MACHINE_ID.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        mid = ""
    return (mid or f"host:{socket.gethostname()}").encode()


def mac_rng(key: str, host: bytes | None = None) -> random.Random:
    """The MAC draws for the guest `key` (its `where`, e.g. lxc:/var/lib/lxc/vm1): the same sequence on every run
    on this host, so a dry run allocates what the run then takes; another guest or another host draws another
    sequence. The machine-id is used only through an HMAC (as systemd's app-specific IDs do), never shown."""
    digest = hmac.new(host if host is not None else host_key(), b"imgbuild-mac\0" + key.encode(),
                      hashlib.sha256).digest()
    return random.Random(int.from_bytes(digest, "big"))


def used_macs(known: Iterable[GuestRecord | str]) -> set[str]:
    """The MACs of these guests (and of plain MAC strings among them), normalized."""
    used: set[str] = set()
    for k in known:
        if isinstance(k, GuestRecord):
            used.update(k.macs)
        elif (m := normalize_mac(k)) is not None:
            used.add(m)
    return used


class TakenMacs:
    """MACs in use, asked about one at a time: a set, and a lookup for the rest (the inventory's index on MACs),
    so allocation reads only the addresses it draws, never every MAC of the fleet. `between(low, high)`: the
    taken ones in a range, for a space small enough to be searched address by address."""

    def __init__(self, macs: Iterable[str] = (), lookup: Callable[[str], bool] | None = None,
                 between: Callable[[str, str], set[str]] | None = None):
        self.macs = set(macs)
        self.lookup = lookup
        self.between = between

    def __contains__(self, mac: object) -> bool:
        return mac in self.macs or (self.lookup is not None and isinstance(mac, str) and self.lookup(mac))

    def add(self, mac: str) -> None:
        self.macs.add(mac)

    def in_range(self, low: str, high: str) -> set[str]:
        found = {m for m in self.macs if low <= m <= high}
        return found | self.between(low, high) if self.between else found


def _octets(prefix: str) -> list[int]:
    parts = re.split(r"[:-]", prefix.strip()) if prefix.strip() else []
    if not 1 <= len(parts) <= 5 or not all(len(p) == 2 and set(p) <= _HEX_DIGITS for p in parts):
        raise InputError(f"MAC prefix {prefix!r}: expected one to five hex octets, e.g. {XEN_OUI}")
    octets = [int(p, 16) for p in parts]
    if octets[0] & 1:
        raise InputError(f"MAC prefix {prefix!r} is a multicast prefix; a NIC needs a unicast MAC (even first octet)")
    return octets


@dataclass(frozen=True)
class _Space:
    """Where MACs are drawn: fixed leading octets, then random ones; the first random octet below `first_limit`;
    with no fixed octets (locally administered), the first octet is xxxxxx10."""

    head: tuple[int, ...]
    first_limit: int = 256

    @property
    def size(self) -> int:
        if not self.head:
            return 64 * 256 ** 5
        return self.first_limit * 256 ** (5 - len(self.head))

    def nth(self, i: int) -> str:
        """The i-th address of the space (0 <= i < size)."""
        if not self.head:
            octets = [(i >> 40) << 2 | 0x02, *(i & (1 << 40) - 1).to_bytes(5, "big")]
        else:
            octets = [*self.head, *i.to_bytes(6 - len(self.head), "big")]
        return ":".join(f"{o:02x}" for o in octets)

    def describe(self) -> str:
        if not self.head:
            return "the locally administered addresses"
        head = ":".join(f"{o:02x}" for o in self.head)
        return f"{head}:00-7f" if self.first_limit < 256 else head

    def draw(self, rng: random.Random) -> str:
        return self.nth(rng.randrange(self.size))


def _space(prefix: str, local: bool) -> _Space:
    head = _octets(prefix)
    if local:
        if [f"{o:02x}" for o in head] == XEN_OUI.split(":"):
            return _Space(())
        if not head[0] & 2:
            raise InputError(f"MAC prefix {prefix!r} is not locally administered (its first octet needs bit 2, "
                             "e.g. 02 or 0a), yet local addresses were asked for")
        return _Space(tuple(head))
    oui = [int(x, 16) for x in XEN_OUI.split(":")]
    if head == oui:
        return _Space(tuple(head), first_limit=0x80)     # 00:16:3e:00-7f:xx:xx, as Xen's tools draw them
    return _Space(tuple(head))


EXHAUSTIVE = 1 << 16     # spaces this small are searched address by address


def _allocate_one(space: _Space, used: TakenMacs, rng: random.Random, tries: int) -> str:
    if space.size <= EXHAUSTIVE:
        taken = used.in_range(space.nth(0), space.nth(space.size - 1))
        free = [m for i in range(space.size) if (m := space.nth(i)) not in taken]
        if not free:
            raise BuilderError(f"no free MAC under {space.describe()}: all {space.size} addresses are taken",
                               "use a shorter prefix, or local addresses")
        return rng.choice(free)
    for _ in range(tries):
        mac = space.draw(rng)
        if mac not in used:
            return mac
    raise BuilderError(f"no free MAC under {space.describe()} found in {tries} tries",
                       "use a shorter prefix, or local addresses")


def allocate_macs(n: int, known: Iterable[GuestRecord | str] | TakenMacs = (), prefix: str = XEN_OUI,
                  local: bool = False, rng: random.Random | None = None, tries: int = 10_000) -> list[str]:
    """`n` fresh unicast MACs, all different and none of them a known guest's (or a MAC string in `known`; or in
    use by a TakenMacs: the inventory's, asked per draw).

    Default: in Xen's OUI 00:16:3e with the fourth octet below 0x80, the half libxl (and xend before it) draws a
    guest's MAC from when its vif has none. Another prefix (one to five octets) puts the addresses under it.
    local=True: locally administered addresses (first octet xxxxxx10: the locally administered bit set, the
    multicast bit clear), the strategy xl-network-configuration(5) prefers for its 46 random bits; with a prefix
    other than Xen's, that prefix (which must be locally administered). `rng`: a random.Random for reproducible
    draws (mac_rng(key) for a guest's own); the default draws from the OS (processes forked from one parent do not
    repeat each other). A taken address is skipped for the next draw, so with one rng and the same known guests
    the result is the same. Raises
    BuilderError when no free address is found in `tries` draws (a small space is searched exhaustively)."""
    if n < 0:
        raise ValueError(f"cannot allocate {n} MACs")
    space = _space(prefix, local)
    rng = rng or random.SystemRandom()
    used = known if isinstance(known, TakenMacs) else TakenMacs(used_macs(known))
    out: list[str] = []
    for _ in range(n):
        mac = _allocate_one(space, used, rng, tries)
        used.add(mac)
        out.append(mac)
    return out


def allocate_mac(known: Iterable[GuestRecord | str] | TakenMacs = (), prefix: str = XEN_OUI, local: bool = False,
                 rng: random.Random | None = None, tries: int = 10_000) -> str:
    """One fresh unicast MAC no known guest has; see allocate_macs."""
    return allocate_macs(1, known, prefix, local, rng, tries)[0]

