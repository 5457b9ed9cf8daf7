"""Xen domain configs, xl (Xen 4) and xm (Xen 3, Python) syntax: rewritten inside string literals, and read
back with builder.guestconf.xen's reader."""
from __future__ import annotations

import re

from builder.core.checks import mac_norm
from builder.guestconf import xen as xenconf
from builder.identity.formats.identity import Identity, addr_str, unique
from builder.identity.formats.rename import Rename
from builder.identity.formats.values import addr_value, gw_value, host_value, mac_value, parse_ip, splice, sub_words

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
            pieces[n] = splice(piece, m, "val", mac_value(r, val))
        elif key == "ip":
            pieces[n] = splice(piece, m, "val", sub_words(val, lambda w: addr_value(r, w)))
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
    kernel_ip = parse_ip(values.get("ip", "").partition("/")[0])
    edits = []
    for key, s, e in spans:
        val = text[s:e]
        new = None
        if key in ("name", "hostname"):
            new = host_value(r, val)
        elif key == "vif":
            new = _xen_vif(r, val)
        elif key == "ip":
            new = addr_value(r, val)
        elif key == "gateway":
            new = gw_value(r, val)
        elif key == "netmask" and kernel_ip is not None and kernel_ip in r.prefix_given:
            new = str(r.ips[kernel_ip].netmask)
        if new is not None and new != val:
            edits.append((s, e, new))
    pieces, at = [], 0
    for s, e, new in edits:                    # in order: one pass (a file may hold many)
        pieces += [text[at:s], new]
        at = e
    return "".join(pieces) + text[at:]


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
                macs.append(mac_norm(v))
            elif k == "ip":
                ips += [addr_str(w) for w in v.split()]
    if isinstance(cfg.get("ip"), str):
        ips.append(addr_str(cfg.get("ip")))
    return Identity(name if isinstance(name, str) else None,
                    (hostname,) if isinstance(hostname, str) and hostname else (), unique(ips), unique(macs))
