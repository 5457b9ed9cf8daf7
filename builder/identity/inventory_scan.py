"""Discovery: the guests whose configs are on this host (LXC containers, Xen domain configs, OpenVZ containers).

Unreadable or odd files are skipped with a debug log. The config readers are injectable (`Readers`): anything that
takes the config's text and returns an object with `name`, `hostnames`, `ips` and `macs` will do."""
from __future__ import annotations

import logging
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Protocol, Sequence

from builder.guestconf import xen as xenconf
from builder.identity.inventory_records import GuestRecord, normalize_ip, normalize_mac, sort_key

log = logging.getLogger("imgbuild")

DEFAULT_LXCPATH = "/var/lib/lxc"
DEFAULT_XEN_DIR = "/etc/xen"
DEFAULT_VZ_DIR = "/etc/vz/conf"
MAX_CONFIG_SIZE = 1 << 20        # a guest config is a few KB; anything this large is not one


class IdentityLike(Protocol):
    """What a config reader returns (builder.identity.formats' Identity has this shape; so has ScannedIdentity)."""

    @property
    def name(self) -> str | None: ...

    @property
    def hostnames(self) -> Sequence[str]: ...

    @property
    def ips(self) -> Sequence[object]: ...

    @property
    def macs(self) -> Sequence[str]: ...


Reader = Callable[[str], IdentityLike]


@dataclass(frozen=True)
class ScannedIdentity:
    """What this module's own readers find in a config (raw values; records normalize them)."""

    name: str | None = None
    hostnames: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    macs: tuple[str, ...] = ()


_LXC_MAC = re.compile(r"lxc\.net\.\d+\.hwaddr|lxc\.network(\.\d+)?\.hwaddr")
_LXC_IP = re.compile(r"lxc\.net\.\d+\.ipv[46]\.address|lxc\.network(\.\d+)?\.ipv[46]")


def read_lxc_config(text: str) -> ScannedIdentity:
    """An LXC container config (modern `lxc.net.N.*`/`lxc.uts.name` or legacy `lxc.network.*`/`lxc.utsname`): the
    host name, each NIC's hwaddr and ipv4/ipv6 addresses. An empty `lxc.net =` (or `lxc.network =`) drops the
    NICs before it, as LXC does."""
    uts: str | None = None
    macs: list[str] = []
    ips: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = (s.strip() for s in line.partition("="))
        if key in ("lxc.uts.name", "lxc.utsname"):
            uts = value or None
        elif key in ("lxc.net", "lxc.network") and not value:
            macs, ips = [], []
        elif _LXC_MAC.fullmatch(key) and value:
            macs.append(value)
        elif _LXC_IP.fullmatch(key) and value:
            ips.append(value.split()[0])        # `10.0.3.5/24 10.0.3.255`: address, then broadcast
    return ScannedIdentity(uts, (uts,) if uts else (), tuple(ips), tuple(macs))


def read_xen_config(text: str) -> ScannedIdentity:
    """A Xen domain config, xm (Python, Xen 3) or xl (Xen 4) syntax, read with builder.guestconf.xen (never run): the
    domain's name, the `hostname`/`ip` kernel settings of xm configs, and each vif's mac= and ip= (several
    addresses in one ip= are separated by spaces)."""
    cfg = xenconf.read_xm(text)
    name = cfg.get("name")
    hostname = cfg.get("hostname")
    vifs = cfg.get("vif") or []
    if isinstance(vifs, str):
        vifs = [vifs]
    macs: list[str] = []
    ips: list[str] = []
    for spec in vifs if isinstance(vifs, list) else []:
        if not isinstance(spec, str):
            continue
        for k, v in xenconf.parse_vif(spec):
            if k == "mac" and v:
                macs.append(v)
            elif k == "ip" and v:
                ips += v.split()
    top_ip = cfg.get("ip")
    if isinstance(top_ip, str) and top_ip.strip():
        ips.append(top_ip.strip())
    return ScannedIdentity(name if isinstance(name, str) and name.strip() else None,
                           (hostname,) if isinstance(hostname, str) and hostname.strip() else (),
                           tuple(ips), tuple(macs))


