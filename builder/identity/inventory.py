"""The guest inventory: which guests exist, which MACs, IP addresses and host names they hold, and fresh MACs that
none of them has.

A copied guest that keeps its original's MAC puts two NICs with one address on the LAN: the switches' tables flap
between the two ports and both guests (and whatever shares the segment) lose their network, which looks like a
loop and is hard to find. Before a clone or a move takes an identity, it is checked against every guest imgbuild
knows of; a new MAC is drawn so that it clashes with none of them.

- **Inventory** (`load`, `save`, `locked`): a YAML file, `guests: [{name, hostname, ips, macs, where, updated}]`,
  at the path given, else `$IMGBUILD_INVENTORY`, else /var/lib/imgbuild/inventory.yml (root) or
  ~/.local/share/imgbuild/inventory.yml. It is written atomically, guests sorted, keys in a fixed order. Every
  read-modify-write goes through `locked()`, which holds an exclusive flock on a side file
  (`inventory.yml.lock`: the inventory itself is replaced by rename at every save, so a lock on it would lock a
  file that is gone), so two clones started at once cannot both take the same MAC.
- **Discovery** (`discover`, `scan_lxc`, `scan_xen`, `scan_openvz`): the guests whose configs are on this host
  (LXC containers, Xen domain configs, OpenVZ containers). Unreadable or odd files are skipped with a debug log.
  The config readers are injectable (`Readers`): anything that takes the config's text and returns an object
  with `name`, `hostnames`, `ips` and `macs` will do.
- **Checks** (`conflicts`, `conflict_error`, `refuse_taken`): the MACs, IPs and host names a candidate would take
  that another guest already has; `refuse_taken` is the guard every path that makes a guest calls.
- **Allocation** (`allocate_mac`, `allocate_macs`): fresh unicast MACs in Xen's OUI (00:16:3e, the lower half
  of the fourth octet, where Xen's own tools draw theirs) or locally administered ones. Drawn from `mac_rng(key)`,
  the draws are the same on every run on this host for one guest (so a dry run shows the MACs the run will
  take), and differ between guests and between hosts; a MAC another guest has is skipped for the next draw.
- **Stale entries**: a conflict with an inventory entry whose guest is gone (its `where` path no longer exists)
  says so, and that the entry is to be removed from the inventory.

Typical use, a clone:

    with locked() as inv:
        known = merge(inv.guests, discover())
        mac = allocate_mac(known)
        new = GuestRecord("www2", "www2.example.org", ("10.0.3.12",), (mac,), "xen:/etc/xen/www2.cfg")
        found = conflicts(new, known, new.where)
        if found:
            raise conflict_error(found)
        inv.record(new)          # saved when the block ends without an exception
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import hashlib
import hmac
import ipaddress
import logging
import os
import posixpath
import random
import re
import shlex
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping, Protocol, Sequence

import yaml

from builder.guestconf import xen as xenconf
from builder.core.checks import mac_norm
from builder.core.errors import BuilderError, InputError, RecipeError
from builder.core.outputs import write_atomic
from builder.core.untrusted import StrictLoader, load_yaml, read_file

log = logging.getLogger("imgbuild")

ENV_VAR = "IMGBUILD_INVENTORY"
ROOT_PATH = Path("/var/lib/imgbuild/inventory.yml")
USER_PATH = Path(".local/share/imgbuild/inventory.yml")   # under the user's home
DEFAULT_LXCPATH = "/var/lib/lxc"
DEFAULT_XEN_DIR = "/etc/xen"
DEFAULT_VZ_DIR = "/etc/vz/conf"
XEN_OUI = "00:16:3e"
LOCK_TIMEOUT = 60.0
MAX_CONFIG_SIZE = 1 << 20        # a guest config is a few KB; anything this large is not one
FIELDS = ("name", "hostname", "ips", "macs", "where", "updated")
HEADER = ("# imgbuild's guest inventory: the host names, IP addresses and MACs of the guests imgbuild made, cloned\n"
          "# or moved, so that no copy takes an identity another guest has. imgbuild rewrites this file; keep\n"
          "# edits to whole entries.\n")
LOAD_HINT = ("the inventory is YAML: guests: [{name, hostname, ips: [...], macs: [...], where, updated}]; fix that "
             "line (write MACs in quotes), or point $IMGBUILD_INVENTORY at another file")


# ------------------------------------------------------------------ values


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


def _sort_key(g: GuestRecord) -> tuple[str, str, str]:
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
    return sorted([*by_where.values(), *loose], key=_sort_key)


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
                              and not (guest.where and g.where == guest.where)] + [stamped], key=_sort_key)
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
    at = lambda k: keys.get(k, line)  # noqa: E731
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
    return sorted(guests, key=_sort_key)


def dumps(guests: Iterable[GuestRecord]) -> str:
    """The inventory file's text: a header, then the guests sorted by name, keys in FIELDS order."""
    data = {"guests": [g.to_dict() for g in sorted(guests, key=_sort_key)]}
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
                                   f"released within {timeout:g} s", "wait for that one to finish, then retry")
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


