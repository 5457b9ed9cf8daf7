"""The Xen bridge on an EL6 host: `migrate xen-bridge` (pure text -> text; no I/O, no subprocess). Xen 4's xl
never creates the bridge Xen 3's network-bridge script made, so the host's own ifcfg files must define it:
plan_bridge() writes them from the host's ifcfg-eth0, and bridges_used() / bridges_defined() find the bridges
guests use that a host lacks. What goes where, and why: docs/xen-bridge.md.
"""
from __future__ import annotations

import posixpath
import re
from collections import Counter
from dataclasses import dataclass, field

from builder.guestconf import xen as xenconf
from builder.identity.formats import shvars

__all__ = ["DEFAULT_BRIDGE", "BridgePlan", "bridges_defined", "bridges_used", "check_ifname", "check_names",
           "missing_bridges", "plan_bridge"]

DEFAULT_BRIDGE = "xenbr0"      # xl's default for a vif without bridge= (and xl.conf's vif.default.bridge default)

# keys that belong to the interface holding the address: they move to the bridge
_TO_BRIDGE = re.compile(r"""(?:BOOTPROTO|BOOTP|IPADDR\d*|NETMASK\d*|PREFIX\d*|GATEWAY\d*|BROADCAST\d*|NETWORK\d*
    |METRIC|SRCADDR|SCOPE|DNS\d+|DOMAIN|PEERDNS|PEERROUTES|PEERNTP|DEFROUTE|GATEWAYDEV|ARP|ARPCHECK|ARPUPDATE
    |NOZEROCONF|ZONE|IPV4_FAILURE_FATAL|IPV4_ROUTE_METRIC|DHCP_[A-Z0-9_]+|DHCLIENT[A-Z0-9_]*|DHCPRELEASE
    |PERSISTENT_DHCLIENT|IPV6[A-Z0-9_]*|DHCPV6[A-Z0-9_]*)""", re.VERBOSE)
_TO_BOTH = {"ONBOOT", "USERCTL", "NM_CONTROLLED"}
_DEV_VALUED = {"GATEWAYDEV", "IPV6_DEFAULTDEV"}     # values naming an interface: the NIC's becomes the bridge's
# an interface name initscripts and the kernel take (IFNAMSIZ - 1 = 15 characters)
_IFNAME = re.compile(r"[A-Za-z0-9_.]{1,15}")
_IFNAME_NIC = re.compile(r"[A-Za-z0-9_.-]{1,15}")
# /etc/init.d/functions' __sed_discard_ignored_files: ifcfg files the network service never reads
_IGNORED = re.compile(r"(~|\.bak|\.old|\.orig|\.rpmnew|\.rpmorig|\.rpmsave)$")
_NOT_BRIDGED_SCRIPTS = {"vif-route", "vif-nat"}


@dataclass(frozen=True)
class BridgePlan:
    files: dict[str, str]        # file name ("ifcfg-xenbr0", "ifcfg-eth0") -> its full new text
    notes: list[str]             # what moved where, and what the admin must know


