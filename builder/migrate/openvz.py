"""Leaving OpenVZ: an OpenVZ VPS (its CTID.conf and private area) made an LXC container (`migrate convert-openvz`).

The CTID.conf and the private tree are another system's data, never trusted:

- the CTID.conf is parsed as data (`NAME="value"` lines, builder.identity.formats.shell), never sourced: a value
  with `$(...)` or backticks is text, and only the literal `$VEID` of VE_PRIVATE/VE_ROOT is expanded; every value
  used is checked (HOSTNAME a host name, IP_ADDRESS addresses, NAME a plain name, limits numbers) before anything
  is written, a bad one is bad input naming the line (exit 2);
- the private tree is copied (the original is only read) into a hidden directory beside the container's final
  place, and every guest file is written through RootFS: a link on the way is followed as in a chroot of the
  copy, a link where a file goes is replaced, never written through (an `/etc/network -> /etc` link, or one to
  `../../../etc`, stays inside the copy).

plan() works out everything the run does - the LXC config, every guest file it writes or removes (with its old
and new text), the MAC the new NIC gets, the inventory record, and the notes on what has no LXC equivalent -
without writing anything: the dry run prints it; apply() then makes exactly that.

The converted container is recorded in the inventory (builder.identity.inventory) like a clone: its host name,
addresses and new MAC are checked against every guest imgbuild knows of (the inventory, the LXC/Xen/OpenVZ
configs on this host) in the inventory's write transaction, so a second conversion of the same container (or
another guest with its name or address) is refused naming the entry that holds them.
"""
from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from builder.build.targets.lxc import ALLOW, CAP_DROP, MARK, host_cgroup
from builder.core import checks
from builder.core import proc as runner
from builder.core.errors import InputError
from builder.core.outputs import write_atomic
from builder.core.rootfs import RootFS
from builder.core.untrusted import read_file
from builder.identity import inventory
from builder.migrate.openvz_conf import VzConf, bad_value, limits, memsw, read_conf
from builder.migrate.openvz_guest import Change, Nic, guest_changes

log = logging.getLogger("imgbuild")

DEFAULT_BRIDGE = "lxcbr0"     # what the LXC target attaches NICs to by default (targets.lxc.bridge)
DEFAULT_VZ_PRIVATE = "/vz/private/$VEID"
SOURCE_FILE = "imgbuild-source.json"     # in the container's directory: which OpenVZ container it was
_VEID = re.compile(r"\$(?:VEID|\{VEID\})")


@dataclass(frozen=True)
class Options:
    """What the user chose (checked by the CLI before plan())."""

    private: Path | None = None
    name: str | None = None
    lxcpath: str = inventory.DEFAULT_LXCPATH
    bridge: str = DEFAULT_BRIDGE
    gateways: tuple[str, ...] = ()
    prefix4: int = 24
    prefix6: int = 64
    cgroup: str = "auto"                  # auto | v1 | v2
    inventory_file: str | None = None
    xen_dir: str = inventory.DEFAULT_XEN_DIR
    vz_dir: str = inventory.DEFAULT_VZ_DIR
    local_mac: bool = False



@dataclass
class Plan:
    conf: VzConf
    private: Path
    name: str
    dest: Path
    hostname: str | None
    family: str
    init: str
    nics: list[Nic]
    config: str
    changes: list[Change]
    notes: list[str]
    record: inventory.GuestRecord
    lxcpath: str

    def describe(self) -> str:
        out = [f"OpenVZ container {self.conf.ctid or self.conf.path.name} ({self.conf.path}) -> LXC container "
               f"{self.name} ({self.dest})",
               f"  rootfs: a copy of {self.private} (the original is only read), guest: {self.family} family, "
               f"init: {self.init}"]
        for nic in self.nics:
            addrs = ", ".join(a.with_prefixlen for a in nic.addresses) or "(configured by the guest)"
            out.append(f"  {nic.name}: veth on bridge {nic.link}, MAC {nic.mac}, {addrs}"
                       + (f", gateway {', '.join(map(str, nic.gateways))}" if nic.gateways else ""))
        out += ["", f"LXC config ({self.dest / 'config'}):"]
        out += ["  " + line if line else "" for line in self.config.splitlines()]
        out += ["", f"guest files ({len(self.changes)}, in {self.dest / 'rootfs'}):"]
        out += [c.describe() for c in self.changes] or ["  (none)"]
        rec = self.record
        out += ["", f"inventory: {rec.name}: host name {rec.hostname or '-'}, IPs {', '.join(rec.ips) or '-'}, "
                    f"MACs {', '.join(rec.macs) or '-'}, at {rec.where}"]
        if self.notes:
            out += ["", "notes (not carried over, or needing a look):"] + [f"  - {n}" for n in self.notes]
        return "\n".join(out) + "\n"


