"""Hypothesis strategies for outside input: what a guest tree, a mirror, a remote host or an earlier run may
hand imgbuild. Shared by the property tests (tests/test_*_props.py); each strategy says what it makes.

- outside_text(): any text a file may hold once decoded (random Unicode, random bytes decoded with
  surrogateescape as the identity engine does, and "token soup" built from what trips parsers: quotes,
  backslashes, `=`, `#`, brackets, CR, NUL, vertical tab, U+2028, non-ASCII digits, long runs of blanks);
- lines_of(line): a file of such lines, LF or CRLF, with or without a final newline;
- mutated(seeds): a real file (from tests/data or a golden case) with random edits (insert, delete, replace,
  duplicate or swap lines, truncate);
- renames(): identity changes (builder.identity.formats.Rename) of the shape clone and reidentify make.

Nothing here draws an unbounded size: examples stay small so the suite stays fast (the "long" profile in
tests/conftest.py runs many more of them).
"""
from __future__ import annotations

import ipaddress

from hypothesis import strategies as st

# characters and short tokens that trip line-based parsers
NASTY = ["=", "==", "#", ";", ":", ",", ".", "/", "\\", "'", '"', "[", "]", "{", "}", "(", ")", "-", "+", "*", "%",
         "$", " ", "  ", "\t", "\r", "\x00", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\ufeff", "\udc80", "\udcff",
         "\u00b2", "\u0663", "\u200f", "é", "Ω", "\U0001f600", "export ", "lxc.", "0x", "1e999", "-1", "999999999999",
         "%0999999d", "\\x00", "'''", '"""', "                                                                    "]
WORDS = ["name", "memory", "vif", "disk", "mac", "ip", "bridge", "lxc.net.0.hwaddr", "lxc.utsname", "baseurl",
         "[main]", "$releasever/", "IPADDR", "HWADDR", "address", "iface", "addresses:", "- ", "ATTR{address}==",
         "vm0", "vm01", "vm0.example.com", "10.0.3.2", "10.0.3.20", "10.0.3.2/24", "fd00:3::2", "fd00:3:0::2",
         "00:16:3e:00:03:02", "00-16-3E-00-03-02", "0016.3e00.0302", "0;22;62;0;3;2", "255.255.255.0"]


def token_soup(max_tokens: int = 40) -> st.SearchStrategy[str]:
    """Text built from NASTY and WORDS and short random strings: near-valid lines, where parsers break."""
    token = st.one_of(st.sampled_from(NASTY), st.sampled_from(WORDS), st.text(max_size=4),
                      st.sampled_from(["\n", "\r\n"]))
    return st.lists(token, max_size=max_tokens).map("".join)


def decoded_bytes(max_size: int = 200) -> st.SearchStrategy[str]:
    """Random bytes as a guest file reads after `.decode("utf-8", "surrogateescape")`."""
    return st.binary(max_size=max_size).map(lambda b: b.decode("utf-8", "surrogateescape"))


def outside_text(max_size: int = 200) -> st.SearchStrategy[str]:
    return st.one_of(st.text(max_size=max_size), decoded_bytes(max_size), token_soup())


def lines_of(line: st.SearchStrategy[str], max_lines: int = 25) -> st.SearchStrategy[str]:
    """Lines joined into a file: LF or CRLF line ends, a final newline or not."""
    return st.tuples(st.lists(line, max_size=max_lines), st.sampled_from(["\n", "\r\n"]), st.booleans()).map(
        lambda t: t[1].join(t[0]) + (t[1] if t[2] and t[0] else ""))


def one_line(max_size: int = 80) -> st.SearchStrategy[str]:
    """Text without a line feed (it may hold a CR or any other separator)."""
    return outside_text(max_size).map(lambda s: s.replace("\n", ""))


