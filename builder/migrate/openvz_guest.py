"""An OpenVZ guest's files fixed for LXC: venet0's network config becomes the new NIC's in the guest's own format
(Debian: ifupdown's /etc/network/interfaces; EL: ifcfg files), the host name, resolv.conf from the CTID.conf, the
OpenVZ root out of fstab, a getty on the console (the build's init shims).

Nothing is written here: the fixes run against a Recorder, a RootFS that keeps each write as a Change (reads see
them), so the dry run lists exactly what the run then applies. Applied through RootFS, no write follows a link
out of the tree."""
from __future__ import annotations

import difflib
import ipaddress
import re
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable

from builder.build.families import FAMILIES, Family
from builder.build.steps import init as init_step
from builder.build.steps import network as net_step
from builder.core import checks
from builder.core.errors import InputError
from builder.core.rootfs import RootFS
from builder.core.untrusted import shown
from builder.migrate.openvz_conf import VzConf, bad_value


@dataclass
class Nic:
    name: str
    mac: str
    link: str
    addresses: list = field(default_factory=list)      # ip_interface objects (venet's addresses)
    gateways: list = field(default_factory=list)
    venet: bool = False


@dataclass(frozen=True)
class Change:
    """One change to a guest file: write (text), link (target) or remove."""

    path: str
    kind: str
    new: str | None = None
    old: str | None = None
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    link: str | None = None          # the link a written file replaces (never written through)

    def describe(self) -> str:
        if self.kind == "link":
            return f"  link   {self.path} -> {shown(self.new or '')}"
        if self.kind == "remove":
            return f"  remove {shown(self.path)}"
        head = (f"  replace the link {self.path} (-> {shown(self.link)}) by a file" if self.link is not None else
                f"  {'change' if self.old is not None else 'create'} {self.path}")
        old = (self.old or "").splitlines(keepends=True)
        new = (self.new or "").splitlines(keepends=True)
        diff = difflib.unified_diff(old, new, f"a{self.path}", f"b{self.path}", n=1)
        # the guest's text is shown with its control characters escaped (a tab kept): no escape sequence of a
        # hostile file reaches the terminal
        body = "".join("      " + "\t".join(shown(part, 4000) for part in d.rstrip("\n").split("\t")) + "\n"
                       for d in diff)
        return head + "\n" + body.rstrip("\n")


def init_of_tree(root: RootFS, guest: "GuestOS") -> str:
    """Which init shim the guest needs (builder.build.steps.init.SHIMS)."""
    init = root.readlink("/sbin/init") or ""
    if init.endswith("systemd") or (not root.exists("/sbin/init") and root.exists("/lib/systemd/systemd")):
        return "systemd-container"
    if root.exists("/sbin/initctl") and root.is_dir("/etc/init"):
        return guest.upstart_shim
    if root.exists("/etc/inittab") or root.exists("/sbin/init"):
        return "sysvinit-container"
    return "none"


