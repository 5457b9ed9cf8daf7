"""Property tests for the xm reader and converter (builder.guestconf.xen) and Xen's parser wrapper
(builder.guestconf.xl): an xm
config is outside input (it comes from the host a guest is moved off), so on any text

- read_xm returns settings and findings, or raises InputError; never another exception;
- convert_text returns a Conversion (xl text, or errors naming lines) or raises InputError; a text it hands out
  is UTF-8, names only xl keys, and xl's own parser reads it back to the settings it was made from;
- a converted config converts to itself again (`convert-xen -o F` run twice writes nothing the second time).

Inputs: random text and bytes, the golden xm configs of tests/data/xen mutated, and generated xm files made of
assignments of hostile Python expressions (deep, huge, % formats, unbalanced quotes), imports, ifs, Python 2
print statements and garbage lines. Example counts come from the hypothesis profile (tests/conftest.py).
"""
from __future__ import annotations

from hypothesis import assume, given
from hypothesis import strategies as st

from builder.core.errors import InputError
from builder.guestconf import xen as xenconf
from builder.guestconf import xl
from tests.support import TEST_DATA
from tests.support.strategies import config_text, lines_of, one_line

DATA = TEST_DATA / "xen"
SEEDS = [p.read_text() for p in sorted(DATA.glob("*/*.cfg"))]
KEYS = sorted(xenconf.XL_KEYS | xenconf.XM_KEYS | set(xenconf.XEND_ONLY) | set(xenconf.XM_KERNEL_IP))
HELPERS = ["vmid", "base", "n", "x", "nàme"]

REAL_VALUES = ['"file:/var/xen/vm0.img,xvda,w"', "'phy:vg0/vm0,xvda1,w'", '"phy:/dev/vg/lv,xvda1,w!"',
               '"tap:aio:/x.img,xvda,w"', '"tap:vmdk:/x.vmdk,xvda,w"', '",hdc:cdrom,r"', '"file:/x,xvda:disk,r"',
               "'mac=00:16:3e:00:00:01,bridge=xenbr0'", "'bridge=xenbr1,ip=10.0.3.2 10.0.3.3,trusted'",
               "'type=ioemu, model=e1000, foo=bar'", '"pygrub"', '"/usr/bin/pygrub"', '"hvm"', '"linux"',
               '"onreboot"', '"always"', '"destroy"', '"coredump-restart"', '"console=hvc0 \'quiet"', '"1024"',
               '"-5"', "None", "True", "False", "0644", "1e999", "0x7fffffffffffffffff", '"vm%d"', '"%c"', '"%*d"',
               '"%0999999999d"', '"\\ud800"', '"\\x00"', '"a\\nb"', "b'bytes'", "...", "{}", "{'a': 1}"]


def _string_literal(s: str) -> str:
    return repr(s)


@st.composite
def py_expr(draw) -> str:
    base = st.one_of(st.integers(-(2 ** 70), 2 ** 70).map(str), st.floats().map(repr),
                     st.text(max_size=12).map(_string_literal), st.sampled_from(REAL_VALUES),
                     st.sampled_from(HELPERS + KEYS[:20]), one_line(12).map(lambda s: "'" + s + "'"))
    expr = st.recursive(base, lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.lists(inner, min_size=2, max_size=3).map(lambda xs: "(" + ", ".join(xs) + ")"),
        st.tuples(inner, st.sampled_from(["+", "-", "*", "//", "/", "%", "**", "<<", " and ", " if 1 else "]),
                  inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        inner.map(lambda x: "-" + x), inner.map(lambda x: f"f({x})"), inner.map(lambda x: f"{x}.attr"),
        inner.map(lambda x: f"{x}[0]")), max_leaves=8)
    e = draw(expr)
    wrap = draw(st.sampled_from(["", "-", "(", "not "]))
    times = draw(st.sampled_from([0, 1, 3, 60, 400, 3000]))
    return wrap * times + e + (")" * times if wrap == "(" else "")


