"""Rewriters for a guest's new identity, one per file format: pure text -> text, for clone and re-identify.

A clone of vm0 must not keep vm0's host name, addresses or MACs (seed 000: vm0 copied to vm1 and vm2 by editing
names and IPs; seed 004: a copied Xen guest that kept its MAC took a whole LAN down). What changes is a `Rename`:
the new host name and the names it replaces, old -> new addresses (a new prefix only where it was given),
old -> new gateways and old -> new MACs. Each function here takes a file's text and a Rename and returns the
text with the identity changed, and nothing else:

- every other byte is kept: comments, blank lines, order, indentation, spacing around `=`, quoting style, line
  endings, and the case and notation of MACs as the file has them (ifcfg and OpenVZ write them upper case,
  udev/LXC/Xen lower case; a MAC without letters takes the format's convention);
- a text the Rename does not apply to comes back unchanged, and every function is idempotent:
  f(f(x, r), r) == f(x, r). Rename refuses mappings that would make that impossible (a new address that is also
  an old one, a swap, a gateway that is also a guest address);
- values are compared as what they are, never as substrings: addresses are parsed (10.0.3.2 never matches inside
  10.0.3.20, 110.0.3.2 or 10.0.3.2.1; fd00::2 matches fd00:0::2), MACs in any case and notation, host names as
  whole names (vm0 never matches vm01, xvm0, vm0-db or www.vm0), case-insensitively as DNS does.

Why text edits and not a parser library: ifcfg and ctid.conf are shell fragments, interfaces(5), LXC configs,
systemd units and NetworkManager keyfiles are line-based key/value formats with comments, netplan is YAML with
comments. A round trip through configparser, a YAML dumper or a shell parser loses comments, order, quoting and
spacing (and PyYAML cannot keep comments at all), which is what the admin reading the clone's files later needs
most. So each function works line by line with a regex built for its format, edits only the values of the keys
that carry identity, and leaves every other byte alone. Xen configs are the exception for reading: read_xen uses
builder.guestconf.xen's ast-based reader (the file is Python for xm); rewriting stays textual, inside string literals.

What is deliberately NOT changed (the clone's caller decides about these):

- addresses of other hosts: DNS servers (DNS1=, dns-nameservers, nameservers:, DNS=, NAMESERVER=), peers in
  application files. In a clone the original guest still runs at the old address, so a reference to the old
  address as a *peer* must stay (seed 000: vm1's my.cnf points at vm0's 10.0.3.2 on purpose). Gateways change
  only through Rename.gateways, and only in gateway keys.
- /etc/hosts lines of other hosts; and when the hosts file already lists the new identity (a cluster hosts file
  copied from vm0, with vm1 and vm2 in it), the old guest's own line stays too: it is now the entry for the
  original, which still exists. Loopback lines (127.0.1.1 vm0, 127.0.0.1 vm0 localhost) are always the guest's
  own and always renamed; the localhost names on them stay.
- ifcfg UUID=: it names the connection profile inside this guest only (NetworkManager's ifcfg-rh plugin matches
  profiles by it), and profiles of different guests never meet, so a copied UUID is harmless. Rewriting it would
  orphan anything that refers to it (a bond or VLAN MASTER=/PARENT= given by UUID).
- LXC lxc.net.N.veth.pair / Xen vifname= / OpenVZ host_ifname=: host-side interface names. A pair name holding
  the old name (veth-vm0) is not the guest's identity but a name on the host, which must be unique there while
  both guests run: the clone tool has to choose it (at most 15 characters), this module cannot.
- LXC rootfs/mount paths and Xen disk paths: they hold the container or domain name, not the host name, and are
  moved by builder.build.targets.lxc.relocate and the Xen disk map. Xen uuid= likewise (a clone needs a new one).
- lines that are comments, in every format but `tokens` (which is for arbitrary files and knows no comments).
- udev rules: the rule for the old MAC gets the new MAC, so eth0 stays eth0. A rule is never deleted: deleting
  70-persistent-net.rules (the usual advice) renumbers NICs at the next boot when the guest has several.

Also documented at each function: which keys it reads; where a prefix is written when Rename gives one.
"""
from __future__ import annotations

import ipaddress
import re
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from builder.guestconf import xen as xenconf
from builder.core.errors import InputError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

__all__ = ["Rename", "RenameError", "Identity", "hostname_file", "hosts", "sysconfig_network", "ifcfg",
           "debian_interfaces", "networkd", "nm_keyfile", "netplan", "udev_persistent_net", "lxc_config",
           "xen_config", "openvz_config", "tokens", "read_lxc", "read_xen", "read_openvz", "REWRITERS"]

_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
_MAC = re.compile(r"^(?:[0-9A-Fa-f]{2}(?P<sep>[:-])[0-9A-Fa-f]{2}(?:(?P=sep)[0-9A-Fa-f]{2}){4}"
                  r"|[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4})\Z")
# The value of a `KEY = VALUE` line and the blanks after it: VALUE is everything up to the last non-blank. Written
# greedy-then-back-off (linear); the lazy `(.*?)([ \t\r]*)$` it replaces took quadratic time on long runs of
# blanks inside a value, and guest files are outside input.
_VALUE = r"(?P<val>(?:.*[^ \t\r])?)(?P<post>[ \t\r]*)$"


# ------------------------------------------------------------------------------------------------ the change


def _mac_norm(s: str) -> str | None:
    """aa:bb:cc:dd:ee:ff for a MAC in colon, dash or dotted (aabb.ccdd.eeff) notation, any case; else None."""
    s = s.strip()
    if not _MAC.match(s):
        return None
    digits = re.sub(r"[:.-]", "", s).lower()
    return ":".join(digits[i:i + 2] for i in range(0, 12, 2))


def _hostname_ok(name: str) -> bool:
    return len(name) <= 253 and all(_LABEL.match(label) for label in name.split("."))


class RenameError(InputError, ValueError):
    """A Rename that cannot be made: bad input (exit 2), also a ValueError as Rename always raised. Its values
    may come from a guest's own files (the old host name is read from /etc/hostname), so this is not an
    internal error."""

    def __init__(self, message: str):
        super().__init__(message, "a host name is dot-separated labels of letters, digits and '-'; addresses and "
                                  "MACs as ip(8) writes them; the old values are read from the guest's files")


def _chains(kind: str, pairs: Mapping) -> None:
    for old, new in pairs.items():
        if new != old and new in pairs:
            raise RenameError(f"{kind}: {old} -> {new} and {new} -> {pairs[new]}: a new value that is also an old "
                              "one cannot be rewritten idempotently (a second run would move it again); rename in "
                              "two steps through an unused value")


