"""`migrate xen` (a Xen 3 guest to a Xen 4 host) and `migrate xen-bridge` (the dom0 bridge Xen 4 needs)."""
from __future__ import annotations

import re
from pathlib import Path

import click

from builder.cli.common import NONEMPTY, apply_verbosity, log, verbosity
from builder.cli.common import Path as PathType
from builder.cli.fanout import fanout_options
from builder.cli.ssh import ssh_options
from builder.core import checks
from builder.core.errors import BuilderError, InputError
from builder.core.outputs import write_atomic
from builder.guestconf import xen as xenconf
from builder.migrate import fleet, xenbridge
from builder.migrate.remote import Remote, remote_path, shown
from builder.migrate.xen import XenMoveRequest, check_request, move

XEN_EPILOG = """\b
Examples:
  migrate xen xen3host www --to xen4host --disk-map /var/xen=/srv/xen --ip 192.0.2.10=192.0.2.20
        a copy next to the running original: new IP and a new MAC (auto), in the xl config AND in the disk
  migrate xen xen3host www --to xen4host --disk-map /var/xen=/srv/xen --cutover
        the move itself: sync while it runs, shut it down on xen3host, sync the delta, start it on xen4host
        with its own IP and MAC; the downtime is measured and reported
  migrate xen localhost www --to-kvm out/www      (on the dom0) the PV guest as a KVM guest: www.qcow2 with
        its own kernel and GRUB, www.xml for libvirt; then: imgbuild boot out/www

\b
The disks travel through --stage (default /var/lib/imgbuild/migrate/NAME/): full copies, removed after a run
that succeeds (the MACs chosen stay in NAME/identity.json); --keep-stage keeps them, so a rerun sends only
changed blocks. A failed run keeps them for the rerun and says where they are.
Only image files are copied (file:, tap:aio:); block devices (phy:) are refused with what to do instead. A disk
that --disk-map does not move may not land inside the destination's system directories (/etc, /usr,
/var/spool ...; /var/lib/xen is fine).
--dry-run changes nothing on either host or here (no stage, no inventory write, no known_hosts entry).
Both hosts are reached with your ssh (same options for both; use your ssh config for per-host ports/keys).
With --to-kvm a phy: disk is read where it is: a stopped guest's device directly, a running one's LVM volume
through a snapshot (--live), a volume whose group is not active here from its extents (nothing activated).
"""


@click.command("xen", epilog=XEN_EPILOG)
@click.argument("src_host", metavar="SRC_HOST")
@click.argument("guest")
@click.option("--to", "dst_host", metavar="DST_HOST", help="The Xen 4 host to move the guest to.")
@click.option("--to-kvm", "kvm_dir", type=PathType(file_okay=False, path_type=Path), metavar="DIR",
              help="Instead: make the PV guest a KVM guest in DIR (NAME.qcow2, NAME.xml for libvirt), with a "
              "kernel and GRUB of its own; SRC_HOST is localhost (run it where the disks are). "
              "`imgbuild boot DIR` boots it.")
@click.option("--hvm", "xen_kind", flag_value="hvm", help="With --to-kvm: an xl HVM config instead of the XML.")
@click.option("--pvh", "xen_kind", flag_value="pvh", help="With --to-kvm: an xl PVH config instead of the XML.")
@click.option("--live", is_flag=True, help="With --to-kvm: the guest runs; read its LVM volumes through a "
              "snapshot (also chosen when a volume is in use).")
@click.option("--snapshot-size", default="1G", show_default=True, metavar="SIZE",
              help="With --to-kvm: room for changes while the snapshot is read (lvcreate -L).")
@click.option("--disk-map", "disk_maps", multiple=True, metavar="OLD=NEW",
              help="Where the images go on DST_HOST: an exact path or a directory prefix. Repeatable.")
@click.option("--bridge", "bridge", metavar="NAME", help="The bridge the vifs use on DST_HOST (e.g. xenbr0).")
@click.option("--bridge-map", "bridge_maps", multiple=True, metavar="OLD=NEW", help="Rename one bridge. Repeatable.")
@click.option("--ip", "ips", multiple=True, metavar="OLD=NEW[/PREFIX][@GW]", help="The copy's new address. Repeatable.")
@click.option("--mac", "macs", multiple=True, metavar="OLD=NEW|auto",
              help="The copy's new MAC (default with --ip: auto, a fresh 00:16:3e one no known guest has).")
