"""`migrate xen`: a Xen 3 (xm) guest from one host to a Xen 4 (xl) host (a CentOS 5 dom0's guests moving to
CentOS 6 and Xen 4, say).

The disk images travel through a local staging directory: SRC -> stage -> DST, each leg rsync `-S --inplace`
(sparse, and a rerun sends only the blocks that changed). The stage is where the copy's identity is changed,
with the identity engine (debugfs, nothing mounted), so that a copy living next to the running original gets
a new IP and a new MAC in BOTH its xl config and its disk: never one without the other. The MACs chosen on the
first run are kept in the stage, so a rerun gives the same ones.

--cutover is the final move instead: a sync while the guest runs, shutdown on SRC, a delta sync, the config
with the ORIGINAL identity on DST, `xl create` there, and the downtime measured from the shutdown to the start.

The staged disk copies are full copies of the guest's disks: after a successful run they are removed (the
stage keeps only identity.json, the MACs chosen), unless --keep-stage; a failed run keeps them for the rerun and
says where they are.

The source's config is untrusted data (it comes from another host): the guest's name must be a plain name, every
disk path absolute without `..`, and a disk that --disk-map does not move may not land inside the destination's
own system directories (a config naming /var/spool/cron/crontabs/root as a disk would otherwise plant a file
there). Every value in a remote script is quoted; a dry run writes nothing on either host or here.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

from builder.core import checks
from builder.core import proc as runner
from builder.core.errors import BuilderError, InputError
from builder.core.outputs import write_atomic
from builder.core.untrusted import read_json
from builder.guestconf import xen as xenconf
from builder.identity import engine, inventory
from builder.identity.guest import Guest, open_tree
from builder.identity.reidentify import Where, check_hostname, reidentify
from builder.migrate import xenbridge
from builder.migrate.push import system_dir
from builder.migrate.remote import Remote, remote_path, shown
from builder.migrate.xenbridge import check_ifname

log = logging.getLogger("imgbuild")

DEFAULT_STAGE = Path("/var/lib/imgbuild/migrate")
HEADER = "by imgbuild (migrate"
IDENTITY = "identity.json"
# where Xen's tools keep images: inside /var/lib, but a place for disks (a disk --disk-map does not move may go)
IMAGE_DIRS = ("/var/lib/xen/", "/var/lib/libvirt/images/")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,200}")


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
    keep_stage: bool = False


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
    stage: Path | None = None                 # where the disks were staged (None: a dry run)
    stage_freed: int | None = None            # bytes of staged copies removed (None: kept)


def check_request(req: XenMoveRequest) -> None:
    """Everything local, before any connection (exit 2 and no host contacted): the guest, the paths, the maps."""
    if not (_NAME.fullmatch(req.guest) or req.guest.startswith("/")):
        raise InputError(f"GUEST {shown(req.guest)!r}: give the guest's name (as in /etc/xen) or its config's "
                         "absolute path", "e.g. www or /etc/xen/www.cfg")
    if req.guest.startswith("/"):
        remote_path(req.guest, "GUEST")
    remote_path(req.xen_dir, "--xen-dir")
    for old, new in req.disk_map:
        remote_path(old, "--disk-map")
        remote_path(new, "--disk-map")
    for old, new in req.bridge_map:
        try:
            check_ifname(new, "--bridge" if old == "*" else "--bridge-map")
            if old != "*":
                check_ifname(old, "--bridge-map")
        except ValueError as e:
            raise InputError(str(e), "e.g. --bridge xenbr0 or --bridge-map xenbr0=br0") from None
    engine.Request(ips=tuple(engine.parse_ip(ip) for ip in req.ips),     # each valid, none twice
                   macs=tuple(engine.parse_mac(mac) for mac in req.macs if mac != "auto"))
    check_hostname(req.hostname)
    checks.directory(req.stage, "--stage")


def find_config(src: Remote, guest: str, xen_dir: str) -> tuple[str, str]:
    cands = [guest] if guest.startswith("/") else [f"{xen_dir}/{guest}", f"{xen_dir}/{guest}.cfg"]
    for c in cands:
        text = src.read_text(c)
        if text is not None:
            return c, text
    raise InputError(f"{src.host}: no Xen config for {guest!r} (looked at {', '.join(cands)}); nothing was changed",
                     "give the guest's name as in /etc/xen, or the config's absolute path")


def guest_name(cfg_text: str, cfg_path: str, host: str) -> str:
    """The guest's name from its config (the source host's data): a plain name, or InputError."""
    name = xenconf.read_xm(cfg_text).get("name") or os.path.basename(cfg_path).removesuffix(".cfg")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InputError(f"{host}:{cfg_path}: the guest's name {shown(str(name))!r} is not a plain name (letters, "
                         "digits, '.', '_', '-'); nothing was changed", "rename the guest in a copy of its config")
    return name


def _disk_dest(path: str, disk_map, cfg_path: str) -> str:
    """Where a disk goes on the destination: mapped by the user's --disk-map, or, unmapped, as the source names
    it, which must not be inside the destination's own system directories."""
    new, mapped = xenconf.map_path(path, list(disk_map))
    new = remote_path(new, f"{cfg_path}: disk")
    if not mapped and system_dir(new) and not new.startswith(IMAGE_DIRS):
        raise InputError(f"{cfg_path}: disk {new} would be written to the same path on the destination, inside "
                         f"its own {system_dir(new)}; nothing was changed",
                         f"move it with --disk-map {new}=/srv/xen/{os.path.basename(new)} (or another directory "
                         "for disks)")
    return new


