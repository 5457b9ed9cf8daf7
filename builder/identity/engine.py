"""The identity engine: give a guest a new hostname, IPs and MACs everywhere they live, in one pass.

plan() reads the guest (files inside it, and its config on the host), works out every edit and returns them;
nothing is written. apply() writes them. `--dry-run` is plan() plus a unified diff of every edit. Running the
same request twice changes nothing the second time: every rewriter is idempotent, and the one-off parts
(machine-id, ssh host keys, DHCP leases) act only on what is still the old guest's.
"""
from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import ipaddress
import logging
import re
import stat as statmod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from builder.core.checks import MAC_COLON, mac
from builder.core.errors import InputError
from builder.core.outputs import write_atomic
from builder.core.untrusted import read_text
from builder.identity import formats, kept
from builder.identity.tree import Meta, Tree, fresh_key

log = logging.getLogger("imgbuild")

# files inside the guest, each with its rewriter (patterns: the last component may be a glob)
GUEST_FILES: tuple[tuple[str, Callable[[str, formats.Rename], str]], ...] = (
    ("/etc/hostname", formats.hostname_file),
    ("/etc/hosts", formats.hosts),
    ("/etc/sysconfig/network", formats.sysconfig_network),
    ("/etc/sysconfig/network-scripts/ifcfg-*", formats.ifcfg),
    ("/etc/network/interfaces", formats.debian_interfaces),
    ("/etc/network/interfaces.d/*", formats.debian_interfaces),
    ("/etc/systemd/network/*.network", formats.networkd),
    ("/etc/systemd/network/*.link", formats.networkd),
    ("/etc/NetworkManager/system-connections/*", formats.nm_keyfile),
    ("/etc/netplan/*.yaml", formats.netplan),
    ("/etc/netplan/*.yml", formats.netplan),
    ("/etc/udev/rules.d/70-persistent-net.rules", formats.udev_persistent_net),
    # cloud-init's NoCloud seed (cloud_init:): instance-id and local-hostname are the host name, network-config
    # is netplan-style, so a clone gets its own seed and cloud-init sees a new instance
    ("/var/lib/cloud/seed/nocloud/meta-data", formats.tokens),
    ("/var/lib/cloud/seed/nocloud/network-config", formats.netplan),
)
CONFIG_REWRITERS = {"lxc": formats.lxc_config, "xen": formats.xen_config, "openvz": formats.openvz_config}
LEASES = ("/var/lib/dhclient/*", "/var/lib/dhcp/*.leases", "/var/lib/dhcp/dhclient*", "/var/lib/NetworkManager/*.lease",
          "/var/lib/dhcpcd/*.lease", "/var/lib/dhcpcd5/*.lease")
SSH_DIR = "/etc/ssh"


@dataclass(frozen=True)
class IpChange:
    old: ipaddress.IPv4Address | ipaddress.IPv6Address
    new: ipaddress.IPv4Interface | ipaddress.IPv6Interface
    prefix_given: bool
    gateway: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None


@dataclass(frozen=True)
class Request:
    """What the user asks for."""

    hostname: str | None = None
    ips: tuple[IpChange, ...] = ()
    macs: tuple[tuple[str, str], ...] = ()     # (old, new); new "auto" for an allocated one
    mac_auto: bool = False                     # every MAC of the guest gets a fresh one
    variables: tuple[tuple[str, Any], ...] = ()
    files: tuple[str, ...] = ()                # more guest files to rewrite (whole-token)
    reset: bool = True                         # machine-id, ssh host keys, DHCP leases

    def __post_init__(self) -> None:
        for what, olds in (("--ip", [str(c.old) for c in self.ips]), ("--mac", [old for old, _ in self.macs])):
            twice = next((o for o in olds if olds.count(o) > 1), None)
            if twice is not None:
                raise InputError(f"{what}: {twice} is changed twice", f"give {what} OLD=NEW once for each OLD")


def parse_ip(spec: str) -> IpChange:
    """`OLD=NEW[/PREFIX][@GATEWAY]` (OLD may carry a prefix, which is ignored)."""
    try:
        old, new = spec.split("=", 1)
        gateway = None
        if "@" in new:
            new, gw = new.split("@", 1)
            gateway = ipaddress.ip_address(gw)
        old_ip = ipaddress.ip_interface(old).ip
        new_if = ipaddress.ip_interface(new)
    except ValueError:
        raise InputError(f"--ip {spec}: expected OLD=NEW[/PREFIX][@GATEWAY], e.g. 10.0.3.2=10.0.3.3 or "
                         "10.0.3.2=192.168.1.5/24@192.168.1.1") from None
    if old_ip.version != new_if.version or (gateway is not None and gateway.version != new_if.version):
        raise InputError(f"--ip {spec}: the old and new addresses{' and the gateway' if gateway else ''} are of "
                         "different IP versions")
    return IpChange(old_ip, new_if, "/" in new, gateway)


