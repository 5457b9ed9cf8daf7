"""`migrate chroot-*`: run a pushed OS in a chroot on a remote host, in the safe order
(an OpenVZ VPS without a console: one wrong step locks you out)."""
from __future__ import annotations

import click

from builder.cli.common import apply_verbosity, log, verbosity
from builder.cli.fanout import FanOut, fanout_options
from builder.cli.ssh import ssh_options
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
Many hosts at once: --hosts web1,web2,@hosts.txt -j N instead of HOST (a table sums up; logs under --logs).
"""


def _dest(f):
    return click.option("--dest", required=True, metavar="DIR",
                        help="The pushed tree on HOST (absolute). As for push, never / or inside the running "
                             "system's own directories, also where HOST resolves it to.")(f)


def _remote(ctx, fan, host, ssh, dest, dry_run=False, check=None):
    """The host and the checked --dest (push's rules: never / or inside the running system's own directories;
    checked again after the host resolves it), before any connection; `check`: the command's own local checks.
    None when --hosts ran the command for every host (the caller is done)."""
    fan.check(host)
    dest = check_dest(dest, force=False, verb="run a chroot in", can_force=False)
    if check:
        check()
    if fan.many(ctx, host):
        return None, dest
    return Remote(host, ssh, dry_run=dry_run), dest


def _result(fan: FanOut, changed: bool, lines: list[str], summary: str, paths: list[str] | None = None) -> None:
    """What the command did, for the --hosts table (summary) and for scripts such as the Ansible collection's
    `chroot` module (the hidden --result-json FILE: {"changed", "lines", "paths", "summary"}): whether it
    changed (with --dry-run: would change) anything."""
    fan.report({"changed": changed, "lines": lines, "paths": paths or [], "summary": summary})


def _echo(text: str) -> None:
    """Print what the host's boot script said (its output: shown without terminal control characters)."""
    for line in text.rstrip().splitlines()[:500]:
        click.echo(shown(line, 1000))


@click.command("chroot-install", epilog=ORDER)
@click.argument("host", required=False)
@_dest
@click.option("--service", "services", multiple=True, metavar="NAME",
              help="An init script of the tree (/etc/init.d/NAME) to start inside, in order. Repeatable. "
                   "Default: ssh (or sshd).")
@click.option("--hostname", help="The new system's host name (default: the host's own).")
@click.option("--ssh-port", type=click.IntRange(1, 65535), metavar="N",
              help="Set Port N in the tree's sshd_config (default: leave it; 22 if it says nothing).")
