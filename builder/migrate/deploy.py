"""`imgbuild deploy RECIPE`: a cluster whose nodes name their hosts, built once and installed on those hosts.

The build is `imgbuild RECIPE`'s (an up-to-date output is not built again). Then every host the nodes name gets
one child process, `imgbuild install-lxc OUTPUT --host HOST --node N1 --node N2 ...` (builder.migrate.remote_lxc),
run in parallel by the fleet runner (builder.migrate.fleet: -j, --fail-fast, the live view, per-host logs, the
summary table). One host's refusal or failure reaches no other host.

Every check that needs no host comes first (the recipe and its nodes' hosts, the output directory, the ssh
options, --lxcpath), so bad input exits 2 with no host contacted. A node without `host:` is refused: a deploy
installs every node of the cluster on its host (`imgbuild install-lxc OUTPUT --node NODE` installs one here).
"""
from __future__ import annotations

import sys
from pathlib import Path

from builder.core.errors import InputError
from builder.migrate.fleet import Target
from builder.migrate.remote import SshOptions


def plan(recipe) -> dict[str, list[str]]:
    """The nodes of each host, hosts in the order the nodes first name them. InputError naming every node
    without a host, or a recipe with no nodes or no tarball and LXC target."""
    if not recipe.nodes:
        raise InputError(f"{recipe.name}: the recipe has no nodes: deploy installs a cluster's nodes on their hosts",
                         "give nodes: [{name: ..., address: ..., host: HOST}, ...]; for one system, imgbuild "
                         "RECIPE then migrate push")
    if recipe.targets.tarball is None or recipe.targets.lxc is None:
        raise InputError(f"{recipe.name}: deploy installs LXC containers: the recipe makes no tarball or no LXC "
                         "config", "add targets: {tarball: {}, lxc: {}} to the recipe")
    missing = [f"nodes[{i}] ({n.name})" for i, n in enumerate(recipe.nodes) if not n.host]
    if missing:
        raise InputError(f"{', '.join(missing)}: no host: deploy installs every node on the host its `host:` names",
                         "give each node host: HOST (an ssh_config alias, host or user@host); to install a node "
                         "on this machine: imgbuild RECIPE, then imgbuild install-lxc OUTPUT --node NODE")
    hosts: dict[str, list[str]] = {}
    for n in recipe.nodes:
        hosts.setdefault(n.host, []).append(n.name)
    return hosts


def targets(hosts: dict[str, list[str]]) -> list[Target]:
    return [Target(h, h) for h in hosts]


def ssh_argv(ssh: SshOptions) -> list[str]:
    """The ssh options as install-lxc's command line takes them (builder.cli.ssh)."""
    a: list[str] = []
    if ssh.port:
        a += ["--port", str(ssh.port)]
    if ssh.config:
        a += ["--ssh-config", ssh.config]
    if ssh.identity:
        a += ["-i", ssh.identity]
    for o in ssh.options:
        a += ["--ssh-option", o]
    if ssh.accept_new_host_key:
        a.append("--accept-new-host-key")
    return a


def child_argv(output: Path, host: str, nodes: list[str], lxcpath: str, ssh: SshOptions, result: Path,
               dry_run: bool = False, start: bool = False, verbose: int = 0) -> list[str]:
    """One host's command: install-lxc of its nodes, every value a separate argument (no shell)."""
    argv = [sys.executable, "-m", "builder.cli.imgbuild", "install-lxc", *(["-v"] * verbose), str(output),
            "--host", host, "--lxcpath", lxcpath]
    for n in nodes:
        argv += ["--node", n]
    if dry_run:
        argv.append("--dry-run")
    if start:
        argv.append("--start")
    return [*argv, *ssh_argv(ssh), "--result-json", str(result)]