@st.composite
def mutated(draw, seeds: list[str], max_edits: int = 6) -> str:
    """A seed file with a few random edits."""
    text = draw(st.sampled_from(seeds))
    for _ in range(draw(st.integers(0, max_edits))):
        kind = draw(st.sampled_from(["insert", "delete", "replace", "dup-line", "swap-lines", "truncate"]))
        n = len(text)
        if kind == "insert":
            at = draw(st.integers(0, n))
            text = text[:at] + draw(st.one_of(st.sampled_from(NASTY + WORDS), st.text(max_size=3))) + text[at:]
        elif kind == "delete" and n:
            a = draw(st.integers(0, n - 1))
            text = text[:a] + text[a + draw(st.integers(1, 8)):]
        elif kind == "replace" and n:
            a = draw(st.integers(0, n - 1))
            text = text[:a] + draw(st.sampled_from(NASTY)) + text[a + 1:]
        elif kind in ("dup-line", "swap-lines"):
            lines = text.split("\n")
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            if kind == "dup-line":
                lines.insert(j, lines[i])
            else:
                lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
        elif kind == "truncate" and n:
            text = text[:draw(st.integers(0, n))]
    return text


def config_text(seeds: list[str], structured: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """What a parser of outside input must take without an exception other than InputError: random text,
    mutated real files, and files of structured but hostile lines."""
    return st.one_of(outside_text(400), mutated(seeds), structured)


# ------------------------------------------------------------------------------------------------ identities


def _v4(net: str) -> st.SearchStrategy[ipaddress.IPv4Address]:
    n = ipaddress.ip_network(net)
    return st.integers(1, n.num_addresses - 2).map(lambda i: n.network_address + i)


@st.composite
def renames(draw, same_network: bool = True, prefix: bool = False):
    """A Rename as clone/reidentify make it: vm0 -> vm1 (old name maybe an FQDN), one or two IPv4 addresses
    (and maybe an IPv6 one) moved, maybe a gateway, one or two MACs. With same_network the new addresses stay in
    the old /24 and no new prefix is given, so no netmask, broadcast or network value has a reason to change."""
    from builder.identity.formats import Rename

    old_name = draw(st.sampled_from(["vm0", "vm0.example.com", "web-1", "db7.lan"]))
    new_name = draw(st.sampled_from(["vm1", "clone9", "web-2"]).filter(lambda n: n != old_name.split(".")[0]))
    olds = draw(st.lists(_v4("10.0.3.0/24"), min_size=1, max_size=2, unique=True))
    pool = _v4("10.0.3.0/24") if same_network else _v4("192.168.0.0/16")
    news = draw(st.lists(pool, min_size=len(olds), max_size=len(olds), unique=True)
                .filter(lambda ns: not set(ns) & set(olds)))
    ips = {str(o): str(n) + (f"/{draw(st.integers(8, 30))}" if prefix else "") for o, n in zip(olds, news)}
    if draw(st.booleans()):
        ips["fd00:3::2"] = "fd00:3::3" + ("/56" if prefix else "")
    gateways = {}
    if draw(st.booleans()):
        gw_old = draw(_v4("10.0.3.0/24").filter(lambda a: a not in olds and a not in news))
        gw_new = draw(_v4("10.0.3.0/24").filter(lambda a: a not in olds and a not in news and a != gw_old))
        gateways[str(gw_old)] = str(gw_new)
    mac_bytes = st.lists(st.integers(0, 255), min_size=3, max_size=3)
    macs = {}
    for _ in range(draw(st.integers(1, 2))):
        o, n = draw(mac_bytes), draw(mac_bytes)
        old = "00:16:3e:" + ":".join(f"{b:02x}" for b in o)
        new = "00:16:3e:" + ":".join(f"{b:02x}" for b in n)
        if old != new and new not in macs and old not in macs.values():
            macs[old] = new
    return Rename.of(hostname=new_name, old_hostnames=(old_name,), ips=ips, gateways=gateways, macs=macs)