@click.option("--hostname", help="The copy's new host name.")
@click.option("--cutover", is_flag=True, help="Move for good: shut down on SRC_HOST, final delta, start on DST_HOST.")
@click.option("--no-start", is_flag=True, help="With --cutover: do not run `xl create` on DST_HOST.")
@click.option("--stage", type=PathType(file_okay=False, path_type=Path), default=Path("/var/lib/imgbuild/migrate"),
              show_default=True, help="Local staging directory (one subdirectory per guest).")
@click.option("--xen-dir", default="/etc/xen", show_default=True, help="Where the configs are, on both hosts.")
@click.option("--keep-stage", is_flag=True, help="Keep the staged disk copies after a run that succeeds (a rerun "
              "then sends only changed blocks). Default: removed.")
@click.option("--inventory", type=NONEMPTY, metavar="FILE",
              help="Inventory of guests, for duplicate checks and MAC allocation.")
@click.option("--bwlimit", type=click.IntRange(1), metavar="KBPS", help="Bandwidth limit in KB/s.")
@click.option("-n", "--dry-run", is_flag=True, help="Check and say what would be done; change nothing anywhere.")
@click.option("--force", is_flag=True, help="Overwrite a config imgbuild did not write; allow a taken IP/MAC.")
@ssh_options
@verbosity
def xen(src_host, guest, dst_host, kvm_dir, xen_kind, live, snapshot_size,
        disk_maps, bridge, bridge_maps, ips, macs, hostname, cutover, no_start, stage,
        xen_dir, keep_stage, inventory, bwlimit, dry_run, force, ssh, verbose, quiet, debug) -> None:
    """Move or copy the Xen 3 (xm) guest GUEST from SRC_HOST to the Xen 4 host DST_HOST.

    Reads the guest's xm config on SRC_HOST, copies its images sparse, converts the config to xl (as
    convert-xen does, checked by xl's own parser) and writes it to DST_HOST's /etc/xen/NAME.cfg.
    """
    apply_verbosity(verbose, quiet, debug)
    if kvm_dir is not None or xen_kind or live:
        from builder.cli.xen_kvm import to_kvm
        return to_kvm(src_host, guest, dst_host, kvm_dir, xen_kind, live, snapshot_size, xen_dir, bridge, dry_run,
                      force)
    if not dst_host:
        raise InputError("give --to DST_HOST (the Xen 4 host), or --to-kvm DIR", "see migrate xen --help")
    try:
        dmap = xenconf.parse_map(disk_maps, "--disk-map")
        bmap = xenconf.parse_map(bridge_maps, "--bridge-map")
    except ValueError as e:
        raise InputError(str(e), "e.g. --disk-map /var/xen=/srv/xen --bridge-map xenbr0=br0") from None
    if bridge:
        bmap = [*bmap, ("*", bridge)]
    req = XenMoveRequest(guest, tuple(dmap), tuple(bmap), ips, macs, hostname, cutover, not no_start, stage,
                         remote_path(xen_dir, "--xen-dir"), dry_run, force, inventory, bwlimit, keep_stage)
    src, dst = Remote(src_host, ssh, dry_run=dry_run), Remote(dst_host, ssh, dry_run=dry_run)
    check_request(req)          # every local input before the first connection
    with src.session(), dst.session():
        r = move(src, dst, req)
    if dry_run:
        click.echo(f"dry run: would write {dst_host}:{r.config_path}; nothing was changed")
        for line in r.config_text.splitlines():      # made from the source's config: shown, never as escapes
            click.echo(shown(line, 4000))
        return
    log.info("%s:%s written; disks: %s", dst_host, r.config_path, ", ".join(d.dst for d in r.disks))
    if r.identity:
        log.info("the copy's identity: %s", r.identity)
    if r.downtime is not None:
        click.echo(f"downtime: {r.downtime:.1f} s (from the shutdown on {src_host} to "
                   f"{'xl create' if not no_start else 'the data ready'} on {dst_host})")


XEN_BRIDGE_EPILOG = """\b
Example (a Xen 3 guest moving to a CentOS 6 dom0 with Xen 4, where xl no longer makes xenbr0):
  migrate xen-bridge xen4host --iface eth0 -o review/
  (read review/ifcfg-xenbr0 and review/ifcfg-eth0, then copy them to
   /etc/sysconfig/network-scripts/ on the host from its console; chkconfig NetworkManager off)

\b
With --hosts web1,web2,@hosts.txt each host's files go to DIR/HOST/ (a table sums up).

Nothing is written on the host: the files are for review, because a mistake in them takes the host off the
network. The guest configs in /etc/xen there are read, and a bridge they name that the host would not define
is reported.
"""


