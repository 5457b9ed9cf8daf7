"""The guest inventory: which guests exist, which MACs, IP addresses and host names they hold, so that no copy takes
an identity another guest has (a copied guest that keeps its original's MAC puts two NICs with one address on the
LAN, and both guests, with whatever shares the segment, lose their network).

- **The file** (`load`, `save`, `locked`): YAML, `guests: [{name, hostname, ips, macs, where, updated}]`, at the
  path given, else `$IMGBUILD_INVENTORY`, else /var/lib/imgbuild/inventory.yml (root) or
  ~/.local/share/imgbuild/inventory.yml; written atomically, guests sorted, keys in a fixed order. Every
  read-modify-write goes through `locked()`, an exclusive flock on a side file (`inventory.yml.lock`: the
  inventory is replaced by rename at every save), so two clones started at once cannot take the same MAC.
- **Checks** (`conflicts`, `conflict_error`, `refuse_taken`): what a candidate would take that another guest has;
  an entry whose guest is gone (its `where` path no longer exists) is named as stale.
- Re-exported, so `inventory.X` is the one name for callers: records (inventory_records), discovery of the guests
  on this host (inventory_scan) and MAC allocation (inventory_macs).

Typical use, a clone:

    with locked() as inv:
        known = merge(inv.guests, discover())
        new = GuestRecord("www2", "www2.example.org", ("10.0.3.12",), (allocate_mac(known),), "xen:/etc/xen/www2.cfg")
        if found := conflicts(new, known, new.where):
            raise conflict_error(found)
        inv.record(new)          # saved when the block ends without an exception
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import ipaddress
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping, Sequence

import yaml

from builder.core.errors import BuilderError, InputError, RecipeError
from builder.core.outputs import write_atomic
from builder.core.untrusted import StrictLoader, load_yaml, read_file
from builder.identity.inventory_macs import (
    EXHAUSTIVE,
    MACHINE_ID,
    XEN_OUI,
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

__all__ = [
    # the file and the checks (here)
    "ENV_VAR", "ROOT_PATH", "USER_PATH", "LOCK_TIMEOUT", "FIELDS", "HEADER", "LOAD_HINT", "inventory_path",
    "lock_path", "Inventory", "parse", "dumps", "load", "save", "locked", "Kind", "Conflict", "LOCAL_KINDS", "gone",
    "same_host", "conflicts", "conflict_error", "conflict_hint", "refuse_taken",
    # records
    "GuestRecord", "merge", "normalize_ip", "normalize_mac", "normalize_where", "sort_key",
    # discovery
    "DEFAULT_LXCPATH", "DEFAULT_VZ_DIR", "DEFAULT_XEN_DIR", "MAX_CONFIG_SIZE", "IdentityLike", "Reader", "Readers",
    "ScannedIdentity", "discover", "read_lxc_config", "read_openvz_config", "read_xen_config", "scan_lxc",
    "scan_openvz", "scan_xen",
    # allocation
    "EXHAUSTIVE", "MACHINE_ID", "XEN_OUI", "allocate_mac", "allocate_macs", "host_key", "mac_rng", "used_macs",
]

log = logging.getLogger("imgbuild")

ENV_VAR = "IMGBUILD_INVENTORY"
ROOT_PATH = Path("/var/lib/imgbuild/inventory.yml")
USER_PATH = Path(".local/share/imgbuild/inventory.yml")   # under the user's home
LOCK_TIMEOUT = 60.0
FIELDS = ("name", "hostname", "ips", "macs", "where", "updated")
HEADER = ("# imgbuild's guest inventory: the host names, IP addresses and MACs of the guests imgbuild made, cloned\n"
          "# or moved, so that no copy takes an identity another guest has. imgbuild rewrites this file; keep\n"
          "# edits to whole entries.\n")
LOAD_HINT = ("the inventory is YAML: guests: [{name, hostname, ips: [...], macs: [...], where, updated}]; fix that "
             "line (write MACs in quotes), or point $IMGBUILD_INVENTORY at another file")


# ------------------------------------------------------------------ the file


def inventory_path(path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None,
                   euid: int | None = None, home: str | os.PathLike[str] | None = None) -> Path:
    """Where the inventory is: `path`, else $IMGBUILD_INVENTORY, else root's or the user's default."""
    if path:
        return Path(path)
    env = os.environ if environ is None else environ
    if env.get(ENV_VAR):
        return Path(env[ENV_VAR])
    if (os.geteuid() if euid is None else euid) == 0:
        return ROOT_PATH
    return Path(home if home is not None else Path.home()) / USER_PATH


def lock_path(path: Path) -> Path:
    """The side file `locked()` takes its flock on."""
    return path.with_name(path.name + ".lock")


@dataclass
class Inventory:
    """The guests of one inventory file. record() and remove() change it in memory; save() (or leaving
    `locked()`) writes it."""

    path: Path
    guests: list[GuestRecord] = field(default_factory=list)
    changed: bool = False
    held: bool = field(default=False, repr=False, compare=False)    # inside locked(): the lock is ours

    def get(self, name: str) -> GuestRecord | None:
        return next((g for g in self.guests if g.name == name), None)

    def at(self, where: str) -> GuestRecord | None:
        w = normalize_where(where)
        return next((g for g in self.guests if g.where == w), None)

    def record(self, guest: GuestRecord, today: str | None = None) -> GuestRecord:
        """Add `guest`, replacing every record with its name or its `where`; stamped with today's date."""
        stamped = dataclasses.replace(guest, updated=today or datetime.date.today().isoformat())
        self.guests = sorted([g for g in self.guests if g.name != guest.name
                              and not (guest.where and g.where == guest.where)] + [stamped], key=sort_key)
        self.changed = True
        return stamped

    def remove(self, name: str | None = None, where: str | None = None) -> list[GuestRecord]:
        """Drop the records with this name or this `where`; returns them."""
        w = normalize_where(where) if where else None
        gone = [g for g in self.guests if (name is not None and g.name == name) or (w and g.where == w)]
        if gone:
            self.guests = [g for g in self.guests if g not in gone]
            self.changed = True
        return gone


