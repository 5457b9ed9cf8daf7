"""clone and reidentify: the identity engine run on a located guest, under the inventory's lock.

Every MAC, IP and host name the guest will have is checked against the inventory and the guest configs on this
host (LXC, Xen, OpenVZ) before anything is written; a taken one is refused naming both guests (unless --force).
The lock is held from the check to the record, so two clones at once cannot take the same MAC.
"""
from __future__ import annotations

import contextlib
import ipaddress
import logging
import shutil
from dataclasses import dataclass

from ..errors import InputError
from . import engine, inventory
from .guest import Guest, copy, locate, new_name, open_tree

log = logging.getLogger("imgbuild")


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


def _check(rec: inventory.GuestRecord, known: list[inventory.GuestRecord], force: bool, say: bool = True) -> None:
    found = inventory.conflicts(rec, known, self_where=rec.where)
    if found and not force:
        raise inventory.conflict_error(found)
    for c in found if say else ():
        log.warning("--force: %s", c)


def _known(inv: inventory.Inventory, where: Where) -> list[inventory.GuestRecord]:
    """Both views of every guest: what the inventory remembers (addresses inside the guests, which configs
    often do not carry) and what the configs on this host say now. Not merged: a guest found in both is
    checked against both records (conflicts() reports it once)."""
    return [*inv.guests, *inventory.discover(where.lxcpath, where.xen_dir, where.vz_dir)]


def reidentify(g: Guest, req: engine.Request, where: Where, dry_run: bool = False, force: bool = False,
               loop: bool = False, new_guest: bool = False, source: inventory.GuestRecord | None = None,
               config_as: tuple[str, str] | None = None, precheck: bool = False) -> Outcome:
    with inventory.locked(where.inventory_file) as inv:
        known = _known(inv, where) + ([source] if source else [])
        mine = inv.at(g.where)   # MACs imgbuild gave this very guest before: --mac auto keeps them
        keep = frozenset(mine.macs) if mine and not new_guest else frozenset()
        with open_tree(g, loop, writeback=not dry_run) as tree:
            cfg_text = g.config[1].read_text() if g.config else None
            cur = engine.current(tree, cfg_text)
            p = engine.plan(tree, req, lambda n: inventory.allocate_macs(n, known, local=where.local_mac),
                            g.config, new_guest=new_guest, config_as=config_as, keep_macs=keep)
            rec = _record(g, cur, p)
            _check(rec, known, force, say=not precheck)
            if dry_run:
                return Outcome(g, p, rec, False)
            engine.apply(p)
        inv.record(rec)
    return Outcome(g, p, rec, True)


def clone(src: str, new: str, req: engine.Request, where: Where, dry_run: bool = False, force: bool = False,
          loop: bool = False) -> Outcome:
    """Copy SRC to NEW and give the copy its own identity; on any failure the copy is removed."""
    name = new_name(new)     # the Name check: no path, no shell syntax in a clone's name
    g = locate(src, where.lxcpath, where.vz_dir)
    with open_tree(g, loop, writeback=False) as tree:
        cur = engine.current(tree, g.config[1].read_text() if g.config else None)
    source = inventory.GuestRecord(name=g.name, hostname=cur.hostname, ips=cur.ips, macs=cur.macs, where=g.where)
    req = engine.Request(hostname=req.hostname or name, ips=req.ips, macs=req.macs, mac_auto=True,
                         variables=req.variables, files=req.files, reset=True)
    config_as = None
    if g.kind == "lxc":
        from .guest import lxc_copy_config, lxc_dest
        dest = lxc_dest(new, where.lxcpath)
        config_as = (lxc_copy_config(g.config[1].read_text(), dest), str(dest / "config"))
    if dry_run:   # planned on the source itself (nothing is copied), as the clone it would become
        return reidentify(Guest(g.kind, name, f"clone-of:{g.where}", g.path, g.config, g.image), req, where,
                          dry_run=True, force=force, loop=loop, new_guest=True, source=source, config_as=config_as)
    # the identity is checked before the (possibly large) copy is made, and again on the copy
    as_clone = Guest(g.kind, name, f"clone-of:{g.where}", g.path, g.config, g.image)
    reidentify(as_clone, req, where, dry_run=True, force=force, loop=loop, new_guest=True, source=source,
               precheck=True)
    made = copy(g, new, where.lxcpath)
    try:
        return reidentify(made, req, where, force=force, loop=loop, new_guest=True, source=source)
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
    from ..checks import hostname

    if h is not None:
        try:
            hostname(h)
        except ValueError as e:
            raise InputError(f"--hostname: {e}") from None
