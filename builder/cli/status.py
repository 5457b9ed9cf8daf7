"""`migrate status`: what imgbuild's work looks like on a host (or on many), read only."""
from __future__ import annotations

import json
import time

import click

from builder.cli.common import apply_verbosity, verbosity
from builder.cli.fanout import fanout_options
from builder.cli.ssh import ssh_options
from builder.migrate import status as st
from builder.migrate.remote import Remote, remote_path

STATUS_EPILOG = """\b
Examples:
  migrate status vps1 --dest /usr/local/newos
  migrate status --hosts @inventory.ini:web -j 8 --dest /srv/os      (one line per host in the table)
  migrate status vps1 --json                                          (for scripts)

\b
It changes nothing on the host (one read-only script over your ssh). What the host answers is data: each
value is checked for what it should hold and printed without terminal control characters.
Exit status: 0 the host(s) answered, 1 a host could not be reached or asked (with --hosts: named), 2 bad input.
"""


@click.command("status", epilog=STATUS_EPILOG)
@click.argument("host", required=False)
@click.option("--dest", "dests", multiple=True, metavar="DIR",
              help="A tree pushed to the host (absolute): is it there, when was it pushed, is its chroot installed, "
                   "running, started at boot. Repeatable.")
@click.option("--lxcpath", default="/var/lib/lxc", show_default=True, metavar="DIR",
              help="Where the host's LXC containers are.")
@click.option("--xen-dir", default="/etc/xen", show_default=True, metavar="DIR",
              help="Where the host's Xen guest configs are.")
@click.option("--json", "as_json", is_flag=True, help="The status as JSON on stdout, for scripts.")
@fanout_options
@ssh_options
@verbosity
@click.pass_context
def status(ctx, host, dests, lxcpath, xen_dir, as_json, fan, ssh, verbose, quiet, debug) -> None:
    """What is on HOST: its name, OS, kernel, uptime and free space; each --dest tree (pushed by imgbuild and
    when, its chroot installed, running and started at boot); its LXC containers and Xen guests, running or not.
    """
    apply_verbosity(verbose, quiet, debug)
    fan.check(host)
    dests = [remote_path(d, "--dest") for d in dests]
    lxcpath, xen_dir = remote_path(lxcpath, "--lxcpath"), remote_path(xen_dir, "--xen-dir")
    if fan.many(ctx, host):
        return
    result = st.status(Remote(host, ssh), dests, lxcpath, xen_dir)
    now = time.time()
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
    else:
        for line in st.lines(result, now):
            click.echo(line)
    fan.report({"summary": st.summary(result, now)})