def disks_of(cfg_text: str, cfg_path: str, disk_map, stage: Path) -> list[Disk]:
    xm = xenconf.read_xm(cfg_text)
    entries = xm.get("disk") or []
    if isinstance(entries, str):
        entries = [entries]
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise InputError(f"{cfg_path}: disk must be a list of strings", "check its disk = [...] line")
    out = []
    for spec in entries:
        try:
            d = xenconf.xm_disk(spec) if spec.count(",") == 2 and "=" not in spec else None
        except xenconf.DiskError as e:
            raise InputError(f"{cfg_path}: {e}", "fix the disk line in a copy of the config") from None
        if d is None:
            raise InputError(f"{cfg_path}: disk {shown(spec)!r} is not in xm syntax",
                             "migrate xen reads Xen 3 (xm) configs")
        if d.target is None or d.devtype == "cdrom":
            continue
        if d.target.startswith("/dev/") or d.script:
            raise InputError(f"{cfg_path}: disk {shown(spec)!r} is a block device; only image files are copied",
                             "copy the volume yourself (e.g. dd over ssh into a new LV), then convert the config "
                             "with `migrate convert-xen --disk-map OLD=NEW`")
        src = remote_path(d.target, f"{cfg_path}: disk")
        base = os.path.basename(src)
        if not _FILE.fullmatch(base):
            raise InputError(f"{cfg_path}: disk {shown(src)}: the file name {shown(base)!r} is not a plain file name",
                             "rename the image on the source (letters, digits, '.', '_', '+', '-')")
        out.append(Disk(src, _disk_dest(src, disk_map, cfg_path), stage / base))
    if not out:
        raise InputError(f"{cfg_path}: the guest has no image file to copy", "check its disk = [...] line")
    names = [d.stage.name for d in out]
    if len(set(names)) != len(names):
        raise InputError(f"{cfg_path}: two disks have the same file name ({', '.join(names)})",
                         "the stage keeps one file per name; rename one on the source")
    return out


def _stage_dir(stage: Path) -> Path:
    """The guest's stage directory, made 0700; one that is a symlink (not made by us) is refused."""
    if stage.is_symlink() or (stage.exists() and not stage.is_dir()):
        raise InputError(f"{stage}: not a directory of imgbuild's stage (a symlink or a file); nothing was changed",
                         "move it away or give another --stage")
    stage.parent.mkdir(parents=True, exist_ok=True)
    stage.mkdir(mode=0o700, exist_ok=True)
    return stage


