"""`imgbuild boot OUTPUT`: start a built output in a throwaway runtime and say whether it came up."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from builder import boot as boot_mod
from builder.cli.common import apply_verbosity, verbosity

EPILOG = """\b
Examples:
  imgbuild boot output/debian12                  LXC (the build's lxc target), up or not, and how long it took
  imgbuild boot output/debian12 --in nspawn      the same tree under systemd-nspawn
  imgbuild boot output/debian12-vm --firmware uefi   the disk target's disk under qemu (KVM, else TCG)
  imgbuild boot output/debian12 --keep           leave it running; prints how to reach and stop it
  imgbuild boot --console /tmp/imgbuild-boot-... a kept VM's serial console on this terminal (Ctrl-] leaves)
  imgbuild boot --stop /tmp/imgbuild-boot-...    stop a kept one and remove everything it made

\b
The guest runs in a network namespace of its own, on a bridge that carries the recipe's gateway address: its
address and MAC never meet this host's network, and nothing of this host's LXC containers, bridges or
inventory is touched. Up means: systemd says running or degraded (the failed units are named), or a sysvinit
guest reached its runlevel; and, when the guest has sshd, sshd answers on the recipe's address.
Exit status: 0 up, 1 did not come up (the console's last lines are printed), 2 bad input.
"""


@click.command("boot", epilog=EPILOG)
@click.argument("output", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--in", "runtime", type=click.Choice(sorted(boot_mod.RUNTIMES)), help="The runtime (default: LXC "
              "when the build has an LXC config, else qemu when it has a disk, else nspawn).")
@click.option("--timeout", type=click.FloatRange(5, 3600), default=120, show_default=True, metavar="SECONDS",
              help="How long to wait for the guest to come up.")
@click.option("--firmware", type=click.Choice(["bios", "uefi"]), default="bios", show_default=True,
              help="qemu: SeaBIOS, or OVMF (Debian's ovmf package) for UEFI.")
@click.option("--keep", is_flag=True, help="Leave the guest running; print how to reach it and how to stop it.")
@click.option("--console", "console_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              metavar="DIR", help="Attach this terminal to the serial console of a VM --keep left (Ctrl-] leaves).")
@click.option("--stop", "stop_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), metavar="DIR",
              help="Stop a guest --keep left (the directory it printed) and remove all it made.")
@verbosity
def boot(output: Path | None, runtime: str | None, timeout: float, firmware: str, keep: bool,
         console_dir: Path | None, stop_dir: Path | None, verbose: int, quiet: bool, debug: bool) -> None:
    """Start a built OUTPUT (e.g. output/debian12) in a throwaway runtime, wait until its init system says it is
    up and its sshd answers, print a one-line verdict with the boot time, and remove everything again."""
    apply_verbosity(verbose, quiet, debug)
    if console_dir is not None:
        if output is not None or stop_dir is not None:
            raise click.UsageError("--console DIR takes nothing else")
        from builder.boot.console import attach
        attach(console_dir)
        return
    if stop_dir is not None:
        if output is not None:
            raise click.UsageError("give either OUTPUT or --stop DIR")
        for p in boot_mod.stop_kept(stop_dir):
            click.echo(f"warning: {p}", err=True)
        click.echo(f"stopped and removed {stop_dir}")
        return
    if output is None:
        raise click.UsageError("give the OUTPUT to boot (e.g. output/debian12), or --stop DIR")
    v = boot_mod.boot(output, runtime, timeout, keep, firmware=firmware)
    for line in v.console:
        click.echo(f"  console: {line}", err=True)
    click.echo(v.line())
    if v.kept:
        click.echo(f"kept: {v.kept}")
        for how in v.reach:
            click.echo(f"  reach it: {how}")
        click.echo(f"  stop it:  imgbuild boot --stop {v.kept}")
    if not v.up:
        sys.exit(1)
