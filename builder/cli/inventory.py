"""`imgbuild inventory list|show|forget|prune|export|import`: the guests imgbuild knows of, removing entries whose
guest is gone (after `lxc-destroy`, a deleted Xen config) so their MACs, addresses and names can be given again,
and the inventory as YAML for people (export, import)."""
from __future__ import annotations

import difflib
import json
import sys
from pathlib import Path

import click

from builder.cli.common import NONEMPTY, apply_verbosity, verbosity
from builder.core.errors import InputError
from builder.core.outputs import write_atomic
from builder.identity import inventory
from builder.identity import inventory_transfer as transfer
from builder.identity.inventory import GuestRecord, Inventory

EPILOG = """\b
Examples:
  imgbuild inventory list                     every guest, with STATE stale when its guest is gone
  imgbuild inventory show ux2
  imgbuild inventory forget ux2               after lxc-destroy -n ux2: its MAC, IP and name are free again
  imgbuild inventory prune --dry-run          the entries whose guest is gone; then prune --yes
  imgbuild inventory export -o inv.yml        every guest as YAML (sorted: diff it, keep it in git)
  imgbuild inventory import inv.yml           back in, beside the others (--replace: instead of them)

\b
The inventory: --inventory FILE, else $IMGBUILD_INVENTORY, else /var/lib/imgbuild/inventory.db (root) or
~/.local/share/imgbuild/inventory.db (SQLite). A FILE ending in .yml or .yaml is an earlier imgbuild's: the
inventory is FILE.db beside it, the YAML file moved into it on first change (kept as FILE.yml.migrated).
A guest is stale when its config or tree on this host (lxc:, xen:, vz:, image: ... paths) no longer exists;
entries of other hosts are never called stale.
\b
Exit status: 0 ok, 1 prune not confirmed, 2 bad input (an unknown name, a guest that still exists).
"""

_inventory_option = click.option("--inventory", "path", type=NONEMPTY, metavar="FILE",
                                 help="The inventory (default $IMGBUILD_INVENTORY, else the user's or root's "
                                 "inventory.db).")


@click.group("inventory", epilog=EPILOG)
def inventory_group() -> None:
    """The guest inventory: the host names, IP addresses and MACs of the guests imgbuild made, cloned or
    re-identified, which every clone, reidentify and install-lxc checks a new identity against. `list` and
    `show` read it; `forget` and `prune` remove entries whose guest is gone; `export` and `import` move it
    as YAML."""


def _n(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _state(g: GuestRecord) -> str:
    return "stale" if inventory.gone(g.where) else "ok"


def _row(g: GuestRecord) -> dict:
    return {**g.to_dict(), "state": _state(g), **({"gone": inventory.gone(g.where)} if inventory.gone(g.where) else {})}


def _list(guests: list[GuestRecord], where: object, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([_row(g) for g in guests], indent=2))
        return
    rows = [("NAME", "HOSTNAME", "IPS", "MACS", "WHERE", "UPDATED", "STATE")]
    rows += [(g.name, g.hostname or "-", ",".join(g.ips) or "-", ",".join(g.macs) or "-", g.where or "-",
              g.updated or "-", _state(g)) for g in guests]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths)) + "  " + r[-1])
    stale = sum(_state(g) == "stale" for g in guests)
    tail = f"; {stale} stale (`imgbuild inventory prune` removes them)" if stale else ""
    click.echo(f"{_n(len(guests), 'guest', 'guests')} in {where}{tail}", err=True)


@inventory_group.command("list", epilog=EPILOG)
@_inventory_option
@click.option("--json", "as_json", is_flag=True, help="One JSON document (a list of guests) for scripts.")
@verbosity
def inventory_list(path: str | None, as_json: bool, verbose: int, quiet: bool, debug: bool) -> None:
    """Every guest of the inventory: name, host name, addresses, MACs, where it is, when it was recorded and
    whether it is still there (STATE stale: its guest is gone)."""
    apply_verbosity(verbose, quiet, debug)
    with inventory.load(path) as inv:
        guests = inv.guests
    _list(guests, inv.path, as_json)


def _named(inv: Inventory, name: str) -> list[GuestRecord]:
    """The entry called NAME (or at where NAME, e.g. lxc:/var/lib/lxc/ux2), read by index; none: InputError with
    the names that are close."""
    found = [g for g in (inv.get(name), inv.at(name) if ":" in name else None) if g is not None]
    if not found:
        close = difflib.get_close_matches(name, inv.store.names(), n=3)
        raise InputError(f"{inv.path}: no guest named {name!r}",
                         f"did you mean {', '.join(close)}?" if close else "`imgbuild inventory list` shows them")
    return list({g.name: g for g in found}.values())


@inventory_group.command("show", epilog=EPILOG)
@click.argument("name")
@_inventory_option
@verbosity
def inventory_show(name: str, path: str | None, verbose: int, quiet: bool, debug: bool) -> None:
    """One guest's entry (NAME, or its where: lxc:/var/lib/lxc/NAME), and whether it is still there."""
    apply_verbosity(verbose, quiet, debug)
    with inventory.load(path) as inv:
        found = _named(inv, name)
    for g in found:
        for key, value in _row(g).items():
            click.echo(f"{key + ':':10} {', '.join(value) if isinstance(value, list) else value}")


