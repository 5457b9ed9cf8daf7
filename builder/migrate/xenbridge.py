"""The Xen bridge on an EL6 host: `migrate xen-bridge` (pure text -> text; no I/O, no subprocess).

Xen 3's xend ran the network-bridge script at start, which renamed eth0 to peth0 and put a bridge xenbr0 between
it and the guests. Xen 4's xl runs no such script: it never creates a bridge (xl-network-configuration(5):
"The bridge must be configured using your distribution's network configuration tools"), so a guest moved from
CentOS 5 + Xen 3 to CentOS 6 + Xen 4 fails with "xenbr0 does not exist" until the host's own network config
defines it (seed 004). On EL6 that is two initscripts files in /etc/sysconfig/network-scripts, as the RHEL 6
Deployment Guide (11.2.6 Network Bridge) and initscripts' sysconfig.txt give them:

    ifcfg-xenbr0                      ifcfg-eth0
    DEVICE=xenbr0                     DEVICE=eth0
    TYPE=Bridge    (case-sensitive)   HWADDR=00:1E:...   (binds the file to the NIC: stays here)
    BOOTPROTO=static                  BOOTPROTO=none
    IPADDR=... NETMASK=... GATEWAY=.. ONBOOT=yes
    ONBOOT=yes                        NM_CONTROLLED=no
    DELAY=0                           BRIDGE=xenbr0
    STP=off
    NM_CONTROLLED=no

plan_bridge() makes both files from the host's current ifcfg-eth0. Which key goes where:

- to the bridge (the interface that now holds the address): the IPv4 and IPv6 settings and everything about
  getting or using an address: BOOTPROTO, IPADDRn, NETMASKn, PREFIXn, GATEWAYn, BROADCAST, NETWORK, METRIC,
  SRCADDR, SCOPE, DNSn, DOMAIN, PEERDNS, PEERROUTES, DEFROUTE, GATEWAYDEV, ARP, ARPCHECK, NOZEROCONF, ZONE,
  IPV4_FAILURE_FATAL, DHCP_* / DHCLIENT* / PERSISTENT_DHCLIENT, IPV6* and DHCPV6*. A DHCP host stays a DHCP host:
  the bridge asks for the lease. GATEWAYDEV / IPV6_DEFAULTDEV naming the NIC are changed to name the bridge.
- to both: ONBOOT and USERCTL (as the source has them: a bridge whose port stays down is useless, and the other
  way round), NM_CONTROLLED (always written as "no" in both: EL6's NetworkManager does not handle bridges; the
  `network` service must bring them up).
- the NIC keeps the rest: DEVICE, HWADDR (it names the NIC; on the bridge ifup would refuse the device when the
  MACs differ), MACADDR, UUID and NAME (NetworkManager's profile of this NIC), TYPE=Ethernet, MTU, ETHTOOL_OPTS,
  LINKDELAY, BONDING_OPTS, VLAN settings, and every key this module does not know. It gets BOOTPROTO=none and
  BRIDGE=<bridge>. (initscripts' ifup-eth enslaves a BRIDGE= port and exits before any address handling, so an
  address left on the port would be ignored anyway; MACADDR and MTU are applied to the port before it joins.)
- the bridge file gets DEVICE=<bridge>, TYPE=Bridge, DELAY=0 (no 15 s forwarding delay: the host's own DHCP or
  first packets on the new bridge would otherwise be lost) and STP=off (one uplink: no loop to break; STP
  would also delay the port). initscripts passes them to `brctl setfd` and `brctl stp`.

Comments: a comment block at the top of the file (CentOS 5's anaconda writes the NIC's model there) is the file's
header and stays with the NIC, like every comment that is not directly above a setting; a comment block directly
above a setting (no blank line between) moves with that setting (to both files when the setting goes to both).
A trailing `# ...` on a setting's line moves with the line. Lines are moved verbatim: quoting, spacing and order
are kept; the lines this module writes itself take the quoting most of the file's settings use.

Refused with ValueError, naming the key: a file that is already a port (BRIDGE=; the idempotency check: a second
run on the output says "eth0 is already a port of xenbr0"), a bridge itself (TYPE=Bridge), a bond slave
(MASTER=/SLAVE=: bridge the bond instead), a DEVICE= other than the interface asked for; and names that
initscripts or the kernel cannot take (more than 15 characters, a `-` in the bridge name: initscripts reads
ifcfg-xen-br0 as the clone file "br0" of ifcfg-xen, which is why Xen's own script was changed from xen-br0 to
xenbr0).

bridges_used() reads a guest config (xm or xl) with builder.guestconf.xen's reader, never running it; a vif without
bridge= goes to xl's default bridge, xenbr0 (xl-network-configuration(5): "The default is xenbr0"), unless the
host's /etc/xen/xl.conf sets vif.default.bridge (pass it as `default`). xend (Xen 3) instead used the bridge its
vif-bridge script found, which on a network-bridge host was xenbr0 too.

Sources: RHEL 6 Deployment Guide 11.2.6 (https://access.redhat.com/documentation/en-us/red_hat_enterprise_linux/
6/html/deployment_guide/s2-networkscripts-interfaces_network-bridge), initscripts doc/sysconfig.txt
("Bridge-specific items: TYPE=Bridge, STP=off|on, DELAY=") and sysconfig/network-scripts/ifup-eth,
network-functions (https://github.com/fedora-sysv/initscripts), xl-network-configuration(5)
(https://xenbits.xenproject.org/docs/4.2-testing/misc/xl-network-configuration.html) and xl.conf(5).
"""
from __future__ import annotations