def _check_hostname(conf: VzConf) -> str | None:
    h = conf.get("HOSTNAME")
    if h is None:
        return None
    try:
        return checks.hostname(h.strip())
    except ValueError as e:
        raise bad_value(conf, "HOSTNAME", str(e), "fix HOSTNAME in a copy of the config") from None


def _addresses(conf: VzConf, opts: Options) -> list:
    out = []
    for word in (conf.get("IP_ADDRESS") or "").split():
        addr, _, mask = word.partition("/")
        try:
            ip = ipaddress.ip_address(addr)
            if mask:
                iface = ipaddress.ip_interface(f"{addr}/{mask}")   # a prefix length or a dotted netmask
            else:
                iface = ipaddress.ip_interface(f"{addr}/{opts.prefix4 if ip.version == 4 else opts.prefix6}")
        except ValueError:
            raise bad_value(conf, "IP_ADDRESS", f"{word!r} is not an IP address (ADDR or ADDR/MASK)",
                       "fix IP_ADDRESS in a copy of the config") from None
        if iface.network.prefixlen == iface.max_prefixlen:
            # venet hands out host routes (/32): on a bridge the guest needs its network's prefix
            iface = ipaddress.ip_interface(f"{addr}/{opts.prefix4 if ip.version == 4 else opts.prefix6}")
        if any(a.ip == iface.ip for a in out):
            continue
        out.append(iface)
    return out


def _netif(conf: VzConf, opts: Options) -> list[tuple[str, str | None, str | None]]:
    """NETIF's veth devices: (ifname, mac, bridge)."""
    out = []
    for dev in (conf.get("NETIF") or "").split(";"):
        if not dev.strip():
            continue
        kv = dict(p.split("=", 1) for p in dev.split(",") if "=" in p)
        ifname, mac, bridge = kv.get("ifname", "").strip(), kv.get("mac", "").strip(), kv.get("bridge", "").strip()
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", ifname):
            raise bad_value(conf, "NETIF", f"{ifname!r} is not an interface name", "fix NETIF in a copy of the config")
        norm = checks.mac_norm(mac) if mac else None
        if mac and norm is None:
            raise bad_value(conf, "NETIF", f"{mac!r} is not a MAC address", "fix NETIF in a copy of the config")
        if bridge and not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", bridge):
            raise bad_value(conf, "NETIF", f"bridge {bridge!r} is not an interface name",
                       "fix NETIF in a copy of the config")
        out.append((ifname, norm, bridge or None))
    return out


def _private(conf: VzConf, opts: Options) -> Path:
    if opts.private is not None:
        p = Path(opts.private)
        what = "--private"
    else:
        raw = conf.get("VE_PRIVATE") or DEFAULT_VZ_PRIVATE
        if _VEID.search(raw) and conf.ctid is None:
            raise InputError(f"{conf.where('VE_PRIVATE')}: names $VEID, and {conf.path.name} is not CTID.conf",
                             "give the private area with --private DIR")
        expanded = _VEID.sub(conf.ctid or "", raw)
        if any(c in expanded for c in "$`\n") or not expanded.startswith("/"):
            raise bad_value(conf, "VE_PRIVATE", "not a plain absolute path (only $VEID is expanded; nothing is run)",
                       "give the private area with --private DIR")
        p = Path(expanded)
        what = conf.where("VE_PRIVATE")
    if not p.is_dir():
        raise InputError(f"{what}: {p} is not a directory (the container's private area)",
                         "give it with --private DIR (vzctl keeps it in /vz/private/CTID)")
    if not (p / "etc").is_dir() and not (p / "etc").is_symlink():
        raise InputError(f"{what}: {p} holds no OS tree (no etc/)", "give the container's private area with --private")
    return p.resolve()


