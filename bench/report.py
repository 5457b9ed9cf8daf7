"""docs/benchmarks.md is shared by the bench scripts: each owns one section between markers and rewrites only
that one, so running one benchmark never drops another's numbers."""
from __future__ import annotations

from pathlib import Path

HEADER = "# Benchmarks\n\nEach section is written by the script it names, all numbers of a section from one run.\n"


def write_section(path: Path, name: str, lines: list[str]) -> None:
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    text = path.read_text() if path.exists() else HEADER
    if not text.startswith("# Benchmarks"):
        text = HEADER + "\n" + text
    body = "\n".join([begin, *lines, end])
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + body + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + body + "\n"
    path.write_text(text)
