"""`imgbuild inventory list|show|forget|prune`: the guests imgbuild knows of, and removing entries whose guest is
gone (after `lxc-destroy`, a deleted Xen config), so their MACs, addresses and names can be given again."""
from __future__ import annotations

import difflib
import json
import sys

import click

from builder.cli.common import NONEMPTY, apply_verbosity, verbosity
from builder.core.errors import InputError
from builder.identity import inventory
from builder.identity.inventory import GuestRecord, Inventory

EPILOG = """\b
Examples:
  imgbuild inventory list                     every guest, with STATE stale when its guest is gone
  imgbuild inventory show ux2
  imgbuild inventory forget ux2               after lxc-destroy -n ux2: its MAC, IP and name are free again
  imgbuild inventory prune --dry-run          the entries whose guest is gone; then prune --yes

\b
The inventory: --inventory FILE, else $IMGBUILD_INVENTORY, else /var/lib/imgbuild/inventory.yml (root) or
~/.local/share/imgbuild/inventory.yml. A guest is stale when its config or tree on this host (lxc:, xen:,
vz:, image: ... paths) no longer exists; entries of other hosts are never called stale.
\b
Exit status: 0 ok, 1 prune not confirmed, 2 bad input (an unknown name, a guest that still exists).
"""

_inventory_option = click.option("--inventory", "path", type=NONEMPTY, metavar="FILE",
                                 help="The inventory file (default $IMGBUILD_INVENTORY, else the user's or root's).")


@click.group("inventory", epilog=EPILOG)
def inventory_group() -> None:
    """The guest inventory: the host names, IP addresses and MACs of the guests imgbuild made, cloned or
    re-identified, which every clone, reidentify and install-lxc checks a new identity against. `list` and
    `show` read it; `forget` and `prune` remove entries whose guest is gone."""


def _n(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _state(g: GuestRecord) -> str:
    return "stale" if inventory.gone(g.where) else "ok"


def _row(g: GuestRecord) -> dict:
    return {**g.to_dict(), "state": _state(g), **({"gone": inventory.gone(g.where)} if inventory.gone(g.where) else {})}


@inventory_group.command("list", epilog=EPILOG)
@_inventory_option
@click.option("--json", "as_json", is_flag=True, help="One JSON document (a list of guests) for scripts.")
@verbosity
def inventory_list(path: str | None, as_json: bool, verbose: int, quiet: bool, debug: bool) -> None:
    """Every guest of the inventory: name, host name, addresses, MACs, where it is, when it was recorded and
    whether it is still there (STATE stale: its guest is gone)."""
    apply_verbosity(verbose, quiet, debug)
    inv = inventory.load(path)
    if as_json:
        click.echo(json.dumps([_row(g) for g in inv.guests], indent=2))
        return
    rows = [("NAME", "HOSTNAME", "IPS", "MACS", "WHERE", "UPDATED", "STATE")]
    rows += [(g.name, g.hostname or "-", ",".join(g.ips) or "-", ",".join(g.macs) or "-", g.where or "-",
              g.updated or "-", _state(g)) for g in inv.guests]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths)) + "  " + r[-1])
    stale = sum(_state(g) == "stale" for g in inv.guests)
    tail = f"; {stale} stale (`imgbuild inventory prune` removes them)" if stale else ""
    click.echo(f"{_n(len(inv.guests), 'guest', 'guests')} in {inv.path}{tail}", err=True)


def _named(inv: Inventory, name: str) -> list[GuestRecord]:
    """The entries called NAME (or at where NAME, e.g. lxc:/var/lib/lxc/ux2); none: InputError with the names
    that are close."""
    found = [g for g in inv.guests if g.name == name or (":" in name and g.where == inventory.normalize_where(name))]
    if not found:
        close = difflib.get_close_matches(name, [g.name for g in inv.guests], n=3)
        raise InputError(f"{inv.path}: no guest named {name!r}",
                         f"did you mean {', '.join(close)}?" if close else "`imgbuild inventory list` shows them")
    return found


@inventory_group.command("show", epilog=EPILOG)
@click.argument("name")
@_inventory_option
@verbosity
def inventory_show(name: str, path: str | None, verbose: int, quiet: bool, debug: bool) -> None:
    """One guest's entry (NAME, or its where: lxc:/var/lib/lxc/NAME), and whether it is still there."""
    apply_verbosity(verbose, quiet, debug)
    for g in _named(inventory.load(path), name):
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