class Recorder:
    """A RootFS that records writes instead of making them (reads see what was recorded): the same guest fixes
    give the dry run's list and the run's changes."""

    def __init__(self, root: RootFS):
        self.root = root
        self.path = root.path
        self.pending: dict[str, Change] = {}

    def _norm(self, path: str) -> str:
        return "/" + "/".join(p for p in path.split("/") if p)

    def _old(self, path: str) -> str | None:
        if self.root.lstat(path) is None or self.root.readlink(path) is not None:
            return None
        return self.root.read_text(path, follow_last=False)

    def write(self, path: str, data, mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        old = self._old(path)
        st = self.root.lstat(path)
        if old == text and st is not None and (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (mode, uid, gid):
            self.pending.pop(self._norm(path), None)
            return
        self.pending[self._norm(path)] = Change(path, "write", text, old, mode, uid, gid, self.root.readlink(path))

    def symlink(self, target: str, path: str) -> None:
        if self.root.readlink(path) == target:
            self.pending.pop(self._norm(path), None)
            return
        self.pending[self._norm(path)] = Change(path, "link", target)

    def remove(self, path: str, *, tree: bool = False) -> bool:
        if self.root.lstat(path) is None and self._norm(path) not in self.pending:
            return False
        if self.root.lstat(path) is None:
            self.pending.pop(self._norm(path))
            return True
        self.pending[self._norm(path)] = Change(path, "remove")
        return True

    def read_text(self, path: str, **kw) -> str | None:
        c = self.pending.get(self._norm(path))
        if c is not None:
            return c.new if c.kind == "write" else None
        return self.root.read_text(path, **kw)

    def exists(self, path: str) -> bool:
        c = self.pending.get(self._norm(path))
        if c is not None:
            return c.kind != "remove"
        return self.root.exists(path)

    def stat(self, path: str):
        return self.root.stat(path)

    def __getattr__(self, name: str):
        return getattr(self.root, name)


# ---- the guest's files


_KEYWORDS = ("iface", "mapping", "auto", "source", "source-directory", "rename", "no-auto-down", "no-scripts")


def _strip_stanzas(text: str, drop: Callable[[str], bool]) -> str:
    """/etc/network/interfaces without the stanzas of the interfaces `drop` says: their iface/mapping blocks
    with the option lines that follow (indented or not, up to the next stanza), their names taken out of
    auto/allow-* lines (a line left with no name dropped); comments that name venet go too. Everything else is
    kept as it was; runs of blank lines become one."""
    out: list[str] = []
    skipping = False
    for line in text.splitlines():
        words = line.split()
        head = words[0] if words else ""
        if head in _KEYWORDS or head.startswith("allow-"):
            skipping = False
            if head in ("iface", "mapping") and len(words) > 1 and drop(words[1]):
                skipping = True
                continue
            if head in ("auto", "no-auto-down", "no-scripts") or head.startswith("allow-"):
                kept = [w for w in words[1:] if not drop(w)]
                if len(kept) != len(words) - 1:
                    if kept:
                        out.append(" ".join([head, *kept]))
                    continue
        elif head.startswith("#"):
            if "venet" in line:
                continue
        elif skipping and words:
            continue
        if not words and out and not out[-1].strip():
            continue
        out.append(line)
    while out and not out[-1].strip():
        out.pop()
    return "\n".join(out) + "\n" if out else ""


def _is_venet(ifname: str) -> bool:
    return ifname == "venet0" or ifname.startswith("venet0:")


def debian_stanzas(nic: Nic) -> str:
    """ifupdown stanzas for the venet addresses on a NIC: the first IPv4 address on NIC itself (with the gateway),
    further IPv4 addresses as NIC:N aliases (as vzctl wrote venet0:N), the first IPv6 address in an inet6
    stanza, further IPv6 addresses added by `up ip -6 addr add`."""
    v4 = [a for a in nic.addresses if a.version == 4]
    v6 = [a for a in nic.addresses if a.version == 6]
    gw = {g.version: g for g in nic.gateways}
    blocks = []
    if v4:
        b = [f"auto {nic.name}", f"iface {nic.name} inet static", f"    address {v4[0].with_prefixlen}"]
        if 4 in gw:
            b.append(f"    gateway {gw[4]}")
        blocks.append(b + [f"    hwaddress ether {nic.mac}"])
        blocks += [[f"auto {nic.name}:{n}", f"iface {nic.name}:{n} inet static", f"    address {a.with_prefixlen}"]
                   for n, a in enumerate(v4[1:], 1)]
    if v6:
        b = ([] if v4 else [f"auto {nic.name}"]) + [f"iface {nic.name} inet6 static",
                                                     f"    address {v6[0].with_prefixlen}"]
        if 6 in gw:
            b.append(f"    gateway {gw[6]}")
        blocks.append(b + [f"    up ip -6 addr add {a.with_prefixlen} dev {nic.name}" for a in v6[1:]])
    head = f"# {nic.name}: the addresses of the OpenVZ VPS, written by imgbuild migrate convert-openvz\n"
    return head + "\n\n".join("\n".join(b) for b in blocks) + "\n"


def _debian_network(root: Recorder, nic: Nic) -> None:
    old = root.read_text("/etc/network/interfaces")
    if old is None:
        base = "auto lo\niface lo inet loopback\n"
    else:
        base = _strip_stanzas(old, lambda i: _is_venet(i) or i == nic.name or i.startswith(nic.name + ":"))
    if "iface lo " not in base:
        base = "auto lo\niface lo inet loopback\n\n" + base
    root.write("/etc/network/interfaces", base.rstrip("\n") + "\n\n" + debian_stanzas(nic))


def _el_network(root: Recorder, nic: Nic, hostname: str | None) -> None:
    d = "/etc/sysconfig/network-scripts"
    for f in root.listdir(d):
        if f in ("ifcfg-venet0", "route-venet0", "route6-venet0") or f.startswith("ifcfg-venet0:"):
            root.remove(f"{d}/{f}")
        elif f.startswith(f"ifcfg-{nic.name}:"):
            root.remove(f"{d}/{f}")
    v4 = [a for a in nic.addresses if a.version == 4]
    v6 = [a for a in nic.addresses if a.version == 6]
    gw = {g.version: g for g in nic.gateways}
    if v4:
        main = net_step.Interface(address=v4[0], gateway=gw.get(4), mac=nic.mac)
        text = net_step.rhel_ifcfg(nic.name, main)
    else:
        text = "\n".join([f"DEVICE={nic.name}", "TYPE=Ethernet", "ONBOOT=yes", "NM_CONTROLLED=no",
                          f"HWADDR={nic.mac.upper()}", "BOOTPROTO=none"]) + "\n"
    if v6:
        text += f"IPV6INIT=yes\nIPV6ADDR={v6[0].with_prefixlen}\n"
        if v6[1:]:
            text += f'IPV6ADDR_SECONDARIES="{" ".join(a.with_prefixlen for a in v6[1:])}"\n'
        if 6 in gw:
            text += f"IPV6_DEFAULTGW={gw[6]}\n"
    root.write(f"{d}/ifcfg-{nic.name}", text)
    for n, a in enumerate(v4[1:], 1):
        root.write(f"{d}/ifcfg-{nic.name}:{n}", f"DEVICE={nic.name}:{n}\nONBOOT=yes\nBOOTPROTO=none\n"
                                                f"IPADDR={a.ip}\nNETMASK={a.netmask}\nPREFIX={a.network.prefixlen}\n")
    old = root.read_text("/etc/sysconfig/network")      # venet's GATEWAYDEV goes: the gateway is ifcfg-eth0's
    lines = [ln for ln in (old or "NETWORKING=yes\n").splitlines() if not re.match(r"\s*(GATEWAYDEV|GATEWAY)=", ln)]
    root.write("/etc/sysconfig/network", "\n".join(lines) + "\n")


def _resolv(root: Recorder, conf: VzConf, notes: list[str]) -> None:
    ns = conf.get("NAMESERVER")
    if ns is None:
        return
    if ns.strip() == "inherit":
        notes.append(f"{conf.where('NAMESERVER')}=inherit: vzctl copied the host's resolv.conf; the guest's "
                     "/etc/resolv.conf is left as it is")
        return
    servers = []
    for w in ns.split():
        try:
            servers.append(str(ipaddress.ip_address(w)))
        except ValueError:
            raise bad_value(conf, "NAMESERVER", f"{w!r} is not an IP address",
                            "fix NAMESERVER in a copy of the config") from None
    search = []
    for w in (conf.get("SEARCHDOMAIN") or "").split():
        try:
            search.append(checks.hostname(w))
        except ValueError as e:
            raise bad_value(conf, "SEARCHDOMAIN", str(e), "fix SEARCHDOMAIN in a copy of the config") from None
    text = "# written by imgbuild migrate convert-openvz (NAMESERVER, SEARCHDOMAIN of the VPS)\n"
    text += (f"search {' '.join(search)}\n" if search else "") + "".join(f"nameserver {s}\n" for s in servers)
    root.write("/etc/resolv.conf", text)


def _fstab(root: Recorder) -> None:
    """OpenVZ guests' fstab names the container's root (simfs, ploop); LXC mounts the root itself: such lines
    are commented out, every other line kept."""
    old = root.read_text("/etc/fstab")
    if old is None:
        return
    out = []
    for line in old.splitlines():
        f = line.split()
        if f and not f[0].startswith("#") and len(f) >= 3 and (
                f[2] in ("simfs", "ploop") or f[0] in ("/dev/simfs",) or f[0].startswith("/dev/ploop") or f[1] == "/"):
            out.append("# imgbuild: the container's root is LXC's (was OpenVZ's): " + line)
        else:
            out.append(line)
    new = "\n".join(out) + ("\n" if old.endswith("\n") or out else "")
    if new != old:
        st = root.stat("/etc/fstab")
        root.write("/etc/fstab", new, st.st_mode & 0o7777 if st else 0o644)


class GuestOS:
    """What differs between guest families for the conversion: how to recognize one, where its network and host
    name live, and which init shim its upstart needs ("none": left alone)."""

    family: Family
    markers: tuple[str, ...]
    upstart_shim = "none"

    def network(self, root: Recorder, nic: Nic, hostname: str | None) -> None:
        raise NotImplementedError

    def hostname(self, root: Recorder, hostname: str) -> None:
        root.write("/etc/hostname", hostname.split(".")[0] + "\n")


class DebianOS(GuestOS):
    family = FAMILIES["debian"]
    markers = ("/etc/debian_version",)

    def network(self, root: Recorder, nic: Nic, hostname: str | None) -> None:
        _debian_network(root, nic)


class ElOS(GuestOS):
    family = FAMILIES["rhel"]
    markers = ("/etc/redhat-release", "/etc/centos-release", "/etc/system-release")
    upstart_shim = "upstart-lxc"

    def network(self, root: Recorder, nic: Nic, hostname: str | None) -> None:
        _el_network(root, nic, hostname)

    def hostname(self, root: Recorder, hostname: str) -> None:
        super().hostname(root, hostname)
        old = root.read_text("/etc/sysconfig/network") or "NETWORKING=yes\n"
        lines = [ln for ln in old.splitlines() if not re.match(r"\s*HOSTNAME=", ln)] + [f"HOSTNAME={hostname}"]
        root.write("/etc/sysconfig/network", "\n".join(lines) + "\n")


GUESTS: tuple[GuestOS, ...] = (DebianOS(), ElOS())


def guest_of_tree(root: RootFS) -> GuestOS:
    for g in GUESTS:
        if any(root.exists(m) for m in g.markers):
            return g
    raise InputError(f"{root.path}: neither a Debian nor an EL system (no /etc/debian_version, /etc/redhat-release)",
                     "convert-openvz fixes the network and console of Debian/Ubuntu and CentOS/RHEL guests; "
                     "convert the config by hand for others")


def guest_changes(root: RootFS, nics: list[Nic], hostname: str | None, conf: VzConf,
                  notes: list[str]) -> tuple[list[Change], str, str]:
    """Every change the guest's files need for LXC, worked out without writing: (changes, family, init)."""
    rec = Recorder(root)
    guest = guest_of_tree(root)
    venet = next((n for n in nics if n.venet), None)
    if venet is not None:
        guest.network(rec, venet, hostname)
    if hostname:
        guest.hostname(rec, hostname)
    _resolv(rec, conf, notes)
    _fstab(rec)
    init = init_of_tree(root, guest)
    if init == "none":
        notes.append("the guest's init is neither systemd, upstart (EL) nor sysvinit: its console getty is left "
                     "as it is")
    else:
        try:
            init_step.SHIMS[init].apply(SimpleNamespace(root=rec, family=guest.family))
        except InputError as e:
            notes.append(f"console getty: {e.message}")
    return list(rec.pending.values()), guest.family.name, init
