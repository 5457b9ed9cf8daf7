"""`migrate`: move OS trees and guests between hosts. The commands arrive with later work (push, chroot
deploy, Xen 3 to Xen 4); this group is their home."""
from __future__ import annotations

import click

from . import __version__
from .cli_common import apply_verbosity, run_cli, verbosity


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="migrate")
@verbosity
def migrate(verbose: int, quiet: bool, debug: bool) -> None:
    """Move OS trees and guests between hosts (rsync over ssh, chroot deploys, Xen 3 to Xen 4).

    No subcommands yet: this release builds images (see `imgbuild --help`).
    """
    apply_verbosity(verbose, quiet, debug)


def main() -> None:
    run_cli(migrate)