@click.option("-n", "--dry-run", is_flag=True, help="Say what would be written; change nothing on HOST.")
@fanout_options
@ssh_options
@verbosity
@click.pass_context
def chroot_install(ctx, host, dest, services, hostname, ssh_port, dry_run, fan, ssh, verbose, quiet,
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
    remote, checked = _remote(ctx, fan, host, ssh, dest, dry_run,
                              lambda: cd.check_install(cd.InstallRequest(dest, services, hostname, ssh_port, dry_run)))
    if remote is None:
        return
    req = cd.InstallRequest(checked, services, hostname, ssh_port, dry_run)
    with remote.session():
        done, changed = cd.install_changes(remote, req)
    for line in done:
        click.echo(("would " if dry_run else "") + line)
    verb = ("would install" if dry_run else "installed") if changed else "already installed"
    _result(fan, bool(changed), done, f"{verb}: the boot script in {checked}", changed)


@click.command("chroot-start", epilog=ORDER)
@click.argument("host", required=False)
@_dest
@click.option("--check-port", "ports", multiple=True, type=click.IntRange(1, 65535), metavar="N",
              help="Another port the new system will listen on: refuse if the host uses it. Repeatable.")
@click.option("--wait", type=click.FloatRange(1, 600), default=15, show_default=True, metavar="SECONDS",
              help="How long to wait for the new sshd to answer.")
@click.option("-n", "--dry-run", is_flag=True, help="Check the ports and say what would run; start nothing.")
@fanout_options
@ssh_options
@verbosity
@click.pass_context
def chroot_start(ctx, host, dest, ports, wait, dry_run, fan, ssh, verbose, quiet, debug) -> None:
    """Start the OS in DIR on HOST once, by hand, and check that it answers.

    Before starting, the host's listening services are listed; a port the new system needs (its sshd's Port,
    --check-port) that a host process holds is refused, naming the port and the process. After starting, the
    new sshd must answer on its port AND the host's own sshd (the one this command logs in through) must
    still answer. Nothing is set to start at boot: a reboot brings the old state back.
    """
    apply_verbosity(verbose, quiet, debug)
    remote, dest = _remote(ctx, fan, host, ssh, dest, dry_run)
    if remote is None:
        return
    with remote.session():
        r = cd.start(remote, dest, tuple(ports), dry_run, wait)
    if dry_run:
        click.echo(f"ports free for the new system on {host}: {r.new_port}"
                   f"{' (already running)' if r.already_running else ''}; would run {dest}{cd.BOOT} start")
        _result(fan, not r.already_running, [] if r.already_running else [f"start {dest}"],
                "already running" if r.already_running else f"would start; port {r.new_port} free")
        return
    _echo(r.output)
    cd.check_started(r, host)
    log.info("%s: the new system answers on %s:%d (%s); the host's sshd still answers on %d",
             host, r.address, r.new_port, r.new_banner, r.backdoor_port)
    log.info("when it works as it should: migrate chroot-enable %s --dest %s", host, dest)
    _result(fan, not r.already_running, r.output.splitlines(),
            f"{'was running' if r.already_running else 'started'}; answers on port {r.new_port}")


@click.command("chroot-stop")
@click.argument("host", required=False)
@_dest
@click.option("-n", "--dry-run", is_flag=True, help="Say what would stop; change nothing.")
@fanout_options
@ssh_options
@verbosity
@click.pass_context
def chroot_stop(ctx, host, dest, dry_run, fan, ssh, verbose, quiet, debug) -> None:
    """Stop the OS in DIR on HOST: its services, every process left in it, and its mounts."""
    apply_verbosity(verbose, quiet, debug)
    remote, dest = _remote(ctx, fan, host, ssh, dest, dry_run)
    if remote is None:
        return
    with remote.session():
        text, was_up = cd.stop_changes(remote, dest, dry_run)
    _echo(text)
    _result(fan, was_up, text.splitlines(), ("would stop" if dry_run else "stopped") if was_up else "not running")


@click.command("chroot-status")
@click.argument("host", required=False)
@_dest
@fanout_options
@ssh_options
@verbosity
@click.pass_context
def chroot_status(ctx, host, dest, fan, ssh, verbose, quiet, debug) -> None:
    """What of the OS in DIR on HOST is mounted and running."""
    apply_verbosity(verbose, quiet, debug)
    remote, dest = _remote(ctx, fan, host, ssh, dest)
    if remote is None:
        return
    text = cd.status(remote, dest)
    _echo(text)
    _result(fan, False, text.splitlines(), shown(" / ".join(text.strip().splitlines()[:3]), 200))


@click.command("chroot-enable", epilog=ORDER)
@click.argument("host", required=False)
@_dest
@click.option("--via", type=click.Choice(["unit", "rc.local"]),
              help="How to start it at boot (default: a systemd unit if the host runs systemd, else rc.local).")
@click.option("-n", "--dry-run", is_flag=True, help="Show what would be written; change nothing.")
@fanout_options
@ssh_options
@verbosity
@click.pass_context
def chroot_enable(ctx, host, dest, via, dry_run, fan, ssh, verbose, quiet, debug) -> None:
    """Start the OS in DIR at HOST's boot: a systemd unit, or a marked block in rc.local (nothing else in it is
    touched). Do this only after chroot-start worked."""
    apply_verbosity(verbose, quiet, debug)
    remote, dest = _remote(ctx, fan, host, ssh, dest, dry_run)
    if remote is None:
        return
    with remote.session():
        text, changed = cd.enable_changes(remote, dest, via, dry_run)
    click.echo(text)
    _result(fan, changed, text.splitlines(), text.splitlines()[0] if text else "")


@click.command("chroot-disable")
@click.argument("host", required=False)
@_dest
@click.option("-n", "--dry-run", is_flag=True, help="Show what would be removed; change nothing.")
@fanout_options
@ssh_options
@verbosity
@click.pass_context
def chroot_disable(ctx, host, dest, dry_run, fan, ssh, verbose, quiet, debug) -> None:
    """Undo chroot-enable: remove exactly the unit or the rc.local block it wrote. A running chroot keeps
    running (chroot-stop stops it)."""
    apply_verbosity(verbose, quiet, debug)
    remote, dest = _remote(ctx, fan, host, ssh, dest, dry_run)
    if remote is None:
        return
    with remote.session():
        done = cd.disable(remote, dest, dry_run)
    for line in done or ["nothing to undo: it is not set to start at boot"]:
        click.echo(("would " if dry_run and done else "") + line)
    _result(fan, bool(done), done, ("would " if dry_run and done else "") + (done[0] if done else "nothing to undo"))