import posixpath
import re
from collections import Counter
from dataclasses import dataclass

from builder.guestconf import xen as xenconf
from builder.identity.formats import shvars as _shvars

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
    """ifcfg-<bridge> (new) and ifcfg-<iface> (rewritten) from the host's ifcfg-<iface> text; see the module
    docstring for what goes where. ValueError for what cannot be bridged (the message names the key)."""
    src = posixpath.basename(source) or source
    if not _IFNAME_NIC.fullmatch(iface):
        raise ValueError(f"{iface!r} is not an interface name (letters, digits, '_', '.', '-'; at most 15)")
    if not _IFNAME.fullmatch(bridge):
        why = ("initscripts would read ifcfg-" + bridge + " as a clone file of ifcfg-" + bridge.split("-")[0]
               if "-" in bridge else "letters, digits, '_', '.'; at most 15 characters")
        raise ValueError(f"{bridge!r} cannot be a bridge name here ({why}); e.g. xenbr0, br0")
    if bridge == iface:
        raise ValueError(f"the bridge and the interface are both named {iface!r}")

    lines, found = _shvars(ifcfg_text)
    final_newline = ifcfg_text.endswith("\n")
    if final_newline:
        lines = lines[:-1]
    matches = dict(found)
    var: dict[str, str] = {}
    for _, m in found:
        var[m.group("key")] = m.group("val")       # the last assignment wins, as in the shell

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

    quotes = Counter(m.group("q") for _, m in found)
    q = '"' if quotes['"'] > quotes[""] + quotes["'"] else ("'" if quotes["'"] > quotes[""] + quotes['"'] else "")

    # who owns each line: an assignment its key's side; a comment block directly above an assignment that
    # assignment's side (unless it opens the file); everything else the NIC
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

    def side_of(n: int) -> str:
        k = n if n in matches else owner[n]
        return _side(matches[k].group("key")) if k is not None else "nic"

    def rewrite(n: int) -> str | None:
        """The line for the bridge file (moved verbatim, or with its value made right for the bridge)."""
        m = matches.get(n)
        if m is None:
            return lines[n]
        key = m.group("key")
        if key == "NM_CONTROLLED":
            return _assign(m.group("pre"), key, "no", m.group("q")) if "NM_CONTROLLED" not in written_br else None
        if key in _DEV_VALUED and m.group("val") == name:
            changed.append(f"{key}={name} -> {bridge}")
            return lines[n][:m.start("val")] + bridge + lines[n][m.end("val"):]
        return lines[n]

    moved: list[str] = []
    kept: list[str] = []
    both: list[str] = []
    changed: list[str] = []
    written_br: set[str] = set()
    written_nic: set[str] = set()
    bridge_body: list[str] = []
    nic_body: list[str] = []
    dropped = False
    for n, line in enumerate(lines):
        side = side_of(n)
        m = matches.get(n)
        key = m.group("key") if m else None
        if side in ("bridge", "both"):
            new = rewrite(n)
            if new is not None:
                bridge_body.append(new)
            if key:
                written_br.add(key)
                (moved if side == "bridge" else both).append(key)
        if side == "bridge":
            if key == "BOOTPROTO" and "BOOTPROTO" not in written_nic:
                nic_body.append(_assign(m.group("pre"), "BOOTPROTO", "none", m.group("q")))
                written_nic.add("BOOTPROTO")
            dropped = True
            continue
        if not line.strip() and dropped and (not nic_body or not nic_body[-1].strip()):
            continue             # a blank line left doubled (or leading) by the lines moved away
        if key == "NM_CONTROLLED":
            if "NM_CONTROLLED" in written_nic:
                continue
            line = _assign(m.group("pre"), key, "no", m.group("q"))
        if key:
            written_nic.add(key)
            if side == "nic":
                kept.append(key)
        nic_body.append(line)
        if line.strip():
            dropped = False
    while nic_body and not nic_body[-1].strip():
        nic_body.pop()

    # the NIC: DEVICE made explicit, BOOTPROTO=none, NM_CONTROLLED=no, BRIDGE= last
    if "DEVICE" not in written_nic:
        first = next((k for k, line in enumerate(nic_body) if line.strip() and not line.lstrip().startswith("#")),
                     len(nic_body))
        nic_body.insert(first, _assign("", "DEVICE", iface, q))
    if "BOOTPROTO" not in written_nic:
        nic_body.append(_assign("", "BOOTPROTO", "none", q))
    if "NM_CONTROLLED" not in written_nic:
        nic_body.append(_assign("", "NM_CONTROLLED", "no", q))
    nic_body.append(f"# a port of the Xen bridge {bridge}: its IP settings are in ifcfg-{bridge}")
    nic_body.append(_assign("", "BRIDGE", bridge, q))

    bridge_text = [f"# {bridge}: the Xen guests' bridge; {name}'s IP settings (from {src}) are here now",
                   _assign("", "DEVICE", bridge, q), _assign("", "TYPE", "Bridge", q)] + bridge_body
    bridge_text += [_assign("", "DELAY", "0", q), _assign("", "STP", "off", q)]
    if "NM_CONTROLLED" not in written_br:
        bridge_text.append(_assign("", "NM_CONTROLLED", "no", q))

    def uniq(keys: list[str]) -> str:
        return ", ".join(dict.fromkeys(keys)) or "none"

    bootproto = var.get("BOOTPROTO", "")
    has_ip = any(re.fullmatch(r"IPADDR\d*|IPV6ADDR", k) for k in var)
    notes = [(f"ifcfg-{bridge}: new bridge {bridge} (TYPE=Bridge, DELAY=0, STP=off) with {name}'s address "
              f"settings from {src}: {uniq(moved)}"),
             f"ifcfg-{iface}: now a port of {bridge} (BRIDGE={bridge}, BOOTPROTO=none); kept: {uniq(kept)}"]
    if both:
        notes.append(f"in both files: {uniq(both)}")
    notes += changed
    if bootproto.lower() in ("dhcp", "bootp"):
        notes.append(f"BOOTPROTO={bootproto}: {bridge} asks for the lease now; it uses the lowest MAC of its ports, "
                     f"which is {name}'s (Xen's backend vifs have fe:ff:ff:ff:ff:ff), so a reservation for "
                     f"{name}'s MAC still applies")
    elif not has_ip:
        notes.append(f"{src} has no address (no IPADDR, BOOTPROTO={bootproto or 'unset'}): {bridge} gets none "
                     "either; the host is not reachable over it")
    notes.append("NM_CONTROLLED=no in both: EL6's NetworkManager does not manage bridges; the `network` service "
                 "must bring them up (chkconfig NetworkManager off; chkconfig network on)")
    if "MTU" in var:
        notes.append(f"MTU={var['MTU']} stays on {name}; a bridge takes the smallest MTU of its ports, so give the "
                     f"guests' vifs mtu={var['MTU']} too, or {bridge} drops to 1500 when a guest starts")
    if var.get("HWADDR") is None and var.get("MACADDR") is None:
        notes.append(f"{src} has no HWADDR: {iface} is matched by name only")
    if device is None:
        notes.append(f"{src} had no DEVICE=: DEVICE={iface} written into ifcfg-{iface}")
    return BridgePlan({f"ifcfg-{bridge}": "\n".join(bridge_text) + "\n", f"ifcfg-{iface}": "\n".join(nic_body) + "\n"},
                      notes)


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
        _, found = _shvars(text)
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