def parse_mac(spec: str) -> tuple[str, str]:

    try:
        old, new = spec.split("=", 1)
        return mac(old.strip()), (new.strip().lower() if new.strip() == "auto" else mac(new.strip()))
    except ValueError as e:
        raise InputError(f"--mac {spec}: {e if '=' in spec else 'expected OLD=NEW or auto'}") from None


# ------------------------------------------------------------------ what the guest is now


@dataclass
class Current:
    hostname: str | None
    ips: list[str]
    macs: list[str]


_IP_KEYS = re.compile(r"^\s*(?:IPADDR\d*=\"?|address\s+|Address=|address\d+=)([0-9a-fA-F.:]+)", re.M)
_MAC_KEYS = re.compile(r"(?i)(?:HWADDR=\"?|MACADDR=\"?|hwaddress\s+(?:ether\s+)?|MACAddress=|mac-address=|"
                       r"macaddress:\s*|ATTR\{address\}==\"|hwaddr\s*=\s*|mac=)(" + MAC_COLON + ")")


def glob(tree: Tree, pattern: str) -> list[str]:
    d, base = pattern.rsplit("/", 1)
    if not any(c in base for c in "*?["):
        return [pattern] if tree.meta(pattern) is not None else []
    return [f"{d}/{n}" for n in tree.listdir(d or "/") if fnmatch.fnmatch(n, base)]


def current(tree: Tree, config: str | None) -> Current:
    """The guest's identity as its files say: host name, static addresses, MACs."""
    hostname = (tree.read("/etc/hostname") or b"").decode(errors="replace").strip().split(".")[0] or None
    if hostname is None:
        net = (tree.read("/etc/sysconfig/network") or b"").decode(errors="replace")
        m = re.search(r"^HOSTNAME=\"?([^\"\s.]+)", net, re.M)
        hostname = m.group(1) if m else None
    ips: list[str] = []
    macs: list[str] = []
    for pattern, _ in GUEST_FILES[2:]:
        for path in glob(tree, pattern):
            text = (tree.read(path) or b"").decode(errors="replace")
            ips += [m.group(1) for m in _IP_KEYS.finditer(text) if _is_ip(m.group(1))]
            macs += [m.group(1).lower() for m in _MAC_KEYS.finditer(text)]
    if config:
        macs += [m.group(1).lower() for m in _MAC_KEYS.finditer(config)]
    return Current(hostname, list(dict.fromkeys(ips)), list(dict.fromkeys(macs)))


def _is_ip(s: str) -> bool:
    try:
        ipaddress.ip_address(s)
        return True
    except ValueError:
        return False


# ------------------------------------------------------------------ the plan


@dataclass
class Edit:
    where: str                       # shown to the user: "rootfs:/etc/hostname", "config:/var/lib/lxc/vm1/config"
    old: bytes | None
    new: bytes | None                # None: the file goes
    write: Callable[[], None]
    secret: bool = False             # key material: never shown in a diff

    def diff(self) -> str:
        if self.secret:
            what = "replaced" if self.new is not None else "removed"
            return f"--- {self.where}\n+++ {self.where}\n({what}; not shown: it holds keys or secret values)\n"
        a = (self.old or b"").decode(errors="replace").splitlines(keepends=True)
        b = (self.new or b"").decode(errors="replace").splitlines(keepends=True)
        text = "".join(difflib.unified_diff(a, b, f"{self.where}", f"{self.where}"))
        if self.new is None:
            text = text or f"--- {self.where}\n+++ /dev/null\n"
        return text if text.endswith("\n") or not text else text + "\n"


@dataclass
class Plan:
    edits: list[Edit] = field(default_factory=list)
    rename: formats.Rename | None = None
    new_macs: dict[str, str] = field(default_factory=dict)

    def diff(self) -> str:
        return "".join(e.diff() for e in self.edits)