@dataclass(frozen=True)
class Rename:
    """One identity change. Build it with Rename.of(...) from strings, or directly with ipaddress objects."""

    hostname: str | None = None                                   # the new host name (one label: vm1)
    old_hostnames: tuple[str, ...] = ()                           # names to replace (vm0, vm0.lxc ...)
    ips: Mapping[IPAddress, IPInterface] = field(default_factory=dict)   # old address -> new address
    prefix_given: frozenset[IPAddress] = frozenset()              # old addresses whose new prefix applies
    gateways: Mapping[IPAddress, IPAddress] = field(default_factory=dict)  # old gateway -> new gateway
    macs: Mapping[str, str] = field(default_factory=dict)         # old MAC -> new MAC, aa:bb:cc:dd:ee:ff

    def __post_init__(self) -> None:
        try:
            self._check()
        except RenameError:
            raise
        except (ValueError, TypeError) as e:       # an address ipaddress cannot read, a value of the wrong kind
            raise RenameError(str(e)) from None

    def _check(self) -> None:
        put = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        if self.hostname is not None and not _LABEL.match(self.hostname):
            raise RenameError(f"{self.hostname!r}: the new host name must be one label (letters, digits, '-'; "
                              "vm1, not vm1.lxc): the domain of each old name is kept")
        olds = (self.old_hostnames,) if isinstance(self.old_hostnames, str) else tuple(self.old_hostnames)
        for o in olds:
            if not _hostname_ok(o):
                raise RenameError(f"{o!r} is not a host name")
        put("old_hostnames", olds)
        ips: dict[IPAddress, IPInterface] = {}
        for old, new in dict(self.ips).items():
            old = ipaddress.ip_address(old) if isinstance(old, str) else old
            if isinstance(new, (str, ipaddress.IPv4Address, ipaddress.IPv6Address)):
                new = ipaddress.ip_interface(str(new))
            if old.version != new.version:
                raise RenameError(f"{old} -> {new}: an IPv{old.version} address cannot become IPv{new.version}")
            ips[old] = new
        _chains("addresses", {o: n.ip for o, n in ips.items()})
        given = frozenset(ipaddress.ip_address(a) if isinstance(a, str) else a for a in self.prefix_given)
        if not given <= set(ips):
            raise RenameError(f"prefix given for {', '.join(map(str, sorted(given - set(ips), key=str)))}, "
                              "which is not an old address of the rename")
        gws: dict[IPAddress, IPAddress] = {}
        for old, new in dict(self.gateways).items():
            old = ipaddress.ip_address(old) if isinstance(old, str) else old
            new = ipaddress.ip_address(new) if isinstance(new, str) else new
            if old.version != new.version:
                raise RenameError(f"gateway {old} -> {new}: not the same IP version")
            gws[old] = new
        _chains("gateways", gws)
        cross = (set(gws) & set(ips)) | ({n for o, n in gws.items() if n != o} & set(ips)) \
            | ({n.ip for o, n in ips.items() if n.ip != o} & set(gws))
        if cross:
            raise RenameError(f"{', '.join(map(str, sorted(cross, key=str)))}: both a guest address and a gateway "
                              "in the rename (a guest is not its own gateway, and one would be rewritten twice)")
        macs: dict[str, str] = {}
        for old, new in dict(self.macs).items():
            o, n = _mac_norm(old), _mac_norm(new)
            if o is None or n is None:
                raise RenameError(f"{old} -> {new}: not a MAC address (six hex pairs, e.g. 00:16:3e:00:03:02)")
            macs[o] = n
        _chains("MACs", macs)
        put("ips", types.MappingProxyType(ips))
        put("prefix_given", given)
        put("gateways", types.MappingProxyType(gws))
        put("macs", types.MappingProxyType(macs))
        # the names matched: each old name and, for an FQDN, its first label (vm0.lxc -> vm0 too); longest first
        names = {o.lower() for o in olds} | {o.split(".")[0].lower() for o in olds}
        put("_names", tuple(sorted(names, key=lambda n: (-len(n), n))))

    @classmethod
    def of(cls, hostname: str | None = None, old_hostnames=(), ips: Mapping[str, str] | None = None,
           gateways: Mapping[str, str] | None = None, macs: Mapping[str, str] | None = None) -> Rename:
        """From strings: ips={"10.0.3.2": "10.0.3.3"} keeps each file's prefix, {"10.0.3.2": "10.0.3.3/16"}
        also sets the prefix to 16."""
        ips = dict(ips or {})
        try:
            parsed = ({ipaddress.ip_address(o): ipaddress.ip_interface(n) for o, n in ips.items()},
                      frozenset(ipaddress.ip_address(o) for o, n in ips.items() if "/" in str(n)))
        except ValueError as e:
            raise RenameError(str(e)) from None
        return cls(hostname=hostname, old_hostnames=tuple([old_hostnames] if isinstance(old_hostnames, str)
                                                          else old_hostnames),
                   ips=parsed[0], prefix_given=parsed[1],
                   gateways=dict(gateways or {}), macs=dict(macs or {}))

    @property
    def empty(self) -> bool:
        return not ((self.hostname and self.old_hostnames) or self.ips or self.gateways or self.macs)


# ------------------------------------------------------------------------------------------------ values


