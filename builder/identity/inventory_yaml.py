"""The inventory as YAML: the file imgbuild kept before the SQLite store (read once to migrate it) and the text of
`imgbuild inventory export|import`: `guests: [{name, hostname, ips, macs, where, updated}]`, guests sorted by name,
keys in a fixed order. Read only through the strict loader (no duplicate keys, bounded aliases), every problem an
InputError naming the file and the line."""
from __future__ import annotations

import datetime
import os
import re
from typing import Any, Callable, Iterable, Iterator

import yaml

from builder.core.errors import InputError, RecipeError
from builder.core.untrusted import StrictLoader, load_yaml, read_file
from builder.identity.inventory_records import GuestRecord, normalize_ip, normalize_mac, sort_key

FIELDS = ("name", "hostname", "ips", "macs", "where", "updated")
HEADER = ("# imgbuild's guest inventory: the host names, IP addresses and MACs of the guests imgbuild made, cloned\n"
          "# or moved, so that no copy takes an identity another guest has. `imgbuild inventory import FILE`\n"
          "# reads it back (keep edits to whole entries).\n")
LOAD_HINT = ("the inventory is YAML: guests: [{name, hostname, ips: [...], macs: [...], where, updated}]; fix that "
             "line (write MACs in quotes), or point $IMGBUILD_INVENTORY at another file")
MAX_SIZE = 256 << 20     # bytes: 100k guests take about 15 MB


def read(path: str | os.PathLike[str]) -> list[GuestRecord]:
    """The guests of the YAML inventory at `path` (a regular file of bounded size, read without blocking)."""
    data = read_file(path, str(path), what="an imgbuild inventory", limit=MAX_SIZE,
                     hint="give the path of an inventory file (YAML, as `imgbuild inventory export` writes)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text file, so not an imgbuild inventory", LOAD_HINT) from None
    return parse(text, str(path))


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

