"""debootstrap: the classic Debian bootstrap (shell, one download at a time); available everywhere."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from builder.build.bootstrap.mmdebstrap import debian_argv, progress
from builder.core import proc as runner
from builder.debian import pkgcache

if TYPE_CHECKING:
    from builder.build.context import Context

# debootstrap prints a line per package; show only its stages
STAGES = (r"^(I: (Retrieving Release|Resolving|Found|Checking component|Installing core|Unpacking the base|"
          r"Configuring the base|Base system installed)|W: |E: )")


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
        if ctx.recipe.bootstrap.unsigned:
            opts.append("--no-check-gpg")      # the recipe's explicit opt-out (a local mirror without a signature)
        variant = ctx.recipe.bootstrap.variant or self.variants[0]
        vopt = [] if variant == "important" else [f"--variant={variant}"]
        env = dict(os.environ, SOURCE_DATE_EPOCH=str(ctx.epoch))
        with pkgcache.for_build(ctx.plan.index, ctx.work) as debs:
            # debootstrap checks each file of its cache directory against the index, downloads what is missing
            runner.run(["debootstrap", *vopt, f"--cache-dir={debs}", *opts, *pos], env=env,
                       on_line=progress(STAGES, ctx),
                       hint="run with -v to see debootstrap's full output; its log is in the root's "
                            "/debootstrap/debootstrap.log")


METHOD = Debootstrap()