def _ip(s: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(s.strip())
    except ValueError:
        return None


def _plen(s: str, version: int = 4) -> int | None:
    """A prefix length from "24" or from a dotted netmask."""
    s = s.strip()
    if s.isascii() and s.isdigit():
        return int(s)
    if version == 4 and _ip(s) is not None:
        try:
            return ipaddress.ip_network(f"0.0.0.0/{s}").prefixlen
        except ValueError:
            return None
    return None


def _host_value(r: Rename, value: str) -> str | None:
    """A whole value that is a host name: an old name, or an FQDN starting with one, gets the new name as its
    first label; the rest (the domain) is kept as the value had it."""
    if not r.hostname:
        return None
    low = value.lower()
    for o in r._names:
        if low == o or low.startswith(o + "."):
            first = len(o.split(".")[0])
            new = r.hostname + value[first:]
            return new if new != value else None
    return None


def _mac_format(mac: str, like: str, upper: bool) -> str:
    """mac (aa:bb:..) written the way `like` is: its separator notation and its letter case."""
    letters = [c for c in like if c.isalpha()]
    if letters:
        upper = all(c.isupper() for c in letters)
    digits = mac.replace(":", "")
    if "." in like:
        out = ".".join(digits[i:i + 4] for i in range(0, 12, 4))
    else:
        sep = "-" if "-" in like else ":"
        out = sep.join(digits[i:i + 2] for i in range(0, 12, 2))
    return out.upper() if upper else out.lower()


def _mac_value(r: Rename, value: str, upper: bool = False) -> str | None:
    n = _mac_norm(value)
    if n is None or n not in r.macs or r.macs[n] == n:
        return None
    return _mac_format(r.macs[n], value.strip(), upper)


def _addr_value(r: Rename, value: str, add_prefix: bool = False) -> str | None:
    """ADDR or ADDR/PREFIX (a length, or a dotted IPv4 netmask) -> the new address; the prefix changes only when
    the Rename gives it, and is added (add_prefix) where the format keeps it in the same value."""
    a, slash, p = value.partition("/")
    ip = _ip(a)
    if ip is None or ip not in r.ips:
        return None
    new = r.ips[ip]
    out = str(new.ip)
    given = ip in r.prefix_given
    if slash:
        if given:
            out += "/" + (str(new.netmask) if new.version == 4 and "." in p else str(new.network.prefixlen))
        else:
            out += "/" + p
    elif given and add_prefix:
        out += f"/{new.network.prefixlen}"
    return out if out != value else None


def _gw_value(r: Rename, value: str) -> str | None:
    a, pct, scope = value.partition("%")
    ip = _ip(a)
    if ip is None or ip not in r.gateways or r.gateways[ip] == ip:
        return None
    return f"{r.gateways[ip]}{pct}{scope}"


def _net_value(r: Rename, value: str, old_ip: IPAddress | None, old_plen: int | None, kind: str) -> str | None:
    """A broadcast or network address that is the one of old_ip/old_plen -> the one of the new address (with the
    new prefix when given, else the old prefix). Any other value (a custom broadcast, "+") is left."""
    if old_ip is None or old_plen is None or old_ip not in r.ips:
        return None
    v = _ip(value)
    try:
        old_net = ipaddress.ip_interface(f"{old_ip}/{old_plen}").network
    except ValueError:
        return None
    ref = old_net.broadcast_address if kind == "broadcast" else old_net.network_address
    if v is None or v != ref:
        return None
    new = r.ips[old_ip]
    plen = new.network.prefixlen if old_ip in r.prefix_given else old_plen
    net = ipaddress.ip_interface(f"{new.ip}/{plen}").network
    out = str(net.broadcast_address if kind == "broadcast" else net.network_address)
    return out if out != value.strip() else None


def _sub_words(value: str, fn: Callable[[str], str | None], pattern: str = r"[^\s]+") -> str:
    """fn applied to each word of value (whitespace kept)."""
    return re.sub(pattern, lambda m: fn(m.group()) or m.group(), value)


def _lines(text: str) -> list[str]:
    return text.split("\n")


def _splice(line: str, m: re.Match, group: str, new: str | None) -> str:
    if new is None:
        return line
    return line[:m.start(group)] + new + line[m.end(group):]


# ------------------------------------------------------------------------------------------------ tokens


@lru_cache(maxsize=64)
def _token_re(names: tuple[str, ...]) -> re.Pattern:
    alts = [
        r"(?P<mac>(?<![\w:.-])[0-9A-Fa-f]{2}(?P<sep>[:-])[0-9A-Fa-f]{2}(?:(?P=sep)[0-9A-Fa-f]{2}){4}(?!\w|[:-]\w))",
        # IPv6 (also v4-mapped ::ffff:a.b.c.d); a candidate that does not parse (a time, 12:30:45) stays
        (r"(?P<v6>(?<![\w:.])(?=[0-9A-Fa-f:]*:[0-9A-Fa-f:]*:)[0-9A-Fa-f:]+(?:(?<=:)\d{1,3}(?:\.\d{1,3}){3})?"
         r"(?![\w:]|\.\d))(?:/(?P<p6>\d{1,3})(?![\w.]))?"),
        r"(?P<v4>(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?!\w|\.\d))(?:/(?P<p4>\d{1,3}(?:\.\d{1,3}){3}|\d{1,2})(?![\w.]))?",
    ]
    if names:
        alts.append(r"(?P<host>(?i:(?<![\w.-])(?:" + "|".join(re.escape(n) for n in names) + r")(?![\w-])))")
    return re.compile("|".join(alts))


def _token_sub(r: Rename, text: str, names: bool = True, addresses: bool = True, macs: bool = True,
               gateways: bool = False) -> str:
    pattern = _token_re(r._names if names and r.hostname else ())

    def one(m: re.Match) -> str:
        whole = m.group()
        if m.group("mac") is not None:
            return (_mac_value(r, whole) if macs else None) or whole
        if m.groupdict().get("host") is not None:
            return _host_value(r, whole) or whole
        addr = m.group("v6") if m.group("v6") is not None else m.group("v4")
        plen = m.group("p6") if m.group("v6") is not None else m.group("p4")
        ip = _ip(addr)
        if ip is None:
            return whole
        if addresses and ip in r.ips:
            return _addr_value(r, whole) or whole
        if gateways and ip in r.gateways:
            new = _gw_value(r, addr)
            return (new + (f"/{plen}" if plen is not None else "")) if new else whole
        return whole

    return pattern.sub(one, text)


def tokens(text: str, r: Rename) -> str:
    """Any file the user names (my.cnf, a web server's vhost, /etc/mailname ...): old host names (and FQDNs
    starting with one), old addresses (an ADDR/PREFIX gets the new prefix when given) and old MACs (any case,
    colon or dash) replaced where they stand as whole tokens, everywhere in the file, comments included. Gateways
    are not replaced (an address of another host, like a peer's: see the module docstring)."""
    return _token_sub(r, text)


# ------------------------------------------------------------------------------------------------ names


def hostname_file(text: str, r: Rename) -> str:
    """/etc/hostname (and /etc/HOSTNAME): the name line, short (vm0) or FQDN (vm0.example.com, RHEL 7 style);
    the domain is kept. Comment lines (systemd allows them) are left."""
    out = []
    for line in _lines(text):
        m = re.match(r"^(?P<pre>[ \t]*)(?P<name>[^\s#]+)(?P<post>[ \t\r]*)$", line)
        out.append(_splice(line, m, "name", _host_value(r, m.group("name"))) if m else line)
    return "\n".join(out)


def hosts(text: str, r: Rename) -> str:
    """/etc/hosts: the guest's own lines (its old address, or an old name) get the new address and names; aliases
    on them stay, other hosts' lines stay, and so do names and addresses inside comments.

    Loopback lines (127.0.1.1 vm0, or 127.0.0.1 vm0 localhost as RHEL 5 wrote it) are the guest's own: their old
    names are renamed, the loopback address and the localhost names stay. When the file already lists the new
    address or the new name on another line (a cluster hosts file copied from vm0 that has vm1 and vm2), the
    guest's old non-loopback lines are left too: they are the entries for the original, which still runs."""
    lines = _lines(text)
    entries = []
    for i, line in enumerate(lines):
        content = line.split("#", 1)[0]
        words = [(m.start(), m.end(), m.group()) for m in re.finditer(r"\S+", content)]
        if not words:
            continue
        ip = _ip(words[0][2])
        if ip is None:
            continue
        names = words[1:]
        own = ip in r.ips or any(_host_value(r, w) is not None for _, _, w in names)
        entries.append((i, ip, words[0], names, own))
    present_addrs = {ip for _, ip, _, _, own in entries if not own and not ip.is_loopback}
    present_names = {w.split(".")[0].lower() for _, ip, _, names, own in entries if not own and not ip.is_loopback
                     for _, _, w in names}
    knows_new = any(n.ip in present_addrs for o, n in r.ips.items() if n.ip != o) or \
        bool(r.hostname and r.hostname.lower() in present_names)
    for i, ip, (a0, a1, addr), names, own in entries:
        if not own or (knows_new and not ip.is_loopback):
            continue
        edits = [(a0, a1, _addr_value(r, addr))] + [(s, e, _host_value(r, w)) for s, e, w in names]
        line, pieces, at = lines[i], [], 0
        for s, e, new in edits:                # in order, not overlapping: one pass (a line may be long)
            if new is not None:
                pieces += [line[at:s], new]
                at = e
        lines[i] = "".join(pieces) + line[at:]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ shell vars

_SHVAR_HEAD = re.compile(r"""^(?P<pre>[ \t]*(?:export[ \t]+)?)(?P<key>[A-Za-z_][A-Za-z0-9_]*)=""")


class _ShMatch:
    """A `NAME=VALUE` line split into pre, key, q (the quote, or ""), val and post, with re.Match's group(),
    start() and end(): what `^PRE NAME=(["']?)(.*?)\1((?:[ \t]+#.*)?[ \t\r]*)$` matches, found in linear
    time (that regex backtracks quadratically on long runs of blanks)."""

    def __init__(self, line: str, spans: dict[str, tuple[int, int]]):
        self.string = line
        self.spans = spans

    def group(self, name: str) -> str:
        a, b = self.spans[name]
        return self.string[a:b]

    def start(self, name: str) -> int:
        return self.spans[name][0]

    def end(self, name: str) -> int:
        return self.spans[name][1]


def _shvar(line: str) -> _ShMatch | None:
    head = _SHVAR_HEAD.match(line)
    if head is None:
        return None
    at = head.end()
    n = len(line)
    trail = len(line.rstrip(" \t\r"))            # from here on only blanks: a value may end anywhere after
    after_blanks = [n] * (n + 1)                 # after_blanks[j]: first index >= j that is not a space or tab
    for j in range(n - 1, at - 1, -1):
        after_blanks[j] = after_blanks[j + 1] if line[j] in " \t" else j

    def rest_ok(j: int) -> bool:                 # line[j:] is (blanks + #comment)? + trailing blanks
        if j >= trail:
            return True
        k = after_blanks[j]
        return k > j and k < n and line[k] == "#"

    spans = {"pre": head.span("pre"), "key": head.span("key")}
    if at < n and line[at] in "\"'":
        q = line[at]
        j = line.find(q, at + 1)
        while j != -1:
            if rest_ok(j + 1):
                spans.update(q=(at, at + 1), val=(at + 1, j), post=(j + 1, n))
                return _ShMatch(line, spans)
            j = line.find(q, j + 1)
    for j in range(at, n + 1):
        if rest_ok(j):
            spans.update(q=(at, at), val=(at, j), post=(j, n))
            return _ShMatch(line, spans)
    return None                                   # not reached: rest_ok(n) holds


def _shvars(text: str) -> tuple[list[str], list[tuple[int, _ShMatch]]]:
    lines = _lines(text)
    found = []
    for i, line in enumerate(lines):
        m = _shvar(line)                # a comment never matches: the name must start the line
        if m:
            found.append((i, m))
    return lines, found


def sysconfig_network(text: str, r: Rename) -> str:
    """RHEL /etc/sysconfig/network: HOSTNAME= (short or FQDN; the domain is kept), GATEWAY= and IPV6_DEFAULTGW=
    (through Rename.gateways). NETWORKING, NOZEROCONF and the rest are left."""
    lines, found = _shvars(text)
    for i, m in found:
        key, val = m.group("key"), m.group("val")
        if key == "HOSTNAME":
            new = _host_value(r, val)
        elif key in ("GATEWAY", "IPV6_DEFAULTGW"):
            new = _gw_value(r, val)
        else:
            continue
        lines[i] = _splice(lines[i], m, "val", new)
    return "\n".join(lines)


def ifcfg(text: str, r: Rename) -> str:
    """RHEL 5-9 /etc/sysconfig/network-scripts/ifcfg-NAME (initscripts and NetworkManager's ifcfg-rh):

    - IPADDR / IPADDRn (RHEL 7 writes IPADDR0): the address; with the index's PREFIXn and NETMASKn changed when the
      new prefix is given (both if both are there: RHEL 5 reads only NETMASK). When neither is there and a prefix
      is given, NETMASKn= is added after the address line (every initscripts version and ifcfg-rh read it).
    - BROADCAST= / NETWORK= (RHEL 5's anaconda wrote them): recomputed when they were those of the old address.
    - IPV6ADDR (ADDR/PREFIX), IPV6ADDR_SECONDARIES (a space-separated list).
    - GATEWAY / GATEWAYn / IPV6_DEFAULTGW: through Rename.gateways.
    - HWADDR (binds the file to the NIC with that MAC) and MACADDR (sets the MAC): new MAC, in the file's case
      (upper case, as anaconda writes it, when the old value has no letters).
    - DHCP_HOSTNAME, DHCP_FQDN, HOSTNAME: the host name.
    - left: UUID (see the module docstring), NAME, DEVICE, DNS1/DNS2 (other hosts), everything else."""
    lines, found = _shvars(text)
    var = {m.group("key"): m.group("val") for _, m in found}

    def ref(n: str) -> tuple[IPAddress | None, int | None]:
        ip = _ip(var.get(f"IPADDR{n}", "").partition("/")[0])
        plen = None
        if f"PREFIX{n}" in var:
            plen = _plen(var[f"PREFIX{n}"])
        elif f"NETMASK{n}" in var:
            plen = _plen(var[f"NETMASK{n}"])
        return ip, plen

    def mapped_with_prefix(n: str) -> IPInterface | None:
        ip, _ = ref(n)
        return r.ips[ip] if ip is not None and ip in r.ips and ip in r.prefix_given else None

    inserts: dict[int, str] = {}
    for i, m in found:
        key, val = m.group("key"), m.group("val")
        new = None
        k = re.fullmatch(r"(IPADDR|PREFIX|NETMASK|GATEWAY)(\d*)", key)
        if k:
            kind, n = k.groups()
            if kind == "IPADDR":
                new = _addr_value(r, val)
                target = mapped_with_prefix(n)
                if target is not None and target.version == 4 \
                        and f"PREFIX{n}" not in var and f"NETMASK{n}" not in var:
                    eol = "\r" if lines[i].endswith("\r") else ""
                    inserts[i] = f"{m.group('pre')}NETMASK{n}={m.group('q')}{target.netmask}{m.group('q')}{eol}"
            elif kind in ("PREFIX", "NETMASK"):
                target = mapped_with_prefix(n)
                if target is not None:
                    new = str(target.network.prefixlen) if kind == "PREFIX" else str(target.netmask)
            else:
                new = _gw_value(r, val)
        elif key in ("BROADCAST", "NETWORK"):
            n = "" if "IPADDR" in var else "0"
            ip, plen = ref(n)
            new = _net_value(r, val, ip, plen, key.lower())
        elif key == "IPV6ADDR":
            new = _addr_value(r, val, add_prefix=True)
        elif key == "IPV6ADDR_SECONDARIES":
            new = _sub_words(val, lambda w: _addr_value(r, w, add_prefix=True))
        elif key == "IPV6_DEFAULTGW":
            new = _gw_value(r, val)
        elif key in ("HWADDR", "MACADDR"):
            new = _mac_value(r, val, upper=True)
        elif key in ("DHCP_HOSTNAME", "DHCP_FQDN", "HOSTNAME"):
            new = _host_value(r, val)
        if new is not None and new != val:
            lines[i] = _splice(lines[i], m, "val", new)
    return "\n".join(x for i, line in enumerate(lines) for x in ((line, inserts[i]) if i in inserts else (line,)))


# ------------------------------------------------------------------------------------------------ Debian

_IFUPDOWN_STANZA = re.compile(r"^[ \t]*(iface|mapping|auto|allow-\S+|source|source-directory|rename|no-auto-down|"
                              r"no-scripts)(?:[ \t]|$)")
_IFUPDOWN_OPT = re.compile(r"^(?P<pre>[ \t]*)(?P<key>[A-Za-z0-9_-]+)(?P<sep>[ \t]+)" + _VALUE)
_COMMAND_KEYS = {"up", "down", "pre-up", "post-up", "pre-down", "post-down"}


def debian_interfaces(text: str, r: Rename) -> str:
    """ifupdown's /etc/network/interfaces and /etc/network/interfaces.d/* (interfaces(5)), every `iface` stanza:

    - address ADDR or ADDR/PREFIX (several words: ifupdown2's list form); the new prefix, when given, goes into
      the stanza's netmask line (dotted, or a length as inet6 and `netmask 24` write it), or onto the address
      when the stanza has no netmask line;
    - broadcast / network lines recomputed when they were those of the stanza's old address;
    - gateway (Rename.gateways), hwaddress [ether] MAC, hostname (the DHCP method's option);
    - up/down/pre-up/post-up/pre-down/post-down commands: old addresses, gateways and MACs as whole tokens
      (`ip addr add 10.0.3.13/24 dev eth0` adds the guest's own address);
    - left: dns-nameservers and dns-search (other hosts), auto/allow-/source lines, comments (interfaces(5) has
      only whole-line comments)."""
    lines = _lines(text)
    stanzas: list[tuple[int, list[int]]] = []
    current: tuple[int, list[int]] | None = None
    for i, line in enumerate(lines):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        m = _IFUPDOWN_STANZA.match(line)
        if m:
            current = (i, []) if m.group(1) == "iface" else None
            if current is not None:
                stanzas.append(current)
        elif current is not None:
            current[1].append(i)
    for head, members in stanzas:
        words = lines[head].split()
        family = words[2] if len(words) > 2 else "inet"
        opts = [(i, m) for i in members if (m := _IFUPDOWN_OPT.match(lines[i]))]
        keys = [m.group("key") for _, m in opts]
        addr_words = [w for _, m in opts if m.group("key") == "address" for w in m.group("val").split()]
        ref_ip, ref_plen = None, None
        if addr_words:
            a, _, p = addr_words[0].partition("/")
            ref_ip = _ip(a)
            if p:
                ref_plen = _plen(p)
            else:
                masks = [m.group("val") for _, m in opts if m.group("key") == "netmask"]
                if masks:
                    ref_plen = _plen(masks[0], 6 if family == "inet6" else 4)
        target = r.ips[ref_ip] if ref_ip is not None and ref_ip in r.ips and ref_ip in r.prefix_given else None
        add_prefix = "netmask" not in keys      # no netmask line: a given prefix goes onto the address
        for i, m in opts:
            key, val = m.group("key"), m.group("val")
            new = None
            if key == "address":
                new = _sub_words(val, lambda w, add=add_prefix: _addr_value(r, w, add_prefix=add))
            elif key == "netmask" and target is not None:
                new = str(target.network.prefixlen) if val.strip().isdigit() else str(target.netmask)
            elif key in ("broadcast", "network"):
                new = _net_value(r, val, ref_ip, ref_plen, key)
            elif key == "gateway":
                new = _gw_value(r, val)
            elif key == "hwaddress":
                new = _sub_words(val, lambda w: _mac_value(r, w))
            elif key == "hostname":
                new = _host_value(r, val)
            elif key in _COMMAND_KEYS:
                new = _token_sub(r, val, names=False, gateways=True)
            if new is not None and new != val:
                lines[i] = _splice(lines[i], m, "val", new)
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ INI-like

_INI_SECTION = re.compile(r"^[ \t]*\[(?P<name>[^\]]*)\][ \t\r]*$")
_INI_KEY = re.compile(r"^(?P<pre>[ \t]*)(?P<key>[^=\s\[#;](?:[^=]*[^= \t])?)(?P<sep>[ \t]*=[ \t]*)" + _VALUE)


def _ini(text: str, edit: Callable[[str, str, str], str | None], comments: str) -> str:
    lines = _lines(text)
    section = ""
    for i, line in enumerate(lines):
        s = line.lstrip()
        if not s or s[0] in comments:
            continue
        m = _INI_SECTION.match(line)
        if m:
            section = m.group("name").strip()
            continue
        m = _INI_KEY.match(line)
        if m:
            new = edit(section, m.group("key"), m.group("val"))
            if new is not None and new != m.group("val"):
                lines[i] = _splice(line, m, "val", new)
    return "\n".join(lines)


def networkd(text: str, r: Rename) -> str:
    """systemd-networkd .network files (and .link/.netdev, systemd.network(5)):

    - [Match] MACAddress= / PermanentMACAddress= (space-separated lists, colon, dash or dotted notation);
      [Link] and [NetDev] MACAddress= (the MAC to set);
    - [Network] Address= and [Address] Address= (ADDR/PREFIX; a given prefix is written), [Route]
      PreferredSource= (the guest's own address), [Network] Gateway= and [Route] Gateway= (Rename.gateways);
    - [DHCPv4] / [DHCP] Hostname= (the name sent to the DHCP server);
    - left: DNS=, Peer=, Destination=, [Address] Broadcast=, `#` and `;` comments."""
    def edit(section: str, key: str, val: str) -> str | None:
        if key in ("MACAddress", "PermanentMACAddress") and section in ("Match", "Link", "NetDev"):
            return _sub_words(val, lambda w: _mac_value(r, w))
        if key == "Address" and section in ("Network", "Address"):
            return _addr_value(r, val, add_prefix=True)
        if key == "PreferredSource" and section == "Route":
            return _addr_value(r, val)
        if key == "Gateway" and section in ("Network", "Route"):
            return _gw_value(r, val)
        if key == "Hostname" and section in ("DHCPv4", "DHCP"):
            return _host_value(r, val)
        return None
    return _ini(text, edit, "#;")


def _nm_fields(value: str) -> tuple[list[str], list[str]]:
    parts = re.split(r"([/;,])", value)
    return parts[0::2], parts[1::2]


def _nm_join(fields: list[str], seps: list[str]) -> str:
    out = fields[0]
    for sep, f in zip(seps, fields[1:]):
        out += sep + f
    return out


def _nm_address(r: Rename, value: str, route: bool) -> str | None:
    """NetworkManager's address/route values: ADDR/PLEN,GATEWAY (also the old ADDR;PLEN;GATEWAY; form: '/', ';'
    and ',' are interchangeable, nm-keyfile-reader.c), routes DEST/PLEN,GATEWAY,METRIC."""
    fields, seps = _nm_fields(value)
    has_plen = len(fields) > 1 and fields[1].isdigit()
    gw = 2 if has_plen else 1
    if not route:
        ip = _ip(fields[0])
        if ip is not None and ip in r.ips:
            new = r.ips[ip]
            fields[0] = str(new.ip)
            if ip in r.prefix_given:
                if has_plen:
                    fields[1] = str(new.network.prefixlen)
                else:
                    fields.insert(1, str(new.network.prefixlen))
                    seps.insert(0, "/")
                    gw += 1
    if gw < len(fields):
        g = _gw_value(r, fields[gw])
        if g is not None:
            fields[gw] = g
    out = _nm_join(fields, seps)
    return out if out != value else None


def _nm_mac(r: Rename, value: str) -> str | None:
    """mac-address= in hex notation, or the obsolete list of six decimal bytes (0;22;62;0;3;2;)."""
    m = re.fullmatch(r"((?:\d{1,3};){5}\d{1,3})(;?)", value.strip())
    if not m:
        return _mac_value(r, value)
    octets = [int(x) for x in m.group(1).split(";")]
    if any(x > 255 for x in octets):
        return None
    old = ":".join(f"{x:02x}" for x in octets)
    if old not in r.macs or r.macs[old] == old:
        return None
    return ";".join(str(int(b, 16)) for b in r.macs[old].split(":")) + m.group(2)


def nm_keyfile(text: str, r: Rename) -> str:
    """NetworkManager keyfiles (/etc/NetworkManager/system-connections/*.nmconnection, nm-settings-keyfile(5)):

    - mac-address= and cloned-mac-address= in any section ([ethernet], the older [802-3-ethernet], [wifi] ...),
      hex in the file's case, or the obsolete byte list; `preserve`, `random` ... stay;
    - [ipv4]/[ipv6] address, addresses, addressN, addressesN (ADDR/PLEN,GW); route, routes, routeN, routesN (the
      gateway field); gateway=; dhcp-hostname= and dhcp-fqdn=;
    - left: uuid= and id= (this guest's own profile), dns= (other hosts), mac-address-blacklist=."""
    def edit(section: str, key: str, val: str) -> str | None:
        if key in ("mac-address", "cloned-mac-address"):
            return _nm_mac(r, val)
        if section not in ("ipv4", "ipv6"):
            return None
        if re.fullmatch(r"address(?:es)?\d*", key):
            return _nm_address(r, val, route=False)
        if re.fullmatch(r"routes?\d*", key):
            return _nm_address(r, val, route=True)
        if key == "gateway":
            return _gw_value(r, val)
        if key in ("dhcp-hostname", "dhcp-fqdn"):
            return _host_value(r, val)
        return None
    return _ini(text, edit, "#")


# ------------------------------------------------------------------------------------------------ netplan

_YAML_SCALAR = re.compile(r"""^(?P<q>["']?)(?P<v>[^"'#\s\[\]{},]+)(?P=q)(?P<post>[ \t]*+(?:#.*)?[ \t\r]*+)$""")
_YAML_KEY = re.compile(r"""^(?P<key>"[^"]*"|'[^']*'|[^\s#'"\[\]{},:](?:[^#:]*[^#: \t])?)[ \t]*:"""
                       r"""(?:[ \t]+(?P<val>(?:.*[^ \t\r])?))?[ \t\r]*$""")


def _yaml_scalar(value: str, fn: Callable[[str], str | None]) -> str | None:
    m = _YAML_SCALAR.match(value)
    if not m:
        return None
    new = fn(m.group("v"))
    return None if new is None else value[:m.start("v")] + new + value[m.end("v"):]


def _yaml_flow(value: str, fn: Callable[[str], str | None]) -> str | None:
    m = re.match(r"^\[(?P<body>[^\]]*)\]", value)
    if not m:
        return None
    body = re.sub(r"""(?P<q>["']?)(?P<v>[^"',\s]+)(?P=q)""",
                  lambda x: x.group("q") + (fn(x.group("v")) or x.group("v")) + x.group("q"), m.group("body"))
    return "[" + body + "]" + value[m.end():]


def netplan(text: str, r: Rename) -> str:
    """netplan YAML (/etc/netplan/*.yaml), edited line by line (a YAML dumper would drop the comments):

    - macaddress: (under match:, and the interface's own MAC), quoted or not;
    - addresses: of an interface, as a flow list ([10.0.3.2/24, "fd00::2/64"]) or a block list (`- 10.0.3.2/24`,
      also the `- 10.0.3.2/24:` form with options); a given prefix is written;
    - gateway4: / gateway6:, and via: of routes (Rename.gateways);
    - hostname: under dhcp4-overrides/dhcp6-overrides;
    - left: nameservers: addresses (other hosts), set-name:, interface IDs, comments."""
    lines = _lines(text)
    stack: list[tuple[int, str, str | None]] = []     # (indent, key, parent key)

    def parent_of(col: int, strict: bool) -> tuple[str | None, str | None]:
        while stack and (stack[-1][0] >= col if strict else stack[-1][0] > col):
            stack.pop()
        return (stack[-1][1], stack[-1][2]) if stack else (None, None)

    def address(v: str) -> str | None:
        return _addr_value(r, v, add_prefix=True)

    for i, line in enumerate(lines):
        s = line.strip()
        if not s or s.startswith("#") or s in ("---", "..."):
            continue
        indent = len(line) - len(line.lstrip(" "))
        body_at = indent
        item = re.match(r"^(-[ \t]+)", line[indent:])
        if item or line[indent:].rstrip() == "-":
            owner, owner_parent = parent_of(indent, strict=False)
            body_at = indent + (len(item.group(1)) if item else 1)
            body = line[body_at:]
            km = _YAML_KEY.match(body)
            in_addresses = owner == "addresses" and owner_parent != "nameservers"
            if km is None or (in_addresses and _ip(body.split("/")[0].strip("'\" ")) is not None):
                if in_addresses:
                    if km is not None:     # `- 10.0.3.2/24:` with options below
                        key = km.group("key")
                        new = _yaml_scalar(key, address)
                        if new is not None:
                            lines[i] = line[:body_at] + new + body[len(key):]
                        stack.append((body_at, "-", owner))
                    else:
                        new = _yaml_scalar(body, address)
                        if new is not None:
                            lines[i] = line[:body_at] + new
                continue
            line_key_col = body_at
            parent = owner
        else:
            km = _YAML_KEY.match(line[indent:])
            if km is None:
                continue
            line_key_col = indent
            parent, _ = parent_of(indent, strict=True)
        key = km.group("key").strip("'\"")
        stack.append((line_key_col, key, parent))
        val = km.group("val")
        if val is None:
            continue
        fn: Callable[[str], str | None] | None = None
        if key == "macaddress":
            fn = lambda v: _mac_value(r, v)  # noqa: E731
        elif key == "addresses" and parent != "nameservers":
            fn = address
        elif key in ("gateway4", "gateway6", "via"):     # via: only exists in routes
            fn = lambda v: _gw_value(r, v)  # noqa: E731
        elif key == "hostname" and parent in ("dhcp4-overrides", "dhcp6-overrides"):
            fn = lambda v: _host_value(r, v)  # noqa: E731
        if fn is None:
            continue
        new = _yaml_flow(val, fn) if val.startswith("[") else _yaml_scalar(val, fn)
        if new is not None and new != val:
            start = line_key_col + km.start("val")
            lines[i] = line[:start] + new + line[start + len(val):]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ udev

_UDEV_ADDRESS = re.compile(r"""(?P<key>(?:ATTRS?|SYSFS)\{address\}[ \t]*==[ \t]*)"(?P<val>[^"]*)\"""")


def udev_persistent_net(text: str, r: Rename) -> str:
    """/etc/udev/rules.d/70-persistent-net.rules (written by write_net_rules on RHEL 6, Debian before 9, Ubuntu
    before 16.04): the rule matching the old MAC (ATTR{address}==, also ATTRS{} and old udev's SYSFS{}) gets the
    new MAC in the file's case, so the NIC keeps its NAME= (eth0 stays eth0). No rule is ever deleted, and the
    generator's comment lines stay. If the clone already booted once with the new MAC, the file has a second rule
    for it (NAME="eth1"): that rule is left and now duplicates the first; remove it by hand."""
    out = []
    for line in _lines(text):
        if not line.lstrip().startswith("#"):
            line = _UDEV_ADDRESS.sub(
                lambda m: m.group("key") + '"' + (_mac_value(r, m.group("val")) or m.group("val")) + '"', line)
        out.append(line)
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------ guest configs

_LXC_KEY = re.compile(r"^(?P<pre>[ \t]*)(?P<key>lxc\.[A-Za-z0-9_.-]+)(?P<sep>[ \t]*=[ \t]*)" + _VALUE)
_LXC_UTS = re.compile(r"lxc\.(?:uts\.name|utsname)")
_LXC_HWADDR = re.compile(r"lxc\.(?:net\.\d+|network(?:\.\d+)?)\.hwaddr")
_LXC_ADDRESS = re.compile(r"lxc\.(?:net\.\d+\.ipv[46]\.address|network(?:\.\d+)?\.ipv[46])")
_LXC_GATEWAY = re.compile(r"lxc\.(?:net\.\d+|network(?:\.\d+)?)\.ipv[46]\.gateway")


def _lxc_address(r: Rename, val: str) -> str | None:
    """ADDR/PREFIX [BROADCAST] (lxc.container.conf(5)); the broadcast follows the address when it was the old
    network's."""
    m = re.match(r"^(?P<a>\S+)(?:(?P<sp>[ \t]+)(?P<b>\S+))?(?P<rest>.*)$", val)
    if not m:
        return None
    a = m.group("a")
    new_a = _addr_value(r, a, add_prefix=True) or a
    new_b = m.group("b")
    if new_b is not None:
        ip, _, p = a.partition("/")
        old_ip = _ip(ip)
        plen = _plen(p, old_ip.version if old_ip else 4) if p else None
        new_b = _net_value(r, new_b, old_ip, plen, "broadcast") or new_b
        return new_a + m.group("sp") + new_b + m.group("rest")
    return new_a + m.group("rest")


def lxc_config(text: str, r: Rename) -> str:
    """An LXC container config, modern keys (LXC 2.1+) and legacy keys (LXC 0.7-2.0) alike:

    - lxc.uts.name / lxc.utsname: the host name;
    - lxc.net.N.hwaddr / lxc.network.hwaddr (and the indexed lxc.network.N.*): the MAC (a template with x's
      such as 00:16:3e:xx:xx:xx stays);
    - lxc.net.N.ipv4.address / lxc.network.ipv4 and ipv6 likewise: ADDR/PREFIX [BROADCAST];
    - lxc.net.N.ipv4.gateway / lxc.network.ipv4.gateway and ipv6 (`auto` and `dev` stay): Rename.gateways;
    - left: veth.pair names, rootfs and mount paths, lxc.net.N.name (see the module docstring), comments."""
    out = []
    for line in _lines(text):
        m = _LXC_KEY.match(line)        # a comment never matches: the key must start the line
        if m:
            key, val = m.group("key"), m.group("val")
            new = None
            if _LXC_UTS.fullmatch(key):
                new = _host_value(r, val)
            elif _LXC_HWADDR.fullmatch(key):
                new = _mac_value(r, val)
            elif _LXC_ADDRESS.fullmatch(key):
                new = _lxc_address(r, val)
            elif _LXC_GATEWAY.fullmatch(key):
                new = _gw_value(r, val)
            if new is not None and new != val:
                line = _splice(line, m, "val", new)
        out.append(line)
    return "\n".join(out)


_PY_TOKEN = re.compile(r"""(?P<comment>\#[^\n]*)"""
                       r"""|(?P<str>'(?:[^'\\\n]|\\.)*+'|"(?:[^"\\\n]|\\.)*+")|(?P<open_quote>['"][^\n]*)"""
                       r"""|(?P<open>[\[({])|(?P<close>[\])}])"""
                       r"""|(?P<assign>^[ \t]*(?P<key>[A-Za-z_]\w*)[ \t]*=(?!=))""", re.MULTILINE)


def _xen_strings(text: str) -> list[tuple[str, int, int]]:
    """(setting, start, end) of the inside of every string literal, with the setting it is assigned to."""
    out = []
    depth, key = 0, None
    for m in _PY_TOKEN.finditer(text):
        if m.group("assign") is not None:
            if depth == 0:
                key = m.group("key")
        elif m.group("open"):
            depth += 1
        elif m.group("close"):
            depth = max(0, depth - 1)
        elif m.group("str") is not None and key is not None:
            out.append((key, m.start("str") + 1, m.end("str") - 1))
    return out


def _xen_vif(r: Rename, spec: str) -> str:
    pieces = spec.split(",")
    for n, piece in enumerate(pieces):
        m = re.match(r"^(?P<pre>[ \t]*)(?P<key>\w+)(?P<sep>[ \t]*=[ \t]*)(?P<val>(?:.*[^ \t])?)(?P<post>[ \t]*)$",
                     piece)
        if not m:
            continue
        key, val = m.group("key"), m.group("val")
        if key == "mac":
            pieces[n] = _splice(piece, m, "val", _mac_value(r, val))
        elif key == "ip":
            pieces[n] = _splice(piece, m, "val", _sub_words(val, lambda w: _addr_value(r, w)))
    return ",".join(pieces)


def xen_config(text: str, r: Rename) -> str:
    """A Xen domain config, xl (Xen 4) or xm (Xen 3, Python) syntax; only the insides of string literals change:

    - name = "...": the domain name, when it is an old host name (or an FQDN of one);
    - vif = [ '...', ... ] (one line or several): mac= and ip= (a space-separated list, the vif scripts'
      antispoofing addresses) of every vif;
    - xm's kernel-IP settings ip =, gateway =, netmask = (when ip is renamed with a new prefix), hostname =;
    - left: disk paths (the disk map moves them), uuid, vifname=, bridge=, comments, and values Python computes
      ("vm%d" % n: the text holds no name to replace)."""
    spans = _xen_strings(text)
    values = {k: text[s:e] for k, s, e in spans}
    kernel_ip = _ip(values.get("ip", "").partition("/")[0])
    edits = []
    for key, s, e in spans:
        val = text[s:e]
        new = None
        if key in ("name", "hostname"):
            new = _host_value(r, val)
        elif key == "vif":
            new = _xen_vif(r, val)
        elif key == "ip":
            new = _addr_value(r, val)
        elif key == "gateway":
            new = _gw_value(r, val)
        elif key == "netmask" and kernel_ip is not None and kernel_ip in r.prefix_given:
            new = str(r.ips[kernel_ip].netmask)
        if new is not None and new != val:
            edits.append((s, e, new))
    pieces, at = [], 0
    for s, e, new in edits:                    # in order: one pass (a file may hold many)
        pieces += [text[at:s], new]
        at = e
    return "".join(pieces) + text[at:]


def _netif(r: Rename, value: str) -> str:
    devices = value.split(";")
    for n, dev in enumerate(devices):
        pairs = dev.split(",")
        for k, pair in enumerate(pairs):
            key, eq, val = pair.partition("=")
            if eq and key.strip() in ("mac", "host_mac"):
                new = _mac_value(r, val, upper=True)
                if new is not None:
                    pairs[k] = key + eq + val.replace(val.strip(), new)
        devices[n] = ",".join(pairs)
    return ";".join(devices)


def openvz_config(text: str, r: Rename) -> str:
    """An OpenVZ /etc/vz/conf/CTID.conf (ctid.conf(5)):

    - HOSTNAME= (short or FQDN) and NAME= (vzctl --name, when it is an old host name);
    - IP_ADDRESS= (venet: a space-separated list, each ADDR or ADDR/MASK);
    - NETIF= (veth: devices separated by ';', each ifname=...,mac=...,host_mac=...): mac= and host_mac= when
      Rename maps them, in the file's case (vzctl writes upper case);
    - left: host_ifname= (a host-side name), NAMESERVER= (other hosts), paths and limits."""
    lines, found = _shvars(text)
    for i, m in found:
        key, val = m.group("key"), m.group("val")
        new = None
        if key in ("HOSTNAME", "NAME"):
            new = _host_value(r, val)
        elif key == "IP_ADDRESS":
            new = _sub_words(val, lambda w: _addr_value(r, w))
        elif key == "NETIF":
            new = _netif(r, val)
        if new is not None and new != val:
            lines[i] = _splice(lines[i], m, "val", new)
    return "\n".join(lines)


REWRITERS: dict[str, Callable[[str, Rename], str]] = {
    "hostname": hostname_file, "hosts": hosts, "sysconfig-network": sysconfig_network, "ifcfg": ifcfg,
    "debian-interfaces": debian_interfaces, "networkd": networkd, "nm-keyfile": nm_keyfile, "netplan": netplan,
    "udev-persistent-net": udev_persistent_net, "lxc": lxc_config, "xen": xen_config, "openvz": openvz_config,
    "tokens": tokens,
}


# ------------------------------------------------------------------------------------------------ readers


@dataclass(frozen=True)
class Identity:
    """What a guest config says about its guest: its name (Xen domain name, OpenVZ NAME=; LXC configs do not name
    their container, the directory does), the host names it gives the guest, its addresses (without prefix,
    normalized: fd00:0::2 reads as fd00::2) and its MACs (lower case), each in file order without repeats."""

    name: str | None
    hostnames: tuple[str, ...]
    ips: tuple[str, ...]
    macs: tuple[str, ...]


def _unique(items) -> tuple:
    seen = []
    for x in items:
        if x is not None and x not in seen:
            seen.append(x)
    return tuple(seen)


def _addr_str(word: str) -> str | None:
    ip = _ip(word.partition("/")[0])
    return str(ip) if ip is not None else None


_LXC_NET = re.compile(r"lxc\.(?:net\.(?P<n>\d+)|network(?:\.(?P<ln>\d+))?)\.(?P<sub>type|hwaddr|ipv[46](?:\.address)?)")


def read_lxc(text: str) -> Identity:
    """An LXC config (modern or legacy keys): lxc.uts.name/lxc.utsname (the last one, as LXC reads it), each
    network's hwaddr (templates with x's skipped) and ipv4/ipv6 addresses, the way LXC builds its networks: modern
    ones by index, legacy ones by `lxc.network.type` line (or their lxc.network.N index); an empty `lxc.net =` /
    `lxc.network =` drops the networks before it, an empty hwaddr or address line clears that value (a config
    that includes a common one and overrides it). Included files are not followed."""
    uts = None
    nets: dict[str, dict] = {}
    legacy = -1
    for line in _lines(text):
        m = _LXC_KEY.match(line)
        if not m:
            continue
        key, val = m.group("key"), m.group("val").strip()
        if _LXC_UTS.fullmatch(key):
            uts = val or None
            continue
        if key in ("lxc.net", "lxc.network") and not val:
            nets.clear()
            continue
        k = _LXC_NET.fullmatch(key)
        if not k:
            continue
        sub = k.group("sub")
        if k.group("n") is not None:
            idx = f"net{k.group('n')}"
        elif k.group("ln") is not None:
            idx = f"network{k.group('ln')}"
        else:
            if sub == "type":
                legacy += 1
            if legacy < 0:
                continue                    # before the first type line: LXC refuses it too
            idx = f"network{legacy}"
        net = nets.setdefault(idx, {"mac": None, "ipv4": [], "ipv6": []})
        if sub == "hwaddr":
            net["mac"] = _mac_norm(val)
        elif sub.startswith("ipv"):
            family = sub[:4]
            if val:
                net[family].append(_addr_str(val.split()[0]))
            else:
                net[family].clear()
    ips = [a for net in nets.values() for a in net["ipv4"] + net["ipv6"]]
    macs = [net["mac"] for net in nets.values()]
    return Identity(None, (uts,) if uts else (), _unique(ips), _unique(macs))


def read_xen(text: str) -> Identity:
    """A Xen config, xl or xm: read with builder.guestconf.xen's reader (never run), so computed values count too.
    name, xm's hostname (kernel IP), the vifs' mac= and ip= and xm's ip."""
    cfg = xenconf.read_xm(text)
    name = cfg.get("name")
    hostname = cfg.get("hostname")
    vifs = cfg.get("vif", [])
    if isinstance(vifs, str):
        vifs = [vifs]
    ips, macs = [], []
    for spec in vifs if isinstance(vifs, list) else []:
        if not isinstance(spec, str):
            continue
        for k, v in xenconf.parse_vif(spec):
            if k == "mac":
                macs.append(_mac_norm(v))
            elif k == "ip":
                ips += [_addr_str(w) for w in v.split()]
    if isinstance(cfg.get("ip"), str):
        ips.append(_addr_str(cfg.get("ip")))
    return Identity(name if isinstance(name, str) else None,
                    (hostname,) if isinstance(hostname, str) and hostname else (), _unique(ips), _unique(macs))


def read_openvz(text: str) -> Identity:
    """An OpenVZ CTID.conf: NAME=, HOSTNAME=, IP_ADDRESS= (venet) and the mac= of each NETIF= device (veth; the
    guest's side: host_mac= is the host's end of the pair)."""
    _, found = _shvars(text)
    var = {m.group("key"): m.group("val") for _, m in found}
    ips = [_addr_str(w) for w in var.get("IP_ADDRESS", "").split()]
    macs = []
    for dev in var.get("NETIF", "").split(";"):
        for pair in dev.split(","):
            key, eq, val = pair.partition("=")
            if eq and key.strip() == "mac":
                macs.append(_mac_norm(val))
    host = var.get("HOSTNAME") or None
    return Identity(var.get("NAME") or None, (host,) if host else (), _unique(ips), _unique(macs))
