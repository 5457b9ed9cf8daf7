"""The guest inventory: which guests exist, which MACs, IP addresses and host names they hold, so that no copy takes
an identity another guest has (a copied guest that keeps its original's MAC puts two NICs with one address on the
LAN, and both guests, with whatever shares the segment, lose their network).

- **The store** (`load`, `locked`; inventory_db): an SQLite file at the path given, else `$IMGBUILD_INVENTORY`, else
  /var/lib/imgbuild/inventory.db (root) or ~/.local/share/imgbuild/inventory.db. A path ending in .yml/.yaml
  names the YAML file of earlier imgbuilds: the store is beside it with the suffix .db. Every change runs in one
  transaction (`locked()`: BEGIN IMMEDIATE ... COMMIT), so two clones started at once cannot take the same MAC;
  queries go through indexes (MAC, IP, name, where, host name), so a clone reads the rows it may clash with,
  never the whole fleet.
- **Migration**: the first `locked()` where the store does not exist but the YAML file does reads that file (the
  strict reader), writes every record into the new store in the same transaction that creates it, and renames the
  file to `.yml.migrated`. Until then `load()` (dry runs, list) reads the YAML file and writes nothing.
- **Checks** (`conflicts`, `conflict_error`, `refuse_taken`, `Known`): what a candidate would take that another
  guest has; an entry whose guest is gone (its `where` path no longer exists) is named as stale.
- Re-exported, so `inventory.X` is the one name for callers: records (inventory_records), the YAML form
  (inventory_yaml), discovery of the guests on this host (inventory_scan) and MAC allocation (inventory_macs).

Typical use, a clone:

    with locked() as inv:
        known = inv.known(discover())
        new = GuestRecord("www2", "www2.example.org", ("10.0.3.12",), (allocate_mac(known.macs()),),
                          "xen:/etc/xen/www2.cfg")
        if found := conflicts(new, known.near(new), new.where):
            raise conflict_error(found)
        inv.record(new)          # committed when the block ends without an exception
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Literal, Mapping, Sequence

from builder.core.errors import InputError
from builder.identity.inventory_db import BUSY_TIMEOUT, Store
from builder.identity.inventory_macs import (
    EXHAUSTIVE,
    MACHINE_ID,
    XEN_OUI,
    TakenMacs,
    allocate_mac,
    allocate_macs,
    host_key,
    mac_rng,
    used_macs,
)
from builder.identity.inventory_records import (
    GuestRecord,
    merge,
    normalize_ip,
    normalize_mac,
    normalize_where,
    sort_key,
)
from builder.identity.inventory_scan import (
    DEFAULT_LXCPATH,
    DEFAULT_VZ_DIR,
    DEFAULT_XEN_DIR,
    MAX_CONFIG_SIZE,
    IdentityLike,
    Reader,
    Readers,
    ScannedIdentity,
    discover,
    read_lxc_config,
    read_openvz_config,
    read_xen_config,
    scan_lxc,
    scan_openvz,
    scan_xen,
)
from builder.identity.inventory_yaml import FIELDS, HEADER, LOAD_HINT, dumps, parse
from builder.identity.inventory_yaml import read as read_yaml

__all__ = [
    # the store and the checks (here)
    "ENV_VAR", "ROOT_PATH", "USER_PATH", "LOCK_TIMEOUT", "YAML_SUFFIXES", "inventory_path", "db_path", "yaml_path",
    "Inventory", "Known", "load", "save", "locked", "Kind", "Conflict", "LOCAL_KINDS", "gone", "same_host",
    "conflicts", "conflict_error", "conflict_hint", "refuse_taken",
    # the YAML form
    "FIELDS", "HEADER", "LOAD_HINT", "parse", "dumps", "read_yaml",
    # records
    "GuestRecord", "merge", "normalize_ip", "normalize_mac", "normalize_where", "sort_key",
    # discovery
    "DEFAULT_LXCPATH", "DEFAULT_VZ_DIR", "DEFAULT_XEN_DIR", "MAX_CONFIG_SIZE", "IdentityLike", "Reader", "Readers",
    "ScannedIdentity", "discover", "read_lxc_config", "read_openvz_config", "read_xen_config", "scan_lxc",
    "scan_openvz", "scan_xen",
    # allocation
    "EXHAUSTIVE", "MACHINE_ID", "XEN_OUI", "TakenMacs", "allocate_mac", "allocate_macs", "host_key", "mac_rng",
    "used_macs",
]

log = logging.getLogger("imgbuild")

ENV_VAR = "IMGBUILD_INVENTORY"
ROOT_PATH = Path("/var/lib/imgbuild/inventory.db")
USER_PATH = Path(".local/share/imgbuild/inventory.db")   # under the user's home
LOCK_TIMEOUT = BUSY_TIMEOUT
YAML_SUFFIXES = (".yml", ".yaml")


# ------------------------------------------------------------------ where it is


def inventory_path(path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None,
                   euid: int | None = None, home: str | os.PathLike[str] | None = None) -> Path:
    """The inventory as configured: `path`, else $IMGBUILD_INVENTORY, else root's or the user's default (the
    store itself is at db_path() of it)."""
    if path:
        return Path(path)
    env = os.environ if environ is None else environ
    if env.get(ENV_VAR):
        return Path(env[ENV_VAR])
    if (os.geteuid() if euid is None else euid) == 0:
        return ROOT_PATH
    return Path(home if home is not None else Path.home()) / USER_PATH


def db_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The store's file: inventory_path(path), a .yml/.yaml one with the suffix .db instead."""
    p = inventory_path(path)
    return p.with_suffix(".db") if p.suffix in YAML_SUFFIXES else p


