"""mmdebstrap: the fast Debian bootstrap (apt resolves, parallel downloads, reproducible with SOURCE_DATE_EPOCH)."""
from __future__ import annotations

import logging
import os
import re
from typing import TYPE_CHECKING, Callable

from .. import run as runner

if TYPE_CHECKING:
    from ..context import Context

log = logging.getLogger("imgbuild")


def debian_argv(ctx: "Context") -> tuple[list[str], list[str]]:
    """The options both Debian methods share: (options, positional release/target/mirror)."""
    b = ctx.recipe.bootstrap
    opts = [f"--arch={ctx.recipe.arch}", f"--components={','.join(b.components)}"]
    if b.packages:
        opts.append("--include=" + ",".join(b.packages))
    return opts, [ctx.recipe.release, str(ctx.root.path), ctx.mirror]


def progress(pattern: str) -> Callable[[str], None]:
    """An on_line callback that shows the bootstrap tool's stage lines (those matching pattern) at INFO."""
    rx = re.compile(pattern)

    def show(line: str) -> None:
        if rx.match(line):
            log.info("  %s", line)
    return show


class Mmdebstrap:
    name = "mmdebstrap"
    doc = "mmdebstrap (Debian family): apt-based, fast, reproducible"
    program = "mmdebstrap"
    families = ("debian",)
    variants = ("minbase", "required", "important", "standard", "buildd", "essential", "apt", "debootstrap",
                "extract", "custom")

    def available(self) -> bool:
        return runner.which(self.program) is not None

    def bootstrap(self, ctx: "Context") -> None:
        opts, pos = debian_argv(ctx)
        env = dict(os.environ, SOURCE_DATE_EPOCH=str(ctx.epoch))
        # force-unsafe-io: dpkg skips its fsyncs; the tree is scratch space (the outputs are fsynced).
        argv = ["mmdebstrap", f"--variant={ctx.recipe.bootstrap.variant or self.variants[0]}", "--format=directory",
                "--aptopt=Acquire::Retries \"3\"", "--dpkgopt=force-unsafe-io", *opts, *pos]
        runner.run(argv, env=env, on_line=progress(r"^[IWE]: "), hint="run with -v to see mmdebstrap's full output")


METHOD = Mmdebstrap()