def _name(conf: VzConf, opts: Options) -> tuple[str, str]:
    if opts.name is not None:
        return opts.name, "--name"
    vzname = conf.get("NAME")
    if vzname is not None:
        try:
            return checks.name(vzname.strip()), conf.where("NAME")
        except ValueError as e:
            raise bad_value(conf, "NAME", str(e), "choose the container's name with --name NAME") from None
    if conf.ctid is None:
        raise InputError(f"{conf.path}: no NAME= and the file is not named CTID.conf: the container needs a name",
                         "give it with --name NAME")
    return conf.ctid, f"the CTID of {conf.path.name}"



def _cgroup_layout(opts: Options) -> str:
    return host_cgroup() if opts.cgroup == "auto" else opts.cgroup


_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "x86": "i686", "i386": "i686", "i686": "i686"}


def render_config(plan_name: str, conf: VzConf, hostname: str | None, dest: Path, nics: list[Nic],
                  layout: str, limit_lines: list[str]) -> str:
    arch = _ARCH.get((conf.get("OSTEMPLATE") or "").rsplit("-", 1)[-1])
    out = [f"{MARK} migrate convert-openvz for {plan_name}: OpenVZ container "
           f"{conf.ctid or '?'} ({conf.path.name}), LXC 2.1 and later"]
    if hostname:
        out.append(f"lxc.uts.name = {hostname}")
    if arch:
        out.append(f"lxc.arch = {arch}")
    out += [f"lxc.rootfs.path = dir:{dest}/rootfs", "lxc.mount.auto = proc:mixed sys:mixed cgroup:mixed",
            "lxc.autodev = 1", "lxc.tty.max = 1", "lxc.pty.max = 1024", f"lxc.cap.drop = {CAP_DROP}"]
    if (conf.get("ONBOOT") or "").strip().lower() == "yes":
        out.append("lxc.start.auto = 1")
    out.append("")
    for n, nic in enumerate(nics):
        p = f"lxc.net.{n}."
        out += [f"{p}type = veth", f"{p}link = {nic.link}", f"{p}flags = up", f"{p}name = {nic.name}",
                f"{p}hwaddr = {nic.mac}", ""]
    if limit_lines:
        out.append(f"# limits (cgroup {layout})")
        out += limit_lines + [""]
    key = "lxc.cgroup.devices" if layout == "v1" else "lxc.cgroup2.devices"
    out += [f"# devices (cgroup {layout})", f"{key}.deny = a"] + [f"{key}.allow = {r}" for r in ALLOW]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------ the plan, the check, the run


def _venet_name(taken: set[str]) -> str:
    return next(f"eth{i}" for i in range(100) if f"eth{i}" not in taken)


def _source_where(conf: VzConf) -> str:
    return inventory.normalize_where(f"vz:{conf.path.resolve()}")


def _known(inv: inventory.Inventory, opts: Options, conf: VzConf) -> inventory.Known:
    """Every guest the container is checked against (the inventory's, the configs on this host) but the OpenVZ
    container itself: its config in vzctl's directory is the one being converted."""
    source = _source_where(conf)
    return inv.known([g for g in inventory.discover(opts.lxcpath, opts.xen_dir, opts.vz_dir) if g.where != source])


def _near(known: inventory.Known, rec: inventory.GuestRecord, conf: VzConf) -> list[inventory.GuestRecord]:
    """The guests that may clash with `rec`, but the OpenVZ container's own inventory entry."""
    source = _source_where(conf)
    return [g for g in known.near(rec) if g.where != source]