# ------------------------------------------------------------------ discovery


class IdentityLike(Protocol):
    """What a config reader returns (builder.identity.formats' Identity has this shape; so has ScannedIdentity)."""

    @property
    def name(self) -> str | None: ...

    @property
    def hostnames(self) -> Sequence[str]: ...

    @property
    def ips(self) -> Sequence[object]: ...

    @property
    def macs(self) -> Sequence[str]: ...


Reader = Callable[[str], IdentityLike]


@dataclass(frozen=True)
class ScannedIdentity:
    """What this module's own readers find in a config (raw values; records normalize them)."""

    name: str | None = None
    hostnames: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    macs: tuple[str, ...] = ()


_LXC_MAC = re.compile(r"lxc\.net\.\d+\.hwaddr|lxc\.network(\.\d+)?\.hwaddr")
_LXC_IP = re.compile(r"lxc\.net\.\d+\.ipv[46]\.address|lxc\.network(\.\d+)?\.ipv[46]")


def read_lxc_config(text: str) -> ScannedIdentity:
    """An LXC container config (modern `lxc.net.N.*`/`lxc.uts.name` or legacy `lxc.network.*`/`lxc.utsname`): the
    host name, each NIC's hwaddr and ipv4/ipv6 addresses. An empty `lxc.net =` (or `lxc.network =`) drops the
    NICs before it, as LXC does."""
    uts: str | None = None
    macs: list[str] = []
    ips: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = (s.strip() for s in line.partition("="))
        if key in ("lxc.uts.name", "lxc.utsname"):
            uts = value or None
        elif key in ("lxc.net", "lxc.network") and not value:
            macs, ips = [], []
        elif _LXC_MAC.fullmatch(key) and value:
            macs.append(value)
        elif _LXC_IP.fullmatch(key) and value:
            ips.append(value.split()[0])        # `10.0.3.5/24 10.0.3.255`: address, then broadcast
    return ScannedIdentity(uts, (uts,) if uts else (), tuple(ips), tuple(macs))


def read_xen_config(text: str) -> ScannedIdentity:
    """A Xen domain config, xm (Python, Xen 3) or xl (Xen 4) syntax, read with builder.guestconf.xen (never run): the
    domain's name, the `hostname`/`ip` kernel settings of xm configs, and each vif's mac= and ip= (several
    addresses in one ip= are separated by spaces)."""
    cfg = xenconf.read_xm(text)
    name = cfg.get("name")
    hostname = cfg.get("hostname")
    vifs = cfg.get("vif") or []
    if isinstance(vifs, str):
        vifs = [vifs]
    macs: list[str] = []
    ips: list[str] = []
    for spec in vifs if isinstance(vifs, list) else []:
        if not isinstance(spec, str):
            continue
        for k, v in xenconf.parse_vif(spec):
            if k == "mac" and v:
                macs.append(v)
            elif k == "ip" and v:
                ips += v.split()
    top_ip = cfg.get("ip")
    if isinstance(top_ip, str) and top_ip.strip():
        ips.append(top_ip.strip())
    return ScannedIdentity(name if isinstance(name, str) and name.strip() else None,
                           (hostname,) if isinstance(hostname, str) and hostname.strip() else (),
                           tuple(ips), tuple(macs))