@inventory_group.command("forget", epilog=EPILOG)
@click.argument("names", nargs=-1, required=True)
@_inventory_option
@click.option("--force", is_flag=True, help="Forget a guest that still exists (its MAC, IP and name may then be "
              "given to another guest: only for an entry that is wrong).")
@click.option("-n", "--dry-run", is_flag=True, help="Say what would be forgotten; change nothing.")
@verbosity
def inventory_forget(names: tuple[str, ...], path: str | None, force: bool, dry_run: bool, verbose: int,
                     quiet: bool, debug: bool) -> None:
    """Remove the entries of NAMES (guests that are gone), so their MACs, addresses and names are free again.
    A guest still there is refused (without --force); an unknown name forgets nothing."""
    apply_verbosity(verbose, quiet, debug)
    with inventory.locked(path) as inv:
        chosen = [g for n in dict.fromkeys(names) for g in _named(inv, n)]
        live = [g for g in chosen if g.where and not inventory.gone(g.where)
                and g.where.partition(":")[0] in inventory.LOCAL_KINDS]
        if live and not force:
            raise InputError(f"{live[0].who} still exists: forgetting it would let another guest take its MAC, "
                             "addresses and name; nothing was forgotten",
                             "remove the guest first (lxc-destroy -n NAME, or its Xen/OpenVZ config), or --force "
                             "if the entry is wrong")
        for g in chosen:
            click.echo(f"{'would forget' if dry_run else 'forgot'} {g.who}")
            if dry_run:
                continue
            if g.where:
                inv.remove(where=g.where)
            else:
                inv.remove(name=g.name)


@inventory_group.command("prune", epilog=EPILOG)
@_inventory_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask (needed when there is no terminal to ask on).")
@click.option("-n", "--dry-run", is_flag=True, help="List the stale entries; change nothing.")
@verbosity
def inventory_prune(path: str | None, yes: bool, dry_run: bool, verbose: int, quiet: bool, debug: bool) -> None:
    """Remove every entry whose guest is gone (its config or tree on this host no longer exists), after
    listing them and asking (or with --yes)."""
    apply_verbosity(verbose, quiet, debug)
    with inventory.locked(path) as inv:
        stale = [g for g in inv.guests if inventory.gone(g.where)]
        for g in stale:
            click.echo(f"stale: {g.who}: {inventory.gone(g.where)} no longer exists")
        if not stale:
            click.echo(f"nothing to prune: every guest of {inv.path} is there")
            return
        if dry_run:
            click.echo(f"would forget {len(stale)}")
            return
        if not yes:
            if not sys.stdin.isatty():
                raise InputError(f"prune would forget {_n(len(stale), 'entry', 'entries')}; there is no terminal "
                                 "to ask on",
                                 "check the list above, then run it again with --yes")
            click.confirm(f"forget these {len(stale)}?", abort=True)
        for g in stale:
            inv.remove(where=g.where)
        click.echo(f"forgot {len(stale)}")


@inventory_group.command("export", epilog=EPILOG)
@_inventory_option
@click.option("-o", "--output", type=NONEMPTY, metavar="FILE", help="Write it to FILE (atomically) instead of "
              "standard output.")
@verbosity
def inventory_export(path: str | None, output: str | None, verbose: int, quiet: bool, debug: bool) -> None:
    """The inventory as YAML (guests: [{name, hostname, ips, macs, where, updated}], sorted by name, the shape of
    the file earlier imgbuilds kept): for people, diffs and backups; `import` reads it back."""
    apply_verbosity(verbose, quiet, debug)
    text, source, n = transfer.export_text(path)
    if output is None:
        click.echo(text, nl=False)
    else:
        write_atomic(Path(output), text, mode=0o644)
    click.echo(f"{_n(n, 'guest', 'guests')} from {source}{f' written to {output}' if output else ''}", err=True)


@inventory_group.command("import", epilog=EPILOG)
@click.argument("file", type=NONEMPTY)
@_inventory_option
@click.option("--replace", is_flag=True, help="Instead of the inventory's guests (default: beside them, an "
              "imported guest replacing the one of its name or where).")
@click.option("--force", is_flag=True, help="Import even when two guests would share a MAC (as a --force clone "
              "may have left them); each is a warning.")
@verbosity
def inventory_import(file: str, path: str | None, replace: bool, force: bool, verbose: int, quiet: bool,
                     debug: bool) -> None:
    """Read a YAML inventory (an export, or the file of an earlier imgbuild) into the inventory: checked by the
    strict reader first, a where or MAC two guests would share refused naming both; all of it in one transaction,
    or nothing."""
    apply_verbosity(verbose, quiet, debug)
    done = transfer.import_file(file, path, replace=replace, force=force)
    click.echo(f"imported {_n(done.added, 'guest', 'guests')} into {done.inventory} ({done.replaced} replaced); "
               f"{_n(done.total, 'guest', 'guests')} in it now")
