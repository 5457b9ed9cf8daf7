"""The options `imgbuild clone` and `migrate reidentify` share, and how they become an identity Request."""
from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING

import click

from builder.cli.common import NONEMPTY

if TYPE_CHECKING:   # imported when a command runs: `migrate push` does not pay for the identity engine
    from builder.identity import engine
    from builder.identity.reidentify import Outcome, Where


def options(f):
    for opt in reversed([
        click.option("--hostname", help="New host name (one label; the domain of the old name is kept)."),
        click.option("--ip", "ips", multiple=True, metavar="OLD=NEW[/PREFIX][@GW]",
                     help="Change an address (and its prefix, gateway) everywhere; repeatable."),
        click.option("--mac", "macs", multiple=True, metavar="OLD=NEW|auto",
                     help="Change a MAC (OLD=NEW, OLD=auto, or auto for every MAC); repeatable."),
        click.option("--set", "variables", multiple=True, metavar="VAR=VALUE",
                     help="Template variable for the guest's imgbuild templates (VALUE read as YAML)."),
        click.option("--file", "files", multiple=True, metavar="PATH",
                     help="Also rewrite this file inside the guest (old names, addresses, MACs as whole words)."),
        click.option("--dry-run", is_flag=True, help="Show a unified diff of every change; change nothing."),
        click.option("--force", is_flag=True, help="Go on even if a MAC, IP or host name is taken, or the guest is in "
                                                   "use (mounted, attached, open, running); says who, as a warning."),
        click.option("--inventory", type=NONEMPTY, metavar="FILE",
                     help="Inventory of guests (default $IMGBUILD_INVENTORY, else /var/lib/imgbuild/inventory.yml)."),
        click.option("--lxcpath", type=NONEMPTY, default="/var/lib/lxc", show_default=True,
                     help="Where LXC containers are."),
        click.option("--xen-dir", type=NONEMPTY, default="/etc/xen", show_default=True,
                     help="Where Xen guest configs are."),
        click.option("--vz-dir", type=NONEMPTY, default="/etc/vz/conf", show_default=True,
                     help="Where OpenVZ configs are."),
        click.option("--local-mac", is_flag=True, help="Allocate locally administered MACs (02:...) instead of "
                                                       "Xen's 00:16:3e."),
        click.option("--loop", is_flag=True, help="Images: loop-mount instead of editing with debugfs."),
    ]):
        f = opt(f)
    return f


def request(hostname, ips, macs, variables, files) -> engine.Request:
    from builder.core import untrusted
    from builder.core.errors import InputError
    from builder.identity import engine
    from builder.identity.reidentify import check_hostname

    check_hostname(hostname)
    auto = "auto" in macs
    pairs = tuple(engine.parse_mac(m) for m in macs if m != "auto")
    values = []
    for v in variables:
        key, eq, text = v.partition("=")
        if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise InputError(f"--set {v}: expected VAR=VALUE, VAR a template variable's name (letters, digits, _)",
                             "e.g. --set server_id=2 --set 'peers=[10.0.3.2, 10.0.3.3]'")
        values.append((key, untrusted.load_yaml(text, f"--set {key}", what="a value",
                                                hint=f"VALUE is read as YAML: quote it, e.g. --set '{key}=\"...\"'")
                       if text else ""))
    for f in files:
        parts = f.split("/")
        if not f.startswith("/") or re.search(r"[\x00-\x1f\x7f\"]", f) or ".." in parts or "." in parts:
            raise InputError(f"--file {f!r}: not a path inside the guest (absolute, no '..', no control characters)",
                             "e.g. --file /etc/myapp.conf")
    return engine.Request(hostname=hostname, ips=tuple(engine.parse_ip(i) for i in ips), macs=pairs, mac_auto=auto,
                          variables=tuple(values), files=tuple(files))


def where(inventory, lxcpath, xen_dir, vz_dir, local_mac) -> Where:
    from builder.identity.reidentify import Where

    return Where(inventory, lxcpath, xen_dir, vz_dir, local_mac)


def report(o: Outcome, dry_run: bool) -> None:
    rec = o.record
    macs = ", ".join(f"{a} -> {b}" for a, b in o.plan.new_macs.items()) or "unchanged"
    identity = f"host name {rec.hostname}, IPs {', '.join(rec.ips) or '-'}, MACs {macs}"
    if dry_run:
        sys.stdout.write(o.plan.diff())
        click.echo(f"dry run: {o.guest.where}: {len(o.plan.edits)} file(s) would change; {identity}", err=True)
        click.echo(f"dry run: {len(o.plan.edits)} change(s) would be made; nothing was changed", err=True)
        return
    click.echo(f"{o.guest.where}: {len(o.plan.edits)} file(s) changed; {identity}", err=True)
    click.echo(str(o.guest.path))