@click.command("xen-bridge", epilog=XEN_BRIDGE_EPILOG)
@click.argument("host", required=False)
@click.option("--iface", default="eth0", show_default=True, help="The NIC that holds the host's address now.")
@click.option("--bridge", default="xenbr0", show_default=True, help="The bridge to make.")
@click.option("-o", "--output", "out", required=True, type=PathType(file_okay=False, path_type=Path),
              metavar="DIR", help="Local directory for the new ifcfg files.")
@click.option("--xen-dir", default="/etc/xen", show_default=True, help="Guest configs on HOST to check (absolute).")
@fanout_options
@ssh_options
@verbosity
@click.pass_context
def xen_bridge(ctx, host, iface, bridge, out, xen_dir, fan, ssh, verbose, quiet, debug) -> None:
    """Write the EL6 dom0 network files Xen 4 needs on HOST into DIR, for review: ifcfg-BRIDGE (a bridge
    holding the host's address, taken from ifcfg-IFACE) and ifcfg-IFACE enslaved to it."""
    apply_verbosity(verbose, quiet, debug)
    fan.check(host)
    try:                         # every value is checked before HOST is contacted
        xenbridge.check_names(iface, bridge)
    except ValueError as e:
        raise InputError(str(e), "e.g. --iface eth0 --bridge xenbr0") from None
    xen_dir = remote_path(xen_dir, "--xen-dir")
    checks.directory(out, "-o")
    if fan.many(ctx, host, {"out": lambda d, h: str(Path(d) / fleet.log_name(h.name))}):   # DIR/HOST/ each
        return
    r = Remote(host, ssh)
    nsdir = "/etc/sysconfig/network-scripts"
    files = r.read_glob((nsdir, "ifcfg-*"), (nsdir, f"route-{iface}"), (nsdir, f"route6-{iface}"),
                        (nsdir, f"rule-{iface}"), (xen_dir, "*.cfg"), (xen_dir, "xl.conf"))
    src = f"{nsdir}/ifcfg-{iface}"
    if src not in files:
        raise InputError(f"{host}: no {src}", "give the NIC that holds the host's address with --iface "
                         "(this command is for EL hosts with network-scripts)")
    try:
        plan = xenbridge.plan_bridge(files[src], iface, bridge, source=f"ifcfg-{iface}")
    except ValueError as e:
        raise InputError(f"{host}:{src}: {e}", "nothing to write; check the host's network files") from None
    out.mkdir(parents=True, exist_ok=True)
    for name, text in plan.files.items():
        write_atomic(out / name, text)
        click.echo(str(out / name))
    for n in plan.notes:
        log.info("%s", n)
    for extra in (f"route-{iface}", f"route6-{iface}", f"rule-{iface}"):
        if f"{nsdir}/{extra}" in files:
            log.warning("%s: %s/%s applies to %s, which will carry no address: rename it to %s-%s (and 'dev %s' "
                        "inside it)", host, nsdir, extra, iface, extra.split("-")[0], bridge, bridge)
    for p in files:
        if p.startswith(f"{nsdir}/ifcfg-{iface}:") or p.startswith(f"{nsdir}/ifcfg-{iface}-range"):
            log.warning("%s: %s adds an address to %s: move it to the bridge (ifcfg-%s...)", host, p, iface, bridge)
    default = xenbridge.DEFAULT_BRIDGE
    m = re.search(r'^\s*vif\.default\.bridge\s*=\s*"?([^"\s]+)', files.get(f"{xen_dir.rstrip('/')}/xl.conf", ""), re.M)
    if m:
        try:
            default = xenbridge.check_ifname(m.group(1), "vif.default.bridge")
        except ValueError as e:
            log.warning("%s: %s/xl.conf: %s (ignored)", host, xen_dir, shown(str(e)))
    host_ifcfg = {p: t for p, t in files.items() if p.startswith(f"{nsdir}/ifcfg-")}
    defined = xenbridge.bridges_defined({**host_ifcfg, **plan.files})
    used = {}
    for p, t in files.items():
        if p.endswith(".cfg"):
            try:
                used[p] = xenbridge.bridges_used(t, default)
            except (ValueError, BuilderError) as e:
                log.warning("%s: %s", p, shown(str(e)))
    missing = xenbridge.missing_bridges(used, defined)
    for w in missing:
        log.warning("%s: %s", host, w)
    fan.report({"summary": f"wrote {', '.join(sorted(plan.files))} to {out}"
                           + (f"; {len(missing)} bridge(s) the guests use are not defined" if missing else "")})