def clean_stage(stage: Path, disks: list[Disk]) -> int:
    """Remove the staged disk copies and config of a finished run (identity.json stays); the bytes freed."""
    freed = 0
    for p in [d.stage for d in disks] + [q for q in stage.glob("*.cfg")]:
        try:
            if p.is_symlink() or p.is_file():
                freed += p.lstat().st_blocks * 512
                p.unlink()
        except OSError as e:
            log.warning("%s: not removed: %s", p, e.strerror)
    return freed


def _rsync_file(src_spec: str, dst_spec: str, remote: Remote, bwlimit: int | None) -> None:
    # rsync escapes the remote path for the far side's shell itself (unless told not to: RSYNC_OLD_ARGS)
    argv = ["rsync", "-S", "--inplace", "-t", "--numeric-ids", "-e", remote.rsh()]
    if bwlimit:
        argv.append(f"--bwlimit={bwlimit}")
    env = {k: v for k, v in os.environ.items() if k not in ("RSYNC_OLD_ARGS", "RSYNC_PROTECT_ARGS")}
    r = runner.run([*argv, "--", src_spec, dst_spec], check=False, env=env)
    if r.returncode == 255:
        raise remote.ssh_error(r.tail)
    if r.returncode != 0:
        raise BuilderError(f"{remote.host}: copying {src_spec} -> {dst_spec} failed (rsync exit {r.returncode}): "
                           + shown("; ".join(r.tail[-2:])), "run the same command again: it resumes in place")


def _sync(src: Remote, dst: Remote, disks: list[Disk], bwlimit: int | None) -> None:
    for d in disks:
        _stage_dir(d.stage.parent)
        if d.stage.is_symlink():
            raise InputError(f"{d.stage}: a symlink in the stage (not made by imgbuild); nothing was copied",
                             "remove it and rerun")
        log.info("copy %s:%s -> stage %s", src.host, d.src, d.stage)
        _rsync_file(src.spec(d.src), str(d.stage), src, bwlimit)


def _push(dst: Remote, disks: list[Disk], bwlimit: int | None) -> None:
    dirs = " ".join(shlex.quote(os.path.dirname(d.dst)) for d in disks)
    dst.sh(f"mkdir -p {dirs}", what="creating the image directories")
    for d in disks:
        log.info("copy stage %s -> %s:%s", d.stage, dst.host, d.dst)
        _rsync_file(str(d.stage), dst.spec(d.dst), dst, bwlimit)


def _dst_bridges(dst: Remote) -> set[str]:
    """The bridges the destination defines (its answer: only names an interface may have are kept)."""
    out = dst.sh("for f in /etc/sysconfig/network-scripts/ifcfg-*; do [ -f \"$f\" ] && "
                 "grep -qi '^TYPE=\"\\?bridge' \"$f\" && echo \"ifcfg=${f##*/ifcfg-}\"; done; "
                 "for b in /sys/class/net/*/bridge; do "
                 "[ -d \"$b\" ] && b=${b%/bridge} && echo \"link=${b##*/}\"; done; "
                 "grep -hE '^[[:space:]]*(auto|iface)[[:space:]]' /etc/network/interfaces 2>/dev/null | "
                 "awk '{print \"deb=\" $2}'; true", what="listing bridges", max_output=1 << 20).stdout
    found = set()
    for line in out.splitlines()[:10000]:
        k, _, v = line.partition("=")
        try:
            check_ifname(v)
        except ValueError:
            continue
        if k in ("ifcfg", "link"):
            found.add(v)
        elif k == "deb" and v.startswith(("br", "xenbr", "virbr")):
            found.add(v)
    return found


def missing_bridges(xl_text: str, defined: set[str], cfg_name: str) -> list[str]:
    return xenbridge.missing_bridges({cfg_name: xenbridge.bridges_used(xl_text)}, defined)