def rename_for(req: Request, cur: Current, allocate: Callable[[int], list[str]],
               keep: frozenset[str] = frozenset()) -> formats.Rename:
    """`keep`: MACs `--mac auto` leaves alone (allocated to this very guest before: a rerun changes nothing)."""
    macs = dict(req.macs)
    if req.mac_auto:
        for m in cur.macs:
            if m not in keep:
                macs.setdefault(m, "auto")
    want = [old for old, new in macs.items() if new == "auto"]
    fresh = iter(allocate(len(want))) if want else iter(())
    macs = {old: (next(fresh) if new == "auto" else new) for old, new in macs.items()}
    old_names = (cur.hostname,) if cur.hostname and req.hostname and req.hostname != cur.hostname else ()
    return formats.Rename(
        hostname=req.hostname if old_names else None, old_hostnames=old_names,
        ips={c.old: c.new for c in req.ips}, prefix_given=frozenset(c.old for c in req.ips if c.prefix_given),
        macs=macs)


def plan(tree: Tree, req: Request, allocate: Callable[[int], list[str]], config: tuple[str, Path] | None = None,
         new_guest: bool = False, config_as: tuple[str, str] | None = None, keep_macs: frozenset[str] = frozenset()
         ) -> Plan:
    """Every edit the request means for this guest; nothing is written."""
    cfg_text = read_text(config[1], what="a guest config") if config else None
    cur = current(tree, cfg_text)
    r = rename_for(req, cur, allocate, keep_macs)
    gws = {}
    for c in req.ips:
        if c.gateway is not None:
            old_gw = _old_gateway(tree, c.old)
            if old_gw is not None:
                gws[old_gw] = c.gateway
    if gws:
        r = dataclasses.replace(r, gateways=gws)
    p = Plan(rename=r, new_macs=dict(r.macs))

    def edit_file(path: str, fn: Callable[[str, formats.Rename], str]) -> None:
        old = tree.read(path)
        if old is None:
            return
        new = fn(old.decode("utf-8", "surrogateescape"), r).encode("utf-8", "surrogateescape")
        if new != old:
            meta = tree.meta(path)
            p.edits.append(Edit(f"{tree.label}:{path}", old, new, lambda: tree.write(path, new, meta)))

    for pattern, fn in GUEST_FILES:
        for path in glob(tree, pattern):
            edit_file(path, fn)
    for path in req.files:
        if tree.read(path) is None:
            raise InputError(f"--file {path}: no such regular file in the guest ({tree.label})",
                             "give the path of a file inside the guest, as the guest sees it")
        edit_file(path, formats.tokens)
    if config:
        kind, cfg = config
        base, label = config_as if config_as else (cfg_text, str(cfg))
        new = CONFIG_REWRITERS[kind](base, r)
        if new != cfg_text:
            p.edits.append(Edit(f"config:{label}", cfg_text.encode(), new.encode(),
                                lambda: write_atomic(cfg, new, statmod.S_IMODE(cfg.stat().st_mode))))
    _templates(tree, req, r, cur, p)
    if req.reset:
        _reset(tree, r.hostname or cur.hostname or "localhost", p, force_keys=new_guest or bool(p.edits))
    return p


def _old_gateway(tree: Tree, address) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The gateway configured next to `address` in the guest's network files (the one a new gateway replaces)."""
    rx = re.compile(r"^\s*(?:GATEWAY\d*=\"?|gateway\s+|Gateway=|gateway4:\s*|gateway6:\s*)([0-9a-fA-F.:]+)", re.M)
    for pattern, _ in GUEST_FILES[2:]:
        for path in glob(tree, pattern):
            text = (tree.read(path) or b"").decode(errors="replace")
            if str(address) in text:
                for m in rx.finditer(text):
                    if _is_ip(m.group(1)):
                        return ipaddress.ip_address(m.group(1))
    return None


KEY_COMMENT = "root@{} (imgbuild)"