def yaml_path(path: str | os.PathLike[str] | None = None) -> Path | None:
    """The YAML inventory an earlier imgbuild kept for this one (migrated on first use): a .yml/.yaml path
    itself; for FILE.db, FILE.yml; else none."""
    p = inventory_path(path)
    if p.suffix in YAML_SUFFIXES:
        return p
    return p.with_suffix(".yml") if p.suffix == ".db" else None


# ------------------------------------------------------------------ the inventory


class Inventory:
    """The guests of one inventory, read through its store's queries. record() and remove() change the store:
    inside `locked()` in its transaction (committed when the block ends well); a store in memory
    (`Inventory(path, guests)`, or a YAML inventory not migrated yet) changes only in memory until save().
    `with load() as inv:` closes its store at the end of the block."""

    def __init__(self, path: str | os.PathLike[str], guests: Iterable[GuestRecord] = (), store: Store | None = None):
        self.path = Path(path)
        self.store = store if store is not None else Store.memory(guests)
        self.changed = False

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Inventory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def guests(self) -> list[GuestRecord]:
        """Every guest, sorted (reads the whole store: for listing and exporting, not for checks)."""
        return self.store.all()

    def count(self) -> int:
        """How many guests (one query; not __len__, so an empty inventory is not falsy)."""
        return self.store.count()

    def get(self, name: str) -> GuestRecord | None:
        return self.store.get(name)

    def at(self, where: str) -> GuestRecord | None:
        return self.store.at(normalize_where(where))

    def known(self, others: Iterable[GuestRecord] = ()) -> Known:
        """What a new identity is checked against: this inventory's guests (queried) and `others`."""
        return Known(self.store, list(others))

    def record(self, guest: GuestRecord, today: str | None = None) -> GuestRecord:
        """Add `guest`, replacing every record with its name or its `where`; stamped with today's date."""
        stamped = dataclasses.replace(guest, updated=today or datetime.date.today().isoformat())
        self.store.delete(name=stamped.name, where=stamped.where)
        self.store.add([stamped])
        self.changed = True
        return stamped

    def remove(self, name: str | None = None, where: str | None = None) -> list[GuestRecord]:
        """Drop the records with this name or this `where`; returns them."""
        gone = self.store.delete(name=name, where=normalize_where(where) if where else None)
        self.changed = self.changed or bool(gone)
        return gone


@dataclass
class Known:
    """Every guest a new identity is checked against: the inventory's, read by index for each candidate, and a
    few others (the guest configs on this host, a clone's source). conflicts() over near(candidate) finds what it
    would find over all of them."""

    store: Store
    others: list[GuestRecord]

    def near(self, candidate: GuestRecord) -> list[GuestRecord]:
        return [*self.store.near(candidate), *self.others]

    def macs(self) -> TakenMacs:
        """The MACs in use, for allocate_macs: the others' in a set, the inventory's asked per draw."""
        return TakenMacs(used_macs(self.others), self.store.mac_taken, self.store.macs_between)


def _leftover(legacy: Path | None, db: Path) -> None:
    if legacy is not None and os.path.lexists(legacy):
        log.warning("%s: not read: the inventory is %s (the YAML file was migrated before); `imgbuild inventory "
                    "import %s` adds its entries", legacy, db, legacy)


def load(path: str | os.PathLike[str] | None = None) -> Inventory:
    """The inventory for reading, in a `with` block that closes it (writes nothing, creates nothing): the store at
    db_path(path); while there is none, the YAML file it will be migrated from, read into memory; else an empty
    inventory."""
    db, legacy = db_path(path), yaml_path(path)
    store = Store.open(db, write=False)
    if store is not None:
        if store.path is not None:
            _leftover(legacy, db)
        return Inventory(db, store=store)
    if legacy is not None and os.path.lexists(legacy):
        return Inventory(legacy, read_yaml(legacy))
    return Inventory(db)


