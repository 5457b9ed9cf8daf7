"""clone and reidentify: the identity engine run on a located guest, in one inventory transaction.

Every MAC, IP and host name the guest will have is checked against the inventory and the guest configs on this
host (LXC, Xen, OpenVZ) before anything is written; a taken one is refused naming both guests (unless --force).
The inventory's write transaction is held from the check to the record, so two clones at once cannot take the
same MAC; the check reads only the inventory rows that share a MAC, IP or host name with the guest (indexed).

A guest in use is not touched: an image that is mounted, attached to a loop device, open in another process,
the disk of a running Xen domain or LXC container, or whose journal needs recovery; a tree a running container
or chroot runs from (builder.identity.inuse). The source of a clone is only read: it is refused only while
something may be writing to it (a read-write mount, a running guest), as lxc-copy and virt-clone refuse a running
original - the copy would be a snapshot of a live system. --force goes on anyway, with a warning.

A dry run is the run minus the writes: the same checks and the same allocated MACs (drawn per guest from
inventory.mac_rng), and nothing written anywhere - no inventory, no copy.
"""
from __future__ import annotations

import contextlib
import ipaddress
import shutil
from dataclasses import dataclass
from pathlib import Path

from builder.core.checks import hostname
from builder.core.errors import InputError
from builder.identity import engine, inventory
from builder.identity.guest import (
    Guest,
    config_text,
    copy,
    locate,
    lxc_copy_config,
    lxc_dest,
    new_name,
    open_tree,
    refuse_in_use,
)


@dataclass(frozen=True)
class Where:
    """Where to look for other guests, and where the inventory is."""

    inventory_file: str | None = None
    lxcpath: str = inventory.DEFAULT_LXCPATH
    xen_dir: str = inventory.DEFAULT_XEN_DIR
    vz_dir: str = inventory.DEFAULT_VZ_DIR
    local_mac: bool = False


@dataclass
class Outcome:
    guest: Guest
    plan: engine.Plan
    record: inventory.GuestRecord
    applied: bool


def _record(g: Guest, cur: engine.Current, p: engine.Plan) -> inventory.GuestRecord:
    r = p.rename
    ips = [str(r.ips[ipaddress.ip_address(a)].ip) if ipaddress.ip_address(a) in r.ips else a for a in cur.ips]
    macs = [r.macs.get(m, m) for m in cur.macs]
    return inventory.GuestRecord(name=g.name, hostname=r.hostname or cur.hostname, ips=ips, macs=macs, where=g.where)


def _origins(cur: engine.Current, p: engine.Plan) -> dict[str, str]:
    """Each new IP and MAC -> the guest's own value it replaces (a refusal's hint says --ip OLD=NEW)."""
    r = p.rename
    out = {str(r.ips[ipaddress.ip_address(a)].ip): a for a in cur.ips if ipaddress.ip_address(a) in r.ips}
    return out | {r.macs[m]: m for m in cur.macs if m in r.macs}


def _check(rec: inventory.GuestRecord, known: inventory.Known, force: bool, say: bool = True,
           inventory_file: Path | None = None, origins: dict[str, str] | None = None) -> None:
    inventory.refuse_taken(rec, known.near(rec), force, inventory_file, warn=say, origins=origins)


def _known(inv: inventory.Inventory, where: Where, source: inventory.GuestRecord | None) -> inventory.Known:
    """Both views of every guest: what the inventory remembers (addresses inside the guests, which configs
    often do not carry; queried by index for the candidate, never read whole) and what the configs on this host
    say now. Not merged: a guest found in both is checked against both records (conflicts() reports it once)."""
    return inv.known([*inventory.discover(where.lxcpath, where.xen_dir, where.vz_dir), *([source] if source else [])])


def _inventory(where: Where, dry_run: bool) -> contextlib.AbstractContextManager[inventory.Inventory]:
    """The inventory in one write transaction for a run (committed at the end); for a dry run read as it is, no
    lock taken (a dry run writes nothing: no store created, no YAML inventory migrated, no directory made)."""
    if dry_run:
        return inventory.load(where.inventory_file)
    return inventory.locked(where.inventory_file)