def refuse_duplicate(rec: inventory.GuestRecord, known: inventory.Known, conf: VzConf, inv_file: Path | None,
                     same_name: inventory.GuestRecord | None = None) -> None:
    """InputError (exit 2) when another guest imgbuild knows of has the container's name, host name, an address
    or its MAC: a second conversion of the same container is one (the first's entry holds them all)."""
    near = _near(known, rec, conf)
    found = inventory.conflicts(rec, near, self_where="convert-openvz:nowhere")    # nothing is left out
    named = list({(g.name, g.where): g for g in [*near, *([same_name] if same_name else [])]
                  if g.name == rec.name and g.where != _source_where(conf)}.values())
    if not found and not named:
        return
    lines = [f"  {c}" for c in found]
    lines += [f"  the name {rec.name} is already taken by {g.name} ({g.where})" for g in named
              if not any(c.holder == g.name and c.holder_where == g.where for c in found)]
    holders = {(c.holder, c.holder_where) for c in found} | {(g.name, g.where) for g in named}
    again = sorted((n, w) for n, w in holders if w == rec.where or _converted_from(w) == _source_where(conf))
    if again:
        first, where = again[0]
        head = (f"{conf.path}: this OpenVZ container was converted before: the inventory has it as {first} "
                f"({where})")
        path = where.partition(":")[2]
        hint = (f"the first conversion is {first}: use it; to convert again, remove it first (lxc-destroy -P "
                f"{Path(path).parent} -n {first}, then `imgbuild inventory forget {first}`)")
    else:
        head = f"{conf.path}: the LXC container would be a duplicate of guests imgbuild knows of"
        hint = ("a converted container keeps the VPS's host name and addresses: retire the other guest first "
                "(or change its identity with migrate reidentify); another --name only helps when the name is the "
                "clash")
    stale = [c for c in found if c.holder_gone]
    if stale:
        hint += "; " + inventory.conflict_hint(stale, inv_file)
    raise InputError(head + ":\n" + "\n".join(lines), hint)


def _converted_from(where: str | None) -> str | None:
    """The `vz:CONF` an LXC container at `where` was converted from (its SOURCE_FILE), if it was."""
    kind, _, path = (where or "").partition(":")
    if kind != "lxc" or not path.startswith("/"):
        return None
    try:
        data = json.loads(read_file(Path(path) / SOURCE_FILE, what="a conversion record", limit=64 << 10))
        return inventory.normalize_where(f"vz:{data['openvz-config']}")
    except (InputError, ValueError, KeyError, TypeError):
        return None


def _running(conf: VzConf, private: Path) -> str | None:
    """Why the OpenVZ container counts as running: its VE_ROOT (or the private area) is a mount point."""
    targets = {str(private)}
    root = conf.get("VE_ROOT")
    if root and conf.ctid and not any(c in _VEID.sub("", root) for c in "$`"):
        targets.add(os.path.realpath(_VEID.sub(conf.ctid, root)))
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                mp = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
                if mp in targets:
                    return f"{mp} is mounted"
    except OSError:
        pass
    return None


def plan(conf_path: Path, opts: Options, layout: str | None = None, inv: inventory.Inventory | None = None) -> Plan:
    """Everything the conversion will do, nothing written (inv: the inventory to check against and draw the MAC
    from; default: read as it is, nothing created)."""
    if inv is None:
        with inventory.load(opts.inventory_file) as read:
            return plan(conf_path, opts, layout, read)
    conf = read_conf(Path(conf_path))
    name, name_from = _name(conf, opts)
    dest = checks.child(opts.lxcpath, name, name_from)
    hostname = _check_hostname(conf)
    addresses = _addresses(conf, opts)
    devices = _netif(conf, opts)
    private = _private(conf, opts)
    gateways = []
    for g in opts.gateways:
        gw = ipaddress.ip_address(g)
        first = next((a for a in addresses if a.version == gw.version), None)
        if first is None or gw not in first.network or gw == first.ip:
            raise InputError(f"--gateway {g}: not an address on the network of the VPS's first IPv{gw.version} "
                             f"address ({first.with_prefixlen if first else 'it has none'})",
                             "give the bridge's address on the addresses' network, or --prefix N")
        gateways.append(gw)
    notes: list[str] = []
    layout = layout or _cgroup_layout(opts)
    limit_lines = limits(conf, layout, notes, memsw=memsw(layout))
    where = inventory.normalize_where(f"lxc:{dest}")
    known = _known(inv, opts, conf)
    rng = inventory.mac_rng(where)
    nics: list[Nic] = []
    need = (1 if addresses else 0) + sum(1 for _, mac, _ in devices if mac is None)
    fresh = inventory.allocate_macs(need, known.macs(), local=opts.local_mac, rng=rng) if need else []
    for ifname, mac, bridge in devices:
        nics.append(Nic(ifname, mac or fresh.pop(), opts.bridge if bridge is None else bridge))
        if bridge and bridge != opts.bridge:
            notes.append(f"{conf.where('NETIF')}: {ifname} stays on bridge {bridge} (as under OpenVZ)")
    if addresses:
        nics.insert(0, Nic(_venet_name({n.name for n in nics}), fresh.pop(), opts.bridge, addresses, gateways,
                           venet=True))
        if not gateways:
            notes.append("no default route for the guest: venet's was the host itself; give --gateway ADDR "
                         f"(the address of bridge {opts.bridge} on the VPS's network)")
    elif not devices:
        notes.append(f"{conf.path}: no IP_ADDRESS and no NETIF: the container has no network")
    root = RootFS(private)
    changes, family, init = guest_changes(root, nics, hostname, conf, notes)
    config = render_config(name, conf, hostname, dest, nics, layout, limit_lines)
    rec = inventory.GuestRecord(name=name, hostname=hostname, ips=tuple(str(a.ip) for a in addresses),
                                macs=tuple(n.mac for n in nics), where=where)
    return Plan(conf, private, name, dest, hostname, family, init, nics, config, changes, notes, rec,
                str(dest.parent))


