"""`migrate xen`: a Xen 3 (xm) guest from one host to a Xen 4 (xl) host (seed 004).

The disk images travel through a local staging directory: SRC -> stage -> DST, each leg rsync `-S --inplace`
(sparse, and a rerun sends only the blocks that changed). The stage is where the copy's identity is changed,
with the identity engine (debugfs, nothing mounted), so that a copy living next to the running original gets
a new IP and a new MAC in BOTH its xl config and its disk: never one without the other. The MACs chosen on the
first run are kept in the stage, so a rerun gives the same ones.

--cutover is the final move instead: a sync while the guest runs, shutdown on SRC, a delta sync, the config
with the ORIGINAL identity on DST, `xl create` there, and the downtime measured from the shutdown to the start.
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import run as runner
from . import xenconf
from .errors import BuilderError, InputError
from .remote import Remote

log = logging.getLogger("imgbuild")

DEFAULT_STAGE = Path("/var/lib/imgbuild/migrate")
HEADER = "by imgbuild (migrate"


@dataclass(frozen=True)
class XenMoveRequest:
    guest: str
    disk_map: tuple[tuple[str, str], ...] = ()
    bridge_map: tuple[tuple[str, str], ...] = ()
    ips: tuple[str, ...] = ()
    macs: tuple[str, ...] = ()
    hostname: str | None = None
    cutover: bool = False
    start: bool = True
    stage: Path = DEFAULT_STAGE
    xen_dir: str = "/etc/xen"
    dry_run: bool = False
    force: bool = False
    inventory: str | None = None
    bwlimit: int | None = None


@dataclass
class Disk:
    src: str
    dst: str
    stage: Path


@dataclass
class MoveResult:
    config_path: str
    config_text: str
    disks: list[Disk]
    identity: str = ""                        # what changed in the copy's identity
    downtime: float | None = None
    warnings: list[str] = field(default_factory=list)


def find_config(src: Remote, guest: str, xen_dir: str) -> tuple[str, str]:
    cands = [guest] if guest.startswith("/") else [f"{xen_dir}/{guest}", f"{xen_dir}/{guest}.cfg"]
    for c in cands:
        text = src.read_text(c)
        if text is not None:
            return c, text
    raise InputError(f"{src.host}: no Xen config for {guest!r} (looked at {', '.join(cands)}); nothing was changed",
                     "give the guest's name as in /etc/xen, or the config's absolute path")


def disks_of(cfg_text: str, cfg_path: str, disk_map, stage: Path) -> list[Disk]:
    xm = xenconf.read_xm(cfg_text)
    entries = xm.get("disk") or []
    if isinstance(entries, str):
        entries = [entries]
    out = []
    for spec in entries:
        try:
            d = xenconf.xm_disk(spec) if spec.count(",") == 2 and "=" not in spec else None
        except xenconf.DiskError as e:
            raise InputError(f"{cfg_path}: {e}", "fix the disk line in a copy of the config") from None
        if d is None:
            raise InputError(f"{cfg_path}: disk {spec!r} is not in xm syntax", "migrate xen reads Xen 3 (xm) configs")
        if d.target is None or d.devtype == "cdrom":
            continue
        if d.target.startswith("/dev/") or d.script:
            raise InputError(f"{cfg_path}: disk {spec!r} is a block device; only image files are copied",
                             "copy the volume yourself (e.g. dd over ssh into a new LV), then convert the config "
                             "with `migrate convert-xen --disk-map OLD=NEW`")
        new, _ = xenconf.map_path(d.target, list(disk_map))
        out.append(Disk(d.target, new, stage / os.path.basename(d.target)))
    if not out:
        raise InputError(f"{cfg_path}: the guest has no image file to copy", "check its disk = [...] line")
    names = [d.stage.name for d in out]
    if len(set(names)) != len(names):
        raise InputError(f"{cfg_path}: two disks have the same file name ({', '.join(names)})",
                         "the stage keeps one file per name; rename one on the source")
    return out


def _rsync_file(src_spec: str, dst_spec: str, remote: Remote, bwlimit: int | None) -> None:
    argv = ["rsync", "-S", "--inplace", "-t", "--numeric-ids", "-e", remote.rsh()]
    if bwlimit:
        argv.append(f"--bwlimit={bwlimit}")
    r = runner.run([*argv, src_spec, dst_spec], check=False)
    if r.returncode == 255:
        raise remote.ssh_error(r.tail)
    if r.returncode != 0:
        raise BuilderError(f"{remote.host}: copying {src_spec} -> {dst_spec} failed (rsync exit {r.returncode}): "
                           + "; ".join(r.tail[-2:]), "run the same command again: it resumes in place")


def _sync(src: Remote, dst: Remote, disks: list[Disk], bwlimit: int | None) -> None:
    for d in disks:
        d.stage.parent.mkdir(parents=True, exist_ok=True)
        log.info("copy %s:%s -> stage %s", src.host, d.src, d.stage)
        _rsync_file(src.spec(d.src), str(d.stage), src, bwlimit)


def _push(dst: Remote, disks: list[Disk], bwlimit: int | None) -> None:
    dirs = " ".join(shlex.quote(os.path.dirname(d.dst)) for d in disks)
    dst.sh(f"mkdir -p {dirs}", what="creating the image directories")
    for d in disks:
        log.info("copy stage %s -> %s:%s", d.stage, dst.host, d.dst)
        _rsync_file(str(d.stage), dst.spec(d.dst), dst, bwlimit)


def _dst_bridges(dst: Remote) -> set[str]:
    out = dst.sh("for f in /etc/sysconfig/network-scripts/ifcfg-*; do [ -f \"$f\" ] && "
                 "grep -qi '^TYPE=\"\\?bridge' \"$f\" && echo \"ifcfg=${f##*/ifcfg-}\"; done; "
                 "for b in /sys/class/net/*/bridge; do [ -d \"$b\" ] && b=${b%/bridge} && echo \"link=${b##*/}\"; done; "
                 "grep -hE '^[[:space:]]*(auto|iface)[[:space:]]' /etc/network/interfaces 2>/dev/null | "
                 "awk '{print \"deb=\" $2}'; true", what="listing bridges").stdout
    found = set()
    for line in out.splitlines():
        k, _, v = line.partition("=")
        if k in ("ifcfg", "link") and v:
            found.add(v)
        elif k == "deb" and v:
            found.add(v) if v.startswith(("br", "xenbr", "virbr")) else None
    return found


def missing_bridges(xl_text: str, defined: set[str], cfg_name: str) -> list[str]:
    from . import xenbridge

    return xenbridge.missing_bridges({cfg_name: xenbridge.bridges_used(xl_text)}, defined)


def _identity_state(stage: Path) -> dict:
    p = stage / "identity.json"
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


def _reidentify(req: XenMoveRequest, dst: Remote, stage: Path, cfg_stage: Path, disks: list[Disk],
                dst_cfg: str) -> tuple[str, str]:
    """The copy's new identity in the staged xl config and the staged root image; (new xl text, summary)."""
    from .identity import engine, inventory
    from .identity.guest import Guest, open_tree
    from .identity.reidentify import Where, reidentify

    state = _identity_state(stage)
    macs = tuple(engine.parse_mac(m) for m in req.macs if m != "auto")
    auto = "auto" in req.macs or (not req.macs and bool(req.ips))
    if state.get("macs") and auto:      # a rerun: the MACs the first run chose
        macs = tuple((a, b) for a, b in state["macs"].items())
        auto = False
    ereq = engine.Request(hostname=req.hostname, ips=tuple(engine.parse_ip(i) for i in req.ips), macs=macs,
                          mac_auto=auto, reset=True)
    g = Guest("xen", cfg_stage.stem, f"xen:{dst.host}:{dst_cfg}", cfg_stage, ("xen", cfg_stage), disks[0].stage)
    with open_tree(g, writeback=False) as tree:     # the original's identity: the copy must not keep any of it
        cur = engine.current(tree, cfg_stage.read_text())
    source = inventory.GuestRecord(name=f"{cfg_stage.stem} (the original, on the source host)",
                                   hostname=None, ips=cur.ips, macs=cur.macs, where=f"xen-source:{req.guest}")
    out = reidentify(g, ereq, Where(inventory_file=req.inventory), force=req.force, new_guest=True, source=source)
    if out.plan.new_macs:
        state["macs"] = {**state.get("macs", {}), **out.plan.new_macs}
        (stage / "identity.json").write_text(json.dumps(state, indent=1) + "\n")
    rec = out.record
    summary = (f"IPs {', '.join(rec.ips) or '-'}, MACs {', '.join(rec.macs) or '-'}"
               + (f", host name {rec.hostname}" if rec.hostname else ""))
    return cfg_stage.read_text(), summary


