"""The ssh options every command that reaches a remote host shares (push, chroot-*, xen, xen-bridge)."""
from __future__ import annotations

import functools

import click

from builder.migrate.remote import SshOptions


def ssh_options(f=None, *, checked: bool = True):
    """--port, -i, --ssh-config, --ssh-option, --accept-new-host-key: ssh is the user's own, with their config
    and keys; these only add to it. `checked=False`: the command calls ssh.check() itself, when it will use ssh
    (install-lxc only with --host)."""
    if f is None:
        return functools.partial(ssh_options, checked=checked)

    @click.option("--accept-new-host-key", is_flag=True,
                  help="Accept and record the host key of a host not yet in known_hosts (a CHANGED key is still "
                       "refused). Without it, an unknown host is refused. With --dry-run the key is accepted for "
                       "that run only (a temporary known_hosts): your known_hosts is left unchanged.")
    @click.option("--ssh-option", "ssh_option", multiple=True, metavar="KEY=VALUE",
                  help="An extra ssh -o option, e.g. --ssh-option ConnectTimeout=5. Repeatable.")
    @click.option("--ssh-config", type=click.Path(dir_okay=False, exists=True), metavar="FILE",
                  help="Use this ssh config instead of ~/.ssh/config (ssh -F).")
    @click.option("-i", "--identity", type=click.Path(dir_okay=False, exists=True), metavar="KEY",
                  help="Private key to log in with (ssh -i).")
    @click.option("--port", type=click.IntRange(1, 65535), metavar="N",
                  help="ssh port of the host (default: your ssh config, else 22).")
    @functools.wraps(f)
    def wrapper(*a, port, identity, ssh_config, ssh_option, accept_new_host_key, **kw):
        opts = SshOptions(port=port, config=ssh_config, identity=identity,
                          accept_new_host_key=accept_new_host_key, options=tuple(ssh_option))
        if checked:
            opts.check()        # before anything else: a bad option is bad input, not "cannot connect"
        return f(*a, ssh=opts, **kw)
    return wrapper