def check(p: Plan, opts: Options, inv: inventory.Inventory) -> None:
    """The duplicate check against `inv`, then the destination (nothing may be at LXCPATH/NAME)."""
    refuse_duplicate(p.record, _known(inv, opts, p.conf), p.conf, inv.path, inv.get(p.record.name))
    if os.path.lexists(p.dest):
        raise InputError(f"{p.dest} already exists", "choose another --name, or remove what is there first")
    why = _running(p.conf, p.private)
    if why:
        raise InputError(f"the OpenVZ container still runs ({why}); a copy of a running system is not consistent",
                         f"stop it first (vzctl stop {p.conf.ctid or 'CTID'}), then convert")


def dry_run(conf_path: Path, opts: Options, layout: str | None = None) -> Plan:
    """The plan, checked as the run checks it; nothing written anywhere (the inventory read as it is)."""
    with inventory.load(opts.inventory_file) as inv:
        p = plan(conf_path, opts, layout, inv)
        check(p, opts, inv)
        return p


def _apply_changes(root: RootFS, changes: list[Change]) -> None:
    for c in changes:
        if c.kind == "write":
            root.write(c.path, c.new or "", c.mode, c.uid, c.gid)
        elif c.kind == "link":
            root.symlink(c.new or "", c.path)
        else:
            root.remove(c.path)


def convert(conf_path: Path, opts: Options, layout: str | None = None) -> Plan:
    """The conversion: checked as the dry run (nothing made when that fails), the private area copied into a
    hidden directory beside LXCPATH/NAME, its files changed there, the config written; then, in the inventory's
    write transaction, checked again, recorded and moved into place. On any failure the copy is removed."""
    p = dry_run(conf_path, opts, layout)
    lxcpath = p.dest.parent
    made = []
    for d in (lxcpath, *lxcpath.parents):
        if os.path.lexists(d):
            break
        made.append(d)
    lxcpath.mkdir(parents=True, exist_ok=True)
    part = Path(tempfile.mkdtemp(prefix=f".{p.name}.partial-", dir=lxcpath))
    try:
        os.chmod(part, 0o770)
        runner.run(["cp", "-a", "-x", "--reflink=auto", "--sparse=always", "--", f"{p.private}/.",
                    str(part / "rootfs")])
        _apply_changes(RootFS(part / "rootfs"), p.changes)
        write_atomic(part / "config", p.config)
        write_atomic(part / SOURCE_FILE, json.dumps({"openvz-config": str(p.conf.path.resolve()),
                                                      "ctid": p.conf.ctid, "private": str(p.private)}) + "\n")
        with inventory.locked(opts.inventory_file) as inv:
            check(p, opts, inv)          # again, inside the transaction: nothing took them meanwhile
            inv.record(p.record)
            os.rename(part, p.dest)
    except BaseException:
        if part.is_dir() and not part.is_symlink():
            shutil.rmtree(part, ignore_errors=True)
        for d in made:
            with contextlib.suppress(OSError):
                os.rmdir(d)
        raise
    log.info("converted OpenVZ container %s into LXC container %s (%s)", p.conf.ctid or p.conf.path, p.name, p.dest)
    return p
