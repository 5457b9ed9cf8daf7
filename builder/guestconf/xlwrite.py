"""Writing settings in xl's syntax (xl.cfg(5)), and reading the result back with xl's own parser to check
that every setting comes back as written."""
from __future__ import annotations

from typing import Any, Iterable

from builder.guestconf import xl
from builder.guestconf.xm import Finding, Setting, Value


def quote(s: str) -> str:
    """A string as xl (and Python) read it: double quotes, backslash escapes for \\ and \"."""
    if any(ord(c) < 32 for c in s):
        raise ValueError(f"{s!r}: control characters cannot be written into an xl config")
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def value_text(v: Value, indent: int = 0) -> str:
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, int):
        return str(v) if v >= 0 else quote(str(v))   # xl's lexer has no minus sign; get_long reads "-1"
    if isinstance(v, str):
        return quote(v)
    if not v:
        return "[ ]"
    items = [value_text(x, indent + 4) for x in v]
    if len(items) == 1 and len(items[0]) < 90:
        return f"[ {items[0]} ]"
    pad = " " * (indent + 4)
    return "[\n" + "".join(f"{pad}{i},\n" for i in items) + " " * indent + "]"


def render(settings: list[Setting], header: Iterable[str] = ()) -> str:
    lines = [f"# {h}" if h else "#" for h in header]
    width = max((len(s.key) for s in settings), default=0)
    lines += [f"{s.key.ljust(width)} = {value_text(s.value)}" for s in settings]
    return "\n".join(lines) + "\n"


def _expected(v: Value) -> Any:
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list):
        return [_expected(x) for x in v]
    return v


def verify(text: str, settings: list[Setting]) -> list[Finding]:
    """Read the text back with xl's parser: every setting must come back as written."""
    try:
        got = xl.parse(text)
    except xl.XlParseError as e:
        return [Finding(e.line or 0, "error", f"xl's parser refuses the result: {e.xen_message}")]
    out = []
    for s in settings:
        want = _expected(s.value)
        if got.get(s.key) != want:
            out.append(Finding(s.line, "error", f"{s.key}: xl reads back {got.get(s.key)!r}, not {want!r}"))
        elif isinstance(s.value, int) and not isinstance(s.value, bool) and s.value >= 0 \
                and got.longs.get(s.key) != s.value:
            out.append(Finding(s.line, "error", f"{s.key}: xl does not read {s.value} as a number"))
    return out