def _shell_values(text: str) -> dict[str, str]:
    """KEY="value" lines of a shell-style config (vzctl's), the last one of a key winning."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"^\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if not m:
            continue
        try:
            out[m.group(1)] = " ".join(shlex.split(m.group(2), comments=True))
        except ValueError:
            continue        # an unclosed quote: vzctl would not read it either
    return out


def read_openvz_config(text: str) -> ScannedIdentity:
    """An OpenVZ CTID.conf: NAME (vzctl set --name), HOSTNAME, IP_ADDRESS (venet) and the mac= of each NETIF
    device (veth; the host side's host_mac is the host's, not the guest's)."""
    v = _shell_values(text)
    macs = [val for dev in v.get("NETIF", "").split(";") for k, val in xenconf.parse_vif(dev)
            if k == "mac" and val]
    hostname = v.get("HOSTNAME") or None
    return ScannedIdentity(v.get("NAME") or None, (hostname,) if hostname else (),
                           tuple(v.get("IP_ADDRESS", "").split()), tuple(macs))


@dataclass(frozen=True)
class Readers:
    """The config readers discovery uses; pass builder.identity.formats' to use those instead:
    `Readers(lxc=formats.read_lxc, xen=formats.read_xen, openvz=formats.read_openvz)`."""

    lxc: Reader = read_lxc_config
    xen: Reader = read_xen_config
    openvz: Reader = read_openvz_config


def _read_config(path: Path) -> str | None:
    """The text of a config file, or None (debug-logged) if it is not a readable, smallish text file."""
    try:
        if not path.is_file():
            return None
        if path.stat().st_size > MAX_CONFIG_SIZE:
            log.debug("inventory: %s: skipped, larger than %d bytes", path, MAX_CONFIG_SIZE)
            return None
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        log.debug("inventory: %s: skipped, not readable: %s", path, e)
        return None


def _identity(reader: Reader, text: str, path: Path) -> IdentityLike | None:
    try:
        return reader(text)
    except Exception as e:  # noqa: BLE001 (readers are pluggable; one odd file must not stop the scan)
        log.debug("inventory: %s: skipped, the reader failed: %s: %s", path, type(e).__name__, e)
        return None


def _values(items: Iterable[object], normalize: Callable[[object], str | None], path: Path, what: str) -> list[str]:
    out = []
    for item in items or ():
        n = normalize(item)
        if n is None:
            log.debug("inventory: %s: %r is not a fixed %s; left out", path, item, what)
        else:
            out.append(n)
    return out


def _record(ident: IdentityLike, path: Path, name: str, hostname: str | None, where: str) -> GuestRecord | None:
    try:
        return GuestRecord(name, hostname, tuple(_values(ident.ips, normalize_ip, path, "IP address")),
                           tuple(_values(ident.macs, normalize_mac, path, "MAC address")), where)
    except (ValueError, TypeError, AttributeError) as e:
        log.debug("inventory: %s: skipped: %s", path, e)
        return None


def _first(items: Iterable[object] | None) -> str | None:
    return next((str(x).strip() for x in items or () if x and str(x).strip()), None)


def _entries(directory: Path) -> list[Path]:
    """The entries of a scanned directory (absolute, the directory's own symlinks resolved), hidden ones left
    out."""
    try:
        return sorted(p for p in directory.resolve().iterdir() if not p.name.startswith("."))
    except OSError as e:
        log.debug("inventory: %s: not scanned: %s", directory, e)
        return []


def lxc_record(cfg: Path, text: str, reader: Reader = read_lxc_config) -> GuestRecord | None:
    """The container whose config (CDIR/config) has this text: named by its directory (the name lxc-start -n
    takes); host name lxc.uts.name, else the directory's name (LXC's own default)."""
    cdir = cfg.parent
    ident = _identity(reader, text, cfg)
    if ident is None:
        return None
    hostname = _first(getattr(ident, "hostnames", ())) or _first([getattr(ident, "name", None)]) or cdir.name
    return _record(ident, cfg, cdir.name, hostname, f"lxc:{cdir}")


def scan_lxc(lxcpath: str | os.PathLike[str] = DEFAULT_LXCPATH, reader: Reader = read_lxc_config,
             ) -> list[GuestRecord]:
    """The containers under an lxcpath (each DIR/config), as lxc_record reads them."""
    out = []
    for cdir in _entries(Path(lxcpath)):
        cfg = cdir / "config"
        text = _read_config(cfg)
        if text is not None and (g := lxc_record(cfg, text, reader)) is not None:
            out.append(g)
    return out


_XEN_DOMAIN_KEY = re.compile(r"^\s*(memory|maxmem|vcpus|vif|disk|kernel|bootloader|builder|type)\s*=", re.M)


def _looks_like_domain(text: str) -> bool:
    """A file without extension in /etc/xen is taken for a domain config when it sets name= and something only a
    domain has (memory, vif, disk, kernel ...): cpupool definitions set name= too."""
    return bool(re.search(r"^\s*name\s*=", text, re.M)) and bool(_XEN_DOMAIN_KEY.search(text))


def xen_record(path: Path, text: str, reader: Reader = read_xen_config) -> GuestRecord | None:
    """The domain of a file in a Xen config directory, when it is a domain config: every *.cfg, and files
    without extension that look like domain configs (Xen 3 hosts kept `/etc/xen/www`); examples
    (xlexample.hvm), xl.conf and backups (`www~`) are not. Named by name=, else the file's name; host name
    from an xm config's `hostname` kernel setting only (a domain's name need not be its host name)."""
    if path.name.endswith("~") or not (path.suffix == ".cfg" or "." not in path.name):
        return None
    if path.suffix != ".cfg" and not _looks_like_domain(text):
        return None
    ident = _identity(reader, text, path)
    if ident is None:
        return None
    name = _first([getattr(ident, "name", None)]) or (path.stem if path.suffix == ".cfg" else path.name)
    return _record(ident, path, name, _first(getattr(ident, "hostnames", ())), f"xen:{path}")


def scan_xen(xen_dir: str | os.PathLike[str] = DEFAULT_XEN_DIR, reader: Reader = read_xen_config,
             ) -> list[GuestRecord]:
    """The domain configs in a Xen config directory (xen_record); the auto/ and scripts/ directories are not."""
    out = []
    for path in _entries(Path(xen_dir)):
        if path.name.endswith("~") or not (path.suffix == ".cfg" or "." not in path.name):
            continue
        text = _read_config(path)
        if text is not None and (g := xen_record(path, text, reader)) is not None:
            out.append(g)
    return out


def openvz_record(path: Path, text: str, reader: Reader = read_openvz_config) -> GuestRecord | None:
    """The container of a file in vzctl's config directory: every CTID.conf except 0.conf (the host) and the
    ve-* templates. Named by NAME=, else the CTID."""
    if path.suffix != ".conf" or path.name == "0.conf" or path.name.startswith("ve-"):
        return None
    ident = _identity(reader, text, path)
    if ident is None:
        return None
    name = _first([getattr(ident, "name", None)]) or path.stem
    return _record(ident, path, name, _first(getattr(ident, "hostnames", ())), f"vz:{path}")


def scan_openvz(vz_dir: str | os.PathLike[str] = DEFAULT_VZ_DIR, reader: Reader = read_openvz_config,
                ) -> list[GuestRecord]:
    """The containers in vzctl's config directory (openvz_record)."""
    out = []
    for path in _entries(Path(vz_dir)):
        if path.suffix != ".conf" or path.name == "0.conf" or path.name.startswith("ve-"):
            continue
        text = _read_config(path)
        if text is not None and (g := openvz_record(path, text, reader)) is not None:
            out.append(g)
    return out


def discover(lxcpath: str | os.PathLike[str] = DEFAULT_LXCPATH, xen_dir: str | os.PathLike[str] = DEFAULT_XEN_DIR,
             vz_dir: str | os.PathLike[str] = DEFAULT_VZ_DIR, readers: Readers | None = None) -> list[GuestRecord]:
    """Every guest whose config is on this host: LXC, Xen and OpenVZ; a missing directory is no guests."""
    r = readers or Readers()
    return sorted(scan_lxc(lxcpath, r.lxc) + scan_xen(xen_dir, r.xen) + scan_openvz(vz_dir, r.openvz),
                  key=sort_key)



def from_texts(files: dict[str, str], lxcpath: str = DEFAULT_LXCPATH, xen_dir: str = DEFAULT_XEN_DIR,
               vz_dir: str = DEFAULT_VZ_DIR, readers: Readers | None = None) -> list[GuestRecord]:
    """The guests of another host, from its config files' texts by path (read over ssh: hostile data): the
    same readers and rules as discover(). LXCPATH/NAME/config, XEN_DIR/FILE and VZ_DIR/CTID.conf are read; any
    other path, a hidden name, a file larger than a config is (MAX_CONFIG_SIZE) or holding a NUL is left out."""
    r = readers or Readers()
    lxc, xen, vz = (PurePosixPath(os.path.normpath(d)) for d in (lxcpath, xen_dir, vz_dir))
    out = []
    for name, text in sorted(files.items()):
        p = PurePosixPath(name)
        if not isinstance(text, str) or len(text) > MAX_CONFIG_SIZE or "\0" in text or \
                any(part.startswith(".") for part in p.parts[1:]):
            log.debug("inventory: %r: skipped", name)
            continue
        g = None
        if p.name == "config" and p.parent.parent == lxc:
            g = lxc_record(Path(p), text, r.lxc)
        elif p.parent == xen:
            g = xen_record(Path(p), text, r.xen)
        elif p.parent == vz:
            g = openvz_record(Path(p), text, r.openvz)
        if g is not None:
            out.append(g)
    return sorted(out, key=sort_key)
