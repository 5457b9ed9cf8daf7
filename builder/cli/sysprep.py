"""`imgbuild sysprep`: a used guest made into a clean template (builder/identity/sysprep.py)."""
from __future__ import annotations

import click

from builder.cli.common import NONEMPTY, apply_verbosity, log, verbosity
from builder.core.errors import InputError

EPILOG = """\b
Examples:
  imgbuild sysprep --list-operations
  imgbuild sysprep lxc:web1 --dry-run                     what would go, path by path; nothing changed
  imgbuild sysprep /var/lib/lxc/web1                      the defaults
  imgbuild sysprep web1.ext4 --operations defaults,ssh-userdir,-logfiles
  imgbuild sysprep output/debian12 --operations bash-history,tmp-files

TARGET: an LXC container (its directory or lxc:NAME), a root directory, an ext2/3/4 image (loop-mounted while
sysprep runs) or an imgbuild output (its tarball unpacked and packed again). A guest in use (running, mounted,
attached, open) is refused. Then `imgbuild clone` gives each copy its own name, addresses and MACs.

Exit status: 0 done (or listed), 2 bad input (an unknown operation, a guest in use, no such guest).
"""


@click.command("sysprep", epilog=EPILOG)
@click.argument("target", required=False)
@click.option("--operations", metavar="LIST",
              help="Comma-separated: NAME adds an operation, -NAME leaves one out, `defaults` and `all` are sets. "
                   "A list that starts with a name runs only what it names; one that starts with -NAME starts "
                   "from the defaults.")
@click.option("--list-operations", is_flag=True, help="List the operations, what each removes, and the defaults.")
@click.option("--dry-run", is_flag=True, help="List every path it would touch; change nothing.")
@click.option("--force", is_flag=True, help="Go on although the guest is in use (running, mounted, open); "
                                            "says who, as a warning. The result may be inconsistent.")
@click.option("--lxcpath", type=NONEMPTY, default="/var/lib/lxc", show_default=True, help="Where LXC containers are.")
@verbosity
def sysprep(target: str | None, operations: str | None, list_operations: bool, dry_run: bool, force: bool,
            lxcpath: str, verbose: int, quiet: bool, debug: bool) -> None:
    """Make a used guest a clean template: remove or reset what belongs to the machine it ran as and the people
    who used it (histories, logs, leases, spools, machine-id, ssh host keys, caches, temp files ...), as
    virt-sysprep does. Nothing in the guest runs; no link in it is followed.
    """
    apply_verbosity(verbose, quiet, debug)
    from builder.identity import sysprep as sp
    from builder.identity.guest import locate, open_tree, refuse_in_use

    if list_operations:
        width = max(len(o.name) for o in sp.OPERATIONS)
        for o in sp.OPERATIONS:
            click.echo(f"{o.name:<{width}}  {'*' if o.default else ' '}  {o.what}")
        click.echo("(* : run by default)", err=True)
        return
    if not target:
        raise InputError("sysprep: no TARGET", "give a guest (imgbuild sysprep lxc:NAME), or --list-operations")
    ops = sp.select(operations)
    g = locate(target, lxcpath)
    refuse_in_use(g, lxcpath, force, writing=not dry_run)
    with open_tree(g, loop=True, writeback=not dry_run, force=force) as tree:
        p = sp.plan(tree.root, ops)
        for s in p.skipped:
            log.info("%s: %s", g.where, s)
        for a in p.actions:
            click.echo(a.show())
        if not dry_run:
            sp.apply(p)
    names = ", ".join(o.name for o in ops)
    if dry_run:
        click.echo(f"dry run: {g.where}: {len(p.actions)} change(s) would be made ({names}); nothing was changed",
                   err=True)
    else:
        click.echo(f"{g.where}: {len(p.actions)} change(s) made ({names})", err=True)
