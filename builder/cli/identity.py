"""`imgbuild clone` and `migrate reidentify`: their shared options, and how they become an identity Request."""
from __future__ import annotations

import re
import sys

import click

from builder.cli.common import NONEMPTY, apply_verbosity, verbosity
from builder.core import untrusted
from builder.core.errors import InputError
from builder.identity import engine
from builder.identity.guest import locate
from builder.identity.reidentify import Outcome, Where, check_hostname
from builder.identity.reidentify import clone as do_clone
from builder.identity.reidentify import reidentify as do


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
                     help="Inventory of guests (default $IMGBUILD_INVENTORY, else /var/lib/imgbuild/inventory.db)."),
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


CLONE_EPILOG = """\b
Examples:
  imgbuild clone /var/lib/lxc/vm0 vm1 --ip 10.0.3.2=10.0.3.3            LXC container vm0 -> vm1, new MAC
  imgbuild clone lxc:vm0 vm2 --ip 10.0.3.2=10.0.3.4 --set server_id=3   also re-render the guest's templates
  imgbuild clone /etc/xen/www.cfg www2 --ip 192.0.2.10=192.0.2.11 --dry-run
  imgbuild clone output/debian12/debian12.ext4 /srv/img/web1.ext4 --hostname web1

SRC: an LXC container (dir or lxc:NAME), a Xen .cfg (its image is copied too), an ext2/3/4 image, an imgbuild
output directory or a root directory. Every MAC gets a fresh one (unless given); IPs change as --ip says.
"""


@click.command("clone", epilog=CLONE_EPILOG)
@click.argument("src")
@click.argument("new")
@options
@verbosity
def clone(src, new, hostname, ips, macs, variables, files, dry_run, force, inventory, lxcpath, xen_dir, vz_dir,
          local_mac, loop, verbose, quiet, debug) -> None:
    """Copy SRC to NEW and give the copy its own identity: host name (default: NEW's name), IPs, MACs (fresh
    ones), machine-id, ssh host keys, DHCP leases, and the guest's templates, in the guest and in its config.

    A MAC, IP or host name another guest already has (in the inventory, or in the LXC, Xen and OpenVZ configs
    of this host) is refused, naming both guests. The copy keeps owners, modes, devices, hardlinks, xattrs,
    ACLs, capabilities and holes, as cp -a does, copying several files at once; no link in the guest is followed.
    The new guest is recorded in the inventory.
    """
    apply_verbosity(verbose, quiet, debug)
    req = request(hostname, ips, macs, variables, files)
    w = where(inventory, lxcpath, xen_dir, vz_dir, local_mac)
    report(do_clone(src, new, req, w, dry_run=dry_run, force=force, loop=loop), dry_run)


REIDENTIFY_EPILOG = """\b
Examples:
  migrate reidentify /var/lib/lxc/vm1 --hostname vm1 --ip 10.0.3.2=10.0.3.3 --mac auto
  migrate reidentify /etc/xen/www.cfg --ip 192.0.2.10=198.51.100.10/24@198.51.100.1 --mac auto --dry-run
  migrate reidentify /srv/img/web1.ext4 --hostname web1          (edited with debugfs, nothing mounted)

Run twice with the same options, the second run changes nothing.
"""


@click.command("reidentify", epilog=REIDENTIFY_EPILOG)
@click.argument("target")
@options
@verbosity
def reidentify(target, hostname, ips, macs, variables, files, dry_run, force, inventory, lxcpath, xen_dir, vz_dir,
               local_mac, loop, verbose, quiet, debug) -> None:
    """Give the guest at TARGET a new identity in place: host name, IPs, MACs, in the guest's files (hostname,
    hosts, ifcfg, interfaces, networkd, NetworkManager, netplan, udev rules) and in its config (LXC, Xen,
    OpenVZ); machine-id emptied, ssh host keys made anew, DHCP leases dropped, templates rendered again.

    A MAC, IP or host name that another guest has is refused, naming both. --dry-run shows every change as a
    unified diff and writes nothing.
    """
    apply_verbosity(verbose, quiet, debug)
    req = request(hostname, ips, macs, variables, files)
    w = where(inventory, lxcpath, xen_dir, vz_dir, local_mac)
    g = locate(target, lxcpath, vz_dir)
    report(do(g, req, w, dry_run=dry_run, force=force, loop=loop), dry_run)
