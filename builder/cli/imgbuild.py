"""`imgbuild`: the command group. Each command lives in its own module of builder/cli/ (COMMANDS), imported when
it runs; it parses its arguments and calls one library function."""
from __future__ import annotations

import click

from builder import __version__
from builder.cli.common import apply_verbosity, run_cli, verbosity
from builder.cli.lazy import LazyGroup

EPILOG = """\b
Examples:
  imgbuild recipes/debian12.yml                 build into output/debian12/
  imgbuild recipes/debian12.yml -o /srv/images --set hostname=web1 --set dns=[192.0.2.53]
  imgbuild validate recipes/*.yml               check recipes (and their packages) without building
  imgbuild install-lxc output/debian12 --name vm0
  imgbuild boot output/debian12                 does it start? (a throwaway container, then a verdict)
  imgbuild sysprep lxc:web1 --dry-run           a used guest as a clean template: what would go
  imgbuild deploy galera-3hosts.yml             a cluster: each node installed on the host it names
  imgbuild verify output/debian12              every file against SHA256SUMS, and its signature
  imgbuild publish output/debian12 --to /srv/images   an image server tree (LXC download, simplestreams)
  imgbuild inventory list                       the guests imgbuild knows of (prune: those that are gone)
  imgbuild schema > recipe.schema.json          JSON Schema for editors

Recipe keys: docs/recipes.md. Exit status: 0 ok, 1 build failed, 2 bad input, 130 interrupted.
"""


COMMANDS = {
    "build": "builder.cli.build:build",
    "validate": "builder.cli.build:validate",
    "schema": "builder.cli.build:schema",
    "cache": "builder.cli.cache:cache_group",
    "install-lxc": "builder.cli.install:install_lxc",
    "clone": "builder.cli.identity:clone",
    "sysprep": "builder.cli.sysprep:sysprep",
    "inventory": "builder.cli.inventory:inventory_group",
    "boot": "builder.cli.boot:boot",
    "deploy": "builder.cli.deploy:deploy",
    "verify": "builder.cli.verify:verify",
    "sign": "builder.cli.verify:sign",
    "publish": "builder.cli.verify:publish",
}


class _DefaultToBuild(LazyGroup):
    """`imgbuild RECIPE ...` means `imgbuild build RECIPE ...`."""

    def resolve_command(self, ctx: click.Context, args: list[str]):
        if args and args[0] not in self.list_commands(ctx) and not args[0].startswith("-"):
            return "build", self.get_command(ctx, "build"), args
        return super().resolve_command(ctx, args)


@click.group(cls=_DefaultToBuild, lazy=COMMANDS, epilog=EPILOG, context_settings={"help_option_names": ["-h",
                                                                                                        "--help"]})
@click.version_option(__version__, prog_name="imgbuild")
@verbosity
def imgbuild(verbose: int, quiet: bool, debug: bool) -> None:
    """Build a root filesystem from a YAML recipe, and the guest configs and images made from it.

    A build bootstraps the distro (mmdebstrap or debootstrap), makes device nodes, writes hostname, hosts,
    resolv.conf, network config and fstab, sets the root password, installs an init shim for containers,
    places files, runs hooks, cleans out build noise, then writes each target (a reproducible tarball, an
    LXC config ...) and output/NAME/manifest.json. Building needs root.
    """
    apply_verbosity(verbose, quiet, debug)


def main() -> None:
    run_cli(imgbuild)


if __name__ == "__main__":
    main()