class _Map(dict):
    line: int = 0
    key_lines: dict[Any, int]


class _Seq(list):
    line: int = 0
    item_lines: list[int]


class _Loader(StrictLoader):
    """The strict loader (no duplicate keys, bounded aliases) whose mappings and lists remember their lines (for
    error messages)."""


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> Iterator[_Map]:
    data = _Map()
    data.line = node.start_mark.line + 1
    data.key_lines = {k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}
    yield data
    data.update(loader.construct_mapping(node))


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> Iterator[_Seq]:
    data = _Seq()
    data.line = node.start_mark.line + 1
    data.item_lines = [n.start_mark.line + 1 for n in node.value]
    yield data
    data.extend(loader.construct_sequence(node))


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def _bad(source: str, line: int, message: str) -> InputError:
    return InputError(f"{source}:{line}: {message}" if line else f"{source}: {message}", LOAD_HINT)


def _strings(value: Any, key: str, source: str, line: int, what: str,
             normalize: Callable[[object], str | None]) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _bad(source, line, f"{key}: expected a list of addresses, not {value!r}")
    lines = getattr(value, "item_lines", [])
    out = []
    for j, v in enumerate(value):
        at = lines[j] if j < len(lines) else line
        if not isinstance(v, str) or normalize(v) is None:
            quote = " (YAML read it as a number: write it in quotes)" if isinstance(v, (int, float)) else ""
            raise _bad(source, at, f"{key}[{j}]: {v!r} is not {what}{quote}")
        out.append(v)
    return tuple(out)


def _guest(item: Any, source: str, line: int) -> GuestRecord:
    if not isinstance(item, dict):
        raise _bad(source, line, f"a guest is a mapping (name, hostname, ips, macs, where, updated), not {item!r}")
    keys = getattr(item, "key_lines", {})
    at = lambda k: keys.get(k, line)
    for k in item:
        if k not in FIELDS:
            raise _bad(source, at(k), f"unknown key {k!r} (a guest has {', '.join(FIELDS)})")
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _bad(source, at("name"), f"a guest needs a name (a string), not {name!r}")
    hostname = item.get("hostname")
    if hostname is not None and (not isinstance(hostname, str) or not hostname.strip()):
        raise _bad(source, at("hostname"), f"hostname: {hostname!r} is not a host name")
    where = item.get("where")
    if where is not None and (not isinstance(where, str) or not where.strip()):
        raise _bad(source, at("where"), f"where: {where!r} is not kind:/path")
    updated = item.get("updated")
    if isinstance(updated, (datetime.date, datetime.datetime)):
        updated = updated.isoformat()
    elif updated is not None and not isinstance(updated, str):
        raise _bad(source, at("updated"), f"updated: {updated!r} is not an ISO date")
    ips = _strings(item.get("ips"), "ips", source, at("ips"), "an IP address", normalize_ip)
    macs = _strings(item.get("macs"), "macs", source, at("macs"), "a MAC address", normalize_mac)
    return GuestRecord(name, hostname, ips, macs, where, updated)


