"""`imgbuild deploy RECIPE`: build a cluster once, install each node on the host its recipe names."""
from __future__ import annotations

import os
from pathlib import Path

import click

from builder.cli.common import NONEMPTY, apply_verbosity, verbosity
from builder.cli.common import Path as PathType
from builder.cli.fanout import report
from builder.cli.ssh import ssh_options
from builder.core.errors import InputError

DEPLOY_EPILOG = """\b
Examples:
  imgbuild deploy galera-3hosts.yml --dry-run             build, check every host, say what would change
  imgbuild deploy galera-3hosts.yml -j 2                  install each node on its host, 2 hosts at once
  imgbuild deploy galera-3hosts.yml --start --fail-fast   ... and start them; stop at the first failure
  imgbuild deploy my-cluster.yml --ssh-config ./ssh_config --lxcpath /srv/lxc

\b
The recipe names each node's host (docs/clusters.md):
  nodes:
    - {name: galera1, address: 10.0.3.11/24, host: db1}          # an ssh_config alias,
    - {name: galera2, address: 10.0.3.12/24, host: root@db2}     # host or user@host

\b
On each host, for each of its nodes: the node's tree is made here (the build cloned with the node's name,
address, MAC, new ssh host keys and machine-id; kept in OUTPUT/.deploy/ for the next run), the host's LXC,
Xen and OpenVZ configs are read and a name, MAC or IP another guest there has is refused naming it; so is
LXCPATH/NODE if imgbuild did not install it there, or while it runs. Then the tree goes to
HOST:LXCPATH/NODE/rootfs (rsync -aHAXS --numeric-ids over your ssh) and its config to LXCPATH/NODE/config.
A second deploy of the same build changes nothing; a redeploy replaces what a node changed in its rootfs
(its data and logs included: look at --dry-run first). Xen nodes (disk image, xl config) are not deployed yet.

\b
Every node needs a host: (a node without one is refused). The recipe, the hosts' names, the output
directory and the ssh options are checked before any host is contacted.

Exit status: 0 every host ok, 1 the build or some hosts failed (named; a refused duplicate is that host's
failure, the others go on), 2 bad input (nothing built, no host contacted).
"""


@click.command("deploy", epilog=DEPLOY_EPILOG)
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=PathType(file_okay=False, path_type=Path), default=Path("output"),
              show_default=True, help="Directory for outputs; the build lands in OUTPUT/NAME/.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe key (dotted path, VALUE read as YAML); repeatable.")
@click.option("--lxcpath", type=NONEMPTY, default="/var/lib/lxc", show_default=True,
              help="LXC's container directory on every host.")
@click.option("--start", is_flag=True, help="Start each node after installing it (lxc-start -n NODE -P LXCPATH on "
              "its host); refused before anything is changed on a host without lxc-start.")
@click.option("-n", "--dry-run", is_flag=True, help="Build (or find the build up to date) and check every host; "
              "each host's log lists what would change there; nothing is changed on any host.")
@click.option("-j", "--jobs", type=click.IntRange(1, 64), default=4, show_default=True, help="Hosts worked on at "
              "once.")
@click.option("--fail-fast", is_flag=True, help="Stop the other hosts (and start no more) when one fails.")
@click.option("--logs", type=click.Path(file_okay=False, path_type=Path), default=Path("output/.logs"),
              show_default=True, metavar="DIR", help="Where each host's log is kept.")
@ssh_options
@verbosity
def deploy(recipe: Path, output: Path, overrides: tuple[str, ...], lxcpath: str, start: bool, dry_run: bool,
           jobs: int, fail_fast: bool, logs: Path, ssh, verbose: int, quiet: bool, debug: bool) -> None:
    """Build a cluster RECIPE once, then install each node as an LXC container on the host its `host:` names,
    over ssh, every host in parallel; a summary table at the end.
    """
    apply_verbosity(verbose, quiet, debug)
    from builder.build import pipeline as build_mod
    from builder.build import recipe as recipe_mod
    from builder.core import checks, outputs
    from builder.migrate import deploy as dep
    from builder.migrate import fleet
    from builder.migrate.remote_lxc import check_lxcpath

    if os.geteuid() != 0:
        raise InputError("deploy needs root: the nodes' trees are made here with their owners and device nodes",
                         "run it as root (sudo imgbuild deploy ...)")
    loaded = recipe_mod.load(recipe, overrides)
    hosts = dep.plan(loaded.recipe)
    lxcpath = check_lxcpath(lxcpath)
    checks.directory(output, "-o")
    outputs.check_replaceable(Path(output).resolve() / loaded.recipe.name)
    final = Path(build_mod.build(loaded, output)).resolve()
    click.echo(str(final))
    level = click.get_current_context().find_root().obj.get("verbose", 0)
    done = fleet.run(dep.targets(hosts),
                     lambda t, res: dep.child_argv(final, t.dest, hosts[t.name], lxcpath, ssh, res, dry_run, start,
                                                   level),
                     jobs, logs, fail_fast, fleet.LiveView())
    report(done, logs)
    if dry_run:
        click.echo("dry run: nothing was changed on any host (each host's log lists what would change)")
