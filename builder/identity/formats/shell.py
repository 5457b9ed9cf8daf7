"""Shell-variable files (ifcfg, /etc/sysconfig/network, OpenVZ's CTID.conf): `NAME=VALUE` lines found in linear
time, with the value's quotes and trailing comment kept apart."""
from __future__ import annotations

import re

from builder.identity.formats.values import split_lines

_SHVAR_HEAD = re.compile(r"""^(?P<pre>[ \t]*(?:export[ \t]+)?)(?P<key>[A-Za-z_][A-Za-z0-9_]*)=""")


class ShMatch:
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


def shvar(line: str) -> ShMatch | None:
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
                return ShMatch(line, spans)
            j = line.find(q, j + 1)
    for j in range(at, n + 1):
        if rest_ok(j):
            spans.update(q=(at, at), val=(at, j), post=(j, n))
            return ShMatch(line, spans)
    return None                                   # not reached: rest_ok(n) holds


def shvars(text: str) -> tuple[list[str], list[tuple[int, ShMatch]]]:
    lines = split_lines(text)
    found = []
    for i, line in enumerate(lines):
        m = shvar(line)                # a comment never matches: the name must start the line
        if m:
            found.append((i, m))
    return lines, found
