"""Property tests for the LXC config converter (builder/guestconf/lxc.py): an LXC config is outside input (a container
moved from an old host, a guest's own config), so on any text, in both directions,

- convert returns the converted text and warnings, or raises InputError; never another exception;
- the output has as many lines as the input, keeps its final newline or its lack, and every comment, blank line
  and line with an unknown key is byte-identical and in place (only network lines may trade places, going to
  legacy); warnings name lines of the input;
- converting the output again to the same form changes nothing;
- modern -> legacy -> modern (and legacy -> modern -> legacy) gives the same keys and values back, apart from
  the lines either form cannot hold (commented out, each with a warning) and the numbering of networks.

Inputs: random text and bytes, the golden configs of tests/data/lxc-convert mutated, and files generated from
every key both forms know (and unknown ones), with realistic and hostile values, spacing, CR line ends.
"""
from __future__ import annotations

import re
from collections import Counter

from hypothesis import assume, given
from hypothesis import strategies as st

from builder.core.errors import InputError
from builder.guestconf import lxc as lxcconf
from tests.support import TEST_DATA
from tests.support.strategies import config_text, lines_of, one_line

DATA = TEST_DATA / "lxc-convert"
SEEDS = [p.read_text() for p in sorted(DATA.glob("*/in.conf"))] + \
        [p.read_text() for p in sorted(DATA.glob("*/expected.conf"))]

COMMON = sorted(lxcconf.COMMON) + ["lxc.cgroup.devices.allow", "lxc.cgroup.memory.limit_in_bytes"]
LEGACY_KEYS = sorted(k for k in lxcconf.RENAMED if k not in lxcconf.LXC21_ALIASES) + \
    sorted(lxcconf.REMOVED_IN_MODERN) + ["lxc.rootfs.backend"]
MODERN_KEYS = sorted(lxcconf.RENAMED.values()) + sorted(lxcconf.MODERN_ONLY) + \
    ["lxc.prlimit.nofile", "lxc.cgroup2.memory.max", "lxc.sysctl.net.ipv4.ip_forward"]
OTHER_KEYS = ["lxc.syslog", "lxc.limit", "lxc.limit.nofile", "lxc.bogus", "lxc.net.x.type", "lxc.network.-1.link",
              "notlxc.key", "lxc", "lxc."]

VALUES = ["veth", "empty", "macvlan", "phys", "vlan", "none", "ipvlan", "up", "lxcbr0", "eth0", "veth-vm0",
          "00:16:3e:00:03:02", "00:16:3e:xx:xx:xx", "10.0.3.2/24", "10.0.3.2/24 10.0.3.255", "10.0.3.1", "auto",
          "fd00::2/64", "dir:/var/lib/lxc/vm0/rootfs", "/var/lib/lxc/vm0/rootfs", "/dev/vg0/vm0", "lvm:/dev/vg/lv",
          "overlayfs:/a:/b", "lvm", "dir", "btrfs", "generated", "unconfined", "c 10:200 rwm", "a", "512", "1024",
          "proc:mixed sys:mixed", "/usr/share/lxc/config/common.conf", "SIGRTMIN+3", "", " ", "=", "# not a comment"]


def _net_key(form: str) -> st.SearchStrategy[str]:
    if form == "legacy":
        return st.one_of(st.sampled_from(sorted(lxcconf.LEGACY_NET)).map(lambda s: "lxc.network." + s),
                         st.tuples(st.integers(0, 3), st.sampled_from(sorted(lxcconf.LEGACY_NET)))
                         .map(lambda t: f"lxc.network.{t[0]}.{t[1]}"), st.just("lxc.network"))
    return st.one_of(st.tuples(st.integers(0, 3), st.sampled_from(sorted(lxcconf.MODERN_NET)))
                     .map(lambda t: f"lxc.net.{t[0]}.{t[1]}"), st.just("lxc.net"))