def _shutdown(src: Remote, name: str, timeout: int = 300) -> None:
    q = shlex.quote(name)
    src.sh(f"T=$(command -v xm || command -v xl) || {{ echo 'no xm or xl' >&2; exit 1; }}; "
           f"if $T list {q} >/dev/null 2>&1; then $T shutdown -w {q}; fi; "
           f"i=0; while $T list {q} >/dev/null 2>&1; do i=$((i+1)); [ $i -gt {timeout} ] && exit 1; sleep 1; done",
           what=f"shutting {name} down")


def move(src: Remote, dst: Remote, req: XenMoveRequest) -> MoveResult:
    cfg_path, text = find_config(src, req.guest, req.xen_dir)
    conv = xenconf.convert_text(text, cfg_path, req.disk_map, req.bridge_map)
    for f in conv.findings:
        (log.error if f.level == "error" else log.warning if f.level == "warning" else log.info)(
            "%s", f.show(f"{src.host}:{cfg_path}"))
    if conv.text is None:
        raise BuilderError(f"{src.host}:{cfg_path}: xl cannot take this config (above); nothing was changed",
                           "fix a copy of it, or convert it by hand with `migrate convert-xen`")
    name = str(xenconf.read_xm(text).get("name") or os.path.basename(cfg_path).removesuffix(".cfg"))
    stage = req.stage / name
    disks = disks_of(text, cfg_path, req.disk_map, stage)
    dst_cfg = f"{req.xen_dir}/{name}.cfg"
    if not req.cutover and not (req.ips or req.macs) and not req.force:
        raise InputError(f"{name}: the copy on {dst.host} would have the same IP and MAC as the running original "
                         f"on {src.host}; nothing was changed",
                         "give --ip OLD=NEW (a new MAC is chosen too), or --cutover to move the guest for good")
    if req.cutover and (req.ips or req.macs or req.hostname):
        raise InputError("--cutover keeps the original identity; --ip, --mac and --hostname do not go with it",
                         "drop them, or copy without --cutover")
    old = dst.read_text(dst_cfg)
    if old is not None and HEADER not in old and not req.force:
        raise InputError(f"{dst.host}:{dst_cfg} exists and was not written by imgbuild; nothing was changed",
                         "move it away, or --force to overwrite it")
    warnings = missing_bridges(conv.text, _dst_bridges(dst), dst_cfg)
    for w in warnings:
        log.warning("%s: %s", dst.host, w)
    result = MoveResult(dst_cfg, conv.text, disks, warnings=warnings)
    if req.dry_run:
        for d in disks:
            log.info("would copy %s:%s -> %s:%s (sparse, via %s)", src.host, d.src, dst.host, d.dst, d.stage)
        return result
    if req.cutover:
        _need(dst, "xl") if req.start else None
    _sync(src, dst, disks, req.bwlimit)
    cfg_stage = stage / f"{name}.cfg"
    t0 = None
    if req.cutover:
        _push(dst, disks, req.bwlimit)          # the bulk, while the guest still runs
        log.info("shutting %s down on %s", name, src.host)
        t0 = time.monotonic()
        _shutdown(src, name)
        try:
            _sync(src, dst, disks, req.bwlimit)    # the delta since
        except BuilderError as e:
            raise BuilderError(f"{e.message} -- {name} is shut down on {src.host}",
                               f"rerun the same command, or start it again there: xm create {cfg_path}") from None
        xl_text = conv.text
    else:
        cfg_stage.write_text(conv.text)
        xl_text, result.identity = _reidentify(req, dst, stage, cfg_stage, disks, dst_cfg)
    _push(dst, disks, req.bwlimit)
    dst.write_text(dst_cfg, xl_text)
    result.config_text = xl_text
    if req.cutover and req.start:
        dst.sh(f"xl create {shlex.quote(dst_cfg)}", what=f"starting {name}")
        result.downtime = time.monotonic() - t0
    elif req.cutover:
        result.downtime = time.monotonic() - t0
    return result


def _need(r: Remote, prog: str) -> None:
    if r.sh(f"command -v {prog}", check=False).returncode != 0:
        raise BuilderError(f"{r.host}: no `{prog}` there; nothing was changed",
                           "install Xen's tools on the destination, or --no-start to start the guest yourself")
