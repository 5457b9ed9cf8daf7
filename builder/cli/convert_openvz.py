"""`migrate convert-openvz`: an OpenVZ VPS (CTID.conf + private area) made an LXC container on this host."""
from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import click

from builder.cli.common import apply_verbosity, log, verbosity
from builder.core.errors import InputError
from builder.identity import inventory
from builder.migrate import openvz

EPILOG = """\b
Examples:
  migrate convert-openvz /etc/vz/conf/101.conf --to lxc --gateway 10.0.3.1 --dry-run
        the plan: the LXC config, every guest file it would change (as a diff), the notes; nothing changed
  migrate convert-openvz /etc/vz/conf/101.conf --to lxc --gateway 10.0.3.1
        makes /var/lib/lxc/101 (NAME= of the config, else the CTID) from a copy of /vz/private/101
  migrate convert-openvz backup/101.conf --private backup/101 --to lxc --name www --bridge br0

\b
What becomes what:
  IP_ADDRESS (venet0)     a veth NIC (eth0) on --bridge with a fresh MAC; the addresses in the guest's own
                          network files (Debian /etc/network/interfaces, EL ifcfg-eth0), venet0's removed
  HOSTNAME                lxc.uts.name, /etc/hostname (EL: /etc/sysconfig/network)
  NAMESERVER/SEARCHDOMAIN /etc/resolv.conf of the guest
  PHYSPAGES/SWAPPAGES     memory cgroup limits (RAM; RAM + swap)
  CPUS/CPULIMIT/CPUUNITS  cpu quota (the smaller of the two) and weight; CPUMASK: cpuset; NUMPROC: pids
  ONBOOT=yes              lxc.start.auto = 1
  the rest                listed as notes (disk quotas, beancounters, features ...)
The guest's console gets a getty (systemd: console-getty; EL6 upstart; sysvinit inittab) and its fstab loses
the OpenVZ root (simfs/ploop) line.

\b
Exit status: 0 converted (or planned), 2 bad input: an unreadable or hostile CTID.conf, no private area, or a
duplicate (the container was converted before; its name, host name or an address belongs to a guest
imgbuild knows of), 1 a failure while copying.
"""


def _ifname(value: str, what: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", value):
        raise InputError(f"{what} {value!r}: not an interface name (1-15 letters, digits, '_', '.', '-')",
                         "e.g. --bridge lxcbr0")
    return value


@click.command("convert-openvz", epilog=EPILOG)
@click.argument("conf", metavar="CTID.conf", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--to", "to", type=click.Choice(["lxc"]), required=True, help="What the VPS becomes: lxc.")
@click.option("--private", type=click.Path(file_okay=False, path_type=Path),
              help="The VPS's private area (its files). Default: VE_PRIVATE of the config (/vz/private/CTID).")
@click.option("--name", help="The LXC container's name. Default: NAME= of the config, else the CTID.")
@click.option("--lxcpath", default=inventory.DEFAULT_LXCPATH, show_default=True,
              help="Where LXC keeps its containers; the container is made there.")
@click.option("--bridge", default=openvz.DEFAULT_BRIDGE, show_default=True,
              help="The host bridge the new NIC is attached to (what the LXC target uses by default).")
@click.option("--gateway", "gateways", multiple=True, metavar="ADDR",
              help="The guest's default route (under OpenVZ the host routed it): usually the bridge's address. "
                   "One per IP version.")
@click.option("--prefix", "prefix4", type=click.IntRange(8, 31), default=24, show_default=True,
              help="Prefix length of the VPS's IPv4 addresses on the bridge (venet gave each a /32).")
@click.option("--prefix6", type=click.IntRange(16, 127), default=64, show_default=True,
              help="Prefix length of its IPv6 addresses.")
@click.option("--cgroup", type=click.Choice(["auto", "v1", "v2"]), default="auto", show_default=True,
              help="Write the limits and device rules as cgroup v1 or v2 keys; auto: what this host uses.")
@click.option("--inventory", "inventory_file", metavar="FILE",
              help="The guest inventory (default $IMGBUILD_INVENTORY, else /var/lib/imgbuild/inventory.db).")
@click.option("--xen-dir", default=inventory.DEFAULT_XEN_DIR, show_default=True,
              help="Xen guest configs on this host, checked for duplicates.")
@click.option("--vz-dir", default=inventory.DEFAULT_VZ_DIR, show_default=True,
              help="OpenVZ configs on this host, checked for duplicates (the VPS itself is left out).")
@click.option("--local-mac", is_flag=True, help="A locally administered MAC (02:...) instead of one in 00:16:3e.")
@click.option("--dry-run", is_flag=True, help="Print the plan and change nothing.")
@verbosity
def convert_openvz(conf: Path, to: str, private: Path | None, name: str | None, lxcpath: str, bridge: str,
                   gateways: tuple[str, ...], prefix4: int, prefix6: int, cgroup: str, inventory_file: str | None,
                   xen_dir: str, vz_dir: str, local_mac: bool, dry_run: bool, verbose: int, quiet: bool,
                   debug: bool) -> None:
    """Make an OpenVZ VPS an LXC container on this host.

    CTID.conf is read as data (never run); the private area is copied (the original is only read) and the copy
    fixed for LXC: venet0's network config becomes eth0's in the guest's own format, the host name, resolv.conf,
    a console getty, the fstab. The container's host name, addresses and new MAC are checked against every
    guest imgbuild knows of and recorded in the inventory: converting the same VPS twice is refused.
    """
    apply_verbosity(verbose, quiet, debug)
    _ifname(bridge, "--bridge")
    seen = set()
    for g in gateways:
        try:
            v = ipaddress.ip_address(g).version
        except ValueError:
            raise InputError(f"--gateway {g!r}: not an IP address", "e.g. --gateway 10.0.3.1") from None
        if v in seen:
            raise InputError(f"--gateway: two IPv{v} gateways", "give one per IP version")
        seen.add(v)
    if not lxcpath or not str(lxcpath).startswith("/"):
        raise InputError(f"--lxcpath {lxcpath!r}: not an absolute path", "e.g. --lxcpath /var/lib/lxc")
    opts = openvz.Options(private=private, name=name, lxcpath=lxcpath, bridge=bridge, gateways=gateways,
                          prefix4=prefix4, prefix6=prefix6, cgroup=cgroup, inventory_file=inventory_file,
                          xen_dir=xen_dir, vz_dir=vz_dir, local_mac=local_mac)
    if dry_run:
        plan = openvz.dry_run(conf, opts)
        click.echo("dry run: nothing is changed\n" + plan.describe(), nl=False)
        return
    plan = openvz.convert(conf, opts)
    click.echo(plan.describe(), nl=False)
    log.info("converted: start it with lxc-start -P %s -n %s", plan.dest.parent, plan.name)