def reidentify(g: Guest, req: engine.Request, where: Where, dry_run: bool = False, force: bool = False,
               loop: bool = False, new_guest: bool = False, source: inventory.GuestRecord | None = None,
               config_as: tuple[str, str] | None = None, precheck: bool = False, alloc_key: str | None = None,
               check_use: bool = True, prechecked: bool = False) -> Outcome:
    """`alloc_key`: whose MAC draws these are (default the guest's `where`; a clone's are its destination's in the
    dry run and the run alike). `check_use`: refuse a guest in use first (refuse_in_use). A run is first done
    as a dry run (unless `prechecked`: the caller did that), so bad input (the guest's own files, a taken
    identity, an unreadable inventory) is refused before anything is written, not even the inventory."""
    if check_use:
        refuse_in_use(g, where.lxcpath, force, writing=True)
    if not dry_run and not prechecked:
        reidentify(g, req, where, dry_run=True, force=force, loop=loop, new_guest=new_guest, source=source,
                   config_as=config_as, precheck=True, alloc_key=alloc_key, check_use=False)
    rng = inventory.mac_rng(alloc_key or g.where)
    with _inventory(where, dry_run) as inv:
        known = _known(inv, where, source)
        mine = inv.at(g.where)   # MACs imgbuild gave this very guest before: --mac auto keeps them
        keep = frozenset(mine.macs) if mine and not new_guest else frozenset()
        with open_tree(g, loop, writeback=not dry_run, force=force) as tree:
            cfg_text = config_text(g.config[1]) if g.config else None
            cur = engine.current(tree, cfg_text)
            alloc = lambda n: inventory.allocate_macs(n, known.macs(), local=where.local_mac, rng=rng)  # noqa: E731
            p = engine.plan(tree, req, alloc, g.config, new_guest=new_guest, config_as=config_as, keep_macs=keep)
            rec = _record(g, cur, p)
            _check(rec, known, force, say=not precheck, inventory_file=inv.path, origins=_origins(cur, p))
            if dry_run:
                return Outcome(g, p, rec, False)
            engine.apply(p)
        inv.record(rec)
    return Outcome(g, p, rec, True)


def clone_where(g: Guest, new: str, lxcpath: str) -> str:
    """The `where` the clone of `g` named `new` will have (as copy() places it): its inventory key, and the key of
    its MAC draws in the dry run and the run alike."""
    if g.kind == "lxc":
        return inventory.normalize_where(f"lxc:{lxc_dest(new, lxcpath)}")
    if g.kind == "xen":
        cfg = Path(new) if new.endswith(".cfg") else g.path.with_name(f"{new}.cfg")
        return inventory.normalize_where(f"xen:{cfg.resolve()}")
    dest = Path(new)
    if g.kind == "image" and dest.suffix == "":
        dest = dest.with_suffix(g.path.suffix)
    return inventory.normalize_where(f"{g.kind}:{dest.resolve()}")


def clone(src: str, new: str, req: engine.Request, where: Where, dry_run: bool = False, force: bool = False,
          loop: bool = False) -> Outcome:
    """Copy SRC to NEW and give the copy its own identity; on any failure the copy is removed. A source something
    may be writing to (a running guest, a read-write mount) is refused unless `force`."""
    name = new_name(new)     # the Name check: no path, no shell syntax in a clone's name
    g = locate(src, where.lxcpath, where.vz_dir)
    refuse_in_use(g, where.lxcpath, force, writing=False)
    with open_tree(g, loop, writeback=False) as tree:
        cur = engine.current(tree, config_text(g.config[1]) if g.config else None)
    source = inventory.GuestRecord(name=g.name, hostname=cur.hostname, ips=cur.ips, macs=cur.macs, where=g.where)
    req = engine.Request(hostname=req.hostname or name, ips=req.ips, macs=req.macs, mac_auto=True,
                         variables=req.variables, files=req.files, reset=True)
    config_as = None
    if g.kind == "lxc":
        dest = lxc_dest(new, where.lxcpath)
        config_as = (lxc_copy_config(config_text(g.config[1]), dest), str(dest / "config"))
    # planned on the source itself (nothing is copied), as the clone it will become: at its destination, drawing
    # its MACs as the clone will
    dest = clone_where(g, new, where.lxcpath)
    as_clone = Guest(g.kind, name, dest, g.path, g.config, g.image)
    if dry_run:
        return reidentify(as_clone, req, where, dry_run=True, force=force, loop=loop, new_guest=True, source=source,
                          config_as=config_as, alloc_key=dest, check_use=False)
    # the identity is checked before the (possibly large) copy is made, and again on the copy
    reidentify(as_clone, req, where, dry_run=True, force=force, loop=loop, new_guest=True, source=source,
               precheck=True, alloc_key=dest, check_use=False)
    made = copy(g, new, where.lxcpath)
    try:
        # (the copy is ours, made a moment ago under a hidden name: nothing runs from it yet, no use check)
        return reidentify(made, req, where, force=force, loop=loop, new_guest=True, source=source, alloc_key=dest,
                          prechecked=True, check_use=False)
    except BaseException:
        _remove(made)
        raise


def _remove(g: Guest) -> None:
    """Remove the copy clone() made just now (and nothing else): its files are unlinked (a link is removed, never
    followed), its directory removed only while it is still a real directory."""
    for p in (g.path, g.image) if g.kind == "xen" else (g.path,):
        with contextlib.suppress(OSError):
            if p.is_symlink() or not p.is_dir():
                p.unlink()
            else:
                shutil.rmtree(p)


def check_hostname(h: str | None) -> None:
    if h is not None:
        try:
            hostname(h)
        except ValueError as e:
            raise InputError(f"--hostname: {e}") from None