def key_line(keys: st.SearchStrategy[str], values: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(st.sampled_from(["", "", " ", "\t"]), keys, st.sampled_from([" = ", "=", "  =\t", " =  "]),
                     values, st.sampled_from(["", "", " ", "\r", "\t "])).map("".join)


OTHER_LINES = st.one_of(st.sampled_from(["", "# a comment", "  # indented comment", "#lxc.network.type = veth",
                                         "# lxc.utsname = not-this", "\r", "\t"]), one_line(40))
hostile_values = st.one_of(st.sampled_from(VALUES), one_line(30))


def config(form: str, values=hostile_values, other=OTHER_LINES) -> st.SearchStrategy[str]:
    keys = st.one_of(st.sampled_from(COMMON + (LEGACY_KEYS if form == "legacy" else MODERN_KEYS)), _net_key(form),
                     st.sampled_from(OTHER_KEYS))
    return lines_of(st.one_of(key_line(keys, values), key_line(keys, values), other), max_lines=20)


TEXTS = config_text(SEEDS, st.one_of(config("legacy"), config("modern")))
FORMS = st.sampled_from(lxcconf.FORMS)


def _is_key_line(line: str) -> bool:
    s = line.strip()
    return bool(s) and not s.startswith("#")


@given(TEXTS, FORMS)
def test_convert_returns_text_or_input_error(text, to):
    try:
        out, warnings = lxcconf.convert(text, to)
    except InputError as e:
        assert e.message.startswith("not an LXC config")
        return
    n = len(text.split("\n"))
    assert len(out.split("\n")) == n
    assert out.endswith("\n") == text.endswith("\n")
    assert all(1 <= w.line <= n for w in warnings)
    assert [w.line for w in warnings] == sorted(w.line for w in warnings)


@given(TEXTS, FORMS)
def test_comments_blanks_and_unknown_keys_stay_in_place(text, to):
    try:
        out, warnings = lxcconf.convert(text, to)
    except InputError:
        return
    unknown = {w.line for w in warnings if "not an LXC key" in w.message}
    for no, (old, new) in enumerate(zip(text.split("\n"), out.split("\n")), 1):
        if not _is_key_line(old) or no in unknown:
            assert new == old, (no, old, new)


@given(TEXTS, FORMS)
def test_converting_twice_changes_nothing(text, to):
    try:
        once, _ = lxcconf.convert(text, to)
    except InputError:
        return
    twice, warnings = lxcconf.convert(once, to)
    assert twice == once
    assert all("not an LXC key" in w.message or w.key == "lxc.include" for w in warnings), warnings


def key_values(text: str) -> list[tuple[str, str]]:
    out = []
    for line in text.split("\n"):
        s = line.strip()
        if s and not s.startswith("#") and "=" in s:
            k, v = s.split("=", 1)
            out.append((k.strip(), v.strip()))
    return out


def _norm(kvs) -> Counter:
    out = []
    for k, v in kvs:
        if k in ("lxc.rootfs", "lxc.rootfs.path"):
            v = re.sub(r"^dir:", "", v)
        out.append((re.sub(r"^lxc\.(network|net)\.\d+\.", r"lxc.\1.", k), v))
    return Counter(out)


# values that are what they look like in both forms (a rootfs value with a backend prefix other than dir: would
# not be one: legacy LXC reads `lvm:/dev/...` differently, see _rootfs_to_modern)
plain_values = st.sampled_from([v for v in VALUES if v.strip() and not re.match(r"[a-z]+:", v) and "#" not in v
                                and "=" not in v])


@given(st.sampled_from(["legacy", "modern"]).flatmap(lambda form: st.tuples(
    st.just(form), config(form, plain_values, st.sampled_from(["", "# a comment", "\t"])))))
def test_round_trip_keeps_keys_and_values(case):
    form, text = case
    other = "modern" if form == "legacy" else "legacy"
    try:
        there, first = lxcconf.convert(text, other)
    except InputError:
        return
    back, second = lxcconf.convert(there, form)
    lost = {w.line for w in first + second if w.message.endswith("kept as a comment")}
    unknown = {w.line for w in first if "not an LXC key" in w.message}
    assume(not unknown)                       # unknown keys stay as written: not a round trip of known keys
    numbered = [no for no, line in enumerate(text.split("\n"), 1) if _is_key_line(line) and "=" in line]
    want = [kv for no, kv in zip(numbered, key_values(text)) if no not in lost]
    assert _norm(key_values(back)) == _norm(want)
