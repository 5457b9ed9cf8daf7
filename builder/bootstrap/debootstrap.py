"""debootstrap: the classic Debian bootstrap (shell, one download at a time); available everywhere."""
from __future__ import annotations

import logging
import os
import re
from typing import TYPE_CHECKING

from .. import run as runner
from .mmdebstrap import debian_argv

if TYPE_CHECKING:
    from ..context import Context

log = logging.getLogger("imgbuild")
_STAGES = re.compile(r"^(I: (Retrieving Release|Resolving|Found|Checking component|Installing core|"
                     r"Unpacking the base|Configuring the base|Base system installed)|W: |E: )")


def _progress(line: str) -> None:
    if _STAGES.match(line):
        log.info("  %s", line)


class Debootstrap:
    name = "debootstrap"
    doc = "debootstrap (Debian family): the classic shell bootstrap"
    program = "debootstrap"
    families = ("debian",)
    variants = ("minbase", "buildd", "important")

    def available(self) -> bool:
        return runner.which(self.program) is not None

    def bootstrap(self, ctx: "Context") -> None:
        opts, pos = debian_argv(ctx)
        variant = ctx.recipe.bootstrap.variant
        vopt = [] if variant == "important" else [f"--variant={variant}"]
        env = dict(os.environ, SOURCE_DATE_EPOCH=str(ctx.epoch))
        runner.run(["debootstrap", *vopt, *opts, *pos], env=env, on_line=_progress,
                   hint="run with -v to see debootstrap's full output; its log is in the root's "
                        "/debootstrap/debootstrap.log")


METHOD = Debootstrap()
