"""`migrate chroot-*`: run a pushed OS in a chroot on a remote host, in the safe order
(an OpenVZ VPS without a console: one wrong step locks you out)."""
from __future__ import annotations

import json
from pathlib import Path

import click

from builder.cli.common import apply_verbosity, log, verbosity
from builder.cli.ssh import ssh_options
from builder.core.outputs import write_atomic
from builder.migrate import chroot as cd
from builder.migrate.push import check_dest
from builder.migrate.remote import Remote, shown

ORDER = """\b
The safe order (a VPS without a console: the host's sshd kept on a backdoor port):
  migrate push HOST --port 3843 --dest /usr/local/newos --source TREE
  migrate chroot-install HOST --port 3843 --dest /usr/local/newos --hostname chiyoda
  migrate chroot-start HOST --port 3843 --dest /usr/local/newos     (by hand: a reboot undoes it)
  ssh HOST                                                          (the new system, on its own port)
  migrate chroot-enable HOST --port 3843 --dest /usr/local/newos    (only now: started at boot)
Inside the chroot, `chroot-escape` runs a command in the host's real root; `exit` comes back.
"""


def _dest(f):
    return click.option("--dest", required=True, metavar="DIR",
                        help="The pushed tree on HOST (absolute). As for push, never / or inside the running "
                             "system's own directories, also where HOST resolves it to.")(f)


def _remote(host, ssh, dest, dry_run=False):
    """The host and the checked --dest (push's rules: never / or inside the running system's own directories;
    checked again after the host resolves it), before any connection."""
    return Remote(host, ssh, dry_run=dry_run), check_dest(dest, force=False, verb="run a chroot in", can_force=False)


def _result(f):
    """Hidden --result-json FILE: {"changed": bool, "lines": [...], "paths": [...]} for scripts (the Ansible
    collection's `chroot` module): whether the command changed (with --dry-run: would change) anything."""
    return click.option("--result-json", type=click.Path(dir_okay=False, path_type=Path), hidden=True)(f)


def _write_result(path: Path | None, changed: bool, lines: list[str], paths: list[str] | None = None) -> None:
    if path:
        write_atomic(path, json.dumps({"changed": changed, "lines": lines, "paths": paths or []}))


def _echo(text: str) -> None:
    """Print what the host's boot script said (its output: shown without terminal control characters)."""
    for line in text.rstrip().splitlines()[:500]:
        click.echo(shown(line, 1000))


@click.command("chroot-install", epilog=ORDER)
@click.argument("host")
@_dest
@click.option("--service", "services", multiple=True, metavar="NAME",
              help="An init script of the tree (/etc/init.d/NAME) to start inside, in order. Repeatable. "
                   "Default: ssh (or sshd).")
@click.option("--hostname", help="The new system's host name (default: the host's own).")
@click.option("--ssh-port", type=click.IntRange(1, 65535), metavar="N",
              help="Set Port N in the tree's sshd_config (default: leave it; 22 if it says nothing).")
@click.option("-n", "--dry-run", is_flag=True, help="Say what would be written; change nothing on HOST.")
@_result
@ssh_options
@verbosity
def chroot_install(host, dest, services, hostname, ssh_port, dry_run, result_json, ssh, verbose, quiet,
                   debug) -> None:
    """Put the boot script (DIR/usr/local/sbin/imgbuild-chroot start|stop|status) and the escape helper
    (DIR/usr/local/sbin/chroot-escape) into the tree pushed to DIR on HOST.

    The boot script bind-mounts the host's /proc, /sys, /dev, /dev/pts and /lib/modules, runs `mount -a`
    inside and starts the services; `stop` undoes all of it. Both are idempotent. Nothing is started and
    nothing starts at boot: see chroot-start and chroot-enable.

    The per-host files a push does not send are given to the tree where it has none: its own ssh host keys and
    machine-id, a host name, the host's resolv.conf and hosts, an fstab that leaves mounting to the host and a
    loopback-only network config (the chroot shares the host's network).
    """
    apply_verbosity(verbose, quiet, debug)
    remote, dest = _remote(host, ssh, dest, dry_run)
    req = cd.InstallRequest(dest, services, hostname, ssh_port, dry_run)
    cd.check_install(req)
    with remote.session():
        done, changed = cd.install_changes(remote, req)
    for line in done:
        click.echo(("would " if dry_run else "") + line)
    _write_result(result_json, bool(changed), done, changed)


@click.command("chroot-start", epilog=ORDER)
@click.argument("host")
@_dest
@click.option("--check-port", "ports", multiple=True, type=click.IntRange(1, 65535), metavar="N",
              help="Another port the new system will listen on: refuse if the host uses it. Repeatable.")