def _shell_values(text: str) -> dict[str, str]:
    """KEY="value" lines of a shell-style config (vzctl's), the last one of a key winning."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"^\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if not m:
            continue
        try:
            out[m.group(1)] = " ".join(shlex.split(m.group(2), comments=True))
        except ValueError:
            continue        # an unclosed quote: vzctl would not read it either
    return out


def read_openvz_config(text: str) -> ScannedIdentity:
    """An OpenVZ CTID.conf: NAME (vzctl set --name), HOSTNAME, IP_ADDRESS (venet) and the mac= of each NETIF
    device (veth; the host side's host_mac is the host's, not the guest's)."""
    v = _shell_values(text)
    macs = [val for dev in v.get("NETIF", "").split(";") for k, val in xenconf.parse_vif(dev)
            if k == "mac" and val]
    hostname = v.get("HOSTNAME") or None
    return ScannedIdentity(v.get("NAME") or None, (hostname,) if hostname else (),
                           tuple(v.get("IP_ADDRESS", "").split()), tuple(macs))


@dataclass(frozen=True)
class Readers:
    """The config readers discovery uses; pass builder.identity.formats' to use those instead:
    `Readers(lxc=formats.read_lxc, xen=formats.read_xen, openvz=formats.read_openvz)`."""

    lxc: Reader = read_lxc_config
    xen: Reader = read_xen_config
    openvz: Reader = read_openvz_config


def _read_config(path: Path) -> str | None:
    """The text of a config file, or None (debug-logged) if it is not a readable, smallish text file."""
    try:
        if not path.is_file():
            return None
        if path.stat().st_size > MAX_CONFIG_SIZE:
            log.debug("inventory: %s: skipped, larger than %d bytes", path, MAX_CONFIG_SIZE)
            return None
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        log.debug("inventory: %s: skipped, not readable: %s", path, e)
        return None


def _identity(reader: Reader, text: str, path: Path) -> IdentityLike | None:
    try:
        return reader(text)
    except Exception as e:  # noqa: BLE001 (readers are pluggable; one odd file must not stop the scan)
        log.debug("inventory: %s: skipped, the reader failed: %s: %s", path, type(e).__name__, e)
        return None


def _values(items: Iterable[object], normalize: Callable[[object], str | None], path: Path, what: str) -> list[str]:
    out = []
    for item in items or ():
        n = normalize(item)
        if n is None:
            log.debug("inventory: %s: %r is not a fixed %s; left out", path, item, what)
        else:
            out.append(n)
    return out


def _record(ident: IdentityLike, path: Path, name: str, hostname: str | None, where: str) -> GuestRecord | None:
    try:
        return GuestRecord(name, hostname, tuple(_values(ident.ips, normalize_ip, path, "IP address")),
                           tuple(_values(ident.macs, normalize_mac, path, "MAC address")), where)
    except (ValueError, TypeError, AttributeError) as e:
        log.debug("inventory: %s: skipped: %s", path, e)
        return None


def _first(items: Iterable[object] | None) -> str | None:
    return next((str(x).strip() for x in items or () if x and str(x).strip()), None)


def _entries(directory: Path) -> list[Path]:
    """The entries of a scanned directory (absolute, the directory's own symlinks resolved), hidden ones left
    out."""
    try:
        return sorted(p for p in directory.resolve().iterdir() if not p.name.startswith("."))
    except OSError as e:
        log.debug("inventory: %s: not scanned: %s", directory, e)
        return []


def scan_lxc(lxcpath: str | os.PathLike[str] = DEFAULT_LXCPATH, reader: Reader = read_lxc_config,
             ) -> list[GuestRecord]:
    """The containers under an lxcpath (each DIR/config): named by their directory (the name lxc-start -n
    takes); host name lxc.uts.name, else the directory's name (LXC's own default)."""
    out = []
    for cdir in _entries(Path(lxcpath)):
        cfg = cdir / "config"
        text = _read_config(cfg)
        ident = _identity(reader, text, cfg) if text is not None else None
        if ident is None:
            continue
        hostname = _first(getattr(ident, "hostnames", ())) or _first([getattr(ident, "name", None)]) or cdir.name
        if (g := _record(ident, cfg, cdir.name, hostname, f"lxc:{cdir}")) is not None:
            out.append(g)
    return out


_XEN_DOMAIN_KEY = re.compile(r"^\s*(memory|maxmem|vcpus|vif|disk|kernel|bootloader|builder|type)\s*=", re.M)


def _looks_like_domain(text: str) -> bool:
    """A file without extension in /etc/xen is taken for a domain config when it sets name= and something only a
    domain has (memory, vif, disk, kernel ...): cpupool definitions set name= too."""
    return bool(re.search(r"^\s*name\s*=", text, re.M)) and bool(_XEN_DOMAIN_KEY.search(text))


def scan_xen(xen_dir: str | os.PathLike[str] = DEFAULT_XEN_DIR, reader: Reader = read_xen_config,
             ) -> list[GuestRecord]:
    """The domain configs in a Xen config directory: every *.cfg, and files without extension that look like
    domain configs (Xen 3 hosts kept `/etc/xen/www`); examples (xlexample.hvm), xl.conf, backups (`www~`) and the
    auto/ and scripts/ directories are not. Named by name=, else the file's name; host name from an xm config's
    `hostname` kernel setting only (a domain's name need not be its host name)."""
    out = []
    for path in _entries(Path(xen_dir)):
        if path.name.endswith("~") or not (path.suffix == ".cfg" or "." not in path.name):
            continue
        text = _read_config(path)
        if text is None or (path.suffix != ".cfg" and not _looks_like_domain(text)):
            continue
        ident = _identity(reader, text, path)
        if ident is None:
            continue
        name = _first([getattr(ident, "name", None)]) or (path.stem if path.suffix == ".cfg" else path.name)
        if (g := _record(ident, path, name, _first(getattr(ident, "hostnames", ())), f"xen:{path}")) is not None:
            out.append(g)
    return out


def scan_openvz(vz_dir: str | os.PathLike[str] = DEFAULT_VZ_DIR, reader: Reader = read_openvz_config,
                ) -> list[GuestRecord]:
    """The containers in vzctl's config directory: every CTID.conf except 0.conf (the host) and the ve-*
    templates. Named by NAME=, else the CTID."""
    out = []
    for path in _entries(Path(vz_dir)):
        if path.suffix != ".conf" or path.name == "0.conf" or path.name.startswith("ve-"):
            continue
        text = _read_config(path)
        ident = _identity(reader, text, path) if text is not None else None
        if ident is None:
            continue
        name = _first([getattr(ident, "name", None)]) or path.stem
        if (g := _record(ident, path, name, _first(getattr(ident, "hostnames", ())), f"vz:{path}")) is not None:
            out.append(g)
    return out


def discover(lxcpath: str | os.PathLike[str] = DEFAULT_LXCPATH, xen_dir: str | os.PathLike[str] = DEFAULT_XEN_DIR,
             vz_dir: str | os.PathLike[str] = DEFAULT_VZ_DIR, readers: Readers | None = None) -> list[GuestRecord]:
    """Every guest whose config is on this host: LXC, Xen and OpenVZ; a missing directory is no guests."""
    r = readers or Readers()
    return sorted(scan_lxc(lxcpath, r.lxc) + scan_xen(xen_dir, r.xen) + scan_openvz(vz_dir, r.openvz),
                  key=_sort_key)


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
        holder = (f"{self.holder} (stale: {self.holder_gone} no longer exists; remove it from the inventory)"
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


def conflict_error(found: Sequence[Conflict], inventory_file: str | os.PathLike[str] | None = None) -> InputError:
    """One error for the CLI naming every conflict, both guests in each (a holder that no longer exists marked
    stale)."""
    lines = "\n".join(f"  {c}" for c in found)
    head = "1 conflict" if len(found) == 1 else f"{len(found)} conflicts"
    stale = sorted({c.holder for c in found if c.holder_gone})
    where = f" ({inventory_file})" if inventory_file else ""
    tail = (f"; the stale entries ({', '.join(stale)}) are guests that are gone: delete them from the "
            f"inventory{where}" if stale else ", or remove the stale inventory entry if that guest is gone")
    return InputError(f"{head} with guests imgbuild knows of:\n{lines}",
                      "a copy must not keep the original's MAC, IP address or host name: two NICs with one MAC on "
                      "a LAN take both guests (and their switch) off the network. Give the copy new ones (imgbuild "
                      f"allocates a free MAC){tail}")


def refuse_taken(candidate: GuestRecord, known: Iterable[GuestRecord], force: bool = False,
                 inventory_file: str | os.PathLike[str] | None = None, warn: bool = True) -> list[Conflict]:
    """The duplicate guard every path that makes or changes a guest goes through (clone, reidentify, migrate
    xen's copy, installing an output): InputError naming each MAC, IP and host name of `candidate` another known
    guest has (stale inventory entries marked), unless `force` - then each is logged as a warning (`warn`) and
    returned. `known`: the inventory's guests and discover()'s, checked inside locked() when the candidate is then
    recorded."""
    found = conflicts(candidate, known, self_where=candidate.where)
    if found and not force:
        raise conflict_error(found, inventory_file)
    for c in found if warn else ():
        log.warning("--force: %s", c)
    return found


# ------------------------------------------------------------------ allocation


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


def _octets(prefix: str) -> list[int]:
    parts = re.split(r"[:-]", prefix.strip()) if prefix.strip() else []
    if not 1 <= len(parts) <= 5 or not all(re.fullmatch(r"[0-9a-fA-F]{2}", p) for p in parts):
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


def _allocate_one(space: _Space, used: set[str], rng: random.Random, tries: int) -> str:
    if space.size <= EXHAUSTIVE:
        free = [m for i in range(space.size) if (m := space.nth(i)) not in used]
        if not free:
            raise BuilderError(f"no free MAC under {space.describe()}: all {space.size} addresses are taken",
                               "use a shorter prefix, or local addresses")
        return rng.choice(free)
    for _ in range(tries):
        mac = space.draw(rng)
        if mac not in used:
            return mac
    raise BuilderError(f"no free MAC under {space.describe()} found in {tries} tries ({len(used)} known)",
                       "use a shorter prefix, or local addresses")


def allocate_macs(n: int, known: Iterable[GuestRecord | str] = (), prefix: str = XEN_OUI, local: bool = False,
                  rng: random.Random | None = None, tries: int = 10_000) -> list[str]:
    """`n` fresh unicast MACs, all different and none of them a known guest's (or a MAC string in `known`).

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
    used = used_macs(known)
    out: list[str] = []
    for _ in range(n):
        mac = _allocate_one(space, used, rng, tries)
        used.add(mac)
        out.append(mac)
    return out


def allocate_mac(known: Iterable[GuestRecord | str] = (), prefix: str = XEN_OUI, local: bool = False,
                 rng: random.Random | None = None, tries: int = 10_000) -> str:
    """One fresh unicast MAC no known guest has; see allocate_macs."""
    return allocate_macs(1, known, prefix, local, rng, tries)[0]
