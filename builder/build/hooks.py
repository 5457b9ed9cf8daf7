"""Hooks: user commands at fixed points of the build.

  run:    shell inside the root (chroot), with /proc, /sys, /dev, /dev/pts mounted for the hook's duration
  script: a local file copied into the root and run there the same way
  host:   shell on the build host, with the root's path in $IMGBUILD_ROOT

Chroot hooks run with a policy-rc.d that stops package scripts from starting services. Mounts are always taken
down, on failure and on Ctrl-C too. A failing hook stops the build and shows the tail of its output; a hook
stopped by Ctrl-C (or SIGTERM) is an interrupted build (exit 130), not a failing hook (builder/core/proc.py).
"""
from __future__ import annotations

import logging
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from builder.core import proc as runner
from builder.core.errors import BuilderError, CommandError
from builder.core.mounts import chroot_mounts
from builder.core.schema import opt

if TYPE_CHECKING:
    from builder.build.context import Context

log = logging.getLogger("imgbuild")

PHASES = ("post-bootstrap", "post-files", "pre-pack")
CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
POLICY_RC_D = "#!/bin/sh\n# written by imgbuild for the duration of a hook: do not start services\nexit 101\n"


@dataclass(frozen=True)
class Hook:
    """One hook command."""

    ONE_OF = ("run", "script", "host")
    run: str | None = opt(None, doc="shell command run inside the root (chroot)")
    script: str | None = opt(None, doc="local script copied into the root and run there (relative to the "
                                       "recipe, or a name from the project's hooks/ directory)")
    host: str | None = opt(None, doc="shell command run on the build host; $IMGBUILD_ROOT is the root's path")
    args: tuple[str, ...] = opt((), doc="arguments for script")
    env: dict[str, str] = opt(factory=dict, doc="extra environment variables")


@dataclass(frozen=True)
class Hooks:
    """Hooks by phase, each a list run in order."""

    post_bootstrap: tuple[Hook, ...] = opt((), key="post-bootstrap", doc="after the bootstrap, before any step")
    post_files: tuple[Hook, ...] = opt((), key="post-files", doc="after devices, base files, network, password, "
                                                                  "init shim and files")
    pre_pack: tuple[Hook, ...] = opt((), key="pre-pack", doc="last, before cleanup and the targets")

    def phase(self, name: str) -> tuple[Hook, ...]:
        return getattr(self, name.replace("-", "_"))


def _env(ctx: "Context", phase: str, hook: Hook, host: bool) -> dict[str, str]:
    base = dict(os.environ) if host else {"PATH": CHROOT_PATH, "HOME": "/root", "LANG": "C.UTF-8",
                                          "TERM": "dumb", "DEBIAN_FRONTEND": "noninteractive"}
    base.update({"IMGBUILD_PHASE": phase, "IMGBUILD_NAME": ctx.recipe.name, "IMGBUILD_HOSTNAME": ctx.recipe.hostname,
                 "IMGBUILD_RELEASE": ctx.recipe.release, "SOURCE_DATE_EPOCH": str(ctx.epoch)})
    if host:
        base["IMGBUILD_ROOT"] = str(ctx.root.path)
    base.update(hook.env)
    return base


def _in_root(ctx: "Context", argv: list[str], env: dict[str, str]) -> None:
    root = ctx.root
    made_policy = not root.lexists("/usr/sbin/policy-rc.d")
    if made_policy:
        root.write("/usr/sbin/policy-rc.d", POLICY_RC_D, 0o755)
    try:
        with chroot_mounts(root):
            runner.run(["chroot", str(root.path), *argv], env=env, reap_group=True)
    finally:
        if made_policy and root.lexists("/usr/sbin/policy-rc.d"):
            root.remove("/usr/sbin/policy-rc.d")


def run_hook(ctx: "Context", phase: str, n: int, hook: Hook) -> None:
    where = f"hooks.{phase}[{n}]"
    if hook.host is not None:
        runner.run(["/bin/sh", "-c", hook.host], env=_env(ctx, phase, hook, True), cwd=ctx.source.parent)
    elif hook.run is not None:
        _in_root(ctx, ["/bin/sh", "-c", hook.run], _env(ctx, phase, hook, False))
    else:
        src = Path(hook.script)
        inside = f"/tmp/.imgbuild-hook-{n}-{src.name}"
        ctx.root.copy_in(src, inside, 0o755)
        try:
            shebang = src.read_bytes()[:2] == b"#!"
            argv = [inside] if shebang else ["/bin/sh", inside]
            _in_root(ctx, argv + list(hook.args), _env(ctx, phase, hook, False))
        finally:
            ctx.root.remove(inside)
    log.debug("%s done", where)


def run_phase(ctx: "Context", phase: str) -> None:
    for n, hook in enumerate(ctx.recipe.hooks.phase(phase)):
        runner.check_interrupt()     # no further hook after an interrupt
        what = hook.run or hook.host or " ".join([hook.script, *map(shlex.quote, hook.args)])
        log.info("hook %s[%d]: %s", phase, n, what)
        try:
            run_hook(ctx, phase, n, hook)
        except CommandError as e:
            tail = "\n".join("    " + line for line in e.tail) or "    (no output)"
            raise BuilderError(f"hook {phase}[{n}] failed with exit status {e.status}: {what}\n  last output:\n{tail}",
                               "fix the hook; run with -v to see all of its output") from None