def check_ifname(name: str, what: str = "--iface") -> str:
    """An interface name as the kernel takes one (dev_valid_name: 1 to 15 bytes, not `.` or `..`, no `/`, `:`,
    whitespace or NUL) and as initscripts and an ifcfg-NAME file name take one (letters, digits, `_`, `.`, `-`).
    ValueError naming `what` otherwise."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what}: an empty interface name")
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) > 15:
        raise ValueError(f"{what} {name!r}: an interface name has at most 15 characters (the kernel's IFNAMSIZ)")
    if name in (".", "..") or any(c in name for c in "/:\0") or any(c.isspace() for c in name):
        raise ValueError(f"{what} {name!r}: the kernel takes no interface name with '/', ':' or whitespace, "
                         "nor '.' or '..'")
    if not _IFNAME_NIC.fullmatch(name):
        raise ValueError(f"{what} {name!r}: not an interface name initscripts can take (letters, digits, '_', "
                         "'.', '-')")
    return name


def check_names(iface: str, bridge: str) -> None:
    """The NIC and the bridge plan_bridge() would be given: ValueError for a name it would refuse."""
    check_ifname(iface, "--iface")
    check_ifname(bridge, "--bridge")
    if not _IFNAME.fullmatch(bridge):
        raise ValueError(f"--bridge {bridge!r} cannot be a bridge name here (initscripts would read ifcfg-{bridge} as "
                         f"a clone file of ifcfg-{bridge.split('-')[0]}); e.g. xenbr0, br0")
    if bridge == iface:
        raise ValueError(f"the bridge and the interface are both named {iface!r}")


def _side(key: str) -> str:
    if key in _TO_BOTH:
        return "both"
    if _TO_BRIDGE.fullmatch(key):
        return "bridge"
    return "nic"


def _assign(pre: str, key: str, value: str, q: str) -> str:
    return f"{pre}{key}={q}{value}{q}"


def plan_bridge(ifcfg_text: str, iface: str = "eth0", bridge: str = DEFAULT_BRIDGE,
                source: str = "ifcfg-eth0") -> BridgePlan:
    """ifcfg-<bridge> (new) and ifcfg-<iface> (rewritten) from the host's ifcfg-<iface> text; docs/xen-bridge.md
    says what goes where. ValueError for what cannot be bridged (the message names the key)."""
    src = posixpath.basename(source) or source
    _check_plan_names(iface, bridge)
    lines, found = shvars(ifcfg_text)
    if ifcfg_text.endswith("\n"):
        lines = lines[:-1]
    var: dict[str, str] = {}
    for _, m in found:
        var[m.group("key")] = m.group("val")       # the last assignment wins, as in the shell
    device = _check_bridgeable(var, iface, bridge, src)
    plan = _Plan(lines, dict(found), var, iface, bridge, src, device, _quote_style(found))
    plan.deal()
    return BridgePlan({f"ifcfg-{bridge}": plan.bridge_file(), f"ifcfg-{iface}": plan.nic_file()}, plan.notes())


def _check_plan_names(iface: str, bridge: str) -> None:
    if not _IFNAME_NIC.fullmatch(iface):
        raise ValueError(f"{iface!r} is not an interface name (letters, digits, '_', '.', '-'; at most 15)")
    if not _IFNAME.fullmatch(bridge):
        why = ("initscripts would read ifcfg-" + bridge + " as a clone file of ifcfg-" + bridge.split("-")[0]
               if "-" in bridge else "letters, digits, '_', '.'; at most 15 characters")
        raise ValueError(f"{bridge!r} cannot be a bridge name here ({why}); e.g. xenbr0, br0")
    if bridge == iface:
        raise ValueError(f"the bridge and the interface are both named {iface!r}")


def _check_bridgeable(var: dict[str, str], iface: str, bridge: str, src: str) -> str | None:
    """The file's DEVICE=, after refusing a file that is not iface's, a bridge, a port already or a bond slave."""
    device = var.get("DEVICE")
    if device is not None and device != iface:
        raise ValueError(f"{src}: DEVICE={device}, not {iface}: this is not {iface}'s file (use --iface {device})")
    name = device or iface
    if var.get("TYPE", "").lower() == "bridge":
        raise ValueError(f"{src}: TYPE={var['TYPE']}: {name} is already a bridge itself; its ports are the files "
                         f"with BRIDGE={name}")
    if var.get("BRIDGE"):
        other = var["BRIDGE"]
        if other == bridge:
            raise ValueError(f"{name} is already a port of {bridge} ({src} has BRIDGE={bridge}): nothing to do")
        raise ValueError(f"{name} is already a port of {other} ({src} has BRIDGE={other}), not of {bridge}: use "
                         f"that bridge (--bridge {other}, or convert the guests with --bridge-map {bridge}={other})")
    if var.get("MASTER") or var.get("SLAVE", "").lower() in ("yes", "1", "true"):
        master = var.get("MASTER") or "its bond"
        raise ValueError(f"{src}: MASTER={var.get('MASTER', '')} SLAVE={var.get('SLAVE', '')}: {name} is a slave of "
                         f"{master}; bridge the bond instead (--iface {var.get('MASTER') or 'bondN'})")
    return device


def _quote_style(found: list[tuple[int, re.Match]]) -> str:
    """The quote most of the file's settings use, for the lines written here."""
    quotes = Counter(m.group("q") for _, m in found)
    return '"' if quotes['"'] > quotes[""] + quotes["'"] else ("'" if quotes["'"] > quotes[""] + quotes['"'] else "")