@contextlib.contextmanager
def _open(path: str | os.PathLike[str] | None, timeout: float | None) -> Iterator[Store]:
    """The store for writing, created (and the YAML inventory migrated into it) on first use."""
    db, legacy = db_path(path), yaml_path(path)
    migrated: list[list[GuestRecord]] = []       # the YAML file's guests, when this run migrated it

    def initial() -> list[GuestRecord]:
        if legacy is None or not os.path.lexists(legacy):
            return []
        log.info("inventory: moving %s into %s (once; a large file takes a while: about 1 s per 1000 guests)",
                 legacy, db)
        migrated.append(read_yaml(legacy))
        return migrated[0]

    store = Store.open(db, write=True, timeout=timeout, initial=initial)
    assert store is not None
    try:
        if migrated and legacy is not None:
            kept = legacy.with_name(legacy.name + ".migrated")
            with contextlib.suppress(FileNotFoundError):
                os.rename(legacy, kept)
            log.info("inventory: %d guests moved from %s into %s (the YAML file kept as %s)", len(migrated[0]),
                     legacy, db, kept)
        else:
            _leftover(legacy, db)
        yield store
    finally:
        store.close()


@contextlib.contextmanager
def locked(path: str | os.PathLike[str] | None = None, timeout: float | None = LOCK_TIMEOUT) -> Iterator[Inventory]:
    """`with locked() as inv:` the inventory in one write transaction (BEGIN IMMEDIATE): what the block records or
    removes is committed when it ends without an exception, rolled back otherwise. Another process's `locked()`
    waits meanwhile (at most `timeout` seconds; None: as long as it takes), so what it reads afterwards includes
    this one's records."""
    with _open(path, timeout) as store, store.transaction():
        yield Inventory(store.path or db_path(path), store=store)


def save(inv: Inventory) -> None:
    """Write `inv`'s guests as the whole inventory at inv.path (its store's file: db_path of it), in one
    transaction. For an Inventory made in memory; a read-modify-write belongs inside `locked()`."""
    guests = inv.guests
    with _open(inv.path, LOCK_TIMEOUT) as store, store.transaction():
        store.clear()
        store.add(guests)
    inv.changed = False


# ------------------------------------------------------------------ conflicts


Kind = Literal["mac", "ip", "hostname"]
_KIND_TEXT = {"mac": "MAC", "ip": "IP address", "hostname": "host name"}


@dataclass(frozen=True)
class Conflict:
    """The candidate would take `value`, which `holder` (at `holder_where`) already has (as `held_as`: the other
    guest's spelling, e.g. the FQDN of a short name)."""

    kind: Kind
    value: str
    held_as: str
    holder: str
    holder_where: str | None
    candidate: str
    candidate_where: str | None
    holder_gone: str | None = None      # the holder's path, which no longer exists: a stale inventory entry

    def __str__(self) -> str:
        def who(name: str, where: str | None) -> str:
            return f"{name} ({where})" if where else name
        held = f" (as {self.held_as})" if self.held_as.lower() != self.value.lower() else ""
        holder = (f"{self.holder} (stale: {self.holder_gone} no longer exists)"
                  if self.holder_gone else who(self.holder, self.holder_where))
        return (f"{_KIND_TEXT[self.kind]} {self.value} of {who(self.candidate, self.candidate_where)} is already "
                f"taken by {holder}{held}")


LOCAL_KINDS = frozenset({"lxc", "xen", "vz", "image", "rootfs", "output"})


def gone(where: str | None) -> str | None:
    """The path of a guest at `where` (`kind:/path` on this host) when nothing is there any more: the guest was
    deleted but its inventory entry stayed. None when the path exists, or `where` is no path on this host (a
    remote host's guest, `clone-of:...`)."""
    if not where:
        return None
    kind, sep, path = where.partition(":")
    if not sep or kind not in LOCAL_KINDS or not path.startswith("/"):
        return None
    return None if os.path.lexists(path) else path


def _host_key(name: str) -> str:
    return name.strip().rstrip(".").lower()


def same_host(a: str, b: str) -> bool:
    """Whether two host names name one host: equal ignoring case and a final dot, or one is a short name and the
    other an FQDN starting with it (www and www.example.org). Two FQDNs in different domains are different
    hosts; `localhost` names no host in particular and matches nothing."""
    a, b = _host_key(a), _host_key(b)
    if not a or not b or "localhost" in (a.split(".")[0], b.split(".")[0]):
        return False
    if a == b:
        return True
    if "." not in a:
        return a == b.split(".")[0]
    if "." not in b:
        return b == a.split(".")[0]
    return False