statement = st.one_of(
    st.tuples(st.sampled_from(KEYS + HELPERS), st.sampled_from([" = ", "=", " += ", " : int = ", " == "]), py_expr())
    .map("".join),
    st.sampled_from(["import os", "from os import path", "print 'starting'", "if x:\n    memory = 1",
                     "for i in range(3):\n    vcpus = i", "def f():\n    return 1", "class C: pass", "pass",
                     "x, y = 1, 2", "del x", '"""a docstring"""', "# a comment", "", "\tmemory = 1",
                     "try:\n    a = 1\nexcept: pass", "with x: pass", "lambda: 0", "global x"]),
    one_line(),
)
# half of the generated files start with what a convertible config needs, so the converter gets past its checks
PRELUDE = st.sampled_from(["", 'name = "vm0"\nbootloader = "pygrub"\n', "name='vm0'\nkernel='/boot/vmlinuz'\n",
                           'name = "vm0"\nbuilder = "hvm"\n'])
XM = st.tuples(PRELUDE, lines_of(statement, max_lines=12)).map("".join)
# plausible configs: literal values only, so most of them convert (the round trip needs those)
literal = st.one_of(st.integers(-(2 ** 40), 2 ** 40).map(str), st.text(max_size=16).map(_string_literal),
                    st.sampled_from(REAL_VALUES[:21]))
plain = st.tuples(st.sampled_from(KEYS), st.sampled_from([" = ", "="]), st.one_of(
    literal, st.lists(literal, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"))).map("".join)
PLAUSIBLE = st.tuples(PRELUDE.filter(bool), lines_of(plain, max_lines=8)).map("".join)
TEXTS = st.one_of(config_text(SEEDS, XM), PLAUSIBLE)


def _expected(v):
    """A value as xl's parser gives it back (numbers as their text)."""
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list):
        return [_expected(x) for x in v]
    return v


@given(TEXTS)
def test_read_xm_returns_settings_or_input_error(text):
    try:
        cfg = xenconf.read_xm(text, "vm.cfg")
    except InputError as e:
        assert e.message.startswith("vm.cfg") and "not an xm domain config" in e.message
        return
    lines = text.count("\n") + 1
    assert all(0 <= f.line <= lines and f.level in ("note", "warning", "error") for f in cfg.findings)
    assert all(isinstance(s.key, str) and 1 <= s.line <= lines for s in cfg.settings.values())


@given(TEXTS, st.sampled_from([(), (("/var/xen", "/srv/xen"),), (("/", "/x"),)]),
       st.sampled_from([(), (("xenbr0", "br0"),), (("*", "br9"),)]))
def test_convert_text_returns_a_checked_config_or_errors(text, disk_map, bridge_map):
    try:
        result = xenconf.convert_text(text, "vm.cfg", disk_map, bridge_map)
    except InputError:
        return
    if result.text is None:
        assert result.errors
        return
    assert not result.errors
    result.text.encode("utf-8")                   # no lone surrogate escapes into the file
    assert "\x00" not in result.text
    if xl.available():
        assert result.checked
        got = xl.parse(result.text)
        for s in result.settings:
            assert got.get(s.key) == _expected(s.value), s


@given(TEXTS)
def test_a_converted_config_converts_to_itself(text):
    """`migrate convert-xen F -o F` twice: the second run has nothing to change (and reads back every setting)."""
    try:
        first = xenconf.convert_text(text, "vm.cfg")
    except InputError:
        return
    assume(first.text is not None)
    again = xenconf.convert_text(first.text, "vm.cfg")
    assert again.text == first.text, [f.show("vm.cfg") for f in again.errors]
    back = xenconf.read_xm(first.text)
    assert {k: _expected(s.value) for k, s in back.settings.items()} == \
        {s.key: _expected(s.value) for s in first.settings}


@given(st.text(max_size=60))
def test_xl_parser_takes_any_text_without_a_python_exception(text):
    """builder.guestconf.xl hands Xen's C parser bytes (also lone surrogates); only its own errors come back."""
    if not xl.available():
        return
    try:
        xl.parse(text)
    except xl.XlParseError:
        pass
    assert xl.check_disk(text) is None or isinstance(xl.check_disk(text), str)
