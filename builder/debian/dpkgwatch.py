"""An `installed N/T` progress bar while mmdebstrap installs: dpkg's own record of each package it unpacked (the
tree's /var/lib/dpkg/info/PACKAGE.list), counted twice a second, against the package set imgbuild resolved.

It reads nothing of mmdebstrap's output, so it works whatever mmdebstrap prints; the tree is read through RootFS
(a link in it never leads out). Shown only on a terminal at the default verbosity, like the other bars; CI logs
get the stage lines alone.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import threading
from pathlib import Path
from typing import Callable, Iterator

from builder.core.rootfs import RootFS

INFO = "/var/lib/dpkg/info"


def installed(tree: Path) -> int:
    """How many packages dpkg has unpacked into tree so far."""
    return sum(1 for n in RootFS(tree).listdir(INFO) if n.endswith(".list"))


class Watch(threading.Thread):
    """Calls show(n) with the count whenever it changes, every `every` seconds, until stopped."""

    def __init__(self, tree: Path, show: Callable[[int], None], every: float = 0.5):
        super().__init__(daemon=True, name="dpkgwatch")
        self.tree, self.show, self.every = tree, show, every
        self.done = threading.Event()
        self.last = 0

    def run(self) -> None:
        while not self.done.wait(self.every):
            self.poll()

    def poll(self) -> None:
        try:
            n = installed(self.tree)
        except OSError:
            return
        if n != self.last:
            self.last = n
            self.show(n)


def _shown() -> bool:
    return sys.stderr.isatty() and logging.getLogger("imgbuild").getEffectiveLevel() <= logging.INFO


@contextlib.contextmanager
def watching(tree: Path, total: int) -> Iterator[Watch | None]:
    """The bar for the block (nothing when not shown); gone when the block ends."""
    if not _shown() or total <= 0:
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(total=total, unit="pkg", desc="installed", leave=False, file=sys.stderr)
    watch = Watch(tree, lambda n: bar.update(min(n, total) - bar.n))
    watch.start()
    try:
        yield watch
    finally:
        watch.done.set()
        watch.join()
        bar.close()
