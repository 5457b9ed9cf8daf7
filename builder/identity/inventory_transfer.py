"""The inventory as a YAML file for people: `export` (every guest, sorted, the shape of the file imgbuild kept
before the SQLite store) and `import` (checked by the strict reader, duplicates refused naming both guests, all of
it in one transaction or none of it)."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from builder.core.errors import InputError
from builder.identity.inventory import GuestRecord, dumps, load, locked, read_yaml

log = logging.getLogger("imgbuild")


def export_text(path: str | os.PathLike[str] | None = None) -> tuple[str, Path, int]:
    """The inventory's YAML text (deterministic: guests by name, keys in a fixed order), where it was read and
    how many guests it holds."""
    with load(path) as inv:
        guests = inv.guests
        return dumps(guests), inv.path, len(guests)


def _twice(guests: list[GuestRecord], source: str) -> list[tuple[str, str]]:
    """Each where and MAC two guests of `guests` share (names are unique: the reader refuses a name twice)."""
    out = []
    seen_where: dict[str, GuestRecord] = {}
    seen_mac: dict[str, GuestRecord] = {}
    for g in guests:
        if g.where and (o := seen_where.setdefault(g.where, g)) is not g:
            out.append(("where", f"{source}: {o.name} and {g.name} are both at {g.where}"))
        for m in g.macs:
            if (o := seen_mac.setdefault(m, g)) is not g:
                out.append(("mac", f"{source}: MAC {m} is both {o.who}'s and {g.who}'s"))
    return out


@dataclass(frozen=True)
class Imported:
    inventory: Path
    added: int
    replaced: int
    total: int


def import_file(file: str | os.PathLike[str], path: str | os.PathLike[str] | None = None, replace: bool = False,
                force: bool = False) -> Imported:
    """Read the YAML inventory `file` into the store at `path`: with `replace` instead of every guest there, else
    beside them (an imported guest replaces the one of its name or its where). A where or MAC two guests would
    share is refused naming both (a MAC: unless `force`, as a --force clone may have left two guests with one);
    nothing is imported then."""
    guests = read_yaml(file)
    problems = _twice(guests, str(file))
    names = {g.name for g in guests}
    wheres = {g.where for g in guests if g.where}
    with locked(path) as inv:
        replaced = inv.count() if replace else 0
        if replace:
            inv.store.clear()
        else:
            for g in guests:
                for other in inv.store.near(g):
                    if other.name in names or (other.where and other.where in wheres):
                        continue            # replaced by the import
                    for m in sorted(set(g.macs) & set(other.macs)):
                        problems.append(("mac", f"MAC {m} of {g.who} ({file}) is {other.who}'s in {inv.path}"))
            replaced = sum(bool(inv.store.delete(name=g.name, where=g.where)) for g in guests)
        if problems and not (force and all(kind == "mac" for kind, _ in problems)):
            raise InputError(f"{file}: nothing imported: {len(problems)} duplicate(s):\n" +
                             "\n".join(f"  {text}" for _, text in problems),
                             "fix the file (every guest its own where and MACs), or import with --replace to drop "
                             "the inventory's entries first; --force imports two guests with one MAC")
        for _, text in problems:
            log.warning("--force: %s", text)
        inv.store.add(guests)
        total = inv.count()
    return Imported(inv.path, len(guests), replaced, total)
