"""`migrate`: the command group that moves OS trees and guests between hosts. Each command lives in its own
module of builder/cli/ (COMMANDS), imported when it runs."""
from __future__ import annotations

import click

from builder import __version__
from builder.cli.common import apply_verbosity, run_cli, verbosity
from builder.cli.lazy import LazyGroup

COMMANDS = {
    "push": "builder.cli.push:push",
    "status": "builder.cli.status:status",
    **{f"chroot-{c}": f"builder.cli.chroot:chroot_{c}" for c in ("install", "start", "stop", "status", "enable",
                                                                  "disable")},
    "xen": "builder.cli.xen:xen",
    "xen-bridge": "builder.cli.xen:xen_bridge",
    "reidentify": "builder.cli.identity:reidentify",
    "convert-lxc": "builder.cli.convert:convert_lxc",
    "convert-xen": "builder.cli.convert:convert_xen",
    "convert-openvz": "builder.cli.convert_openvz:convert_openvz",
}


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="migrate")
@verbosity
def migrate(verbose: int, quiet: bool, debug: bool) -> None:
    """Move OS trees and guests between hosts, and their configs between tool generations.

    \b
    push            a whole OS tree to a directory on a host (rsync over your ssh), safely for a running host
    status          what is on a host: its OS, pushed trees and their chroots, LXC and Xen guests (read only)
    chroot-*        run a pushed OS in a chroot there: install, start (by hand), enable at boot, stop, disable
    xen             a Xen 3 guest to a Xen 4 host: disks, xl config, a new identity or a cutover
    xen-bridge      the dom0 bridge files a Xen 4 EL6 host needs, for review
    reidentify      a guest's host name, IPs and MACs, everywhere they live
    convert-lxc     LXC configs between LXC 0.7-2.0 and 2.1+ keys
    convert-xen     Xen 3 xm configs to Xen 4 xl
    convert-openvz  an OpenVZ VPS (CTID.conf + private area) to an LXC container, checked against the inventory

    Every command that changes a remote host has --dry-run. push, status, chroot-* and xen-bridge take --hosts LIST
    -j N for many hosts at once: a table sums up, each host's log is kept. Images are built by imgbuild
    (`imgbuild --help`).
    """
    apply_verbosity(verbose, quiet, debug)


def main() -> None:
    run_cli(migrate)


if __name__ == "__main__":
    main()