def _comment_owners(lines: list[str], matches: dict[int, re.Match]) -> list[int | None]:
    """For each line, the assignment whose comment block it is: a comment block directly above an assignment
    (unless it opens the file); None for every other line."""
    owner: list[int | None] = [None] * len(lines)
    i = 0
    while i < len(lines):
        if lines[i].lstrip().startswith("#") and i not in matches:
            j = i
            while j < len(lines) and lines[j].lstrip().startswith("#") and j not in matches:
                j += 1
            header = all(not lines[k].strip() for k in range(i))
            if j < len(lines) and j in matches and not header:
                for k in range(i, j):
                    owner[k] = j
            i = j
        else:
            i += 1
    return owner


@dataclass
class _Plan:
    """The source's lines dealt out to the bridge's file and the NIC's, and which keys went where."""

    lines: list[str]
    matches: dict[int, re.Match]
    var: dict[str, str]
    iface: str
    bridge: str
    src: str
    device: str | None
    q: str                       # the quote for the lines written here
    moved: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    both: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    written_br: set[str] = field(default_factory=set)
    written_nic: set[str] = field(default_factory=set)
    bridge_body: list[str] = field(default_factory=list)
    nic_body: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.device or self.iface

    def deal(self) -> None:
        """Each line to its side: an assignment its key's side, a comment block its assignment's, the rest the
        NIC's."""
        owner = _comment_owners(self.lines, self.matches)
        dropped = False
        for n, line in enumerate(self.lines):
            k = n if n in self.matches else owner[n]
            side = _side(self.matches[k].group("key")) if k is not None else "nic"
            m = self.matches.get(n)
            key = m.group("key") if m else None
            if side in ("bridge", "both"):
                self.to_bridge(n, side, key)
            if side == "bridge":
                if key == "BOOTPROTO" and "BOOTPROTO" not in self.written_nic:
                    self.nic_body.append(_assign(m.group("pre"), "BOOTPROTO", "none", m.group("q")))
                    self.written_nic.add("BOOTPROTO")
                dropped = True
                continue
            if not line.strip() and dropped and (not self.nic_body or not self.nic_body[-1].strip()):
                continue             # a blank line left doubled (or leading) by the lines moved away
            kept = self.to_nic(line, side, m, key)
            if kept is not None and kept.strip():
                dropped = False
        while self.nic_body and not self.nic_body[-1].strip():
            self.nic_body.pop()

    def to_bridge(self, n: int, side: str, key: str | None) -> None:
        new = self.bridge_line(n)
        if new is not None:
            self.bridge_body.append(new)
        if key:
            self.written_br.add(key)
            (self.moved if side == "bridge" else self.both).append(key)

    def bridge_line(self, n: int) -> str | None:
        """The line for the bridge file (moved verbatim, or with its value made right for the bridge)."""
        m = self.matches.get(n)
        if m is None:
            return self.lines[n]
        key = m.group("key")
        if key == "NM_CONTROLLED":
            return _assign(m.group("pre"), key, "no", m.group("q")) if "NM_CONTROLLED" not in self.written_br else None
        if key in _DEV_VALUED and m.group("val") == self.name:
            self.changed.append(f"{key}={self.name} -> {self.bridge}")
            return self.lines[n][:m.start("val")] + self.bridge + self.lines[n][m.end("val"):]
        return self.lines[n]

    def to_nic(self, line: str, side: str, m: re.Match | None, key: str | None) -> str | None:
        """The line as the NIC's file keeps it (appended), or None when it is left out."""
        if key == "NM_CONTROLLED":
            if "NM_CONTROLLED" in self.written_nic:
                return None
            line = _assign(m.group("pre"), key, "no", m.group("q"))
        if key:
            self.written_nic.add(key)
            if side == "nic":
                self.kept.append(key)
        self.nic_body.append(line)
        return line

    def nic_file(self) -> str:
        """The NIC's file: DEVICE made explicit, BOOTPROTO=none, NM_CONTROLLED=no, BRIDGE= last."""
        body, q = list(self.nic_body), self.q
        if "DEVICE" not in self.written_nic:
            first = next((k for k, line in enumerate(body) if line.strip() and not line.lstrip().startswith("#")),
                         len(body))
            body.insert(first, _assign("", "DEVICE", self.iface, q))
        if "BOOTPROTO" not in self.written_nic:
            body.append(_assign("", "BOOTPROTO", "none", q))
        if "NM_CONTROLLED" not in self.written_nic:
            body.append(_assign("", "NM_CONTROLLED", "no", q))
        body.append(f"# a port of the Xen bridge {self.bridge}: its IP settings are in ifcfg-{self.bridge}")
        body.append(_assign("", "BRIDGE", self.bridge, q))
        return "\n".join(body) + "\n"

    def bridge_file(self) -> str:
        bridge, q = self.bridge, self.q
        text = [f"# {bridge}: the Xen guests' bridge; {self.name}'s IP settings (from {self.src}) are here now",
                _assign("", "DEVICE", bridge, q), _assign("", "TYPE", "Bridge", q)] + self.bridge_body
        text += [_assign("", "DELAY", "0", q), _assign("", "STP", "off", q)]
        if "NM_CONTROLLED" not in self.written_br:
            text.append(_assign("", "NM_CONTROLLED", "no", q))
        return "\n".join(text) + "\n"

    def notes(self) -> list[str]:
        """What moved where, and what the admin must know."""
        var, name, bridge, iface, src = self.var, self.name, self.bridge, self.iface, self.src
        bootproto = var.get("BOOTPROTO", "")
        has_ip = any(re.fullmatch(r"IPADDR\d*|IPV6ADDR", k) for k in var)
        notes = [(f"ifcfg-{bridge}: new bridge {bridge} (TYPE=Bridge, DELAY=0, STP=off) with {name}'s address "
                  f"settings from {src}: {_uniq(self.moved)}"),
                 f"ifcfg-{iface}: now a port of {bridge} (BRIDGE={bridge}, BOOTPROTO=none); kept: {_uniq(self.kept)}"]
        if self.both:
            notes.append(f"in both files: {_uniq(self.both)}")
        notes += self.changed
        if bootproto.lower() in ("dhcp", "bootp"):
            notes.append(f"BOOTPROTO={bootproto}: {bridge} asks for the lease now; it uses the lowest MAC of its "
                         f"ports, which is {name}'s (Xen's backend vifs have fe:ff:ff:ff:ff:ff), so a reservation "
                         f"for {name}'s MAC still applies")
        elif not has_ip:
            notes.append(f"{src} has no address (no IPADDR, BOOTPROTO={bootproto or 'unset'}): {bridge} gets none "
                         "either; the host is not reachable over it")
        notes.append("NM_CONTROLLED=no in both: EL6's NetworkManager does not manage bridges; the `network` service "
                     "must bring them up (chkconfig NetworkManager off; chkconfig network on)")
        if "MTU" in var:
            notes.append(f"MTU={var['MTU']} stays on {name}; a bridge takes the smallest MTU of its ports, so give "
                         f"the guests' vifs mtu={var['MTU']} too, or {bridge} drops to 1500 when a guest starts")
        if var.get("HWADDR") is None and var.get("MACADDR") is None:
            notes.append(f"{src} has no HWADDR: {iface} is matched by name only")
        if self.device is None:
            notes.append(f"{src} had no DEVICE=: DEVICE={iface} written into ifcfg-{iface}")
        return notes