def _counts(ip: str) -> bool:
    """Whether an address identifies a guest on the network (0.0.0.0, ::, loopback do not)."""
    a = ipaddress.ip_address(ip)
    return not (a.is_unspecified or a.is_loopback)


def _clashes(candidate: GuestRecord, other: GuestRecord) -> Iterator[tuple[Kind, str, str]]:
    for mac in candidate.macs:
        if mac in other.macs:
            yield "mac", mac, mac
    for ip in candidate.ips:
        if _counts(ip) and any(ipaddress.ip_address(ip) == ipaddress.ip_address(o) for o in other.ips):
            yield "ip", ip, ip
    if candidate.hostname and other.hostname and same_host(candidate.hostname, other.hostname):
        yield "hostname", candidate.hostname, other.hostname


def conflicts(candidate: GuestRecord, known: Iterable[GuestRecord], self_where: str | None = None,
              ) -> list[Conflict]:
    """Each MAC (any case), IP address (compared as addresses) and host name (any case; a short name and an FQDN
    starting with it count as one) of `candidate` that another known guest already has. The guest itself is left
    out: the records at `self_where` (None: at candidate.where, when it has one)."""
    me = normalize_where(self_where) if self_where else candidate.where
    out: list[Conflict] = []
    seen: set[tuple[str, str, str, str | None]] = set()
    for other in known:
        if me and other.where == me:
            continue
        for kind, value, held_as in _clashes(candidate, other):
            key = (kind, value.lower(), other.name, other.where)
            if key not in seen:
                seen.add(key)
                out.append(Conflict(kind, value, held_as, other.name, other.where, candidate.name,
                                    candidate.where, gone(other.where)))
    return out


def conflict_error(found: Sequence[Conflict], inventory_file: str | os.PathLike[str] | None = None,
                   origins: Mapping[str, str] | None = None) -> InputError:
    """One error for the CLI naming every conflict, both guests in each (a holder that no longer exists marked
    stale), with a hint for each kind: the option that gives the copy its own value (`--ip OLD=NEW`: OLD from
    `origins`, the guest's own value a renamed one came from), and the command that removes a stale entry."""
    lines = "\n".join(f"  {c}" for c in found)
    head = "1 conflict" if len(found) == 1 else f"{len(found)} conflicts"
    return InputError(f"{head} with guests imgbuild knows of:\n{lines}", conflict_hint(found, inventory_file, origins))


def conflict_hint(found: Sequence[Conflict], inventory_file: str | os.PathLike[str] | None = None,
                  origins: Mapping[str, str] | None = None) -> str:
    origins = origins or {}
    live = [c for c in found if not c.holder_gone]
    first = {kind: next((c for c in live if c.kind == kind), None) for kind in ("ip", "mac", "hostname")}
    out = []
    if first["ip"]:
        out.append(f"give the copy an address of its own: --ip {origins.get(first['ip'].value, first['ip'].value)}=NEW")
    if first["mac"]:
        out.append(f"a MAC of its own: --mac {origins.get(first['mac'].value, first['mac'].value)}=auto (imgbuild "
                   "allocates a free one; two NICs with one MAC on a LAN take both guests off the network)")
    if first["hostname"]:
        out.append("a host name of its own: --hostname NEW")
    stale = sorted({c.holder for c in found if c.holder_gone})
    if stale:
        opt = f" --inventory {inventory_file}" if inventory_file and db_path(inventory_file) != db_path() else ""
        out.append(f"{', '.join(stale)} {'is a guest' if len(stale) == 1 else 'are guests'} that no longer "
                   f"exist{'s' if len(stale) == 1 else ''}: `imgbuild inventory forget {' '.join(stale)}{opt}` "
                   f"removes {'its entry' if len(stale) == 1 else 'their entries'}; `imgbuild inventory prune{opt}` "
                   "removes every entry whose guest is gone")
    return "; ".join(out)


def refuse_taken(candidate: GuestRecord, known: Iterable[GuestRecord], force: bool = False,
                 inventory_file: str | os.PathLike[str] | None = None, warn: bool = True,
                 origins: Mapping[str, str] | None = None) -> list[Conflict]:
    """The duplicate guard every path that makes or changes a guest goes through (clone, reidentify, migrate
    xen's copy, installing an output): InputError naming each MAC, IP and host name of `candidate` another known
    guest has (stale inventory entries marked), unless `force` - then each is logged as a warning (`warn`) and
    returned. `known`: the inventory's guests and discover()'s, checked inside locked() when the candidate is then
    recorded. `origins`: new value -> the guest's own value it replaces (for the hint's --ip OLD=NEW)."""
    found = conflicts(candidate, known, self_where=candidate.where)
    if found and not force:
        raise conflict_error(found, inventory_file, origins)
    for c in found if warn else ():
        log.warning("--force: %s", c)
    return found