def _reset(tree: Tree, hostname: str, p: Plan, force_keys: bool) -> None:
    """One-off identity: machine-id emptied, ssh host keys made anew, DHCP leases dropped.

    Keys are made anew for a new guest, when anything else of the identity changes, or when they are not the
    ones imgbuild made for this host name (their comment says) - so a second identical run changes nothing."""
    mid = tree.read("/etc/machine-id")
    if mid:
        meta = tree.meta("/etc/machine-id")
        p.edits.append(Edit(f"{tree.label}:/etc/machine-id", mid, b"",
                            lambda meta=meta: tree.write("/etc/machine-id", b"", meta)))
    dbus = tree.meta("/var/lib/dbus/machine-id")
    if dbus is not None and statmod.S_ISREG(dbus.mode):
        old = tree.read("/var/lib/dbus/machine-id")
        p.edits.append(Edit(f"{tree.label}:/var/lib/dbus/machine-id", old, None,
                            lambda: tree.remove("/var/lib/dbus/machine-id")))
    for path in sorted({x for pattern in LEASES for x in glob(tree, pattern)}):
        meta = tree.meta(path)
        if meta is not None and statmod.S_ISREG(meta.mode):
            p.edits.append(Edit(f"{tree.label}:{path}", tree.read(path), None, lambda path=path: tree.remove(path)))
    comment = KEY_COMMENT.format(hostname)
    for name in tree.listdir(SSH_DIR):
        m = re.fullmatch(r"ssh_host_(\w+)_key", name)
        if not m:
            continue
        priv, pub = f"{SSH_DIR}/{name}", f"{SSH_DIR}/{name}.pub"
        if not force_keys and (tree.read(pub) or b"").decode(errors="replace").strip().endswith(comment):
            continue
        kind = {"dsa": "dsa", "rsa": "rsa", "ecdsa": "ecdsa", "ed25519": "ed25519"}.get(m.group(1))
        if kind is None or kind == "dsa":   # current ssh-keygen makes no DSA keys: drop it, sshd does without
            p.edits.append(Edit(f"{tree.label}:{priv}", b"", None, lambda priv=priv: tree.remove(priv), secret=True))
            continue
        pm, um = tree.meta(priv), tree.meta(pub) or Meta(0o100644, 0, 0)

        def replace(kind=kind, priv=priv, pub=pub, pm=pm, um=um) -> None:
            k, pk = fresh_key(kind, comment)
            tree.write(priv, k, pm)
            tree.write(pub, pk, um)
        p.edits.append(Edit(f"{tree.label}:{priv}", b"old", b"new", replace, secret=True))


def _templates(tree: Tree, req: Request, r: formats.Rename, cur: Current, p: Plan) -> None:
    index = tree.read(kept.INDEX)
    if index is None:
        if req.variables:
            raise InputError("--set: this guest has no imgbuild templates to render variables into",
                             "templates come from a recipe's `templates:`; edit the files with --file instead")
        return
    # the guest's own files: untrusted data, read strictly; its templates render in the sandbox
    entries = kept.read_index(index, f"{tree.label}:{kept.INDEX}")
    variables = kept.read_vars(tree.read(kept.VARS) or b"", f"{tree.label}:{kept.VARS}")
    variables.update(dict(req.variables))
    ips = [str(r.ips.get(ipaddress.ip_address(a), ipaddress.ip_interface(a)).ip) for a in cur.ips]
    hostname = r.hostname or cur.hostname or ""
    addresses = {f"eth{n}": a for n, a in enumerate(ips)}
    macs = {f"eth{n}": r.macs.get(m, m) for n, m in enumerate(cur.macs)}
    from builder.core import templating  # here: jinja2 loads only for a guest that has templates
    ctx = templating.context(hostname, None, addresses, macs, variables)
    for entry in entries:
        shown = f"{tree.label}:{entry.template}"
        hint = (f"the template is the guest's own ({shown}, rendered to {entry.path}): fix it there, or remove "
                f"its entry from {kept.INDEX}")
        raw = tree.read(entry.template)
        if raw is None:
            raise InputError(f"{tree.label}:{kept.INDEX}: the template for {entry.path} is missing: no file "
                             f"{entry.template} in the guest", hint)
        try:
            source = kept.guest_file(raw, shown).decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{shown}: not UTF-8 text, so not a template", hint) from None
        new = templating.render(source, ctx, f"{shown} (for {entry.path})", hint=hint).encode()
        there = tree.meta(entry.path)
        if there is not None and statmod.S_ISDIR(there.mode):
            raise InputError(f"{tree.label}:{kept.INDEX}: the template {entry.template} renders to {entry.path}, "
                             "which is a directory in the guest", hint)
        old = tree.read(entry.path)
        if new != old:
            meta = Meta(statmod.S_IFREG | entry.mode, entry.uid, entry.gid)
            p.edits.append(Edit(f"{tree.label}:{entry.path}", old, new,
                                lambda path=entry.path, new=new, meta=meta: tree.write(path, new, meta)))
    if req.variables:
        data = yaml.safe_dump(variables, sort_keys=True).encode()
        old = tree.read(kept.VARS)
        if data != old:
            meta = tree.meta(kept.VARS)
            p.edits.append(Edit(f"{tree.label}:{kept.VARS}", old, data,
                                lambda: tree.write(kept.VARS, data, meta), secret=True))


def apply(p: Plan) -> int:
    for e in p.edits:
        e.write()
    return len(p.edits)
