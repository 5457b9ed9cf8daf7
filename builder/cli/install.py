"""`imgbuild install-lxc`: a built output (or every node of a cluster build) as LXC containers."""
from __future__ import annotations

from pathlib import Path

import click

from builder.build import cluster
from builder.build import install_lxc as installer
from builder.cli.common import NONEMPTY, apply_verbosity, verbosity
from builder.core import checks
from builder.core.errors import InputError


@click.command("install-lxc")
@click.argument("output", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--name", help="Container name, and the guest's host name (default: the recipe's name and host "
              "name).")
@click.option("--lxcpath", type=NONEMPTY, default="/var/lib/lxc", show_default=True, help="LXC's container directory.")
@click.option("--force", is_flag=True, help="Replace an existing container of that name, if imgbuild installed it "
              "and it is not running.")
@click.option("--node", "nodes", multiple=True, metavar="NAME", help="A cluster build: install only this node "
              "(repeatable; default: every node).")
@click.option("--inventory", type=NONEMPTY, metavar="FILE",
              help="Inventory of guests (cluster nodes are recorded there).")
@verbosity
def install_lxc(output: Path, name: str | None, lxcpath: str, force: bool, nodes: tuple[str, ...],
                inventory: str | None, verbose: int, quiet: bool, debug: bool) -> None:
    """Install a built OUTPUT (e.g. output/debian12) as an LXC container: the rootfs unpacked with numeric
    owners under LXCPATH/NAME/rootfs and the config written with those paths. Start it with
    `lxc-start -n NAME`.

    The container gets new ssh host keys and machine-id, and --name as its host name. Its MAC, IP and host
    name are checked against the inventory and the LXC, Xen and OpenVZ configs of this host: one another guest
    has is refused, naming both (install a copy with `imgbuild clone` instead, which gives it its own). The
    new container is recorded in the inventory.

    A cluster build (a recipe with nodes:) installs every node: each its own container, with the node's
    host name, address and MAC everywhere in it, new ssh host keys and machine-id, and its templates rendered
    with its own variables (docs/clusters.md).
    """
    apply_verbosity(verbose, quiet, debug)
    checks.directory(lxcpath, "--lxcpath")
    if cluster.read_nodes(output) is not None:
        if name:
            raise InputError("--name: a cluster build installs its nodes under their own names",
                             "use --node NAME to install one node")
        for d in installer.install_nodes(output, lxcpath, force, nodes, inventory):
            click.echo(str(d))
        return
    if nodes:
        raise InputError(f"--node: {output} is not a cluster build", "nodes: in the recipe makes one")
    click.echo(str(installer.install(output, name, lxcpath, force, inventory)))