def _uniq(keys: list[str]) -> str:
    return ", ".join(dict.fromkeys(keys)) or "none"


def bridges_defined(ifcfg_files: dict[str, str]) -> set[str]:
    """The bridges a host's network-scripts define: ifcfg-* files (names or paths -> texts) with TYPE=Bridge
    (initscripts compares it case-sensitively) or TYPE=OVSBridge (Open vSwitch's ifcfg integration, which
    vif-openvswitch attaches to by bridge= too); the name is DEVICE= or else the file name after "ifcfg-". Files
    the network service skips (*~, .bak, .old, .orig, .rpmnew, .rpmorig, .rpmsave) and alias files (ifcfg-br0:1)
    define nothing."""
    out = set()
    for path, text in ifcfg_files.items():
        base = posixpath.basename(path)
        if not base.startswith("ifcfg-") or _IGNORED.search(base) or ":" in base:
            continue
        _, found = shvars(text)
        var = {m.group("key"): m.group("val") for _, m in found}
        if var.get("TYPE") in ("Bridge", "OVSBridge"):
            out.add(var.get("DEVICE") or base[len("ifcfg-"):])
    return out


def bridges_used(xen_cfg_text: str, default: str = DEFAULT_BRIDGE) -> list[str]:
    """The bridge of each vif of a Xen guest config (xm or xl; read, never run), in vif order: index i is vif i
    (its DEVID). A vif without bridge= (or with an empty one, or the empty vif '') gets `default`: xl's default,
    xenbr0, or what the host's xl.conf sets as vif.default.bridge. A vif that is not bridged in dom0 gets "": one
    with script=vif-route or vif-nat, or with backend= another domain (a driver domain has its own bridges).
    No vif setting: []. ValueError when the vif list cannot be known without running Python."""
    cfg = xenconf.read_xm(xen_cfg_text)
    if "vif" in cfg.unknown:
        raise ValueError("vif: its value is computed by Python at run time; the bridges cannot be read")
    vifs = cfg.get("vif")
    if vifs is None:
        return []
    if isinstance(vifs, str):
        vifs = [vifs]
    if not isinstance(vifs, list) or not all(isinstance(v, str) for v in vifs):
        raise ValueError(f"vif must be a list of strings, not {vifs!r}")
    out = []
    for spec in vifs:
        keys = dict(xenconf.parse_vif(spec))       # a key given twice: the last one counts, as in xl
        script = posixpath.basename(keys.get("script", "").split()[0]) if keys.get("script", "").split() else ""
        if script in _NOT_BRIDGED_SCRIPTS or keys.get("backend", "0") not in ("0", "", "Domain-0"):
            out.append("")
        else:
            out.append(keys.get("bridge") or default)
    return out


def missing_bridges(used: dict[str, list[str]], defined: set[str]) -> list[str]:
    """A warning line for each vif whose bridge the destination does not define; used maps a guest config's name
    to bridges_used() of it (vifs with "" are not bridged and never missing). The fix offered: an ifcfg file for
    the bridge, or --bridge-map onto a bridge that exists (xenbr0 when defined, else the first defined)."""
    target = DEFAULT_BRIDGE if DEFAULT_BRIDGE in defined else min(defined, default=None)
    out = []
    for cfg, bridges in used.items():
        for i, b in enumerate(bridges):
            if not b or b in defined:
                continue
            fix = f"add ifcfg-{b}" + (f" or use --bridge-map {b}={target}" if target else "")
            out.append(f"{cfg}: vif {i} uses bridge {b!r}, which the destination does not define ({fix})")
    return out