def parse(text: str, source: str) -> list[GuestRecord]:
    """The guests of an inventory file's text; InputError naming `source` and the line for anything wrong."""
    try:
        data = load_yaml(text, source, what="an imgbuild inventory", loader=_Loader, hint=LOAD_HINT)
    except RecipeError as e:        # the strict reader's "FILE: line L, column C: YAML ...: what", as FILE:L: ...
        p = e.problems[0]
        line = re.match(r"line (\d+)", p.path)
        what = re.sub(r"^YAML(?: syntax)?:? ", "", p.message)
        raise _bad(source, int(line.group(1)) if line else 0, f"not valid YAML: {what}") from None
    if data is None:
        return []
    if not isinstance(data, dict):
        raise _bad(source, 1, "expected a mapping with a `guests:` list")
    keys = getattr(data, "key_lines", {})
    for k in data:
        if k != "guests":
            raise _bad(source, keys.get(k, 1), f"unknown key {k!r} (the inventory has only `guests:`)")
    items = data.get("guests")
    if items is None:
        return []
    if not isinstance(items, list):
        raise _bad(source, keys.get("guests", 1), "guests: expected a list of guests")
    lines = getattr(items, "item_lines", [])
    guests: list[GuestRecord] = []
    first_line: dict[str, int] = {}
    for i, item in enumerate(items):
        line = getattr(item, "line", 0) or (lines[i] if i < len(lines) else 0)
        g = _guest(item, source, line)
        if g.name in first_line:
            raise _bad(source, line, f"guest {g.name!r} is listed twice (also on line {first_line[g.name]})")
        first_line[g.name] = line
        guests.append(g)
    return sorted(guests, key=sort_key)


def dumps(guests: Iterable[GuestRecord]) -> str:
    """The inventory file's text: a header, then the guests sorted by name, keys in FIELDS order."""
    data = {"guests": [g.to_dict() for g in sorted(guests, key=sort_key)]}
    return HEADER + yaml.safe_dump(data, sort_keys=False, default_flow_style=None, allow_unicode=True, width=1000)


def load(path: str | os.PathLike[str] | None = None) -> Inventory:
    """The inventory at inventory_path(path); a missing file is an empty inventory."""
    p = inventory_path(path)
    if not os.path.lexists(p):
        return Inventory(p)
    # a regular file of bounded size, read without blocking (a fifo or /dev/zero there is bad input, not a hang)
    data = read_file(p, str(p), what="an imgbuild inventory",
                     hint="point $IMGBUILD_INVENTORY (or --inventory) at the inventory file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{p}: not a text file, so not an imgbuild inventory", LOAD_HINT) from None
    return Inventory(p, parse(text, str(p)))


def save(inv: Inventory) -> None:
    """Write the inventory atomically (a reader sees the old file or the new one, never half of one). Outside
    `locked()` the lock is taken for the write itself; a read-modify-write belongs inside `locked()`."""
    text = dumps(inv.guests)
    if inv.held:
        _write(inv.path, text)
    else:
        with _lock(inv.path, LOCK_TIMEOUT):
            _write(inv.path, text)
    inv.changed = False


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text, mode=0o644)
    except OSError as e:
        raise BuilderError(f"{path}: cannot write the inventory: {e.strerror}",
                           "run as root, or set $IMGBUILD_INVENTORY to a file you may write") from None


@contextlib.contextmanager
def _lock(path: Path, timeout: float | None) -> Iterator[None]:
    """An exclusive flock on lock_path(path), waiting at most `timeout` seconds (None: as long as it takes).
    The kernel drops it when the process ends, so a left-over lock file never blocks anyone."""
    lp = lock_path(path)
    try:
        lp.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lp, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise BuilderError(f"{lp}: cannot open the inventory's lock file: {e.strerror}",
                           "run as root, or set $IMGBUILD_INVENTORY to a file you may write") from None
    try:
        _acquire(fd, lp, timeout)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)     # closing the last descriptor releases the flock


def _acquire(fd: int, lp: Path, timeout: float | None) -> None:
    if timeout is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                raise BuilderError(f"{lp}: the inventory is locked by another imgbuild (pid {holder}) and was not "
                                   f"released within {timeout:g} s",
                                   "wait for that one to finish, then retry") from None
            time.sleep(0.02)


@contextlib.contextmanager
def locked(path: str | os.PathLike[str] | None = None, timeout: float | None = LOCK_TIMEOUT) -> Iterator[Inventory]:
    """`with locked() as inv:` load the inventory under its lock; when the block ends without an exception and
    something was recorded or removed, save it before the lock is released. Another process's `locked()` waits
    meanwhile, so what it loads afterwards includes this one's records."""
    p = inventory_path(path)
    with _lock(p, timeout):
        inv = load(p)
        inv.held = True
        try:
            yield inv
            if inv.changed:
                save(inv)
        finally:
            inv.held = False


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
        opt = f" --inventory {inventory_file}" if inventory_file and Path(inventory_file) != inventory_path() else ""
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