@click.option("--wait", type=click.FloatRange(1, 600), default=15, show_default=True, metavar="SECONDS",
              help="How long to wait for the new sshd to answer.")
@click.option("-n", "--dry-run", is_flag=True, help="Check the ports and say what would run; start nothing.")
@_result
@ssh_options
@verbosity
def chroot_start(host, dest, ports, wait, dry_run, result_json, ssh, verbose, quiet, debug) -> None:
    """Start the OS in DIR on HOST once, by hand, and check that it answers.

    Before starting, the host's listening services are listed; a port the new system needs (its sshd's Port,
    --check-port) that a host process holds is refused, naming the port and the process. After starting, the
    new sshd must answer on its port AND the host's own sshd (the one this command logs in through) must
    still answer. Nothing is set to start at boot: a reboot brings the old state back.
    """
    apply_verbosity(verbose, quiet, debug)
    remote, dest = _remote(host, ssh, dest, dry_run)
    with remote.session():
        r = cd.start(remote, dest, tuple(ports), dry_run, wait)
    if dry_run:
        click.echo(f"ports free for the new system on {host}: {r.new_port}"
                   f"{' (already running)' if r.already_running else ''}; would run {dest}{cd.BOOT} start")
        _write_result(result_json, not r.already_running, [] if r.already_running else [f"start {dest}"])
        return
    _echo(r.output)
    cd.check_started(r, host)
    log.info("%s: the new system answers on %s:%d (%s); the host's sshd still answers on %d",
             host, r.address, r.new_port, r.new_banner, r.backdoor_port)
    log.info("when it works as it should: migrate chroot-enable %s --dest %s", host, dest)
    _write_result(result_json, not r.already_running, r.output.splitlines())


@click.command("chroot-stop")
@click.argument("host")
@_dest
@click.option("-n", "--dry-run", is_flag=True, help="Say what would stop; change nothing.")
@_result
@ssh_options
@verbosity
def chroot_stop(host, dest, dry_run, result_json, ssh, verbose, quiet, debug) -> None:
    """Stop the OS in DIR on HOST: its services, every process left in it, and its mounts."""
    apply_verbosity(verbose, quiet, debug)
    remote, dest = _remote(host, ssh, dest, dry_run)
    with remote.session():
        text, was_up = cd.stop_changes(remote, dest, dry_run)
    _echo(text)
    _write_result(result_json, was_up, text.splitlines())


@click.command("chroot-status")
@click.argument("host")
@_dest
@ssh_options
@verbosity
def chroot_status(host, dest, ssh, verbose, quiet, debug) -> None:
    """What of the OS in DIR on HOST is mounted and running."""
    apply_verbosity(verbose, quiet, debug)
    remote, dest = _remote(host, ssh, dest)
    _echo(cd.status(remote, dest))


@click.command("chroot-enable", epilog=ORDER)
@click.argument("host")
@_dest
@click.option("--via", type=click.Choice(["unit", "rc.local"]),
              help="How to start it at boot (default: a systemd unit if the host runs systemd, else rc.local).")
@click.option("-n", "--dry-run", is_flag=True, help="Show what would be written; change nothing.")
@_result
@ssh_options
@verbosity
def chroot_enable(host, dest, via, dry_run, result_json, ssh, verbose, quiet, debug) -> None:
    """Start the OS in DIR at HOST's boot: a systemd unit, or a marked block in rc.local (nothing else in it is
    touched). Do this only after chroot-start worked."""
    apply_verbosity(verbose, quiet, debug)
    remote, dest = _remote(host, ssh, dest, dry_run)
    with remote.session():
        text, changed = cd.enable_changes(remote, dest, via, dry_run)
    click.echo(text)
    _write_result(result_json, changed, text.splitlines())


@click.command("chroot-disable")
@click.argument("host")
@_dest
@click.option("-n", "--dry-run", is_flag=True, help="Show what would be removed; change nothing.")
@_result
@ssh_options
@verbosity
def chroot_disable(host, dest, dry_run, result_json, ssh, verbose, quiet, debug) -> None:
    """Undo chroot-enable: remove exactly the unit or the rc.local block it wrote. A running chroot keeps
    running (chroot-stop stops it)."""
    apply_verbosity(verbose, quiet, debug)
    remote, dest = _remote(host, ssh, dest, dry_run)
    with remote.session():
        done = cd.disable(remote, dest, dry_run)
    for line in done or ["nothing to undo: it is not set to start at boot"]:
        click.echo(("would " if dry_run and done else "") + line)
    _write_result(result_json, bool(done), done)


