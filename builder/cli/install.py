"""`imgbuild install-lxc`: a built output (or every node of a cluster build) as LXC containers."""
from __future__ import annotations

import json
from pathlib import Path

import click

from builder.build import cluster
from builder.build import install_lxc as installer
from builder.cli.common import NONEMPTY, apply_verbosity, verbosity
from builder.cli.ssh import ssh_options
from builder.core import checks
from builder.core.errors import InputError
from builder.core.outputs import write_atomic
from builder.migrate.remote import SshOptions

INSTALL_EPILOG = """\b
Examples:
  imgbuild install-lxc output/debian12 --name web1             here, as /var/lib/lxc/web1
  imgbuild install-lxc output/galera --node galera2 --force     one node of a cluster build, here
  imgbuild install-lxc output/galera --host db1 --node galera1 --dry-run    on host db1 over ssh
  imgbuild deploy galera-3hosts.yml                             every node on the host its recipe names

\b
With --host (a cluster build only): each node's tree is made here (beside the output, in .deploy/, kept for
the next run), the host's LXC, Xen and OpenVZ configs are read over ssh, and a name, MAC or IP another guest
there has is refused, naming it; so is LXCPATH/NODE when imgbuild did not install it, or while it runs. Then
the tree is pushed to HOST:LXCPATH/NODE/rootfs (rsync -aHAXS --numeric-ids) and the config written; a second
run of the same build changes nothing.

Exit status: 0 installed, 1 failed (on the host), 2 bad input or refused (nothing changed).
"""


@click.command("install-lxc", epilog=INSTALL_EPILOG)
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
@click.option("--host", metavar="HOST", help="Install the nodes of a cluster build on HOST over ssh ([user@]host "
              "or an ssh_config alias) instead of here; --lxcpath is then the host's.")
@click.option("-n", "--dry-run", is_flag=True, help="With --host: make the trees here and check the host, say "
              "what would change there, change nothing there.")
@click.option("--start", is_flag=True, help="With --host: then start each node (lxc-start -n NODE -P LXCPATH on "
              "the host).")
@click.option("--result-json", type=click.Path(dir_okay=False, path_type=Path), hidden=True)
@ssh_options(checked=False)
@verbosity
def install_lxc(output: Path, name: str | None, lxcpath: str, force: bool, nodes: tuple[str, ...],
                inventory: str | None, host: str | None, dry_run: bool, start: bool, result_json: Path | None,
                ssh, verbose: int, quiet: bool, debug: bool) -> None:
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

    --host HOST installs a cluster build's nodes on HOST instead, over your ssh: checked against that host's
    own guest configs, the trees pushed with rsync (what `imgbuild deploy` runs for each host).
    """
    apply_verbosity(verbose, quiet, debug)
    if host is not None:
        _install_remote(output, host, lxcpath, nodes, name, inventory, force, dry_run, start, result_json, ssh)
        return
    for flag, given in (("--dry-run", dry_run), ("--start", start), ("--result-json", result_json),
                        ("the ssh options (--port, -i, --ssh-config, --ssh-option, --accept-new-host-key)",
                         ssh != SshOptions())):
        if given:
            raise InputError(f"{flag}: only with --host HOST (an install on another host over ssh)",
                             "an install here has no dry run; `lxc-start -n NAME` starts a container installed here")
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


def _install_remote(output: Path, host: str, lxcpath: str, only: tuple[str, ...], name: str | None,
                    inventory: str | None, force: bool, dry_run: bool, start: bool, result_json: Path | None,
                    ssh) -> None:
    from builder.migrate import push, remote_lxc
    from builder.migrate.remote import Remote

    for flag, given in (("--name", name), ("--inventory", inventory), ("--force", force)):
        if given:
            raise InputError(f"{flag} does not go with --host",
                             "--host installs a cluster's nodes under their own names, replacing only containers "
                             "imgbuild installed there (and not running); the host's own configs are checked")
    data = cluster.read_nodes(output)
    if data is None:
        raise InputError(f"--host: {output} is not a cluster build (no {cluster.NODES_FILE})",
                         "--host installs the nodes of a recipe with nodes:; install a single build here, or "
                         "push its tree with migrate push")
    known = [n["name"] for n in data["nodes"]]
    unknown = sorted(set(only) - set(known))
    if unknown:
        raise InputError(f"--node {', '.join(unknown)}: not a node of {output}", f"nodes: {', '.join(known)}")
    chosen = [n for n in data["nodes"] if not only or n["name"] in only]
    lxcpath = remote_lxc.check_lxcpath(lxcpath)
    remote = Remote(host, ssh, dry_run=dry_run)          # checks the host name
    ssh.check()
    cluster_name = output.resolve().name
    with remote.session():
        done = remote_lxc.install(remote, output, cluster_name, chosen, data["base"], lxcpath, start)
    res = remote_lxc.result(host, lxcpath, done, dry_run)
    for o in done:
        c = o.changes
        click.echo(f"{host}:{lxcpath}/{o.name}: {push.summary(c, dry_run)[0]}; config "
                   f"{'would be ' if dry_run and o.config != 'unchanged' else ''}{o.config}"
                   + ("; started" if o.started else ""))
        if dry_run:
            for line in push.listing(c):
                click.echo(f"  {line}")
    if dry_run:
        click.echo(f"dry run: nothing was changed on {host}")
    if result_json:
        write_atomic(result_json, json.dumps(res))
