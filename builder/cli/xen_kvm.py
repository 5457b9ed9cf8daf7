"""`migrate xen ... --to-kvm DIR [--hvm|--pvh]`: the options of `migrate xen` that make a PV guest a full VM."""
from __future__ import annotations

from pathlib import Path

import click

from builder.cli.common import log
from builder.core.errors import InputError
from builder.migrate.remote import shown
from builder.migrate.xen_kvm import KvmRequest, convert
from builder.migrate.xenbridge import check_ifname

LOCAL = ("localhost", "127.0.0.1", "::1", "-")


def to_kvm(src_host: str, guest: str, dst_host: str | None, out: Path | None, kind: str | None, live: bool,
           snapshot_size: str, xen_dir: str, bridge: str | None, dry_run: bool, force: bool) -> None:
    if out is None:
        raise InputError("--hvm, --pvh and --live go with --to-kvm DIR", "e.g. migrate xen localhost www --to-kvm "
                         "out/www --hvm")
    if dst_host:
        raise InputError("--to and --to-kvm do not go together", "--to moves to a Xen 4 host; --to-kvm converts here")
    if src_host not in LOCAL:
        raise InputError(f"--to-kvm reads the guest's disks on this host, not on {shown(src_host)}",
                         "run it on the dom0 (or a host that sees the guest's volumes) with SRC_HOST localhost")
    if not snapshot_size[:-1].isdigit() or snapshot_size[-1:] not in ("M", "G", "m", "g"):
        raise InputError(f"--snapshot-size {shown(snapshot_size)!r}: a size such as 512M or 2G", "e.g. 1G")
    if bridge:
        try:
            check_ifname(bridge, "--bridge")
        except ValueError as e:
            raise InputError(str(e), "e.g. --bridge br0") from None
    cands = [Path(guest)] if guest.startswith("/") else [Path(xen_dir) / guest, Path(xen_dir) / f"{guest}.cfg"]
    cfg = next((c for c in cands if c.is_file()), None)
    if cfg is None:
        raise InputError(f"no Xen config for {shown(guest)!r} (looked at {', '.join(map(str, cands))})",
                         "give the guest's name as in --xen-dir, or the config's absolute path")
    p = convert(KvmRequest(cfg, out, kind or "kvm", live, snapshot_size, bridge, dry_run, force))
    for n in p.notes:
        log.info("%s", n)
    if dry_run:
        click.echo(f"dry run: would write {', '.join(str(out / o) for o in p.outputs)}; nothing was changed")
        return
    click.echo(f"{p.name}: written to {out}: {', '.join(p.outputs)} (was booted by {p.boot})")
    if (kind or "kvm") == "kvm":
        click.echo(f"  try it: imgbuild boot {out}    define it: virsh define {out / (p.name + '.xml')}")