def _identity_state(stage: Path) -> dict:
    """What an earlier run chose (the MACs), from the stage: a file an earlier run left, so read strictly."""
    p = stage / IDENTITY
    if not p.exists():
        return {}
    if p.is_symlink() or not p.is_file():
        raise InputError(f"{p}: not a file imgbuild wrote", "remove it; the rerun then chooses new MACs")
    state = read_json(p, what="the stage's identity.json")
    macs = state.get("macs", {})
    if not isinstance(macs, dict) or not all(isinstance(k, str) and isinstance(v, str) and checks.mac_norm(k) == k
                                             and checks.mac_norm(v) == v for k, v in macs.items()):
        raise InputError(f"{p}: macs must map MAC addresses to MAC addresses",
                         "remove the file; the rerun then chooses new MACs")
    return {"macs": macs}


def _reidentify(req: XenMoveRequest, dst: Remote, stage: Path, cfg_stage: Path, disks: list[Disk],
                dst_cfg: str) -> tuple[str, str]:
    """The copy's new identity in the staged xl config and the staged root image; (new xl text, summary)."""
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
        write_atomic(stage / IDENTITY, json.dumps(state, indent=1) + "\n", 0o600)
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
    check_request(req)
    cfg_path, text = find_config(src, req.guest, req.xen_dir)
    conv = xenconf.convert_text(text, cfg_path, req.disk_map, req.bridge_map)
    for f in conv.findings:
        (log.error if f.level == "error" else log.warning if f.level == "warning" else log.info)(
            "%s", f.show(f"{src.host}:{cfg_path}"))
    if conv.text is None:
        raise InputError(f"{src.host}:{cfg_path}: xl cannot take this config (above); nothing was changed",
                           "fix a copy of it, or convert it by hand with `migrate convert-xen`")
    name = guest_name(text, cfg_path, src.host)
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
        log.info("the staged copies in %s would be %s after the run", stage,
                 "kept (--keep-stage)" if req.keep_stage else "removed")
        return result
    if req.cutover:
        _need(dst, "xl") if req.start else None
    result.stage = stage
    try:
        _copy(src, dst, req, result, name, cfg_path, conv.text, stage, disks, dst_cfg)
    except BuilderError:
        if any(d.stage.exists() for d in disks):
            log.warning("the staged disk copies are kept in %s for the rerun (removed after a run that succeeds, "
                        "unless --keep-stage)", stage)
        raise
    if req.keep_stage:
        log.info("the staged disk copies are kept in %s (--keep-stage): a rerun sends only changed blocks", stage)
    else:
        result.stage_freed = clean_stage(stage, disks)
        log.info("removed the staged disk copies in %s (%.1f MB on disk); --keep-stage keeps them", stage,
                 result.stage_freed / (1 << 20))
    return result


def _copy(src: Remote, dst: Remote, req: XenMoveRequest, result: MoveResult, name: str, cfg_path: str,
          conv_text: str, stage: Path, disks: list[Disk], dst_cfg: str) -> None:
    """The real run's copies, config and start (move() did every check)."""
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
        xl_text = conv_text
    else:
        if cfg_stage.is_symlink():
            cfg_stage.unlink()
        cfg_stage.write_text(conv_text)
        xl_text, result.identity = _reidentify(req, dst, stage, cfg_stage, disks, dst_cfg)
    _push(dst, disks, req.bwlimit)
    dst.write_text(dst_cfg, xl_text)
    result.config_text = xl_text
    if req.cutover and req.start:
        dst.sh(f"xl create {shlex.quote(dst_cfg)}", what=f"starting {name}")
        result.downtime = time.monotonic() - t0
    elif req.cutover:
        result.downtime = time.monotonic() - t0


def _need(r: Remote, prog: str) -> None:
    if r.sh(f"command -v {shlex.quote(prog)}", check=False).returncode != 0:
        raise BuilderError(f"{r.host}: no `{prog}` there; nothing was changed",
                           "install Xen's tools on the destination, or --no-start to start the guest yourself")
