"""docs/benchmarks.md is shared by the bench scripts: each owns one section between markers and rewrites only
that one, so running one benchmark never drops another's numbers."""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
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


def timed(argv: list[str], env: dict | None = None) -> float:
    """Seconds one command takes; a failure ends the benchmark with the command's last output."""
    t = time.monotonic()
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"bench: {' '.join(argv)} failed:\n{r.stdout[-3000:]}")
    return time.monotonic() - t


def measure_in(where: Path) -> str:
    """Put the test hosts' roots (tests/support/sshhost.py) in a temporary directory inside WHERE; returns the
    filesystem type there (ext4, tmpfs ...), for the report."""
    from tests.support import sshhost

    where.mkdir(parents=True, exist_ok=True)
    sshhost._work = Path(tempfile.mkdtemp(prefix="bench-", dir=where))
    return subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "-T", str(where)], capture_output=True,
                          text=True).stdout.split()[0]
